"""The user's choices: suites, the parsed options (BenchOptions) and the parsers of their values.

Nothing here touches a model or lm-eval: planner.py turns these choices into a Plan.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.plan.gates import FAMILY_ADJUSTS, RULES, plan_rule
from pytest_finetune_bench.plan.metrics import MetricChoice
from pytest_finetune_bench.store.files import bench_cache_dir


@dataclass(frozen=True)
class Suite:
    """A named set of lm-eval tasks, as users know them from the pipeline scripts."""

    name: str
    tasks: tuple[str, ...]
    limit: int | None
    description: str


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("test", ("ifeval",), 5, "IFEval on 5 prompts: checks the set-up, not the model (minutes on a GPU; "
              "on a CPU add --bench-gen-kwargs max_gen_toks=256)"),
        Suite("quick", ("ifeval",), None, "IFEval"),
        Suite("core", ("ifeval", "gsm8k", "hellaswag"), None, "IFEval + GSM8K + HellaSwag"),
        Suite("full", ("ifeval", "gsm8k", "hellaswag", "mmlu"), None, "Core + MMLU"),
    )
}
SUITE_ORDER = tuple(SUITES)

T = TypeVar("T")
D = TypeVar("D")
NO_BASE = "none"
DTYPES = ("auto", "float32", "float16", "bfloat16")
DEVICES_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class BenchOptions:
    """The user's choices, already parsed and validated (see options.py for their sources)."""

    model: str  # the one model a plan is about (make_plans sets it from `models`)
    base: str | None = None  # "none": evaluate the fine-tuned model alone (no base, no comparison gates)
    suite: str = "quick"
    tasks: tuple[str, ...] = ()
    limit: float | None = None
    limit_set: bool = False
    num_fewshot: int | None = None
    batch_size: str = "default"
    device: str = "auto"
    dtype: str = "auto"
    gen_kwargs: str | None = None
    chat_template: str = "auto"
    output: Path | None = None
    data_dir: Path | None = None
    backend: str = "auto"  # this plan's one of `backends` (auto: hf for a merged model, else ollama for a GGUF export)
    base_backend: str | None = None  # None: the same backend as the fine-tuned model
    base_url: str | None = None  # the ollama/openai server (no credentials: keys come from the environment)
    server_model: str | None = None  # the fine-tuned model's served name (default: from its folder name)
    num_concurrent: int = 1
    min_gain: float = 2.0
    min_gain_per_task: dict[str, float] = field(default_factory=dict)
    max_drop: float = 5.0
    max_drop_per_task: dict[str, float] = field(default_factory=dict)
    target_tasks: tuple[str, ...] = ("ifeval",)
    metrics: dict[str, MetricChoice] = field(default_factory=dict)  # --bench-metric: task → (metric, filter)
    confidence: float | None = None
    gate_rule: str | None = None  # --bench-gate-rule: point | interval | proven; None: interval with a confidence
    gate_rule_per_task: dict[str, str] = field(default_factory=dict)
    family_adjust: str = "holm"  # --bench-family-adjust: holm | none, over the statistical gates
    cache_dir: Path | None = None
    refresh_base: bool = False
    compare_to: Path | None = None
    timeout_s: float | None = None  # --bench-timeout: limit of each model run; None: unlimited
    # Spreading the models over GPUs (plan/parallel.py checks them against the backends).
    tensor_parallel: int = 1
    data_parallel: int = 1
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    parallelize: bool = False
    models: tuple[str, ...] = ()  # every --bench-model value: paths, globs, folders of experiments
    backends: tuple[str, ...] = ("auto",)  # --bench-backend hf,ollama: the fine-tune through each (several: no auto)
    only_base: bool = False  # --bench-only-base: evaluate (and cache) the base model alone
    early_stop: bool = False  # --bench-early-stop: stop a task's fine-tuned run once its gates are settled
    error_rate: float = 0.05  # --bench-error-rate: the chance that early stopping settles a gate wrongly
    variant: str | None = None  # --bench-variant: which export of outputs/<name>/ to evaluate (None: the default)
    trust_remote_code: bool = False  # --bench-trust-remote-code: run a model folder's own code (both sides)
    include_paths: tuple[Path, ...] = ()  # --bench-include-path: folders of the user's own lm-eval tasks
    user_suites: dict[str, Suite] = field(default_factory=dict)  # bench_suites: the user's own named suites

    @property
    def cache_root(self) -> Path:
        """The folder of every cache: --bench-cache-dir, else the default (files.bench_cache_dir)."""
        return self.cache_dir or bench_cache_dir()

    @property
    def without_base(self) -> bool:
        """--bench-base none: the fine-tuned model is evaluated alone."""
        return (self.base or "").strip().lower() == NO_BASE

    @property
    def roles(self) -> tuple[str, ...]:
        """The sides this session evaluates."""
        if self.only_base:
            return ("base",)
        return ("fine-tuned",) if self.without_base else ("base", "fine-tuned")

    @property
    def suites(self) -> dict[str, Suite]:
        """The built-in suites and the user's own."""
        return {**SUITES, **self.user_suites}

    @property
    def task_list(self) -> tuple[str, ...]:
        return self.tasks or self.suites[self.suite].tasks

    @property
    def effective_limit(self) -> float | None:
        return self.limit if self.limit_set else self.suites[self.suite].limit if not self.tasks else None

    def min_gain_for(self, task: str) -> float | None:
        """Points a target task must gain; None for tasks that only must not regress."""
        if task in self.min_gain_per_task:
            return self.min_gain_per_task[task]
        return self.min_gain if task in self.target_tasks else None

    def max_drop_for(self, task: str) -> float:
        return self.max_drop_per_task.get(task, self.max_drop)

    def gate_rule_for(self, task: str) -> str:
        """The rule of `task`'s gates: its own, else the session's, else `interval` with a confidence level."""
        return plan_rule(self.confidence, self.gate_rule_per_task.get(task, self.gate_rule))


