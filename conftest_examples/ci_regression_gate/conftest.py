"""CI benchmark gate: publish the base-vs-fine-tuned comparison as the GitHub Actions job summary.

The gates themselves come from the plugin (`finetune-bench::<task>::improves` and `::no_regression`);
this hook only turns the session's benchmark.json into a Markdown table in $GITHUB_STEP_SUMMARY.
It reads `<--bench-output>/benchmark.json`, so give the job a fresh --bench-output folder: a folder
that already holds a complete summary keeps it when a later session crashes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest


def _output_dir(config: pytest.Config) -> Path | None:
    # The option's dest is its ini name; the command line wins over the ini file, as in the plugin.
    value = config.getoption("bench_output", None) or config.getini("bench_output")
    return Path(value) if value else None


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.2f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def markdown_summary(summary: dict[str, Any]) -> str:
    """The comparison of one benchmark.json as a Markdown table."""
    lines = [
        f"### Fine-tune benchmark: {summary.get('model_name')} vs {summary.get('base_model_name')}",
        "",
        f"Status: **{summary.get('status')}**",
        "",
        "| Task | Metric | Base | Fine-tuned | Δ points | CI (points) | p | Flips |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, comp in summary.get("comparison", {}).items():
        stats = comp.get("stats") or {}
        flips = comp.get("flips") or {}
        interval = (
            f"[{stats['ci_low'] * 100:+.1f}, {stats['ci_high'] * 100:+.1f}]" if stats.get("ci_low") is not None else ""
        )
        p_value = f"{stats['p_value']:.2g}" if stats.get("p_value") is not None else ""
        flipped = f"{flips.get('regressed', 0)}↓ {flips.get('improved', 0)}↑" if flips else ""
        lines.append(
            f"| {task} | {comp.get('metric')} | {_percent(comp.get('base_accuracy'))} | "
            f"{_percent(comp.get('finetuned_accuracy'))} | {_points(comp.get('delta'))} | {interval} | "
            f"{p_value} | {flipped} |"
        )
    for task, reason in summary.get("skipped_tasks", {}).items():
        lines.append(f"\nSkipped {task}: {reason}")
    for role, error in summary.get("errors", {}).items():
        lines.append(f"\n{role}: {error}")
    return "\n".join(lines) + "\n"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """After the plugin wrote benchmark.json: append its table to the job summary (CI only)."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    output = _output_dir(session.config)
    if not target or output is None:
        return
    summary_file = output / "benchmark.json"
    if not summary_file.is_file():
        return
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(markdown_summary(summary))
