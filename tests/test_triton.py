"""Triton model repository export (taidpt.serve.triton): the written config agrees with the ONNX file."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from taidpt.serve import pbtxt
from taidpt.serve.infer import main as infer_main
from taidpt.serve.metadata import read_onnx_metadata, write_sidecar
from taidpt.serve.triton import check_repository, main, write_repository
from taidpt.serve.triton_client import main as client_main
from test_batch_infer import photo_dir  # noqa: F401 - fixture
from test_infer import CLASSES, exported, latin1_dir  # noqa: F401 - fixture

ORT_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16"}


def parse_config(folder: Path) -> dict:
    return pbtxt.parse((folder / "config.pbtxt").read_text())


def test_onnxruntime_repository_matches_the_onnx_file(exported, tmp_path):
    _, model_path = exported
    assert main(["--onnx", str(model_path), "--repository", str(tmp_path / "repo"), "--max-batch", "32",
                 "--preferred-batch", "4,16", "--instances", "2"]) == 0
    folder = tmp_path / "repo" / "taidpt"
    config = parse_config(folder)
    assert pbtxt.one(config, "name") == "taidpt" and pbtxt.one(config, "platform") == "onnxruntime_onnx"
    assert pbtxt.one(config, "max_batch_size") == 32
    batching = pbtxt.one(config, "dynamic_batching")
    assert batching["preferred_batch_size"] == [4, 16] and pbtxt.one(batching, "max_queue_delay_microseconds") == 100
    assert pbtxt.one(pbtxt.one(config, "instance_group"), "count") == 2
    # Interface as onnxruntime sees the file (an independent reader): batch axis dropped from dims.
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    for kind, values in (("input", session.get_inputs()), ("output", session.get_outputs())):
        written = {e["name"][0]: e for e in config[kind]}
        assert list(written) == [v.name for v in values]
        for v in values:
            assert isinstance(v.shape[0], str), "the export's batch axis is dynamic"
            assert written[v.name]["dims"] == list(v.shape[1:])
            assert pbtxt.one(written[v.name], "data_type") == ORT_TYPES[v.type]
    outputs = {e["name"][0]: e for e in config["output"]}
    assert outputs["scores"]["dims"] == [len(CLASSES)]
    assert pbtxt.one(outputs["scores"], "label_filename") == "labels.txt"
    assert (folder / "labels.txt").read_text().splitlines() == CLASSES
    assert (folder / "1" / "model.onnx").read_bytes() == model_path.read_bytes()
    params = {p["key"][0]: pbtxt.one(p["value"][0], "string_value") for p in config["parameters"]}
    assert json.loads(params["taidpt.classnames"]) == CLASSES and json.loads(params["taidpt.threshold"]) == 0.05
    warm = pbtxt.one(config, "model_warmup")
    assert pbtxt.one(warm, "batch_size") == 1
    feed = pbtxt.one(warm, "inputs")
    assert pbtxt.one(feed, "key") == "images"
    assert feed["value"][0]["dims"] == [3, 64, 64]
    assert pbtxt.one(feed["value"][0], "zero_data") is True
    assert check_repository(folder, model_path) == []
    assert_parses_as_triton_model_config(folder)


def test_warmup_can_be_left_out_and_is_checked(exported, tmp_path, capsys):
    _, model_path = exported
    assert main(["--onnx", str(model_path), "--repository", str(tmp_path / "repo"), "--no-warmup"]) == 0
    folder = tmp_path / "repo" / "taidpt"
    assert "model_warmup" not in parse_config(folder)
    write_repository(model_path, tmp_path / "repo")
    text = (folder / "config.pbtxt").read_text()
    assert 'key: "images"' in text
    (folder / "config.pbtxt").write_text(text.replace('key: "images"', 'key: "pixels"'))
    assert main(["--onnx", str(model_path), "--repository", str(tmp_path / "repo"), "--check"]) == 1
    assert "model_warmup 'zeros' feeds ['pixels']" in capsys.readouterr().err


def parse_with_tritons_schema(folder: Path):
    """config.pbtxt parsed into Triton's own ModelConfig (tritonclient[grpc]), or None when that is not installed."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return None
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def assert_parses_as_triton_model_config(folder: Path) -> None:
    """Parse config.pbtxt with Triton's own ModelConfig schema when it is installed."""
    config = parse_with_tritons_schema(folder)
    assert config is None or (config.name == folder.name and config.input and config.output)


def test_config_parses_with_tritons_schema(exported, tmp_path):
    pytest.importorskip("tritonclient.grpc.model_config_pb2",
                        reason="Triton's ModelConfig schema ships with tritonclient[grpc] (the [triton] extra)")
    _, model_path = exported
    config = parse_with_tritons_schema(write_repository(model_path, tmp_path / "repo", max_batch=8, preferred=[4]))
    assert config.max_batch_size == 8 and list(config.dynamic_batching.preferred_batch_size) == [4]
    warm = config.model_warmup[0]
    assert warm.batch_size == 1 and list(warm.inputs["images"].dims) == [3, 64, 64] and warm.inputs["images"].zero_data
    assert config.parameters["taidpt.classnames"].string_value == json.dumps(CLASSES)


