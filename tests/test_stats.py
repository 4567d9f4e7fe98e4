"""Paired statistics and lm-eval samples parsing, checked against scipy and hand computations."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_finetune_bench.errors import BenchError
from pytest_finetune_bench.stats import (
    TEST_MCNEMAR,
    TEST_SIGN_FLIP,
    PairedStats,
    SampleRecord,
    _bootstrap_means_by_counts,
    _bootstrap_means_by_index,
    load_samples,
    mcnemar_exact_p,
    paired_stats,
    paired_values,
    sign_flip_p,
    split_metric_key,
)

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
# Bootstrap interval
# --------------------------------------------------------------------------------------------


def test_bootstrap_interval_covers_the_true_difference() -> None:
    truth = 0.1
    covered = 0
    for seed in range(100):
        data = np.random.default_rng(10_000 + seed)
        # Correlated pairs, as with two models on the same documents: the fine-tuned model keeps most
        # of the base's answers and fixes some; P(base) = 0.5, P(ft) = 0.6.
        base = data.random(200) < 0.5
        ft = np.where(base, data.random(200) < 0.9, data.random(200) < 0.3)
        stats = paired_stats(base.astype(float).tolist(), ft.astype(float).tolist(), n_boot=2000, seed=seed)
        assert stats.ci_low is not None and stats.ci_high is not None
        assert stats.ci_low <= stats.delta <= stats.ci_high  # type: ignore[operator]
        covered += stats.ci_low <= truth <= stats.ci_high
    assert covered >= 90


def test_bootstrap_interval_covers_a_continuous_difference() -> None:
    covered = 0
    for seed in range(60):
        data = np.random.default_rng(20_000 + seed)
        base = data.random(150)
        ft = np.clip(base + data.normal(0.05, 0.2, 150), -10, 10)
        # The truth for this sample's population: E[noise] = 0.05.
        stats = paired_stats(base.tolist(), ft.tolist(), n_boot=1000, seed=seed, n_perm=500)
        assert stats.test == TEST_SIGN_FLIP
        assert stats.ci_low is not None and stats.ci_high is not None
        covered += stats.ci_low <= 0.05 <= stats.ci_high
    assert covered >= 52


def test_bootstrap_interval_is_reproducible_and_depends_on_the_seed() -> None:
    data = np.random.default_rng(3)
    base = (data.random(300) < 0.4).astype(float).tolist()
    ft = (data.random(300) < 0.5).astype(float).tolist()
    first = paired_stats(base, ft, seed=7)
    again = paired_stats(base, ft, seed=7)
    other = paired_stats(base, ft, seed=8)
    assert first == again
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)
    # The point estimate and the exact test do not depend on the seed.
    assert (first.delta, first.p_value) == (other.delta, other.p_value)


def test_bootstrap_by_counts_matches_bootstrap_by_index() -> None:
    # Both resample documents with replacement; counting per distinct value is only faster.
    diffs = np.array([-1.0] * 30 + [0.0] * 120 + [1.0] * 50 + [0.5] * 10)
    values, counts = np.unique(diffs, return_counts=True)
    by_counts = _bootstrap_means_by_counts(values, counts, 40_000, np.random.default_rng(1))
    by_index = _bootstrap_means_by_index(diffs, 40_000, np.random.default_rng(2))
    for q in (0.025, 0.5, 0.975):
        assert np.quantile(by_counts, q) == pytest.approx(np.quantile(by_index, q), abs=0.004)
    assert by_counts.std() == pytest.approx(by_index.std(), rel=0.03)


def test_interval_narrows_with_confidence() -> None:
    data = np.random.default_rng(5)
    base = data.random(100).tolist()
    ft = (data.random(100) * 1.1).tolist()
    wide = paired_stats(base, ft, confidence=0.99)
    narrow = paired_stats(base, ft, confidence=0.8)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high  # type: ignore[operator]


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
    assert stats.summary() == "no documents scored by both models"
    json.dumps(stats.to_json())


def test_one_document_does_not_crash() -> None:
    stats = paired_stats([0.0], [1.0])
    assert (stats.delta, stats.ci_low, stats.ci_high, stats.p_value) == (1.0, 1.0, 1.0, 1.0)


def test_identical_models_show_no_change() -> None:
    values = [1.0, 0.0, 1.0, 1.0, 0.0] * 20
    stats = paired_stats(values, values)
    assert (stats.delta, stats.ci_low, stats.ci_high, stats.p_value) == (0.0, 0.0, 0.0, 1.0)
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


def test_confident_regression_needs_the_whole_interval_below_the_allowed_drop() -> None:
    assert make_stats(-0.08, -0.03).confident_regression()
    assert make_stats(-0.08, -0.03).confident_regression(max_drop=0.02)
    assert not make_stats(-0.08, -0.03).confident_regression(max_drop=0.03)
    assert not make_stats(-0.08, 0.01).confident_regression()


def test_significant_compares_the_p_value_with_alpha() -> None:
    assert make_stats(0.0, 0.1, p_value=0.01).significant()
    assert not make_stats(0.0, 0.1, p_value=0.05).significant(alpha=0.05)


def test_summary_and_json() -> None:
    stats = PairedStats(541, 0.032, -0.01, 0.075, 0.95, 0.12, TEST_MCNEMAR, 20, 12, 509)
    assert stats.summary() == "+3.2 pts [-1.0, +7.5] 95% CI, p=0.12 (exact McNemar), n=541, 20↑ 12↓"
    data = json.loads(json.dumps(stats.to_json()))
    assert data["ci_low"] == -0.01 and data["test"] == "exact McNemar" and data["regressed"] == 12


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
