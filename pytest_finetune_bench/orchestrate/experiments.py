"""Every experiment of one pytest session: a BenchSession per plan, one base run shared by all (no pytest here).

`pytest --bench-model 'outputs/*'` makes one plan per fine-tune (and per backend with
`--bench-backend hf,ollama`); experiments on the same base under the same settings share one base
evaluation, and the session ends with their ranking in benchmarks-summary.json.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pytest_finetune_bench.orchestrate.session import BenchSession
from pytest_finetune_bench.plan import Plan
from pytest_finetune_bench.report.ranking import RANKING_NAME, build_ranking
from pytest_finetune_bench.store.base_cache import BaseCache
from pytest_finetune_bench.store.benchmark_file import BenchmarkSummary
from pytest_finetune_bench.store.summaries import publish_summary

Say = Callable[[str], None]


class Experiments:
    """The sessions of the experiments, by label (the --bench-model spelling, @backend with several backends)."""

    def __init__(self, plans: Sequence[Plan], say: Say, cwd: Path) -> None:
        # One base cache for them all (the plans share the options, so the cache folder).
        bases = BaseCache(plans[0].options.cache_root)
        self.sessions = {plan.label: BenchSession(plan, say, bases) for plan in plans}
        self.cwd = cwd
        self.say = say

    def __iter__(self) -> Iterator[BenchSession]:
        return iter(self.sessions.values())

    @property
    def several(self) -> bool:
        """More than one experiment: gates are named by experiment and a ranking is written."""
        return len(self.sessions) > 1

    @property
    def first(self) -> BenchSession:
        return next(iter(self.sessions.values()))

    @property
    def active(self) -> bool:
        return any(session.active for session in self)

    def ranking_dir(self) -> Path:
        """Next to the experiments: the folder that holds them all (the working directory for Hub ids)."""
        roots = [str(s.plan.location.root.parent) for s in self if s.plan.location.root is not None]
        if len(roots) < len(self.sessions) or not roots:
            return self.cwd
        return Path(os.path.commonpath(roots))


def write_ranking(folder: Path, summaries: Sequence[BenchmarkSummary]) -> tuple[Path, dict[str, Any]]:
    """benchmarks-summary.json in `folder`; an incomplete ranking never replaces a complete one."""
    ranking = build_ranking(summaries)
    return publish_summary(folder, None, ranking, name=RANKING_NAME), ranking
