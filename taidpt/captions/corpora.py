"""Caption corpora: labelled training sentences read from caption files.

TaI-DPT trains on sentences instead of images. A corpus is built from one
caption file, labelled with a :class:`~taidpt.captions.labelling.CaptionLabeller`
(sentences that mention no class are dropped), and completed with 89 template
sentences per class (:mod:`taidpt.captions.templates`). Sources:

- ``"coco_captions"``: a COCO captions json (``captions_train2017.json``), the
  source for the VOC2007 and COCO 2014 targets. Caveat of the reference recipe:
  COCO train2017 contains most val2014 images, the COCO 2014 test set, so their
  captions describe test images. ``exclude_image_ids`` drops them (e.g.
  ``read_coco_image_ids("instances_val2014.json")``). A :class:`CaptionSelection`
  says which captions are read: all of them (591,753 in train2017), a fixed list
  of caption ids (the reference trains on a list of 118,287 ids, as many as
  train2017 has images; :func:`read_caption_ids` reads it), or ``k`` captions
  per image drawn with a fixed seed.
- ``"localized_narratives"``: OpenImages Localized Narratives jsonl, the
  source for NUS-WIDE. By default, as in the reference, only the first 77
  tokens of a narrative are labelled, each labelled narrative is assigned to its
  rarest class (fewest labelled narratives) and at most 1000 are kept per class.
- ``"text"``: any text file, one sentence per line.

Built corpora can be cached on disk (json + npz, keyed by every setting).
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taidpt.utils.atomic import atomic_savez, atomic_write_text
from taidpt.captions.classes import ClassList
from taidpt.captions.labelling import CaptionLabeller
from taidpt.utils.safe_pickle import load_plain
from taidpt.captions.templates import template_sentences

__all__ = [
    "AUTO",
    "SOURCES",
    "CaptionCorpus",
    "CaptionSelection",
    "assign_rarest",
    "build_corpus",
    "read_caption_ids",
    "read_coco_captions",
    "read_coco_image_ids",
    "read_localized_narratives",
    "read_text_file",
    "source_defaults",
]

log = logging.getLogger(__name__)

SOURCES = ("coco_captions", "localized_narratives", "text")
AUTO = "auto"
# Bump when the stored layout or the build recipe changes, so caches are rebuilt.
# 2: caption selection (all / caption ids / k per image) in the settings and the stats.
CORPUS_FORMAT_VERSION = 2
PICKLE_SUFFIXES = (".pkl", ".pickle")

_DEFAULTS: dict[str, dict[str, Any]] = {
    "coco_captions": {"rarest_assignment": False, "per_class_cap": None, "max_words": None},
    "localized_narratives": {"rarest_assignment": True, "per_class_cap": 1000, "max_words": 77},
    "text": {"rarest_assignment": False, "per_class_cap": None, "max_words": None},
}


def source_defaults(source: str) -> dict[str, Any]:
    """The values ``"auto"`` resolves to for ``rarest_assignment``, ``per_class_cap``, ``max_words``."""
    _check_source(source)
    return dict(_DEFAULTS[source])


@dataclass(eq=False)
class CaptionCorpus:
    """Labelled training sentences: captions first, then ``n_templates`` template sentences.

    ``labels`` is a ``[N, C]`` uint8 multi-hot matrix, row ``i`` for ``texts[i]``.
    ``lemmatizer`` names the backend that labelled the captions; ``stats`` counts
    what happened while building (sentences read, dropped, excluded, ...).
    """

    texts: list[str]
    labels: np.ndarray
    classnames: tuple[str, ...]
    source: str
    lemmatizer: str
    n_templates: int
    stats: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.uint8)
        self.classnames = tuple(self.classnames)
        if self.labels.ndim != 2 or self.labels.shape != (len(self.texts), len(self.classnames)):
            raise ValueError(
                f"labels must have shape [len(texts), len(classnames)] = "
                f"[{len(self.texts)}, {len(self.classnames)}], got {list(self.labels.shape)}"
            )
        if not 0 <= self.n_templates <= len(self.texts):
            raise ValueError(f"n_templates={self.n_templates} out of range for {len(self.texts)} sentences")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_captions(self) -> int:
        """Number of caption sentences (the rows before the templates)."""
        return len(self.texts) - self.n_templates

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CaptionCorpus):
            return NotImplemented
        return (
            self.texts == other.texts
            and self.labels.shape == other.labels.shape
            and bool(np.array_equal(self.labels, other.labels))
            and self.classnames == other.classnames
            and self.source == other.source
            and self.lemmatizer == other.lemmatizer
            and self.n_templates == other.n_templates
            and self.stats == other.stats
        )


@dataclass(frozen=True)
class CaptionSelection:
    """Which captions of a COCO captions file a corpus is built from (the caption recipe).

    - every caption (the default);
    - ``ids``: a fixed list of caption (annotation) ids, kept in the list's order, e.g. the
      reference's 118,287 ids read by :func:`read_caption_ids`; ``ids_file`` names it in
      messages and stats;
    - ``per_image``: that many captions of every image (all of them when it has fewer), drawn
      with ``seed``; ``per_image=1`` on train2017 gives 118,287 captions, the size of the
      reference's list. Blank captions are never drawn.
    """

    ids: tuple[int, ...] | None = None
    ids_file: str = ""
    per_image: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.per_image, bool) or not isinstance(self.per_image, (int, np.integer)) or self.per_image < 0:
            raise ValueError(f"captions per image must be 0 (every caption) or a positive integer, got {self.per_image!r}")
        if self.ids is not None and self.per_image:
            raise ValueError("give caption ids or a number of captions per image, not both")
        if self.ids is not None:
            object.__setattr__(self, "ids", tuple(int(i) for i in self.ids))

    @property
    def kind(self) -> str:
        """``"all"``, ``"caption_ids"`` or ``"per_image"``."""
        return "caption_ids" if self.ids is not None else "per_image" if self.per_image else "all"

    def settings(self) -> dict[str, Any]:
        """What the selected captions depend on (part of the corpus cache key); file names are not."""
        if self.ids is not None:
            return {"kind": self.kind, "ids": _ids_key(self.ids)}
        if self.per_image:
            return {"kind": self.kind, "per_image": int(self.per_image), "seed": int(self.seed)}
        return {"kind": self.kind}

    def describe(self) -> str:
        """One phrase for logs and stats, e.g. ``"1 caption per image (seed 0)"``."""
        if self.ids is not None:
            return f"{len(self.ids)} caption ids from {self.ids_file or 'a list'}"
        if self.per_image:
            return f"{self.per_image} caption{'s' if self.per_image > 1 else ''} per image (seed {self.seed})"
        return "every caption"


def _ids_key(ids: Iterable[int]) -> dict[str, Any]:
    """Count and sha256 of integer ids in the given order (cache keys of id lists and sets)."""
    ids = list(ids)
    digest = hashlib.sha256(",".join(map(str, ids)).encode("ascii")).hexdigest()
    return {"count": len(ids), "sha256": digest}


# ----------------------------------------------------------------------------- readers


def _load_json(path: Path, what: str = "caption file") -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}:{exc.colno}: invalid json ({exc.msg})") from None


def _int_set(ids: Iterable[Any] | None, what: str) -> set[int] | None:
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{what} must be a collection of integer image ids, got a string")
    out: set[int] = set()
    for x in ids:
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
            raise TypeError(f"{what} must hold integer image ids, got {x!r}")
        out.add(int(x))
    return out


def read_caption_ids(path: str | Path) -> tuple[int, ...]:
    """Caption (annotation) ids from a file, in the file's order.

    Formats: a json list of integers (``.json``, or text that starts with ``[``); a text file
    with one integer per line (blank lines skipped); a pickled list of integers (``.pkl`` / ``.pickle``, or any file that starts like
    a pickle), such as the reference's ``coco_caption_text_embed_sampled_idx.pkl``. Pickles are
    read as plain data only (:func:`taidpt.utils.safe_pickle.load_plain`): one that names a class or
    function is refused. Every id must be listed once.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"caption id file not found: {path}") from None
    if path.suffix.lower() in PICKLE_SUFFIXES or data[:1] == b"\x80":
        ids = _listed_ids(load_plain(data, str(path)), path, "a pickled list")
    else:
        try:
            text = data.decode("utf-8").lstrip("\ufeff")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}); expected a json list, one caption id "
                             f"per line, or a pickled list of caption ids") from None
        if path.suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{"):
            ids = _listed_ids(_load_json(path, "caption id file"), path, "a json list")
        else:
            ids = _text_ids(text, path)
    if not ids:
        raise ValueError(f"{path}: lists no caption id")
    _check_unique(ids, path)
    return tuple(ids)


def _listed_ids(values: Any, path: Path, what: str) -> list[int]:
    """The items of a loaded json/pickle list, each checked to be an integer."""
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{path}: expected {what} of integer caption ids, got {type(values).__name__}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{path}: item {i}: expected an integer caption id, got {v!r:.40}")
    return list(values)


def _text_ids(text: str, path: Path) -> list[int]:
    """One integer per line; blank lines skipped."""
    ids = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            ids.append(int(line))
        except ValueError:
            raise ValueError(f"{path}:{lineno}: expected one integer caption id per line, got {line!r:.40}") from None
    return ids


def _check_unique(ids: list[int], where: Path | str) -> None:
    seen: set[int] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{where}: caption id {i} is listed more than once")
        seen.add(i)


def read_coco_image_ids(path: str | Path) -> set[int]:
    """The ids of the ``"images"`` of a COCO json (e.g. ``instances_val2014.json``).

    Handy to build ``exclude_image_ids``: COCO 2017 keeps the 2014 image ids.
    """
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f'{path}: expected a COCO json object with an "images" list')
    ids: set[int] = set()
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or isinstance(im.get("id"), bool) or not isinstance(im.get("id"), int):
            raise ValueError(f'{path}: images[{i}]: expected an object with an integer "id", got {im!r:.80}')
        ids.add(im["id"])
    return ids


