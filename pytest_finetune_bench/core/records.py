"""What a run is asked to do and what it gave back: the records run/, compare/, store/ and report/ pass around.

`RunRequest` (one model, one evaluation), `RunRecord` (a finished one, with its files) and `Execution`
(what a session's runs came to, as values: benchmark.json is built from it, never from the executor).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.core.settings import EvalSettings, Side, lm_eval_arguments

# `lm_eval` itself, run by our CLI after seeding langdetect (see run/child.seed_scorers and __main__).
REPRODUCE_PREFIX = ("python", "-m", "pytest_finetune_bench", "lm-eval")


@dataclass(frozen=True)
class RunRequest:
    """One model, one evaluation of every task in the settings."""

    side: Side
    settings: EvalSettings
    results_dir: Path  # where results_*.json and samples_*.jsonl end up
    log_path: Path
    use_cache: Path | None = None
    mode: str = "evaluate"  # or "score_partial": score only what the response cache holds (see run/child_partial.py)
    early_stop: dict[str, Any] | None = None  # mode "early_stop": what the child needs to stop early (run/early_stop)
    # Mode "early_stop" of a fine-tuned run whose base has no scores yet: the base's own request, evaluated
    # in the same child on the same documents (run/early_stop.paired_early_stop).
    paired_base: RunRequest | None = None

    @property
    def role(self) -> str:
        return self.side.role

    @property
    def model(self) -> str:
        return self.side.model

    @property
    def sides(self) -> list[RunRequest]:
        """The requests this one evaluates: itself, then its paired base (each alone, as a later run would)."""
        alone = replace(self, paired_base=None)
        return [alone] if self.paired_base is None else [alone, self.paired_base]

    def child_spec(self, output_path: Path) -> dict[str, Any]:
        """What the child is told; a paired base's own spec writes its files next to `output_path`."""
        paired = None if self.paired_base is None else self.paired_base.child_spec(output_path.with_name("out-base"))
        return {
            "lm_eval": lm_eval_arguments(self.settings, self.side),
            "imports": list(self.side.child_imports),
            "use_cache": str(self.use_cache) if self.use_cache else None,
            "output_path": str(output_path),
            "mode": self.mode,
            "early_stop": self.early_stop,
            "paired_base": paired,
            # The child stops when this process dies: it compares its parent with this pid.
            "parent_pid": os.getpid(),
        }

    def cli_command(self, samples: Mapping[str, list[int]] | None = None) -> str:
        """The command that reproduces this run's scores: lm-eval's CLI, with its scorers seeded as here.

        `samples` is the selection lm-eval scored when it was not every document (`RunRecord.scored_samples`).
        """
        return reproduce_command(lm_eval_arguments(self.settings, self.side), samples)


def reproduce_command(arguments: dict[str, Any], samples: Mapping[str, list[int]] | None = None) -> str:
    """lm-eval's CLI for `arguments` (see core/settings.lm_eval_arguments), run through our seeding wrapper.

    With `samples` ({leaf task: doc ids}), the CLI evaluates those documents only (`--samples`), as the
    run's last lm-eval call did; that selection already holds what a limit selected, and lm-eval refuses both.
    """
    a = arguments
    parts = [*REPRODUCE_PREFIX, "run", "--model", a["model"], "--model_args", a["model_args"]]
    parts += ["--tasks", ",".join(a["tasks"]), "--batch_size", a["batch_size"], "--device", a["device"]]
    if samples:
        parts += ["--samples", samples_argument(samples)]
    elif a["limit"] is not None:
        parts += ["--limit", str(a["limit"])]
    if a["num_fewshot"] is not None:
        parts += ["--num_fewshot", str(a["num_fewshot"])]
    if a["gen_kwargs"]:
        parts += ["--gen_kwargs", a["gen_kwargs"]]
    if a["apply_chat_template"]:
        # The CLI turns on fewshot_as_multiturn with it, as the runs do.
        parts += ["--apply_chat_template"]
    if a["include_path"]:
        parts += ["--include_path", a["include_path"]]
    parts += ["--seed", ",".join(map(str, a["seeds"])), "--log_samples", "--output_path", "OUT"]
    return " ".join(_quote(p) for p in parts)


def samples_argument(samples: Mapping[str, list[int]]) -> str:
    """lm-eval's `--samples` JSON: {task: doc ids ascending}, tasks sorted, so the same selection reads the same."""
    import json

    return json.dumps({task: sorted(samples[task]) for task in sorted(samples)}, separators=(",", ":"))


def _quote(part: str) -> str:
    import shlex

    return shlex.quote(part)


@dataclass
class RunRecord:
    """A finished evaluation: lm-eval's results plus where they are on disk."""

    role: str
    model: str
    results: dict[str, Any]
    results_file: Path
    samples_files: dict[str, Path]
    timestamp: str
    status: str = "complete"
    generated: int = 0
    from_cache: bool = False
    # Wall time of this session's evaluation (retries included); None for scores from a cache or another experiment.
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # {task: {"done": n, "total": m}}: samples scored of those asked for; done < total for a partial run
    progress: dict[str, dict[str, int]] = field(default_factory=dict)
    # {leaf task: doc ids, ascending}: the `samples=` selection lm-eval scored when it was not given every
    # document (a task stopped early, or partial scoring after a crash or timeout); None for a full run.
    scored_samples: dict[str, list[int]] | None = None
    # The task folder in which lm-eval builds a group stopped early as it was scored (only the leaves it
    # reached; plan/offline.py `write_pruned_groups`); None when the session's own task folder does.
    scored_tasks: Path | None = None

    @property
    def task_results(self) -> dict[str, dict[str, Any]]:
        return dict(self.results.get("results", {}))

    @property
    def partial(self) -> bool:
        """Scored from part of the samples only: the run timed out or crashed."""
        return self.status != "complete"


@dataclass(frozen=True)
class Execution:
    """What a session's runs came to: the values benchmark.json is built from (report/summary.py)."""

    started_at: datetime
    status: str  # complete, timeout, crashed or incomplete (run/recovery.overall_status)
    statuses: Mapping[str, str]  # {role: complete | timeout | crashed} for every run started
    runs: Mapping[str, RunRecord]
    requests: Mapping[str, RunRequest]
    errors: Mapping[str, BenchError]
