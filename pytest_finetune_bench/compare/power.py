"""How many documents a statistical gate needs: sample-size planning for pass/fail metrics (no pytest here).

A gate on a pass/fail metric (every per-document score 0 or 1) is decided from three counts over the n
documents both models answer: b went fail→pass, c pass→fail, the rest agree. If each document
independently lands in those three cells with probabilities (p_b, p_c, 1 - p_b - p_c), the true gain
is Δ = p_b - p_c and the *discordance* d = p_b + p_c is the share of documents on which the two models
disagree. The base score p0 only bounds them: a document can regress only where the base passes
(p_c <= p0) and improve only where it fails (p_b <= 1 - p0).

The gate is right when its verdict is the one the true gain deserves (`Gate.correct`): a pass for a
gain at or above the bar, a failure below it. Its *power* at n documents is the chance of that, and
`plan_documents` finds the least n at which it reaches the target (80% by default). The chance is
estimated from `SESSIONS` seeded simulated sessions, each decided exactly as the session decides a
gate: the point estimate against the bar for `point`, and for `interval` and `proven` the paired
interval of stats.py (`paired_proportion_ci`) at the gate's level, settled by the gate's own rule
(`Gate.settled`). n is searched by doubling, then bisection. Power on counts is not perfectly
monotone in n (the counts are whole numbers), so a few documents either side of the answer can
differ by a point or so; the answer is the n the search lands on, with the power measured there.

What the plan cannot know is stated with it: the expected gain (by default the gate's bar plus
`DEFAULT_MARGIN` for `improves`, no change for `no_regression`) and the discordance (by default
`assumed_discordance`, or what an earlier run's paired counts showed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.stats import paired_proportion_ci
from pytest_finetune_bench.plan.gates import DEFAULT_CONFIDENCE, EPS, IMPROVES, PASSED, BoolArray, Gate

TARGET_POWER = 0.8
MAX_DOCUMENTS = 100_000
SESSIONS = 4000  # simulated sessions per n: the power is known to about ±0.6 points at 80%
SEED = 0
# `improves` is planned for a gain this much above its minimum gain (a fraction: 2 points), as the
# chance of proving a gain exactly at the bar never exceeds the error rate, whatever n.
DEFAULT_MARGIN = 0.02
# Without an earlier run, the models are assumed to disagree on half the documents two independent
# models with the same scores would disagree on: a fine-tune keeps most of its base's answers.
ASSUMED_AGREEMENT = 0.5

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class PowerPlan:
    """The documents one gate needs, with the assumptions they rest on."""

    gate: Gate  # decided at gate.confidence (after any family adjustment)
    base: float  # the base score, a fraction
    base_source: str  # where the base score came from
    gain: float  # the expected true gain, a fraction
    gain_source: str  # "given", or how the default was made
    discordance: float  # the expected share of documents the two models disagree on
    discordance_source: str  # where the discordance came from
    target: float
    documents: int | None  # None: not reached within `cap`
    power: float  # measured at `documents`, or at `cap` when it was not reached
    cap: int
    sessions: int

    def documents_text(self) -> str:
        """`4,699 documents (power 81.3%)` or `more than 100,000 documents (power 2% at 100,000)`."""
        if self.documents is None:
            return f"more than {self.cap:,} documents (power {self.power:.0%} at {self.cap:,})"
        noun = "document" if self.documents == 1 else "documents"
        return f"{self.documents:,} {noun} (power {self.power:.1%})"

    @property
    def verdict(self) -> str:
        """The verdict the expected gain deserves: what the gate should reach."""
        return "pass" if self.gate.correct(self.gain) == PASSED else "fail"

    def assumptions(self) -> str:
        """What the number rests on, in one line (points and percents)."""
        improve, regress = cell_probabilities(self.base, self.gain, self.discordance)
        return (f"base score {_percent(self.base)} ({self.base_source}), "
                f"true gain {100 * self.gain:+.4g} pts ({self.gain_source}), "
                f"discordance {_percent(self.discordance)} ({self.discordance_source}): {_percent(improve)} of "
                f"documents improve, {_percent(regress)} regress")

    def note(self) -> str | None:
        """Why the number is small whatever the data, when the rule gives the benefit of the doubt."""
        if self.gate.claims_pass or self.verdict == "fail":
            return None
        return (f"{self.gate.kind} under {self.gate.rule} fails only on a loss shown beyond the bar, so a fine-tune "
                "that deserves a pass passes at any size; plan for the loss it must catch with a gain below the bar")

    def target_text(self) -> str:
        """`pass in at least 80% of runs (4000 seeded simulated sessions per size tried)`."""
        return (f"{self.verdict} in at least {self.target:.0%} of runs "
                f"({self.sessions} seeded simulated sessions per size tried)")


def _percent(value: float) -> str:
    return f"{100 * value:.4g}%"


def default_gain(gate: Gate) -> tuple[float, str]:
    """The gain a gate is planned for when none is given, and how it was made: the minimum gain plus the margin
    for `improves`, no change for `no_regression`."""
    if gate.kind == IMPROVES:
        return gate.bar + DEFAULT_MARGIN, f"the minimum gain plus {100 * DEFAULT_MARGIN:g} pts"
    return 0.0, "no change"


def assumed_discordance(base: float, gain: float) -> float:
    """Half the disagreement of two independent models scoring `base` and `base + gain`, and at least |gain|."""
    tuned = base + gain
    independent = base * (1.0 - tuned) + tuned * (1.0 - base)
    return max(ASSUMED_AGREEMENT * independent, abs(gain))


def observed_discordance(improved: int, regressed: int, documents: int) -> float:
    """The share of documents an earlier run's two models disagreed on."""
    return (improved + regressed) / documents


