"""The gates of a plan: one immutable `Gate` per gated task and kind, and the rule that settles it.

A gate judges the gain: the change signed so that positive is better, so for a metric where lower
is better (perplexity, bits_per_byte) a fall is a gain. `improves` asks for a gain of at least its
threshold; `no_regression` for a gain of at least minus its threshold (the allowed drop).

Thresholds are in the metric's own unit: a fraction for a mean of per-document scores in [0, 1]
(an accuracy: 0.02 = 2 points), the metric's value otherwise (5 = 5 word_perplexity). The options
take accuracies in points (`--bench-min-gain 2`); `make_gates` converts them here, once.

A gate is decided by one of three rules, per task (--bench-gate-rule, plan/choices.py):
- `point`: the point estimate of the gain against the threshold;
- `interval`: `improves` needs the whole paired interval of the gain at or above the threshold, and
  above 0 for a threshold of 0 or more (an interval touching 0 is one the exact paired test does not
  reject "no difference" for); `no_regression` fails only when the whole interval lies below minus
  the allowed drop (an interval touching it does not fail);
- `proven`: both kinds pass only when the interval's lower end lies strictly above the bar
  (non-inferiority for `no_regression`, superiority for `improves`); an interval touching the bar fails.
With --bench-early-stop a task that stopped early is decided on its anytime-valid confidence sequence
(compare/sequential.py) by the same rule; a task that ran in full by its fixed-n interval or point.

The rule's claim is what its error rate bounds: a pass for `improves` and for `proven`, a failure
for `no_regression` under `interval`. `claims_pass` says which; the Holm adjustment over a session's
statistical gates (compare/family.py) counts those claims.

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
RULE_PROVEN = "proven"
RULES = (RULE_POINT, RULE_INTERVAL, RULE_PROVEN)
STATISTICAL_RULES = (RULE_INTERVAL, RULE_PROVEN)
DEFAULT_CONFIDENCE = 0.95  # the level of a statistical rule without --bench-confidence
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
    confidence: float | None = None  # the interval's level (for a statistical rule: after the family's adjustment)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown gate {self.kind!r}")
        if self.rule not in RULES:
            raise ValueError(f"unknown gate rule {self.rule!r}")

    @property
    def statistical(self) -> bool:
        """Decided on an interval (`interval`, `proven`), not on the point estimate."""
        return self.rule in STATISTICAL_RULES

    @property
    def claims_pass(self) -> bool:
        """Whether the rule's error-controlled claim is a pass (`improves`, `proven`) rather than a failure."""
        return self.kind == IMPROVES or self.rule == RULE_PROVEN

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
        """The gate's rule on the gain's interval: a claimed pass needs the lower end clear of the bar, and
        otherwise (`no_regression` under `interval`) only the upper end below it fails."""
        passed, failed = self.settled(np.array([gain_low]), np.array([gain_high]))
        return bool(passed[0]) if self.claims_pass else not bool(failed[0])

    def settled(self, gain_low: FloatArray, gain_high: FloatArray) -> tuple[BoolArray, BoolArray]:
        """(passed, failed) per interval: passed once the interval clears the bar, failed once it cannot.

        `proven` needs the lower end strictly above the bar (touching it is not proof) and fails once the
        upper end is at or below it; the other rules pass at the bar and fail once the whole interval is
        below. A minimum gain of 0 or more also needs the interval above 0 (see the module's docstring).
        """
        if self.rule == RULE_PROVEN:
            return gain_low > self.bar + EPS, gain_high <= self.bar + EPS
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
        """`improves by +2 (point)` / `no_regression beyond -5 (proven at 97.5%)`, in the options' numbers."""
        level = f" at {100 * self.confidence:.4g}%" if self.statistical and self.confidence is not None else ""
        rule = f" ({self.rule}{level})"
        if self.kind == IMPROVES:
            return f"improves by {self.option_amount:+g}{rule}"
        return f"no_regression beyond -{self.option_amount:g}{rule}"

    def to_spec(self) -> dict[str, Any]:
        """The gate as the early-stopping child is told it (JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Gate:
        return cls(**{f.name: spec[f.name] for f in dataclasses.fields(cls) if f.name in spec})


def plan_rule(confidence: float | None, rule: str | None = None) -> str:
    """The rule of a gate: the one asked for, else `interval` with a confidence level, else `point`."""
    return rule if rule is not None else RULE_INTERVAL if confidence is not None else RULE_POINT


def gate_level(rule: str, confidence: float | None) -> float | None:
    """The interval's level a gate is told: a statistical rule always has one (95% unless asked otherwise)."""
    return (confidence or DEFAULT_CONFIDENCE) if rule in STATISTICAL_RULES else confidence


