"""`decide`: the one place a gate (plan/gates.py) is decided from a comparison and its evidence.

The built-in gate tests, the `bench_result` assertion helpers, benchmark.json, the terminal table
and the ranking all read the `Decision` made here. The rules themselves are the Gate's
(`Gate.passes_point`, `Gate.passes`); this module picks which one the evidence allows and says why.

- A task that stopped early (--bench-early-stop) was decided by the early-stopping child on its
  confidence sequence, which holds at the stop whatever the stopping; its recorded verdict is the
  decision, never recomputed here.
- A gate of a statistical rule (`interval`, `proven`) is decided on the paired confidence interval
  of the gain (stats.py) at the gate's level, which for lower-is-better metrics is the delta's
  interval mirrored. A metric without per-document scores has no interval; its gate compares the
  point estimate, and says so.
- Otherwise (`point`) the point estimate of the gain is compared with the threshold.

A gate decided on an interval its method does not vouch for (too few changed documents for the
bootstrap) says so: in its failure message, or in a warning when it passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_finetune_bench.compare.evidence import TaskAnalysis
from pytest_finetune_bench.compare.flips import format_flips
from pytest_finetune_bench.compare.scores import UNIT_POINTS, TaskComparison
from pytest_finetune_bench.compare.sequential import early_stop_line, early_stop_record, sequence_gain_interval
from pytest_finetune_bench.compare.stats import PairedStats
from pytest_finetune_bench.plan.gates import DEFAULT_CONFIDENCE, EPS, FAILED, IMPROVES, PASSED, SKIPPED, Gate

BY_POINT = "point estimate"
BY_INTERVAL = "interval"
BY_SEQUENCE = "confidence sequence (early stop)"


class UnreliableIntervalWarning(UserWarning):
    """A statistical gate passed on an interval its method does not vouch for at this sample size."""


@dataclass(frozen=True)
class Decision:
    """A gate's outcome, what decided it and on how many paired documents; the message says why it failed."""

    gate: Gate
    outcome: str  # PASSED, FAILED or SKIPPED
    decided_by: str | None  # BY_POINT, BY_INTERVAL, BY_SEQUENCE; else why nothing was compared
    documents: int | None  # the paired documents behind it; None where there are no per-document scores
    message: str | None = None  # a failure's report, or why the gate was skipped
    warning: str | None = None  # a pass on evidence that does not carry the usual guarantee

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED

    @property
    def claimed(self) -> bool:
        """The gate's interval made its rule's claim (a proven pass, or a proven violation): what Holm counts."""
        return self.decided_by == BY_INTERVAL and self.passed == self.gate.claims_pass

    def to_json(self) -> dict[str, Any]:
        """benchmark.json's record of the gate (the threshold in the metric's own unit; the level of the interval
        that decided it, null when none did)."""
        level = self.gate.confidence if self.decided_by == BY_INTERVAL else None
        return {"outcome": self.outcome, "threshold": self.gate.threshold, "rule": self.gate.rule,
                "decided_by": self.decided_by, "documents": self.documents, "level": level}


def skipped(gate: Gate, reason: str) -> Decision:
    return Decision(gate, SKIPPED, None, None, reason)


def failed(gate: Gate, why: str, message: str) -> Decision:
    """A gate that failed before any comparison (no score, an incomplete run): `why` is its decided_by."""
    return Decision(gate, FAILED, why, None, message)


def decide(gate: Gate, comp: TaskComparison, analysis: TaskAnalysis | None = None) -> Decision:
    """The gate's decision on `comp` (with the per-document evidence in `analysis`, where there is some)."""
    gate = gate.for_metric(comp.higher_is_better, comp.unit == UNIT_POINTS)
    if comp.gain is None:
        return failed(gate, "no score", f"{comp.task}: no score to compare ({comp.describe()})")
    if early_stop_record(comp) is not None:
        return _decided_early(gate, comp, analysis)
    stats = None if analysis is None else analysis.stats(gate.confidence or DEFAULT_CONFIDENCE)
    if stats is not None and gate.statistical:
        return _on_interval(gate, comp, stats, analysis)
    return _on_point(gate, comp, comp.gain, stats, analysis)


def _on_point(gate: Gate, comp: TaskComparison, gain: float, stats: PairedStats | None,
              analysis: TaskAnalysis | None) -> Decision:
    documents = stats.n if stats is not None else None
    if gate.passes_point(gain):
        warning = None
        if gate.statistical and analysis is not None and analysis.note is not None:
            # A confidence was asked for, but the metric has no per-document scores to build an interval from.
            warning = f"{comp.task} {gate.kind} passed on the point estimate: {analysis.note}"
        return Decision(gate, PASSED, BY_POINT, documents, warning=warning)
    evidence = f"; {_summary(stats, comp)}" if stats is not None else (
        f"; {analysis.note}" if analysis is not None and analysis.note else "")
    return Decision(gate, FAILED, BY_POINT, documents, _failure(gate, comp, evidence, analysis))


