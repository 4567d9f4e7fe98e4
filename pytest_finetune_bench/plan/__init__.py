"""The plan: everything that defines a benchmark session, resolved up front and then never changed.

`make_plan` (planner.py) turns the user's choices into a `Plan`: which models, through which
backends, under which settings, on which tasks, with which thresholds. Execution (run/) only reads
it, so nothing about what is measured can depend on the order in which things happen to run.
`pytest --bench-plan` prints it and runs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pytest_finetune_bench.backends import Backend
from pytest_finetune_bench.core.settings import EvalSettings, Side, cache_key, identity, lm_eval_arguments
from pytest_finetune_bench.plan.choices import BenchOptions
from pytest_finetune_bench.plan.gates import Family, Gate, make_family
from pytest_finetune_bench.plan.metrics import Headline
from pytest_finetune_bench.plan.models import ModelLocation
from pytest_finetune_bench.plan.task_data import TaskData

ROLES = ("base", "fine-tuned")


@dataclass(frozen=True)
class Plan:
    """One benchmark session, fully resolved: both sides, the shared settings, the tasks and the gates."""

    options: BenchOptions
    location: ModelLocation
    base: Side | None  # None with --bench-base none
    finetuned: Side | None  # None with --bench-only-base
    base_backend: Backend
    backend: Backend
    settings: EvalSettings
    skipped: Mapping[str, str]  # requested tasks no backend of this session can score, with why
    output_dir: Path
    # The metric that gates each task, chosen before any run (tasks defined in Python: from their results).
    headlines: Mapping[str, Headline]
    # How the session names this model: its --bench-model spelling, with @backend when it runs through several.
    label: str = ""
    # One per gated task and kind (plan/gates.py), in the order of the tasks; none without a comparison.
    gates: tuple[Gate, ...] = ()
    # Where each task's data comes from, as lm-eval's task config names it (before any offline overlay).
    task_data: Mapping[str, TaskData] = field(default_factory=dict)

    @property
    def roles(self) -> tuple[str, ...]:
        """The sides this plan evaluates: both, or one with --bench-base none / --bench-only-base."""
        return tuple(role for role in ROLES if self.has(role))

    @property
    def compares(self) -> bool:
        """Whether both sides run, so there is a comparison to gate."""
        return self.base is not None and self.finetuned is not None

    @property
    def variant(self) -> str:
        """Which export of the fine-tune is evaluated: a server evaluates what it serves (the GGUF export)."""
        if self.backend.is_server:
            return "gguf" if self.location.gguf_files else "served"
        return self.location.variant

    def has(self, role: str) -> bool:
        return (self.base if role == "base" else self.finetuned) is not None

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks both models run."""
        return self.settings.tasks

    @property
    def requested_tasks(self) -> tuple[str, ...]:
        return self.options.task_list

    @property
    def family(self) -> Family:
        """The statistical gates and how their error is controlled together (--bench-family-adjust)."""
        return make_family(self.gates, self.options.family_adjust, self.options.confidence)

    def gates_of(self, task: str) -> tuple[Gate, ...]:
        """`task`'s gates: `improves` (when it is a target) before `no_regression`."""
        return tuple(gate for gate in self.gates if gate.task == task)

    def side(self, role: str) -> Side:
        side = self.base if role == "base" else self.finetuned
        if side is None:
            raise ValueError(f"this plan has no {role} side (roles: {', '.join(self.roles)})")
        return side

    def identity(self, role: str) -> dict[str, object]:
        """What `role`'s scores depend on (see settings.identity)."""
        return identity(self.settings, self.side(role))

    def key(self, role: str) -> str:
        """The cache key of `role`'s scores (settings.cache_key)."""
        return cache_key(self.identity(role))

    def describe(self) -> Iterator[str]:
        """The plan as lines for the terminal (`--bench-plan`)."""
        yield f"model under test: {self.label or self.location.source} ({self.variant})"
        yield f"results: {self.output_dir}"
        if not self.compares:
            yield f"evaluates the {self.roles[0]} model alone: no comparison, no gates"
        for role in self.roles:
            side = self.side(role)
            yield f"{role}: {side.model} via {side.backend} ({side.lm_eval_model}); named by {side.source}"
            yield f"  model args: {lm_eval_arguments(self.settings, side)['model_args']}"
            yield f"  content: {side.fingerprint or 'unknown (nothing is cached for it)'}"
            yield f"  cache key: {self.key(role)[:16]}"
        yield f"tasks: {', '.join(self.tasks)}"
        for task in self.tasks:
            headline = self.headlines.get(task)
            if headline is not None:
                better = "higher" if headline.higher_is_better else "lower"
                yield f"  headline {task}: {headline.key} ({better} is better; {headline.source})"
        for task, reason in self.skipped.items():
            yield f"skipped {task}: {reason}"
        shared = lm_eval_arguments(self.settings, self.side(self.roles[0]))
        for name in ("limit", "num_fewshot", "batch_size", "device", "gen_kwargs", "apply_chat_template",
                     "fewshot_as_multiturn", "seeds", "include_path"):
            yield f"  {name}: {shared[name]}"
        yield f"  dtype: {self.settings.dtype}; lm-eval {self.settings.lm_eval_version}"
        for task in self.tasks if self.compares else ():
            yield f"gates {task}: {', '.join(gate.describe() for gate in self.gates_of(task))}"
        statement = self.family.statement() if self.compares else None
        if statement is not None:
            adjusted = "; each gate's interval at its Holm level once the scores are in" if self.family.adjusted else ""
            yield f"{statement}{adjusted}"
        if self.options.early_stop:
            yield (f"early stop: on, error ≤ {self.options.error_rate:g} (tasks with per-document scores in [0, 1], "
                   "zero-shot)")
