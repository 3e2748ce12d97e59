"""A Triton repository keeps its models apart (taidpt.serve.triton_owner): a write never replaces a folder
another model or export owns unless told to (--replace), never writes through a symbolic link, and
--check names collisions."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from taidpt.serve.triton import main, write_repository
from taidpt.serve.triton_owner import OWNER_FILE
from test_infer import exported  # noqa: F401 - fixture
from test_metadata_rules import build_open_set, edited, one_line


@pytest.fixture(scope="module")
def open_set(exported, tmp_path_factory):
    return build_open_set(exported[1], tmp_path_factory.mktemp("open_set"))


def write(onnx, repo, *args: str) -> int:
    return main(["--onnx", str(onnx), "--repository", str(repo), *args])


def test_a_model_does_not_take_over_another_models_part(open_set, tmp_path, capsys):
    """The reported case: --name ov1_text into a repository holding ov1 --open-vocabulary."""
    repo = tmp_path / "repo"
    assert write(open_set, repo, "--name", "ov1", "--open-vocabulary") == 0
    marker = json.loads((repo / "ov1_text" / OWNER_FILE).read_text())
    assert (marker["model"], marker["part"], marker["source"]) == ("ov1", "text", "m.text.onnx")
    text_config = (repo / "ov1_text" / "config.pbtxt").read_bytes()
    capsys.readouterr()
    assert write(open_set, repo, "--name", "ov1_text") == 2
    line = one_line(capsys)
    assert "ov1_text: belongs to the text part of model 'ov1'" in line and "--replace" in line, line
    assert (repo / "ov1_text" / "config.pbtxt").read_bytes() == text_config
    assert write(open_set, repo, "--name", "ov1", "--open-vocabulary", "--check") == 0

    assert write(open_set, repo, "--name", "ov1_text", "--replace") == 0
    capsys.readouterr()
    assert write(open_set, repo, "--name", "ov1", "--open-vocabulary", "--check") == 1
    err = capsys.readouterr().err
    assert "collision: " in err and "ov1_text: belongs to model 'ov1_text'" in err and "DIFFERS" in err


def test_rewriting_the_same_export_is_allowed_another_export_is_not(exported, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert write(exported[1], repo, "--name", "m") == 0
    assert write(exported[1], repo, "--name", "m", "--max-batch", "16", "--preferred-batch", "8") == 0
    other = edited(exported[1], tmp_path / "other.onnx", export_id="another-export")
    capsys.readouterr()
    assert write(other, repo, "--name", "m") == 2
    assert "m: was written for another export (tiny.onnx" in one_line(capsys)
    assert json.loads((repo / "m" / OWNER_FILE).read_text())["source"] == "tiny.onnx"
    assert write(exported[1], repo, "--name", "m", "--check") == 0
    assert write(other, repo, "--name", "m", "--check") == 1
    assert "collision: " in capsys.readouterr().err
    assert write(other, repo, "--name", "m", "--replace") == 0
    assert json.loads((repo / "m" / OWNER_FILE).read_text())["export"] == "another-export"


def test_a_folder_without_a_marker_is_not_overwritten(exported, tmp_path, capsys):
    (tmp_path / "repo" / "hand").mkdir(parents=True)
    (tmp_path / "repo" / "empty").mkdir()
    (tmp_path / "repo" / "hand" / "config.pbtxt").write_text('name: "hand"\n')
    assert write(exported[1], tmp_path / "repo", "--name", "hand") == 2
    assert f"has no {OWNER_FILE}" in one_line(capsys)
    assert (tmp_path / "repo" / "hand" / "config.pbtxt").read_text() == 'name: "hand"\n'
    assert write(exported[1], tmp_path / "repo", "--name", "empty") == 0


@pytest.mark.parametrize("link", ["folder", "version", "labels.txt"])
def test_never_writes_through_a_symbolic_link(exported, tmp_path, capsys, link):
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("untouched")
    if link == "folder":
        repo.mkdir()
        os.symlink(outside, repo / "m")
    else:
        write_repository(exported[1], repo, name="m")
        target = repo / "m" / ("1" if link == "version" else link)
        target.unlink() if target.is_file() else shutil.rmtree(target)
        os.symlink(outside / "keep.txt" if link == "labels.txt" else outside, target)
    capsys.readouterr()
    assert write(exported[1], repo, "--name", "m", "--replace") == 2
    assert "is a symbolic link; refusing to write through it" in one_line(capsys)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert (outside / "keep.txt").read_text() == "untouched"
