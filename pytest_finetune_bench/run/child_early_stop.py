"""The child's early-stopping mode: the model loaded once, evaluated chunk by chunk until the gates settle.

Each chunk is an ordinary `lm_eval.simple_evaluate` call on the same model object, selecting the
chunk's documents with `samples=` (task → ascending doc ids), so prompts, generation and scoring
are lm-eval's own. Every response goes to the run's response cache. At the end one more call, in
which the cache answers every document already generated, produces the run's results and samples
files: for a task that stopped early on its evaluated documents, for every other task on all of
them, exactly as a run without early stopping (the same call, when no task stopped early).

A paired run (the spec's `paired_base`: the base has no scores yet) loads the base model too, with
its own response cache: each chunk is evaluated on the base, then on the fine-tuned model, with the
same task manager and settings, and the last call is made on each model, the base's files written
where its own run would write them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_finetune_bench.compare.samples import document_value, split_metric_key
from pytest_finetune_bench.run.child_lm import (
    Events,
    ProgressTracker,
    as_the_cli_names_it,
    completed_progress,
    instrumented_lm,
    prepare,
    save,
    simple_evaluate_arguments,
)
from pytest_finetune_bench.run.early_stop import TaskMonitor


@dataclass
class _Model:
    """One model of the run: lm-eval's object, its response counter and its spec (arguments, cache, output)."""

    lm: Any
    tracker: ProgressTracker
    spec: dict[str, Any]

    def evaluate(self, manager: Any, **overrides: Any) -> dict[str, Any]:
        import lm_eval

        results = lm_eval.simple_evaluate(model=self.lm, task_manager=manager,
                                          **{**simple_evaluate_arguments(self.spec), **overrides})
        return as_the_cli_names_it(results, self.spec["lm_eval"])


def evaluate_early(spec: dict[str, Any], events: Events) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """(results, responses generated, what the finished event adds) of an early-stopping run.

    A paired run's base results are saved here, to its own output folder; the finished event carries
    its responses generated and progress under `paired_base`.
    """
    args, plan = spec["lm_eval"], spec["early_stop"]
    manager, lm, tracker = prepare(spec, events)
    finetuned = _Model(lm, tracker, spec)
    base = _Model(*instrumented_lm(spec["paired_base"]["lm_eval"], events.side("base")),
                  spec["paired_base"]) if spec.get("paired_base") else None
    loaded = manager.load(args["tasks"])["tasks"]
    monitors = [_monitor(task, entry, plan, loaded, args, base is not None) for task, entry in plan["tasks"].items()]
    while active := [m for m in monitors if m.open]:
        chunks = {m.task: m.next_chunk() for m in active}
        chunk_call = {"tasks": list(chunks), "limit": None, "samples": chunks}
        base_samples = base.evaluate(manager, **chunk_call)["samples"] if base is not None else None
        samples = finetuned.evaluate(manager, **chunk_call)["samples"]
        for monitor in active:
            base_scores = None if base_samples is None else chunk_scores(base_samples[monitor.task], monitor.metric)
            monitor.add(chunks[monitor.task], chunk_scores(samples[monitor.task], monitor.metric), base_scores)
            events.send("early_stop", task=monitor.task, **(monitor.chunks[-1] if monitor.chunks else {}),
                        total=monitor.documents, verdicts=monitor.verdicts, note=monitor.note)
    stopped = {m.task: sorted(m.evaluated) for m in monitors if m.stopped_early}
    final = {"limit": None, "samples": _final_samples(stopped, loaded, args["limit"])} if stopped else {}
    record = {"error_rate": plan["error_rate"], "seed": plan["seed"], "tasks": {m.task: m.to_json() for m in monitors}}
    finished: dict[str, Any] = {"early_stop": record}
    if base is not None:
        base_results = base.evaluate(manager, **final)
        finished["paired_base"] = {"generated": base.tracker.generated, "progress": completed_progress(base_results)}
        save(base_results, base.spec["output_path"])
    return finetuned.evaluate(manager, **final), tracker.generated, finished


def _monitor(task: str, entry: Mapping[str, Any], plan: Mapping[str, Any], loaded: Mapping[str, Any],
             args: Mapping[str, Any], paired: bool) -> TaskMonitor:
    population = (_selected(loaded[task], args["limit"]) if task in loaded else []) if paired else None
    monitor = TaskMonitor.from_spec(task, entry, float(plan["error_rate"]), int(plan["seed"]), args["batch_size"],
                                    population)
    if task not in loaded:
        monitor.note = "lm-eval did not load it as a task of its own; it runs in full"
        return monitor
    fewshot = args["num_fewshot"] if args["num_fewshot"] is not None else loaded[task].get_config("num_fewshot")
    if fewshot:
        # lm-eval draws few-shot examples one document after another from one seeded generator.
        monitor.note = (f"{fewshot}-shot prompts depend on the order lm-eval meets the documents in, so another "
                        "order would change them; it runs in full")
    elif not paired and max(monitor.base) >= len(loaded[task].eval_docs):
        monitor.note = "the base's documents are not this task's; it runs in full"
    return monitor


def chunk_scores(samples: list[dict[str, Any]], metric_key: str) -> dict[int, float]:
    """doc id → the headline metric's per-document score, from a simple_evaluate call's logged samples."""
    metric, filter_name = split_metric_key(metric_key)
    scores = {}
    for record in samples:
        value = document_value(record.get(metric)) if record.get("filter") == filter_name else None
        if value is not None:
            scores[int(record["doc_id"])] = value
    return scores


def _selected(task: Any, limit: float | None) -> list[int]:
    """The documents of `task` a run evaluates: all of them, or those `limit` selects, as lm-eval selects them."""
    from lm_eval.evaluator_utils import get_sample_size

    size = get_sample_size(task, limit)
    return list(range(min(size, len(task.eval_docs)) if size is not None else len(task.eval_docs)))


def _final_samples(stopped: Mapping[str, list[int]], loaded: Mapping[str, Any],
                   limit: float | None) -> dict[str, list[int]]:
    """lm-eval's `samples=` for the last call: the evaluated documents of the tasks that stopped early.

    The other tasks are absent (all their documents), unless a limit was set: `samples=` and `limit`
    cannot be combined, so they get the documents the limit selects, as lm-eval selects them.
    """
    selected = dict(stopped)
    if limit is not None:
        for task, obj in loaded.items():
            if task not in selected:
                selected[task] = _selected(obj, limit)
    return selected
