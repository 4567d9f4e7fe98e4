"""The settings identity: everything that defines a score, in one place.

`EvalSettings` holds what both models share; `Side` holds what differs between them (which model,
through which backend). `lm_eval_arguments` is what lm-eval itself is given, in the run, in the
score-only run of a stopped evaluation and in the reproduce command; `identity` adds what pins the
inputs (model content, task versions, data files, lm-eval's version). Both caches are keyed by
`identity`, and `--bench-compare-to` compares it, so no list of settings is kept anywhere else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# lm-eval's own defaults (random, numpy, torch, few-shot); the CLI uses the same.
DEFAULT_SEEDS = (0, 1234, 1234, 1234)
SEED_NAMES = ("random", "numpy", "torch", "fewshot")


@dataclass(frozen=True)
class EvalSettings:
    """Everything that changes a score and is the same for the base and the fine-tuned run.

    One instance drives both runs, so the two can never be measured differently.
    """

    tasks: tuple[str, ...]
    limit: float | None = None
    num_fewshot: int | None = None
    batch_size: str = "1"
    device: str = "cpu"
    dtype: str = "float32"
    gen_kwargs: str | None = None
    apply_chat_template: bool = False
    seeds: tuple[int, int, int, int] = DEFAULT_SEEDS
    # Pins of the inputs: a changed task definition, data file or lm-eval release is another measurement.
    task_versions: tuple[tuple[str, str], ...] = ()
    data_files: tuple[str, ...] = ()  # sha256 of each offline data file: moving the folder keeps the identity
    lm_eval_version: str = ""
    include_path: str | None = None  # the task folder lm-eval is given: offline overlay and/or the user's own tasks
    # How the engine spreads a model over GPUs (see engine_model_args): the same for both models.
    tensor_parallel: int = 1  # vllm: GPUs one model copy is split over
    data_parallel: int = 1  # vllm: model copies, each on its own GPUs
    gpu_memory_utilization: float | None = None  # vllm: share of each GPU it may take (None: vLLM's 0.9)
    max_model_len: int | None = None  # vllm: context length (None: the model's); longer prompts are truncated
    parallelize: bool = False  # hf: one model copy spread over every visible GPU (device_map="auto")
    trust_remote_code: bool = False  # hf, vllm: let a model folder's own Python code run (config.json auto_map)

    @property
    def fewshot_as_multiturn(self) -> bool:
        # The lm_eval CLI turns this on exactly when a chat template is applied.
        return self.apply_chat_template


@dataclass(frozen=True)
class Side:
    """One of the two models as lm-eval reaches it: the model, the backend and its arguments."""

    role: str  # "base" or "fine-tuned"
    model: str  # a model folder, a Hub id or a served name
    backend: str  # our backend's name (hf, ollama, openai, …)
    lm_eval_model: str  # lm-eval's model type (hf, local-chat-completions, …)
    model_args: str  # lm-eval's `key=value,…` model arguments (never a secret)
    fingerprint: str | None  # the model's content (every byte, or the Hub commit); None: unknown, nothing cached
    source: str = ""  # where the model was named (--bench-model, lora/adapter_config.json:…)
    child_imports: tuple[str, ...] = field(default=(), compare=False)  # modules registering lm_eval_model


def canonical_gen_kwargs(text: str | None) -> str | None:
    """Generation kwargs written one way, so that the same settings make one identity (and one cache key).

    Parsed with lm-eval's own parser (which types each value as it does in a run), keys stripped and
    sorted, values written back so that lm-eval, in a run and on its command line, reads the same
    values: `temperature=0, max_gen_toks=256` becomes `max_gen_toks=256,temperature=0`. A value keeps
    its type: `temperature=0` (an int to lm-eval) and `temperature=0.0` (a float) stay two settings.
    """
    if not text:
        return None
    from lm_eval.utils import simple_parse_args_string

    parsed = {key.strip(): value for key, value in simple_parse_args_string(text).items()}
    return ",".join(f"{key}={_kwarg_text(parsed[key])}" for key in sorted(parsed)) or None


def _kwarg_text(value: Any) -> str:
    """`value` as lm-eval's parsers read it back: a string that would read as a number, a bool or None is quoted."""
    from lm_eval.utils import handle_arg_string

    if isinstance(value, str) and handle_arg_string(value) != value:
        return f'"{value}"'
    return str(value)


