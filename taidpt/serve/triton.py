"""Export a Triton Inference Server model repository for an exported TaI-DPT model.

    python -m export.triton --onnx MODEL.onnx --repository DIR [--name taidpt] \\
        [--backend onnxruntime|tensorrt [--engine MODEL.plan]] [--max-batch 64] [--preferred-batch 8,16] \\
        [--instances 1] [--instance-kind auto|gpu|cpu] [--queue-delay-us 100] [--version 1] [--no-warmup]
        [--open-vocabulary] [--check]

writes::

    DIR/<name>/config.pbtxt     platform onnxruntime_onnx or tensorrt_plan, dynamic batching,
                                inputs/outputs (names, data types, dims) read from the ONNX file
    DIR/<name>/labels.txt       the class names, one per line (label_filename of every output)
    DIR/<name>/1/model.onnx     (or model.plan: the TensorRT engine given with --engine)

and with ``--open-vocabulary`` (an ONNX file exported with ``--open-vocabulary``) two more models, so
that a client scores any class list: ``DIR/<name>_text`` (``M.text.onnx``: ``token_ids`` -> class
embeddings; the BPE vocabulary is copied beside its config as ``bpe.txt.gz``) and ``DIR/<name>_open``
(``M.open.onnx``: images + embeddings -> scores). Their embeddings have no batch axis, so they are
written with ``max_batch_size: 0`` (full shapes, dynamic class count).

Every model gets a ``model_warmup`` entry (all-zero inputs, batch 1), so Triton runs each instance
once at load time (onnxruntime's graph preparation, TensorRT's context setup) instead of during the
first client request; ``--no-warmup`` leaves it out.

The model name is its folder in the repository, so it must be one plain folder name: letters,
digits, ``_``, ``-`` and ``.``, starting with a letter, digit or ``_`` (so never ``.``, ``..``, a
hidden folder, a path or empty); anything else is refused before a file is written.

With ``max_batch_size > 0`` Triton adds the batch axis itself, so ``dims`` leave out the ONNX
file's (dynamic) first axis. The model's taidpt metadata (classes, image size, mean/std,
interpolation, the per-class decision thresholds ``taidpt.thresholds`` stored by ``python -m
export.calibrate``, ...) is copied into the config's ``parameters``: the backends ignore keys they do
not know (so Triton returns raw logits), and a client (:mod:`taidpt.serve.triton_client`) reads its
preprocessing and labelling rule from them.
``--check`` re-reads a written repository and compares it with the ONNX file.

Serve it with ``tritonserver --model-repository DIR``.

This module must not import torch.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from taidpt.serve import pbtxt
from taidpt.serve.metadata import MetadataError, ModelMetadata, read_onnx_metadata, read_sidecar
from taidpt.serve.open_vocab import OpenVocabError, companion_files
from taidpt.utils.commands import prog_name

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


def model_config(name: str, backend: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 meta: ModelMetadata, *, max_batch: int = 64, preferred: Sequence[int] = (8, 16),
                 instances: int = 1, instance_kind: str = "auto", queue_delay_us: int = 100,
                 warm_up: bool = True, labels: bool = True) -> dict[str, Any]:
    """The ``ModelConfig`` of the repository, as a dict for :func:`taidpt.serve.pbtxt.render`."""
    if backend not in PLATFORMS:
        raise TritonExportError(f"--backend must be one of {', '.join(PLATFORMS)}, got {backend!r}")
    if max_batch < 0 or instances < 1 or queue_delay_us < 0:
        raise TritonExportError("--max-batch must be >= 0, --instances >= 1 and --queue-delay-us >= 0")
    bad = [b for b in preferred if not 1 <= b <= max(max_batch, 0)]
    if bad:
        raise TritonExportError(f"--preferred-batch {list(bad)} must lie between 1 and --max-batch {max_batch}")
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
        batching: dict[str, Any] = {"max_queue_delay_microseconds": int(queue_delay_us)}
        if preferred:
            batching = {"preferred_batch_size": [int(b) for b in preferred], **batching}
        config["dynamic_batching"] = batching
    group: dict[str, Any] = {"count": int(instances)}
    if instance_kind != "auto":
        if instance_kind not in KINDS:
            raise TritonExportError(f"--instance-kind must be auto, gpu or cpu, got {instance_kind!r}")
        group["kind"] = pbtxt.Enum(KINDS[instance_kind])
    config["instance_group"] = [group]
    if warm_up:
        config["model_warmup"] = warmup(inputs, max_batch)
    config["parameters"] = pbtxt.Repeated({"key": k, "value": {"string_value": v}} for k, v in meta.to_props().items())
    return config


def _copy_onnx(onnx_path: Path, version_dir: Path) -> None:
    """``onnx_path`` as ``version_dir/model.onnx``, with the external weight files it names."""
    shutil.copyfile(onnx_path, version_dir / MODEL_FILES["onnxruntime"])
    for rel in external_data_files(onnx_path):
        target = version_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx_path.parent / rel, target)


def open_vocabulary_files(onnx_path: Path) -> dict[str, Path]:
    """``{"text", "open", "bpe"}`` -> the open-vocabulary files of an export (one-line error without them)."""
    try:
        return companion_files(onnx_path, read_onnx_metadata(onnx_path))
    except OpenVocabError as exc:
        message = str(exc).replace("to use --classes or --class-list", "to write its open-vocabulary models")
        raise TritonExportError(message) from None


def _write_open_models(onnx_path: Path, repository: Path, name: str, version: int, *, instances: int,
                       instance_kind: str, warm_up: bool) -> list[Path]:
    """``<name>_text`` and ``<name>_open`` (onnxruntime, ``max_batch_size: 0``); returns their folders."""
    files = open_vocabulary_files(onnx_path)
    folders = []
    for key, suffix in OPEN_SUFFIXES.items():
        model_name = name + suffix
        check_model_name(model_name)
        inputs, outputs = onnx_signature(files[key])
        config = model_config(model_name, "onnxruntime", inputs, outputs, read_onnx_metadata(files[key]), max_batch=0,
                              preferred=(), instances=instances, instance_kind=instance_kind, warm_up=warm_up,
                              labels=False)
        folder = repository / model_name
        (folder / str(int(version))).mkdir(parents=True, exist_ok=True)
        _copy_onnx(files[key], folder / str(int(version)))
        if key == "text":
            shutil.copyfile(files["bpe"], folder / VOCAB_FILE)
        header = f"# written by python -m export.triton from {files[key].name} (open vocabulary, {key})\n"
        (folder / CONFIG_FILE).write_text(header + pbtxt.render(config), encoding="utf-8")
        folders.append(folder)
    return folders


def write_repository(onnx_path: Path, repository: Path, *, name: str = "taidpt", backend: str = "onnxruntime",
                     engine: Path | None = None, version: int = 1, open_vocabulary: bool = False,
                     **config_options: Any) -> Path:
    """Write ``repository/<name>`` for the model (and with ``open_vocabulary`` ``<name>_text`` and
    ``<name>_open``); returns the model folder."""
    check_model_name(name)
    check_version(version)
    if not onnx_path.is_file():
        raise TritonExportError(f"{onnx_path}: no such ONNX file")
    if open_vocabulary:
        for suffix in OPEN_SUFFIXES.values():
            check_model_name(name + suffix)
        open_vocabulary_files(onnx_path)  # refused before anything is written
    if backend == "tensorrt":
        if engine is None or not engine.is_file():
            raise TritonExportError("--backend tensorrt needs --engine MODEL.plan (build it with python -m "
                                    "export.tensorrt --onnx MODEL.onnx --engine MODEL.plan)")
        _check_engine_profile(engine, int(config_options.get("max_batch", 64)))
    elif engine is not None:
        raise TritonExportError("--engine is only used with --backend tensorrt")
    meta = read_onnx_metadata(onnx_path)
    inputs, outputs = onnx_signature(onnx_path)
    config = model_config(name, backend, inputs, outputs, meta, **config_options)

    folder = repository / name
    version_dir = folder / str(int(version))
    version_dir.mkdir(parents=True, exist_ok=True)
    if backend == "onnxruntime":
        _copy_onnx(onnx_path, version_dir)
    else:
        shutil.copyfile(engine, version_dir / MODEL_FILES[backend])  # type: ignore[arg-type]
    (folder / LABELS_FILE).write_text("".join(c + "\n" for c in meta.classnames), encoding="utf-8")
    header = f"# written by python -m export.triton from {onnx_path.name} ({backend})\n"
    (folder / CONFIG_FILE).write_text(header + pbtxt.render(config), encoding="utf-8")
    if open_vocabulary:
        _write_open_models(onnx_path, repository, name, version, instances=int(config_options.get("instances", 1)),
                           instance_kind=str(config_options.get("instance_kind", "auto")),
                           warm_up=bool(config_options.get("warm_up", True)))
    return folder


def _check_engine_profile(engine: Path, max_batch: int) -> None:
    """Refuse a ``max_batch_size`` above the engine's optimization profile (when its sidecar says it)."""
    try:
        _, facts = read_sidecar(engine)
    except MetadataError:
        return
    profile_max = (facts.get("profile") or {}).get("max")
    if profile_max and max_batch > int(profile_max[0]):
        raise TritonExportError(f"--max-batch {max_batch} exceeds the engine's profile maximum {profile_max[0]} "
                                f"({engine.name}); rebuild the engine with --max-batch {max_batch} or lower it")


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
            label_file = pbtxt.one(entry, "label_filename")
            if kind == "output" and label_file:
                labels = (folder / label_file).read_text(encoding="utf-8").splitlines()
                if labels != list(meta.classnames):
                    problems.append(f"{label_file} does not list the model's {meta.num_classes} classes in order")
    for entry in config.get("model_warmup", []):
        names = sorted(pbtxt.one(i, "key") for i in entry.get("inputs", []))
        if names != sorted(s.name for s in inputs):
            problems.append(f"model_warmup {pbtxt.one(entry, 'name')!r} feeds {names}, not the ONNX file's inputs")
    params = {p["key"][0]: pbtxt.one(pbtxt.one(p, "value"), "string_value") for p in config.get("parameters", [])}
    if params and ModelMetadata.from_props(params, folder / CONFIG_FILE) != meta:
        problems.append("the taidpt parameters differ from the ONNX file's metadata")
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


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name("python -m export.triton"),
                                description="Write a Triton Inference Server model repository for an exported model.")
    p.add_argument("--onnx", required=True, help="the exported MODEL.onnx (interface and metadata are read from it)")
    p.add_argument("--repository", required=True, help="the model repository folder (created if needed)")
    p.add_argument("--name", default="taidpt", help="model name = its folder in the repository (default taidpt)")
    p.add_argument("--backend", choices=sorted(PLATFORMS), default="onnxruntime",
                   help="onnxruntime (platform onnxruntime_onnx) or tensorrt (tensorrt_plan, needs --engine)")
    p.add_argument("--engine", default=None, help="the TensorRT engine built from the same ONNX file")
    p.add_argument("--max-batch", type=int, default=64, help="max_batch_size (0 = no batching by Triton)")
    p.add_argument("--preferred-batch", type=_int_list, default=[8, 16], help="dynamic batching's preferred sizes")
    p.add_argument("--queue-delay-us", type=int, default=100, help="dynamic batching's max queue delay (microseconds)")
    p.add_argument("--instances", type=int, default=1, help="model instances (per GPU for GPU instances)")
    p.add_argument("--instance-kind", choices=["auto", *KINDS], default=None,
                   help="where instances run (default: auto for onnxruntime, gpu for tensorrt)")
    p.add_argument("--version", type=int, default=1, help="version folder (default 1)")
    p.add_argument("--no-warmup", action="store_true", help="leave out the model_warmup request (all-zero inputs)")
    p.add_argument("--open-vocabulary", action="store_true",
                   help="also write <name>_text and <name>_open from an --open-vocabulary export, so that a client "
                        "can score any class list")
    p.add_argument("--check", action="store_true", help="only compare an existing repository with the ONNX file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    onnx_path, repository = Path(args.onnx), Path(args.repository)
    folder = repository / args.name
    try:
        check_model_name(args.name)
        if args.check:
            if not (folder / CONFIG_FILE).is_file():
                raise TritonExportError(f"{folder / CONFIG_FILE}: no such file")
            problems = check_repository(folder, onnx_path)
            if args.open_vocabulary:
                problems += check_open_models(repository, args.name, onnx_path)
            for problem in problems:
                print(f"mismatch: {problem}", file=sys.stderr)
            print(f"{folder}: {'consistent with' if not problems else 'DIFFERS from'} {onnx_path}", file=sys.stderr)
            return 1 if problems else 0
        kind = args.instance_kind or ("gpu" if args.backend == "tensorrt" else "auto")
        write_repository(onnx_path, repository, name=args.name, backend=args.backend,
                         engine=Path(args.engine) if args.engine else None, version=args.version,
                         max_batch=args.max_batch, preferred=args.preferred_batch, instances=args.instances,
                         instance_kind=kind, queue_delay_us=args.queue_delay_us, warm_up=not args.no_warmup,
                         open_vocabulary=args.open_vocabulary)
        problems = check_repository(folder, onnx_path)
        if args.open_vocabulary:
            problems += check_open_models(repository, args.name, onnx_path)
    except (TritonExportError, MetadataError, pbtxt.PbtxtError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if problems:
        print(f"error: the written repository does not read back: {problems[0]}", file=sys.stderr)
        return 1
    also = (f"; open vocabulary: {args.name}{OPEN_SUFFIXES['text']}/ and {args.name}{OPEN_SUFFIXES['open']}/ "
            f"(query with --classes)" if args.open_vocabulary else "")
    print(f"wrote {folder}/{CONFIG_FILE}, {LABELS_FILE} and {args.version}/{MODEL_FILES[args.backend]}{also}\n"
          f"serve it with:  tritonserver --model-repository {repository}\n"
          f"query it with:  python -m export.triton_client --url localhost:8000 --model {args.name} --images DIR",
          file=sys.stderr)
    print(json.dumps({"model_dir": str(folder), "platform": PLATFORMS[args.backend]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
