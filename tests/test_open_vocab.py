"""Open vocabulary after export: ``export.onnx --open-vocabulary`` writes a text model, an open image
graph and the BPE vocabulary; ``export.infer --classes/--class-list`` scores any class list without torch.

The end-to-end tests reuse tests/test_export.py's one-epoch train.py run (TinyRN, random weights) and
its fused export; the in-process tests build DualCoOp, CoOp and TaI-DPT models on the tiny CLIP with
random contexts, so every scoring rule's open graph is traced and checked.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_export import CLASSES, make_meta, rn_export, run, trained_run  # noqa: E402,F401 - fixtures reused

from taidpt.engine.config import get_cfg_default  # noqa: E402
from taidpt.engine.run import TrainedModel  # noqa: E402
from taidpt.export.errors import ExportError  # noqa: E402
from taidpt.export.open_vocab import (  # noqa: E402
    OPEN_VOCAB_TOL,
    PROBE_CLASSES,
    companion_names,
    export_open_vocabulary,
    open_vocabulary_metadata,
)
from taidpt.export.open_vocab_graphs import open_vocabulary_refusal  # noqa: E402
from taidpt.export.parity import parity_inputs  # noqa: E402
from taidpt.export.precision import convert_to_fp16  # noqa: E402
from taidpt.export.scorer_loading import LoadedScorer  # noqa: E402
from taidpt.export.tracing import export_scorer  # noqa: E402
from taidpt.methods import get_method  # noqa: E402
from taidpt.serve.metadata import EMBEDDING_NAMES, INPUT_NAME, OUTPUT_NAMES, TOKEN_IDS_NAME, read_onnx_metadata  # noqa: E402
from taidpt.serve.open_vocab import OpenVocabError, OpenVocabModel, parse_class_names  # noqa: E402
from taidpt.serve.runtime import OnnxModel  # noqa: E402

TRAINED = ["dog", "cat", "car"]  # the class list of test_export's trained run


def report_values(stdout: str) -> dict[str, list[float]]:
    """The numbers of the printed open-vocabulary report: text diffs, fed rows, served rows."""
    lines = stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("open vocabulary: text model"))
    out = {"text": [float(v) for v in lines[start + 2].split()], "fed": [], "served": []}
    key = None
    for ln in lines[start + 3:]:
        if "fed the fused model's embeddings" in ln:
            key = "fed"
        elif "through tokenizer and text model" in ln:
            key = "served"
        elif ln.strip() and ln.split()[0].isdigit() and key:
            out[key] += [float(v) for v in ln.split()[1:]]
    return out


@pytest.fixture(scope="module")
def open_export(trained_run):
    base = trained_run[0]
    model = base / "open" / "m.onnx"
    proc = run(["-m", "export.onnx", "--model-dir", str(base / "run"), "--output", str(model), "--open-vocabulary",
                "--batch-sizes", "1,4"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return model, proc.stdout


def test_export_writes_the_pair_beside_an_unchanged_model(open_export):
    model, stdout = open_export
    names = companion_names(model)
    assert names == {"text": "m.text.onnx", "open": "m.open.onnx", "bpe": "m.bpe.txt.gz"}
    meta = read_onnx_metadata(model)
    assert (meta.text_model, meta.open_model, meta.bpe_vocab) == tuple(names.values())
    assert meta.prompt_template == " ".join(["x"] * 16) + " {}." and meta.context_length == 77
    assert meta.classnames == tuple(TRAINED)
    fused = onnx.load(str(model))
    assert [i.name for i in fused.graph.input] == [INPUT_NAME]  # the fused model keeps its interface

    text = onnx.load(str(model.parent / names["text"]))
    (ids,) = text.graph.input
    assert ids.name == TOKEN_IDS_NAME and ids.type.tensor_type.elem_type == onnx.TensorProto.INT64
    dims = ids.type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == 77
    assert [o.name for o in text.graph.output] == list(EMBEDDING_NAMES)

    graph = onnx.load(str(model.parent / names["open"]))
    inputs = [i.name for i in graph.graph.input]
    assert inputs == [INPUT_NAME, *EMBEDDING_NAMES]
    assert not {t.name for t in graph.graph.initializer} & set(inputs)  # required inputs, no defaults
    for i in graph.graph.input[1:]:
        d = i.type.tensor_type.shape.dim
        assert d[0].dim_param and d[1].dim_value == 64  # dynamic class count, TinyRN's embedding width
    for o in graph.graph.output:
        assert all(d.dim_param for d in o.type.tensor_type.shape.dim)  # [batch, classes]
    assert read_onnx_metadata(model.parent / names["open"]).open_model == names["open"]

    values = report_values(stdout)
    assert len(values["text"]) == 2 and max(values["text"]) <= OPEN_VOCAB_TOL
    assert len(values["fed"]) == 6 and max(values["fed"]) <= OPEN_VOCAB_TOL
    assert len(values["served"]) == 6 and max(values["served"]) <= OPEN_VOCAB_TOL * 4  # TaI-DPT's logit scale 4
    assert "open vocabulary: OK" in stdout and "--classes" in stdout


def _infer(args: list[str]):
    """export.infer in a subprocess where torch and open_clip cannot be imported."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['open_clip'] = None; "
            "from taidpt.serve.infer import main; sys.exit(main(sys.argv[1:]))")
    return run(["-c", code, *args])


