"""The subset of protobuf text format that Triton's ``config.pbtxt`` uses: :func:`render` and :func:`parse`.

Triton's ``ModelConfig`` protos ship with ``tritonclient``, which is not a dependency. Without the schema a
parser cannot know which fields repeat, so :func:`parse` maps every field name to the *list* of its values;
:func:`one` reads a singular field.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"#]+')


class Enum(str):
    """An enum value (rendered bare, e.g. ``TYPE_FP32``), as opposed to a quoted string."""


class Repeated(list):
    """Messages rendered as one ``name { ... }`` block each (the usual form of a map such as
    ``parameters``) rather than as a ``name [ {...}, {...} ]`` list."""


class PbtxtError(ValueError):
    """Malformed text; the message names the position."""


# ----------------------------------------------------------------------------- writing
def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot render {type(value).__name__} {value!r}")


def render(message: dict[str, Any], indent: int = 0) -> str:
    """Text format of ``message``: dict values are messages, lists of dicts repeated messages."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n{render(value, indent + 1)}{pad}}}")
        elif isinstance(value, Repeated):
            lines.extend(f"{pad}{key} {{\n{render(v, indent + 1)}{pad}}}" for v in value)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            blocks = [f"{pad}  {{\n{render(v, indent + 2)}{pad}  }}" for v in value]
            lines.append(f"{pad}{key} [\n" + ",\n".join(blocks) + f"\n{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


# ----------------------------------------------------------------------------- reading
def _tokens(text: str) -> Iterator[tuple[str, int]]:
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise PbtxtError(f"unexpected character {text[pos]!r} at offset {pos}")
        tok = m.group(0)
        if not tok.isspace() and not tok.startswith("#"):
            yield tok, pos
        pos = m.end()


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = list(_tokens(text))
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        if self.i >= len(self.toks):
            raise PbtxtError(f"unexpected end of text (expected {expected or 'a value'})")
        tok, pos = self.toks[self.i]
        if expected is not None and tok != expected:
            raise PbtxtError(f"expected {expected!r} at offset {pos}, found {tok!r}")
        self.i += 1
        return tok

    def message(self, closing: str | None) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        while self.peek() != closing:
            if self.peek() is None:
                raise PbtxtError(f"unexpected end of text (missing {closing!r})")
            key = self.take()
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise PbtxtError(f"expected a field name, found {key!r}")
            colon = self.peek() == ":"
            if colon:
                self.take(":")
            out.setdefault(key, []).extend(self.values(scalar_ok=colon))
            if self.peek() in (",", ";"):
                self.take()
        if closing is not None:
            self.take(closing)
        return out

    def values(self, scalar_ok: bool) -> list[Any]:
        tok = self.peek()
        if tok == "{":
            self.take("{")
            return [self.message("}")]
        if tok == "[":
            self.take("[")
            items: list[Any] = []
            while self.peek() != "]":
                items.extend(self.values(scalar_ok=True))
                if self.peek() == ",":
                    self.take(",")
            self.take("]")
            return items
        if not scalar_ok:
            raise PbtxtError(f"expected ':' or '{{' before {tok!r}")
        return [self.scalar(self.take())]

    @staticmethod
    def scalar(tok: str) -> Any:
        if tok.startswith('"'):
            return json.loads(tok)
        if tok in ("true", "false"):
            return tok == "true"
        try:
            return int(tok)
        except ValueError:
            pass
        try:
            return float(tok)
        except ValueError:
            return Enum(tok)


def parse(text: str) -> dict[str, list[Any]]:
    """Every field of the top-level message mapped to the list of its values (messages as dicts)."""
    return _Parser(text).message(None)


def one(message: dict[str, list[Any]], key: str, default: Any = None) -> Any:
    """The single value of field ``key`` (``default`` when absent); raises if it is repeated."""
    values = message.get(key, [])
    if len(values) > 1:
        raise PbtxtError(f"field {key!r} appears {len(values)} times")
    return values[0] if values else default
