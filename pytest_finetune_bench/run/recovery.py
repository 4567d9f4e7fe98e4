"""A model run that survives its failures: time limit, out-of-memory retries, partial scores (no pytest here).

- Time limit: the engine stops the child tree at the deadline (`--bench-timeout`).
- Out of memory: the run is retried with the batch size halved, down to 1, then refused in one line;
  on vLLM the share of GPU memory it reserves is lowered first (gpu_memory_utilization).
- Timeout or crash: the responses produced so far are in lm-eval's response cache; a score-only
  child (see _partial.py) scores the documents they complete, and the record says `timeout` or
  `crashed` with done/total per task. The next session resumes from the same cache.
- Every other failure becomes one line that says what to do.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.core.records import RunRecord, RunRequest
from pytest_finetune_bench.run.engine import EventSink, RunFailed, run_lm_eval, run_sides
from pytest_finetune_bench.run.watchdog import format_duration, recovery_limit
from pytest_finetune_bench.store.locks import locked

Say = Callable[[str], None]

OOM_REMEDIES = (
    "use a smaller --bench-batch-size, the merged_4bit export, or the Ollama backend (--bench-backend ollama)"
)
VLLM_OOM_REMEDIES = (
    "use a shorter --bench-max-model-len, more GPUs per copy (--bench-tensor-parallel), or a smaller "
    "--bench-batch-size"
)
# vLLM reserves this share of each GPU when not told otherwise; the retries lower it down to the floor.
VLLM_DEFAULT_MEMORY = 0.9
VLLM_MEMORY_STEP = 0.1
VLLM_MEMORY_FLOOR = 0.5
# Failures after which the cached responses are worth scoring: the run stopped part-way through.
_RECOVERABLE = {"timeout": "timeout", "crashed": "crashed", "terminated": "crashed", "error": "crashed"}
# lm-eval extras that bring a module, for modules whose package name differs or lm-eval's metadata is unreadable.
_KNOWN_EXTRAS = {"langdetect": "ifeval", "immutabledict": "ifeval", "nltk": "ifeval", "tenacity": "api",
                 "aiohttp": "api", "tiktoken": "api"}


class RunIncomplete(BenchError):
    """A run that did not finish; `status` is how benchmark.json records it: timeout or crashed."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


def evaluate_with_recovery(
    request: RunRequest, on_event: EventSink, say: Say, timeout_s: float | None = None
) -> RunRecord:
    """Run `request` within `timeout_s`, retrying out-of-memory failures, scoring what a stopped run produced."""
    outcome = evaluate_sides_with_recovery(request, on_event, say, timeout_s)[request.role]
    if isinstance(outcome, BenchError):
        raise outcome
    return outcome


Outcome = RunRecord | BenchError


def evaluate_sides_with_recovery(
    request: RunRequest, on_event: EventSink, say: Say, timeout_s: float | None = None
) -> dict[str, Outcome]:
    """evaluate_with_recovery for a request that may be paired: {role: its record, or why it has none}.

    A paired run evaluates two models, so its time limit is twice `timeout_s`; stopped, each side's
    cached responses are scored on their own. A failure nothing can be scored from raises, as for one model.
    """
    limit = None if timeout_s is None else timeout_s * len(request.sides)
    deadline = None if limit is None else time.monotonic() + limit
    with ExitStack() as stack:
        # Taken in one order (by path) by every session, so two paired runs never wait on each other.
        for side in sorted(request.sides, key=lambda side: str(side.use_cache)):
            if side.use_cache is not None:
                stack.enter_context(_cache_lock(side, say, deadline))
        return _attempts(request, on_event, say, limit, deadline)


def _cache_lock(request: RunRequest, say: Say, deadline: float | None) -> AbstractContextManager[object]:
    """Two sessions on the same model share its response cache: the second waits, then reuses the answers."""
    assert request.use_cache is not None

    def waiting(lock: Path) -> None:
        say(f"[bench] {request.role}: waiting for another session that is evaluating the same model ({lock})")

    wait_s = None if deadline is None else max(0.0, deadline - time.monotonic())
    return locked(request.use_cache, wait_s, waiting)