@dataclass
class _CocoCaptions:
    """The annotations of a COCO captions json as parallel columns (captions stripped)."""

    ann_ids: np.ndarray  # int64, -1 where an annotation has no integer "id"
    image_ids: np.ndarray  # int64
    captions: list[str]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coco_annotations(path: Path, need_ids: bool) -> _CocoCaptions:
    """Read and check every annotation; ``need_ids`` also requires an integer ``"id"``."""
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(
            f'{path}: expected a COCO captions json object with an "annotations" list '
            f'(e.g. captions_train2017.json)'
        )
    anns = data["annotations"]
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str) or not _is_int(ann.get("image_id")):
            raise ValueError(
                f'{path}: annotations[{i}]: expected an object with a string "caption" and an '
                f'integer "image_id", got {ann!r:.120}'
            )
        if need_ids and not _is_int(ann.get("id")):
            raise ValueError(f'{path}: annotations[{i}]: expected an integer caption "id" (caption ids are '
                             f'selected by id), got {ann!r:.120}')
    return _CocoCaptions(
        ann_ids=np.array([a["id"] if _is_int(a.get("id")) else -1 for a in anns], dtype=np.int64),
        image_ids=np.array([a["image_id"] for a in anns], dtype=np.int64),
        captions=[a["caption"].strip() for a in anns],
    )


