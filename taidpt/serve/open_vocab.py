"""Score any class list with an open-vocabulary export (``python -m export.onnx --open-vocabulary``).

The names are put into the stored prompt template, tokenized (:mod:`taidpt.serve.tokenizer`) and embedded
once by ``M.text.onnx``; every image batch is then scored by ``M.open.onnx`` against those embeddings.
:class:`OpenVocabModel` is a :class:`taidpt.serve.runtime.Runner` whose metadata is ``M.onnx``'s with the
requested names (and the stored thresholds of those it keeps). See docs/deployment.md, section 8.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from taidpt.serve.metadata import (
    EMBEDDING_NAMES,
    INPUT_NAME,
    OUTPUT_NAMES,
    TOKEN_IDS_NAME,
    MetadataError,
    ModelMetadata,
    fill_template,
    read_onnx_metadata,
)
from taidpt.serve.graph_check import check_graph, session_shapes
from taidpt.serve.class_names import ClassNameError, validate_class_names
from taidpt.serve.export_unit import companion_mismatch
from taidpt.serve.ort_packages import warn_if_both_installed
from taidpt.serve.runtime import ENGINE_SUFFIXES, ModelLoadError, choose_providers
from taidpt.serve.tokenizer import ClipTokenizer, TokenizerError

TEXT_BATCH = 256  # class prompts per text-model call


class OpenVocabError(ModelLoadError):
    """A class list or an open-vocabulary export cannot be used; the message is one line."""


CLASS_LIST_HELP = ("like --classes, from a UTF-8 file with one class name per line; blank lines and lines "
                   "starting with # (comments) are skipped")


def _class_list_lines(path: Path, where: str) -> tuple[list[str], list[str]]:
    """The names of a class-list file and where each is (``... line N``): blank and ``#`` lines skipped."""
    try:
        text = path.read_bytes().removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except OSError as exc:
        raise OpenVocabError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise OpenVocabError(f"{where}: not UTF-8 (byte {exc.start + 1}); save the list as UTF-8") from None
    kept = [(ln.strip(), f"{where} line {n}") for n, ln in enumerate(text.split("\n"), 1)
            if ln.strip() and not ln.strip().startswith("#")]
    if not kept:
        raise OpenVocabError(f"{where}: no class names (expected one name per line)")
    return [name for name, _ in kept], [place for _, place in kept]


def parse_class_names(classes: str | None = None, class_list: str | os.PathLike | None = None) -> list[str] | None:
    """The class names of ``--classes "a,b,c"`` or ``--class-list FILE`` (one name per line, blank
    lines and ``#`` comments skipped), or None when neither is given; checked by
    :func:`taidpt.serve.class_names.validate_class_names` (one-line :class:`OpenVocabError`)."""
    if classes is None and class_list is None:
        return None
    if classes is not None and class_list is not None:
        raise OpenVocabError("give --classes or --class-list, not both")
    if classes is not None:
        where, names = "--classes", [c.strip() for c in classes.split(",")]
        if any(not n for n in names):
            raise OpenVocabError(f"--classes {classes!r}: expected comma-separated class names, found an empty one")
        places = [f"--classes name {i}" for i in range(1, len(names) + 1)]
    else:
        path = Path(os.path.expanduser(os.fspath(class_list)))
        where = f"--class-list {path}"
        names, places = _class_list_lines(path, where)
    try:
        return validate_class_names(names, where, places)
    except ClassNameError as exc:
        raise OpenVocabError(str(exc)) from None


def companion_files(model_path: Path, meta: ModelMetadata) -> dict[str, Path]:
    """``{"text", "open", "bpe"}`` -> the files an open-vocabulary export named in its metadata, which must exist
    and come from the same export (:func:`check_one_export`)."""
    if not (meta.text_model and meta.open_model and meta.bpe_vocab and meta.prompt_template):
        raise OpenVocabError(f"{model_path}: exported without --open-vocabulary, so it scores only its "
                             f"{meta.num_classes} trained classes; re-export it with python -m export.onnx "
                             f"--open-vocabulary to use --classes or --class-list")
    files = {"text": meta.text_model, "open": meta.open_model, "bpe": meta.bpe_vocab}
    out = {}
    for key, name in files.items():
        path = model_path.parent / name
        if Path(name).name != name or not path.is_file():
            raise OpenVocabError(f"{model_path}: its open-vocabulary file {name} is not beside it (copy "
                                 f"{meta.text_model}, {meta.open_model} and {meta.bpe_vocab} along with the model)")
        out[key] = path
    check_one_export(model_path, meta, out)
    return out


def check_one_export(model_path: Path, meta: ModelMetadata, files: dict[str, Path]) -> None:
    """Refuse (one line) companions whose export id differs from ``M.onnx``'s, or a vocabulary file whose
    sha256 is not the one ``M.onnx`` recorded (:mod:`taidpt.serve.export_unit`)."""
    try:
        ids = {files[key]: read_onnx_metadata(files[key]).export_id for key in ("text", "open")}
    except MetadataError as exc:
        raise OpenVocabError(str(exc)) from None
    problem = companion_mismatch(model_path, meta.export_id, meta.bpe_sha256, ids, files["bpe"])
    if problem:
        raise OpenVocabError(problem)