def _attempts(
    request: RunRequest, on_event: EventSink, say: Say, timeout_s: float | None, deadline: float | None
) -> dict[str, Outcome]:
    while True:
        try:
            records = run_sides(request, on_event, deadline)
        except RunFailed as exc:
            lowered = lower_gpu_memory(request) if exc.kind == "oom" else None
            if lowered is not None:
                say(f"[bench] {request.role}: out of GPU memory with vLLM: retrying with gpu_memory_utilization "
                    f"{lowered.settings.gpu_memory_utilization:g}")
                request = lowered
                continue
            smaller = halve_batch_size(request.settings.batch_size) if exc.kind == "oom" else None
            if smaller is not None:
                say(f"[bench] {request.role}: out of GPU memory at batch size {request.settings.batch_size}: "
                    f"retrying with batch size {smaller}")
                request = with_batch_size(request, smaller)
                continue
            status = _RECOVERABLE.get(exc.kind)
            if status is not None and (exc.kind != "error" or exc.generated or any(exc.sides.values())):
                return {side.role: _partial(side, exc.of(side.role), status, on_event, say, timeout_s)
                        for side in request.sides}
            raise BenchError(failure_message(request, exc)) from None
        for record in records:
            record.extra["batch_size"] = request.settings.batch_size  # after any out-of-memory retries
            if request.settings.gpu_memory_utilization is not None:
                record.extra["gpu_memory_utilization"] = request.settings.gpu_memory_utilization
        return {record.role: record for record in records}


def lower_gpu_memory(request: RunRequest) -> RunRequest | None:
    """The vLLM run again with a smaller share of GPU memory reserved; None for other engines or at the floor.

    vLLM reserves its share for weights and KV cache up front; what it runs out of is the memory left
    outside that share (sampling, prompt log-likelihoods, other processes), which a lower share frees.
    The context length is never lowered: truncating prompts would change the scores, and the two models
    would no longer be measured alike.
    """
    if request.side.lm_eval_model != "vllm":
        return None
    current = request.settings.gpu_memory_utilization or VLLM_DEFAULT_MEMORY
    lower = round(current - VLLM_MEMORY_STEP, 2)
    if lower < VLLM_MEMORY_FLOOR:
        return None
    settings = dataclasses.replace(request.settings, gpu_memory_utilization=lower)
    return dataclasses.replace(request, settings=settings)


def halve_batch_size(batch_size: str) -> str | None:
    """The next batch size to try after running out of memory; None at 1.

    lm-eval's `auto` already searched for the largest batch that fits, and a later, longer prompt
    still did not: continue from a small fixed size.
    """
    if batch_size.isdigit():
        size = int(batch_size)
        return str(size // 2) if size > 1 else None
    return "8" if batch_size.startswith("auto") else None


def with_batch_size(request: RunRequest, batch_size: str) -> RunRequest:
    # Same response cache (use_cache is kept): responses of the failed attempt are not generated again.
    base = request.paired_base
    return dataclasses.replace(request, settings=dataclasses.replace(request.settings, batch_size=batch_size),
                               paired_base=None if base is None else with_batch_size(base, batch_size))


def _partial(request: RunRequest, exc: RunFailed, status: str, on_event: EventSink, say: Say,
             timeout_s: float | None) -> Outcome:
    """One side's partial record, or why it has none (RunIncomplete)."""
    try:
        return _partial_or_raise(request, exc, status, on_event, say, timeout_s)
    except RunIncomplete as incomplete:
        return incomplete


def _partial_or_raise(
    request: RunRequest, exc: RunFailed, status: str, on_event: EventSink, say: Say, timeout_s: float | None
) -> RunRecord:
    what = stopped_description(request.role, exc, status, timeout_s)
    if request.use_cache is None:
        raise RunIncomplete(
            f"{what}: nothing could be scored, as the {request.side.backend} backend keeps no response cache "
            f"(log: {request.log_path})",
            status,
        ) from None
    say(f"[bench] {request.role}: {what}: scoring the samples it produced")
    scorer = dataclasses.replace(request, mode="score_partial")
    deadline = None if timeout_s is None else time.monotonic() + recovery_limit(timeout_s)
    try:
        record = run_lm_eval(scorer, _heartbeat_only(on_event), deadline)
    except RunFailed as scoring:
        nothing = "no sample was complete" if scoring.kind == "nothing_to_score" else f"scoring failed ({scoring})"
        raise RunIncomplete(f"{what}: {nothing}; re-run to resume (log: {request.log_path})", status) from None
    record.status = status
    record.generated = exc.generated
    done, total = progress_totals(record.progress.values())
    record.extra["failure"] = f"{what}: scored {done} of {total} samples (partial); re-run to resume"
    say(f"[bench] {request.role}: {record.extra['failure']}")
    return record


def _heartbeat_only(on_event: EventSink) -> EventSink:
    """The scoring run reports through the lines above; only its silences (heartbeat) reach the terminal."""

    def forward(event: dict[str, object]) -> None:
        if event["event"] == "tick":
            on_event(event)

    return forward


def stopped_description(role: str, exc: RunFailed, status: str, timeout_s: float | None) -> str:
    """`fine-tuned run timed out after 10m` / `base run crashed (lm-eval exited with code -9 …)`."""
    if status == "timeout":
        after = f" after {format_duration(timeout_s)}" if timeout_s is not None else ""
        return f"{role} run timed out{after}"
    return f"{role} run crashed ({exc})"


def progress_totals(progress: Iterable[dict[str, int]]) -> tuple[int, int]:
    """(samples done, samples asked for) over all tasks of a run."""
    done = total = 0
    for counts in progress:
        done += int(counts.get("done", 0))
        total += int(counts.get("total", 0))
    return done, total


def failure_message(request: RunRequest, exc: RunFailed) -> str:
    """One line for a run that failed and left nothing to score: what happened and what to do."""
    role, log = request.role, request.log_path
    if exc.kind == "oom":
        remedies = VLLM_OOM_REMEDIES if request.side.lm_eval_model == "vllm" else OOM_REMEDIES
        return (f"{role} run ran out of GPU memory even at batch size {request.settings.batch_size}: "
                f"{remedies} (log: {log})")
    if exc.kind == "data_unreachable":
        return (f"{role} run could not load benchmark data from the Hugging Face Hub ({exc}): on a machine "
                "without the Hub, pass --bench-data-dir DIR with the datasets as local files (see docs/offline.md)")
    if exc.kind == "missing_dependency":
        module = str(exc)
        return f"{role} run needs the Python module {module!r}, which is not installed: run `{pip_command(module)}`"
    return f"{role} run failed: {exc} (log: {log})"


def pip_command(module: str) -> str:
    """The install command that brings `module`: lm-eval's extra when one of them provides it."""
    top = module.split(".")[0]
    if top == "lm_eval":
        from pytest_finetune_bench.plan.tasks import LM_EVAL_INSTALL

        return LM_EVAL_INSTALL
    extra = _lm_eval_extra(top) or _KNOWN_EXTRAS.get(top)
    return f"pip install 'lm-eval[{extra}]'" if extra else f"pip install {top}"


def _lm_eval_extra(module: str) -> str | None:
    """The lm-eval extra whose requirements name `module`'s package, from lm-eval's own metadata."""
    from importlib.metadata import PackageNotFoundError, metadata

    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        info = metadata("lm_eval")
    except PackageNotFoundError:
        return None
    extras = info.get_all("Provides-Extra") or []
    wanted = canonicalize_name(module)
    for line in info.get_all("Requires-Dist") or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) != wanted:
            continue
        if requirement.marker is None:
            return None  # lm-eval itself requires it: no extra brings it
        marker = requirement.marker
        # The extra that installs it is the one under which its marker holds.
        for extra in extras:
            if marker.evaluate({"extra": extra}):
                return str(extra)
    return None


