"""The GitHub Actions job page: the results table appended to $GITHUB_STEP_SUMMARY (no pytest here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pytest_finetune_bench.report.facts import (
    IFEVAL_HEADERS,
    ifeval_rows,
    markdown_table,
    measured_on,
    produced_by,
    result_headers,
    result_rows,
)
from pytest_finetune_bench.store.benchmark_file import BenchmarkSummary, comparison_of
from pytest_finetune_bench.text import markdown_inline

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def step_summary_markdown(summary: BenchmarkSummary) -> str:
    """The session as Markdown: status, the table (change, interval, p, flips), IFEval's detail, skips, errors."""
    lines = [
        f"### Fine-tune benchmark: {markdown_inline(summary.get('model_name'))} vs "
        f"{markdown_inline(summary.get('base_model_name'))}",
        "",
        f"Status: **{markdown_inline(summary.get('status'))}**, {markdown_inline(measured_on(summary))}; "
        f"{markdown_inline(produced_by(summary))}",
        "",
    ]
    if comparison_of(summary):
        lines += [markdown_table(result_headers(summary), result_rows(summary)), ""]
    ifeval = ifeval_rows(summary)
    if ifeval:
        lines += [markdown_table(IFEVAL_HEADERS, ifeval), ""]
    lines += [f"Skipped {markdown_inline(task)}: {markdown_inline(reason)}"
              for task, reason in _items(summary, "skipped_tasks")]
    lines += [f"{markdown_inline(role)}: {markdown_inline(error)}" for role, error in _items(summary, "errors")]
    return "\n".join(lines).rstrip("\n") + "\n\n"


def _items(summary: BenchmarkSummary, key: str) -> list[tuple[Any, Any]]:
    value = summary.get(key)
    return list(value.items()) if isinstance(value, dict) else []


def step_summary_file() -> Path | None:
    """The job summary file GitHub Actions names in $GITHUB_STEP_SUMMARY; None outside Actions."""
    value = os.environ.get(STEP_SUMMARY_ENV)
    return Path(value) if value else None


def append_step_summary(path: Path, summary: BenchmarkSummary) -> None:
    """Append the session's Markdown to the job summary (GitHub joins what every step appended)."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(step_summary_markdown(summary))
