"""The comparison table users know from the pipeline scripts, drawn with tabulate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_finetune_bench.compare.scores import IFEVAL_DETAIL, TaskComparison, display_name
from pytest_finetune_bench.compare.stats import INTERVAL_BOOTSTRAP, INTERVAL_TANGO


def arrow(delta: float | None) -> str:
    if delta is None:
        return "?"
    if abs(delta) < 1e-12:
        return "→ No change"
    symbol = "↗" if delta > 0 else "↘"
    return symbol


def improvement_cell(comp: TaskComparison) -> str:
    """`↗ +20.00% (+50.0%)`: absolute change in points, then relative change."""
    delta = comp.delta
    if delta is None:
        return "n/a"
    if abs(delta) < 1e-12:
        return "→ No change"
    rel = "n/a" if comp.delta_percent is None else f"{comp.delta_percent:+.1f}%"
    return f"{arrow(delta)} {delta * 100:+.2f}% ({rel})"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def comparison_table(
    comparisons: Mapping[str, TaskComparison], extra_columns: Mapping[str, Mapping[str, str]] | None = None
) -> str:
    from tabulate import tabulate

    extra_columns = extra_columns or {}
    headers = ["Benchmark", "Base", "Fine-tuned", "Improvement", *extra_columns]
    rows = [
        [display_name(task), pct(c.base_accuracy), pct(c.finetuned_accuracy), improvement_cell(c)]
        + [column.get(task, "") for column in extra_columns.values()]
        for task, c in comparisons.items()
    ]
    return tabulate(rows, headers=headers, tablefmt="simple")


def ifeval_detail_table(base: Mapping[str, Any], finetuned: Mapping[str, Any]) -> str:
    """IFEval's four metrics: strict/loose at prompt and instruction level."""
    from tabulate import tabulate

    rows = ifeval_detail_rows(base, finetuned)
    return tabulate(rows, headers=["IFEval metric", "Base", "Fine-tuned", "Improvement"], tablefmt="simple")


def ifeval_detail_rows(base: Mapping[str, Any], finetuned: Mapping[str, Any]) -> list[list[str]]:
    """[label, base, fine-tuned, improvement] for each of IFEval's four metrics (also for report/facts.py)."""
    rows = []
    for key, label in IFEVAL_DETAIL:
        comp = TaskComparison("ifeval", key, _num(base.get(key)), _num(finetuned.get(key)))
        rows.append([label, pct(comp.base_accuracy), pct(comp.finetuned_accuracy), improvement_cell(comp)])
    return rows


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def evidence_columns(comparisons: Mapping[str, TaskComparison], confidence: float) -> dict[str, dict[str, str]]:
    """Columns with each delta's paired confidence interval and its method, p-value and flipped samples."""
    interval: dict[str, str] = {}
    methods: dict[str, str] = {}
    p_values: dict[str, str] = {}
    flips: dict[str, str] = {}
    for task, comp in comparisons.items():
        stats, flipped = comp.extra.get("stats") or {}, comp.extra.get("flips") or {}
        if stats.get("n"):
            interval[task] = _interval_cell(stats)
            methods[task] = _SHORT_METHODS.get(stats.get("interval") or "", stats.get("interval") or "")
            p_values[task] = _p(stats.get("p_value"))
        if flipped:
            flips[task] = f"{flipped['regressed']}↓ {flipped['improved']}↑ of {stats.get('n', '?')}"
    return {f"{confidence:.0%} CI (points)": interval, "CI method": methods, "p": p_values, "Flips": flips}


# Table cells stay narrow; benchmark.json and the gates' messages carry the full names.
_SHORT_METHODS = {INTERVAL_TANGO: "Tango score (cc)", INTERVAL_BOOTSTRAP: "bootstrap"}


def _interval_cell(stats: Mapping[str, Any]) -> str:
    """`[-1.0, +7.5]`, marked when the method does not vouch for it; `none` when the sample has no spread."""
    if stats.get("ci_low") is None or stats.get("ci_high") is None:
        return "none"
    cell = f"[{stats['ci_low'] * 100:+.1f}, {stats['ci_high'] * 100:+.1f}]"
    return f"{cell} unreliable" if stats.get("interval_note") else cell


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2g}" if value >= 0.001 else "<0.001"


def comparisons_from_summary(summary: Mapping[str, Any]) -> dict[str, TaskComparison]:
    """TaskComparison objects back from benchmark.json's `comparison` (for xdist's controller)."""
    comparisons = {}
    for task, data in (summary.get("comparison") or {}).items():
        extra = {k: data[k] for k in ("stats", "flips") if k in data}
        comparisons[task] = TaskComparison(
            task, data.get("metric", "?"), data.get("base_accuracy"), data.get("finetuned_accuracy"), extra
        )
    return comparisons
