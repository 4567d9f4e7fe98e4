"""Tests only: vLLM resolves the tokenizer's own chat template when none is given."""

from __future__ import annotations

from typing import Any


def resolve_chat_template(tokenizer: Any, chat_template: str | None, tools: Any = None, **kwargs: Any) -> Any:
    return chat_template or getattr(tokenizer, "chat_template", None)
