"""--bench-early-stop: the per-task bookkeeping, the options, and real sessions on SmolLM2.

The real sessions use IFEval-style prompts written for this test (real IFEval instructions, scored
by lm-eval): titles in double angular brackets and keywords to include, which the base model often
follows and a fine-tune that lost its language (the base with heavy weight noise) cannot. They run
in one output folder, so the second session of the regressed model resumes from the first one's
response cache.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_finetune_bench.compare.gates import BY_SEQUENCE, decide
from pytest_finetune_bench.compare.scores import TaskComparison
from pytest_finetune_bench.compare.sequential import early_stop_lines
from pytest_finetune_bench.plan.choices import parse_error_rate
from pytest_finetune_bench.plan.gates import FAILED, IMPROVES, NO_REGRESSION, PASSED, RULE_POINT, RULE_PROVEN, Gate
from pytest_finetune_bench.report.table import evidence_columns
from pytest_finetune_bench.run.child_early_stop import chunk_scores
from pytest_finetune_bench.run.early_stop import (
    MIN_CHUNK,
    TaskMonitor,
    apply_early_stop,
    paired_early_stop,
    per_leaf,
    task_seed,
)
from tests.bench_sessions import assert_rebuilt_alike, assert_scores_equal_the_lm_eval_cli, run_bench
from tests.conftest import read_json
from tests.fake_sessions import bench_args, make_fake_model, read_summary, use_fake_lm
from tests.gate_checks import improves_failure, regression_failure

# ---------------------------------------------------------------------------------------------
# Bookkeeping and options (fast)
# ---------------------------------------------------------------------------------------------


def _monitor(base: dict[int, float], rules: list[Gate] | None = None) -> TaskMonitor:
    rules = rules or [Gate("task", IMPROVES, 0.02), Gate("task", NO_REGRESSION, 0.05)]
    return TaskMonitor("ifeval", "prompt_level_strict_acc,none", True, {("ifeval", doc): v for doc, v in base.items()},
                       rules, 0.05, task_seed(1234, "ifeval"))


def test_the_order_is_seeded_and_covers_every_document_once() -> None:
    base = {doc: 1.0 for doc in range(30)}
    first, again = _monitor(base), _monitor(base)
    assert first.order == again.order != sorted(first.base)
    assert sorted(first.order) == sorted(first.base)
    chunk = first.next_chunk()
    assert chunk == sorted(chunk) and len(chunk) == MIN_CHUNK  # lm-eval's samples= needs ascending ids
    assert per_leaf(chunk) == {"ifeval": [doc for _, doc in chunk]}
    other = TaskMonitor("other", "m,f", True, {("other", doc): 1.0 for doc in base}, [], 0.05, task_seed(1234, "other"))
    assert [doc for _, doc in other.order] != [doc for _, doc in first.order]
    assert not first.is_group and first.leaves == ["ifeval"]


GROUP_SPEC: dict[str, Any] = {"metric": "acc,none", "higher_is_better": True, "gates": [],
              "leaves": {"mmlu_b": {str(doc): 1.0 for doc in range(3)}, "mmlu_a": {str(doc): 0.0 for doc in range(5)},
                         "mmlu_c": {"0": 1.0}}}


def test_a_groups_documents_are_pooled_in_one_seeded_order() -> None:
    group = TaskMonitor.from_spec("mmlu", GROUP_SPEC, 0.05, 1234, "1")
    again = TaskMonitor.from_spec("mmlu", GROUP_SPEC, 0.05, 1234, "1")
    pooled = sorted((leaf, int(doc)) for leaf, docs in GROUP_SPEC["leaves"].items() for doc in docs)
    assert group.is_group and group.leaves == ["mmlu_a", "mmlu_b", "mmlu_c"] and group.documents == 9
    # Every document of every leaf once, in an order the seed fixes and that mixes the leaves.
    assert group.order == again.order != pooled and sorted(group.order) == pooled
    assert TaskMonitor.from_spec("mmlu", GROUP_SPEC, 0.05, 99, "1").order != group.order
    # A chunk goes to lm-eval as `samples=` per leaf, each leaf's ids ascending.
    chunk = group.next_chunk()
    selected = per_leaf(chunk)
    assert len(chunk) == MIN_CHUNK and sum(map(len, selected.values())) == MIN_CHUNK
    assert all(ids == sorted(ids) and (leaf, ids[0]) in group.base for leaf, ids in selected.items())
    assert set(chunk) == set(group.order[:MIN_CHUNK])
    assert per_leaf([("b", 2), ("a", 1), ("b", 0)], ["a", "b", "c"]) == {"a": [1], "b": [0, 2], "c": []}


def test_a_stopped_groups_record_lists_its_evaluated_documents_per_leaf() -> None:
    group = TaskMonitor.from_spec("mmlu", {**GROUP_SPEC, "gates": [Gate("mmlu", NO_REGRESSION, 0.05).to_spec()]},
                                  0.05, 1234, "1")
    while group.open:
        chunk = group.next_chunk()
        group.add(chunk, {doc: group.base[doc] for doc in chunk})  # unchanged answers: Δ = 0 everywhere
    record = group.to_json()
    assert record["group"] is True and record["task"] == "mmlu" and record["documents"] == 9
    assert record["evaluated_ids"] == per_leaf(group.evaluated, group.leaves)
    assert sum(map(len, record["evaluated_ids"].values())) == record["evaluated"] == len(group.evaluated)
    assert "group" not in _monitor({0: 1.0}).to_json()


def test_chunks_are_whole_batches() -> None:
    base = {doc: 1.0 for doc in range(541)}
    assert _monitor(base).chunk_size == 28  # a twentieth of the task
    batched = TaskMonitor.from_spec("ifeval", {"metric": "m,f", "higher_is_better": True, "base": base,
                                               "gates": []}, 0.05, 0, "8")
    assert batched.chunk_size == 32
    assert TaskMonitor.from_spec("ifeval", {"metric": "m,f", "higher_is_better": True, "base": base,
                                            "gates": []}, 0.05, 0, "auto").chunk_size == 28


def test_a_clear_regression_settles_both_gates_before_the_end() -> None:
    monitor = _monitor({doc: 1.0 for doc in range(200)})
    while monitor.open:
        chunk = monitor.next_chunk()
        monitor.add(chunk, {doc: 0.0 for doc in chunk})  # every document lost
    assert monitor.stopped_early and monitor.verdicts == {IMPROVES: FAILED, NO_REGRESSION: FAILED}
    record = monitor.to_json()
    assert record["evaluated"] == len(record["evaluated_ids"]) < 100
    assert record["chunks"][-1]["delta_high"] < -0.05
    assert [c["documents"] for c in record["chunks"]] == sorted({c["documents"] for c in record["chunks"]})


def test_a_score_outside_zero_one_hands_the_task_to_the_full_run() -> None:
    monitor = _monitor({doc: 0.5 for doc in range(20)})
    chunk = monitor.next_chunk()
    monitor.add(chunk, {doc: 3.0 for doc in chunk})
    assert not monitor.open and not monitor.stopped_early
    assert monitor.note is not None and "runs in full" in monitor.note


def test_chunk_scores_read_the_headline_filter_of_logged_samples() -> None:
    samples = [
        {"doc_id": 3, "filter": "none", "prompt_level_strict_acc": True, "inst_level_strict_acc": [True, False]},
        {"doc_id": 5, "filter": "none", "prompt_level_strict_acc": False, "inst_level_strict_acc": [False]},
        {"doc_id": 5, "filter": "other", "prompt_level_strict_acc": True},
    ]
    assert chunk_scores(samples, "prompt_level_strict_acc,none") == {3: 1.0, 5: 0.0}
    assert chunk_scores(samples, "inst_level_strict_acc,none") == {3: 0.5, 5: 0.0}


def _paired(documents: int) -> TaskMonitor:
    return TaskMonitor.from_spec("ifeval", {"metric": "prompt_level_strict_acc,none", "higher_is_better": True,
                                            "gates": [Gate("ifeval", NO_REGRESSION, 0.05).to_spec()]},
                                 0.05, 1234, "1", population=[("ifeval", doc) for doc in range(documents)])


def test_a_paired_monitor_takes_the_base_scores_chunk_by_chunk() -> None:
    monitor = _paired(200)
    assert monitor.paired and monitor.base == {} and sorted(monitor.order) == [("ifeval", doc) for doc in range(200)]
    # The same order as a monitor that knew the base's scores up front: a later session repeats it.
    assert monitor.order == _monitor({doc: 1.0 for doc in range(200)}).order
    while monitor.open:
        chunk = monitor.next_chunk()
        monitor.add(chunk, {doc: 0.0 for doc in chunk}, {doc: 1.0 for doc in chunk})
    assert monitor.stopped_early and monitor.verdicts == {NO_REGRESSION: FAILED}
    assert sorted(monitor.base) == sorted(monitor.evaluated)  # the base answered the evaluated documents only
    record = monitor.to_json()
    assert record["sides"] == ["base", "fine-tuned"] and record["evaluated"] < 200
    assert _monitor({0: 1.0}).to_json()["sides"] == ["fine-tuned"]


def test_a_base_score_outside_zero_one_hands_the_paired_task_to_the_full_run() -> None:
    monitor = _paired(20)
    chunk = monitor.next_chunk()
    monitor.add(chunk, {doc: 1.0 for doc in chunk}, {doc: 2.0 for doc in chunk})
    assert not monitor.open and not monitor.stopped_early and monitor.evaluated == []
    assert monitor.note is not None and "in the base run" in monitor.note and "runs in full" in monitor.note


def test_a_paired_stop_keeps_the_base_score_lm_eval_gave() -> None:
    """The base itself has only the evaluated documents: its score is lm-eval's on them, not recomputed."""
    record = {**_paired(20).to_json(), "stopped_early": True, "evaluated_ids": [1, 2]}
    finetuned = SimpleNamespace(extra={"early_stop": {"tasks": {"ifeval": record}}})
    assert record["sides"] == ["base", "fine-tuned"] and "group" not in record
    comp = TaskComparison("ifeval", "prompt_level_strict_acc,none", 0.75, 0.25)
    apply_early_stop({"ifeval": comp}, SimpleNamespace(), finetuned)  # type: ignore[arg-type]
    assert comp.base_accuracy == 0.75 and "base_all_documents" not in record and comp.extra["early_stop"] is record


