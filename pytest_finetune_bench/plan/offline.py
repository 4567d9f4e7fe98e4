"""Offline task data: point lm-eval's own task configs at local files instead of the Hub.

For every leaf task we write a one-file overlay task config that `include:`s lm-eval's own YAML
and overrides only where the dataset comes from. Prompts, filters, metrics and scoring stay
lm-eval's, and the overlay folder works unchanged with `lm_eval --include_path`, which is how a
user (or our equality test) reproduces a score with the CLI.

Where a task's files are looked for, first match wins (`<ds>` is the last part of the Hub
dataset path, lower-cased; `<config>` is the dataset config name):

    DIR/<task>/                e.g. DIR/ifeval/, DIR/mmlu_anatomy/
    DIR/<ds>/<config>/         e.g. DIR/mmlu/anatomy/, DIR/gsm8k/main/
    DIR/<ds>/                  e.g. DIR/gsm8k/, DIR/hellaswag/

Inside it, one file per split named after the split (`test.jsonl`, `validation.jsonl`,
`train.jsonl`; `.json`, `.parquet` and `.csv` work too). A folder holding a single data file
serves the evaluation split whatever the file is called.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.store.files import atomic_write_text, file_sha256

DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass(frozen=True)
class LeafTask:
    """A task as lm-eval's index describes it, before any data is loaded."""

    name: str
    yaml_path: Path
    config: Mapping[str, Any]

    @property
    def eval_split(self) -> str | None:
        return self.config.get("test_split") or self.config.get("validation_split")

    @property
    def fewshot_split(self) -> str | None:
        cfg = self.config
        return cfg.get("fewshot_split") or cfg.get("training_split") or cfg.get("validation_split")

    def needed_splits(self, num_fewshot: int | None) -> list[str]:
        shots = self.config.get("num_fewshot", 0) if num_fewshot is None else num_fewshot
        splits = [s for s in (self.eval_split,) if s]
        if shots and self.fewshot_split and self.fewshot_split not in splits:
            splits.append(self.fewshot_split)
        return splits

    def candidate_dirs(self, data_dir: Path) -> list[Path]:
        dataset = str(self.config.get("dataset_path") or self.name).rstrip("/").split("/")[-1].lower()
        config_name = self.config.get("dataset_name")
        dirs = [data_dir / self.name]
        if config_name:
            dirs.append(data_dir / dataset / str(config_name))
        dirs.append(data_dir / dataset)
        return dirs


@dataclass(frozen=True)
class GroupRef:
    """A group config (e.g. mmlu) that the overlay re-registers so it finds the redirected leaves."""

    name: str
    yaml_path: Path


@dataclass(frozen=True)
class OpaqueTask:
    """A task defined in Python, or inline in a group's YAML: lm-eval runs it, the overlay cannot redirect it.

    `files` are what define it (the YAML, and the Python module of a class task), for the cache keys.
    """

    name: str
    files: tuple[Path, ...]


Expanded = LeafTask | GroupRef | OpaqueTask


def expand_tasks(task_names: Iterable[str], index: Mapping[str, Any], *, redirectable: bool = True) -> list[Expanded]:
    """Expand groups and tags to leaf tasks using lm-eval's task index (no data is loaded).

    With `redirectable`, a task the offline overlay cannot redirect is a BenchError saying so;
    otherwise it comes back as an OpaqueTask.
    """
    found: dict[str, Expanded] = {}
    for name in task_names:
        for item in _expand(name, index, seen=set(), redirectable=redirectable):
            found.setdefault(item.name, item)
    return list(found.values())


def check_no_shared_tasks(task_names: Iterable[str], index: Mapping[str, Any]) -> None:
    """BenchError when two of `task_names` hold the same task (a group and one of its own subtasks, or two
    groups sharing one): lm-eval refuses to evaluate a task twice in one run, so it would fail only after
    loading the models."""
    holder: dict[str, str] = {}
    for name in dict.fromkeys(task_names):
        for item in _expand(name, index, seen=set(), redirectable=False):
            if isinstance(item, GroupRef):
                continue
            first = holder.setdefault(item.name, name)
            if first != name:
                raise BenchError(f"tasks {first!r} and {name!r} both hold {item.name!r}, and lm-eval evaluates "
                                 "a task once per run: ask for one of them")


