"""Anytime-valid confidence sequences for the mean of a finite population, and the record of an early stop.

Early stopping (run/early_stop.py) evaluates a task's documents in a random order and looks at the
evidence after every chunk. A fixed-n interval (the paired bootstrap, Tango's score interval) is
only valid for one look at a sample size chosen in advance: checked after every chunk and acted on
at the first decisive look, its error rate grows with the number of looks (tests/test_sequential.py
measures it). A *confidence sequence* holds at every sample size at once:
P(the population mean leaves the sequence at any t) ≤ α, so stopping whenever it is decisive keeps
the error at or below α.

The one here is the hedged betting sequence of Waudby-Smith & Ramdas, "Estimating means of bounded
random variables by betting" (JRSS-B 2023, §4.2 and the predictable plug-in bets of §5.1), in its
form for sampling without replacement ("Confidence sequences for sampling without replacement",
NeurIPS 2020, §3). The documents are a finite population of N paired differences Δ in [-1, 1],
rescaled to x = (Δ + 1) / 2 in [0, 1]; the random order makes them a sample drawn without
replacement. For each candidate population mean m, the mean of what is still unseen is

    μ_t(m) = (N·m − Σ_{i<t} x_i) / (N − t + 1),

and two bettors stake a predictable fraction λ_t on x_t landing above (or below) μ_t(m):

    K⁺_t(m) = Π (1 + λ⁺_i (x_i − μ_i(m))),   K⁻_t(m) = Π (1 − λ⁻_i (x_i − μ_i(m))).

At the true mean, max(K⁺/2, K⁻/2) is bounded by a martingale that starts at 1, so by Ville's
inequality it reaches 1/α with probability at most α, at any time. The sequence is every m whose
capital has never reached 1/α (the running intersection, also valid), and it is intersected with
the means the population can still have given what was seen (unseen values lie in [0, 1]): at
t = N that set is one point, so the width reaches zero once every document is in.

PyPI's `confseq` (from the papers' authors) implements these, but ships as a source package with a
C++ build and pulls in matplotlib, pandas and pytest at run time; this module is the part we need, in
numpy. It works on a grid of candidate means and reports the hull of the survivors widened by one
grid step, which can only make it more cautious. Everything is vectorised over a leading batch
dimension so the simulation runs thousands of sequences at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_finetune_bench.compare.scores import TaskComparison
from pytest_finetune_bench.plan.gates import EPS

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

EARLY_STOP = "early_stop"  # the run mode, and the key of its record in a comparison's extra

# Candidate means on [0, 1]: a step of 1/4000 in x is 0.05 points of Δ, far below any gate threshold.
DEFAULT_GRID = 4001
# Bets are capped at this fraction of what keeps the capital non-negative (the papers' c = 1/2).
_TRUNCATION = 0.5


class FinitePopulationSequence:
    """Confidence sequences for the means of `batch` populations of `population` values in [-1, 1].

    Feed each population's values in their random order with `update`; `bounds` is the sequence at
    the values seen so far. Valid at level 1 - `alpha` at every t, simultaneously, for each population.
    """

    def __init__(self, population: int, alpha: float, batch: int = 1, grid: int = DEFAULT_GRID) -> None:
        if population < 1:
            raise ValueError("a population needs at least one value")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), not {alpha}")
        self.population = population
        self.alpha = alpha
        self.batch = batch
        self.seen = 0
        self._means = np.linspace(0.0, 1.0, grid)
        self._step = 1.0 / (grid - 1)
        self._log_threshold = math.log(1.0 / alpha)
        shape = (batch, grid)
        self._log_up = np.zeros(shape)  # log K⁺ per candidate mean
        self._log_down = np.zeros(shape)  # log K⁻
        self._rejected = np.zeros(shape, dtype=bool)  # capital reached 1/α at some t
        self._sum = np.zeros(batch)  # Σ x_i
        self._squares = np.zeros(batch)  # Σ (x_i − μ̂_i)², for the bets' variance estimate
        self._estimate = np.full(batch, 0.5)  # μ̂_t = (1/2 + Σ x_i) / (t + 1)

    def update(self, values: npt.ArrayLike) -> None:
        """Add the next values of every population: shape (batch, k), or (k,) when batch is 1."""
        chunk = np.asarray(values, dtype=float).reshape(self.batch, -1)
        if chunk.size and (chunk.min() < -1.0 - EPS or chunk.max() > 1.0 + EPS):
            raise ValueError("values must lie in [-1, 1]")
        if self.seen + chunk.shape[1] > self.population:
            raise ValueError(f"more than the population's {self.population} values")
        for column in chunk.T:
            self._observe(np.clip((column + 1.0) / 2.0, 0.0, 1.0))

    def _observe(self, x: FloatArray) -> None:
        t = self.seen + 1
        remaining = self.population - t + 1
        # The unseen mean under each candidate: outside [0, 1] means the candidate is impossible.
        unseen_mean = (self.population * self._means[None, :] - self._sum[:, None]) / remaining
        impossible = (unseen_mean < 0.0) | (unseen_mean > 1.0)
        # Kept off 0 and 1 so the caps below stay finite; a bet there is capped by `bet` alone.
        unseen_mean = np.clip(unseen_mean, EPS, 1.0 - EPS)
        bet = self._bet(t)[:, None]
        up = np.minimum(bet, _TRUNCATION / unseen_mean)
        down = np.minimum(bet, _TRUNCATION / (1.0 - unseen_mean))
        centred = x[:, None] - unseen_mean
        self._log_up += np.log1p(up * centred)
        self._log_down += np.log1p(-down * centred)
        # max(K⁺, K⁻) / 2 ≥ 1/α; the hedge splits the wealth evenly between the two bettors.
        hedged = np.maximum(self._log_up, self._log_down) - math.log(2.0)
        self._rejected |= impossible | (hedged >= self._log_threshold)
        self._sum += x
        self._estimate = (0.5 + self._sum) / (t + 1)
        self._squares += (x - self._estimate) ** 2
        self.seen = t

    def _bet(self, t: int) -> FloatArray:
        """The predictable plug-in bet λ_t (WSR 2023, eq. 26), from the values before t only."""
        variance = (0.25 + self._squares) / t
        return np.asarray(np.sqrt(2.0 * math.log(2.0 / self.alpha) / (variance * t * math.log(1.0 + t))))

    @property
    def bounds(self) -> tuple[FloatArray, FloatArray]:
        """(low, high) of each population's mean Δ, in [-1, 1]."""
        alive = ~self._rejected
        any_alive = alive.any(axis=1)
        grid = self._means[None, :]
        low = np.where(alive, grid, np.inf).min(axis=1) - self._step
        high = np.where(alive, grid, -np.inf).max(axis=1) + self._step
        # What the population's mean can still be: seen values plus unseen ones anywhere in [0, 1].
        floor = self._sum / self.population
        ceiling = (self._sum + self.population - self.seen) / self.population
        low, high = np.maximum(low, floor), np.minimum(high, ceiling)
        # No survivor, or none the population can still reach, can only come from a miss: fall back to the
        # logical bounds rather than an empty set, so the width is still 0 once every document is in.
        missed = ~any_alive | (low > high)
        low, high = np.where(missed, floor, low), np.where(missed, ceiling, high)
        return 2.0 * low - 1.0, 2.0 * high - 1.0


