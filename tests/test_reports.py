"""Results people read: `summary` from disk, model cards, the chart, report.html and CI outputs.

One fake session (tests/fake_lm.py, seconds) writes a real benchmark.json, flips and lm-eval samples
files; the fine-tuned fake answers in capitals, so IFEval has prompts flipping both ways.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_finetune_bench import cli
from tests.fake_backend import FAKE_ENV
from tests.fake_sessions import REPO_ROOT, bench_args, make_fake_model, read_summary

COMMANDS = ("summary",)


@dataclass(frozen=True)
class FakeRun:
    """A finished fake session: the model folder, its benchmarks folder and the session's output."""

    model: Path
    output: Path
    stdout: str

    @property
    def summary(self) -> dict[str, Any]:
        return read_summary(self.output / "benchmark.json")


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> FakeRun:
    """One fake session whose fine-tuned model answers in capitals (flips both ways)."""
    root = tmp_path_factory.mktemp("reports")
    model = make_fake_model(root)
    output = model / "benchmarks"
    env = {**os.environ, FAKE_ENV: "shout_for=merged_16bit",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    args = bench_args(model, output, "--bench-min-gain=0", "--bench-max-drop=100")
    done = subprocess.run([sys.executable, "-m", "pytest", str(model), *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return FakeRun(model, output, done.stdout)


def _copy(run: FakeRun, tmp_path: Path) -> Path:
    """A private copy of the run's model folder (the paths recorded inside still point at the original)."""
    target = tmp_path / run.model.name
    shutil.copytree(run.model, target)
    return target


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "pytest_finetune_bench", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_the_fake_session_flips_prompts_both_ways(fake_run: FakeRun) -> None:
    flips = fake_run.summary["comparison"]["ifeval"]["flips"]
    assert flips["regressed"] > 0 and flips["improved"] > 0


def test_summary_reproduces_the_sessions_benchmark_json(fake_run: FakeRun) -> None:
    written = fake_run.summary
    (fake_run.output / "benchmark.json").unlink()
    try:
        done = run_cli("summary", str(fake_run.model))
        assert done.returncode == 0, done.stderr
        assert fake_run.summary == written
    finally:
        (fake_run.output / "benchmark.json").write_text(json.dumps(written, indent=2))
    run_dir = Path(written["fine_tuned_model"]["benchmark_dir"])
    assert f"fine-tuned run: {run_dir}" in done.stdout
    assert f"base results: {written['base_model']['results_file']}" in done.stdout


def test_summary_skips_empty_and_failed_newer_runs(fake_run: FakeRun, tmp_path: Path) -> None:
    model = _copy(fake_run, tmp_path)
    runs = model / "benchmarks" / "fine-tuned"
    good = fake_run.summary["fine_tuned_model"]["benchmark_dir"]
    (runs / "2999-01-01T00-00-00").mkdir()  # left by a killed session
    failed = runs / "2999-01-01T00-00-01"
    failed.mkdir()
    (failed / "benchmark.json").write_text(json.dumps({**fake_run.summary, "status": "timeout"}))
    (model / "benchmarks" / "benchmark.json").unlink()
    done = run_cli("summary", str(model))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"fine-tuned run: {runs / Path(good).name}"
    assert read_summary(model / "benchmarks" / "benchmark.json")["status"] == "complete"


def test_summary_without_a_complete_run_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "benchmarks" / "fine-tuned" / "2024-01-01T00-00-00").mkdir(parents=True)
    done = run_cli("summary", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"python -m pytest_finetune_bench: error: no complete run in {tmp_path / 'benchmarks' / 'fine-tuned'} "
        "(empty, failed and partial runs are skipped): run the benchmark to the end first"]


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_without_results_say_where_they_looked(command: str, tmp_path: Path) -> None:
    done = run_cli(command, str(tmp_path))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert f"no benchmark results in {tmp_path / 'benchmarks'}: run `pytest --bench-model" in done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m pytest_finetune_bench {command}") and "--output DIR" in out


def test_the_console_script_has_the_same_commands(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    entry = '\npytest-finetune-bench = "pytest_finetune_bench.cli:script"\n'
    assert entry in (REPO_ROOT / "pyproject.toml").read_text()
    monkeypatch.setattr(sys, "argv", ["pytest-finetune-bench", "summary", "--help"])
    with pytest.raises(SystemExit):
        cli.script()
    assert capsys.readouterr().out.startswith("usage: pytest-finetune-bench summary")
