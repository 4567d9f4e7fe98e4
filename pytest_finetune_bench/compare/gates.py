"""Threshold checks shared by the built-in gate tests and the `bench_result` assertion helpers.

Gates judge the gain: the change signed so that positive is better, so for a metric where lower is
better (perplexity, bits_per_byte) a fall is a gain. Thresholds are in the comparison's unit:
percentage points for accuracies, the metric's own unit otherwise (scores.py). The statistical
variants use the interval of the gain, which for lower-is-better metrics is the delta's interval
mirrored. A metric without per-document scores has no interval; its gates compare the point estimate.

Without statistics a gate compares the point estimate of the gain with its threshold. With
statistics (a confidence level was asked for) `improves` needs the whole paired confidence interval
at or above the minimum gain, and `no_regression` fails only when the whole interval lies below minus
the allowed drop: a gate then fails on evidence, not on noise.

The interval excludes 0 only where the exact paired test rejects "no difference" at 1 - confidence
(stats.py). A minimum gain of 0 or more therefore also needs the lower bound above 0, so `improves`
never passes a gain the reported p-value calls insignificant; `no_regression` fails only on an upper
bound below -max drop <= 0, which the test backs in the same way.

A gate decided on an interval that its method does not vouch for (too few changed documents for the
bootstrap) says so: in its failure message, or with an UnreliableIntervalWarning when it passes. A
continuous metric whose differences are all equal has no interval; its gates compare the point
estimate instead, and say so too.
"""

from __future__ import annotations

import warnings

from pytest_finetune_bench.compare.evidence import TaskAnalysis
from pytest_finetune_bench.compare.flips import format_flips
from pytest_finetune_bench.compare.scores import UNIT_POINTS, TaskComparison
from pytest_finetune_bench.compare.sequential import (
    FAILED,
    IMPROVES,
    NO_REGRESSION,
    PASSED,
    GateRule,
    early_stop_line,
    sequence_gain_interval,
)
from pytest_finetune_bench.compare.stats import PairedStats

_EPS = 1e-9


class UnreliableIntervalWarning(UserWarning):
    """A statistical gate passed on an interval its method does not vouch for at this sample size."""


def improves_failure(
    comp: TaskComparison, min_gain: float, analysis: TaskAnalysis | None = None, confidence: float | None = None
) -> str | None:
    """Why `comp` does not gain at least `min_gain` (in its unit); None when it does."""
    gain = comp.gain_shown
    if gain is None:
        return f"{comp.task}: no score to compare ({comp.describe()})"
    if sequence_gain_interval(comp) is not None:
        return _decided_early(comp, GateRule(IMPROVES, min_gain), analysis)
    stats = _stats(analysis, confidence)
    wanted = comp.amount_text(min_gain, signed=True)
    if stats is not None and confidence is not None:
        low, _ = _gain_interval(comp, stats)
        if low is not None and _clears(low, min_gain):
            _warn_if_unsound(comp, "improves", stats)
            return None
        return (f"{comp.task} did not improve by {wanted} with {confidence:.0%} confidence: "
                f"{comp.describe()}; {_summary(stats, comp)}{_how_decided(stats)}")
    if gain + _EPS >= min_gain:
        _warn_if_no_statistics(comp.task, "improves", analysis, confidence)
        return None
    return f"{comp.task} did not improve by {wanted}: {comp.describe()}{_evidence(stats, comp, analysis)}"


def regression_failure(
    comp: TaskComparison, max_drop: float, analysis: TaskAnalysis | None = None, confidence: float | None = None
) -> str | None:
    """Why `comp` lost more than `max_drop` (in its unit); None when it did not. Lists the first regressed samples."""
    gain = comp.gain_shown
    if gain is None:
        return f"{comp.task}: no score to compare ({comp.describe()})"
    if sequence_gain_interval(comp) is not None:
        return _decided_early(comp, GateRule(NO_REGRESSION, max_drop), analysis)
    stats = _stats(analysis, confidence)
    allowed = comp.amount_text(max_drop)
    if stats is not None and confidence is not None:
        _, high = _gain_interval(comp, stats)
        if high is None or high + _EPS >= -max_drop:
            _warn_if_unsound(comp, "no_regression", stats)
            return None
        headline = (f"{comp.task} regressed by more than {allowed} with {confidence:.0%} "
                    f"confidence: {comp.describe()}; {_summary(stats, comp)}{_how_decided(stats)}")
    elif gain + _EPS >= -max_drop:
        _warn_if_no_statistics(comp.task, "no_regression", analysis, confidence)
        return None
    else:
        headline = f"{comp.task} regressed by more than {allowed}: {comp.describe()}{_evidence(stats, comp, analysis)}"
    flips = format_flips(analysis.regressions) if analysis is not None else ""
    return f"{headline}\n{flips}" if flips else headline


