"""Turn the child's events into terminal lines: progress while it runs, a heartbeat when it is quiet."""

from __future__ import annotations

import time
from collections.abc import Callable

from pytest_finetune_bench.run.early_stop import early_stop_progress
from pytest_finetune_bench.run.engine import Event
from pytest_finetune_bench.run.watchdog import format_duration

QUIET_WARNING_S = 60.0
HEARTBEAT_EVERY_S = 30.0
SHOWN_TASKS = 4  # tasks named in a line about many; the rest are counted


class ProgressPrinter:
    """Progress per task (samples done/total) and, after a silence, elapsed time and an ETA."""

    def __init__(self, say: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.say = say
        self.clock = clock
        self.started = clock()
        self.last_output = self.started
        self.last_heartbeat = 0.0
        self.task = ""
        self.done = 0
        self.total = 0
        # (time, samples done) when the task's first and latest progress arrived: the basis of the ETA.
        self.first_seen: tuple[float, int] | None = None
        self.last_seen: tuple[float, int] | None = None

    def __call__(self, event: Event) -> None:
        kind = event["event"]
        role = event.get("role", "")
        if kind == "tick":
            self._heartbeat(role)
            return
        self.last_output = self.clock()
        if kind == "loading_data":
            self.say(f"[bench] {role}: loading the data of {', '.join(event.get('tasks', []))}")
        elif kind == "workload":
            for line in workload_lines(role, event):
                self.say(line)
        elif kind == "loading":
            self.say(f"[bench] {role}: loading model ({event.get('model', '')})")
        elif kind == "requests":
            counts = event.get("tasks", {})
            tasks = first_tasks([f"{t} {n}" for t, n in counts.items()])
            total = f" ({sum(map(int, counts.values()))} in all)" if len(counts) > SHOWN_TASKS else ""
            self.say(f"[bench] {role}: {event.get('kind')} requests to run: {tasks}{total}")
        elif kind == "progress":
            self._progress(role, event)
        elif kind == "early_stop":
            self.say(early_stop_progress(role, event))
        elif kind == "finished":
            self.say(f"[bench] {role}: done in {self._elapsed()} ({event.get('generated', 0)} responses generated)")
        elif kind == "failed":
            self.say(f"[bench] {role}: failed: {event.get('message')}")

    def _progress(self, role: str, event: Event) -> None:
        task = str(event["task"])
        if task != self.task:
            self.first_seen = None
        self.task, self.done, self.total = task, int(event["done"]), int(event["total"])
        now = self.clock()
        self.first_seen = self.first_seen or (now, self.done)
        self.last_seen = (now, self.done)
        pct = self.done / self.total * 100 if self.total else 0.0
        self.say(f"[bench] {role}: {self.task} {self.done}/{self.total} samples ({pct:.0f}%)")

    def _heartbeat(self, role: str) -> None:
        now = self.clock()
        quiet = now - self.last_output
        if quiet < QUIET_WARNING_S or now - self.last_heartbeat < HEARTBEAT_EVERY_S:
            return
        self.last_heartbeat = now
        where = f"; {self.task} {self.done}/{self.total} samples" if self.total else ""
        elapsed = self._elapsed()
        self.say(f"[bench] {role}: no output for {quiet:.0f}s, still running after {elapsed}{where}{self._eta()}")

    def _eta(self) -> str:
        """Time left from the pace between the first and the latest progress; "estimating…" before there is one.

        A batched model answers a whole batch at once, and the child reports the first answer of each
        burst, so one report is no pace at all (1 of 24 done after one batch of 12 is 12 done). Between
        two reports, though, whole batches finished: their time over the samples between them is the pace,
        without the model's loading and warm-up in it.
        """
        if not self.total or self.first_seen is None or self.last_seen is None:
            return ""
        (first_time, first_done), (last_time, last_done) = self.first_seen, self.last_seen
        if last_done <= first_done:
            return ", estimating time left…"
        rate = (last_time - first_time) / (last_done - first_done)
        return f", about {_fmt(rate * (self.total - last_done))} left"

    def _elapsed(self) -> str:
        return _fmt(self.clock() - self.started)


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# Token slots (documents x max_gen_toks) a CPU decodes per second, times the model's parameter count:
# each step reads every weight, so speed falls with size. Measured with SmolLM2-135M at batch 4 on 2 cores
# (docs/performance.md); a rough figure, good for telling minutes from hours.
CPU_TOKEN_PARAMS_PER_S = 44 * 135e6
LONG_RUN_S = 30 * 60
SHORTEN_HINT = ("to shorten it: --bench-limit 50, --bench-gen-kwargs max_gen_toks=256, or --bench-suite test "
                "(see docs/performance.md)")


def generation_seconds(event: Event) -> float | None:
    """Rough upper bound of the time a CPU needs for the run's generations; None where it cannot tell."""
    params = event.get("model_params")
    if event.get("device") != "cpu" or not params:
        return None
    tokens = sum(int(t["docs"]) * int(t["max_gen_toks"]) for t in event.get("tasks", {}).values())
    return tokens * float(params) / CPU_TOKEN_PARAMS_PER_S if tokens else None


def first_tasks(parts: list[str]) -> str:
    """The first few of one line per task, joined: a group such as MMLU has dozens of subtasks."""
    more = len(parts) - SHOWN_TASKS
    return ", ".join(parts[:SHOWN_TASKS]) + (f" and {more} more tasks" if more > 0 else "")


def workload_lines(role: str, event: Event) -> list[str]:
    """What the run will do and, on a CPU, about how long its generations may take."""
    tasks = event.get("tasks", {})
    parts = [f"{name} {t['docs']} docs" + (f" x up to {t['max_gen_toks']} new tokens" if t["max_gen_toks"] else "")
             for name, t in tasks.items()]
    lines = [f"[bench] {role}: {first_tasks(parts)}"]
    seconds = generation_seconds(event)
    if seconds is not None and seconds >= LONG_RUN_S:
        lines.append(f"[bench] {role}: WARNING: on this CPU the generations alone may take up to "
                     f"{format_duration(seconds)} (rough estimate); {SHORTEN_HINT}")
    return lines
