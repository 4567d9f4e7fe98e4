"""The product's front door on real parts: real lm-eval, a real model, offline task data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import ModelCard

from pytest_finetune_bench.run.watchdog import format_duration
from tests.bench_sessions import LIMIT, Session, assert_scores_equal_the_lm_eval_cli, pytest_html_extras, run_bench
from tests.cli_runs import run_cli
from tests.conftest import FAST_ARGS, read_json
from tests.data_check import lm_eval_config
from tests.fake_sessions import own_cache_dir
from tests.test_benchmark_file import docs_example


@pytest.fixture(scope="module")
def regressed(tmp_path_factory: pytest.TempPathFactory, regressed_outputs: Path, demo_data: Path) -> Session:
    # A cache folder of its own: the progress checks below need both models to generate, whatever ran before.
    cwd = tmp_path_factory.mktemp("regressed")
    return run_bench(cwd, regressed_outputs, demo_data, *_own_cache(cwd), f"--html={cwd / 'pytest-html.html'}",
                     "--self-contained-html")


def _own_cache(cwd: Path) -> tuple[str, str]:
    """The cache folder of the session run in `cwd` (the sessions that reuse its base pass the same)."""
    return "--bench-cache-dir", str(own_cache_dir(cwd / "cache"))


def test_regression_fails_both_gates_with_scores_in_message(regressed: Session) -> None:
    comp = regressed.summary["comparison"]["ifeval"]
    # The fixture model is the base plus heavy noise; if this fails the fixture no longer regresses.
    assert comp["delta"] < -0.05, comp
    out = regressed.proc.stdout
    assert regressed.proc.returncode == 1, out
    base, ft = comp["base_accuracy"] * 100, comp["finetuned_accuracy"] * 100
    assert f"ifeval regressed by more than 5.00 points: base {base:.2f}% → fine-tuned {ft:.2f}%" in out
    assert f"Δ {comp['delta'] * 100:+.2f} points ({comp['delta_percent']:+.1f}%)" in out
    assert "finetune-bench::ifeval::no_regression - ifeval r" in out
    assert "finetune-bench::ifeval::improves - ifeval did no" in out


def test_the_failed_gates_rows_in_the_pytest_html_report_hold_the_comparison(regressed: Session) -> None:
    comp = regressed.summary["comparison"]["ifeval"]
    scores = f"<td>{comp['base_accuracy'] * 100:.2f}%</td><td>{comp['finetuned_accuracy'] * 100:.2f}%</td>"
    extras = pytest_html_extras(regressed.output.parent / "pytest-html.html")
    for gate in ("improves", "no_regression"):
        (found,) = [e for test_id, e in extras.items() if test_id.endswith(f"ifeval::{gate}")]
        assert [e["format_type"] for e in found] == ["html", "image"], found
        assert scores in found[0]["content"], found[0]["content"]


def test_summary_table_and_progress_reach_the_terminal(regressed: Session) -> None:
    out = regressed.proc.stdout
    assert "[bench] base: ifeval 10/10 samples (100%)" in out
    # The data is loaded, and the workload said, before the model.
    workload = out.index("[bench] base: ifeval 10 docs x up to 32 new tokens")
    assert out.index("[bench] base: loading the data of ifeval") < workload < out.index("[bench] base: loading model")
    assert "[bench] fine-tuned: ifeval 10/10 samples (100%)" in out
    comp = regressed.summary["comparison"]["ifeval"]
    row = next(line for line in out.splitlines() if line.startswith("Instruction-Following (IFEval)"))
    assert f"{comp['base_accuracy'] * 100:.2f}%" in row and "↘" in row
    for label in ("Strict Prompt", "Strict Inst", "Loose Prompt", "Loose Inst"):
        assert any(line.startswith(label) for line in out.splitlines())


def test_benchmark_json_has_the_known_keys_and_lm_eval_results(regressed: Session) -> None:
    summary = regressed.summary
    for key in ("model_name", "model_path", "base_model_name", "timestamp", "base_model", "fine_tuned_model",
                "comparison", "reproduce", "status"):
        assert key in summary
    assert summary["status"] == "complete"
    for side in ("base_model", "fine_tuned_model"):
        run = summary[side]
        assert {"results", "benchmark_dir", "timestamp"} <= set(run)
        lm_eval_file = read_json(Path(run["results_file"]))
        assert run["results"]["ifeval"] == lm_eval_file["results"]["ifeval"]  # copied unchanged
    comp = summary["comparison"]["ifeval"]
    assert comp["metric"] == "prompt_level_strict_acc,none"
    assert set(comp) >= {"metric", "base_accuracy", "finetuned_accuracy", "delta", "delta_percent"}
    repro = summary["reproduce"]
    assert repro["lm_eval_version"] == "0.4.13"
    assert repro["gen_kwargs"] == "max_gen_toks=32" and repro["limit"] == 10
    assert repro["seeds"] == {"random": 0, "numpy": 1234, "torch": 1234, "fewshot": 1234}
    assert repro["device"] == "cpu" and repro["backend"] == "hf" and repro["dtype"] == "float32"
    assert repro["apply_chat_template"] is True
    # Each gate's decision, with the threshold it was held to in the metric's own unit (defaults: 2 and 5 points).
    decided = {"outcome": "failed", "rule": "point", "decided_by": "point estimate", "documents": 10, "level": None}
    assert summary["gates"] == {"ifeval::improves": {**decided, "threshold": 0.02},
                                "ifeval::no_regression": {**decided, "threshold": 0.05}}


def test_the_model_card_metadata_names_lm_evals_dataset_and_the_sessions_score(regressed: Session,
                                                                                tmp_path: Path) -> None:
    summary = regressed.summary
    config = lm_eval_config("ifeval/ifeval.yaml")
    results_file = read_json(Path(summary["fine_tuned_model"]["results_file"]))
    # The run read the offline copy, so lm-eval's own record names the local builder, not the dataset.
    assert results_file["configs"]["ifeval"]["dataset_path"] != config["dataset_path"]
    assert summary["task_data"]["ifeval"]["dataset_path"] == config["dataset_path"]
    done = run_cli("readme", str(tmp_path), "--output", str(regressed.output))
    assert done.returncode == 0, done.stderr
    card = ModelCard.load(tmp_path / "README.md")
    found = {(r.task_name, r.metric_type): (r.task_type, r.dataset_type, r.dataset_split, r.metric_value)
             for r in card.data.eval_results}
    score = results_file["results"]["ifeval"]["prompt_level_strict_acc,none"]  # lm-eval's own number and unit
    assert found == {("ifeval", "prompt_level_strict_acc"): ("text-generation", config["dataset_path"],
                                                             config["test_split"], score)}
    assert score == summary["comparison"]["ifeval"]["finetuned_accuracy"]
    assert card.data.base_model is None  # the base is a local folder, which names nothing on the Hub
    before = (tmp_path / "README.md").read_bytes()
    assert run_cli("readme", str(tmp_path), "--output", str(regressed.output)).returncode == 0
    assert (tmp_path / "README.md").read_bytes() == before


def test_the_docs_benchmark_json_example_has_the_shape_of_a_real_one(regressed: Session) -> None:
    assert _shape(docs_example()) == _shape(regressed.summary)


def _shape(value: Any) -> Any:
    """`value`'s keys, recursively, with every leaf reduced to whether it is null."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(item) for item in value]
    return value is None


