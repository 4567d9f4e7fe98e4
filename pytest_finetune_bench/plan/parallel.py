"""How the models are spread over GPUs: the options checked against the backends that will run.

Each flag belongs to one engine; given for a session in which no backend is that engine, it would
silently do nothing, so it is refused instead. The values become EvalSettings fields (shared by both
models, part of the settings identity); core/settings.engine_model_args turns them into lm-eval
model arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends import Backend
from pytest_finetune_bench.plan.choices import BenchOptions
from pytest_finetune_bench.plan.option_table import engine_options

# flag -> (BenchOptions field, its "not given" value, the lm-eval model type it belongs to), from the option table
ENGINE_FLAGS: dict[str, tuple[str, Any, str]] = {
    o.flag: (o.field, o.typed_default(), o.engine) for o in engine_options() if o.engine is not None
}


def parallel_settings(options: BenchOptions, backends: Sequence[Backend], device: str) -> dict[str, Any]:
    """EvalSettings fields for the engines' GPU options; BenchError for one no backend of the session uses."""
    engines = {b.lm_eval_model for b in backends}
    for flag, (field, unset, engine) in ENGINE_FLAGS.items():
        if getattr(options, field) != unset and engine not in engines:
            raise BenchError(f"{flag} applies to the {engine} backend only: add --bench-backend {engine}, "
                             f"or drop {flag}")
    if options.parallelize and not device.startswith("cuda"):
        raise BenchError(f"--bench-parallelize spreads a model over GPUs and the device is {device}: "
                         "drop it, or run on a CUDA machine")
    if "vllm" in engines:
        from pytest_finetune_bench.backends.vllm import check_gpu_count, visible_gpus

        check_gpu_count(options.tensor_parallel, options.data_parallel, visible_gpus())
    return {field: getattr(options, field) for field, _, _ in ENGINE_FLAGS.values()}
