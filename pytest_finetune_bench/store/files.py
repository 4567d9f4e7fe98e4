"""Files that are never half-written and never overwritten."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError


def file_sha256(path: Path) -> str:
    """sha256 of every byte of `path`, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


CACHE_ENV = "PYTEST_FINETUNE_BENCH_CACHE"  # the cache folder when --bench-cache-dir is not given


def bench_cache_dir() -> Path:
    """The plugin's default per-user cache: $PYTEST_FINETUNE_BENCH_CACHE, else $XDG_CACHE_HOME/pytest-finetune-bench.

    A session uses `BenchOptions.cache_root` (--bench-cache-dir first); this is its fallback.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-finetune-bench"


def distrust(path: Path) -> str | None:
    """Why the cache folder or file `path` must not be read, or None when it can be.

    Only what the current user owns, and nobody else may write to, is trusted; a symbolic link is
    judged by what it points to. Without POSIX owners (Windows) everything passes.
    """
    getuid = getattr(os, "getuid", None)
    if getuid is None:
        return None
    try:
        info = path.stat()
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})"
    if info.st_uid != getuid():
        return f"belongs to user id {info.st_uid}, not to you"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "can be written by other users"
    return None


def claim_cache_dir(path: Path) -> str | None:
    """Make `path` a cache folder only the current user can write to; why it cannot be used, else None.

    A missing folder is made private (0700). A folder of ours that others could write to may hold
    anything they planted: it is emptied and made private (its caches are rebuilt). Another user's
    folder is refused.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    why = distrust(path)
    if why is None or getattr(os, "getuid", None) is None:
        return None
    if path.stat().st_uid != os.getuid():
        return why
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    os.chmod(path, 0o700)
    return None


def atomic_write_bytes(path: Path, data: bytes, private: bool = False) -> None:
    """Write to a temporary file beside `path`, then rename: readers see the old or the new file.

    `private` files (caches) are readable and writable by their owner only.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); a README or report.html should stay as readable as before.
        os.chmod(tmp, 0o600 if private else _mode_for(path))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    """The permissions of the file `path` replaces, else those a new file gets under the umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path: Path, text: str) -> None:
    """atomic_write_bytes for text, in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any, private: bool = False) -> None:
    """atomic_write_bytes for JSON (UTF-8, indented)."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"), private)


def unique_dir(parent: Path, name: str) -> Path:
    """A new folder `parent/name` (or `name-2`, `name-3`, ...): never reuses an existing one."""
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        candidate = parent / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise OSError(f"could not create a new folder under {parent}")


STAGING_PREFIX = ".staging-"


def staging_dir(parent: Path, role: str) -> Path:
    """A new scratch folder in `parent` for one run of `role`, named after this process so a later session
    can tell whether its owner is gone (remove_stale_staging)."""
    folder = parent / f"{STAGING_PREFIX}{role}-{os.getpid()}-{time.time_ns()}"
    folder.mkdir(parents=True)
    return folder


def remove_stale_staging(parent: Path) -> None:
    """Delete the scratch folders in `parent` whose process is gone (a session killed mid-run).

    They hold the child's instructions and unfinished outputs only: every answer the run produced is in
    the response cache, so nothing a rerun needs is lost.
    """
    for folder in parent.glob(f"{STAGING_PREFIX}*"):
        pid = folder.name.rsplit("-", 2)[-2] if folder.name.count("-") >= 3 else ""
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def read_json_file(path: Path, what: str) -> dict[str, Any]:
    """A JSON object read back from disk; BenchError naming the file and what to do when it is unusable.

    `what` finishes the advice, e.g. "delete it to recompute the base scores".
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"{path} does not exist: {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path} cannot be read ({exc.__class__.__name__}: {exc}): {what}") from None
    except ValueError as exc:
        raise BenchError(f"{path} is not valid JSON ({exc}): {what}") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path} does not hold a JSON object: {what}")
    return data


# What reading a file of the wrong shape raises: its values used as if they had the types we wrote.
MALFORMED = (TypeError, AttributeError, KeyError, ValueError, IndexError, ArithmeticError, RecursionError)


@contextlib.contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """Within the block, a file whose content has the wrong shape is a one-line BenchError naming it.

    `what` finishes the advice, as for read_json_file.
    """
    try:
        yield
    except BenchError:
        raise
    except MALFORMED as exc:
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise BenchError(f"{path} does not hold what this version wrote there ({detail}): {what}") from None


def json_object(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one: parts of a file read back are checked before use."""
    return value if isinstance(value, dict) else {}


def check_writable_dir(path: Path, flag: str) -> None:
    """BenchError unless files can be created in `path` (or, if it does not exist yet, where it would be made).

    Probes with a real temporary file instead of os.access, which says yes to root on any folder
    and knows nothing of read-only mounts; creates no folder.
    """
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BenchError(f"cannot write results to {path}: {existing} is not a folder; choose another with {flag}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=existing)
    except OSError as exc:
        raise BenchError(
            f"cannot write results to {path} ({exc.strerror or exc}): choose a writable folder with {flag}"
        ) from None
    os.close(fd)
    Path(probe).unlink(missing_ok=True)
