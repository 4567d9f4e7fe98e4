"""Paired statistics and lm-eval samples parsing, checked against scipy, published examples and simulation."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.evidence import TaskAnalysis
from pytest_finetune_bench.compare.flips import find_flips
from pytest_finetune_bench.compare.gates import UnreliableIntervalWarning
from pytest_finetune_bench.compare.samples import SampleRecord, load_samples, paired_values, split_metric_key
from pytest_finetune_bench.compare.scores import TaskComparison
from pytest_finetune_bench.compare.stats import (
    BOOTSTRAP_MIN_CHANGED,
    INTERVAL_BOOTSTRAP,
    INTERVAL_TANGO,
    TEST_MCNEMAR,
    TEST_SIGN_FLIP,
    PairedStats,
    _bootstrap_means_by_counts,
    _bootstrap_means_by_index,
    _mcnemar_critical,
    _mcnemar_criticals_walked,
    mcnemar_exact_p,
    mcnemar_rejects,
    paired_proportion_ci,
    paired_stats,
    sign_flip_p,
    tango_ci,
    tango_z,
)
from pytest_finetune_bench.report.table import comparison_table, evidence_columns
from tests.gate_checks import improves_failure, regression_failure

# --------------------------------------------------------------------------------------------
# Exact McNemar
# --------------------------------------------------------------------------------------------


def scipy_mcnemar(b: int, c: int) -> float:
    return 1.0 if b + c == 0 else float(scipy.stats.binomtest(min(b, c), b + c, 0.5).pvalue)


def test_mcnemar_matches_scipy_binomtest_on_a_grid() -> None:
    for b, c in itertools.product(range(41), repeat=2):
        assert math.isclose(mcnemar_exact_p(b, c), scipy_mcnemar(b, c), rel_tol=1e-9), (b, c)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 3000), st.integers(0, 3000))
def test_mcnemar_matches_scipy_binomtest_for_large_counts(b: int, c: int) -> None:
    expected = scipy_mcnemar(b, c)
    # scipy's float tail sums lose relative accuracy far out in the tail; compare where they are reliable.
    if expected > 1e-250:
        assert math.isclose(mcnemar_exact_p(b, c), expected, rel_tol=1e-9)


def test_mcnemar_hand_computed() -> None:
    # b=1, c=5: P(X <= 1) for Bin(6, 1/2) = (1 + 6) / 64, doubled.
    assert mcnemar_exact_p(1, 5) == 14 / 64
    assert mcnemar_exact_p(5, 1) == 14 / 64
    # b=0, c=5: 2 * (1/2)**5.
    assert mcnemar_exact_p(0, 5) == 2 / 32
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(7, 7) == 1.0
    assert mcnemar_exact_p(0, 1) == 1.0


def test_mcnemar_stays_accurate_for_tiny_p_values() -> None:
    # 2 * 2**-2000 underflows float; the exact sum must not turn it into garbage.
    assert mcnemar_exact_p(0, 2000) == 0.0
    assert mcnemar_exact_p(0, 1000) == 2.0 * 2.0**-1000


def test_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 3)


def test_paired_stats_uses_mcnemar_for_binary_values() -> None:
    base = [1, 1, 1, 0, 0, 0, 0, 1, 0, 1] * 5
    ft = [1, 0, 1, 1, 1, 1, 0, 1, 1, 1] * 5
    stats = paired_stats([float(v) for v in base], [float(v) for v in ft])
    assert stats.test == TEST_MCNEMAR
    assert (stats.improved, stats.regressed, stats.unchanged) == (20, 5, 25)
    assert stats.p_value == pytest.approx(scipy_mcnemar(20, 5), rel=1e-12)
    assert stats.delta == pytest.approx(0.3)
    assert stats.base_mean == pytest.approx(0.5)
    assert stats.finetuned_mean == pytest.approx(0.8)
    assert stats.n == 50


# --------------------------------------------------------------------------------------------
# Binary interval, in use
# --------------------------------------------------------------------------------------------


def test_binary_interval_covers_the_true_difference() -> None:
    truth = 0.1
    covered = 0
    for seed in range(100):
        data = np.random.default_rng(10_000 + seed)
        # Correlated pairs, as with two models on the same documents: the fine-tuned model keeps most
        # of the base's answers and fixes some; P(base) = 0.5, P(ft) = 0.6.
        base = data.random(200) < 0.5
        ft = np.where(base, data.random(200) < 0.9, data.random(200) < 0.3)
        stats = paired_stats(base.astype(float).tolist(), ft.astype(float).tolist(), seed=seed)
        assert stats.interval == INTERVAL_TANGO
        assert stats.ci_low is not None and stats.ci_high is not None
        assert stats.ci_low <= stats.delta <= stats.ci_high  # type: ignore[operator]
        covered += stats.ci_low <= truth <= stats.ci_high
    assert covered >= 90


# --------------------------------------------------------------------------------------------
# Pass/fail intervals: Tango's score interval, continuity-corrected, agreeing with exact McNemar
# --------------------------------------------------------------------------------------------

# Published 2x2 tables (a both pass, b only condition 1, c only condition 2, d neither) with
# Tango's (uncorrected) interval for p1 - p2 = (b - c) / n, as collected with their sources in the
# test suite of the R package ratesci (petelaud/ratesci, tests/testthat/test3.R): Tango (1998)
# Stat Med 17:891-908 (two examples, the second at 90%); Agresti & Min (2005) Stat Med 24:729-740;
# Fagerland, Lydersen & Laake (2014) Stat Med 33:2850-2875; Tang et al. (2010); Chang et al. (2024)
# J Appl Stat 51:139-152. Condition 1 is the fine-tuned model, so b is "improved", c "regressed".
PUBLISHED_TANGO = [
    ((4, 9, 3, 16), 0.95, (-0.027, 0.390), 3),
    ((43, 0, 1, 0), 0.90, (-0.096, 0.037), 3),
    ((53, 16, 8, 9), 0.95, (-0.020, 0.207), 3),
    ((1, 1, 7, 12), 0.95, (-0.517, -0.026), 3),
    ((8, 3, 1, 2), 0.95, (-0.1670, 0.4327), 4),
    ((7, 25, 2, 68), 0.95, (0.139, 0.321), 3),
]
LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)


@pytest.mark.parametrize(("table", "confidence", "published", "digits"), PUBLISHED_TANGO)
def test_tango_reproduces_published_intervals(
    table: tuple[int, int, int, int], confidence: float, published: tuple[float, float], digits: int
) -> None:
    a, b, c, d = table
    low, high = tango_ci(b, c, a + b + c + d, confidence=confidence)
    assert (round(float(low), digits), round(float(high), digits)) == published


def profile_likelihood_z(delta: float, b: int, c: int, n: int) -> float:
    """Tango's statistic with q found by maximising the likelihood numerically, not by the closed form."""
    concordant = n - b - c
    lowest, highest = max(0.0, -delta), (1.0 - delta) / 2.0

    def minus_loglik(q: float) -> float:
        terms = [(b, q + delta), (c, q), (concordant, 1.0 - 2.0 * q - delta)]
        return -sum(k * math.log(max(p, 1e-300)) for k, p in terms if k)

    q = scipy.optimize.minimize_scalar(minus_loglik, bounds=(lowest, highest), method="bounded",
                                       options={"xatol": 1e-13}).x
    return (b - c - n * delta) / math.sqrt(n * (2.0 * q + delta * (1.0 - delta)))


