"""A training run, opened from its folder: the one way anything reads a run.

:class:`Run` gives a run folder's configuration (assembled as :func:`~taidpt.engine.config.assemble_config`
does it), method, class names, checkpoints, results, and the trained model rebuilt from them
(:mod:`taidpt.engine.model_factory`); ``train.py --eval-only``, the export, the ensemble and the Python
API read runs through it, and reading one needs no torch. The folder layout is in docs/training.md.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any, Sequence

from yacs.config import CfgNode

from taidpt.engine.checkpoint import MODEL_NAME, POINTER_FILE, load_checkpoint, resolve_checkpoint
from taidpt.engine.config import assemble_config, get_cfg_default
from taidpt.engine.model_factory import TrainedModel, build_model
from taidpt.evaluation.predictions import PREDICTIONS_FILE
from taidpt.methods import DEFAULT_METHOD, Method, get_method

CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"
EVAL_FOLDER = "eval"


class Run:
    """The folder of one training run (``RUN``); raises ``FileNotFoundError`` when ``path`` is not one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"--model-dir {self.path}: no such folder; expected a training run folder "
                                    f"(the --output-dir of train.py)")
        if not any((self.path / name).exists() for name in (CONFIG_FILE, MODEL_NAME, RESULTS_FILE, PREDICTIONS_FILE)):
            raise FileNotFoundError(f"--model-dir {self.path}: none of {CONFIG_FILE}, {MODEL_NAME}/, {RESULTS_FILE}, "
                                    f"{PREDICTIONS_FILE} is there; expected a training run folder (the --output-dir "
                                    f"of train.py)")

    # ------------------------------------------------------------------ configuration
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def has_config(self) -> bool:
        return self.config_path.is_file()

    def config(self, files: Sequence[str] = (), opts: Sequence[str] = (), base: CfgNode | None = None) -> CfgNode:
        """The run's configuration (frozen): the defaults, its ``config.yaml``, then ``files`` and
        ``KEY VALUE`` ``opts``; ``OUTPUT_DIR`` and ``RESUME`` are cleared (reading never writes the run)."""

        def clear_outputs(cfg: CfgNode) -> None:
            cfg.OUTPUT_DIR, cfg.RESUME = "", ""

        return assemble_config(base if base is not None else get_cfg_default(),
                               saved=self.config_path if self.has_config else None, files=files,
                               opts=list(opts), flags=clear_outputs)

    @staticmethod
    def method_of(cfg: CfgNode) -> type[Method]:
        """The method a configuration runs (``TRAINER.NAME``; the default method when a run's config leaves it empty)."""
        return get_method(cfg.TRAINER.NAME or DEFAULT_METHOD)

    # ------------------------------------------------------------------ checkpoints and results
    @property
    def trained(self) -> bool:
        """Whether the run wrote any checkpoint."""
        return (self.path / MODEL_NAME / POINTER_FILE).is_file()

    def checkpoint(self, epoch: int | None = None) -> Path:
        """The checkpoint an evaluation loads: ``model.pth.tar-<epoch>``, else best, else last."""
        return resolve_checkpoint(self.path, epoch)

    def results(self) -> dict[str, Any] | None:
        """``RUN/results.json``, or None when the run has not been evaluated."""
        try:
            return json.loads((self.path / RESULTS_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    @property
    def predictions_path(self) -> Path:
        return self.path / PREDICTIONS_FILE

    def new_eval_dir(self, now: datetime.datetime | None = None) -> Path:
        """A fresh ``RUN/eval/<YYYYmmdd-HHMMSS>[-n]/`` path (not created) for one evaluation's output."""
        stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
        base = self.path / EVAL_FOLDER
        candidate, n = base / stamp, 1
        while candidate.exists():
            n += 1
            candidate = base / f"{stamp}-{n}"
        return candidate

    # ------------------------------------------------------------------ the trained model
    def classnames(self, cfg: CfgNode, meta: dict[str, Any] | None = None) -> list[str]:
        """Class names in label-column order: the checkpoint's, else the last results', else the
        dataset's class list of the configuration."""
        if meta and meta.get("classnames"):
            return list(meta["classnames"])
        results = self.results()
        if results and results.get("classes"):
            return list(results["classes"])
        return class_names_of(cfg)

    def load_model(self, cfg: CfgNode, epoch: int | None = None, device: str = "cpu",
                   classnames: Sequence[str] | None = None) -> TrainedModel:
        """Rebuild the method's model of ``cfg`` from CLIP and (for a trained method) the checkpoint,
        in eval mode on ``device``; ``classnames`` overrides the run's for an untrained method."""
        method = self.method_of(cfg)
        path, ckpt = None, None
        if method.trains():
            path = self.checkpoint(epoch)
            ckpt = load_checkpoint(path, map_location="cpu")
        names = self.classnames(cfg, ckpt.get("meta") if ckpt else None) if classnames is None else list(classnames)
        return build_model(cfg, method, names, ckpt, path, device)


def class_names_of(cfg: CfgNode) -> list[str]:
    """The class names a configuration means (:func:`taidpt.images.registry.class_list_of`)."""
    from taidpt.images.registry import class_list_of  # noqa: PLC0415 - data modules load on demand

    return list(class_list_of(cfg).names)


__all__ = ["CONFIG_FILE", "EVAL_FOLDER", "RESULTS_FILE", "Run", "TrainedModel", "build_model",
           "class_names_of"]
