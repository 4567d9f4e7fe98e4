"""Where each task's data comes from, as lm-eval's own task config names it (no data is loaded).

Read from the task index at plan time, before --bench-data-dir's overlay points the tasks at local
files: the results lm-eval writes then name the local builder (`json`), while the model card and
benchmark.json must name the dataset the numbers are about (`google/IFEval`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pytest_finetune_bench.plan.offline import LeafTask, expand_tasks, reads_local_data


@dataclass(frozen=True)
class TaskData:
    """A task's dataset and request kind; None where its leaf tasks disagree or the config does not say."""

    dataset_path: str | None  # the Hub dataset id (lm-eval's `dataset_path`); None for a task's own local files
    dataset_name: str | None  # the dataset's config name (lm-eval's `dataset_name`, e.g. gsm8k's `main`)
    split: str | None  # the split scored (`test_split`, else `validation_split`)
    revision: str | None  # `dataset_kwargs: revision`, when the task pins one
    output_type: str | None  # generate_until, multiple_choice, loglikelihood, loglikelihood_rolling

    def to_json(self) -> dict[str, str | None]:
        return asdict(self)


def task_data(names: Iterable[str], index: Mapping[str, Any]) -> dict[str, TaskData]:
    """Each of `names` (a task, group or tag) with what its leaf tasks share; unknown parts are None."""
    return {name: _shared([_leaf_data(item.config) for item in expand_tasks([name], index, redirectable=False)
                           if isinstance(item, LeafTask)]) for name in names}


def _leaf_data(config: Mapping[str, Any]) -> TaskData:
    kwargs = config.get("dataset_kwargs")
    revision = kwargs.get("revision") if isinstance(kwargs, Mapping) else None
    local = reads_local_data(config)
    return TaskData(
        dataset_path=None if local else _text(config.get("dataset_path")),
        dataset_name=None if local else _text(config.get("dataset_name")),
        split=_text(config.get("test_split") or config.get("validation_split")),
        revision=_text(revision),
        output_type=_text(config.get("output_type")),
    )


def _shared(leaves: list[TaskData]) -> TaskData:
    """The value of each field all `leaves` agree on (a group's leaves share a dataset, not its configs)."""
    fields = TaskData.__dataclass_fields__
    values = {name: {getattr(leaf, name) for leaf in leaves} for name in fields}
    return TaskData(**{name: found.pop() if len(found) == 1 else None for name, found in values.items()})


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
