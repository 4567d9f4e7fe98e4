"""Command-line flags `--bench-*`, their ini twins `bench_*`, and typed parsing that names the source."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends import backend_names
from pytest_finetune_bench.backends.openai import API_KEY_ENV, check_base_url
from pytest_finetune_bench.plan.choices import (
    DTYPES,
    SUITES,
    BenchOptions,
    Suite,
    parse_backends,
    parse_batch_size,
    parse_bool,
    parse_choice,
    parse_confidence,
    parse_count,
    parse_device,
    parse_duration,
    parse_error_rate,
    parse_fraction,
    parse_gen_kwargs,
    parse_limit,
    parse_suites,
    parse_task_values,
)
from pytest_finetune_bench.plan.metrics import parse_metric_choices
from pytest_finetune_bench.plan.models import VARIANTS

GROUP = "finetune-bench"


@dataclass(frozen=True)
class Option:
    """One setting: a `--bench-<name>` flag, a `bench_<name>` ini key, and optionally an env var."""

    name: str
    help: str
    default: str | None = None
    metavar: str = "VALUE"
    multiple: bool = False
    env: str | None = None
    switch: bool = False  # a flag without a value; its ini twin takes true/false

    @property
    def flag(self) -> str:
        return f"--bench-{self.name}"

    @property
    def ini(self) -> str:
        return "bench_" + self.name.replace("-", "_")


SUITE_HELP = "; ".join(f"{s.name}: {s.description}" for s in SUITES.values())

OPTIONS: tuple[Option, ...] = (
    Option("model", "fine-tuned model to benchmark: an outputs/<name> folder, a model folder or a Hub id; "
           "repeatable, a glob ('outputs/*') or a folder of experiments benchmarks each one", metavar="PATH",
           multiple=True),
    Option("base", "base model to compare against (default: read from lora/adapter_config.json, "
           "then lora/training_metrics.json); none: evaluate the fine-tuned model alone, without gates",
           metavar="PATH_OR_ID"),
    Option("variant", "which export of an outputs/<name> folder to evaluate: lora (the adapter on its base, through "
           "PEFT), merged_16bit, merged_4bit or gguf [default: a merged export, else the adapter, else the GGUF]",
           metavar="NAME"),
    Option("trust-remote-code", "let model folders that ship their own Python code (config.json auto_map) run it, "
           "on both sides (transformers' trust_remote_code); off, such a model stops the session before it loads",
           switch=True),
    Option("only-base", "evaluate the base model alone and cache its scores, ahead of a batch of fine-tunes "
           "(with --bench-base, --bench-model may be left out)", switch=True),
    Option("suite", f"benchmark suite ({SUITE_HELP})", "quick", metavar="NAME"),
    Option("suites", "your own suites, as NAME: TASK, TASK (repeatable; in the ini file one per line), e.g. "
           "domain: ifeval, my_task; select one with --bench-suite NAME", metavar="NAME:TASKS", multiple=True),
    Option("tasks", "comma-separated lm-eval task names to run instead of a suite", metavar="TASKS"),
    Option("limit", "samples per task: a count or a fraction (default: the suite's; 'none' for all)", metavar="N"),
    Option("num-fewshot", "few-shot examples per prompt (default: each task's own)", metavar="N"),
    Option("batch-size", "batch size, an integer or auto (default: auto on CUDA, 4 elsewhere)", "default", metavar="N"),
    Option("device", "device: auto (cuda, else mps, else cpu), cpu, mps, cuda or cuda:N", "auto", metavar="DEVICE"),
    Option("dtype", f"weights dtype for both models: {', '.join(DTYPES)} (auto: bfloat16 or float16 on GPUs, "
           "float32 on CPU)", "auto", metavar="DTYPE"),
    Option("gen-kwargs", "generation settings passed to lm-eval, e.g. max_gen_toks=256,temperature=0",
           metavar="KWARGS"),
    Option("chat-template", "apply the tokenizer's chat template: auto (when both models have one), on, off",
           "auto", metavar="MODE"),
    Option("output", "where results go (default: <model>/benchmarks)", metavar="DIR"),
    Option("data-dir", "read task data from local files in each dataset's own schema instead of the "
           "Hugging Face Hub (see docs/offline.md)", metavar="DIR"),
    Option("include-path", "a folder of your own lm-eval tasks (YAML, groups, !function helpers, local data), "
           "usable by name as with lm_eval --include_path (repeatable; later folders override earlier)",
           metavar="DIR", multiple=True),
    Option("backend", "how lm-eval reaches the models: auto (hf for a merged model, else ollama for a GGUF "
           "export), hf, vllm, ollama or openai (any OpenAI-compatible server); several, e.g. hf,ollama, benchmark "
           "the fine-tune through each and report the quantization cost", "auto", metavar="NAME"),
    Option("base-backend", "backend for the base model when it differs from --bench-backend: hf, vllm, ollama or "
           "openai (default: the same)", metavar="NAME"),
    Option("tensor-parallel", "vllm: GPUs each model copy is split over (vLLM tensor_parallel_size)", "1",
           metavar="N"),
    Option("data-parallel", "vllm: model copies run side by side, each on its own GPUs, through Ray (vLLM "
           "data_parallel_size)", "1", metavar="N"),
    Option("gpu-memory-utilization", "vllm: share of each GPU's memory vLLM may take, above 0 and at most 1 "
           "(default: vLLM's 0.9; lowered on out-of-memory)", metavar="F"),
    Option("max-model-len", "vllm: context length in tokens (default: the model's); longer prompts are truncated",
           metavar="N"),
    Option("parallelize", "hf: spread one copy of each model over every visible GPU, for a model that does not "
           "fit on one (lm-eval parallelize=True)", switch=True),
    Option("gpus-per-worker", "under pytest-xdist (-n N): GPUs given to each worker, which sees only its own "
           "through CUDA_VISIBLE_DEVICES [default: all GPUs split evenly among the workers]", metavar="K"),
    Option("base-url", "address of the ollama/openai server, e.g. http://127.0.0.1:8080/v1 (ollama default: "
           f"http://localhost:11434); API keys are read from {API_KEY_ENV}, never from here", metavar="URL"),
    Option("server-model", "the fine-tuned model's name on the server (default: its folder name, lower-cased)",
           metavar="NAME"),
    Option("num-concurrent", "requests in flight at once to an ollama/openai server (lm-eval num_concurrent)", "1",
           metavar="N"),
    Option("timeout", "time limit of each model run, e.g. 30min, 10m, 600s, 1h: a run still going is stopped and "
           "the samples it produced are scored as partial (the next session resumes) [default: off]",
           metavar="DURATION"),
    Option("min-gain", "points a target task must improve by, as N or TASK=N (repeatable)", "2", multiple=True),
    Option("max-drop", "points any task may lose, as N or TASK=N (repeatable)", "5", multiple=True),
    Option("target-tasks", "comma-separated tasks that must improve (the others must only not regress)", "ifeval",
           metavar="TASKS"),
    Option("metric", "the metric that gates a task, as TASK=METRIC[,FILTER] (repeatable), e.g. "
           "gsm8k=exact_match,flexible-extract or wikitext=bits_per_byte (default: each task's usual headline)",
           metavar="TASK=METRIC", multiple=True),
    Option("confidence", "make the gates statistical at this confidence level, e.g. 0.95: improves needs the "
           "paired confidence interval's lower bound above the min gain, no_regression fails only when its upper "
           "bound is below minus the max drop", metavar="LEVEL"),
    Option("early-stop", "evaluate the fine-tuned model in a seeded random order, in chunks, and stop a task as "
           "soon as an anytime-valid confidence sequence settles every gate on it (see docs/thresholds.md)",
           switch=True),
    Option("error-rate", "the chance that --bench-early-stop settles a gate wrongly", "0.05", metavar="ALPHA"),
    Option("cache-dir", "where base-model scores are cached across sessions and fine-tunes [default: "
           "~/.cache/pytest-finetune-bench]", metavar="DIR", env="PYTEST_FINETUNE_BENCH_CACHE"),
    Option("refresh-base", "recompute the base model's scores instead of using the cache", switch=True),
    Option("compare-to", "compare against an earlier run (its benchmark.json or fine-tuned/<timestamp> folder) "
           "instead of the base model", metavar="PATH"),
    Option("plan", "print the resolved plan (models, backends, settings, tasks, gates, cache keys) and exit "
           "without running anything", switch=True),
    Option("readme", "after a complete session, write a Benchmark Results section (and a chart) into the model's "
           "README.md and its lora/, merged_16bit/, merged_4bit/, gguf/ READMEs", switch=True),
    Option("json", "also copy this session's benchmark.json to PATH (for CI artifacts)", metavar="PATH"),
)


def register(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, "benchmark a fine-tuned model against its base (pytest-finetune-bench)")
    for opt in OPTIONS:
        default = f" [default: {opt.default}]" if opt.default not in (None, "default") else ""
        if opt.switch:
            group.addoption(opt.flag, dest=opt.ini, action="store_const", const="true", default=None,
                            help=f"{opt.help}; ini: {opt.ini} = true")
            parser.addini(opt.ini, f"{opt.help} (same as {opt.flag})", type="string")
            continue
        group.addoption(
            opt.flag,
            dest=opt.ini,
            action="append" if opt.multiple else "store",
            default=None,
            metavar=opt.metavar,
            help=f"{opt.help}{default}; ini: {opt.ini}",
        )
        ini_type: Literal["args", "string"] = "args" if opt.multiple else "string"
        parser.addini(opt.ini, f"{opt.help} (same as {opt.flag})", type=ini_type)


class _Reader:
    """Looks a setting up in CLI, then environment, then ini, then default, remembering which it used."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def raw(self, opt: Option) -> tuple[Any, str]:
        cli = self.config.getoption(opt.ini)
        if cli is not None:
            return cli, opt.flag
        if opt.env and os.environ.get(opt.env):
            return os.environ[opt.env], f"environment variable {opt.env}"
        ini = self.config.getini(opt.ini)
        if ini not in ("", [], None):
            return ini, f"ini option {opt.ini}"
        return ([opt.default] if opt.multiple else opt.default), "default"

    def parse(self, opt: Option, parser: Callable[[Any], Any]) -> Any:
        value, source = self.raw(opt)
        try:
            return parser(value)
        except BenchError as exc:
            raise pytest.UsageError(f"{source}: {exc}") from None


