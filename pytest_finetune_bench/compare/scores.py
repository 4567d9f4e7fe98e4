"""The results model: which metric stands for each task, and base-vs-fine-tuned deltas."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

# The headline metric per task: (metric, lm-eval filter). GSM8K's score lives under the
# strict-match filter; looking up "exact_match,none" finds nothing and compares 0 with 0.
PRIMARY_METRICS: dict[str, tuple[str, str]] = {
    "ifeval": ("prompt_level_strict_acc", "none"),
    "gsm8k": ("exact_match", "strict-match"),
    "hellaswag": ("acc_norm", "none"),
    "mmlu": ("acc", "none"),
    "mmlu_generative": ("exact_match", "get_response"),
}
DISPLAY_NAMES = {
    "ifeval": "Instruction-Following (IFEval)",
    "gsm8k": "Math Reasoning (GSM8K)",
    "hellaswag": "Commonsense (HellaSwag)",
    "mmlu": "Knowledge (MMLU)",
}
IFEVAL_DETAIL = (
    ("prompt_level_strict_acc,none", "Strict Prompt"),
    ("inst_level_strict_acc,none", "Strict Inst"),
    ("prompt_level_loose_acc,none", "Loose Prompt"),
    ("inst_level_loose_acc,none", "Loose Inst"),
)
_NOT_METRICS = {"alias", "name", "sample_len", "samples", " ", ""}


def primary_metric(task: str, task_result: dict[str, Any]) -> str:
    """The `metric,filter` key that stands for `task` in lm-eval's per-task result dict."""
    known = PRIMARY_METRICS.get(task)
    if known and f"{known[0]},{known[1]}" in task_result:
        return f"{known[0]},{known[1]}"
    for key, value in task_result.items():
        if key in _NOT_METRICS or "_stderr" in key or "," not in key:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return key
    raise KeyError(f"no numeric metric in lm-eval's result for {task!r}")


def display_name(task: str) -> str:
    return DISPLAY_NAMES.get(task, task)


@dataclass
class TaskComparison:
    """One task's headline metric on both sides. Scores are fractions (0.4 = 40%)."""

    task: str
    metric: str
    base_accuracy: float | None
    finetuned_accuracy: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def delta(self) -> float | None:
        if self.base_accuracy is None or self.finetuned_accuracy is None:
            return None
        return self.finetuned_accuracy - self.base_accuracy

    @property
    def delta_percent(self) -> float | None:
        """Relative change in percent; None when the base is 0 (any change would be infinite)."""
        if self.delta is None or not self.base_accuracy:
            return None
        return self.delta / self.base_accuracy * 100

    @property
    def delta_points(self) -> float | None:
        return None if self.delta is None else self.delta * 100

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        data.update(delta=_round(self.delta), delta_percent=_round(self.delta_percent))
        data.update(self.extra)
        return data

    def describe(self) -> str:
        """e.g. `base 40.00% → fine-tuned 30.00%: Δ -10.00 points (-25.0%)`."""
        rel = "n/a" if self.delta_percent is None else f"{self.delta_percent:+.1f}%"
        return (
            f"base {_pct(self.base_accuracy)} → fine-tuned {_pct(self.finetuned_accuracy)}: "
            f"Δ {_signed_points(self.delta_points)} points ({rel}) on {self.metric}"
        )


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 10)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _signed_points(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def score(results: dict[str, Any], task: str) -> tuple[str, float | None]:
    """(metric key, value) of `task` in a full lm-eval results dict."""
    task_result = results.get("results", {}).get(task)
    if not task_result:
        return PRIMARY_METRICS.get(task, ("?", "none"))[0], None
    key = primary_metric(task, task_result)
    value = task_result.get(key)
    return key, float(value) if isinstance(value, (int, float)) else None


def compare(base: dict[str, Any], finetuned: dict[str, Any], tasks: list[str]) -> dict[str, TaskComparison]:
    """Compare two lm-eval results dicts task by task, on each task's headline metric."""
    comparisons = {}
    for task in tasks:
        metric, ft_value = score(finetuned, task)
        _, base_value = score(base, task)
        comparisons[task] = TaskComparison(task, metric, base_value, ft_value)
    return comparisons
