"""The method registry: built-in methods, a new method added in one file's worth of code, and the
rule that nothing outside the registry compares method names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from taidpt.methods import CAPTIONS, IMAGES, Method, canonical_name, get_method, method_names, register
from taidpt.methods.registry import SHARED_TRAINING_KEYS, unregister
from taidpt.methods.taidpt import CAPTION_TRAINING_KEYS
from test_train_cli import write_voc_fixture

ROOT = Path(__file__).resolve().parents[1]


def test_built_in_methods_and_aliases():
    assert method_names() == ("TaIDPT", "ZeroshotCLIPDense", "DualCoOp", "CoOpMultiLabel")
    assert canonical_name("ZeroshotCLIP") == "ZeroshotCLIPDense" and canonical_name("Caption_dual") == "DualCoOp"
    assert get_method("TaIDPT").trains_on == CAPTIONS and get_method("DualCoOp").trains_on == IMAGES
    assert get_method("ZeroshotCLIPDense").trains_on is None
    with pytest.raises(ValueError, match="unknown trainer 'Nope': expected one of TaIDPT, ZeroshotCLIPDense"):
        get_method("Nope")


def test_a_name_cannot_be_taken_twice():
    class Clash(Method):
        name, node = "Other", "TAIDPT"
        aliases = ("ZeroshotCLIP",)

    with pytest.raises(ValueError, match="taken by ZeroshotCLIPDense"):
        register(Clash)
    assert "Other" not in method_names()


class ToyGlobalOnly(Method):
    """A new method, as a user would write it: TaI-DPT's prompts scored by the global branch only."""

    name = "ToyGlobalOnly"
    node = "TOYGLOBAL"
    description = "toy: generic contexts trained on captions with a ranking loss on the global score only"
    trains_on = CAPTIONS

    @classmethod
    def config_defaults(cls) -> dict[str, Any]:
        return {"N_CTX": 4, "CSC": False, "CTX_INIT": "", "CLASS_TOKEN_POSITION": "end", "MERGE_RATE": 1.0,
                "LOSS": "ranking", "PREC": "fp32"}

    @classmethod
    def training_keys(cls) -> tuple[str, ...]:
        return (*SHARED_TRAINING_KEYS, *(k for k in CAPTION_TRAINING_KEYS if k.startswith("DATASET.")),
                "TRAINER.TOYGLOBAL.N_CTX", "TRAINER.TOYGLOBAL.LOSS")

    @classmethod
    def build_model(cls, cfg: Any, clip_model: Any, classnames: Any) -> Any:
        from taidpt.networks.model import TaIDPTModel

        t = cls.settings(cfg)
        return TaIDPTModel(clip_model, list(classnames), n_ctx=int(t.N_CTX), merge_rate=float(t.MERGE_RATE),
                           tau_image=float(cfg.TRAINER.TAIDPT.SPATIAL_SCALE_IMAGE))

    @classmethod
    def trainable_parameters(cls, model: Any) -> Any:
        return model.prompt_learner.parameters()


@pytest.fixture
def toy_method():
    register(ToyGlobalOnly)
    yield ToyGlobalOnly
    unregister(ToyGlobalOnly.name)


def test_a_method_declares_its_node_and_what_the_engine_asks_of_it(toy_method):
    from taidpt.engine.config import get_cfg_default
    from taidpt.methods import get_method

    cfg = get_cfg_default()
    assert dict(cfg.TRAINER.TOYGLOBAL) == ToyGlobalOnly.config_defaults()
    assert toy_method.caption_cache_dtype(cfg) is None and toy_method.report_settings(cfg) == {}
    taidpt = get_method("TaIDPT")
    assert taidpt.caption_cache_dtype(cfg) == "fp32"
    cfg.TRAINER.TAIDPT.CAPTION_CACHE = False
    assert taidpt.caption_cache_dtype(cfg) is None
    assert taidpt.report_settings(cfg) == {"spatial_scale_image": 40.0}
    for name in ("TaIDPT", "ZeroshotCLIPDense", "DualCoOp", "CoOpMultiLabel"):  # built-ins declare theirs too
        method = get_method(name)
        assert dict(cfg.TRAINER[method.node]).keys() >= method.config_defaults().keys()


def test_an_existing_node_only_gains_the_keys_it_lacks():
    """CoOp's checkout declares TRAINER.COOP itself; its values stay, taidpt's extra keys are added."""
    from yacs.config import CfgNode as CN

    from taidpt.engine.config import add_method_nodes, get_cfg_default

    cfg = get_cfg_default()
    del cfg.TRAINER["COOP"]
    cfg.TRAINER.COOP = CN({"N_CTX": 4, "CSC": True})
    add_method_nodes(cfg)
    assert cfg.TRAINER.COOP.N_CTX == 4 and cfg.TRAINER.COOP.CSC is True and cfg.TRAINER.COOP.LOSS == "ranking"


