"""The comparison table users know from the pipeline scripts, drawn with tabulate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_finetune_bench.compare.scores import (
    DETAIL_METRICS,
    DISPLAY_NAMES,
    UNIT_METRIC,
    UNIT_POINTS,
    TaskComparison,
    metric_value,
)
from pytest_finetune_bench.compare.sequential import EARLY_STOP, early_stop_line, sequence_interval
from pytest_finetune_bench.compare.stats import INTERVAL_BOOTSTRAP, INTERVAL_TANGO
from pytest_finetune_bench.store.benchmark_file import BenchmarkSummary, comparison_of

NO_CHANGE = "→ No change"


def arrow(gain: float | None) -> str:
    """↗ for better, ↘ for worse, whichever way the metric counts better."""
    if gain is None:
        return "?"
    if abs(gain) < 1e-12:
        return NO_CHANGE
    return "↗" if gain > 0 else "↘"


def improvement_cell(comp: TaskComparison) -> str:
    """`↗ +20.00% (+50.0%)`: the arrow says better or worse, the number is the real signed change.

    Accuracies change in points, other metrics in their own unit: a perplexity that fell by 3.5
    reads `↗ -3.5000 (-12.0%)`.
    """
    delta = comp.delta_shown
    if delta is None:
        return "n/a"
    if abs(delta) < 1e-12:
        return NO_CHANGE
    rel = "n/a" if comp.delta_percent is None else f"{comp.delta_percent:+.1f}%"
    number = f"{delta:+.2f}%" if comp.unit == UNIT_POINTS else f"{delta:+.4f}"
    return f"{arrow(comp.gain)} {number} ({rel})"


def benchmark_cell(comp: TaskComparison) -> str:
    """The task's familiar name, or `wikitext: word_perplexity (lower is better)` for the others."""
    if comp.task in DISPLAY_NAMES:
        return DISPLAY_NAMES[comp.task]
    name = comp.metric_name if comp.filter == "none" else comp.metric
    direction = "" if comp.higher_is_better else " (lower is better)"
    return f"{comp.task}: {name}{direction}"


def comparison_table(
    comparisons: Mapping[str, TaskComparison], extra_columns: Mapping[str, Mapping[str, str]] | None = None
) -> str:
    from tabulate import tabulate

    extra_columns = extra_columns or {}
    headers = ["Benchmark", "Base", "Fine-tuned", "Improvement", *extra_columns]
    rows = [
        [benchmark_cell(c), c.value_text(c.base_accuracy), c.value_text(c.finetuned_accuracy), improvement_cell(c)]
        + [column.get(task, "") for column in extra_columns.values()]
        for task, c in comparisons.items()
    ]
    # Scores are formatted already; tabulate would turn a large perplexity into 1.88e+09.
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=[1, 2])


def detail_tables(
    comparisons: Mapping[str, TaskComparison], base: Mapping[str, Any], finetuned: Mapping[str, Any]
) -> list[str]:
    """Every variant of the headline for the tasks that have them (DETAIL_METRICS: IFEval, GSM8K).

    `base` and `finetuned` are lm-eval's full results dicts. The row that gates is marked. A task
    that stopped early has none: its base was scored on every document, its fine-tune on some.
    """
    return [
        _detail_table(task, comparisons[task].metric, base, finetuned)
        for task in DETAIL_METRICS
        if task in comparisons and early_stop_line(comparisons[task]) is None
    ]


def _detail_table(task: str, headline: str, base: Mapping[str, Any], finetuned: Mapping[str, Any]) -> str:
    from tabulate import tabulate

    title = DETAIL_METRICS[task][0]
    rows = detail_rows(task, headline, base, finetuned)
    return tabulate(rows, headers=[f"{title} metric", "Base", "Fine-tuned", "Improvement"], tablefmt="simple")