def test_tango_statistic_uses_the_restricted_maximum_likelihood() -> None:
    data = np.random.default_rng(8)
    for _ in range(200):
        n = int(data.integers(5, 300))
        b, c = (int(x) for x in data.multinomial(n, [0.2, 0.15, 0.65])[:2])
        delta = float(data.uniform(-0.9, 0.9))
        expected = profile_likelihood_z(delta, b, c, n)
        z = float(tango_z(np.array(delta), np.array(float(b)), np.array(float(c)), np.array(float(n))))
        assert z == pytest.approx(expected, rel=1e-5, abs=1e-6), (delta, b, c, n)


@pytest.mark.parametrize("continuity", [0.0, 1.0])
def test_tango_bounds_are_the_edges_of_the_set_the_test_accepts(continuity: float) -> None:
    """Brute force: scan Δ finely; the accepted set must be one interval whose ends bisection found."""
    grid = np.linspace(-1.0, 1.0, 8001)
    z = scipy.stats.norm.isf(0.025)
    for n in (1, 2, 3, 5, 8, 13):
        for b in range(n + 1):
            for c in range(n + 1 - b):
                stat = tango_z(grid, np.full_like(grid, b), np.full_like(grid, c), np.full_like(grid, n), continuity)
                accepted = grid[np.abs(stat) < z]
                low, high = tango_ci(b, c, n, confidence=0.95, continuity=continuity)
                inside = (grid > low + 1e-9) & (grid < high - 1e-9)
                assert np.all(np.abs(stat[inside]) < z), (n, b, c)  # one interval, no holes
                assert accepted.min() == pytest.approx(float(low), abs=3e-4), (n, b, c)
                assert accepted.max() == pytest.approx(float(high), abs=3e-4), (n, b, c)


def test_corrected_interval_contains_tangos_and_the_estimate() -> None:
    b, c = (a.ravel() for a in np.meshgrid(np.arange(31), np.arange(31)))
    for n in (60, 200):
        plain = tango_ci(b, c, n, confidence=0.95)
        corrected = tango_ci(b, c, n, confidence=0.95, continuity=1.0)
        ours = paired_proportion_ci(b, c, n, confidence=0.95)
        estimate = (b - c) / n
        assert np.all(corrected[0] <= plain[0] + 1e-12) and np.all(plain[1] <= corrected[1] + 1e-12)
        assert np.all(ours[0] <= corrected[0]) and np.all(corrected[1] <= ours[1])
        assert np.all(ours[0] <= estimate) and np.all(estimate <= ours[1])
        assert np.all(ours[1] - ours[0] > 0.01)  # never zero width, not even with no discordant documents
        # Swapping the models mirrors the interval, so the coverage grid below needs only Δ >= 0.
        mirrored = paired_proportion_ci(c, b, n, confidence=0.95)
        assert np.allclose(mirrored[0], -ours[1], atol=1e-12) and np.allclose(mirrored[1], -ours[0], atol=1e-12)


def test_measured_small_runs_give_intervals_that_include_zero() -> None:
    # IFEval, --bench-limit 4: 3 fail→pass, 0 pass→fail; the bootstrap printed [+25.0, +100.0] next to p = 0.25.
    ifeval = paired_stats([0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0])
    assert (ifeval.improved, ifeval.regressed, ifeval.p_value) == (3, 0, 0.25)
    assert ifeval.ci_low is not None and ifeval.ci_high is not None
    assert ifeval.ci_low < 0 < ifeval.ci_high
    assert (round(ifeval.ci_low * 100, 1), round(ifeval.ci_high * 100, 1)) == (-33.3, 100.0)
    # GSM8K and HellaSwag: no discordant document of 4; the bootstrap printed [+0.0, +0.0].
    unchanged = paired_stats([1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0])
    assert (unchanged.ci_low, unchanged.ci_high) == pytest.approx((-0.6994, 0.6994), abs=1e-4)
    for stats in (ifeval, unchanged):
        assert stats.interval == INTERVAL_TANGO and stats.interval_reliable
        assert INTERVAL_TANGO in stats.summary()
    assert "[-33.3, +100.0] 95% CI" in ifeval.summary()
    assert "[-69.9, +69.9] 95% CI" in unchanged.summary()


def test_interval_excludes_zero_only_where_the_exact_test_rejects() -> None:
    """The documented relation, exhaustively for b, c <= 60: excludes 0 ⇒ exact McNemar p < 1 - confidence."""
    b, c = (a.ravel() for a in np.meshgrid(np.arange(61), np.arange(61)))
    p = np.array([mcnemar_exact_p(int(x), int(y)) for x, y in zip(b, c, strict=True)])
    for confidence in LEVELS:
        alpha = 1.0 - confidence
        for n in (np.maximum(b + c, 1), b + c + 11, np.full_like(b, 1000)):
            low, high = paired_proportion_ci(b, c, n, confidence=confidence)
            excludes = (low > 0) | (high < 0)
            assert not np.any(excludes & (p >= alpha)), confidence
            # The converse fails only at the margin, where the interval is the more cautious one.
            misses = ~excludes & (p < alpha)
            if confidence == 0.95:
                assert np.all(p[misses] >= 0.0487)
            if confidence == 0.99:
                assert np.all(p[misses] >= 0.0078)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 3000), st.integers(0, 3000), st.integers(0, 10000), st.sampled_from(LEVELS))
def test_interval_and_exact_test_agree_for_large_counts(b: int, c: int, concordant: int, confidence: float) -> None:
    n = b + c + concordant
    if n == 0:
        return
    low, high = paired_proportion_ci(b, c, n, confidence=confidence)
    if low > 0 or high < 0:
        assert mcnemar_exact_p(b, c) < 1.0 - confidence
    assert low <= (b - c) / n <= high and high - low > 0


