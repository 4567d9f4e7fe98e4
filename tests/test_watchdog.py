"""The watchdog: --bench-timeout, pytest-timeout on the gates, the child tree stopped, the heartbeat."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_finetune_bench.run import engine
from pytest_finetune_bench.run.engine import child_environment
from pytest_finetune_bench.run.progress import ProgressPrinter, generation_seconds
from pytest_finetune_bench.run.watchdog import format_duration, gate_item_timeout
from tests.fake_sessions import bench_args, make_fake_model, read_summary, use_fake_lm


def _model(pytester: pytest.Pytester) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")


def _timeout_markers(pytester: pytest.Pytester, *args: str) -> list[Any]:
    items, _ = pytester.inline_genitems("--bench-model=model", "--bench-base=model", *args)
    return [item.get_closest_marker("timeout") for item in items]


def test_bench_timeout_puts_a_signal_timeout_on_the_gates(pytester: pytest.Pytester) -> None:
    _model(pytester)
    markers = _timeout_markers(pytester, "--bench-timeout=10m")
    assert len(markers) == 2
    for marker in markers:
        assert marker.args == (gate_item_timeout(600),)
        assert marker.kwargs == {"method": "signal"}  # `thread` would os._exit and lose benchmark.json


def test_bench_timeout_ini_twin(pytester: pytest.Pytester) -> None:
    _model(pytester)
    pytester.makeini("[pytest]\nbench_timeout = 30min\n")
    assert [m.args for m in _timeout_markers(pytester)] == [(gate_item_timeout(1800),)] * 2


@pytest.mark.parametrize("args", [(), ("--bench-timeout=10m", "-p", "no:timeout"), ("--bench-timeout=off",)])
def test_no_gate_timeout_when_off_or_without_pytest_timeout(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    _model(pytester)
    assert _timeout_markers(pytester, *args) == [None, None]


@pytest.mark.parametrize(("text", "seconds"), [("30min", 1800), ("10m", 600), ("600s", 600), ("600", 600),
                                               ("1h", 3600)])
def test_timeout_accepts_the_usual_spellings(pytester: pytest.Pytester, text: str, seconds: float) -> None:
    _model(pytester)
    assert _timeout_markers(pytester, f"--bench-timeout={text}")[0].args == (gate_item_timeout(seconds),)


def test_gate_backstop_outlasts_both_runs_and_their_scoring() -> None:
    # Two runs of 10 minutes, each scored afterwards within 10 minutes: the engine stops them first.
    budget = gate_item_timeout(600)
    assert budget is not None and budget > 2 * (600 + 600)
    assert gate_item_timeout(None) is None


@pytest.mark.parametrize(("seconds", "text"), [(600, "10m"), (5400, "1h30m"), (45, "45s"), (125, "2m05s"),
                                               (3600, "1h")])
def test_durations_read_as_users_write_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_heartbeat_after_a_silence_then_every_30_seconds_with_eta() -> None:
    clock, lines = FakeClock(), list[str]()
    printer = ProgressPrinter(lines.append, clock)
    tick = {"event": "tick", "role": "base"}

    def at(now: float, event: dict[str, Any]) -> list[str]:
        clock.now = now
        before = len(lines)
        printer(dict(event))
        return lines[before:]

    assert at(1059, tick) == []  # quiet for less than a minute: nothing to say
    assert at(1061, tick) == ["[bench] base: no output for 61s, still running after 1m01s"]
    assert at(1075, tick) == []  # the next heartbeat comes 30 s later
    assert at(1091, tick) == ["[bench] base: no output for 91s, still running after 1m31s"]
    requests = {"event": "requests", "role": "base", "kind": "generate_until", "tasks": {"ifeval": 10}}
    assert at(1100, requests) == ["[bench] base: generate_until requests to run: ifeval 10"]
    many = {**requests, "kind": "loglikelihood", "tasks": {f"mmlu_{i}": 8 for i in range(57)}}
    assert at(1100, many) == ["[bench] base: loglikelihood requests to run: mmlu_0 8, mmlu_1 8, mmlu_2 8, mmlu_3 8 "
                              "and 53 more tasks (456 in all)"]
    progress = {"event": "progress", "role": "base", "task": "ifeval", "total": 10}
    assert at(1110, {**progress, "done": 1}) == ["[bench] base: ifeval 1/10 samples (10%)"]
    assert at(1130, {**progress, "done": 3}) == ["[bench] base: ifeval 3/10 samples (30%)"]
    assert at(1180, tick) == []
    # 2 samples in the 20 s between the first and the latest report: the 7 left take about 70 s.
    assert at(1190, tick) == [
        "[bench] base: no output for 60s, still running after 3m10s; ifeval 3/10 samples, about 1m10s left"
    ]


def test_one_finished_batch_is_no_basis_for_an_eta() -> None:
    """24 prompts at batch size 12: the first report ("1/24") comes when 12 are done, after model loading."""
    clock, lines = FakeClock(), list[str]()
    printer = ProgressPrinter(lines.append, clock)
    progress = {"event": "progress", "role": "base", "task": "ifeval", "total": 24}
    tick = {"event": "tick", "role": "base"}
    clock.now = 1540  # 9 minutes of loading and the first batch
    printer({**progress, "done": 1})
    clock.now = 1610
    printer(tick)
    assert lines[-1].endswith("; ifeval 1/24 samples, estimating time left…")
    clock.now = 1900  # the second batch: 6 minutes for 12 samples
    printer({**progress, "done": 13})
    clock.now = 1970
    printer(tick)
    assert lines[-1].endswith("; ifeval 13/24 samples, about 5m30s left")


def test_child_environment_is_safe_for_lm_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    env = child_environment()
    assert env["TOKENIZERS_PARALLELISM"] == "false"  # tokenizers' pool deadlocks after lm-eval forks
    threads = int(env["OMP_NUM_THREADS"])
    assert 1 <= threads <= min(os.cpu_count() or 1, 16)
    assert env["MKL_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == str(threads)
    assert env["PYTHONUNBUFFERED"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert child_environment()["OMP_NUM_THREADS"] == "3"  # the user's own choice stands


# A stand-in for the child: one progress event, a grandchild, then a hang.
HANGING_CHILD = """
import json, signal, subprocess, sys, time
if sys.argv[1] == "ignore-sigterm":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the grandchild too
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
event = {"event": "progress", "task": "t", "done": 1, "total": 3, "generated": 1, "grandchild": grandchild.pid}
print(json.dumps(event), flush=True)
time.sleep(600)
"""


def alive(pid: int, settle_s: float = 5.0) -> bool:
    """Whether `pid` still runs after `settle_s` (a zombie that no parent reaps does not run).

    SIGKILL is delivered asynchronously: give the kernel a moment before calling it a survivor.
    """
    deadline = time.monotonic() + settle_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state in ("Z", "X"):
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.1)


@pytest.mark.parametrize("mode", ["obeys-sigterm", "ignore-sigterm"])
def test_deadline_stops_the_whole_child_tree(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setattr(engine, "KILL_GRACE_S", 2.0)
    proc = subprocess.Popen([sys.executable, "-c", HANGING_CHILD, mode], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    events: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        outcome = engine._pump(proc, SimpleNamespace(role="base"), events.append, started + 3.0)  # type: ignore[arg-type]
    finally:
        engine.stop_process_tree(proc)
    elapsed = time.monotonic() - started
    assert outcome == {"event": "failed", "kind": "timeout", "message": "stopped at its time limit", "generated": 1}
    grandchild = next(e["grandchild"] for e in events if e["event"] == "progress")
    assert not alive(proc.pid) and not alive(grandchild)
    # SIGTERM ends it at once; a child that ignores SIGTERM is killed after the grace period.
    assert elapsed < (8.0 if mode == "obeys-sigterm" else 3.0 + 2.0 + 8.0), elapsed


@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
def test_pytest_timeout_inside_a_run_stops_the_child_and_is_recorded(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest-timeout's own marker and --timeout keep working, and its alarm does not leak a child."""
    model = make_fake_model(pytester.path)
    pids = pytester.path / "pids"
    use_fake_lm(monkeypatch, f"hang_after=2,pid_dir={pids}")
    pytester.makepyfile(
        """
        import time
        import pytest

        @pytest.mark.timeout(20)
        def test_uses_result(bench_result):
            pass

        @pytest.mark.timeout(1)
        def test_unrelated_slow():
            time.sleep(5)

        def test_unrelated_fast():
            pass
        """
    )
    out = pytester.path / "out"
    result = pytester.runpytest_subprocess(*bench_args(model, out, "--timeout=300"))
    result.assert_outcomes(passed=1, failed=3, errors=1)
    text = result.stdout.str()
    assert "Timeout (>20.0s) from pytest-timeout" in text and "Timeout (>1.0s) from pytest-timeout" in text
    result.stdout.fnmatch_lines(["base run was stopped by pytest-timeout (Timeout (>20.0s) from pytest-timeout.); "
                                 "re-run to resume"])
    summary = read_summary(out / "benchmark.json")
    assert summary["status"] == "timeout" and summary["run_status"] == {"base": "timeout"}
    children = [int(p.stem) for p in pids.glob("*.pid")]
    assert len(children) == 1 and not alive(children[0])



