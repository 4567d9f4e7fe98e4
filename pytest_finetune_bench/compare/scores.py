"""The results model: each task's headline metric on both sides, and the change, signed by direction.

Units. A metric that is a mean of per-document values in [0, 1] (accuracy, exact match, IFEval's
fractions) is shown and gated in percentage points, as the pipeline scripts always did: 0.40 → 0.30
is -10.00 points. Any other metric (perplexities, bits_per_byte, BLEU...) is shown and gated in its
own unit, with no ×100 and no %: a word perplexity of 20 → 35 is +15.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_finetune_bench.plan.metrics import Headline

UNIT_POINTS = "points"  # percentage points of a fraction
UNIT_METRIC = "metric"  # the metric's own unit

DISPLAY_NAMES = {
    "ifeval": "Instruction-Following (IFEval)",
    "gsm8k": "Math Reasoning (GSM8K)",
    "hellaswag": "Commonsense (HellaSwag)",
    "mmlu": "Knowledge (MMLU)",
}
# Tasks whose summary shows every variant of the headline, (title, ((metric key, label), ...)).
# GSM8K gates on strict-match; flexible-extract beside it tells an answer-format change (strict
# moves alone) from a change in the maths (both move).
DETAIL_METRICS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "ifeval": ("IFEval", (
        ("prompt_level_strict_acc,none", "Strict Prompt"),
        ("inst_level_strict_acc,none", "Strict Inst"),
        ("prompt_level_loose_acc,none", "Loose Prompt"),
        ("inst_level_loose_acc,none", "Loose Inst"),
    )),
    "gsm8k": ("GSM8K", (
        ("exact_match,strict-match", "Strict Match"),
        ("exact_match,flexible-extract", "Flexible Extract"),
    )),
}


def display_name(task: str) -> str:
    """The name users know a task by (`Instruction-Following (IFEval)`), else lm-eval's."""
    return DISPLAY_NAMES.get(task, task)


@dataclass
class TaskComparison:
    """One task's headline metric on both sides, as lm-eval reports it (accuracies as fractions: 0.4 = 40%)."""

    task: str
    metric: str  # lm-eval's "metric,filter" key
    base_accuracy: float | None
    finetuned_accuracy: float | None
    extra: dict[str, Any] = field(default_factory=dict)
    higher_is_better: bool = True
    unit: str = UNIT_POINTS
    per_document: bool = True  # a mean of per-document values: paired statistics apply

    @property
    def metric_name(self) -> str:
        return self.metric.partition(",")[0]

    @property
    def filter(self) -> str:
        return self.metric.partition(",")[2]

    @property
    def scale(self) -> float:
        """Shown units per unit of the metric: 100 for percentage points, else 1."""
        return 100.0 if self.unit == UNIT_POINTS else 1.0

    @property
    def delta(self) -> float | None:
        """Fine-tuned minus base, in the metric's own values (0.02 = +2 points for accuracies)."""
        if self.base_accuracy is None or self.finetuned_accuracy is None:
            return None
        return self.finetuned_accuracy - self.base_accuracy

    @property
    def gain(self) -> float | None:
        """The improvement: `delta` signed so that positive is better, whatever the metric's direction."""
        if self.delta is None:
            return None
        return self.delta if self.higher_is_better else -self.delta

    @property
    def delta_percent(self) -> float | None:
        """Relative change in percent; None when the base is 0 (any change would be infinite)."""
        if self.delta is None or not self.base_accuracy:
            return None
        return self.delta / self.base_accuracy * 100

    @property
    def delta_shown(self) -> float | None:
        """`delta` in the shown unit: points for accuracies, the metric's own unit otherwise."""
        return None if self.delta is None else self.delta * self.scale

    @property
    def gain_shown(self) -> float | None:
        """`gain` in the shown unit; what the gates compare with their thresholds."""
        return None if self.gain is None else self.gain * self.scale

    def value_text(self, value: float | None) -> str:
        """A score as the table shows it: `40.00%`, or `23.4567` for a metric in its own unit."""
        if value is None:
            return "n/a"
        return f"{value * 100:.2f}%" if self.unit == UNIT_POINTS else f"{value:.4f}"

    def amount_text(self, amount: float, signed: bool = False) -> str:
        """A change or threshold in the shown unit: `5.00 points`, or `5 word_perplexity`."""
        if self.unit == UNIT_POINTS:
            return (f"{amount:+.2f}" if signed else f"{amount:.2f}") + " points"
        return (f"{amount:+.4g}" if signed else f"{amount:.4g}") + f" {self.metric_name}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task": self.task,
            "metric": self.metric,
            "filter": self.filter,
            "higher_is_better": self.higher_is_better,
            "unit": self.unit,
            "base_accuracy": self.base_accuracy,
            "finetuned_accuracy": self.finetuned_accuracy,
            "delta": _round(self.delta),
            "gain": _round(self.gain),
            "delta_percent": _round(self.delta_percent),
        }
        data.update(self.extra)
        return data

    def describe(self) -> str:
        """e.g. `base 40.00% → fine-tuned 30.00%: Δ -10.00 points (-25.0%) on acc,none`."""
        rel = "n/a" if self.delta_percent is None else f"{self.delta_percent:+.1f}%"
        change = "n/a" if self.delta_shown is None else self.amount_text(self.delta_shown, signed=True)
        direction = "" if self.higher_is_better else " (lower is better)"
        return (
            f"base {self.value_text(self.base_accuracy)} → fine-tuned {self.value_text(self.finetuned_accuracy)}: "
            f"Δ {change} ({rel}) on {self.metric}{direction}"
        )


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 10)


def metric_value(results: Mapping[str, Any], task: str, key: str) -> float | None:
    """The number under `key` ("metric,filter") for `task` in a full lm-eval results dict, else None."""
    value = (results.get("results", {}).get(task) or {}).get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def unit_of(headline: Headline, *values: float | None) -> str:
    """Points for a per-document mean whose values are fractions; the metric's own unit otherwise."""
    fractions = all(value is None or 0.0 <= value <= 1.0 for value in values)
    return UNIT_POINTS if headline.per_document and fractions else UNIT_METRIC


def compare(
    base: Mapping[str, Any], finetuned: Mapping[str, Any], headlines: Mapping[str, Headline]
) -> dict[str, TaskComparison]:
    """Compare two lm-eval results dicts task by task, on each task's headline metric."""
    comparisons = {}
    for task, headline in headlines.items():
        base_value = metric_value(base, task, headline.key)
        ft_value = metric_value(finetuned, task, headline.key)
        comparisons[task] = TaskComparison(
            task, headline.key, base_value, ft_value,
            higher_is_better=headline.higher_is_better,
            unit=unit_of(headline, base_value, ft_value),
            per_document=headline.per_document,
        )
    return comparisons
