"""The base model's scores, computed once and reused by every fine-tune of the same base (no pytest here).

The one way a base run is shared, by its cache key (plan/settings.cache_key): within a pytest session
(the experiments of `--bench-model 'outputs/*'` evaluate their common base once), and across sessions
on disk when the base can be cached. A base that cannot (its content unknown: a served model without
a digest, a Hub id without a commit; or a cache folder that is not the user's) is shared within the
session only.

An entry is reused only when everything that changes a score is equal: the run's identity
(core/settings.py). Entries are
written to a temporary folder and renamed into place, carry the sha256 of each file, and are
checked on every read; a corrupt or partial entry is recomputed, never used. entry.json is checked
like any input: a value of the wrong type, or a file name that leads outside its entry, discards the
entry; so does an entry or file the current user does not own or others could write to.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_finetune_bench.core.records import RunRecord
from pytest_finetune_bench.core.settings import cache_key
from pytest_finetune_bench.store.files import claim_cache_dir, distrust, file_sha256


@dataclass
class CachedBase:
    """A valid cache entry: the lm-eval files and when they were computed."""

    folder: Path
    created: str
    results_file: Path
    samples_files: dict[str, Path]
    generated: int


class BaseCache:
    """Base runs by cache key: this session's (`shared`, `share`), and on disk in `<root>/base/<key>/`
    (`load`, `store`: `entry.json` and lm-eval's files)."""

    def __init__(self, root: Path) -> None:
        self.root = root / "base"
        self._session: dict[str, tuple[str, RunRecord]] = {}  # key → (the experiment that obtained it, its run)

    def shared(self, ident: Mapping[str, Any]) -> tuple[str, RunRecord] | None:
        """(label, run) of the base run an experiment of this session obtained under this identity."""
        return self._session.get(cache_key(ident))

    def share(self, ident: Mapping[str, Any], label: str, record: RunRecord) -> None:
        """Offer a complete base run to the session's other experiments (the first one obtained stays)."""
        self._session.setdefault(cache_key(ident), (label, record))

    def entry_dir(self, ident: Mapping[str, Any]) -> Path:
        return self.root / cache_key(ident)

    def claim(self) -> str | None:
        """Why the cache folder cannot be used (it is another user's), else None (see files.claim_cache_dir)."""
        try:
            why = claim_cache_dir(self.root)
        except OSError as exc:
            why = f"cannot be made ({exc.strerror or exc})"
        return None if why is None else f"{self.root} {why}"

    def load(self, ident: Mapping[str, Any]) -> tuple[CachedBase | None, str | None]:
        """(entry, None) on a hit; (None, why) when the entry is corrupt; (None, None) when absent."""
        folder = self.entry_dir(ident)
        if not folder.exists():
            return None, None
        try:
            return _read_entry(folder, ident), None
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            self._discard(folder)
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def store(self, ident: Mapping[str, Any], record: RunRecord) -> Path:
        """Copy a complete run's files into a new entry (an existing valid entry wins a race)."""
        folder = self.entry_dir(ident)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=self.root))
        files = [record.results_file, *record.samples_files.values()]
        for file in files:
            shutil.copy2(file, staging / file.name)
            os.chmod(staging / file.name, 0o600)
        entry = {
            "identity": dict(ident),
            "created": record.timestamp,
            "results_file": record.results_file.name,
            "samples_files": {task: p.name for task, p in record.samples_files.items()},
            "sha256": {f.name: file_sha256(staging / f.name) for f in files},
            "generated": record.generated,
        }
        (staging / "entry.json").write_text(json.dumps(entry, indent=2, default=str))
        os.chmod(staging / "entry.json", 0o600)
        if folder.exists():  # a recomputed base (--bench-refresh-base) replaces the old entry
            self._discard(folder)
        try:
            staging.rename(folder)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    def _discard(self, folder: Path) -> None:
        # Moved aside rather than deleted in place, so a concurrent reader never sees half a folder.
        trash = folder.with_name(f".corrupt-{folder.name}-{time.time_ns()}")
        try:
            folder.rename(trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _read_entry(folder: Path, ident: Mapping[str, Any]) -> CachedBase:
    why = distrust(folder)
    if why is not None:
        raise ValueError(f"the entry {why}")
    entry = json.loads(_member(folder, "entry.json").read_text(encoding="utf-8"))
    if not isinstance(entry, dict):
        raise ValueError("entry.json does not hold an object")
    if _normalise(entry["identity"]) != _normalise(dict(ident)):
        raise ValueError("entry.json holds another identity")
    checksums = _str_map(entry["sha256"], "sha256")
    results_name = entry["results_file"]
    samples_names = _str_map(entry["samples_files"], "samples_files")
    created, generated = entry["created"], entry.get("generated", 0)
    if not isinstance(created, str) or type(generated) is not int:
        raise ValueError("entry.json has a created or generated value of the wrong type")
    for name in [results_name, *samples_names.values()]:
        if name not in checksums:
            raise ValueError(f"entry.json has no checksum for {name!r}")
    for name, expected in checksums.items():
        if file_sha256(_member(folder, name)) != expected:
            raise ValueError(f"{name} does not match its checksum")
    results_file = folder / results_name
    results = json.loads(results_file.read_text(encoding="utf-8"))
    scores = results.get("results") if isinstance(results, dict) else None
    if not isinstance(scores, dict):
        raise ValueError(f"{results_name} holds no results")
    missing = [t for t in ident["tasks"] if t not in scores]
    if missing:
        raise ValueError(f"no results for {', '.join(missing)}")
    return CachedBase(
        folder=folder,
        created=created,
        results_file=results_file,
        samples_files={task: folder / name for task, name in samples_names.items()},
        generated=generated,
    )


def _str_map(value: Any, field: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"entry.json's {field} is not a map of names to strings")
    return value


def _member(folder: Path, name: str) -> Path:
    """The plain file `name` of the entry `folder`; ValueError for a path, a link, or a file not ours."""
    if not name or name in (".", "..") or any(sep in name for sep in ("/", "\\", os.sep, "\0")):
        raise ValueError(f"entry.json names {name!r}, which is not a file name")
    path = folder / name
    if path.is_symlink() or not path.is_file():
        raise ValueError(f"{name} is not a plain file of the entry")
    why = distrust(path)
    if why is not None:
        raise ValueError(f"{name} {why}")
    return path


def restore(cached: CachedBase, results_dir: Path) -> RunRecord:
    """A RunRecord from a cache entry, with its files also placed in `results_dir` (never overwriting)."""
    results_file, samples_files = place_files(cached.results_file, cached.samples_files, results_dir)
    return RunRecord(
        role="base",
        model="",
        results=json.loads(results_file.read_text()),
        results_file=results_file,
        samples_files=samples_files,
        timestamp=cached.created,
        generated=0,
        from_cache=True,
    )


def place_files(results_file: Path, samples_files: dict[str, Path],
                results_dir: Path) -> tuple[Path, dict[str, Path]]:
    """Copies of a run's results and samples files in `results_dir` (an existing different file is kept)."""
    results_dir.mkdir(parents=True, exist_ok=True)

    def place(file: Path) -> Path:
        target = results_dir / file.name
        if not target.exists():
            shutil.copy2(file, target)
        return target if file_sha256(target) == file_sha256(file) else file

    return place(results_file), {task: place(path) for task, path in samples_files.items()}


def describe_age(created: str) -> str:
    try:
        when = datetime.fromisoformat(created)
    except ValueError:
        return created
    return when.strftime("%Y-%m-%d %H:%M")
