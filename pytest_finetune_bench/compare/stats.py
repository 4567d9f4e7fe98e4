"""Per-document benchmark scores and paired statistics for base vs fine-tuned.

The aggregate scores lm-eval reports say how much a model changed, not whether the change is more
than noise. Both models answer the same documents, so the comparison is paired: each document's
difference (fine-tuned minus base) is the unit, which cancels out how hard each document is and
gives much tighter intervals than comparing two independent accuracies.

The p-value is the exact McNemar test for pass/fail metrics and a sign-flip permutation test for
continuous ones. Both test the same null hypothesis: swapping the base and fine-tuned labels within
any document changes nothing. On 0/1 data the sign-flip test *is* McNemar's exact test; unlike a
paired t-test it assumes nothing about normality, which matters for bounded, lumpy per-document
scores (IFEval's instruction fractions) on small runs.

The interval depends on the kind of metric:

- Pass/fail metrics (every value 0 or 1) get Tango's (1998) score interval for a difference of
  paired proportions, with the continuity correction of Chang et al. (2024): the score numerator
  b - c - nΔ is moved one count towards zero (b documents went fail→pass, c pass→fail). Its
  coverage is at or above the nominal level at every n (tests/test_stats.py: exact enumeration of
  all outcomes for n <= 40, a seeded simulation from 4 to 500), where the percentile bootstrap falls
  far below at small n and degenerates to [0, 0] when no document changed. It falls short only when
  nearly every document flips (about 97% at 99% confidence for n <= 30).
- Continuous metrics get the paired bootstrap percentile interval of the mean difference. It needs
  enough documents whose score changed (BOOTSTRAP_MIN_CHANGED); below that the stats say the
  interval is unreliable, and an interval of zero width (every difference equal) is not reported.

The interval and the p-value agree by construction, at the same level (1 - confidence = alpha):
whenever the exact test does not reject "no difference" at alpha, the interval is widened to reach
0. So **the interval excludes 0 only if the reported p < alpha**, for both kinds of metric. The
converse can fail at the margin, where the interval is the more cautious: for pass/fail metrics at
95% only when 0.0487 <= p < 0.05 (e.g. 15↑ 29↓, p = 0.049), at 99% for p as low as 0.0078 (0↑ 8↓),
as checked for b + c up to 3000.
At Δ = 0 the corrected score statistic is McNemar's continuity-corrected one, (|b - c| - 1) / √(b + c).
A gate that asks for a gain of 0 or more needs an interval above 0 (see plan/gates.py), so it never
passes a change that the exact test calls insignificant.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

TEST_MCNEMAR = "exact McNemar"
TEST_SIGN_FLIP = "sign-flip permutation"
INTERVAL_TANGO = "continuity-corrected Tango score"
INTERVAL_BOOTSTRAP = "percentile bootstrap"

# The percentile bootstrap of a mean is only as good as the number of differences it resamples
# that are not 0. Simulated on smooth and on IFEval-like lumpy data (tests/test_stats.py), its 95%
# interval covers about 94% from 30 changed documents on, and as little as 60% with a handful.
BOOTSTRAP_MIN_CHANGED = 30
# Tango's numerator b - c - nΔ moves in steps of one document; shrinking it by one count is the
# continuity correction that makes the interval conservative at small n (and, at Δ = 0, is
# McNemar's continuity-corrected statistic).
_CONTINUITY_COUNTS = 1.0
# Halving an interval of length 2 this often narrows it past float64 resolution.
_BISECTION_STEPS = 64

# Up to 2**16 sign patterns are cheap to enumerate, which makes the p-value exact.
_EXACT_SIGN_FLIP_MAX_PAIRS = 16
# Keeps one block of resampled indices or sign patterns around 32 MiB of float64.
_BLOCK_ELEMENTS = 1 << 22
# With this few distinct differences, resampling counts per value beats resampling indices.
_MAX_DISTINCT_FOR_COUNTS = 64
# Up to this many distinct numbers of discordant documents, each critical value is searched (and cached);
# beyond, one walk over their range finds them all.
_CACHED_CRITICALS = 8

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


# ---------------------------------------------------------------------------------------------
# Paired statistics
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedStats:
    """Fine-tuned minus base over the same documents. Scores and deltas are fractions (0.05 = 5 points).

    With no paired documents (n == 0) every estimate is None and every count 0. With documents but
    no usable interval (a continuous metric whose differences are all equal) ci_low and ci_high are
    None and `interval_note` says why.
    """

    n: int
    delta: float | None  # mean of (fine-tuned - base) = fine-tuned score - base score
    ci_low: float | None
    ci_high: float | None
    confidence: float  # of the interval, e.g. 0.95
    p_value: float | None  # two-sided, of "no difference"
    test: str | None  # TEST_MCNEMAR or TEST_SIGN_FLIP
    improved: int  # documents that got better in the metric's direction: fail→pass, or a higher accuracy
    regressed: int  # documents that got worse: pass→fail, or a lower accuracy
    unchanged: int
    base_mean: float | None = None
    finetuned_mean: float | None = None
    interval: str | None = None  # INTERVAL_TANGO or INTERVAL_BOOTSTRAP
    interval_note: str | None = None  # why the interval is unreliable or missing; None when it is sound
    higher_is_better: bool = True  # the metric's direction: the gain is delta, or -delta when lower is better

    @property
    def interval_reliable(self) -> bool:
        """There is an interval, from enough documents for its method to keep its coverage."""
        return self.ci_low is not None and self.interval_note is None

    @property
    def gain(self) -> float | None:
        """`delta` signed so that positive is better."""
        return self.delta if self.higher_is_better or self.delta is None else -self.delta

    @property
    def gain_interval(self) -> tuple[float | None, float | None]:
        """(low, high) of the gain: the interval of delta, mirrored when lower is better."""
        if self.higher_is_better or self.ci_low is None or self.ci_high is None:
            return self.ci_low, self.ci_high
        return -self.ci_high, -self.ci_low

    def confident_improvement(self, by: float = 0.0) -> bool:
        """The gain's whole interval is at or above `by`: the fine-tuned model gained at least `by`.

        For `by` >= 0 the interval must also exclude 0, so no gain is claimed that the paired test
        does not call significant.
        """
        low = self.gain_interval[0]
        if low is None or (by >= 0 and low <= 0):
            return False
        return low >= by

    def confident_regression(self, max_drop: float = 0.0) -> bool:
        """The gain's whole interval is below -`max_drop`: the model lost more than `max_drop` (0.05 = 5 points)."""
        high = self.gain_interval[1]
        return high is not None and high < -max_drop

    def significant(self, alpha: float = 0.05) -> bool:
        """The paired test rejects "no difference" at level `alpha` (in either direction)."""
        return self.p_value is not None and self.p_value < alpha

    def summary(self, scale: float = 100.0, unit: str = "pts") -> str:
        """One line for reports, e.g.
        "+3.2 pts [-1.0, +7.5] 95% CI (continuity-corrected Tango score), p=0.12 (exact McNemar), n=541, 20↑ 12↓".

        Values are multiplied by `scale` and named `unit` (points by default; 1 and the metric's name
        for a metric shown in its own unit). ↑ counts the documents that got better, ↓ those that got worse.
        """
        if self.n == 0 or self.delta is None:
            return "no documents scored by both models"
        return (
            f"{self.delta * scale:+.1f} {unit}{self._interval_text(scale)}, "
            f"p={_format_p(self.p_value)} ({self.test}), n={self.n}, {self.improved}↑ {self.regressed}↓"
        )

    def _interval_text(self, scale: float) -> str:
        """" [-1.0, +7.5] 95% CI (method)", with the note when the interval is unreliable or missing."""
        level = f"{self.confidence * 100:g}% CI"
        about = "; ".join(part for part in (self.interval, self.interval_note) if part)
        about = f" ({about})" if about else ""
        if self.ci_low is None or self.ci_high is None:
            return f", no {level}{about}"
        return f" [{self.ci_low * scale:+.1f}, {self.ci_high * scale:+.1f}] {level}{about}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "interval_reliable": self.interval_reliable}


