"""The tagging page in a real browser: ``python -m taidpt.app`` started as a user starts it, Debian's Chromium
driven by Playwright with every host but 127.0.0.1 unreachable.

The page's labels are compared with :class:`Predictor`'s for the same image and classes; bad uploads and
class boxes give a message and the server keeps serving; two browser sessions at once see only their own
results; no request leaves the machine (the page's, in the browser; the server's, through a proxy trap).
A screenshot is saved to ``test-artifacts/app.png``. Chromium is installed with apt-get when missing and
the tests run as root (``.ci/run`` does); otherwise they are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app_support import write_bomb, write_images

pytest.importorskip("gradio", reason="the app needs gradio (pip install -r requirements.txt)")
playwright = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (requirements.txt)")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"
WAIT_MS = 60_000
# The upload shows each file's name (split over elements, hence the whitespace removed) once it is on the server.
UPLOADED = ("(names) => { const t = document.querySelector('#images').innerText.replace(/\\s/g, '');"
            " return names.every(n => t.includes(n)); }")


def ensure_chromium() -> str:
    """The system Chromium, installed with apt-get when missing and running as root; else a skip reason."""
    if os.path.exists(CHROMIUM):
        return ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{CHROMIUM} is missing (install Debian's chromium and chromium-driver, as .ci/run does)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode:
            return f"apt-get could not install chromium: {proc.stderr.strip().splitlines()[-1:]}"
    return "" if os.path.exists(CHROMIUM) else f"apt-get ran but {CHROMIUM} is still missing"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProxyTrap:
    """A listening socket given to the app as its HTTP(S) proxy: every connection is an outgoing request."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def browser():
    reason = ensure_chromium()
    if reason:
        pytest.skip(reason)
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new", OFFLINE])
        yield b
        b.close()


