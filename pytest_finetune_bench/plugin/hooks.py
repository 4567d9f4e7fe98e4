"""pytest hooks and fixtures of pytest-finetune-bench."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.plan.settings import SUITES
from pytest_finetune_bench.plugin.gate_items import gate_items
from pytest_finetune_bench.plugin.options import read_options, register
from pytest_finetune_bench.report.table import (
    comparison_table,
    comparisons_from_summary,
    detail_tables,
    evidence_columns,
)
from pytest_finetune_bench.run.recovery import incomplete_reason, partial_note
from pytest_finetune_bench.run.session import BenchSession
from pytest_finetune_bench.store.files import atomic_write_json, check_writable_dir

bench_session_key = pytest.StashKey[BenchSession]()
worker_summaries_key = pytest.StashKey[list[dict[str, Any]]]()
WORKER_OUTPUT_KEY = "finetune_bench_summary"
summary_path_key = pytest.StashKey[Path]()
MARKER_ARGS = ("suite", "tasks")
MARKER_HELP = (
    "bench(suite=None, tasks=None): a benchmark test; it runs when --bench-model is given and the "
    "active benchmark covers the suite's or the listed tasks, and is skipped otherwise."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the --bench-* options and their bench_* ini twins."""
    register(parser)


def pytest_configure(config: pytest.Config) -> None:
    """Register the `bench` marker and, with --bench-model, create the session's BenchSession."""
    config.addinivalue_line("markers", MARKER_HELP)
    options = read_options(config)
    if options is None:
        return
    try:
        bench = BenchSession(options, Path(str(config.invocation_params.dir)), _terminal_writer(config))
        # Before any benchmarking: a run whose results cannot be saved is wasted.
        check_writable_dir(bench.output_dir, "--bench-output")
    except BenchError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[bench_session_key] = bench


def _terminal_writer(config: pytest.Config) -> Callable[[str], None]:
    """Progress lines that reach the terminal while a test runs, past pytest's output capture."""

    def say(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capman = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            print(line, file=sys.stderr, flush=True)
            return
        guard = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
        with guard:
            reporter.ensure_newline()
            reporter.write_line(line)

    return say


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check `bench` markers, skip benchmark tests the active run does not cover, and add the gates."""
    bench = config.stash.get(bench_session_key, None)
    for item in items:
        marker = item.get_closest_marker("bench")
        if marker is not None:
            _apply_marker(item, marker, bench)
    if bench is not None:
        items.extend(gate_items(session, bench))


def _apply_marker(item: pytest.Item, marker: pytest.Mark, bench: BenchSession | None) -> None:
    unknown = set(marker.kwargs) - set(MARKER_ARGS)
    if unknown or marker.args:
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.bench takes only keyword arguments {', '.join(MARKER_ARGS)}; "
            f"got {', '.join(sorted(unknown)) or repr(marker.args)}"
        )
    suite = marker.kwargs.get("suite")
    if suite is not None and suite not in SUITES:
        raise pytest.UsageError(f"{item.nodeid}: bench(suite={suite!r}) is not a suite: {', '.join(SUITES)}")
    tasks = marker.kwargs.get("tasks") or []
    needed = set(SUITES[suite].tasks if suite else ()) | set([tasks] if isinstance(tasks, str) else tasks)
    if bench is None:
        item.add_marker(pytest.mark.skip(reason="benchmark test: needs --bench-model"))
        return
    missing = needed - set(bench.tasks)
    if missing:
        item.add_marker(pytest.mark.skip(reason=f"benchmark test needs {', '.join(sorted(missing))}, "
                                                f"which this run (--bench-suite {bench.options.suite}) does not cover"))
        return
    # A task the backend cannot score (e.g. HellaSwag on a chat server) skips the tests that need it, with why.
    unscored = sorted(needed & set(bench.skipped_tasks())) if needed else []
    if unscored:
        item.add_marker(pytest.mark.skip(reason=bench.skipped_tasks()[unscored[0]]))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write benchmark.json (atomically) for every session that started a benchmark."""
    bench = session.config.stash.get(bench_session_key, None)
    if bench is None:
        return
    if hasattr(session.config, "workeroutput"):
        # An xdist worker hands its summary to the controller, which alone writes files.
        if bench.active:
            session.config.workeroutput[WORKER_OUTPUT_KEY] = json.dumps(bench.summary(), default=str)
        return
    try:
        if not bench.active:
            _write_worker_summary(session.config, bench)
            return
        written = bench.write_summary()
        if written is not None:
            session.config.stash[summary_path_key] = written
    except (OSError, BenchError) as exc:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"pytest-finetune-bench: could not write benchmark.json: {exc}"
        if reporter is not None:
            reporter.write_line(message, red=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Draw the base-vs-fine-tuned table (and the IFEval and GSM8K metric variants) in the summary."""
    bench = config.stash.get(bench_session_key, None)
    if bench is None:
        return
    if not bench.active:
        summary = _best_worker_summary(config)
        if summary is not None:
            comparisons = comparisons_from_summary(summary)
            terminalreporter.write_line(f"======== fine-tune benchmark: {bench.location.name} (from xdist workers)")
            terminalreporter.write_line(
                comparison_table(comparisons, evidence_columns(comparisons, bench.options.confidence or 0.95))
            )
        return
    for line in _summary_lines(bench, config.stash.get(summary_path_key, None)):
        terminalreporter.write_line(line)


def _summary_lines(bench: BenchSession, summary_path: Path | None = None) -> Iterator[str]:
    summary_title = f"fine-tune benchmark: {bench.location.name} vs {bench.base_model}"
    yield "=" * 8 + f" {summary_title} " + "=" * 8
    yield bench.backends_line()
    for task, reason in bench.skipped_tasks().items():
        yield f"skipped {task}: {reason}"
    base, finetuned = bench.completed("base"), bench.completed("fine-tuned")
    if base is None or finetuned is None:
        for role, error in bench.errors().items():
            yield f"{role}: {error}"
        return
    comparisons = bench.comparison()
    if bench.analysis_error:
        yield bench.analysis_error
    if base.from_cache:
        yield f"base scores: reused from {base.timestamp} (cached; --bench-refresh-base recomputes)"
    columns = evidence_columns(comparisons, bench.options.confidence or 0.95)
    partial_rows = partial_note({"base": base, "fine-tuned": finetuned}, comparisons)
    if partial_rows:
        columns = {**columns, "Samples": partial_rows}
    yield comparison_table(comparisons, columns)
    partial = incomplete_reason((base, finetuned))
    if partial:
        yield f"PARTIAL SCORES: {partial}"
    for table in detail_tables(comparisons, base.results, finetuned.results):
        yield ""
        yield table
    yield ""
    yield f"results: {summary_path or bench.output_dir / 'benchmark.json'}"


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: keep each worker's benchmark summary (plain JSON) for writing and the table."""
    raw = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
    if raw:
        node.config.stash.setdefault(worker_summaries_key, []).append(json.loads(raw))


def _best_worker_summary(config: pytest.Config) -> dict[str, Any] | None:
    summaries = config.stash.get(worker_summaries_key, [])
    complete = [s for s in summaries if s.get("status") == "complete"]
    best = complete or summaries
    return best[0] if best else None


def _write_worker_summary(config: pytest.Config, bench: BenchSession) -> None:
    summary = _best_worker_summary(config)
    if summary is None:
        return
    target = bench.output_dir / "benchmark.json"
    atomic_write_json(target, summary)
    config.stash[summary_path_key] = target
