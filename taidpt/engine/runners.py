"""Which runner runs a method: one table from what the method trains on to a runner class.

Everything that builds a runner (:func:`taidpt.engine.session.run`, the Dassl trainers in
``trainers/taidpt.py``) asks :func:`runner_class`; this module imports every runner, so that none
of them imports another beside it.
"""

from __future__ import annotations

from taidpt.engine.caption_runner import CaptionRunner
from taidpt.engine.image_runner import ImagePromptRunner
from taidpt.engine.runner import Runner
from taidpt.methods import CAPTIONS, IMAGES, get_method

# Method.trains_on -> the runner of its methods (None: nothing is trained, the base runner tests as it is).
RUNNERS: dict[str | None, type[Runner]] = {CAPTIONS: CaptionRunner, IMAGES: ImagePromptRunner, None: Runner}


def runner_class(trainer: str, distributed: bool = False) -> type[Runner]:
    """The runner class of the method ``trainer``; ``distributed``: for a torchrun group, refused
    for a runner that runs in one process only."""
    method = get_method(trainer)
    if method.trains_on not in RUNNERS:
        raise ValueError(f"method {method.name} trains on {method.trains_on!r}, which no runner takes "
                         f"(taidpt.engine.runners.RUNNERS: {', '.join(map(repr, RUNNERS))})")
    cls = RUNNERS[method.trains_on]
    if distributed and not cls.runs_distributed:
        raise ValueError(f"torchrun runs methods trained on captions (or not trained); run {trainer} in "
                         f"one process")
    return cls


__all__ = ["RUNNERS", "runner_class"]
