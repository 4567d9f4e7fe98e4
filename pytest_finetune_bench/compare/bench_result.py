"""`bench_result`: the fine-tuned run, its comparison with the base, and assertion helpers."""

from __future__ import annotations

import warnings

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.evidence import TaskAnalysis
from pytest_finetune_bench.compare.gates import UnreliableIntervalWarning, decide
from pytest_finetune_bench.compare.scores import UNIT_POINTS, TaskComparison
from pytest_finetune_bench.compare.stats import PairedStats
from pytest_finetune_bench.core.records import RunRecord
from pytest_finetune_bench.plan.gates import IMPROVES, NO_REGRESSION, RULES, Gate, gate_level, plan_rule


class BenchResult:
    """What a user's benchmark test asserts on.

    Scores and deltas are lm-eval's own values: fractions for accuracies (0.02 = 2 points), the
    metric's unit otherwise. Thresholds (`by`, `max_drop`) are in the same values and apply to the
    gain, which is positive when the task got better, also where lower is better (perplexity).
    """

    def __init__(
        self,
        base: RunRecord,
        finetuned: RunRecord,
        comparisons: dict[str, TaskComparison],
        analyses: dict[str, TaskAnalysis],
    ) -> None:
        self.base = base
        self.finetuned = finetuned
        self.comparisons = comparisons
        self.analyses = analyses

    def __repr__(self) -> str:
        return f"<BenchResult {', '.join(f'{t}: {c.describe()}' for t, c in self.comparisons.items())}>"

    def comparison(self, task: str) -> TaskComparison:
        if task not in self.comparisons:
            raise BenchError(f"task {task!r} was not benchmarked; this run has {', '.join(self.comparisons)}")
        return self.comparisons[task]

    def delta(self, task: str) -> float:
        """Fine-tuned minus base on `task`'s headline metric (0.02 = +2 points; a perplexity rise is positive)."""
        value = self.comparison(task).delta
        if value is None:
            raise BenchError(f"task {task!r} has no score on one side: {self.comparison(task).describe()}")
        return value

    def score(self, task: str, model: str = "fine-tuned") -> float | None:
        comp = self.comparison(task)
        return comp.base_accuracy if model == "base" else comp.finetuned_accuracy

    def stats(self, task: str, confidence: float = 0.95) -> PairedStats:
        """Paired confidence interval (see stats.py) and significance test of `task`'s delta."""
        self.comparison(task)
        if task not in self.analyses:
            raise BenchError(f"no statistics for {task!r}: they failed in this session (see benchmark.json errors)")
        stats = self.analyses[task].stats(confidence)
        if stats is None:
            raise BenchError(f"{task}: {self.analyses[task].note}; assert on delta() instead")
        return stats

    def assert_improves(self, task: str, by: float = 0.02, confidence: float | None = None,
                        rule: str | None = None) -> None:
        """Fail unless `task` improved by at least `by` (0.02 = 2 points; for a perplexity, a fall of `by`).

        `rule` is the gates' (`point`, `interval`, `proven`; docs/thresholds.md): with `confidence`
        alone (e.g. 0.95) it is `interval`, and a statistical rule without `confidence` decides at 95%.
        """
        __tracebackhide__ = True
        self._assert(task, IMPROVES, by, confidence, rule)

    def assert_no_regression(self, task: str, max_drop: float = 0.05, confidence: float | None = None,
                             rule: str | None = None) -> None:
        """Fail if `task` got worse by more than `max_drop` (0.05 = 5 points; for a perplexity, a rise).

        Under `interval` (or `confidence` alone) it fails only when the whole paired interval is below
        -`max_drop`; under `proven` it passes only when the whole interval is above it.
        """
        __tracebackhide__ = True
        self._assert(task, NO_REGRESSION, max_drop, confidence, rule)

    def _assert(self, task: str, kind: str, threshold: float, confidence: float | None, rule: str | None) -> None:
        """Decide a gate of the test's own, as the built-in gates are decided (compare/gates.py)."""
        __tracebackhide__ = True
        if rule is not None and rule not in RULES:
            raise BenchError(f"rule={rule!r} is not a gate rule: use one of {', '.join(RULES)}")
        comp = self.comparison(task)
        chosen = plan_rule(confidence, rule)
        gate = Gate(task, kind, threshold, comp.higher_is_better, comp.unit == UNIT_POINTS,
                    chosen, gate_level(chosen, confidence))
        decision = decide(gate, comp, self.analyses.get(task))
        if not decision.passed:
            raise AssertionError(decision.message)
        if decision.warning is not None:
            warnings.warn(UnreliableIntervalWarning(decision.warning), stacklevel=3)