def test_infer_with_shuffled_and_new_classes_without_torch(open_export, trained_run, tmp_path):
    model, _ = open_export
    images = trained_run[1] / "VOCdevkit" / "VOC2007" / "JPEGImages"
    base = _infer(["--model", str(model), "--images", str(images), "--output", str(tmp_path / "a.json"),
                   "--no-progress"])
    assert base.returncode == 0, base.stderr
    shuffled = TRAINED[:]
    random.Random(3).shuffle(shuffled)
    assert shuffled != TRAINED
    proc = _infer(["--model", str(model), "--images", str(images), "--output", str(tmp_path / "b.json"),
                   "--no-progress", "--all-outputs", "--classes", ", ".join(shuffled)])
    assert proc.returncode == 0, proc.stderr
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert b["classes"] == shuffled and len(a["images"]) == len(b["images"]) == 12
    spread = []
    for x, y in zip(a["images"], b["images"]):
        assert x["path"] == y["path"]
        for c in TRAINED:
            assert abs(x["scores"][c] - y["scores"][c]) <= 1e-5, (c, x["scores"], y["scores"])
        spread.append([x["scores"][c] for c in TRAINED])
    assert np.ptp(np.asarray(spread), axis=0).min() > 100 * 1e-5  # the comparison has teeth

    listed = tmp_path / "names.txt"
    listed.write_text("# new names and one trained\nzebra\n\nhair drier\ndog\n", encoding="utf-8")
    proc = _infer(["--model", str(model), "--images", str(images), "--output", str(tmp_path / "c.csv"),
                   "--no-progress", "--class-list", str(listed)])
    assert proc.returncode == 0, proc.stderr
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert rows[0].split(",")[1:4] == ["zebra", "hair drier", "dog"] and len(rows) == 13
    by_path = {x["path"]: x["scores"]["dog"] for x in a["images"]}
    cells = [r.split(",") for r in rows[1:]]
    assert all(abs(float(c[3]) - by_path[c[0]]) <= 1e-5 for c in cells)
    zebra, drier = (np.array([float(c[k]) for c in cells]) for k in (1, 2))
    assert np.isfinite(zebra).all() and np.abs(zebra - drier).max() > 1e-4  # distinct names, distinct scores


@pytest.mark.parametrize("case", ["closed_model", "both_flags", "empty_name", "repeated", "missing_list", "engine"])
def test_class_flags_errors_are_one_line(case, rn_export, open_export, tmp_path):
    model = str(open_export[0])
    args = ["--classes", "cat,zebra"]
    if case == "closed_model":
        model, expect = str(rn_export[2]), "exported without --open-vocabulary"
    elif case == "both_flags":
        args, expect = ["--classes", "cat", "--class-list", str(tmp_path / "x.txt")], "not both"
    elif case == "empty_name":
        args, expect = ["--classes", "cat,,dog"], "found an empty one"
    elif case == "repeated":
        args, expect = ["--classes", "cat,dog,cat"], "'cat' is listed twice"
    elif case == "missing_list":
        args, expect = ["--class-list", str(tmp_path / "none.txt")], "none.txt: cannot read it"
    else:
        model, expect = str(tmp_path / "m.plan"), "a TensorRT engine holds its trained classes only"
        Path(model).write_bytes(b"engine")
    proc = _infer(["--model", model, "--images", str(tmp_path), "--output", str(tmp_path / "o.json"), *args])
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("error: ") and expect in err[0], proc.stderr
    assert not (tmp_path / "o.json").exists()


def test_parse_class_names():
    assert parse_class_names() is None
    assert parse_class_names(" motor bike , hair drier,東京 ") == ["motor bike", "hair drier", "東京"]
    with pytest.raises(OpenVocabError, match="listed twice"):
        parse_class_names("a,b,a")