def _session(path: Path, providers: Sequence[Any], threads: int) -> Any:
    """An onnxruntime session for one of the companion graphs (one-line error naming the file)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.intra_op_num_threads = max(int(threads), 0)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OpenVocabError(f"{path}: onnxruntime cannot load it ({first})") from None


def prompts_for(template: str, classnames: Sequence[str]) -> list[str]:
    """Each name in the prompt template, underscores as spaces (as the training prompts were written)."""
    return [fill_template(template, name.replace("_", " ")) for name in classnames]


class TextEmbedder:
    """Class names -> (global, local) class embeddings ``[C, D]`` float32 through the exported text model."""

    def __init__(self, text_model: Path, vocab: Path, template: str, context_length: int, threads: int = 0) -> None:
        try:
            self.tokenizer = ClipTokenizer(vocab)
        except TokenizerError as exc:
            raise OpenVocabError(str(exc)) from None
        self.template, self.context_length = template, int(context_length)
        self.session = _session(text_model, ["CPUExecutionProvider"], threads)
        names = [i.name for i in self.session.get_inputs()]
        if names != [TOKEN_IDS_NAME]:
            raise OpenVocabError(f"{text_model}: expected the input {TOKEN_IDS_NAME!r}, found {names}")

    def prompts(self, classnames: Sequence[str]) -> list[str]:
        """Each name in the prompt template (:func:`prompts_for`)."""
        return prompts_for(self.template, classnames)

    def token_ids(self, classnames: Sequence[str]) -> np.ndarray:
        """Prompt token ids int64 ``[C, context_length]``."""
        return self.tokenizer(self.prompts(classnames), self.context_length)

    def __call__(self, classnames: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = self.token_ids(classnames)
        parts = [self.session.run(list(EMBEDDING_NAMES), {TOKEN_IDS_NAME: ids[i:i + TEXT_BATCH]})
                 for i in range(0, len(ids), TEXT_BATCH)]
        return tuple(np.concatenate([np.asarray(p[k], dtype=np.float32) for p in parts]) for k in range(2))


def _trt_options(path: Path, meta: ModelMetadata, n_classes: int, dim: int, max_batch: int) -> dict[str, str]:
    """TensorRT EP options for the open graph: a batch profile for the images, the class count fixed."""
    h, w = meta.image_size
    text = ",".join(f"{name}:{n_classes}x{dim}" for name in EMBEDDING_NAMES)

    def shapes(batch: int) -> str:
        return f"{INPUT_NAME}:{batch}x3x{h}x{w},{text}"

    cache = str(path.with_name(path.name + ".trt_cache"))
    return {"trt_profile_min_shapes": shapes(1), "trt_profile_opt_shapes": shapes(max_batch),
            "trt_profile_max_shapes": shapes(max_batch), "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": cache, "trt_timing_cache_enable": "True", "trt_timing_cache_path": cache}


class OpenVocabModel:
    """An open-vocabulary export scoring ``classnames`` (a :class:`taidpt.serve.runtime.Runner`)."""

    def __init__(self, path: str | os.PathLike, classnames: Sequence[str], providers: Sequence[str] | None = None,
                 *, threads: int = 0, max_batch: int = 32) -> None:
        import onnxruntime as ort

        warn_if_both_installed()
        self.path = Path(path)
        if self.path.suffix.lower() in ENGINE_SUFFIXES:
            raise OpenVocabError(f"{self.path}: --classes and --class-list need the ONNX export (MODEL.onnx with its "
                                 f"open-vocabulary files); a TensorRT engine holds its trained classes only")
        base = read_onnx_metadata(self.path)
        files = companion_files(self.path, base)
        kept = set(classnames)
        try:
            self.metadata = base.replace(classnames=tuple(classnames), thresholds={
                c: t for c, t in base.threshold_map.items() if c in kept})
        except MetadataError as exc:
            raise OpenVocabError(f"class list: {exc}") from None
        self.embedder = TextEmbedder(files["text"], files["bpe"], base.prompt_template, base.context_length, threads)
        check_graph(base, session_shapes(self.embedder.session), self.path, files["text"].name)
        self.text_global, self.text_local = self.embedder(list(classnames))
        chosen = choose_providers(providers, ort.get_available_providers())
        dim = int(self.text_global.shape[1])
        listed = [(p, _trt_options(files["open"], base, len(classnames), dim, max_batch)
                   if p == "TensorrtExecutionProvider" else {}) for p in chosen]
        self.session = _session(files["open"], listed, threads)
        inputs = [i.name for i in self.session.get_inputs()]
        if inputs != [INPUT_NAME, *EMBEDDING_NAMES]:
            raise OpenVocabError(f"{files['open']}: expected inputs {[INPUT_NAME, *EMBEDDING_NAMES]}, found {inputs}")
        check_graph(self.metadata, session_shapes(self.session), self.path, files["open"].name, dim)
        self.providers = list(self.session.get_providers())
        self.provider = self.providers[0]

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Scores ``[N, C]`` of a preprocessed float32 batch ``[N, 3, H, W]`` for this model's class list."""
        feeds = {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32),
                 EMBEDDING_NAMES[0]: self.text_global, EMBEDDING_NAMES[1]: self.text_local}
        values = self.session.run(list(OUTPUT_NAMES), feeds)
        return {name: np.asarray(v, dtype=np.float32) for name, v in zip(OUTPUT_NAMES, values)}

    def close(self) -> None:
        self.session = None
        self.embedder.session = None

