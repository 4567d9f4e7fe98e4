"""Tasks of the user's own (`--bench-include-path DIR`): indexed as lm-eval indexes them, pinned by content.

A task a user writes has no version lm-eval keeps up to date, and its folder may move. Its version
in the settings identity is therefore a hash of what defines it: its YAML and every YAML it
`include:`s, the Python files its `!function` helpers live in (with the files beside them, which a
helper may import), and the data files it reads (`dataset_kwargs: data_files`, a local
`dataset_path`). Editing any of them is another measurement; moving the folder is not.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.store.files import file_sha256


def index_include_paths(paths: Sequence[Path]) -> dict[str, Any]:
    """lm-eval's index of the tasks, groups and tags defined under `paths` (later paths override earlier)."""
    for path in paths:
        if not path.is_dir():
            raise BenchError(f"--bench-include-path {path} is not a folder")
    from lm_eval.tasks import TaskManager

    for path in paths:
        # Each folder on its own: one whose tasks a later folder overrides still defines them.
        if not TaskManager(include_path=str(path), include_defaults=False).task_index:
            raise BenchError(
                f"--bench-include-path {path} defines no lm-eval task: no YAML file in it has a `task:` or "
                f"`group:` lm-eval can read (`lm_eval validate --include_path {path} --tasks NAME` says why)"
            )
    return dict(TaskManager(include_path=[str(p) for p in paths], include_defaults=False).task_index)


def content_version(entry: Any, cwd: Path) -> str:
    """The version of a user's task or group: the sha256 of its definition, helper and data files.

    Relative data files are read from `cwd`, as lm-eval reads them from the directory it runs in.
    """
    files = [*definition_files(Path(entry.yaml_path)), *data_files(entry.name, entry.cfg or {}, cwd)]
    digest = hashlib.sha256()
    for path in files:
        digest.update(file_sha256(path).encode())
    return f"sha256:{digest.hexdigest()}"


def definition_files(yaml_path: Path, seen: set[Path] | None = None) -> list[Path]:
    """`yaml_path`, the YAML files it includes (recursively) and the Python files of its `!function` helpers."""
    from lm_eval.tasks._yaml_loader import load_yaml

    path = yaml_path.resolve()
    seen = set() if seen is None else seen
    if path in seen:
        return []
    seen.add(path)
    cfg = load_yaml(path, resolve_func=False, recursive=False)
    files = [path, *helper_files(cfg, path.parent)]
    includes = cfg.get("include")
    for include in includes if isinstance(includes, list) else [includes] if includes else []:
        included = Path(include) if Path(include).is_absolute() else path.parent / include
        files += definition_files(included, seen)
    return list(dict.fromkeys(files))


def helper_files(cfg: Any, base_dir: Path) -> list[Path]:
    """The modules of `!function mod.name` references in one YAML file, with the Python files beside them.

    lm-eval's index reads `!function utils.f` as the text `BASE_DIR/utils.f` (BASE_DIR: the YAML's
    folder), and imports it from BASE_DIR/utils.py; a helper may import its neighbours, so they count too.
    """
    prefix = f"{base_dir}/"
    found: list[Path] = []
    for text in _strings(cfg):
        module = text[len(prefix):].rpartition(".")[0] if text.startswith(prefix) else ""
        candidate = base_dir / f"{module.replace('.', '/')}.py"
        if module and candidate.is_file():
            found += sorted(candidate.parent.glob("*.py"))
    return list(dict.fromkeys(found))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def data_files(task: str, cfg: Mapping[str, Any], cwd: Path) -> list[Path]:
    """The local files a task reads: `dataset_kwargs: data_files` and a local `dataset_path` folder.

    A file named but missing is a BenchError now, not a dataset error minutes into the run.
    """
    kwargs = cfg.get("dataset_kwargs") or {}
    patterns = list(_strings(kwargs.get("data_files"))) if isinstance(kwargs, Mapping) else []
    files: list[Path] = []
    for pattern in patterns:
        if "://" in pattern:
            continue  # a URL: not ours to pin
        path = Path(pattern).expanduser()
        path = path if path.is_absolute() else cwd / path
        matches = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))] if glob.has_magic(pattern) else (
            [path] if path.is_file() else [])
        if not matches:
            raise BenchError(f"task {task!r} reads {pattern}, which does not exist (relative paths are read from "
                             f"{cwd}, the directory pytest runs in, as lm-eval reads them from its own)")
        files += [p for p in matches if p.is_file()]
    dataset = str(cfg.get("dataset_path") or "")
    if dataset.startswith((".", "/", "~")):  # a local dataset folder rather than a Hub name or a builder
        local = Path(dataset).expanduser()
        local = local if local.is_absolute() else cwd / local
        if local.is_dir():
            files += sorted(p for p in local.rglob("*") if p.is_file())
        elif local.is_file():
            files.append(local)
    return files