# ----------------------------------------------------------------------------- refusal
def _cfg(trainer: str, **node):
    cfg = get_cfg_default()
    cfg.defrost()
    cfg.TRAINER.NAME = trainer
    method = get_method(trainer)
    for key, value in node.items():
        method.settings(cfg)[key] = value
    return method, cfg


def test_class_specific_contexts_are_refused(tiny_rn):
    method, cfg = _cfg("TaIDPT", CSC=True)
    model = method.build_model(cfg, tiny_rn, CLASSES)
    assert "class-specific contexts (CSC)" in open_vocabulary_refusal(method, cfg, model)
    method, cfg = _cfg("DualCoOp")  # class-specific by default
    assert "DualCoOp run learned class-specific" in open_vocabulary_refusal(method, cfg, None)
    method, cfg = _cfg("TaIDPT", CLASS_TOKEN_POSITION="middle")
    assert "'middle' is not supported" in open_vocabulary_refusal(method, cfg, method.build_model(cfg, tiny_rn, CLASSES))
    method, cfg = _cfg("ZeroshotCLIPDense")
    assert open_vocabulary_refusal(method, cfg, method.build_model(cfg, tiny_rn, CLASSES)) is None
    with pytest.raises(ExportError, match="fp32 and fp16 exports, not int8"):
        open_vocabulary_metadata(None, "m.onnx", "int8")


