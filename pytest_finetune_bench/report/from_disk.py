"""benchmark.json again from the files on disk, without a plan or a model (the `summary` command; no pytest here).

A session's summary can be lost (deleted, overwritten by hand, written by an older version) while the
runs behind it are still there. The newest *complete* run folder `fine-tuned/<timestamp>/` keeps its
own summary, which says which lm-eval files each side used; the scores, statistics and flips are
computed again from those files exactly as a session computes them (compare/evidence.py `add_evidence`;
a task that stopped early on its evaluated documents, with the early-stop record the run's summary kept).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.evidence import add_evidence
from pytest_finetune_bench.compare.scores import TaskComparison, compare
from pytest_finetune_bench.compare.sequential import EARLY_STOP
from pytest_finetune_bench.core.records import RunRecord
from pytest_finetune_bench.plan.metrics import MetricChoice, headlines_for_results
from pytest_finetune_bench.report.facts import confidence_level
from pytest_finetune_bench.run.early_stop import apply_early_stop
from pytest_finetune_bench.store.benchmark_file import (
    SIDE_KEYS,
    BenchmarkSummary,
    ComparisonRecord,
    SideRecord,
    comparison_of,
    read_summary,
    side_of,
)
from pytest_finetune_bench.store.files import read_json_file
from pytest_finetune_bench.store.summaries import SUMMARY, latest_complete_run, publish_summary


@dataclass(frozen=True)
class Sources:
    """The folders and lm-eval files a rebuilt summary comes from."""

    run_dir: Path
    results_files: dict[str, Path]

    def describe(self) -> list[str]:
        """One line per input, for the command's output."""
        return [f"fine-tuned run: {self.run_dir}",
                *(f"{role} results: {path}" for role, path in self.results_files.items())]


def benchmarks_dir(model: Path, output: Path | None) -> Path:
    """The benchmarks folder of `model` (an outputs/<name> folder), or `output` when given; it must exist."""
    folder = output if output is not None else model / "benchmarks"
    if not folder.is_dir():
        raise BenchError(f"no benchmark results in {folder}: run `pytest --bench-model {model}` first, "
                         "or pass --output with the folder --bench-output wrote to")
    return folder


def latest_summary(output_dir: Path) -> BenchmarkSummary:
    """`output_dir`/benchmark.json: the summary of the latest complete session."""
    return read_summary(output_dir / SUMMARY, "run the benchmark, or rebuild it with the `summary` command")


def rebuild_summary(output_dir: Path) -> tuple[BenchmarkSummary, Sources]:
    """The summary of the newest complete run under `output_dir`, its comparison computed again from disk."""
    run_dir = latest_complete_run(output_dir)
    if run_dir is None:
        raise BenchError(f"no complete run in {output_dir / 'fine-tuned'} (empty, failed and partial runs are "
                         "skipped): run the benchmark to the end first")
    advice = "run the benchmark again"
    recorded = read_summary(run_dir / SUMMARY, advice)
    records = {role: record_from_summary(recorded, role, advice, run_dir / SUMMARY) for role in SIDE_KEYS}
    records["fine-tuned"].extra.update(early_stop_of(recorded))
    tasks = compared_tasks(recorded)
    comparisons = paired_comparison(records["base"], records["fine-tuned"], recorded, run_dir)
    summary = copy.deepcopy(recorded)
    summary["comparison"] = {task: cast(ComparisonRecord, c.to_json()) for task, c in comparisons.items()}
    for role, record in records.items():
        side = side_of(summary, role)
        assert side is not None  # record_from_summary found it
        side["results"] = {t: record.results.get("results", {}).get(t) for t in tasks}
    return summary, Sources(run_dir, {role: r.results_file for role, r in records.items()})


def compared_tasks(recorded: BenchmarkSummary) -> list[str]:
    """The tasks a session compared (a task the backend could not score has no comparison)."""
    return list(comparison_of(recorded) or (recorded.get("reproduce") or {}).get("tasks") or [])


def early_stop_of(recorded: BenchmarkSummary) -> dict[str, Any]:
    """The fine-tuned run's early-stop record as its child gave it, from the comparisons `recorded` holds.

    Empty when no task could stop early. A session's comparison of a task that stopped early is on the
    evaluated documents (run/early_stop.apply_early_stop), so a comparison made again must be too.
    """
    tasks = {task: copy.deepcopy(c["early_stop"]) for task, c in comparison_of(recorded).items() if c.get("early_stop")}
    return {EARLY_STOP: {"tasks": tasks}} if tasks else {}


def paired_comparison(first: RunRecord, second: RunRecord, recorded: BenchmarkSummary,
                      flips_dir: Path | None) -> dict[str, TaskComparison]:
    """`second` against `first` on the tasks and headlines `recorded` (a benchmark.json) compared, with evidence.

    The session's headlines: the metric it compared each task on, its direction from lm-eval's results.
    A task `second` stopped early (its record's `early_stop`) is compared as the session compared it.
    """
    choices = {task: _metric_choice(c["metric"]) for task, c in comparison_of(recorded).items()}
    headlines = headlines_for_results(compared_tasks(recorded), {}, {"base": first.results,
                                                                     "fine-tuned": second.results}, choices)
    comparisons = compare(first.results, second.results, headlines)
    apply_early_stop(comparisons, first, second)
    add_evidence(comparisons, first, second, flips_dir, confidence_level(recorded))
    return comparisons


def _metric_choice(key: str) -> MetricChoice:
    metric, _, filter_name = key.partition(",")
    return metric, filter_name or None


def write_rebuilt_summary(output_dir: Path) -> tuple[Path, Sources]:
    """Rebuild the summary and publish it as `output_dir`/benchmark.json; returns the file and its sources."""
    summary, sources = rebuild_summary(output_dir)
    return publish_summary(output_dir, None, summary), sources


def record_from_summary(summary: BenchmarkSummary, role: str, advice: str, source: Path | None = None) -> RunRecord:
    """One side's run as the session saw it: lm-eval's results file and its samples files.

    `source` is the file `summary` was read from, for the errors to name.
    """
    side: SideRecord | None = side_of(summary, role)
    if side is None or not side.get("results_file"):
        where = source if source is not None else "the run's benchmark.json"
        raise BenchError(f"{where} names no {role} results file: {advice}")
    results_file = Path(side["results_file"])
    samples = {task: Path(p) for task, p in (side.get("samples_files") or {}).items()}
    missing = [p for p in (results_file, *samples.values()) if not p.is_file()]
    if missing:
        raise BenchError(f"the {role} run's file {missing[0]} is gone: {advice}")
    return RunRecord(role=role, model=str(side.get("model")), results=read_json_file(results_file, advice),
                     results_file=results_file, samples_files=samples, timestamp=str(side.get("timestamp")),
                     status=str(side.get("status", "complete")))
