"""benchmark.json as a typed contract: its shape, its version, and the one parse step every reader uses.

The published JSON Schema (`schemas/benchmark.schema.json`, shipped in the package; see
docs/results.md) is the contract for other tools; the TypedDicts here are the same contract for
this package's own code. `parse_summary` is how any benchmark.json read back from disk (or from an
xdist worker) enters the package: it checks the schema version and the shape of the parts the
readers rely on, and answers a file it cannot read with a one-line BenchError that says what to do.
It needs no `jsonschema`: the tests validate every file the suite writes against the schema itself.

Versions: 4 adds `task_data` (the dataset behind each task, as lm-eval's config names it; a version 3
file is read as 4 without it); 3 records each gate's decision (`{outcome, threshold, rule, decided_by,
documents}`); 2 recorded the outcome alone, and is read with the rest unknown (null), so an earlier
run still serves `--bench-compare-to`, `history`, the reports and the model cards.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypedDict, cast

from pytest_finetune_bench import BenchError, __version__
from pytest_finetune_bench.store.files import read_json_file

SCHEMA_VERSION = 4
OLDEST_READABLE = 2  # versions from here to SCHEMA_VERSION are read (older ones are upgraded on read)
RANKING_SCHEMA_VERSION = 2
SCHEMA_FILES = {"benchmark": "benchmark.schema.json", "ranking": "benchmarks-summary.schema.json",
                "history": "history.schema.json"}


class _GateDecision(TypedDict):
    """What every gate record holds."""

    outcome: str  # passed | failed | skipped
    threshold: float | None
    rule: str | None  # point | interval | proven (files before the rules: sequence for an early-stopping session)
    decided_by: str | None  # point estimate | interval | confidence sequence (early stop) | why nothing compared
    documents: int | None  # the paired documents the decision rests on


class GateRecord(_GateDecision, total=False):
    """One gate's decision (compare/gates.py `Decision.to_json`); the threshold is in the metric's own unit."""

    level: float | None  # a statistical gate's interval level, after the family's adjustment (absent before)


class FamilyRecord(TypedDict):
    """How the statistical gates' error is controlled together (plan/gates.py `Family.to_json`)."""

    adjust: str  # holm | none
    alpha: float
    gates: list[str]
    family_wise_error: float | None  # the rate the session controls; null when the gates are not adjusted together
    statement: str | None


class ComparisonRecord(TypedDict, total=False):
    """One task's headline on both sides (compare/scores.py `TaskComparison.to_json`) and its evidence."""

    task: str
    metric: str
    filter: str
    higher_is_better: bool
    unit: str  # points | metric
    base_accuracy: float | None
    finetuned_accuracy: float | None
    delta: float | None
    gain: float | None
    delta_percent: float | None
    stats: dict[str, Any] | None
    stats_note: str | None
    flips: dict[str, Any] | None
    early_stop: dict[str, Any]


class SideRecord(TypedDict, total=False):
    """One evaluated side: lm-eval's results for the tasks and where its files are."""

    model: str
    results: dict[str, Any]
    benchmark_dir: str
    results_file: str
    samples_files: dict[str, str]
    timestamp: str
    status: str
    batch_size: Any
    samples: Any
    partial_reason: str | None
    generated: int | None
    from_cache: bool
    seconds: float | None
    backend: str
    lm_eval_model: str
    chat_template: str | None


class HeadlineRecord(TypedDict):
    metric: str
    higher_is_better: bool
    unit: str


class TaskDataRecord(TypedDict):
    """Where a task's data comes from (plan/task_data.py `TaskData.to_json`); null where it is not known."""

    dataset_path: str | None
    dataset_name: str | None
    split: str | None
    revision: str | None
    output_type: str | None


class BenchmarkSummary(TypedDict, total=False):
    """benchmark.json. A summary that holds the scores only (its building failed) has the header and the sides."""

    schema_version: int
    model_name: str
    label: str
    base_model_name: str | None
    evaluated: list[str]
    timestamp: str
    status: str
    run_status: dict[str, str]
    errors: dict[str, str]
    model_path: str | None
    model_variant: str
    base_model_source: str | None
    base_model: SideRecord | None
    fine_tuned_model: SideRecord | None
    comparison: dict[str, ComparisonRecord]
    gates: dict[str, GateRecord]
    family: FamilyRecord
    headlines: dict[str, HeadlineRecord]
    scores: dict[str, dict[str, float | None]]
    training: dict[str, Any]
    skipped_tasks: dict[str, str]
    task_data: dict[str, TaskDataRecord]
    backends: dict[str, str]
    reproduce: dict[str, Any]


