"""The Ray Data engine of ``taidpt-infer --engine ray``: the local engine's rows, scored on a Ray cluster.

The driver lists the inputs (:mod:`taidpt.serve.ray_inputs`), plans stable shards and checks the output
folder (:mod:`taidpt.serve.parquet_parts`); Ray Data decodes and preprocesses in CPU tasks and scores in
an actor pool, each actor holding one :class:`taidpt.serve.predictor.Predictor` (``num_gpus=1`` where the
cluster has GPUs). The driver writes a shard's part as soon as its rows are in, so a rerun skips it.
See docs/scaling.md, "Batch inference on a Ray cluster".
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from taidpt.images.preprocess import PreprocessConfig
from taidpt.serve.decision import Decision
from taidpt.serve.parquet_parts import (
    ParquetOutputError,
    Shard,
    finished_shards,
    job_description,
    plan_shards,
    shard_table,
    sweep_temporary,
    write_part,
)
from taidpt.serve.predictor import Predictor
from taidpt.serve.ray_inputs import list_inputs, read_image
from taidpt.serve.result_log import file_sha256

MAX_BLOCKS = 2000  # input blocks of paths: enough decode tasks in flight, a small plan for the driver
DECODE_OVERHEAD = 64 << 20  # bytes a decode task reserves besides its batches (the decoder's own buffers)


class RayJobError(RuntimeError):
    """A Ray job that ended without every shard written; the message is one line (rerun to finish it)."""


@dataclass(frozen=True)
class ModelSettings:
    """How every actor (and the driver's one look at the model) opens the model."""

    model: str
    classes: tuple[str, ...] | None
    threshold: float | None
    top_k: int | None
    providers: tuple[str, ...] | None
    batch_size: int

    def open(self) -> Predictor:
        return Predictor.from_onnx(self.model, classes=self.classes, providers=self.providers,
                                   threshold=self.threshold, top_k=self.top_k, batch_size=self.batch_size)


def model_facts(settings: ModelSettings) -> tuple[Decision, PreprocessConfig]:
    """The decision rule and preprocessing of the model for these classes, as a Predictor builds them."""
    with settings.open() as predictor:
        runner, decision = predictor.for_classes(settings.classes)
        return decision, runner.metadata.preprocess_config()


def decode_batch(batch: dict[str, np.ndarray], cfg: PreprocessConfig, fast_decode: bool) -> dict[str, np.ndarray]:
    """A Ray task: read and preprocess a batch of paths; an unreadable one gets zeros and its error."""
    h, w = cfg.out_hw
    images = np.zeros((len(batch["path"]), 3, h, w), np.float32)
    errors = []
    for i, path in enumerate(batch["path"]):
        got = read_image(str(path), cfg, fast_decode)
        errors.append(got if isinstance(got, str) else "")
        if not isinstance(got, str):
            images[i] = got
    return {"shard": batch["shard"], "path": batch["path"], "image": images, "error": np.array(errors, dtype=object)}


def decode_memory(cfg: PreprocessConfig, batch_size: int) -> int:
    """Bytes a decode task reserves: its output batch and room for the decoded photos. Declaring it also
    keeps decoding a stage of its own (Ray Data fuses only maps with equal resources)."""
    h, w = cfg.out_hw
    return DECODE_OVERHEAD + 4 * batch_size * 3 * h * w * 4


class Scorer:
    """An actor of the pool: one model opened through :class:`Predictor`, scoring decoded batches."""

    def __init__(self, settings: ModelSettings) -> None:
        self.predictor = settings.open()
        self.runner, self.decision = self.predictor.for_classes(settings.classes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["error"] == ""
        scores = np.full((len(ok), len(self.decision.classnames)), np.nan, np.float32)
        if ok.any():
            scores[ok] = self.runner.run(np.ascontiguousarray(batch["image"][ok], dtype=np.float32))["scores"]
        return {"shard": batch["shard"], "path": batch["path"], "scores": scores, "error": batch["error"]}


def connect(address: str | None) -> bool:
    """Join the Ray at ``address`` ("auto" or HOST:PORT), the one already joined, or a new local one;
    returns whether this call started it (then the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        ray.init(address=address, **quiet)
        return False
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet)
    return True


def pool_shape(actors: int, providers: Sequence[str] | None) -> tuple[int, int]:
    """``(actors, gpus per actor)``: one GPU per actor where the cluster has GPUs and the providers may use
    them; ``actors < 1`` means one per GPU, or half the CPUs (the other half decodes)."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpu_only = bool(providers) and all("cpu" in p.lower() for p in providers)
    per_actor = 1 if gpus and not cpu_only else 0
    if actors >= 1:
        return actors, per_actor
    return (gpus if per_actor else max(1, int(resources.get("CPU", 2)) // 2)), per_actor


def scored_rows(todo: Sequence[Shard], settings: ModelSettings, cfg: PreprocessConfig, *, actors: int,
                gpus_per_actor: int, fast_decode: bool, progress: bool) -> Iterable[dict[str, np.ndarray]]:
    """The Ray Data pipeline over the shards to do: paths -> decode tasks -> actor pool; scored batches."""
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = progress
    logging.getLogger("ray.data").setLevel(logging.INFO if progress else logging.WARNING)
    items = [{"shard": s.index, "path": p} for s in todo for p in s.paths]
    blocks = max(1, min(MAX_BLOCKS, -(-len(items) // settings.batch_size)))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(decode_batch, fn_kwargs={"cfg": cfg, "fast_decode": fast_decode},
                        batch_size=settings.batch_size, batch_format="numpy", num_cpus=1,
                        memory=decode_memory(cfg, settings.batch_size))
    ds = ds.map_batches(Scorer, fn_constructor_kwargs={"settings": settings}, batch_size=settings.batch_size,
                        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
                        num_cpus=1, num_gpus=gpus_per_actor)
    return ds.iter_batches(batch_size=None, batch_format="numpy")


def write_shard(output: Path, shard: Shard, rows: dict[str, tuple[np.ndarray, str]], description: dict[str, Any],
                decision: Decision) -> int:
    """Write one shard's part from its rows (path -> (scores, error)); labels and confidence by ``decision``."""
    paths = list(shard.paths)
    scores = np.stack([rows[p][0] for p in paths])
    write_part(output, shard, shard_table(description, decision, paths, scores, [rows[p][1] or None for p in paths]))
    return len(paths)


def write_parts(batches: Iterable[dict[str, np.ndarray]], todo: Sequence[Shard], output: Path,
                description: dict[str, Any], decision: Decision) -> int:
    """Gather scored rows by shard and write each shard once, when all its paths are in; returns rows written."""
    waiting = {s.index: s for s in todo}
    pending: dict[int, dict[str, tuple[np.ndarray, str]]] = {}
    written = 0
    for batch in batches:
        for shard, path, scores, error in zip(batch["shard"], batch["path"], batch["scores"], batch["error"]):
            index = int(shard)
            if index not in waiting:
                continue  # a row delivered again after a retry: its shard is already written
            rows = pending.setdefault(index, {})
            rows[str(path)] = (scores, str(error))
            if len(rows) == len(waiting[index].paths):
                written += write_shard(output, waiting.pop(index), pending.pop(index), description, decision)
    if waiting:
        raise RayJobError(f"{output}: {len(waiting)} shard(s) got no complete rows from Ray; rerun to finish them")
    return written


def run_ray_job(inputs: str, model: str, output: Path, *, classes: list[str] | None, threshold: float | None,
                top_k: int | None, shard_size: int, batch_size: int, actors: int, address: str | None,
                providers: list[str] | None, fast_decode: bool, progress: bool) -> int:
    """Score ``inputs`` with ``model`` on Ray into the Parquet folder ``output``; returns rows written this run.

    Shards already in ``output`` are skipped; a folder of another job raises :class:`ParquetOutputError`."""
    import ray

    output = Path(output)
    shards = plan_shards(list_inputs(inputs), shard_size)
    settings = ModelSettings(str(model), tuple(classes) if classes else None, threshold, top_k,
                             tuple(providers) if providers else None, int(batch_size))
    started = connect(address)
    try:
        n_actors, gpus = pool_shape(actors, providers)
        decision, cfg = _remote_facts(settings, gpus)
        description = job_description(decision.classnames, file_sha256(model), decision.describe(), shard_size)
        done = finished_shards(output, description)
        sweep_temporary(output)
        todo = [s for s in shards if s.index not in done]
        if not todo:
            return 0
        batches = scored_rows(todo, settings, cfg, actors=n_actors, gpus_per_actor=gpus, fast_decode=fast_decode,
                              progress=progress)
        return write_parts(batches, todo, output, description, decision)
    finally:
        if started:
            ray.shutdown()


def _remote_facts(settings: ModelSettings, gpus: int) -> tuple[Decision, PreprocessConfig]:
    """:func:`model_facts` in a Ray task placed like an actor (a driver without a GPU can still plan a
    TensorRT job); the model's own error is raised as is."""
    import ray

    task = ray.remote(model_facts).options(num_cpus=1, num_gpus=gpus, max_retries=0)
    try:
        return ray.get(task.remote(settings))
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        raise (cause if isinstance(cause, Exception) else exc) from None


__all__ = ["ParquetOutputError", "RayJobError", "run_ray_job"]
