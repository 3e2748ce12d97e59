"""Export a trained TaI-DPT run (or the dense zero-shot baseline) to one ONNX graph.

    python -m export.onnx --model-dir RUN --output MODEL.onnx [--fp16] [--image-size N] [--opset 17]
                          [--batch-sizes 1,3] [--load-epoch E] [KEY VALUE ...]
    python -m export.onnx --trainer ZeroshotCLIPDense --config-file configs/trainers/ZeroshotCLIPDense/rn50.yaml \\
                          --dataset-config-file configs/datasets/voc2007.yaml --output zs.onnx

The graph is the :class:`taidpt.networks.model.ImageScorer` the evaluation runs: input ``images`` float32
``[N, 3, H, W]`` (preprocessed), outputs ``scores`` (merged), ``global_logits`` and
``local_logits``, each ``[N, C]``, with a dynamic batch axis. The class embeddings are computed
once and stored as constants, so no text encoder is left in the graph. Preprocessing, class names
and provenance go into ``metadata_props`` (:mod:`export.metadata`).

Before reporting success the command checks the file with ``onnx.checker`` and runs it in
onnxruntime (CPU) against PyTorch on preprocessed images at several batch sizes, printing the max
abs difference of each output; it exits 1 when that exceeds the tolerance (1e-4 fp32, 1e-2 fp16).

Exporter: torch 2.14's default ``torch.onnx.export(dynamo=True)`` needs the ``onnxscript`` package,
which is not a dependency of this project; the TorchScript-based exporter (``dynamo=False``) handles
this model exactly (measured differences ~1e-7), so it is used. Opset 17 is the default: it is the
first opset with a native ``LayerNormalization`` (the ViT towers), it is fully supported by every
TensorRT since 8.6 and by onnxruntime >= 1.14, and nothing in the model needs a newer operator.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .metadata import INPUT_NAME, OUTPUT_NAMES, ModelMetadata, read_onnx_metadata

DEFAULT_OPSET = 17
FP32_TOL = 1e-4
FP16_TOL = 1e-2
TWO_GB = 2 ** 31


class ExportError(RuntimeError):
    """Export cannot proceed; the message is one line."""


# ----------------------------------------------------------------------------- loading a run
@dataclass
class LoadedScorer:
    """A frozen :class:`~taidpt.networks.model.ImageScorer` and the metadata that describes it."""

    scorer: Any  # taidpt.networks.model.ImageScorer (typed loosely so this module imports without torch)
    metadata: ModelMetadata
    notes: list[str] = field(default_factory=list)


def load_config(model_dir: str | None, config_files: Sequence[str], opts: Sequence[str]) -> Any:
    """The run's ``config.yaml`` (a full yacs dump) if any, then extra yaml files, then KEY VALUE pairs."""
    from taidpt.engine.config import get_cfg_default, merge_files_and_opts

    cfg = get_cfg_default()
    if model_dir:
        path = Path(model_dir) / "config.yaml"
        if not Path(model_dir).is_dir():
            raise FileNotFoundError(f"--model-dir {model_dir}: no such directory")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; --model-dir must be a train.py output directory")
        # A Dassl-path dump holds keys the core defaults lack; they do not matter for export.
        cfg.set_new_allowed(True)
        try:
            cfg.merge_from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - yacs raises several types
            raise ValueError(f"{path}: cannot be read as a taidpt config ({type(exc).__name__}: {exc})") from None
        cfg.set_new_allowed(False)
    merge_files_and_opts(cfg, list(config_files), list(opts) or None)
    return cfg


