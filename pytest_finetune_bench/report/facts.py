"""What a benchmark.json says, as rows and short lines for the model cards, report.html and CI pages.

Everything here reads the summary alone (a session's, or one rebuilt by `summary`), so every output
shows the same numbers in the same words. No pytest here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_finetune_bench.compare.scores import TaskComparison, display_name
from pytest_finetune_bench.report.table import (
    comparisons_from_summary,
    detail_rows,
    evidence_columns,
    improvement_cell,
)
from pytest_finetune_bench.store.benchmark_file import BenchmarkSummary, SideRecord, comparison_of, side_of
from pytest_finetune_bench.text import markdown_inline

DEFAULT_CONFIDENCE = 0.95
RESULT_HEADERS = ("Benchmark", "Base", "Fine-tuned", "Change (relative)", "CI (points)", "p", "Flips")


def confidence_level(summary: BenchmarkSummary) -> float:
    """The confidence level of the summary's intervals (the same for every task)."""
    for comparison in comparison_of(summary).values():
        level = (comparison.get("stats") or {}).get("confidence")
        if isinstance(level, (int, float)):
            return float(level)
    return DEFAULT_CONFIDENCE


def comparisons(summary: BenchmarkSummary) -> dict[str, TaskComparison]:
    """The summary's comparisons as TaskComparison objects (scores plus their stats and flips)."""
    return comparisons_from_summary(summary)


def result_headers(summary: BenchmarkSummary) -> list[str]:
    """Column names of `result_rows`, the interval named with its confidence level."""
    level = f"{confidence_level(summary):.0%} CI (points)"
    return [level if header == "CI (points)" else header for header in RESULT_HEADERS]


def result_rows(summary: BenchmarkSummary) -> list[list[str]]:
    """Per task: name, both scores, `↗ +2.00% (+5.0%)`, interval, p-value and flip counts."""
    comps = comparisons(summary)
    level = confidence_level(summary)
    columns = evidence_columns(comps, level)
    interval, p_values, flips = columns[f"{level:.0%} CI (points)"], columns["p"], columns["Flips"]
    return [[display_name(task), c.value_text(c.base_accuracy), c.value_text(c.finetuned_accuracy), improvement_cell(c),
             interval.get(task, ""), p_values.get(task, ""), flips.get(task, "")] for task, c in comps.items()]


def ifeval_rows(summary: BenchmarkSummary) -> list[list[str]]:
    """IFEval's four metrics (strict/loose, prompt/instruction level); [] when IFEval was not run."""
    base = (side_of(summary, "base") or {}).get("results") or {}
    finetuned = (side_of(summary, "fine-tuned") or {}).get("results") or {}
    comparison = comparison_of(summary).get("ifeval") or {}
    headline = comparison.get("metric", "")
    # A task that stopped early has no like-for-like detail: its base ran every document, its fine-tune some.
    stopped_early = bool((comparison.get("early_stop") or {}).get("stopped_early"))
    if not base.get("ifeval") or not finetuned.get("ifeval") or stopped_early:
        return []
    return detail_rows("ifeval", headline, {"results": base}, {"results": finetuned})


IFEVAL_HEADERS = ("IFEval metric", "Base", "Fine-tuned", "Change (relative)")


def produced_by(summary: BenchmarkSummary) -> str:
    """Which export and backend produced each side's numbers, e.g. `merged_16bit via hf (lm-eval hf)`."""
    finetuned: SideRecord = side_of(summary, "fine-tuned") or {}
    base: SideRecord = side_of(summary, "base") or {}
    variant = summary.get("model_variant")
    if variant in (None, "none"):
        variant = Path(str(finetuned.get("model", "?"))).name
    return (f"fine-tuned: `{variant}` ({finetuned.get('model', '?')}) via {_backend(finetuned)}; "
            f"base: {base.get('model', summary.get('base_model_name', '?'))} via {_backend(base)}")


def _backend(side: SideRecord) -> str:
    backend = side.get("backend") or "?"
    model = side.get("lm_eval_model")
    return f"{backend} (lm-eval model `{model}`)" if model and model != backend else str(backend)


def measured_on(summary: BenchmarkSummary) -> str:
    """The session's date (YYYY-MM-DD), from its own timestamp: the same on every rebuild."""
    return str(summary.get("timestamp", "?"))[:10]


def settings_facts(summary: BenchmarkSummary) -> list[tuple[str, str]]:
    """The settings that decide the numbers, as (name, value) pairs in a fixed order."""
    r = summary.get("reproduce") or {}
    seeds = r.get("seeds") or {}
    return [
        ("tasks", ", ".join(r.get("tasks") or []) or "?"),
        ("samples per task", "all" if r.get("limit") is None else str(r["limit"])),
        ("few-shot", "each task's default" if r.get("num_fewshot") is None else str(r["num_fewshot"])),
        ("chat template", "applied" if r.get("apply_chat_template") else "not applied"),
        ("generation", r.get("gen_kwargs") or "each task's default"),
        ("batch size", str(r.get("batch_size", "?"))),
        ("device / dtype", f"{r.get('device', '?')} / {r.get('dtype', '?')}"),
        ("seeds", ", ".join(f"{k}={v}" for k, v in seeds.items()) or "?"),
        ("lm-eval / plugin", f"{r.get('lm_eval_version', '?')} / {r.get('plugin_version', '?')}"),
    ]


def reproduce_commands(summary: BenchmarkSummary) -> dict[str, str]:
    """{role: the lm-eval command that reproduces that side's scores}."""
    return dict((summary.get("reproduce") or {}).get("commands") or {})


# (label, [(file under the model folder, key), ...]): the first file and key present wins. Unsloth-style
# pipelines name the same fact differently; the adapter's own config is the authority for LoRA's shape.
_TRAINING_FACTS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("base model", (("lora/training_metrics.json", "model_name"), ("lora/adapter_config.json",
                                                                   "base_model_name_or_path"))),
    ("dataset", (("lora/training_metrics.json", "dataset"), ("lora/training_metrics.json", "dataset_name"))),
    ("LoRA rank", (("lora/adapter_config.json", "r"), ("lora/training_metrics.json", "lora_rank"))),
    ("LoRA alpha", (("lora/adapter_config.json", "lora_alpha"), ("lora/training_metrics.json", "lora_alpha"))),
    ("learning rate", (("lora/training_metrics.json", "learning_rate"),)),
    ("epochs", (("lora/training_metrics.json", "num_train_epochs"), ("lora/training_metrics.json", "epochs"))),
    ("steps", (("lora/training_metrics.json", "steps"), ("lora/training_metrics.json", "max_steps"),
               ("lora/training_metrics.json", "global_step"))),
    ("final loss", (("lora/training_metrics.json", "final_loss"), ("lora/training_metrics.json", "train_loss"))),
)


def training_facts(model_dir: Path) -> list[tuple[str, str]]:
    """What the fine-tune did, from lora/training_metrics.json and lora/adapter_config.json; [] without them."""
    files: dict[str, dict[str, Any]] = {}
    facts = []
    for label, sources in _TRAINING_FACTS:
        for relative, key in sources:
            data = files.setdefault(relative, _read_object(model_dir / relative))
            if data.get(key) not in (None, ""):
                facts.append((label, str(data[key])))
                break
    return facts


def _read_object(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; {} when it is missing or not an object (facts are optional)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; no cell can split its row, break the table or carry HTML."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(markdown_inline(c) for c in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *(line(r) for r in rows)])