_SUITE_NAME = re.compile(r"([A-Za-z0-9_][\w.-]*)\s*:")


def parse_suites(text: str) -> dict[str, Suite]:
    """User suites from "domain: ifeval, my_task  other: gsm8k" (one `NAME: TASKS` per ini line).

    A task list is separated by commas or spaces; a suite runs all of its tasks (no sample limit).
    """
    parts = _SUITE_NAME.split(text)
    if parts[0].strip():
        raise BenchError(f"{text.strip()!r} is not a suite: write NAME: TASK, TASK (e.g. domain: ifeval, my_task)")
    suites: dict[str, Suite] = {}
    for given, tasks_text in zip(parts[1::2], parts[2::2], strict=True):
        name = given.lower()  # --bench-suite is matched without regard to case
        tasks = tuple(dict.fromkeys(t for t in re.split(r"[\s,]+", tasks_text) if t))
        if name in SUITES:
            raise BenchError(f"suite {name!r} is built in ({SUITES[name].description}): give yours another name")
        if name in suites:
            raise BenchError(f"suite {name!r} is defined twice: keep one")
        if not tasks:
            raise BenchError(f"suite {name!r} names no task: write {name}: TASK, TASK")
        suites[name] = Suite(name, tasks, None, f"your suite: {', '.join(tasks)}")
    return suites


def parse_points(text: str) -> float:
    """A threshold in percentage points: "2", "+2", "2.5", "-1" (a signed gain), "2pt"."""
    cleaned = text.strip().removesuffix("pt").removesuffix("points").strip()
    try:
        return float(cleaned)
    except ValueError:
        raise BenchError(f"{text!r} is not a number of points (e.g. 2 or 2.5)") from None


def parse_task_values(entries: list[str], default: float) -> tuple[float, dict[str, float]]:
    """Parse ["3", "gsm8k=1.5"] into (default=3.0, {"gsm8k": 1.5})."""
    return parse_task_entries(entries, default, parse_points)


def parse_task_entries(entries: Sequence[str | None], default: D,
                       parse: Callable[[str], T]) -> tuple[D | T, dict[str, T]]:
    """Parse ["proven", "gsm8k=point"] into (default, {TASK: value}), each value read by `parse`."""
    per_task: dict[str, T] = {}
    value_all: D | T = default
    for raw in entries:
        for item in filter(None, (p.strip() for p in (raw or "").split(","))):
            task, sep, value = item.partition("=")
            if sep:
                if not task.strip():
                    raise BenchError(f"{item!r} has no task name before '='")
                per_task[task.strip()] = parse(value)
            else:
                value_all = parse(item)
    return value_all, per_task


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(h|hr|hours?|m|min|mins|minutes?|s|sec|secs|seconds?)?\s*$", re.I)


def parse_duration(text: str) -> float | None:
    """Seconds from "30min", "10m", "600s", "600", "1h"; None for "0", "off", "none"."""
    if text.strip().lower() in ("", "0", "off", "none", "no"):
        return None
    match = _DURATION.match(text)
    if not match:
        raise BenchError(f"{text!r} is not a duration: use e.g. 30min, 10m, 600s, 600 or 1h")
    unit = (match.group(2) or "s").lower()
    scale = 3600 if unit.startswith("h") else 60 if unit.startswith("m") else 1
    return float(match.group(1)) * scale


