"""Failure modes (issue 7): bad images, interrupted runs, safety, determinism.

Bad configuration (unknown dataset, image size, class list, yaml key) and resuming under other settings
are cases of test_train_cli's bad-input table; extending a finished run is tested there too.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# write_bad_images is imported from here by test_distributed
from cli_support import CLASSES, ROOT, common, exif_rotated, run_train, train_env, write_bad_images, write_voc_fixture


# --------------------------------------------------------------------------- bad images
@pytest.mark.slow
def test_zero_shot_decodes_or_skips_bad_images_and_counts_them(tmp_path, tiny_rn_openai_file):
    """One zero-shot run over every awkward kind of image: grey, RGBA, CMYK, 16-bit, EXIF-rotated
    (decoded), empty, truncated, not a JPEG at all (skipped), listed but missing (counted)."""
    root = tmp_path / "data"
    write_voc_fixture(root)
    expected = write_bad_images(root / "VOCdevkit" / "VOC2007")
    (root / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000005.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    expected["000005"] = "skipped"
    out = tmp_path / "run"
    proc = run_train(["--trainer", "ZeroshotCLIPDense", "--output-dir", str(out), *common(root, tiny_rn_openai_file)],
                     tmp_path)
    res = json.loads((out / "results.json").read_text())
    assert res["trainer"] == "ZeroshotCLIPDense" and set(res["mAP"]) == {"global", "local", "merged"}
    skipped = {Path(p).stem for p in res["skipped_images"]}
    missing = {Path(p).stem for p in res["missing_images"]}
    assert skipped == {k for k, v in expected.items() if v == "skipped"} == {"000005", "000007", "000008"}
    assert missing == {k for k, v in expected.items() if v == "missing"}
    assert res["n_skipped_images"] == len(skipped)
    assert res["n_images"] == 12 - len(skipped) - len(missing)
    log = proc.stdout + proc.stderr
    for stem in skipped | missing:
        assert f"{stem}.jpg" in log  # every problem file is named


def test_exif_orientation_is_applied_only_when_asked(tmp_path):
    from taidpt.images.preprocess import load_rgb

    path = tmp_path / "rotated.jpg"
    exif_rotated(path, np.random.default_rng(0))
    assert load_rgb(path).size == (80, 40)  # Dassl / the reference ignore the tag
    assert load_rgb(path, exif_transpose=True).size == (40, 80)


def test_over_long_captions_are_truncated_not_fatal(tiny_rn):
    from taidpt.networks.model import TaIDPTModel

    model = TaIDPTModel(tiny_rn, CLASSES, n_ctx=4)
    ids = model.text.tokenize(["a dog " * 200, "a cat"])
    assert ids.shape == (2, 77)
    assert int(ids[0].argmax()) == 76  # EOT kept as the last token
    feats = model.encode_captions(ids)
    assert feats.tokens.shape[1] == 77 and bool(feats.mask[0].all())


# --------------------------------------------------------------------------- interrupted runs
def _train_cmd(root: Path, weights: Path, out: Path, epochs: int) -> list[str]:
    return [sys.executable, "train.py", "--trainer", "TaIDPT", "--output-dir", str(out), *common(root, weights),
            "OPTIM.MAX_EPOCH", str(epochs), "TRAIN.CHECKPOINT_FREQ", "1", "TRAIN.PRINT_FREQ", "1",
            "TRAINER.TAIDPT.CAPTION_CACHE", "False", "TRAINER.TAIDPT.TRIM_TOKENS", "False",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "8"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path, tiny_rn_openai_file):
    root = tmp_path / "data"
    write_voc_fixture(root)
    # enough captions for epochs that last a few seconds on the uncached 77-token path
    lines = (root / "captions.txt").read_text().splitlines()
    (root / "captions.txt").write_text("\n".join(lines * 4) + "\n")
    env = train_env(tmp_path)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(root, tiny_rn_openai_file, killed, 4), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "log.txt"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # kill in the middle of epoch 3, after epoch 2's checkpoint
            if log.is_file() and re.search(r"epoch \[3/4\] batch \[3/", log.read_text()):
                break
            if proc.poll() is not None:
                pytest.fail("training finished before it could be interrupted")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (killed / "results.json").exists()
    assert (killed / "prompt_learner" / "model.pth.tar-2").is_file()
    assert not (killed / "prompt_learner" / "model.pth.tar-3").exists()
    assert not list((killed / "prompt_learner").glob(".*"))  # no half-written temporary file left behind

    resumed = subprocess.run(_train_cmd(root, tiny_rn_openai_file, killed, 4), cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout and "epoch [3/4]" in resumed.stdout and "epoch [2/4]" not in resumed.stdout
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(root, tiny_rn_openai_file, straight, 4), cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=600)
    a = json.loads((killed / "results.json").read_text())
    b = json.loads((straight / "results.json").read_text())
    assert a["mAP"] == b["mAP"] and a["per_class_AP"] == b["per_class_AP"]


# --------------------------------------------------------------------------- determinism
@pytest.mark.slow
def test_same_seed_gives_a_byte_identical_results_json(finished_run, tmp_path):
    out = tmp_path / "again"
    run_train(["--output-dir", str(out), *finished_run.args], tmp_path)  # the shared run's command, once more
    first = (finished_run.path / "results.json").read_bytes()
    assert (out / "results.json").read_bytes() == first
    assert b"elapsed" not in first


# --------------------------------------------------------------------------- safety
def _python_sources() -> list[Path]:
    folders = ("taidpt", "trainers", "datasets", "export", "bench")
    files = [p for f in folders for p in (ROOT / f).rglob("*.py")] + [ROOT / "train.py"]
    assert len(files) > 20
    return files


def _call_args(text: str, start: int) -> str:
    """The argument text of the call whose opening parenthesis is at ``start`` (balanced)."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i]
    return text[start + 1 :]