def _by_name(name: str) -> Option:
    return next(o for o in OPTIONS if o.name == name)


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in (value or "").split(",") if t.strip())


def _int_or_none(value: str | None) -> int | None:
    if value in (None, ""):
        return None
    assert value is not None
    if not value.strip().isdigit():
        raise BenchError(f"{value!r} is not a whole number of few-shot examples")
    return int(value)


@dataclass(frozen=True)
class OutputChoices:
    """Extra outputs of a session; they decide nothing about the runs, so they are not part of the plan."""

    readme: bool
    json_copy: Path | None


def output_choices(config: pytest.Config) -> OutputChoices:
    """--bench-readme and --bench-json (or their ini twins)."""
    reader = _Reader(config)
    return OutputChoices(
        readme=bool(reader.parse(_by_name("readme"), lambda v: parse_bool(v) if v else False)),
        json_copy=reader.parse(_by_name("json"), lambda v: Path(v).expanduser() if v else None),
    )


def gpus_per_worker(config: pytest.Config) -> int | None:
    """--bench-gpus-per-worker (or its ini twin); None: split the GPUs evenly among the xdist workers."""
    return _Reader(config).parse(_by_name("gpus-per-worker"), lambda v: parse_count(v) if v else None)  # type: ignore[no-any-return]


