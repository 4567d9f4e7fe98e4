"""The child's early-stopping mode: the model loaded once, evaluated chunk by chunk until the gates settle.

Each chunk is an ordinary `lm_eval.simple_evaluate` call on the same model object, selecting the
chunk's documents with `samples=` (task → ascending doc ids), so prompts, generation and scoring
are lm-eval's own. A group's chunk is its documents spread over its leaf tasks, evaluated as those
leaves (the task objects lm-eval built for the group, so the group's settings hold). Every response
goes to the run's response cache. At the end one more call, in which the cache answers every
document already generated, produces the run's results and samples files: for a task that stopped
early on its evaluated documents (for a group, on the leaves those fall in, so lm-eval aggregates the
group over exactly them), for every other task on all of them, exactly as a run without early
stopping (the same call, when no task stopped early).

A paired run (the spec's `paired_base`: the base has no scores yet) loads the base model too, with
its own response cache: each chunk is evaluated on the base, then on the fine-tuned model, with the
same task manager and settings, and the last call is made on each model, the base's files written
where its own run would write them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
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
from pytest_finetune_bench.run.early_stop import Doc, TaskMonitor, per_leaf


@dataclasses.dataclass
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
    its responses generated and progress under `paired_base`. When a task stopped early, the event's
    `samples` is the last call's selection, which both models' results are on.
    """
    args, plan = spec["lm_eval"], spec["early_stop"]
    manager, lm, tracker = prepare(spec, events)
    finetuned = _Model(lm, tracker, spec)
    base = _Model(*instrumented_lm(spec["paired_base"]["lm_eval"], events.side("base")),
                  spec["paired_base"]) if spec.get("paired_base") else None
    loaded = manager.load(args["tasks"])
    monitors = [_monitor(task, entry, plan, loaded, args, base is not None) for task, entry in plan["tasks"].items()]
    while active := [m for m in monitors if m.open]:
        chunks = {m.task: m.next_chunk() for m in active}
        samples = {leaf: ids for chunk in chunks.values() for leaf, ids in per_leaf(chunk).items()}
        chunk_call = {"tasks": [_chunk_task(leaf, loaded) for leaf in samples], "limit": None, "samples": samples}
        base_samples = base.evaluate(manager, **chunk_call)["samples"] if base is not None else None
        finetuned_samples = finetuned.evaluate(manager, **chunk_call)["samples"]
        for monitor in active:
            base_scores = None if base_samples is None else _monitor_scores(monitor, base_samples)
            monitor.add(chunks[monitor.task], _monitor_scores(monitor, finetuned_samples), base_scores)
            events.send("early_stop", task=monitor.task, **(monitor.chunks[-1] if monitor.chunks else {}),
                        total=monitor.documents, verdicts=monitor.verdicts, note=monitor.note)
    evaluated = {m.task: m.evaluated for m in monitors if m.stopped_early}
    final_tasks = [_final_task(task, evaluated, loaded) for task in args["tasks"]] if evaluated else []
    final = {"limit": None, "samples": final_samples(evaluated, loaded, args["limit"]),
             "tasks": final_tasks} if evaluated else {}
    record = {"error_rate": plan["error_rate"], "seed": plan["seed"], "tasks": {m.task: m.to_json() for m in monitors}}
    # The documents both models' results are on ({leaf: ids}), when some task stopped early: the CLI's --samples.
    finished: dict[str, Any] = {"early_stop": record, **({"samples": final["samples"]} if final else {})}
    if groups := pruned_group_configs(final_tasks, manager):
        finished["groups"] = groups
    if base is not None:
        base_results = base.evaluate(manager, **final)
        finished["paired_base"] = {"generated": base.tracker.generated, "progress": completed_progress(base_results)}
        save(base_results, base.spec["output_path"])
    return finetuned.evaluate(manager, **final), tracker.generated, finished


