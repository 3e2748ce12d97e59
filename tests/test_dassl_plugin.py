"""The Dassl/CoOp plugin (trainers/, datasets/, train.py's Dassl path) against the real Dassl.

Tests marked ``dassl`` need an environment where ``import dassl.engine`` works (see docs/dassl.md,
"Dassl / CoOp plugin"); elsewhere they are skipped with the reason. The tests at the end check
train.py where Dassl is absent or broken, and run everywhere.
"""

from __future__ import annotations

import ast
import json
import math
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_support import worker_threads
from dassl_support import dassl_status, require_dassl
from test_train_cli import CLASSES, common, write_voc_fixture

ROOT = Path(__file__).resolve().parents[1]
OUR_TRAINERS = ("TaIDPT", "ZeroshotCLIPDense")
OUR_DATASETS = ("VOC2007", "COCO2014", "NUSWIDE", "COCOFormat", "CSV")
# Fields that legitimately differ between two runs of the same configuration.
RUN_SPECIFIC = ("elapsed_s", "checkpoint")


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
def dassl():
    require_dassl()


@pytest.fixture(autouse=True)
def _drop_taidpt_handlers():
    """In-process trainers attach a stdout handler to taidpt's logger; pytest swaps stdout per test."""
    yield
    import logging

    logger = logging.getLogger("taidpt")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


# voc_root (the VOC fixture) comes from conftest, common (the tiny-CLIP test configuration) from test_train_cli.


def run_train(args: list[str], cache: Path, expect_ok: bool = True,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(cache),
                "OMP_NUM_THREADS": str(worker_threads()),
                **(env or {})}
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=600)
    if expect_ok and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def comparable(res: dict) -> dict:
    """results.json without run-specific fields; the checkpoint reduced to its file name."""
    out = {k: v for k, v in res.items() if k not in RUN_SPECIFIC}
    out["checkpoint_file"] = Path(res["checkpoint"]).name if res.get("checkpoint") else None
    return out