def _format_p(p_value: float | None) -> str:
    if p_value is None:
        return "n/a"
    return f"{p_value:.2g}" if p_value >= 0.001 else "<0.001"


@dataclass(frozen=True)
class _Evidence:
    """An interval and the test it agrees with."""

    ci_low: float | None
    ci_high: float | None
    interval: str
    interval_note: str | None
    p_value: float
    test: str


def paired_stats(
    base_vals: Sequence[float],
    ft_vals: Sequence[float],
    *,
    confidence: float = 0.95,
    n_boot: int = 10000,
    seed: int = 0,
    n_perm: int = 10000,
    higher_is_better: bool = True,
) -> PairedStats:
    """Paired comparison of two per-document score lists (same documents, same order).

    When every value is 0 or 1: the continuity-corrected Tango score interval and the exact McNemar
    test. Otherwise the percentile interval of `n_boot` paired bootstrap resamples of the mean
    difference and a sign-flip permutation test (exact up to 16 non-zero differences, otherwise
    `n_perm` random sign patterns). Either interval reaches 0 whenever its test does not reject at
    1 - `confidence`. Results depend only on the inputs, `n_boot`, `n_perm` and `seed`.

    Delta and interval are always fine-tuned minus base; `higher_is_better` only decides which
    changed documents count as improved and which as regressed.
    """
    _check_arguments(base_vals, ft_vals, confidence, n_boot, n_perm)
    n = len(base_vals)
    if n == 0:
        return PairedStats(0, None, None, None, confidence, None, None, 0, 0, 0)
    base = np.asarray(base_vals, dtype=np.float64)
    finetuned = np.asarray(ft_vals, dtype=np.float64)
    diffs = finetuned - base
    went_up, went_down = int(np.sum(diffs > 0)), int(np.sum(diffs < 0))
    if _is_binary(base) and _is_binary(finetuned):
        evidence = _binary_evidence(went_up, went_down, n, confidence)
    else:
        evidence = _continuous_evidence(diffs, confidence, n_boot, n_perm, seed)
    improved, regressed = (went_up, went_down) if higher_is_better else (went_down, went_up)
    return PairedStats(
        n=n,
        delta=math.fsum(diffs.tolist()) / n,
        ci_low=evidence.ci_low,
        ci_high=evidence.ci_high,
        confidence=confidence,
        p_value=evidence.p_value,
        test=evidence.test,
        improved=improved,
        regressed=regressed,
        unchanged=n - improved - regressed,
        base_mean=math.fsum(base.tolist()) / n,
        finetuned_mean=math.fsum(finetuned.tolist()) / n,
        interval=evidence.interval,
        interval_note=evidence.interval_note,
        higher_is_better=higher_is_better,
    )


