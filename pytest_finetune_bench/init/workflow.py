"""The GitHub Actions job `init` writes on request: the configured benchmark, as a gate on every push."""

from __future__ import annotations

import shlex
from pathlib import Path

WORKFLOW = Path(".github") / "workflows" / "bench.yml"
# Where the job finds the plugin, named as `python -m build` names its wheels.
WHEEL = "wheels/pytest_finetune_bench-*-py3-none-any.whl"

_TEMPLATE = """\
# Written by `pytest-finetune-bench init`. Benchmarks the fine-tunes against their base models with
# the bench_* settings in {config}, and fails when a gate fails (docs/configuration.md has every key).
name: fine-tune benchmark

on:
  workflow_dispatch:
  push:

jobs:
  bench:
    # {runner_note}
    runs-on: {runner}
    timeout-minutes: 300
    env:
      # The base model's scores are kept between jobs (the cache step): each job evaluates only the fine-tunes.
      PYTEST_FINETUNE_BENCH_CACHE: ${{{{ github.workspace }}}}/.bench-cache
    steps:
      - uses: actions/checkout@v4

      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"

      # pytest-finetune-bench is not on PyPI: commit to wheels/ the wheel `python -m build` writes in a checkout
      # of it (and install first the torch build that matches the runner, where the default one does not).
      - name: Install
        run: python -m pip install {wheel}

      - name: Restore the base-model scores
        uses: actions/cache@v4
        with:
          path: .bench-cache
          key: bench-base-${{{{ github.run_id }}}}
          restore-keys: bench-base-

      # Models are seldom committed: put the step that trains or downloads them before this one.
      - name: Check the models are here
        run: |
{checks}

      - name: Benchmark
        run: python -m {command} --junitxml=bench-report/junit.xml --bench-json=bench-report/benchmark.json -rA

      - name: Upload the results
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: benchmarks
          path: |
{results}
            bench-report/
"""


def workflow_text(command: list[str], models: list[str], config: str, gpu: bool) -> str:
    """The workflow file for the pytest `command` (argv, starting with pytest) over `models`."""
    checks = "\n".join(f"          test -d {shlex.quote(m)} || "
                       f"{{ echo '::error::{m} is missing: add the step that makes it'; exit 1; }}" for m in models)
    results = "\n".join(f"            {m}/benchmarks/" for m in models)
    runner, note = (("[self-hosted, gpu]", "A runner with a GPU: this suite takes hours per model on a CPU.") if gpu
                    else ("ubuntu-latest", "The test suite fits a CPU runner; other suites want a GPU runner."))
    return _TEMPLATE.format(config=config, runner=runner, runner_note=note, checks=checks, results=results,
                            wheel=WHEEL, command=shlex.join(command))
