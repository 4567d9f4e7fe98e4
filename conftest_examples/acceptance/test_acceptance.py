"""Acceptance checks of one experiment that the built-in gates do not express.

The reference side is the base model, or the previous experiment with --bench-compare-to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_finetune_bench.compare.bench_result import BenchResult

# Prompts the reference answered correctly that this experiment may get wrong.
MAX_LOST_PROMPTS = 2


@pytest.mark.bench(tasks="ifeval")
def test_few_ifeval_prompts_lost(bench_result: BenchResult) -> None:
    """A gain on average must not hide a handful of prompts the reference passed and this experiment fails."""
    lost = bench_result.analyses["ifeval"].regressions
    shown = "\n".join(f"doc {flip.doc_id}: {flip.prompt[:100]}" for flip in lost[:5])
    assert len(lost) <= MAX_LOST_PROMPTS, f"{len(lost)} IFEval prompts went from pass to fail:\n{shown}"


@pytest.mark.bench(suite="core")
def test_gsm8k_gain_is_significant(bench_result: BenchResult) -> None:
    """The GSM8K change must be more than noise: the paired test (exact McNemar) at the 10% level."""
    stats = bench_result.stats("gsm8k")
    assert stats.delta is not None and stats.delta > 0 and stats.significant(alpha=0.1), stats.summary()
