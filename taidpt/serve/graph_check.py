"""A model's metadata checked against the static shapes of the graph it describes, when the model is opened.

:class:`taidpt.serve.metadata.ModelMetadata` checks the metadata on its own; here class count, image size,
context length and embedding width are compared with the graph's inputs and outputs, so a mismatched file
is refused in one line before any image is decoded. Shapes are a sequence per tensor, where ``-1``,
``None`` or a name marks a dynamic axis. See docs/robustness.md, "Metadata is checked against the graph".
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, Sequence

from taidpt.serve.metadata import (
    EMBEDDING_NAMES,
    INPUT_NAME,
    OUTPUT_NAMES,
    PREFIX,
    TOKEN_IDS_NAME,
    MetadataError,
    ModelMetadata,
)

Shapes = Mapping[str, Sequence[Any]]


def static(dim: Any) -> int | None:
    """The size of an axis, or None where it is dynamic (``-1``, ``None``, a symbolic name)."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        return None
    return int(dim)


def session_shapes(session: Any) -> dict[str, tuple[Any, ...]]:
    """``{tensor name: shape}`` of an onnxruntime session's inputs and outputs."""
    return {a.name: tuple(a.shape or ()) for a in [*session.get_inputs(), *session.get_outputs()]}


def _last(shape: Sequence[Any] | None) -> int | None:
    return static(shape[-1]) if shape else None


def _class_columns(meta: ModelMetadata, shapes: Shapes, of: str) -> Iterator[str]:
    for name in OUTPUT_NAMES:
        width = _last(shapes.get(name))
        if width is not None and width != meta.num_classes:
            yield (f"metadata {PREFIX}classnames has {meta.num_classes} names but output {name!r}{of} has "
                   f"{width} columns")


def _image_input(meta: ModelMetadata, shapes: Shapes, of: str) -> Iterator[str]:
    shape = shapes.get(INPUT_NAME)
    if not shape:
        return
    if len(shape) != 4:
        yield f"input {INPUT_NAME!r}{of} has {len(shape)} axes, expected [batch, 3, height, width]"
        return
    channels, h, w = (static(d) for d in shape[1:])
    if channels is not None and channels != 3:
        yield f"input {INPUT_NAME!r}{of} takes {channels} channels, expected 3 (RGB)"
    mh, mw = meta.image_size
    if (h is not None and h != mh) or (w is not None and w != mw):
        yield (f"metadata {PREFIX}image_size is {mh}x{mw} but input {INPUT_NAME!r}{of} takes "
               f"{h or '?'}x{w or '?'} pixels")


def _token_input(meta: ModelMetadata, shapes: Shapes, of: str) -> Iterator[str]:
    length = _last(shapes.get(TOKEN_IDS_NAME))
    if length is not None and length != meta.context_length:
        yield (f"metadata {PREFIX}context_length is {meta.context_length} but input {TOKEN_IDS_NAME!r}{of} takes "
               f"{length} tokens")


def _embedding_inputs(meta: ModelMetadata, shapes: Shapes, of: str, width: int | None) -> Iterator[str]:
    for name in EMBEDDING_NAMES:
        shape = shapes.get(name)
        if not shape:
            continue
        rows = static(shape[0])
        if rows is not None and rows != meta.num_classes:
            yield f"input {name!r}{of} takes {rows} classes but {meta.num_classes} class names are scored"
        if width is not None and _last(shape) not in (None, width):
            yield f"input {name!r}{of} takes {_last(shape)}-wide embeddings but the text model gives {width}"


def graph_mismatches(meta: ModelMetadata, shapes: Shapes, graph: str = "",
                     embedding_width: int | None = None) -> list[str]:
    """Every disagreement between ``meta`` and the static axes of ``shapes`` (empty when consistent);
    ``graph`` names the graph file when it is not the one the metadata came from."""
    of = f" of {graph}" if graph else ""
    return [*_class_columns(meta, shapes, of), *_image_input(meta, shapes, of), *_token_input(meta, shapes, of),
            *_embedding_inputs(meta, shapes, of, embedding_width)]


def check_graph(meta: ModelMetadata, shapes: Shapes, source: str | os.PathLike, graph: str = "",
                embedding_width: int | None = None) -> None:
    """Raise :class:`MetadataError` (one line naming ``source``, the key and both values) at the first
    disagreement of :func:`graph_mismatches`."""
    problems = graph_mismatches(meta, shapes, graph, embedding_width)
    if problems:
        raise MetadataError(f"{os.fspath(source)}: {problems[0]}")