def _workload(docs: int, max_gen_toks: int, params: int | None, device: str = "cpu") -> dict[str, Any]:
    return {"event": "workload", "role": "base", "device": device, "model_params": params,
            "tasks": {"ifeval": {"docs": docs, "output_type": "generate_until", "max_gen_toks": max_gen_toks}}}


def test_workload_is_said_and_a_long_cpu_run_warned_up_front() -> None:
    lines: list[str] = []
    printer = ProgressPrinter(lines.append, FakeClock())
    printer(_workload(24, 256, 135_000_000))
    assert lines == ["[bench] base: ifeval 24 docs x up to 256 new tokens"]  # minutes: no warning
    lines.clear()
    printer(_workload(541, 1280, 135_000_000))  # the quick suite as lm-eval defines it
    assert lines[0] == "[bench] base: ifeval 541 docs x up to 1280 new tokens"
    assert lines[1].startswith("[bench] base: WARNING: on this CPU the generations alone may take up to ")
    assert "--bench-limit" in lines[1] and "max_gen_toks=256" in lines[1] and "--bench-suite test" in lines[1]
    # Twice the parameters, twice the time.
    assert generation_seconds(_workload(541, 1280, 270_000_000)) == pytest.approx(
        2 * (generation_seconds(_workload(541, 1280, 135_000_000)) or 0))


