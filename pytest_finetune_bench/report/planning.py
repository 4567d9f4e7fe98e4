"""`--bench-plan`'s lines on the documents each statistical gate needs (compare/power.py), before anything runs.

An earlier benchmark.json of the same experiment in the output folder, when there is one, gives each
task's base score and how many documents its two models disagreed on (the paired counts of its
statistics); without one, both are assumptions, and the lines say which. Its fine-tuned run's wall time
over the documents it evaluated gives the pace that turns documents into time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.power import at_level, observed_discordance, plan_documents
from pytest_finetune_bench.compare.stats import INTERVAL_TANGO
from pytest_finetune_bench.plan import Plan
from pytest_finetune_bench.plan.gates import DEFAULT_CONFIDENCE, Gate
from pytest_finetune_bench.run.watchdog import format_duration
from pytest_finetune_bench.store.benchmark_file import (
    BenchmarkSummary,
    ComparisonRecord,
    comparison_of,
    read_summary,
    side_of,
)
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
    summary, why = _earlier(path)
    if why is not None:
        yield f"documents: {why}"
    earlier = None if summary is None else comparison_of(summary)
    pace = None if summary is None else Pace.of(summary)
    family = plan.family
    size = len(family.gates) if family.adjusted else 1
    for gate in gates:
        decided = at_level(gate, 1.0 - family.alpha if gate.confidence is None else gate.confidence, size)
        yield from _gate_lines(decided, earlier, plan.settings.limit, pace)
    if pace is not None:
        yield f"time: {pace.describe()}"
    else:
        yield "time: unknown (no earlier run)" if summary is None else \
            "time: unknown (the earlier fine-tuned run was not timed, or its answers came from a cache)"


@dataclass(frozen=True)
class Pace:
    """Seconds a document took in an earlier fine-tuned run on this machine, over all its tasks together."""

    documents: int
    seconds: float
    models: int = 1  # 2 for a paired early-stop run: its time is both models' together

    @classmethod
    def of(cls, summary: BenchmarkSummary) -> Pace | None:
        """The earlier fine-tuned run's pace, when it was timed, generated its answers and evaluated documents.

        A run whose answers came from the response cache would make the model look far faster than it is.
        """
        side = side_of(summary, "fine-tuned") or {}
        seconds, generated, samples = side.get("seconds"), side.get("generated"), side.get("samples")
        if not isinstance(seconds, (int, float)) or not isinstance(generated, int) or generated <= 0:
            return None
        documents = sum(done.get("done", 0) for done in samples.values() if isinstance(done, dict)) \
            if isinstance(samples, dict) else 0
        paired = any("base" in ((record.get("early_stop") or {}).get("sides") or ())
                     for record in comparison_of(summary).values())
        if not isinstance(documents, int) or documents <= 0:
            return None
        return cls(documents, float(seconds), 2 if paired else 1)

    def for_documents(self, documents: int) -> str:
        return format_duration(documents * self.seconds / self.models / self.documents)

    def describe(self) -> str:
        both = ", both models together (a paired early stop), so half of it" if self.models == 2 else ""
        return (f"per model, at the earlier fine-tuned run's pace on this machine ({self.documents:,} documents in "
                f"{format_duration(self.seconds)}{both}, its tasks together, model loading included); the base "
                "takes about as long again unless its scores are cached")


def _earlier(path: Path) -> tuple[BenchmarkSummary | None, str | None]:
    """The earlier run's benchmark.json, or None with why not (None when there is simply no earlier run)."""
    if not path.is_file():
        return None, None
    try:
        return read_summary(path, "run the benchmark again"), None
    except BenchError as exc:
        return None, f"the earlier results are not used: {printable(str(exc))}"


def _gate_lines(gate: Gate, earlier: dict[str, ComparisonRecord] | None, limit: float | None,
                pace: Pace | None) -> Iterator[str]:
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
    took = "" if pace is None or planned.documents is None else f", about {pace.for_documents(planned.documents)}"
    yield f"documents {gate.name} ({gate.rule} at {100 * level:.4g}%): needs {planned.documents_text()}{took}{beyond}"
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
