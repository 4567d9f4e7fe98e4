"""Drive one lm-eval evaluation in a child process and collect its files (no pytest here)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends.openai import child_api_key, without_key
from pytest_finetune_bench.core.records import RunRecord, RunRequest
from pytest_finetune_bench.plan.offline import write_pruned_groups
from pytest_finetune_bench.store.files import read_json_file, staging_dir

Event = dict[str, Any]
EventSink = Callable[[Event], None]

KILL_GRACE_S = 10.0  # after SIGTERM, how long the child may take to flush its cache and exit


class RunFailed(BenchError):
    """The child process failed; `kind` says how (oom, missing_dependency, error, crashed)."""

    def __init__(self, kind: str, message: str, log_path: Path, generated: int = 0,
                 sides: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.log_path = log_path
        self.generated = generated  # responses produced (and cached) before it failed
        self.sides = dict(sides or {})  # a paired run's base: {role: responses it produced}

    def of(self, role: str) -> RunFailed:
        """The failure as one side of a paired run saw it: the same kind and message, that side's responses."""
        if role not in self.sides:
            return self
        return RunFailed(self.kind, str(self), self.log_path, self.sides[role])


def child_environment() -> dict[str, str]:
    """Settings that keep lm-eval's worker pools from deadlocking, and no more threads than cores."""
    env = dict(os.environ)
    env.update(child_api_key(os.environ))  # a stray newline in the key would make lm-eval's requests fail
    env["TOKENIZERS_PARALLELISM"] = "false"
    threads = str(max(1, min(os.cpu_count() or 1, 16)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, threads)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_lm_eval(request: RunRequest, on_event: EventSink, deadline: float | None = None) -> RunRecord:
    """Evaluate one model in a child process; progress goes to `on_event` as it happens.

    At `deadline` (time.monotonic()) the child tree is stopped and RunFailed("timeout") raised.
    """
    return run_sides(request, on_event, deadline)[0]


def run_sides(request: RunRequest, on_event: EventSink, deadline: float | None = None) -> list[RunRecord]:
    """run_lm_eval for a request that may be paired: its record, then its paired base's (request.sides)."""
    staging = staging_dir(request.results_dir.parent, request.role)
    try:
        spec_file = staging / "spec.json"
        spec_file.write_text(json.dumps(request.child_spec(staging / "out")))
        outcome = _supervise(request, spec_file, on_event, deadline)
        if outcome["event"] == "failed":
            raise RunFailed(outcome["kind"], without_key(str(outcome["message"])), request.log_path,
                            int(outcome.get("generated") or 0), outcome.get("sides"))
        # The child writes each side's files to its own folder and reports a paired base's counts apart.
        sides, folders = request.sides, [("out", outcome), ("out-base", outcome.get("paired_base") or {})]
        records = [_collect(side, staging / folder, counts)
                   for side, (folder, counts) in zip(sides, folders, strict=False)]
        for side, record in zip(sides, records, strict=True):
            if outcome.get("early_stop"):
                record.extra["early_stop"] = outcome["early_stop"]
            # Both sides of a paired run were scored by the same last call, on the same documents.
            record.scored_samples = _scored_samples(outcome.get("samples"))
            if outcome.get("groups"):
                record.scored_tasks = write_pruned_groups(_tasks_folder(record), side.settings.include_path,
                                                          outcome["groups"])
        return records
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _supervise(request: RunRequest, spec_file: Path, on_event: EventSink, deadline: float | None) -> Event:
    request.log_path.parent.mkdir(parents=True, exist_ok=True)
    with request.log_path.open("a", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_finetune_bench.run.child", str(spec_file)],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=child_environment(),
            text=True,
            start_new_session=True,  # its own process group, so the whole tree can be stopped
        )
        try:
            return _pump(proc, request, on_event, deadline)
        finally:
            # Also when pytest-timeout's alarm or Ctrl-C interrupts _pump: no child outlives its run.
            stop_process_tree(proc)


def _pump(proc: subprocess.Popen[str], request: RunRequest, on_event: EventSink, deadline: float | None) -> Event:
    events: queue.Queue[Event | None] = queue.Queue()
    threading.Thread(target=_read_events, args=(proc, events), daemon=True).start()
    final: Event | None = None
    stopper = _Stopper(proc, deadline)
    generated: dict[str, int] = {}  # responses produced so far, per model (a paired run's base names itself)
    while not stopper.check():
        try:
            event = events.get(timeout=1.0)
        except queue.Empty:
            on_event({"event": "tick", "role": request.role})
            continue
        if event is None:
            break
        role = event.setdefault("role", request.role)
        generated[role] = int(event.get("generated") or generated.get(role, 0))
        if event["event"] in ("finished", "failed"):
            final = event
        on_event(event)
    code = proc.wait()
    counts: Event = {"generated": generated.pop(request.role, 0)}
    if generated:  # a paired run's base
        counts["sides"] = generated
    if stopper.stopped_at is not None:
        # Whatever the child said last, it was stopped: a run that finished just in time still counts.
        if final is not None and final["event"] == "finished":
            return final
        return {"event": "failed", "kind": "timeout", "message": "stopped at its time limit", **counts}
    if final is None:
        return {"event": "failed", "kind": "crashed", "message": f"lm-eval exited with code {code} and no result",
                **counts}
    return final


class _Stopper:
    """Stops the child tree at the deadline without blocking: SIGTERM, then SIGKILL after the grace period.

    _pump keeps reading meanwhile, so the child's last event (how much it produced) still arrives.
    """

    def __init__(self, proc: subprocess.Popen[str], deadline: float | None) -> None:
        self.proc = proc
        self.deadline = deadline
        self.stopped_at: float | None = None
        self.killed = False

    def check(self) -> bool:
        """Act on the deadline; True once waiting for the child's output is pointless (killed long ago)."""
        now = time.monotonic()
        if self.deadline is None or now < self.deadline:
            return False
        if self.stopped_at is None:
            self.stopped_at = now
            _signal_group(self.proc, signal.SIGTERM)
        elif not self.killed and now - self.stopped_at >= KILL_GRACE_S:
            self.killed = True
            _signal_group(self.proc, signal.SIGKILL)
        # A process that left the group may hold the pipe open forever: stop reading a while after SIGKILL.
        return self.killed and now - self.stopped_at >= KILL_GRACE_S + 5.0


def _signal_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _read_events(proc: subprocess.Popen[str], events: queue.Queue[Event | None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "event" in event:
            events.put(event)
    events.put(None)


def stop_process_tree(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the child's process group, then SIGKILL after a grace period."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _collect(request: RunRequest, out: Path, outcome: Event) -> RunRecord:
    """`request`'s record from the files the child wrote in `out`; `outcome` says what it generated and scored."""
    results_files = sorted(out.rglob("results_*.json"))
    if not results_files:
        raise RunFailed("error", f"lm-eval finished but wrote no results (see {request.log_path})", request.log_path)
    request.results_dir.mkdir(parents=True, exist_ok=True)
    moved: list[Path] = []
    for file in results_files + sorted(out.rglob("samples_*.jsonl")):
        target = request.results_dir / file.name
        if target.exists():  # never overwrite an earlier run's file
            target = target.with_name(f"{target.stem}-{time.time_ns()}{target.suffix}")
        shutil.move(str(file), target)
        moved.append(target)
    results_file = moved[0]
    results = read_json_file(results_file, f"lm-eval wrote an unreadable results file; see {request.log_path}")
    samples = {_samples_task(p): p for p in moved[1:]}
    return RunRecord(
        role=request.role,
        model=request.model,
        results=results,
        results_file=results_file,
        samples_files=samples,
        timestamp=datetime.now().astimezone().isoformat(timespec="seconds"),
        generated=int(outcome.get("generated") or 0),
        progress=dict(outcome.get("progress") or {}),
    )


def _tasks_folder(record: RunRecord) -> Path:
    """Where the task folder that reproduces `record`'s groups goes: beside its results file, named after it."""
    return record.results_file.with_name(record.results_file.stem.replace("results", "tasks", 1))


def _scored_samples(selection: Any) -> dict[str, list[int]] | None:
    """The child's `samples=` selection, {task: doc ids}; None when lm-eval scored every document."""
    if not selection:
        return None
    return {str(task): [int(doc) for doc in ids] for task, ids in selection.items()}


def _samples_task(path: Path) -> str:
    # lm-eval names them samples_<task>_<ISO time>.jsonl
    return path.stem.removeprefix("samples_").rsplit("_", 1)[0]