def interrupted(role: str, exc: BaseException) -> RunIncomplete:
    """What to record when pytest-timeout's alarm or Ctrl-C stopped a run (the child tree is already stopped)."""
    if "pytest-timeout" in str(exc):
        return RunIncomplete(f"{role} run was stopped by pytest-timeout ({exc}); re-run to resume", "timeout")
    return RunIncomplete(f"{role} run was interrupted ({type(exc).__name__}); re-run to resume", "crashed")


def incomplete_reason(records: Iterable[RunRecord | None]) -> str | None:
    """Why these scores cannot pass a gate: a side was scored on part of its samples only."""
    reasons = [r.extra.get("failure") or f"{r.role} run is {r.status}" for r in records if r is not None and r.partial]
    return "; ".join(reasons) or None


def overall_status(statuses: dict[str, str], roles: Iterable[str] = ("base", "fine-tuned")) -> str:
    """benchmark.json's status from each side's: crashed, else timeout, else complete once every side in
    `roles` (both, or the one a --bench-base none / --bench-only-base session evaluates) is."""
    values = set(statuses.values())
    for worst in ("crashed", "timeout"):
        if worst in values:
            return worst
    return "complete" if all(statuses.get(role) == "complete" for role in roles) else "incomplete"


def partial_note(records: Mapping[str, RunRecord | None], tasks: Iterable[str]) -> dict[str, str]:
    """{task: "partial: fine-tuned 3/10"} for the table rows scored from part of their samples."""
    notes: dict[str, str] = {}
    for task in tasks:
        parts = []
        for role, record in records.items():
            counts = _task_counts(record, task) if record is not None and record.partial else None
            if counts is not None:
                parts.append(f"{role} {counts[0]}/{counts[1]}")
        if parts:
            notes[task] = "partial: " + ", ".join(parts)
    return notes


def _task_counts(record: RunRecord, task: str) -> tuple[int, int] | None:
    # A group (mmlu) is counted over its subtasks, which lm-eval names <group>_<subject>.
    counts = [c for name, c in record.progress.items() if name == task or name.startswith(f"{task}_")]
    if not counts:
        return None
    return progress_totals(counts)
