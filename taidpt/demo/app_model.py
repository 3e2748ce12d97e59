"""``bash run.sh app``: the tagging page on the offline demo's model (``python -m taidpt.demo.app_model``).

Uses a finished ``python -m taidpt.demo --out DIR`` (running it first when its TaI-DPT run is missing),
exports that run once to ``DIR/app/taidpt_demo.onnx`` with ``--open-vocabulary`` and label-free
thresholds chosen on generated images nobody labelled (the demo's ``trainval`` scenes, their labels
unread), lists a few of the demo's test images as the page's examples, then replaces this process with
``python -m taidpt.app`` on that model (the page itself runs without torch). See docs/app.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from taidpt.demo.voc_writer import write_image_list
from taidpt.serve.metadata import MetadataError, read_onnx_metadata

RUN = "taidpt_seed1"  # the demo run the page serves
N_UNLABELLED = 1000  # generated scenes the label-free thresholds are chosen on
N_EXAMPLES = 6  # demo test images shown as examples
MODEL = Path("app") / "taidpt_demo.onnx"


def _python(args: Sequence[str], what: str) -> None:
    """Run ``python ARGS`` from the checkout; a failure ends this command with its exit code."""
    print(f"[app] {what}: python {' '.join(args)}", file=sys.stderr, flush=True)
    root = Path(__file__).resolve().parents[2]
    code = subprocess.run([sys.executable, *args], cwd=root).returncode
    if code:
        raise SystemExit(f"error: {what} failed (exit code {code})")


def demo_finished(demo: Path) -> bool:
    """Whether ``demo`` holds the finished TaI-DPT run the page serves."""
    return (demo / "runs" / RUN / "results.json").is_file()


def model_ready(model: Path) -> bool:
    """Whether ``model`` is a complete open-vocabulary export with stored thresholds."""
    try:
        meta = read_onnx_metadata(model)
    except (MetadataError, OSError, ValueError):
        return False
    return bool(meta.open_model and meta.thresholds)


def unlabelled_list(demo: Path, n: int = N_UNLABELLED) -> Path:
    """A list file of ``n`` generated demo scenes (written once, as the demo's ``trainval`` split) whose labels
    are not read: the unlabelled images the thresholds are chosen on."""
    from taidpt.demo.image_prompting import write_train_split

    write_train_split(demo / "data", n)
    return write_image_list(demo / "data", "trainval", demo / "app" / "unlabelled.txt")


def example_list(demo: Path, n: int = N_EXAMPLES) -> Path:
    """A list file of the first ``n`` demo test images."""
    return write_image_list(demo / "data", "test", demo / "app" / "examples.txt", limit=n)


def prepare(demo: Path, *, n_unlabelled: int = N_UNLABELLED) -> tuple[Path, Path]:
    """(model, examples list) of the page on the demo in ``demo``: the demo and the export are made when missing."""
    if not demo_finished(demo):
        _python(["-m", "taidpt.demo", "--out", str(demo)], "the offline demo (first run)")
    model = demo / MODEL
    if not model_ready(model):
        images = unlabelled_list(demo, n_unlabelled)
        _python(["-m", "export.onnx", "--model-dir", str(demo / "runs" / RUN), "--output", str(model),
                 "--open-vocabulary", "--label-free-thresholds", "--calibration-images", str(images)],
                "export with open vocabulary and label-free thresholds")
    return model, example_list(demo)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m taidpt.demo.app_model",
                                description="Open the tagging page on the offline demo's TaI-DPT model.")
    p.add_argument("--out", default="output/demo", help="the demo's folder (python -m taidpt.demo --out)")
    p.add_argument("--prepare-only", action="store_true", help="make the model and examples, print them, and stop")
    p.add_argument("app_args", nargs=argparse.REMAINDER, help="passed to python -m taidpt.app (after --)")
    args = p.parse_args(argv)
    model, examples = prepare(Path(args.out))
    if args.prepare_only:
        print(f"{model}\n{examples}")
        return 0
    extra = args.app_args[1:] if args.app_args[:1] == ["--"] else args.app_args
    command = [sys.executable, "-m", "taidpt.app", "--model", str(model), "--examples", str(examples), *extra]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
