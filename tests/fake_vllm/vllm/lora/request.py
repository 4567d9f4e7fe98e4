"""Tests only: vLLM's LoRARequest (lm-eval imports it; the plugin never passes an adapter)."""

from __future__ import annotations

from typing import Any


class LoRARequest:
    def __init__(self, *args: Any) -> None:
        self.args = args
