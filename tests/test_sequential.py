"""The confidence sequence behind early stopping, against the papers' properties, and the gates decided on it.

Seeded and numpy-only (about 15 s): thousands of early-stopped gates over finite populations with
a known Δ, looked at after every chunk.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_finetune_bench.compare.sequential import FinitePopulationSequence, gain_bounds
from pytest_finetune_bench.plan.gates import FAILED, IMPROVES, NO_REGRESSION, PASSED, Gate
from tests.sequential_sim import METHOD_BOOTSTRAP, METHOD_SEQUENCE, Scenario, orders, simulate

ALPHA = 0.05
REPLICATES = 1000
CHUNK = 10

AT_THRESHOLD = (
    # True Δ exactly on the bar: passing is right, failing is the error.
    Scenario("no_regression, Δ = -max drop", Gate("task", NO_REGRESSION, 0.05), 200, 20, 30),
    Scenario("improves, Δ = min gain", Gate("task", IMPROVES, 0.02), 200, 22, 18),
)
DECISIVE = (
    Scenario("no_regression, Δ = -25 points", Gate("task", NO_REGRESSION, 0.05), 200, 10, 60),
    Scenario("improves, Δ = +25 points", Gate("task", IMPROVES, 0.02), 200, 60, 10),
)


def _misses(values: np.ndarray, alpha: float, looks: range) -> float:
    """Share of rows whose sequence ever excludes the row's true mean, checked after every value in `looks`."""
    truth = values.mean(axis=1)
    sequence = FinitePopulationSequence(values.shape[1], alpha, batch=values.shape[0], grid=801)
    missed = np.zeros(values.shape[0], dtype=bool)
    for end in looks:
        sequence.update(values[:, sequence.seen:end])
        low, high = sequence.bounds
        missed |= (low > truth + 1e-12) | (high < truth - 1e-12)
    return float(missed.mean())


def test_coverage_holds_at_every_look_for_lumpy_and_continuous_populations() -> None:
    rng = np.random.default_rng(7)
    n = 120
    pass_fail = orders(Scenario("", Gate("task", IMPROVES, 0), n, 30, 12), 600, seed=3)
    # IFEval-like instruction fractions: differences of two fractions of 1 to 3 instructions.
    fractions = rng.integers(0, 4, size=n) / 3 - rng.integers(0, 4, size=n) / 3
    continuous = rng.permuted(np.tile(fractions, (600, 1)), axis=1)
    for values in (pass_fail, continuous):
        assert _misses(values, ALPHA, range(1, n + 1)) <= ALPHA


def test_width_reaches_zero_at_the_whole_population_and_equals_its_mean() -> None:
    values = orders(Scenario("", Gate("task", IMPROVES, 0), 57, 9, 21), 3, seed=1)
    sequence = FinitePopulationSequence(57, ALPHA, batch=3)
    widths = []
    for end in [*range(5, 57, 5), 57]:
        sequence.update(values[:, sequence.seen:end])
        low, high = sequence.bounds
        widths.append(float(np.max(high - low)))
    assert widths == sorted(widths, reverse=True)  # the running intersection only narrows
    assert widths[-1] == pytest.approx(0.0, abs=1e-12)
    assert low == pytest.approx(values.mean(axis=1)) and high == pytest.approx(values.mean(axis=1))


def test_after_a_miss_the_interval_falls_back_to_the_logical_bounds_and_still_closes() -> None:
    """4 improved, 0 regressed of 200, a look every 10: seed 10 has an order whose surviving grid ends
    up outside the means the population can still have (a miss); the interval must still be exact at the end."""
    values = orders(Scenario("", Gate("task", IMPROVES, 0), 200, 4, 0), 50, seed=10)
    truth = values.mean(axis=1)
    sequence = FinitePopulationSequence(200, ALPHA, batch=50)
    for end in range(10, 201, 10):
        sequence.update(values[:, sequence.seen:end])
        low, high = sequence.bounds
        assert np.all(low <= high)
        # Never narrower than what the documents seen so far allow (the logical bounds).
        seen = values[:, :end].sum(axis=1)
        assert np.all(low >= (seen - (200 - end)) / 200 - 1e-12) and np.all(high <= (seen + 200 - end) / 200 + 1e-12)
    assert high - low == pytest.approx(np.zeros(50), abs=1e-12)
    assert low == pytest.approx(truth) and high == pytest.approx(truth)