def _monitor(task: str, entry: Mapping[str, Any], plan: Mapping[str, Any], loaded: Mapping[str, Any],
             args: Mapping[str, Any], paired: bool) -> TaskMonitor:
    """The task's monitor, with a note (it runs in full) when lm-eval's objects show it cannot stop early.

    A paired run has no base scores yet: the task's documents (`_population`) are the ones a run evaluates.
    """
    population = _population(task, loaded, args["limit"]) if paired else None
    monitor = TaskMonitor.from_spec(task, entry, float(plan["error_rate"]), int(plan["seed"]), args["batch_size"],
                                    population)
    if task in loaded["groups"]:
        monitor.note = group_note(loaded["groups"][task], monitor.metric, monitor.leaves)
    elif task not in loaded["tasks"] or monitor.is_group:
        monitor.note = "lm-eval did not load it as a task of its own; it runs in full"
    for leaf in monitor.leaves:
        if monitor.note is not None:
            break
        last_doc = None if paired else max(doc for name, doc in monitor.base if name == leaf)
        monitor.note = _leaf_note(loaded["tasks"][leaf], last_doc, args["num_fewshot"])
    return monitor


def group_note(group: Any, metric_key: str, leaves: list[str]) -> str | None:
    """Why the group's headline is not the mean over all its leaves' documents pooled, or None when it is.

    lm-eval aggregates a group over all its leaf tasks, each weighted by its size with `weight_by_size:
    True`, which makes the aggregate the pooled mean; an unweighted mean of the leaves' scores is not.
    lm-eval 0.4.13 aggregates each group straight from its leaves, so the group's own setting decides its
    score; its subgroups must weigh by size too, so every aggregate the run reports for it is a pooled
    mean of the documents evaluated (and a level-by-level aggregation would give the same).
    """
    import lm_eval.api.metrics  # noqa: F401 - registers lm-eval's aggregations
    from lm_eval.api.group import Group
    from lm_eval.api.registry import aggregation_registry

    metric, filter_name = split_metric_key(metric_key)
    tasks = group.get_all_tasks()
    if sorted(task.task_name for task in tasks) != leaves:
        return "its leaf tasks are not those of the base's run; it runs in full"
    for level in [group, *group.get_all_groups()]:
        if not isinstance(level, Group):
            return f"lm-eval built {level!r}, which is not a group; it runs in full"
        configs = [c for c in level.aggregate_metric_list or []
                   if c.metric == metric and (c.filter_list is None or filter_name in c.filter_list)]
        unweighted = [c for c in configs if not c.weight_by_size]
        if level is group and not configs:
            return f"the group does not aggregate {metric_key}; it runs in full"
        if unweighted:
            return (f"{level.name} averages its tasks' {metric} without weighting them by size (weight_by_size: "
                    "false), so its score is not the mean over all its documents; it runs in full")
    averaged = [task for task in tasks if task.aggregation().get(metric) is not aggregation_registry["mean"]]
    if averaged:
        return (f"{averaged[0].task_name} does not score {metric} as the mean of its documents, so the group's "
                "aggregate is not the mean over all its documents; it runs in full")
    return None


def _leaf_note(task: Any, last_doc: int | None, num_fewshot: int | None) -> str | None:
    """Why a leaf task's documents cannot be evaluated in another order, or None when they can.

    `last_doc` is the base's last document of it, when the base's scores came up front.
    """
    fewshot = num_fewshot if num_fewshot is not None else task.get_config("num_fewshot")
    if fewshot and not fixed_fewshot_contexts(task):
        # lm-eval's default sampler draws few-shot examples one document after another from one seeded generator.
        return (f"{task.task_name}'s {fewshot}-shot prompts depend on the order lm-eval meets the documents in, so "
                "another order would change them; it runs in full")
    if last_doc is not None and last_doc >= len(task.eval_docs):
        return f"the base's documents are not {task.task_name}'s; it runs in full"
    return None


def fixed_fewshot_contexts(task: Any) -> bool:
    """Whether every document gets the same few-shot examples whatever documents are evaluated with it.

    lm-eval's `first_n` sampler (MMLU's) gives each document the first examples of the few-shot split
    (itself left out); the default one draws them from one generator, seeded once per call, one document
    after another. A fixed `fewshot_config.samples` list is still drawn from in random order by the
    default sampler, so only the `first_n` sampler, used by lm-eval's own prompt builder, qualifies.
    """
    from lm_eval.api.samplers import FirstNSampler
    from lm_eval.api.task import ConfigurableTask

    return (type(getattr(task, "sampler", None)) is FirstNSampler
            and type(task).fewshot_context is ConfigurableTask.fewshot_context)