def test_check_finds_a_tampered_repository(exported, tmp_path, capsys):
    _, model_path = exported
    folder = write_repository(model_path, tmp_path, name="m")
    text = (folder / "config.pbtxt").read_text()
    (folder / "config.pbtxt").write_text(text.replace(f"dims: [ {len(CLASSES)} ]", "dims: [ 7 ]", 1))
    (folder / "labels.txt").write_text("\n".join(reversed(CLASSES)) + "\n")
    problems = check_repository(folder, model_path)
    assert any("dims [7]" in p for p in problems) and any("labels.txt" in p for p in problems)
    assert main(["--onnx", str(model_path), "--repository", str(tmp_path), "--name", "m", "--check"]) == 1
    assert "DIFFERS" in capsys.readouterr().err


def test_tensorrt_repository_and_engine_profile(exported, tmp_path, capsys):
    _, model_path = exported
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"not a real engine: Triton is not run here")
    write_sidecar(engine, read_onnx_metadata(model_path), {"profile": {"input": "images", "max": [32, 3, 64, 64]}})
    repo = tmp_path / "repo"
    assert main(["--onnx", str(model_path), "--repository", str(repo), "--backend", "tensorrt", "--engine",
                 str(engine)]) == 2
    assert "profile maximum 32" in capsys.readouterr().err
    assert main(["--onnx", str(model_path), "--repository", str(repo), "--backend", "tensorrt", "--engine",
                 str(engine), "--max-batch", "32", "--preferred-batch", "16,32"]) == 0
    config = parse_config(repo / "taidpt")
    assert pbtxt.one(config, "platform") == "tensorrt_plan"
    assert pbtxt.one(pbtxt.one(config, "instance_group"), "kind") == "KIND_GPU"
    assert (repo / "taidpt" / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert check_repository(repo / "taidpt", model_path) == []


@pytest.mark.parametrize("args, message", [
    (["--backend", "tensorrt"], "needs --engine"),
    (["--max-batch", "8", "--preferred-batch", "4,16"], "between 1 and --max-batch 8"),
    (["--engine", "x.plan"], "only used with --backend tensorrt"),
])
def test_bad_requests_are_one_line_errors(exported, tmp_path, capsys, args, message):
    _, model_path = exported
    assert main(["--onnx", str(model_path), "--repository", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def _tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.parametrize("name", ["../escaped", "..", ".", "ABSOLUTE", "a/b", "", "a\\b", ".hidden", "sp ace"])
@pytest.mark.parametrize("check", [False, True])
def test_model_names_that_are_not_one_folder_are_refused(exported, tmp_path, capsys, name, check):
    """Such a name used to put config.pbtxt, labels.txt and 1/model.onnx beside (or above) the repository."""
    _, model_path = exported
    area = tmp_path / "area"
    (area / "repo").mkdir(parents=True)
    name = str(tmp_path / "absolute") if name == "ABSOLUTE" else name
    before = _tree(tmp_path)
    rc = main(["--onnx", str(model_path), "--repository", str(area / "repo"), "--name", name,
               *(["--check"] if check else [])])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--name" in err[0] and "expected one folder name" in err[0], err
    assert _tree(tmp_path) == before


def test_version_must_be_positive(exported, tmp_path, capsys):
    _, model_path = exported
    assert main(["--onnx", str(model_path), "--repository", str(tmp_path / "repo"), "--version", "0"]) == 2
    assert "--version 0: expected a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()


def test_without_triton_batching_dims_keep_the_batch_axis(exported, tmp_path):
    _, model_path = exported
    folder = write_repository(model_path, tmp_path, max_batch=0, preferred=())
    config = parse_config(folder)
    assert config["input"][0]["dims"] == [-1, 3, 64, 64] and "dynamic_batching" not in config
    assert check_repository(folder, model_path) == []


def test_pbtxt_round_trip_and_errors():
    message = {"name": "m", "n": 3, "x": 0.5, "on": True, "kind": pbtxt.Enum("KIND_GPU"), "dims": [1, -1],
               "nested": {"s": 'quote " and \\ backslash'}, "items": [{"a": 1}, {"a": 2}],
               "params": pbtxt.Repeated([{"key": "k1"}, {"key": "k2"}])}
    parsed = pbtxt.parse("# header\n" + pbtxt.render(message))
    assert parsed["name"] == ["m"] and parsed["n"] == [3] and parsed["x"] == [0.5] and parsed["on"] == [True]
    assert isinstance(pbtxt.one(parsed, "kind"), pbtxt.Enum) and parsed["dims"] == [1, -1]
    assert pbtxt.one(pbtxt.one(parsed, "nested"), "s") == 'quote " and \\ backslash'
    assert [pbtxt.one(i, "a") for i in parsed["items"]] == [1, 2]
    assert [pbtxt.one(i, "key") for i in parsed["params"]] == ["k1", "k2"]
    assert pbtxt.parse('a: { b: 1 }, c [ 2, 3 ]') == {"a": [{"b": [1]}], "c": [2, 3]}
    for bad in ("a: {", "a b", "a: 1 }", "{"):
        with pytest.raises(pbtxt.PbtxtError):
            pbtxt.parse(bad)


# ----------------------------------------------------------------------------- the client
def fake_tritonclient(*folders: Path) -> types.ModuleType:
    """A stand-in for ``tritonclient.http`` serving each model folder's model.onnx with onnxruntime and
    its config's parameters as Triton's HTTP endpoint returns them."""
    configs = {f.name: parse_config(f) for f in folders}
    sessions = {f.name: ort.InferenceSession(str(f / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
                for f in folders}
    requests: list[tuple] = []

    class InferInput:
        def __init__(self, name, shape, datatype):
            self.name, self.shape, self.datatype = name, shape, datatype

        def set_data_from_numpy(self, array):
            assert list(array.shape) == self.shape
            assert array.dtype == {"FP32": np.float32, "INT64": np.int64}[self.datatype]
            self.array = array

    class InferRequestedOutput:
        def __init__(self, name):
            self.name = name

    class Reply:
        def __init__(self, values):
            self.values = values

        def as_numpy(self, name):
            return self.values[name]

    class InferenceServerClient:
        def __init__(self, url):
            self.url = url

        def is_model_ready(self, model):
            return model in configs and model == pbtxt.one(configs[model], "name")

        def get_model_config(self, model):
            return {"name": model, "parameters": {p["key"][0]: {"string_value": pbtxt.one(p["value"][0], "string_value")}
                                                  for p in configs[model]["parameters"]}}

        def infer(self, model, inputs, outputs):
            requests.append((model, [i.name for i in inputs], inputs[0].shape))
            names = [o.name for o in outputs]
            return Reply(dict(zip(names, sessions[model].run(names, {i.name: i.array for i in inputs}))))

    module = types.ModuleType("tritonclient.http")
    module.InferInput, module.InferRequestedOutput = InferInput, InferRequestedOutput
    module.InferenceServerClient, module.requests = InferenceServerClient, requests
    return module


@pytest.mark.parametrize("which", ["photos", "latin1_names"])
def test_client_example_against_a_stand_in_server(exported, photo_dir, latin1_dir, tmp_path, monkeypatch, capsys,
                                                  which):
    """The client's rows match taidpt.serve.infer's, paths included (a latin-1 name escaped the same way)."""
    _, model_path = exported
    folder = write_repository(model_path, tmp_path / "repo")
    fake = fake_tritonclient(folder)
    monkeypatch.setitem(sys.modules, "tritonclient", types.ModuleType("tritonclient"))
    monkeypatch.setitem(sys.modules, "tritonclient.http", fake)
    images = photo_dir / "d0" if which == "photos" else latin1_dir
    assert client_main(["--model-name", "taidpt", "--images", str(images), "--batch-size", "4"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert fake.requests and all(r[1] == ["images"] and r[2][1:] == [3, 64, 64] for r in fake.requests)
    assert infer_main(["--model", str(model_path), "--images", str(images), "--output", str(tmp_path / "ref.json"),
                       "--no-progress"]) == 0
    written = json.loads((tmp_path / "ref.json").read_text())
    reference = {r["path"]: r for r in written["images"]}
    assert [r["path"] for r in rows if "error" in r] == [s["path"] for s in written["skipped"]]
    rows = [r for r in rows if "error" not in r]
    assert {r["path"] for r in rows} == set(reference)
    for row in rows:
        assert row["labels"] == reference[row["path"]]["labels"]
        np.testing.assert_allclose(list(row["scores"].values()), list(reference[row["path"]]["scores"].values()),
                                   atol=1e-6)


def test_client_without_tritonclient_says_how_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "tritonclient", None)
    monkeypatch.setitem(sys.modules, "tritonclient.http", None)
    assert client_main(["--images", str(tmp_path)]) == 2
    assert "pip install 'tritonclient[http]'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a real server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tritonserver") is None, reason="tritonserver is not installed on this machine "
                    "(NVIDIA ships it in the nvcr.io/nvidia/tritonserver containers)")
def test_real_tritonserver_serves_the_repository(exported, tmp_path):
    """Start tritonserver on the repository and compare an HTTP (KServe v2 JSON) request with onnxruntime."""
    _, model_path = exported
    write_repository(model_path, tmp_path / "repo", instance_kind="cpu")
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    server = subprocess.Popen(["tritonserver", "--model-repository", str(tmp_path / "repo"), f"--http-port={http}",
                               f"--grpc-port={grpc}", f"--metrics-port={metrics}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{http}/v2"
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{base}/models/taidpt/ready", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline and server.poll() is None, "tritonserver did not load the model"
            time.sleep(1)
        x = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
        body = {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
                "outputs": [{"name": "scores"}]}
        req = urllib.request.Request(f"{base}/models/taidpt/infer", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        reply = json.loads(urllib.request.urlopen(req, timeout=30).read())
        served = np.asarray(reply["outputs"][0]["data"], dtype=np.float32).reshape(3, len(CLASSES))
        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(served, session.run(["scores"], {"images": x})[0], atol=1e-5)
    finally:
        server.terminate()
        server.wait(timeout=30)
