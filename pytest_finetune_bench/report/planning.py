"""`--bench-plan`'s lines on the documents each statistical gate needs (compare/power.py), before anything runs.

An earlier benchmark.json of the same experiment in the output folder, when there is one, gives each
task's base score and how many documents its two models disagreed on (the paired counts of its
statistics); without one, both are assumptions, and the lines say which.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.power import at_level, observed_discordance, plan_documents
from pytest_finetune_bench.compare.stats import INTERVAL_TANGO
from pytest_finetune_bench.plan import Plan
from pytest_finetune_bench.plan.gates import DEFAULT_CONFIDENCE, Gate
from pytest_finetune_bench.store.benchmark_file import BenchmarkSummary, ComparisonRecord, comparison_of, read_summary
from pytest_finetune_bench.store.summaries import SUMMARY
from pytest_finetune_bench.text import printable

# Without an earlier run the base score is unknown: 50% is where documents disagree most, so the most are needed.
ASSUMED_BASE = 0.5


def documents_lines(plan: Plan) -> Iterator[str]:
    """Per statistical gate of `plan`: the documents it needs, what that assumes, and the time when it is known."""
    gates = [gate for gate in plan.gates if gate.statistical] if plan.compares else []
    if not gates:
        return
    path = plan.output_dir / SUMMARY
    earlier, why = _earlier(path)
    if why is not None:
        yield f"documents: {why}"
    family = plan.family
    size = len(family.gates) if family.adjusted else 1
    for gate in gates:
        decided = at_level(gate, 1.0 - family.alpha if gate.confidence is None else gate.confidence, size)
        yield from _gate_lines(decided, earlier, plan.settings.limit)
    yield "time: unknown (no earlier run)" if earlier is None else \
        "time: unknown (benchmark.json records no run durations)"


def _earlier(path: Path) -> tuple[dict[str, ComparisonRecord] | None, str | None]:
    """The earlier run's comparison, or None with why not (None when there is simply no earlier run)."""
    if not path.is_file():
        return None, None
    try:
        summary: BenchmarkSummary = read_summary(path, "run the benchmark again")
    except BenchError as exc:
        return None, f"the earlier results are not used: {printable(str(exc))}"
    return comparison_of(summary), None


def _gate_lines(gate: Gate, earlier: dict[str, ComparisonRecord] | None, limit: float | None) -> Iterator[str]:
    if not gate.fraction:
        yield f"documents {gate.name}: not planned (a metric in its own unit, not a pass/fail score)"
        return
    record = (earlier or {}).get(gate.task) or ComparisonRecord()
    base, base_source = ASSUMED_BASE, "assumed: no earlier run" if earlier is None else "assumed: no earlier score"
    stats: dict[str, Any] = {}
    earlier_base = record.get("base_accuracy")
    if isinstance(earlier_base, (int, float)):
        base, base_source = float(earlier_base), "earlier run"
        stats = record.get("stats") or {}
    discordance, discordance_source = _discordance(stats)
    try:
        planned = plan_documents(gate, base, discordance=discordance, base_source=base_source,
                                 discordance_source=discordance_source)
    except BenchError as exc:
        yield f"documents {gate.name}: not planned: {printable(str(exc))}"
        return
    level = gate.confidence or DEFAULT_CONFIDENCE
    short = limit is not None and limit >= 1 and (planned.documents is None or planned.documents > limit)
    beyond = f"; --bench-limit evaluates at most {limit:g}" if short else ""
    yield f"documents {gate.name} ({gate.rule} at {100 * level:.4g}%): needs {planned.documents_text()}{beyond}"
    yield f"  assuming {planned.assumptions()}"
    note = planned.note()
    if note is not None:
        yield f"  note: {note}"


def _discordance(stats: dict[str, Any]) -> tuple[float | None, str | None]:
    """An earlier pass/fail run's share of documents that changed, or None (the assumption) without one."""
    improved, regressed, documents = (stats.get(key) for key in ("improved", "regressed", "n"))
    if stats.get("interval") != INTERVAL_TANGO or not (
            isinstance(improved, int) and isinstance(regressed, int) and isinstance(documents, int)):
        return None, None
    if documents <= 0 or improved + regressed == 0:
        return None, None
    return observed_discordance(improved, regressed, documents), \
        f"earlier run: {improved + regressed} of {documents} documents changed"
