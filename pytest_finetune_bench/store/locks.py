"""File locks, so two sessions on the same model never write the same file at once (no pytest here).

`filelock` holds an OS lock on `<path>.lock` (flock on Unix, msvcrt on Windows): it vanishes with
the process that held it, so a killed session never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from pytest_finetune_bench import BenchError

# Waiting polls, so pytest-timeout's alarm or Ctrl-C can interrupt a session that waits for another.
_POLL_S = 0.2


def lock_path(path: Path) -> Path:
    """The lock file that guards `path`: `<path>.lock` beside it."""
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def locked(
    path: Path, timeout_s: float | None = None, on_wait: Callable[[Path], None] | None = None
) -> Iterator[None]:
    """Hold an exclusive lock on `path` (through `<path>.lock`) for the duration of the block.

    Waits for another holder to finish, at most `timeout_s` seconds (None: as long as it takes),
    then raises BenchError naming the lock file. `on_wait` is told once when it has to wait.
    """
    guard = lock_path(path)
    guard.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(guard)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait(guard)
        try:
            lock.acquire(timeout=-1 if timeout_s is None else timeout_s, poll_interval=_POLL_S)
        except Timeout:
            raise BenchError(
                f"another session still holds {guard} after {timeout_s:.0f}s: wait for it to finish, "
                "or give this session its own --bench-output"
            ) from None
    try:
        yield
    finally:
        lock.release()