def _request(role: str, cache: str | None, engine: str = "hf") -> Any:
    return SimpleNamespace(role=role, use_cache=cache, side=SimpleNamespace(lm_eval_model=engine))


@pytest.mark.parametrize(("base", "why"), [
    (_request("base", None), "the base is evaluated in full first, because it has no response cache"),
    (_request("base", "cache/b", "vllm"), "the base is evaluated in full first, because vLLM reserves"),
])
def test_a_base_that_cannot_be_paired_is_evaluated_in_full_first(base: Any, why: str) -> None:
    plan = SimpleNamespace(options=SimpleNamespace(early_stop=True), compares=True)
    lines: list[str] = []
    assert paired_early_stop(_request("fine-tuned", "cache/f"), base, plan, lines.append) is None  # type: ignore[arg-type]
    assert len(lines) == 1 and lines[0].startswith(f"[bench] early stop: {why}")


def _stopped(low: float, high: float, verdicts: dict[str, str], higher_is_better: bool = True) -> TaskComparison:
    """A comparison whose task stopped early after 40 of 541 documents, Δ in [low, high], with the child's verdicts."""
    record = {"stopped_early": True, "evaluated": 40, "documents": 541, "error_rate": 0.05,
              "chunks": [{"documents": 40, "delta_low": low, "delta_high": high}], "verdicts": verdicts,
              "gates": {IMPROVES: 0.02, NO_REGRESSION: 0.05}}
    return TaskComparison("ifeval", "prompt_level_strict_acc,none", 0.5, 0.2, extra={"early_stop": record},
                          higher_is_better=higher_is_better)