def _rows_of_ids(coco: _CocoCaptions, ids: tuple[int, ...], ids_file: str, path: Path) -> np.ndarray:
    """Rows of caption ``ids`` in the list's order; an id missing from the file is an error."""
    row_of: dict[int, int] = {}
    for row, ann_id in enumerate(coco.ann_ids.tolist()):
        if row_of.setdefault(ann_id, row) != row:
            raise ValueError(f"{path}: caption id {ann_id} is used by more than one annotation")
    missing = [i for i in ids if i not in row_of]
    if missing:
        more = f" (and {len(missing) - 1} more of its {len(ids)} ids)" if len(missing) > 1 else ""
        raise ValueError(f"{ids_file or 'caption ids'}: caption id {missing[0]}{more} is not in {path}")
    return np.array([row_of[i] for i in ids], dtype=np.int64)


def _sample_per_image(image_ids: np.ndarray, ann_ids: np.ndarray, per_image: int, seed: int) -> np.ndarray:
    """Rows of ``per_image`` captions of every image (all of its captions when it has fewer), sorted.

    Every caption gets a random key from ``default_rng(seed)`` in the order (image id, caption
    id), and each image keeps its captions with the smallest keys: the draw depends on the seed
    and on the captions, not on their order in the file.
    """
    canon = np.lexsort((ann_ids, image_ids))
    keys = np.random.default_rng(seed).random(len(canon))
    ranked = canon[np.lexsort((keys, image_ids[canon]))]  # by image, then key
    images = image_ids[ranked]
    first = np.ones(len(images), dtype=bool)
    first[1:] = images[1:] != images[:-1]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(images)), 0))
    rank = np.arange(len(images)) - group_start
    return np.sort(ranked[rank < per_image])


