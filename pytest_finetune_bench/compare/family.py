"""Holm's step-down adjustment over a session's statistical gates, done on their intervals (no pytest here).

Each statistical gate (plan/gates.py: `interval` or `proven`) tests one hypothesis against its
threshold, and its interval *claims* when it rejects it: a proven gain or non-inferiority (a pass),
or, for `no_regression` under `interval`, a proven violation (a failure). With m such gates, each at
level α, the chance that at least one claim is wrong grows towards mα. Holm (1979) keeps that
family-wise error at α: order the gates by their p-values against their thresholds, and let the i-th
claim at level α/(m − i + 1), stopping at the first that cannot.

The gates' intervals are nested in their level (a stricter level only widens them: Tango's interval,
its McNemar widening and the bootstrap's percentiles all are), so "the interval at level a makes its
claim" is the same as "the p-value against the threshold is at most a". Holm only ever compares p with
α/r for r = 1..m, so each gate needs only its *strictest divisor*: the largest r whose level α/r still
lets its interval claim, found by binary search over r (`strictest_divisor`); p ≤ α/r exactly when
r ≤ that divisor. `holm_divisors` then runs the step-down on those numbers and gives each gate the r of
the level it is decided at: α/(m − i + 1) for the i-th claim, and for every gate after the stop the
level at which the stop happened (the one its interval was checked at and did not claim). Deciding each
gate on its interval at that level gives exactly Holm's decisions, and every such interval contains
the unadjusted one (its level is at most α).

Gates whose strictest divisors tie are ordered among themselves by their place in the plan; Holm's
decisions do not depend on that order, only which of the tied levels each is shown with.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pytest_finetune_bench.compare.gates import Decision
from pytest_finetune_bench.plan.gates import Family, Gate


def strictest_divisor(claims_at: Callable[[int], bool], m: int) -> int:
    """The largest r in 1..m for which `claims_at(r)` (the claim at level α/r), or 0 when even α does not claim.

    `claims_at` must be monotone: true at r implies true at every smaller r (a looser level).
    """
    low, high = 0, m  # claims at low (or low == 0), unknown above
    while low < high:
        mid = (low + high + 1) // 2
        if claims_at(mid):
            low = mid
        else:
            high = mid - 1
    return low


@dataclass(frozen=True)
class HolmOutcome:
    """Per gate (in the order given): whether Holm rejects its hypothesis, and the r of its level α/r."""

    rejected: tuple[bool, ...]
    divisors: tuple[int, ...]


def holm_divisors(strictest: Sequence[int]) -> HolmOutcome:
    """Holm's step-down from each gate's strictest divisor (see the module's docstring)."""
    m = len(strictest)
    order = sorted(range(m), key=lambda g: -strictest[g])  # smallest p-value first; ties keep the plan's order
    divisors = [0] * m
    rejected = [False] * m
    for rank, gate in enumerate(order):
        level = m - rank  # the i-th (rank i - 1) claims at α/(m − i + 1)
        if strictest[gate] < level:
            for rest in order[rank:]:
                divisors[rest] = level
            break
        rejected[gate], divisors[gate] = True, level
    return HolmOutcome(tuple(rejected), tuple(divisors))


def family_levels(family: Family, gates: Sequence[Gate], decide_at: Callable[[Gate], Decision]) -> Mapping[str, float]:
    """The confidence level each of the family's gates is decided at: its Holm level when the family is adjusted.

    `decide_at` decides a gate as the session would (its interval at the gate's `confidence`); a gate
    decided otherwise (skipped, no interval, stopped early) never claims, so it only makes the others'
    levels stricter.
    """
    members = [gate for gate in gates if gate.name in family.gates]
    if not family.adjusted:
        return {gate.name: 1.0 - family.alpha for gate in members}
    m = len(members)

    def claims(gate: Gate, divisor: int) -> bool:
        return decide_at(dataclasses.replace(gate, confidence=1.0 - family.alpha / divisor)).claimed

    strictest = [strictest_divisor(functools.partial(claims, gate), m) for gate in members]
    outcome = holm_divisors(strictest)
    return {gate.name: 1.0 - family.alpha / r for gate, r in zip(members, outcome.divisors, strict=True)}
