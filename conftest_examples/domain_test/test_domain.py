"""Domain tests written with the plugin's fixtures: what this fine-tune must keep, beyond the built-in gates.

Every test here is skipped without --bench-model, and a test marked for tasks that the run does not
cover (e.g. suite="core" during a --bench-suite quick run) is skipped with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_finetune_bench.backends import Backend
    from pytest_finetune_bench.compare.bench_result import BenchResult
    from pytest_finetune_bench.core.records import RunRecord
    from pytest_finetune_bench.plan.models import ModelLocation

IFEVAL_LOOSE = "prompt_level_loose_acc,none"


@pytest.mark.bench(tasks="ifeval")
def test_no_json_prompt_lost(bench_result: BenchResult) -> None:
    """The product parses the model's answers as JSON: no IFEval prompt asking for JSON may go from pass to fail."""
    lost = [flip for flip in bench_result.analyses["ifeval"].regressions if "json" in flip.prompt.lower()]
    assert not lost, "JSON prompts the base passed and the fine-tune fails:\n" + "\n".join(
        f"doc {flip.doc_id}: {flip.prompt[:100]}\n  fine-tuned: {flip.finetuned_response[:100]}" for flip in lost
    )


@pytest.mark.bench(tasks="ifeval")
def test_instruction_following_not_confidently_worse(bench_result: BenchResult) -> None:
    """Fail only on evidence: the whole 90% paired confidence interval of the IFEval delta below zero."""
    stats = bench_result.stats("ifeval", confidence=0.9)
    assert not stats.confident_regression(max_drop=0.0), stats.summary()


@pytest.mark.bench(tasks="ifeval")
def test_loose_ifeval_holds(bench_result: BenchResult, base_score: RunRecord) -> None:
    """IFEval's loose prompt-level score (it forgives formatting slips) may drop at most 5 points."""
    base = base_score.results["results"]["ifeval"][IFEVAL_LOOSE]
    tuned = bench_result.finetuned.results["results"]["ifeval"][IFEVAL_LOOSE]
    assert tuned >= base - 0.05, f"{IFEVAL_LOOSE}: base {base:.2%} → fine-tuned {tuned:.2%}"


@pytest.mark.bench(suite="core")
def test_math_within_three_points(bench_result: BenchResult) -> None:
    """GSM8K, when the run covers it: at most 3 points lost (fractions: 0.03 = 3 points)."""
    bench_result.assert_no_regression("gsm8k", max_drop=0.03)


def test_sixteen_bit_merge_is_evaluated(bench_model: ModelLocation, bench_backend: Backend) -> None:
    """The HF backend must evaluate the 16-bit merge: scores of the 4-bit one are not what we ship."""
    if bench_backend.name != "hf":
        pytest.skip(f"the {bench_backend.name} backend serves a GGUF export")
    assert bench_model.variant != "merged_4bit", f"evaluating {bench_model.hf_path}"
