"""What the plugin keeps on pytest's config, shared by the hooks, the fixtures and the xdist module."""

from __future__ import annotations

import sys

import pytest

from pytest_finetune_bench.orchestrate.experiments import Experiments
from pytest_finetune_bench.orchestrate.session import BenchSession
from pytest_finetune_bench.text import printable

experiments_key = pytest.StashKey[Experiments]()
# The fixture every benchmark fixture depends on; with several experiments it is parametrized by their labels.
EXPERIMENT_FIXTURE = "bench_experiment"


def experiment_of(item: pytest.Item, experiments: Experiments) -> BenchSession:
    """The experiment a test is parametrized with (fixture `bench_experiment`), else the first."""
    callspec = getattr(item, "callspec", None)
    label = callspec.params.get(EXPERIMENT_FIXTURE) if callspec is not None else None
    return experiments.sessions.get(str(label), experiments.first)


def warn(config: pytest.Config, message: str) -> None:
    """A line in red on the terminal (stderr without one): for outputs that could not be written or read."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(printable(message, keep="\n"), red=True)
    else:
        print(printable(message, keep="\n"), file=sys.stderr)
