"""Real plugin sessions in a subprocess, and the check of their scores against lm-eval's own CLI."""

from __future__ import annotations

import html
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import FAST_ARGS, read_json
from tests.schema_check import validate_file

LIMIT = ("--bench-suite", "test", "--bench-limit", "10")
IFEVAL_METRICS = ("prompt_level_strict_acc,none", "inst_level_strict_acc,none",
                  "prompt_level_loose_acc,none", "inst_level_loose_acc,none")


@dataclass
class Session:
    """A finished `pytest --bench-model …` run in a subprocess."""

    proc: subprocess.CompletedProcess[str]
    output: Path

    @property
    def summary(self) -> dict[str, Any]:
        """benchmark.json, checked against the published schema."""
        validate_file(self.output / "benchmark.json")
        return read_json(self.output / "benchmark.json")


def run_bench(cwd: Path, model: Path, data: Path, *extra: str) -> Session:
    """`pytest --bench-model=model` on the offline data; `extra` options override LIMIT and FAST_ARGS."""
    output = cwd / "bench-out"
    args = ["--bench-model", str(model), "--bench-data-dir", str(data), "--bench-output", str(output)]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *args, *LIMIT, *FAST_ARGS, "-rA", *extra],
        cwd=cwd, capture_output=True, text=True, timeout=900,
    )
    return Session(proc, output)


def assert_scores_equal_the_lm_eval_cli(summary: dict[str, Any], side: str, tmp_path: Path, task: str = "ifeval",
                                        metrics: tuple[str, ...] = IFEVAL_METRICS) -> None:
    """The recorded reproduce command of `side`, run as it is with the real `lm_eval` CLI, gives the same `task`
    scores (IFEval's by default) on the same number of documents."""
    role = "base" if side == "base_model" else "fine-tuned"
    command = summary["reproduce"]["commands"][role].replace(" OUT", f" {tmp_path}")
    argv = shlex.split(command)
    # lm-eval's own CLI, run after seeding langdetect (IFEval's language checks are random otherwise).
    assert argv[:5] == ["python", "-m", "pytest_finetune_bench", "lm-eval", "run"]
    subprocess.run([sys.executable, *argv[1:]], check=True, capture_output=True, timeout=600)
    cli = read_json(next(tmp_path.rglob("results_*.json")))["results"][task]
    ours = summary[side]["results"][task]
    for metric in ("sample_len", *metrics):
        assert ours[metric] == cli[metric], metric


def assert_rebuilt_alike(output: Path) -> None:
    """The `summary` command's rebuild of `output`/benchmark.json, from the run folders alone, keeps what the
    session recorded: every comparison (each task's early stop included) and each side's wall time."""
    from pytest_finetune_bench.report.from_disk import rebuild_summary

    session = read_json(output / "benchmark.json")
    rebuilt = json.loads(json.dumps(rebuild_summary(output)[0]))  # as benchmark.json holds it
    assert rebuilt["comparison"] == session["comparison"]
    assert [rebuilt[side]["seconds"] for side in ("base_model", "fine_tuned_model")] == \
        [session[side]["seconds"] for side in ("base_model", "fine_tuned_model")]


def pytest_html_extras(report: Path) -> dict[str, list[dict[str, Any]]]:
    """Each test's extras in a self-contained pytest-html report (its data is one JSON blob in the page)."""
    blob = re.search(r'data-jsonblob="([^"]*)"', report.read_text(encoding="utf-8"))
    assert blob is not None, "no data blob in the pytest-html report"
    tests = json.loads(html.unescape(blob.group(1)))["tests"]
    return {test_id: [extra for run in runs for extra in run["extras"]] for test_id, runs in tests.items()}