@pytest.fixture(scope="module")
def served(tiny_rn, tmp_path_factory):
    """The app on a tiny open-vocabulary export with stored thresholds, started by its command."""
    from app_support import export_open_tiny

    tmp = tmp_path_factory.mktemp("app")
    model = export_open_tiny(tiny_rn, tmp / "model" / "m.onnx", thresholds={"dog": 0.1, "cat": -0.2, "car": 0.0})
    examples = write_images(tmp / "examples", n=2, seed=9)
    port, trap = free_port(), ProxyTrap()
    proxy = f"http://127.0.0.1:{trap.port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "ALL_PROXY": proxy,
           "http_proxy": proxy, "https_proxy": proxy, "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost", "GRADIO_TEMP_DIR": str(tmp / "gradio")}
    env.pop("HF_HUB_OFFLINE", None)  # nothing may be asked of the hub, offline flag or not
    log = open(tmp / "app.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "taidpt.app", "--model", str(model), "--port", str(port),
                             "--examples", str(tmp / "examples"), "--max-classes", "50"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while "taidpt app:" not in (tmp / "app.log").read_text():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the app did not start:\n{(tmp / 'app.log').read_text()[-3000:]}")
        time.sleep(0.2)
    yield {"url": url, "model": model, "tmp": tmp, "trap": trap, "proc": proc, "examples": examples,
           "log": tmp / "app.log"}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    trap.close()
    log.close()


def open_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    page.wait_for_selector("#run", timeout=WAIT_MS)
    return context, page, requests


def upload(page, files: list[Path]) -> None:
    """Replace the page's uploads with ``files`` (an upload adds to the list, so the list is cleared first)."""
    clear = page.locator("#images button[aria-label=Clear]")
    if clear.count():
        clear.click()
        page.wait_for_function("() => !document.querySelector('#images button[aria-label=Clear]')", timeout=WAIT_MS)
    page.locator("#images input[type=file]").set_input_files([str(f) for f in files])
    page.wait_for_function(UPLOADED, arg=[f.name for f in files], timeout=WAIT_MS)


def run_page(page, files: list[Path] | None, classes: str | None) -> None:
    """Upload ``files``, type ``classes``, click run and wait until this click's outcome is shown."""
    if files is not None:
        upload(page, files)
    if classes is not None:
        page.locator("#classes textarea").fill(classes)
    marker = page.locator("#results .tag-run")
    before = marker.get_attribute("data-run") if marker.count() else ""
    page.locator("#run").click()
    page.wait_for_function("(before) => { const m = document.querySelector('#results .tag-run');"
                           " return m && m.getAttribute('data-run') !== before; }", arg=before, timeout=WAIT_MS)


def page_labels(page) -> dict[str, list[str]]:
    """Image name -> its labels, as the result cards show them."""
    out = {}
    for card in page.locator("#results .tag-card").all():
        name = card.locator(".tag-name").inner_text().strip()
        out[name] = [chip.inner_text().strip() for chip in card.locator(".tag-label").all()]
    return out


def assert_downloads_are_infer_rows(page, images: list[Path], classes: list[str], model: Path, tmp: Path) -> None:
    """The page's JSON and CSV, downloaded as a user does, hold the rows ``export.infer`` writes for the same
    images and classes (the page names each image by its file name)."""
    from taidpt.serve.infer import main as infer

    got = {}
    for link in page.locator("#downloads a[download]").all():
        with page.expect_download() as info:
            link.click()
        got[Path(info.value.suggested_filename).suffix] = info.value.path().read_text()
    assert set(got) == {".json", ".csv"}
    listing = tmp / "inputs.txt"
    listing.write_text("".join(f"{p}\n" for p in images))
    for ext in (".json", ".csv"):
        out = tmp / f"infer{ext}"
        assert infer(["--model", str(model), "--images", str(listing), "--classes", ",".join(classes),
                      "--output", str(out)]) == 0
        expected = out.read_text()
        for p in images:
            expected = expected.replace(str(p), p.name)
        if ext == ".csv":
            assert got[ext] == expected
        else:
            ours, theirs = json.loads(got[ext]), json.loads(expected)
            assert ours["images"] == theirs["images"] and ours["decision"] == theirs["decision"]
            assert ours["model_sha256"] == theirs["model_sha256"] and ours["classes"] == classes


def test_page_labels_equal_the_predictors_and_bad_uploads_are_messages(browser, served, tmp_path):
    from taidpt.serve.predictor import Predictor

    images = write_images(tmp_path / "up", n=3, seed=1)
    classes = ["zebra", "dog", "hair drier", "car"]
    context, page, requests = open_page(browser, served["url"])
    started = time.perf_counter()
    run_page(page, images, ", ".join(classes))
    seconds = time.perf_counter() - started
    shown = page_labels(page)
    with Predictor.from_onnx(served["model"]) as predictor:
        expected = {Path(p.source).name: p.labels for p in predictor.predict(images, classes)}
    assert shown == expected and any(expected.values()), (shown, expected)
    assert "stored per-class thresholds" in page.locator("#decision").inner_text()
    table = page.locator("#logits").inner_text()
    assert all(c in table for c in classes) and all(p.name in table for p in images)
    assert_downloads_are_infer_rows(page, images, classes, served["model"], tmp_path)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
    print(f"click to result, {len(images)} images: {seconds:.2f} s")

    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    bomb = write_bomb(tmp_path / "bomb.png")
    run_page(page, [text, empty, bomb, images[0]], None)
    cards = page.locator("#results").inner_text()
    assert "notes.txt" in cards and "not scored: UnidentifiedImageError" in cards
    assert "file is empty (0 bytes)" in cards and "above this page's limit" in cards
    assert page_labels(page)[images[0].name] == expected[images[0].name]  # the good image is still tagged

    for box, message in [("", "the class box is empty"),
                         (", ".join(f"class {i}" for i in range(500)), "500 class names: this page scores at most 50"),
                         ("dog, ca\u0007t", "holds a control character"),
                         ("dog, Dog", "one class to the model")]:
        run_page(page, [images[0]], box)
        assert message in page.locator("#message").inner_text(), box
        assert "Traceback" not in page.content()
    run_page(page, [images[0]], "dog, cat")  # the server still serves
    assert set(page_labels(page)) == {images[0].name} and page.locator("#message").inner_text().strip() == ""
    hosts = {u.split("/")[2] for u in requests if u.startswith("http")}
    assert hosts == {served["url"].split("/")[2]}, hosts
    context.close()


def test_rule_controls_change_the_labels(browser, served, tmp_path):
    images = write_images(tmp_path / "up", n=1, seed=2)
    context, page, _ = open_page(browser, served["url"])
    run_page(page, images, "dog, cat, car, person")
    page.locator("#rule label", has_text="top-k").click()
    page.locator("#top_k input[type=number]").fill("1")
    page.locator("#top_k input[type=number]").press("Enter")
    run_page(page, None, None)
    assert len(page_labels(page)[images[0].name]) == 1
    assert "top-1 for every class" in page.locator("#decision").inner_text()
    page.locator("#rule label", has_text="model's rule").click()
    page.locator("#shift input[type=number]").fill("9")
    page.locator("#shift input[type=number]").press("Enter")
    run_page(page, None, None)
    assert "shifted by +9" in page.locator("#decision").inner_text()
    labels = page_labels(page)[images[0].name]
    assert not {"dog", "cat", "car"} & set(labels)  # thresholds 9 above the stored ones label none of those
    context.close()


def test_two_sessions_at_once_see_their_own_results(browser, served, tmp_path):
    a_images = write_images(tmp_path / "a", n=2, seed=3)
    write_images(tmp_path / "b", n=1, seed=4, size=(50, 90))[0].rename(tmp_path / "b" / "other.jpg")
    b_images = [tmp_path / "b" / "other.jpg"]
    (ca, a, _), (cb, b, _) = open_page(browser, served["url"]), open_page(browser, served["url"])
    for page, files, classes in ((a, a_images, "zebra, dog"), (b, b_images, "giraffe, car, person")):
        upload(page, files)
        page.locator("#classes textarea").fill(classes)
    a.locator("#run").click()
    b.locator("#run").click()
    for page in (a, b):
        page.wait_for_selector("#results .tag-card", timeout=WAIT_MS)
    assert set(page_labels(a)) == {p.name for p in a_images} and set(page_labels(b)) == {"other.jpg"}
    assert "giraffe" not in a.locator("#logits").inner_text() and "zebra" not in b.locator("#logits").inner_text()
    ca.close()
    cb.close()
    assert served["proc"].poll() is None
    assert served["trap"].connections == 0, "the app made an outgoing request"
