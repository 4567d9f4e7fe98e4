"""Threshold checks shared by the built-in gate tests and the `bench_result` assertion helpers.

Without statistics a gate compares the point estimate of the delta with its threshold. With
statistics (a confidence level was asked for) `improves` needs the whole paired confidence interval
above the minimum gain, and `no_regression` fails only when the whole interval lies below minus the
allowed drop: a gate then fails on evidence, not on noise.
"""

from __future__ import annotations

from pytest_finetune_bench.analysis import TaskAnalysis
from pytest_finetune_bench.flips import format_flips
from pytest_finetune_bench.results import TaskComparison
from pytest_finetune_bench.stats import PairedStats

_EPS = 1e-9


def improves_failure(
    comp: TaskComparison, min_gain_points: float, analysis: TaskAnalysis | None = None, confidence: float | None = None
) -> str | None:
    """Why `comp` does not gain at least `min_gain_points`; None when it does."""
    if comp.delta_points is None:
        return f"{comp.task}: no score to compare ({comp.describe()})"
    stats = _stats(analysis, confidence)
    if stats is not None and confidence is not None:
        if stats.ci_low is not None and stats.ci_low * 100 + _EPS >= min_gain_points:
            return None
        return (f"{comp.task} did not improve by {min_gain_points:+.2f} points with {confidence:.0%} confidence: "
                f"{comp.describe()}; {stats.summary()}")
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
        if stats.ci_high is None or stats.ci_high * 100 + _EPS >= -max_drop_points:
            return None
        headline = (f"{comp.task} regressed by more than {max_drop_points:.2f} points with {confidence:.0%} "
                    f"confidence: {comp.describe()}; {stats.summary()}")
    elif comp.delta_points + _EPS >= -max_drop_points:
        return None
    else:
        headline = (f"{comp.task} regressed by more than {max_drop_points:.2f} points: "
                    f"{comp.describe()}{_evidence(stats)}")
    flips = format_flips(analysis.regressions) if analysis is not None else ""
    return f"{headline}\n{flips}" if flips else headline


def _stats(analysis: TaskAnalysis | None, confidence: float | None) -> PairedStats | None:
    return None if analysis is None else analysis.stats(confidence or 0.95)


def _evidence(stats: PairedStats | None) -> str:
    return "" if stats is None else f"; {stats.summary()}"
