"""Read the parameters and buffers of a TorchScript archive without running any of its code.

``torch.jit.load`` runs the code an archive carries (a ``__setstate__`` can write files), and OpenAI's
released CLIP ``.pt`` files are TorchScript archives. Here ``<top>/data.pkl`` is unpickled with
:func:`taidpt.utils.safe_pickle.load_restricted` (TorchScript classes become inert stand-ins, tensors are
rebuilt from the raw ``<top>/data/<key>`` storages, any other name is refused), and ``<top>/code/`` is read
as text only for the ``__parameters__`` / ``__buffers__`` lists, so the names are those of
``state_dict()``. ``<top>`` is whatever folder the writer chose. See docs/robustness.md, "Weights files".
"""

from __future__ import annotations

import ast
import collections
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from taidpt.utils.safe_pickle import InertObject, RejectedValueError, UnsafePickleError, first_line, load_restricted

_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}
_EXPECTED = "a TorchScript archive's data.pkl may name only TorchScript classes, storage types and tensor rebuilds"
_CLASS_LINE = re.compile(r"class\s+(\w+)\s*[(:]")
_DECLARATION_LINE = re.compile(r"\s+__(?:parameters|buffers)__\s*=\s*(\[.*\])\s*$")


class TorchScriptReadError(ValueError):
    """The archive's weights cannot be read; the message is one line naming the file.

    ``needs_code`` is true when the archive is intact but its state is not plain tensors (it names
    other classes or functions, or only its own code can rebuild it): ``torch.jit.load`` might read it.
    """

    def __init__(self, message: str, *, needs_code: bool = False) -> None:
        super().__init__(message)
        self.needs_code = needs_code


def is_torchscript_archive(path: str | Path) -> bool:
    """True for a zip with a top folder holding ``constants.pkl`` or ``code/`` (what ``torch.jit.save`` writes)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any((n.count("/") == 1 and n.endswith("/constants.pkl")) or (n.count("/") >= 2 and n.split("/")[1] == "code")
               for n in names)


def read_torchscript_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Return the state dict (parameters and buffers, dotted names) of the TorchScript archive at ``path``.

    Nothing the archive names is imported or called; raises :class:`TorchScriptReadError`.
    """
    where = str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            reader = _ArchiveReader(zf, where)
            root = load_restricted(zf.read(f"{reader.top}/data.pkl"), f"{where} (data.pkl)",
                                   allowed=reader.allowed_names(), stand_in=_is_torchscript_class,
                                   persistent_load=reader.storage, expected=_EXPECTED)
            declared = _declared_state(zf, reader.top, where)
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, RuntimeError) as exc:
        raise TorchScriptReadError(f"{where}: not a readable TorchScript archive ({type(exc).__name__}: "
                                   f"{first_line(exc)})") from None
    except ValueError as exc:
        raise TorchScriptReadError(first_line(exc), needs_code=isinstance(exc, UnsafePickleError)) from None
    state = _collect_tensors(root, declared) if isinstance(root, InertObject) else {}
    if not state:
        raise TorchScriptReadError(f"{where}: its module state holds no tensors that can be read without running "
                                   f"the archive's code", needs_code=True)
    return state


def _is_torchscript_class(module: str, name: str) -> bool:
    return module == "__torch__" or module.startswith("__torch__.")


def _keep_first(value: Any, *_rest: Any) -> Any:
    """``torch.jit._pickle`` helpers (type tags, typed lists) only pass their first argument through."""
    return value


