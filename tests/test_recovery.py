"""Recovery: partial scores after a timeout or a crash, resuming, out-of-memory retries, nothing lost.

The sessions run the fake lm-eval model of tests/fake_lm.py in real child processes (real lm-eval,
real response cache, real signals); one test does the same with the real SmolLM2 model.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_finetune_bench.run.child_partial import complete_documents, keep_documents
from pytest_finetune_bench.run.recovery import halve_batch_size, overall_status, partial_note
from pytest_finetune_bench.store.summaries import INCOMPLETE_SUMMARY, latest_complete_run, publish_summary
from tests.conftest import FAST_ARGS
from tests.fake_backend import HANG_ENV
from tests.fake_sessions import LIMIT, bench_args, make_fake_model, own_cache_dir, read_summary, use_fake_lm

TIMEOUT = "15s"  # far above the fake child's start-up (~5 s); the hang makes the stop point exact


def _instance(doc_id: int, cached: bool) -> Any:
    return SimpleNamespace(doc_id=doc_id, cached=cached)


def test_complete_documents_need_every_request_cached() -> None:
    # Doc 0: both requests cached; doc 1: one missing; doc 2: cached; doc 3: missing.
    instances = [_instance(0, True), _instance(0, True), _instance(1, True), _instance(1, False),
                 _instance(2, True), _instance(3, False)]
    done, total = complete_documents(instances, lambda inst: inst.cached)
    assert (done, total) == ([0, 2], 4)


def test_keep_documents_numbers_them_as_lm_eval_samples_selection_does() -> None:
    task = SimpleNamespace(instances=[_instance(d, True) for d in (0, 1, 1, 3, 5)])
    task._instances = task.instances
    keep_documents(task, [1, 5])
    # lm-eval's samples= iteration numbers the selected documents 0, 1, … in document order.
    assert [inst.doc_id for inst in task._instances] == [0, 0, 1]


@pytest.mark.parametrize(("size", "smaller"), [("8", "4"), ("3", "1"), ("1", None), ("auto", "8"), ("auto:4", "8")])
def test_out_of_memory_halves_the_batch_size_down_to_one(size: str, smaller: str | None) -> None:
    assert halve_batch_size(size) == smaller


@pytest.mark.parametrize(
    ("statuses", "overall"),
    [
        ({"base": "complete", "fine-tuned": "complete"}, "complete"),
        ({"base": "complete", "fine-tuned": "timeout"}, "timeout"),
        ({"base": "timeout", "fine-tuned": "crashed"}, "crashed"),
        ({"base": "complete"}, "incomplete"),
        ({}, "incomplete"),
    ],
)
def test_overall_status_is_the_worst_side(statuses: dict[str, str], overall: str) -> None:
    assert overall_status(statuses) == overall


def test_partial_note_counts_group_subtasks() -> None:
    record = SimpleNamespace(partial=True, progress={"mmlu_anatomy": {"done": 2, "total": 5},
                                                     "mmlu_astronomy": {"done": 0, "total": 5}})
    complete = SimpleNamespace(partial=False, progress={})
    notes = partial_note({"base": complete, "fine-tuned": record}, ["mmlu", "ifeval"])  # type: ignore[dict-item]
    assert notes == {"mmlu": "partial: fine-tuned 2/10"}


def _summary(status: str) -> dict[str, Any]:
    return {"status": status, "timestamp": status}


def test_incomplete_session_never_replaces_the_last_complete_summary(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks"
    good_run = out / "fine-tuned" / "2024-05-01T10-00-00"
    bad_run = out / "fine-tuned" / "2024-05-01T11-00-00"
    empty_run = out / "fine-tuned" / "2024-05-01T12-00-00"  # left by a session killed with SIGKILL
    for folder in (good_run, bad_run, empty_run):
        folder.mkdir(parents=True)
    assert publish_summary(out, good_run, _summary("complete")) == out / "benchmark.json"
    assert publish_summary(out, bad_run, _summary("timeout")) == bad_run / "benchmark.json"
    assert read_summary(out / "benchmark.json")["status"] == "complete"
    assert read_summary(bad_run / "benchmark.json")["status"] == "timeout"
    assert latest_complete_run(out) == good_run
    # A session that failed before its run folder existed keeps its summary aside.
    assert publish_summary(out, None, _summary("crashed")) == out / INCOMPLETE_SUMMARY
    assert read_summary(out / "benchmark.json")["status"] == "complete"


def test_a_corrupt_summary_is_set_aside_not_lost(tmp_path: Path) -> None:
    (tmp_path / "benchmark.json").write_text('{"status": "compl')
    publish_summary(tmp_path, None, _summary("timeout"))
    assert read_summary(tmp_path / "benchmark.json")["status"] == "timeout"
    kept = list(tmp_path.glob("benchmark.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == '{"status": "compl'


def test_same_second_runs_sort_after_their_first(tmp_path: Path) -> None:
    for name in ("2024-05-01T10-00-00", "2024-05-01T10-00-00-2", "2024-05-01T09-59-59"):
        run = tmp_path / "fine-tuned" / name
        run.mkdir(parents=True)
        publish_summary(tmp_path, run, _summary("complete"))
    assert latest_complete_run(tmp_path) == tmp_path / "fine-tuned" / "2024-05-01T10-00-00-2"


@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
def test_timeout_scores_partial_then_next_session_resumes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_fake_model(pytester.path)
    out = pytester.path / "out"
    # Only the fine-tuned model hangs, after 3 answers.
    use_fake_lm(monkeypatch, "hang_after=3,only=merged_16bit")
    first = pytester.runpytest_subprocess(*bench_args(model, out, f"--bench-timeout={TIMEOUT}"))
    first.assert_outcomes(failed=2)
    reason = f"fine-tuned run timed out after {TIMEOUT}: scored 3 of {LIMIT} samples (partial); re-run to resume"
    assert first.stdout.str().count(reason) >= 3  # both gates (their failure reports) and the summary say why
    first.stdout.fnmatch_lines(
        [f"Instruction-Following (IFEval)*partial: fine-tuned 3/{LIMIT}", f"PARTIAL SCORES: {reason}"]
    )
    summary = read_summary(out / "benchmark.json")  # no complete session before: the latest summary is this one
    assert summary["status"] == "timeout"
    assert summary["run_status"] == {"base": "complete", "fine-tuned": "timeout"}
    ft = summary["fine_tuned_model"]
    assert ft["status"] == "timeout" and ft["generated"] == 3
    assert ft["samples"] == {"ifeval": {"done": 3, "total": LIMIT}}
    assert ft["results"]["ifeval"]["sample_len"] == 3  # lm-eval itself scored the 3 complete samples
    assert summary["base_model"]["samples"] == {"ifeval": {"done": LIMIT, "total": LIMIT}}

    # The next session generates only the 7 missing answers, from the same response cache.
    use_fake_lm(monkeypatch)
    second = pytester.runpytest_subprocess(*bench_args(model, out, f"--bench-timeout={TIMEOUT}", "--bench-min-gain=0"))
    second.assert_outcomes(passed=2)
    summary = read_summary(out / "benchmark.json")
    assert summary["status"] == "complete"
    assert summary["fine_tuned_model"]["generated"] == LIMIT - 3
    assert summary["fine_tuned_model"]["samples"] == {"ifeval": {"done": LIMIT, "total": LIMIT}}
    good_run = latest_complete_run(out)
    assert good_run is not None and good_run.name == Path(summary["fine_tuned_model"]["benchmark_dir"]).name

    # A later crash (new settings: a new cache) keeps its partial scores but not the last good summary's place.
    use_fake_lm(monkeypatch, "crash_after=2,only=merged_16bit")
    third = pytester.runpytest_subprocess(*bench_args(model, out, "--bench-limit=12"))
    third.assert_outcomes(failed=2)
    third.stdout.fnmatch_lines(["*fine-tuned run crashed (lm-eval exited with code -9 and no result): "
                                "scored 2 of 12 samples (partial); re-run to resume*"])
    assert read_summary(out / "benchmark.json")["status"] == "complete"
    assert latest_complete_run(out) == good_run
    crashed = [p for p in (out / "fine-tuned").iterdir() if p != good_run and read_summary(p / "benchmark.json")
               ["status"] == "crashed"]
    assert len(crashed) == 1
    third.stdout.fnmatch_lines([f"results: {crashed[0] / 'benchmark.json'}"])


@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
def test_out_of_memory_retries_with_half_the_batch_size(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_fake_model(pytester.path)
    use_fake_lm(monkeypatch, "oom_above_batch=1")
    result = pytester.runpytest_subprocess(*bench_args(model, pytester.path / "out", "--bench-min-gain=0"))
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "[[]bench[]] base: out of GPU memory at batch size 4: retrying with batch size 2",
        "[[]bench[]] base: out of GPU memory at batch size 2: retrying with batch size 1",
        "[[]bench[]] base: done in *",
    ])
    # What finished is what is recorded and reproduced; what was asked for stands beside it.
    summary = read_summary(pytester.path / "out" / "benchmark.json")
    reproduce = summary["reproduce"]
    assert (reproduce["batch_size"], reproduce["batch_size_requested"]) == ("1", "4")
    assert summary["base_model"]["batch_size"] == summary["fine_tuned_model"]["batch_size"] == "1"
    assert all(" --batch_size 1 " in command for command in reproduce["commands"].values())


def session_with_a_broken(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, target: str,
                          error: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    """A fake session in which `target` ("module:attribute" of the plugin) raises `error`; its summary."""
    model = make_fake_model(pytester.path)
    use_fake_lm(monkeypatch)
    module, _, attribute = target.partition(":")
    pytester.makeconftest(
        f"import {module} as target\n"
        "def broken(*args, **kwargs):\n"
        f"    raise {error}\n"
        f"target.{attribute} = broken\n"
    )
    result = pytester.runpytest_subprocess(*bench_args(model, pytester.path / "out", "--bench-min-gain=0"))
    return result, read_summary(pytester.path / "out" / "benchmark.json")


@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
def test_a_statistics_failure_never_costs_the_scores(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, summary = session_with_a_broken(pytester, monkeypatch, "pytest_finetune_bench.compare.evidence:analyse",
                                            "RuntimeError('forced statistics failure')")
    result.assert_outcomes(passed=2)  # the gates still decide on the scores
    message = "statistics and flips failed (RuntimeError: forced statistics failure); the scores are kept"
    assert result.stdout.str().count(message) >= 2  # said when it happens, and in the summary
    assert summary["status"] == "complete" and summary["errors"] == {"comparison": message}
    ifeval = summary["comparison"]["ifeval"]
    assert ifeval["base_accuracy"] is not None and ifeval["finetuned_accuracy"] is not None
    assert "stats" not in ifeval


@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
def test_out_of_memory_at_batch_size_one_names_the_remedies(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_fake_model(pytester.path)
    use_fake_lm(monkeypatch, "oom_above_batch=0")
    result = pytester.runpytest_subprocess(*bench_args(model, pytester.path / "out", "--bench-batch-size=2"))
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "base run ran out of GPU memory even at batch size 1: use a smaller --bench-batch-size, "
        "the merged_4bit export, or the Ollama backend (--bench-backend ollama) (log: *",
    ])
    assert "Traceback" not in result.stdout.str()


@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
def test_two_sessions_on_one_model_share_the_work_and_corrupt_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_fake_model(pytester.path)
    out = pytester.path / "out"
    use_fake_lm(monkeypatch)
    args = [sys.executable, "-m", "pytest", *bench_args(model, out, "--bench-min-gain=0")]
    logs = [pytester.path / f"session-{i}.txt" for i in range(2)]
    # Output to files: a session blocked on a full pipe while holding a lock would stall the other.
    handles = [log.open("w") for log in logs]
    sessions = [pytester.popen(args, stdout=handle, stderr=handle) for handle in handles]
    codes = [proc.wait(timeout=600) for proc in sessions]
    for handle in handles:
        handle.close()
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], outputs
    assert read_summary(out / "benchmark.json")["status"] == "complete"
    runs = sorted((out / "fine-tuned").iterdir())
    assert len(runs) == 2
    generated = [read_summary(run / "benchmark.json")["fine_tuned_model"]["generated"] for run in runs]
    # One session generated every answer; the other waited for the cache's lock and generated none.
    assert sorted(generated) == [0, LIMIT], outputs


def test_real_model_killed_by_timeout_resumes_where_it_stopped(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, regressed_outputs: Path, demo_data: Path
) -> None:
    """SmolLM2 for real: the fine-tuned run hangs after 1 of 4 generations, is stopped, scored, then resumed.

    The base run is not made to hang, but on a busy machine it may hit the limit too: then it must
    resume the same way. Either way the second session generates exactly the samples still missing.
    """
    out = pytester.path / "out"
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    monkeypatch.setenv(HANG_ENV, "regressed-smollm2:1")
    args = ["-p", "tests.fake_backend", "--bench-backend=hf-hang", f"--bench-model={regressed_outputs}",
            f"--bench-cache-dir={own_cache_dir(pytester.path / 'cache')}", f"--bench-data-dir={demo_data}",
            f"--bench-output={out}",
            "--bench-suite=test", "--bench-limit=4", *FAST_ARGS, "--bench-batch-size=1", "-rA"]
    # Generous: the child loads torch, the model and the task before its first generation.
    first = pytester.runpytest_subprocess(*args, "--bench-timeout=60s")
    first.assert_outcomes(failed=2)
    first.stdout.fnmatch_lines(["*fine-tuned run timed out after 1m: scored 1 of 4 samples (partial)*"])
    summary = read_summary(out / "benchmark.json")
    assert summary["run_status"]["fine-tuned"] == "timeout"
    ft, base = summary["fine_tuned_model"], summary["base_model"]
    assert ft["generated"] == 1 and ft["samples"] == {"ifeval": {"done": 1, "total": 4}}
    assert ft["results"]["ifeval"]["sample_len"] == 1  # lm-eval scored the one complete sample
    base_done = base["samples"]["ifeval"]["done"]
    assert base["generated"] == base_done and (base["status"] == "complete") == (base_done == 4)

    monkeypatch.delenv(HANG_ENV)
    second = pytester.runpytest_subprocess(*args)
    assert second.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)  # the gates judge complete scores
    assert "PARTIAL" not in second.stdout.str()
    summary = read_summary(out / "benchmark.json")
    assert summary["status"] == "complete"
    assert summary["fine_tuned_model"]["generated"] == 3  # only the missing ones
    assert summary["fine_tuned_model"]["results"]["ifeval"]["sample_len"] == 4
    if base_done < 4:
        assert summary["base_model"]["generated"] == 4 - base_done


@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
def test_a_summary_failure_still_writes_the_scores(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    target = "pytest_finetune_bench.report.summary:reproduce"
    result, summary = session_with_a_broken(pytester, monkeypatch, target, "KeyError('forced summary failure')")
    assert "building the summary failed (KeyError: 'forced summary failure'); it holds the scores only" in (
        result.stdout.str())
    assert summary["status"] == "complete" and "forced summary failure" in summary["errors"]["summary"]
    for side in ("base_model", "fine_tuned_model"):
        assert "prompt_level_strict_acc,none" in summary[side]["results"]["ifeval"]
