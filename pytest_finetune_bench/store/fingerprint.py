"""Content fingerprints of model folders: every byte counts, and an unchanged file is not read twice.

A LoRA merge rewrites only the tensors of its target modules, so a new adapter merged into the same
folder can leave most of a weight file, and its size, as they were: only a hash of every byte tells
the two models apart. Hashing a 16 GB model takes about a minute, so each large file's digest is kept
in an index keyed by what changes whenever the file is written: path, size, inode, mtime and ctime.
Restoring the mtime does not fool it, since writing a file always moves its ctime, which no user
call can set back.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from pytest_finetune_bench.store.files import atomic_write_json, distrust, file_sha256

INDEX_NAME = "file-digests.json"
# Model-card files that --bench-readme writes into the model's folders (report/card.py): they change nothing
# the model computes, and counting them would make every session's README invalidate the next one's caches.
MODEL_CARD_FILES = ("README.md", "benchmark_chart.png")
_INDEXED_MIN_BYTES = 16 << 20  # smaller files are hashed every time: cheaper than the bookkeeping
_INDEX_MAX_ENTRIES = 4096
_SHA256 = re.compile(r"[0-9a-f]{64}")


def model_fingerprint(model: str, index_dir: Path, revision: str | None = None) -> str:
    """sha256 over every file of a model folder (names and full contents); the id and commit for a Hub id.

    The digests of large files are remembered in `index_dir` (the session's cache folder).
    """
    folder = Path(model)
    digest = hashlib.sha256()
    if not folder.is_dir():
        digest.update(f"hub:{model}@{revision}".encode())
        return digest.hexdigest()
    index = DigestIndex(index_dir)
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and not _ignored(p, folder)):
        digest.update(str(file.relative_to(folder)).encode() + b"\0")
        digest.update(index.digest(file).encode())
    index.save()
    return digest.hexdigest()


def adapter_fingerprint(base: str | None, adapter: Path, index_dir: Path) -> str | None:
    """The content of a LoRA adapter applied on a base: both count, so the caches never mix an adapter
    with its merge (another fingerprint) or with another base. None when the base's content is unknown."""
    if base is None:
        return None
    return hashlib.sha256(f"adapter:{model_fingerprint(str(adapter), index_dir)}|base:{base}".encode()).hexdigest()


def _ignored(path: Path, folder: Path) -> bool:
    parts = path.relative_to(folder).parts
    return path.name in MODEL_CARD_FILES or any(p.startswith(".") or p in ("benchmarks", "__pycache__") for p in parts)


class DigestIndex:
    """sha256 of large files, remembered per (path, size, inode, mtime, ctime) in one JSON file."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / INDEX_NAME
        self.entries = self._read()
        self.changed = False
        self.hashed: list[Path] = []  # files read in full by this instance (the others came from the index)

    def _read(self) -> dict[str, str]:
        """The index on disk; empty (every large file hashed again) when it is unreadable or not the user's.

        A digest that is not 64 hex digits is dropped: a wrong one would give the model another's cache keys.
        """
        if distrust(self.path) is not None:  # written private (0600): another owner means it was replaced
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str) and _SHA256.fullmatch(v)}

    def digest(self, file: Path) -> str:
        stat = file.stat()
        if stat.st_size < _INDEXED_MIN_BYTES:
            return file_sha256(file)
        key = f"{file.resolve()}|{stat.st_size}|{stat.st_ino}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"
        if key not in self.entries:
            self.entries[key] = file_sha256(file)
            self.hashed.append(file)
            self.changed = True
        return self.entries[key]

    def save(self) -> None:
        """Write the index back when it learned something; a failure only costs a re-hash next time."""
        if not self.changed:
            return
        kept = dict(list(self.entries.items())[-_INDEX_MAX_ENTRIES:])
        try:
            atomic_write_json(self.path, kept, private=True)
        except OSError:
            pass
        self.changed = False