def cell_probabilities(base: float, gain: float, discordance: float) -> tuple[float, float]:
    """(p_b, p_c): the chances a document improves and regresses; BenchError when the numbers cannot go together."""
    if not 0.0 <= base <= 1.0:
        raise BenchError(f"base score {100 * base:g}% is not between 0 and 100%: give it in percent")
    if not 0.0 <= discordance <= 1.0:
        raise BenchError(f"discordance {100 * discordance:g}% is not between 0 and 100%: give it in percent")
    if abs(gain) > discordance + EPS:
        raise BenchError(f"a gain of {100 * gain:+g} pts needs the models to disagree on at least {100 * abs(gain):g}% "
                         f"of documents, not {100 * discordance:g}%: raise the discordance or lower the gain")
    improve, regress = (discordance + gain) / 2.0, (discordance - gain) / 2.0
    if regress > base + EPS or improve > 1.0 - base + EPS:
        raise BenchError(f"base {100 * base:g}%, gain {100 * gain:+g} pts and discordance {100 * discordance:g}% "
                         f"cannot go together ({100 * improve:g}% of documents improving, {100 * regress:g}% "
                         "regressing): a document can only improve where the base fails and regress where it "
                         "passes; lower the discordance or the gain")
    return max(improve, 0.0), max(regress, 0.0)


def gate_passes(gate: Gate, improved: IntArray, regressed: IntArray, documents: int) -> BoolArray:
    """Whether `gate` passes each session of `documents` with these counts, as compare/gates.py decides it."""
    if not gate.statistical:
        passed: BoolArray = (improved - regressed) / documents + EPS >= gate.bar
        return passed
    confidence = gate.confidence or DEFAULT_CONFIDENCE
    low, high = paired_proportion_ci(improved, regressed, documents, confidence=confidence)
    passed, failed = gate.settled(low, high)
    return passed if gate.claims_pass else ~failed


def power(gate: Gate, documents: int, improve: float, regress: float, *, gain: float,
          sessions: int = SESSIONS, seed: int = SEED) -> float:
    """The share of `sessions` seeded simulated sessions of `documents` in which `gate` reaches the right verdict."""
    rng = np.random.default_rng([seed, documents])
    counts = rng.multinomial(documents, [improve, regress, max(0.0, 1.0 - improve - regress)], size=sessions)
    passes = gate_passes(gate, counts[:, 0], counts[:, 1], documents)
    right = passes if gate.correct(gain) == PASSED else ~passes
    return float(np.mean(right))


def plan_documents(gate: Gate, base: float, gain: float | None = None, discordance: float | None = None, *,
                   base_source: str = "given", discordance_source: str | None = None, target: float = TARGET_POWER,
                   cap: int = MAX_DOCUMENTS, sessions: int = SESSIONS, seed: int = SEED) -> PowerPlan:
    """The least number of documents at which `gate` reaches the right verdict with chance `target`.

    `gain` defaults to `default_gain(gate)`, `discordance` to `assumed_discordance`. Only gates on
    fractions (pass/fail metrics) can be planned.
    """
    if not gate.fraction:
        raise BenchError(f"{gate.name}: documents can be planned only for pass/fail metrics, "
                         "not for a metric in its own unit")
    if not 0.0 < target < 1.0:
        raise BenchError(f"target power {target:g} must be between 0 and 1")
    gain, gain_source = default_gain(gate) if gain is None else (gain, "given")
    if discordance is None:
        discordance, discordance_source = assumed_discordance(base, gain), "assumed"
    improve, regress = cell_probabilities(base, gain, discordance)

    def measured(n: int) -> float:
        return power(gate, n, improve, regress, gain=gain, sessions=sessions, seed=seed)

    found = _search(measured, target, cap)
    at = found if found is not None else cap
    return PowerPlan(gate, base, base_source, gain, gain_source, discordance, discordance_source or "given", target,
                     found, measured(at), cap, sessions)


def _search(measured: Callable[[int], float], target: float, cap: int) -> int | None:
    """The n the doubling-then-bisection search lands on, None when even `cap` falls short."""
    low, high = 0, 1  # measured(low) < target (or low == 0), unknown at high
    while measured(high) < target:
        if high >= cap:
            return None
        low, high = high, min(2 * high, cap)
    while high - low > 1:
        middle = (low + high) // 2
        if measured(middle) >= target:
            high = middle
        else:
            low = middle
    return high


def at_level(gate: Gate, confidence: float, gates: int = 1) -> Gate:
    """`gate` at the level it is decided at among `gates` statistical gates: Holm's strictest, 1 - α / gates."""
    if not gate.statistical:
        return gate
    return dataclasses.replace(gate, confidence=1.0 - (1.0 - confidence) / gates)

