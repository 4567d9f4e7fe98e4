"""Tests only: vLLM's get_tokenizer is the model's own Hugging Face tokenizer."""

from __future__ import annotations

from typing import Any


def get_tokenizer(name: str, tokenizer_mode: str = "auto", trust_remote_code: bool = False,
                  revision: str | None = None, **kwargs: Any) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code, **kwargs)
