"""One benchmarking session: a plan, its runs, their comparison and the summary on disk (no pytest here).

The plugin keeps one BenchSession per pytest session and asks it for results; the plan is made
before (plan/planner.py), so everything here only executes and reads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.evidence import TaskAnalysis, add_evidence
from pytest_finetune_bench.compare.family import family_levels
from pytest_finetune_bench.compare.gates import Decision, decide, failed, skipped
from pytest_finetune_bench.compare.scores import TaskComparison, compare
from pytest_finetune_bench.core.records import RunRecord
from pytest_finetune_bench.plan import Plan
from pytest_finetune_bench.plan.gates import Gate
from pytest_finetune_bench.plan.metrics import headlines_for_results
from pytest_finetune_bench.report.summary import build_summary, scores_only_summary
from pytest_finetune_bench.run.early_stop import apply_early_stop
from pytest_finetune_bench.run.executor import Executor
from pytest_finetune_bench.run.recovery import incomplete_reason
from pytest_finetune_bench.store.base_cache import BaseCache
from pytest_finetune_bench.store.summaries import publish_summary

Say = Callable[[str], None]


class BenchSession:
    """Runs the base and fine-tuned evaluations at most once per session and compares them."""

    def __init__(self, plan: Plan, say: Say, base_cache: BaseCache | None = None) -> None:
        self.plan = plan
        self.say = say
        self.executor = Executor(plan, say, base_cache=base_cache)
        self._comparison: dict[str, TaskComparison] | None = None
        self._analyses: dict[str, TaskAnalysis] = {}
        self.analysis_error: str | None = None
        self.gate_decisions: dict[str, Decision] = {}  # "ifeval::improves" → its decision, once its test ran
        self._levels: Mapping[str, float] | None = None  # each statistical gate's level after the family's adjustment

    @property
    def active(self) -> bool:
        """Whether any benchmark was started (then benchmark.json is written)."""
        return self.executor.active

    def run(self, role: str) -> RunRecord:
        """The run for `role` ("base" or "fine-tuned"), evaluated on first use."""
        return self.executor.run(role)

    def completed(self, role: str) -> RunRecord | None:
        return self.executor.runs.get(role)

    def comparison(self) -> dict[str, TaskComparison]:
        """Per task: both scores, the delta, its paired statistics and flip counts (computed once)."""
        if self._comparison is None and not self.plan.compares:
            self._comparison = {}
        if self._comparison is None:
            base, finetuned = self.run("base"), self.run("fine-tuned")
            # Headlines chosen in the plan; tasks defined in Python are resolved from their results.
            headlines = headlines_for_results(self.plan.tasks, self.plan.headlines,
                                              {"base": base.results, "fine-tuned": finetuned.results},
                                              self.plan.options.metrics)
            comparisons = compare(base.results, finetuned.results, headlines)
            apply_early_stop(comparisons, base, finetuned)
            self._analyses = self._analyse(comparisons, base, finetuned)
            self._comparison = comparisons
        return self._comparison

    def _analyse(self, comparisons: dict[str, TaskComparison], base: RunRecord,
                 finetuned: RunRecord) -> dict[str, TaskAnalysis]:
        """Statistics and flips behind each delta; when they fail, the failure is recorded and the scores kept."""
        try:
            analyses = add_evidence(comparisons, base, finetuned, self.executor.finetuned_dir,
                                    self.plan.options.confidence or 0.95)
        except Exception as exc:  # noqa: BLE001 - both runs are done: nothing may cost their scores
            self.analysis_error = f"statistics and flips failed ({type(exc).__name__}: {exc}); the scores are kept"
            self.say(f"[bench] {self.analysis_error}")
            for comparison in comparisons.values():
                comparison.extra.clear()
            return {}
        return analyses

    def analysis(self, task: str) -> TaskAnalysis | None:
        """Per-document evidence (samples, flips, statistics) behind `task`'s delta; None when it failed."""
        self.comparison()
        return self._analyses.get(task)

    def decide(self, gate: Gate) -> Decision:
        """Decide one of the plan's gates (running what it needs) and record the decision for benchmark.json."""
        self.gate_decisions[gate.name] = decision = self._decision(self.at_family_level(gate))
        return decision

    def at_family_level(self, gate: Gate) -> Gate:
        """`gate` at the level its family gives it (Holm over the session's statistical gates; compare/family.py)."""
        if not gate.statistical:
            return gate
        if self._levels is None:
            self._levels = family_levels(self.plan.family, self.plan.gates, self._decision)
        level = self._levels.get(gate.name)
        return gate if level is None else dataclasses.replace(gate, confidence=level)

    def record_failure(self, gate: Gate, error: BaseException) -> None:
        """A gate whose decision raised: it failed, and benchmark.json says so."""
        self.gate_decisions[gate.name] = failed(gate, "error", f"{type(error).__name__}: {error}")

    def _decision(self, gate: Gate) -> Decision:
        skip_reason = self.plan.skipped.get(gate.task)
        if skip_reason is not None:
            return skipped(gate, skip_reason)
        try:
            comp = self.comparison().get(gate.task)
        except BenchError as exc:
            return failed(gate, "no comparison", str(exc))
        if comp is None:  # a task defined in Python that neither run reported, so not even its metric is known
            return failed(gate, "no score", f"{gate.task}: lm-eval reported no result for it in either run")
        # Scores from part of the samples are shown in the table, but never pass a gate.
        partial = incomplete_reason((self.completed("base"), self.completed("fine-tuned")))
        if partial:
            return failed(gate, "incomplete run", partial)
        return decide(gate, comp, self.analysis(gate.task))

    def summary(self) -> dict[str, Any]:
        """benchmark.json's content (see report/summary.py)."""
        both = self.plan.compares and all(role in self.executor.runs for role in ("base", "fine-tuned"))
        comparisons = self.comparison() if both else {}
        errors = {"comparison": self.analysis_error} if self.analysis_error else {}
        gates = {name: decision.to_json() for name, decision in self.gate_decisions.items()}
        return build_summary(self.plan, self.executor.execution(), comparisons, errors, gates)

    def write_summary(self) -> Path | None:
        """Write this session's summary (an incomplete one never replaces a complete one; see store/summaries.py).

        Returns the file that holds it.
        """
        if not self.active:
            return None
        try:
            summary = self.summary()
        except Exception as exc:  # noqa: BLE001 - the scores of finished runs must reach disk whatever else failed
            error = f"building the summary failed ({type(exc).__name__}: {exc}); it holds the scores only"
            self.say(f"[bench] {error}")
            summary = scores_only_summary(self.plan, self.executor.execution(), {"summary": error})
        return publish_summary(self.plan.output_dir, self.executor.finetuned_dir, summary)

    def backends_line(self) -> str:
        """Which backend produces each side, for the terminal summary."""
        sides = (self.plan.side(role) for role in self.plan.roles)
        return "backends: " + ", ".join(f"{s.role} {s.model} via {s.backend} ({s.lm_eval_model})" for s in sides)

    def errors(self) -> dict[str, BenchError]:
        return dict(self.executor.errors)
