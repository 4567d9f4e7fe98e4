"""Early stopping (`--bench-early-stop`): evaluate the fine-tuned model only until every gate is settled.

Once the base's per-document scores of a task are known (from its run or the base cache), the
fine-tuned model answers the task's documents in a seeded random order, in chunks, in one child
process (run/child_early_stop.py). After each chunk the paired differences update an anytime-valid
confidence sequence for the task's Δ over all its documents (compare/sequential.py); the task stops
as soon as it settles every gate on it. Its scores are then both models' on the evaluated documents,
and its gates are decided on the sequence's bounds, which hold with probability ≥ 1 − α however
the stopping went. A task that stays undecided runs to its last document and is compared exactly as
without early stopping.

Only tasks whose headline is a mean of per-document scores in [0, 1] (accuracies, IFEval's
fractions) can stop early, and only those whose prompts do not depend on which documents are
evaluated: zero-shot ones, and few-shot ones whose examples are the same for every subset (lm-eval's
`first_n` sampler; its default one draws them in document order, so another order would change the
prompts); the child decides that from lm-eval's task objects, and the others run in full. A group
(MMLU) whose score is its leaves' size-weighted mean, the mean over all their documents, is one
population of (leaf, doc id) documents with one sequence. Every chunk's answers go to lm-eval's
response cache, so a later session, early-stopping or not, generates none of them again.

When the base has no scores yet (a first session: none shared, none in the base-score cache, no
--bench-compare-to), the run is paired: the same child loads the base model too, evaluates both on
each chunk, and both stop when the gates are settled. The base's run is then on part of the
documents, so it never enters the base-score cache; its answers are in its response cache, and a
later session generates only the documents it did not reach.

This module is the parent's side (which tasks, the child's instructions, the comparison after) and
the per-task bookkeeping both sides share; no pytest, no lm-eval.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_finetune_bench.compare.evidence import leaf_samples, leaf_tasks
from pytest_finetune_bench.compare.samples import CorpusLevelMetric
from pytest_finetune_bench.compare.scores import TaskComparison
from pytest_finetune_bench.compare.sequential import EARLY_STOP, FinitePopulationSequence, gain_bounds
from pytest_finetune_bench.core.records import RunRecord, RunRequest
from pytest_finetune_bench.plan import Plan
from pytest_finetune_bench.plan.gates import Gate
from pytest_finetune_bench.plan.metrics import headlines_for_results

Say = Callable[[str], None]
# A document of a monitored task: (its leaf task, its doc id). A task is its own one leaf; a group's
# documents are those of all its leaf tasks, pooled.
Doc = tuple[str, int]
# Looks per task: enough to stop well before the end, few enough that lm-eval's per-call work
# (building requests, scoring) stays small next to generation.
LOOKS = 20
MIN_CHUNK = 4


@dataclass
class TaskMonitor:
    """One task's early stop: its documents in their order, the sequence so far and what it settled.

    A group's documents are those of all its leaf tasks in one population: its size-weighted
    aggregate is their mean, so one sequence over them settles the group's gates.
    """

    task: str
    metric: str  # lm-eval's "metric,filter" key
    higher_is_better: bool
    base: dict[Doc, float]  # (leaf, doc id) → the base's score (a paired run: filled in chunk by chunk, see `add`)
    rules: list[Gate]  # the plan's gates on the task, thresholds as fractions (the metric is one)
    alpha: float
    order_seed: int
    batch_size: int = 1  # the run's batch size when it is a number: chunks are whole batches
    # A paired run: the base is evaluated alongside, on the same chunks; its scores are not known up front,
    # so the task's documents are given (`population`) and the base's scores come with each chunk.
    paired: bool = False
    population: list[Doc] = field(default_factory=list)
    order: list[Doc] = field(init=False)
    sequence: FinitePopulationSequence = field(init=False)
    evaluated: list[Doc] = field(default_factory=list)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)
    note: str | None = None  # why the task stopped monitoring and runs in full

    def __post_init__(self) -> None:
        ids = sorted(self.population or self.base)
        rng = np.random.default_rng(self.order_seed)
        self.order = [ids[i] for i in rng.permutation(len(ids))]
        self.sequence = FinitePopulationSequence(len(ids), self.alpha)

    @property
    def leaves(self) -> list[str]:
        """The task's leaf tasks, sorted: the task itself, or the group's."""
        return sorted({leaf for leaf, _ in self.population or self.base})

    @property
    def is_group(self) -> bool:
        return self.leaves != [self.task]

    @property
    def documents(self) -> int:
        return len(self.order)

    @property
    def chunk_size(self) -> int:
        """About a LOOKS-th of the task, in whole batches: a chunk's last, partly filled batch costs a full one."""
        wanted = max(MIN_CHUNK, math.ceil(self.documents / LOOKS))
        return math.ceil(wanted / self.batch_size) * self.batch_size

    @property
    def settled(self) -> bool:
        return len(self.verdicts) == len(self.rules)

    @property
    def open(self) -> bool:
        """Still to be looked at: neither settled, nor abandoned, nor out of documents."""
        return not self.settled and self.note is None and len(self.evaluated) < self.documents

    @property
    def stopped_early(self) -> bool:
        return self.settled and self.note is None and len(self.evaluated) < self.documents

    def next_chunk(self) -> list[Doc]:
        """The next documents to evaluate, sorted by leaf and id."""
        start = len(self.evaluated)
        return sorted(self.order[start:start + self.chunk_size])

    def add(self, chunk: list[Doc], scores: Mapping[Doc, float],
            base_scores: Mapping[Doc, float] | None = None) -> None:
        """The fine-tuned scores of `chunk` (a paired run's base's too): update the sequence, settle what it settles."""
        for role, given in (("base", base_scores), ("fine-tuned", scores)):
            why = None if given is None else self._unusable(chunk, given, role)
            if why is not None:
                self.note = why
                return
        self.base.update(base_scores or {})
        in_order = self.order[len(self.evaluated):len(self.evaluated) + len(chunk)]
        self.sequence.update([scores[doc] - self.base[doc] for doc in in_order])
        self.evaluated.extend(in_order)
        low, high = (float(b[0]) for b in self.sequence.bounds)
        gain_low, gain_high = gain_bounds(low, high, self.higher_is_better)
        for rule in self.rules:
            verdict = rule.verdict(gain_low, gain_high)
            if verdict is not None:
                self.verdicts.setdefault(rule.kind, verdict)
        self.chunks.append({"documents": len(self.evaluated), "delta_low": low, "delta_high": high})

    def _unusable(self, chunk: list[Doc], scores: Mapping[Doc, float], role: str) -> str | None:
        """Why `scores` cannot enter the sequence (a document without a score, or outside [0, 1]), else None."""
        missing = [doc for doc in chunk if doc not in scores]
        outside = [doc for doc in chunk if doc in scores and not 0.0 <= scores[doc] <= 1.0]
        if not missing and not outside:
            return None
        doc = (missing or outside)[0]
        value = "no score" if missing else f"score {scores[doc]}"
        return (f"document {doc[1]} of {doc[0]} has {value} for {self.metric} in the {role} run, "
                "so its Δ is not in [-1, 1]; the task runs in full")

    def to_json(self) -> dict[str, Any]:
        """What benchmark.json records: the order seed, the documents, the bounds per chunk, the verdicts."""
        return {
            "task": self.task,
            "metric": self.metric,
            "error_rate": self.alpha,
            "order_seed": self.order_seed,
            "documents": self.documents,
            "evaluated": len(self.evaluated),
            # A group's per leaf: the documents its final lm-eval call scored, and the base is compared on.
            "evaluated_ids": per_leaf(self.evaluated, self.leaves) if self.is_group
            else [doc for _, doc in sorted(self.evaluated)],
            "stopped_early": self.stopped_early,
            "verdicts": dict(self.verdicts),
            "gates": {rule.kind: rule.threshold for rule in self.rules},
            "rules": {rule.kind: rule.rule for rule in self.rules},
            "chunks": list(self.chunks),
            "note": self.note,
            **({"group": True} if self.is_group else {}),
            # Which models were evaluated chunk by chunk: both in a paired run (the base had no scores yet).
            "sides": ["base", "fine-tuned"] if self.paired else ["fine-tuned"],
        }

    @classmethod
    def from_spec(cls, task: str, entry: Mapping[str, Any], alpha: float, seed: int, batch_size: str,
                  population: list[Doc] | None = None) -> TaskMonitor:
        """The monitor the parent's instructions describe; `batch_size` is lm-eval's (a number, or auto).

        `alpha` is the session's error rate; a task's own (its share of the family's) takes its place.
        A group's base scores come per leaf (`leaves`), a task's as its own (`base`). In a paired run
        (`population` given: the task's documents, a group's over all its leaves) the entry has no base scores.
        """
        leaves = entry["leaves"] if "leaves" in entry else {task: entry.get("base") or {}}
        return cls(
            task=task,
            metric=entry["metric"],
            higher_is_better=bool(entry["higher_is_better"]),
            base={(leaf, int(doc)): float(value) for leaf, docs in leaves.items() for doc, value in docs.items()},
            paired=population is not None,
            population=list(population or []),
            rules=[Gate.from_spec(spec) for spec in entry["gates"]],
            alpha=float(entry.get("error_rate", alpha)),
            order_seed=task_seed(seed, task),
            batch_size=int(batch_size) if str(batch_size).isdigit() and int(batch_size) > 0 else 1,
        )