def _class_names(cfg: Any, trainer: str, classes_arg: str, meta: dict | None, model_dir: str | None) -> list[str]:
    """Class names in label-column order, from the first source that has them (no dataset needed if possible)."""
    from taidpt.captions.classes import load_class_list
    from taidpt.images.registry import get_spec, load_test_set

    if classes_arg:
        return list(load_class_list(classes_arg).names)
    if meta and meta.get("classnames"):
        return list(meta["classnames"])
    if cfg.DATASET.CLASS_LIST:
        return list(load_class_list(os.path.expanduser(cfg.DATASET.CLASS_LIST)).names)
    if cfg.DATASET.NAME:
        spec = get_spec(cfg.DATASET.NAME)
        if spec.class_list:
            return list(load_class_list(spec.class_list).names)
    if model_dir and (Path(model_dir) / "results.json").is_file():
        res = json.loads((Path(model_dir) / "results.json").read_text(encoding="utf-8"))
        if res.get("classes"):
            return list(res["classes"])
    if cfg.DATASET.NAME:
        _, classes = load_test_set(cfg)
        return list(classes.names)
    raise ValueError(f"cannot tell the class names of this {trainer} model: pass --classes NAME|FILE or "
                     f"--dataset-config-file")


def load_scorer(
    model_dir: str | None = None,
    *,
    trainer: str = "",
    config_files: Sequence[str] = (),
    opts: Sequence[str] = (),
    load_epoch: int | None = None,
    image_size: int | None = None,
    classes: str = "",
) -> LoadedScorer:
    """Build the frozen scorer of a trained run (TaIDPT, DualCoOp, CoOpMultiLabel) or of the zero-shot baseline, on CPU in fp32.

    The CLIP weights come from the run's ``MODEL.BACKBONE.PRETRAINED``. A run trained on random
    weights (``""``) is rebuilt from its seed, as ``train.py --eval-only`` does; an unseeded one
    cannot be reproduced and is refused.
    """
    import torch

    from taidpt import __version__
    from taidpt.engine.checkpoint import check_meta, load_checkpoint, resolve_checkpoint
    from taidpt.captions.classes import ClassList
    from taidpt.clip.loader import RANDOM_WEIGHTS, load_clip
    from taidpt.networks.model import ZeroShotDenseModel
    from taidpt.engine.image_runner import build_image_model, is_image_trainer
    from taidpt.engine.runner import build_taidpt, canonical_trainer, check_image_size, merge_rate, set_random_seed

    cfg = load_config(model_dir, config_files, opts)
    if image_size is not None:
        cfg.INPUT.SIZE = (int(image_size), int(image_size))
    trainer = canonical_trainer(trainer or cfg.TRAINER.NAME or "TaIDPT")
    notes: list[str] = []

    ckpt, ckpt_path = None, None
    trained = trainer == "TaIDPT" or is_image_trainer(trainer)
    if trained:
        if not model_dir:
            raise ValueError(f"exporting {trainer} needs --model-dir RUN (a train.py output directory with prompts)")
        ckpt_path = resolve_checkpoint(model_dir, load_epoch)
        ckpt = load_checkpoint(ckpt_path, map_location="cpu")
    names = _class_names(cfg, trainer, classes, ckpt.get("meta") if ckpt else None, model_dir)

    pretrained = str(cfg.MODEL.BACKBONE.PRETRAINED)
    if pretrained.strip().lower() in RANDOM_WEIGHTS:
        if int(cfg.SEED) < 0:
            raise ValueError("the run used random CLIP weights (MODEL.BACKBONE.PRETRAINED '') without a seed, so "
                             "they cannot be rebuilt: set MODEL.BACKBONE.PRETRAINED to a weights file")
        set_random_seed(int(cfg.SEED))
        notes.append(f"random CLIP weights rebuilt from SEED {int(cfg.SEED)}: scores are chance level")
    clip_model, info = load_clip(cfg.MODEL.BACKBONE.NAME, pretrained, device="cpu",
                                 allow_torchscript_code=cfg.MODEL.BACKBONE.ALLOW_TORCHSCRIPT_CODE)
    check_image_size(cfg, info)

    with torch.no_grad():
        classes_ = ClassList.from_names("export", names)
        if trained:
            model = (build_taidpt(cfg, clip_model, classes_) if trainer == "TaIDPT"
                     else build_image_model(cfg, trainer, clip_model, classes_))
            check_meta(ckpt.get("meta"), {"classnames": names}, ckpt_path)
            model.prompt_learner.load_reference_state(ckpt["state_dict"])
            model.eval()
        else:
            z = cfg.TRAINER.ZEROSHOT
            model = ZeroShotDenseModel(clip_model, names, template=z.TEMPLATE, merge_rate=float(z.MERGE_RATE),
                                       use_pos_embed=bool(z.USE_POS_EMBED)).eval()
        merge = merge_rate(cfg, trainer)
        threshold = float(cfg.TEST.THRESHOLD)
        scorer = model.image_scorer().float().eval()
    h, w = (int(s) for s in cfg.INPUT.SIZE)
    meta = ModelMetadata(
        classnames=tuple(names),
        image_size=(h, w),
        mean=tuple(cfg.INPUT.PIXEL_MEAN),
        std=tuple(cfg.INPUT.PIXEL_STD),
        interpolation=str(cfg.INPUT.INTERPOLATION),
        exif_transpose=bool(cfg.INPUT.EXIF_TRANSPOSE),
        merge_rate=merge,
        backbone=info.name,
        trainer=trainer,
        weights=info.source,
        pretrained=os.path.basename(pretrained) if os.sep in pretrained else pretrained,
        taidpt_version=__version__,
        precision="fp32",
        logit_scale=float(scorer.scale),
        spatial_scale=float(scorer.tau),
        use_pos_embed=bool(scorer.use_pos),
        threshold=threshold,
        checkpoint=f"{Path(ckpt_path).name} (epoch {int(ckpt.get('epoch', 0))})" if ckpt is not None else "",
        dataset=str(cfg.DATASET.NAME),
    )
    return LoadedScorer(scorer, meta, notes)