def detail_rows(task: str, headline: str, base: Mapping[str, Any], finetuned: Mapping[str, Any]) -> list[list[str]]:
    """[label, base, fine-tuned, improvement] per variant of `task`'s headline (DETAIL_METRICS); the gating one marked.

    `base` and `finetuned` are lm-eval's full results dicts (also the model cards' source, report/facts.py).
    """
    rows = []
    for key, label in DETAIL_METRICS[task][1]:
        comp = TaskComparison(task, key, metric_value(base, task, key), metric_value(finetuned, task, key))
        shown = f"{label} (gates)" if key == headline else label
        rows.append([shown, comp.value_text(comp.base_accuracy), comp.value_text(comp.finetuned_accuracy),
                     improvement_cell(comp)])
    return rows


def evidence_columns(comparisons: Mapping[str, TaskComparison], confidence: float) -> dict[str, dict[str, str]]:
    """Columns with each delta's paired confidence interval and its method, p-value and flipped samples."""
    interval: dict[str, str] = {}
    methods: dict[str, str] = {}
    p_values: dict[str, str] = {}
    flips: dict[str, str] = {}
    for task, comp in comparisons.items():
        stats, flipped = comp.extra.get("stats") or {}, comp.extra.get("flips") or {}
        if comp.extra.get("stats_note"):
            interval[task] = "none: corpus-level metric"
        if stats.get("n"):
            interval[task] = _interval_cell(stats, comp)
            methods[task] = _SHORT_METHODS.get(stats.get("interval") or "", stats.get("interval") or "")
            p_values[task] = _p(stats.get("p_value"))
        sequence = sequence_interval(comp)
        if sequence is not None:  # stopped early: the fixed-n interval would not hold; the sequence does
            interval[task] = f"[{sequence[0]:+.1f}, {sequence[1]:+.1f}]"
            methods[task] = f"sequence ({100 * (1 - comp.extra[EARLY_STOP]['error_rate']):.4g}%)"
        if flipped:
            flips[task] = f"{flipped['regressed']}↓ {flipped['improved']}↑ of {stats.get('n', '?')}"
    return {f"{confidence:.0%} CI (points)": interval, "CI method": methods, "p": p_values, "Flips": flips}


# Table cells stay narrow; benchmark.json and the gates' messages carry the full names.
_SHORT_METHODS = {INTERVAL_TANGO: "Tango score (cc)", INTERVAL_BOOTSTRAP: "bootstrap"}


def _interval_cell(stats: Mapping[str, Any], comp: TaskComparison) -> str:
    """`[-1.0, +7.5]` (of the delta, in the task's unit), marked when the method does not vouch for it
    or the unit is not points; `none` when the sample has no spread."""
    if stats.get("ci_low") is None or stats.get("ci_high") is None:
        return "none"
    cell = f"[{stats['ci_low'] * comp.scale:+.1f}, {stats['ci_high'] * comp.scale:+.1f}]"
    if comp.unit == UNIT_METRIC:
        cell = f"{cell} {comp.metric_name}"
    return f"{cell} unreliable" if stats.get("interval_note") else cell


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2g}" if value >= 0.001 else "<0.001"


def comparisons_from_summary(summary: BenchmarkSummary) -> dict[str, TaskComparison]:
    """TaskComparison objects back from benchmark.json's `comparison` (for xdist's controller and the reports)."""
    comparisons = {}
    for task, data in comparison_of(summary).items():
        extra = {k: v for k, v in data.items() if k in ("stats", "stats_note", "flips", EARLY_STOP)}
        comparisons[task] = TaskComparison(
            task, data.get("metric", "?"), data.get("base_accuracy"), data.get("finetuned_accuracy"), extra,
            higher_is_better=data.get("higher_is_better", True), unit=data.get("unit", UNIT_POINTS),
        )
    return comparisons


def scores_table(scores: Mapping[str, Any], role: str) -> str:
    """One side's headline scores (from report/summary.py `headline_scores`), for a session without a comparison."""
    from tabulate import tabulate

    rows = []
    for task, headline in (scores.get("headlines") or {}).items():
        value = (scores.get("scores") or {}).get(role, {}).get(task)
        shown = "n/a" if value is None else f"{value * 100:.2f}%" if headline["unit"] == UNIT_POINTS else f"{value:.4f}"
        rows.append([DISPLAY_NAMES.get(task, task), headline["metric"], shown])
    return tabulate(rows, headers=["Benchmark", "Metric", role.capitalize()], tablefmt="github")