def per_leaf(docs: Iterable[Doc], leaves: Iterable[str] = ()) -> dict[str, list[int]]:
    """{leaf: its doc ids, ascending} (lm-eval's `samples=` form); every one of `leaves` listed, if need be empty."""
    selected: dict[str, list[int]] = {leaf: [] for leaf in leaves}
    for leaf, doc in sorted(docs):
        selected.setdefault(leaf, []).append(doc)
    return selected


def task_seed(seed: int, task: str) -> int:
    """A task's order, from the session's seed: the same in every session, so a resumed one repeats it."""
    return (seed * 1_000_003 + zlib.crc32(task.encode())) % 2**32


# ---------------------------------------------------------------------------------------------
# The parent's side
# ---------------------------------------------------------------------------------------------


def with_early_stop(request: RunRequest, plan: Plan, base: RunRecord | None, say: Say) -> RunRequest:
    """`request`, made an early-stopping run when --bench-early-stop is on and some task can stop early."""
    if not plan.options.early_stop or request.role != "fine-tuned":
        return request
    if not plan.compares:
        say("[bench] early stop: off, because it decides gates against the base, and this session evaluates "
            "the fine-tuned model alone; every document is evaluated")
        return request
    if request.use_cache is None:
        say("[bench] early stop: off, because this backend cannot fingerprint the model, so it has no response "
            "cache to assemble the chunks from; every document is evaluated")
        return request
    if base is None or base.partial:
        say("[bench] early stop: off, because the base scores are incomplete; every document is evaluated")
        return request
    tasks, in_full = _entries(plan, lambda task: _task_entry(plan, base, task))
    _say_in_full(in_full, say)
    if not tasks:
        return request
    spec = {"error_rate": plan.options.error_rate, "seed": plan.settings.seeds[0], "tasks": tasks}
    say(f"[bench] early stop: {', '.join(tasks)} evaluated in a seeded random order until every gate is settled "
        f"(error ≤ {plan.options.error_rate:g}{_error_share(plan, tasks)})")
    return dataclasses.replace(request, mode=EARLY_STOP, early_stop=spec)