# ----------------------------------------------------------------------------- export
@contextlib.contextmanager
def _traceable(scorer: Any) -> Iterator[None]:
    """Make the scorer trace into a clean graph, then undo the changes.

    ``nn.MultiheadAttention``'s inference fast path (``_native_multi_head_attention``, used by the
    ViT blocks) has no ONNX symbolic; the regular path exports to plain MatMul/Softmax. (The
    positional-embedding grid needs nothing: the encoder turns traced sizes into ints, so the
    embedding for the fixed export size enters the graph as a constant.)
    """
    import torch

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _initializer_bytes(model: Any) -> int:
    return sum(t.ByteSize() for t in model.graph.initializer)


def save_model(model: Any, path: str | os.PathLike) -> None:
    """Save an ONNX model, with weights in an external ``<name>.data`` file when over protobuf's 2 GB."""
    import onnx

    path = Path(path)
    if _initializer_bytes(model) > TWO_GB - 2 ** 26:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))


def set_metadata(path: str | os.PathLike, metadata: ModelMetadata, doc: str = "") -> None:
    """Write ``metadata_props`` (and producer fields) into an ONNX file in place, leaving weights untouched."""
    import onnx

    from taidpt import __version__

    model = onnx.load(str(path), load_external_data=False)
    del model.metadata_props[:]
    for key, value in metadata.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "taidpt"
    model.producer_version = __version__
    if doc:
        model.doc_string = doc
    onnx.save_model(model, str(path))