def show_plan_only(config: pytest.Config) -> bool:
    """Whether --bench-plan (or `bench_plan = true`) asks for the plan alone."""
    return bool(_Reader(config).parse(_by_name("plan"), lambda v: parse_bool(v) if v else False))


def user_suites(config: pytest.Config) -> dict[str, Suite]:
    """The user's own suites (--bench-suites, ini bench_suites)."""
    return _Reader(config).parse(  # type: ignore[no-any-return]
        _by_name("suites"), lambda v: parse_suites(" ".join(entry for entry in v if entry) + " "))


def all_suites(config: pytest.Config) -> dict[str, Suite]:
    """The built-in suites and the user's own, for `--bench-suite` and `@pytest.mark.bench(suite=...)`."""
    return {**SUITES, **user_suites(config)}


def read_options(config: pytest.Config) -> BenchOptions | None:
    """The session's BenchOptions, or None when no --bench-model was given."""
    reader = _Reader(config)
    models = tuple(m for m in reader.raw(_by_name("model"))[0] or () if m and m.strip())
    only_base = bool(reader.parse(_by_name("only-base"), lambda v: parse_bool(v) if v else False))
    base_raw, _ = reader.raw(_by_name("base"))
    if not models and not (only_base and base_raw):
        return None

    def get(name: str, parser: Callable[[Any], Any] = lambda v: v) -> Any:
        return reader.parse(_by_name(name), parser)

    limit_raw, _ = reader.raw(_by_name("limit"))
    min_gain, min_gain_per_task = get("min-gain", lambda v: parse_task_values(list(v), 2.0))
    max_drop, max_drop_per_task = get("max-drop", lambda v: parse_task_values(list(v), 5.0))
    backends = get("backend", lambda v: parse_backends(v, backend_names()))
    own_suites = user_suites(config)
    return BenchOptions(
        model=models[0] if models else base_raw,
        models=models,
        only_base=only_base,
        backends=backends,
        base=get("base"),
        suite=get("suite", lambda v: parse_choice(v, (*SUITES, *own_suites), "suite")),
        user_suites=own_suites,
        tasks=get("tasks", _csv),
        limit=get("limit", lambda v: parse_limit(v) if v is not None else None),
        limit_set=limit_raw is not None,
        num_fewshot=get("num-fewshot", _int_or_none),
        batch_size=get("batch-size", lambda v: v if v == "default" else parse_batch_size(v)),
        device=get("device", parse_device),
        dtype=get("dtype", lambda v: parse_choice(v, DTYPES, "dtype")),
        gen_kwargs=get("gen-kwargs", lambda v: parse_gen_kwargs(v) if v else None),
        chat_template=get("chat-template", lambda v: parse_choice(v, ("auto", "on", "off"), "chat template mode")),
        output=get("output", lambda v: Path(v).expanduser() if v else None),
        data_dir=get("data-dir", lambda v: Path(v).expanduser() if v else None),
        include_paths=get("include-path", lambda v: tuple(Path(p).expanduser() for p in v if p)),
        backend=backends[0],
        base_backend=get("base-backend", lambda v: parse_choice(v, backend_names(), "backend") if v else None),
        base_url=get("base-url", lambda v: check_base_url(v) if v else None),
        server_model=get("server-model", lambda v: v.strip() or None if v else None),
        num_concurrent=get("num-concurrent", parse_count),
        timeout_s=get("timeout", lambda v: parse_duration(v) if v else None),
        tensor_parallel=get("tensor-parallel", parse_count),
        data_parallel=get("data-parallel", parse_count),
        gpu_memory_utilization=get("gpu-memory-utilization", lambda v: parse_fraction(v) if v else None),
        max_model_len=get("max-model-len", lambda v: parse_count(v) if v else None),
        parallelize=get("parallelize", lambda v: parse_bool(v) if v else False),
        min_gain=min_gain,
        min_gain_per_task=min_gain_per_task,
        max_drop=max_drop,
        max_drop_per_task=max_drop_per_task,
        target_tasks=get("target-tasks", _csv),
        metrics=get("metric", lambda v: parse_metric_choices([entry for entry in v if entry])),
        confidence=get("confidence", lambda v: parse_confidence(v) if v else None),
        cache_dir=get("cache-dir", lambda v: Path(v).expanduser() if v else None),
        refresh_base=get("refresh-base", lambda v: parse_bool(v) if v else False),
        compare_to=get("compare-to", lambda v: Path(v).expanduser() if v else None),
        early_stop=get("early-stop", lambda v: parse_bool(v) if v else False),
        error_rate=get("error-rate", parse_error_rate),
        variant=get("variant", lambda v: parse_choice(v, VARIANTS, "variant") if v else None),
        trust_remote_code=get("trust-remote-code", lambda v: parse_bool(v) if v else False),
    )
