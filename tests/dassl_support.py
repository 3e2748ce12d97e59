"""Gate for tests that need the real Dassl package.

``import dassl`` succeeds even when Dassl's engine cannot load, and a broken torchvision makes
``import dassl.engine`` raise ``RuntimeError``, which ``pytest.importorskip`` does not catch. So
the gate imports the three subpackages the plugin uses and turns *any* exception into a skip.
"""

from __future__ import annotations

import functools

import pytest


@functools.lru_cache(maxsize=1)
def dassl_status() -> tuple[bool, str]:
    """``(True, "")`` when ``dassl.engine``, ``dassl.data`` and ``dassl.config`` import, else
    ``(False, reason)``."""
    try:
        import dassl.config  # noqa: F401
        import dassl.data  # noqa: F401
        import dassl.engine  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure means "no usable Dassl"
        first = str(exc).splitlines()[0] if str(exc) else ""
        return False, f"{type(exc).__name__}: {first}"
    return True, ""


def require_dassl() -> None:
    """Skip the calling test, with the reason, unless Dassl is importable."""
    ok, why = dassl_status()
    if not ok:
        pytest.skip(f"needs the Dassl package (`import dassl.engine` failed: {why}); see docs/dassl.md")
