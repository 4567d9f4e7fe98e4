"""pytest hooks of pytest-finetune-bench: options, plan, gate collection, summary table and files."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.sequential import early_stop_lines
from pytest_finetune_bench.plan.choices import SUITES
from pytest_finetune_bench.plan.planner import make_plan
from pytest_finetune_bench.plugin.gate_items import gate_items, keep_gate_ids_readable
from pytest_finetune_bench.plugin.options import (
    OutputChoices,
    output_choices,
    read_options,
    register,
    show_plan_only,
)
from pytest_finetune_bench.report.card import write_cards
from pytest_finetune_bench.report.github import append_step_summary, step_summary_file
from pytest_finetune_bench.report.html import REPORT_NAME, write_report
from pytest_finetune_bench.report.table import (
    comparison_table,
    comparisons_from_summary,
    detail_tables,
    evidence_columns,
)
from pytest_finetune_bench.run.recovery import incomplete_reason, partial_note
from pytest_finetune_bench.run.session import BenchSession
from pytest_finetune_bench.store.files import atomic_write_text, check_writable_dir
from pytest_finetune_bench.store.summaries import publish_summary

bench_session_key = pytest.StashKey[BenchSession]()
worker_summaries_key = pytest.StashKey[list[dict[str, Any]]]()
WORKER_OUTPUT_KEY = "finetune_bench_summary"
summary_path_key = pytest.StashKey[Path]()
report_path_key = pytest.StashKey[Path]()
output_choices_key = pytest.StashKey[OutputChoices]()
MARKER_ARGS = ("suite", "tasks")
MARKER_HELP = (
    "bench(suite=None, tasks=None): a benchmark test; it runs when --bench-model is given and the "
    "active benchmark covers the suite's or the listed tasks, and is skipped otherwise."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the --bench-* options and their bench_* ini twins."""
    register(parser)


def pytest_configure(config: pytest.Config) -> None:
    """Register the `bench` marker and, with --bench-model, make the plan and the session's BenchSession.

    Every bad input is found here, before any model runs, and reported as a one-line usage error.
    """
    config.addinivalue_line("markers", MARKER_HELP)
    options = read_options(config)
    if options is None:
        return
    config.stash[output_choices_key] = output_choices(config)
    say = _terminal_writer(config)
    try:
        plan = make_plan(options, Path(str(config.invocation_params.dir)), say)
        # Before any benchmarking: a run whose results cannot be saved is wasted.
        check_writable_dir(plan.output_dir, "--bench-output")
    except BenchError as exc:
        raise pytest.UsageError(str(exc)) from None
    if show_plan_only(config):
        for line in plan.describe():
            print(line, flush=True)
        pytest.exit("--bench-plan: the plan above was not run", returncode=0)
    config.stash[bench_session_key] = BenchSession(plan, say)
    keep_gate_ids_readable(config)


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
    plan = bench.plan
    missing = needed - set(plan.requested_tasks)
    if missing:
        item.add_marker(pytest.mark.skip(reason=f"benchmark test needs {', '.join(sorted(missing))}, "
                                                f"which this run (--bench-suite {plan.options.suite}) does not cover"))
        return
    # A task the backend cannot score (e.g. HellaSwag on a chat server) skips the tests that need it, with why.
    unscored = sorted(needed & set(plan.skipped))
    if unscored:
        item.add_marker(pytest.mark.skip(reason=plan.skipped[unscored[0]]))


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
        if bench.active:
            written = bench.write_summary()
            if written is not None:
                session.config.stash[summary_path_key] = written
        else:
            _write_worker_summary(session.config, bench)
    except (OSError, BenchError) as exc:
        _warn(session.config, f"pytest-finetune-bench: could not write benchmark.json: {exc}")
        return
    written = session.config.stash.get(summary_path_key, None)
    if written is not None:
        _write_outputs(session.config, bench, written)


