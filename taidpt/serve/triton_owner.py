"""Which model owns a folder of a Triton repository, so that one write never replaces another model.

``python -m export.triton`` leaves ``taidpt-owner.json`` (model name, part, export id) in every model folder
it writes; Triton ignores it. A write refuses a folder owned by another model, part or export, or an
unmarked non-empty one, unless ``--replace``, and never writes through a symbolic link;
:func:`ownership_problems` reports the same for ``--check``. See docs/deployment.md, section 6.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from taidpt.serve.export_unit import file_sha256
from taidpt.serve.metadata import ModelMetadata

OWNER_FILE = "taidpt-owner.json"


class OwnershipError(ValueError):
    """A folder of the repository belongs to another model or is a symbolic link; the message is one line."""


@dataclass(frozen=True)
class Owner:
    """Who wrote a model folder: the ``--name`` of the write, the part, and the export's identity."""

    model: str
    part: str
    export: str
    source: str = ""

    def describe(self) -> str:
        part = "" if self.part == "model" else f"the {self.part} part of "
        return f"{part}model {self.model!r} (from {self.source or 'an unknown file'}, export {self.export[:19]})"


def export_identity(onnx_path: Path, meta: ModelMetadata) -> str:
    """The export's ``export_id``, or ``sha256:<hex>`` of the ONNX file when it has none."""
    return meta.export_id or "sha256:" + file_sha256(onnx_path)


def read_owner(folder: Path) -> Owner | None:
    """The marker of ``folder``, or None when it has none (or an unreadable one)."""
    try:
        data = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
        return Owner(str(data["model"]), str(data["part"]), str(data["export"]), str(data.get("source", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_owner(folder: Path, owner: Owner) -> None:
    """Leave the marker in ``folder``."""
    payload = {"model": owner.model, "part": owner.part, "export": owner.export, "source": owner.source,
               "written_by": "python -m export.triton"}
    (folder / OWNER_FILE).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def collision(folder: Path, owner: Owner) -> str | None:
    """Why writing ``owner``'s model into ``folder`` would replace something else (None when it would not)."""
    if not folder.exists():
        return None
    if not folder.is_dir():
        return f"{folder}: exists and is not a folder"
    found = read_owner(folder)
    if found is None:
        return None if not any(folder.iterdir()) else f"{folder}: exists and has no {OWNER_FILE} (not written by " \
                                                       f"python -m export.triton)"
    if (found.model, found.part) != (owner.model, owner.part):
        return f"{folder}: belongs to {found.describe()}"
    if found.export != owner.export:
        return f"{folder}: was written for another export ({found.source or 'unknown file'}, {found.export[:19]})"
    return None


def refuse_links(repository: Path, paths: Iterable[Path]) -> None:
    """:class:`OwnershipError` when one of ``paths`` (or a folder between it and ``repository``) is a link."""
    root = Path(os.path.abspath(repository))
    for path in paths:
        here = Path(os.path.abspath(path))
        while here != root and root in here.parents:
            if here.is_symlink():
                raise OwnershipError(f"{here}: is a symbolic link; refusing to write through it (replace it with "
                                     f"a real folder or file)")
            here = here.parent


def claim(repository: Path, folders: dict[Path, Owner], files: Iterable[Path], replace: bool) -> None:
    """Refuse (one line, before anything is written) links among ``files`` and, unless ``replace``, a folder
    of ``folders`` that another model or export owns."""
    refuse_links(repository, [*folders, *files])
    for folder, owner in folders.items():
        problem = collision(folder, owner)
        if problem and not replace:
            raise OwnershipError(f"{problem}; writing {owner.describe()} would replace it: pass --replace to "
                                 f"overwrite it, or choose another --name")


def ownership_problems(folders: dict[Path, Owner]) -> list[str]:
    """``--check``: each folder whose marker names another model, part or export (no marker: not reported)."""
    problems = []
    for folder, owner in folders.items():
        found = read_owner(folder)
        if found is not None and (problem := collision(folder, owner)):
            problems.append(f"{problem}, not {owner.describe()}")
    return problems
