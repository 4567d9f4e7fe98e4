"""lm-eval's task catalog: name checks with close matches, versions, and offline overlays."""

from __future__ import annotations

import difflib
import hashlib
import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.plan.custom_tasks import content_version, index_include_paths
from pytest_finetune_bench.plan.offline import LeafTask, OpaqueTask, expand_tasks, write_overlay
from pytest_finetune_bench.plan.task_types import output_types as leaf_output_types
from pytest_finetune_bench.store.files import atomic_write_bytes, bench_cache_dir, file_sha256

LM_EVAL_INSTALL = "pip install 'lm-eval[api,ifeval]==0.4.13'"  # the release this plugin is built and tested on
INDEX_CACHE_DIR = "task-index"


def lm_eval_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        raise BenchError(f"lm-eval is not installed: run `{LM_EVAL_INSTALL}`") from None


def load_task_index(cache_dir: Path | None = None) -> dict[str, Any]:
    """lm-eval's task index (it parses ~15,000 YAML files, 8 s or more), kept on disk per lm-eval release.

    An installed release never changes its task files, so its index is cached under its version and
    location; an editable install (a git checkout being worked on) is indexed afresh every time.
    """
    version = lm_eval_version()
    from lm_eval.tasks import TaskManager

    release = _installed_release(version)
    if release is None:
        return dict(TaskManager().task_index)
    name = hashlib.sha256(release.encode()).hexdigest()
    cached = (cache_dir or bench_cache_dir()) / INDEX_CACHE_DIR / f"{name}.pickle"
    try:
        index: dict[str, Any] = pickle.loads(cached.read_bytes())
        return index
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        pass
    index = dict(TaskManager().task_index)
    try:
        atomic_write_bytes(cached, pickle.dumps(index))
    except OSError:  # a cache that cannot be written only costs the next session the indexing
        pass
    return index


def _installed_release(version: str) -> str | None:
    """`version@location` of an installed lm-eval; None for an editable install, whose files may change."""
    from importlib.metadata import distribution

    dist = distribution("lm_eval")
    try:
        editable = bool(json.loads(dist.read_text("direct_url.json") or "{}").get("dir_info", {}).get("editable"))
    except ValueError:
        editable = True  # unreadable: do not trust the files to stay as they are
    if editable:
        return None
    return f"{version}@{dist.locate_file('')}"


class TaskCatalog:
    """lm-eval's task index, loaded once per session on first use (see load_task_index).

    With `include_paths` (--bench-include-path), the tasks defined there are indexed as lm-eval's
    TaskManager indexes them and laid over the built-in ones, later paths overriding earlier, as
    `lm_eval --include_path` does. Their relative data files are read from `cwd`.
    """

    def __init__(self, include_paths: Sequence[Path] = (), cwd: Path | None = None) -> None:
        self._index: dict[str, Any] | None = None
        self._custom: dict[str, Any] | None = None
        self.cwd = cwd or Path.cwd()
        self.include_paths = tuple((self.cwd / p.expanduser()).resolve() for p in include_paths)

    @property
    def custom(self) -> dict[str, Any]:
        """The index of the user's own tasks (empty without include paths)."""
        if self._custom is None:
            self._custom = index_include_paths(self.include_paths) if self.include_paths else {}
        return self._custom

    @property
    def index(self) -> dict[str, Any]:
        if self._index is None:
            self._index = {**load_task_index(), **self.custom}
        return self._index

    def validate(self, names: Sequence[str]) -> None:
        """BenchError naming close matches for any task lm-eval does not know."""
        for name in names:
            if name not in self.index:
                close = difflib.get_close_matches(name, list(self.index), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(close)}?" if close else "; run `lm_eval ls tasks` to list them"
                if self.include_paths:
                    hint += (" (tasks of your own: a YAML file under --bench-include-path with `task: NAME`; "
                             "lm-eval skips files it cannot read, `lm_eval validate` says why)")
                raise BenchError(f"unknown lm-eval task {name!r}{hint}")

    def versions(self, names: Sequence[str]) -> dict[str, Any]:
        """Version of every leaf task behind `names` (a changed task must not reuse old scores).

        A task defined in Python or inline in a group has no version in the index: the sha256 of the
        files that define it stands in. A task or group of the user's own is versioned by the content
        of its definition, helper and data files (custom_tasks.content_version).
        """
        versions: dict[str, Any] = {}
        for item in expand_tasks(names, self.index, redirectable=False):
            if item.name in self.custom and self.custom[item.name].yaml_path is not None:
                versions[item.name] = content_version(self.custom[item.name], self.cwd)
            elif isinstance(item, LeafTask):
                versions[item.name] = (item.config.get("metadata") or {}).get("version")
            elif isinstance(item, OpaqueTask):
                versions[item.name] = {path.name: file_sha256(path) for path in item.files}
        return versions

    def output_types(self, names: Sequence[str]) -> dict[str, frozenset[str]]:
        """lm-eval output types behind each name, e.g. {"mmlu": {"multiple_choice"}}."""
        return {name: leaf_output_types(name, self.index) for name in names}

    def prepare_offline(
        self, names: Sequence[str], data_dir: Path | None, dest: Path, num_fewshot: int | None
    ) -> dict[str, str]:
        """Write the task folder lm-eval is given for `names` (read from `data_dir` when given).

        Returns the hashes of the data files read from `data_dir` (see offline.write_overlay).
        """
        return write_overlay(names, data_dir, dest, self.index, num_fewshot)
