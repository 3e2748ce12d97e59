"""Loading CLIP weights: OpenAI-format state dicts with inferred sizes, TorchScript, open_clip files, errors."""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
import warnings
import zipfile
from typing import Tuple

import pytest
import torch

from taidpt.clip.loader import (
    ClipLoadError,
    infer_openai_config,
    is_openai_state_dict,
    load_clip,
    normalize_backbone_name,
    openai_state_dict,
)


def _outputs(model):
    torch.manual_seed(123)
    x = torch.randn(2, 3, 64, 64)
    ids = torch.zeros(2, 77, dtype=torch.long)
    ids[:, 0], ids[0, 1:4], ids[0, 4], ids[1, 1], ids[1, 2] = 49406, torch.tensor([320, 1929, 530]), 49407, 320, 49407
    with torch.no_grad():
        return model.encode_image(x), model.encode_text(ids)


def test_openai_state_dict_sizes_are_inferred(tiny_rn):
    sd = openai_state_dict(tiny_rn)
    assert is_openai_state_dict(sd)
    cfg = infer_openai_config(sd)
    assert cfg["embed_dim"] == 64
    assert cfg["vision_cfg"]["layers"] == (1, 1, 1, 1)
    assert cfg["vision_cfg"]["width"] == 16
    assert cfg["vision_cfg"]["image_size"] == 64
    assert cfg["text_cfg"]["width"] == 64 and cfg["text_cfg"]["layers"] == 3 and cfg["text_cfg"]["heads"] == 1


def test_load_openai_format_file_reproduces_outputs(tiny_rn, tiny_rn_openai_file):
    model, info = load_clip("RN50", str(tiny_rn_openai_file))  # the name is overridden by the file
    assert info.source == "openai-state-dict"
    assert info.is_resnet and info.image_size == 64 and info.embed_dim == 64
    a, b = _outputs(tiny_rn), _outputs(model)
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[1], b[1], atol=1e-6)
    assert not any(p.requires_grad for p in model.parameters())


def test_load_wrapped_and_module_prefixed_state_dict(tmp_path, tiny_rn):
    sd = {"module." + k: v for k, v in openai_state_dict(tiny_rn).items()}
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": sd}, path)
    model, info = load_clip("RN50", str(path))
    assert torch.allclose(_outputs(model)[1], _outputs(tiny_rn)[1], atol=1e-6)