def test_cli_refuses_before_writing(trained_run, tmp_path, monkeypatch, capsys):
    from taidpt.export.onnx_cli import main

    monkeypatch.setattr(get_method("TaIDPT"), "generic_contexts", classmethod(lambda cls, cfg: False))
    out = tmp_path / "m.onnx"
    assert main(["--model-dir", str(trained_run[0] / "run"), "--output", str(out), "--open-vocabulary"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --open-vocabulary: this TaIDPT run") and "CSC" in err[0]
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- every scoring rule, in-process
@pytest.mark.parametrize("trainer,node,precision", [
    ("DualCoOp", {"CSC": False}, "fp32"),
    ("CoOpMultiLabel", {"LOSS_ON": "global"}, "fp32"),
    ("TaIDPT", {"CTX_INIT": "a_photo_of_a"}, "fp16"),
])
def test_open_graphs_of_each_method(trainer, node, precision, tiny_rn, tmp_path):
    method, cfg = _cfg(trainer, **node)
    torch.manual_seed(2)
    model = method.build_model(cfg, tiny_rn, CLASSES).eval()
    with torch.no_grad():
        model.prompt_learner.ctx.normal_(0, 0.5)
        model.prompt_learner.ctx_double.normal_(0, 0.5)
    scorer = method.scorer(model).float().eval()
    meta = make_meta(trainer=trainer, merge_rate=method.merge_rate(cfg))
    loaded = LoadedScorer(scorer, meta, [], TrainedModel(model, method, CLASSES, None, None, None, []), cfg)
    out = tmp_path / "m.onnx"
    meta = open_vocabulary_metadata(loaded, out)
    if node.get("CTX_INIT"):
        assert meta.prompt_template == "a photo of a {}."
    if precision == "fp16":
        export_scorer(scorer, tmp_path / "fp32.onnx", meta)
        convert_to_fp16(tmp_path / "fp32.onnx", out)
    else:
        export_scorer(scorer, out, meta)
    images = parity_inputs(meta, 3)
    report = export_open_vocabulary(loaded, out, images, opset=17, batch_sizes=[1, 3])
    assert report.ok, report.table()
    assert report.n_probe == len(set(PROBE_CLASSES) - set(CLASSES)) == 8  # potted_plant is a trained name here
    assert max(report.text.values()) <= OPEN_VOCAB_TOL

    names = ["zebra", CLASSES[3], "hair drier", "motor bike", "teddy bear", "東京", "café"]
    served = OpenVocabModel(out, names, ["CPUExecutionProvider"])
    got = served.run(images)
    assert all(got[o].shape == (3, len(names)) for o in OUTPUT_NAMES)
    fused = OnnxModel(out, ["CPUExecutionProvider"]).run(images)
    tol = 1e-5 * max(1.0, float(scorer.scale))
    np.testing.assert_allclose(got["scores"][:, 1], fused["scores"][:, 3], atol=tol)
    assert np.ptp(got["scores"], axis=1).min() > 100 * tol  # the classes really differ
    if trainer == "DualCoOp":  # positive and negative embeddings differ; zero-shot-like ties would hide a swap
        assert np.abs(served.text_global - served.text_local).max() > 1e-2
    if trainer == "CoOpMultiLabel":  # the local branch reuses the global context
        np.testing.assert_array_equal(served.text_global, served.text_local)
    served.close()


# ----------------------------------------------------------------------------- Predictor.from_run
def test_predictor_from_run_matches_the_export_for_trained_and_new_classes(open_export, trained_run):
    from taidpt.export.predictor import Predictor
    from taidpt.serve.predictor import Predictor as ServingPredictor

    images = sorted((trained_run[1] / "VOCdevkit" / "VOC2007" / "JPEGImages").iterdir())[:5]
    new = ["zebra", "dog", "hair drier"]
    with Predictor.from_run(trained_run[0] / "run", device="cpu") as torch_side, \
            ServingPredictor.from_onnx(open_export[0]) as onnx_side:
        assert torch_side.provider.startswith("PyTorch") and torch_side.classnames == tuple(TRAINED)
        for classes in (None, new, list(reversed(TRAINED))):
            ours, theirs = torch_side.predict(images, classes), onnx_side.predict(images, classes)
            for a, b in zip(ours, theirs):
                assert list(a.scores) == list(b.scores) == list(classes or TRAINED)
                assert max(abs(a.scores[c] - b.scores[c]) for c in a.scores) <= 4 * OPEN_VOCAB_TOL
                assert a.labels == b.labels  # neither has stored thresholds: top-3 on the same logits
        zebra = np.array([r.scores["zebra"] for r in torch_side.predict(images, new)])
        dog = np.array([r.scores["dog"] for r in torch_side.predict(images, new)])
        assert np.abs(zebra - dog).max() > 1e-3  # a new name is really embedded, not a copy of another


def test_predictor_from_run_refuses_new_names_for_class_specific_contexts(trained_run, monkeypatch):
    from taidpt.export.predictor import Predictor

    monkeypatch.setattr(get_method("TaIDPT"), "generic_contexts", classmethod(lambda cls, cfg: False))
    with Predictor.from_run(trained_run[0] / "run", device="cpu") as p:
        assert len(p.predict(np.zeros((20, 20, 3), np.uint8)).scores) == len(TRAINED)  # its own classes still work
        with pytest.raises(OpenVocabError, match="^classes: this TaIDPT run learned class-specific contexts"):
            p.predict(np.zeros((20, 20, 3), np.uint8), classes=["zebra"])
    with pytest.raises(FileNotFoundError, match="no such folder"):
        Predictor.from_run(trained_run[0] / "nope")


def test_the_readme_python_example_runs(open_export, trained_run, capsys):
    """The README's Predictor example, run as written on this run and its open-vocabulary export."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "Predictor" in b)
    image = sorted((trained_run[1] / "VOCdevkit" / "VOC2007" / "JPEGImages").iterdir())[0]
    code = (block.replace("taidpt_coco.onnx", str(open_export[0])).replace("photos/beach.jpg", str(image))
            .replace("output/coco2014/TaIDPT/rn50_coco2014/seed1", str(trained_run[0] / "run")))
    assert code.count(str(image)) == 3 and str(trained_run[0]) in code
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and "surfboard" in printed[1] and "kite" in printed[1]
    assert scope["result"].labels and set(scope["result"].scores) == set(TRAINED)


def test_batch_infer_scores_a_class_list_like_infer(open_export, trained_run, tmp_path):
    from taidpt.serve.batch_infer import main as batch_main
    from taidpt.serve.infer import main as infer_main

    images = str(trained_run[1] / "VOCdevkit" / "VOC2007" / "JPEGImages")
    args = ["--model", str(open_export[0]), "--images", images, "--no-progress", "--classes", "zebra,dog"]
    assert infer_main([*args, "--output", str(tmp_path / "a.json")]) == 0
    assert batch_main([*args, "--output", str(tmp_path / "b.jsonl")]) == 0
    one = {r["path"]: r["scores"] for r in json.loads((tmp_path / "a.json").read_text())["images"]}
    rows = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert len(rows) == len(one) == 12
    for row in rows:
        assert list(row["scores"]) == ["zebra", "dog"] and row["scores"] == pytest.approx(one[row["path"]], abs=1e-6)


# ----------------------------------------------------------------------------- Triton: the text model as a second model
def test_triton_repository_serves_any_class_list(open_export, rn_export, trained_run, tmp_path, monkeypatch, capsys):
    import types

    from test_triton import assert_parses_as_triton_model_config, fake_tritonclient

    from taidpt.serve import pbtxt
    from taidpt.serve.infer import main as infer_main
    from taidpt.serve.triton import main as triton_main
    from taidpt.serve.triton_client import main as client_main

    model, repo = open_export[0], tmp_path / "repo"
    assert triton_main(["--onnx", str(model), "--repository", str(repo), "--open-vocabulary"]) == 0
    assert sorted(p.name for p in repo.iterdir()) == ["taidpt", "taidpt_open", "taidpt_text"]
    assert triton_main(["--onnx", str(model), "--repository", str(repo), "--open-vocabulary", "--check"]) == 0
    for folder in repo.iterdir():
        config = pbtxt.parse((folder / "config.pbtxt").read_text())
        assert pbtxt.one(config, "model_warmup")  # every model is warmed up at load
        assert_parses_as_triton_model_config(folder)
    text = pbtxt.parse((repo / "taidpt_text" / "config.pbtxt").read_text())
    assert pbtxt.one(text, "max_batch_size") == 0 and text["input"][0]["dims"] == [-1, 77]
    assert (repo / "taidpt_text" / "bpe.txt.gz").read_bytes() == model.with_name("m.bpe.txt.gz").read_bytes()

    fake = fake_tritonclient(*repo.iterdir())
    monkeypatch.setitem(sys.modules, "tritonclient", types.ModuleType("tritonclient"))
    monkeypatch.setitem(sys.modules, "tritonclient.http", fake)
    images = str(trained_run[1] / "VOCdevkit" / "VOC2007" / "JPEGImages")
    capsys.readouterr()
    assert client_main(["--images", images, "--classes", "zebra,dog", "--vocab", str(repo / "taidpt_text" / "bpe.txt.gz"),
                        "--batch-size", "5"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r[0] for r in fake.requests} == {"taidpt_text", "taidpt_open"}
    assert sum(r[0] == "taidpt_text" for r in fake.requests) == 1  # the class list is embedded once
    assert infer_main(["--model", str(model), "--images", images, "--output", str(tmp_path / "ref.json"),
                       "--no-progress", "--classes", "zebra,dog"]) == 0
    ref = {r["path"]: r for r in json.loads((tmp_path / "ref.json").read_text())["images"]}
    assert len(rows) == len(ref) == 12
    for row in rows:
        assert list(row["scores"]) == ["zebra", "dog"] and row["labels"] == ref[row["path"]]["labels"]
        assert row["scores"] == pytest.approx(ref[row["path"]]["scores"], abs=1e-5)

    # one-line refusals: a closed export, and --classes without the vocabulary
    closed = tmp_path / "closed"
    capsys.readouterr()
    assert triton_main(["--onnx", str(rn_export[2]), "--repository", str(closed), "--open-vocabulary"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exported without --open-vocabulary" in err[0] and not closed.exists()
    assert client_main(["--images", images, "--classes", "zebra"]) == 2
    assert "need --vocab" in capsys.readouterr().err


def test_predictor_from_run_takes_the_thresholds_of_a_calibrated_export(open_export, trained_run, tmp_path):
    import shutil

    from taidpt.export.predictor import Predictor
    from taidpt.export.threshold_store import store_thresholds
    from taidpt.serve.predictor import Predictor as ServingPredictor

    model = tmp_path / "m.onnx"
    for f in open_export[0].parent.iterdir():
        shutil.copyfile(f, tmp_path / f.name)
    images = sorted((trained_run[1] / "VOCdevkit" / "VOC2007" / "JPEGImages").iterdir())
    with ServingPredictor.from_onnx(model) as p:
        scores = np.array([[r.scores[c] for c in TRAINED] for r in p.predict(images)])
    cuts = {c: float(np.median(scores[:, i])) for i, c in enumerate(TRAINED[:2])}  # "car" left to top-k
    store_thresholds(model, cuts, "test thresholds")
    with Predictor.from_run(trained_run[0] / "run", device="cpu", thresholds=model) as torch_side, \
            ServingPredictor.from_onnx(model) as onnx_side:
        assert torch_side.decision.text().startswith("stored per-class thresholds (test thresholds (from m.onnx))")
        ours, theirs = torch_side.predict(images), onnx_side.predict(images)
        assert [r.labels for r in ours] == [r.labels for r in theirs]
        assert len({len(r.labels) for r in ours}) > 1  # thresholds, not a fixed top-k
        assert ours[0].confidence["car"] is None and ours[0].confidence["dog"] is not None
        kept = torch_side.predict(images[:2], classes=["dog", "zebra"])  # a new list keeps the names it shares
        assert kept[0].confidence["dog"] is not None and kept[0].confidence["zebra"] is None
