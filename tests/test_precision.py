"""The precision ladder of export.onnx (fp32 -> fp16 / int8) and its gates; TensorRT's fp16 source; evaluate's classes.

A one-epoch tiny run (test_export's ``trained_run``: TinyRN, 64 px, VOC-layout fixture with the classes
dog, cat, car) is exported in-process; its fixture images serve as calibration images and as the
labelled gate set.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_export import rn_export, run, trained_run  # noqa: E402,F401 - fixtures

from taidpt.export.gate import DEFAULT_LIMITS, AgreementLimits, measure_agreement, top_k_agreement  # noqa: E402
from taidpt.export.parity import parity_inputs  # noqa: E402
from taidpt.export.precision import convert_to_fp16  # noqa: E402
from taidpt.serve.metadata import OUTPUT_NAMES, read_onnx_metadata  # noqa: E402
from taidpt.serve.runtime import OnnxModel, tensorrt_status  # noqa: E402

ABSOLUTE_RULE = 1e-2  # the old fp16 gate: max abs difference of the logits


def export(args: list[str], capsys) -> tuple[int, str, str]:
    from taidpt.export.onnx_cli import main

    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def tiny(trained_run, tmp_path_factory):
    """The trained run, its data, and its fp32 and int8 exports (int8 calibrated on the fixture images)."""
    base, data, common, env = trained_run
    out = tmp_path_factory.mktemp("ladder")
    from taidpt.export.onnx_cli import main

    assert main(["--model-dir", str(base / "run"), "--output", str(out / "m.onnx")]) == 0
    images = data / "VOCdevkit" / "VOC2007" / "JPEGImages"
    assert main(["--model-dir", str(base / "run"), "--output", str(out / "m.int8.onnx"), "--precision", "int8",
                 "--calibration-images", str(images)]) == 0
    return base, data, out, images


def outputs(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    model = OnnxModel(path, ["CPUExecutionProvider"])
    try:
        return model.run(images)
    finally:
        model.close()


# ----------------------------------------------------------------------------- int8
def test_int8_export_is_qdq_in_the_encoder_only_and_agrees_with_fp32(tiny):
    _, _, out, images = tiny
    fp32, int8 = out / "m.onnx", out / "m.int8.onnx"
    meta = read_onnx_metadata(int8)
    other = read_onnx_metadata(fp32)  # another export: only its export id differs
    assert meta.precision == "int8" and meta.replace(precision="fp32", export_id=other.export_id,
                                                     exported=other.exported) == other
    model = onnx.load(str(int8))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 5 and ops.count("DequantizeLinear") > 5
    inits = {t.name: t for t in model.graph.initializer}
    produced_by = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:  # every Conv reads an int8 weight, dequantized per output channel
        dq = produced_by[conv.input[1]]
        weight, scale = inits[dq.input[0]], inits[dq.input[1]]
        assert dq.op_type == "DequantizeLinear" and weight.data_type == onnx.TensorProto.INT8
        assert list(scale.dims) == [weight.dims[0]]
    # The scoring head (similarity with the class embeddings, spatial softmax) stays float32.
    head = [n for n in model.graph.node if not n.name.startswith("/encoder/") and n.op_type in ("MatMul", "Softmax")]
    assert len(head) >= 3
    assert all(produced_by.get(i) is None or produced_by[i].op_type != "DequantizeLinear" for n in head for i in n.input)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT]
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    # On images like the calibration ones (the fixture's), the scores agree with fp32 within the int8 gate.
    paths = sorted(str(p) for p in images.iterdir())
    batch = parity_inputs(meta, len(paths), paths)
    agreement = measure_agreement(outputs(fp32, batch), outputs(int8, batch), "int8", DEFAULT_LIMITS["int8"])
    assert agreement.ok, agreement.line()
    assert agreement.worst_relative > 0  # really computed in int8


def test_int8_needs_calibration_images(tiny, tmp_path, capsys):
    base, _, _, _ = tiny
    out = tmp_path / "m.onnx"
    rc, _, err = export(["--model-dir", str(base / "run"), "--output", str(out), "--precision", "int8"], capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "needs --calibration-images" in lines[0] and not out.exists()
    rc, _, err = export(["--model-dir", str(base / "run"), "--output", str(out), "--precision", "int8",
                         "--calibration-images", str(tmp_path / "none")], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "none" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- the mAP gate
def gate_args(data: Path) -> list[str]:
    return ["--gate-root", str(data), "--gate-dataset-config-file", "configs/datasets/voc2007.yaml"]


# A limit must be >= 0 (a negative one is refused by argparse): int8 loses ~6 points on this tiny set,
# so --max-map-drop 0 refuses it; fp16 gains a little there, and no valid limit refuses it.
@pytest.mark.parametrize("precision", ["int8"])
def test_map_gate_refuses_a_too_strict_drop_in_one_line_and_writes_nothing(tiny, tmp_path, capsys, precision):
    base, data, _, images = tiny
    out = tmp_path / "m.onnx"
    args = ["--model-dir", str(base / "run"), "--output", str(out), "--precision", precision,
            "--calibration-images", str(images), *gate_args(data), "--max-map-drop", "0"]
    rc, stdout, err = export(args, capsys)
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1, err
    found = re.search(rf"mAP fp32 (-?[\d.]+), {precision} (-?[\d.]+), drop (-?[\d.]+) points", lines[0])
    assert found, lines[0]
    fp32_map, reduced_map, drop = (float(g) for g in found.groups())
    assert 0 <= reduced_map <= 100 and drop == pytest.approx(fp32_map - reduced_map, abs=0.011)
    assert "(--max-map-drop 0): FAILED" in lines[0] and "nothing was written" in lines[0]
    assert list(tmp_path.iterdir()) == []  # neither the file nor a staging folder


def test_map_gate_passes_within_the_allowed_drop_and_measures_the_task(tiny, tmp_path, capsys):
    base, data, out_dir, images = tiny
    out = tmp_path / "m.onnx"
    rc, stdout, err = export(["--model-dir", str(base / "run"), "--output", str(out), "--precision", "int8",
                              "--calibration-images", str(images), *gate_args(data), "--max-map-drop", "100"], capsys)
    assert rc == 0, err
    line = next(ln for ln in stdout.splitlines() if ln.startswith("gate int8 on"))
    assert "(12 images)" in line and line.endswith(": OK")
    assert read_onnx_metadata(out).precision == "int8"
    # The gate's fp32 number is export.evaluate's mAP of the fp32 file on that set.
    from taidpt.export.evaluate import load_eval_config
    from taidpt.export.gate import labelled_map

    cfg = load_eval_config("configs/datasets/voc2007.yaml", [], str(data), [])
    fp32_map = labelled_map(out_dir / "m.onnx", cfg)["mAP"]["merged"]
    assert f"mAP fp32 {fp32_map:.2f}," in line


# ----------------------------------------------------------------------------- the agreement gate
def test_agreement_gate_is_relative_to_the_logit_scale():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((40, 10))
    limits = DEFAULT_LIMITS["int8"]

    # Logits on a scale of ~1000 with noise of 0.5: an absolute 1e-2 rule would refuse a faithful model.
    big = {o: 1000 * base for o in OUTPUT_NAMES}
    noisy = {o: v + rng.uniform(-0.5, 0.5, v.shape) for o, v in big.items()}
    assert max(np.abs(noisy[o] - big[o]).max() for o in OUTPUT_NAMES) > ABSOLUTE_RULE
    faithful = measure_agreement(big, noisy, "int8", limits)
    assert faithful.ok and faithful.worst_relative < 1e-3 and faithful.top_k == 1.0, faithful.line()

    # Logits on a scale of ~1e-3 whose ranking is scrambled by changes under 1e-2: an absolute rule passes it.
    small = {o: 1e-3 * base for o in OUTPUT_NAMES}
    scrambled = {o: 1e-3 * rng.permuted(base, axis=1) for o in OUTPUT_NAMES}
    assert max(np.abs(scrambled[o] - small[o]).max() for o in OUTPUT_NAMES) < ABSOLUTE_RULE
    broken = measure_agreement(small, scrambled, "int8", limits)
    assert not broken.ok and broken.worst_relative > 0.3 and broken.top_k < 0.6, broken.line()
    assert "FAILED" in broken.line() and "top-3 agreement" in broken.line()


def test_top_k_agreement_counts_shared_classes():
    ref = np.array([[5.0, 4.0, 3.0, 0.0, -1.0, -2.0]])
    assert top_k_agreement(ref, ref[:, ::-1], 3) == 0.0
    assert top_k_agreement(ref, np.array([[4.0, 5.0, 0.0, 3.0, -1.0, -2.0]]), 3) == pytest.approx(2 / 3)


def test_agreement_gate_refusal_from_the_cli(tiny, tmp_path, capsys):
    base, _, _, images = tiny
    out = tmp_path / "m.onnx"
    rc, stdout, err = export(["--model-dir", str(base / "run"), "--output", str(out), "--precision", "int8",
                              "--calibration-images", str(images), "--max-relative-diff", "0"], capsys)
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and "max abs difference / fp32 range" in lines[0], err
    assert "(limit 0.00%)" in lines[0] and "FAILED" in lines[0] and not out.exists()
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- fp16 alias
def test_fp16_alias_and_conflict(tiny, tmp_path, capsys):
    base, _, _, _ = tiny
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert export(["--model-dir", str(base / "run"), "--output", str(a), "--fp16"], capsys)[0] == 0
    rc, stdout, _ = export(["--model-dir", str(base / "run"), "--output", str(b), "--precision", "fp16"], capsys)
    assert rc == 0 and "gate fp16 vs fp32 on 32 images" in stdout
    assert read_onnx_metadata(a).precision == read_onnx_metadata(b).precision == "fp16"
    ma, mb = read_onnx_metadata(a), read_onnx_metadata(b)
    same = a.read_bytes().replace(ma.export_id.encode(), mb.export_id.encode())
    same = same.replace(ma.exported.encode(), mb.exported.encode())
    assert same == b.read_bytes()  # the same file but for its export id and time
    rc, _, err = export(["--model-dir", str(base / "run"), "--output", str(tmp_path / "c.onnx"), "--fp16",
                         "--precision", "int8"], capsys)
    assert rc == 2 and "--fp16 means --precision fp16" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- TensorRT's fp16 file
def test_tensorrt_fp16_reuses_the_checked_export_and_never_overwrites(rn_export, tmp_path):
    usable, why = tensorrt_status()
    if usable:
        pytest.skip(f"TensorRT is usable here ({why}); this checks the file handling before a build")
    _, meta, path = rn_export
    m = tmp_path / "m.onnx"
    m.write_bytes(path.read_bytes())
    checked = tmp_path / "m.fp16.onnx"
    convert_to_fp16(m, checked)  # what export.onnx --precision fp16 --output m.fp16.onnx leaves
    before = (checked.read_bytes(), checked.stat().st_mtime_ns)
    proc = run(["-m", "export.tensorrt", "--onnx", str(m), "--engine", str(tmp_path / "m.plan"), "--fp16"])
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert (checked.read_bytes(), checked.stat().st_mtime_ns) == before
    assert f"using {checked}" in proc.stdout and f"--onnx={checked} " in proc.stdout

    # A file of that name from another model is left alone; the conversion goes elsewhere, gated.
    other = tmp_path / "other.onnx"
    convert_to_fp16(m, other)
    foreign = onnx.load(str(other))
    from taidpt.export.onnx_files import write_props

    write_props(foreign, read_onnx_metadata(other).replace(classnames=("a", "b", "c", "d", "e")))
    onnx.save_model(foreign, str(checked))
    before = (checked.read_bytes(), checked.stat().st_mtime_ns)
    proc = run(["-m", "export.tensorrt", "--onnx", str(m), "--engine", str(tmp_path / "m.plan"), "--fp16"])
    assert proc.returncode == 3 and (checked.read_bytes(), checked.stat().st_mtime_ns) == before
    written = tmp_path / "m.trt-fp16.onnx"
    assert f"wrote {written}" in proc.stdout and "gate fp16 vs fp32" in proc.stdout and f"--onnx={written} " in proc.stdout
    assert read_onnx_metadata(written).replace(precision="fp32") == read_onnx_metadata(m)


def test_tensorrt_refuses_an_int8_export(tiny, tmp_path):
    _, _, out, _ = tiny
    proc = run(["-m", "export.tensorrt", "--onnx", str(out / "m.int8.onnx"), "--engine", str(tmp_path / "m.plan")])
    assert proc.returncode == 2 and "int8 export for onnxruntime" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- evaluate's classes
def test_evaluate_takes_the_classes_from_the_model(tiny, tmp_path):
    """The run was trained on dog, cat, car; evaluate needs no DATASET.CLASS_LIST for it."""
    _, data, out, _ = tiny
    proc = run(["-m", "export.evaluate", "--model", str(out / "m.onnx"), "--root", str(data),
                "--dataset-config-file", "configs/datasets/voc2007.yaml", "--output-dir", str(tmp_path / "e"),
                "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    import json

    res = json.loads((tmp_path / "e" / "results.json").read_text())
    assert res["classes"] == ["dog", "cat", "car"] and set(res["per_class_AP"]) == {"dog", "cat", "car"}
    assert res["n_images"] == 12


def test_model_test_set_matches_columns_by_name_or_says_which_class_is_missing(tiny):
    from taidpt.export.evaluate import load_eval_config, model_test_set

    _, data, _, _ = tiny
    cfg = load_eval_config("configs/datasets/voc2007.yaml", [], str(data), [])
    cat_first = model_test_set(cfg, ["cat", "dog"])
    both = model_test_set(cfg, ["dog", "cat", "car"])
    assert cat_first.classnames == ("cat", "dog")
    np.testing.assert_array_equal(cat_first.targets, both.targets[:, [1, 0]])
    with pytest.raises(FileNotFoundError, match=r"for the model's 2 classes \(dog, zebra\).*'zebra'"):
        model_test_set(cfg, ["dog", "zebra"])


@pytest.mark.parametrize("case", ["missing_split", "open_vocabulary", "root_without_yaml"])
def test_gate_and_precision_usage_errors_are_one_line(tiny, tmp_path, capsys, case):
    base, data, _, images = tiny
    out = tmp_path / "m.onnx"
    args = ["--model-dir", str(base / "run"), "--output", str(out), "--precision", "int8",
            "--calibration-images", str(images)]
    if case == "missing_split":  # the fixture has no val split: found when the gate reads it
        args += [*gate_args(data), "--gate-split", "val"]
        want_rc, expect = 1, "split list 'val'"
    elif case == "open_vocabulary":
        args += ["--open-vocabulary"]
        want_rc, expect = 2, "--open-vocabulary makes fp32 or fp16"
    else:
        args += ["--gate-root", str(data)]
        want_rc, expect = 2, "need --gate-dataset-config-file"
    rc, _, err = export(args, capsys)
    lines = err.strip().splitlines()
    assert rc == want_rc and len(lines) == 1 and expect in lines[0], err
    assert list(tmp_path.iterdir()) == []