def _expand(name: str, index: Mapping[str, Any], seen: set[str], redirectable: bool) -> Iterator[Expanded]:
    if name in seen:
        return
    seen.add(name)
    entry = index.get(name)
    if entry is None:
        raise BenchError(f"lm-eval has no task named {name!r}")
    kind = entry.kind.name
    if kind == "TAG":
        for child in sorted(entry.tags):
            yield from _expand(child, index, seen, redirectable)
    elif kind == "GROUP":
        yield GroupRef(name=name, yaml_path=Path(entry.yaml_path))
        children = _as_list(entry.cfg.get("task"))
        if any(not isinstance(child, str) for child in children):
            if redirectable:
                raise BenchError(
                    f"group {name!r} defines a task inline, which --bench-data-dir cannot redirect: "
                    "list its tasks by name with --bench-tasks instead"
                )
            yield OpaqueTask(name=f"{name} (inline tasks)", files=(Path(entry.yaml_path),))
        for child in children:
            if isinstance(child, str):
                yield from _expand(child, index, seen, redirectable)
    elif kind == "TASK" and entry.yaml_path is not None:
        yield LeafTask(name=name, yaml_path=Path(entry.yaml_path), config=entry.cfg or {})
    elif redirectable:
        raise BenchError(f"task {name!r} is defined in Python, which --bench-data-dir cannot redirect")
    else:
        yield OpaqueTask(name=name, files=_definition_files(entry))


def _definition_files(entry: Any) -> tuple[Path, ...]:
    """The YAML of a Python-defined task and the module its `class: /path/module.Class` names."""
    files = [Path(entry.yaml_path)] if entry.yaml_path is not None else []
    module = Path(str((entry.cfg or {}).get("class", "")).rpartition(".")[0] + ".py")
    return tuple([*files, module] if module.is_file() else files)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def find_split_files(leaf: LeafTask, data_dir: Path, num_fewshot: int | None) -> dict[str, Path]:
    """The local file for each split the task needs; BenchError naming the expected path if absent."""
    needed = leaf.needed_splits(num_fewshot)
    for folder in leaf.candidate_dirs(data_dir):
        if not folder.is_dir():
            continue
        found = _match_splits(folder, needed)
        missing = [s for s in needed if s not in found]
        if missing:
            expected = ", ".join(str(folder / f"{s}.jsonl") for s in missing)
            raise BenchError(f"task {leaf.name!r} needs {expected} in --bench-data-dir")
        return found
    first_choice = leaf.candidate_dirs(data_dir)[0] / f"{needed[0] if needed else 'test'}.jsonl"
    raise BenchError(
        f"--bench-data-dir has no data for task {leaf.name!r}: expected {first_choice} "
        f"in the {leaf.config.get('dataset_path', 'Hub dataset')} schema (see docs/offline.md)"
    )


def _match_splits(folder: Path, needed: list[str]) -> dict[str, Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in DATA_SUFFIXES)
    by_stem = {p.stem: p for p in files}
    found = {split: by_stem[split] for split in needed if split in by_stem}
    if needed and needed[0] not in found and len(files) == 1 and not found:
        found[needed[0]] = files[0]
    return found


def overlay_config(leaf: LeafTask, files: Mapping[str, Path]) -> dict[str, Any]:
    """lm-eval task config that reuses `leaf` and reads `files` instead of the Hub."""
    builders = {DATA_SUFFIXES[p.suffix] for p in files.values()}
    if len(builders) != 1:
        raise BenchError(f"task {leaf.name!r}: keep all split files in one format, found {sorted(builders)}")
    config: dict[str, Any] = {
        "include": str(leaf.yaml_path.resolve()),
        "task": leaf.name,
        "dataset_path": builders.pop(),
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(p.resolve()) for split, p in files.items()}},
    }
    # Splits we have no file for must not be touched by lm-eval (it eagerly loads few-shot docs).
    for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        if leaf.config.get(key) and leaf.config[key] not in files:
            config[key] = None
    return config


