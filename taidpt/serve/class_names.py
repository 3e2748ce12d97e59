"""The one check of a user-given class list, for the CLIs (``--classes``, ``--class-list``) and the Python API.

Names must be non-blank ``str`` without control (Cc) or invisible format (Cf) characters, and no two may
read the same to the model: they are compared as the prompt sees them (underscores as spaces, then
:func:`taidpt.serve.tokenizer.clean_text`). The class list stored in a model is not checked here.
The rules: docs/robustness.md.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Iterable, Sequence

from taidpt.serve.tokenizer import clean_text

INVISIBLE_CATEGORIES = {"Cc": "a control character", "Cf": "an invisible format character"}


class ClassNameError(ValueError):
    """A class list breaks the rules above; the message is one line naming where."""


def model_reading(name: str) -> str:
    """How the model reads a class name: underscores as spaces (as prompts are written), then the
    tokenizer's cleaning (case, whitespace, HTML entities)."""
    return clean_text(name.replace("_", " "))


def _bad_character(name: str) -> str:
    """What is wrong with the first control or invisible character of ``name`` ("" when none)."""
    for ch in name:
        kind = INVISIBLE_CATEGORIES.get(unicodedata.category(ch))
        if kind:
            return f"{kind} (U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')})"
    return ""


def check_class_name(name: Any, place: str) -> str:
    """``name`` when it is a usable class name, else :class:`ClassNameError` (or ``TypeError`` for a
    value that is not a ``str``) naming ``place``."""
    if not isinstance(name, str):
        raise TypeError(f"{place}: expected a class name (str), got {type(name).__name__} {name!r}")
    if not name.strip():
        raise ClassNameError(f"{place}: expected a class name, found an empty or blank one")
    bad = _bad_character(name)
    if bad:
        raise ClassNameError(f"{place}: the class name {name!r} holds {bad}; remove it")
    return name


def validate_class_names(names: Iterable[Any], where: str = "classes",
                         places: Sequence[str] | None = None) -> list[str]:
    """The names of a user-given class list, checked (see the module docstring); ``where`` names the
    list, ``places[i]`` where name ``i`` came from (default ``where[i]``, e.g. ``classes[2]``)."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
        raise TypeError(f"{where}: expected a list of class names, got {type(names).__name__}")
    names = list(names)
    if not names:
        raise ClassNameError(f"{where}: the class list is empty")
    places = list(places) if places else [f"{where}[{i}]" for i in range(len(names))]
    seen: dict[str, str] = {}
    for name, place in zip(names, places):
        key = model_reading(check_class_name(name, place))
        if not key:
            raise ClassNameError(f"{place}: the class name {name!r} reads as nothing to the model "
                                 f"(after HTML entities and whitespace)")
        if key in seen:
            first = seen[key]
            same = (f"class {name!r} is listed twice" if first == name else
                    f"{first!r} and {name!r} are one class to the model (both read {key!r}); list it once")
            raise ClassNameError(f"{where}: {same}")
        seen[key] = name
    return names


__all__ = ["ClassNameError", "check_class_name", "model_reading", "validate_class_names"]