def _selected_rows(coco: _CocoCaptions, selection: CaptionSelection, path: Path) -> np.ndarray:
    if selection.ids is not None:
        return _rows_of_ids(coco, selection.ids, selection.ids_file, path)
    if selection.per_image:
        rows = np.flatnonzero(np.array([bool(c) for c in coco.captions], dtype=bool))  # blank ones are never drawn
        return rows[_sample_per_image(coco.image_ids[rows], coco.ann_ids[rows], selection.per_image, selection.seed)]
    return np.arange(len(coco.captions))


def read_coco_captions(
    path: str | Path,
    exclude_image_ids: Iterable[int] | None = None,
    *,
    selection: CaptionSelection | None = None,
    stats: dict | None = None,
) -> list[str]:
    """Captions of a COCO captions json chosen by ``selection`` (default: every caption).

    Format: ``{"annotations": [{"id": int, "image_id": int, "caption": str}, ...], ...}``
    (``"id"`` is needed only to select captions). Captions come in the file's annotation
    order, or in the id list's order for ``CaptionSelection(ids=...)``. Captions of images in
    ``exclude_image_ids`` and blank captions are then skipped; ``stats``, when given, receives
    the recipe (``caption_recipe``) and the counts (``sentences_read``, ``selected_captions``,
    ``excluded_test_image_captions``, ``dropped_empty``).
    """
    path = Path(path)
    exclude = _int_set(exclude_image_ids, "exclude_image_ids")
    selection = selection or CaptionSelection()
    coco = _coco_annotations(path, need_ids=selection.kind != "all")
    rows = _selected_rows(coco, selection, path)
    texts: list[str] = []
    excluded = empty = 0
    for row in rows.tolist():
        if exclude is not None and int(coco.image_ids[row]) in exclude:
            excluded += 1
        elif not coco.captions[row]:
            empty += 1
        else:
            texts.append(coco.captions[row])
    if stats is not None:
        stats.update(
            caption_recipe=selection.describe(),
            sentences_read=len(coco.captions),
            selected_captions=int(len(rows)),
            excluded_test_image_captions=excluded,
            dropped_empty=coco.captions.count("") if selection.per_image else empty,
        )
    return texts


def read_localized_narratives(path: str | Path, *, stats: dict | None = None) -> list[str]:
    """The ``"caption"`` of every line of a Localized Narratives jsonl, in file order.

    Blank lines are skipped, blank captions counted in ``stats["dropped_empty"]``.
    A line that is not a json object with a string ``"caption"`` raises
    ``ValueError`` naming ``path:line``.
    """
    path = Path(path)
    texts: list[str] = []
    read = empty = 0
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"caption file not found: {path}") from None
    with f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text (byte {exc.start})") from None
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid json ({exc.msg}, column {exc.colno})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("caption"), str):
                raise ValueError(
                    f'{path}:{lineno}: expected a json object with a string "caption", got {obj!r:.120}'
                )
            read += 1
            caption = obj["caption"].strip()
            if not caption:
                empty += 1
                continue
            texts.append(caption)
    if stats is not None:
        stats.update(sentences_read=read, dropped_empty=empty)
    return texts


