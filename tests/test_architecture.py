"""Architecture rules, written as tests: what may import what."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One torch-free module per shared mechanism: every caller (training, caches, export, serving) uses these.
TORCH_FREE = ["taidpt.utils.runlock", "taidpt.utils.safe_pickle", "taidpt.utils.pathtext", "taidpt.utils.atomic", "taidpt.methods.names"]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_shared_mechanisms_import_without_torch(module):
    code = (f"import sys; sys.modules['torch'] = None; import {module}; "
            "heavy = [m for m in ('torch', 'open_clip', 'torchvision') if sys.modules.get(m) is not None]; "
            "sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_one_lock_one_unpickler_one_path_escaping():
    """Nobody hand-rolls what those modules do: no fcntl/msvcrt locks, no pickle, no ad-hoc escaping."""
    offenders = []
    for path in sorted((ROOT / "taidpt").rglob("*.py")) + sorted((ROOT / "export").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        if rel != "taidpt/utils/runlock.py" and ("import fcntl" in text or "import msvcrt" in text):
            offenders.append(f"{rel}: file locking outside taidpt/utils/runlock.py")
        if rel != "taidpt/utils/safe_pickle.py" and ("import pickle" in text or "from pickle" in text):
            offenders.append(f"{rel}: pickle outside taidpt/utils/safe_pickle.py")
        if rel != "taidpt/utils/pathtext.py" and ('"backslashreplace"' in text or "'backslashreplace'" in text):
            offenders.append(f"{rel}: path escaping outside taidpt/utils/pathtext.py")
    assert not offenders, offenders
