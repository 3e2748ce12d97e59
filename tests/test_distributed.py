"""Multi-process training and evaluation (taidpt.engine.distributed*, torchrun): the numbers of one process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from taidpt.engine.distributed import DistContext, launched_by_torchrun, shard_bounds, shard_sizes
from taidpt.engine.distributed_runner import gather_scored, sharded_train_step
from taidpt.evaluation.scoring import ScoredSet
from test_robustness import write_bad_images
from test_train_cli import common, write_voc_fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n, world", [(10, 3), (2, 3), (0, 2), (16, 2), (7, 1)])
def test_shards_are_contiguous_and_differ_by_at_most_one(n, world):
    bounds = [shard_bounds(n, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = shard_sizes(n, world)
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError):
        shard_bounds(n, world, world)


def test_launch_detection():
    assert launched_by_torchrun({"WORLD_SIZE": "2", "RANK": "0"})
    assert not launched_by_torchrun({"WORLD_SIZE": "1"}) and not launched_by_torchrun({})
    with pytest.raises(ValueError):
        launched_by_torchrun({"WORLD_SIZE": "two"})


def build_setup(classes: list[str], n_captions: int = 24, seed: int = 1):
    """A TinyRN TaI-DPT model, an in-memory caption feature store, labels and an SGD optimiser."""
    from taidpt.captions.features import CaptionFeatureStore
    from taidpt.clip.loader import load_clip
    from taidpt.networks.model import TaIDPTModel
    from taidpt.engine.caption_training import CaptionBatchEncoder

    torch.manual_seed(0)
    clip, _ = load_clip("TinyRN", "")
    torch.manual_seed(seed)
    model = TaIDPTModel(clip, classes)
    words = ["a dog", "two cats and a car", "a bus in the rain", "nothing here at all", "a person on a bike"]
    texts = [f"{words[i % len(words)]} number {i}" for i in range(n_captions)]
    ids = model.text.tokenize(texts)
    encoder = CaptionBatchEncoder(model, ids, CaptionFeatureStore.build(model, ids, progress=False), "cpu")
    labels = (torch.rand(n_captions, len(classes), generator=torch.Generator().manual_seed(seed)) < 0.4).float()
    optimizer = torch.optim.SGD(model.prompt_learner.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    return model, encoder, labels, optimizer


@pytest.fixture
def single_process_group(tmp_path):
    """A real gloo process group of one process (the collectives run, trivially)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield DistContext.current()
    finally:
        dist.destroy_process_group()


def test_sharded_step_of_one_process_is_the_plain_step(single_process_group):
    from taidpt.engine.caption_training import train_step

    classes = ["dog", "cat", "car", "bus"]
    (m1, e1, labels, o1), (m2, e2, _, o2) = build_setup(classes), build_setup(classes)
    for step in range(3):
        idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(step))[:10]
        batch = {"index": idx, "label": labels[idx]}
        ref = train_step(m1, e1, batch, o1, "double_ranking")
        got = sharded_train_step(m2, e2, batch, o2, "double_ranking", single_process_group)
        assert got == pytest.approx(ref, rel=1e-6)
        for p1, p2 in zip(m1.prompt_learner.parameters(), m2.prompt_learner.parameters()):
            torch.testing.assert_close(p2, p1, rtol=0, atol=1e-6)


def test_gathered_scores_name_skipped_images_in_order(single_process_group):
    scored = ScoredSet(np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32), np.ones((2, 3), np.int8),
                       np.array([1, 3]))
    paths = [f"img{i}.jpg" for i in range(5)]
    merged = gather_scored(single_process_group, scored, 0, 5, 3, paths)
    assert merged.indices.tolist() == [1, 3] and merged.skipped == ["img0.jpg", "img2.jpg", "img4.jpg"]
    empty = gather_scored(single_process_group, None, 0, 2, 3, paths)
    assert empty.global_logits.shape == (0, 3) and empty.skipped == ["img0.jpg", "img1.jpg"]


