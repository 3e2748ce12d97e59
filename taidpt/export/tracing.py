"""Tracing the frozen scorer into an fp32 ONNX graph with a dynamic batch axis; the class embeddings are constants.

torch 2.14's default ``torch.onnx.export(dynamo=True)`` needs ``onnxscript``, which is not a dependency; the
TorchScript-based exporter (``dynamo=False``) exports this model exactly, so it is used. Opset 17 is the
default: the first with a native ``LayerNormalization``. See docs/deployment.md, section 1.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

from taidpt.export.onnx_files import set_metadata
from taidpt.serve.metadata import INPUT_NAME, OUTPUT_NAMES, ModelMetadata

DEFAULT_OPSET = 17


@contextlib.contextmanager
def traceable(scorer: Any) -> Iterator[None]:
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
    with traceable(scorer), torch.no_grad(), warnings.catch_warnings():
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
