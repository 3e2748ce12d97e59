"""The generated caption source's file: written once per recipe into the cache, then reused.

``DATASET.CAPTION_SOURCE generated`` trains on sentences of :mod:`taidpt.captions.generator`. They are
stored as ``sentences-<key>.txt`` (the ``text`` format) beside ``sentences-<key>.json``, which holds
the settings and the generator's counts: the run records them as how its corpus was made.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from taidpt.captions.classes import ClassList
from taidpt.captions.generator import GeneratorRecipe, generate_sentences
from taidpt.captions.labelling import CaptionLabeller
from taidpt.captions.phrasing import load_grammar
from taidpt.captions.sources import write_text_file
from taidpt.utils.atomic import atomic_write_json

__all__ = ["generated_caption_file"]

# Bump when the generator draws differently for the same settings, so cached files are rewritten.
GENERATOR_VERSION = 1


def generated_caption_file(folder: str | Path, classes: ClassList, labeller: CaptionLabeller,
                           recipe: GeneratorRecipe) -> tuple[Path, dict[str, Any]]:
    """The sentence file for this recipe under ``folder`` (generated when missing) and its record:
    the settings (recipe, grammar, labeller) and the generator's counts."""
    grammar = load_grammar()
    settings = {"generator_version": GENERATOR_VERSION, "recipe": recipe.settings(), "grammar": grammar.settings(),
                "labeller": labeller.settings()}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:40]
    text_path, record_path = Path(folder) / f"sentences-{key}.txt", Path(folder) / f"sentences-{key}.json"
    if text_path.is_file() and record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if record.get("settings") == settings:
                return text_path, record
        except (OSError, ValueError):
            pass  # unreadable: written again below
    result = generate_sentences(classes, labeller, recipe, grammar)
    record = {"settings": settings, "stats": {k: v for k, v in result.stats.items() if k != "recipe"}}
    # The sentences first: the record appearing is what marks the pair complete.
    write_text_file(text_path, result.sentences)
    atomic_write_json(record_path, record)
    return text_path, record