def test_narrower_than_hoeffding_even_at_a_fixed_n() -> None:
    """Fixed-n Hoeffding for Δ in [-1, 1] is the classic bound; the sequence beats it while valid at every n."""
    n, seen = 541, 200
    values = orders(Scenario("", Gate("task", IMPROVES, 0), n, 40, 95), 50, seed=5)
    sequence = FinitePopulationSequence(n, ALPHA, batch=50)
    sequence.update(values[:, :seen])
    low, high = sequence.bounds
    hoeffding_width = 2 * 2 * math.sqrt(math.log(2 / ALPHA) / (2 * seen))
    assert float(np.median(high - low)) < 0.6 * hoeffding_width


@pytest.mark.parametrize("scenario", AT_THRESHOLD, ids=lambda s: s.name)
def test_error_rate_stays_below_alpha_at_the_threshold_where_the_monitored_bootstrap_exceeds_it(
    scenario: Scenario,
) -> None:
    sequence = simulate(scenario, METHOD_SEQUENCE, replicates=REPLICATES, chunk=CHUNK, alpha=ALPHA, seed=11)
    bootstrap = simulate(scenario, METHOD_BOOTSTRAP, replicates=REPLICATES, chunk=CHUNK, alpha=ALPHA, seed=11)
    assert sequence.error_rate <= ALPHA
    # Why this exists: the fixed-n interval, peeked at after every chunk, stops on the wrong verdict too often.
    assert bootstrap.error_rate > 1.5 * ALPHA


@pytest.mark.parametrize("scenario", DECISIVE, ids=lambda s: s.name)
def test_decisive_gates_settle_within_half_the_documents_without_errors(scenario: Scenario) -> None:
    outcome = simulate(scenario, METHOD_SEQUENCE, replicates=REPLICATES, chunk=CHUNK, alpha=ALPHA, seed=13)
    assert outcome.error_rate <= ALPHA
    assert outcome.decided_by(scenario.documents // 2) >= 0.9
    assert set(outcome.verdicts) == {scenario.correct}


def test_an_unchanged_model_is_not_declared_different() -> None:
    unchanged = Scenario("no change", Gate("task", IMPROVES, 0.0), 200, 15, 15)
    outcome = simulate(unchanged, METHOD_SEQUENCE, replicates=REPLICATES, chunk=CHUNK, alpha=ALPHA, seed=17)
    # `improves` passes Δ = 0 only when the sequence misses it above 0, and fails it only when it misses below.
    assert np.mean(outcome.verdicts == PASSED) <= ALPHA
    assert np.mean(outcome.verdicts == FAILED) <= ALPHA
    assert outcome.decided_rate <= ALPHA  # otherwise it runs to the end, where the full run's gate decides


@pytest.mark.parametrize(("rule", "low", "high", "verdict"), [
    (Gate("task", IMPROVES, 0.02), 0.03, 0.2, PASSED),
    (Gate("task", IMPROVES, 0.02), -0.1, 0.019, FAILED),
    (Gate("task", IMPROVES, 0.02), 0.0, 0.1, None),
    (Gate("task", IMPROVES, 0.0), 0.0, 0.0, None),  # no evidence of a gain, none of a loss below 0
    (Gate("task", NO_REGRESSION, 0.05), -0.05, 0.1, PASSED),
    (Gate("task", NO_REGRESSION, 0.05), -0.3, -0.051, FAILED),
    (Gate("task", NO_REGRESSION, 0.05), -0.3, 0.0, None),
])
def test_gate_rules_match_the_statistical_gates(rule: Gate, low: float, high: float, verdict: str | None) -> None:
    assert rule.verdict(low, high) == verdict


def test_lower_is_better_mirrors_the_interval() -> None:
    assert gain_bounds(-0.1, 0.2, higher_is_better=False) == (-0.2, 0.1)
    assert gain_bounds(-0.1, 0.2, higher_is_better=True) == (-0.1, 0.2)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        FinitePopulationSequence(10, 1.0)
    sequence = FinitePopulationSequence(3, ALPHA)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        sequence.update([2.0])
    with pytest.raises(ValueError, match="population"):
        sequence.update([0.0, 0.0, 0.0, 0.0])
