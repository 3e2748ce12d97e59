"""Tests of the offline demo: the small CLIP and its pretraining, the demo configs and data, and
(slow, still run in CI) the whole measured experiment with its ordering asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from taidpt.clip.loader import build_clip, load_clip
from taidpt.demo import pretrain as pretrain_mod
from taidpt.demo.experiment import (
    DATASET_YAML,
    FULL,
    QUICK,
    REPO_ROOT,
    TRAINER_YAMLS,
    DemoSettings,
    format_table,
    run_demo,
    train_cli_args,
    write_demo_data,
)
from taidpt.demo.pretrain import DEMO_CLIP_CFG, cache_key, cached_demo_clip, pretrain_clip
from taidpt.demo.scenes import SHAPES

TINY = dict(steps=3, batch_size=16, pool_size=48, warmup_steps=1)


# --------------------------------------------------------------------------- the small CLIP


def test_demo_clip_config_builds_with_design_size():
    model = build_clip(DEMO_CLIP_CFG)
    n = sum(p.numel() for p in model.parameters())
    assert n == 4_647_705  # the demo CLIP's documented size: 4.65M parameters
    assert hasattr(model.visual, "attnpool")
    with torch.no_grad():
        x = torch.zeros(2, 3, 64, 64)
        fmap = model.visual.layer4(model.visual.layer3(model.visual.layer2(model.visual.layer1(model.visual.stem(x)))))
    assert fmap.shape[-2:] == (2, 2)  # a 2x2 dense map for TaI-DPT's local branch
    assert model.positional_embedding.shape[0] == 32
    # weights_only loading needs primitives only
    assert json.loads(json.dumps(DEMO_CLIP_CFG)) == DEMO_CLIP_CFG


def test_pretraining_is_deterministic_and_loads_through_clip_loader(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # pretraining fixes its own count (2 by default) and must restore this one
    try:
        a = pretrain_clip(tmp_path / "a.pt", seed=3, progress=False, **TINY)
        b = pretrain_clip(tmp_path / "b.pt", seed=3, progress=False, **TINY)
        c = pretrain_clip(tmp_path / "c.pt", seed=4, progress=False, **TINY)
        restored = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert restored == 1
    sa, sb, sc = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b, c))
    assert sa["state_dict"].keys() == sb["state_dict"].keys()
    assert all(torch.equal(sa["state_dict"][k], sb["state_dict"][k]) for k in sa["state_dict"])
    assert not all(torch.equal(sa["state_dict"][k], sc["state_dict"][k]) for k in sa["state_dict"])
    assert sa["meta"]["steps"] == 3 and sa["meta"]["seed"] == 3

    model, info = load_clip("DemoRN", str(a))
    assert info.source == "taidpt" and info.image_size == 64 and info.is_resnet and info.context_length == 32
    assert float(model.logit_scale.exp()) <= 100.0 + 1e-4


def test_pretraining_loss_decreases(tmp_path):
    path = pretrain_clip(tmp_path / "w.pt", seed=0, steps=30, batch_size=64, pool_size=640, warmup_steps=5,
                         progress=False)
    curve = torch.load(path, map_location="cpu", weights_only=True)["meta"]["loss_curve"]
    assert len(curve) == 30
    assert np.mean(curve[-5:]) < np.mean(curve[:5]) - 0.3, curve


def test_pretraining_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        pretrain_clip(tmp_path / "x.pt", batch_size=64, pool_size=32, progress=False)
    with pytest.raises(ValueError, match="steps"):
        pretrain_clip(tmp_path / "x.pt", steps=0, progress=False)


def test_cache_key_depends_on_every_setting():
    base = cache_key(0)
    assert base == cache_key(0, **pretrain_mod.PRETRAIN_DEFAULTS, threads=2)  # defaults filled in
    variants = [cache_key(1), cache_key(0, steps=1399), cache_key(0, lr=1e-3), cache_key(0, batch_size=64),
                cache_key(0, pool_size=20000), cache_key(0, weight_decay=0.0), cache_key(0, threads=1),
                cache_key(0, warmup_steps=10)]
    assert len({base, *variants}) == len(variants) + 1
    with pytest.raises(ValueError, match="unknown pretraining settings"):
        cache_key(0, step=5)


def test_cached_demo_clip_pretrains_once(tmp_path, monkeypatch):
    calls = []
    real = pretrain_mod.pretrain_clip

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain_mod, "pretrain_clip", counting)
    first = cached_demo_clip(0, tmp_path, progress=False, **TINY)
    second = cached_demo_clip(0, tmp_path, progress=False, **TINY)
    assert first == second and first.is_file() and len(calls) == 1
    assert first.parent == tmp_path / "demo" and first.name.startswith("clip-")
    other = cached_demo_clip(1, tmp_path, progress=False, **TINY)
    assert other != first and len(calls) == 2


def test_demo_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert pretrain_mod.demo_cache_dir() == tmp_path / "taidpt"
    assert pretrain_mod.demo_cache_dir(tmp_path / "x") == tmp_path / "x"


# --------------------------------------------------------------------------- configs and data


@pytest.mark.parametrize("trainer", sorted(TRAINER_YAMLS))
def test_demo_yamls_assemble_like_train_py(tmp_path, trainer):
    from taidpt.engine.cli import parse_args, setup_cfg
    from taidpt.engine.config import get_cfg_default

    argv = train_cli_args(trainer, tmp_path / "data", tmp_path / "out", tmp_path / "w.pt", 2, tmp_path / "cache")
    cfg = setup_cfg(get_cfg_default(), parse_args(argv))
    assert cfg.TRAINER.NAME == trainer and cfg.SEED == 2
    assert cfg.DATASET.NAME == "VOC2007" and cfg.DATASET.CLASS_LIST == "shapes14"
    assert cfg.DATASET.CAPTION_FILE == "captions.txt" and cfg.DATASET.CAPTION_SOURCE == "text"
    assert tuple(cfg.INPUT.SIZE) == (64, 64)
    assert cfg.MODEL.BACKBONE.PRETRAINED == str(tmp_path / "w.pt")
    assert cfg.DATASET.CACHE_DIR == str(tmp_path / "cache")
    if trainer == "TaIDPT":
        assert cfg.OPTIM.NAME == "sgd" and cfg.OPTIM.LR == pytest.approx(5e-4) and cfg.OPTIM.MAX_EPOCH == 40
        assert cfg.OPTIM.MOMENTUM == pytest.approx(0.9) and cfg.OPTIM.WEIGHT_DECAY == pytest.approx(5e-4)
        assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 512 and cfg.TRAINER.TAIDPT.N_CTX == 16
        assert cfg.OPTIM.WARMUP_EPOCH == 1 and cfg.OPTIM.WARMUP_TYPE == "constant"
        assert cfg.TRAINER.TAIDPT.LOGIT_SCALE == 4.0 and cfg.TRAINER.TAIDPT.MERGE_RATE == 0.5
        assert cfg.TEST.FINAL_MODEL == "last_step"
    assert DATASET_YAML.is_file()


def test_write_demo_data_real_voc_layout_and_reuse(tmp_path):
    from taidpt.engine.cli import parse_args, setup_cfg
    from taidpt.engine.config import get_cfg_default
    from taidpt.images.registry import load_test_set

    data = tmp_path / "data"
    write_demo_data(data, n_images=12, n_captions=30, seed=5)
    captions = (data / "captions.txt").read_text(encoding="utf-8").splitlines()
    assert len(captions) == 30
    mtime = (data / "captions.txt").stat().st_mtime_ns
    write_demo_data(data, n_images=12, n_captions=30, seed=5)  # identical request: nothing rewritten
    assert (data / "captions.txt").stat().st_mtime_ns == mtime

    argv = train_cli_args("ZeroshotCLIPDense", data, tmp_path / "out", tmp_path / "w.pt", 1, tmp_path / "cache")
    image_set, classes = load_test_set(setup_cfg(get_cfg_default(), parse_args(argv)))
    assert tuple(classes.names) == SHAPES
    assert len(image_set.paths) == 12 and image_set.targets.shape == (12, 14)

    write_demo_data(data, n_images=8, n_captions=30, seed=5)  # a different request rewrites
    image_set, _ = load_test_set(setup_cfg(get_cfg_default(), parse_args(argv)))
    assert len(image_set.paths) == 8


def test_settings_are_labelled():
    assert FULL.measured and not QUICK.measured
    assert QUICK.pretrain["steps"] < FULL.pretrain["steps"] and QUICK.n_test_images < FULL.n_test_images
    assert FULL.pretrain["steps"] == 1400 and FULL.pretrain["pool_size"] == 30000


def test_tiny_demo_end_to_end(tmp_path):
    """The whole pipeline on a tiny setting (not a measurement): files, table and summary shape."""
    tiny = DemoSettings("tiny", n_test_images=40, n_captions=200, data_seed=7,
                        pretrain=dict(steps=4, batch_size=16, pool_size=64, lr=3e-3, weight_decay=0.1,
                                      warmup_steps=1), measured=False)
    summary = run_demo(tmp_path / "out", seeds=(1, 2), cache_dir=tmp_path / "cache", progress=False,
                       settings=tiny, extra_opts=["OPTIM.MAX_EPOCH", "2"])
    out = tmp_path / "out"
    saved = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert saved["taidpt"]["seeds"] == [1, 2] and not saved["measured"]
    assert (out / "per_class_ap.png").stat().st_size > 1000
    for run in ("zeroshot", "taidpt_seed1", "taidpt_seed2"):
        assert (out / "runs" / run / "results.json").is_file()
    for k in ("global", "local", "merged"):
        assert 0.0 <= saved["zero_shot"]["mAP"][k] <= 100.0
        vals = [saved["taidpt"]["runs"][s]["mAP"][k] for s in ("1", "2")]
        assert saved["taidpt"]["mean"][k] == pytest.approx(np.mean(vals))
    assert set(saved["taidpt"]["per_class_AP_mean"]) == set(SHAPES)
    assert all(c.startswith("python train.py --trainer ") for c in saved["commands"])
    table = format_table(summary)
    assert "TINY SMOKE RUN" in table and "zero-shot CLIP" in table and "±" in table
    first = json.loads((out / "runs" / "taidpt_seed1" / "results.json").read_text(encoding="utf-8"))
    assert first["epochs_trained"] == 2
    # A rerun reuses the cached CLIP; with other settings the previous run is not resumed.
    again = run_demo(out, seeds=(1,), cache_dir=tmp_path / "cache", progress=False, settings=tiny,
                     extra_opts=["OPTIM.MAX_EPOCH", "1"])
    assert again["pretrain"]["cached"] and again["pretrain"]["weights"] == summary["pretrain"]["weights"]
    rerun = json.loads((out / "runs" / "taidpt_seed1" / "results.json").read_text(encoding="utf-8"))
    assert rerun["epochs_trained"] == 1
    assert again["zero_shot"]["mAP"] == summary["zero_shot"]["mAP"]  # deterministic


def test_run_demo_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="distinct"):
        run_demo(tmp_path, seeds=(1, 1))
    with pytest.raises(ValueError, match="KEY VALUE"):
        run_demo(tmp_path, seeds=(1,), extra_opts=["OPTIM.LR"])


def test_main_reports_bad_threads(capsys):
    from taidpt.demo.__main__ import main

    assert main(["--out", "x", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err


# --------------------------------------------------------------------------- the measured experiment


@pytest.mark.slow
def test_full_demo_orders_methods_as_measured(tmp_path):
    """``python -m taidpt.demo`` in its measured setting with a cold cache (pretraining included),
    asserting the measured ordering of the methods with margins set inside what was measured.

    Measured (test images; pretraining seeds 0 / 1 / 2, prompt seeds 1-3, means):
    zero-shot global 76.9 / 77.6 / 78.3, merged 78.0 / 80.3 / 85.1; TaI global 86.4 / 85.6 / 86.9;
    local 92.8 / 91.9 / 94.5; TaI-DPT merged 92.4 / 91.5 / 93.4; largest prompt-seed std 0.7. A
    different CPU or torch build changes floating-point rounding and so acts like another
    pretraining seed, hence margins a few points inside the worst measured seed. Runs in a
    subprocess with OMP_WAIT_POLICY=PASSIVE, as ``python -m taidpt.demo`` would (shared cores).
    """
    out = tmp_path / "demo"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "taidpt.demo", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
         "--no-progress"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "TaI / local / TaI-DPT" in proc.stdout and "measured setting" in proc.stdout
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["measured"] and not summary["pretrain"]["cached"]
    assert summary["taidpt"]["seeds"] == [1, 2, 3] and summary["pretrain"]["meta"]["steps"] == 1400
    z = summary["zero_shot"]["mAP"]
    t = summary["taidpt"]["mean"]
    s = summary["taidpt"]["std"]
    assert 55.0 <= z["global"] <= 85.0, z  # the CLIP learned something, but not everything (76.9 .. 78.3)
    assert t["global"] - z["global"] >= 5.0, (t, z)  # TaI beats zero-shot (measured +8.0 .. +9.5)
    assert t["merged"] - z["merged"] >= 5.0, (t, z)  # TaI-DPT beats zero-shot (measured +8.3 .. +14.4)
    assert t["local"] - t["global"] >= 3.0, t  # the dense branch helps (measured +6.3 .. +7.6)
    assert t["merged"] - t["global"] >= 3.0, t  # double-grained > global only (measured +5.9 .. +6.5)
    assert t["merged"] >= 85.0, t  # measured 91.5 .. 93.4
    assert max(s.values()) <= 1.5, s  # prompt seeds agree (measured <= 0.7)
    assert (out / "per_class_ap.png").stat().st_size > 1000


def test_image_prompting_demo_training_split_and_table(tmp_path):
    """The image-prompting demo's trainval split is disjoint from the test ids and reused; its table
    reports every run at every fixed rate."""
    from taidpt.demo.image_prompting import TRAIN_FIRST_ID, format_table, write_train_split

    write_train_split(tmp_path, 5)
    main = tmp_path / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    ids = (main / "trainval.txt").read_text().split()
    assert ids == [f"{i:06d}" for i in range(TRAIN_FIRST_ID, TRAIN_FIRST_ID + 5)]
    assert all((main.parents[1] / "JPEGImages" / f"{i}.jpg").is_file() for i in ids)
    stamp = (main / "trainval.txt").stat().st_mtime_ns
    write_train_split(tmp_path, 5)  # same size: kept
    assert (main / "trainval.txt").stat().st_mtime_ns == stamp

    row = {"mAP": {"merged": 80.0}, "ensemble": {"0.5": {"ensemble": 91.25}, "0.9": {"ensemble": 85.0}}}
    summary = {"taidpt": {"merged": 92.5}, "zero_shot": {"merged": 78.0}, "rates": [0.5, 0.9],
               "image_prompting": {"dualcoop_p0.1": row}}
    table = format_table(summary).splitlines()
    assert table[0] == "TaI-DPT (captions only): 92.5; zero-shot CLIP: 78.0"
    assert table[-1] == "| dualcoop_p0.1 | 80.0 | 91.2 | 85.0 |"
