"""Faults on real sessions (SmolLM2, real lm-eval): pytest SIGKILLed at random points, two sessions at once.

A SIGKILL cannot be caught, so what survives it is the product's design: files written atomically,
OS locks that vanish with their holder, a response cache that keeps every finished answer. The
kill points are drawn by a seeded RNG over the measured length of an uninterrupted session; the
uninterrupted sessions are two started at once on one cache, which is the concurrency test too.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock, Timeout

from pytest_finetune_bench.store.files import remove_stale_staging, staging_dir
from tests.conftest import read_json
from tests.models import share_task_index

# The smallest real session: two IFEval prompts, few new tokens. Identical for every session here.
SETTINGS = ("--bench-suite=test", "--bench-limit=2", "--bench-gen-kwargs=max_gen_toks=16", "--bench-batch-size=2",
            "-p", "no:cacheprovider", "-rA")
IFEVAL_METRICS = ("prompt_level_strict_acc,none", "inst_level_strict_acc,none",
                  "prompt_level_loose_acc,none", "inst_level_loose_acc,none")
KILL_SEED = 22
KILLS = 3
CHILD_MODULE = "pytest_finetune_bench.run.child"
SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass
class Sessions:
    """Pytest sessions on one model and one base cache: their exit codes, terminal output and wall time."""

    root: Path
    codes: list[int]
    logs: list[str]
    seconds: float

    @property
    def output(self) -> Path:
        return self.root / "out"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def finetuned_summaries(self) -> list[dict[str, Any]]:
        return [read_json(path) for path in sorted((self.output / "fine-tuned").glob("*/benchmark.json"))]


def _command(model: Path, data: Path, root: Path) -> list[str]:
    return [sys.executable, "-m", "pytest", f"--bench-model={model}", f"--bench-data-dir={data}",
            f"--bench-output={root / 'out'}", *SETTINGS]


def _start(command: list[str], root: Path, name: str) -> subprocess.Popen[bytes]:
    # Output to a file: a session blocked on a full pipe while holding a lock would stall the other.
    env = {**os.environ, "PYTEST_FINETUNE_BENCH_CACHE": str(root / "cache")}
    # lm-eval's task index is not what these tests are about (tests/test_trust.py checks its file): indexing
    # afresh in every session would only move the kill points into the indexing.
    share_task_index(root / "cache")
    with (root / f"{name}.txt").open("wb") as log:
        return subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)


def _scores(summary: dict[str, Any], side: str) -> dict[str, float]:
    results = summary[side]["results"]["ifeval"]
    return {metric: results[metric] for metric in IFEVAL_METRICS}


def _children(root: Path) -> list[int]:
    """Benchmark children (lm-eval) still running on files under `root`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and CHILD_MODULE.encode() in cmdline and str(root).encode() in b" ".join(cmdline):
            found.append(int(proc.name))
    return found


