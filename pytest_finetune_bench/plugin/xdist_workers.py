"""pytest-xdist: every model run on one worker only, and each worker on its own GPUs.

- The benchmark's gate items share one `xdist_group`, and so do the user's tests that use its results
  (the `bench` marker, the `base_score` and `bench_result` fixtures). Only xdist's `loadgroup` mode
  honours groups: the default `load` (and `worksteal`) would hand them to several workers, each of which
  would run the models again. With a benchmark, those modes become `loadgroup`, which is `load` for
  every other test. Workers learn it from the controller: they parse only the command line.
- xdist groups by a suffix it appends to node ids on the workers, which pytest 9.2's structured node
  ids silently drop (pytest-dev/pytest-xdist#1386): the gates are then recognised by their own node
  ids (`finetune-bench::…`), so they stay on one worker whatever the versions.
- The controller deals the GPUs out (plan/gpus.py); a worker sets CUDA_VISIBLE_DEVICES before anything
  in it touches CUDA, and its lm-eval children inherit it.

Registered by hooks.pytest_addoption as a plugin of its own, so that its pytest_configure runs before
the plugin's own (which makes the plan, asking torch about CUDA).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.orchestrate.experiments import Experiments
from pytest_finetune_bench.plan.gpus import CUDA_VISIBLE, visible_devices, worker_devices, worker_number
from pytest_finetune_bench.plugin.gate_items import gate_prefix
from pytest_finetune_bench.plugin.hooks import experiments_key
from pytest_finetune_bench.plugin.options import gpus_per_worker, read_options

WORKER_DEVICES_KEY = "finetune_bench_cuda_visible_devices"
WORKER_LOADGROUP_KEY = "finetune_bench_loadgroup"
# Fixtures that start the model runs: a test using one runs with the gates, on their worker.
RUN_FIXTURES = frozenset({"base_score", "bench_result"})
# xdist modes that may split one group's items over workers; "each" runs every item on every worker.
_SPLITTING_MODES = ("load", "worksteal")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller, before a worker starts: the GPUs that worker may use, when benchmarking on GPUs."""
    config = node.config
    options = read_options(config)
    if options is None:
        return
    node.workerinput[WORKER_LOADGROUP_KEY] = config.option.dist == "loadgroup"
    if options.device in ("cpu", "mps") or options.device.startswith("cuda:"):
        return  # no GPU, or one the user named by its index, which a pinned worker would number differently
    try:
        devices = worker_devices(worker_number(node.gateway.id), int(node.workerinput["workercount"]),
                                 visible_devices(), gpus_per_worker(config))
    except BenchError as exc:
        raise pytest.UsageError(str(exc)) from None
    if devices is not None:
        node.workerinput[WORKER_DEVICES_KEY] = ",".join(devices)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Worker: see only the GPUs the controller gave it. Controller: keep the benchmark on one worker."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        devices = workerinput.get(WORKER_DEVICES_KEY)
        if devices is not None:
            os.environ[CUDA_VISIBLE] = devices
        if workerinput.get(WORKER_LOADGROUP_KEY):
            # xdist's worker adds the group to each item's id (what the controller groups by) on this option.
            config.option.loadgroup = True
        return
    dist = getattr(config.option, "dist", "no")
    if dist == "no" or read_options(config) is None:
        return
    if dist == "each":
        raise pytest.UsageError("--dist each runs every benchmark on every worker, each evaluating the models "
                                "again: use -n N with the default --dist load (or loadgroup)")
    if dist in _SPLITTING_MODES:
        # Set before xdist starts its workers and its scheduler, which both read it.
        config.option.dist = "loadgroup"


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist controller: `loadgroup` that also keeps each experiment's gates together by their node ids."""
    experiments = config.stash.get(experiments_key, None)
    if config.getvalue("dist") != "loadgroup" or experiments is None:
        return None
    from xdist.scheduler import LoadGroupScheduling

    groups = experiment_groups(experiments)

    class BenchGroupScheduling(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid, groups) or str(super()._split_scope(nodeid))

    return BenchGroupScheduling(config, log)


def experiment_groups(experiments: Experiments) -> tuple[str, ...]:
    """One xdist group per experiment, named as its gates' ids begin (`finetune-bench`, or its label)."""
    return tuple(gate_prefix(bench, experiments.several) for bench in experiments)


def group_of(nodeid: str, groups: tuple[str, ...]) -> str | None:
    """The experiment a test belongs to: a gate by its first id part, a test of yours by its parameter.

    With several experiments, tests using the benchmark fixtures are parametrized by experiment
    (`test_x[outputs/exp-a]`, or `test_x[outputs/exp-a-3]` with other parameters), so their runs
    stay on the worker of that experiment's gates.
    """
    first = nodeid.split("::", 1)[0]
    if first in groups:
        return first
    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    params = nodeid[nodeid.index("[") + 1:-1]
    for group in sorted(groups, key=len, reverse=True):  # outputs/exp-a-2 before outputs/exp-a
        if params == group or params.startswith(f"{group}-") or params.endswith(f"-{group}") or f"-{group}-" in params:
            return group
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the user's tests that use the benchmark's results in their experiment's xdist group."""
    experiments = config.stash.get(experiments_key, None)
    if not hasattr(config, "workerinput") or experiments is None:
        return
    groups = experiment_groups(experiments)
    for item in items:
        if item.get_closest_marker("bench") is not None or RUN_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group(group_of(item.nodeid, groups) or groups[0]))