def test_gates_of_a_task_that_stopped_early_are_the_verdicts_the_child_recorded() -> None:
    both_failed = {IMPROVES: FAILED, NO_REGRESSION: FAILED}
    regressed = _stopped(-0.45, -0.12, both_failed)
    failure = regression_failure(regressed, 5.0)
    assert failure is not None and "decided after 40 of 541 documents (error ≤ 0.05)" in failure
    assert "gain in [-45.00, -12.00] pts" in failure
    assert improves_failure(regressed, 2.0) is not None
    # The point estimate (-30 points) is not looked at: the sequence settled no_regression as passed.
    assert regression_failure(_stopped(-0.45, -0.04, {IMPROVES: FAILED, NO_REGRESSION: PASSED}), 5.0) is None
    assert improves_failure(_stopped(0.03, 0.4, {IMPROVES: PASSED, NO_REGRESSION: PASSED}), 2.0) is None
    # Lower is better: the child settled on the gain, Δ mirrored; its message shows the gain's interval.
    mirrored = regression_failure(_stopped(0.12, 0.45, both_failed, higher_is_better=False), 5.0)
    assert mirrored is not None and "gain in [-45.00, -12.00] pts" in mirrored
    # The recorded verdict is the decision: the parent does not decide the child's gates again.
    assert regression_failure(_stopped(-0.45, -0.12, {IMPROVES: FAILED, NO_REGRESSION: PASSED}), 5.0) is None
    # A threshold the child was not given (a test's own assertion) is decided on the sequence at the stop.
    assert regression_failure(regressed, 50.0) is None
    assert "did not improve by -10.00 points" in (improves_failure(regressed, -10.0) or "")
    assert improves_failure(regressed, -50.0) is None
    # The decision is recorded with what decided it and on how many documents.
    decision = decide(Gate("ifeval", NO_REGRESSION, 0.05, rule=RULE_POINT), regressed)
    assert decision.to_json() == {"outcome": FAILED, "threshold": 0.05, "rule": RULE_POINT,
                                  "decided_by": BY_SEQUENCE, "documents": 40, "level": None}
    columns = evidence_columns({"ifeval": regressed}, 0.95)
    assert columns["95% CI (points)"]["ifeval"] == "[-45.0, -12.0]"
    assert columns["CI method"]["ifeval"] == "sequence (95%)"
    assert early_stop_lines({"ifeval": regressed}) == [
        "early stop: ifeval decided after 40 of 541 documents (error ≤ 0.05)"]


