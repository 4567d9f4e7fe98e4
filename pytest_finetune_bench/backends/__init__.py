"""Backends: how lm-eval reaches a model. One module per backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.plan.settings import EvalSettings

BACKENDS = ("hf", "ollama", "openai")


class Backend(Protocol):
    """What the engine needs from a backend to run lm-eval on one model."""

    name: str
    lm_eval_model: str
    is_server: bool  # reaches a model served by name instead of loading its weights
    chat_template_applied_by: str  # "tokenizer" (lm-eval renders it) or "server"

    def model_args(self, model: str, settings: EvalSettings) -> dict[str, str]:
        """lm-eval `--model_args` for `model` (no secrets: they are written to benchmark.json)."""
        ...

    def has_chat_template(self, model: str) -> bool:
        """Whether lm-eval can apply a chat template for `model`."""
        ...

    def preflight(self, model: str, role: str, gguf_files: Sequence[Path] = ()) -> None:
        """One-line BenchError with the command that fixes it unless `model` can be evaluated now."""
        ...

    def unsupported_tasks(self, output_types: Mapping[str, frozenset[str]]) -> dict[str, str]:
        """{task: why} for the tasks (by lm-eval output types) this backend cannot score faithfully."""
        ...

    def fingerprint(self, model: str) -> str | None:
        """Content identity of `model` for lm-eval's response cache; None keeps the cache off."""
        ...


def get_backend(name: str, base_url: str | None = None, num_concurrent: int = 1) -> Backend:
    """The backend called `name`; server backends reach `base_url` with `num_concurrent` requests."""
    if name == "hf":
        from pytest_finetune_bench.backends.hf import HFBackend

        return HFBackend()
    if name == "ollama":
        from pytest_finetune_bench.backends.ollama import OllamaBackend

        return OllamaBackend(base_url, num_concurrent)
    if name == "openai":
        from pytest_finetune_bench.backends.openai import OpenAIBackend

        if not base_url:
            raise BenchError("--bench-backend openai needs --bench-base-url URL, e.g. http://127.0.0.1:8080/v1")
        return OpenAIBackend(base_url, num_concurrent)
    raise BenchError(f"unknown backend {name!r}: use {', '.join(BACKENDS)}")


def format_model_args(args: dict[str, str]) -> str:
    """lm-eval's `key=value,...` form, as the CLI takes it."""
    return ",".join(f"{k}={v}" for k, v in args.items())