def _binary_evidence(improved: int, regressed: int, n: int, confidence: float) -> _Evidence:
    low, high = paired_proportion_ci(improved, regressed, n, confidence=confidence)
    return _Evidence(float(low), float(high), INTERVAL_TANGO, None, mcnemar_exact_p(improved, regressed), TEST_MCNEMAR)


def _continuous_evidence(diffs: FloatArray, confidence: float, n_boot: int, n_perm: int, seed: int) -> _Evidence:
    boot_seed, perm_seed = np.random.SeedSequence(seed).spawn(2)
    low, high = bootstrap_ci(diffs, confidence=confidence, n_boot=n_boot, rng=np.random.default_rng(boot_seed))
    p_value = sign_flip_p(diffs, n_perm=n_perm, rng=np.random.default_rng(perm_seed))
    if p_value >= 1.0 - confidence:
        low, high = min(low, 0.0), max(high, 0.0)
    if high <= low:
        # Resampling identical differences only ever gives that one value: no spread, no interval.
        return _Evidence(None, None, INTERVAL_BOOTSTRAP, _zero_width_note(diffs), p_value, TEST_SIGN_FLIP)
    changed = int(np.count_nonzero(diffs))
    note = None
    if changed < BOOTSTRAP_MIN_CHANGED:
        note = f"unreliable: {_documents(changed)} changed score, fewer than the {BOOTSTRAP_MIN_CHANGED} it needs"
    return _Evidence(low, high, INTERVAL_BOOTSTRAP, note, p_value, TEST_SIGN_FLIP)


def _documents(count: int) -> str:
    return f"{count} document" if count == 1 else f"{count} documents"


def _zero_width_note(diffs: FloatArray) -> str:
    if np.all(diffs == diffs[0]):
        return f"every paired difference is {diffs[0] * 100:+.1f} pts, so resampling them cannot show spread"
    return "the resampled means did not vary"


