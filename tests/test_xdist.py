"""pytest-xdist: workers send their summary as JSON; only the controller writes benchmark.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FAST_ARGS
from tests.fake_sessions import bench_args, make_fake_model, use_fake_lm


@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
def test_xdist_worker_summary_reaches_the_controller(
    pytester: pytest.Pytester, unchanged_outputs: Path, demo_data: Path
) -> None:
    out = pytester.path / "bench-out"
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dist", "loadgroup", "--bench-model", str(unchanged_outputs), "--bench-data-dir", str(demo_data),
        "--bench-output", str(out), "--bench-suite", "test", "--bench-limit", "10", "--bench-min-gain", "0",
        *FAST_ARGS,
    )
    result.assert_outcomes(passed=2)
    summary = json.loads((out / "benchmark.json").read_text())
    assert summary["status"] == "complete"
    assert summary["comparison"]["ifeval"]["delta"] == 0.0
    result.stdout.fnmatch_lines(["*fine-tune benchmark: unchanged-smollm2 (from xdist workers)*",
                                 "Instruction-Following (IFEval)*→ No change*"])
    assert not list(pytester.path.rglob(".benchmark.json.*.tmp"))


@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
def test_gates_run_under_strict_markers_without_xdist(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project that runs `--strict-markers` and has no pytest-xdist still gets its gates (a real lm-eval run)."""
    model = make_fake_model(pytester.path / "outputs")
    use_fake_lm(monkeypatch)
    result = pytester.runpytest_subprocess(
        "--strict-markers", "-p", "no:xdist", *bench_args(model, pytester.path / "out", "--bench-min-gain=0")
    )
    result.assert_outcomes(passed=2)
    assert "xdist_group" not in result.stdout.str()


@pytest.mark.parametrize(("plugin_args", "grouped"), [(("-p", "no:xdist"), False), (("-p", "xdist"), True)])
def test_gates_join_one_xdist_group_only_when_xdist_is_active(
    pytester: pytest.Pytester, plugin_args: tuple[str, ...], grouped: bool
) -> None:
    model = make_fake_model(pytester.path / "outputs")
    pytester.makeconftest(
        "def pytest_collection_finish(session):\n"
        "    for item in session.items:\n"
        "        print('GROUP', item.nodeid, [m.args for m in item.iter_markers('xdist_group')])\n"
    )
    result = pytester.runpytest("--strict-markers", *plugin_args, "--collect-only", "-s",
                                f"--bench-model={model}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    groups = [line for line in result.stdout.lines if line.startswith("GROUP")]
    assert len(groups) == 2
    expected = "[('finetune-bench',)]" if grouped else "[]"
    assert all(line.endswith(expected) for line in groups), groups
