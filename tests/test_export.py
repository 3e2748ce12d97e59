"""ONNX export of the fused image scorer: PyTorch parity, graph interface, metadata, fp16, CLIs, TensorRT.

Unit tests export small random CLIPs of the real architectures (TinyRN, TinyViT) in-process; the
end-to-end test trains a one-epoch run with train.py and goes export -> evaluate in subprocesses;
`slow` tests export RN50/RN101/ViT-B-16 (random weights); `gpu` tests need CUDA/TensorRT.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cli_support import worker_threads
from taidpt.serve.metadata import (
    INPUT_NAME,
    OUTPUT_NAMES,
    MetadataError,
    ModelMetadata,
    read_onnx_metadata,
    read_sidecar,
)
from taidpt.export.parity import check_onnx, measure_parity, parity_inputs, torch_reference
from taidpt.export.precision import convert_to_fp16
from taidpt.export.tracing import DEFAULT_OPSET, export_scorer
from taidpt.serve.runtime import OnnxModel, tensorrt_status
from taidpt.networks.model import TaIDPTModel, ZeroShotDenseModel
from taidpt.images.preprocess import CLIP_MEAN, CLIP_STD

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["dog", "cat", "car", "traffic light", "potted_plant"]
FP32_TOL, FP16_TOL = 1e-4, 1e-2


def make_meta(size: int = 64, classes=CLASSES, **kw) -> ModelMetadata:
    fields = dict(classnames=tuple(classes), image_size=(size, size), mean=CLIP_MEAN, std=CLIP_STD,
                  interpolation="bicubic", merge_rate=0.5, backbone="TinyRN", trainer="TaIDPT", weights="random",
                  taidpt_version="test")
    return ModelMetadata(**{**fields, **kw})


def taidpt_scorer(clip, seed: int = 1):
    """A TaI-DPT scorer with non-trivial (random) learned contexts."""
    torch.manual_seed(seed)
    model = TaIDPTModel(clip, CLASSES)
    with torch.no_grad():
        model.prompt_learner.ctx.normal_(0, 0.5)
        model.prompt_learner.ctx_double.normal_(0, 0.5)
    return model.eval().image_scorer().eval()


@pytest.fixture(scope="module")
def rn_export(tiny_rn, tmp_path_factory):
    scorer = taidpt_scorer(tiny_rn)
    meta = make_meta()
    path = export_scorer(scorer, tmp_path_factory.mktemp("onnx") / "tiny.onnx", meta)
    return scorer, meta, path


def assert_parity(scorer, path, meta, batch_sizes, tol, precision="fp32"):
    images = parity_inputs(meta, max(batch_sizes))
    ref = torch_reference(scorer, images, batch_sizes)
    report = measure_parity(path, images, ref, tol, precision)
    assert report.provider == "CPUExecutionProvider"
    assert set(report.rows) == set(batch_sizes)
    for o in OUTPUT_NAMES:
        assert report.worst[o] <= tol, report.table()
        # The outputs differ between images by far more than the tolerance, so the check has teeth.
        biggest = max(batch_sizes)
        spread = ref[biggest][o].max(axis=0) - ref[biggest][o].min(axis=0)
        assert spread.min() > 10 * tol if precision == "fp32" else spread.min() > 0, (o, spread)
    return report, images, ref


# ----------------------------------------------------------------------------- parity
def test_fp32_parity_at_batch_1_3_8(rn_export):
    scorer, meta, path = rn_export
    report, images, _ = assert_parity(scorer, path, meta, [1, 3, 8], FP32_TOL)
    assert report.ok
    out = OnnxModel(path, ["CPUExecutionProvider"]).run(images)
    assert all(out[o].shape == (8, len(CLASSES)) and out[o].dtype == np.float32 for o in OUTPUT_NAMES)
    np.testing.assert_allclose(out["scores"], 0.5 * out["global_logits"] + 0.5 * out["local_logits"], atol=1e-6)
    assert "max" in report.table() and "OK" in report.table()


def test_graph_interface_dynamic_batch_and_no_text_tower(rn_export, tiny_rn):
    _, meta, path = rn_export
    check_onnx(path)
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims[0].dim_param and not dims[0].HasField("dim_value")
    assert [d.dim_value for d in dims[1:]] == [3, 64, 64]
    for out in model.graph.output:
        d = out.type.tensor_type.shape.dim
        assert d[0].dim_param and d[1].dim_value == len(CLASSES)
    assert {op.version for op in model.opset_import if op.domain in ("", "ai.onnx")} == {DEFAULT_OPSET}
    # The class embeddings are constants: no token embedding table, no text transformer weights.
    vocab = tiny_rn.token_embedding.weight.shape[0]
    assert not [t.name for t in model.graph.initializer if vocab in t.dims]
    n_weights = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    n_visual = sum(p.numel() for p in tiny_rn.visual.parameters())
    assert n_weights < n_visual * 1.2 and n_weights > n_visual * 0.8


def test_vit_export_parity(tiny_vit, tmp_path):
    scorer = taidpt_scorer(tiny_vit)
    meta = make_meta()
    path = export_scorer(scorer, tmp_path / "vit.onnx", meta)
    assert_parity(scorer, path, meta, [1, 3], FP32_TOL)


def test_zero_shot_with_interpolated_positional_embedding(tiny_rn, tmp_path):
    """Zero-shot keeps the attention pool's positional embedding; at 96 px (3x3 map, native 2x2) it is
    interpolated, and the export must carry exactly the embedding PyTorch used."""
    scorer = ZeroShotDenseModel(tiny_rn, CLASSES).eval().image_scorer().eval()
    assert scorer.use_pos
    meta = make_meta(size=96, trainer="ZeroshotCLIPDense", use_pos_embed=True)
    with torch.no_grad():
        scorer(torch.zeros(1, 3, 96, 96))
    path = export_scorer(scorer, tmp_path / "zs96.onnx", meta)
    assert_parity(scorer, path, meta, [1, 3], FP32_TOL)


# ----------------------------------------------------------------------------- metadata
def test_metadata_round_trip(rn_export, tmp_path):
    _, meta, path = rn_export
    read = read_onnx_metadata(path)
    assert read == meta.replace(opset=DEFAULT_OPSET)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    assert ModelMetadata.from_props(props, path) == read
    assert json.loads(props["taidpt.classnames"]) == CLASSES
    assert json.loads(props["taidpt.image_size"]) == [64, 64]
    assert read.preprocess_config().size == 64 and read.preprocess_config().interpolation == "bicubic"
    assert onnx.load(str(path), load_external_data=False).producer_name == "taidpt"


def test_metadata_errors_name_the_file():
    props = make_meta().to_props()
    with pytest.raises(MetadataError, match=r"m\.onnx: not a taidpt export .*taidpt\.classnames"):
        ModelMetadata.from_props({k: v for k, v in props.items() if k != "taidpt.classnames"}, "m.onnx")
    with pytest.raises(MetadataError, match=r"m\.onnx: metadata taidpt\.merge_rate='half' is malformed"):
        ModelMetadata.from_props({**props, "taidpt.merge_rate": "half"}, "m.onnx")
    with pytest.raises(MetadataError, match="interpolation"):
        ModelMetadata.from_props({**props, "taidpt.interpolation": "cubicle"}, "m.onnx")


# ----------------------------------------------------------------------------- fp16
def test_fp16_variant_parity_and_types(rn_export, tmp_path):
    scorer, meta, path = rn_export
    half = tmp_path / "tiny.fp16.onnx"
    convert_to_fp16(path, half)
    check_onnx(half)
    assert read_onnx_metadata(half).precision == "fp16"
    model = onnx.shape_inference.infer_shapes(onnx.load(str(half)), strict_mode=True)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {onnx.TensorProto.FLOAT}
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.input)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(types[n.input[1]] == onnx.TensorProto.FLOAT16 for n in convs)
    # The scoring head (L2 norms, spatial softmax) stays float32 ...
    head = [n for n in model.graph.node if n.op_type in ("ReduceL2", "Softmax") and not n.name.startswith("/encoder/")]
    assert len(head) >= 3 and all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in head)
    # ... with one Cast per crossing tensor, none back to float16 inside it.
    outs = [o for n in model.graph.node for o in n.output]
    assert len(outs) == len(set(outs))
    try:
        ort.InferenceSession(str(half), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"this onnxruntime build cannot run float16 on CPU: {exc}")
    report, _, _ = assert_parity(scorer, half, meta, [1, 3], FP16_TOL, "fp16")
    assert max(report.worst.values()) > 0  # really computed in half precision
    assert half.stat().st_size < 0.6 * path.stat().st_size


# ----------------------------------------------------------------------------- CLIs
def run(args: list[str], env_extra: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(worker_threads()), **(env_extra or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def parity_rows(stdout: str, precision: str) -> dict[str, float]:
    """The 'max' row of a printed parity table."""
    block = stdout.split(f"parity {precision} ")[1]
    line = next(ln for ln in block.splitlines() if ln.strip().startswith("max"))
    return dict(zip(OUTPUT_NAMES, (float(v) for v in line.split()[1:4])))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_rn_openai_file):
    """A real one-epoch train.py run on a VOC-layout fixture (subprocess, as a user would)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_train_cli import write_voc_fixture

    base = tmp_path_factory.mktemp("e2e")
    data = base / "data"
    write_voc_fixture(data)
    common = ["--root", str(data), "--dataset-config-file", "configs/datasets/voc2007.yaml",
              "--config-file", "configs/trainers/TaIDPT/rn50_voc2007.yaml", "--seed", "1", "--no-progress",
              "DATASET.CLASS_LIST", str(data / "classes.txt"), "DATASET.CAPTION_FILE", "captions.txt",
              "MODEL.BACKBONE.PRETRAINED", str(tiny_rn_openai_file), "INPUT.SIZE", "(64, 64)",
              "DATALOADER.TRAIN_X.BATCH_SIZE", "16", "DATALOADER.NUM_WORKERS", "0", "OPTIM.LR", "0.01"]
    env = {"XDG_CACHE_HOME": str(base / "cache")}
    proc = run(["train.py", "--trainer", "TaIDPT", "--output-dir", str(base / "run"), *common, "OPTIM.MAX_EPOCH", "1"],
               env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return base, data, common, env


def test_end_to_end_train_export_evaluate(trained_run):
    base, data, common, env = trained_run
    run_dir, model = base / "run", base / "model.onnx"
    proc = run(["-m", "export.onnx", "--model-dir", str(run_dir), "--output", str(model), "--batch-sizes", "1,3,8"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    worst = parity_rows(proc.stdout, "fp32")
    assert set(worst) == set(OUTPUT_NAMES) and all(v <= FP32_TOL for v in worst.values()), proc.stdout
    assert re.search(r"^\s+8\s", proc.stdout, re.M) and "tolerance 0.0001: OK" in proc.stdout
    meta = read_onnx_metadata(model)
    assert meta.classnames == ("dog", "cat", "car") and meta.trainer == "TaIDPT"
    assert meta.weights == "openai-state-dict" and meta.checkpoint.startswith("model.pth.tar-1")
    assert meta.image_size == (64, 64) and meta.spatial_scale == 40.0 and not meta.use_pos_embed

    # train.py --eval-only of the same run: the reference numbers
    ev = base / "eval_only"
    proc = run(["train.py", "--trainer", "TaIDPT", "--eval-only", "--model-dir", str(run_dir), "--output-dir", str(ev),
                *common], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    torch_res = json.loads((ev / "results.json").read_text())

    # taidpt.export.evaluate on the ONNX file, with torch made unimportable
    out = base / "onnx_eval"
    code = ("import sys; sys.modules['torch'] = None; from taidpt.export.evaluate import main; "
            f"sys.exit(main({json.dumps(['--model', str(model), '--output-dir', str(out), '--no-progress', *common[:6], *common[9:]])}))")
    proc = run(["-c", code])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mAP" in proc.stdout and "=> result" in proc.stdout
    onnx_res = json.loads((out / "results.json").read_text())
    assert onnx_res["provider"] == "CPUExecutionProvider" and onnx_res["n_images"] == torch_res["n_images"] == 12
    for key in ("global", "local", "merged"):
        assert onnx_res["mAP"][key] == pytest.approx(torch_res["mAP"][key], abs=1e-6)
    for key in ("CF1", "OF1", "CP", "CR"):
        assert onnx_res[key] == pytest.approx(torch_res[key], abs=1e-6)
    assert onnx_res["per_class_AP"] == pytest.approx(torch_res["per_class_AP"], abs=1e-6)

    # the fp16 variant of the same run
    half = base / "model16.onnx"
    proc = run(["-m", "export.onnx", "--model-dir", str(run_dir), "--output", str(half), "--fp16"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(v <= FP16_TOL for v in parity_rows(proc.stdout, "fp16").values())
    assert read_onnx_metadata(half).precision == "fp16"


def test_export_zero_shot_without_a_run(tmp_path, tiny_rn_openai_file, capsys):
    from taidpt.export.onnx_cli import main

    classes = tmp_path / "classes.txt"
    classes.write_text("dog\ncat\ncar\n")
    out = tmp_path / "zs.onnx"
    rc = main(["--trainer", "ZeroshotCLIPDense", "--config-file", "configs/trainers/ZeroshotCLIPDense/rn50.yaml",
               "--classes", str(classes), "--output", str(out), "--batch-sizes", "1,2",
               "MODEL.BACKBONE.PRETRAINED", str(tiny_rn_openai_file), "INPUT.SIZE", "(96, 96)"])
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    meta = read_onnx_metadata(out)
    assert meta.trainer == "ZeroshotCLIPDense" and meta.use_pos_embed and meta.classnames == ("dog", "cat", "car")
    assert meta.image_size == (96, 96) and meta.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)
    assert all(v <= FP32_TOL for v in parity_rows(stdout, "fp32").values())


@pytest.mark.parametrize("case", ["missing_dir", "not_a_run", "taidpt_without_run", "bad_suffix", "bad_weights"])
def test_export_cli_errors_are_one_line(case, tmp_path, capsys):
    from taidpt.export.onnx_cli import main

    out = str(tmp_path / "m.onnx")
    if case == "missing_dir":
        args, expect = ["--model-dir", str(tmp_path / "nowhere"), "--output", out], "nowhere: no such folder"
    elif case == "not_a_run":
        args, expect = ["--model-dir", str(tmp_path), "--output", out], "expected a training run folder"
    elif case == "taidpt_without_run":
        args, expect = ["--trainer", "TaIDPT", "--output", out], "needs --model-dir"
    elif case == "bad_suffix":
        args, expect = ["--model-dir", str(tmp_path), "--output", str(tmp_path / "m.pt")], "expected a .onnx"
    else:
        args = ["--trainer", "ZeroshotCLIPDense", "--class-list", "voc2007", "--output", out,
                "MODEL.BACKBONE.PRETRAINED", str(tmp_path / "missing.pt")]
        expect = "CLIP weights file not found"
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expect in err[0], err
    assert not Path(out).exists()


# ----------------------------------------------------------------------------- TensorRT without a GPU
def test_tensorrt_cli_without_tensorrt_prints_trtexec_and_fails(rn_export, tmp_path):
    usable, why = tensorrt_status()
    if usable:
        pytest.skip(f"TensorRT is usable here ({why}); the gpu test covers the build")
    _, _, path = rn_export
    engine = tmp_path / "m.plan"
    onnx_copy = tmp_path / "m.onnx"
    onnx_copy.write_bytes(path.read_bytes())
    proc = run(["-m", "export.tensorrt", "--onnx", str(onnx_copy), "--engine", str(engine), "--fp16",
                "--min-batch", "1", "--opt-batch", "4", "--max-batch", "8", "--timing-cache", str(tmp_path / "tc")])
    assert proc.returncode == 3, proc.stdout + proc.stderr
    shapes = "--minShapes=images:1x3x64x64 --optShapes=images:4x3x64x64 --maxShapes=images:8x3x64x64"
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip().startswith("trtexec --")]
    assert len(lines) == 2
    trt11, trt10 = lines
    assert trt11.startswith(f"trtexec --onnx={tmp_path / 'm.fp16.onnx'} --saveEngine={engine} {shapes}")
    assert "--fp16" not in trt11
    assert trt10.startswith(f"trtexec --onnx={onnx_copy} --saveEngine={engine} --fp16 {shapes}")
    assert f"--timingCacheFile={tmp_path / 'tc'}" in trt10
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot build {engine} here:") and "Traceback" not in proc.stderr
    assert not engine.exists()
    # TensorRT >= 11 takes precision from the file: the fp16 ONNX the printed command names exists.
    fp16 = tmp_path / "m.fp16.onnx"
    assert read_onnx_metadata(fp16).precision == "fp16"
    check_onnx(fp16)


def test_tensorrt_cli_rejects_bad_profile(rn_export, tmp_path):
    _, _, path = rn_export
    proc = run(["-m", "export.tensorrt", "--onnx", str(path), "--engine", str(tmp_path / "m.plan"),
                "--min-batch", "4", "--opt-batch", "2"])
    assert proc.returncode == 2 and "min (4) <= opt (2)" in proc.stderr


def test_engine_metadata_sidecar(rn_export, tmp_path):
    """--metadata-only writes the sidecar an engine built elsewhere needs; infer reads it, and says
    clearly why it cannot run the engine on this machine."""
    _, meta, path = rn_export
    engine = tmp_path / "built_by_trtexec.plan"
    engine.write_bytes(b"opaque engine bytes")
    proc = run(["-m", "export.tensorrt", "--onnx", str(path), "--engine", str(engine), "--fp16", "--metadata-only"])
    assert proc.returncode == 0, proc.stderr
    side_meta, facts = read_sidecar(engine)
    assert side_meta == meta.replace(opset=DEFAULT_OPSET, precision="fp16")
    assert facts["profile"]["max"] == [64, 3, 64, 64] and facts["builder"].startswith("external")
    usable, _ = tensorrt_status()
    if not usable:
        proc = run(["-m", "export.infer", "--model", str(engine), "--images", str(tmp_path), "--output",
                    str(tmp_path / "o.json")])
        assert proc.returncode == 2 and "cannot run a TensorRT engine here" in proc.stderr
        assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_tensorrt_engine_build_and_inference(rn_export, tmp_path):
    usable, why = tensorrt_status()
    if not usable:
        pytest.skip(f"TensorRT engine tests need TensorRT and a GPU: {why}")
    from taidpt.serve.runtime import TensorRTEngine

    _, meta, path = rn_export
    images = parity_inputs(meta, 5)
    ref = OnnxModel(path, ["CPUExecutionProvider"]).run(images)
    for fp16, tol in ((False, 1e-3), (True, FP16_TOL)):
        engine = tmp_path / f"m{'16' if fp16 else '32'}.plan"
        proc = run(["-m", "export.tensorrt", "--onnx", str(path), "--engine", str(engine), "--min-batch", "1",
                    "--opt-batch", "2", "--max-batch", "4", *(["--fp16"] if fp16 else [])], timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        trt = TensorRTEngine(engine)
        got = trt.run(images)  # 5 images > max batch 4: split into chunks
        trt.close()
        for o in OUTPUT_NAMES:
            assert np.max(np.abs(got[o] - ref[o])) <= tol, (fp16, o)


@pytest.mark.gpu
def test_cuda_execution_provider_parity(rn_export):
    if "CUDAExecutionProvider" not in ort.get_available_providers() or not torch.cuda.is_available():
        pytest.skip("needs onnxruntime-gpu (CUDAExecutionProvider) and a CUDA device")
    scorer, meta, path = rn_export
    images = parity_inputs(meta, 3)
    ref = torch_reference(scorer, images, [3])
    report = measure_parity(path, images, ref, 1e-3, "fp32", providers=["CUDAExecutionProvider"])
    assert report.provider == "CUDAExecutionProvider" and report.ok, report.table()


# ----------------------------------------------------------------------------- real architectures
@pytest.mark.slow
@pytest.mark.parametrize("backbone,size,kind", [("RN50", 224, "TaIDPT"), ("RN101", 448, "ZeroshotCLIPDense"),
                                                 ("ViT-B-16", 224, "TaIDPT")])
def test_real_architecture_export_parity(backbone, size, kind, tmp_path):
    from taidpt.clip.loader import load_clip

    torch.manual_seed(0)
    clip, _ = load_clip(backbone, "")
    classes = CLASSES[:3]
    if kind == "TaIDPT":
        model = TaIDPTModel(clip, classes, n_ctx=4)
    else:
        model = ZeroShotDenseModel(clip, classes)
    scorer = model.eval().image_scorer().eval()
    meta = make_meta(size=size, classes=classes, trainer=kind, use_pos_embed=scorer.use_pos)
    images = parity_inputs(meta, 3)
    ref = torch_reference(scorer, images, [1, 3])  # fills the positional cache at this size
    path = export_scorer(scorer, tmp_path / f"{backbone}.onnx", meta)
    check_onnx(path)
    report = measure_parity(path, images, ref, FP32_TOL, "fp32")
    assert report.ok, report.table()
