"""What a Triton model folder holds, and the check that reads a written folder back.

:func:`model_config` builds a model's ``config.pbtxt`` from its ONNX interface (:func:`onnx_signature`) and
taidpt metadata; :func:`check_repository` compares a written folder with the ONNX file again (config,
``labels.txt``, warm-up inputs, parameters, metadata against the graph). :mod:`taidpt.serve.triton` writes
repositories with these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from taidpt.serve import pbtxt
from taidpt.serve.graph_check import graph_mismatches
from taidpt.serve.metadata import ModelMetadata, read_onnx_metadata
from taidpt.serve.open_vocab import OpenVocabError, companion_files

PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
MODEL_FILES = {"onnxruntime": "model.onnx", "tensorrt": "model.plan"}
KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
LABELS_FILE = "labels.txt"
CONFIG_FILE = "config.pbtxt"
VOCAB_FILE = "bpe.txt.gz"
OPEN_SUFFIXES = {"text": "_text", "open": "_open"}  # --open-vocabulary: <name>_text, <name>_open
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class TritonExportError(ValueError):
    """The requested repository cannot be written or does not match; the message is one line."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, Triton data type and full ONNX shape (-1 = dynamic)."""

    name: str
    data_type: str
    shape: tuple[int, ...]


def _onnx_data_types() -> dict[int, str]:
    from onnx import TensorProto as T

    return {T.FLOAT: "TYPE_FP32", T.FLOAT16: "TYPE_FP16", T.DOUBLE: "TYPE_FP64", T.BFLOAT16: "TYPE_BF16",
            T.INT8: "TYPE_INT8", T.INT16: "TYPE_INT16", T.INT32: "TYPE_INT32", T.INT64: "TYPE_INT64",
            T.UINT8: "TYPE_UINT8", T.UINT16: "TYPE_UINT16", T.UINT32: "TYPE_UINT32", T.UINT64: "TYPE_UINT64",
            T.BOOL: "TYPE_BOOL", T.STRING: "TYPE_STRING"}


