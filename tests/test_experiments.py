"""Several experiments per session: expansion, ids, one base run, per-model files, ranking, history, one side only."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.cli import main
from pytest_finetune_bench.plan.models import expand_models
from pytest_finetune_bench.report.history import history_rows, summary_files
from pytest_finetune_bench.report.ranking import (
    build_ranking,
    differing_facts,
    pairs_to_compare,
    ranking_lines,
    reversed_pair,
)
from pytest_finetune_bench.store.benchmark_file import BenchmarkSummary, GateRecord
from tests.conftest import FAST_ARGS, read_json
from tests.fake_sessions import bench_args, own_cache_dir, use_fake_lm
from tests.llama_server import LlamaServer
from tests.schema_check import produced_summaries, validate, validate_file

LEARNING_RATES = {"exp-a": 1e-4, "exp-b": 2e-4, "exp-c": 2e-4}


def make_experiments(root: Path, names: tuple[str, ...] = tuple(LEARNING_RATES)) -> tuple[Path, Path]:
    """root/outputs/<name>/ for each name, in the pipeline layout, all fine-tunes of one base root/base."""
    base = root / "base"
    base.mkdir(parents=True)
    (base / "config.json").write_text(json.dumps({"name": "base"}))
    for name in names:
        model = root / "outputs" / name
        (model / "merged_16bit").mkdir(parents=True)
        (model / "merged_16bit" / "config.json").write_text(json.dumps({"name": name}))
        write_lora_facts(model, base, LEARNING_RATES.get(name, 1e-4))
    return root / "outputs", base


def write_lora_facts(model: Path, base: Path, learning_rate: float) -> None:
    (model / "lora").mkdir(exist_ok=True)
    (model / "lora" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "r": 16}))
    (model / "lora" / "training_metrics.json").write_text(
        json.dumps({"learning_rate": learning_rate, "dataset": "alpaca"}))


# --------------------------------------------------------------------------- which models
def test_a_folder_of_experiments_and_a_glob_name_the_same_models(tmp_path: Path) -> None:
    outputs, _ = make_experiments(tmp_path)
    (outputs / "notes").mkdir()  # neither an experiment nor a model: ignored
    expected = ("outputs/exp-a", "outputs/exp-b", "outputs/exp-c")
    assert expand_models(("outputs",), tmp_path) == expected
    assert expand_models(("outputs/*",), tmp_path) == expected
    # Named twice (a path and a glob): benchmarked once.
    assert expand_models(("outputs/exp-b", "outputs/exp-*"), tmp_path) == ("outputs/exp-b", "outputs/exp-a",
                                                                           "outputs/exp-c")
    assert expand_models(("outputs/exp-a",), tmp_path) == ("outputs/exp-a",)
    assert expand_models(("org/model",), tmp_path) == ("org/model",)  # a Hub id stays as it is


def test_a_glob_that_matches_no_model_says_so(tmp_path: Path) -> None:
    (tmp_path / "outputs" / "empty").mkdir(parents=True)
    with pytest.raises(BenchError, match=r"--bench-model outputs/\* matches no model folder"):
        expand_models(("outputs/*",), tmp_path)


def test_gate_ids_name_each_experiment(pytester: pytest.Pytester) -> None:
    make_experiments(pytester.path)
    pytester.makepyfile(test_user="def test_mine(bench_model):\n    pass\n")
    result = pytester.runpytest("--bench-model", "outputs/*", "--collect-only", "-q", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines([
        "test_user.py::test_mine[[]outputs/exp-a[]]",
        "test_user.py::test_mine[[]outputs/exp-b[]]",
        "test_user.py::test_mine[[]outputs/exp-c[]]",
        "outputs/exp-a::ifeval::improves", "outputs/exp-a::ifeval::no_regression",
        "outputs/exp-b::ifeval::improves", "outputs/exp-b::ifeval::no_regression",
        "outputs/exp-c::ifeval::improves", "outputs/exp-c::ifeval::no_regression",
        "*9 tests collected*",
    ])


def test_one_model_keeps_its_ids_and_is_not_parametrized(pytester: pytest.Pytester) -> None:
    make_experiments(pytester.path, ("exp-a",))
    pytester.makepyfile(test_user="def test_mine(bench_result):\n    pass\n")
    result = pytester.runpytest("--bench-model", "outputs", "--collect-only", "-q", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["test_user.py::test_mine", "finetune-bench::ifeval::improves", "*3 tests*"])


def test_plan_lists_every_experiment_and_one_side_sessions(pytester: pytest.Pytester) -> None:
    make_experiments(pytester.path)
    result = pytester.runpytest("--bench-model", "outputs", "--bench-plan", "--bench-base", "none",
                                "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    out = result.stdout.str()
    assert out.count("evaluates the fine-tuned model alone: no comparison, no gates") == 3
    assert "base:" not in out and "gates ifeval" not in out
    collected = pytester.runpytest("--bench-model", "outputs/exp-a", "--bench-base", "none", "--collect-only", "-q",
                                   "-p", "no:cacheprovider")
    collected.stdout.fnmatch_lines(["finetune-bench::fine-tuned::evaluated", "*1 test collected*"])


def test_only_base_needs_no_fine_tune(pytester: pytest.Pytester) -> None:
    make_experiments(pytester.path, ())
    result = pytester.runpytest("--bench-only-base", "--bench-base", "base", "--bench-plan", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*evaluates the base model alone*", "base: */base via hf*"])
    assert "fine-tuned:" not in result.stdout.str()


@pytest.mark.parametrize(("args", "message"), [
    (("--bench-backend", "auto,hf"), "'auto' is not a backend: choose one of hf,*"),
    (("--bench-only-base", "--bench-base", "none"), "*--bench-only-base evaluates the base model, but --bench-base "
                                                    "none names none: drop one"),
    (("--bench-model", "outputs/nothing-*"), "*--bench-model outputs/nothing-[*] matches no model folder*"),
])
def test_bad_multi_model_input_is_one_line(pytester: pytest.Pytester, args: tuple[str, ...], message: str) -> None:
    make_experiments(pytester.path)
    model = () if "--bench-model" in args else ("--bench-model", "outputs")
    result = pytester.runpytest(*model, *args, "--collect-only", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: *{message}"])
    assert "Traceback" not in result.stderr.str()


# --------------------------------------------------------------------------- ranking (units)
def _experiment(label: str, passed: int, value: float, **training: str) -> dict[str, Any]:
    return {"label": label, "gates": {"passed": passed}, "training": training,
            "scores": {"ifeval": {"value": value, "higher_is_better": True}}}


def test_pairs_are_all_pairs_for_few_experiments_and_neighbours_for_many() -> None:
    assert pairs_to_compare(["a", "b", "c"]) == [("b", "a"), ("c", "a"), ("c", "b")]
    many = [str(i) for i in range(20)]
    assert pairs_to_compare(many) == [(many[i + 1], many[i]) for i in range(19)]


def test_a_pair_read_the_other_way_round_flips_its_difference_and_interval() -> None:
    flipped = reversed_pair({"first": "a", "second": "b", "delta": 0.1, "ci_low": -0.05, "ci_high": 0.25})
    assert flipped == {"first": "b", "second": "a", "delta": -0.1, "ci_low": -0.25, "ci_high": 0.05}


def test_only_training_facts_that_differ_are_shown() -> None:
    experiments = [_experiment("a", 1, 0.5, lr="1e-4", dataset="x"), _experiment("b", 1, 0.5, lr="2e-4", dataset="x"),
                   _experiment("c", 1, 0.5, dataset="x")]
    assert differing_facts(experiments) == ["lr"]


def test_ranking_puts_gates_first_then_scores_in_each_metrics_direction() -> None:
    def summary(label: str, value: float, gates: dict[str, GateRecord], higher: bool = True) -> BenchmarkSummary:
        return {"label": label, "status": "complete", "gates": gates,
                "headlines": {"t": {"metric": "m,none", "higher_is_better": higher, "unit": "points"}},
                "scores": {"fine-tuned": {"t": value}}}

    def gate(outcome: str) -> dict[str, GateRecord]:
        """benchmark.json's record of a decided gate (the ranking counts outcomes, it never decides again)."""
        return {"t::no_regression": {"outcome": outcome, "threshold": 0.05, "rule": "point",
                                     "decided_by": "point estimate", "documents": 10}}

    passed, failed = gate("passed"), gate("failed")
    ranking = build_ranking([summary("low", 0.2, passed), summary("high", 0.9, failed), summary("mid", 0.5, passed)])
    assert ranking["ranking"] == ["mid", "low", "high"]
    lower_is_better = build_ranking([summary("x", 3.0, passed, higher=False), summary("y", 2.0, passed, higher=False)])
    assert lower_is_better["ranking"] == ["y", "x"]
    # Without files behind them, the pair has no statistics: it says why instead of inventing them.
    assert "note" in lower_is_better["best_vs_runner_up"]["t"]


