"""Every `--bench-*` option in one table: flag, ini key, parser, default, help and the field it fills.

Plain data, no pytest: plugin/options.py turns the rows into pytest's flags and ini keys and reads
them (an error names where the bad value came from), init/ writes ini keys and defaults from it, and
plan/parallel.py takes the engine-specific flags from it. tests/test_options.py checks that every
row reaches a BenchOptions field (or one of the plugin's own settings) with the same default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends.openai import API_KEY_ENV, check_base_url
from pytest_finetune_bench.plan.choices import (
    DTYPES,
    SUITES,
    parse_backends,
    parse_batch_size,
    parse_bool,
    parse_choice,
    parse_confidence,
    parse_count,
    parse_device,
    parse_duration,
    parse_error_rate,
    parse_family_adjust,
    parse_fraction,
    parse_gate_rule,
    parse_gen_kwargs,
    parse_limit,
    parse_points,
    parse_suites,
    parse_task_entries,
    parse_task_values,
    parse_trackers,
)
from pytest_finetune_bench.plan.metrics import parse_metric_choices
from pytest_finetune_bench.plan.models import VARIANTS
from pytest_finetune_bench.store.files import CACHE_ENV


@dataclass(frozen=True)
class Known:
    """What some values are checked against: the suites (built-in and the user's) and the registered backends."""

    suites: Sequence[str]
    backends: Sequence[str]


Parser = Callable[[Any, Known], Any]  # the raw value (str, list[str] when repeatable, None when unset) → typed


@dataclass(frozen=True)
class Option:
    """One setting: a `--bench-<name>` flag, a `bench_<name>` ini key, optionally an env var, and its parser."""

    name: str
    help: str
    field: str  # the BenchOptions field it fills (or, for PLUGIN_SETTINGS, the plugin's own setting)
    parse: Parser
    default: str | None = None  # as a user would write it: shown by --help, written by init, parsed when unset
    metavar: str = "VALUE"
    multiple: bool = False  # repeatable flag; a list (pytest's "args" ini type) in the ini file
    env: str | None = None
    switch: bool = False  # a flag without a value; its ini twin takes true/false
    per_task: str | None = None  # the BenchOptions field its TASK=N entries fill (N alone fills `field`)
    engine: str | None = None  # the lm-eval model type it applies to alone (plan/parallel.py refuses it elsewhere)

    @property
    def flag(self) -> str:
        return f"--bench-{self.name}"

    @property
    def ini(self) -> str:
        return "bench_" + self.name.replace("-", "_")

    def typed_default(self) -> Any:
        """The value this option has when it is given nowhere."""
        return self.parse([self.default] if self.multiple else self.default, Known(tuple(SUITES), ()))


def _text(value: str | None, known: Known) -> str | None:
    return value


def _optional(parse: Callable[[str], Any]) -> Parser:
    """`parse` for a given value; None when the option is unset or empty."""
    return lambda value, known: parse(value) if value else None


def _given(parse: Callable[[str], Any]) -> Parser:
    """`parse` for an option that always has a value (its default)."""
    return lambda value, known: parse(value)


def _switch(value: str | None, known: Known) -> bool:
    return parse_bool(value) if value else False


def _path(value: str) -> Path:
    return Path(value).expanduser()


def _csv(value: str | None, known: Known) -> tuple[str, ...]:
    return tuple(t.strip() for t in (value or "").split(",") if t.strip())


def _models(value: list[str] | None, known: Known) -> tuple[str, ...]:
    return tuple(m for m in value or () if m and m.strip())


def _paths(value: list[str], known: Known) -> tuple[Path, ...]:
    return tuple(Path(p).expanduser() for p in value if p)


def _few_shot(value: str | None, known: Known) -> int | None:
    if value in (None, ""):
        return None
    assert value is not None
    if not value.strip().isdigit():
        raise BenchError(f"{value!r} is not a whole number of few-shot examples")
    return int(value)


def _limit(value: str | None, known: Known) -> float | None:
    return parse_limit(value) if value is not None else None


def _batch_size(value: str, known: Known) -> str:
    return value if value == "default" else parse_batch_size(value)


def _suite(value: str, known: Known) -> str:
    return parse_choice(value, tuple(known.suites), "suite")


def _user_suites(value: list[str], known: Known) -> dict[str, Any]:
    return parse_suites(" ".join(entry for entry in value if entry) + " ")


def _backends(value: str, known: Known) -> tuple[str, ...]:
    return parse_backends(value, tuple(known.backends))


def _base_backend(value: str | None, known: Known) -> str | None:
    return parse_choice(value, tuple(known.backends), "backend") if value else None


def _server_model(value: str | None, known: Known) -> str | None:
    return value.strip() or None if value else None


def _thresholds(default: str) -> Parser:
    """N and TASK=N entries: (N, {TASK: N}); N is `default` unless an entry without a task sets it."""
    return lambda value, known: parse_task_values(list(value), parse_points(default))


def _gate_rules(value: list[str | None], known: Known) -> tuple[str | None, dict[str, str]]:
    """RULE and TASK=RULE entries: (RULE or None, {TASK: RULE})."""
    return parse_task_entries(value, None, parse_gate_rule)


def _metrics(value: list[str], known: Known) -> Any:
    return parse_metric_choices([entry for entry in value if entry])


SUITE_HELP = "; ".join(f"{s.name}: {s.description}" for s in SUITES.values())
MIN_GAIN = "2"
MAX_DROP = "5"

OPTIONS: tuple[Option, ...] = (
    Option("model", "fine-tuned model to benchmark: an outputs/<name> folder, a model folder or a Hub id; "
           "repeatable, a glob ('outputs/*') or a folder of experiments benchmarks each one", "models", _models,
           metavar="PATH", multiple=True),
    Option("base", "base model to compare against (default: read from lora/adapter_config.json, "
           "then lora/training_metrics.json); none: evaluate the fine-tuned model alone, without gates", "base",
           _text, metavar="PATH_OR_ID"),
    Option("variant", "which export of an outputs/<name> folder to evaluate: lora (the adapter on its base, through "
           "PEFT), merged_16bit, merged_4bit or gguf [default: a merged export, else the adapter, else the GGUF]",
           "variant", _optional(lambda v: parse_choice(v, VARIANTS, "variant")), metavar="NAME"),
    Option("trust-remote-code", "let model folders that ship their own Python code (config.json auto_map) run it, "
           "on both sides (transformers' trust_remote_code); off, such a model stops the session before it loads",
           "trust_remote_code", _switch, switch=True),
    Option("only-base", "evaluate the base model alone and cache its scores, ahead of a batch of fine-tunes "
           "(with --bench-base, --bench-model may be left out)", "only_base", _switch, switch=True),
    Option("suite", f"benchmark suite ({SUITE_HELP})", "suite", _suite, "quick", metavar="NAME"),
    Option("suites", "your own suites, as NAME: TASK, TASK (repeatable; in the ini file one per line), e.g. "
           "domain: ifeval, my_task; select one with --bench-suite NAME", "user_suites", _user_suites,
           metavar="NAME:TASKS", multiple=True),
    Option("tasks", "comma-separated lm-eval task names to run instead of a suite", "tasks", _csv, metavar="TASKS"),
    Option("limit", "samples per task: a count or a fraction (default: the suite's; 'none' for all)", "limit",
           _limit, metavar="N"),
    Option("num-fewshot", "few-shot examples per prompt (default: each task's own)", "num_fewshot", _few_shot,
           metavar="N"),
    Option("batch-size", "batch size: a positive integer, auto or auto:N (default: auto on CUDA, 4 elsewhere, 1 when "
           "both models are on a server)", "batch_size",
           _batch_size, "default", metavar="N"),
    Option("device", "device: auto (cuda, else mps, else cpu), cpu, mps, cuda or cuda:N", "device",
           _given(parse_device), "auto", metavar="DEVICE"),
    Option("dtype", f"weights dtype for both models: {', '.join(DTYPES)} (auto: bfloat16 or float16 on GPUs, "
           "float32 on CPU)", "dtype", _given(lambda v: parse_choice(v, DTYPES, "dtype")), "auto",
           metavar="DTYPE"),
    Option("gen-kwargs", "generation settings passed to lm-eval, e.g. max_gen_toks=256,temperature=0",
           "gen_kwargs", _optional(parse_gen_kwargs), metavar="KWARGS"),
    Option("chat-template", "apply the tokenizer's chat template: auto (when both models have one), on, off",
           "chat_template", _given(lambda v: parse_choice(v, ("auto", "on", "off"), "chat template mode")), "auto",
           metavar="MODE"),
    Option("output", "where results go (default: <model>/benchmarks)", "output", _optional(_path), metavar="DIR"),
    Option("data-dir", "read task data from local files in each dataset's own schema instead of the "
           "Hugging Face Hub (see docs/offline.md)", "data_dir", _optional(_path), metavar="DIR"),
    Option("include-path", "a folder of your own lm-eval tasks (YAML, groups, !function helpers, local data), "
           "usable by name as with lm_eval --include_path (repeatable; later folders override earlier)",
           "include_paths", _paths, metavar="DIR", multiple=True),
    Option("backend", "how lm-eval reaches the models: auto (hf for a merged model, else ollama for a GGUF "
           "export), hf, vllm, ollama or openai (any OpenAI-compatible server); several, e.g. hf,ollama, benchmark "
           "the fine-tune through each and report the quantization cost", "backends", _backends, "auto",
           metavar="NAME"),
    Option("base-backend", "backend for the base model when it differs from --bench-backend: hf, vllm, ollama or "
           "openai (default: the same)", "base_backend", _base_backend, metavar="NAME"),
    Option("tensor-parallel", "vllm: GPUs each model copy is split over (vLLM tensor_parallel_size)",
           "tensor_parallel", _given(parse_count), "1", metavar="N", engine="vllm"),
    Option("data-parallel", "vllm: model copies run side by side, each on its own GPUs, through Ray (vLLM "
           "data_parallel_size)", "data_parallel", _given(parse_count), "1", metavar="N", engine="vllm"),
    Option("gpu-memory-utilization", "vllm: share of each GPU's memory vLLM may take, above 0 and at most 1 "
           "(default: vLLM's 0.9; lowered on out-of-memory)", "gpu_memory_utilization", _optional(parse_fraction),
           metavar="F", engine="vllm"),
    Option("max-model-len", "vllm: context length in tokens (default: the model's); longer prompts are truncated",
           "max_model_len", _optional(parse_count), metavar="N", engine="vllm"),
    Option("parallelize", "hf: spread one copy of each model over every visible GPU, for a model that does not "
           "fit on one (lm-eval parallelize=True)", "parallelize", _switch, switch=True, engine="hf"),
    Option("gpus-per-worker", "under pytest-xdist (-n N): GPUs given to each worker, which sees only its own "
           "through CUDA_VISIBLE_DEVICES [default: all GPUs split evenly among the workers]", "gpus_per_worker",
           _optional(parse_count), metavar="K"),
    Option("base-url", "address of the ollama/openai server, e.g. http://127.0.0.1:8080/v1 (ollama default: "
           f"http://localhost:11434); API keys are read from {API_KEY_ENV}, never from here", "base_url",
           _optional(check_base_url),
           metavar="URL"),
    Option("server-model", "the fine-tuned model's name on the server (default: its folder name, lower-cased)",
           "server_model", _server_model, metavar="NAME"),
    Option("num-concurrent", "requests in flight at once to an ollama/openai server (lm-eval num_concurrent)",
           "num_concurrent", _given(parse_count), "1", metavar="N"),
    Option("timeout", "time limit of each model run, e.g. 30min, 10m, 600s, 1h: a run still going is stopped and "
           "the samples it produced are scored as partial (the next session resumes) [default: off]", "timeout_s",
           _optional(parse_duration), metavar="DURATION"),
    Option("min-gain", "points a target task must improve by, as N or TASK=N (repeatable)", "min_gain",
           _thresholds(MIN_GAIN), MIN_GAIN, multiple=True, per_task="min_gain_per_task"),
    Option("max-drop", "points any task may lose, as N or TASK=N (repeatable)", "max_drop", _thresholds(MAX_DROP),
           MAX_DROP, multiple=True, per_task="max_drop_per_task"),
    Option("target-tasks", "comma-separated tasks that must improve (the others must only not regress)",
           "target_tasks", _csv, "ifeval", metavar="TASKS"),
    Option("metric", "the metric that gates a task, as TASK=METRIC[,FILTER] (repeatable), e.g. "
           "gsm8k=exact_match,flexible-extract or wikitext=bits_per_byte (default: each task's usual headline)",
           "metrics", _metrics, metavar="TASK=METRIC", multiple=True),
    Option("confidence", "the confidence level of the statistical gate rules, from 0.5 to 0.999 (95 reads as "
           "0.95); given without --bench-gate-rule it makes every gate interval: improves needs the paired "
           "confidence interval's lower bound at or above the min gain, no_regression fails only when its upper "
           "bound is below minus the max drop [default: off, the point estimate decides; 0.95 for the interval "
           "and proven rules]", "confidence", _optional(parse_confidence), metavar="LEVEL"),
    Option("gate-rule", "how the gates decide, as RULE or TASK=RULE (repeatable): point (the point estimate), "
           "interval (fail only on a whole interval beyond the bar) or proven (pass only on an interval whose lower "
           "end is above the bar) [default: interval with --bench-confidence, else point]", "gate_rule", _gate_rules,
           metavar="RULE", multiple=True, per_task="gate_rule_per_task"),
    Option("family-adjust", "holm: adjust the interval and proven gates' levels together (Holm), so the chance "
           "that any of them errs stays below 1 - confidence; none: each on its own", "family_adjust",
           _given(parse_family_adjust), "holm", metavar="METHOD"),
    Option("early-stop", "evaluate the fine-tuned model in a seeded random order, in chunks, and stop a task as "
           "soon as an anytime-valid confidence sequence settles every gate on it; a base with no scores yet is "
           "evaluated alongside, on the same chunks (see docs/thresholds.md)",
           "early_stop", _switch, switch=True),
    Option("error-rate", "the chance that --bench-early-stop settles a gate wrongly", "error_rate",
           _given(parse_error_rate), "0.05", metavar="ALPHA"),
    Option("cache-dir", "where every cache of the plugin lives: base-model scores, lm-eval's response caches, "
           "the task index and the model file digests [default: $XDG_CACHE_HOME/pytest-finetune-bench, else "
           "~/.cache/pytest-finetune-bench]", "cache_dir",
           _optional(_path), metavar="DIR", env=CACHE_ENV),
    Option("refresh-base", "recompute the base model's scores instead of using the cache", "refresh_base", _switch,
           switch=True),
    Option("compare-to", "compare against an earlier run (its benchmark.json or fine-tuned/<timestamp> folder) "
           "instead of the base model", "compare_to", _optional(_path), metavar="PATH"),
    Option("plan", "print the resolved plan (models, backends, settings, tasks, gates, cache keys) and exit "
           "without running anything", "plan", _switch, switch=True),
    Option("readme", "after a complete session, write a Benchmark Results section (and a chart) into the model's "
           "README.md and its lora/, merged_16bit/, merged_4bit/, gguf/ READMEs, and the scores into their metadata "
           "(model-index)", "readme", _switch, switch=True),
    Option("json", "also copy this session's benchmark.json to PATH (for CI artifacts)", "json_copy",
           _optional(_path), metavar="PATH"),
    Option("log", "after the session, log its results (settings, scores, gate outcomes, benchmark.json and "
           "report.html) into these experiment trackers: mlflow, wandb or mlflow,wandb (see docs/trackers.md)",
           "trackers", _given(parse_trackers), metavar="TRACKERS"),
)

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
# Settings of the plugin itself, not of the runs (so not in BenchOptions or the plan): the option fills these.
PLUGIN_SETTINGS = frozenset({"gpus_per_worker", "plan", "readme", "json_copy", "trackers"})
# BenchOptions fields no option fills directly: derived from the options above when they are read.
DERIVED_FIELDS = {
    "model": "the one model a plan is about (make_plans sets it from `models`)",
    "backend": "the first of `backends` (make_plans sets each in turn)",
    "limit_set": "whether --bench-limit was given at all",
}


def option(name: str) -> Option:
    """The row of `--bench-<name>`."""
    return BY_NAME[name]


def engine_options() -> tuple[Option, ...]:
    """The options that belong to one engine (vLLM's GPU spread, hf's parallelize)."""
    return tuple(o for o in OPTIONS if o.engine is not None)
