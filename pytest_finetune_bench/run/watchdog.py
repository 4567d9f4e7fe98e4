"""Time limits of `--bench-timeout`: per run, for recovery, and for the gate tests (no pytest here).

The engine enforces the limit on each model run itself (it stops the child tree and scores what was
produced). pytest-timeout's marker on the gate tests is a backstop for anything that hangs outside
the child, so it allows every run that one gate test may start, with time to stop and score each.
"""

from __future__ import annotations

from pytest_finetune_bench.run.engine import KILL_GRACE_S

# Scoring a stopped run loads the model and the tasks again: allow that even when runs are limited tightly.
MIN_RECOVERY_S = 180.0
# A gate test may start both runs (base and fine-tuned), each followed by a scoring run.
RUNS_PER_GATE = 2
BACKSTOP_MARGIN_S = 60.0


def recovery_limit(timeout_s: float) -> float:
    """How long the scoring of a stopped run may take."""
    return max(timeout_s, MIN_RECOVERY_S)


def gate_item_timeout(timeout_s: float | None) -> float | None:
    """pytest-timeout's limit for one gate test, or None when runs are not limited."""
    if timeout_s is None:
        return None
    per_run = timeout_s + recovery_limit(timeout_s) + 2 * KILL_GRACE_S
    return RUNS_PER_GATE * per_run + BACKSTOP_MARGIN_S


def format_duration(seconds: float) -> str:
    """`45s`, `10m`, `1h30m`, `2m05s`: how users wrote it, not 600.0."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"