def _on_interval(gate: Gate, comp: TaskComparison, stats: PairedStats, analysis: TaskAnalysis | None) -> Decision:
    """The whole paired interval against the threshold; a sample without an interval compares its point estimate."""
    low, high = stats.gain_interval
    if low is None and stats.n > 0:
        low = high = stats.gain
    if low is None or high is None:  # no paired documents at all: nothing is proven either way
        passed = not gate.claims_pass
    else:
        passed = gate.passes(low, high)
    how = _how_decided(stats)
    decided_by = BY_POINT if stats.n > 0 and stats.ci_low is None else BY_INTERVAL
    if passed:
        warning = f"{comp.task} {gate.kind} passed{how}: {_summary(stats, comp)}" if how else None
        return Decision(gate, PASSED, decided_by, stats.n, warning=warning)
    evidence = f" with {100 * gate.confidence:.4g}% confidence ({gate.rule})" if gate.confidence is not None else ""
    return Decision(gate, FAILED, decided_by, stats.n,
                    _failure(gate, comp, f"; {_summary(stats, comp)}{how}", analysis, evidence))


def _decided_early(gate: Gate, comp: TaskComparison, analysis: TaskAnalysis | None) -> Decision:
    """A task that stopped early: the verdict the early-stopping child recorded when its sequence settled the gate.

    A gate the child was not given (an assertion's own threshold) is decided on the sequence at the
    stop, which holds there whatever the stopping, by the interval rule.
    """
    record = early_stop_record(comp)
    assert record is not None
    interval = sequence_gain_interval(comp)
    recorded = (record.get("gates") or {}).get(gate.kind)
    same_rule = (record.get("rules") or {}).get(gate.kind, gate.rule) == gate.rule
    if isinstance(recorded, (int, float)) and abs(recorded - gate.threshold) <= EPS and same_rule:
        verdict = (record.get("verdicts") or {}).get(gate.kind)
        passed = verdict == PASSED if gate.claims_pass else verdict != FAILED
    else:
        passed = interval is not None and gate.passes(interval[0] / comp.scale, interval[1] / comp.scale)
    documents = record.get("evaluated")
    if passed:
        return Decision(gate, PASSED, BY_SEQUENCE, documents)
    unit = "pts" if comp.unit == UNIT_POINTS else comp.metric_name
    bounds = "" if interval is None else f", gain in [{interval[0]:+.2f}, {interval[1]:+.2f}] {unit}"
    return Decision(gate, FAILED, BY_SEQUENCE, documents,
                    _failure(gate, comp, f"; {early_stop_line(comp)}{bounds}", analysis))


def _failure(gate: Gate, comp: TaskComparison, evidence: str, analysis: TaskAnalysis | None,
             confidence: str = "") -> str:
    """The failure report: what was wanted, the scores, the evidence; a regression lists its first regressed samples."""
    amount = gate.threshold * comp.scale
    if gate.kind == IMPROVES:
        return f"{comp.task} did not improve by {comp.amount_text(amount, signed=True)}{confidence}: " \
               f"{comp.describe()}{evidence}"
    headline = f"{comp.task} regressed by more than {comp.amount_text(amount)}{confidence}: {comp.describe()}{evidence}"
    flips = format_flips(analysis.regressions) if analysis is not None else ""
    return f"{headline}\n{flips}" if flips else headline


def _how_decided(stats: PairedStats) -> str:
    """Said of a statistical gate when the interval does not carry the usual guarantee."""
    if stats.n == 0:
        return ""
    if stats.ci_low is None:
        return "; no interval, so the gate compared the point estimate"
    if stats.interval_note is not None:
        return f"; decided on an interval that is {stats.interval_note}"
    return ""


def _rule_text(record: Mapping[str, Any]) -> str:
    """` (proven at 97.5%)`: the rule and, for a statistical one, its interval's level; none for an old record."""
    rule, level = record.get("rule"), record.get("level")
    if not rule:
        return ""
    return f" ({rule} at {100 * level:.4g}%)" if isinstance(level, (int, float)) else f" ({rule})"


def _summary(stats: PairedStats, comp: TaskComparison) -> str:
    unit = "pts" if comp.unit == UNIT_POINTS else comp.metric_name
    return stats.summary(comp.scale, unit)


def gate_column(gates: Mapping[str, Mapping[str, Any]],
                comparisons: Mapping[str, TaskComparison]) -> dict[str, dict[str, str]]:
    """The terminal table's Gates column from the recorded decisions (`improves ≥ +2.00 (point): passed`), if any.

    The bar is shown in the table's unit: points for accuracies, the metric's own unit otherwise.
    """
    cells: dict[str, list[str]] = {}
    for name, record in gates.items():
        task, _, kind = name.rpartition("::")
        comp, threshold = comparisons.get(task), record.get("threshold")
        bar = ""
        if comp is not None and isinstance(threshold, (int, float)):
            value = (threshold if kind == IMPROVES else -threshold) * comp.scale
            bar = f" ≥ {value:+.2f}" if comp.unit == UNIT_POINTS else f" ≥ {value:+.4g}"
        cells.setdefault(task, []).append(f"{kind}{bar}{_rule_text(record)}: {record.get('outcome')}")
    return {"Gates": {task: ", ".join(parts) for task, parts in cells.items()}} if cells else {}
