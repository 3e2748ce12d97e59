"""``python -m taidpt.app --model M.onnx [--host 127.0.0.1] [--port 7860]`` (``taidpt-app``): the tagging page.

The model is opened (and checked) before the server starts; a bad model, example or flag is one line on
stderr and exit code 2. The server binds 127.0.0.1 unless ``--host`` says otherwise, and says so when it
binds elsewhere. Importing ``taidpt`` switched gradio's analytics and onnxruntime's telemetry off
(:mod:`taidpt.utils.telemetry`), and the page loads nothing from another host.
See docs/app.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from taidpt.app.tagging import MAX_CLASSES, MAX_IMAGES, MAX_MEGAPIXELS, Tagger
from taidpt.serve.decision import DecisionError
from taidpt.serve.inputs import InputError, collect_images
from taidpt.serve.metadata import MetadataError
from taidpt.serve.open_vocab import OpenVocabError
from taidpt.serve.predictor import Predictor
from taidpt.serve.runtime import ModelLoadError, add_runtime_arguments
from taidpt.utils.commands import prog_name
from taidpt.utils.pathtext import escape_path

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORT = 7860
MAX_FILE_SIZE = "50mb"  # per uploaded file, enforced by gradio before the file reaches the tagger
REFUSED = (ModelLoadError, MetadataError, OpenVocabError, DecisionError, InputError, FileNotFoundError)


def build_parser(prog: str = "python -m taidpt.app") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name(prog), description="A browser page that tags images with an "
                                "exported TaI-DPT model (any class list with an --open-vocabulary export).")
    p.add_argument("--model", required=True, help="the exported model: M.onnx (or a TensorRT engine M.plan)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 serves the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--examples", default=None,
                   help="example images shown under the upload: a folder, a .txt list of paths, or a glob")
    p.add_argument("--max-classes", type=int, default=MAX_CLASSES,
                   help=f"most class names the class box takes (default {MAX_CLASSES})")
    p.add_argument("--max-images", type=int, default=MAX_IMAGES,
                   help=f"most images scored per click (default {MAX_IMAGES})")
    p.add_argument("--max-megapixels", type=float, default=MAX_MEGAPIXELS,
                   help=f"larger images are refused unread (default {MAX_MEGAPIXELS:g})")
    add_runtime_arguments(p)
    return p


def bind_note(host: str, port: int) -> str:
    """The line printed when the server starts: where the page is, and a warning when it is not local only."""
    if host in LOCAL_HOSTS:
        return f"taidpt app: http://{host}:{port}/ (this machine only; Ctrl-C stops it)"
    return (f"taidpt app: serving on {host}:{port}, NOT only this machine: anyone who can reach this address "
            f"can use the page (it has no login); use --host 127.0.0.1 to keep it local. Ctrl-C stops it")


def launch(page: Any, host: str, port: int, examples: Sequence[str] = ()) -> str:
    """Start ``page`` in a background thread on ``host:port``; returns its local URL."""
    from taidpt.app.render import CSS

    folders = sorted({str(Path(e).resolve().parent) for e in examples})
    _, url, _ = page.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                            show_error=False, share=False, inbrowser=False, allowed_paths=folders,
                            max_file_size=MAX_FILE_SIZE, ssr_mode=False, mcp_server=False, pwa=False,
                            enable_monitoring=False, css=CSS)
    return url


def open_tagger(args: argparse.Namespace) -> Tagger:
    """The model of ``--model`` with the page's limits; errors are one line."""
    for flag in ("max_classes", "max_images", "max_megapixels"):
        if getattr(args, flag) <= 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be > 0")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    predictor = Predictor.from_onnx(args.model, providers=args.providers, threads=args.threads,
                                    workers=args.workers)
    return Tagger(predictor, max_classes=args.max_classes, max_images=args.max_images,
                  max_megapixels=args.max_megapixels)


def main(argv: Sequence[str] | None = None, prog: str = "python -m taidpt.app") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        examples = collect_images(args.examples) if args.examples else []
        tagger = open_tagger(args)
    except (*REFUSED, ValueError) as exc:
        print(f"error: {escape_path(str(exc))}", file=sys.stderr)
        return 2
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("error: the app needs gradio: pip install 'taidpt[app]' (or -r requirements.txt)", file=sys.stderr)
        return 2
    from taidpt.app.page import build_page

    downloads = tempfile.mkdtemp(prefix="taidpt-app-")
    try:
        page = build_page(tagger, download_root=downloads, examples=examples)
        try:
            launch(page, args.host, args.port, examples)
        except OSError as exc:
            print(f"error: cannot serve on {args.host}:{args.port} ({exc})", file=sys.stderr)
            return 2
        print(bind_note(args.host, args.port), file=sys.stderr, flush=True)
        try:
            page.block_thread()
        except KeyboardInterrupt:
            pass
        finally:
            page.close()
        return 0
    finally:
        tagger.predictor.close()
        shutil.rmtree(downloads, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
