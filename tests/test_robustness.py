"""Failure modes (issue 7): bad images, bad configuration, interrupted runs, safety, determinism."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_train_cli import CLASSES, common, run_train, write_voc_fixture

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- bad images
def _exif_rotated(path: Path, rng) -> None:
    img = Image.fromarray(rng.integers(0, 255, (40, 80, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(path, format="JPEG", exif=exif)


def write_bad_images(voc: Path) -> dict[str, str]:
    """Overwrite fixture images with every awkward kind; returns id -> expected outcome."""
    rng = np.random.default_rng(7)
    jpg = voc / "JPEGImages"
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8), mode="L").save(jpg / "000001.jpg", "PNG")
    Image.fromarray(rng.integers(0, 255, (50, 70, 4), dtype=np.uint8), mode="RGBA").save(jpg / "000002.jpg", "PNG")
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).convert("CMYK").save(jpg / "000003.jpg", "JPEG")
    Image.fromarray(rng.integers(0, 65535, (50, 70), dtype=np.uint16)).save(jpg / "000004.jpg", "PNG")
    _exif_rotated(jpg / "000006.jpg", rng)
    (jpg / "000007.jpg").write_bytes(b"")
    data = (jpg / "000008.jpg").read_bytes()
    (jpg / "000008.jpg").write_bytes(data[: len(data) // 3])  # truncated JPEG
    (jpg / "000009.jpg").unlink()  # listed in test.txt but missing
    return {"000001": "ok", "000002": "ok", "000003": "ok", "000004": "ok", "000006": "ok",
            "000007": "skipped", "000008": "skipped", "000009": "missing"}


@pytest.mark.slow
def test_bad_images_are_decoded_or_skipped_and_counted(tmp_path, tiny_rn_openai_file):
    root = tmp_path / "data"
    write_voc_fixture(root)
    expected = write_bad_images(root / "VOCdevkit" / "VOC2007")
    out = tmp_path / "run"
    proc = run_train(["--trainer", "ZeroshotCLIPDense", "--output-dir", str(out), *common(root, tiny_rn_openai_file)],
                     tmp_path)
    res = json.loads((out / "results.json").read_text())
    skipped = {Path(p).stem for p in res["skipped_images"]}
    missing = {Path(p).stem for p in res["missing_images"]}
    assert skipped == {k for k, v in expected.items() if v == "skipped"}
    assert missing == {k for k, v in expected.items() if v == "missing"}
    assert res["n_images"] == 12 - len(skipped) - len(missing)
    log = proc.stdout + proc.stderr
    for stem in skipped | missing:
        assert f"{stem}.jpg" in log  # every problem file is named


def test_exif_orientation_is_applied_only_when_asked(tmp_path):
    from taidpt.images.preprocess import load_rgb

    path = tmp_path / "rotated.jpg"
    _exif_rotated(path, np.random.default_rng(0))
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


# --------------------------------------------------------------------------- bad configuration
@pytest.mark.parametrize("case", ["unknown_dataset", "bad_image_size", "class_mismatch", "bad_yaml_key"])
def test_bad_configuration_gives_one_clear_line(case, tmp_path, tiny_rn_openai_file):
    root = tmp_path / "data"
    write_voc_fixture(root)
    args = common(root, tiny_rn_openai_file)
    trainer = ["--trainer", "TaIDPT", "--output-dir", str(tmp_path / "out")]
    if case == "unknown_dataset":
        args += ["DATASET.NAME", "VOC2012"]
        expect = "unknown DATASET.NAME 'VOC2012'"
    elif case == "bad_image_size":
        args += ["INPUT.SIZE", "(100, 100)"]
        expect = "multiples of 32"
    elif case == "class_mismatch":
        run_train([*trainer, *args, "OPTIM.MAX_EPOCH", "1"], tmp_path)
        other = root / "other_classes.txt"
        other.write_text("dog\ncat\ncar\nbus\n")
        trainer = ["--trainer", "TaIDPT", "--eval-only", "--model-dir", str(tmp_path / "out"),
                   "--output-dir", str(tmp_path / "eval")]
        args += ["DATASET.CLASS_LIST", str(other)]
        expect = "class list"
        (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "bus_test.txt").write_text(
            "".join(f"{i:06d} -1\n" for i in range(1, 13)))
    else:
        bad = tmp_path / "bad.yaml"
        bad.write_text("TRAINER:\n  TAIDPT:\n    NCTX: 4\n")
        args = [a if a != "configs/trainers/TaIDPT/rn50_voc2007.yaml" else str(bad) for a in args]
        expect = "bad.yaml"
    proc = run_train([*trainer, *args], tmp_path, expect_ok=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in text
    errors = [ln for ln in text.splitlines() if "error" in ln.lower()]
    assert errors and expect in errors[-1], text[-2000:]


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
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2"}
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
def test_same_seed_gives_a_byte_identical_results_json(tmp_path, tiny_rn_openai_file):
    root = tmp_path / "data"
    write_voc_fixture(root)
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        run_train(["--trainer", "TaIDPT", "--output-dir", str(out), *common(root, tiny_rn_openai_file),
                   "OPTIM.MAX_EPOCH", "2"], tmp_path)
        outs.append((out / "results.json").read_bytes())
    assert outs[0] == outs[1]
    assert b"elapsed" not in outs[0]


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


@pytest.mark.slow
def test_resume_refuses_a_run_with_other_settings(tmp_path, tiny_rn_openai_file):
    root = tmp_path / "data"
    write_voc_fixture(root)
    out = tmp_path / "run"
    args = ["--trainer", "TaIDPT", "--output-dir", str(out), *common(root, tiny_rn_openai_file)]
    run_train([*args, "OPTIM.MAX_EPOCH", "1"], tmp_path)
    proc = run_train([*args, "OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.5"], tmp_path, expect_ok=False)
    assert proc.returncode != 0
    assert "other settings (OPTIM.LR 0.01 -> 0.5)" in proc.stdout + proc.stderr
    # extending the schedule is allowed, and integers are accepted for float keys
    proc = run_train([*args, "OPTIM.MAX_EPOCH", "2", "TRAINER.TAIDPT.SPATIAL_SCALE_IMAGE", "20"], tmp_path)
    assert "resumed from" in proc.stdout


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
