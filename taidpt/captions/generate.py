"""``python -m taidpt.captions.generate`` (``taidpt-corpus``): write a training corpus from a class list alone.

One sentence per line, the format of the ``text`` caption source (:mod:`taidpt.captions.generator` writes
them); the file is replaced atomically. Bad input (a missing or malformed file, an empty class list, a bad
line of a frequency or pairs file) is one ``error:`` line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from taidpt.captions.generator import DEFAULT_MIX, generate_sentences, recipe_from_files
from taidpt.captions.lemmatize import BACKENDS, LemmatizerUnavailable
from taidpt.captions.sources import write_text_file
from taidpt.utils.atomic import OutputPathError, check_writable
from taidpt.utils.commands import prog_name


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``taidpt-corpus``."""
    p = argparse.ArgumentParser(prog=prog_name("python -m taidpt.captions.generate"),
                                description="Write training sentences that name the classes of a class list.")
    p.add_argument("--class-list", required=True, metavar="FILE",
                   help="class-list file (.txt 'name, synonym, ...' per line, or .json) or a built-in name")
    p.add_argument("--n", type=_positive, default=10000, help="number of sentences (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same sentences (default 0)")
    p.add_argument("--out", required=True, metavar="FILE", help="the corpus, one sentence per line")
    p.add_argument("--mix", default=",".join(map(str, DEFAULT_MIX)), metavar="S1,S2,S3",
                   help="shares of sentences naming 1, 2 and 3 classes (default %(default)s)")
    p.add_argument("--frequencies", default="", metavar="FILE",
                   help="'class name, weight' per line: how often each class is named (default: equally)")
    p.add_argument("--pairs", default="", metavar="FILE",
                   help="'class name, class name[, weight]' per line: classes seen together in your images")
    p.add_argument("--lemmatizer", default="auto", choices=BACKENDS,
                   help="the labeller's lemmatizer; use the one training uses (DATASET.LEMMATIZER)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Write the corpus; 0 on success, 2 on bad input, 1 when the file cannot be written."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    from taidpt.captions.classes import load_class_list
    from taidpt.captions.labelling import CaptionLabeller
    from taidpt.captions.lemmatize import get_lemmatizer

    try:
        check_writable(args.out)
        classes = load_class_list(args.class_list)
        recipe = recipe_from_files(classes, n=args.n, seed=args.seed, mix=args.mix, frequencies=args.frequencies,
                                   pairs=args.pairs)
        labeller = CaptionLabeller(classes, get_lemmatizer(args.lemmatizer))
        result = generate_sentences(classes, labeller, recipe)
    except (ValueError, OutputPathError, LemmatizerUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        write_text_file(args.out, result.sentences)
    except OSError as exc:
        print(f"error: {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    one, two, three = result.stats["naming_1_2_3"]
    print(f"wrote {len(result.sentences)} sentences to {args.out} ({one} name one class, {two} two, {three} three; "
          f"seed {args.seed}, lemmatizer {labeller.lemmatizer.name}, {len(classes)} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
