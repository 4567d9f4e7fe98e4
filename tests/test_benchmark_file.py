"""benchmark.json as a contract: the published schemas, the version check, and the docs' example."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import pytest_finetune_bench
from pytest_finetune_bench import BenchError
from pytest_finetune_bench.report.history import history_rows, render, summary_files
from pytest_finetune_bench.store.benchmark_file import SCHEMA_FILES, SCHEMA_VERSION, parse_summary, read_summary
from tests.schema_check import validate
from tests.test_reports import golden_model

ROOT = Path(__file__).resolve().parent.parent
# The imported package, not the checkout's folder: against an installed wheel, what the wheel ships.
PACKAGE = Path(pytest_finetune_bench.__file__).resolve().parent


def docs_example() -> dict[str, Any]:
    """The benchmark.json example of docs/results.md."""
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    section = text[text.index("## benchmark.json"):]
    start = section.index("```json\n") + len("```json\n")
    example: dict[str, Any] = json.loads(section[start:section.index("\n```", start)])
    return example


def test_the_docs_example_is_a_current_benchmark_json() -> None:
    example = docs_example()
    validate(example, "benchmark")
    assert parse_summary(example, "docs/results.md")["schema_version"] == SCHEMA_VERSION
    # The example shows every part the schema describes, so it cannot drift by leaving one out.
    described = set(json.loads((PACKAGE / "schemas" / SCHEMA_FILES["benchmark"]).read_text())["properties"])
    assert set(example) == described


def test_the_schemas_ship_in_the_package() -> None:
    # pyproject's [tool.setuptools.package-data] line for the package (tomllib is Python 3.11+).
    line = re.search(r"^pytest_finetune_bench = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M)
    assert line is not None
    patterns = [p.strip().strip('"') for p in line.group(1).split(",")]
    for name in SCHEMA_FILES.values():
        assert any(fnmatch.fnmatch(f"schemas/{name}", p) for p in patterns), name
        jsonschema.Draft202012Validator.check_schema(json.loads((PACKAGE / "schemas" / name).read_text()))


@pytest.mark.parametrize(("version", "says"), [
    (1, "is schema version 1 (written by pytest-finetune-bench 0.0.9); this plugin (*) reads versions 2 to 4: "
        "re-run the benchmark with this version, or read it with pytest-finetune-bench 0.0.9"),
    (5, "is schema version 5 (written by pytest-finetune-bench 0.0.9); this plugin (*) reads versions 2 to 4: "
        "upgrade pytest-finetune-bench to read it (install a newer wheel or checkout)"),
    (None, "is schema version unknown (none recorded)*re-run the benchmark with this version*"),
])
def test_another_schema_version_is_one_line_saying_what_to_do(tmp_path: Path, version: int | None, says: str) -> None:
    path = tmp_path / "benchmark.json"
    path.write_text(json.dumps({"schema_version": version, "reproduce": {"plugin_version": "0.0.9"}}))
    with pytest.raises(BenchError) as caught:
        read_summary(path, "unused")
    message = str(caught.value)
    assert "\n" not in message and fnmatch.fnmatch(message, f"benchmark.json at {path} {says}")


@pytest.mark.parametrize(("part", "value"), [("comparison", []), ("gates", {"t::improves": 1}),
                                             ("fine_tuned_model", "x"), ("task_data", {"ifeval": "google/IFEval"})])
def test_a_malformed_part_is_refused_naming_it(part: str, value: object) -> None:
    with pytest.raises(BenchError, match=f'its "{part}" is not an object'):
        parse_summary({"schema_version": SCHEMA_VERSION, part: value}, "f.json")


@pytest.mark.handwritten_summaries  # an older version's files
def test_a_version_2_summary_is_read_as_the_current_version(tmp_path: Path) -> None:
    model = golden_model(tmp_path)
    file = model / "benchmarks" / "benchmark.json"
    old = json.loads(file.read_text())
    file.write_text(json.dumps({**old, "gates": {"ifeval::no_regression": "failed"}}))
    summary = read_summary(file, "unused")
    validate(summary, "benchmark")
    assert summary["gates"] == {"ifeval::no_regression": {"outcome": "failed", "threshold": None, "rule": None,
                                                          "decided_by": None, "documents": None}}
    rows = history_rows(summary_files([model]))
    assert rows and {row.task for row in rows} == {"ifeval"}
    validate(json.loads(render(rows, "json")), "history")


def test_a_version_3_summary_is_read_as_the_current_version_without_task_data() -> None:
    example = docs_example()
    del example["task_data"]
    summary = parse_summary({**example, "schema_version": 3}, "a version 3 file")
    validate(summary, "benchmark")
    assert summary["schema_version"] == SCHEMA_VERSION and "task_data" not in summary


@pytest.mark.handwritten_summaries
def test_history_skips_a_file_of_another_version_with_a_note(tmp_path: Path) -> None:
    model = golden_model(tmp_path)
    newer = model / "benchmarks" / "benchmark.json"
    newer.write_text(json.dumps({**json.loads(newer.read_text()), "schema_version": SCHEMA_VERSION + 1}))
    notes: list[str] = []
    rows = history_rows([newer], notes)
    assert rows == [] and notes == [f"skipped benchmark.json at {newer} is schema version {SCHEMA_VERSION + 1} "
                                    "(written by pytest-finetune-bench 0.1.0); "
                                    f"this plugin (0.1.0) reads versions 2 to {SCHEMA_VERSION}: upgrade "
                                    "pytest-finetune-bench to read it (install a newer wheel or checkout)"]