@pytest.mark.parametrize("text", ["0", "1", "1.5", "-0.1", "five percent"])
def test_error_rate_must_be_a_probability(text: str) -> None:
    with pytest.raises(Exception, match="error rate"):
        parse_error_rate(text)
    assert parse_error_rate(" 0.01 ") == 0.01


def _model(pytester: pytest.Pytester) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")


@pytest.mark.parametrize(("args", "ini", "source"), [
    (["--bench-error-rate", "1.5"], "", "--bench-error-rate"),
    ([], "bench_error_rate = 0\n", "ini option bench_error_rate"),
])
def test_a_bad_error_rate_names_its_source(pytester: pytest.Pytester, args: list[str], ini: str, source: str) -> None:
    _model(pytester)
    pytester.makeini(f"[pytest]\n{ini}")
    result = pytester.runpytest("--bench-model", "model", "--bench-base", "model", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {source}: * is not an error rate*"])


# ---------------------------------------------------------------------------------------------
# Real sessions (slow)
# ---------------------------------------------------------------------------------------------

TOPICS = ("the ocean", "autumn", "a mountain", "the moon", "a city at night", "a garden", "winter", "a river",
          "the desert", "a storm", "friendship", "a forest")
KEYWORDS = ("cat", "music", "bread", "train", "rain", "book", "sun", "coffee", "school", "tree", "bird", "sea")
DOCUMENTS = len(TOPICS) + len(KEYWORDS)
GEN = ("--bench-gen-kwargs", "max_gen_toks=24", "--bench-limit", "none")


def ifeval_style_rows() -> list[dict[str, Any]]:
    """Prompts with one real IFEval instruction each (also bench/early_stop_timing.py's)."""
    titles = [{"prompt": f"Write a short poem about {topic}. Your answer must contain a title, wrapped in double "
                         "angular brackets, such as <<poem of joy>>.",
               "instruction_id_list": ["detectable_format:title"], "kwargs": [{}]} for topic in TOPICS]
    keywords = [{"prompt": f"Write two sentences about a {word}. Include the keyword {word} in the response.",
                 "instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": [word]}]} for word in KEYWORDS]
    return [{"key": 5000 + i, **row} for i, row in enumerate(titles + keywords)]