def _check_arguments(
    base_vals: Sequence[float], ft_vals: Sequence[float], confidence: float, n_boot: int, n_perm: int
) -> None:
    if len(base_vals) != len(ft_vals):
        raise ValueError(f"paired values differ in length: {len(base_vals)} base vs {len(ft_vals)} fine-tuned")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    if n_boot < 1 or n_perm < 1:
        raise ValueError("n_boot and n_perm must be at least 1")
    if not all(math.isfinite(v) for v in (*base_vals, *ft_vals)):
        raise ValueError("paired values must be finite numbers")


def _is_binary(values: FloatArray) -> bool:
    return bool(np.all((values == 0.0) | (values == 1.0)))


# ---------------------------------------------------------------------------------------------
# Pass/fail metrics: Tango's score interval and the exact McNemar test
# ---------------------------------------------------------------------------------------------


def paired_proportion_ci(
    improved: npt.ArrayLike, regressed: npt.ArrayLike, n: npt.ArrayLike, *, confidence: float
) -> tuple[FloatArray, FloatArray]:
    """The interval pass/fail metrics get, for arrays of counts (b fail→pass, c pass→fail, of n).

    The continuity-corrected Tango score interval, widened to reach 0 wherever the exact McNemar
    test does not reject "no difference" at 1 - `confidence`: so it excludes 0 only where p < 1 - confidence.
    """
    low, high = tango_ci(improved, regressed, n, confidence=confidence, continuity=_CONTINUITY_COUNTS)
    keeps_zero = ~mcnemar_rejects(improved, regressed, 1.0 - confidence)
    return np.where(keeps_zero, np.minimum(low, 0.0), low), np.where(keeps_zero, np.maximum(high, 0.0), high)


def tango_ci(
    improved: npt.ArrayLike, regressed: npt.ArrayLike, n: npt.ArrayLike, *, confidence: float, continuity: float = 0.0
) -> tuple[FloatArray, FloatArray]:
    """Tango's (1998) score interval for the difference of paired proportions, elementwise.

    The set of Δ whose score statistic stays below the normal quantile, found by bisection on each
    side of the estimate (b - c) / n. `continuity` counts shrink the numerator (Chang et al. 2024);
    0 is Tango's original interval.
    """
    b, c, size = (np.asarray(x, dtype=np.float64) for x in np.broadcast_arrays(improved, regressed, n))
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    estimate = (b - c) / size

    def below(delta: FloatArray) -> BoolArray:  # Δ not rejected from below the estimate
        accepted: BoolArray = tango_z(delta, b, c, size, continuity) < z
        return accepted

    def above(delta: FloatArray) -> BoolArray:
        accepted: BoolArray = tango_z(delta, b, c, size, continuity) > -z
        return accepted

    return _bound(below, -np.ones_like(estimate), estimate), _bound(above, np.ones_like(estimate), estimate)


