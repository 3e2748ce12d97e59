"""How a command names itself in ``--help`` (:func:`prog_name`), and old flag spellings kept for a release.

The same ``main`` runs as ``python -m export.infer`` from a checkout and as ``taidpt-infer`` from an
installed package; usage lines should show the one the user ran. :class:`DeprecatedFlag` stores an old
spelling into the new flag and prints one line naming the flag to use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def prog_name(module_form: str) -> str:
    """``taidpt-*`` when started through that console script, else ``module_form`` (``python -m ...``)."""
    invoked = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return invoked if invoked.startswith("taidpt-") else module_form


class DeprecatedFlag(argparse.Action):
    """An old spelling kept for one release: stores into the new flag's ``dest`` and prints one line
    naming the flag to use (``add_argument("--old", dest=..., action=DeprecatedFlag, use="--new")``)."""

    def __init__(self, option_strings: list[str], dest: str, use: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.use = use

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"note: {option_string} is deprecated in {parser.prog}; use {self.use} (one meaning per flag "
              f"across the taidpt commands)", file=sys.stderr)
        setattr(namespace, self.dest, values)


__all__ = ["DeprecatedFlag", "prog_name"]
