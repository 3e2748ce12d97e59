"""What the tagging page does, without the page: uploads and a class box in, one row per image out.

A :class:`Tagger` holds one :class:`taidpt.serve.predictor.Predictor` and the page's limits. It reads the
class box with the CLI's class-list rules, picks the decision rule the user chose (the model's own, top-k,
or the model's thresholds shifted), scores the uploads and returns :class:`Tagged`: the rows
``python -m export.infer`` writes, which :meth:`Tagger.downloads` saves as its JSON and CSV. Every refusal
is a :class:`PageInputError` with a one-line message for the page. See docs/app.md.
"""

from __future__ import annotations

import os
import re
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image

from taidpt.serve.class_names import ClassNameError, validate_class_names
from taidpt.serve.decision import Decision, DecisionError, resolve
from taidpt.serve.infer import predictions, write_json
from taidpt.serve.open_vocab import OpenVocabError
from taidpt.serve.predictor import Predictor
from taidpt.serve.result_log import ResultLog, ResultLogError, Row, file_sha256
from taidpt.serve.runtime import Runner

MAX_CLASSES = 100  # names the class box accepts (each one is a text-model run)
MAX_IMAGES = 32  # images per click
MAX_MEGAPIXELS = 40.0  # larger images are refused from their header, before any decoding
MODEL_RULE, TOP_K_RULE = "model's rule", "top-k"
RULES = (MODEL_RULE, TOP_K_RULE)


class PageInputError(ValueError):
    """Input the page cannot use (empty class box, too many names, ...); the message is one line."""


@dataclass(frozen=True)
class RuleChoice:
    """The decision rule chosen on the page: the model's (with its thresholds moved by ``shift``) or top-``k``."""

    mode: str = MODEL_RULE
    k: int = 3
    shift: float = 0.0


@dataclass
class Tagged:
    """One click's outcome: a row per upload (input order), the rule that labelled them, the scoring runner."""

    rows: list[Row]
    decision: Decision
    runner: Runner
    seconds: float

    @property
    def classnames(self) -> tuple[str, ...]:
        return self.decision.classnames


def split_class_box(text: str | None) -> list[str]:
    """The names typed in the class box: separated by commas or new lines, surrounding spaces and empty
    entries dropped."""
    return [name.strip() for name in re.split(r"[,\n]", text or "") if name.strip()]


def upload_problem(path: str, max_megapixels: float) -> str:
    """Why an uploaded file is refused before decoding ("" when it may be decoded): empty, or an image whose
    header declares more than ``max_megapixels`` (a decompression bomb is caught here, unread)."""
    try:
        if os.path.getsize(path) == 0:
            return "file is empty (0 bytes)"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except Image.DecompressionBombError as exc:
        return f"refused unread: {exc}"
    except Exception:  # noqa: BLE001 - not an image: the decoder says why, as for every other input
        return ""
    if w * h > max_megapixels * 1e6:
        return (f"image is {w} x {h} pixels ({w * h / 1e6:.0f} megapixels), above this page's limit of "
                f"{max_megapixels:g} megapixels")
    return ""


