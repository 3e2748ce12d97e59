"""``python -m export.onnx --open-vocabulary``: the files that let a deployment score any class list.

Beside ``M.onnx`` it writes the text model ``M.text.onnx``, the open image graph ``M.open.onnx`` (the class
embeddings are required inputs, not initializers: TensorRT would freeze those into weights) and the BPE
vocabulary ``M.bpe.txt.gz``, all with ``M.onnx``'s export id, and checks them through the serving code
(:class:`taidpt.serve.open_vocab.OpenVocabModel`) against PyTorch and ``M.onnx`` within 1e-5.
See docs/deployment.md, section 8.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from taidpt.export.errors import ExportError
from taidpt.export.onnx_files import set_metadata
from taidpt.export.parity import check_onnx
from taidpt.export.precision import convert_to_fp16
from taidpt.export.tracing import traceable
from taidpt.serve.export_unit import file_sha256, new_export_id
from taidpt.serve.metadata import (
    EMBEDDING_NAMES,
    INPUT_NAME,
    OUTPUT_NAMES,
    TOKEN_IDS_NAME,
    MetadataError,
    ModelMetadata,
    read_onnx_metadata,
)

OPEN_VOCAB_TOL = 1e-5
# Class names no run here was trained on: multi-word, underscores, accents, CJK, emoji, and one long
# enough that its prompt is cut at the context length.
PROBE_CLASSES = ("zebra", "hair drier", "motor bike", "potted_plant", "crème brûlée", "東京タワー", "🐶 puppy",
                 "Fire-Hydrant #2", " ".join(["extraordinarily long class name"] * 14))


def companion_names(out: str | os.PathLike) -> dict[str, str]:
    """``{"text", "open", "bpe"}`` -> the file names written beside ``M.onnx`` (``M.text.onnx``, ...)."""
    stem = Path(out).name[: -len(".onnx")]
    return {"text": f"{stem}.text.onnx", "open": f"{stem}.open.onnx", "bpe": f"{stem}.bpe.txt.gz"}


def _vocab_file() -> str:
    from open_clip.tokenizer import default_bpe

    return default_bpe()


def open_vocabulary_metadata(loaded: Any, out: str | os.PathLike, precision: str = "fp32") -> ModelMetadata:
    """``M.onnx``'s metadata naming the open-vocabulary files; :class:`ExportError` (one line) when the
    run cannot embed new names, the serving tokenizer does not reproduce its training prompts, or
    ``precision`` is int8 (the open graph would need its own calibration with embedding inputs)."""
    from taidpt.export.open_vocab_graphs import open_vocabulary_refusal, prompt_template, trained_prompt_ids
    from taidpt.serve.open_vocab import prompts_for
    from taidpt.serve.tokenizer import ClipTokenizer

    if precision not in ("fp32", "fp16"):
        raise ExportError(f"--open-vocabulary is available for fp32 and fp16 exports, not {precision}")
    trained = loaded.trained
    reason = open_vocabulary_refusal(trained.method, loaded.cfg, trained.model)
    if reason:
        raise ExportError(reason)
    tokenizer = ClipTokenizer(_vocab_file())
    template = prompt_template(trained.model, tokenizer.decode)
    context = int(trained.model.text.context_length)
    try:
        served = tokenizer(prompts_for(template, trained.classnames), context)
    except MetadataError as exc:
        raise ExportError(f"--open-vocabulary: {exc}") from None
    if not np.array_equal(served, trained_prompt_ids(trained.model).numpy()):
        raise ExportError(f"--open-vocabulary: the prompt template {template!r} does not reproduce the run's "
                          f"training prompts through the serving tokenizer")
    names = companion_names(out)
    return loaded.metadata.replace(text_model=names["text"], open_model=names["open"], bpe_vocab=names["bpe"],
                                   prompt_template=template, context_length=context, export_id=new_export_id(),
                                   bpe_sha256=file_sha256(_vocab_file()))


def _trace(module: Any, inputs: tuple, path: Path, input_names: Sequence[str], output_names: Sequence[str],
           dynamic_axes: dict[str, dict[int, str]], opset: int) -> None:
    """Trace ``module`` into ``path`` with the fused export's exporter and settings (see tracing.py)."""
    import torch

    with traceable(module), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer warnings
        torch.onnx.export(module.eval(), inputs, str(path), input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=dynamic_axes, opset_version=int(opset),
                          do_constant_folding=True, dynamo=False)


