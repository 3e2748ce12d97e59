"""Run an exported TaI-DPT model: onnxruntime sessions and serialized TensorRT engines.

:class:`OnnxModel` and :class:`TensorRTEngine` take a float32 ``[N, 3, H, W]`` batch and return
``{"scores", "global_logits", "local_logits"}`` as float32 ``[N, C]`` arrays, so every caller treats them
alike (:class:`Runner`; :func:`open_model` picks one by file suffix). The engine moves data with the CUDA
runtime library through ctypes (no pycuda) and splits or pads a batch to its optimization profile.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from taidpt.serve.graph_check import check_graph, session_shapes
from taidpt.serve.metadata import INPUT_NAME, OUTPUT_NAMES, MetadataError, ModelMetadata, read_sidecar
from taidpt.serve.ort_packages import warn_if_both_installed

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")


class ModelLoadError(RuntimeError):
    """The model file or its runtime could not be opened; the message is one line naming the file."""


class Runner(Protocol):
    """What the CLI needs from a loaded model."""

    metadata: ModelMetadata
    provider: str
    path: Path

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def add_runtime_arguments(parser: Any, *, workers: bool = True) -> None:
    """The flags every command that runs an exported model shares: execution providers,
    onnxruntime threads and (given ``workers``) image-decoding threads."""
    parser.add_argument("--providers", nargs="+", default=None,
                        help="onnxruntime execution providers, best first (default: TensorRT, CUDA, CPU as available)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = its default)")
    if workers:
        parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="image decoding threads")


def choose_providers(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """The onnxruntime providers to use, best first.

    With ``requested`` each must be available (a clear error otherwise); without it, the available
    ones among TensorRT, CUDA and CPU in that order. CPU is always appended as the fallback.
    """
    available = list(available)
    if requested:
        chosen = []
        for name in requested:
            if name not in available:
                raise ModelLoadError(f"execution provider {name} is not available in this onnxruntime build "
                                     f"(available: {', '.join(available)})")
            chosen.append(name)
    else:
        chosen = [p for p in PROVIDER_PREFERENCE if p in available]
    if "CPUExecutionProvider" not in chosen and "CPUExecutionProvider" in available:
        chosen.append("CPUExecutionProvider")
    return chosen


def _provider_options(name: str, model_path: Path, metadata: ModelMetadata, max_batch: int) -> dict[str, str]:
    """Options for the TensorRT EP: an explicit batch profile and an engine cache beside the model."""
    if name != "TensorrtExecutionProvider":
        return {}
    h, w = metadata.image_size
    cache = model_path.with_name(model_path.name + ".trt_cache")
    return {
        "trt_profile_min_shapes": f"{INPUT_NAME}:1x3x{h}x{w}",
        "trt_profile_opt_shapes": f"{INPUT_NAME}:{max_batch}x3x{h}x{w}",
        "trt_profile_max_shapes": f"{INPUT_NAME}:{max_batch}x3x{h}x{w}",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
    }


class OnnxModel:
    """An exported ONNX model in an onnxruntime session, with its taidpt metadata."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None, *, threads: int = 0,
                 max_batch: int = 32) -> None:
        import onnxruntime as ort

        warn_if_both_installed()  # once per process: a CPU onnxruntime beside onnxruntime-gpu hides CUDA
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"{self.path}: no such model file")
        chosen = choose_providers(providers, ort.get_available_providers())
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads > 0:
            options.intra_op_num_threads = int(threads)
        # Metadata first: the TensorRT EP's profile needs the image size.
        meta = _session_free_metadata(self.path)
        provider_list: list[Any] = [(p, _provider_options(p, self.path, meta, max_batch)) for p in chosen]
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=provider_list)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{self.path}: onnxruntime cannot load it ({first})") from None
        self.metadata = ModelMetadata.from_props(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.providers = list(self.session.get_providers())
        self.provider = self.providers[0]
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or set(OUTPUT_NAMES) - set(outputs):
            raise ModelLoadError(f"{self.path}: expected input {INPUT_NAME!r} and outputs {', '.join(OUTPUT_NAMES)}, "
                                 f"found inputs {inputs} and outputs {outputs}")
        check_graph(self.metadata, session_shapes(self.session), self.path)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Scores of a preprocessed float32 batch ``[N, 3, H, W]``."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        values = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        return {name: np.asarray(v, dtype=np.float32) for name, v in zip(OUTPUT_NAMES, values)}

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


def _session_free_metadata(path: Path) -> ModelMetadata:
    """Metadata read without creating a session (onnx if importable, else a CPU session)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map, path)
    from taidpt.serve.metadata import read_onnx_metadata

    return read_onnx_metadata(path)


# ----------------------------------------------------------------------------- CUDA runtime via ctypes
class CudaRuntime:
    """The few CUDA runtime calls a TensorRT engine needs, through ctypes (no torch, no pycuda)."""

    _NAMES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so", "cudart64_13.dll", "cudart64_12.dll")
    H2D, D2H = 1, 2  # cudaMemcpyKind

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        lib.cudaGetErrorString.argtypes = [ctypes.c_int]
        lib.cudaGetDeviceCount.argtypes = [ctypes.POINTER(ctypes.c_int)]
        lib.cudaMalloc.argtypes = [ctypes.POINTER(vp), sz]
        lib.cudaFree.argtypes = [vp]
        lib.cudaMemcpyAsync.argtypes = [vp, vp, sz, ctypes.c_int, vp]
        lib.cudaStreamCreate.argtypes = [ctypes.POINTER(vp)]
        lib.cudaStreamSynchronize.argtypes = [vp]
        lib.cudaStreamDestroy.argtypes = [vp]
        for fn in ("cudaGetDeviceCount", "cudaMalloc", "cudaFree", "cudaMemcpyAsync", "cudaStreamCreate",
                   "cudaStreamSynchronize", "cudaStreamDestroy"):
            getattr(lib, fn).restype = ctypes.c_int

    @classmethod
    def load(cls) -> "CudaRuntime":
        """Find libcudart (system, or the nvidia-* wheels in site-packages); ModelLoadError if absent."""
        candidates: list[str] = list(cls._NAMES)
        for base in sys.path:
            candidates += sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib", "libcudart.so*")), reverse=True)
        errors = []
        for name in candidates:
            try:
                return cls(ctypes.CDLL(name))
            except OSError as exc:
                errors.append(str(exc))
        raise ModelLoadError("the CUDA runtime library (libcudart) was not found; a TensorRT engine needs an "
                             "NVIDIA GPU with its driver and CUDA runtime")

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            msg = self.lib.cudaGetErrorString(code)
            raise RuntimeError(f"CUDA {what} failed: {msg.decode() if msg else code}")

    def device_count(self) -> int:
        n = ctypes.c_int(0)
        code = self.lib.cudaGetDeviceCount(ctypes.byref(n))
        return int(n.value) if code == 0 else 0

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(ctypes.byref(ptr), max(int(nbytes), 1)), "cudaMalloc")
        return int(ptr.value)

    def free(self, ptr: int) -> None:
        self._check(self.lib.cudaFree(ctypes.c_void_p(ptr)), "cudaFree")

    def stream(self) -> int:
        s = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreate(ctypes.byref(s)), "cudaStreamCreate")
        return int(s.value or 0)

    def destroy_stream(self, stream: int) -> None:
        self._check(self.lib.cudaStreamDestroy(ctypes.c_void_p(stream)), "cudaStreamDestroy")

    def to_device(self, dst: int, src: np.ndarray, stream: int) -> None:
        self._check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src.ctypes.data), src.nbytes,
                                             self.H2D, ctypes.c_void_p(stream)), "copy to device")

    def to_host(self, dst: np.ndarray, src: int, stream: int) -> None:
        self._check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst.ctypes.data), ctypes.c_void_p(src), dst.nbytes,
                                             self.D2H, ctypes.c_void_p(stream)), "copy to host")

    def synchronize(self, stream: int) -> None:
        self._check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")


def tensorrt_status() -> tuple[bool, str]:
    """(usable, reason): whether the TensorRT Python package imports and a CUDA device is visible."""
    try:
        import tensorrt as trt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - missing libs raise OSError/ImportError
        return False, (f"the TensorRT Python package is not importable ({type(exc).__name__}: {exc}); install the "
                       f"optional extra: pip install tensorrt-cu13-bindings==11.4.0.106 tensorrt-cu13-libs==11.4.0.106")
    try:
        n = CudaRuntime.load().device_count()
    except ModelLoadError as exc:
        return False, str(exc)
    if n < 1:
        return False, "no CUDA device is visible (TensorRT needs an NVIDIA GPU)"
    return True, f"tensorrt {trt.__version__}, {n} CUDA device(s)"


class TensorRTEngine:
    """A serialized TensorRT engine (``.plan``) with its ``.plan.json`` metadata sidecar."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"{self.path}: no such engine file")
        try:
            self.metadata, self.build_info = read_sidecar(self.path)
        except MetadataError as exc:
            raise ModelLoadError(str(exc)) from None
        ok, why = tensorrt_status()
        if not ok:
            raise ModelLoadError(f"{self.path}: cannot run a TensorRT engine here: {why}")
        import tensorrt as trt

        self.trt = trt
        self.cuda = CudaRuntime.load()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ModelLoadError(f"{self.path}: TensorRT {trt.__version__} could not deserialize it (built with "
                                 f"another TensorRT version or for another GPU? rebuild it with python -m export.tensorrt)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if INPUT_NAME not in names or set(OUTPUT_NAMES) - set(names):
            raise ModelLoadError(f"{self.path}: expected tensors {INPUT_NAME}, {', '.join(OUTPUT_NAMES)}; found {names}")
        check_graph(self.metadata, {n: tuple(self.engine.get_tensor_shape(n)) for n in names}, self.path)
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        lo, _, hi = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        self.provider = f"TensorRT {trt.__version__} engine"
        h, w = self.metadata.image_size
        c = self.metadata.num_classes
        self._sizes = {INPUT_NAME: self.max_batch * 3 * h * w * self.dtypes[INPUT_NAME].itemsize}
        for name in OUTPUT_NAMES:
            self._sizes[name] = self.max_batch * c * self.dtypes[name].itemsize
        self._buffers = {name: self.cuda.malloc(size) for name, size in self._sizes.items()}
        self._stream = self.cuda.stream()

    def _run_chunk(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        n = chunk.shape[0]
        if n < self.min_batch:  # pad up to the profile minimum, drop the padding afterwards
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.min_batch - n, axis=0)])
        x = np.ascontiguousarray(chunk, dtype=self.dtypes[INPUT_NAME])
        if not self.context.set_input_shape(INPUT_NAME, tuple(x.shape)):
            raise RuntimeError(f"{self.path}: input shape {x.shape} is outside the engine's profile")
        self.cuda.to_device(self._buffers[INPUT_NAME], x, self._stream)
        outputs = {}
        for name, ptr in self._buffers.items():
            self.context.set_tensor_address(name, ptr)
        for name in OUTPUT_NAMES:
            outputs[name] = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name])
        if not self.context.execute_async_v3(self._stream):
            raise RuntimeError(f"{self.path}: TensorRT execution failed")
        for name in OUTPUT_NAMES:
            self.cuda.to_host(outputs[name], self._buffers[name], self._stream)
        self.cuda.synchronize(self._stream)
        return {k: v[:n].astype(np.float32) for k, v in outputs.items()}

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Scores of a preprocessed float32 batch, split into chunks of at most the profile maximum."""
        parts = [self._run_chunk(images[i:i + self.max_batch]) for i in range(0, images.shape[0], self.max_batch)]
        return {name: np.concatenate([p[name] for p in parts]) for name in OUTPUT_NAMES}

    def close(self) -> None:
        for ptr in getattr(self, "_buffers", {}).values():
            self.cuda.free(ptr)
        self._buffers = {}
        if getattr(self, "_stream", None):
            self.cuda.destroy_stream(self._stream)
            self._stream = 0


def open_model(path: str | os.PathLike, providers: Sequence[str] | None = None, *, threads: int = 0,
               max_batch: int = 32) -> Runner:
    """An :class:`OnnxModel` for ``.onnx`` files, a :class:`TensorRTEngine` for ``.plan``/``.engine``."""
    p = Path(path)
    if p.suffix.lower() in ENGINE_SUFFIXES:
        if providers:
            raise ModelLoadError(f"{p}: --providers applies to ONNX models; a TensorRT engine runs on TensorRT")
        return TensorRTEngine(p)
    if p.suffix.lower() != ".onnx":
        raise ModelLoadError(f"{p}: expected a .onnx model or a TensorRT engine ({', '.join(ENGINE_SUFFIXES)})")
    return OnnxModel(p, providers, threads=threads, max_batch=max_batch)
