"""``bash run.sh app`` on a (tiny) finished demo: the open-vocabulary export with label-free thresholds is
made, the examples are listed, and the page is served on the port given in ``APP_ARGS``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from taidpt.demo.experiment import DemoSettings, run_demo
from taidpt.serve.metadata import read_onnx_metadata

pytest.importorskip("gradio", reason="the app needs gradio (pip install -r requirements.txt)")
ROOT = Path(__file__).resolve().parents[1]


def test_run_sh_app_exports_the_demo_run_and_serves_it(tmp_path):
    tiny = DemoSettings("tiny", n_test_images=40, n_captions=300, data_seed=7,
                        pretrain=dict(steps=4, batch_size=16, pool_size=64, lr=3e-3, weight_decay=0.1,
                                      warmup_steps=1), measured=False)
    out = tmp_path / "demo"
    run_demo(out, seeds=(1,), cache_dir=tmp_path / "cache", progress=False, settings=tiny,
             extra_opts=["OPTIM.MAX_EPOCH", "1"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OUT": str(out), "APP_ARGS": f"--port {port}", "PYTHON": sys.executable,
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.Popen(["bash", "run.sh", "app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen, deadline = [], time.time() + 600
        while not any("taidpt app:" in line for line in seen):
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "".join(seen)[-3000:]
            assert time.time() < deadline, "".join(seen)[-3000:]
            seen.append(line)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            assert page.status == 200 and "taidpt tagger" in page.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    meta = read_onnx_metadata(out / "app" / "taidpt_demo.onnx")
    assert meta.open_model and meta.calibration.startswith("label-free") and meta.thresholds
    examples = (out / "app" / "examples.txt").read_text().split()
    assert len(examples) == 6 and all(Path(e).is_file() for e in examples)
    assert "export with open vocabulary and label-free thresholds" in "".join(seen)
