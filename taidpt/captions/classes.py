"""Class lists with per-class synonym lists, the vocabulary of caption labelling.

A class list names the C classes of a target dataset in the order of its label
columns (VOC2007: the 20 VOC categories; COCO 2014: category-id order, as in
``instances_val2014.json``; NUS-WIDE: the order of ``Concepts81.txt``) and, for
each class, the words and phrases that mark it in a caption. The built-in lists
are the reference TaI-DPT lists, stored as data files under
``taidpt/data/classes``; users can pass their own as a json or text file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["ClassList", "available_class_lists", "load_class_list"]

_ALIASES = {
    "voc": "voc2007",
    "coco": "coco2014",
    "nus-wide": "nuswide",
    "nus_wide": "nuswide",
}


@dataclass(frozen=True)
class ClassList:
    """The classes of a dataset and the synonyms that mark each class in a sentence.

    ``names[i]`` is the class name used in prompts and templates; ``synonyms[i]``
    starts with ``names[i]`` and lists further words or phrases for class ``i``.
    """

    dataset: str
    names: tuple[str, ...]
    synonyms: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        # Accept lists from callers but store tuples, so the object stays hashable.
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "synonyms", tuple(tuple(s) for s in self.synonyms))
        if not self.names:
            raise ValueError(f"class list {self.dataset!r} has no classes")
        if len(self.names) != len(self.synonyms):
            raise ValueError(
                f"class list {self.dataset!r}: {len(self.names)} names but "
                f"{len(self.synonyms)} synonym lists"
            )
        seen: set[str] = set()
        for i, (name, syns) in enumerate(zip(self.names, self.synonyms)):
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"class list {self.dataset!r}: class {i} has an empty name")
            if name in seen:
                raise ValueError(f"class list {self.dataset!r}: duplicate class name {name!r}")
            seen.add(name)
            if not syns or syns[0] != name:
                raise ValueError(
                    f"class list {self.dataset!r}: the synonyms of class {i} ({name!r}) "
                    f"must start with the class name, got {list(syns)!r}"
                )
            for s in syns:
                if not isinstance(s, str) or not s.strip():
                    raise ValueError(
                        f"class list {self.dataset!r}: class {i} ({name!r}) has an empty synonym"
                    )

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_names(cls, dataset: str, names: list[str] | tuple[str, ...]) -> "ClassList":
        """A class list whose only synonym per class is the class name itself."""
        return cls(dataset=dataset, names=tuple(names), synonyms=tuple((n,) for n in names))


def _data_dir():
    return resources.files("taidpt").joinpath("data", "classes")


def available_class_lists() -> list[str]:
    """Names of the built-in class lists, the json files shipped in ``taidpt/data/classes``.

    Among them ``voc2007``, ``coco2014`` and ``nuswide`` (aliases ``voc``, ``coco``,
    ``nus-wide``).
    """
    return sorted(p.name[: -len(".json")] for p in _data_dir().iterdir() if p.name.endswith(".json"))


def load_class_list(name_or_path: str | Path) -> ClassList:
    """Load a built-in class list by name, or a class list file.

    Accepted: a built-in name (:func:`available_class_lists`: ``"voc2007"``,
    ``"coco2014"``, ``"nuswide"``, ...; aliases ``"voc"``, ``"coco"``,
    ``"nus-wide"``); a ``.json`` file in the built-in format
    ``{"dataset": str, "classes": [{"name": str, "synonyms": [str, ...]}, ...]}``;
    or a text file with one class per line, ``name[, synonym, ...]`` (blank lines
    and lines starting with ``#`` are skipped).
    """
    key = str(name_or_path).strip().lower()
    key = _ALIASES.get(key, key)
    builtin = available_class_lists()
    if key in builtin:
        ref = _data_dir().joinpath(f"{key}.json")
        return _parse_json(ref.read_text(encoding="utf-8"), f"<built-in {key}>", key)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        known = ", ".join(builtin + sorted(_ALIASES))
        raise ValueError(
            f"unknown class list {str(name_or_path)!r}: not a built-in list ({known}) "
            f"and no file exists at {path}"
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        return _parse_json(text, str(path), path.stem)
    return _parse_text(text, str(path), path.stem)


def _parse_json(text: str, where: str, default_dataset: str) -> ClassList:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}:{exc.lineno}: invalid json ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
        raise ValueError(
            f'{where}: expected an object {{"dataset": ..., "classes": [{{"name": ..., '
            f'"synonyms": [...]}}, ...]}}'
        )
    dataset = data.get("dataset", default_dataset)
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f'{where}: "dataset" must be a non-empty string')
    names: list[str] = []
    synonyms: list[tuple[str, ...]] = []
    for i, entry in enumerate(data["classes"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f'{where}: classes[{i}] must be an object with a string "name"')
        name = entry["name"].strip()
        syns = entry.get("synonyms", [name])
        if not isinstance(syns, list) or not all(isinstance(s, str) for s in syns):
            raise ValueError(f'{where}: classes[{i}] ({name!r}): "synonyms" must be a list of strings')
        syns = [s.strip() for s in syns]
        if name not in syns[:1]:
            # Keep the documented invariant: the name is always the first synonym.
            syns = [name] + [s for s in syns if s != name]
        names.append(name)
        synonyms.append(tuple(syns))
    try:
        return ClassList(dataset=dataset, names=tuple(names), synonyms=tuple(synonyms))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _parse_text(text: str, where: str, dataset: str) -> ClassList:
    names: list[str] = []
    synonyms: list[tuple[str, ...]] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if any(not p for p in parts):
            raise ValueError(
                f"{where}:{lineno}: empty entry; expected 'name[, synonym, ...]', got {raw!r}"
            )
        name = parts[0]
        if name in first_line:
            raise ValueError(
                f"{where}:{lineno}: class {name!r} already defined on line {first_line[name]}"
            )
        first_line[name] = lineno
        syns = [name] + [p for p in parts[1:] if p != name]
        names.append(name)
        synonyms.append(tuple(dict.fromkeys(syns)))
    if not names:
        raise ValueError(f"{where}: no classes found (expected one 'name[, synonym, ...]' per line)")
    return ClassList(dataset=dataset, names=tuple(names), synonyms=tuple(synonyms))