def test_vectorised_exact_decision_matches_the_p_value() -> None:
    b, c = (a.ravel() for a in np.meshgrid(np.arange(80), np.arange(80)))
    p = np.array([mcnemar_exact_p(int(x), int(y)) for x, y in zip(b, c, strict=True)])
    for alpha in (0.5, 0.1, 0.05, 0.01, 0.001):
        assert np.array_equal(mcnemar_rejects(b, c, alpha), p < alpha)


def test_walked_critical_values_match_the_search_for_each_count() -> None:
    # Many distinct discordant counts are walked (compare/power.py's simulated sessions); a few are searched.
    counts = np.array([0, 1, 2, 5, 6, 39, 40, 41, 300, 777, 2000, 2001, 4096])
    for alpha in (0.5, 0.05, 0.05 / 6, 1e-6):
        walked = mcnemar_rejects(counts // 2, counts - counts // 2, alpha)
        searched = [mcnemar_exact_p(int(m // 2), int(m - m // 2)) < alpha for m in counts]
        assert walked.tolist() == searched
        edge = np.array([_mcnemar_critical(int(m), alpha) for m in counts])
        assert np.array_equal(_mcnemar_criticals_walked(counts, alpha), edge)
        assert np.array_equal(mcnemar_rejects(edge.clip(0), counts - edge.clip(0), alpha), edge >= 0)


def test_widening_to_zero_keeps_a_gate_from_passing_an_insignificant_gain() -> None:
    # At 50% confidence the corrected interval for 2↑ 0↓ of 60 is [+0.1, +7.3] points, but the exact
    # test gives p = 0.5: the interval is widened to reach 0, and a gain of 0 is not shown.
    assert tango_ci(2, 0, 60, confidence=0.5, continuity=1.0)[0] > 0
    stats = paired_stats([0.0] * 60, [1.0, 1.0] + [0.0] * 58, confidence=0.5)
    assert stats.p_value == 0.5 and stats.ci_low == 0.0
    assert not stats.confident_improvement(by=0.0)
    assert stats.confident_improvement(by=-0.01)


# --------------------------------------------------------------------------------------------
# Coverage: the new interval keeps its level at every n, the percentile bootstrap does not
# --------------------------------------------------------------------------------------------

CONFIDENCE = 0.95
# (discordance rate s, true difference Δ): the fine-tune flips a share s of the documents, more of
# them fail→pass than pass→fail when Δ > 0; Δ = s is a fine-tune that only ever improves.
COVERAGE_GRID = [(s, delta) for s in (0.05, 0.1, 0.2, 0.4) for delta in (0.0, s / 4, s / 2, s)]
SIMULATED_N = (4, 5, 8, 10, 20, 50, 100, 200, 500)
REPLICATIONS = 4000
# 3.5 standard errors of a simulated coverage of 95% from 4000 runs: 16 grid points x 9 values of
# n stay clear of chance failures (and the seed makes the run the same every time).
SIMULATION_TOLERANCE = 3.5 * math.sqrt(CONFIDENCE * (1 - CONFIDENCE) / REPLICATIONS)


def simulate_counts(rng: np.random.Generator, n: int, s: float, delta: float) -> tuple[np.ndarray[Any, Any], ...]:
    improved, regressed = (s + delta) / 2, (s - delta) / 2
    draws = rng.multinomial(n, [improved, regressed, 1 - s], size=REPLICATIONS)
    return draws[:, 0], draws[:, 1]


def per_table(b: np.ndarray[Any, Any], c: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], ...]:
    """The distinct (b, c) tables drawn and, for each draw, which one it is (intervals are per table)."""
    tables, which = np.unique(np.stack([b, c], axis=1), axis=0, return_inverse=True)
    return tables[:, 0], tables[:, 1], which.ravel()


def percentile_bootstrap(b: int, c: int, n: int, rng: np.random.Generator) -> tuple[float, float]:
    """The interval pass/fail metrics got before: the percentile bootstrap of the mean difference."""
    counts = np.array([c, n - b - c, b])
    values = np.array([-1.0, 0.0, 1.0])
    means = _bootstrap_means_by_counts(values[counts > 0], counts[counts > 0], 1000, rng)
    low, high = np.quantile(means, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(low), float(high)


def test_simulated_coverage_and_gate_error_rates() -> None:
    rng = np.random.default_rng(20_260_101)
    boot_rng = np.random.default_rng(1)
    lowest: dict[int, float] = {}
    bootstrap: dict[int, list[float]] = {}
    for n in SIMULATED_N:
        for s, delta in COVERAGE_GRID:
            b, c, which = per_table(*simulate_counts(rng, n, s, delta))
            low, high = (bound[which] for bound in paired_proportion_ci(b, c, n, confidence=CONFIDENCE))
            coverage = float(np.mean((low <= delta) & (delta <= high)))
            lowest[n] = min(lowest.get(n, 1.0), coverage)
            # Each gate errs on one side: `improves` when the lower bound is above the truth,
            # `no_regression` when the upper bound is below it. Each must stay within 1 - confidence.
            assert np.mean(low > delta) <= 1 - CONFIDENCE + SIMULATION_TOLERANCE, (n, s, delta)
            assert np.mean(high < delta) <= 1 - CONFIDENCE + SIMULATION_TOLERANCE, (n, s, delta)
            if n <= 20:
                old = np.array([percentile_bootstrap(int(x), int(y), n, boot_rng) for x, y in zip(b, c, strict=True)])
                old_low, old_high = old[which, 0], old[which, 1]
                bootstrap.setdefault(n, []).append(float(np.mean((old_low <= delta) & (delta <= old_high))))
    assert min(lowest.values()) >= CONFIDENCE - SIMULATION_TOLERANCE, lowest
    for n, coverages in bootstrap.items():
        # The percentile bootstrap falls short at small n: below nominal (beyond simulation error)
        # at half the grid or more, by over 10 points on average, and to under 60% somewhere.
        assert np.mean(np.array(coverages) < CONFIDENCE - SIMULATION_TOLERANCE) >= 0.5, (n, coverages)
        assert np.mean(coverages) < CONFIDENCE - 0.10, (n, coverages)
        assert min(coverages) < 0.6, (n, coverages)


def exact_coverage(n: int, confidence: float, q_improved: np.ndarray[Any, Any], q_regressed: np.ndarray[Any, Any]
                   ) -> np.ndarray[Any, Any]:
    """P(interval covers the true Δ), summed over every table of n documents (no simulation error)."""
    b, c = (a.ravel() for a in np.meshgrid(np.arange(n + 1), np.arange(n + 1)))
    b, c = b[b + c <= n], c[b + c <= n]
    low, high = paired_proportion_ci(b, c, n, confidence=confidence)
    probability = scipy.stats.multinomial.pmf(
        np.stack([b, c, n - b - c], axis=1)[None, :, :],
        n,
        np.stack([q_improved, q_regressed, 1 - q_improved - q_regressed], axis=1)[:, None, :],
    )
    delta = (q_improved - q_regressed)[:, None]
    covered = (low[None, :] <= delta + 1e-12) & (delta - 1e-12 <= high[None, :])
    coverage: np.ndarray[Any, Any] = (probability * covered).sum(axis=1)
    return coverage


def probability_grid(step: float, max_discordance: float) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    q = np.arange(0.0, 1.0 + step / 2, step)
    q_improved, q_regressed = (a.ravel() for a in np.meshgrid(q, q))
    keep = q_improved + q_regressed <= max_discordance + 1e-9
    return q_improved[keep], q_regressed[keep]


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
def test_exact_coverage_is_at_least_nominal_at_every_small_n(confidence: float) -> None:
    """No simulation: every table of n = 1…40 documents, fine-tunes flipping up to 60% of them."""
    q_improved, q_regressed = probability_grid(0.02, 0.6)
    for n in range(1, 41):
        coverage = exact_coverage(n, confidence, q_improved, q_regressed)
        assert coverage.min() >= confidence - 1e-9, (n, coverage.min())


def test_exact_coverage_at_95_percent_even_when_nearly_every_document_flips() -> None:
    q_improved, q_regressed = probability_grid(0.02, 0.98)
    for n in range(2, 41):
        assert exact_coverage(n, 0.95, q_improved, q_regressed).min() >= 0.95 - 1e-9, n


# --------------------------------------------------------------------------------------------
# Continuous metrics: the bootstrap, its minimum, and its agreement with the sign-flip test
# --------------------------------------------------------------------------------------------


def ifeval_like_differences(rng: np.random.Generator, n: int, change: float) -> tuple[list[float], list[float], float]:
    """Per-document instruction fractions (1-3 instructions) of a base and a fine-tune that redraws
    each instruction's result with probability `change`; returns both sides and the true Δ."""
    counts = rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2], size=n)
    base_follows = rng.random((n, 3)) < 0.6
    redrawn = rng.random((n, 3)) < change
    ft_follows = np.where(redrawn, rng.random((n, 3)) < 0.75, base_follows)
    used = np.arange(3)[None, :] < counts[:, None]
    base = (base_follows * used).sum(axis=1) / counts
    finetuned = (ft_follows * used).sum(axis=1) / counts
    return base.tolist(), finetuned.tolist(), change * (0.75 - 0.6)


def bootstrap_coverage(n: int, change: float, runs: int) -> tuple[float, float]:
    """(coverage, mean number of changed documents) of the continuous-metric interval."""
    rng = np.random.default_rng(n * 1000 + int(change * 100))
    covered, changed = 0, 0
    for seed in range(runs):
        base, finetuned, truth = ifeval_like_differences(rng, n, change)
        stats = paired_stats(base, finetuned, n_boot=1000, n_perm=200, seed=seed)
        assert stats.test == TEST_SIGN_FLIP and stats.interval == INTERVAL_BOOTSTRAP
        covered += stats.ci_low is not None and stats.ci_high is not None and stats.ci_low <= truth <= stats.ci_high
        changed += stats.improved + stats.regressed
    return covered / runs, changed / runs


def test_bootstrap_minimum_of_changed_documents() -> None:
    """Why BOOTSTRAP_MIN_CHANGED is 30: with a handful of changed documents the 95% interval covers
    far less than 95%; from about 30 on it is within a few points."""
    few, few_changed = bootstrap_coverage(20, 0.2, 300)
    enough, enough_changed = bootstrap_coverage(120, 0.5, 300)
    assert few_changed < 10 and few < 0.85
    assert enough_changed > BOOTSTRAP_MIN_CHANGED and enough > 0.9


def test_bootstrap_interval_covers_a_continuous_difference() -> None:
    covered = 0
    for seed in range(60):
        data = np.random.default_rng(20_000 + seed)
        base = data.random(150)
        ft = np.clip(base + data.normal(0.05, 0.2, 150), -10, 10)
        # The truth for this sample's population: E[noise] = 0.05.
        stats = paired_stats(base.tolist(), ft.tolist(), n_boot=1000, seed=seed, n_perm=500)
        assert stats.test == TEST_SIGN_FLIP and stats.interval == INTERVAL_BOOTSTRAP and stats.interval_reliable
        assert stats.ci_low is not None and stats.ci_high is not None
        covered += stats.ci_low <= 0.05 <= stats.ci_high
    assert covered >= 52


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([-1.0, -0.5, -1 / 3, 0.0, 0.0, 0.0, 1 / 3, 0.5, 1.0]), min_size=1, max_size=60),
       st.sampled_from([0.8, 0.9, 0.95]))