@pytest.fixture(scope="module")
def early_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("early-data")
    (data / "ifeval").mkdir()
    (data / "ifeval" / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ifeval_style_rows()))
    return data


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory, regressed_outputs: Path, unchanged_outputs: Path,
             early_data: Path) -> dict[str, Any]:
    """Three sessions in one folder: the regressed fine-tune early-stopped (no base scores yet: both models
    evaluated chunk by chunk), then in full; the unchanged one (its base now cached)."""
    cwd = tmp_path_factory.mktemp("early")
    out: dict[str, Any] = {}
    for name, model, extra in (("early", regressed_outputs, ("--bench-early-stop", "--bench-gate-rule", "proven")),
                               ("resumed", regressed_outputs, ()),
                               ("unchanged", unchanged_outputs, ("--bench-early-stop",))):
        session = run_bench(cwd, model, early_data, *GEN, *extra)
        out[name] = {"stdout": session.proc.stdout, "ret": session.proc.returncode, "summary": session.summary}
    return out


def _outcome(stdout: str, gate: str) -> str:
    (outcome,) = [words[0] for words in map(str.split, stdout.splitlines())
                  if words[:1] in (["PASSED"], ["FAILED"]) and words[1].endswith(f"finetune-bench::ifeval::{gate}")]
    return outcome


def test_a_regressed_fine_tune_stops_early_with_a_failed_gate(sessions: dict[str, Any]) -> None:
    early = sessions["early"]
    summary, out = early["summary"], early["stdout"]
    assert summary["status"] == "complete", out
    record = summary["comparison"]["ifeval"]["early_stop"]
    assert record["stopped_early"] and record["documents"] == DOCUMENTS, record
    evaluated = record["evaluated"]
    assert evaluated < DOCUMENTS
    assert record["verdicts"][NO_REGRESSION] == FAILED
    assert _outcome(out, "no_regression") == "FAILED" and early["ret"] == 1
    # The first session had no base scores: both models answered the evaluated documents only, in one process.
    assert record["sides"] == ["base", "fine-tuned"]
    assert "one process holds both models in memory" in out
    for side in ("base_model", "fine_tuned_model"):
        assert summary[side]["generated"] == evaluated, side
        assert summary[side]["results"]["ifeval"]["sample_len"] == evaluated, side
    assert "base_all_documents" not in record
    assert f"ifeval decided after {evaluated} of {DOCUMENTS} documents (error ≤ 0.05)" in out
    # benchmark.json records how: the order's seed, the documents, the bounds after every chunk.
    assert isinstance(record["order_seed"], int) and len(record["evaluated_ids"]) == evaluated
    assert record["chunks"][-1]["documents"] == evaluated and record["chunks"][-1]["delta_high"] < -0.05
    # The gate is the verdict the child settled, recorded with what decided it and on how many documents.
    # Under the proven rule: the sequence settled it (so no fixed-n level), the rule in the record and the table.
    assert summary["gates"]["ifeval::no_regression"] == {"outcome": FAILED, "threshold": 0.05, "rule": RULE_PROVEN,
                                                         "decided_by": BY_SEQUENCE, "documents": evaluated,
                                                         "level": None}
    assert record["rules"] == {IMPROVES: RULE_PROVEN, NO_REGRESSION: RULE_PROVEN}
    assert "no_regression ≥ -5.00 (proven): failed" in out
    # Two proven gates on one task: Holm over both, and the one task's sequence keeps the whole error rate.
    assert summary["family"]["statement"] == "family-wise error ≤ 0.05 over 2 gates (Holm)"
    assert record["error_rate"] == 0.05 and "gates: family-wise error ≤ 0.05 over 2 gates (Holm)" in out


def samples_in(command: str) -> Any:
    """The `--samples` selection a reproduce command gives lm-eval's CLI (None without one)."""
    argv = shlex.split(command)
    return json.loads(argv[argv.index("--samples") + 1]) if "--samples" in argv else None


@pytest.mark.parametrize("side", ["base_model", "fine_tuned_model"])
def test_each_sides_score_on_the_evaluated_documents_is_the_lm_eval_clis(sessions: dict[str, Any], side: str,
                                                                          tmp_path: Path) -> None:
    """The recorded reproduce command, run as it is, gives the scores the session reported for the side.

    Both sides of the first session stopped early: lm-eval scored each on the evaluated documents only,
    and the command selects just those (`--samples`), so the CLI evaluates the same ones.
    """
    summary = sessions["early"]["summary"]
    command = summary["reproduce"]["commands"]["base" if side == "base_model" else "fine-tuned"]
    assert samples_in(command) == {"ifeval": summary["comparison"]["ifeval"]["early_stop"]["evaluated_ids"]}
    assert "--limit" not in shlex.split(command)
    assert_scores_equal_the_lm_eval_cli(summary, side, tmp_path)


