"""benchmark.json: what was compared, the scores, their evidence, and what reproduces them (no pytest here).

Its shape is the published schema (schemas/benchmark.schema.json) and store/benchmark_file.py's types.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pytest_finetune_bench import __version__
from pytest_finetune_bench.compare.scores import TaskComparison, metric_value, unit_of
from pytest_finetune_bench.core.records import Execution, RunRecord, RunRequest
from pytest_finetune_bench.core.settings import SEED_NAMES, lm_eval_arguments
from pytest_finetune_bench.plan import ROLES, Plan
from pytest_finetune_bench.plan.metrics import headlines_for_results
from pytest_finetune_bench.report.facts import training_facts
from pytest_finetune_bench.run.recovery import with_batch_size
from pytest_finetune_bench.store.benchmark_file import SCHEMA_VERSION, SIDE_KEYS


def build_summary(
    plan: Plan, execution: Execution, comparisons: Mapping[str, TaskComparison], errors: Mapping[str, str],
    gates: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The session's summary; `errors` adds failures after the runs (statistics, flips) to the runs' own.

    `gates` holds the decision of each gate test that ran (compare/gates.py `Decision.to_json`):
    {"ifeval::improves": {"outcome": "passed", "threshold": 0.02, "rule": "point", ...}}.
    """
    return {
        **_header(plan, execution, errors),
        "model_path": str(plan.location.adapter) if plan.variant == "lora" else plan.location.hf_path,
        # Which export of outputs/<name>/ was measured (merged_16bit, merged_4bit, lora, gguf, folder, hub, served).
        "model_variant": plan.variant,
        "base_model_source": plan.base.source if plan.base else None,
        **{SIDE_KEYS[role]: _side_summary(plan, execution.runs.get(role)) for role in ROLES},
        "comparison": {task: c.to_json() for task, c in comparisons.items()},
        "gates": {name: dict(record) for name, record in (gates or {}).items()},
        **({"family": plan.family.to_json()} if plan.gates else {}),
        **headline_scores(plan, execution.runs),
        "training": dict(training_facts(plan.location.root)) if plan.location.root else {},
        "skipped_tasks": dict(plan.skipped),
        # The dataset behind each task as lm-eval's config names it, also when --bench-data-dir read local copies.
        "task_data": {task: data.to_json() for task, data in plan.task_data.items()},
        "backends": {role: plan.side(role).backend for role in plan.roles},
        "reproduce": reproduce(plan, execution),
    }


def headline_scores(plan: Plan, runs: Mapping[str, RunRecord]) -> dict[str, Any]:
    """Each evaluated side's headline score per task, with the metric and its direction.

    Present with one side too (--bench-base none), so experiments can be ranked by their own scores.
    """
    results = {role: record.results for role, record in runs.items()}
    headlines = headlines_for_results(plan.tasks, plan.headlines, results, plan.options.metrics)
    scores = {role: {task: metric_value(record.results, task, h.key) for task, h in headlines.items()}
              for role, record in runs.items()}
    return {
        "headlines": {task: {"metric": h.key, "higher_is_better": h.higher_is_better,
                             "unit": unit_of(h, *(side[task] for side in scores.values()))}
                      for task, h in headlines.items()},
        "scores": scores,
    }


def scores_only_summary(plan: Plan, execution: Execution, errors: Mapping[str, str]) -> dict[str, Any]:
    """benchmark.json from what cannot fail: who was compared, the statuses and lm-eval's own results."""
    return {
        **_header(plan, execution, errors),
        **{SIDE_KEYS[role]: None if (record := execution.runs.get(role)) is None else
           {"model": record.model, "results": record.task_results, "results_file": str(record.results_file)}
           for role in ROLES},
    }


def _header(plan: Plan, execution: Execution, errors: Mapping[str, str]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "model_name": plan.location.name,
        "label": plan.label,
        "base_model_name": plan.base.model if plan.base else None,
        # Which sides were evaluated; one alone (--bench-base none, --bench-only-base) has no comparison.
        "evaluated": list(plan.roles),
        "timestamp": execution.started_at.astimezone().isoformat(timespec="seconds"),
        "status": execution.status,
        "run_status": execution.statuses,
        "errors": {**{role: str(exc) for role, exc in execution.errors.items()}, **errors},
    }


