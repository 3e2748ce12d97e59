"""The build side's one error type (shared by the fp16 pass and the parity check, so neither imports the other)."""

from __future__ import annotations


class ExportError(RuntimeError):
    """Export cannot proceed; the message is one line."""