def test_results_land_in_the_layout_users_know(regressed: Session) -> None:
    out = regressed.output
    assert len(list((out / "base" / "lm-eval").glob("results_*.json"))) == 1
    assert len(list((out / "base" / "lm-eval").glob("samples_ifeval_*.jsonl"))) == 1
    runs = list((out / "fine-tuned").iterdir())
    assert len(runs) == 1 and runs[0].name[:4].isdigit()
    assert list((runs[0] / "lm-eval").glob("results_*.json"))
    assert list((runs[0] / "lm-eval").glob("samples_ifeval_*.jsonl"))
    assert read_json(runs[0] / "benchmark.json") == regressed.summary
    flips = [json.loads(line) for line in (runs[0] / "flips_ifeval.jsonl").read_text().splitlines()]
    counted = regressed.summary["comparison"]["ifeval"]["flips"]
    assert counted["regressed"] == sum(f["direction"] == "regressed" for f in flips) >= 1
    assert counted["improved"] == sum(f["direction"] == "improved" for f in flips)


def test_both_runs_are_timed_and_the_next_plan_turns_documents_into_time(regressed: Session,
                                                                          regressed_outputs: Path,
                                                                          demo_data: Path) -> None:
    summary = regressed.summary
    for side in ("base_model", "fine_tuned_model"):
        assert summary[side]["seconds"] > 0 and summary[side]["generated"] > 0, summary[side]
    cwd = regressed.output.parent
    planned = run_bench(cwd, regressed_outputs, demo_data, *_own_cache(cwd), "--bench-plan",
                        "--bench-gate-rule=proven")
    assert planned.proc.returncode == 0, planned.proc.stdout
    ft = summary["fine_tuned_model"]
    documents = sum(task["done"] for task in ft["samples"].values())
    pace = (f"time: per model, at the earlier fine-tuned run's pace on this machine ({documents} documents in "
            f"{format_duration(ft['seconds'])}, its tasks together")
    assert pace in planned.proc.stdout, planned.proc.stdout
    needs = [line for line in planned.proc.stdout.splitlines() if line.startswith("documents ifeval::")]
    # A gate the simulation cannot decide within its cap has no number of documents to time.
    assert len(needs) == 2 and all((", about " in line) != ("needs more than" in line) for line in needs), needs