def _warn(config: pytest.Config, message: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(message, red=True)
    else:
        print(message, file=sys.stderr)


def _write_outputs(config: pytest.Config, bench: BenchSession, written: Path) -> None:
    """The files people read, made from the summary just written; one failing costs none of the others."""
    choices = config.stash[output_choices_key]
    summary = json.loads(written.read_text(encoding="utf-8"))
    report = bench.plan.output_dir / REPORT_NAME
    outputs: list[tuple[str, Callable[[], object]]] = [(str(report), lambda: _write_report(config, bench, summary))]
    if choices.readme:
        outputs.append(("the model cards (--bench-readme)", lambda: _write_cards(config, bench, summary)))
    step_summary = step_summary_file()
    if step_summary is not None:
        outputs.append((f"the job summary {step_summary}", lambda: append_step_summary(step_summary, summary)))
    if choices.json_copy is not None:
        copy = choices.json_copy
        outputs.append((f"--bench-json {copy}", lambda: atomic_write_text(copy, written.read_text(encoding="utf-8"))))
    for what, write in outputs:
        try:
            write()
        except Exception as exc:  # noqa: BLE001 - benchmark.json is on disk already: an extra output never costs it
            _warn(config, f"pytest-finetune-bench: could not write {what}: {exc}")


def _write_report(config: pytest.Config, bench: BenchSession, summary: dict[str, Any]) -> None:
    model_hint = str(bench.plan.location.root or bench.plan.location.source)
    config.stash[report_path_key] = write_report(bench.plan.output_dir / REPORT_NAME, summary, model_hint)


def _write_cards(config: pytest.Config, bench: BenchSession, summary: dict[str, Any]) -> None:
    root = bench.plan.location.root
    if root is None:
        raise BenchError("a Hub model has no local folder to hold README files; --bench-readme needs a local model")
    if summary.get("status") != "complete":
        _warn(config, "pytest-finetune-bench: README files not updated: this session did not complete")
        return
    for readme in write_cards(root, summary):
        bench.say(f"[bench] results section: {readme}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Draw the base-vs-fine-tuned table (and the IFEval and GSM8K metric variants) in the summary."""
    bench = config.stash.get(bench_session_key, None)
    if bench is None:
        return
    if not bench.active:
        summary = _best_worker_summary(config)
        if summary is not None:
            comparisons = comparisons_from_summary(summary)
            name = bench.plan.location.name
            terminalreporter.write_line(f"======== fine-tune benchmark: {name} (from xdist workers)")
            terminalreporter.write_line(
                comparison_table(comparisons, evidence_columns(comparisons, bench.plan.options.confidence or 0.95))
            )
        return
    for line in _summary_lines(bench, config.stash.get(summary_path_key, None)):
        terminalreporter.write_line(line)
    report = config.stash.get(report_path_key, None)
    if report is not None:
        terminalreporter.write_line(f"report: {report}")


def _summary_lines(bench: BenchSession, summary_path: Path | None = None) -> Iterator[str]:
    plan = bench.plan
    summary_title = f"fine-tune benchmark: {plan.location.name} vs {plan.base.model}"
    yield "=" * 8 + f" {summary_title} " + "=" * 8
    yield bench.backends_line()
    for task, reason in plan.skipped.items():
        yield f"skipped {task}: {reason}"
    base, finetuned = bench.completed("base"), bench.completed("fine-tuned")
    if base is None or finetuned is None:
        for role, error in bench.errors().items():
            yield f"{role}: {error}"
        return
    comparisons = bench.comparison()
    if bench.analysis_error:
        yield bench.analysis_error
    if plan.options.compare_to is not None:
        yield f"reference: {base.model}, from {plan.options.compare_to}"
    elif base.from_cache:
        yield f"base scores: reused from {base.timestamp} (cached; --bench-refresh-base recomputes)"
    columns = evidence_columns(comparisons, plan.options.confidence or 0.95)
    partial_rows = partial_note({"base": base, "fine-tuned": finetuned}, comparisons)
    if partial_rows:
        columns = {**columns, "Samples": partial_rows}
    yield comparison_table(comparisons, columns)
    partial = incomplete_reason((base, finetuned))
    if partial:
        yield f"PARTIAL SCORES: {partial}"
    yield from early_stop_lines(comparisons)
    for table in detail_tables(comparisons, base.results, finetuned.results):
        yield ""
        yield table
    yield ""
    yield f"results: {summary_path or plan.output_dir / 'benchmark.json'}"


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
    run_dir = (summary.get("fine_tuned_model") or {}).get("benchmark_dir")
    # The same rule as a session's own summary: an incomplete one never replaces the last complete one.
    config.stash[summary_path_key] = publish_summary(bench.plan.output_dir, Path(run_dir) if run_dir else None,
                                                     summary)