def write_overlay(
    task_names: Iterable[str], data_dir: Path | None, dest: Path, index: Mapping[str, Any], num_fewshot: int | None
) -> dict[str, str]:
    """Write a task config for every task and group of `task_names` into `dest`.

    Each config `include:`s the task's own YAML (lm-eval's, or one from --bench-include-path); with
    `data_dir`, a task that reads the Hub is redirected to its local files, while a task that already
    reads local files (`dataset_kwargs: data_files`) is left as it is. The folder is complete on its
    own (lm-eval can load it without indexing its 10,000 built-in configs) and also overrides the
    built-ins when given to `lm_eval --include_path`, so one folder serves the run and the CLI.
    Returns {path of each data file read from `data_dir`: sha256}, which identifies the data.
    """
    if data_dir is not None and not data_dir.is_dir():
        raise BenchError(f"--bench-data-dir {data_dir} is not a folder")
    dest.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    for item in expand_tasks(task_names, index, redirectable=data_dir is not None):
        if isinstance(item, GroupRef):
            config: dict[str, Any] = {"include": str(item.yaml_path.resolve())}
        elif isinstance(item, OpaqueTask):
            if data_dir is not None:  # expand_tasks refused these already; kept for the type checker
                raise BenchError(f"task {item.name!r} cannot be redirected by --bench-data-dir")
            entry = index.get(item.name)
            if entry is None or entry.yaml_path is None:
                continue  # tasks inline in a group come with the group's config
            config = {"include": str(Path(entry.yaml_path).resolve())}
        elif data_dir is None or reads_local_data(item.config):
            config = {"include": str(item.yaml_path.resolve())}
        else:
            files = find_split_files(item, data_dir, num_fewshot)
            config = overlay_config(item, files)
            hashes.update({str(p.resolve()): file_sha256(p) for p in files.values()})
        # JSON is valid YAML, and needs no YAML writer. Atomic: another session may be reading the overlay.
        atomic_write_text(dest / f"{item.name}.yaml", json.dumps(config, indent=2) + "\n")
    return hashes


def write_pruned_groups(dest: Path, task_folder: str | None, groups: Mapping[str, Mapping[str, Any]]) -> Path | None:
    """A task folder `dest` in which lm-eval builds each of `groups` with only the children listed.

    `groups` is {group: {"yaml": its config file, "task": [children]}}: a group an early stop scored on the
    leaves it reached (run/child_early_stop.py `pruned_group_configs`). `dest` holds a copy of the session's
    `task_folder` (when it has one) with those groups' configs replaced, so `lm_eval --include_path dest
    --samples …` scores the same groups as the run. None when a group has no config file to include.
    """
    if any(not config.get("yaml") for config in groups.values()):
        return None
    dest.mkdir(parents=True, exist_ok=True)
    if task_folder is not None:
        for path in Path(task_folder).glob("*.yaml"):
            atomic_write_text(dest / path.name, path.read_text(encoding="utf-8"))
    for name, config in groups.items():
        pruned = {"include": str(config["yaml"]), "task": list(config["task"])}
        atomic_write_text(dest / f"{name}.yaml", json.dumps(pruned, indent=2) + "\n")
    return dest


def reads_local_data(config: Mapping[str, Any]) -> bool:
    """Whether a task reads local files of its own (`dataset_kwargs: data_files`) rather than a download.

    Data files given as URLs (some of lm-eval's own tasks) are a download: --bench-data-dir redirects them.
    """
    kwargs = config.get("dataset_kwargs") or {}
    files = kwargs.get("data_files") if isinstance(kwargs, Mapping) else None
    names = files.values() if isinstance(files, Mapping) else [files]
    paths = [str(p) for name in names for p in (name if isinstance(name, list) else [name]) if p]
    return bool(paths) and not any("://" in path for path in paths)