def test_the_ranking_says_which_export_each_experiment_measured() -> None:
    def summary(label: str, variant: str) -> BenchmarkSummary:
        return {"label": label, "status": "complete", "model_variant": variant, "gates": {},
                "headlines": {"t": {"metric": "m,none", "higher_is_better": True, "unit": "points"}},
                "scores": {"fine-tuned": {"t": 0.5}}}

    ranking = build_ranking([summary("outputs/a", "lora"), summary("outputs/b", "merged_16bit")])
    assert {e["label"]: e["variant"] for e in ranking["experiments"]} == {"outputs/a": "lora",
                                                                       "outputs/b": "merged_16bit"}
    header, _, *rows = ranking_lines(ranking)[0].splitlines()
    assert [cell.strip() for cell in header.split("|")][2:4] == ["Experiment", "Export"]
    assert sorted(row.split("|")[3].strip() for row in rows) == ["lora", "merged_16bit"]


# --------------------------------------------------------------------------- sessions (fake model)
@pytest.mark.slow  # starts lm-eval children (a fake model)
def test_experiments_share_one_base_run_and_each_get_their_own_files(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs, _ = make_experiments(pytester.path)
    use_fake_lm(monkeypatch)
    pytester.makepyfile(test_user="""
        def test_no_loss(bench_result, bench_model):
            print("USER", bench_model.name, bench_result.delta("ifeval"))
            bench_result.assert_no_regression("ifeval", max_drop=5)
    """)
    args = [a for a in bench_args(outputs, pytester.path / "unused") if not a.startswith("--bench-output")]
    result = pytester.runpytest_subprocess(*args, "--bench-min-gain=0", "-s")
    result.assert_outcomes(passed=9)
    out = result.stdout.str()
    assert out.count("base: evaluating") == 1, out
    assert out.count(f"base: scores shared with {outputs}/exp-a (same base, same settings)") == 2
    for name in LEARNING_RATES:
        summary = read_json(outputs / name / "benchmarks" / "benchmark.json")
        assert summary["label"] == f"{outputs}/{name}"
        # Each gate's decision with the threshold it was held to, in the metric's unit (fractions).
        decided = {"outcome": "passed", "rule": "point", "decided_by": "point estimate", "documents": 10, "level": None}
        assert summary["gates"] == {"ifeval::improves": {**decided, "threshold": 0.0},
                                    "ifeval::no_regression": {**decided, "threshold": 0.05}}
        assert summary["training"]["learning rate"] == str(LEARNING_RATES[name])
        assert f"USER {name} 0.0" in out
    ranking = read_json(outputs / "benchmarks-summary.json")
    assert sorted(ranking["ranking"]) == [f"{outputs}/{n}" for n in sorted(LEARNING_RATES)]
    assert ranking["differing_training_facts"] == ["learning rate"]
    result.stdout.fnmatch_lines(["*ranking of 3 experiments*", "*Experiment*Gates*learning rate*",
                                 f"ranking: {outputs / 'benchmarks-summary.json'}"])


@pytest.mark.slow  # starts lm-eval children (a fake model)
@pytest.mark.parametrize("backend", ["fake", "fake-unpinned"])
def test_a_shared_base_is_evaluated_once_whether_or_not_it_can_be_cached(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """The base cache is the one way a base is shared: on disk when its content is known, else in the session."""
    outputs, _ = make_experiments(pytester.path, ("exp-a", "exp-b"))
    use_fake_lm(monkeypatch)
    args = [a for a in bench_args(outputs, pytester.path / "unused") if not a.startswith("--bench-output")]
    result = pytester.runpytest_subprocess(*args, f"--bench-backend={backend}", "--bench-min-gain=0")
    result.assert_outcomes(passed=4)
    out = result.stdout.str()
    assert out.count("base: evaluating") == 1 and out.count("fine-tuned: evaluating") == 2, out
    assert out.count(f"base: scores shared with {outputs}/exp-a (same base, same settings)") == 1
    entries = list((pytester.path / "base-cache" / "base").glob("*/entry.json"))
    cacheable = backend == "fake"
    assert len(entries) == (1 if cacheable else 0)
    assert ("cannot fingerprint the model, so its scores are not cached" in out) == (not cacheable)
    for name in ("exp-a", "exp-b"):
        assert read_json(outputs / name / "benchmarks" / "benchmark.json")["status"] == "complete"


@pytest.mark.slow  # starts lm-eval children (a fake model)
def test_base_only_fills_the_cache_that_a_later_session_reuses(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs, base = make_experiments(pytester.path, ("exp-a",))
    use_fake_lm(monkeypatch)
    model = outputs / "exp-a"
    first_args = [a if not a.startswith("--bench-model") else f"--bench-base={base}"
                  for a in bench_args(model, pytester.path / "base-out")]
    first = pytester.runpytest_subprocess(*first_args, "--bench-only-base")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["*(base model only, no gates)*", "*PASSED finetune-bench::base::evaluated*"])
    only_base = read_json(pytester.path / "base-out" / "benchmark.json")
    assert only_base["evaluated"] == ["base"] and only_base["comparison"] == {} and only_base["status"] == "complete"
    assert only_base["scores"]["base"]["ifeval"] is not None
    second = pytester.runpytest_subprocess(*bench_args(model, pytester.path / "out"), "--bench-min-gain=0")
    second.assert_outcomes(passed=2)
    assert "base: evaluating" not in second.stdout.str()
    second.stdout.fnmatch_lines(["*base: scores from cache*"])


@pytest.mark.slow  # starts lm-eval children (a fake model)
def test_fine_tuned_alone_with_base_none(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs, _ = make_experiments(pytester.path, ("exp-a",))
    use_fake_lm(monkeypatch)
    pytester.makepyfile(test_user="def test_needs_base(bench_result):\n    pass\n")
    result = pytester.runpytest_subprocess(*bench_args(outputs / "exp-a", pytester.path / "out"), "--bench-base=none")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*(fine-tuned model only, no gates)*", "*Benchmark*Metric*Fine-tuned*"])
    result.stdout.fnmatch_lines(["*SKIPPED*bench_result needs the base model, which this session does not evaluate*"])
    summary = read_json(pytester.path / "out" / "benchmark.json")
    assert summary["evaluated"] == ["fine-tuned"] and summary["base_model"] is None
    assert summary["status"] == "complete" and summary["comparison"] == {}
    assert not (pytester.path / "out" / "base").exists()


# --------------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def experiments_session(
    tmp_path_factory: pytest.TempPathFactory, regressed_outputs: Path, unchanged_outputs: Path, base_model: Path,
    demo_data: Path,
) -> tuple[Path, str]:
    """exps/ with two genuinely different fine-tunes of SmolLM2 and a byte-identical copy of one, benchmarked
    together in one real session (10 IFEval prompts)."""
    root = tmp_path_factory.mktemp("experiments")
    exps = root / "exps"
    for name, source, learning_rate in (("regressed", regressed_outputs, 5e-3), ("unchanged", unchanged_outputs, 0.0),
                                        ("regressed-copy", regressed_outputs, 5e-3)):
        # Hard links: the same bytes in a folder of its own, without copying half a gigabyte.
        shutil.copytree(source / "merged_16bit", exps / name / "merged_16bit", copy_function=os.link)
        write_lora_facts(exps / name, base_model, learning_rate)
    return exps, _real_session(root, exps, demo_data)


def _real_session(root: Path, models: Path, demo_data: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--bench-model", str(models), "--bench-data-dir", str(demo_data),
         "--bench-suite", "test", "--bench-limit", "10", "--bench-min-gain", "0", *FAST_ARGS, "-rA",
         "--bench-cache-dir", str(own_cache_dir(root / "cache"))],
        cwd=root, capture_output=True, text=True, timeout=900,
    )
    return proc.stdout + proc.stderr


def test_real_experiments_are_ranked_from_their_own_files(experiments_session: tuple[Path, str]) -> None:
    exps, out = experiments_session
    assert out.count("base: evaluating") == 1, out
    assert "9 passed" not in out  # the regressed fine-tunes fail their gate: the session is a real check
    ranking = read_json(exps / "benchmarks-summary.json")
    assert ranking["ranking"][0] == f"{exps}/unchanged"
    for experiment in ranking["experiments"]:
        own = read_json(Path(experiment["benchmark_dir"]).parent.parent / "benchmark.json")
        comparison = own["comparison"]["ifeval"]
        assert experiment["scores"]["ifeval"]["value"] == comparison["finetuned_accuracy"]
        assert experiment["scores"]["ifeval"]["delta"] == comparison["delta"]
        assert experiment["gates"]["outcomes"] == own["gates"]
    assert ranking["differing_training_facts"] == ["learning rate"]


def test_real_copy_is_not_significantly_different_from_its_original(experiments_session: tuple[Path, str]) -> None:
    exps, out = experiments_session
    ranking = read_json(exps / "benchmarks-summary.json")
    labels = {f"{exps}/regressed", f"{exps}/regressed-copy"}
    pair = next(p for p in ranking["pairwise"] if {p["first"], p["second"]} == labels)["tasks"]["ifeval"]
    assert pair["delta"] == 0.0 and pair["documents"] == 10
    assert pair["significant"] is False and pair["verdict"].startswith("not significantly different")
    original = next(p for p in ranking["pairwise"] if {p["first"], p["second"]} == {f"{exps}/unchanged",
                                                                                    f"{exps}/regressed"})
    assert original["tasks"]["ifeval"]["delta"] != 0.0  # the two genuinely different fine-tunes do differ
    assert "ranking of 3 experiments" in out


def test_real_history_lists_every_session(experiments_session: tuple[Path, str], capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path, demo_data: Path) -> None:
    exps, _ = experiments_session
    # A second session on one experiment (its answers come from the response cache): history shows both.
    again = _real_session(exps.parent, exps / "regressed", demo_data)
    assert "fine-tuned: evaluating" in again and "base: scores from cache" in again, again
    rows = history_rows(summary_files([exps]))
    sessions = {name: [r for r in rows if r.experiment == f"{exps}/{name}"]
                for name in ("regressed", "unchanged", "regressed-copy")}
    assert [len(found) for found in sessions.values()] == [2, 1, 1]
    assert sessions["regressed"][0].timestamp < sessions["regressed"][1].timestamp
    assert main(["history", str(exps), "--format", "csv", "--plot", str(tmp_path / "history.png")]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(table) == 4
    for row in table:
        own = read_json(Path(row["file"]))
        assert float(row["fine_tuned"]) == own["comparison"]["ifeval"]["finetuned_accuracy"]
    assert (tmp_path / "history.png").read_bytes()[:4] == b"\x89PNG"
    # Every summary, the ranking and the history's JSON match the published schemas.
    produced = produced_summaries(exps)
    assert {p.name for p in produced} == {"benchmark.json", "benchmarks-summary.json"}
    for path in produced:
        validate_file(path)
    assert main(["history", str(exps), "--format", "json"]) == 0
    validate(json.loads(capsys.readouterr().out), "history")



def test_real_fine_tune_alone_scores_as_in_the_comparison(experiments_session: tuple[Path, str],
                                                          demo_data: Path) -> None:
    """--bench-base none on a real model: no base run, and the same score the compared session measured."""
    exps, _ = experiments_session
    compared = read_json(exps / "unchanged" / "benchmarks" / "benchmark.json")
    output = exps.parent / "alone"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--bench-model", str(exps / "unchanged"), "--bench-base", "none",
         "--bench-output", str(output), "--bench-data-dir", str(demo_data), "--bench-suite", "test",
         "--bench-limit", "10", *FAST_ARGS, "-rA"],
        cwd=exps.parent, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "base: evaluating" not in proc.stdout and "PASSED finetune-bench::fine-tuned::evaluated" in proc.stdout
    alone = read_json(output / "benchmark.json")
    assert alone["evaluated"] == ["fine-tuned"] and alone["comparison"] == {}
    assert alone["scores"]["fine-tuned"]["ifeval"] == compared["comparison"]["ifeval"]["finetuned_accuracy"]


# --------------------------------------------------------------------------- merged weights and GGUF together
@pytest.mark.timeout(900)
def test_both_backends_measure_the_quantization_cost_on_a_real_server(
    pytester: pytest.Pytester, llama_server: LlamaServer, base_model: Path, demo_data: Path,
) -> None:
    """The fine-tune as merged weights (hf) and as its GGUF served by llama.cpp, in one session, one base run."""
    model = pytester.path / "outputs" / "smollm2-ft"
    # The merged export is the HF conversion of the very GGUF the server serves (dequantized): what differs
    # between the two runs is the quantization and the engine, nothing else.
    shutil.copytree(base_model, model / "merged_16bit", copy_function=os.link)
    (model / "gguf").mkdir()
    (model / "gguf" / llama_server.gguf.name).symlink_to(llama_server.gguf)
    write_lora_facts(model, base_model, 1e-4)
    result = pytester.runpytest_subprocess(
        "--bench-model", "outputs/smollm2-ft", "--bench-backend", "hf,openai", "--bench-base-url", llama_server.url,
        "--bench-server-model", llama_server.model, "--bench-suite", "test", "--bench-data-dir", str(demo_data),
        # Only no_regression gates, allowing any drop: the numbers are the point here, not a verdict.
        "--bench-target-tasks=", "--bench-max-drop", "100", *FAST_ARGS, "-rA",
        "--bench-cache-dir", str(own_cache_dir(pytester.path / "cache")), timeout=800,
    )
    out = result.stdout.str()
    result.assert_outcomes(passed=2)
    assert out.count("base: evaluating") == 1, out
    merged = read_json(model / "benchmarks" / "hf" / "benchmark.json")
    served = read_json(model / "benchmarks" / "openai" / "benchmark.json")
    assert merged["backends"] == {"base": "hf", "fine-tuned": "hf"}
    assert served["backends"] == {"base": "hf", "fine-tuned": "openai"}
    assert served["fine_tuned_model"]["lm_eval_model"] == "local-chat-completions"
    ranking = read_json(pytester.path / "outputs" / "benchmarks-summary.json")
    [cost] = ranking["quantization_cost"]
    pair = cost["tasks"]["ifeval"]
    assert (cost["reference"], cost["export"]) == ("outputs/smollm2-ft@hf", "outputs/smollm2-ft@openai")
    assert pair["first"] == merged["comparison"]["ifeval"]["finetuned_accuracy"]
    assert pair["second"] == served["comparison"]["ifeval"]["finetuned_accuracy"]
    assert pair["documents"] == 5 and pair["p_value"] is not None
    result.stdout.fnmatch_lines(["*Quantization cost*", "*quantization cost, Instruction-Following (IFEval): "
                                 "outputs/smollm2-ft@openai vs outputs/smollm2-ft@hf: Δ*"])


@pytest.mark.slow  # starts lm-eval children (a fake model) in two xdist workers
def test_experiments_under_xdist_equal_one_process(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """`-n 2`: each experiment's gates run on one worker, the controller alone writes; the same files as `-n 0`."""
    outputs, _ = make_experiments(pytester.path, ("exp-a", "exp-b"))
    use_fake_lm(monkeypatch)
    args = [a for a in bench_args(outputs, pytester.path / "unused") if not a.startswith("--bench-output")]
    results = {}
    for workers in ("0", "2"):
        result = pytester.runpytest_subprocess(*args, "-n", workers, "--dist", "loadgroup", "--bench-min-gain=0")
        result.assert_outcomes(passed=4)
        results[workers] = {name: read_json(outputs / name / "benchmarks" / "benchmark.json")
                            for name in ("exp-a", "exp-b")}
        results[workers]["ranking"] = read_json(outputs / "benchmarks-summary.json")
        if workers == "2":
            result.stdout.fnmatch_lines(["*from xdist workers*", "*ranking of 2 experiments*"])

    def comparable(summary: dict[str, Any]) -> dict[str, Any]:
        return {key: summary.get(key) for key in ("label", "status", "gates", "scores", "headlines", "training")}

    for name in ("exp-a", "exp-b"):
        assert comparable(results["2"][name]) == comparable(results["0"][name])
        deltas = {workers: results[workers][name]["comparison"]["ifeval"]["delta"] for workers in ("0", "2")}
        assert deltas["2"] == deltas["0"]
    assert results["2"]["ranking"]["ranking"] == results["0"]["ranking"]["ranking"]
    assert not list(pytester.path.rglob(".benchmark*.tmp"))
