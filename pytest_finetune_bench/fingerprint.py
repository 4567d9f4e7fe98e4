"""Content fingerprints of model folders, cheap enough to take every session."""

from __future__ import annotations

import hashlib
from pathlib import Path

_SMALL = 16 << 20
_SAMPLE = 4 << 20
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf", ".model")


def model_fingerprint(model: str, revision: str | None = None) -> str:
    """sha256 over a folder's config, tokenizer and weight files; the id and revision for a Hub model.

    Small files are hashed whole. Large weight files are hashed by size plus three 4 MiB samples
    (start, middle, end): retraining rewrites every tensor, so any real change shows, and a 16 GB
    model is fingerprinted in milliseconds instead of a minute.
    """
    folder = Path(model)
    digest = hashlib.sha256()
    if not folder.is_dir():
        digest.update(f"hub:{model}@{revision or 'main'}".encode())
        return digest.hexdigest()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and not _ignored(p, folder)):
        digest.update(str(file.relative_to(folder)).encode() + b"\0")
        digest.update(_file_digest(file))
    return digest.hexdigest()


def _ignored(path: Path, folder: Path) -> bool:
    parts = path.relative_to(folder).parts
    return any(p.startswith(".") or p in ("benchmarks", "__pycache__") for p in parts)


def _file_digest(path: Path) -> bytes:
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        if size <= _SMALL or not path.name.endswith(_WEIGHT_SUFFIXES):
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        else:
            for offset in (0, size // 2, size - _SAMPLE):
                fh.seek(offset)
                digest.update(fh.read(_SAMPLE))
    return digest.digest()