def test_a_resumed_full_run_generates_only_the_documents_not_evaluated(sessions: dict[str, Any]) -> None:
    evaluated = sessions["early"]["summary"]["comparison"]["ifeval"]["early_stop"]["evaluated"]
    resumed = sessions["resumed"]["summary"]
    assert resumed["status"] == "complete", sessions["resumed"]["stdout"]
    # The base cache had no entry (a base on part of the documents is none); each response cache had the rest.
    for side in ("base_model", "fine_tuned_model"):
        assert resumed[side]["generated"] == DOCUMENTS - evaluated, side
        assert resumed[side]["results"]["ifeval"]["sample_len"] == DOCUMENTS, side
    assert "early_stop" not in resumed["comparison"]["ifeval"]
    assert not any(map(samples_in, resumed["reproduce"]["commands"].values()))  # full runs: every document
    # The full run agrees with the early verdict.
    assert _outcome(sessions["resumed"]["stdout"], "no_regression") == "FAILED"


def test_an_unchanged_model_is_not_declared_different(sessions: dict[str, Any]) -> None:
    unchanged = sessions["unchanged"]
    comp = unchanged["summary"]["comparison"]["ifeval"]
    assert comp["delta"] == 0.0, unchanged["stdout"]
    assert _outcome(unchanged["stdout"], "no_regression") == PASSED.upper()
    record = comp["early_stop"]
    assert record["verdicts"].get(NO_REGRESSION, PASSED) == PASSED
    gate = unchanged["summary"]["gates"]["ifeval::no_regression"]
    assert gate["rule"] == RULE_POINT and gate["outcome"] == PASSED
    assert gate["decided_by"] == (BY_SEQUENCE if record["stopped_early"] else "point estimate")
    if not record["stopped_early"]:  # undecided to the end: the full run, compared exactly as without early stop
        assert unchanged["summary"]["fine_tuned_model"]["results"]["ifeval"]["sample_len"] == DOCUMENTS
        assert read_json(Path(unchanged["summary"]["fine_tuned_model"]["results_file"]))["config"]["limit"] is None


# ---------------------------------------------------------------------------------------------
# A first session, no base scores yet: both models evaluated chunk by chunk (fake model, slow)
# ---------------------------------------------------------------------------------------------


def lowercase_rows() -> list[dict[str, Any]]:
    """Prompts whose one instruction is lower-case English: the fake base follows it, a fake that shouts cannot."""
    return [{"key": 6000 + i, "prompt": f"Describe {topic} in one sentence. Your entire response should be in "
             "English, and in all lowercase letters.", "instruction_id_list": ["change_case:english_lowercase"],
             "kwargs": [{}]} for i, topic in enumerate(TOPICS + KEYWORDS)]


def _fake_early(pytester: pytest.Pytester, model: Path, *extra: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    """A fake session on every prompt of lowercase_rows; the fine-tune answers in capitals, so every one regresses."""
    data = pytester.path / "data"
    if not data.exists():
        (data / "ifeval").mkdir(parents=True)
        (data / "ifeval" / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in lowercase_rows()))
    output = pytester.path / "out"
    result = pytester.runpytest_subprocess(*bench_args(model, output, "--bench-limit=none", *extra),
                                           f"--bench-data-dir={data}")
    return result, read_summary(output / "benchmark.json")


def _first_paired_session(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                          fake_lm: str) -> tuple[Path, pytest.RunResult, dict[str, Any]]:
    """(model, result, summary) of a first early-stopping session of a fake model run with `fake_lm`: no base
    scores yet, so both models are evaluated together; every fine-tuned answer regresses (max drop 0)."""
    model = make_fake_model(pytester.path)
    use_fake_lm(monkeypatch, fake_lm)
    return (model, *_fake_early(pytester, model, "--bench-early-stop", "--bench-max-drop=0"))