def assert_same_tensors(a, b, where: str) -> None:
    """Recursive exact equality of checkpoint contents (tensors compared bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_checkpoints(run_a: Path, run_b: Path, names: list[str]) -> None:
    for name in names:
        a = torch.load(run_a / "prompt_learner" / name, weights_only=True)
        b = torch.load(run_b / "prompt_learner" / name, weights_only=True)
        assert_same_tensors(a, b, name)


def dassl_cfg(root: Path, weights: Path, out: Path, *opts: str, trainer: str = "TaIDPT"):
    """The config train.py's Dassl path builds: Dassl's defaults + extend_cfg + yaml + flags."""
    from dassl.config import get_cfg_default

    from taidpt.engine.cli import build_parser, setup_cfg
    from taidpt.engine.config import extend_cfg

    args = build_parser().parse_args(["--trainer", trainer, "--output-dir", str(out), *common(root, weights), *opts])
    return setup_cfg(extend_cfg(get_cfg_default()), args)


# ----------------------------------------------------------------------------- registration, data, evaluator
@pytest.mark.dassl
def test_classes_are_registered_once_under_free_names(dassl):
    import datasets.taidpt_datasets as ds_mod
    import trainers.taidpt as tr_mod
    from dassl.data.datasets import DATASET_REGISTRY
    from dassl.engine import TRAINER_REGISTRY
    from dassl.evaluation import EVALUATOR_REGISTRY

    from taidpt.methods import get_method, method_names

    for name in method_names():  # one Dassl trainer per registered method, made from the registry
        trainer = TRAINER_REGISTRY.get(name)
        base = tr_mod.PromptTuningTrainer if get_method(name).trains_on else tr_mod.FrozenModelTrainer
        assert trainer.__name__ == name and trainer.kind == name and issubclass(trainer, base)
    assert set(OUR_TRAINERS) <= set(method_names())
    assert tr_mod.register_methods() == []  # importing twice registers nothing twice
    for name in OUR_DATASETS:
        assert DATASET_REGISTRY.get(name) is getattr(ds_mod, name)
    assert EVALUATOR_REGISTRY.get("MultiLabelEvaluator").__module__.endswith("trainers.evaluator")
    # Dassl's own entries are untouched, and CoOp's ZeroshotCLIP stays free for a CoOp checkout.
    assert "Classification" in EVALUATOR_REGISTRY.registered_names()
    assert {"Vanilla", "FixMatch"} <= set(TRAINER_REGISTRY.registered_names())
    assert "ZeroshotCLIP" not in TRAINER_REGISTRY.registered_names()
    assert not {"CoreBackedTrainer", "PromptTuningTrainer", "FrozenModelTrainer"} & set(TRAINER_REGISTRY.registered_names())
    assert "MultiLabelTestSet" not in DATASET_REGISTRY.registered_names()
    # A second registration (the module imported under another path) is refused by Dassl.
    with pytest.raises(KeyError):
        TRAINER_REGISTRY.register(TRAINER_REGISTRY.get("TaIDPT"))


@pytest.mark.dassl
def test_datasets_carry_multi_hot_labels_through_dassl_pipeline(dassl, tmp_path, tiny_rn_openai_file):
    from dassl.data.data_manager import build_data_loader
    from dassl.data.datasets import build_dataset
    from dassl.data.transforms import build_transform

    import datasets.taidpt_datasets  # noqa: F401
    from taidpt.images.loaders import ImageSetDataset
    from taidpt.engine.checks import preprocess_config

    root = tmp_path / "voc"
    write_voc_fixture(root)
    (root / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000004.jpg").unlink()  # listed but missing
    cfg = dassl_cfg(root, tiny_rn_openai_file, tmp_path / "out")
    dataset = build_dataset(cfg)

    assert dataset.num_classes == 3 and dataset.classnames == CLASSES
    assert dataset.lab2cname == dict(enumerate(CLASSES))
    assert dataset.train_x == [] and dataset.val is None
    assert len(dataset.test) == 11 and [Path(p).name for p in dataset.image_set.missing] == ["000004.jpg"]
    labels = torch.stack([d.label for d in dataset.test])
    assert labels.dtype == torch.float32 and torch.equal(labels, torch.from_numpy(dataset.image_set.targets).float())

    loader = build_data_loader(cfg, sampler_type="SequentialSampler", data_source=dataset.test, batch_size=5,
                               tfm=build_transform(cfg, is_train=False), is_train=False)
    batch = next(iter(loader))
    assert batch["label"].shape == (5, 3) and torch.equal(batch["label"], labels[:5])
    # Dassl's test transform and the core's preprocessing give the same pixels.
    core = ImageSetDataset(dataset.image_set, preprocess_config(cfg))
    assert torch.equal(batch["img"], torch.stack([core[i]["img"] for i in range(5)]))


@pytest.mark.dassl
def test_evaluator_reports_core_metrics_headline_first(dassl, capsys):
    from dassl.config import get_cfg_default
    from dassl.evaluation import build_evaluator

    import trainers.evaluator  # noqa: F401
    from taidpt.engine.config import extend_cfg
    from taidpt.evaluation.metrics import evaluate_multilabel

    cfg = extend_cfg(get_cfg_default())
    cfg.TEST.EVALUATOR = "MultiLabelEvaluator"
    cfg.TRAINER.NAME = "TaIDPT"
    cfg.TRAINER.TAIDPT.MERGE_RATE = 0.3
    rng = np.random.default_rng(0)
    z_g, z_l = rng.normal(size=(2, 20, 4)).astype(np.float32)
    targets = rng.integers(0, 2, (20, 4))
    names = {0: "a", 1: "b", 2: "c", 3: "d"}
    evaluator = build_evaluator(cfg, lab2cname=names)
    for sl in (slice(0, 8), slice(8, 20)):
        g, loc = torch.from_numpy(z_g[sl]), torch.from_numpy(z_l[sl])
        evaluator.process((0.3 * g + 0.7 * loc, g, loc), torch.from_numpy(targets[sl]).float())
    summary = evaluator.evaluate()

    expected = evaluate_multilabel(z_g, z_l, targets, list(names.values()), merge_rate=0.3, threshold=0.0)
    assert list(summary) == ["mAP", "mAP_global", "mAP_local", "CF1", "OF1"]
    assert summary["mAP"] == pytest.approx(expected["mAP"]["merged"], abs=1e-9)
    assert summary["mAP_global"] == pytest.approx(expected["mAP"]["global"], abs=1e-9)
    assert summary["mAP_local"] == pytest.approx(expected["mAP"]["local"], abs=1e-9)
    assert summary["CF1"] == pytest.approx(expected["CF1"]) and summary["OF1"] == pytest.approx(expected["OF1"])
    assert evaluator.results["per_class_AP"].keys() == {"a", "b", "c", "d"}
    assert f"* mAP: {expected['mAP']['merged']:.2f}%" in capsys.readouterr().out

    # a single-score model (any Dassl trainer returning [B, C] logits) is scored as global only
    evaluator.reset()
    evaluator.process(torch.from_numpy(z_g), torch.from_numpy(targets).float())
    single = evaluator.evaluate()
    assert single["mAP"] == single["mAP_global"] == single["mAP_local"]
    assert single["mAP"] == pytest.approx(expected["mAP"]["global"], abs=1e-9)


@pytest.mark.dassl
def test_mirrored_defaults_equal_dassls_own(dassl):
    """Every default taidpt mirrors (taidpt.engine.config.dassl_defaults) has Dassl's value and type."""
    from dassl.config import get_cfg_default

    from taidpt.engine.config import dassl_defaults

    theirs = get_cfg_default()
    checked = []

    def walk(ours, ref, prefix: str) -> None:
        for key, value in ours.items():
            name = prefix + key
            assert key in ref, f"{name} is not a Dassl key"
            if hasattr(value, "items"):
                walk(value, ref[key], name + ".")
                continue
            assert type(value) is type(ref[key]) and value == ref[key], f"{name}: ours {value!r}, Dassl {ref[key]!r}"
            checked.append(name)

    walk(dassl_defaults(), theirs, "")
    assert len(checked) > 60 and "OPTIM.WARMUP_CONS_LR" in checked and "INPUT.INTERPOLATION" in checked


