"""Score-only mode of the child: lm-eval scores the documents whose responses are all in the response cache.

A run that was stopped (timeout) or died (crash) leaves its responses in lm-eval's sqlite response
cache, committed one by one. This mode loads the same tasks with the same settings, keeps the
documents whose every request is answered by the cache, and lets lm-eval's own evaluator score just
those (its `samples=` selection). Nothing is generated: a request missing from the cache is an error.

Prompts must be exactly those of the stopped run, or the cache would not answer them. lm-eval
draws few-shot examples from one random stream per task, document after document, so building
only the selected documents would give later documents other examples. Each task is therefore
built as the full run built it (same limit, same order), then cut down to the complete documents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Progress = dict[str, dict[str, int]]


class NothingToScore(Exception):
    """No document of any task has all its responses in the cache."""


class _TaskIncomplete(Exception):
    """A task without one complete document: lm-eval cannot score an empty selection, so it is left out."""

    def __init__(self, task_name: str) -> None:
        super().__init__(task_name)
        self.task_name = task_name


def cached_response(cache: Any, instance: Any) -> bool:
    """Whether lm-eval's CachingLM would answer `instance` from `cache` (never for sampled generations)."""
    from lm_eval.api.model import hash_args

    if instance.request_type == "generate_until" and instance.args[1].get("do_sample", False):
        return False
    return hash_args(instance.request_type, instance.args) in cache


def complete_documents(instances: list[Any], is_cached: Callable[[Any], bool]) -> tuple[list[int], int]:
    """(sorted ids of documents whose requests are all cached, number of documents)."""
    by_doc: dict[int, bool] = {}
    for instance in instances:
        by_doc[instance.doc_id] = by_doc.get(instance.doc_id, True) and is_cached(instance)
    return sorted(doc for doc, complete in by_doc.items() if complete), len(by_doc)


def keep_documents(task: Any, doc_ids: list[int]) -> None:
    """Cut `task`'s built requests down to `doc_ids`, numbered as lm-eval's `samples=` selection numbers them."""
    position = {doc: i for i, doc in enumerate(doc_ids)}
    kept = [inst for inst in task.instances if inst.doc_id in position]
    for inst in kept:
        inst.doc_id = position[inst.doc_id]
    task._instances = kept


class CompleteOnly:
    """Wraps lm-eval's `evaluate` so that it scores only the complete documents of each task."""

    def __init__(self, limit: float | None, fewshot_seed: int | None) -> None:
        self.limit = limit
        self.fewshot_seed = fewshot_seed
        self.progress: Progress = {}
        self.left_out: list[str] = []
        # The last `samples=` evaluate was given: {task: ids scored}, the lm-eval CLI's `--samples` for these scores.
        self.selection: dict[str, list[int]] = {}

    def wrap(self, evaluate: Callable[..., Any]) -> Callable[..., Any]:
        def evaluate_complete(*, lm: Any, task_dict: dict[str, Any], samples: Any = None, **kwargs: Any) -> Any:
            while True:
                selection: dict[str, list[int]] = {}
                for name, task in task_dict["tasks"].items():
                    self._select(name, task, lm.dbdict, selection)
                self.selection = selection
                try:
                    return evaluate(lm=lm, task_dict=task_dict, samples=selection, **kwargs)
                except _TaskIncomplete as exc:
                    self._leave_out(task_dict, exc.task_name)

        return evaluate_complete

    def _select(self, name: str, task: Any, cache: Any, selection: dict[str, list[int]]) -> None:
        from lm_eval.evaluator_utils import get_sample_size

        original = type(task).build_all_requests
        # A retry rebuilds every task: restart its few-shot stream so its prompts come out the same again.
        task.set_fewshot_seed(seed=self.fewshot_seed)

        def build_complete(*, limit: Any = None, samples: Any = None, **kwargs: Any) -> None:
            original(task, limit=get_sample_size(task, self.limit), samples=None, **kwargs)
            done, total = complete_documents(task.instances, lambda inst: cached_response(cache, inst))
            self.progress[name] = {"done": len(done), "total": total}
            if not done:
                raise _TaskIncomplete(name)
            keep_documents(task, done)
            selection[name] = done

        task.build_all_requests = build_complete

    def _leave_out(self, task_dict: dict[str, Any], name: str) -> None:
        del task_dict["tasks"][name]
        self.left_out.append(name)
        if not task_dict["tasks"]:
            raise NothingToScore("no document has all its responses in the response cache")


def refuse_generation(lm: Any) -> None:
    """Make `lm` fail instead of generating: in score-only mode every answer must come from the cache."""
    for attr in ("generate_until", "loglikelihood", "loglikelihood_rolling"):

        def refuse(requests: list[Any], _attr: str = attr) -> list[Any]:
            if not requests:
                return []
            raise RuntimeError(f"score-only run asked the model for {len(requests)} {_attr} responses not in the cache")

        setattr(lm, attr, refuse)


def score_cached(spec: dict[str, Any]) -> tuple[dict[str, Any], Progress, dict[str, list[int]]]:
    """lm-eval's results over the complete documents, {task: {done, total}} for every task, and the selection.

    The selection is the `samples=` lm-eval scored ({task: the ids of its complete documents, ascending}).
    """
    import lm_eval
    import lm_eval.evaluator

    from pytest_finetune_bench.run.child_lm import build_lm, simple_evaluate_arguments, task_manager

    if not spec.get("use_cache"):
        raise NothingToScore("this run kept no response cache")
    args = spec["lm_eval"]
    lm = build_lm(args)
    refuse_generation(lm)
    arguments = simple_evaluate_arguments(spec)
    selector = CompleteOnly(args["limit"], arguments["fewshot_random_seed"])
    original = lm_eval.evaluator.evaluate
    lm_eval.evaluator.evaluate = selector.wrap(original)
    try:
        # The selection replaces the limit (lm-eval refuses both).
        results = lm_eval.simple_evaluate(
            model=lm, task_manager=task_manager(args), **{**arguments, "limit": None, "samples": {}}
        )
    finally:
        lm_eval.evaluator.evaluate = original
    if results is None:
        raise RuntimeError("lm-eval returned no results")
    return results, selector.progress, selector.selection