def test_delta_comes_with_paired_statistics(regressed: Session) -> None:
    comp = regressed.summary["comparison"]["ifeval"]
    stats = comp["stats"]
    assert stats["n"] == 10 and stats["test"] == "exact McNemar"
    assert stats["ci_low"] <= comp["delta"] <= stats["ci_high"]
    assert 0 < stats["p_value"] <= 1
    header = next(line for line in regressed.proc.stdout.splitlines() if line.startswith("Benchmark"))
    assert "95% CI (points)" in header and "Flips" in header
    assert "pass→fail" in regressed.proc.stdout  # the regression gate lists flipped samples


@pytest.mark.parametrize("side", ["base_model", "fine_tuned_model"])
def test_scores_equal_the_lm_eval_cli(regressed: Session, side: str, tmp_path: Path) -> None:
    """The recorded reproduce command, run with the real `lm_eval` CLI, gives the same scores."""
    assert_scores_equal_the_lm_eval_cli(regressed.summary, side, tmp_path)


def test_unchanged_model_passes_gates_and_user_tests_get_fixtures(
    pytester: pytest.Pytester, unchanged_outputs: Path, demo_data: Path
) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.bench(suite="test")
        def test_delta_is_exact(bench_result, base_score, bench_model, bench_backend):
            assert bench_model.variant == "merged_16bit"
            assert bench_backend.name == "hf"
            assert base_score.results["results"]["ifeval"]["sample_len"] == 10
            assert bench_result.delta("ifeval") == 0.0
            bench_result.assert_no_regression("ifeval", max_drop=0.0)

        @pytest.mark.bench(suite="core")
        def test_needs_core(bench_result):
            raise AssertionError("must be skipped: the run is --bench-suite test")

        def test_helper_message(bench_result):
            bench_result.assert_improves("ifeval", by=0.05)

        def test_no_change_on_ten_prompts_is_not_proven_harmless(bench_result):
            bench_result.assert_no_regression("ifeval", max_drop=0.05, rule="interval")
            bench_result.assert_no_regression("ifeval", max_drop=0.05, rule="proven")
        """
    )
    out = pytester.path / "bench-out"
    result = pytester.runpytest_subprocess(
        "--bench-model", str(unchanged_outputs), "--bench-data-dir", str(demo_data), "--bench-output", str(out),
        "--bench-min-gain", "0", *LIMIT, *FAST_ARGS, "-rA",
    )
    result.assert_outcomes(passed=3, failed=2, skipped=1)
    for pattern in (
        "*ifeval regressed by more than 5.00 points with 95% confidence (proven): *Δ +0.00 points*",
        "*PASSED *finetune-bench::ifeval::improves*",
        "*PASSED *finetune-bench::ifeval::no_regression*",
        "*ifeval did not improve by +5.00 points: base * → fine-tuned *: Δ +0.00 points (+0.0%)*",
        "Instruction-Following (IFEval)*→ No change*",
    ):
        result.stdout.fnmatch_lines([pattern])
    assert json.loads((out / "benchmark.json").read_text())["comparison"]["ifeval"]["delta"] == 0.0


def test_second_session_reuses_the_base_and_a_changed_setting_recomputes_it(
    regressed: Session, regressed_outputs: Path, demo_data: Path, tmp_path: Path
) -> None:
    (tmp_path / "again").mkdir()
    cache = _own_cache(regressed.output.parent)
    again = run_bench(tmp_path / "again", regressed_outputs, demo_data, *cache)
    assert again.summary["base_model"]["from_cache"] is True
    assert again.summary["base_model"]["results"] == regressed.summary["base_model"]["results"]
    assert "[bench] base: scores from cache, computed" in again.proc.stdout
    assert "[bench] base: loading model" not in again.proc.stdout
    assert list((again.output / "base" / "lm-eval").glob("results_*.json"))  # the copy users know

    (tmp_path / "changed").mkdir()
    # Shorter answers: the cheapest change of a setting that both runs must recompute.
    changed = run_bench(tmp_path / "changed", regressed_outputs, demo_data, *cache, "--bench-gen-kwargs",
                        "max_gen_toks=8")
    assert changed.summary["base_model"]["from_cache"] is False
    assert changed.summary["base_model"]["generated"] == 10
    assert changed.summary["reproduce"]["gen_kwargs"] == "max_gen_toks=8"


def test_compare_to_an_earlier_run_and_refuse_other_settings(
    regressed: Session, unchanged_outputs: Path, demo_data: Path, tmp_path: Path
) -> None:
    reference = regressed.output / "benchmark.json"
    (tmp_path / "mismatch").mkdir()
    refused = run_bench(tmp_path / "mismatch", unchanged_outputs, demo_data, "--bench-compare-to", str(reference),
                        "--bench-limit", "5")
    assert "was measured under other settings (limit: 10 → 5)" in refused.proc.stdout
    assert refused.proc.returncode == 1

    (tmp_path / "ok").mkdir()
    session = run_bench(tmp_path / "ok", unchanged_outputs, demo_data, "--bench-compare-to", str(reference))
    comp = session.summary["comparison"]["ifeval"]
    assert comp["base_accuracy"] == regressed.summary["comparison"]["ifeval"]["finetuned_accuracy"]
    assert "[bench] reference:" in session.proc.stdout
    assert "[bench] base: loading model" not in session.proc.stdout


def test_full_suite_wiring_one_row_per_task(unchanged_outputs: Path, demo_data: Path, tmp_path: Path) -> None:
    """Core + MMLU on one offline row each: each task's headline metric, MMLU as one aggregate row.

    The gates are statistical (interval, and proven for MMLU): five gates in one Holm family.
    """
    session = run_bench(tmp_path, unchanged_outputs, demo_data, "--bench-suite", "full", "--bench-limit", "1",
                        "--bench-gate-rule", "interval", "--bench-gate-rule", "mmlu=proven")
    comparison = session.summary["comparison"]
    assert list(comparison) == ["ifeval", "gsm8k", "hellaswag", "mmlu"]
    assert comparison["gsm8k"]["metric"] == "exact_match,strict-match"
    assert comparison["hellaswag"]["metric"] == "acc_norm,none"
    assert comparison["mmlu"]["metric"] == "acc,none"
    assert comparison["mmlu"]["stats"]["n"] == 57  # the group's subjects pooled, one question each
    rows = [line for line in session.proc.stdout.splitlines() if line.startswith(("Math", "Commonsense", "Knowledge"))]
    assert len(rows) == 3, session.proc.stdout
    assert session.proc.returncode == 1  # ifeval cannot improve on an unchanged model
    assert "mmlu_anatomy" not in "\n".join(rows)
    # No interval claims anything on an unchanged model, so Holm decides every gate at α/5: 99%.
    gates, out = session.summary["gates"], session.proc.stdout
    assert session.summary["family"]["statement"] == "family-wise error ≤ 0.05 over 5 gates (Holm)"
    assert "gates: family-wise error ≤ 0.05 over 5 gates (Holm)" in out
    assert {name: (g["rule"], g["outcome"], round(g["level"], 6)) for name, g in gates.items()} == {
        "ifeval::improves": ("interval", "failed", 0.99),
        "ifeval::no_regression": ("interval", "passed", 0.99),
        "gsm8k::no_regression": ("interval", "passed", 0.99),
        "hellaswag::no_regression": ("interval", "passed", 0.99),
        # 57 unchanged questions cannot prove a loss of less than 5 points at 99%: proven fails, interval passes.
        "mmlu::no_regression": ("proven", "failed", 0.99),
    }, out
    assert "no_regression ≥ -5.00 (proven at 99%): failed" in out
