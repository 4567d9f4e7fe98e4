"""Where each session's summary goes, so a failed session never hides the last good results (no pytest here).

`benchmarks/benchmark.json` is the summary of the latest *complete* session. A session that timed
out, crashed or failed keeps its own summary (in its `fine-tuned/<timestamp>/` folder, else in
`benchmark.incomplete.json`) and leaves the last complete one in place. Readers that look for the
newest run use `latest_complete_run`, which skips run folders that hold no complete summary (the
pipeline scripts' "newest folder" would pick an empty one left by a killed run).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_finetune_bench.store.files import atomic_write_json
from pytest_finetune_bench.store.locks import locked

SUMMARY = "benchmark.json"
INCOMPLETE_SUMMARY = "benchmark.incomplete.json"


def publish_summary(output_dir: Path, run_dir: Path | None, summary: Mapping[str, Any], name: str = SUMMARY) -> Path:
    """Write `summary` where it belongs; returns the file that holds this session's summary.

    Under a lock, so two sessions on the same model cannot interleave their writes. `name` is the
    file's name (benchmark.json; benchmarks-summary.json for a ranking); the incomplete twin adds
    `.incomplete` before `.json`.
    """
    latest = output_dir / name
    with locked(latest):
        if run_dir is not None:
            atomic_write_json(run_dir / name, summary)
        if summary.get("status") == "complete" or not summary_is_complete(latest):
            _set_aside_if_corrupt(latest)
            atomic_write_json(latest, summary)
            return latest
        if run_dir is not None:
            return run_dir / name
        incomplete = output_dir / name.replace(".json", ".incomplete.json")
        atomic_write_json(incomplete, summary)
        return incomplete


def add_errors(output_dir: Path, paths: Sequence[Path], errors: Mapping[str, str]) -> None:
    """Add `errors` (failures after the summary was written: a tracker's) to the "errors" of each summary in `paths`.

    Under the lock `publish_summary` writes `output_dir`'s summaries under.
    """
    with locked(output_dir / SUMMARY):
        for path in paths:
            summary = _read(path)
            if summary is not None:
                atomic_write_json(path, {**summary, "errors": {**(summary.get("errors") or {}), **errors}})


def summary_is_complete(path: Path) -> bool:
    """Whether `path` holds the summary of a complete session (False when absent or unreadable)."""
    summary = _read(path)
    return summary is not None and summary.get("status") == "complete"


def latest_complete_run(output_dir: Path) -> Path | None:
    """The newest `fine-tuned/<timestamp>/` folder whose summary says complete; None when there is none."""
    runs = output_dir / "fine-tuned"
    if not runs.is_dir():
        return None
    # Folder names are timestamps (with -2, -3 … for sessions started in the same second).
    for folder in sorted((p for p in runs.iterdir() if p.is_dir()), key=_run_order, reverse=True):
        if summary_is_complete(folder / SUMMARY):
            return folder
    return None


def _run_order(folder: Path) -> tuple[str, int]:
    stamp, _, suffix = folder.name.partition("T")
    time_part, dash, count = suffix.rpartition("-")
    # "2024-05-01T10-00-00-2": the trailing -2 is a repeat counter only when the time has 3 parts already.
    if dash and count.isdigit() and time_part.count("-") == 2:
        return f"{stamp}T{time_part}", int(count)
    return folder.name, 1


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _set_aside_if_corrupt(path: Path) -> None:
    """Keep an unreadable summary under another name instead of silently replacing it."""
    if path.exists() and _read(path) is None:
        path.rename(path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"))