def engine_model_args(settings: EvalSettings, lm_eval_model: str) -> dict[str, str]:
    """The shared model arguments (GPU spread, trust in the model's code), by the names lm-eval's constructors take.

    They live in the shared settings, not in a backend, so that the out-of-memory retries (which lower
    them) and both sides always agree; tests/test_scaling.py checks the names against lm-eval's constructors.
    """
    args: dict[str, str] = {}
    if settings.trust_remote_code and lm_eval_model in ("hf", "vllm"):
        args["trust_remote_code"] = "True"
    if lm_eval_model == "vllm":
        args["tensor_parallel_size"] = str(settings.tensor_parallel)
        args["data_parallel_size"] = str(settings.data_parallel)
        if settings.gpu_memory_utilization is not None:
            args["gpu_memory_utilization"] = f"{settings.gpu_memory_utilization:g}"
        if settings.max_model_len is not None:
            args["max_model_len"] = str(settings.max_model_len)
        # vLLM samples with its own seed: the torch seed of the settings, as lm-eval's default does (1234).
        args["seed"] = str(settings.seeds[2])
    elif lm_eval_model == "hf" and settings.parallelize:
        args["parallelize"] = "True"
    return args


def lm_eval_arguments(settings: EvalSettings, side: Side) -> dict[str, Any]:
    """What lm-eval is given for `side`: the same in a run, in partial scoring and in the reproduce command."""
    engine = engine_model_args(settings, side.lm_eval_model)
    model_args = ",".join([side.model_args, *(f"{k}={v}" for k, v in engine.items())]) if engine else side.model_args
    return {
        "model": side.lm_eval_model,
        "model_args": model_args,
        "tasks": list(settings.tasks),
        "limit": settings.limit,
        "num_fewshot": settings.num_fewshot,
        "batch_size": settings.batch_size,
        "device": settings.device,
        "gen_kwargs": settings.gen_kwargs,
        "apply_chat_template": settings.apply_chat_template,
        "fewshot_as_multiturn": settings.fewshot_as_multiturn,
        "seeds": list(settings.seeds),
        "include_path": settings.include_path,
    }


def identity(settings: EvalSettings, side: Side) -> dict[str, Any]:
    """Everything a score of `side` depends on: lm-eval's arguments plus the pins of its inputs.

    The include path is left out: its folder is derived from the tasks, their versions (the content of
    the user's own tasks) and the data files, which are in.
    """
    arguments = lm_eval_arguments(settings, side)
    arguments.pop("include_path")
    engine = engine_model_args(settings, side.lm_eval_model)
    return {
        **arguments,
        "backend": side.backend,
        "model_fingerprint": side.fingerprint,
        "dtype": settings.dtype,
        "task_versions": dict(settings.task_versions),
        "data_files": list(settings.data_files),
        "lm_eval_version": settings.lm_eval_version,
        # Also inside model_args, which --bench-compare-to leaves out as the model's: a shorter context
        # (vLLM's max_model_len) truncates prompts, so runs made with different engine settings differ.
        # Absent when empty, so that the cache keys of runs without engine settings stay what they were.
        **({"engine_args": engine} if engine else {}),
    }


# Fields of the identity that describe the model rather than the measurement: --bench-compare-to
# compares runs of different models, so it compares everything else.
MODEL_FIELDS = ("model", "model_args", "backend", "model_fingerprint")


def settings_part(ident: Mapping[str, Any]) -> dict[str, Any]:
    """The identity without the model: what two runs must share to be compared."""
    return {k: v for k, v in ident.items() if k not in MODEL_FIELDS}


def digest(ident: Mapping[str, Any]) -> str:
    """A stable hash of an identity."""
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


KEY_VERSION = 2  # cache entries of an older key layout are never read


def cache_key(ident: Mapping[str, Any]) -> str:
    """The one key of a run with this identity: its base-cache entry, its response cache, `--bench-plan`'s key."""
    return digest({"key_version": KEY_VERSION, **ident})


def resolve_device(requested: str) -> str:
    """auto = cuda if available, else mps, else cpu."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(requested: str, device: str) -> str:
    """One explicit dtype for both models: "auto" would let each model pick its own."""
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float16" if device == "mps" else "float32"


def resolve_batch_size(requested: str, device: str) -> str:
    """auto on a GPU; on CPU lm-eval's auto search would probe huge batches, so use a small fixed one."""
    if requested == "default":
        return "auto" if device.startswith("cuda") else "4"
    return requested


def output_dir_for(model_root: Path | None, model_name: str, rootdir: Path) -> Path:
    """<model>/benchmarks for a local model; ./benchmarks/<name> for a Hub id."""
    if model_root is not None:
        return model_root / "benchmarks"
    return rootdir / "benchmarks" / model_name.replace("/", "__")
