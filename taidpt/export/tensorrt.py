"""A TensorRT engine from an exported ONNX file, and the matching ``trtexec`` commands (``export.tensorrt``).

The engine gets one explicit batch profile on ``images`` and a ``MODEL.plan.json`` sidecar with the model's
metadata and the engine's size and sha256 (``--metadata-only`` writes just the sidecar). TensorRT 11 removed
weak typing, so there ``--fp16`` builds from the gated fp16 ONNX file (reused when ``export.onnx`` already
wrote it for this model) instead of setting a builder flag. Without TensorRT or a GPU it prints the
commands and exits 3. See docs/deployment.md, section 3.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from taidpt.utils.atomic import atomic_write_bytes

from taidpt.serve.export_unit import engine_facts
from taidpt.serve.metadata import INPUT_NAME, MetadataError, ModelMetadata, read_onnx_metadata, write_sidecar
from taidpt.serve.runtime import tensorrt_status
from taidpt.utils.commands import prog_name

PINNED_TENSORRT_MAJOR = 11  # tensorrt-cu13-bindings/-libs 11.4.x, the `tensorrt` extra in pyproject.toml
EXIT_NO_TENSORRT = 3


@dataclass(frozen=True)
class Profile:
    """The batch range of the engine's optimization profile."""

    min_batch: int
    opt_batch: int
    max_batch: int

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"batch sizes must satisfy 1 <= min ({self.min_batch}) <= opt ({self.opt_batch}) "
                             f"<= max ({self.max_batch})")

    def shapes(self, height: int, width: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        return tuple((b, 3, height, width) for b in (self.min_batch, self.opt_batch, self.max_batch))  # type: ignore[return-value]


def fp16_onnx_path(onnx_path: str | os.PathLike, tag: str = "fp16") -> Path:
    """``model.onnx`` -> ``model.fp16.onnx`` (the strongly typed fp16 input for TensorRT >= 11)."""
    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.{tag}{p.suffix}")


def fp16_source(onnx_path: str | os.PathLike, metadata: ModelMetadata) -> tuple[Path, bool]:
    """Where the fp16 ONNX for TensorRT >= 11 comes from: ``(path, reuse)``.

    ``MODEL.fp16.onnx`` is reused when it is an fp16 export of this same model (export.onnx wrote
    it only after its gate passed); a file of that name that is anything else is left alone, and
    the conversion goes to ``MODEL.trt-fp16.onnx`` instead.
    """
    candidate = fp16_onnx_path(onnx_path)
    if not candidate.exists():
        return candidate, False
    try:
        other = read_onnx_metadata(candidate)
    except MetadataError:
        return fp16_onnx_path(onnx_path, "trt-fp16"), False
    same = other.precision == "fp16" and other.replace(precision=metadata.precision, export_id=metadata.export_id,
                                                       exported=metadata.exported) == metadata
    return (candidate, True) if same else (fp16_onnx_path(onnx_path, "trt-fp16"), False)


def trtexec_command(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, metadata: ModelMetadata,
                    profile: Profile, *, fp16_flag: bool, timing_cache: str = "", workspace_gb: float = 0) -> str:
    """The trtexec command line that builds the same engine (``--fp16`` only for TensorRT <= 10)."""
    h, w = metadata.image_size
    lo, opt, hi = ("x".join(str(d) for d in s) for s in profile.shapes(h, w))
    parts = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if fp16_flag:
        parts.append("--fp16")
    parts += [f"--minShapes={INPUT_NAME}:{lo}", f"--optShapes={INPUT_NAME}:{opt}", f"--maxShapes={INPUT_NAME}:{hi}"]
    if timing_cache:
        parts.append(f"--timingCacheFile={timing_cache}")
    if workspace_gb:
        parts.append(f"--memPoolSize=workspace:{int(round(workspace_gb * 1024))}M")
    return " ".join(shlex.quote(p) for p in parts)


def build_engine(onnx_path: Path, engine_path: Path, image_size: tuple[int, int], profile: Profile, *,
                 weak_fp16: bool, strongly_typed: bool, timing_cache: str = "", workspace_gb: float = 4.0) -> dict:
    """Build and serialize an engine with the TensorRT Python API; returns build facts for the sidecar.

    ``weak_fp16`` sets ``BuilderFlag.FP16`` (TensorRT <= 10 only); ``strongly_typed`` asks TensorRT 10
    to keep the ONNX file's own types (an fp16 export); TensorRT 11 always does.
    """
    import tensorrt as trt

    major = int(trt.__version__.split(".")[0])
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if major == 10 and strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if weak_fp16:
        if major >= 11:
            raise RuntimeError("TensorRT >= 11 has no FP16 builder flag: build from an fp16 ONNX file instead")
        config.set_flag(trt.BuilderFlag.FP16)
    h, w = image_size
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(INPUT_NAME, *profile.shapes(h, w))
    config.add_optimization_profile(trt_profile)
    cache = None
    if timing_cache:
        data = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see the messages above)")
    atomic_write_bytes(engine_path, bytes(serialized))
    if timing_cache:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"tensorrt_version": trt.__version__, "builder": "tensorrt-python-api"}


