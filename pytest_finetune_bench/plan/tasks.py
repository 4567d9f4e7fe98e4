"""lm-eval's task catalog: name checks with close matches, versions, and offline overlays."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.core.task_types import output_types as leaf_output_types
from pytest_finetune_bench.plan.custom_tasks import content_version, index_include_paths
from pytest_finetune_bench.plan.offline import (
    LeafTask,
    OpaqueTask,
    check_no_shared_tasks,
    expand_tasks,
    write_overlay,
)
from pytest_finetune_bench.store.files import (
    atomic_write_bytes,
    claim_cache_dir,
    distrust,
    file_sha256,
)

LM_EVAL_INSTALL = "pip install 'lm-eval[api,hf,ifeval]==0.4.13'"  # the release this plugin is built and tested on
INDEX_CACHE_DIR = "task-index"
# Layout of the cached index: JSON lines: a header {"format", "sha256"}, then the entries as one JSON line, whose
# bytes the sha256 covers (an entry edited or lost is caught without parsing 25 MB twice).
INDEX_FORMAT = 2


def lm_eval_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        raise BenchError(f"lm-eval is not installed: run `{LM_EVAL_INSTALL}`") from None


def load_task_index(cache_dir: Path) -> dict[str, Any]:
    """lm-eval's task index (it parses ~15,000 YAML files, 8 s or more), kept on disk per lm-eval release.

    An installed release never changes its task files, so its index is cached under its version and
    location; an editable install (a git checkout being worked on) is indexed afresh every time.
    The cache holds data only (JSON, never pickle), in a folder only the current user can write to;
    anything unreadable, malformed or pointing outside lm-eval's task folder is rebuilt. It is kept in
    `cache_dir` (the session's cache folder, --bench-cache-dir).
    """
    version = lm_eval_version()
    from lm_eval.tasks import TaskManager

    release = _installed_release(version)
    if release is None:
        return dict(TaskManager().task_index)
    folder = cache_dir / INDEX_CACHE_DIR
    cached = folder / f"{hashlib.sha256(release.encode()).hexdigest()}.jsonl"
    try:
        usable = claim_cache_dir(folder) is None
    except OSError:
        usable = False
    index = _read_index(cached) if usable else None
    if index is not None:
        return index
    index = dict(TaskManager().task_index)
    stored = _index_to_bytes(index)
    if usable and stored is not None:
        try:
            atomic_write_bytes(cached, stored, private=True)
        except OSError:  # a cache that cannot be written only costs the next session the indexing
            pass
    return index


def _tasks_root() -> Path:
    """lm-eval's own task folder: every cached index entry must point inside it."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def _index_to_bytes(index: Mapping[str, Any]) -> bytes | None:
    """The index as the cache file's bytes; None when some entry would not read back equal (then not cached)."""
    entries = {
        name: {"kind": entry.kind.name, "yaml_path": None if entry.yaml_path is None else str(entry.yaml_path),
               "cfg": entry.cfg, "tags": sorted(entry.tags)}
        for name, entry in index.items()
    }
    try:
        body = json.dumps(entries, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):
        return None
    if json.loads(body) != entries:
        return None
    header = json.dumps({"format": INDEX_FORMAT, "sha256": hashlib.sha256(body).hexdigest()})
    return header.encode("ascii") + b"\n" + body


def _read_index(path: Path) -> dict[str, Any] | None:
    """The cached index as lm-eval's entries; None when the file is missing, not ours, or malformed."""
    if not path.is_file() or distrust(path) is not None:
        return None
    try:
        header, _, body = path.read_bytes().partition(b"\n")
        expected = json.loads(header)
        if expected != {"format": INDEX_FORMAT, "sha256": hashlib.sha256(body).hexdigest()}:
            return None
        return _entries_from_data(json.loads(body), _tasks_root())
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None  # UnicodeDecodeError and JSONDecodeError are ValueErrors


def _entries_from_data(data: Any, root: Path) -> dict[str, Any]:
    """lm-eval Entry objects from the stored data; ValueError (or TypeError) on anything out of shape."""
    from lm_eval.tasks._index import Entry, Kind

    if not isinstance(data, dict):
        raise ValueError("not a task index")
    prefix = f"{root}{os.sep}"
    index: dict[str, Any] = {}
    for name, item in data.items():
        if not isinstance(item, dict) or set(item) != {"kind", "yaml_path", "cfg", "tags"}:
            raise ValueError(f"entry {name!r} is malformed")
        yaml_path = item["yaml_path"]
        if yaml_path is not None:
            # A plain prefix test (with no way back up) is exact and keeps reading 15,000 entries fast.
            if not yaml_path.startswith(prefix) or f"{os.sep}.." in yaml_path:
                raise ValueError(f"entry {name!r} points outside lm-eval's tasks")
            yaml_path = Path(yaml_path)
        cfg, tags = item["cfg"], item["tags"]
        if cfg is not None and not isinstance(cfg, dict):
            raise ValueError(f"entry {name!r} has a malformed config")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError(f"entry {name!r} has malformed tags")
        index[name] = Entry(name=name, kind=Kind[item["kind"]], yaml_path=yaml_path, cfg=cfg, tags=set(tags))
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
    """lm-eval's task index, loaded once per session on first use and kept in `cache_dir` (see load_task_index).

    With `include_paths` (--bench-include-path), the tasks defined there are indexed as lm-eval's
    TaskManager indexes them and laid over the built-in ones, later paths overriding earlier, as
    `lm_eval --include_path` does. Their relative data files are read from `cwd`.
    """

    def __init__(self, cache_dir: Path, include_paths: Sequence[Path] = (), cwd: Path | None = None) -> None:
        self.cache_dir = cache_dir
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
            self._index = {**load_task_index(self.cache_dir), **self.custom}
        return self._index

    def validate(self, names: Sequence[str]) -> None:
        """BenchError naming close matches for any task lm-eval does not know, or naming two that share a task."""
        for name in names:
            if name not in self.index:
                close = difflib.get_close_matches(name, list(self.index), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(close)}?" if close else "; run `lm_eval ls tasks` to list them"
                if self.include_paths:
                    hint += (" (tasks of your own: a YAML file under --bench-include-path with `task: NAME`; "
                             "lm-eval skips files it cannot read, `lm_eval validate` says why)")
                raise BenchError(f"unknown lm-eval task {name!r}{hint}")
        check_no_shared_tasks(names, self.index)

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
