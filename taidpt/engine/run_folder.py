"""A training run's folder, opened as one object.

Layout of a run folder (what ``train.py --output-dir RUN`` writes)::

    RUN/config.yaml                     the merged configuration the run trained with
    RUN/log.txt                         the log (appended by every invocation)
    RUN/prompt_learner/...              checkpoints (see :mod:`taidpt.engine.checkpoint`)
    RUN/results.json                    the last evaluation's results
    RUN/predictions.npz                 the last evaluation's scores
    RUN/eval/<timestamp>/               evaluations of this run made later with --eval-only

:class:`RunFolder` is how the command line reads a run: its configuration is the base of an
evaluation (``train.py --eval-only --model-dir RUN``), its checkpoints say what was trained.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from yacs.config import CfgNode

from taidpt.engine.config import read_cfg_file
from taidpt.engine.checkpoint import MODEL_NAME, POINTER_FILE, resolve_checkpoint

CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"
EVAL_FOLDER = "eval"


class RunFolder:
    """The folder of one training run (``RUN``); raises ``FileNotFoundError`` when ``path`` is not one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"--model-dir {self.path}: no such folder; expected a training run folder "
                                    f"(the --output-dir of train.py)")
        if not self.config_path.is_file() and not (self.path / MODEL_NAME).is_dir():
            raise FileNotFoundError(f"--model-dir {self.path}: neither {CONFIG_FILE} nor {MODEL_NAME}/ is there; "
                                    f"expected a training run folder (the --output-dir of train.py)")

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def has_config(self) -> bool:
        return self.config_path.is_file()

    def merge_config_into(self, cfg: CfgNode) -> list[str]:
        """Merge ``RUN/config.yaml`` into ``cfg`` (not frozen); returns the keys skipped because ``cfg``
        lacks them (a run written by the other engine may carry keys this one does not know)."""
        if not self.has_config:
            return []
        saved = read_cfg_file(cfg, str(self.config_path))
        skipped: list[str] = []
        _merge_known(cfg, saved, "", skipped)
        return skipped

    def checkpoint(self, epoch: int | None = None) -> Path:
        """The checkpoint an evaluation loads: ``model.pth.tar-<epoch>``, else best, else last."""
        return resolve_checkpoint(self.path, epoch)

    @property
    def trained(self) -> bool:
        """Whether the run wrote any checkpoint."""
        return (self.path / MODEL_NAME / POINTER_FILE).is_file()

    def results(self) -> dict[str, Any] | None:
        """``RUN/results.json``, or None when the run has not been evaluated."""
        try:
            return json.loads((self.path / RESULTS_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def new_eval_dir(self, now: datetime.datetime | None = None) -> Path:
        """A fresh ``RUN/eval/<YYYYmmdd-HHMMSS>[-n]/`` path (not created) for one evaluation's output."""
        stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
        base = self.path / EVAL_FOLDER
        candidate, n = base / stamp, 1
        while candidate.exists():
            n += 1
            candidate = base / f"{stamp}-{n}"
        return candidate


def _merge_known(cfg: CfgNode, saved: CfgNode, prefix: str, skipped: list[str]) -> None:
    for key, value in saved.items():
        name = f"{prefix}{key}"
        if key not in cfg:
            skipped.append(name)
        elif isinstance(value, CfgNode) and isinstance(cfg[key], CfgNode):
            _merge_known(cfg[key], value, f"{name}.", skipped)
        else:
            _set(cfg, key, value, name)


def _set(cfg: CfgNode, key: str, value: Any, name: str) -> None:
    current = cfg[key]
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if current is not None and value is not None and type(current) is not type(value):
        raise ValueError(f"{name} in the run's {CONFIG_FILE} has type {type(value).__name__}, expected "
                         f"{type(current).__name__}")
    cfg[key] = value


__all__ = ["CONFIG_FILE", "EVAL_FOLDER", "RESULTS_FILE", "RunFolder"]