def test_no_unsafe_deserialisation_or_shell():
    for path in _python_sources():
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        if rel.as_posix() != "taidpt/utils/safe_pickle.py":  # the one reader of pickles, with a restricted unpickler
            assert not re.search(r"^\s*(import pickle|from pickle|import dill|import cloudpickle)", text, re.M), rel
        else:
            assert "def find_class" in text and "pickle.load(" not in text and "pickle.loads(" not in text
        assert "shell=True" not in text and "os.system(" not in text and "os.popen(" not in text, rel
        assert "allow_pickle=True" not in text, rel
        for match in re.finditer(r"torch\.load\(", text):
            args = _call_args(text, match.end() - 1)
            if "weights_only=False" in args:
                # the single opt-in: legacy reference checkpoints, only with the user's explicit trust flag
                guard = text[max(0, match.start() - 400) : match.start()]
                assert rel.as_posix() == "taidpt/engine/checkpoint.py" and "TRUST_ENV" in guard, f"{rel}: torch.load({args})"
                continue
            assert "weights_only=True" in args, f"{rel}: torch.load({args})"


@pytest.mark.parametrize("trainer", ["TaIDPT", "DualCoOp"])
def test_settings_without_effect_are_named_in_the_log_not_refused(trainer, caplog):
    """CoOp yaml keys taidpt accepts but does not honour (PREC fp16, image augmentation for a
    caption-trained model) load, and the log says they are ignored."""
    import logging

    from taidpt.engine.config import get_cfg_default
    from taidpt.engine.checks import validate_config
    from taidpt.methods import get_method

    cfg = get_cfg_default()
    node = get_method(trainer).node
    cfg.TRAINER[node].PREC = "fp16"
    cfg.INPUT.TRANSFORMS = ["random_flip", "normalize"]
    with caplog.at_level(logging.INFO, logger="taidpt"):
        validate_config(cfg, get_method(trainer))
    assert f"TRAINER.{node}.PREC fp16 ignored" in caplog.text
    assert ("INPUT.TRANSFORMS ['random_flip'] ignored" in caplog.text) == (trainer == "TaIDPT")
