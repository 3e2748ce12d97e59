"""Optional TensorBoard events of a core training run (``RUN/tensorboard/``), as Dassl writes them.

TensorBoard is not a dependency: when ``torch.utils.tensorboard`` cannot be imported (the
``tensorboard`` package is missing), :func:`open_event_writer` returns None and the run keeps
``metrics.jsonl`` only (:mod:`taidpt.engine.metrics_log`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

TENSORBOARD_DIR = "tensorboard"


class EventWriter:
    """Scalars into one TensorBoard event file, flushed after every call so a live TensorBoard sees them."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def write(self, scalars: Mapping[str, float | None], step: int) -> None:
        """Add every scalar that has a value (None is left out: nothing measured) at ``step``."""
        for tag, value in scalars.items():
            if value is not None:
                self._writer.add_scalar(tag, float(value), int(step))
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()


def tensorboard_available() -> bool:
    """Whether ``torch.utils.tensorboard.SummaryWriter`` can be imported (the ``tensorboard`` package is installed)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401, PLC0415 - optional
    except ImportError:
        return False
    return True


def open_event_writer(run_dir: str | Path, resumed_epoch: int) -> EventWriter | None:
    """An :class:`EventWriter` into ``run_dir/tensorboard``, or None without the ``tensorboard`` package.

    Steps are epochs (1-based). The writer's ``purge_step`` is the first epoch this run trains, so
    TensorBoard hides what an earlier, killed attempt logged from that epoch on, as ``metrics.jsonl``
    drops those lines: both stay consistent with the checkpoints.
    """
    if not tensorboard_available():
        return None
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - optional

    return EventWriter(SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR), purge_step=resumed_epoch + 1))


__all__ = ["EventWriter", "TENSORBOARD_DIR", "open_event_writer", "tensorboard_available"]
