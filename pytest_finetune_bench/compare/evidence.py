"""Paired statistics and flipped samples per task, from both runs' per-sample files (no pytest here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_finetune_bench.compare.flips import Flip, find_flips, write_flips
from pytest_finetune_bench.compare.samples import CorpusLevelMetric, SampleRecord, load_samples, paired_values
from pytest_finetune_bench.compare.scores import TaskComparison
from pytest_finetune_bench.compare.stats import PairedStats, paired_stats
from pytest_finetune_bench.core.records import RunRecord

# Documents of different subtasks (MMLU's 57 subjects) share doc ids; offsetting keeps them apart.
_SUBTASK_STRIDE = 10_000_000


@dataclass
class TaskAnalysis:
    """Per-document evidence behind one task's delta.

    A metric that is not a mean of per-document scores (wikitext's perplexities) has none: its
    `note` says so, `stats()` is None, and gates decide on the point estimate.
    """

    task: str
    base: dict[int, SampleRecord]
    finetuned: dict[int, SampleRecord]
    flips: list[Flip] = field(default_factory=list)
    flips_file: Path | None = None
    higher_is_better: bool = True
    note: str | None = None  # why there are no paired statistics

    def stats(self, confidence: float = 0.95) -> PairedStats | None:
        if self.note is not None:
            return None
        base_vals, ft_vals, _ = paired_values(self.base, self.finetuned)
        return paired_stats(base_vals, ft_vals, confidence=confidence, seed=0, higher_is_better=self.higher_is_better)

    @property
    def regressions(self) -> list[Flip]:
        return [f for f in self.flips if f.direction == "regressed"]

    def to_json(self, confidence: float) -> dict[str, Any]:
        stats = self.stats(confidence)
        if stats is None:
            return {"stats": None, "stats_note": self.note, "flips": None}
        return {
            "stats": stats.to_json(),
            "flips": {
                "regressed": len(self.regressions),
                "improved": len(self.flips) - len(self.regressions),
                "file": str(self.flips_file) if self.flips_file else None,
            },
        }


def leaf_tasks(results: dict[str, Any], task: str) -> list[str]:
    """`task` itself, or the leaves of the group it names (lm-eval's `group_subtasks`)."""
    children = results.get("group_subtasks", {}).get(task)
    if not children:
        return [task]
    leaves: list[str] = []
    for child in children:
        leaves.extend(leaf_tasks(results, child))
    return leaves


def leaf_samples(record: RunRecord, task: str, metric: str) -> dict[str, dict[int, SampleRecord]]:
    """{leaf task: its per-document values} of `task` (itself, or a group's leaves), for those with a samples file."""
    return {leaf: load_samples(path, metric) for leaf in sorted(leaf_tasks(record.results, task))
            if (path := record.samples_files.get(leaf)) is not None}


def task_samples(record: RunRecord, task: str, metric: str,
                 leaves: Sequence[str] | None = None) -> dict[int, SampleRecord]:
    """The task's per-document values; a group's subtasks pooled, as its size-weighted mean is.

    A group's documents are numbered by their leaf's place among `leaves` (by default the record's own,
    sorted): two runs' samples pair up only when numbered over the same leaves, so pass both runs' leaves
    when one of them may lack some (an early-stopped group scores only the leaves it evaluated).
    """
    leaves = sorted(leaf_tasks(record.results, task)) if leaves is None else list(leaves)
    pooled: dict[int, SampleRecord] = {}
    # A group reports its aggregate under the same "metric,filter" key its leaves use.
    for leaf, samples in leaf_samples(record, task, metric).items():
        for doc_id, sample in samples.items():
            key = doc_id + leaves.index(leaf) * _SUBTASK_STRIDE if len(leaves) > 1 else doc_id
            pooled[key] = replace(sample, doc_id=key)
    return pooled


def analyse(
    comparisons: dict[str, TaskComparison], base: RunRecord, finetuned: RunRecord, flips_dir: Path | None
) -> dict[str, TaskAnalysis]:
    """Per task: paired samples, flipped documents, and (when `flips_dir` is given) flips_<task>.jsonl."""
    analyses = {}
    for task, comp in comparisons.items():
        try:
            analysis = _paired_analysis(comp, base, finetuned)
        except CorpusLevelMetric as exc:
            # A custom aggregation that looked like a mean, until its per-document values were read.
            analysis = _without_statistics(comp, f"{comp.metric} has no per-document scores ({exc})")
        if flips_dir is not None and analysis.note is None:
            analysis.flips_file = flips_dir / f"flips_{task}.jsonl"
            write_flips(analysis.flips_file, analysis.flips)
        analyses[task] = analysis
    return analyses


def add_evidence(comparisons: dict[str, TaskComparison], base: RunRecord, finetuned: RunRecord,
                 flips_dir: Path | None, confidence: float) -> dict[str, TaskAnalysis]:
    """Add each task's paired statistics and flip counts to its comparison; flips_<task>.jsonl go to `flips_dir`.

    The one place a session (orchestrate/session.py) and `summary` (report/from_disk.py) turn two runs'
    samples into evidence.
    """
    analyses = analyse(comparisons, base, finetuned, flips_dir)
    for task, analysis in analyses.items():
        comparisons[task].extra.update(analysis.to_json(confidence))
    return analyses


def _paired_analysis(comp: TaskComparison, base: RunRecord, finetuned: RunRecord) -> TaskAnalysis:
    if not comp.per_document:
        return _without_statistics(comp, f"{comp.metric} is computed over the whole corpus, not averaged per document")
    leaves = sorted(set(leaf_tasks(base.results, comp.task)) | set(leaf_tasks(finetuned.results, comp.task)))
    base_samples = task_samples(base, comp.task, comp.metric, leaves)
    ft_samples = task_samples(finetuned, comp.task, comp.metric, leaves)
    flips = find_flips(base_samples, ft_samples, comp.higher_is_better)
    return TaskAnalysis(comp.task, base_samples, ft_samples, flips, higher_is_better=comp.higher_is_better)


def _without_statistics(comp: TaskComparison, why: str) -> TaskAnalysis:
    note = f"no paired statistics or flips: {why}; gates compare the scores themselves"
    return TaskAnalysis(comp.task, {}, {}, higher_is_better=comp.higher_is_better, note=note)
