"""Threshold checks shared by the built-in gate tests and the `bench_result` assertion helpers."""

from __future__ import annotations

from pytest_finetune_bench.results import TaskComparison


def improves_failure(comp: TaskComparison, min_gain_points: float) -> str | None:
    """Why `comp` does not gain at least `min_gain_points`; None when it does."""
    if comp.delta_points is None:
        return f"{comp.task}: no score to compare ({comp.describe()})"
    if comp.delta_points + 1e-9 >= min_gain_points:
        return None
    return f"{comp.task} did not improve by {min_gain_points:+.2f} points: {comp.describe()}"


def regression_failure(comp: TaskComparison, max_drop_points: float) -> str | None:
    """Why `comp` lost more than `max_drop_points`; None when it did not."""
    if comp.delta_points is None:
        return f"{comp.task}: no score to compare ({comp.describe()})"
    if comp.delta_points + 1e-9 >= -max_drop_points:
        return None
    return f"{comp.task} regressed by more than {max_drop_points:.2f} points: {comp.describe()}"