# ----------------------------------------------------------------------------- build_trainer in process
@pytest.mark.dassl
@pytest.mark.slow
def test_build_trainer_trains_tests_and_reloads(dassl, voc_root, tiny_rn_openai_file, tmp_path, monkeypatch):
    from dassl.engine import build_trainer

    import datasets.taidpt_datasets  # noqa: F401
    import trainers.taidpt  # noqa: F401

    out = tmp_path / "run"
    trainer = build_trainer(dassl_cfg(voc_root, tiny_rn_openai_file, out, "OPTIM.MAX_EPOCH", "2"))
    assert trainer.get_model_names() == ["prompt_learner"]
    assert trainer.dm.dataset.classnames == CLASSES and trainer.num_classes == 3
    assert trainer.train_loader_x is None and trainer.val_loader is None  # captions load in before_train
    prompt_params = {id(p) for p in trainer.core.model.prompt_learner.parameters()}
    optim_params = {id(p) for g in trainer.core.optimizer.param_groups for p in g["params"]}
    assert optim_params == prompt_params and len(prompt_params) == 2

    trainer.train()
    res = results(out)
    assert res["trainer"] == "TaIDPT" and res["epochs_trained"] == 2 and res["model_selection"] == "last_step"
    assert {p.name for p in (out / "prompt_learner").iterdir()} == {"checkpoint", "model.pth.tar-1", "model.pth.tar-2"}
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert trainer.train_loader_x is trainer.core.loader and len(trainer.train_loader_x) == 19
    assert trainer.test() == pytest.approx(res["mAP"]["merged"], abs=1e-9)
    with pytest.raises(ValueError, match="VAL_CAPTIONS"):
        trainer.test(split="val")  # never falls back to the test images

    # a fresh trainer reloads epoch 2 (Dassl's own load_model crashes on these files) ...
    fresh = build_trainer(dassl_cfg(voc_root, tiny_rn_openai_file, tmp_path / "eval"))
    fresh.load_model(str(out), epoch=2)
    assert fresh.test() == pytest.approx(res["mAP"]["merged"], abs=1e-9)
    with pytest.raises(FileNotFoundError, match="model.pth.tar-7"):
        fresh.load_model(str(out), epoch=7)

    # ... a reference-style checkpoint (extra buffers, a pickled scheduler object) loads when trusted ...
    state = torch.load(out / "prompt_learner" / "model.pth.tar-2", weights_only=True)["state_dict"]
    ref = tmp_path / "reference"
    (ref / "prompt_learner").mkdir(parents=True)
    torch.save({"state_dict": {**state, "token_prefix": torch.zeros(3, 1, 64), "token_suffix": torch.zeros(3, 60, 64)},
                "epoch": 50, "optimizer": None, "scheduler": {"successor": Fraction(1, 3)}, "val_result": None},
               ref / "prompt_learner" / "model-best.pth.tar")
    with pytest.raises(RuntimeError, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        fresh.load_model(str(ref))
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    fresh.load_model(str(ref))
    assert fresh.test() == pytest.approx(res["mAP"]["merged"], abs=1e-9)
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")

    # ... and a checkpoint of another class list is refused with the reason.
    other = torch.load(out / "prompt_learner" / "model.pth.tar-2", weights_only=True)
    other["meta"]["classnames"] = ["bird", "cat", "car"]
    (tmp_path / "other" / "prompt_learner").mkdir(parents=True)
    torch.save(other, tmp_path / "other" / "prompt_learner" / "model.pth.tar-2")
    with pytest.raises(ValueError, match="trained for 3 classes"):
        fresh.load_model(str(tmp_path / "other"), epoch=2)


# ----------------------------------------------------------------------------- train.py: Dassl vs core
@pytest.fixture(scope="module")
def dassl_run(voc_root, tiny_rn_openai_file, tmp_path_factory):
    """A 2-epoch TaIDPT run through ``train.py --engine dassl`` (shared by the tests below)."""
    require_dassl()
    base = tmp_path_factory.mktemp("dassl_run")
    out = base / "run"
    proc = run_train(["--engine", "dassl", "--trainer", "TaIDPT", "--output-dir", str(out),
                      *common(voc_root, tiny_rn_openai_file), "OPTIM.MAX_EPOCH", "2"], base / "cache")
    return out, proc


@pytest.mark.dassl
@pytest.mark.slow
def test_dassl_and_core_engines_give_identical_runs(dassl, dassl_run, voc_root, tiny_rn_openai_file, tmp_path):
    d_run, d_proc = dassl_run
    assert d_proc.stdout.count("running the Dassl plugin") == 1 and "Dassl 0." in d_proc.stdout
    log = (d_run / "log.txt").read_text()
    assert "Finish training" in log and "=> result" in log and "* mAP: " in log  # CoOp's parse_test_res.py
    assert list((d_run / "tensorboard").glob("events.out.tfevents.*"))

    args = common(voc_root, tiny_rn_openai_file)
    c_run = tmp_path / "core"
    c_proc = run_train(["--engine", "core", "--trainer", "TaIDPT", "--output-dir", str(c_run), *args,
                        "OPTIM.MAX_EPOCH", "2"], tmp_path / "cache")
    assert "core runner (--engine core)" in c_proc.stdout and "Dassl" not in c_proc.stdout
    assert comparable(results(d_run)) == comparable(results(c_run))
    assert_same_checkpoints(d_run, c_run, ["model.pth.tar-1", "model.pth.tar-2"])

    # Both resume from epoch 2 to 3 (a longer cosine schedule) and still agree.
    d_more = tmp_path / "dassl_more"
    shutil.copytree(d_run, d_more)
    for engine, run in (("dassl", d_more), ("core", c_run)):
        proc = run_train(["--engine", engine, "--trainer", "TaIDPT", "--output-dir", str(run), *args,
                          "OPTIM.MAX_EPOCH", "3"], tmp_path / "cache")
        assert "resumed from" in proc.stdout and "epoch [1/3]" not in proc.stdout and "epoch [3/3]" in proc.stdout
    assert comparable(results(d_more)) == comparable(results(c_run))
    assert_same_checkpoints(d_more, c_run, ["model.pth.tar-3"])


@pytest.mark.dassl
@pytest.mark.slow
def test_best_val_and_zero_shot_agree_across_engines(dassl, voc_root, tiny_rn_openai_file, tmp_path):
    args = common(voc_root, tiny_rn_openai_file)
    best = ["OPTIM.MAX_EPOCH", "2", "TEST.FINAL_MODEL", "best_val", "DATASET.VAL_CAPTIONS", "0.2"]
    runs = {}
    for engine in ("dassl", "core"):
        runs[engine, "best"] = tmp_path / f"{engine}_best"
        proc = run_train(["--engine", engine, "--trainer", "TaIDPT", "--output-dir", str(runs[engine, "best"]),
                          *args, *best], tmp_path / "cache")
        assert "held-out caption mAP" in proc.stdout
        runs[engine, "zs"] = tmp_path / f"{engine}_zs"
        run_train(["--engine", engine, "--trainer", "ZeroshotCLIPDense", "--output-dir", str(runs[engine, "zs"]),
                   *args], tmp_path / "cache")
    assert results(runs["dassl", "best"])["model_selection"] == "best_val (held-out captions)"
    assert comparable(results(runs["dassl", "best"])) == comparable(results(runs["core", "best"]))
    assert_same_checkpoints(runs["dassl", "best"], runs["core", "best"], ["model-best.pth.tar", "model.pth.tar-2"])
    zs_dassl, zs_core = results(runs["dassl", "zs"]), results(runs["core", "zs"])
    assert zs_dassl["trainer"] == "ZeroshotCLIPDense"
    assert comparable(zs_dassl) == comparable(zs_core)


@pytest.mark.dassl
@pytest.mark.slow
def test_eval_only_reloads_a_dassl_checkpoint(dassl, dassl_run, voc_root, tiny_rn_openai_file, tmp_path):
    d_run, _ = dassl_run
    trained = results(d_run)
    args = common(voc_root, tiny_rn_openai_file)
    for engine in ("dassl", "core"):  # the file format is shared: each engine reads the other's files
        ev = tmp_path / f"eval_{engine}"
        run_train(["--engine", engine, "--trainer", "TaIDPT", "--eval-only", "--model-dir", str(d_run),
                   "--load-epoch", "2", "--output-dir", str(ev), *args], tmp_path / "cache")
        res = results(ev)
        assert res["model_selection"] == "loaded model.pth.tar-2" and res["epochs_trained"] == 2
        assert res["mAP"] == trained["mAP"] and res["per_class_AP"] == trained["per_class_AP"]

    # a checkpoint trained for other classes gives one clear line, no traceback
    ckpt = torch.load(d_run / "prompt_learner" / "model.pth.tar-2", weights_only=True)
    ckpt["meta"]["classnames"] = ["bird", "cat", "car"]
    (tmp_path / "other" / "prompt_learner").mkdir(parents=True)
    torch.save(ckpt, tmp_path / "other" / "prompt_learner" / "model.pth.tar-2")
    proc = run_train(["--engine", "dassl", "--trainer", "TaIDPT", "--eval-only", "--model-dir", str(tmp_path / "other"),
                      "--output-dir", str(tmp_path / "bad"), *args], tmp_path / "cache", expect_ok=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert "was trained for 3 classes (bird, cat, car...) but this run has 3 (dog, cat, car" in proc.stderr
    proc = run_train(["--engine", "dassl", "--trainer", "TaIDPT", "--eval-only", "--output-dir",
                      str(tmp_path / "nodir"), *args], tmp_path / "cache", expect_ok=False)
    assert proc.returncode == 1 and "needs --model-dir" in proc.stderr


COOP_ENV = "TAIDPT_COOP_CHECKOUT"


@pytest.mark.dassl
@pytest.mark.slow
def test_drop_in_use_from_a_coop_checkout(dassl, dassl_run, voc_root, tiny_rn_openai_file, tmp_path):
    """The drop-in recipe of docs/dassl.md applied to CoOp's own train.py (set TAIDPT_COOP_CHECKOUT to a CoOp checkout)."""
    source = os.environ.get(COOP_ENV, "")
    if not source or not (Path(source) / "train.py").is_file():
        pytest.skip(f"set {COOP_ENV} to a checkout of github.com/KaiyangZhou/CoOp to run this test")
    coop = tmp_path / "coop"
    shutil.copytree(source, coop, ignore=shutil.ignore_patterns(".git", "output"))
    for name in ("taidpt.py", "evaluator.py"):
        shutil.copy(ROOT / "trainers" / name, coop / "trainers" / name)
    shutil.copy(ROOT / "datasets" / "taidpt_datasets.py", coop / "datasets" / "taidpt_datasets.py")
    for name in ("voc2007", "coco2014", "nuswide"):
        shutil.copy(ROOT / "configs" / "datasets" / f"{name}.yaml", coop / "configs" / "datasets")
    for name in ("TaIDPT", "ZeroshotCLIPDense"):
        shutil.copytree(ROOT / "configs" / "trainers" / name, coop / "configs" / "trainers" / name)
    script = (coop / "train.py").read_text()
    imports_after, call_after = "import trainers.zsclip\n", '    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # all, base or new\n'
    assert imports_after in script and call_after in script, "CoOp's train.py changed: update the recipe in docs/dassl.md"
    script = script.replace(imports_after, imports_after + "import datasets.taidpt_datasets\nimport trainers.taidpt\n"
                            "from taidpt.engine.config import extend_cfg as extend_taidpt_cfg\n")
    (coop / "train.py").write_text(script.replace(call_after, call_after + "    extend_taidpt_cfg(cfg)\n"))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": str(worker_threads())}
    args = [a for a in common(voc_root, tiny_rn_openai_file) if a != "--no-progress"]
    out = tmp_path / "out" / "TaIDPT" / "seed1"

    def coop_run(*extra: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, *extra], cwd=coop, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    coop_run("train.py", "--trainer", "TaIDPT", "--output-dir", str(out), *args, "OPTIM.MAX_EPOCH", "2")
    d_run, _ = dassl_run
    assert comparable(results(out)) == comparable(results(d_run))
    assert_same_checkpoints(out, d_run, ["model.pth.tar-2"])
    coop_run("train.py", "--trainer", "TaIDPT", "--output-dir", str(tmp_path / "eval"), "--eval-only",
             "--model-dir", str(out), "--load-epoch", "2", *args)
    assert results(tmp_path / "eval")["mAP"] == results(d_run)["mAP"]
    parsed = coop_run("parse_test_res.py", str(out.parent), "--keyword", "mAP").stdout
    assert f"* mAP: {results(d_run)['mAP']['merged']:.2f}%" in parsed


# ----------------------------------------------------------------------------- without a usable Dassl (always run)
def broken_dassl(tmp_path: Path) -> dict[str, str]:
    """An environment whose ``dassl`` imports but whose engine raises, as with a mismatched torchvision."""
    shim = tmp_path / "shim" / "dassl"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('__version__ = "0.6.3"\n')
    (shim / "engine.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    return {"PYTHONPATH": str(shim.parent)}


@pytest.mark.parametrize("case", ["broken", "absent"])
def test_engine_dassl_without_dassl_fails_with_one_line(case, voc_root, tiny_rn_openai_file, tmp_path):
    if case == "absent" and dassl_status()[0]:
        pytest.skip("Dassl is installed in this environment")
    env = broken_dassl(tmp_path) if case == "broken" else {}
    proc = run_train(["--engine", "dassl", "--trainer", "TaIDPT", "--output-dir", str(tmp_path / "out"),
                      *common(voc_root, tiny_rn_openai_file)], tmp_path / "cache", expect_ok=False, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    reason = "RuntimeError: operator torchvision::nms" if case == "broken" else "ModuleNotFoundError"
    assert f"error: --engine dassl but Dassl cannot be imported ({reason}" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_engine_auto_without_dassl_runs_the_core_and_says_so_once(voc_root, tiny_rn_openai_file, tmp_path):
    out = tmp_path / "zs"
    proc = run_train(["--trainer", "ZeroshotCLIPDense", "--output-dir", str(out),
                      *common(voc_root, tiny_rn_openai_file)], tmp_path / "cache", env=broken_dassl(tmp_path))
    note = "Dassl not used (RuntimeError: operator torchvision::nms does not exist): running taidpt's core runner"
    assert proc.stdout.count(note) == 1 and "Dassl 0." not in proc.stdout
    assert (out / "log.txt").read_text().count("Dassl not used") == 1
    assert results(out)["trainer"] == "ZeroshotCLIPDense" and not math.isnan(results(out)["mAP"]["merged"])


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_core_never_imports_dassl_and_nothing_imports_hugging_face_datasets():
    for path in sorted([*(ROOT / "taidpt").rglob("*.py"), *(ROOT / "export").rglob("*.py")]):
        bad = {n for n in _imports(path) if n.split(".")[0] in ("dassl", "trainers", "datasets")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: the core must stay Dassl-free"
    plugin = [ROOT / "train.py", *sorted((ROOT / "trainers").glob("*.py")), *sorted((ROOT / "datasets").glob("*.py"))]
    for path in plugin:
        bad = {n for n in _imports(path) if n.split(".")[0] == "datasets" and n != "datasets.taidpt_datasets"}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)} (Hugging Face datasets is never used)"