@dataclass
class OpenVocabReport:
    """Max abs differences of the open-vocabulary checks.

    ``text``: embeddings of new names, served chain vs PyTorch. ``fed``: the open graph given the fused
    model's own embeddings vs the fused model, per batch size (the graphs must agree). ``served``: the
    whole serving chain on the trained names (tokenizer -> text model -> open graph) vs the fused model;
    its differences are the embeddings' (``text``) times up to the logit scale, so its tolerance is
    ``tolerance * max(1, logit_scale)``.
    """

    precision: str
    tolerance: float
    logit_scale: float
    text: dict[str, float]
    n_probe: int
    fed: dict[int, dict[str, float]] = field(default_factory=dict)
    served: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def served_tolerance(self) -> float:
        return self.tolerance * max(1.0, self.logit_scale)

    @staticmethod
    def _worst(rows: dict[int, dict[str, float]]) -> float:
        return max((v for row in rows.values() for v in row.values()), default=0.0)

    @property
    def ok(self) -> bool:
        return (max(self.text.values()) <= self.tolerance and self._worst(self.fed) <= self.tolerance
                and self._worst(self.served) <= self.served_tolerance)

    def table(self) -> str:
        head = f"{'batch':>5}  " + "  ".join(f"{o:>14}" for o in OUTPUT_NAMES)
        lines = [f"open vocabulary: text model (onnxruntime, serving tokenizer) vs PyTorch on {self.n_probe} new "
                 f"class names, max abs difference (tolerance {self.tolerance:g}):",
                 "       " + "  ".join(f"{k:>14}" for k in self.text),
                 "       " + "  ".join(f"{v:>14.3e}" for v in self.text.values())]
        for rows, what, tol in ((self.fed, "fed the fused model's embeddings", self.tolerance),
                                (self.served, "fed the trained names through tokenizer and text model",
                                 self.served_tolerance)):
            lines += [f"open vocabulary: {self.precision} open image graph {what} vs the fused model, max abs "
                      f"difference (tolerance {tol:g}):", head]
            lines += [f"{b:>5}  " + "  ".join(f"{row[o]:>14.3e}" for o in OUTPUT_NAMES) for b, row in rows.items()]
        lines.append(f"open vocabulary: {'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)


def _write_graphs(loaded: Any, files: dict[str, Path], meta: ModelMetadata, images: np.ndarray, opset: int) -> None:
    """Trace the text model and the open image graph (fp16 like ``M.onnx`` when it is), copy the vocabulary."""
    import torch

    from taidpt.export.open_vocab_graphs import ClassEmbedder, OpenImageScorer, trained_prompt_ids

    model = loaded.trained.model.float().eval()
    classes = {0: "classes"}
    _trace(ClassEmbedder(model), (trained_prompt_ids(model),), files["text"], [TOKEN_IDS_NAME], EMBEDDING_NAMES,
           {name: classes for name in (TOKEN_IDS_NAME, *EMBEDDING_NAMES)}, opset)
    set_metadata(files["text"], meta.replace(precision="fp32", opset=opset),
                 doc=f"TaI-DPT text model ({meta.trainer}): {TOKEN_IDS_NAME} int64 [C,{meta.context_length}] -> "
                     f"{', '.join(EMBEDDING_NAMES)} [C,D], L2-normalised")
    scorer = loaded.scorer
    sample = (torch.from_numpy(images[:2]), scorer.text_global.float(), scorer.text_local.float())
    axes = {INPUT_NAME: {0: "batch"}, **{name: classes for name in EMBEDDING_NAMES},
            **{name: {0: "batch", 1: "classes"} for name in OUTPUT_NAMES}}
    with tempfile.TemporaryDirectory(prefix=".open-", dir=files["open"].parent) as tmp:
        fp32 = Path(tmp) / "open.onnx"
        _trace(OpenImageScorer(scorer), sample, fp32, [INPUT_NAME, *EMBEDDING_NAMES], OUTPUT_NAMES, axes, opset)
        set_metadata(fp32, meta.replace(precision="fp32", opset=opset),
                     doc=f"TaI-DPT open image graph ({meta.trainer}): {INPUT_NAME} [N,3,{meta.image_size[0]},"
                         f"{meta.image_size[1]}] + {', '.join(EMBEDDING_NAMES)} [C,D] -> {', '.join(OUTPUT_NAMES)} [N,C]")
        if meta.precision == "fp16":
            convert_to_fp16(fp32, files["open"])
        else:
            shutil.move(str(fp32), files["open"])
    for key in ("text", "open"):
        check_onnx(files[key])
    shutil.copyfile(_vocab_file(), files["bpe"])


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _parity(loaded: Any, out: Path, images: np.ndarray, batch_sizes: Sequence[int], precision: str) -> OpenVocabReport:
    """The checks, through the serving code: new names' embeddings, and the open graph vs ``M.onnx``."""
    from taidpt.export.open_vocab_graphs import embeddings_for
    from taidpt.serve.open_vocab import OpenVocabModel
    from taidpt.serve.runtime import OnnxModel

    trained, scorer = loaded.trained, loaded.scorer
    probe = [c for c in PROBE_CLASSES if c not in set(trained.classnames)]
    reference = embeddings_for(trained.method, loaded.cfg, trained.model, probe)
    cpu = ["CPUExecutionProvider"]
    served = OpenVocabModel(out, list(trained.classnames), cpu)
    fused = OnnxModel(out, cpu)
    try:
        text = {name: _max_diff(g, r.numpy()) for name, g, r in zip(EMBEDDING_NAMES, served.embedder(probe), reference)}
        report = OpenVocabReport(precision, OPEN_VOCAB_TOL, float(scorer.scale), text, len(probe))
        own = (scorer.text_global.float().numpy(), scorer.text_local.float().numpy())
        for b in batch_sizes:
            want = fused.run(images[:b])
            chain = served.run(images[:b])
            served.text_global, served.text_local = own
            fed = served.run(images[:b])
            served.text_global, served.text_local = served.embedder(list(trained.classnames))
            report.fed[b] = {o: _max_diff(fed[o], want[o]) for o in OUTPUT_NAMES}
            report.served[b] = {o: _max_diff(chain[o], want[o]) for o in OUTPUT_NAMES}
    finally:
        served.close()
        fused.close()
    return report


def export_open_vocabulary(loaded: Any, out: str | os.PathLike, images: np.ndarray, *, opset: int,
                           batch_sizes: Sequence[int] = (1, 3)) -> OpenVocabReport:
    """Write ``M.text.onnx``, ``M.open.onnx`` and ``M.bpe.txt.gz`` beside the finished ``out`` (whose metadata
    came from :func:`open_vocabulary_metadata`; the export's staging folder) and check them; on an error
    they are removed. After a failed check ``python -m export.onnx`` keeps the whole set as ``*.failed-parity``
    (:func:`taidpt.export.staging.keep_failed`)."""
    out = Path(out)
    meta = read_onnx_metadata(out)
    files = {k: out.parent / v for k, v in companion_names(out).items()}
    try:
        _write_graphs(loaded, files, meta, images, opset)
        report = _parity(loaded, out, images, batch_sizes, meta.precision)
    except BaseException:
        for path in files.values():
            path.unlink(missing_ok=True)
        raise
    return report
