"""Pickles read without running code: plain data, allow-listed callables, inert stand-ins, persistent ids."""

from __future__ import annotations

import builtins
import collections
import os
import pickle

import pytest

from taidpt.utils.safe_pickle import InertObject, UnsafePickleError, load_plain, load_restricted


class _WritesFile:
    """Unpickling this with ``pickle.loads`` creates ``path`` (through ``builtins.open``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return builtins.open, (self.path, "w")


class _RunsShell:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def _ops(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def test_plain_data_round_trips_and_classes_are_refused(tmp_path):
    data = {"ids": [1, 2, 3], "name": "coco", "pair": (1.5, None), "flag": True, "raw": b"\x00"}
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(data))
    assert load_plain(path) == data
    path.write_bytes(pickle.dumps(collections.OrderedDict(a=1)))
    with pytest.raises(UnsafePickleError, match="plain.pkl: refers to collections.OrderedDict"):
        load_plain(path)


@pytest.mark.parametrize("payload", [_WritesFile, _RunsShell])
def test_code_named_by_the_pickle_never_runs(tmp_path, payload):
    marker = tmp_path / "written"
    data = pickle.dumps({"weights": payload(str(marker))})
    for read in (lambda: load_plain(data, "evil.pkl"),
                 lambda: load_restricted(data, "evil.pkl", stand_in=lambda m, n: m.startswith("__torch__"))):
        with pytest.raises(UnsafePickleError, match=r"evil.pkl: refers to (io|builtins|posix|nt)\.(open|system)"):
            read()
    assert not marker.exists()


def test_stand_ins_record_state_and_import_nothing():
    # GLOBAL __torch__.model CLIP, EMPTY_TUPLE, NEWOBJ, {"a": 1}, BUILD: how TorchScript pickles a module
    data = b"\x80\x02" + _ops("__torch__.model", "CLIP") + b")\x81}X\x01\x00\x00\x00aK\x01sb."
    obj = load_restricted(data, "data.pkl", stand_in=lambda module, name: module.startswith("__torch__"))
    assert isinstance(obj, InertObject)
    assert obj.qualname == "__torch__.model.CLIP" and obj.state == {"a": 1}
    with pytest.raises(UnsafePickleError, match="data.pkl: refers to __torch__.model.CLIP; expected modules"):
        load_restricted(data, "data.pkl", expected="expected modules")


def test_allowed_names_map_to_the_callers_objects_which_the_pickle_cannot_modify():
    calls = []

    def rebuild(*args):
        calls.append(args)
        return "rebuilt"

    # GLOBAL torch._utils _rebuild_tensor_v2, (1, 2), REDUCE
    data = b"\x80\x02" + _ops("torch._utils", "_rebuild_tensor_v2") + b"K\x01K\x02\x86R."
    assert load_restricted(data, "x", allowed={("torch._utils", "_rebuild_tensor_v2"): rebuild}) == "rebuilt"
    assert calls == [(1, 2)]
    # GLOBAL ..., (None, {"_fn": 0}), BUILD: tries to swap the function behind the allowed name
    tamper = b"\x80\x02" + _ops("torch._utils", "_rebuild_tensor_v2") + b"N}X\x03\x00\x00\x00_fnK\x00s\x86b."
    with pytest.raises(UnsafePickleError, match="tries to modify torch._utils._rebuild_tensor_v2"):
        load_restricted(tamper, "x", allowed={("torch._utils", "_rebuild_tensor_v2"): rebuild})


def test_persistent_ids_go_to_the_callback_or_are_refused():
    data = b"\x80\x02(X\x07\x00\x00\x00storageX\x01\x00\x00\x000tQ."  # BINPERSID ("storage", "0")
    assert load_restricted(data, "x", persistent_load=lambda pid: ("loaded", pid)) == ("loaded", ("storage", "0"))
    with pytest.raises(UnsafePickleError, match="persistent ids"):
        load_plain(data)


def test_truncated_pickle_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "ids.pkl"
    path.write_bytes(pickle.dumps(list(range(100)))[:-20])
    with pytest.raises(ValueError, match="ids.pkl: not a readable pickle") as err:
        load_plain(path)
    assert "\n" not in str(err.value)
