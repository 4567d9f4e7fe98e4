"""Seeded simulation of early-stopped gates over finite populations of paired pass/fail documents.

Shared by tests/test_sequential.py and bench/early_stop_sim.py. A population is N documents of
which `improved` went fail→pass (Δ = +1), `regressed` pass→fail (Δ = −1) and the rest did not
change, so its true Δ is exact. Each replicate evaluates the same population in its own random
order, looks at the evidence after every chunk and stops at the first look that settles the gate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pytest_finetune_bench.compare.sequential import FinitePopulationSequence
from pytest_finetune_bench.plan.gates import FAILED, PASSED, Gate

METHOD_SEQUENCE = "confidence sequence"
METHOD_BOOTSTRAP = "fixed-n percentile bootstrap"
_BOOTSTRAP_RESAMPLES = 400


@dataclass(frozen=True)
class Scenario:
    """One gate on one population: `improved` and `regressed` of `documents`."""

    name: str
    rule: Gate
    documents: int
    improved: int
    regressed: int

    @property
    def delta(self) -> float:
        return (self.improved - self.regressed) / self.documents

    @property
    def correct(self) -> str:
        return self.rule.correct(self.delta)


@dataclass(frozen=True)
class Outcome:
    """What `replicates` early-stopped runs of a scenario decided, and after how many documents."""

    scenario: Scenario
    method: str
    verdicts: npt.NDArray[np.str_]  # PASSED, FAILED or "" (undecided to the end: the full run decides)
    stopped_at: npt.NDArray[np.int_]  # documents evaluated when the run stopped

    @property
    def error_rate(self) -> float:
        """Runs that stopped on the wrong verdict, of all runs."""
        decided = self.verdicts != ""
        return float(np.mean(decided & (self.verdicts != self.scenario.correct)))

    @property
    def decided_rate(self) -> float:
        return float(np.mean(self.verdicts != ""))

    def decided_by(self, documents: int) -> float:
        """Share of runs that settled with at most `documents` evaluated."""
        return float(np.mean((self.verdicts != "") & (self.stopped_at <= documents)))

    @property
    def median_stop(self) -> float:
        return float(np.median(self.stopped_at))


def orders(scenario: Scenario, replicates: int, seed: int) -> npt.NDArray[np.float64]:
    """(replicates, N): the population's Δ values, each row in its own random order."""
    s = scenario
    population = np.array([1.0] * s.improved + [-1.0] * s.regressed + [0.0] * (s.documents - s.improved - s.regressed))
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(population, (replicates, 1)), axis=1)


def simulate(scenario: Scenario, method: str, *, replicates: int, chunk: int, alpha: float, seed: int,
             grid: int = 401) -> Outcome:
    """Run every replicate, looking after each chunk, with the confidence sequence or the bootstrap."""
    values = orders(scenario, replicates, seed)
    verdicts = np.full(replicates, "", dtype=object)
    stopped = np.full(replicates, scenario.documents)
    sequence = FinitePopulationSequence(scenario.documents, alpha, batch=replicates, grid=grid)
    rng = np.random.default_rng(seed + 1)
    for end in range(chunk, scenario.documents + chunk, chunk):
        end = min(end, scenario.documents)
        if method == METHOD_SEQUENCE:
            sequence.update(values[:, sequence.seen:end])
            low, high = sequence.bounds
        else:
            low, high = _bootstrap_bounds(values[:, :end], alpha, rng)
        passed, failed = scenario.rule.settled(low, high)
        fresh = verdicts == ""
        verdicts[fresh & passed] = PASSED
        verdicts[fresh & failed & ~passed] = FAILED
        stopped[fresh & (passed | failed)] = end
        if not (verdicts == "").any():
            break
    return Outcome(scenario, method, verdicts.astype(str), stopped)


def _bootstrap_bounds(seen: npt.NDArray[np.float64], alpha: float,
                      rng: np.random.Generator) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The paired percentile bootstrap interval of each row's mean, as a one-look analysis would compute it.

    Δ takes three values, so resampling the documents is resampling the counts of each value.
    """
    n = seen.shape[1]
    shares = np.stack([(seen == 1.0).mean(axis=1), (seen == -1.0).mean(axis=1), (seen == 0.0).mean(axis=1)], axis=1)
    counts = rng.multinomial(n, shares, size=(_BOOTSTRAP_RESAMPLES, seen.shape[0]))
    means = (counts[..., 0] - counts[..., 1]) / n
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2], axis=0)
    return np.asarray(low), np.asarray(high)