def test_continuous_interval_excludes_zero_only_where_the_sign_flip_test_rejects(
    diffs: list[float], confidence: float
) -> None:
    base = [0.5] * len(diffs)
    finetuned = [0.5 + d / 2 for d in diffs]
    stats = paired_stats(base, finetuned, confidence=confidence, n_boot=500, n_perm=500)
    assert stats.p_value is not None
    if stats.ci_low is not None and stats.ci_high is not None:
        assert stats.ci_high > stats.ci_low  # never zero width
        if stats.ci_low > 0 or stats.ci_high < 0:
            assert stats.p_value < 1 - confidence


def test_bootstrap_interval_is_reproducible_and_depends_on_the_seed() -> None:
    data = np.random.default_rng(3)
    base = data.random(300).tolist()
    ft = (data.random(300) * 1.1).tolist()
    first = paired_stats(base, ft, seed=7)
    again = paired_stats(base, ft, seed=7)
    other = paired_stats(base, ft, seed=8)
    assert first == again
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)
    # The point estimate does not depend on the seed.
    assert first.delta == other.delta


def test_binary_interval_does_not_depend_on_the_seed() -> None:
    data = np.random.default_rng(3)
    base = (data.random(300) < 0.4).astype(float).tolist()
    ft = (data.random(300) < 0.5).astype(float).tolist()
    assert paired_stats(base, ft, seed=7) == paired_stats(base, ft, seed=8)


def test_bootstrap_by_counts_matches_bootstrap_by_index() -> None:
    # Both resample documents with replacement; counting per distinct value is only faster.
    diffs = np.array([-1.0] * 30 + [0.0] * 120 + [1.0] * 50 + [0.5] * 10)
    values, counts = np.unique(diffs, return_counts=True)
    by_counts = _bootstrap_means_by_counts(values, counts, 40_000, np.random.default_rng(1))
    by_index = _bootstrap_means_by_index(diffs, 40_000, np.random.default_rng(2))
    for q in (0.025, 0.5, 0.975):
        assert np.quantile(by_counts, q) == pytest.approx(np.quantile(by_index, q), abs=0.004)
    assert by_counts.std() == pytest.approx(by_index.std(), rel=0.03)


