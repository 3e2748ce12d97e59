"""``python -m taidpt.captions.check``: how the caption labeller reads a text corpus, before training on it.

For a class list and a file of one sentence per line (the ``text`` source: a written or generated corpus),
prints how many sentences name each class, how many name none (training drops them), and the first of
those, so a corpus written by hand or by a language model can be fixed before a run. Bad input is one
``error:`` line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

import numpy as np

from taidpt.captions.lemmatize import BACKENDS, LemmatizerUnavailable
from taidpt.utils.commands import prog_name


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m taidpt.captions.check``."""
    p = argparse.ArgumentParser(prog=prog_name("python -m taidpt.captions.check"),
                                description="Report how the caption labeller reads a one-sentence-per-line corpus.")
    p.add_argument("corpus", help="text file, one sentence per line")
    p.add_argument("--class-list", required=True, metavar="FILE", help="class-list file or built-in name")
    p.add_argument("--lemmatizer", default="auto", choices=BACKENDS, help="use the one training uses")
    p.add_argument("--show", type=int, default=20, metavar="K", help="print the first K sentences naming no class")
    return p


def report(sentences: Sequence[str], names: Sequence[str], labels: np.ndarray, show: int) -> str:
    """The report's text: totals, per-class counts (rarest first) and the first ``show`` sentences naming none."""
    none = [s for s, row in zip(sentences, labels) if not row.any()]
    counts = labels.sum(axis=0)
    lines = [f"{len(sentences)} sentences: {len(sentences) - len(none)} name a class, {len(none)} name none "
             f"(dropped by training)", "sentences per class, rarest first:"]
    lines += [f"  {int(counts[i]):>7}  {names[i]}" for i in np.argsort(counts, kind="stable")]
    if none and show > 0:
        lines.append(f"first {min(show, len(none))} sentences naming no class:")
        lines += [f"  {s}" for s in none[:show]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report; 0 on success, 2 on bad input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    from taidpt.captions.classes import load_class_list
    from taidpt.captions.labelling import CaptionLabeller
    from taidpt.captions.lemmatize import get_lemmatizer
    from taidpt.captions.sources import read_text_file

    try:
        classes = load_class_list(args.class_list)
        sentences = read_text_file(args.corpus)
        labeller = CaptionLabeller(classes, get_lemmatizer(args.lemmatizer))
    except (ValueError, FileNotFoundError, LemmatizerUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report(sentences, classes.names, labeller.label_many(sentences), args.show))
    return 0


if __name__ == "__main__":
    sys.exit(main())