class _Tree(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _tree(state_dict):
    """Nested modules holding ``state_dict`` as buffers under the same dotted names."""
    root = _Tree()
    for name, tensor in state_dict.items():
        *parents, leaf = name.split(".")
        node = root
        for part in parents:
            if part not in node._modules:
                node.add_module(part, _Tree())
            node = node._modules[part]
        node.register_buffer(leaf, tensor)
    return root


def _scripted_archive(state_dict):
    """A TorchScript module whose state dict has OpenAI's dotted names, like OpenAI's released archives."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(_tree(state_dict))


def test_load_torchscript_archive(tmp_path, tiny_rn):
    path = tmp_path / "clip_archive.pt"
    _scripted_archive(openai_state_dict(tiny_rn)).save(str(path))
    model, info = load_clip("RN50", str(path))
    assert info.source == "torchscript"
    assert torch.allclose(_outputs(model)[0], _outputs(tiny_rn)[0], atol=1e-6)
    assert torch.allclose(_outputs(model)[1], _outputs(tiny_rn)[1], atol=1e-6)


class _WritesOnLoad(torch.nn.Module):
    """A module whose TorchScript ``__setstate__`` (run by ``torch.jit.load``) creates the file ``path``."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.written = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        mapped = torch.from_file(self.path, True, 4, dtype=torch.uint8)
        mapped.fill_(65)
        self.written = int(mapped.sum())


def test_torchscript_code_does_not_run_unless_allowed(tmp_path, tiny_rn):
    marker = tmp_path / "written_on_load"
    root = _tree(openai_state_dict(tiny_rn))
    root.add_module("payload", _WritesOnLoad(str(marker)))
    path = tmp_path / "RN50.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(root).save(str(path))
    assert not marker.exists()

    model, info = load_clip("RN50", str(path))  # the weights are read; the payload's code never runs
    assert info.source == "torchscript" and not marker.exists()
    assert torch.allclose(_outputs(model)[1], _outputs(tiny_rn)[1], atol=1e-6)

    load_clip("RN50", str(path), allow_torchscript_code=True)  # the opt-in runs it: the archive is a real threat
    assert marker.exists()


class _Reduces:
    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("payload", ["open", "system"])
def test_crafted_archive_pickle_is_refused(tmp_path, payload):
    marker = tmp_path / "written"
    call = _Reduces(open, str(marker), "w") if payload == "open" else _Reduces(os.system, f"touch {marker}")
    path = tmp_path / "RN50.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("RN50/data.pkl", pickle.dumps({"visual": call}, protocol=2))
        zf.writestr("RN50/constants.pkl", pickle.dumps((), protocol=2))
        zf.writestr("RN50/version", "3\n")
    refused = r"RN50.pt \(data.pkl\): refers to (io|builtins|posix|nt)\.(open|system)"
    with pytest.raises(ClipLoadError, match=refused) as err:
        load_clip("RN50", str(path))
    assert "\n" not in str(err.value) and "ALLOW_TORCHSCRIPT_CODE" in str(err.value)
    assert not marker.exists()


# --------------------------------------------------------------------------- OpenAI-layout archives by hand
_LEGACY_STORAGE = {torch.float16: "HalfStorage", torch.float32: "FloatStorage", torch.int64: "LongStorage"}


class _Module:
    """A TorchScript module as data.pkl holds it: class name and attribute dict."""

    def __init__(self, qualname: str) -> None:
        self.qualname, self.attrs, self.declared = qualname, {}, []


def _plain_ops(value) -> bytes:
    return pickle.dumps(value, protocol=2)[2:-1]  # without PROTO and STOP


def _pickle_ops(value, storages: dict) -> bytes:
    """Protocol-2 opcodes in the shape torch 1.7's TorchScript pickler wrote them."""
    if isinstance(value, _Module):
        module, name = value.qualname.rsplit(".", 1)
        return f"c{module}\n{name}\n".encode() + b")\x81" + _pickle_ops(value.attrs, storages) + b"b"
    if isinstance(value, dict):
        return b"}(" + b"".join(_pickle_ops(k, storages) + _pickle_ops(v, storages) for k, v in value.items()) + b"u"
    if isinstance(value, torch.Tensor):
        key, tensor = str(len(storages)), value.contiguous()
        storages[key] = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        pid = (b"(" + _plain_ops("storage") + f"ctorch\n{_LEGACY_STORAGE[tensor.dtype]}\n".encode()
               + _plain_ops(key) + _plain_ops("cpu") + _plain_ops(tensor.numel()) + b"tQ")
        return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + _plain_ops(0) + _plain_ops(tuple(tensor.shape))
                + _plain_ops(tensor.stride()) + b"\x89ccollections\nOrderedDict\n)RtR")
    return _plain_ops(value)


def _openai_style_archive(path, top: str, state_dict: dict, extra_attrs: dict) -> None:
    """Write ``state_dict`` as OpenAI's 2021 archives lay it out: own top folder, legacy storage names,
    constants.pkl, code/ declaring each module's parameters, no byteorder record. ``extra_attrs``
    (module path -> {name: tensor}) are plain tensor attributes, which ``state_dict()`` leaves out."""
    modules = {"": _Module("__torch__.model.CLIP")}
    for name, tensor in state_dict.items():
        *parents, leaf = name.split(".")
        for depth in range(1, len(parents) + 1):
            sub = ".".join(parents[:depth])
            if sub not in modules:
                modules[sub] = _Module(f"__torch__.model.Block{len(modules)}")
                modules[".".join(parents[:depth - 1])].attrs[parents[depth - 1]] = modules[sub]
        owner = modules[".".join(parents)]
        owner.attrs[leaf] = tensor
        owner.declared.append(leaf)
    for sub, attrs in extra_attrs.items():
        modules[sub].attrs.update(attrs)
    code = "".join(f"class {m.qualname.rsplit('.', 1)[1]}(Module):\n  __parameters__ = {m.declared!r}\n"
                   f"  __buffers__ = []\n  training : bool\n" for m in modules.values())
    storages: dict = {}
    data = b"\x80\x02" + _pickle_ops(modules[""], storages) + b"."
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/version", "3\n")
        zf.writestr(f"{top}/data.pkl", data)
        zf.writestr(f"{top}/code/__torch__/model.py", code)
        for key, raw in storages.items():
            zf.writestr(f"{top}/data/{key}", raw)
        zf.writestr(f"{top}/constants.pkl", pickle.dumps((), protocol=2))