def make_gates(
    tasks: Iterable[str], headlines: Mapping[str, Headline], min_gain: Mapping[str, float | None],
    max_drop: Mapping[str, float], rules: Mapping[str, str], confidence: float | None,
) -> tuple[Gate, ...]:
    """The plan's gates: `improves` where a minimum gain is set, `no_regression` on every task.

    `min_gain` and `max_drop` are the options' values (points for a per-document metric, the metric's
    own unit otherwise); `rules` each task's rule. A task whose headline comes from its results (defined
    in Python) is taken for a higher-is-better fraction until they say otherwise (`Gate.for_metric`).
    """
    gates = []
    for task in tasks:
        rule = rules[task]
        headline = headlines.get(task)
        fraction = headline.per_document if headline is not None else True
        higher = headline.higher_is_better if headline is not None else True
        scale = POINTS_PER_FRACTION if fraction else 1.0
        wanted = ((IMPROVES, min_gain.get(task)), (NO_REGRESSION, max_drop[task]))
        gates += [Gate(task, kind, amount / scale, higher, fraction, rule, gate_level(rule, confidence))
                  for kind, amount in wanted if amount is not None]
    return tuple(gates)


ADJUST_HOLM = "holm"
ADJUST_NONE = "none"
FAMILY_ADJUSTS = (ADJUST_HOLM, ADJUST_NONE)


@dataclass(frozen=True)
class Family:
    """A plan's statistical gates (`interval`, `proven`) and how their error is controlled together.

    With `holm` (the default) and more than one such gate, each gate's interval is taken at its Holm
    level (compare/family.py), so the chance that any of them makes a wrong claim is at most `alpha`;
    early-stopping sequences of their tasks each get `error_rate / tasks` (Bonferroni).
    """

    adjust: str  # ADJUST_HOLM or ADJUST_NONE
    alpha: float  # 1 - the confidence level
    gates: tuple[str, ...]  # the statistical gates' names
    tasks: tuple[str, ...]  # their tasks

    @property
    def adjusted(self) -> bool:
        """Whether the levels are adjusted: Holm asked for, and more than one gate to adjust over."""
        return self.adjust == ADJUST_HOLM and len(self.gates) > 1

    @property
    def controlled(self) -> float | None:
        """The family-wise error rate the session controls; None when the gates are not adjusted together."""
        return self.alpha if self.adjusted or len(self.gates) == 1 else None

    def sequence_alpha(self, task: str, error_rate: float) -> float:
        """The error rate of `task`'s early-stopping sequence: Bonferroni over the family's tasks."""
        return error_rate / len(self.tasks) if self.adjusted and task in self.tasks else error_rate

    def statement(self) -> str | None:
        """`family-wise error ≤ 5% over 6 gates (Holm)`; None without statistical gates."""
        m = len(self.gates)
        if m == 0:
            return None
        if self.adjusted:
            return f"family-wise error ≤ {self.alpha:.3g} over {m} gates (Holm)"
        if m == 1:
            return f"family-wise error ≤ {self.alpha:.3g} over 1 gate"
        return (f"no family-wise adjustment (--bench-family-adjust none): each of {m} gates errs ≤ {self.alpha:.3g}, "
                f"together up to {min(1.0, m * self.alpha):.3g}")

    def to_json(self) -> dict[str, Any]:
        """benchmark.json's `family`."""
        return {"adjust": self.adjust, "alpha": self.alpha, "gates": list(self.gates),
                "family_wise_error": self.controlled, "statement": self.statement()}


def make_family(gates: Iterable[Gate], adjust: str, confidence: float | None) -> Family:
    """The family of the statistical gates among `gates`."""
    statistical = [gate for gate in gates if gate.statistical]
    alpha = round(1.0 - (confidence or DEFAULT_CONFIDENCE), 12)  # 0.05, not 0.050000000000000044
    return Family(adjust, alpha, tuple(g.name for g in statistical), tuple(dict.fromkeys(g.task for g in statistical)))