def verify_engine(engine_path: Path, onnx_path: Path, n: int = 3) -> dict[str, float]:
    """Max abs difference per output between the engine and the source ONNX on onnxruntime CPU."""
    from taidpt.export.parity import parity_inputs
    from taidpt.serve.runtime import OnnxModel, TensorRTEngine

    engine = TensorRTEngine(engine_path)
    images = parity_inputs(engine.metadata, n)
    try:
        got = engine.run(images)
    finally:
        engine.close()
    ref = OnnxModel(onnx_path, ["CPUExecutionProvider"]).run(images)
    return {k: float(np.max(np.abs(got[k].astype(np.float64) - ref[k]))) for k in ref}


def write_fp16_onnx(onnx_path: Path, fp16_path: Path, metadata: ModelMetadata) -> str:
    """Convert an fp32 export to fp16 at ``fp16_path``, check it and gate it as export.onnx does
    without a labelled set (agreement with the fp32 file on synthetic images); returns the gate's
    line, or raises RuntimeError with it (and removes the file) when the gate fails."""
    from taidpt.export.gate import agreement_gate
    from taidpt.export.reduced import GATE_IMAGES, image_batch, write_reduced

    write_reduced(onnx_path, fp16_path, "fp16")
    verdict = agreement_gate(onnx_path, fp16_path, image_batch(metadata, [], GATE_IMAGES), "fp16")
    if not verdict.ok:
        fp16_path.unlink()
        raise RuntimeError(verdict.line())
    return verdict.line()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name("python -m export.tensorrt"),
                                description="Build a TensorRT engine from a taidpt ONNX export (and print the trtexec command).")
    p.add_argument("--onnx", required=True, help="MODEL.onnx written by python -m export.onnx")
    p.add_argument("--engine", required=True, help="the engine file to write (MODEL.plan)")
    p.add_argument("--fp16", action="store_true", help="half-precision engine (see the module help for TensorRT 11)")
    p.add_argument("--min-batch", type=int, default=1)
    p.add_argument("--opt-batch", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--timing-cache", default="", help="timing cache file, read if present and written after the build")
    p.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace limit in GiB (default 4)")
    p.add_argument("--trtexec", action="store_true", help="build by running the printed trtexec command instead")
    p.add_argument("--metadata-only", action="store_true",
                   help="only write ENGINE.json for an engine built elsewhere (e.g. by trtexec)")
    p.add_argument("--no-verify", action="store_true", help="skip the engine-vs-onnxruntime comparison after the build")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    onnx_path, engine_path = Path(args.onnx), Path(args.engine)
    try:
        meta = read_onnx_metadata(onnx_path)
        profile = Profile(args.min_batch, args.opt_batch, args.max_batch)
    except (MetadataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    usable, why = tensorrt_status()
    major = PINNED_TENSORRT_MAJOR
    if usable:
        import tensorrt as trt

        major = int(trt.__version__.split(".")[0])
    if meta.precision == "int8":
        print(f"error: {onnx_path} is an int8 export for onnxruntime (uint8 activations, which TensorRT's symmetric "
              f"int8 does not take); build the engine from the fp32 or fp16 export", file=sys.stderr)
        return 2
    fp16 = args.fp16 or meta.precision == "fp16"
    needs_fp16_onnx = args.fp16 and meta.precision == "fp32" and major >= 11
    fp16_file, reuse = fp16_source(onnx_path, meta) if args.fp16 and meta.precision == "fp32" else (onnx_path, True)
    source = fp16_file if needs_fp16_onnx else onnx_path
    built_meta = meta.replace(precision="fp16" if fp16 else meta.precision)
    extra = dict(timing_cache=args.timing_cache, workspace_gb=args.workspace_gb)

    if needs_fp16_onnx and reuse:
        print(f"using {source}: the fp16 export of this model that export.onnx wrote and gated (not rewritten)")
    elif needs_fp16_onnx and not args.metadata_only:
        # TensorRT >= 11 takes its precision from the file: write the fp16 ONNX now, so that the
        # printed trtexec command works as it stands (also on another machine).
        try:
            line = write_fp16_onnx(onnx_path, source, meta)
        except Exception as exc:  # noqa: BLE001 - one line
            print(f"error: writing {source} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {source} (fp16 encoder, fp32 input/outputs and scoring head); {line}")
    cmd11 = trtexec_command(fp16_file, engine_path, meta, profile, fp16_flag=False, **extra)
    cmd10 = trtexec_command(onnx_path, engine_path, meta, profile, fp16_flag=fp16 and meta.precision == "fp32", **extra)
    if meta.precision == "fp16":
        cmd10 += " --stronglyTyped"
    print("trtexec command (TensorRT >= 11, strongly typed: the precision is the ONNX file's):")
    print(f"  {cmd11}")
    print("trtexec command (TensorRT 10.x):")
    print(f"  {cmd10}")

    profile_info = {"input": INPUT_NAME, "min": list(profile.shapes(*meta.image_size)[0]),
                    "opt": list(profile.shapes(*meta.image_size)[1]), "max": list(profile.shapes(*meta.image_size)[2])}
    if args.metadata_only:
        if not engine_path.is_file():
            print(f"error: --metadata-only: {engine_path} does not exist; build it first", file=sys.stderr)
            return 2
        side = write_sidecar(engine_path, built_meta, {"onnx": str(onnx_path), "profile": profile_info,
                                                       "builder": "external (trtexec)", **engine_facts(engine_path),
                                                       "written": datetime.datetime.now().isoformat(timespec="seconds")})
        print(f"wrote {side}")
        return 0
    if not usable:
        print(f"error: cannot build {engine_path} here: {why}. Run one of the commands above on a machine with an "
              f"NVIDIA GPU and TensorRT, then python -m export.tensorrt --onnx {onnx_path} --engine {engine_path}"
              f"{' --fp16' if args.fp16 else ''} --metadata-only", file=sys.stderr)
        return EXIT_NO_TENSORRT

    try:
        if args.trtexec:
            exe = shutil.which("trtexec")
            if exe is None:
                raise RuntimeError("--trtexec: trtexec is not on PATH")
            cmd = cmd11 if major >= 11 else cmd10
            print(f"running: {cmd}")
            subprocess.run(shlex.split(cmd), check=True)
            facts = {"builder": "trtexec"}
        else:
            facts = build_engine(source, engine_path, meta.image_size, profile,
                                 weak_fp16=args.fp16 and meta.precision == "fp32" and major < 11,
                                 strongly_typed=meta.precision == "fp16" or needs_fp16_onnx,
                                 timing_cache=args.timing_cache, workspace_gb=args.workspace_gb)
    except Exception as exc:  # noqa: BLE001 - TensorRT raises plain RuntimeError/TypeError; one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: building {engine_path} failed: {msg}", file=sys.stderr)
        return 1
    side = write_sidecar(engine_path, built_meta, {"onnx": str(source), "profile": profile_info, **facts,
                                                   **engine_facts(engine_path),
                                                   "written": datetime.datetime.now().isoformat(timespec="seconds")})
    print(f"wrote {engine_path} ({engine_path.stat().st_size / 1e6:.1f} MB) and {side}")
    if not args.no_verify:
        diffs = verify_engine(engine_path, onnx_path)
        print("engine vs onnxruntime CPU (source ONNX), max abs difference: "
              + ", ".join(f"{k} {v:.3e}" for k, v in diffs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