@pytest.mark.parametrize("binary", [True, False])
def test_interval_narrows_with_confidence(binary: bool) -> None:
    data = np.random.default_rng(5)
    if binary:
        base, ft = (data.random(100) < 0.5).astype(float).tolist(), (data.random(100) < 0.6).astype(float).tolist()
    else:
        base, ft = data.random(100).tolist(), (data.random(100) * 1.1).tolist()
    wide = paired_stats(base, ft, confidence=0.99)
    narrow = paired_stats(base, ft, confidence=0.8)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high  # type: ignore[operator]


def test_few_changed_documents_mark_the_bootstrap_unreliable() -> None:
    base = [0.5] * 40
    finetuned = [0.75, 1.0, 0.25, 1.0, 0.75] + [0.5] * 35
    stats = paired_stats(base, finetuned)
    assert stats.interval == INTERVAL_BOOTSTRAP and not stats.interval_reliable
    assert stats.interval_note == "unreliable: 5 documents changed score, fewer than the 30 it needs"
    assert "(percentile bootstrap; unreliable: 5 documents changed score" in stats.summary()
    assert stats.to_json()["interval_reliable"] is False


def test_equal_differences_give_no_interval_instead_of_a_zero_width_one() -> None:
    for value, change in ((0.5, 0.0), (0.25, 0.25)):
        stats = paired_stats([value] * 40, [value + change] * 40)
        assert stats.test == TEST_SIGN_FLIP
        assert (stats.ci_low, stats.ci_high) == (None, None)
        assert stats.interval_note is not None and "every paired difference is" in stats.interval_note
        assert ", no 95% CI (percentile bootstrap; every paired difference" in stats.summary()
        assert "+0.0, +0.0" not in stats.summary()


# --------------------------------------------------------------------------------------------
# Sign-flip permutation test (continuous values)
# --------------------------------------------------------------------------------------------


def scipy_sign_flip(diffs: np.ndarray[Any, Any], n_resamples: float = np.inf) -> float:
    """scipy's paired permutation test: swapping within pairs is flipping the difference's sign."""
    zeros = np.zeros_like(diffs)
    result = scipy.stats.permutation_test(
        (diffs, zeros),
        lambda x, y, axis: np.sum(x - y, axis=axis),
        permutation_type="samples",
        n_resamples=n_resamples,
        vectorized=True,
        random_state=0,
    )
    return float(result.pvalue)


def slow_sign_flip(diffs: list[float]) -> float:
    observed = abs(sum(diffs))
    patterns = list(itertools.product((1, -1), repeat=len(diffs)))
    hits = sum(abs(sum(s * d for s, d in zip(signs, diffs, strict=True))) >= observed - 1e-12 for signs in patterns)
    return hits / len(patterns)


def test_sign_flip_is_exact_for_few_differences() -> None:
    for seed in range(20):
        data = np.random.default_rng(seed)
        m = int(data.integers(1, 12))
        diffs = np.round(data.normal(0.1, 0.3, m), 3)
        diffs[diffs == 0.0] = 0.001
        p = sign_flip_p(diffs, n_perm=10, rng=np.random.default_rng(0))
        assert p == pytest.approx(slow_sign_flip(diffs.tolist()), abs=1e-12)
        assert p == pytest.approx(scipy_sign_flip(diffs), abs=1e-12)


def test_sign_flip_hand_computed() -> None:
    # Diffs (1, 2, 3): |sum| = 6 only for all-plus and all-minus, 2 of 8 patterns.
    assert sign_flip_p(np.array([1.0, 2.0, 3.0]), n_perm=1, rng=np.random.default_rng(0)) == 0.25
    # Zeros never change the sum and are ignored; nothing left means no evidence.
    assert sign_flip_p(np.array([0.0, 1.0, 0.0, 2.0, 3.0]), n_perm=1, rng=np.random.default_rng(0)) == 0.25
    assert sign_flip_p(np.zeros(5), n_perm=1, rng=np.random.default_rng(0)) == 1.0


def test_sign_flip_monte_carlo_agrees_with_exact() -> None:
    data = np.random.default_rng(11)
    diffs = np.round(data.normal(0.08, 0.3, 17), 4)
    exact = scipy_sign_flip(diffs)
    estimate = sign_flip_p(diffs, n_perm=20_000, rng=np.random.default_rng(0))
    # Monte Carlo standard error at p ~ 0.2 with 20k draws is ~0.003.
    assert estimate == pytest.approx(exact, abs=0.015)


def test_sign_flip_on_binary_data_is_mcnemar() -> None:
    # On 0/1 data every non-zero difference is ±1: sign flipping is McNemar's exact test.
    for b, c in [(3, 9), (10, 2), (5, 5), (0, 7), (8, 0)]:
        diffs = np.array([1.0] * b + [-1.0] * c)
        p = sign_flip_p(diffs, n_perm=1, rng=np.random.default_rng(0))
        assert p == pytest.approx(mcnemar_exact_p(b, c), abs=1e-12)


def test_continuous_values_use_the_sign_flip_test_deterministically() -> None:
    data = np.random.default_rng(4)
    base = data.random(80).tolist()
    ft = (np.array(base) + data.normal(0.03, 0.2, 80)).tolist()
    stats = paired_stats(base, ft, seed=1)
    assert stats.test == TEST_SIGN_FLIP
    assert stats.p_value is not None and 0.0 < stats.p_value <= 1.0
    assert stats == paired_stats(base, ft, seed=1)
    # With many draws the Monte Carlo p-value lands near the t-test's on well-behaved data.
    t_test = float(scipy.stats.ttest_rel(ft, base).pvalue)
    assert paired_stats(base, ft, n_perm=40_000).p_value == pytest.approx(t_test, abs=0.03)


def test_fractional_values_count_improvements_and_regressions() -> None:
    stats = paired_stats([0.5, 0.5, 1.0, 0.0], [1.0, 0.25, 1.0, 0.0])
    assert stats.test == TEST_SIGN_FLIP
    assert (stats.improved, stats.regressed, stats.unchanged) == (1, 1, 2)
    assert stats.delta == pytest.approx(0.0625)


# --------------------------------------------------------------------------------------------
# PairedStats edge cases and gate helpers
# --------------------------------------------------------------------------------------------