def _wait_for_no_children(root: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _children(root):
        assert time.monotonic() < deadline, f"benchmark children outlived their killed pytest: {_children(root)}"
        time.sleep(0.5)


def _torn_files(root: Path, *, scratch_too: bool) -> list[str]:
    """JSON and JSON-lines files under `root` that do not parse, SQLite files that fail their integrity
    check, and temporary files of unfinished writes.

    `scratch_too=False` leaves out hidden folders (a run's staging, a cache entry being built): a
    killed session leaves them behind, and nothing reads them.
    """
    torn = []
    for path in root.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(root).parts[:-1])
        if not path.is_file() or (hidden and not scratch_too):
            continue
        if path.suffix == ".tmp":
            torn.append(f"{path} (unfinished write)")
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".jsonl":
                [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            elif path.read_bytes()[:16] == SQLITE_HEADER:  # lm-eval's response cache
                _check_sqlite(path)
        except (ValueError, sqlite3.DatabaseError) as exc:
            torn.append(f"{path} ({exc})")
    return torn


def _check_sqlite(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        (verdict,) = db.execute("PRAGMA integrity_check").fetchone()
    if verdict != "ok":
        raise sqlite3.DatabaseError(verdict)


def _held_locks(*roots: Path) -> list[Path]:
    """Lock files under `roots` that some process still holds."""
    held = []
    for path in (lock for root in roots for lock in root.rglob("*.lock")):
        lock = FileLock(path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            held.append(path)
        else:
            lock.release()
    return held


@pytest.fixture(scope="module")
def concurrent(tmp_path_factory: pytest.TempPathFactory, regressed_outputs: Path, demo_data: Path) -> Sessions:
    """Two uninterrupted sessions started at once on the same model, output folder and base cache."""
    root = tmp_path_factory.mktemp("concurrent")
    command = _command(regressed_outputs, demo_data, root)
    started = time.monotonic()
    procs = [_start(command, root, f"session-{i}") for i in range(2)]
    codes = [proc.wait(timeout=1200) for proc in procs]
    seconds = time.monotonic() - started
    logs = [(root / f"session-{i}.txt").read_text() for i in range(2)]
    return Sessions(root, codes, logs, seconds)


def test_two_sessions_at_once_finish_with_equal_scores_and_one_base_run(concurrent: Sessions) -> None:
    logs = "\n".join(concurrent.logs)
    # The gates may fail (the model is made to regress); what may not happen is an error or a crash.
    assert concurrent.codes[0] == concurrent.codes[1] and concurrent.codes[0] in (0, 1), logs
    assert all("error" not in log.splitlines()[-1] for log in concurrent.logs), logs
    # One session evaluated the base; the other waited for it and took its scores from the cache.
    assert logs.count("[bench] base: evaluating") == 1, logs
    assert logs.count("[bench] base: scores from cache") == 1, logs
    summaries = concurrent.finetuned_summaries()
    assert len(summaries) == 2 and all(s["status"] == "complete" for s in summaries)
    assert sorted(s["base_model"]["from_cache"] for s in summaries) == [False, True]
    for side in ("base_model", "fine_tuned_model"):
        assert _scores(summaries[0], side) == _scores(summaries[1], side)
    assert _torn_files(concurrent.root, scratch_too=True) == []
    assert _held_locks(concurrent.root) == []


def test_sigkill_at_random_points_then_a_rerun_gives_the_uninterrupted_scores(
    concurrent: Sessions, regressed_outputs: Path, demo_data: Path, tmp_path: Path
) -> None:
    """pytest alone is SIGKILLed (as an OOM killer or a CI runner's hard stop would) at seeded points."""
    reference = concurrent.finetuned_summaries()[0]
    command = _command(regressed_outputs, demo_data, tmp_path)
    rng = random.Random(KILL_SEED)
    killed = 0
    for attempt in range(KILLS):
        proc = _start(command, tmp_path, f"killed-{attempt}")
        try:
            proc.wait(timeout=rng.uniform(0.0, 0.8) * concurrent.seconds)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            killed += 1
        _wait_for_no_children(tmp_path)
        # What a later session reads is whole, and nothing stays locked by the dead session.
        assert _torn_files(tmp_path, scratch_too=False) == []
        assert _held_locks(tmp_path) == []
    assert killed, "every session finished before its kill point: nothing was tested"

    rerun = _start(command, tmp_path, "rerun")
    code = rerun.wait(timeout=1200)
    log = (tmp_path / "rerun.txt").read_text()
    assert code in (0, 1) and "error" not in log.splitlines()[-1], log
    summary = read_json(tmp_path / "out" / "benchmark.json")
    assert summary["status"] == "complete", log
    for side in ("base_model", "fine_tuned_model"):
        assert _scores(summary, side) == _scores(reference, side)
    assert _torn_files(tmp_path, scratch_too=True) == []
    assert _held_locks(tmp_path) == []
    # The killed sessions' scratch folders are gone: the rerun removed those whose process had died.
    assert list((tmp_path / "out").rglob(".staging-*")) == []


def test_only_scratch_folders_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f".staging-fine-tuned-{dead.pid}-1").mkdir()  # a killed session's
    running = staging_dir(tmp_path, "base")  # this process's own
    (tmp_path / ".staging-notes").mkdir()  # not ours: no process id in its name
    remove_stale_staging(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, ".staging-notes"])
