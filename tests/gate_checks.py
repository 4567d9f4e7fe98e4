"""Gate decisions for unit tests, with thresholds as the options give them (points for accuracies)."""

from __future__ import annotations

import warnings

from pytest_finetune_bench.compare.evidence import TaskAnalysis
from pytest_finetune_bench.compare.gates import UnreliableIntervalWarning, decide
from pytest_finetune_bench.compare.scores import UNIT_POINTS, TaskComparison
from pytest_finetune_bench.plan.gates import IMPROVES, NO_REGRESSION, POINTS_PER_FRACTION, Gate, plan_rule


def gate_for(comp: TaskComparison, kind: str, amount: float, confidence: float | None = None) -> Gate:
    """The plan's gate for `comp`'s task: `amount` in points for a fraction, else in the metric's unit."""
    fraction = comp.unit == UNIT_POINTS
    return Gate(comp.task, kind, amount / POINTS_PER_FRACTION if fraction else amount, comp.higher_is_better,
                fraction, plan_rule(confidence), confidence)


def _failure(comp: TaskComparison, kind: str, amount: float, analysis: TaskAnalysis | None,
             confidence: float | None) -> str | None:
    decision = decide(gate_for(comp, kind, amount, confidence), comp, analysis)
    if decision.warning is not None:
        warnings.warn(UnreliableIntervalWarning(decision.warning), stacklevel=3)
    return None if decision.passed else decision.message


def improves_failure(comp: TaskComparison, min_gain: float, analysis: TaskAnalysis | None = None,
                     confidence: float | None = None) -> str | None:
    """Why `comp` does not gain `min_gain`; None when it does (warning as a gate test would)."""
    return _failure(comp, IMPROVES, min_gain, analysis, confidence)


def regression_failure(comp: TaskComparison, max_drop: float, analysis: TaskAnalysis | None = None,
                       confidence: float | None = None) -> str | None:
    """Why `comp` lost more than `max_drop`; None when it did not."""
    return _failure(comp, NO_REGRESSION, max_drop, analysis, confidence)