def test_no_documents_gives_none_fields() -> None:
    stats = paired_stats([], [])
    assert stats.n == 0
    assert (stats.delta, stats.ci_low, stats.ci_high, stats.p_value, stats.test) == (None, None, None, None, None)
    assert (stats.improved, stats.regressed, stats.unchanged) == (0, 0, 0)
    assert not stats.confident_improvement() and not stats.confident_regression() and not stats.significant()
    assert not stats.interval_reliable
    assert stats.summary() == "no documents scored by both models"
    json.dumps(stats.to_json())


def test_one_document_does_not_crash() -> None:
    stats = paired_stats([0.0], [1.0])
    assert (stats.delta, stats.ci_high, stats.p_value) == (1.0, 1.0, 1.0)
    assert stats.ci_low is not None and stats.ci_low < 0


def test_identical_models_show_no_change() -> None:
    values = [1.0, 0.0, 1.0, 1.0, 0.0] * 20
    stats = paired_stats(values, values)
    assert (stats.delta, stats.p_value) == (0.0, 1.0)
    # No document changed, yet 100 documents bound the change: about ±5 points, not [0, 0].
    assert stats.ci_low == pytest.approx(-stats.ci_high) and 0.03 < stats.ci_high < 0.07  # type: ignore[operator]
    assert stats.unchanged == 100


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="length"):
        paired_stats([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="confidence"):
        paired_stats([1.0], [1.0], confidence=95)
    with pytest.raises(ValueError, match="finite"):
        paired_stats([float("nan")], [1.0])


def make_stats(ci_low: float, ci_high: float, p_value: float = 0.5) -> PairedStats:
    return PairedStats(100, (ci_low + ci_high) / 2, ci_low, ci_high, 0.95, p_value, TEST_MCNEMAR, 10, 5, 85)


def test_confident_improvement_needs_the_whole_interval_at_or_above_the_bar() -> None:
    assert make_stats(0.02, 0.08).confident_improvement()
    assert make_stats(0.02, 0.08).confident_improvement(by=0.02)
    assert not make_stats(0.02, 0.08).confident_improvement(by=0.03)
    assert not make_stats(-0.01, 0.08).confident_improvement()
    # An interval that reaches 0 shows no gain, even for a bar of 0; a negative bar only needs the bound.
    assert not make_stats(0.0, 0.08).confident_improvement(by=0.0)
    assert make_stats(-0.01, 0.08).confident_improvement(by=-0.02)


def test_confident_regression_needs_the_whole_interval_below_the_allowed_drop() -> None:
    assert make_stats(-0.08, -0.03).confident_regression()
    assert make_stats(-0.08, -0.03).confident_regression(max_drop=0.02)
    assert not make_stats(-0.08, -0.03).confident_regression(max_drop=0.03)
    assert not make_stats(-0.08, 0.01).confident_regression()
    assert not make_stats(-0.08, 0.0).confident_regression()


def test_significant_compares_the_p_value_with_alpha() -> None:
    assert make_stats(0.0, 0.1, p_value=0.01).significant()
    assert not make_stats(0.0, 0.1, p_value=0.05).significant(alpha=0.05)


def test_summary_and_json() -> None:
    stats = PairedStats(541, 0.032, -0.01, 0.075, 0.95, 0.12, TEST_MCNEMAR, 20, 12, 509, interval=INTERVAL_TANGO)
    assert stats.summary() == (
        "+3.2 pts [-1.0, +7.5] 95% CI (continuity-corrected Tango score), p=0.12 (exact McNemar), n=541, 20↑ 12↓"
    )
    data = json.loads(json.dumps(stats.to_json()))
    assert data["ci_low"] == -0.01 and data["test"] == "exact McNemar" and data["regressed"] == 12
    assert data["interval"] == "continuity-corrected Tango score"
    assert data["interval_note"] is None and data["interval_reliable"] is True


def analysis_of(task: str, base: list[float], finetuned: list[float]) -> tuple[TaskComparison, TaskAnalysis]:
    """A task's comparison and its per-document evidence, as the session builds them."""
    records = [{i: SampleRecord(i, v, f"prompt {i}", f"answer {i}") for i, v in enumerate(side)}
               for side in (base, finetuned)]
    comp = TaskComparison(task, "acc,none", sum(base) / len(base), sum(finetuned) / len(finetuned))
    analysis = TaskAnalysis(task, records[0], records[1], find_flips(records[0], records[1]))
    comp.extra.update(analysis.to_json(0.95))
    return comp, analysis


def test_a_four_prompt_gain_does_not_pass_a_confidence_gate() -> None:
    # The measured case: 3 of 4 IFEval prompts fixed, none broken, exact p = 0.25.
    comp, analysis = analysis_of("ifeval", [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0])
    failure = improves_failure(comp, 2.0, analysis, 0.95)
    assert failure is not None
    assert "[-33.3, +100.0] 95% CI (continuity-corrected Tango score), p=0.25 (exact McNemar)" in failure
    assert improves_failure(comp, 2.0, analysis, None) is None  # the point estimate, +75 points, clears 2


def test_confidence_gates_decide_on_the_interval() -> None:
    base = [0.0] * 60 + [1.0] * 40
    gained = [1.0] * 30 + [0.0] * 30 + [1.0] * 40  # 30↑ 0↓ of 100: [+19.6, +43.2] points
    comp, analysis = analysis_of("gsm8k", base, gained)
    assert improves_failure(comp, 10.0, analysis, 0.95) is None
    assert improves_failure(comp, 25.0, analysis, 0.95) is not None
    lost_comp, lost = analysis_of("gsm8k", gained, base)
    assert regression_failure(lost_comp, 5.0, lost, 0.95) is not None
    assert regression_failure(lost_comp, 25.0, lost, 0.95) is None
    assert regression_failure(comp, 0.0, analysis, 0.95) is None


def test_a_gate_on_an_unreliable_interval_says_so() -> None:
    base = [0.5] * 40
    finetuned = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75] + [0.5] * 32  # 8 documents changed
    comp, analysis = analysis_of("ifeval", base, finetuned)
    failure = improves_failure(comp, 50.0, analysis, 0.95)
    assert failure is not None and "decided on an interval that is unreliable: 8 documents changed" in failure
    with pytest.warns(UnreliableIntervalWarning, match="ifeval improves passed; decided on an interval"):
        assert improves_failure(comp, 1.0, analysis, 0.95) is None
    with pytest.warns(UnreliableIntervalWarning, match="ifeval no_regression passed"):
        assert regression_failure(comp, 5.0, analysis, 0.95) is None


