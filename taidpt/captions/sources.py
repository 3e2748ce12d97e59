"""Readers of the caption sources and of the id files that go with them.

COCO captions json (:func:`read_coco_captions`, the captions a
:class:`~taidpt.captions.selection.CaptionSelection` picks; ``exclude_image_ids`` drops test images'
captions), caption-id lists (:func:`read_caption_ids`), Localized Narratives jsonl
(:func:`read_localized_narratives`) and plain text (:func:`read_text_file`). Each returns the sentences
in file order and, given a ``stats`` dict, records what it counted (read, blank, excluded, undecodable).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from taidpt.captions.selection import CaptionSelection, CocoCaptions, selected_rows
from taidpt.utils.atomic import atomic_write_text
from taidpt.utils.safe_pickle import load_plain

__all__ = [
    "read_caption_ids",
    "read_coco_captions",
    "read_coco_image_ids",
    "read_localized_narratives",
    "read_text_file",
    "write_text_file",
]

PICKLE_SUFFIXES = (".pkl", ".pickle")


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


def int_set(ids: Iterable[Any] | None, what: str) -> set[int] | None:
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coco_annotations(path: Path, need_ids: bool) -> CocoCaptions:
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
    return CocoCaptions(
        ann_ids=np.array([a["id"] if _is_int(a.get("id")) else -1 for a in anns], dtype=np.int64),
        image_ids=np.array([a["image_id"] for a in anns], dtype=np.int64),
        captions=[a["caption"].strip() for a in anns],
    )


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
    exclude = int_set(exclude_image_ids, "exclude_image_ids")
    selection = selection or CaptionSelection()
    coco = _coco_annotations(path, need_ids=selection.kind != "all")
    rows = selected_rows(coco, selection, path)
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


def write_text_file(path: str | Path, sentences: Iterable[str]) -> Path:
    """Write ``sentences`` one per line (UTF-8, atomically): the format :func:`read_text_file` reads.

    A sentence holding a line break would silently become two samples, so it is an error.
    """
    sentences = list(sentences)
    for k, text in enumerate(sentences):
        if "\n" in text or "\r" in text:
            raise ValueError(f"sentence {k} contains a line break: {text!r}")
    atomic_write_text(path, "".join(f"{t}\n" for t in sentences))
    return Path(path)


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
