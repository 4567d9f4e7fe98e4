"""pytest hooks of pytest-finetune-bench: options, plan, gate collection, summary table and files."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.gates import gate_column
from pytest_finetune_bench.compare.sequential import early_stop_lines
from pytest_finetune_bench.orchestrate.experiments import Experiments, write_ranking
from pytest_finetune_bench.orchestrate.session import BenchSession
from pytest_finetune_bench.plan.planner import make_plans
from pytest_finetune_bench.plugin import xdist_workers
from pytest_finetune_bench.plugin.gate_items import gate_items, gate_prefix, keep_gate_ids_readable
from pytest_finetune_bench.plugin.html_extras import register_if_html_is_active
from pytest_finetune_bench.plugin.options import (
    OutputChoices,
    all_suites,
    output_choices,
    read_options,
    register,
    show_plan_only,
)
from pytest_finetune_bench.plugin.state import EXPERIMENT_FIXTURE, experiment_of, experiments_key, warn
from pytest_finetune_bench.plugin.xdist_workers import is_worker, worker_summary
from pytest_finetune_bench.report.card import write_cards
from pytest_finetune_bench.report.github import append_step_summary, step_summary_file
from pytest_finetune_bench.report.html import REPORT_NAME, write_report
from pytest_finetune_bench.report.mlflow_tracker import log_to_mlflow
from pytest_finetune_bench.report.planning import documents_lines
from pytest_finetune_bench.report.ranking import ranking_lines
from pytest_finetune_bench.report.summary import headline_scores
from pytest_finetune_bench.report.table import (
    comparison_table,
    comparisons_from_summary,
    detail_tables,
    evidence_columns,
    scores_table,
)
from pytest_finetune_bench.report.tracking import TrackedResults, log_each, tracked_results
from pytest_finetune_bench.report.wandb_tracker import log_to_wandb
from pytest_finetune_bench.run.recovery import incomplete_reason, partial_note
from pytest_finetune_bench.store.benchmark_file import BenchmarkSummary, gates_of, read_summary, side_of
from pytest_finetune_bench.store.files import atomic_write_text, check_writable_dir
from pytest_finetune_bench.store.summaries import SUMMARY, add_errors, publish_summary
from pytest_finetune_bench.text import printable

# Per experiment label: the file holding its summary, and its report.html.
summary_paths_key = pytest.StashKey[dict[str, Path]]()
report_paths_key = pytest.StashKey[dict[str, Path]]()
ranking_key = pytest.StashKey[tuple[Path, dict[str, Any]]]()
output_choices_key = pytest.StashKey[OutputChoices]()
# Per experiment label: what each tracker said (where it logged, or why it could not), for the terminal summary.
tracker_lines_key = pytest.StashKey[dict[str, list[tuple[str, bool]]]]()
TRACKERS: dict[str, Callable[[TrackedResults, bool], str]] = {"mlflow": log_to_mlflow, "wandb": log_to_wandb}
MARKER_ARGS = ("suite", "tasks")
MARKER_HELP = (
    "bench(suite=None, tasks=None): a benchmark test; it runs when --bench-model is given and the "
    "active benchmark covers the suite's or the listed tasks, and is skipped otherwise."
)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Register the --bench-* options and their bench_* ini twins."""
    register(parser)
    # Under xdist, each model runs on one worker, each worker on its own GPUs (plugin/xdist_workers.py).
    pluginmanager.register(xdist_workers, "finetune-bench-xdist-workers")


def pytest_configure(config: pytest.Config) -> None:
    """Register the `bench` marker and, with --bench-model, make the plan and the session's BenchSession.

    Every bad input is found here, before any model runs, and reported as a one-line usage error.
    """
    config.addinivalue_line("markers", MARKER_HELP)
    options = read_options(config)
    if options is None:
        return
    register_if_html_is_active(config)
    config.stash[output_choices_key] = output_choices(config)
    say = _terminal_writer(config)
    cwd = Path(str(config.invocation_params.dir))
    try:
        plans = make_plans(options, cwd, say)
        for plan in plans:
            # Before any benchmarking: a run whose results cannot be saved is wasted.
            check_writable_dir(plan.output_dir, "--bench-output")
    except BenchError as exc:
        raise pytest.UsageError(str(exc)) from None
    if show_plan_only(config):
        for index, plan in enumerate(plans):
            for line in ([""] if index else []) + [*plan.describe(), *documents_lines(plan)]:
                print(line, flush=True)
        pytest.exit("--bench-plan: the plan above was not run", returncode=0)
    experiments = Experiments(plans, say, cwd)
    config.stash[experiments_key] = experiments
    config.stash[summary_paths_key] = {}
    config.stash[report_paths_key] = {}
    config.stash[tracker_lines_key] = {}
    keep_gate_ids_readable(config, [gate_prefix(bench, experiments.several) for bench in experiments])