def export_scorer(scorer: Any, path: str | os.PathLike, metadata: ModelMetadata, *, opset: int = DEFAULT_OPSET,
                  sample_batch: int = 2) -> Path:
    """Trace ``scorer`` into ``path`` (fp32, dynamic batch) and attach ``metadata``.

    The PyTorch exporter is torch 2.14's TorchScript-based one (``dynamo=False``): the dynamo path
    needs the ``onnxscript`` package, which this project does not depend on.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = metadata.image_size
    sample = torch.zeros(int(sample_batch), 3, h, w, dtype=torch.float32)
    batch_axis = {0: "batch"}
    scorer = scorer.eval()
    with _traceable(scorer), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer warnings about int() of sizes
        torch.onnx.export(
            scorer, (sample,), str(path),
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: batch_axis for name in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=int(opset), do_constant_folding=True, dynamo=False,
        )
    set_metadata(path, metadata.replace(opset=int(opset)),
                 doc=f"TaI-DPT image scorer ({metadata.trainer}, {metadata.backbone}): images [N,3,{h},{w}] -> "
                     f"scores, global_logits, local_logits [N,{metadata.num_classes}]")
    return path


def check_onnx(path: str | os.PathLike) -> None:
    """``onnx.checker`` on the file path (works for models over 2 GB with external data) plus shape inference."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def _toposort(model: Any) -> None:
    """Reorder graph nodes topologically in place (stable; the fp16 converter appends input casts last)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        progressed = False
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:
            raise ExportError(f"graph has a cycle or a dangling input near node {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


ENCODER_SCOPE = "/encoder/"


def _is_half_region(node: Any) -> bool:
    """Nodes of the image encoder (the TorchScript exporter names nodes by module path)."""
    return node.name.startswith(ENCODER_SCOPE)


def _fold_initializer_identities(graph: Any) -> None:
    """Drop ``Identity(initializer)`` nodes (the exporter's shared-weight aliases), rewiring consumers."""
    inits = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
        else:
            kept.append(node)
    for node in kept:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(kept)


def convert_to_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Write a half-precision copy of an fp32 export.

    The image encoder (every node under ``/encoder/``, its weights and constants) runs in float16.
    The input ``images`` and the three outputs stay float32 (the export contract), and so does the
    small scoring head after the encoder (L2 normalisation, cosine similarities, spatial softmax,
    merge): its sums of squares could overflow float16 and it costs next to nothing. Exactly one
    Cast is placed on each float tensor that crosses between the two regions. (onnxruntime's
    ``float16`` converter with a block list instead casts every head intermediate back to float16
    and duplicates Casts, so it is not used.)
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    _fold_initializer_identities(graph)
    inferred = onnx.shape_inference.infer_shapes(model)
    elem = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.input,
                                                             *inferred.graph.output)}
    elem.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    elem[node.output[0]] = a.t.data_type

    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    # Unscoped float Constants (e.g. "Constant_12") join the encoder when only the encoder reads them.
    half_nodes = {id(n) for n in graph.node if _is_half_region(n)}
    for node in graph.node:
        if node.op_type == "Constant" and not node.name.startswith("/"):
            users = consumers.get(node.output[0], [])
            if users and all(id(u) in half_nodes for u in users):
                half_nodes.add(id(node))
    producer_half = {o: id(n) in half_nodes for n in graph.node for o in n.output}

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    # Weights: convert those only the encoder reads; copy those both regions read.
    new_inits = []
    for init in graph.initializer:
        if init.data_type != FLOAT:
            continue
        users = consumers.get(init.name, [])
        half_users = [u for u in users if id(u) in half_nodes]
        if not half_users:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name)
        if len(half_users) == len(users):
            init.CopyFrom(half)
        else:
            half.name = init.name + "_fp16"
            new_inits.append(half)
            for u in half_users:
                for i, name in enumerate(u.input):
                    if name == init.name:
                        u.input[i] = half.name
    graph.initializer.extend(new_inits)

    # Types fixed inside the encoder: float Constants, ConstantOfShape values, Cast targets.
    for node in graph.node:
        if id(node) not in half_nodes:
            continue
        for a in node.attribute:
            if node.op_type in ("Constant", "ConstantOfShape") and a.name == "value" and a.t.data_type == FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
            elif node.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                a.i = HALF

    # One Cast per float tensor crossing between regions (graph input/outputs count as float32).
    inits = {t.name for t in graph.initializer}
    casts: dict[tuple[str, int], str] = {}
    new_nodes = []

    def crossing(name: str, to_half: bool) -> str:
        key = (name, HALF if to_half else FLOAT)
        if key not in casts:
            out = f"{name}_to_{'fp16' if to_half else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], name=f"{out}_cast", to=key[1]))
            casts[key] = out
        return casts[key]

    for node in graph.node:
        node_half = id(node) in half_nodes
        for i, name in enumerate(node.input):
            if not name or name in inits or elem.get(name) != FLOAT:
                continue
            src_half = producer_half.get(name, False)  # graph inputs are float32
            if src_half != node_half:
                node.input[i] = crossing(name, node_half)
    for out in graph.output:
        if producer_half.get(out.name, False) and elem.get(out.name) == FLOAT:
            raise ExportError(f"fp16 conversion: output {out.name} is produced inside the encoder")
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    _toposort(model)
    meta = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, src).replace(precision="fp16")
    del model.metadata_props[:]
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    save_model(model, dst)


