"""The gates of a plan: one immutable `Gate` per gated task and kind, and the rule that settles it.

A gate judges the gain: the change signed so that positive is better, so for a metric where lower
is better (perplexity, bits_per_byte) a fall is a gain. `improves` asks for a gain of at least its
threshold; `no_regression` for a gain of at least minus its threshold (the allowed drop).

Thresholds are in the metric's own unit: a fraction for a mean of per-document scores in [0, 1]
(an accuracy: 0.02 = 2 points), the metric's value otherwise (5 = 5 word_perplexity). The options
take accuracies in points (`--bench-min-gain 2`); `make_gates` converts them here, once.

A gate is decided by one of three rules, chosen in the plan:
- `point`: the point estimate of the gain against the threshold;
- `interval` (--bench-confidence): `improves` needs the whole paired interval of the gain at or
  above the threshold, and above 0 for a threshold of 0 or more (an interval touching 0 is one the
  exact paired test does not reject "no difference" for); `no_regression` fails only when the whole
  interval lies below minus the allowed drop;
- `sequence` (--bench-early-stop): the interval rule on the anytime-valid confidence sequence of a
  task that stopped early (compare/sequential.py). A task that ran in full falls back to `interval`
  or `point`.

`passes` and `settled` are the one statement of these rules; compare/gates.py decides a gate from a
comparison with them, early stopping (run/early_stop.py) settles gates chunk by chunk with them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_finetune_bench.plan.metrics import Headline

IMPROVES = "improves"
NO_REGRESSION = "no_regression"
KINDS = (IMPROVES, NO_REGRESSION)
PASSED = "passed"
FAILED = "failed"
SKIPPED = "skipped"
RULE_POINT = "point"
RULE_INTERVAL = "interval"
RULE_SEQUENCE = "sequence"
# A bound exactly at a threshold passes, whatever float rounding did to either.
EPS = 1e-9
# The options' points per unit of a fraction.
POINTS_PER_FRACTION = 100.0

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Gate:
    """One gate on one task: its kind, its threshold on the gain (in the metric's own unit), its rule."""

    task: str
    kind: str  # IMPROVES or NO_REGRESSION
    threshold: float  # improves: the minimum gain; no_regression: the allowed drop
    higher_is_better: bool = True  # the metric's direction (from its headline)
    fraction: bool = True  # the metric is a fraction (an accuracy): the options gave its threshold in points
    rule: str = RULE_POINT
    confidence: float | None = None  # the interval's level, for RULE_INTERVAL

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown gate {self.kind!r}")

    @property
    def name(self) -> str:
        """`ifeval::improves`: the gate's test id within its experiment and its key in benchmark.json."""
        return f"{self.task}::{self.kind}"

    @property
    def bar(self) -> float:
        """The least gain that passes."""
        return self.threshold if self.kind == IMPROVES else -self.threshold

    def passes_point(self, gain: float) -> bool:
        """The point rule: the gain reaches the bar."""
        return gain + EPS >= self.bar

    def passes(self, gain_low: float, gain_high: float) -> bool:
        """The interval rule on the gain's interval: `improves` on its lower bound, `no_regression` on its upper."""
        passed, failed = self.settled(np.array([gain_low]), np.array([gain_high]))
        return bool(passed[0]) if self.kind == IMPROVES else not bool(failed[0])

    def settled(self, gain_low: FloatArray, gain_high: FloatArray) -> tuple[BoolArray, BoolArray]:
        """(passed, failed) per interval: passed once the whole interval clears the bar, failed once it is below.

        A minimum gain of 0 or more also needs the interval above 0 (see the module's docstring).
        """
        passed = gain_low + EPS >= self.bar
        if self.kind == IMPROVES and self.threshold >= 0:
            passed &= gain_low > 0
        return passed, gain_high + EPS < self.bar

    def verdict(self, gain_low: float, gain_high: float) -> str | None:
        """PASSED or FAILED once the gain's interval settles the gate, else None (keep evaluating)."""
        passed, failed = self.settled(np.array([gain_low]), np.array([gain_high]))
        return PASSED if passed[0] else FAILED if failed[0] else None

    def correct(self, gain: float) -> str:
        """The right verdict for a population whose true gain is `gain`."""
        return PASSED if self.passes_point(gain) else FAILED

    def for_metric(self, higher_is_better: bool, fraction: bool) -> Gate:
        """This gate for the metric the results show, where the plan could not know it: a task defined in
        Python, or a per-document metric whose scores are not fractions (its threshold is then the option's
        number in the metric's unit, as for any metric that is not a fraction)."""
        if (higher_is_better, fraction) == (self.higher_is_better, self.fraction):
            return self
        factor = 1.0 if fraction == self.fraction else (
            POINTS_PER_FRACTION if self.fraction else 1 / POINTS_PER_FRACTION)
        return dataclasses.replace(self, threshold=self.threshold * factor, higher_is_better=higher_is_better,
                                   fraction=fraction)

    @property
    def option_amount(self) -> float:
        """The threshold as the options spell it: points for a fraction."""
        return self.threshold * POINTS_PER_FRACTION if self.fraction else self.threshold

    def describe(self) -> str:
        """`improves by +2` / `no_regression beyond -5`, in the options' numbers."""
        if self.kind == IMPROVES:
            return f"improves by {self.option_amount:+g}"
        return f"no_regression beyond -{self.option_amount:g}"

    def to_spec(self) -> dict[str, Any]:
        """The gate as the early-stopping child is told it (JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Gate:
        return cls(**{f.name: spec[f.name] for f in dataclasses.fields(cls) if f.name in spec})


def plan_rule(confidence: float | None, early_stop: bool) -> str:
    """The rule the options ask for: a sequence with early stopping, an interval with a confidence level."""
    return RULE_SEQUENCE if early_stop else RULE_INTERVAL if confidence is not None else RULE_POINT


def make_gates(
    tasks: Iterable[str], headlines: Mapping[str, Headline], min_gain: Mapping[str, float | None],
    max_drop: Mapping[str, float], confidence: float | None, early_stop: bool,
) -> tuple[Gate, ...]:
    """The plan's gates: `improves` where a minimum gain is set, `no_regression` on every task.

    `min_gain` and `max_drop` are the options' values (points for a per-document metric, the metric's
    own unit otherwise). A task whose headline comes from its results (defined in Python) is taken for
    a higher-is-better fraction until they say otherwise (`Gate.for_metric`).
    """
    rule = plan_rule(confidence, early_stop)
    gates = []
    for task in tasks:
        headline = headlines.get(task)
        fraction = headline.per_document if headline is not None else True
        higher = headline.higher_is_better if headline is not None else True
        scale = POINTS_PER_FRACTION if fraction else 1.0
        wanted = ((IMPROVES, min_gain.get(task)), (NO_REGRESSION, max_drop[task]))
        gates += [Gate(task, kind, amount / scale, higher, fraction, rule, confidence)
                  for kind, amount in wanted if amount is not None]
    return tuple(gates)