def tango_z(delta: FloatArray, b: FloatArray, c: FloatArray, n: FloatArray, continuity: float = 0.0) -> FloatArray:
    """Tango's score statistic for H0: Δ = delta, with b fail→pass and c pass→fail of n documents.

    (b - c - nΔ) / sqrt(n (2 q + Δ(1 - Δ))), where q is the maximum-likelihood probability of
    pass→fail under H0, the positive root of 2n q² + B q + C = 0 with B = -b - c + (2n - b + c)Δ
    and C = -c Δ(1 - Δ). A numerator within `continuity` of 0 counts as 0, at Δ = ±1 too.
    """
    lin = -b - c + (2.0 * n - b + c) * delta
    const = -c * delta * (1.0 - delta)
    root = np.sqrt(np.maximum(lin * lin - 8.0 * n * const, 0.0))
    excess = b - c - n * delta
    shrunk = np.sign(excess) * np.maximum(np.abs(excess) - continuity, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # The two forms of the positive root are equal; each avoids cancellation on its side of B = 0.
        q = np.where(lin > 0, -2.0 * const / (lin + root), (root - lin) / (4.0 * n))
        variance = np.maximum(n * (2.0 * q + delta * (1.0 - delta)), 0.0)
        z: FloatArray = np.where(shrunk == 0.0, 0.0, shrunk / np.sqrt(variance))
    return z


def _bound(accepts: Callable[[FloatArray], BoolArray], outer: FloatArray, estimate: FloatArray) -> FloatArray:
    """The accepted value farthest from `estimate` towards `outer` (±1), by bisection.

    The estimate always has score 0, so it is accepted; the accepted set on each side is an interval
    (checked against a brute-force scan in the tests).
    """
    at_outer = accepts(outer)
    if np.all(at_outer):
        return outer
    rejected, accepted = outer.copy(), estimate.copy()
    for _ in range(_BISECTION_STEPS):
        mid = (rejected + accepted) / 2.0
        ok = accepts(mid)
        accepted = np.where(ok, mid, accepted)
        rejected = np.where(ok, rejected, mid)
    bound: FloatArray = np.where(at_outer, outer, accepted)
    return bound


def mcnemar_rejects(improved: npt.ArrayLike, regressed: npt.ArrayLike, alpha: float) -> BoolArray:
    """Elementwise: does the exact McNemar test reject "no difference" at level `alpha` (p < alpha)?"""
    b, c = (np.asarray(x, dtype=np.int64) for x in np.broadcast_arrays(improved, regressed))
    # One critical value per number of discordant documents, instead of one p-value per element.
    discordant, where = np.unique(b + c, return_inverse=True)
    if len(discordant) <= _CACHED_CRITICALS:
        critical = np.array([_mcnemar_critical(int(m), alpha) for m in discordant], dtype=np.int64)
    else:
        critical = _mcnemar_criticals_walked(discordant, alpha)
    rejects: BoolArray = np.minimum(b, c) <= critical[where].reshape(b.shape)
    return rejects


def _mcnemar_criticals_walked(discordant: npt.NDArray[np.int64], alpha: float) -> npt.NDArray[np.int64]:
    """`_mcnemar_critical` of each of the sorted `discordant` counts, from one walk up their range.

    The binomial tail T(k, m) = sum of C(m, i) for i <= k moves to m + 1 as 2 T(k, m) - C(m, k), and the
    critical k never falls as m grows, so each step costs a few exact integer operations instead of a
    search of its own: what many simulated sessions (compare/power.py) need.
    """
    wanted = set(discordant.tolist())
    found: dict[int, int] = {}
    m, k, tail, term = int(discordant[0]), -1, 0, 0  # term = C(m, k), 0 for k = -1

    def raise_k() -> None:
        nonlocal k, tail, term
        while k + 1 <= m // 2:
            following = 1 if k < 0 else term * (m - k) // (k + 1)  # C(m, k + 1)
            if min(1.0, 2 * (tail + following) / (1 << m)) >= alpha:
                return
            k, tail, term = k + 1, tail + following, following

    raise_k()
    found[m] = k
    while m < int(discordant[-1]):
        tail, term, m = 2 * tail - term, term * (m + 1) // (m + 1 - k) if k >= 0 else 0, m + 1
        raise_k()
        if m in wanted:
            found[m] = k
    return np.array([found[int(m)] for m in discordant], dtype=np.int64)


@functools.lru_cache(maxsize=8192)
def _mcnemar_critical(discordant: int, alpha: float) -> int:
    """The largest min(b, c) that the exact test rejects with b + c = `discordant`, or -1 for none.

    The p-value grows with min(b, c) up to the middle, so a binary search over it finds the edge.
    """
    low, high = -1, discordant // 2
    while low < high:
        mid = (low + high + 1) // 2
        if mcnemar_exact_p(mid, discordant - mid) < alpha:
            low = mid
        else:
            high = mid - 1
    return low


def mcnemar_exact_p(improved: int, regressed: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts b and c.

    Under "no difference" each discordant document is equally likely to go either way, so
    min(b, c) ~ Binomial(b + c, 1/2) and p = min(1, 2 P(X <= min(b, c))); 1.0 when b + c == 0.
    Summed in exact integers, so it stays accurate for tiny p-values and thousands of documents.
    """
    if improved < 0 or regressed < 0:
        raise ValueError("discordant pair counts cannot be negative")
    discordant = improved + regressed
    if discordant == 0:
        return 1.0
    term = tail = 1  # C(m, 0)
    for i in range(min(improved, regressed)):
        # C(m, i+1) from C(m, i): math.comb per term is quadratic in the number of terms.
        term = term * (discordant - i) // (i + 1)
        tail += term
    # Python's int / int is correctly rounded even for numbers far beyond float range.
    return min(1.0, (2 * tail) / (1 << discordant))


# ---------------------------------------------------------------------------------------------
# Continuous metrics: the paired bootstrap and the sign-flip test
# ---------------------------------------------------------------------------------------------


def bootstrap_ci(diffs: FloatArray, *, confidence: float, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile interval of the mean of `diffs` over `n_boot` resamples of the documents."""
    means = _bootstrap_means(diffs, n_boot, rng)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def _bootstrap_means(diffs: FloatArray, n_boot: int, rng: np.random.Generator) -> FloatArray:
    values, counts = np.unique(diffs, return_counts=True)
    if len(values) <= _MAX_DISTINCT_FOR_COUNTS:
        return _bootstrap_means_by_counts(values, counts, n_boot, rng)
    return _bootstrap_means_by_index(diffs, n_boot, rng)


def _bootstrap_means_by_counts(
    values: FloatArray, counts: npt.NDArray[np.int64], n_boot: int, rng: np.random.Generator
) -> FloatArray:
    """Resampling n documents with replacement draws each distinct value a Multinomial number of times.

    That is the same distribution as resampling indices, in O(distinct values) per resample
    instead of O(n): pass/fail differences take only -1, 0 and 1, and MMLU has 14k documents.
    """
    n = int(counts.sum())
    draws = rng.multinomial(n, counts / n, size=n_boot)
    means: FloatArray = (draws @ values) / n
    return means


def _bootstrap_means_by_index(diffs: FloatArray, n_boot: int, rng: np.random.Generator) -> FloatArray:
    """Resample document indices with replacement, in blocks so memory stays bounded."""
    n = len(diffs)
    block = max(1, _BLOCK_ELEMENTS // n)
    means: FloatArray = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        means[start : start + size] = diffs[rng.integers(0, n, size=(size, n))].mean(axis=1)
    return means


def sign_flip_p(diffs: FloatArray, *, n_perm: int, rng: np.random.Generator) -> float:
    """Two-sided p-value of the paired sign-flip permutation test on the sum of differences.

    Under "no difference" each document's difference is as likely to have either sign, so the
    p-value is the share of sign patterns whose |sum| reaches the observed |sum|. Zero
    differences never change a sum and are left out. With up to 16 non-zero differences all
    patterns are enumerated (exact); beyond, `n_perm` random patterns give the Monte Carlo
    estimate (hits + 1) / (n_perm + 1), which counts the observed pattern and so is never 0.
    """
    nonzero = diffs[diffs != 0.0]
    if len(nonzero) == 0:
        return 1.0
    observed = abs(float(nonzero.sum()))
    # Sums taken in a different order round differently; a pattern as extreme as the
    # observed one must not miss by the last bit.
    threshold = observed - 1e-12 * float(np.abs(nonzero).sum())
    if len(nonzero) <= _EXACT_SIGN_FLIP_MAX_PAIRS:
        signs = _all_sign_patterns(len(nonzero))
        return float(np.mean(np.abs(signs @ nonzero) >= threshold))
    hits = 0
    block = max(1, _BLOCK_ELEMENTS // len(nonzero))
    for start in range(0, n_perm, block):
        size = min(block, n_perm - start)
        hits += int(np.sum(np.abs(_random_sign_sums(nonzero, size, rng)) >= threshold))
    return (hits + 1) / (n_perm + 1)


def _random_sign_sums(diffs: FloatArray, size: int, rng: np.random.Generator) -> FloatArray:
    """`size` sums of `diffs` under independent fair random signs.

    Random bytes unpacked to bits cost a fraction of one integer draw per sign. With a bit b
    per difference the sign is 1 - 2b, so the sum is sum(d) - 2 * (b @ d).
    """
    m = len(diffs)
    packed = np.frombuffer(rng.bytes(size * ((m + 7) // 8)), dtype=np.uint8).reshape(size, -1)
    bits = np.unpackbits(packed, axis=1, count=m)
    sums: FloatArray = float(diffs.sum()) - 2.0 * (bits.astype(np.float64) @ diffs)
    return sums


def _all_sign_patterns(m: int) -> FloatArray:
    """Every ±1 vector of length m, one per row (2**m rows)."""
    bits = (np.arange(1 << m)[:, None] >> np.arange(m)) & 1
    patterns: FloatArray = 1.0 - 2.0 * bits.astype(np.float64)
    return patterns