def _side_summary(plan: Plan, record: RunRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    side = plan.side(record.role)
    backend = plan.base_backend if record.role == "base" else plan.backend
    return {
        "model": record.model,
        "results": {t: record.results.get("results", {}).get(t) for t in plan.tasks},
        "benchmark_dir": str(record.results_file.parent.parent),
        "results_file": str(record.results_file),
        "samples_files": {t: str(p) for t, p in record.samples_files.items()},
        "timestamp": record.timestamp,
        "status": record.status,
        "batch_size": record.extra.get("batch_size"),
        "samples": record.progress,
        "partial_reason": record.extra.get("failure"),
        "generated": record.generated,
        "from_cache": record.from_cache,
        "seconds": None if record.seconds is None else round(record.seconds, 1),
        "backend": side.backend,
        "lm_eval_model": side.lm_eval_model,
        # Who rendered the chat template: lm-eval with the tokenizer's, or the server with the model's own.
        "chat_template": backend.chat_template_applied_by if plan.settings.apply_chat_template else None,
    }


def reproduce(plan: Plan, execution: Execution) -> dict[str, Any]:
    """The settings identity of each side and the lm-eval command that reproduces each side's scores."""
    s = plan.settings
    requested = s.batch_size
    finished = _finished_batch_size(execution)
    return {
        "lm_eval_version": s.lm_eval_version,
        "plugin_version": __version__,
        "backend": _backends_text(plan),
        "device": s.device,
        "dtype": s.dtype,
        # What finished (smaller after an out-of-memory retry), and what was asked for.
        "batch_size": finished or requested,
        "batch_size_requested": requested,
        "gen_kwargs": s.gen_kwargs,
        "limit": s.limit,
        "num_fewshot": s.num_fewshot,
        "apply_chat_template": s.apply_chat_template,
        "fewshot_as_multiturn": s.fewshot_as_multiturn,
        "seeds": dict(zip(SEED_NAMES, s.seeds, strict=True)),
        "tasks": list(s.tasks),
        "data_dir": str(plan.options.data_dir.resolve()) if plan.options.data_dir else None,
        "data_files": list(s.data_files),
        # As lm-eval is given them: the backend's, then the engines' GPU settings (as asked for).
        "model_args": {role: lm_eval_arguments(s, plan.side(role))["model_args"] for role in plan.roles},
        "identity": {role: plan.identity(role) for role in plan.roles},
        "commands": {role: _finished_request(execution, role).cli_command(_scored_samples(execution, role))
                     for role in execution.requests},
    }


def _backends_text(plan: Plan) -> str:
    backends = {plan.side(role).backend for role in plan.roles}
    if len(backends) == 1:
        return backends.pop()
    return ",".join(f"{role}={plan.side(role).backend}" for role in plan.roles)


def _finished_request(execution: Execution, role: str) -> RunRequest:
    """The request whose run produced `role`'s scores: its batch size (and vLLM's memory share) may be smaller."""
    request = execution.requests[role]
    record = execution.runs.get(role)
    extra = record.extra if record is not None else {}
    if extra.get("gpu_memory_utilization") is not None:
        settings = dataclasses.replace(request.settings, gpu_memory_utilization=extra["gpu_memory_utilization"])
        request = dataclasses.replace(request, settings=settings)
    if record is not None and record.scored_tasks is not None:  # a group scored on the leaves it reached
        settings = dataclasses.replace(request.settings, include_path=str(record.scored_tasks))
        request = dataclasses.replace(request, settings=settings)
    finished = extra.get("batch_size")
    return with_batch_size(request, str(finished)) if finished else request


def _scored_samples(execution: Execution, role: str) -> dict[str, list[int]] | None:
    """The documents `role`'s scores are on when they are not every one (early stop, partial scoring)."""
    record = execution.runs.get(role)
    return None if record is None else record.scored_samples


def _finished_batch_size(execution: Execution) -> str | None:
    """The batch size every finished run ended with, else the values per side; None before any run."""
    values = {role: str(r.extra["batch_size"]) for role, r in execution.runs.items() if "batch_size" in r.extra}
    if not values:
        return None
    distinct = set(values.values())
    return distinct.pop() if len(distinct) == 1 else ", ".join(f"{r}={v}" for r, v in values.items())
