"""The runners' structure: one table picks a method's runner, the caption and image runners are
siblings over one base, and a runner is given its process group (a process on its own: the trivial one)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from taidpt.engine.caption_runner import CaptionRunner
from taidpt.engine.distributed import (
    DistContext,
    all_gather_array,
    all_gather_ints,
    all_reduce_grads,
    all_reduce_sum,
    barrier,
    broadcast_float,
    main_process_first,
)
from taidpt.engine.image_runner import ImagePromptRunner
from taidpt.engine.runner import Runner
from taidpt.engine.runners import RUNNERS, runner_class
from taidpt.methods import Method, get_method, method_names, register
from taidpt.methods.registry import unregister
from test_train_cli import write_voc_fixture

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- which runner
def test_the_table_picks_each_registered_methods_runner():
    expected = {"TaIDPT": CaptionRunner, "ZeroshotCLIPDense": Runner, "DualCoOp": ImagePromptRunner,
                "CoOpMultiLabel": ImagePromptRunner}
    assert {name: runner_class(name) for name in method_names()} == expected
    assert runner_class("ZeroshotCLIP") is Runner  # aliases resolve
    for name in method_names():
        assert runner_class(name) is RUNNERS[get_method(name).trains_on]
        assert get_method(name).trains() == (runner_class(name) is not Runner)


def test_caption_and_image_runners_are_siblings_over_one_base():
    assert issubclass(CaptionRunner, Runner) and issubclass(ImagePromptRunner, Runner)
    assert not issubclass(ImagePromptRunner, CaptionRunner) and not issubclass(CaptionRunner, ImagePromptRunner)
    assert CaptionRunner.__bases__ == (Runner,) and ImagePromptRunner.__bases__ == (Runner,)


def test_image_methods_are_refused_a_process_group_in_one_place():
    for name in ("TaIDPT", "ZeroshotCLIPDense"):
        assert runner_class(name, distributed=True) is runner_class(name)
    with pytest.raises(ValueError, match="torchrun runs methods trained on captions .* run DualCoOp in one process"):
        runner_class("DualCoOp", distributed=True)


def test_a_method_trained_on_something_no_runner_takes_is_refused():
    class ToyAudio(Method):
        name, node, trains_on = "ToyAudio", "TOYAUDIO", "audio"

    register(ToyAudio)
    try:
        assert ToyAudio.trains() and not ToyAudio.trains_on_images()
        with pytest.raises(ValueError, match="ToyAudio trains on 'audio', which no runner takes"):
            runner_class("ToyAudio")
    finally:
        unregister("ToyAudio")


def _trains_on_reads(path: Path) -> list[int]:
    return [node.lineno for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Attribute) and node.attr == "trains_on"]


def test_generic_code_asks_the_method_instead_of_switching_on_trains_on():
    """Only the methods and the runner table (taidpt/engine/runners.py) read ``Method.trains_on``."""
    allowed = {"taidpt/engine/runners.py"}
    offenders = []
    for folder in ("taidpt", "trainers", "datasets", "export"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith("taidpt/methods/") and rel not in allowed:
                offenders += [f"{rel}:{line}" for line in _trains_on_reads(path)]
    assert not offenders, "trains_on read outside taidpt/methods/: " + ", ".join(offenders)


# ----------------------------------------------------------------------------- the process group
def test_the_trivial_group_runs_every_collective_as_the_identity():
    assert not dist.is_initialized()
    ctx = DistContext.single(CPU)
    assert ctx.is_main and ctx.is_local_main and not ctx.is_distributed and ctx.world_size == 1
    barrier(ctx)
    with main_process_first(ctx):
        pass
    assert all_gather_ints(ctx, 7) == [7]
    rows = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(all_gather_array(ctx, rows), rows)
    value = np.float64(41.5)
    assert broadcast_float(ctx, value) is value and broadcast_float(ctx, None) is None
    t = torch.tensor([1.5, 2.5])
    assert torch.equal(all_reduce_sum(ctx, t), t)
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.tensor([0.25, -1.0])
    all_reduce_grads(ctx, [p])
    assert p.grad.tolist() == [0.25, -1.0]


def zero_shot_cfg(root: Path, weights: Path, out: Path):
    from taidpt.engine.config import assemble_config, get_cfg_default

    opts = ["TRAINER.NAME", "ZeroshotCLIPDense", "OUTPUT_DIR", str(out), "SEED", "1", "USE_CUDA", "False",
            "DATASET.ROOT", str(root), "DATASET.CLASS_LIST", str(root / "classes.txt"),
            "MODEL.BACKBONE.NAME", "RN50", "MODEL.BACKBONE.PRETRAINED", str(weights), "INPUT.SIZE", "(64, 64)",
            "DATALOADER.TEST.BATCH_SIZE", "5", "DATALOADER.NUM_WORKERS", "0"]
    return assemble_config(get_cfg_default(), files=[str(ROOT / "configs/datasets/voc2007.yaml")], opts=opts)


def test_a_runner_alone_has_the_trivial_group_and_a_group_of_one_scores_the_same(tiny_rn_openai_file, tmp_path):
    """The gathered, block-wise evaluation of a (real, one-process) group equals the plain one."""
    root = tmp_path / "voc"
    write_voc_fixture(root)
    cfg = zero_shot_cfg(root, tiny_rn_openai_file, tmp_path / "run")
    alone = runner_class("ZeroshotCLIPDense")(cfg)
    assert alone.group == DistContext.single(CPU) and alone.device == CPU
    alone.build()
    plain = alone.score_test_set()

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        grouped = runner_class("ZeroshotCLIPDense", distributed=True)(cfg, group=DistContext.current())
        assert grouped.group.is_distributed
        grouped.build()
        gathered = grouped.score_test_set()
    finally:
        dist.destroy_process_group()
    for name in ("global_logits", "local_logits", "targets", "indices"):
        np.testing.assert_array_equal(getattr(gathered, name), getattr(plain, name))
    assert gathered.skipped == plain.skipped