@pytest.mark.parametrize("dtype,top", [(torch.float16, "RN50"), (torch.float32, "archive")])
def test_openai_layout_archive_is_read_without_torch_jit(tmp_path, tiny_rn, dtype, top):
    from taidpt.clip.torchscript_weights import read_torchscript_weights

    weights = {k: v.to(dtype) for k, v in openai_state_dict(tiny_rn).items()}
    sizes = {"input_resolution": torch.tensor(64), "context_length": torch.tensor(77),
             "vocab_size": torch.tensor(49408)}
    mask = {"attn_mask": torch.full((77, 77), float("-inf")).triu(1).to(dtype)}
    path = tmp_path / f"{top}.pt"
    _openai_style_archive(path, top, {**weights, **sizes},
                          {"transformer.resblocks.0": mask, "transformer.resblocks.1": mask})

    state = read_torchscript_weights(path)
    assert set(state) == set(weights) | set(sizes)  # the plain attn_mask attributes are not state
    assert all(torch.equal(state[k], v) and state[k].dtype == v.dtype for k, v in {**weights, **sizes}.items())

    plain = tmp_path / "plain.pt"
    torch.save(weights, plain)
    model, info = load_clip("RN50", str(path))
    reference, _ = load_clip("RN50", str(plain))
    assert info.source == "torchscript"
    assert all(torch.equal(a, b) for a, b in zip(_outputs(model), _outputs(reference)))


@pytest.fixture(scope="module")
def traced_fp16_archive(tmp_path_factory, tiny_rn):
    """A tiny CLIP in fp16 saved by torch.jit.save (as OpenAI shipped theirs), and its plain state dict."""
    model = copy.deepcopy(tiny_rn).half()
    ids = torch.zeros(1, 77, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (torch.zeros(1, 3, 64, 64, dtype=torch.half), ids), check_trace=False)
    folder = tmp_path_factory.mktemp("traced")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(traced, str(folder / "ViT-tiny.pt"))
    torch.save(openai_state_dict(model), folder / "plain.pt")
    return folder / "ViT-tiny.pt", folder / "plain.pt"


def test_traced_fp16_archive_matches_its_state_dict(traced_fp16_archive):
    from taidpt.clip.torchscript_weights import read_torchscript_weights

    path, plain = traced_fp16_archive
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        expected = torch.jit.load(str(path)).state_dict()
    state = read_torchscript_weights(path)
    assert list(state) == list(expected)
    assert all(torch.equal(state[k], v) and state[k].dtype == v.dtype for k, v in expected.items())
    assert state["visual.conv1.weight"].dtype == torch.float16

    model, info = load_clip("RN50", str(path))
    reference, _ = load_clip("RN50", str(plain))
    assert info.source == "torchscript"
    assert all(torch.equal(a, b) for a, b in zip(_outputs(model), _outputs(reference)))


def test_damaged_archives_are_one_line(tmp_path, traced_fp16_archive):
    path, _ = traced_fp16_archive
    raw = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ClipLoadError, match="cut.pt") as err:
        load_clip("RN50", str(cut))
    assert "\n" not in str(err.value)
    short, big = tmp_path / "short.pt", tmp_path / "big.pt"
    _copy_archive(path, short, {"ViT-tiny/data/1": lambda body: body[:2]})
    with pytest.raises(ClipLoadError, match="short.pt: a tensor of size .* needs .* values; its storage holds 1$"):
        load_clip("RN50", str(short))
    _copy_archive(path, big, {"ViT-tiny/byteorder": lambda body: b"big"})
    with pytest.raises(ClipLoadError, match="big.pt: written on a big-endian machine"):
        load_clip("RN50", str(big))


def _copy_archive(source, target, edits: dict) -> None:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            body = src.read(item)
            dst.writestr(item.filename, edits[item.filename](body) if item.filename in edits else body)


