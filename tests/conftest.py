"""Shared fixtures: small random CLIP models of the real architectures, offline hub, fixed threads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# open_clip retries the hub for ~45 s before failing on a pretrained tag; the tests never download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import taidpt  # noqa: E402,F401 - its telemetry opt-outs are set before any test imports onnxruntime or Ray


# The measured demo (its CLIP pretrained from a cold cache) is the longest test by far: it is collected
# first, so that with pytest-xdist (pyproject's addopts: -n auto --dist loadfile) one worker starts it
# at once while the others run the rest of the suite (with their torch threads shared out:
# cli_support.worker_threads).
LONGEST_FIRST = ("test_demo_experiment.py::test_full_demo_orders_methods_as_measured",)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.nodeid.rsplit("/", 1)[-1] not in LONGEST_FIRST)  # stable otherwise


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    import torch

    from cli_support import worker_threads

    torch.set_num_threads(worker_threads())
    yield


@pytest.fixture(scope="session")
def tiny_rn():
    """A randomly initialised TinyRN CLIP (ModifiedResNet + text transformer), frozen, eval mode."""
    import torch

    from taidpt.clip.loader import load_clip

    torch.manual_seed(0)
    model, _ = load_clip("TinyRN", "")
    return model


@pytest.fixture(scope="session")
def tiny_vit():
    import torch

    from taidpt.clip.loader import load_clip

    torch.manual_seed(0)
    model, _ = load_clip("TinyViT", "")
    return model


@pytest.fixture(scope="session")
def tiny_rn_openai_file(tmp_path_factory, tiny_rn):
    """The TinyRN weights saved as an OpenAI-format state dict (what the reference's clip.build_model reads)."""
    import torch

    from taidpt.clip.loader import openai_state_dict

    path = tmp_path_factory.mktemp("weights") / "tiny_rn_openai.pt"
    torch.save(openai_state_dict(tiny_rn), path)
    return path


# ----------------------------------------------------------------------------- train.py runs shared by test files
@pytest.fixture(scope="session")
def shared_voc(tmp_path_factory):
    """The VOC-format fixture every CLI test reads (never written to: copy it to change it)."""
    from cli_support import write_voc_fixture

    root = tmp_path_factory.mktemp("voc")
    write_voc_fixture(root)
    return root


@pytest.fixture(scope="session")
def voc_root(shared_voc):
    """The shared VOC fixture (a test module may define its own ``voc_root`` instead)."""
    return shared_voc


class FinishedRun:
    """A finished run: its folder, the arguments that made it (``args``, without ``--output-dir``), its process."""

    def __init__(self, path: Path, args: list[str], proc) -> None:
        self.path, self.args, self.proc = path, args, proc


@pytest.fixture(scope="session")
def finished_run(shared_voc, tiny_rn_openai_file, tmp_path_factory):
    """One finished 2-epoch TaI-DPT run (core engine) on the shared fixture, for every test that only
    needs "a finished run". Read-only: a test that writes into a run folder works on a copy
    (``cli_support.copy_run``)."""
    from cli_support import common, run_train

    tmp = tmp_path_factory.mktemp("finished")
    out = tmp / "run"
    args = ["--engine", "core", "--trainer", "TaIDPT", *common(shared_voc, tiny_rn_openai_file), "OPTIM.MAX_EPOCH", "2"]
    proc = run_train(["--output-dir", str(out), *args], tmp)
    return FinishedRun(out, args, proc)