def onnx_signature(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (initializers excluded) and outputs of an ONNX file, read without its weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    types = _onnx_data_types()
    weights = {t.name for t in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        t = value.type.tensor_type
        if t.elem_type not in types:
            raise TritonExportError(f"{path}: tensor {value.name} has ONNX type {t.elem_type}, which Triton lacks")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorSpec(value.name, types[t.elem_type], dims)

    return ([spec(v) for v in model.graph.input if v.name not in weights], [spec(v) for v in model.graph.output])


def spec_shapes(*specs: Sequence[TensorSpec]) -> dict[str, tuple[int, ...]]:
    """``{tensor name: shape}`` of graph inputs and outputs, for :mod:`taidpt.serve.graph_check`."""
    return {s.name: s.shape for group in specs for s in group}


def external_data_files(path: Path) -> list[str]:
    """Relative locations of the external weight files an ONNX file refers to (large models)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    found: list[str] = []
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            location = next(e.value for e in tensor.external_data if e.key == "location")
            if location not in found:
                found.append(location)
    return found


def check_model_name(name: str) -> None:
    """Refuse a model name that is not one plain folder name (it would write outside the repository)."""
    if not MODEL_NAME.fullmatch(name):
        raise TritonExportError(f"--name {name!r}: expected one folder name of letters, digits, '_', '-' and '.' "
                                f"(starting with a letter, digit or '_'; at most 128 characters)")


def check_version(version: int) -> None:
    """Refuse a version folder Triton would not load (it serves versions 1, 2, ...)."""
    if version < 1:
        raise TritonExportError(f"--version {version}: expected a positive integer")


def config_dims(spec: TensorSpec, max_batch: int) -> list[int]:
    """``dims`` of a tensor in the config: without the batch axis when Triton batches."""
    if max_batch <= 0:
        return list(spec.shape)
    if not spec.shape or spec.shape[0] != -1:
        raise TritonExportError(f"tensor {spec.name} has a fixed first axis {spec.shape[:1]}: Triton's batching "
                                f"(--max-batch > 0) needs a dynamic batch axis; export again or use --max-batch 0")
    return list(spec.shape[1:])


def warmup(inputs: Sequence[TensorSpec], max_batch: int) -> list[dict[str, Any]]:
    """``model_warmup``: one request of all-zero inputs, batch 1 (a dynamic axis other than the batch
    one, e.g. the class count of the open graph, is 1 as well)."""
    entry: dict[str, Any] = {"name": "zeros", "batch_size": 1 if max_batch > 0 else 0}
    entry["inputs"] = pbtxt.Repeated(
        {"key": s.name, "value": {"data_type": pbtxt.Enum(s.data_type),
                                  "dims": [d if d > 0 else 1 for d in config_dims(s, max_batch)], "zero_data": True}}
        for s in inputs)
    return [entry]


@dataclass(frozen=True)
class ServingOptions:
    """How Triton serves a model (``export.triton``'s flags), checked once when built."""

    max_batch: int = 64
    preferred: tuple[int, ...] = (8, 16)
    instances: int = 1
    instance_kind: str = "auto"
    queue_delay_us: int = 100
    warm_up: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "preferred", tuple(int(b) for b in self.preferred))
        if self.max_batch < 0 or self.instances < 1 or self.queue_delay_us < 0:
            raise TritonExportError("--max-batch must be >= 0, --instances >= 1 and --queue-delay-us >= 0")
        bad = [b for b in self.preferred if not 1 <= b <= max(self.max_batch, 0)]
        if bad:
            raise TritonExportError(f"--preferred-batch {list(bad)} must lie between 1 and --max-batch {self.max_batch}")
        if self.instance_kind != "auto" and self.instance_kind not in KINDS:
            raise TritonExportError(f"--instance-kind must be auto, gpu or cpu, got {self.instance_kind!r}")


def model_config(name: str, backend: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 meta: ModelMetadata, options: ServingOptions = ServingOptions(), *, labels: bool = True) -> dict[str, Any]:
    """The ``ModelConfig`` of the repository, as a dict for :func:`taidpt.serve.pbtxt.render`."""
    if backend not in PLATFORMS:
        raise TritonExportError(f"--backend must be one of {', '.join(PLATFORMS)}, got {backend!r}")
    max_batch, preferred = options.max_batch, options.preferred
    config: dict[str, Any] = {
        "name": name,
        "platform": PLATFORMS[backend],
        "max_batch_size": int(max_batch),
        "input": [{"name": s.name, "data_type": pbtxt.Enum(s.data_type), "dims": config_dims(s, max_batch)}
                  for s in inputs],
        "output": [{"name": s.name, "data_type": pbtxt.Enum(s.data_type), "dims": config_dims(s, max_batch),
                    **({"label_filename": LABELS_FILE} if labels else {})} for s in outputs],
    }
    if max_batch > 0:
        batching: dict[str, Any] = {"max_queue_delay_microseconds": int(options.queue_delay_us)}
        if preferred:
            batching = {"preferred_batch_size": [int(b) for b in preferred], **batching}
        config["dynamic_batching"] = batching
    group: dict[str, Any] = {"count": int(options.instances)}
    if options.instance_kind != "auto":
        group["kind"] = pbtxt.Enum(KINDS[options.instance_kind])
    config["instance_group"] = [group]
    if options.warm_up:
        config["model_warmup"] = warmup(inputs, max_batch)
    config["parameters"] = pbtxt.Repeated({"key": k, "value": {"string_value": v}} for k, v in meta.to_props().items())
    return config


def open_vocabulary_files(onnx_path: Path) -> dict[str, Path]:
    """``{"text", "open", "bpe"}`` -> the open-vocabulary files of an export (one-line error without them)."""
    try:
        return companion_files(onnx_path, read_onnx_metadata(onnx_path))
    except OpenVocabError as exc:
        message = str(exc).replace("to use --classes or --class-list", "to write its open-vocabulary models")
        raise TritonExportError(message) from None


def check_repository(folder: Path, onnx_path: Path) -> list[str]:
    """Differences between a written model folder and the ONNX file (empty when consistent)."""
    problems: list[str] = []
    config = pbtxt.parse((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    meta = read_onnx_metadata(onnx_path)
    inputs, outputs = onnx_signature(onnx_path)
    max_batch = int(pbtxt.one(config, "max_batch_size", 0))
    if pbtxt.one(config, "name") != folder.name:
        problems.append(f"name {pbtxt.one(config, 'name')!r} is not the folder name {folder.name!r}")
    platform = pbtxt.one(config, "platform")
    backend = {v: k for k, v in PLATFORMS.items()}.get(platform)
    if backend is None:
        problems.append(f"platform {platform!r} is not one of {', '.join(PLATFORMS.values())}")
    elif not any((d / MODEL_FILES[backend]).is_file() for d in folder.iterdir() if d.name.isdigit()):
        problems.append(f"no version folder holds {MODEL_FILES[backend]}")
    for kind, specs in (("input", inputs), ("output", outputs)):
        written = {e["name"][0]: e for e in config.get(kind, [])}
        if set(written) != {s.name for s in specs}:
            problems.append(f"{kind}s {sorted(written)} differ from the ONNX file's {sorted(s.name for s in specs)}")
            continue
        for s in specs:
            entry = written[s.name]
            if pbtxt.one(entry, "data_type") != s.data_type:
                problems.append(f"{s.name}: data_type {pbtxt.one(entry, 'data_type')} but the ONNX file has {s.data_type}")
            if entry.get("dims", []) != config_dims(s, max_batch):
                problems.append(f"{s.name}: dims {entry.get('dims')} but the ONNX file gives {config_dims(s, max_batch)}")
            if kind == "output" and pbtxt.one(entry, "label_filename"):
                problems += _label_problems(folder, entry, meta)
    for entry in config.get("model_warmup", []):
        names = sorted(pbtxt.one(i, "key") for i in entry.get("inputs", []))
        if names != sorted(s.name for s in inputs):
            problems.append(f"model_warmup {pbtxt.one(entry, 'name')!r} feeds {names}, not the ONNX file's inputs")
    params = {p["key"][0]: pbtxt.one(pbtxt.one(p, "value"), "string_value") for p in config.get("parameters", [])}
    if params and ModelMetadata.from_props(params, folder / CONFIG_FILE) != meta:
        problems.append("the taidpt parameters differ from the ONNX file's metadata")
    return problems + [f"{onnx_path.name}: {p}" for p in graph_mismatches(meta, spec_shapes(inputs, outputs))]


def _label_problems(folder: Path, entry: dict[str, list[Any]], meta: ModelMetadata) -> list[str]:
    """The label file of one output: a line per column of its dims, the model's class names in order."""
    label_file = pbtxt.one(entry, "label_filename")
    labels = (folder / label_file).read_text(encoding="utf-8").splitlines()
    problems = []
    width = entry.get("dims", [])[-1:]
    if width and width[0] > 0 and len(labels) != width[0]:
        problems.append(f"{label_file} has {len(labels)} lines but output {entry['name'][0]!r} has dims "
                        f"{entry['dims']}")
    if labels != list(meta.classnames):
        problems.append(f"{label_file} does not list the model's {meta.num_classes} classes in order")
    return problems


def check_open_models(repository: Path, name: str, onnx_path: Path) -> list[str]:
    """:func:`check_repository` for ``<name>_text`` and ``<name>_open`` against the export's companion files."""
    files = open_vocabulary_files(onnx_path)
    problems = []
    for key, suffix in OPEN_SUFFIXES.items():
        folder = repository / (name + suffix)
        if not (folder / CONFIG_FILE).is_file():
            problems.append(f"{folder / CONFIG_FILE}: no such file")
            continue
        problems += [f"{folder.name}: {p}" for p in check_repository(folder, files[key])]
    if (repository / (name + OPEN_SUFFIXES["text"]) / VOCAB_FILE).is_file():
        if (repository / (name + OPEN_SUFFIXES["text"]) / VOCAB_FILE).read_bytes() != files["bpe"].read_bytes():
            problems.append(f"{name}{OPEN_SUFFIXES['text']}/{VOCAB_FILE} differs from {files['bpe'].name}")
    else:
        problems.append(f"{name}{OPEN_SUFFIXES['text']}/{VOCAB_FILE} is missing")
    return problems

