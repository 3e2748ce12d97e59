"""An export is one unit: the checks that refuse files of different exports used together.

They compare the export id every file of one ``python -m export.onnx`` run carries (``taidpt.export_id``),
the vocabulary hash ``M.onnx`` records (``taidpt.bpe_sha256``) and the engine size and sha256 of a TensorRT
sidecar, and return a one-line refusal or None; files that predate these facts get one warning.
See docs/robustness.md, "An export is one unit".
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)
_warned: set[str] = set()
ENGINE_FACTS = ("engine_bytes", "engine_sha256")


def new_export_id() -> str:
    """A fresh export id (uuid4, 32 hex digits)."""
    return uuid.uuid4().hex


def export_time() -> str:
    """Now, UTC, ISO 8601 to the second: the ``exported`` metadata of a new export."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _short(value: str) -> str:
    return f"{value[:12]}…" if value else "(none)"


def warn_once(key: str, message: str) -> None:
    """Log ``message`` as one warning line, once per ``key`` in this process."""
    if key not in _warned:
        _warned.add(key)
        log.warning("warning: %s", message)


def companion_mismatch(model: Path, export_id: str, bpe_sha256: str, parts: Mapping[Path, str],
                       bpe: Path) -> str | None:
    """The refusal when a companion of ``model`` comes from another export, else None.

    ``parts`` maps each companion graph to its export id; ``bpe`` is the vocabulary file. A set whose
    ids and vocabulary hash are all empty predates export ids: accepted, with one warning.
    """
    if not export_id and not bpe_sha256 and not any(parts.values()):
        warn_once(str(model.resolve()), f"{model} and its open-vocabulary files carry no export id (exported before "
                                        f"taidpt recorded one), so nothing shows that they belong together; "
                                        f"re-export it with python -m export.onnx --open-vocabulary")
        return None
    redo = "re-export the set with python -m export.onnx --open-vocabulary, or copy the files of one export together"
    for path, other in parts.items():
        if other != export_id:
            return (f"{path.name} belongs to another export than {model.name} (export id {_short(other)} vs "
                    f"{_short(export_id)}, in {model.parent}); {redo}")
    digest = file_sha256(bpe)
    if digest != bpe_sha256:
        return (f"{bpe.name} is not the vocabulary {model.name} was exported with (sha256 {_short(digest)} vs "
                f"{_short(bpe_sha256)}, in {model.parent}); {redo}")
    return None


def engine_facts(engine: str | os.PathLike) -> dict[str, Any]:
    """``{"engine_bytes", "engine_sha256"}`` of an engine file, for its sidecar."""
    return {"engine_bytes": os.path.getsize(engine), "engine_sha256": file_sha256(engine)}


def engine_mismatch(engine: Path, sidecar: Path, facts: Mapping[str, Any]) -> str | None:
    """The refusal when ``sidecar`` was written for another engine file than ``engine`` (size, then
    sha256), else None; a sidecar without these facts is accepted with one warning."""
    if not all(k in facts for k in ENGINE_FACTS):
        warn_once(str(engine.resolve()), f"{sidecar.name} does not record which engine file it describes (written "
                                         f"before taidpt recorded its size and sha256), so {engine.name} cannot be "
                                         f"checked against it; rewrite it with python -m export.tensorrt "
                                         f"--metadata-only")
        return None
    redo = "rebuild the engine with python -m export.tensorrt, or rewrite the sidecar with --metadata-only"
    size = os.path.getsize(engine)
    if size != facts["engine_bytes"]:
        return (f"{sidecar} was written for another engine than {engine} ({facts['engine_bytes']} bytes recorded, "
                f"the file has {size}); {redo}")
    digest = file_sha256(engine)
    if digest != facts["engine_sha256"]:
        return (f"{sidecar} was written for another engine than {engine} (sha256 {_short(str(facts['engine_sha256']))} "
                f"recorded, the file's is {_short(digest)}); {redo}")
    return None


__all__ = ["ENGINE_FACTS", "companion_mismatch", "engine_facts", "engine_mismatch", "file_sha256", "new_export_id",
           "warn_once"]
