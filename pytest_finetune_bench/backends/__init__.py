"""Backends: how lm-eval reaches a model. One module per backend."""

from __future__ import annotations

from typing import Protocol

from pytest_finetune_bench.errors import BenchError
from pytest_finetune_bench.settings import EvalSettings


class Backend(Protocol):
    """What the engine needs from a backend to run lm-eval on one model."""

    name: str
    lm_eval_model: str

    def model_args(self, model: str, settings: EvalSettings) -> dict[str, str]:
        """lm-eval `--model_args` for `model` (no secrets: they are written to benchmark.json)."""
        ...

    def has_chat_template(self, model: str) -> bool:
        """Whether lm-eval can apply a chat template for `model`."""
        ...


def get_backend(name: str) -> Backend:
    if name == "hf":
        from pytest_finetune_bench.backends.hf import HFBackend

        return HFBackend()
    raise BenchError(f"unknown backend {name!r}: use hf")


def format_model_args(args: dict[str, str]) -> str:
    """lm-eval's `key=value,...` form, as the CLI takes it."""
    return ",".join(f"{k}={v}" for k, v in args.items())