class _ArchiveReader:
    """The storage records of one open archive, and the tensor rebuilds that view them."""

    def __init__(self, zf: zipfile.ZipFile, where: str) -> None:
        self.zf, self.where = zf, where
        self.top = _top_folder(zf, where)
        self.storages: dict[str, torch.Tensor] = {}
        if _read_text(zf, f"{self.top}/byteorder", "little") != "little":
            raise RejectedValueError(f"{where}: written on a big-endian machine; only little-endian archives are read")

    def allowed_names(self) -> dict[tuple[str, str], Any]:
        """Every global ``data.pkl`` may name, mapped to this reader's own objects."""
        allowed: dict[tuple[str, str], Any] = {("torch", name): dtype for name, dtype in _STORAGE_DTYPES.items()}
        for name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            allowed[("torch._utils", name)] = self.rebuild_tensor
        for name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            allowed[("torch._utils", name)] = self.rebuild_parameter
        for name in ("restore_type_tag", "build_intlist", "build_doublelist", "build_boollist", "build_tensorlist"):
            allowed[("torch.jit._pickle", name)] = _keep_first
        allowed[("collections", "OrderedDict")] = collections.OrderedDict
        return allowed

    def storage(self, pid: Any) -> torch.Tensor:
        """Persistent id ``('storage', dtype, key, location, numel[, None])`` -> the record as a flat tensor."""
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], torch.dtype) and isinstance(pid[2], str) and (len(pid) == 5 or pid[5] is None)):
            raise RejectedValueError(f"{self.where}: unexpected persistent id {str(pid)[:80]}; expected "
                             f"('storage', <storage type>, key, location, numel)")
        dtype, key = pid[1], pid[2]
        if key not in self.storages:
            self.storages[key] = self._read_record(key, dtype)
        if self.storages[key].dtype != dtype:
            raise RejectedValueError(f"{self.where}: storage record data/{key} is used with two dtypes")
        return self.storages[key]

    def _read_record(self, key: str, dtype: torch.dtype) -> torch.Tensor:
        name = f"{self.top}/data/{key}"
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise RejectedValueError(f"{self.where}: the storage record {name} is missing") from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        if info.file_size % itemsize:
            raise RejectedValueError(f"{self.where}: {name} holds {info.file_size} bytes, not whole {dtype} values")
        if info.file_size == 0:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(self.zf.read(info)), dtype=dtype)

    def rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
        """Our ``_rebuild_tensor(_v2)``: a strided view of a storage record, bounds checked."""
        if not isinstance(storage, torch.Tensor):
            raise RejectedValueError(f"{self.where}: a tensor is rebuilt from {type(storage).__name__}, "
                                     f"not a storage record")
        if metadata:
            raise RejectedValueError(f"{self.where}: tensors with conjugate or negative bits are not supported")
        size, stride = _int_tuple(size, self.where), _int_tuple(stride, self.where)
        offset = _int_tuple((offset,), self.where)[0]
        if len(size) != len(stride):
            raise RejectedValueError(f"{self.where}: a tensor has size {size} but stride {stride}")
        needed = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0
        if needed > storage.numel():
            raise RejectedValueError(f"{self.where}: a tensor of size {size} needs {needed} values; its storage holds "
                             f"{storage.numel()}")
        return storage.as_strided(size, stride, offset)

    def rebuild_parameter(self, data: Any, *_rest: Any) -> torch.Tensor:
        """Our ``_rebuild_parameter(_with_state)``: the parameter's tensor (gradient flags do not matter here)."""
        if not isinstance(data, torch.Tensor):
            raise RejectedValueError(f"{self.where}: a parameter is rebuilt from {type(data).__name__}, not a tensor")
        return data


def _int_tuple(values: Any, where: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or not all(type(v) is int and v >= 0 for v in values):
        raise RejectedValueError(f"{where}: tensor sizes, strides and offsets must be non-negative ints, "
                                 f"got {str(values)[:80]}")
    return tuple(values)


def _top_folder(zf: zipfile.ZipFile, where: str) -> str:
    tops = [n[: -len("/data.pkl")] for n in zf.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(tops) != 1:
        raise ValueError(f"{where}: expected one <folder>/data.pkl in the archive, found {len(tops)}")
    return tops[0]


def _read_text(zf: zipfile.ZipFile, name: str, default: str) -> str:
    try:
        return zf.read(name).decode("ascii", "replace").strip()
    except KeyError:
        return default


def _declared_state(zf: zipfile.ZipFile, top: str, where: str) -> dict[str, frozenset[str] | None]:
    """Qualified class name -> its parameter and buffer names, or None for a class that is not a module.

    Read from the ``class ...:`` and ``__parameters__ = [...]`` / ``__buffers__ = [...]`` lines of
    the archive's code files; the code itself is never compiled.
    """
    declared: dict[str, frozenset[str] | None] = {}
    prefix = f"{top}/code/"
    for name in zf.namelist():
        if not (name.startswith(prefix) and name.endswith(".py")):
            continue
        module, current = name[len(prefix):-3].replace("/", "."), None
        for line in zf.read(name).decode("utf-8", "replace").splitlines():
            if (match := _CLASS_LINE.match(line)) is not None:
                current = f"{module}.{match.group(1)}"
                declared[current] = None
            elif current is not None and (match := _DECLARATION_LINE.match(line)) is not None:
                declared[current] = (declared[current] or frozenset()) | _name_list(match.group(1), name, where)
    return declared


def _name_list(text: str, record: str, where: str) -> frozenset[str]:
    try:
        names = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{where}: {record} declares parameters or buffers as {text[:80]}; expected a list of names")
    return frozenset(names)


def _collect_tensors(root: InertObject, declared: dict[str, frozenset[str] | None]) -> dict[str, torch.Tensor]:
    """Walk the module tree depth first, keeping each module's declared tensors under dotted names.

    A class missing from the code files keeps every tensor attribute; a class the code defines
    without parameter lists is not a module and adds nothing (as in ``state_dict()``). A module
    with a custom ``__getstate__`` stores a state only its own code can interpret, so it is skipped.
    """
    state: dict[str, torch.Tensor] = {}
    stack: list[tuple[str, InertObject]] = [("", root)]
    seen: set[int] = set()
    while stack:
        prefix, obj = stack.pop()
        known, names = obj.qualname in declared, declared.get(obj.qualname)
        if id(obj) in seen or not isinstance(obj.state, dict) or (known and names is None):
            continue
        seen.add(id(obj))
        children = []
        for key, value in obj.state.items():
            if not isinstance(key, str):
                continue
            if isinstance(value, torch.Tensor) and (not known or key in names):
                state[prefix + key] = value
            elif isinstance(value, InertObject):
                children.append((f"{prefix}{key}.", value))
        stack.extend(reversed(children))
    return state


__all__ = ["TorchScriptReadError", "is_torchscript_archive", "read_torchscript_weights"]
