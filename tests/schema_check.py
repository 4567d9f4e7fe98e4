"""Every benchmark.json, benchmarks-summary.json and history output the suite produces, checked against the
published JSON Schemas (pytest_finetune_bench/schemas/, shipped in the package)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

from pytest_finetune_bench.store.benchmark_file import SCHEMA_FILES, schema

# File names the plugin writes its summaries under (a run folder's copy has the same name).
SUMMARY_NAMES = {"benchmark.json": "benchmark", "benchmark.incomplete.json": "benchmark",
                 "benchmarks-summary.json": "ranking", "benchmarks-summary.incomplete.json": "ranking"}


def _registry() -> Registry:
    resources = [Resource.from_contents(schema(name)) for name in SCHEMA_FILES]
    return Registry().with_resources((str(r.contents["$id"]), r) for r in resources)


_REGISTRY = _registry()


def validate(data: Any, kind: str) -> None:
    """jsonschema.ValidationError unless `data` matches the published schema of `kind` (benchmark, ranking, history)."""
    validator = jsonschema.Draft202012Validator(schema(kind), registry=_REGISTRY)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        raise error


def validate_file(path: Path) -> None:
    """The summary file at `path` matches its schema; AssertionError naming the file and the mismatch otherwise."""
    try:
        validate(json.loads(path.read_text(encoding="utf-8")), SUMMARY_NAMES[path.name])
    except jsonschema.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(top)"
        raise AssertionError(f"{path} does not match the published schema at {where}: {exc.message}") from None


def produced_summaries(root: Path) -> list[Path]:
    """The summary files of the current schema versions under `root`, wherever a session put them.

    A file of another version, or none, was not written by this version: a test put it there.
    """
    found = []
    for path in sorted(p for p in root.rglob("benchmark*.json") if p.name in SUMMARY_NAMES and p.is_file()):
        try:
            version = json.loads(path.read_text(encoding="utf-8")).get("schema_version")
        except (ValueError, AttributeError):
            version = None  # unreadable: the test broke it on purpose, or the schema check below says so
        if version == schema(SUMMARY_NAMES[path.name])["properties"]["schema_version"]["const"]:
            found.append(path)
    return found
