"""``python -m taidpt.images.datasets_cli --run-sh-table``: the datasets ``run.sh`` runs, from their specs.

One line per registered :class:`~taidpt.images.registry.DatasetSpec` that has a ``config``, its fields
separated by tabs::

    <config>	<name>,<name>,...	<file under $DATA>	<file under $DATA> ...

``run.sh`` accepts any of the names (its usage line shows the first of each), runs
``configs/datasets/<config>.yaml`` into ``$OUTPUT_ROOT/<config>``, and first checks that the files exist.
"""

from __future__ import annotations

import argparse
import sys

from taidpt.images.registry import DATASETS


def run_sh_rows() -> list[tuple[str, ...]]:
    """``(config, "name,name,...", file, ...)`` for every dataset run.sh can run, in registration order."""
    return [(spec.config, ",".join(spec.shell_names()), *spec.shell_needs())
            for spec in DATASETS.values() if spec.config]


def run_sh_table() -> str:
    """:func:`run_sh_rows` as tab-separated lines."""
    return "".join("\t".join(row) + "\n" for row in run_sh_rows())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taidpt.images.datasets_cli", description=__doc__.splitlines()[0])
    parser.add_argument("--run-sh-table", action="store_true", required=True,
                        help="print run.sh's table: config, names, files needed under $DATA (tab-separated)")
    parser.parse_args(argv)
    sys.stdout.write(run_sh_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
