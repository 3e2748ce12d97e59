"""taidpt.utils.atomic: permissions of written files, the folder fsync, sweeping killed writers' temp files, and
the output-location check the export tools run before scoring."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import taidpt.utils.atomic
from taidpt.utils.atomic import OutputPathError, atomic_write_text, check_writable, remove_stale_temps

ROOT = Path(__file__).resolve().parents[1]


def _mode_written_under(umask: int, path: Path) -> int:
    """Permission bits of a file written by atomic_write_text in a fresh process running under ``umask``."""
    code = (f"import os, sys; os.umask({umask:#o}); from taidpt.utils.atomic import atomic_write_text; "
            "atomic_write_text(sys.argv[1], 'x')")
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, check=True, timeout=60)
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_new_files_get_the_mode_open_would_give(tmp_path, umask, expected):
    assert _mode_written_under(umask, tmp_path / "f.json") == expected


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "secret.json"
    path.write_text("old")
    path.chmod(0o600)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    seen: list[tuple[Path, bool]] = []
    real = taidpt.utils.atomic.fsync_folder
    target = tmp_path / "sub" / "f.txt"

    def spy(folder):
        seen.append((Path(folder), target.exists()))
        real(folder)

    monkeypatch.setattr(taidpt.utils.atomic, "fsync_folder", spy)
    atomic_write_text(target, "x")
    assert seen == [(tmp_path / "sub", True)]


def test_folder_fsync_is_skipped_where_folders_cannot_be_opened(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")  # what Windows says to os.open on a folder

    monkeypatch.setattr(taidpt.utils.atomic.os, "open", refuse)
    taidpt.utils.atomic.fsync_folder(tmp_path)
    taidpt.utils.atomic.fsync_folder(tmp_path / "missing")


def _age(path: Path, seconds: float) -> Path:
    t = time.time() - seconds
    os.utime(path, (t, t))
    return path


@pytest.fixture()
def leftovers(tmp_path):
    """Temp files as atomic_file names them (fresh and two hours old), and look-alikes that are not ours."""
    names = {"fresh": ".model.pt.abc_1234.tmp", "old": ".model.pt.zz9_0000.tmp", "old_other": ".scores.npz.q1w2e3r4.tmp",
             "not_ours": ".model.pt.tmp", "visible": "model.pt.abc12345.tmp", "target": "model.pt"}
    files = {key: tmp_path / name for key, name in names.items()}
    for key, path in files.items():
        path.write_text(key)
        if key != "fresh":
            _age(path, 7200)
    (tmp_path / ".dir.abcdefgh.tmp").mkdir()
    return files


def test_without_the_lock_only_old_temp_files_go(tmp_path, leftovers):
    removed = remove_stale_temps(tmp_path)
    assert sorted(removed) == sorted([leftovers["old"], leftovers["old_other"]])
    assert {p.name for p in tmp_path.iterdir()} == {leftovers[k].name for k in ("fresh", "not_ours", "visible",
                                                                                "target")} | {".dir.abcdefgh.tmp"}


def test_age_and_target_are_parameters(tmp_path, leftovers):
    assert remove_stale_temps(tmp_path, max_age_s=3 * 3600) == []
    assert remove_stale_temps(tmp_path, target="model.pt") == [leftovers["old"]]
    assert leftovers["old_other"].exists() and leftovers["fresh"].exists()


def test_with_the_lock_every_temp_file_goes(tmp_path, leftovers):
    removed = remove_stale_temps(tmp_path, locked=True)
    assert sorted(removed) == sorted([leftovers["fresh"], leftovers["old"], leftovers["old_other"]])
    assert leftovers["target"].read_text() == "target" and (tmp_path / ".dir.abcdefgh.tmp").is_dir()
    assert remove_stale_temps(tmp_path / "missing", locked=True) == []


def test_a_killed_writer_leaves_a_temp_file_the_sweep_removes(tmp_path):
    code = ("import os, sys; from taidpt.utils.atomic import atomic_file\n"
            "with atomic_file(sys.argv[1], 'w') as fh:\n"
            "    fh.write('half'); fh.flush(); os._exit(9)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out.json")], cwd=ROOT, timeout=60)
    assert proc.returncode == 9
    left = list(tmp_path.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".out.json.") and left[0].name.endswith(".tmp")
    assert remove_stale_temps(tmp_path) == []  # it could still be a live writer's
    assert remove_stale_temps(tmp_path, locked=True) == left and not any(tmp_path.iterdir())


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "deeper" / "out.json")  # missing folders are made when writing
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OutputPathError, match="file.txt is a file, not a folder"):
        check_writable(tmp_path / "file.txt" / "sub" / "out.json")
    with pytest.raises(OutputPathError, match="is a folder; expected a file name"):
        check_writable(tmp_path)
    if os.name == "posix" and os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(OutputPathError, match="is not writable"):
            check_writable(tmp_path / "ro" / "out.json")