class Tagger:
    """The page's model and limits (see the module docstring)."""

    def __init__(self, predictor: Predictor, *, max_classes: int = MAX_CLASSES, max_images: int = MAX_IMAGES,
                 max_megapixels: float = MAX_MEGAPIXELS) -> None:
        self.predictor = predictor
        self.max_classes, self.max_images, self.max_megapixels = max_classes, max_images, max_megapixels
        self.model_sha256 = file_sha256(predictor.runner.path)
        # The predictor's cache of class lists is not thread-safe, and opening a list may close another
        # that a click is scoring with: one caller at a time.
        self._lock = threading.RLock()

    @property
    def trained_classes(self) -> tuple[str, ...]:
        return self.predictor.classnames

    def class_box_text(self) -> str:
        """What the class box shows at start: the trained classes."""
        return ", ".join(self.trained_classes)

    def classes(self, text: str | None) -> list[str]:
        """The class list of the class box, checked like ``--classes``; a list other than the trained one
        needs an open-vocabulary export."""
        names = split_class_box(text)
        if not names:
            raise PageInputError("the class box is empty: type class names separated by commas")
        if len(names) > self.max_classes:
            raise PageInputError(f"{len(names)} class names: this page scores at most {self.max_classes} at once")
        try:
            names = validate_class_names(names, "class box", [f"class box, name {i}" for i in
                                                              range(1, len(names) + 1)])
        except ClassNameError as exc:
            raise PageInputError(str(exc)) from None
        if tuple(names) != self.trained_classes and not self.predictor.open_vocabulary:
            raise PageInputError(f"this model scores only its {len(self.trained_classes)} trained classes; "
                                 f"typed names need a model exported with --open-vocabulary "
                                 f"(restore the class box to use it)")
        return names

    def decision(self, classes: Sequence[str], choice: RuleChoice) -> tuple[Runner, Decision]:
        """The runner that scores ``classes`` and the rule the user chose for them."""
        with self._lock:
            return self._decision(classes, choice)

    def _decision(self, classes: Sequence[str], choice: RuleChoice) -> tuple[Runner, Decision]:
        try:
            runner, own = self.predictor.for_classes(list(classes))
            if choice.mode == TOP_K_RULE:
                return runner, resolve(own.classnames, top_k=int(choice.k))
            if choice.mode != MODEL_RULE:
                raise PageInputError(f"decision rule {choice.mode!r}: expected one of {', '.join(RULES)}")
            return runner, own.shifted(float(choice.shift))
        except (DecisionError, OpenVocabError, ClassNameError) as exc:
            raise PageInputError(str(exc)) from None

    def tag(self, files: Sequence[str] | None, class_text: str | None, choice: RuleChoice) -> Tagged:
        """Score the uploaded ``files`` (paths) for the class box's classes by ``choice``."""
        files = [os.fspath(f) for f in files or []]
        if not files:
            raise PageInputError("no image: upload one or more images first")
        if len(files) > self.max_images:
            raise PageInputError(f"{len(files)} files: this page scores at most {self.max_images} per run")
        classes = self.classes(class_text)
        t0 = time.perf_counter()
        refused = {i: upload_problem(f, self.max_megapixels) for i, f in enumerate(files)}
        readable = [i for i, reason in refused.items() if not reason]
        with self._lock:
            runner, decision = self._decision(classes, choice)
            preds, _ = self.predictor.score([files[i] for i in readable], classes=list(decision.classnames))
        rows = [Row(Path(f).name, error=refused[i]) for i, f in enumerate(files)]
        skipped = iter(preds.skipped)
        scored = dict(zip(preds.indices, range(len(preds.indices))))
        labels = decision.labels(preds.scores)
        for position, i in enumerate(readable):
            row = scored.get(position)
            if row is None:  # the decoder's reason names the server's copy of the upload: name it as uploaded
                rows[i].error = next(skipped)[1].replace(files[i], Path(files[i]).name)
            else:
                rows[i] = Row(Path(files[i]).name, preds.scores[row], labels[row], decision=decision,
                              global_logits=preds.global_logits[row], local_logits=preds.local_logits[row])
        return Tagged(rows, decision, runner, time.perf_counter() - t0)

    def downloads(self, tagged: Tagged, folder: str | os.PathLike) -> tuple[Path, Path]:
        """``results.json`` and ``results.csv`` in ``folder``: the documents ``python -m export.infer`` writes
        for these rows (``--output OUT.json`` and ``OUT.csv``)."""
        folder = Path(folder)
        preds, labels = predictions(tagged.rows, len(tagged.classnames), tagged.seconds)
        json_path, csv_path = folder / "results.json", folder / "results.csv"
        write_json(json_path, tagged.runner, tagged.decision, preds, labels, len(tagged.rows), False,
                   self.model_sha256)
        try:
            with ResultLog(csv_path, tagged.classnames, model_sha256=self.model_sha256) as log:
                log.write(tagged.rows)
        except ResultLogError:
            csv_path.unlink(missing_ok=True)
            raise
        return json_path, csv_path