def test_open_clip_format_and_taidpt_format(tmp_path, tiny_rn):
    from taidpt.clip.loader import TINY_CONFIGS

    path = tmp_path / "with_cfg.pt"
    torch.save({"model_cfg": TINY_CONFIGS["TinyRN"], "state_dict": tiny_rn.state_dict()}, path)
    model, info = load_clip("TinyRN", str(path))
    assert info.source == "taidpt"
    assert torch.allclose(_outputs(model)[0], _outputs(tiny_rn)[0], atol=1e-6)


def test_safetensors_file(tmp_path, tiny_rn):
    from safetensors.torch import save_file

    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in openai_state_dict(tiny_rn).items()}, str(path))
    model, _ = load_clip("RN50", str(path))
    assert torch.allclose(_outputs(model)[1], _outputs(tiny_rn)[1], atol=1e-6)


def test_corrupt_safetensors_is_one_line_naming_the_file(tmp_path, tiny_rn):
    from safetensors.torch import save_file

    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in openai_state_dict(tiny_rn).items()}, str(good))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-1000])
    for path in (garbage, truncated):
        with pytest.raises(ClipLoadError, match=f"{path.name}: not a valid .safetensors file") as err:
            load_clip("RN50", str(path))
        assert "\n" not in str(err.value)


def test_errors_are_one_clear_line(tmp_path):
    with pytest.raises(ClipLoadError, match="unknown backbone 'RN5O'"):
        load_clip("RN5O", "")
    with pytest.raises(ClipLoadError, match="not found"):
        load_clip("RN50", str(tmp_path / "missing.pt"))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ClipLoadError, match="empty"):
        load_clip("RN50", str(empty))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ClipLoadError, match="cannot read CLIP weights"):
        load_clip("RN50", str(junk))
    bad = tmp_path / "bad.pt"
    torch.save({"text_projection": torch.zeros(2, 2)}, bad)
    with pytest.raises(ClipLoadError, match="not a loadable CLIP checkpoint"):
        load_clip("RN50", str(bad))
    with pytest.raises(ClipLoadError, match="no published weights"):
        load_clip("TinyRN", "openai")


def test_pretrained_tag_offline_fails_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ClipLoadError) as err:
        load_clip("RN50", "openai")
    assert "\n" not in str(err.value)
    assert "MODEL.BACKBONE.PRETRAINED" in str(err.value)


_NO_NETWORK_LOAD = """
import json, time
from taidpt.clip.loader import load_clip
start = time.monotonic()
try:
    load_clip("RN50", "openai")
    outcome = ("loaded", "")
except Exception as exc:
    outcome = (type(exc).__name__, str(exc))
print(json.dumps([*outcome, time.monotonic() - start]))
"""


def test_pretrained_tag_without_network_fails_fast(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")  # empty cache, hub refuses
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", _NO_NETWORK_LOAD], env=env, cwd=root, capture_output=True,
                          text=True, timeout=180)
    kind, message, seconds = json.loads(done.stdout.strip().splitlines()[-1])
    assert kind == "ClipLoadError" and "\n" not in message
    assert "cannot be reached" in message and "MODEL.BACKBONE.PRETRAINED to the local file path" in message
    assert seconds < 10
    assert "Retry" not in done.stdout + done.stderr


def test_pretrained_tag_loads_from_the_hub_cache(tmp_path, monkeypatch, tiny_rn):
    import huggingface_hub.constants
    import open_clip.factory
    import open_clip.pretrained
    from safetensors.torch import save_file

    from taidpt.clip.loader import TINY_CONFIGS

    cfg = {k: v for k, v in TINY_CONFIGS["TinyRN"].items() if k != "quick_gelu"}  # the tag brings QuickGELU
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "CachedRN", cfg)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "CachedRN",
                        {"openai": {"hf_hub": "taidpt-test/cached_rn.openai/", "quick_gelu": True}})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    revision = "0" * 40
    repo = tmp_path / "models--taidpt-test--cached_rn.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in openai_state_dict(tiny_rn).items()},
              str(repo / "snapshots" / revision / "open_clip_model.safetensors"))

    model, info = load_clip("CachedRN", "openai")
    assert info.source == "open_clip-tag"
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_outputs(model), _outputs(tiny_rn)))


def test_backbone_names():
    assert normalize_backbone_name("ViT-B/16") == "ViT-B-16"
    assert normalize_backbone_name("RN101") == "RN101"