# ----------------------------------------------------------------------------- parity
def synthetic_images(n: int, seed: int = 0) -> list[Any]:
    """``n`` photo-like RGB PIL images (gradients, shapes, noise) of varied sizes and aspect ratios.

    They go through the real preprocessing (resize, crop, normalise), so the parity check sees the
    same value ranges as deployment does.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = int(rng.integers(160, 520)), int(rng.integers(160, 520))
        gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = rng.uniform(0, 255, 3)
        slope = rng.uniform(-0.5, 0.5, (3, 2))
        arr = np.stack([base[c] + slope[c, 0] * gx + slope[c, 1] * gy for c in range(3)], axis=-1)
        arr += rng.normal(0, 12, arr.shape)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 7))):
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
        out.append(img)
    return out


def parity_inputs(metadata: ModelMetadata, n: int, image_paths: Sequence[str] = (), seed: int = 0) -> np.ndarray:
    """A float32 ``[n, 3, H, W]`` batch of preprocessed images: the given files (cycled), else synthetic ones."""
    from taidpt.images.preprocess import load_rgb

    cfg = metadata.preprocess_config()
    if image_paths:
        imgs = [load_rgb(image_paths[i % len(image_paths)]) for i in range(n)]
    else:
        imgs = synthetic_images(n, seed)
    return np.stack([cfg(img) for img in imgs]).astype(np.float32)


@dataclass
class ParityReport:
    """Max abs difference per output and batch size between onnxruntime and PyTorch."""

    precision: str
    provider: str
    tolerance: float
    rows: dict[int, dict[str, float]]
    reference_max: dict[str, float]

    @property
    def worst(self) -> dict[str, float]:
        return {o: max(r[o] for r in self.rows.values()) for o in OUTPUT_NAMES}

    @property
    def ok(self) -> bool:
        return all(v <= self.tolerance for v in self.worst.values())

    def table(self) -> str:
        head = f"{'batch':>5}  " + "  ".join(f"{o:>14}" for o in OUTPUT_NAMES)
        lines = [f"parity {self.precision} onnxruntime ({self.provider}) vs PyTorch fp32, max abs difference:", head]
        for b, row in self.rows.items():
            lines.append(f"{b:>5}  " + "  ".join(f"{row[o]:>14.3e}" for o in OUTPUT_NAMES))
        lines.append(f"{'max':>5}  " + "  ".join(f"{v:>14.3e}" for v in self.worst.values()))
        lines.append(f"{'|ref|':>5}  " + "  ".join(f"{self.reference_max[o]:>14.3e}" for o in OUTPUT_NAMES)
                     + "   (largest |PyTorch output|, for scale)")
        verdict = "OK" if self.ok else "FAILED"
        lines.append(f"tolerance {self.tolerance:g}: {verdict}")
        return "\n".join(lines)


def torch_reference(scorer: Any, images: np.ndarray, batch_sizes: Sequence[int]) -> dict[int, dict[str, np.ndarray]]:
    """PyTorch outputs of the first ``b`` images for each batch size ``b``."""
    import torch

    out = {}
    with torch.no_grad():
        for b in batch_sizes:
            values = scorer(torch.from_numpy(images[:b]))
            out[b] = {name: v.float().numpy() for name, v in zip(OUTPUT_NAMES, values)}
    return out


def measure_parity(onnx_path: str | os.PathLike, images: np.ndarray, reference: dict[int, dict[str, np.ndarray]],
                   tolerance: float, precision: str, providers: Sequence[str] = ("CPUExecutionProvider",)) -> ParityReport:
    """Run the ONNX file in onnxruntime on the reference's batches and compare every output."""
    from .runtime import OnnxModel

    model = OnnxModel(onnx_path, list(providers))
    rows: dict[int, dict[str, float]] = {}
    ref_max = {o: 0.0 for o in OUTPUT_NAMES}
    for b, ref in reference.items():
        got = model.run(images[:b])
        rows[b] = {}
        for o in OUTPUT_NAMES:
            if got[o].shape != ref[o].shape:
                raise ExportError(f"{onnx_path}: output {o} has shape {got[o].shape}, PyTorch {ref[o].shape}")
            rows[b][o] = float(np.max(np.abs(got[o].astype(np.float64) - ref[o].astype(np.float64))))
            ref_max[o] = max(ref_max[o], float(np.max(np.abs(ref[o]))))
    provider = model.provider
    model.close()
    return ParityReport(precision, provider, tolerance, rows, ref_max)


