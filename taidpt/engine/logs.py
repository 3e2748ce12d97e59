"""What a run tells its user: the console and ``log.txt`` set-up, and the training ETA.

Information goes to stdout, warnings and errors to stderr, and everything to ``RUN/log.txt`` with a
timestamp, except the lines CoOp's result parser compares whole (``extra=PLAIN``).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path


def setup_logging(output_dir: str | Path | None, verbose: bool = True) -> None:
    """Log to the console (information on stdout, warnings and errors on stderr) and append to
    ``<output_dir>/log.txt``; idempotent per output dir."""
    logger = logging.getLogger("taidpt")
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    info = logging.StreamHandler(sys.stdout)
    info.addFilter(lambda record: record.levelno < logging.WARNING)
    problems = logging.StreamHandler(sys.stderr)
    problems.setLevel(logging.WARNING)
    for handler in (info, problems):
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    if output_dir:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(Path(output_dir) / "log.txt", encoding="utf-8")
        file.setFormatter(StampedFormatter())
        logger.addHandler(file)


PLAIN = {"plain": True}  # ``log.info(..., extra=PLAIN)``: written to log.txt without a timestamp


class StampedFormatter(logging.Formatter):
    """``log.txt`` lines start with a timestamp, except records logged with ``extra=PLAIN``: CoOp's
    ``parse_test_res.py`` compares whole stripped lines with ``Finish training`` / ``=> result``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage() if getattr(record, "plain", False) else super().format(record)


class StepClock:
    """Average time of the training steps of this process (``with clock: step()``), for the ETA.

    Only step time counts: the corpus and cache build before the first step, evaluation and
    checkpoint writes between epochs would otherwise inflate the estimate many times over.
    """

    def __init__(self) -> None:
        self.steps, self.seconds, self._t0 = 0, 0.0, 0.0

    def __enter__(self) -> "StepClock":
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._t0
        self.steps += 1

    def eta(self, steps_left: int) -> float:
        """Seconds for ``steps_left`` more steps at this run's average step time."""
        return self.seconds / max(self.steps, 1) * max(steps_left, 0)


__all__ = ["PLAIN", "StampedFormatter", "StepClock", "setup_logging"]
