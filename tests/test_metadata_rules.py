"""Metadata is checked on its own and against the graph when a model is opened (taidpt.serve.metadata,
taidpt.serve.graph_check): an edited file is one line on stderr before any image is decoded.

One small export (test_infer's) and copies of it with rewritten ``metadata_props``; the open-vocabulary
cases use a hand-built text model and open graph (real ONNX files with the export's interface).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from taidpt.serve.batch_infer import DEPRECATION, main as batch_main
from taidpt.serve.export_unit import file_sha256
from taidpt.serve.graph_check import check_graph, graph_mismatches
from taidpt.serve.infer import main as infer_main
from taidpt.serve.metadata import MetadataError, ModelMetadata, fill_template, read_onnx_metadata
from taidpt.serve.open_vocab import prompts_for
from taidpt.serve.predictor import Predictor
from taidpt.serve.triton import check_repository, main as triton_main, write_repository
from taidpt.serve.triton_client import served_metadata
from test_infer import CLASSES, exported, image_dir  # noqa: F401 - fixtures

DIM = 8  # embedding width of the hand-built text model


def edited(model: Path, out: Path, **props: object) -> Path:
    """A copy of ``model`` with ``taidpt.<key>`` metadata replaced (JSON for non-strings)."""
    proto = onnx.load(str(model))
    values = {p.key: p.value for p in proto.metadata_props}
    values.update({f"taidpt.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in props.items()})
    onnx.helper.set_model_props(proto, values)
    onnx.save(proto, str(out))
    return out


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


BAD_FUSED = {
    "fewer_names": ({"classnames": CLASSES[:-1]}, "classnames has 5 names but output 'scores' has 6 columns"),
    "more_names": ({"classnames": CLASSES + ["zebra"]}, "classnames has 7 names but output 'scores' has 6 columns"),
    "other_size": ({"image_size": [96, 96]}, "image_size is 96x96 but input 'images' takes 64x64 pixels"),
    "huge_size": ({"image_size": [100000, 100000]}, "each side an integer from 16 to 4096"),
    "blank_name": ({"classnames": ["dog", "  "] + CLASSES[2:]}, "name 2 is '  ', expected a non-blank string"),
    "two_means": ({"mean": [0.5, 0.5]}, "mean must be three finite numbers"),
    "nan_std": ({"std": [0.2, float("nan"), 0.2]}, "std must be three finite numbers"),
    "no_field": ({"prompt_template": "a photo of a cat.", "context_length": 77}, "exactly one {} for the class name"),
    **{f"template_{t}": ({"prompt_template": t, "context_length": 77}, "exactly one {} for the class name")
       for t in ("{0}", "{name}", "{}{}", "{:>10}", "{.x}", "{!r}")},
}


@pytest.mark.parametrize("case", sorted(BAD_FUSED))
def test_an_edited_file_is_one_line_before_any_image(case, exported, image_dir, tmp_path, capsys):
    props, message = BAD_FUSED[case]
    bad = edited(exported[1], tmp_path / "bad.onnx", **props)
    out = tmp_path / "out.json"
    assert infer_main(["--model", str(bad), "--images", str(image_dir), "--output", str(out), "--no-progress"]) == 2
    line = one_line(capsys)  # no "skipped" line: no image was decoded
    assert line.startswith(f"error: {bad}: ") and message in line, line
    assert not out.exists()
    with pytest.raises(MetadataError, match="bad.onnx"):
        Predictor.from_onnx(bad)


def test_batch_infer_leaves_its_output_alone(exported, image_dir, tmp_path, capsys):
    bad = edited(exported[1], tmp_path / "bad.onnx", classnames=CLASSES + ["zebra"])
    fresh, kept = tmp_path / "new.jsonl", tmp_path / "old.jsonl"
    kept.write_text('{"path": "x.jpg"}\n')
    for out in (fresh, kept):
        assert batch_main(["--model", str(bad), "--images", str(image_dir), "--output", str(out),
                           "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()  # the alias's deprecation line, then one error
        assert len(err) == 2 and err[0] == DEPRECATION and "has 7 names but output 'scores' has 6 columns" in err[1]
    assert not fresh.exists() and kept.read_text() == '{"path": "x.jpg"}\n'


def test_valid_templates_fill_like_format():
    for template in ("a photo of a {}.", "X X X X {}.", "{} in a {{box}}", "{}"):
        for name in ("cat", "traffic light", "{0}", "東京"):
            assert fill_template(template, name) == template.format(name)
    assert prompts_for("a photo of a {}.", ["potted_plant"]) == ["a photo of a potted plant."]
    for bad in ("{0}", "{name}", "{}{}", "{:>10}", "{.x}", "{!r}", "{[0]}", "no field", "{", "a {} }"):
        with pytest.raises(MetadataError, match="prompt_template"):
            fill_template(bad, "cat")


def test_engine_shapes_are_checked_like_a_session(exported):
    """A TensorRT engine's tensors (-1 = dynamic) go through the same check as an onnxruntime session's."""
    meta = read_onnx_metadata(exported[1])
    shapes = {"images": (-1, 3, 64, 64), "scores": (-1, 6), "global_logits": (-1, 6), "local_logits": (-1, 6)}
    check_graph(meta, shapes, "m.plan")
    with pytest.raises(MetadataError, match=r"^m.plan: metadata taidpt.classnames has 6 names but output 'scores' "
                                            r"has 7 columns$"):
        check_graph(meta, {**shapes, "scores": (-1, 7)}, "m.plan")
    assert graph_mismatches(meta, {"images": (-1, 1, 64, 64)}) == ["input 'images' takes 1 channels, expected 3 (RGB)"]
    assert graph_mismatches(meta, {"text_global": (3, 16)}, "m.open.onnx", embedding_width=8) == [
        "input 'text_global' of m.open.onnx takes 3 classes but 6 class names are scored",
        "input 'text_global' of m.open.onnx takes 16-wide embeddings but the text model gives 8"]


# ----------------------------------------------------------------------------- Triton writer, --check and client
def test_triton_writer_refuses_a_mismatched_file(exported, tmp_path, capsys):
    bad = edited(exported[1], tmp_path / "bad.onnx", classnames=CLASSES[:-1])
    assert triton_main(["--onnx", str(bad), "--repository", str(tmp_path / "repo")]) == 2
    assert "has 5 names but output 'scores' has 6 columns" in one_line(capsys)
    assert not (tmp_path / "repo").exists()


def test_check_reports_labels_that_disagree_with_dims(exported, tmp_path, capsys):
    folder = write_repository(exported[1], tmp_path / "repo", name="m")
    (folder / "labels.txt").write_text("".join(c + "\n" for c in CLASSES[:-1]))
    assert any("labels.txt has 5 lines but output 'scores' has dims [6]" in p
               for p in check_repository(folder, exported[1]))
    # a repository written from an edited file (as before these checks) is named by --check too
    bad = edited(exported[1], tmp_path / "bad.onnx", classnames=CLASSES[:-1])
    assert any("bad.onnx: metadata taidpt.classnames has 5 names" in p for p in check_repository(folder, bad))
    assert triton_main(["--onnx", str(exported[1]), "--repository", str(tmp_path / "repo"), "--name", "m",
                        "--check"]) == 1
    assert "labels.txt has 5 lines" in capsys.readouterr().err


def test_client_checks_the_served_config(exported, tmp_path):
    from taidpt.serve import pbtxt

    folder = write_repository(exported[1], tmp_path / "repo")
    config = pbtxt.parse((folder / "config.pbtxt").read_text())
    served = {"name": "taidpt", "max_batch_size": 64,
              "input": [{"name": "images", "dims": [3, 64, 64]}],
              "output": [{"name": n, "dims": [6]} for n in ("scores", "global_logits", "local_logits")],
              "parameters": {p["key"][0]: {"string_value": pbtxt.one(p["value"][0], "string_value")}
                             for p in config["parameters"]}}

    class Client:  # what tritonclient.http's get_model_config returns for this repository
        def get_model_config(self, model):
            return served

    assert served_metadata(Client(), "taidpt", "http").classnames == tuple(CLASSES)
    served["output"][0]["dims"] = [7]
    with pytest.raises(MetadataError, match="taidpt \\(Triton\\): metadata taidpt.classnames has 6 names but "
                                            "output 'scores' has 7 columns"):
        served_metadata(Client(), "taidpt", "http")


# ----------------------------------------------------------------------------- open vocabulary
def _graph(path: Path, nodes: list, inputs: list, outputs: list, inits: list, props: dict[str, str]) -> None:
    model = helper.make_model(helper.make_graph(nodes, path.stem, inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build_open_set(fused: Path, folder: Path, context: int = 77, **props: object) -> Path:
    """``folder/m.onnx`` (the fused export with open-vocabulary metadata) beside a text model
    (``token_ids [C, context]`` -> embeddings ``[C, 8]``), an open graph and the BPE vocabulary."""
    from open_clip.tokenizer import default_bpe

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(default_bpe(), folder / "m.bpe.txt.gz")
    meta = read_onnx_metadata(fused).replace(text_model="m.text.onnx", open_model="m.open.onnx",
                                             bpe_vocab="m.bpe.txt.gz", prompt_template="a photo of a {}.",
                                             context_length=context, export_id="test-open-set",
                                             bpe_sha256=file_sha256(folder / "m.bpe.txt.gz"))
    rng = np.random.default_rng(0)
    w_text = helper.make_tensor("w_text", TensorProto.FLOAT, [context, DIM], rng.normal(size=context * DIM) / 1e3)
    w_img = helper.make_tensor("w_img", TensorProto.FLOAT, [3, DIM], rng.normal(size=3 * DIM))
    emb = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["C", DIM]) for n in ("text_global", "text_local")]
    _graph(folder / "m.text.onnx", [helper.make_node("Cast", ["token_ids"], ["f"], to=TensorProto.FLOAT),
                                    helper.make_node("MatMul", ["f", "w_text"], ["text_global"]),
                                    helper.make_node("Identity", ["text_global"], ["text_local"])],
           [helper.make_tensor_value_info("token_ids", TensorProto.INT64, ["C", context])], emb, [w_text],
           meta.to_props())
    nodes = [helper.make_node("ReduceMean", ["images"], ["pooled"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w_img"], ["feat"])]
    for out, text in (("global_logits", "text_global"), ("local_logits", "text_local")):
        nodes += [helper.make_node("Transpose", [text], [text + "_t"]),
                  helper.make_node("MatMul", ["feat", text + "_t"], [out])]
    nodes.append(helper.make_node("Add", ["global_logits", "local_logits"], ["scores"]))
    _graph(folder / "m.open.onnx", nodes,
           [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 64, 64]), *emb],
           [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", "C"])
            for n in ("scores", "global_logits", "local_logits")], [w_img], meta.to_props())
    model = onnx.load(str(fused))
    helper.set_model_props(model, {**meta.to_props(), **{f"taidpt.{k}": v if isinstance(v, str) else json.dumps(v)
                                                          for k, v in props.items()}})
    onnx.save(model, str(folder / "m.onnx"))
    return folder / "m.onnx"


def test_open_vocabulary_context_length_is_the_text_models(exported, image_dir, tmp_path, capsys):
    good = build_open_set(exported[1], tmp_path / "good")
    args = ["--images", str(image_dir), "--classes", "zebra,dog", "--no-progress"]
    assert infer_main(["--model", str(good), "--output", str(tmp_path / "ok.json"), *args]) == 0
    assert list(json.loads((tmp_path / "ok.json").read_text())["images"][0]["scores"]) == ["zebra", "dog"]
    capsys.readouterr()
    bad = build_open_set(exported[1], tmp_path / "bad", context_length=5)
    assert infer_main(["--model", str(bad), "--output", str(tmp_path / "bad.json"), *args]) == 2
    line = one_line(capsys)
    assert line == (f"error: {bad}: metadata taidpt.context_length is 5 but input 'token_ids' of m.text.onnx "
                    f"takes 77 tokens"), line
    with pytest.raises(MetadataError, match="context_length is 5"):
        Predictor.from_onnx(bad, classes=["zebra"])


def test_prompt_template_and_context_rules():
    meta = ModelMetadata(classnames=("a",), image_size=(64, 64), mean=(0.5,) * 3, std=(0.5,) * 3,
                         interpolation="bicubic", merge_rate=0.5)
    with pytest.raises(MetadataError, match="context_length must be > 0 with a prompt template"):
        meta.replace(prompt_template="a {}.", context_length=0)
    with pytest.raises(MetadataError, match="context_length must be an integer >= 0"):
        meta.replace(context_length=-1)
    with pytest.raises(MetadataError, match="has a line break"):
        meta.replace(classnames=("a", "b\nc"))
    with pytest.raises(MetadataError, match="std must be three numbers > 0"):
        meta.replace(std=(0.5, -0.5, 0.5))


def test_the_metadata_fields_fall_into_five_groups_and_the_file_format_is_unchanged():
    from dataclasses import fields

    from taidpt.serve.metadata import PREFIX, ModelMetadata
    from taidpt.serve.metadata_groups import GROUPS

    grouped = [f.name for group in GROUPS.values() for f in fields(group)]
    assert sorted(grouped) == sorted(f.name for f in fields(ModelMetadata))  # each field in exactly one group
    meta = ModelMetadata(classnames=("cat", "dog"), image_size=(64, 64), mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2),
                         interpolation="bicubic", merge_rate=0.5, backbone="RN50", thresholds={"dog": 1.5},
                         prompt_template="a photo of a {}.", context_length=77)
    assert meta.interface.classnames == ("cat", "dog") and meta.provenance.backbone == "RN50"
    assert meta.preprocessing.image_size == (64, 64) and meta.decision.thresholds == (("dog", 1.5),)
    assert meta.open_vocabulary.context_length == 77
    assert set(meta.to_props()) == {PREFIX + name for name in grouped}  # one flat key per field, as before