def gain_bounds(low: float, high: float, higher_is_better: bool) -> tuple[float, float]:
    """The gain's interval from Δ's: mirrored when lower is better."""
    return (low, high) if higher_is_better else (-high, -low)


def early_stop_record(comp: TaskComparison) -> dict[str, Any] | None:
    """The early stop's record of a task that stopped early (its verdicts decide its gates), else None."""
    record = comp.extra.get(EARLY_STOP)
    return record if isinstance(record, dict) and record.get("stopped_early") else None


def early_stop_line(comp: TaskComparison) -> str | None:
    """ "decided after N of M documents (error ≤ α)" for a task that stopped early, else None."""
    record = early_stop_record(comp)
    if record is None:
        return None
    return (f"decided after {record['evaluated']} of {record['documents']} documents "
            f"(error ≤ {record['error_rate']:g})")


def early_stop_lines(comparisons: Mapping[str, TaskComparison]) -> list[str]:
    """The terminal summary's line per task that stopped early."""
    lines = ((task, early_stop_line(comp)) for task, comp in comparisons.items())
    return [f"early stop: {task} {line}" for task, line in lines if line is not None]


def sequence_interval(comp: TaskComparison) -> tuple[float, float] | None:
    """Δ's interval (in the comparison's unit) from the sequence of a task that stopped early, else None."""
    record = early_stop_record(comp)
    if record is None or not record.get("chunks"):
        return None
    last = record["chunks"][-1]
    return last["delta_low"] * comp.scale, last["delta_high"] * comp.scale


def sequence_gain_interval(comp: TaskComparison) -> tuple[float, float] | None:
    """The gain's interval (in the comparison's unit) from the sequence of a task that stopped early, else None."""
    interval = sequence_interval(comp)
    return None if interval is None else gain_bounds(*interval, comp.higher_is_better)