def parse_limit(text: str) -> float | None:
    """A sample limit: a count ("50") or a fraction of each task ("0.1"); "none" removes it."""
    if text.strip().lower() in ("", "none", "off", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise BenchError(f"{text!r} is not a sample limit: use a count like 50 or a fraction like 0.1") from None
    if value < 0 or (value > 1 and not value.is_integer()):
        raise BenchError(f"{text!r} is not a sample limit: use a count like 50 or a fraction like 0.1")
    return int(value) if value >= 1 else value


def parse_batch_size(text: str) -> str:
    value = text.strip().lower()
    if value == "auto" or re.fullmatch(r"auto:\d+", value) or (value.isdigit() and int(value) > 0):
        return value
    raise BenchError(f"{text!r} is not a batch size: use a positive integer or auto")


def parse_gen_kwargs(text: str) -> str | None:
    """Validate lm-eval's `key=value,key=value` generation kwargs; keep the string as lm-eval parses it."""
    text = text.strip()
    if not text:
        return None
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise BenchError(f"{text!r} is not gen kwargs: use key=value pairs, e.g. max_gen_toks=256,temperature=0")
    return text


def parse_choice(text: str, choices: tuple[str, ...], what: str) -> str:
    value = text.strip().lower()
    if value not in choices:
        raise BenchError(f"{text!r} is not a {what}: choose one of {', '.join(choices)}")
    return value


def parse_confidence(text: str) -> float:
    """A confidence level: 0.95 or 95 (percent)."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise BenchError(f"{text!r} is not a confidence level: use e.g. 0.95") from None
    value = value / 100 if value > 1 else value
    if not 0.5 <= value < 1:
        raise BenchError(f"{text!r} is not a confidence level: use a value from 0.5 to 0.999, e.g. 0.95")
    return value


def parse_gate_rule(text: str) -> str:
    """A gate rule: point, interval or proven."""
    return parse_choice(text, RULES, "gate rule")


def parse_family_adjust(text: str) -> str:
    """How the statistical gates' error is controlled together: holm or none."""
    return parse_choice(text, FAMILY_ADJUSTS, "family-wise adjustment")


def parse_error_rate(text: str) -> float:
    """The error rate of early stopping: a probability strictly between 0 and 1, e.g. 0.05."""
    try:
        value = float(text.strip())
    except ValueError:
        raise BenchError(f"{text!r} is not an error rate: use a probability such as 0.05") from None
    if not 0.0 < value < 1.0:
        raise BenchError(f"{text!r} is not an error rate: use a probability between 0 and 1 (exclusive), e.g. 0.05")
    return value


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise BenchError(f"{text!r} is not true or false")


def parse_device(text: str) -> str:
    value = text.strip().lower()
    if not DEVICES_PATTERN.match(value):
        raise BenchError(f"{text!r} is not a device: use auto, cpu, mps, cuda or cuda:N")
    return value


def parse_backends(value: str, known: tuple[str, ...]) -> tuple[str, ...]:
    """`hf` or `hf,ollama` (the fine-tune through each backend in turn); auto only alone."""
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not names:
        raise BenchError(f"{value!r} names no backend: use one of auto, {', '.join(known)}")
    for name in names:
        parse_choice(name, ("auto", *known) if len(names) == 1 else known, "backend")
    return names


# Experiment trackers a session can log its results into (--bench-log), and the PyPI package that provides each
# (the package's extra of the same name installs it; the package itself is not on PyPI).
TRACKERS = {"mlflow": "mlflow-skinny", "wandb": "wandb"}


def parse_trackers(value: str | None) -> tuple[str, ...]:
    """`mlflow`, `wandb` or both, comma-separated (none when unset); each must be importable, or the error names
    the package that provides it."""
    import importlib.util

    names = tuple(dict.fromkeys(parse_choice(part, tuple(TRACKERS), "tracker")
                                for part in (value or "").split(",") if part.strip()))
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise BenchError(f"{name} is not installed: pip install {TRACKERS[name]} (the `{name}` extra)")
    return names


def parse_count(text: str) -> int:
    """A positive whole number (GPUs, copies, tokens)."""
    value = str(text).strip()
    if not value.isdigit() or int(value) < 1:
        raise BenchError(f"{text!r} is not a positive whole number")
    return int(value)


def parse_fraction(text: str) -> float:
    """A share of something, above 0 and at most 1: "0.8"."""
    try:
        value = float(text.strip())
    except ValueError:
        raise BenchError(f"{text!r} is not a fraction: use a number above 0 and at most 1, e.g. 0.8") from None
    if not 0 < value <= 1:
        raise BenchError(f"{text!r} is not a fraction: use a number above 0 and at most 1, e.g. 0.8")
    return value