@pytest.mark.parametrize("event", [_workload(541, 1280, 135_000_000, device="cuda"), _workload(541, 1280, None),
                                   _workload(541, 0, 135_000_000)])
def test_no_duration_estimate_without_cpu_generation_and_a_known_size(event: dict[str, Any]) -> None:
    assert generation_seconds(event) is None


def _first_pid(folder: Path, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = sorted(folder.glob("*.pid"))
        if found:
            return int(found[0].stem)
        time.sleep(0.5)
    raise AssertionError(f"no benchmark child started within {timeout_s}s")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_no_child_outlives_its_pytest(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                      sig: signal.Signals) -> None:
    """A CI runner's SIGTERM, a Ctrl-C or even SIGKILL to pytest alone: its lm-eval child stops within seconds."""
    model = make_fake_model(pytester.path)
    pids = pytester.path / "pids"
    use_fake_lm(monkeypatch, f"hang_after=1,pid_dir={pids}")
    # A job started in the background inherits SIGINT ignored, and Python then installs no handler for it:
    # the inner pytest gets SIGINT's default disposition, as from an interactive shell, however this one started.
    pytest_proc = subprocess.Popen([sys.executable, "-m", "pytest", *bench_args(model, pytester.path / "out")],
                                   cwd=pytester.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   preexec_fn=_default_sigint)
    try:
        child = _first_pid(pids, timeout_s=180)
        time.sleep(2.0)  # the child is hanging in its run now
        pytest_proc.send_signal(sig)  # to pytest alone: the child is in a session of its own
        pytest_proc.wait(timeout=60)
    finally:
        if pytest_proc.poll() is None:
            pytest_proc.kill()
    assert not alive(child, settle_s=15.0)
