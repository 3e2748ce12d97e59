"""The pip package: it installs only ``taidpt``, its console scripts run, and it declares what its code imports.

One module-scoped fixture builds a fresh venv (``--system-site-packages``, plus this interpreter's
site-packages so that torch & co. need no download), installs a copy of the checkout's package
sources into it with ``pip install --no-deps --no-build-isolation`` and runs everything from a
folder outside the checkout, so nothing can come from the working tree.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

# Import names that may not be installed here, and the distributions that provide them.
NOT_INSTALLED_HERE = {"tensorrt": {"tensorrt-cu13-bindings"}, "tritonclient": {"tritonclient"}}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def console_scripts() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return re.findall(r"^([\w-]+)\s*=", section, re.M)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, a working folder outside the checkout, the environment to run with)."""
    base = tmp_path_factory.mktemp("package")
    src = base / "src"  # a copy, so that the build's egg-info/ and build/ never land in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "taidpt", src / "taidpt", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env_dir = base / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site_packages = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        capture_output=True, text=True, check=True).stdout.strip())
    # This interpreter's packages (torch, setuptools, pip, ...) after the venv's own, .pth files included.
    parents = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (site_packages / "_taidpt_test_parent.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in parents), encoding="utf-8")
    work = base / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", str(src)], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return python, work, env


def run_in(installed, code: str) -> str:
    python, work, env = installed
    proc = subprocess.run([str(python), "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_installs_only_the_library_and_its_data(installed):
    python, work, _ = installed
    out = json.loads(run_in(installed, (
        "import importlib.metadata as md, importlib.util, json, taidpt\n"
        "files = [str(f) for f in md.distribution('taidpt').files]\n"
        "print(json.dumps({'file': taidpt.__file__, 'files': files, "
        "'shims': [n for n in ('export', 'trainers', 'bench') if importlib.util.find_spec(n)]}))\n")))
    location = Path(out["file"]).resolve()
    assert ROOT not in location.parents, f"taidpt was imported from the checkout: {location}"
    assert python.parent.parent.resolve() in location.parents, location
    tops = {f.split("/")[0] for f in out["files"]}
    assert tops <= {"taidpt", "taidpt-0.1.0.dist-info", "..", "bin", "Scripts"}, sorted(tops)
    assert "taidpt/py.typed" in out["files"]
    assert {f"taidpt/data/classes/{p.name}" for p in (ROOT / "taidpt/data/classes").glob("*.json")} <= set(out["files"])
    for pkg in ("taidpt/export/onnx_cli.py", "taidpt/serve/infer.py", "taidpt/engine/launch.py"):
        assert pkg in out["files"], pkg
    assert out["shims"] == [], f"checkout-only folders importable from the venv: {out['shims']}"


def test_every_console_script_answers_help(installed):
    python, work, env = installed
    scripts = console_scripts()
    assert {"taidpt-train", "taidpt-export", "taidpt-infer", "taidpt-batch-infer", "taidpt-triton",
            "taidpt-evaluate", "taidpt-summarize", "taidpt-plots", "taidpt-ensemble"} <= set(scripts)
    bindir = python.parent

    def help_of(name: str) -> tuple[str, int, str]:
        proc = subprocess.run([str(bindir / name), "--help"], cwd=work, env=env, capture_output=True, text=True,
                              timeout=180)
        return name, proc.returncode, proc.stdout + proc.stderr

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(help_of, scripts))
    failed = [f"{name} exited {rc}: {out[-800:]}" for name, rc, out in results if rc != 0 or "usage" not in out]
    assert not failed, failed
    # each names itself as the user typed it, not as the checkout's module form
    named = {name: f"usage: {name}" in out for name, _, out in results if name not in ("taidpt-train", "taidpt-summarize")}
    assert all(named.values()), named


def third_party_imports() -> dict[str, set[str]]:
    """Top-level names of every non-stdlib, non-taidpt import in taidpt/ (function bodies too) -> files."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "taidpt").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("taidpt", "__future__"):
                    found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def test_declared_dependencies_cover_every_import(installed):
    """Every third-party import of the code is a base dependency or in an extra of the installed metadata."""
    requires = json.loads(run_in(installed, "import importlib.metadata as md, json; "
                                            "print(json.dumps(md.requires('taidpt')))"))
    declared = {canonical(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in requires}
    base = {canonical(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in requires if "extra ==" not in r}
    assert "onnxruntime" not in base and "onnxruntime-gpu" not in base, "onnxruntime belongs to the cpu/gpu extras"
    assert {"onnxruntime", "onnxruntime-gpu", "pytest", "scikit-learn"} <= declared
    provided = importlib.metadata.packages_distributions()
    missing = []
    for name, files in sorted(third_party_imports().items()):
        dists = {canonical(d) for d in provided.get(name, ())} or NOT_INSTALLED_HERE.get(name, set())
        if not dists:
            missing.append(f"{name} (imported by {sorted(files)[0]}): no installed distribution provides it")
        elif not dists & declared:
            missing.append(f"{name} (imported by {sorted(files)[0]}): {sorted(dists)} not declared in pyproject.toml")
    assert not missing, missing


def test_the_readme_names_every_console_script():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [s for s in console_scripts() if f"`{s}`" not in readme]
    assert not missing, f"README.md does not name {missing}"