def _chunk_task(leaf: str, loaded: Mapping[str, Any]) -> Any:
    """What a chunk call evaluates for `leaf`: a task of its own by name, a group's leaf as the group built it."""
    return leaf if leaf in _top_level(loaded) else loaded["tasks"][leaf]


def _top_level(loaded: Mapping[str, Any]) -> set[str]:
    """The loaded tasks that belong to no group."""
    in_groups = {task.task_name for group in loaded["groups"].values() for task in group.get_all_tasks()}
    return set(loaded["tasks"]) - in_groups


def _final_task(task: str, evaluated: Mapping[str, list[Doc]], loaded: Mapping[str, Any]) -> Any:
    """What the last call evaluates for `task`: a stopped group without the leaves it evaluated none of.

    `samples=` cannot select no document of a task (an empty list selects them all), so those leaves
    are left out of the group; lm-eval aggregates it over the others, whose sizes are what it evaluated.
    """
    if task not in evaluated or task not in loaded["groups"]:
        return task
    return pruned_group(loaded["groups"][task], {leaf for leaf, _ in evaluated[task]})


def pruned_group(group: Any, keep: set[str]) -> Any:
    """A copy of lm-eval's `group` holding only the leaves in `keep` (and the subgroups holding any)."""
    from lm_eval.api.group import Group

    copy = dataclasses.replace(group, _children={})
    for child in group:
        if isinstance(child, Group):
            child = pruned_group(child, keep)
            if len(child):
                copy.add(child)
        elif child.task_name in keep:
            copy.add(child)
    return copy


def pruned_group_configs(tasks: list[Any], manager: Any) -> dict[str, dict[str, Any]]:
    """{group: {"yaml": its config file, "task": its children's names}} of each group (and subgroup) among
    `tasks` that the last call evaluates pruned: what lm-eval's CLI needs to build the same groups, since
    `--samples` cannot leave a leaf out (the run's task folder for the reproduce command, run/engine.py)."""
    from lm_eval.api.group import Group

    configs: dict[str, dict[str, Any]] = {}

    def describe(group: Any) -> None:
        entry = manager.task_index.get(group.name)
        configs[group.name] = {"yaml": str(entry.yaml_path) if entry and entry.yaml_path else None,
                               "task": [child.name if isinstance(child, Group) else child.task_name
                                        for child in group]}
        for child in group:
            if isinstance(child, Group):
                describe(child)

    for item in tasks:
        if isinstance(item, Group):
            describe(item)
    return configs


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


def _population(task: str, loaded: Mapping[str, Any], limit: float | None) -> list[Doc]:
    """A paired run's documents of `task` (of each of its leaves, for a group): those a run evaluates."""
    if task in loaded["groups"]:
        leaves = [leaf.task_name for leaf in loaded["groups"][task].get_all_tasks()]
    elif task in loaded["tasks"]:
        leaves = [task]
    else:
        return []
    return [(leaf, doc) for leaf in leaves for doc in _selected(loaded["tasks"][leaf], limit)]


def _monitor_scores(monitor: TaskMonitor, samples: Mapping[str, list[dict[str, Any]]]) -> dict[Doc, float]:
    """(leaf, doc id) → the headline's score, for `monitor`'s leaves in a chunk call's logged samples."""
    return {(leaf, doc): value for leaf in monitor.leaves if leaf in samples
            for doc, value in chunk_scores(samples[leaf], monitor.metric).items()}


def final_samples(evaluated: Mapping[str, list[Doc]], loaded: Mapping[str, Any],
                   limit: float | None) -> dict[str, list[int]]:
    """lm-eval's `samples=` for the last call: the evaluated documents of the tasks that stopped early, per leaf.

    The other tasks are absent (all their documents), unless a limit was set: `samples=` and `limit`
    cannot be combined, so they get the documents the limit selects, as lm-eval selects them.
    """
    selected = {leaf: ids for docs in evaluated.values() for leaf, ids in per_leaf(docs).items()}
    stopped_groups = [loaded["groups"][task] for task in evaluated if task in loaded["groups"]]
    stopped_leaves = {leaf.task_name for group in stopped_groups for leaf in group.get_all_tasks()}
    if limit is not None:
        for task, obj in loaded["tasks"].items():
            if task not in selected and task not in stopped_leaves:
                selected[task] = _selected(obj, limit)
    return selected
