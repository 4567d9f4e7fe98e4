"""Advisory file locks, so two sessions on the same model never write the same file at once (no pytest here).

`fcntl.flock` locks belong to an open file and vanish when its process dies, so a killed session
never leaves a stale lock behind. The lock files themselves are kept: deleting one while another
process waits on it would let a third process lock a different file of the same name.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from pytest_finetune_bench import BenchError

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
    with guard.open("a+", encoding="utf-8") as handle:
        if not _try_lock(handle):
            if on_wait is not None:
                on_wait(guard)
            _wait_for_lock(handle, guard, timeout_s)
        try:
            yield
        finally:
            _unlock(handle)


def _try_lock(handle: IO[str]) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows has no flock: run unguarded rather than not at all
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait_for_lock(handle: IO[str], guard: Path, timeout_s: float | None) -> None:
    # Polling instead of a blocking flock keeps the wait interruptible (pytest-timeout, Ctrl-C) and bounded.
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not _try_lock(handle):
        if deadline is not None and time.monotonic() >= deadline:
            raise BenchError(
                f"another session still holds {guard} after {timeout_s:.0f}s: wait for it to finish, "
                "or give this session its own --bench-output"
            )
        time.sleep(_POLL_S)


def _unlock(handle: IO[str]) -> None:
    try:
        import fcntl
    except ImportError:
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