def test_a_sample_without_spread_is_gated_on_its_point_estimate() -> None:
    comp, analysis = analysis_of("ifeval", [0.5] * 40, [0.25] * 40)  # every document lost 25 points
    failure = regression_failure(comp, 5.0, analysis, 0.95)
    assert failure is not None and "no interval, so the gate compared the point estimate" in failure
    same_comp, same = analysis_of("ifeval", [0.5] * 40, [0.5] * 40)
    assert improves_failure(same_comp, 0.0, same, 0.95) is not None
    with pytest.warns(UnreliableIntervalWarning, match="compared the point estimate"):
        assert regression_failure(same_comp, 0.0, same, 0.95) is None


def test_report_columns_name_the_method_and_mark_unreliable_intervals() -> None:
    comps = {
        "ifeval": analysis_of("ifeval", [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0])[0],
        "custom": analysis_of("custom", [0.5] * 40, [0.75, 1.0] + [0.5] * 38)[0],
        "flat": analysis_of("flat", [0.5] * 40, [0.5] * 40)[0],
    }
    columns = evidence_columns(comps, 0.95)
    assert list(columns) == ["95% CI (points)", "CI method", "p", "Flips"]
    assert columns["95% CI (points)"]["ifeval"] == "[-33.3, +100.0]"
    assert columns["95% CI (points)"]["custom"].endswith(" unreliable")
    assert columns["95% CI (points)"]["flat"] == "none"
    assert columns["CI method"] == {"ifeval": "Tango score (cc)", "custom": "bootstrap", "flat": "bootstrap"}
    assert columns["p"]["ifeval"] == "0.25"
    table = comparison_table(comps, columns)
    assert "Tango score (cc)" in table and "[-33.3, +100.0]" in table


# --------------------------------------------------------------------------------------------
# Reading lm-eval samples files
# --------------------------------------------------------------------------------------------


def ifeval_record(doc_id: int, strict: bool, insts: list[bool], response: str) -> dict[str, Any]:
    """The shape lm-eval 0.4.13 writes for IFEval (copied from a real samples_ifeval_*.jsonl line)."""
    prompt = f"Write note {doc_id} in all lowercase letters."
    return {
        "doc_id": doc_id,
        "doc": {"key": 1000 + doc_id, "prompt": prompt, "instruction_id_list": ["change_case:english_lowercase"]},
        "target": "0",
        "arguments": {
            "gen_args_0": {
                "arg_0": f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
                "arg_1": {"until": [], "do_sample": False, "temperature": 0.0, "max_gen_toks": 32},
            }
        },
        "resps": [[response]],
        "filtered_resps": [response],
        "filter": "none",
        "metrics": [f"{level}_level_{kind}_acc" for kind in ("strict", "loose") for level in ("prompt", "inst")],
        "doc_hash": "ceaa",
        "prompt_hash": "0c27",
        "target_hash": "5fec",
        "prompt_level_strict_acc": strict,
        "inst_level_strict_acc": insts,
        "prompt_level_loose_acc": strict,
        "inst_level_loose_acc": insts,
    }


def gsm8k_records(doc_id: int, generation: str, strict: str, flexible: str, answer: str) -> list[dict[str, Any]]:
    """GSM8K logs each document once per filter, each with its own extraction and score."""
    doc = {"question": f"Question {doc_id}: how many apples?", "answer": f"Reasoning.\n#### {answer}"}
    records = []
    for filter_name, extracted in (("strict-match", strict), ("flexible-extract", flexible)):
        records.append(
            {
                "doc_id": doc_id,
                "doc": doc,
                "target": doc["answer"],
                "arguments": {"gen_args_0": {"arg_0": f"Q: {doc['question']}\nA:", "arg_1": {"until": ["Q:"]}}},
                "resps": [[generation]],
                "filtered_resps": [extracted],
                "filter": filter_name,
                "metrics": ["exact_match"],
                "doc_hash": "a",
                "prompt_hash": "b",
                "target_hash": "c",
                "exact_match": 1.0 if extracted == answer else 0.0,
            }
        )
    return records


def hellaswag_record(doc_id: int, lls: list[float], endings: list[str], gold: int) -> dict[str, Any]:
    """Multiple choice: one loglikelihood request per ending; (ll, is_greedy) pairs stringified."""
    query = f"Baking: the chef {doc_id} opens the oven"
    pred, pred_norm = int(np.argmax(lls)), int(np.argmax(np.array(lls) / [len(e) for e in endings]))
    return {
        "doc_id": doc_id,
        "doc": {"query": query, "choices": endings, "gold": gold, "ctx": "the chef opens the oven"},
        "target": str(gold),
        "arguments": {f"gen_args_{i}": {"arg_0": query, "arg_1": f" {e}"} for i, e in enumerate(endings)},
        "resps": [[[str(ll), "False"]] for ll in lls],
        "filtered_resps": [[str(ll), "False"] for ll in lls],
        "filter": "none",
        "metrics": ["acc", "acc_norm"],
        "doc_hash": "a",
        "prompt_hash": "b",
        "target_hash": "c",
        "acc": 1.0 if pred == gold else 0.0,
        "acc_norm": 1.0 if pred_norm == gold else 0.0,
    }


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_load_ifeval_samples(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "samples_ifeval_2026-01-01T00-00-00.jsonl",
        [
            ifeval_record(0, False, [False, True], "Dear friend,\nsee you"),
            ifeval_record(1, True, [True], "all lowercase"),
        ],
    )
    strict = load_samples(path, "prompt_level_strict_acc,none")
    assert strict[0] == SampleRecord(
        0, 0.0, "Write note 0 in all lowercase letters.", "Dear friend,\nsee you", target="0"
    )
    assert strict[1].value == 1.0
    # Per-instruction lists score the fraction of a document's instructions followed.
    assert load_samples(path, "inst_level_loose_acc,none")[0].value == 0.5


def test_load_gsm8k_keeps_only_the_requested_filter(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "samples_gsm8k.jsonl",
        gsm8k_records(0, "She has 3 + 4 = 7 apples. #### 7", "7", "7", "7")
        + gsm8k_records(1, "The answer is 12 apples.", "[invalid]", "12", "12")
        + gsm8k_records(2, "#### 5", "5", "5", "6"),
    )
    strict = load_samples(path, "exact_match,strict-match")
    flexible = load_samples(path, "exact_match,flexible-extract")
    assert [strict[d].value for d in range(3)] == [1.0, 0.0, 0.0]
    assert [flexible[d].value for d in range(3)] == [1.0, 1.0, 0.0]
    assert strict[1].prompt == "Question 1: how many apples?"
    # What the filter extracted is shown next to the generation, since only it was scored.
    assert strict[1].response == "The answer is 12 apples.\n(extracted: [invalid])"
    assert strict[2].response == "#### 5\n(extracted: 5)"
    assert strict[1].target == "Reasoning.\n#### 12"
    with pytest.raises(BenchError, match=r"no records for filter 'none'.*flexible-extract, strict-match"):
        load_samples(path, "exact_match,none")


