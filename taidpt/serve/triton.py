"""Write a Triton Inference Server model repository for an exported model: ``python -m export.triton``.

Each model folder gets ``config.pbtxt``, ``labels.txt`` and the model file; ``--open-vocabulary`` adds the
``<name>_text`` and ``<name>_open`` models. The model's ``taidpt.*`` metadata goes into the config's
``parameters``, where the backends ignore it and :mod:`taidpt.serve.triton_client` reads its preprocessing
and thresholds. Folder contents and ``--check``: :mod:`taidpt.serve.triton_config` (its public names are
importable from here too); folder ownership: :mod:`taidpt.serve.triton_owner`. See docs/deployment.md, section 6.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from taidpt.serve import pbtxt
from taidpt.serve.graph_check import check_graph
from taidpt.serve.metadata import MetadataError, ModelMetadata, read_onnx_metadata, read_sidecar, sidecar_path
from taidpt.serve.triton_config import (  # noqa: F401 - re-exported: the public names of the Triton export
    ServingOptions,
    CONFIG_FILE,
    KINDS,
    LABELS_FILE,
    MODEL_FILES,
    MODEL_NAME,
    OPEN_SUFFIXES,
    PLATFORMS,
    VOCAB_FILE,
    TensorSpec,
    TritonExportError,
    check_model_name,
    check_open_models,
    check_repository,
    check_version,
    config_dims,
    external_data_files,
    model_config,
    onnx_signature,
    open_vocabulary_files,
    spec_shapes,
    warmup,
)
from taidpt.serve.triton_owner import OWNER_FILE, Owner, OwnershipError, claim, export_identity, ownership_problems, \
    write_owner
from taidpt.utils.commands import prog_name


@dataclass(frozen=True)
class Part:
    """One model folder to write: its owner, config, model file (ONNX or engine) and extra files."""

    folder: Path
    owner: Owner
    config: dict[str, Any]
    source: Path
    backend: str = "onnxruntime"
    labels: tuple[str, ...] = ()
    vocab: Path | None = None
    header: str = ""

    def files(self, version: int) -> list[Path]:
        """Every path the write creates or replaces (checked for links before anything is written)."""
        version_dir = self.folder / str(int(version))
        out = [self.folder / CONFIG_FILE, self.folder / OWNER_FILE, version_dir,
               version_dir / MODEL_FILES[self.backend]]
        if self.backend == "onnxruntime":
            out += [version_dir / rel for rel in external_data_files(self.source)]
        out += [self.folder / LABELS_FILE] if self.labels else []
        return out + ([self.folder / VOCAB_FILE] if self.vocab else [])

    def write(self, version: int) -> None:
        """Write the folder: owner marker first, then model file, labels or vocabulary, config."""
        version_dir = self.folder / str(int(version))
        version_dir.mkdir(parents=True, exist_ok=True)
        write_owner(self.folder, self.owner)
        if self.backend == "onnxruntime":
            _copy_onnx(self.source, version_dir)
        else:
            shutil.copyfile(self.source, version_dir / MODEL_FILES[self.backend])
        if self.labels:
            (self.folder / LABELS_FILE).write_text("".join(c + "\n" for c in self.labels), encoding="utf-8")
        if self.vocab:
            shutil.copyfile(self.vocab, self.folder / VOCAB_FILE)
        (self.folder / CONFIG_FILE).write_text(self.header + pbtxt.render(self.config), encoding="utf-8")


def _copy_onnx(onnx_path: Path, version_dir: Path) -> None:
    """``onnx_path`` as ``version_dir/model.onnx``, with the external weight files it names."""
    shutil.copyfile(onnx_path, version_dir / MODEL_FILES["onnxruntime"])
    for rel in external_data_files(onnx_path):
        target = version_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx_path.parent / rel, target)


def checked_interface(path: Path) -> tuple[ModelMetadata, list[TensorSpec], list[TensorSpec]]:
    """Metadata, inputs and outputs of an ONNX file, the metadata checked against the graph."""
    meta = read_onnx_metadata(path)
    inputs, outputs = onnx_signature(path)
    check_graph(meta, spec_shapes(inputs, outputs), path)
    return meta, inputs, outputs


def owners(onnx_path: Path, repository: Path, name: str, open_vocabulary: bool) -> dict[Path, Owner]:
    """``{folder: owner}`` of the folders a write of ``name`` (and its open-vocabulary parts) claims."""
    identity = export_identity(onnx_path, read_onnx_metadata(onnx_path))
    out = {repository / name: Owner(name, "model", identity, onnx_path.name)}
    if open_vocabulary:
        files = open_vocabulary_files(onnx_path)
        out.update({repository / (name + suffix): Owner(name, key, identity, files[key].name)
                    for key, suffix in OPEN_SUFFIXES.items()})
    return out


def _open_parts(onnx_path: Path, folders: dict[Path, Owner], options: ServingOptions) -> list[Part]:
    """``<name>_text`` and ``<name>_open`` (onnxruntime, ``max_batch_size: 0``)."""
    files = open_vocabulary_files(onnx_path)
    parts = []
    for folder, owner in folders.items():
        if owner.part == "model":
            continue
        meta, inputs, outputs = checked_interface(files[owner.part])
        unbatched = dataclasses.replace(options, max_batch=0, preferred=())
        config = model_config(folder.name, "onnxruntime", inputs, outputs, meta, unbatched, labels=False)
        header = (f"# written by python -m export.triton from {files[owner.part].name} "
                  f"(open vocabulary, {owner.part})\n")
        vocab = files["bpe"] if owner.part == "text" else None
        parts.append(Part(folder, owner, config, files[owner.part], vocab=vocab, header=header))
    return parts


def write_repository(onnx_path: Path, repository: Path, *, name: str = "taidpt", backend: str = "onnxruntime",
                     engine: Path | None = None, version: int = 1, open_vocabulary: bool = False,
                     replace: bool = False, options: ServingOptions | None = None, **config_options: Any) -> Path:
    """Write ``repository/<name>`` for the model (and with ``open_vocabulary`` ``<name>_text`` and
    ``<name>_open``); returns the model folder. Everything is checked before a file is written.
    ``options`` (or its fields as keywords) say how Triton serves it."""
    options = options or ServingOptions(**config_options)
    check_model_name(name)
    check_version(version)
    if not onnx_path.is_file():
        raise TritonExportError(f"{onnx_path}: no such ONNX file")
    if open_vocabulary:
        for suffix in OPEN_SUFFIXES.values():
            check_model_name(name + suffix)
        open_vocabulary_files(onnx_path)
    if backend == "tensorrt":
        if engine is None or not engine.is_file():
            raise TritonExportError("--backend tensorrt needs --engine MODEL.plan (build it with python -m "
                                    "export.tensorrt --onnx MODEL.onnx --engine MODEL.plan)")
        _check_engine_profile(engine, options.max_batch)
    elif engine is not None:
        raise TritonExportError("--engine is only used with --backend tensorrt")
    meta, inputs, outputs = checked_interface(onnx_path)
    folders = owners(onnx_path, repository, name, open_vocabulary)
    folder = repository / name
    source = engine if backend == "tensorrt" else onnx_path
    parts = [Part(folder, folders[folder], model_config(name, backend, inputs, outputs, meta, options),
                  source, backend, labels=meta.classnames,  # type: ignore[arg-type]
                  header=f"# written by python -m export.triton from {onnx_path.name} ({backend})\n")]
    if open_vocabulary:
        parts += _open_parts(onnx_path, folders, options)
    claim(repository, folders, [f for part in parts for f in part.files(version)], replace)
    for part in parts:
        part.write(version)
    return folder


def _check_engine_profile(engine: Path, max_batch: int) -> None:
    """Refuse a ``max_batch_size`` above the engine's optimization profile (when it has a sidecar), and an
    engine whose sidecar was written for another engine file."""
    if not sidecar_path(engine).is_file():
        return  # an engine built by trtexec alone: no profile facts to check
    try:
        _, facts = read_sidecar(engine)
    except MetadataError as exc:
        raise TritonExportError(str(exc)) from None
    profile_max = (facts.get("profile") or {}).get("max")
    if profile_max and max_batch > int(profile_max[0]):
        raise TritonExportError(f"--max-batch {max_batch} exceeds the engine's profile maximum {profile_max[0]} "
                                f"({engine.name}); rebuild the engine with --max-batch {max_batch} or lower it")


def check_main(onnx_path: Path, repository: Path, name: str, open_vocabulary: bool) -> int:
    """``--check``: print each mismatch and collision, then the verdict; 0 when consistent."""
    folder = repository / name
    if not (folder / CONFIG_FILE).is_file():
        raise TritonExportError(f"{folder / CONFIG_FILE}: no such file")
    problems = [f"mismatch: {p}" for p in check_repository(folder, onnx_path)]
    if open_vocabulary:
        problems += [f"mismatch: {p}" for p in check_open_models(repository, name, onnx_path)]
    problems += [f"collision: {p}" for p in ownership_problems(owners(onnx_path, repository, name, open_vocabulary))]
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{folder}: {'consistent with' if not problems else 'DIFFERS from'} {onnx_path}", file=sys.stderr)
    return 1 if problems else 0


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
    p.add_argument("--replace", action="store_true",
                   help="overwrite model folders that another model or export owns (see taidpt-owner.json)")
    p.add_argument("--check", action="store_true", help="only compare an existing repository with the ONNX file "
                                                        "(and name folders another model or export owns)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    onnx_path, repository = Path(args.onnx), Path(args.repository)
    folder = repository / args.name
    try:
        check_model_name(args.name)
        if args.check:
            return check_main(onnx_path, repository, args.name, args.open_vocabulary)
        kind = args.instance_kind or ("gpu" if args.backend == "tensorrt" else "auto")
        options = ServingOptions(max_batch=args.max_batch, preferred=args.preferred_batch, instances=args.instances,
                                 instance_kind=kind, queue_delay_us=args.queue_delay_us, warm_up=not args.no_warmup)
        write_repository(onnx_path, repository, name=args.name, backend=args.backend,
                         engine=Path(args.engine) if args.engine else None, version=args.version,
                         open_vocabulary=args.open_vocabulary, replace=args.replace, options=options)
        problems = check_repository(folder, onnx_path)
        if args.open_vocabulary:
            problems += check_open_models(repository, args.name, onnx_path)
    except (TritonExportError, OwnershipError, MetadataError, pbtxt.PbtxtError, OSError) as exc:
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