def read_text_file(path: str | Path, *, stats: dict | None = None) -> list[str]:
    """One sentence per line of a UTF-8 text file, blank lines skipped.

    Invalid UTF-8 bytes are replaced (U+FFFD) rather than failing a long run;
    ``stats["invalid_utf8_lines"]`` counts the lines that had any.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"caption file not found: {path}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    texts: list[str] = []
    blank = invalid = 0
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the empty piece after a final newline is not a line
    for raw in lines:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("utf-8", errors="replace")
            invalid += 1
        line = line.strip()
        if not line:
            blank += 1
            continue
        texts.append(line)
    if stats is not None:
        stats.update(sentences_read=len(texts), blank_lines=blank, invalid_utf8_lines=invalid)
    return texts


# ----------------------------------------------------------------------------- selection


def assign_rarest(labels: np.ndarray) -> np.ndarray:
    """For each labelled row, its rarest class: the one with the fewest rows.

    Classes are ranked by row count ascending, ties by class index; row ``i`` is
    assigned the first class in that ranking it has. Rows without a class get -1.
    """
    labels = np.asarray(labels)
    c = labels.shape[1]
    counts = labels.sum(axis=0, dtype=np.int64)
    order = np.lexsort((np.arange(c), counts))
    rank = np.empty(c, dtype=np.int64)
    rank[order] = np.arange(c)
    best = np.where(labels > 0, rank[None, :], c).min(axis=1, initial=c)
    return np.where(best < c, order[np.minimum(best, c - 1)], -1)


def _cap_per_class(assigned: np.ndarray, cap: int) -> np.ndarray:
    """Indices (in file order) of the rows kept when each class keeps its first ``cap`` rows."""
    keep = np.zeros(len(assigned), dtype=bool)
    for cls in np.unique(assigned[assigned >= 0]):
        rows = np.flatnonzero(assigned == cls)[:cap]
        keep[rows] = True
    return np.flatnonzero(keep)


# ----------------------------------------------------------------------------- builder


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown caption source {source!r}; expected one of {', '.join(SOURCES)}")


def _resolve(value: Any, default: Any) -> Any:
    return default if isinstance(value, str) and value == AUTO else value


def _check_positive_or_none(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, None or {AUTO!r}, got {value!r}")


def build_corpus(
    source: str,
    path: str | Path,
    class_list: ClassList,
    labeller: CaptionLabeller,
    *,
    add_templates: bool = True,
    exclude_image_ids: Iterable[int] | None = None,
    per_class_cap: int | None | str = AUTO,
    rarest_assignment: bool | str = AUTO,
    max_words: int | None | str = AUTO,
    selection: CaptionSelection | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> CaptionCorpus:
    """Read, label and select the sentences of a caption file; append the templates.

    ``source`` is ``"coco_captions"``, ``"localized_narratives"`` or ``"text"``.
    ``"auto"`` options take the source's defaults (:func:`source_defaults`):
    for ``"localized_narratives"`` ``rarest_assignment=True``,
    ``per_class_cap=1000``, ``max_words=77``; for the others ``False``, ``None``,
    ``None``. ``None`` means no cap / no word limit. ``max_words`` limits the
    tokens that are labelled (the stored text stays whole). ``per_class_cap``
    assigns each labelled sentence to one class (its rarest with
    ``rarest_assignment``, else its lowest class index) and keeps the first
    ``per_class_cap`` sentences of each class; kept sentences stay in file order
    (the reference grouped them by class, which only changes the order a
    shuffled loader starts from). ``exclude_image_ids`` (``"coco_captions"``
    only) drops the captions of those COCO images. ``selection``
    (``"coco_captions"`` only) picks the captions read (:class:`CaptionSelection`:
    every caption by default); ``stats["caption_recipe"]`` and
    ``stats["selected_captions"]`` record it. Templates (89 per class) come
    after the captions when ``add_templates``.

    With ``cache_dir``, the result is stored as ``corpus-<sha256>.json`` + ``.npz``
    keyed by every setting (labeller, file identity, options) and reused.
    Raises ``ValueError`` when nothing is left (no labelled sentence, no template).
    A text file with undecodable lines is read anyway and logged as a warning
    (also when the corpus comes from the cache).
    """
    _check_source(source)
    if not isinstance(class_list, ClassList):
        raise TypeError(f"class_list must be a ClassList, got {type(class_list).__name__}")
    if labeller.class_list != class_list:
        raise ValueError(
            f"the labeller was built for class list {labeller.class_list.dataset!r}, "
            f"not {class_list.dataset!r}"
        )
    defaults = _DEFAULTS[source]
    rarest_assignment = _resolve(rarest_assignment, defaults["rarest_assignment"])
    per_class_cap = _resolve(per_class_cap, defaults["per_class_cap"])
    max_words = _resolve(max_words, defaults["max_words"])
    if not isinstance(rarest_assignment, bool):
        raise ValueError(f"rarest_assignment must be True, False or {AUTO!r}, got {rarest_assignment!r}")
    _check_positive_or_none("per_class_cap", per_class_cap)
    _check_positive_or_none("max_words", max_words)
    per_class_cap = None if per_class_cap is None else int(per_class_cap)
    max_words = None if max_words is None else int(max_words)
    exclude = _int_set(exclude_image_ids, "exclude_image_ids")
    if exclude is not None and source != "coco_captions":
        raise ValueError(f"exclude_image_ids applies to the 'coco_captions' source only, not {source!r}")
    if selection is not None and selection.kind != "all" and source != "coco_captions":
        raise ValueError(f"a caption selection ({selection.describe()}) applies to the 'coco_captions' source "
                         f"only, not {source!r}")

    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"caption file not found: {path} (source {source!r})")
    st = path.stat()
    exclude_key = None if exclude is None else _ids_key(sorted(exclude))
    settings = {
        "corpus_format": CORPUS_FORMAT_VERSION,
        "source": source,
        "path": str(path),
        "file_size": st.st_size,
        "file_mtime_ns": st.st_mtime_ns,
        "labeller": labeller.settings(),
        "options": {
            "add_templates": bool(add_templates),
            "exclude_image_ids": exclude_key,
            "per_class_cap": per_class_cap,
            "rarest_assignment": rarest_assignment,
            "max_words": max_words,
            "selection": (selection or CaptionSelection()).settings() if source == "coco_captions" else None,
        },
    }

    cache_json = cache_npz = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()
        cache_dir = Path(cache_dir).expanduser()
        cache_json = cache_dir / f"corpus-{key}.json"
        cache_npz = cache_dir / f"corpus-{key}.npz"
        cached = _load_cached(cache_json, cache_npz, settings)
        if cached is not None:
            log.info("caption corpus: reusing %s (%d sentences)", cache_json, len(cached))
            _warn_about_undecodable_lines(cached, path)
            return cached

    stats: dict[str, Any] = {}
    texts = _read_source(source, path, exclude, selection, stats)

    labels = labeller.label_many(texts, max_words=max_words, progress=progress)
    labelled = np.flatnonzero(labels.any(axis=1))
    stats["labelled"] = int(len(labelled))
    stats["dropped_no_class"] = int(len(texts) - len(labelled))
    kept = labelled
    if per_class_cap is not None or rarest_assignment:
        sub = labels[labelled]
        if rarest_assignment:
            assigned = assign_rarest(sub)
        else:
            assigned = np.argmax(sub, axis=1)  # lowest class index present
        stats["assigned_per_class"] = np.bincount(assigned, minlength=len(class_list)).tolist()
        if per_class_cap is not None:
            kept = labelled[_cap_per_class(assigned, per_class_cap)]
    stats["dropped_by_cap"] = int(len(labelled) - len(kept))
    out_texts = [texts[i] for i in kept]
    out_labels = labels[kept]
    stats["captions"] = len(out_texts)
    stats["caption_class_counts"] = out_labels.sum(axis=0, dtype=np.int64).tolist()

    n_templates = 0
    if add_templates:
        templ = template_sentences(class_list)
        n_templates = len(templ)
        t_labels = np.zeros((n_templates, len(class_list)), dtype=np.uint8)
        t_labels[np.arange(n_templates), [c for _, c in templ]] = 1
        out_texts.extend(s for s, _ in templ)
        out_labels = np.concatenate([out_labels, t_labels], axis=0)
    stats["templates"] = n_templates
    stats["total"] = len(out_texts)
    if not out_texts:
        raise ValueError(
            f"{path}: no sentence of this {source!r} file mentions a class of class list "
            f"{class_list.dataset!r} ({len(class_list)} classes), and templates are off: the corpus is empty"
        )
    corpus = CaptionCorpus(
        texts=out_texts,
        labels=out_labels,
        classnames=class_list.names,
        source=source,
        lemmatizer=labeller.lemmatizer.name,
        n_templates=n_templates,
        stats=stats,
    )
    log.info(
        "caption corpus from %s: %d read, %d labelled, %d kept, %d templates (lemmatizer %s)",
        path, stats["sentences_read"], stats["labelled"], stats["captions"], n_templates, corpus.lemmatizer,
    )
    _warn_about_undecodable_lines(corpus, path)
    if cache_json is not None and cache_npz is not None:
        _store_cached(corpus, cache_json, cache_npz, settings)
    return corpus


def _read_source(source: str, path: Path, exclude: set[int] | None, selection: CaptionSelection | None,
                 stats: dict[str, Any]) -> list[str]:
    """The sentences of one caption file, with the reader's counts (and the COCO recipe) in ``stats``."""
    if source == "coco_captions":
        texts = read_coco_captions(path, exclude, selection=selection, stats=stats)
        log.info("COCO captions of %s: %s, %d of %d captions", path.name, stats["caption_recipe"],
                 stats["selected_captions"], stats["sentences_read"])
        return texts
    if source == "localized_narratives":
        return read_localized_narratives(path, stats=stats)
    return read_text_file(path, stats=stats)


