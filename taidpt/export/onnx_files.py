"""Writing ONNX files: weights in an external file past protobuf's 2 GB, and taidpt's ``metadata_props``.

The metadata keys are :class:`taidpt.serve.metadata.ModelMetadata`'s, the one definition the
serving side reads back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from taidpt.serve.metadata import ModelMetadata

TWO_GB = 2 ** 31


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


def write_props(model: Any, metadata: ModelMetadata) -> None:
    """Replace the ``metadata_props`` of a loaded ONNX model with ``metadata``'s."""
    del model.metadata_props[:]
    for key, value in metadata.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def set_metadata(path: str | os.PathLike, metadata: ModelMetadata, doc: str = "") -> None:
    """Write ``metadata_props`` (and producer fields) into an ONNX file in place, leaving weights untouched."""
    import onnx

    from taidpt import __version__

    model = onnx.load(str(path), load_external_data=False)
    write_props(model, metadata)
    model.producer_name = "taidpt"
    model.producer_version = __version__
    if doc:
        model.doc_string = doc
    onnx.save_model(model, str(path))
