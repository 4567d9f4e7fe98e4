"""lm-eval's task catalog: name checks with close matches, versions, and offline overlays."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.plan.offline import LeafTask, OpaqueTask, expand_tasks, write_overlay
from pytest_finetune_bench.plan.task_types import output_types as leaf_output_types
from pytest_finetune_bench.store.files import file_sha256

LM_EVAL_INSTALL = "pip install 'lm-eval[ifeval]'"


def lm_eval_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        raise BenchError(f"lm-eval is not installed: run `{LM_EVAL_INSTALL}`") from None


class TaskCatalog:
    """lm-eval's task index, built once per session on first use (it parses ~10,000 YAML files)."""

    def __init__(self) -> None:
        self._index: dict[str, Any] | None = None

    @property
    def index(self) -> dict[str, Any]:
        if self._index is None:
            lm_eval_version()
            from lm_eval.tasks import TaskManager

            self._index = dict(TaskManager().task_index)
        return self._index

    def validate(self, names: Sequence[str]) -> None:
        """BenchError naming close matches for any task lm-eval does not know."""
        for name in names:
            if name not in self.index:
                close = difflib.get_close_matches(name, list(self.index), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(close)}?" if close else "; run `lm_eval ls tasks` to list them"
                raise BenchError(f"unknown lm-eval task {name!r}{hint}")

    def versions(self, names: Sequence[str]) -> dict[str, Any]:
        """Version of every leaf task behind `names` (a changed task must not reuse old scores).

        A task defined in Python or inline in a group has no version in the index: the sha256 of the
        files that define it stands in.
        """
        versions: dict[str, Any] = {}
        for item in expand_tasks(names, self.index, redirectable=False):
            if isinstance(item, LeafTask):
                versions[item.name] = (item.config.get("metadata") or {}).get("version")
            elif isinstance(item, OpaqueTask):
                versions[item.name] = {path.name: file_sha256(path) for path in item.files}
        return versions

    def output_types(self, names: Sequence[str]) -> dict[str, frozenset[str]]:
        """lm-eval output types behind each name, e.g. {"mmlu": {"multiple_choice"}}."""
        return {name: leaf_output_types(name, self.index) for name in names}

    def prepare_offline(
        self, names: Sequence[str], data_dir: Path, dest: Path, num_fewshot: int | None
    ) -> dict[str, str]:
        """Write the overlay that makes `names` read `data_dir`; returns the data files' hashes."""
        return write_overlay(names, data_dir, dest, self.index, num_fewshot)
