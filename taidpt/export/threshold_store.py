"""Store per-class thresholds in an exported model's metadata, leaving its graph and weights untouched.

An ONNX file is read without its external weight files, its ``metadata_props`` replaced
(``taidpt.thresholds``, ``taidpt.calibration``, ``taidpt.calibration_images``,
``taidpt.calibration_support``) and the file rewritten atomically
(:func:`taidpt.utils.atomic.atomic_write_bytes`): a reader, or a crash, sees either the old model or
the new one. Written elsewhere (``output``), the external weight files it names are copied beside
it. A TensorRT engine cannot hold metadata; its ``<engine>.json`` sidecar is rewritten instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Mapping

from taidpt.serve.metadata import MetadataError, ModelMetadata, read_sidecar, write_sidecar
from taidpt.serve.runtime import ENGINE_SUFFIXES
from taidpt.utils.atomic import atomic_write_bytes


def _with_thresholds(meta: ModelMetadata, thresholds: Mapping[str, float], calibration: str, images: int,
                     support: Mapping[str, int]) -> ModelMetadata:
    return meta.replace(thresholds=dict(thresholds), calibration=calibration, calibration_images=int(images),
                        calibration_support=dict(support))


def _external_locations(model: object) -> list[str]:
    from onnx.external_data_helper import uses_external_data

    found: list[str] = []
    for tensor in model.graph.initializer:  # type: ignore[attr-defined]
        if uses_external_data(tensor):
            location = next(e.value for e in tensor.external_data if e.key == "location")
            if location not in found:
                found.append(location)
    return found


def store_thresholds(model_path: str | os.PathLike, thresholds: Mapping[str, float], calibration: str,
                     output: str | os.PathLike | None = None, *, images: int = 0,
                     support: Mapping[str, int] | None = None) -> Path:
    """Write ``thresholds`` (class -> threshold on the merged logit), ``calibration`` (how they were
    chosen), the number of calibration ``images`` and each class's ``support`` (see
    :mod:`taidpt.export.thresholds`) into the model's metadata at ``output`` (default: the model itself);
    returns the path written."""
    import onnx

    source = Path(model_path)
    if source.suffix.lower() in ENGINE_SUFFIXES:
        if output is not None and Path(output) != source:
            raise MetadataError(f"--output: a TensorRT engine's thresholds go into its sidecar {source.name}.json; "
                                f"leave --output out")
        meta, facts = read_sidecar(source)
        write_sidecar(source, _with_thresholds(meta, thresholds, calibration, images, support or {}), facts)
        return source
    target = Path(output) if output is not None else source
    model = onnx.load(str(source), load_external_data=False)
    meta = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, source)
    new = _with_thresholds(meta, thresholds, calibration, images, support or {})
    for key, value in new.to_props().items():
        entry = next((p for p in model.metadata_props if p.key == key), None) or model.metadata_props.add()
        entry.key, entry.value = key, value
    if target.resolve().parent != source.resolve().parent:
        for rel in _external_locations(model):
            (target.parent / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.parent / rel, target.parent / rel)
    atomic_write_bytes(target, model.SerializeToString())
    return target