# ----------------------------------------------------------------------------- CLI
def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch-sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"--batch-sizes must be positive integers, got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.onnx",
        description="Export a TaI-DPT run (or the zero-shot baseline) to one ONNX graph: images in, class scores out.",
        epilog="Trailing KEY VALUE pairs override config keys (e.g. MODEL.BACKBONE.PRETRAINED /path/RN50.pt).",
    )
    p.add_argument("--model-dir", default="", help="train.py output directory (config.yaml + prompt_learner/)")
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument("--fp16", action="store_true", help="write a float16 variant (float32 input/outputs)")
    p.add_argument("--image-size", type=int, default=None, help="square input size (default: the run's INPUT.SIZE)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 3], help="batch sizes of the parity check (1,3)")
    p.add_argument("--parity-images", default="", help="image folder/list/glob for the parity check (default: synthetic)")
    p.add_argument("--load-epoch", type=int, default=None, help="prompt_learner/model.pth.tar-<E> instead of best/last")
    p.add_argument("--trainer", default="", help="TaIDPT, DualCoOp, CoOpMultiLabel or ZeroshotCLIPDense (default: the run's TRAINER.NAME)")
    p.add_argument("--config-file", action="append", default=[], help="extra yaml merged over the run's config")
    p.add_argument("--dataset-config-file", default="", help="dataset yaml (class names for the zero-shot model)")
    p.add_argument("--classes", default="", help="class list name or file (zero-shot; must match a trained run)")
    p.add_argument("--tolerance", type=float, default=None, help=f"max abs difference allowed ({FP32_TOL:g} fp32, {FP16_TOL:g} fp16)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def _print(msg: str = "") -> None:
    print(msg, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out = Path(args.output)
    if out.suffix.lower() != ".onnx":
        print(f"error: --output {out}: expected a .onnx file name", file=sys.stderr)
        return 2
    configs = [c for c in [args.dataset_config_file, *args.config_file] if c]
    # Cheap checks first: loading torch and CLIP takes seconds.
    early = None
    if args.model_dir and not Path(args.model_dir).is_dir():
        early = f"--model-dir {args.model_dir}: no such directory"
    elif args.model_dir and not (Path(args.model_dir) / "config.yaml").is_file():
        early = f"{Path(args.model_dir) / 'config.yaml'}: not found; --model-dir must be a train.py output directory"
    elif not args.model_dir and (args.trainer or "TaIDPT") not in ("ZeroshotCLIPDense", "ZeroshotCLIP",
                                                                   "ZeroshotCLIP_dense"):
        early = f"exporting {args.trainer or 'TaIDPT'} needs --model-dir RUN (a train.py output directory with prompts)"
    if early:
        print(f"error: {early}", file=sys.stderr)
        return 2
    try:
        loaded = load_scorer(args.model_dir or None, trainer=args.trainer, config_files=configs, opts=args.opts,
                             load_epoch=args.load_epoch, image_size=args.image_size, classes=args.classes)
    except Exception as exc:  # noqa: BLE001 - every failure here is a user input problem; one line
        msg = str(exc.args[0]) if getattr(exc, "args", None) else str(exc)
        print(f"error: {msg.splitlines()[0] if msg else type(exc).__name__}", file=sys.stderr)
        if os.environ.get("TAIDPT_DEBUG"):
            raise
        return 2
    meta = loaded.metadata
    h, w = meta.image_size
    _print(f"{meta.trainer} {meta.backbone} ({meta.weights} weights), {meta.num_classes} classes, "
           f"{h}x{w} px{', ' + meta.checkpoint if meta.checkpoint else ''}")
    for note in loaded.notes:
        _print(f"note: {note}")

    paths: list[str] = []
    if args.parity_images:
        from .infer import collect_images

        paths = collect_images(args.parity_images)
    images = parity_inputs(meta, max(args.batch_sizes), paths)
    reference = torch_reference(loaded.scorer, images, args.batch_sizes)  # also fills the positional cache

    fp32_tol = FP32_TOL if args.tolerance is None or args.fp16 else args.tolerance
    fp16_tol = FP16_TOL if args.tolerance is None else args.tolerance
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".export-", dir=out.parent) if args.fp16 else None
    fp32_path = Path(tmp_dir) / "fp32.onnx" if tmp_dir else out
    try:
        export_scorer(loaded.scorer, fp32_path, meta, opset=args.opset)
        check_onnx(fp32_path)
        report = measure_parity(fp32_path, images, reference, fp32_tol, "fp32")
        _print(report.table())
        final = report
        if args.fp16 and report.ok:
            convert_to_fp16(fp32_path, out)
            check_onnx(out)
            final = measure_parity(out, images, reference, fp16_tol, "fp16")
            _print(final.table())
    except Exception as exc:  # noqa: BLE001 - report one line, keep the traceback behind TAIDPT_DEBUG
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: export to {out} failed: {type(exc).__name__}: {msg}", file=sys.stderr)
        if os.environ.get("TAIDPT_DEBUG"):
            raise
        return 1
    finally:
        if tmp_dir:
            for f in Path(tmp_dir).iterdir():
                f.unlink()
            os.rmdir(tmp_dir)
    if not final.ok:
        where = "no file was written"
        if out.is_file():
            bad = out.with_name(out.name + ".failed-parity")
            os.replace(out, bad)
            where = f"the file was moved to {bad} so that it is not deployed by mistake"
        print(f"error: onnxruntime and PyTorch differ by more than {final.tolerance:g} ({final.precision}); {where}",
              file=sys.stderr)
        return 1
    written = read_onnx_metadata(out)
    size_mb = sum(f.stat().st_size for f in out.parent.glob(out.name + "*") if f.is_file()) / 1e6
    _print(f"wrote {out} ({size_mb:.1f} MB, opset {written.opset}, {written.precision}): "
           f"{INPUT_NAME} float32 [N,3,{h},{w}] -> {', '.join(OUTPUT_NAMES)} float32 [N,{meta.num_classes}]")
    _print(f"next: python -m export.infer --model {out} --images DIR --output predictions.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
