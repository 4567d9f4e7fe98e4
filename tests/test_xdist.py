"""pytest-xdist: workers send their summary as JSON; only the controller writes benchmark.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_finetune_bench.plugin.xdist_workers import group_name
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


# A user test of the benchmark's results; it says which worker ran it (the gates say so in -v's output).
USER_TEST = """
def test_uses_the_benchmark(bench_result, bench_model):
    assert bench_model.name == "model"
    assert bench_result.delta("ifeval") is not None
"""
RESULT_LINE = re.compile(r"^\[(gw\d+)\] \[\s*\d+%\] PASSED (\S+)")


@pytest.mark.slow  # starts lm-eval children (a fake model) in two xdist workers
@pytest.mark.parametrize("backends", ["fake", "fake,fake-twin"])
def test_each_model_runs_once_on_the_worker_of_its_gates(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, backends: str
) -> None:
    """`-n 2 --dist loadgroup`: a user test of the results runs with its experiment's gates; no model runs twice.

    With two backends the experiments are labelled `<model>@fake` and `<model>@fake-twin`, and xdist
    cuts a group name at its last "@". With one, the user's test is not parametrized by experiment,
    so its node id alone does not say that it belongs with the gates.
    """
    model = make_fake_model(pytester.path / "outputs")
    started = pytester.path / "started"
    use_fake_lm(monkeypatch, f"pid_dir={started}")
    pytester.makepyfile(test_user=USER_TEST)
    args = [a for a in bench_args(model, pytester.path / "out", "--bench-min-gain=0") if a != "--bench-backend=fake"]
    result = pytester.runpytest_subprocess(*args, f"--bench-backend={backends}", "-n", "2", "--dist", "loadgroup",
                                           "-v")
    labels = [str(model)] if "," not in backends else [f"{model}@{b}" for b in backends.split(",")]
    result.assert_outcomes(passed=3 * len(labels))
    # Each child writes the model it evaluates: the fine-tune once per backend, the shared base once.
    models = sorted(path.read_text() for path in started.iterdir())
    base = str(pytester.path / "outputs" / "model-base")
    assert models == sorted([base, *[str(model / "merged_16bit")] * len(labels)]), models
    workers: dict[str, set[str]] = {label: set() for label in labels}
    for line in result.stdout.lines:
        found = RESULT_LINE.match(line)
        if found is None:
            continue
        worker, nodeid = found.groups()
        if nodeid.startswith("test_user.py::"):
            label = nodeid[nodeid.index("[") + 1:-1] if "[" in nodeid else labels[0]
        else:
            label = labels[0] if len(labels) == 1 else nodeid.split("::", 1)[0]
        workers[label].add(worker)
    assert all(len(ran_on) == 1 for ran_on in workers.values()), workers


def test_an_experiment_group_is_read_back_whole_by_xdist() -> None:
    """xdist takes a test's group after the last "@" of `<node id>@<group>`, and none after a "]"."""
    from xdist.scheduler import LoadGroupScheduling

    labels = ["outputs/x@hf", "outputs/x%40hf", "outputs/x+hf", "outputs/exp[1]", "finetune-bench"]
    groups = [group_name(label) for label in labels]
    assert len(set(groups)) == len(labels)
    for label, group in zip(labels, groups, strict=True):
        for nodeid in (f"{label}::ifeval::improves", f"test_user.py::test_x[{label}]"):
            assert LoadGroupScheduling._split_scope(None, f"{nodeid}@{group}") == group
