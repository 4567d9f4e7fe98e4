"""The one exception type users see: a one-line message that says what to do."""

from __future__ import annotations


class BenchError(Exception):
    """Bad input or an unusable environment, explained in one actionable line."""