SIDE_KEYS = {"base": "base_model", "fine-tuned": "fine_tuned_model"}
# Parts that hold one JSON object per task (or per name), and the parts that are one object.
_OBJECTS_OF_OBJECTS = ("comparison", "gates", "headlines", "scores", "task_data")
_OBJECTS = ("run_status", "errors", "training", "skipped_tasks", "backends", "reproduce", "family")


def parse_summary(data: object, source: str | Path) -> BenchmarkSummary:
    """`data` (a benchmark.json's content) as this version reads it; BenchError naming `source` when it is not one."""
    if not isinstance(data, dict):
        raise BenchError(f"{source} is not a benchmark.json (it holds no JSON object): run the benchmark again")
    _check_version(data, source)
    for key in _OBJECTS_OF_OBJECTS:
        value = data.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            if not (key == "gates" and data["schema_version"] < 3 and isinstance(value, dict)):
                raise _malformed(source, f'its "{key}" is not an object of objects')
    for key in (*_OBJECTS, *SIDE_KEYS.values()):
        value = data.get(key)
        if value is not None and not isinstance(value, dict):
            raise _malformed(source, f'its "{key}" is not an object')
    summary = cast(BenchmarkSummary, data)
    if data["schema_version"] < 3:
        summary = _from_version_2(summary)
    elif data["schema_version"] < SCHEMA_VERSION:  # version 3 is version 4 without the optional `task_data`
        summary = cast(BenchmarkSummary, {**summary, "schema_version": SCHEMA_VERSION})
    return summary


def read_summary(path: Path, advice: str) -> BenchmarkSummary:
    """A benchmark.json read from disk and parsed; `advice` finishes the error for an unreadable file."""
    return parse_summary(read_json_file(path, advice), path)


def side_of(summary: BenchmarkSummary, role: str) -> SideRecord | None:
    """The side summary of `role` ("base" or "fine-tuned"), None when that side was not evaluated."""
    return summary.get("fine_tuned_model") if role == "fine-tuned" else summary.get("base_model")


def comparison_of(summary: BenchmarkSummary) -> dict[str, ComparisonRecord]:
    return summary.get("comparison") or {}


def gates_of(summary: BenchmarkSummary) -> dict[str, GateRecord]:
    return summary.get("gates") or {}


def task_data_of(summary: BenchmarkSummary, task: str) -> TaskDataRecord | None:
    """Where `task`'s data came from; None in files written before version 4 recorded it."""
    return (summary.get("task_data") or {}).get(task)


def _check_version(data: Mapping[str, Any], source: str | Path) -> None:
    version = data.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and OLDEST_READABLE <= version <= SCHEMA_VERSION:
        return
    written = (data.get("reproduce") or {}).get("plugin_version") if isinstance(data.get("reproduce"), dict) else None
    by = f" (written by pytest-finetune-bench {written})" if written else ""
    reads = f"this plugin ({__version__}) reads versions {OLDEST_READABLE} to {SCHEMA_VERSION}"
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise BenchError(f"benchmark.json at {source} is schema version {version}{by}; {reads}: upgrade "
                         "pytest-finetune-bench to read it (install a newer wheel or checkout)")
    shown = version if isinstance(version, int) else "unknown (none recorded)"
    raise BenchError(f"benchmark.json at {source} is schema version {shown}{by}; {reads}: re-run the benchmark "
                     f"with this version{f', or read it with pytest-finetune-bench {written}' if written else ''}")


def _from_version_2(summary: BenchmarkSummary) -> BenchmarkSummary:
    """Version 2 recorded each gate's outcome alone: the same record, with what it did not say left unknown.

    Its first files had no `label` (the model's name) nor `evaluated` (the sides with a summary).
    """
    outcomes = cast(Mapping[str, object], summary.get("gates") or {})
    gates = {name: GateRecord(outcome=str(outcome), threshold=None, rule=None, decided_by=None, documents=None)
             for name, outcome in outcomes.items()}
    evaluated = [role for role in SIDE_KEYS if side_of(summary, role) is not None]
    upgraded = {"label": summary.get("model_name", ""), "evaluated": evaluated, **summary,
                "schema_version": SCHEMA_VERSION, "gates": gates}
    return cast(BenchmarkSummary, upgraded)


def _malformed(source: str | Path, why: str) -> BenchError:
    return BenchError(f"{source} is not a benchmark.json this version can read ({why}): run the benchmark again")


def schema(name: str = "benchmark") -> dict[str, Any]:
    """A published JSON Schema (benchmark, ranking or history), as shipped in the package."""
    text = (resources.files("pytest_finetune_bench") / "schemas" / SCHEMA_FILES[name]).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded
