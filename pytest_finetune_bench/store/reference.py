"""`--bench-compare-to`: an earlier run as the reference side, refused when its settings differ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.core.records import RunRecord
from pytest_finetune_bench.core.settings import settings_part
from pytest_finetune_bench.store.benchmark_file import read_summary, side_of
from pytest_finetune_bench.store.files import read_json_file, reading


def load_reference(path: Path) -> tuple[RunRecord, dict[str, Any]]:
    """The fine-tuned side of an earlier session, and the settings it was measured under."""
    summary_file = path if path.is_file() else path / "benchmark.json"
    if not summary_file.is_file():
        raise BenchError(f"--bench-compare-to {path}: no benchmark.json there; point it at a benchmark.json "
                         "or a fine-tuned/<timestamp> folder")
    advice = "pick another run for --bench-compare-to"
    with reading(summary_file, advice):
        return _reference(summary_file, advice)


def _reference(summary_file: Path, advice: str) -> tuple[RunRecord, dict[str, Any]]:
    summary = read_summary(summary_file, advice)
    side = side_of(summary, "fine-tuned")
    if side is None or not side.get("results_file"):
        raise BenchError(f"{summary_file} has no fine-tuned results (its run did not finish): {advice}")
    results_file = Path(side["results_file"])
    results = read_json_file(results_file, advice)
    record = RunRecord(
        role="base",
        model=f"{side.get('model')} ({summary.get('timestamp')})",
        results=results,
        results_file=results_file,
        samples_files={t: Path(p) for t, p in (side.get("samples_files") or {}).items()},
        timestamp=str(side.get("timestamp")),
        status=str(side.get("status", "complete")),
        from_cache=True,
    )
    identity = ((summary.get("reproduce") or {}).get("identity") or {}).get("fine-tuned")
    if not isinstance(identity, dict):
        raise BenchError(f"{summary_file} records no settings identity (an older version wrote it): "
                         "re-run that model with this version, then compare to the new run")
    return record, identity


def settings_differences(reference: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The settings (identity fields other than the model's) that differ, as `name: reference → current`."""
    old, new = settings_part(reference), settings_part(current)
    return [f"{name}: {_plain(old.get(name))!r} → {_plain(new.get(name))!r}"
            for name in sorted(set(old) | set(new)) if _plain(old.get(name)) != _plain(new.get(name))]


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