def paired_early_stop(finetuned: RunRequest, base: RunRequest, plan: Plan, say: Say) -> RunRequest | None:
    """The fine-tuned request made a paired early-stopping run, in which the base is evaluated alongside.

    For a session whose base has no scores yet (none shared, none cached, no --bench-compare-to):
    one child loads both models and evaluates them on the same documents in the same seeded order,
    chunk by chunk, and both stop when the task's gates are settled. None, with a line saying why
    where it matters, when the base is to be evaluated in full first (and the fine-tuned model early
    stopped against it, see with_early_stop).
    """
    if not plan.options.early_stop or not plan.compares or finetuned.use_cache is None:
        return None  # with_early_stop says why when the fine-tuned run starts
    why = _why_not_paired(base)
    if why is not None:
        say(f"[bench] early stop: the base is evaluated in full first, because {why}")
        return None
    tasks, in_full = _entries(plan, lambda task: _paired_entry(plan, task))
    if not tasks:
        whys = "; ".join(f"{task}: {why}" for task, why in in_full.items())
        say(f"[bench] early stop: the base is evaluated in full first, because no task can stop early before "
            f"a run has results ({whys})")
        return None
    _say_in_full(in_full, say)
    spec = {"error_rate": plan.options.error_rate, "seed": plan.settings.seeds[0], "tasks": tasks}
    say(f"[bench] early stop: {', '.join(tasks)} evaluated on both models, on the same documents in a seeded "
        f"random order, until every gate is settled (error ≤ {plan.options.error_rate:g}"
        f"{_error_share(plan, tasks)}); the base has no scores yet, so one process holds both models in memory")
    return dataclasses.replace(finetuned, mode=EARLY_STOP, early_stop=spec, paired_base=base)