def _decided_early(comp: TaskComparison, rule: GateRule, analysis: TaskAnalysis | None) -> str | None:
    """A task that stopped early is judged on its confidence sequence, valid at the stop whatever the stopping.

    `improves` passes only on an interval at or above the minimum gain; `no_regression` fails only on
    one below minus the allowed drop: the rules of the statistical gates, at the sequence's error rate.
    """
    interval = sequence_gain_interval(comp)
    assert interval is not None
    low, high = interval
    verdict = rule.verdict(low, high)
    if (verdict == PASSED) if rule.gate == IMPROVES else (verdict != FAILED):
        return None
    unit = "pts" if comp.unit == UNIT_POINTS else comp.metric_name
    how = f"{early_stop_line(comp)}, gain in [{low:+.2f}, {high:+.2f}] {unit}"
    if rule.gate == IMPROVES:
        wanted = comp.amount_text(rule.threshold, signed=True)
        return f"{comp.task} did not improve by {wanted}: {comp.describe()}; {how}"
    headline = f"{comp.task} regressed by more than {comp.amount_text(rule.threshold)}: {comp.describe()}; {how}"
    flips = format_flips(analysis.regressions) if analysis is not None else ""
    return f"{headline}\n{flips}" if flips else headline


def _stats(analysis: TaskAnalysis | None, confidence: float | None) -> PairedStats | None:
    return None if analysis is None else analysis.stats(confidence or 0.95)


def _gain_interval(comp: TaskComparison, stats: PairedStats) -> tuple[float | None, float | None]:
    """(low, high) of the gain in the comparison's unit; the point estimate when the sample has no interval.

    None with no paired documents at all: then there is no evidence either way.
    """
    low, high = stats.gain_interval
    if low is None and stats.n > 0:
        low = high = stats.gain
    return _scaled(low, comp.scale), _scaled(high, comp.scale)


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def _clears(low: float, min_gain: float) -> bool:
    """The gain's lower bound reaches the minimum gain; a gain of 0 or more also needs it above 0.

    An interval that touches 0 is one the exact test does not reject "no difference" for (it is
    widened to 0 exactly then), so it shows no gain, whatever a threshold of 0 would say.
    """
    if min_gain >= 0 and low <= 0:
        return False
    return low + _EPS >= min_gain


def _how_decided(stats: PairedStats) -> str:
    """Said in a statistical gate's message when the interval does not carry the usual guarantee."""
    if stats.n == 0:
        return ""
    if stats.ci_low is None:
        return "; no interval, so the gate compared the point estimate"
    if stats.interval_note is not None:
        return f"; decided on an interval that is {stats.interval_note}"
    return ""


def _warn_if_unsound(comp: TaskComparison, gate: str, stats: PairedStats) -> None:
    reason = _how_decided(stats)
    if reason:
        warnings.warn(
            UnreliableIntervalWarning(f"{comp.task} {gate} passed{reason}: {_summary(stats, comp)}"), stacklevel=3
        )


def _warn_if_no_statistics(task: str, gate: str, analysis: TaskAnalysis | None, confidence: float | None) -> None:
    """A confidence was asked for, but the metric has no per-document scores to build an interval from."""
    if confidence is not None and analysis is not None and analysis.note is not None:
        warnings.warn(UnreliableIntervalWarning(f"{task} {gate} passed on the point estimate: {analysis.note}"),
                      stacklevel=3)


def _summary(stats: PairedStats, comp: TaskComparison) -> str:
    unit = "pts" if comp.unit == UNIT_POINTS else comp.metric_name
    return stats.summary(comp.scale, unit)


def _evidence(stats: PairedStats | None, comp: TaskComparison, analysis: TaskAnalysis | None) -> str:
    if stats is not None:
        return f"; {_summary(stats, comp)}"
    return f"; {analysis.note}" if analysis is not None and analysis.note else ""
