"""Backends: how lm-eval reaches a model. One module per backend."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.core.settings import EvalSettings


class Backend(Protocol):
    """What the engine needs from a backend to run lm-eval on one model."""

    name: str
    lm_eval_model: str
    is_server: bool  # reaches a model served by name instead of loading its weights
    chat_template_applied_by: str  # "tokenizer" (lm-eval renders it) or "server"
    child_imports: tuple[str, ...]  # modules the lm-eval child imports first: they register lm_eval_model

    def model_args(self, model: str, settings: EvalSettings) -> dict[str, str]:
        """lm-eval `--model_args` for `model` (no secrets: they are written to benchmark.json)."""
        ...

    def adapter_args(self, adapter: Path) -> dict[str, str]:
        """Model arguments that apply the LoRA adapter in folder `adapter` on top of the loaded model.

        BenchError with the reason for a backend that cannot (a server serves whole models by name).
        """
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

    def fingerprint(self, model: str, cache_dir: Path) -> str | None:
        """Content identity of `model`, which keys the caches; None keeps them off.

        `cache_dir` is the session's cache folder (--bench-cache-dir), where file digests may be remembered.
        """
        ...


BackendFactory = Callable[[str | None, int], Backend]


def _hf(base_url: str | None, num_concurrent: int) -> Backend:
    from pytest_finetune_bench.backends.hf import HFBackend

    return HFBackend()


def _vllm(base_url: str | None, num_concurrent: int) -> Backend:
    from pytest_finetune_bench.backends.vllm import VLLMBackend

    return VLLMBackend()


def _ollama(base_url: str | None, num_concurrent: int) -> Backend:
    from pytest_finetune_bench.backends.ollama import OllamaBackend

    return OllamaBackend(base_url, num_concurrent)


def _openai(base_url: str | None, num_concurrent: int) -> Backend:
    from pytest_finetune_bench.backends.openai import OpenAIBackend

    if not base_url:
        raise BenchError("--bench-backend openai needs --bench-base-url URL, e.g. http://127.0.0.1:8080/v1")
    return OpenAIBackend(base_url, num_concurrent)


# name -> factory(base_url, num_concurrent); register_backend adds one (a custom lm-eval model type).
_FACTORIES: dict[str, BackendFactory] = {"hf": _hf, "vllm": _vllm, "ollama": _ollama, "openai": _openai}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make `--bench-backend NAME` use `factory(base_url, num_concurrent)`; call it from a conftest or plugin."""
    _FACTORIES[name] = factory


def backend_names() -> tuple[str, ...]:
    """Every backend `--bench-backend` accepts now, the registered ones included."""
    return tuple(_FACTORIES)


def get_backend(name: str, base_url: str | None = None, num_concurrent: int = 1) -> Backend:
    """The backend called `name`; server backends reach `base_url` with `num_concurrent` requests."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise BenchError(f"unknown backend {name!r}: use {', '.join(_FACTORIES)}")
    return factory(base_url, num_concurrent)


def format_model_args(args: dict[str, str]) -> str:
    """lm-eval's `key=value,...` form, as the CLI takes it."""
    return ",".join(f"{k}={v}" for k, v in args.items())