def _why_not_paired(base: RunRequest) -> str | None:
    if base.use_cache is None:
        return "it has no response cache (its model's content is unknown) to keep the answers of a run that stops early"
    if base.side.lm_eval_model == "vllm":
        return "vLLM reserves most of the GPU for one model, and a paired run would hold two"
    return None


def _entries(plan: Plan, entry_of: Callable[[str], tuple[dict[str, Any] | None, str]]
             ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(the child's instructions for each task that can stop early, why each other task runs in full)."""
    tasks: dict[str, Any] = {}
    in_full: dict[str, str] = {}
    for task in plan.tasks:
        entry, why = entry_of(task)
        if entry is None:
            in_full[task] = why
        else:
            tasks[task] = entry
    return tasks, in_full


def _say_in_full(in_full: Mapping[str, str], say: Say) -> None:
    for task, why in in_full.items():
        say(f"[bench] early stop: {task} runs in full: {why}")


def _error_share(plan: Plan, tasks: Mapping[str, Mapping[str, Any]]) -> str:
    rates = sorted({entry["error_rate"] for entry in tasks.values()})
    if len(rates) == 1 and rates[0] == plan.options.error_rate:
        return ""
    return (f"; the interval and proven gates' sequences each at {rates[0]:.3g} (Bonferroni over "
            f"{len(plan.family.tasks)} tasks)")


def _paired_entry(plan: Plan, task: str) -> tuple[dict[str, Any] | None, str]:
    """The child's instructions for `task` in a paired run, from the plan alone (no run has results yet).

    The child checks the rest on the loaded task (a group, few-shot prompts) and on every chunk's
    scores (per-document values in [0, 1]), and hands a task that fails them to the full run.
    """
    headline = plan.headlines.get(task)
    if headline is None:
        return None, "its headline metric is known only from a run's results, and the base has none yet"
    if not headline.per_document:
        return None, f"{headline.key} is computed over the whole corpus, not averaged per document"
    return _instructions(plan, task, headline.key, headline.higher_is_better), ""


def _instructions(plan: Plan, task: str, metric: str, higher_is_better: bool) -> dict[str, Any]:
    # The plan's gates, for the metric the runs report (a fraction: its scores are in [0, 1]).
    gates = [gate.for_metric(higher_is_better, True) for gate in plan.gates_of(task)]
    return {
        "metric": metric,
        "higher_is_better": higher_is_better,
        "gates": [gate.to_spec() for gate in gates],
        # Bonferroni over the family's tasks: every sequence that can settle a statistical gate shares the error.
        "error_rate": plan.family.sequence_alpha(task, plan.options.error_rate),
    }


def _task_entry(plan: Plan, base: RunRecord, task: str) -> tuple[dict[str, Any] | None, str]:
    """The child's instructions for `task`, or None and why it cannot stop early."""
    headline = headlines_for_results(plan.tasks, plan.headlines, {"base": base.results},
                                     plan.options.metrics).get(task)
    if headline is None:
        return None, "the base run reported no result for it"
    if not headline.per_document:
        return None, f"{headline.key} is computed over the whole corpus, not averaged per document"
    try:
        samples = leaf_samples(base, task, headline.key)
    except CorpusLevelMetric as exc:
        return None, str(exc)
    missing = [leaf for leaf in leaf_tasks(base.results, task) if not samples.get(leaf)]
    if missing:
        return None, f"the base run has no per-document scores for {missing[0]}"
    if any(not 0.0 <= s.value <= 1.0 for docs in samples.values() for s in docs.values()):
        return None, f"{headline.key} has per-document scores outside [0, 1]"
    scores = {leaf: {str(doc): s.value for doc, s in docs.items()} for leaf, docs in samples.items()}
    entry = _instructions(plan, task, headline.key, headline.higher_is_better)
    # A group's (whose headline the child checks is the size-weighted mean over its leaves) per leaf.
    return {**entry, **({"base": scores[task]} if list(scores) == [task] else {"leaves": scores})}, ""


def apply_early_stop(comparisons: Mapping[str, TaskComparison], base: RunRecord, finetuned: RunRecord) -> None:
    """Record each task's early stop in its comparison; a task that stopped early compares the evaluated documents.

    lm-eval scored the fine-tuned model on those documents only, so the base's score is taken on the
    same ones (the mean of its per-document scores, which is what lm-eval reports for these metrics; for
    a group, its size-weighted aggregate over its leaves, the mean of all their documents pooled). In a
    paired run lm-eval scored the base on those documents only too: its score is already theirs.
    """
    records = (finetuned.extra.get(EARLY_STOP) or {}).get("tasks") or {}
    for task, record in records.items():
        comp = comparisons.get(task)
        if comp is None:
            continue
        comp.extra[EARLY_STOP] = record
        if record["stopped_early"] and "base" not in record.get("sides", ()):
            scores = leaf_samples(base, task, record["metric"])
            evaluated = record["evaluated_ids"]
            per_leaf_ids = evaluated if isinstance(evaluated, dict) else {task: evaluated}
            record["base_all_documents"] = comp.base_accuracy
            comp.base_accuracy = float(np.mean([scores[leaf][doc].value for leaf, ids in per_leaf_ids.items()
                                                for doc in ids]))


def tasks_stopped_early(record: RunRecord) -> list[str]:
    """The tasks a run stopped early on: its scores of them are on part of their documents, so it is no full run."""
    tasks = (record.extra.get(EARLY_STOP) or {}).get("tasks") or {}
    return [task for task, entry in tasks.items() if entry.get("stopped_early")]


def early_stop_progress(role: str, event: Mapping[str, Any]) -> str:
    """The terminal line after a chunk: documents so far, Δ's bounds, what is settled."""
    task = event.get("task")
    if event.get("note"):
        return f"[bench] {role}: {task}: {event['note']}"
    settled = ", ".join(f"{gate} {verdict}" for gate, verdict in (event.get("verdicts") or {}).items())
    return (f"[bench] {role}: {task}: {event.get('documents')}/{event.get('total')} documents, "
            f"Δ in [{100 * float(event['delta_low']):+.1f}, {100 * float(event['delta_high']):+.1f}] points"
            f"{'; ' + settled if settled else ''}")