@pytest.mark.slow
def test_a_registered_toy_method_trains_evaluates_and_exports(toy_method, tiny_rn_openai_file, tmp_path, monkeypatch):
    from taidpt.engine.config import assemble_config, get_cfg_default
    from taidpt.engine.launch import main as train_main
    from taidpt.engine.runner import RunOptions
    from taidpt.engine.session import run
    from taidpt.export.onnx_cli import main as export_main
    from taidpt.serve.metadata import read_onnx_metadata

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "data"
    write_voc_fixture(root)
    out = tmp_path / "run"
    opts = ["TRAINER.NAME", "ToyGlobalOnly", "OUTPUT_DIR", str(out), "SEED", "1", "DATASET.ROOT", str(root),
            "DATASET.CLASS_LIST", str(root / "classes.txt"), "DATASET.CAPTION_FILE", "captions.txt",
            "MODEL.BACKBONE.PRETRAINED", str(tiny_rn_openai_file), "INPUT.SIZE", "(64, 64)",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "16", "DATALOADER.NUM_WORKERS", "0", "OPTIM.LR", "0.01",
            "OPTIM.MAX_EPOCH", "1", "TRAINER.TOYGLOBAL.N_CTX", "2"]
    cfg = assemble_config(get_cfg_default(), files=[str(ROOT / "configs/datasets/voc2007.yaml")], opts=opts)
    run(cfg, RunOptions(progress=False))

    res = json.loads((out / "results.json").read_text())
    assert res["trainer"] == "ToyGlobalOnly" and res["epochs_trained"] == 1
    assert res["mAP"]["merged"] == pytest.approx(res["mAP"]["global"])  # its merge rate is 1
    assert "spatial_scale_image" not in res  # TaI-DPT's settings are TaI-DPT's to report
    assert not (tmp_path / "cache" / "taidpt" / "features").exists()  # and its caption cache
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["epoch"] == 1

    # eval-only from the folder alone, through train.py's entry point
    assert train_main(["--eval-only", "--model-dir", str(out), "--no-progress", "--engine", "core"]) == 0
    (evaluated,) = (out / "eval").iterdir()
    assert json.loads((evaluated / "results.json").read_text())["mAP"] == res["mAP"]

    # export: the registry's model factory and scorer, one ONNX graph
    model = tmp_path / "toy.onnx"
    assert export_main(["--model-dir", str(out), "--output", str(model)]) == 0
    meta = read_onnx_metadata(model)
    assert meta.trainer == "ToyGlobalOnly" and meta.merge_rate == 1.0 and list(meta.classnames) == res["classes"]


# ----------------------------------------------------------------------------- architecture rule
NAMES = "|".join(re.escape(n) for n in ("TaIDPT", "ZeroshotCLIPDense", "DualCoOp", "CoOpMultiLabel", "ZeroshotCLIP"))
COMPARISON = re.compile(rf"""[!=]=\s*["']({NAMES})["']|["']({NAMES})["']\s*[!=]=|\bin\s*[(\[{{][^)\]}}]*["']({NAMES})["']""")


def test_only_the_registry_compares_method_names():
    offenders = []
    for folder in ("taidpt", "export", "trainers", "datasets", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("taidpt/methods/"):
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if COMPARISON.search(line):
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    for path in (ROOT / "train.py",):
        offenders += [f"train.py:{n}" for n, line in enumerate(path.read_text().splitlines(), 1) if COMPARISON.search(line)]
    assert not offenders, offenders


def test_the_rule_sees_a_name_switch():
    assert COMPARISON.search('if trainer == "DualCoOp":') and COMPARISON.search("x in ('TaIDPT', 'y')")
    assert not COMPARISON.search('name = "TaIDPT"')


def test_the_model_settings_are_one_object_built_once_from_the_config(tiny_rn):
    from taidpt.engine.config import get_cfg_default
    from taidpt.methods import get_method
    from taidpt.networks.model import PromptSettings

    cfg = get_cfg_default()
    cfg.TRAINER.TAIDPT.N_CTX, cfg.TRAINER.TAIDPT.SPATIAL_SCALE_IMAGE = 4, 20.0
    method = get_method("TaIDPT")
    settings = method.prompt_settings(cfg)
    assert settings == PromptSettings(n_ctx=4, tau_image=20.0)
    model = method.build_model(cfg, tiny_rn, ["cat", "dog"])
    assert model.settings == settings and model.tau_image == 20.0 and model.prompt_learner.ctx.shape[0] == 4
    with pytest.raises(TypeError):  # a misspelt field is an error, not a silent default
        PromptSettings(n_ctxs=4)
