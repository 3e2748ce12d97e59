"""Click-to-result time of the tagging page in a real browser, for one image.

    python bench/app_latency.py [--demo-dir output/demo] [--rn50] [--repeats 5] [--screenshot docs/images/app.png]

Starts ``python -m taidpt.app`` on the offline demo's export (``bash run.sh app`` makes it) and, with
``--rn50``, on a RN50 TaI-DPT export with random weights (80 COCO classes, 224 px, fp32), drives Debian's
Chromium with Playwright, uploads one demo test image, clicks run ``--repeats`` times and prints a table of
the time from the click until the result cards are on the page (the first click, then the median of the
rest). ``--screenshot`` saves the demo page after a run with a few examples.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless=new", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
DONE = ("(before) => { const m = document.querySelector('#results .tag-run');"
        " return m && m.getAttribute('data-run') !== before; }")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(model: Path, examples: Path | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "taidpt.app", "--model", str(model), "--port", str(port)]
    if examples:
        cmd += ["--examples", str(examples)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stderr.readline()
    if "taidpt app:" not in line:
        proc.kill()
        raise SystemExit(f"the app did not start: {line}{proc.stderr.read()[-2000:]}")
    return proc, f"http://127.0.0.1:{port}/"


def click_times(browser, url: str, images: list[Path], repeats: int, screenshot: Path | None = None) -> list[float]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector("#run", timeout=60_000)
    page.locator("#images input[type=file]").set_input_files([str(p) for p in images])
    page.wait_for_function("(names) => { const t = document.querySelector('#images').innerText.replace(/\\s/g, '');"
                           " return names.every(n => t.includes(n)); }", arg=[p.name for p in images], timeout=60_000)
    times = []
    for _ in range(repeats):
        marker = page.locator("#results .tag-run")
        before = marker.get_attribute("data-run") if marker.count() else ""
        t0 = time.perf_counter()
        page.locator("#run").click()
        page.wait_for_function(DONE, arg=before, timeout=120_000)
        times.append(time.perf_counter() - t0)
    if screenshot:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    return times


def rn50_model(folder: Path) -> Path:
    from inference_speed import build

    return build("RN50", 224, folder, ["fp32"], 0)["paths"]["fp32"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Click-to-result time of the tagging page (real Chromium).")
    p.add_argument("--demo-dir", default="output/demo", help="a demo folder prepared by bash run.sh app")
    p.add_argument("--rn50", action="store_true", help="also a RN50 export with random weights (built here)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--screenshot", default="", help="save the demo page, after a run on 3 examples, here")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    demo = Path(args.demo_dir)
    model = demo / "app" / "taidpt_demo.onnx"
    if not model.is_file():
        raise SystemExit(f"{model} is missing: run bash run.sh app (or python -m taidpt.demo.app_model "
                         f"--out {demo} --prepare-only) first")
    examples = demo / "app" / "examples.txt"
    image = [Path(examples.read_text().split()[0])]
    models = {"demo TaI-DPT (TinyRN-like, 64 px, 14 classes, open vocabulary)": (model, examples)}
    tmp = tempfile.TemporaryDirectory()
    if args.rn50:
        models["RN50 TaI-DPT (random weights, 224 px, 80 classes, fp32)"] = (rn50_model(Path(tmp.name)), None)
    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for i, (name, (path, ex)) in enumerate(models.items()):
            proc, url = start_app(path, ex)
            try:
                times = click_times(browser, url, image, args.repeats)
                if i == 0 and args.screenshot:
                    shots = [Path(x) for x in examples.read_text().split()[:3]]
                    click_times(browser, url, shots, 1, Path(args.screenshot))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            rows.append((name, times[0], statistics.median(times[1:]) if len(times) > 1 else times[0]))
        browser.close()
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"\nMachine: {cpu_name()}, {os.cpu_count()} logical CPUs; {platform.system()} {platform.release()}; {now}")
    print(f"Command: python bench/app_latency.py{' --rn50' if args.rn50 else ''} --repeats {args.repeats}\n")
    print("| model | first click (s) | median of the next clicks (s) |")
    print("|---|---|---|")
    for name, first, median in rows:
        print(f"| {name} | {first:.2f} | {median:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