# ----------------------------------------------------------------------------- real process groups
def torchrun(args: list[str], nproc: int, tmp_path: Path, executable: list[str] | None = None,
             timeout: int = 300) -> subprocess.CompletedProcess:
    launcher = executable or [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*launcher, "--standalone", f"--nproc_per_node={nproc}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


WORKER = textwrap.dedent('''
    """Each rank runs the sharded step and, alongside, the one-process step on its own copy; rank 0 reports."""
    import json, sys
    import torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[2])
    from test_distributed import build_setup
    from taidpt.engine.distributed import DistContext, destroy_process_group
    from taidpt.engine.distributed_runner import sharded_train_step
    from taidpt.engine.caption_training import train_step

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    ctx = DistContext.current()
    report = []
    for classes, loss, sizes in ((["dog", "cat", "car", "bus", "person"], "double_ranking", [7, 5, 2]),
                                 (["dog", "cat"], "ranking", [4, 1]),
                                 (["dog", "cat", "car", "bus"], "double_bce", [6])):
        (m1, e1, labels, o1), (m2, e2, _, o2) = build_setup(classes), build_setup(classes)
        for step, size in enumerate(sizes):
            idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(step))[:size]
            batch = {"index": idx, "label": labels[idx]}
            ref = train_step(m1, e1, batch, o1, loss)
            got = sharded_train_step(m2, e2, batch, o2, loss, ctx)
            diff = max((a - b).abs().max().item() for a, b in zip(m1.prompt_learner.parameters(),
                                                                   m2.prompt_learner.parameters()))
            grads = [p.grad is None for p in m2.prompt_learner.parameters()]
            report.append({"classes": len(classes), "batch": size, "loss": [ref, got], "param_diff": diff,
                           "grad_none": grads, "ref_grad_none": [p.grad is None for p in m1.prompt_learner.parameters()]})
    if ctx.rank == 0:
        open(sys.argv[1], "w").write(json.dumps(report))
    destroy_process_group(ctx)
''')


@pytest.mark.slow
def test_three_processes_match_one_on_uneven_and_empty_shards(tmp_path):
    """Global batches of 7, 5, 2 (shards 3/2/2, 2/2/1, 1/1/0), 5 and 2 classes over 3 processes (2/2/1, 1/1/0),
    a loss that leaves the local context without gradient: the step equals the one-process step."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "report.json"
    torchrun([str(script), str(out), str(Path(__file__).parent)], 3, tmp_path)
    report = json.loads(out.read_text())
    assert len(report) == 6
    for row in report:
        assert row["loss"][1] == pytest.approx(row["loss"][0], rel=1e-5), row
        assert row["param_diff"] < 1e-5, row  # float32 rounding of differently ordered sums
        assert row["grad_none"] == row["ref_grad_none"], row
    assert report[3]["grad_none"] == [False, True]  # "ranking" trains the global context only


@pytest.fixture(scope="module")
def voc_with_bad_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_dist")
    write_voc_fixture(root)
    write_bad_images(root / "VOCdevkit" / "VOC2007")
    return root


def run_args(root: Path, weights: Path, out: Path, *flags: str) -> list[str]:
    # Global batch 15 over 2 processes: caption shards of 8 and 7. Test batch 5: 3 batches, 2 + 1.
    return ["train.py", "--engine", "core", "--trainer", "TaIDPT", "--output-dir", str(out), *flags, *common(root, weights),
            "DATALOADER.TRAIN_X.BATCH_SIZE", "15", "DATALOADER.TEST.BATCH_SIZE", "5", "OPTIM.LR", "0.002",
            "OPTIM.MAX_EPOCH", "2"]


@pytest.mark.slow
def test_torchrun_training_and_evaluation_match_one_process(voc_with_bad_images, tiny_rn_openai_file, tmp_path):
    root, weights = voc_with_bad_images, tiny_rn_openai_file
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    single, multi = tmp_path / "single", tmp_path / "multi"
    subprocess.run([sys.executable, *run_args(root, weights, single)], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=300)
    proc = torchrun(run_args(root, weights, multi), 2, tmp_path)

    a, b = (json.loads((d / "results.json").read_text()) for d in (single, multi))
    for key in ("global", "local", "merged"):
        assert b["mAP"][key] == pytest.approx(a["mAP"][key], abs=1e-6)
    assert b["skipped_images"] == a["skipped_images"] and len(a["skipped_images"]) == 2
    assert b["missing_images"] == a["missing_images"]
    for epoch in (1, 2):
        ca, cb = (torch.load(d / "prompt_learner" / f"model.pth.tar-{epoch}", weights_only=True) for d in (single, multi))
        for name, tensor in ca["state_dict"].items():
            torch.testing.assert_close(cb["state_dict"][name], tensor, rtol=0, atol=2e-5)
    # Rank 0 alone wrote the log, the checkpoints and the results.
    assert proc.stdout.count("Finish training") == 1 and "2 processes (gloo)" in proc.stdout
    log = (multi / "log.txt").read_text()
    assert log.count("results written") == 1 and len(re.findall(r"epoch \[2/2\] batch \[(\d+)/\1\]", log)) == 1
    ma, mb = ((d / "metrics.jsonl").read_text().splitlines() for d in (single, multi))
    assert len(mb) == 2 and [json.loads(x)["loss"] for x in mb] == pytest.approx([json.loads(x)["loss"] for x in ma],
                                                                                  abs=1e-5)

    # Evaluation alone, launched by the plain `torchrun` executable: the same prompts give identical numbers.
    evaluated = tmp_path / "eval"
    torchrun_bin = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun_bin)] if torchrun_bin.is_file() else None
    torchrun(run_args(root, weights, evaluated, "--eval-only", "--model-dir", str(single)), 2, tmp_path,
             executable=launcher)
    c = json.loads((evaluated / "results.json").read_text())
    assert c["mAP"] == a["mAP"] and c["per_class_AP"] == a["per_class_AP"] and c["skipped_images"] == a["skipped_images"]
