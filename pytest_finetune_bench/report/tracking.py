"""What a session logs into experiment trackers (--bench-log), made from its benchmark.json alone.

One `TrackedResults` per experiment: the settings identity as parameters, each task's numbers as
metrics, the gate outcomes as tags, a results table and the files worth keeping. The trackers
(report/mlflow_tracker.py, report/wandb_tracker.py) only carry these into their own runs, so both
log the same numbers, and a tracker failure is an error line, never a failed session.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from pytest_finetune_bench.report.html import REPORT_NAME
from pytest_finetune_bench.store.benchmark_file import BenchmarkSummary, comparison_of, gates_of

PREFIX = "bench."  # keeps our names apart from a training run's own parameters (its dtype, its seed…)
# MLflow's limit on a parameter's value; a longer one is named by its digest (benchmark.json has it whole).
MAX_PARAM_LENGTH = 6000
# The numbers of a task's comparison that become metrics, by their name in benchmark.json.
COMPARISON_METRICS = {"delta": ("delta",), "ci_low": ("stats", "ci_low"), "ci_high": ("stats", "ci_high"),
                      "p_value": ("stats", "p_value")}
TABLE_COLUMNS = ("task", "metric", "base", "fine-tuned", "delta", "ci_low", "ci_high", "p_value", "gates")
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_\-. /:]")  # what MLflow accepts in a key; W&B takes the same


@dataclass(frozen=True)
class TrackedResults:
    """One experiment's results as a tracker takes them."""

    label: str  # the experiment's name (the model's, or model@backend)
    model: str  # the fine-tuned model's name: new runs go into an experiment (a project) of that name
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    rows: list[list[Any]]  # the results table, one row per task, columns TABLE_COLUMNS
    artifacts: tuple[Path, ...]


def tracked_results(summary: BenchmarkSummary, summary_file: Path, output_dir: Path) -> TrackedResults:
    """What to log of `summary` (read from `summary_file`); report.html and the flips files come along if written."""
    files = [summary_file, output_dir / REPORT_NAME, *_flips_files(summary)]
    label = str(summary.get("label") or summary.get("model_name") or output_dir.name)
    return TrackedResults(
        label=label,
        model=str(summary.get("model_name") or label),
        params=settings_params(summary),
        metrics=task_metrics(summary),
        tags=gate_tags(summary),
        rows=table_rows(summary),
        artifacts=tuple(dict.fromkeys(path for path in files if path.is_file())),
    )


def settings_params(summary: BenchmarkSummary) -> dict[str, str]:
    """The settings identity of each side, flattened: `bench.KEY` where the sides agree, `bench.ROLE.KEY` where not."""
    identities = {role: dict(_flat(ident)) for role, ident in _identities(summary).items()}
    params: dict[str, str] = {}
    for key in sorted({key for ident in identities.values() for key in ident}):
        values = {role: ident.get(key) for role, ident in identities.items()}
        if len(set(values.values())) == 1:
            params[tracker_key(PREFIX + key)] = _param_value(next(iter(values.values())) or "")
        else:
            params.update({tracker_key(f"{PREFIX}{role}.{key}"): _param_value(value or "")
                           for role, value in values.items()})
    return params


def task_metrics(summary: BenchmarkSummary) -> dict[str, float]:
    """Per task: `TASK/base`, `TASK/fine-tuned` (headline scores), `TASK/delta`, `TASK/ci_low`, `TASK/ci_high` and
    `TASK/p_value`, those benchmark.json holds."""
    metrics: dict[str, float] = {}
    for role, scores in (summary.get("scores") or {}).items():
        metrics.update({f"{task}/{role}": value for task, value in scores.items() if _is_number(value)})
    for task, record in comparison_of(summary).items():
        for role, key in (("base", "base_accuracy"), ("fine-tuned", "finetuned_accuracy")):
            value = record.get(key)
            if _is_number(value):
                metrics[f"{task}/{role}"] = value
        for name, path in COMPARISON_METRICS.items():
            value = _lookup(record, path)
            if _is_number(value):
                metrics[f"{task}/{name}"] = value
    return {tracker_key(name): float(value) for name, value in metrics.items()}


def gate_tags(summary: BenchmarkSummary) -> dict[str, str]:
    """`bench.gate.TASK::GATE` = passed | failed | skipped, with the session's status and who was compared."""
    tags = {f"{PREFIX}status": str(summary.get("status", "unknown")), f"{PREFIX}label": str(summary.get("label", "")),
            f"{PREFIX}base_model": str(summary.get("base_model_name") or "")}
    tags.update({f"{PREFIX}gate.{name}": str(gate.get("outcome")) for name, gate in gates_of(summary).items()})
    return {tracker_key(key): value for key, value in tags.items()}


def table_rows(summary: BenchmarkSummary) -> list[list[Any]]:
    """One row per task of the comparison (or of the scores, for a session of one side), columns TABLE_COLUMNS."""
    metrics = task_metrics(summary)
    gates = gates_of(summary)
    headlines = summary.get("headlines") or {}
    comparison = comparison_of(summary)
    scored = (task for scores in (summary.get("scores") or {}).values() for task in scores)
    tasks = dict.fromkeys([*comparison, *scored])
    rows = []
    for task in tasks:
        record = comparison.get(task)
        headline = headlines.get(task)
        metric = (record.get("metric") if record else None) or (headline["metric"] if headline else "")
        outcomes = "; ".join(f"{name.rsplit('::', 1)[-1]}: {gate.get('outcome')}"
                             for name, gate in gates.items() if name.rsplit("::", 1)[0] == task)
        numbers = [metrics.get(tracker_key(f"{task}/{column}")) for column in TABLE_COLUMNS[2:-1]]
        rows.append([task, metric, *numbers, outcomes])
    return rows


def tracker_key(name: str) -> str:
    """`name` with the characters a tracker refuses in a key replaced by `_`."""
    return _UNSAFE_KEY.sub("_", name)


def log_each(trackers: Mapping[str, Callable[[], object]]) -> dict[str, str]:
    """Call each tracker's logging in turn; what one raised is its error line, and the others still run."""
    errors: dict[str, str] = {}
    for name, log in trackers.items():
        try:
            log()
        except Exception as exc:  # noqa: BLE001 - a tracker (a server, a network) never costs the session its results
            errors[f"tracker {name}"] = f"could not log to {name} ({type(exc).__name__}: {_first_line(exc)})"
    return errors


def _identities(summary: BenchmarkSummary) -> dict[str, dict[str, Any]]:
    identity = (summary.get("reproduce") or {}).get("identity") or {}
    return {role: value for role, value in identity.items() if isinstance(value, dict)}


def _flat(value: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Nested objects become dotted keys; every leaf is written as JSON (strings as they are)."""
    for key, item in value.items():
        if isinstance(item, Mapping):
            yield from _flat(item, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", item if isinstance(item, str) else json.dumps(item, sort_keys=True)


def _param_value(text: str) -> str:
    if len(text) <= MAX_PARAM_LENGTH:
        return text
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()} (too long for a parameter; benchmark.json holds it)"


def _flips_files(summary: BenchmarkSummary) -> Iterator[Path]:
    for record in comparison_of(summary).values():
        flips = record.get("flips")
        file = flips.get("file") if isinstance(flips, dict) else None
        if isinstance(file, str) and file:
            yield Path(file)


def _lookup(record: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"
