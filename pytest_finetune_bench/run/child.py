"""Child process that runs one lm-eval evaluation: `python -m pytest_finetune_bench.run.child SPEC.json`.

It runs apart from pytest so that a hang, a crash or CUDA running out of memory takes down this
process only. It reports to the parent as JSON lines on its original stdout; everything the
libraries print goes to stderr, which the parent keeps as the run's log. What its three modes share
(the task manager, the instrumented model, saving) is in child_lm.py.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from pytest_finetune_bench.run.child_lm import DataUnavailable, Events, completed_progress, evaluate, save


def classify(exc: BaseException) -> tuple[str, str]:
    """(kind, one-line message) for the parent to turn into advice."""
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0] if str(exc) else type(exc).__name__
    if "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError":
        return "oom", text
    if isinstance(exc, ModuleNotFoundError):
        return "missing_dependency", exc.name or text
    if isinstance(exc, Terminated):
        return "terminated", text
    if type(exc).__name__ == "NothingToScore":
        return "nothing_to_score", str(exc)
    if isinstance(exc, DataUnavailable):
        return "data_unreachable", str(exc)
    return "error", text


class Terminated(BaseException):
    """SIGTERM from the parent (a timeout): unwind, so the response cache is flushed and the parent told."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated("stopped by the parent (SIGTERM)")


def import_modules(names: list[str]) -> None:
    """Import the modules a backend names: they register the lm-eval model types it runs."""
    for name in names:
        importlib.import_module(name)


def _flush(cache: Any) -> None:
    """Wait until every response handed to the sqlite cache is committed (its writer thread is a daemon)."""
    if cache is None:
        return
    try:
        cache.commit(blocking=True)
    except Exception:  # noqa: BLE001 - a broken cache must not hide why the run stopped
        traceback.print_exc()


LANGDETECT_SEED = 0


def seed_scorers() -> None:
    """Make scoring deterministic: the same responses must always get the same score.

    IFEval's response-language and English-case checks call langdetect, which draws random numbers
    unseeded (lm-eval issue #4213), so a borderline response passes in one run and fails in the next.
    """
    try:
        from langdetect import DetectorFactory
    except ImportError:  # a run without IFEval's dependencies scores nothing that needs it
        return
    DetectorFactory.seed = LANGDETECT_SEED


PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 1.0
STOP_GRACE_S = 10.0  # after the parent is gone, how long the run may take to unwind before it is killed


def die_with_parent(parent: int) -> None:
    """Stop this run when the pytest process that started it dies, however it dies (SIGKILL included).

    The child runs in its own session, so a signal to pytest alone never reaches it. Linux sends
    SIGTERM at the parent's death (prctl); elsewhere, and as a second line, a thread watches for the
    parent to go. SIGTERM unwinds the run (the response cache is flushed); a run that has not ended
    STOP_GRACE_S later is killed with its process group.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE_S)
    os.killpg(os.getpgid(0), signal.SIGKILL)


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    signal.signal(signal.SIGTERM, _on_sigterm)
    die_with_parent(int(spec.get("parent_pid") or os.getppid()))
    seed_scorers()
    # Events keep the real stdout; anything libraries print joins stderr (the log).
    events = Events(os.fdopen(os.dup(1), "w", buffering=1))
    os.dup2(2, 1)
    try:
        import_modules(spec["imports"])
        finished: dict[str, Any] = {}
        if spec["mode"] == "score_partial":
            from pytest_finetune_bench.run.child_partial import score_cached

            results, progress, selection = score_cached(spec)
            generated = 0
            finished["samples"] = selection
        elif spec["mode"] == "early_stop":
            from pytest_finetune_bench.run.child_early_stop import evaluate_early

            results, generated, finished = evaluate_early(spec, events)
            progress = completed_progress(results)
        else:
            results, generated = evaluate(spec, events)
            progress = completed_progress(results)
        save(results, spec["output_path"])
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the parent as an event
        traceback.print_exc()
        for channel in (events, *events.sides.values()):
            _flush(channel.cache)
        kind, message = classify(exc)
        # A paired run's base counts its own responses (each side's partial scores say how many it produced).
        sides = {role: channel.generated for role, channel in events.sides.items()}
        events.send("failed", kind=kind, message=message, generated=events.generated, sides=sides)
        return 3 if kind == "oom" else 143 if kind == "terminated" else 2
    events.send("finished", generated=generated, progress=progress, **finished)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
