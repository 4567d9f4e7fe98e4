"""pytest-xdist: workers send their summary as JSON; only the controller writes benchmark.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FAST_ARGS


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
