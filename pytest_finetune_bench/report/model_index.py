"""The model card's metadata: `model-index` results and `base_model` in the README's YAML front matter.

Written through huggingface_hub's card API (ModelCard, ModelCardData, EvalResult), so the Hub and
its parser read what we write. The user's metadata stays: other keys, and eval results from other
sources. Our own results carry this plugin as their source, which is how a later write finds and
replaces them; the same benchmark.json always writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.plan.models import is_hub_id
from pytest_finetune_bench.store.benchmark_file import BenchmarkSummary, comparison_of, task_data_of

if TYPE_CHECKING:
    from huggingface_hub import EvalResult

SOURCE_NAME = "pytest-finetune-bench"
SOURCE_URL = "https://pypi.org/project/pytest-finetune-bench/"
# The Hub's task for each kind of lm-eval request: a choice among given answers, else generated or scored text.
TASK_TYPES = {"multiple_choice": "multiple-choice"}
DEFAULT_TASK_TYPE = "text-generation"


def eval_results(summary: BenchmarkSummary) -> list[EvalResult]:
    """The fine-tuned model's headline score on each compared task, in lm-eval's units, as Hub eval results."""
    from huggingface_hub import EvalResult

    results = []
    for task, comparison in comparison_of(summary).items():
        value = comparison.get("finetuned_accuracy")
        if value is None:
            continue
        metric, _, filter_name = str(comparison.get("metric", "")).partition(",")
        data: Mapping[str, Any] = task_data_of(summary, task) or {}
        dataset = _text(data.get("dataset_path")) or task  # a task reading its own files is named by the task
        results.append(EvalResult(
            task_type=TASK_TYPES.get(str(data.get("output_type")), DEFAULT_TASK_TYPE),
            task_name=task,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_config=_text(data.get("dataset_name")),
            dataset_split=_text(data.get("split")),
            dataset_revision=_text(data.get("revision")),
            metric_type=metric,
            metric_name=f"{task} {metric}" + (f" ({filter_name})" if filter_name not in ("", "none") else ""),
            metric_value=value,
            source_name=SOURCE_NAME,
            source_url=SOURCE_URL,
        ))
    return results


def with_model_index(text: str, summary: BenchmarkSummary, where: str) -> str:
    """`text` (a README) with our eval results and base model in its front matter, the rest kept as it was.

    `where` names the file in the one-line error for metadata huggingface_hub cannot read.
    """
    import yaml
    from huggingface_hub import ModelCard, ModelCardData
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    try:
        # Without a metadata block, an empty one (huggingface_hub would log a warning and keep the text).
        card = ModelCard(text if REGEX_YAML_BLOCK.search(text) else f"---\n{{}}\n---\n{text}")
    except (yaml.YAMLError, ValueError, TypeError, KeyError) as exc:  # the YAML itself, or its model-index
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"{where}: huggingface_hub cannot read its metadata (the YAML block at the top: "
                         f"{reason}): fix or remove that block, then write the cards again") from None
    data = cast(ModelCardData, card.data)  # a ModelCard's data class
    ours = eval_results(summary)
    kept = [result for result in data.eval_results or () if result.source_url != SOURCE_URL]
    data.eval_results = [*kept, *ours] or None
    if data.eval_results and not data.model_name:
        data.model_name = str(summary.get("model_name") or "model")
    base = summary.get("base_model_name")
    if isinstance(base, str) and is_hub_id(base):
        data.base_model = base  # a local folder means nothing on the Hub: the user's own value stays then
    written: str = card.content
    return written


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
