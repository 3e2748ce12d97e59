"""Reading pickles without running code from them: every pickle this project reads goes through here.

``pickle.load`` calls whatever a file names. :func:`load_plain` reads plain data only and refuses any class
or function reference; :func:`load_restricted` also resolves the names a caller allows, to the caller's own
objects or to inert stand-ins (:class:`InertObject`), and refuses every other name. Nothing named by the
file is ever imported or called.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

_PLAIN = "only plain data (numbers, strings, lists, dicts) is read from pickles here, never classes or functions"


class UnsafePickleError(ValueError):
    """The pickle names a class or function that this reader does not allow."""


class RejectedValueError(ValueError):
    """A caller's callback rejected what the pickle handed it; :func:`load_restricted` passes it on unchanged."""


class InertObject:
    """Stand-in for a class a pickle names: it keeps constructor arguments and state, and runs nothing."""

    qualname: ClassVar[str] = ""
    args: tuple = ()
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


class _AllowedCall:
    """An allowed callable as the pickle sees it: callable, but its attributes cannot be rewritten."""

    __slots__ = ("_fn", "_name")

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self._fn, self._name = fn, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(f"the pickle tries to modify {self._name}")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fh: io.BufferedIOBase, where: str, allowed: Mapping[tuple[str, str], Any],
                 stand_in: Callable[[str, str], bool] | None, persistent: Callable[[Any], Any] | None,
                 expected: str) -> None:
        super().__init__(fh)
        self.where, self.expected = where, expected
        self.allowed = {key: _AllowedCall(obj, ".".join(key)) if callable(obj) else obj for key, obj in allowed.items()}
        self.stand_in, self.persistent = stand_in, persistent
        self.stand_ins: dict[tuple[str, str], type[InertObject]] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in self.allowed:
            return self.allowed[key]
        if self.stand_in is not None and self.stand_in(module, name):
            if key not in self.stand_ins:
                self.stand_ins[key] = type(name, (InertObject,), {"qualname": f"{module}.{name}"})
            return self.stand_ins[key]
        raise UnsafePickleError(f"{self.where}: refers to {module}.{name}; {self.expected}")

    def persistent_load(self, pid: Any) -> Any:
        if self.persistent is None:
            raise UnsafePickleError(f"{self.where}: uses persistent ids; expected a pickle of plain data")
        return self.persistent(pid)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), for one-line error reports."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_restricted(
    data: bytes,
    where: str,
    *,
    allowed: Mapping[tuple[str, str], Any] | None = None,
    stand_in: Callable[[str, str], bool] | None = None,
    persistent_load: Callable[[Any], Any] | None = None,
    expected: str = _PLAIN,
) -> Any:
    """Unpickle ``data`` resolving only the names the caller allows; ``where`` names it in errors.

    Args:
        allowed: ``(module, name) -> object`` for names the pickle may use; callables are the
            caller's own implementations (the pickle cannot modify them). Non-callable objects
            must be immutable or made for this call, since the pickle can set their state.
        stand_in: ``(module, name) -> bool``; true names become inert :class:`InertObject`
            subclasses (their ``qualname`` is ``module.name``) whose instances record their state.
        persistent_load: called with each persistent id; without it persistent ids are refused.
        expected: what the file may refer to, for the error message on a refused name.

    Raises :class:`UnsafePickleError` for a refused name, the :class:`RejectedValueError` a
    callback raised, and ``ValueError`` (naming ``where``) for a truncated or malformed pickle.
    """
    unpickler = _RestrictedUnpickler(io.BytesIO(data), where, allowed or {}, stand_in, persistent_load, expected)
    try:
        return unpickler.load()
    except (UnsafePickleError, RejectedValueError):
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, UnicodeDecodeError, RecursionError, MemoryError) as exc:
        raise ValueError(f"{where}: not a readable pickle ({type(exc).__name__}: {first_line(exc)})") from None


def load_plain(source: bytes | str | os.PathLike, where: str | None = None) -> Any:
    """Unpickle plain data from ``source`` (the bytes, or a file path); ``where`` names it in errors.

    Raises :class:`UnsafePickleError` for any class or function reference and ``ValueError`` (with
    the file name) for a truncated or malformed pickle.
    """
    if isinstance(source, (bytes, bytearray)):
        data, where = bytes(source), where or "pickle data"
    else:
        where = where or str(source)
        data = Path(source).read_bytes()
    return load_restricted(data, where)


__all__ = ["InertObject", "RejectedValueError", "UnsafePickleError", "first_line", "load_plain", "load_restricted"]