@pytest.mark.slow  # starts lm-eval children (a fake model)
def test_a_first_session_evaluates_both_models_chunk_by_chunk(pytester: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    model, early, summary = _first_paired_session(pytester, monkeypatch, "shout_for=merged_16bit")
    out = early.stdout.str()
    assert summary["status"] == "complete", out
    record = summary["comparison"]["ifeval"]["early_stop"]
    assert record["sides"] == ["base", "fine-tuned"], record
    evaluated, documents = record["evaluated"], record["documents"]
    assert record["stopped_early"] and evaluated < documents, record
    early.stdout.fnmatch_lines(["*early stop: ifeval evaluated on both models*one process holds both models*",
                                f"*ifeval decided after {evaluated} of {documents} documents*"])
    # Both sides answered the evaluated documents only, and lm-eval scored each on them.
    for side in ("base_model", "fine_tuned_model"):
        assert summary[side]["generated"] == evaluated, side
        assert summary[side]["results"]["ifeval"]["sample_len"] == evaluated, side
    assert "base_all_documents" not in record
    # Each side's reproduce command selects the documents its scores are on.
    commands = summary["reproduce"]["commands"]
    assert [samples_in(commands[role]) for role in ("base", "fine-tuned")] == [{"ifeval": record["evaluated_ids"]}] * 2
    comp = summary["comparison"]["ifeval"]
    assert comp["base_accuracy"] == summary["base_model"]["results"]["ifeval"][comp["metric"]]
    # A base on part of the documents is no base run to reuse: nothing enters the base-score cache.
    assert not list((pytester.path / "base-cache" / "base").glob("*/entry.json"))
    assert_rebuilt_alike(pytester.path / "out")

    # The next session, without early stop: each side generates only the documents not evaluated yet.
    full, resumed = _fake_early(pytester, model, "--bench-max-drop=0")
    assert resumed["status"] == "complete", full.stdout.str()
    for side in ("base_model", "fine_tuned_model"):
        assert resumed[side]["generated"] == documents - evaluated, side
        assert resumed[side]["results"]["ifeval"]["sample_len"] == documents, side
    assert "early_stop" not in resumed["comparison"]["ifeval"]
    assert resumed["gates"]["ifeval::no_regression"]["outcome"] == FAILED
    assert list((pytester.path / "base-cache" / "base").glob("*/entry.json"))  # now a full base run is cached


@pytest.mark.slow  # starts lm-eval children (a fake model)
def test_a_paired_run_that_crashes_scores_each_side_from_its_own_cache(pytester: pytest.Pytester,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # The fine-tune dies (SIGKILL) at its sixth answer: in the second chunk, after the base answered it in full.
    _, result, summary = _first_paired_session(pytester, monkeypatch,
                                               "shout_for=merged_16bit,crash_after=6,only=merged_16bit")
    out = result.stdout.str()
    assert summary["status"] == "crashed", out
    assert "one process holds both models in memory" in out
    for side, done in (("base_model", 2 * MIN_CHUNK), ("fine_tuned_model", 6)):
        assert summary[side]["status"] == "crashed", side
        assert summary[side]["results"]["ifeval"]["sample_len"] == done, side  # its own cached answers, scored
        assert "scored" in summary[side]["partial_reason"], side
        # Its reproduce command selects the documents scored: those lm-eval logged (their own ids).
        logged = [json.loads(line)["doc_id"] for line in Path(summary[side]["samples_files"]["ifeval"]).open()]
        role = "base" if side == "base_model" else "fine-tuned"
        assert samples_in(summary["reproduce"]["commands"][role]) == {"ifeval": sorted(logged)}, side
    result.stdout.fnmatch_lines(["*fine-tuned: fine-tuned run crashed (*): scored 6 of 24 samples (partial)*",
                                 "*base: base run crashed (*): scored 8 of 24 samples (partial)*"])
    assert not list((pytester.path / "base-cache" / "base").glob("*/entry.json"))


def test_a_base_with_no_task_to_stop_early_is_evaluated_in_full_first() -> None:
    """A task defined in Python has its headline only from a run's results: the base's run comes first."""
    plan = SimpleNamespace(options=SimpleNamespace(early_stop=True), compares=True, tasks=["mine"], headlines={})
    lines: list[str] = []
    paired = paired_early_stop(_request("fine-tuned", "cache/f"), _request("base", "cache/b"), plan,  # type: ignore[arg-type]
                               lines.append)
    assert paired is None
    assert lines == ["[bench] early stop: the base is evaluated in full first, because no task can stop early before "
                     "a run has results (mine: its headline metric is known only from a run's results, and the base "
                     "has none yet)"]
