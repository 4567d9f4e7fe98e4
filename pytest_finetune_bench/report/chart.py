"""The results chart: base vs fine-tuned per task, with the paired interval of each change (no pytest here).

The interval belongs to the *difference* (it is paired per document), so it is drawn on the
fine-tuned bar as "base score + interval": the range in which the fine-tuned score lies with the
stated confidence, measured against the base. Where the bar's top leaves that range is where the
change is more than noise.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pytest_finetune_bench.compare.scores import TaskComparison, display_name

CHART_NAME = "benchmark_chart.png"
BASE_COLOUR = "#8c8c8c"
FINETUNED_COLOUR = "#2f6fb0"
_BAR_WIDTH = 0.38

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def chart_figure(comparisons: Mapping[str, TaskComparison], title: str = "") -> Figure:
    """Grouped bars in percent (base, fine-tuned) per task; the fine-tuned bar carries the interval."""
    # Imported here: matplotlib takes a second or two to import, and every pytest run loads this plugin.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(4.0, 1.9 * len(comparisons) + 1.5), 3.6), dpi=100)
    FigureCanvasAgg(figure)  # Figure objects draw and save through a canvas; no pyplot, no global state
    axes = figure.add_subplot()
    positions = list(range(len(comparisons)))
    tasks = list(comparisons.values())
    axes.bar([p - _BAR_WIDTH / 2 for p in positions], [_percent(c.base_accuracy) for c in tasks], _BAR_WIDTH,
             label="base", color=BASE_COLOUR)
    axes.bar([p + _BAR_WIDTH / 2 for p in positions], [_percent(c.finetuned_accuracy) for c in tasks], _BAR_WIDTH,
             label="fine-tuned", color=FINETUNED_COLOUR)
    for position, comp in zip(positions, tasks, strict=True):
        interval = score_interval(comp)
        if interval is not None:
            centre = _percent(comp.finetuned_accuracy)
            axes.errorbar(position + _BAR_WIDTH / 2, centre, yerr=[[centre - interval[0]], [interval[1] - centre]],
                          fmt="none", ecolor="black", capsize=4, label="_interval")
    # Names are text, never mathtext: a `$` in a task or model name must not be parsed (or crash the chart).
    axes.set_xticks(positions, [display_name(c.task) for c in tasks], fontsize=8, parse_math=False)
    axes.set_ylabel("score (%)")
    axes.set_ylim(0, 100)
    axes.legend(loc="upper right", fontsize=8)
    if title:
        axes.set_title(title, fontsize=10, parse_math=False)
    figure.tight_layout()
    return figure


def score_interval(comp: TaskComparison) -> tuple[float, float] | None:
    """(low, high) in percent: the base score plus the paired interval of the change; None without one."""
    stats = comp.extra.get("stats") or {}
    if comp.base_accuracy is None or stats.get("ci_low") is None or stats.get("ci_high") is None:
        return None
    return (comp.base_accuracy + stats["ci_low"]) * 100, (comp.base_accuracy + stats["ci_high"]) * 100


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes, the same bytes for the same data (no timestamp or version inside)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def chart_png(comparisons: Mapping[str, TaskComparison], title: str = "") -> bytes:
    """The chart of `comparisons` as PNG bytes."""
    return figure_png(chart_figure(comparisons, title))


def _percent(value: float | None) -> float:
    """A missing score draws no bar (height 0) rather than failing the chart."""
    return 0.0 if value is None else value * 100