def _warn_about_undecodable_lines(corpus: CaptionCorpus, path: Path) -> None:
    """Say in the log (not only in the stats) that a text file had lines that are not UTF-8."""
    bad = int(corpus.stats.get("invalid_utf8_lines", 0))
    if bad:
        log.warning("%s: %d line%s not valid UTF-8; their undecodable bytes were replaced by U+FFFD and "
                    "training goes on (check the caption file's encoding)", path, bad, "s are" if bad > 1 else " is")


# ----------------------------------------------------------------------------- cache


def _store_cached(corpus: CaptionCorpus, cache_json: Path, cache_npz: Path, settings: dict) -> None:
    payload = {
        "settings": settings,
        "classnames": list(corpus.classnames),
        "source": corpus.source,
        "lemmatizer": corpus.lemmatizer,
        "n_templates": corpus.n_templates,
        "stats": corpus.stats,
        "texts": corpus.texts,
    }
    # The labels first: the json appearing is what marks the entry complete.
    atomic_savez(cache_npz, labels=corpus.labels)
    atomic_write_text(cache_json, json.dumps(payload, ensure_ascii=False))


def _load_cached(cache_json: Path, cache_npz: Path, settings: dict) -> CaptionCorpus | None:
    if not cache_json.is_file():
        return None
    try:
        payload = json.loads(cache_json.read_bytes().decode("utf-8"))
        if payload.get("settings") != settings:
            log.warning("caption corpus cache %s was built with other settings; rebuilding", cache_json)
            return None
        with np.load(cache_npz, allow_pickle=False) as z:
            labels = z["labels"]
        return CaptionCorpus(
            texts=list(payload["texts"]),
            labels=labels,
            classnames=tuple(payload["classnames"]),
            source=payload["source"],
            lemmatizer=payload["lemmatizer"],
            n_templates=int(payload["n_templates"]),
            stats=payload["stats"],
        )
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        log.warning("caption corpus cache %s is unreadable (%s); rebuilding", cache_json, exc)
        return None
