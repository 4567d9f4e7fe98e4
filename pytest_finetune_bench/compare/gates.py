"""Threshold checks shared by the built-in gate tests and the `bench_result` assertion helpers.

Without statistics a gate compares the point estimate of the delta with its threshold. With
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
from pytest_finetune_bench.compare.scores import TaskComparison
from pytest_finetune_bench.compare.stats import PairedStats

_EPS = 1e-9


class UnreliableIntervalWarning(UserWarning):
    """A statistical gate passed on an interval its method does not vouch for at this sample size."""


def improves_failure(
    comp: TaskComparison, min_gain_points: float, analysis: TaskAnalysis | None = None, confidence: float | None = None
) -> str | None:
    """Why `comp` does not gain at least `min_gain_points`; None when it does."""
    if comp.delta_points is None:
        return f"{comp.task}: no score to compare ({comp.describe()})"
    stats = _stats(analysis, confidence)
    if stats is not None and confidence is not None:
        low = _decision_bound(stats, stats.ci_low)
        if low is not None and _clears(low, min_gain_points):
            _warn_if_unsound(comp.task, "improves", stats)
            return None
        return (f"{comp.task} did not improve by {min_gain_points:+.2f} points with {confidence:.0%} confidence: "
                f"{comp.describe()}; {stats.summary()}{_how_decided(stats)}")
    if comp.delta_points + _EPS >= min_gain_points:
        return None
    return f"{comp.task} did not improve by {min_gain_points:+.2f} points: {comp.describe()}{_evidence(stats)}"


def regression_failure(
    comp: TaskComparison, max_drop_points: float, analysis: TaskAnalysis | None = None, confidence: float | None = None
) -> str | None:
    """Why `comp` lost more than `max_drop_points`; None when it did not. Lists the first regressed samples."""
    if comp.delta_points is None:
        return f"{comp.task}: no score to compare ({comp.describe()})"
    stats = _stats(analysis, confidence)
    if stats is not None and confidence is not None:
        high = _decision_bound(stats, stats.ci_high)
        if high is None or high * 100 + _EPS >= -max_drop_points:
            _warn_if_unsound(comp.task, "no_regression", stats)
            return None
        headline = (f"{comp.task} regressed by more than {max_drop_points:.2f} points with {confidence:.0%} "
                    f"confidence: {comp.describe()}; {stats.summary()}{_how_decided(stats)}")
    elif comp.delta_points + _EPS >= -max_drop_points:
        return None
    else:
        headline = (f"{comp.task} regressed by more than {max_drop_points:.2f} points: "
                    f"{comp.describe()}{_evidence(stats)}")
    flips = format_flips(analysis.regressions) if analysis is not None else ""
    return f"{headline}\n{flips}" if flips else headline


def _stats(analysis: TaskAnalysis | None, confidence: float | None) -> PairedStats | None:
    return None if analysis is None else analysis.stats(confidence or 0.95)


def _decision_bound(stats: PairedStats, bound: float | None) -> float | None:
    """The interval bound a statistical gate compares; the point estimate when the sample has no interval.

    None with no paired documents at all: then there is no evidence either way.
    """
    if bound is None and stats.n > 0:
        return stats.delta
    return bound


def _clears(low: float, min_gain_points: float) -> bool:
    """The lower bound reaches the minimum gain; a gain of 0 or more also needs it above 0.

    An interval that touches 0 is one the exact test does not reject "no difference" for (it is
    widened to 0 exactly then), so it shows no gain, whatever a threshold of 0 would say.
    """
    if min_gain_points >= 0 and low <= 0:
        return False
    return low * 100 + _EPS >= min_gain_points


def _how_decided(stats: PairedStats) -> str:
    """Said in a statistical gate's message when the interval does not carry the usual guarantee."""
    if stats.n == 0:
        return ""
    if stats.ci_low is None:
        return "; no interval, so the gate compared the point estimate"
    if stats.interval_note is not None:
        return f"; decided on an interval that is {stats.interval_note}"
    return ""


def _warn_if_unsound(task: str, gate: str, stats: PairedStats) -> None:
    reason = _how_decided(stats)
    if reason:
        warnings.warn(
            UnreliableIntervalWarning(f"{task} {gate} passed{reason}: {stats.summary()}"), stacklevel=3
        )


def _evidence(stats: PairedStats | None) -> str:
    return "" if stats is None else f"; {stats.summary()}"