def test_load_multiple_choice_names_the_picked_choice(tmp_path: Path) -> None:
    # Raw loglikelihood prefers the short ending; per-character it prefers the long one.
    path = write_jsonl(
        tmp_path / "samples_hellaswag.jsonl",
        [hellaswag_record(5, [-3.0, -4.0, -9.0], ["a", "takes out the bread", "zz"], gold=1)],
    )
    acc = load_samples(path, "acc,none")[5]
    acc_norm = load_samples(path, "acc_norm,none")[5]
    assert (acc.value, acc_norm.value) == (0.0, 1.0)
    assert acc.response == "choice 0: a"
    assert acc_norm.response == "choice 1: takes out the bread"
    assert acc.target == "choice 1: takes out the bread"
    assert acc.prompt == "Baking: the chef 5 opens the oven"


def test_load_falls_back_to_the_rendered_prompt(tmp_path: Path) -> None:
    record = ifeval_record(3, True, [True], "ok")
    record["doc"] = {"key": 1}
    record["arguments"] = [["rendered prompt", {"until": []}]]  # the in-memory form, before lm-eval's tracker
    path = write_jsonl(tmp_path / "samples.jsonl", [record])
    assert load_samples(path, "prompt_level_strict_acc,none")[3].prompt == "rendered prompt"


def test_load_keeps_unicode_line_separators_inside_records(tmp_path: Path) -> None:
    # lm-eval writes ensure_ascii=False: U+2028 appears raw and must not split a record.
    path = write_jsonl(tmp_path / "samples.jsonl", [ifeval_record(0, True, [True], "one\u2028two\x85three")])
    assert load_samples(path, "prompt_level_strict_acc,none")[0].response == "one\u2028two\x85three"


def test_corrupt_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "samples_ifeval.jsonl"
    lines = [json.dumps(ifeval_record(i, True, [True], "x")) for i in range(3)]
    # A run killed while lm-eval was writing leaves a truncated last line.
    path.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:50] + "\n", encoding="utf-8")
    with pytest.raises(BenchError) as excinfo:
        load_samples(path, "prompt_level_strict_acc,none")
    message = str(excinfo.value)
    assert str(path) in message and "line 3" in message
    assert "delete the run folder" in message and "re-run" in message


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[1, 2]", "not a JSON object"),
        ('{"filter": "none"}', "no integer doc_id"),
        ('{"doc_id": true, "filter": "none"}', "no integer doc_id"),
        ('{"doc_id": 1}', "no filter name"),
    ],
)
def test_malformed_records_are_corrupt(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps(ifeval_record(0, True, [True], "x")) + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(BenchError, match=rf"line 3 is corrupt \({reason}\)"):
        load_samples(path, "prompt_level_strict_acc,none")


def test_invalid_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_bytes(json.dumps(ifeval_record(0, True, [True], "x")).encode() + b'\n{"doc_id": 1, "x": "\xff"}\n')
    with pytest.raises(BenchError, match="line 2 is corrupt"):
        load_samples(path, "prompt_level_strict_acc,none")


def test_duplicate_doc_id_is_corrupt(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "s.jsonl", [ifeval_record(0, True, [True], "x"), ifeval_record(0, False, [False], "y")]
    )
    with pytest.raises(BenchError, match=r"line 2 is corrupt \(doc_id 0 appears twice"):
        load_samples(path, "prompt_level_strict_acc,none")


def test_missing_or_corpus_level_metric_is_explained(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [ifeval_record(0, True, [True], "x")])
    with pytest.raises(BenchError, match=r"no 'acc' value \(metrics: prompt_level_strict_acc"):
        load_samples(path, "acc,none")
    record = ifeval_record(0, True, [True], "x")
    record["f1"] = [1, 0]  # F1 logs (gold, prediction); only the corpus-level aggregate is a score
    path = write_jsonl(tmp_path / "f1.jsonl", [record])
    with pytest.raises(BenchError, match="not a per-document score"):
        load_samples(path, "f1,none")


def test_empty_file_has_no_samples_and_missing_file_is_explained(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    assert load_samples(tmp_path / "empty.jsonl", "acc,none") == {}
    with pytest.raises(BenchError, match="cannot read lm-eval samples"):
        load_samples(tmp_path / "missing.jsonl", "acc,none")


def test_metric_key_needs_a_filter() -> None:
    assert split_metric_key("exact_match,strict-match") == ("exact_match", "strict-match")
    with pytest.raises(BenchError, match="'metric,filter'"):
        split_metric_key("acc")


def test_samples_written_by_lm_evals_own_tracker(tmp_path: Path) -> None:
    tracker_module = pytest.importorskip("lm_eval.loggers.evaluation_tracker")
    tracker = tracker_module.EvaluationTracker(output_path=str(tmp_path / "results.json"))
    tracker.date_id = "2026-01-01T00-00-00"
    # The in-memory records lm-eval's evaluator builds (tuples, numpy-free floats), before the tracker
    # flattens arguments into gen_args_i/arg_j and stringifies responses.
    samples = [
        {
            "doc_id": doc_id,
            "doc": {"query": f"context {doc_id}", "choices": ["yes", "no way"], "gold": 1},
            "target": 1,
            "arguments": [(f"context {doc_id}", " yes"), (f"context {doc_id}", " no way")],
            "resps": [[(-1.0, False)], [(-0.5 - doc_id, True)]],
            "filtered_resps": [(-1.0, False), (-0.5 - doc_id, True)],
            "filter": "none",
            "metrics": ["acc"],
            "acc": 1.0 if doc_id == 0 else 0.0,
        }
        for doc_id in range(2)
    ]
    tracker.save_results_samples(task_name="toy", samples=samples)
    (path,) = tmp_path.glob("samples_toy_*.jsonl")
    loaded = load_samples(path, "acc,none")
    assert loaded[0] == SampleRecord(0, 1.0, "context 0", "choice 1: no way", "choice 1: no way")
    assert loaded[1].response == "choice 0: yes"


def test_paired_values_keeps_docs_on_both_sides_in_doc_order() -> None:
    base = {i: SampleRecord(i, float(i % 2), "p", "r") for i in (5, 1, 3, 9)}
    ft = {i: SampleRecord(i, 1.0, "p", "r") for i in (3, 9, 1, 7)}
    assert paired_values(base, ft) == ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1, 3, 9])
    assert paired_values({}, ft) == ([], [], [])