def _terminal_writer(config: pytest.Config) -> Callable[[str], None]:
    """Progress lines that reach the terminal while a test runs, past pytest's output capture."""

    def say(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capman = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            print(printable(line, keep="\n"), file=sys.stderr, flush=True)
            return
        guard = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
        with guard:
            reporter.ensure_newline()
            reporter.write_line(printable(line, keep="\n"))

    return say


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check `bench` markers, skip benchmark tests the active run does not cover, and add the gates."""
    experiments = config.stash.get(experiments_key, None)
    for item in items:
        marker = item.get_closest_marker("bench")
        if marker is not None:
            _apply_marker(item, marker, experiments)
    if experiments is not None:
        for bench in experiments:
            items.extend(gate_items(session, bench, gate_prefix(bench, experiments.several)))


def _apply_marker(item: pytest.Item, marker: pytest.Mark, experiments: Experiments | None) -> None:
    unknown = set(marker.kwargs) - set(MARKER_ARGS)
    if unknown or marker.args:
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.bench takes only keyword arguments {', '.join(MARKER_ARGS)}; "
            f"got {', '.join(sorted(unknown)) or repr(marker.args)}"
        )
    suite = marker.kwargs.get("suite")
    suites = all_suites(item.config)
    if suite is not None and suite not in suites:
        raise pytest.UsageError(f"{item.nodeid}: bench(suite={suite!r}) is not a suite: {', '.join(suites)}")
    tasks = marker.kwargs.get("tasks") or []
    needed = set(suites[suite].tasks if suite else ()) | set([tasks] if isinstance(tasks, str) else tasks)
    if experiments is None:
        item.add_marker(pytest.mark.skip(reason="benchmark test: needs --bench-model"))
        return
    # Every experiment runs the same tasks; which of them a backend cannot score may differ.
    plan = experiment_of(item, experiments).plan
    missing = needed - set(plan.requested_tasks)
    if missing:
        item.add_marker(pytest.mark.skip(reason=f"benchmark test needs {', '.join(sorted(missing))}, "
                                                f"which this run (--bench-suite {plan.options.suite}) does not cover"))
        return
    # A task the backend cannot score (e.g. HellaSwag on a chat server) skips the tests that need it, with why.
    unscored = sorted(needed & set(plan.skipped))
    if unscored:
        item.add_marker(pytest.mark.skip(reason=plan.skipped[unscored[0]]))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """With several experiments, a test using the benchmark fixtures runs once per experiment."""
    experiments = metafunc.config.stash.get(experiments_key, None)
    if experiments is None or not experiments.several or EXPERIMENT_FIXTURE not in metafunc.fixturenames:
        return
    labels = list(experiments.sessions)
    metafunc.parametrize(EXPERIMENT_FIXTURE, labels, indirect=True, scope="session", ids=labels)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write each experiment's benchmark.json (atomically), its reports, and with several the ranking."""
    experiments = session.config.stash.get(experiments_key, None)
    if experiments is None:
        return
    if is_worker(session.config):
        return  # it hands its summaries to the controller, which alone writes files (plugin/xdist_workers.py)
    for bench in experiments:
        _finish_experiment(session.config, bench)
    if experiments.several:
        _write_ranking(session.config, experiments)


def _finish_experiment(config: pytest.Config, bench: BenchSession) -> None:
    label = bench.plan.label
    try:
        if bench.active:
            written = bench.write_summary()
        else:
            written = _write_worker_summary(config, bench)
    except (OSError, BenchError) as exc:
        warn(config, f"pytest-finetune-bench: could not write benchmark.json of {label}: {exc}")
        return
    if written is not None:
        config.stash[summary_paths_key][label] = written
        _write_outputs(config, bench, written)
        _log_to_trackers(config, bench, written)


def _write_ranking(config: pytest.Config, experiments: Experiments) -> None:
    paths = config.stash[summary_paths_key]
    try:
        summaries = [read_summary(paths[label], "run that experiment's benchmark again")
                     for label in experiments.sessions if label in paths]
        if len(summaries) < 2:
            return
        path, _ = config.stash[ranking_key] = write_ranking(experiments.ranking_dir(), summaries)
        copy = config.stash[output_choices_key].json_copy
        if copy is not None:
            atomic_write_text(copy, path.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - every experiment's own benchmark.json is on disk already
        warn(config, f"pytest-finetune-bench: could not write the ranking: {exc}")


def _write_outputs(config: pytest.Config, bench: BenchSession, written: Path) -> None:
    """The files people read, made from the summary just written; one failing costs none of the others."""
    choices = config.stash[output_choices_key]
    try:
        summary = read_summary(written, "run the benchmark again")
    except BenchError as exc:
        warn(config, f"pytest-finetune-bench: could not write the reports: {exc}")
        return
    report = bench.plan.output_dir / REPORT_NAME
    outputs: list[tuple[str, Callable[[], object]]] = [(str(report), lambda: _write_report(config, bench, summary))]
    if choices.readme:
        outputs.append(("the model cards (--bench-readme)", lambda: _write_cards(config, bench, summary)))
    step_summary = step_summary_file()
    if step_summary is not None:
        outputs.append((f"the job summary {step_summary}", lambda: append_step_summary(step_summary, summary)))
    several = config.stash[experiments_key].several
    if choices.json_copy is not None and not several:  # with several, it receives the ranking (_write_ranking)
        copy = choices.json_copy
        outputs.append((f"--bench-json {copy}", lambda: atomic_write_text(copy, written.read_text(encoding="utf-8"))))
    for what, write in outputs:
        try:
            write()
        except Exception as exc:  # noqa: BLE001 - benchmark.json is on disk already: an extra output never costs it
            warn(config, f"pytest-finetune-bench: could not write {what}: {exc}")


def _log_to_trackers(config: pytest.Config, bench: BenchSession, written: Path) -> None:
    """--bench-log: the summary just written (and its files) into each tracker; a failure is a red line in the
    terminal summary and an entry of benchmark.json's "errors", never a failed gate or session."""
    names = config.stash[output_choices_key].trackers
    if not names:
        return
    lines = config.stash[tracker_lines_key].setdefault(bench.plan.label, [])
    try:
        summary = read_summary(written, "run the benchmark again")
    except BenchError as exc:
        lines.append((f"pytest-finetune-bench: nothing logged to {', '.join(names)}: {exc}", False))
        return
    results = tracked_results(summary, written, bench.plan.output_dir)
    several = config.stash[experiments_key].several
    logged: dict[str, str] = {}

    def logger(name: str) -> Callable[[], object]:
        return lambda: logged.__setitem__(name, TRACKERS[name](results, several))

    errors = log_each({name: logger(name) for name in names})
    lines += [(logged[name], True) if name in logged else (f"pytest-finetune-bench: {errors[f'tracker {name}']}", False)
              for name in names]
    if errors:
        run_dir = (side_of(summary, "fine-tuned") or {}).get("benchmark_dir")
        copies = [Path(run_dir) / SUMMARY] if run_dir else []
        try:
            add_errors(bench.plan.output_dir, [written, *(c for c in copies if c != written and c.is_file())], errors)
        except (OSError, BenchError) as exc:
            lines.append((f"pytest-finetune-bench: could not record the tracker errors in {written}: {exc}", False))


def _write_report(config: pytest.Config, bench: BenchSession, summary: BenchmarkSummary) -> None:
    model_hint = str(bench.plan.location.root or bench.plan.location.source)
    config.stash[report_paths_key][bench.plan.label] = write_report(bench.plan.output_dir / REPORT_NAME, summary,
                                                                    model_hint)


def _write_cards(config: pytest.Config, bench: BenchSession, summary: BenchmarkSummary) -> None:
    root = bench.plan.location.root
    if root is None:
        raise BenchError("a Hub model has no local folder to hold README files; --bench-readme needs a local model")
    if summary.get("status") != "complete" or not bench.plan.compares:
        why = "this session did not complete" if bench.plan.compares else "there is no comparison to show"
        warn(config, f"pytest-finetune-bench: README files not updated: {why}")
        return
    for readme in write_cards(root, summary):
        bench.say(f"[bench] results section: {readme}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Draw each experiment's base-vs-fine-tuned table (and metric variants), then the ranking of several."""
    experiments = config.stash.get(experiments_key, None)
    if experiments is None:
        return
    for bench in experiments:
        label = bench.plan.label
        if bench.active:
            lines = list(_summary_lines(bench, config.stash[summary_paths_key].get(label)))
        else:
            lines = _worker_summary_lines(config, bench)
        for line in lines:
            terminalreporter.write_line(printable(line, keep="\n"))
        report = config.stash[report_paths_key].get(label)
        if report is not None:
            terminalreporter.write_line(f"report: {report}")
        for line, logged in config.stash[tracker_lines_key].get(label, []):
            terminalreporter.write_line(printable(line), red=not logged)
    ranking = config.stash.get(ranking_key, None)
    if ranking is not None:
        path, content = ranking
        terminalreporter.write_line("=" * 8 + f" ranking of {len(experiments.sessions)} experiments " + "=" * 8)
        for line in ranking_lines(content):
            terminalreporter.write_line(printable(line, keep="\n"))
        terminalreporter.write_line(f"ranking: {path}")


def _worker_summary_lines(config: pytest.Config, bench: BenchSession) -> list[str]:
    summary = worker_summary(config, bench.plan.label)
    if summary is None:
        return []
    comparisons = comparisons_from_summary(summary)
    columns = {**evidence_columns(comparisons, bench.plan.options.confidence or 0.95),
               **gate_column(gates_of(summary), comparisons)}
    family = summary.get("family")
    statement = family["statement"] if family else None
    return [f"======== fine-tune benchmark: {bench.plan.location.name} (from xdist workers)",
            comparison_table(comparisons, columns), *([f"gates: {statement}"] if statement else [])]


def _summary_lines(bench: BenchSession, summary_path: Path | None = None) -> Iterator[str]:
    plan = bench.plan
    against = f"vs {plan.side('base').model}" if plan.compares else f"({plan.roles[0]} model only, no gates)"
    yield "=" * 8 + f" fine-tune benchmark: {plan.label} {against} " + "=" * 8
    yield bench.backends_line()
    for task, reason in plan.skipped.items():
        yield f"skipped {task}: {reason}"
    if not plan.compares:
        yield from _one_side_lines(bench, summary_path)
        return
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
    decisions = {name: decision.to_json() for name, decision in bench.gate_decisions.items()}
    columns = {**evidence_columns(comparisons, plan.options.confidence or 0.95), **gate_column(decisions, comparisons)}
    partial_rows = partial_note({"base": base, "fine-tuned": finetuned}, comparisons)
    if partial_rows:
        columns = {**columns, "Samples": partial_rows}
    yield comparison_table(comparisons, columns)
    partial = incomplete_reason((base, finetuned))
    if partial:
        yield f"PARTIAL SCORES: {partial}"
    statement = plan.family.statement()
    if statement is not None and decisions:
        yield f"gates: {statement}"
    yield from early_stop_lines(comparisons)
    for table in detail_tables(comparisons, base.results, finetuned.results):
        yield ""
        yield table
    yield ""
    yield f"results: {summary_path or plan.output_dir / 'benchmark.json'}"


def _one_side_lines(bench: BenchSession, summary_path: Path | None) -> Iterator[str]:
    """The scores of a session that evaluated one side (--bench-base none, --bench-only-base)."""
    role = bench.plan.roles[0]
    record = bench.completed(role)
    if record is None:
        for failed, error in bench.errors().items():
            yield f"{failed}: {error}"
        return
    yield scores_table(headline_scores(bench.plan, {role: record}), role)
    yield f"results: {summary_path or bench.plan.output_dir / 'benchmark.json'}"


def _write_worker_summary(config: pytest.Config, bench: BenchSession) -> Path | None:
    summary = worker_summary(config, bench.plan.label)
    if summary is None:
        return None
    run_dir = (side_of(summary, "fine-tuned") or {}).get("benchmark_dir")
    # The same rule as a session's own summary: an incomplete one never replaces the last complete one.
    return publish_summary(bench.plan.output_dir, Path(run_dir) if run_dir else None, summary)
