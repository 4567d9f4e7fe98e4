"""The child's early-stopping mode: one model, loaded once, evaluated chunk by chunk until the gates settle.

Each chunk is an ordinary `lm_eval.simple_evaluate` call on the same model object, selecting the
chunk's documents with `samples=` (task → ascending doc ids), so prompts, generation and scoring
are lm-eval's own. Every response goes to the run's response cache. At the end one more call, in
which the cache answers every document already generated, produces the run's results and samples
files: for a task that stopped early on its evaluated documents, for every other task on all of
them, exactly as a run without early stopping (the same call, when no task stopped early).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_finetune_bench.compare.samples import document_value, split_metric_key
from pytest_finetune_bench.run.child_lm import Events, as_the_cli_names_it, prepare, simple_evaluate_arguments
from pytest_finetune_bench.run.early_stop import TaskMonitor


def evaluate_early(spec: dict[str, Any], events: Events) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """(results, responses generated, {"early_stop": record}) of an early-stopping run."""
    import lm_eval

    args, plan = spec["lm_eval"], spec["early_stop"]
    manager, lm, tracker = prepare(spec, events)
    loaded = manager.load(args["tasks"])["tasks"]
    arguments = simple_evaluate_arguments(spec)
    monitors = [_monitor(task, entry, plan, loaded, args) for task, entry in plan["tasks"].items()]
    while active := [m for m in monitors if m.open]:
        chunks = {m.task: m.next_chunk() for m in active}
        results = lm_eval.simple_evaluate(
            model=lm, task_manager=manager, **{**arguments, "tasks": list(chunks), "limit": None, "samples": chunks}
        )
        if results is None:
            raise RuntimeError("lm-eval returned no results")
        for monitor in active:
            monitor.add(chunks[monitor.task], chunk_scores(results["samples"][monitor.task], monitor.metric))
            events.send("early_stop", task=monitor.task, **(monitor.chunks[-1] if monitor.chunks else {}),
                        total=monitor.documents, verdicts=monitor.verdicts, note=monitor.note)
    stopped = {m.task: sorted(m.evaluated) for m in monitors if m.stopped_early}
    if stopped:
        arguments.update(limit=None, samples=_final_samples(stopped, loaded, args["limit"]))
    results = lm_eval.simple_evaluate(model=lm, task_manager=manager, **arguments)
    record = {"error_rate": plan["error_rate"], "seed": plan["seed"], "tasks": {m.task: m.to_json() for m in monitors}}
    return as_the_cli_names_it(results, args), tracker.generated, {"early_stop": record}


def _monitor(task: str, entry: Mapping[str, Any], plan: Mapping[str, Any], loaded: Mapping[str, Any],
             args: Mapping[str, Any]) -> TaskMonitor:
    monitor = TaskMonitor.from_spec(task, entry, float(plan["error_rate"]), int(plan["seed"]), args["batch_size"])
    if task not in loaded:
        monitor.note = "lm-eval did not load it as a task of its own; it runs in full"
        return monitor
    fewshot = args["num_fewshot"] if args["num_fewshot"] is not None else loaded[task].get_config("num_fewshot")
    if fewshot:
        # lm-eval draws few-shot examples one document after another from one seeded generator.
        monitor.note = (f"{fewshot}-shot prompts depend on the order lm-eval meets the documents in, so another "
                        "order would change them; it runs in full")
    elif max(monitor.base) >= len(loaded[task].eval_docs):
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


def _final_samples(stopped: Mapping[str, list[int]], loaded: Mapping[str, Any],
                   limit: float | None) -> dict[str, list[int]]:
    """lm-eval's `samples=` for the last call: the evaluated documents of the tasks that stopped early.

    The other tasks are absent (all their documents), unless a limit was set: `samples=` and `limit`
    cannot be combined, so they get the documents the limit selects, as lm-eval selects them.
    """
    from lm_eval.evaluator_utils import get_sample_size

    selected = dict(stopped)
    if limit is not None:
        for task, obj in loaded.items():
            if task not in selected:
                size = get_sample_size(obj, limit)
                selected[task] = list(range(min(size, len(obj.eval_docs)) if size is not None else len(obj.eval_docs)))
    return selected
