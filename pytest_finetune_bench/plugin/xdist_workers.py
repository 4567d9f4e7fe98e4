"""pytest-xdist, all of it: each experiment's tests on one worker, the workers' summaries, their GPUs.

- Groups. An experiment's gate items and the user's tests that use its results (the `bench` marker,
  or any benchmark fixture) form one group, named by `group_name`, so its models run once, on one
  worker. Only xdist's `loadgroup` mode honours groups: with a benchmark, the default `load` (and
  `worksteal`) become `loadgroup`, which is `load` for every other test.
- xdist marks a group by appending "@<group>" to the node ids on the workers, which pytest 9.2's
  structured node ids silently drop (pytest-dev/pytest-xdist#1386), and a node id alone cannot tell
  which fixtures a test uses. So each worker also writes the group of every grouped node id into a
  folder the controller made, and the controller's scheduler groups by that (by xdist's suffix for
  any other test).
- Summaries. Workers write no files: each hands its summaries to the controller through
  `config.workeroutput`, and the controller alone writes benchmark.json and the reports.
- GPUs. The controller deals the GPUs out (plan/gpus.py); a worker sets CUDA_VISIBLE_DEVICES before
  anything in it touches CUDA, and its lm-eval children inherit it.

Registered by hooks.pytest_addoption as a plugin of its own, so that its pytest_configure runs before
the plugin's own (which makes the plan, asking torch about CUDA).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.orchestrate.experiments import Experiments
from pytest_finetune_bench.orchestrate.session import BenchSession
from pytest_finetune_bench.plan.gpus import CUDA_VISIBLE, visible_devices, worker_devices, worker_number
from pytest_finetune_bench.plugin.gate_items import BenchItem, gate_prefix
from pytest_finetune_bench.plugin.options import gpus_per_worker, read_options
from pytest_finetune_bench.plugin.state import EXPERIMENT_FIXTURE, experiment_of, experiments_key, warn
from pytest_finetune_bench.store.benchmark_file import BenchmarkSummary, parse_summary
from pytest_finetune_bench.store.files import atomic_write_json

WORKER_DEVICES_KEY = "finetune_bench_cuda_visible_devices"
WORKER_LOADGROUP_KEY = "finetune_bench_loadgroup"
WORKER_GROUPS_KEY = "finetune_bench_groups_dir"
WORKER_OUTPUT_KEY = "finetune_bench_summaries"
groups_dir_key = pytest.StashKey[Path]()
worker_summaries_key = pytest.StashKey[list[dict[str, BenchmarkSummary]]]()
# xdist modes that may split one group's items over workers; "each" runs every item on every worker.
_SPLITTING_MODES = ("load", "worksteal")
# xdist reads a group after the last "@" of a node id, and none at all after a "]": a label such as
# outputs/x@hf is escaped, reversibly, so that no two experiments share a group.
_GROUP_ESCAPES = str.maketrans({"%": "%25", "@": "%40", "[": "%5B", "]": "%5D"})


def group_name(label: str) -> str:
    """The xdist group of the experiment whose gate ids begin with `label` (see gate_items.gate_prefix)."""
    return label.translate(_GROUP_ESCAPES)


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Worker: see only the GPUs the controller gave it. Controller: keep each benchmark on one worker."""
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
    config.stash[groups_dir_key] = Path(tempfile.mkdtemp(prefix="finetune-bench-groups-"))


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(groups_dir_key, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller, before a worker starts: where it writes its groups, and its GPUs when on GPUs."""
    config = node.config
    options = read_options(config)
    if options is None:
        return
    node.workerinput[WORKER_LOADGROUP_KEY] = config.option.dist == "loadgroup"
    folder = config.stash.get(groups_dir_key, None)
    if folder is not None:
        node.workerinput[WORKER_GROUPS_KEY] = str(folder)
    if options.device in ("cpu", "mps") or options.device.startswith("cuda:"):
        return  # no GPU, or one the user named by its index, which a pinned worker would number differently
    try:
        devices = worker_devices(worker_number(node.gateway.id), int(node.workerinput["workercount"]),
                                 visible_devices(), gpus_per_worker(config))
    except BenchError as exc:
        raise pytest.UsageError(str(exc)) from None
    if devices is not None:
        node.workerinput[WORKER_DEVICES_KEY] = ",".join(devices)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the gates, and the user's tests that use their results, in their experiment's xdist group.

    Not `tryfirst`: the gates are added by hooks.pytest_collection_modifyitems, which is. Only when
    pytest-xdist is active: it registers the marker, and without it `--strict-markers` (which many
    projects use) rejects an unknown one.
    """
    experiments = config.stash.get(experiments_key, None)
    if experiments is None or not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        group = item_group(item, experiments)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def item_group(item: pytest.Item, experiments: Experiments) -> str | None:
    """The group of a gate, or of a test of the user's that uses the benchmark; None for any other test."""
    bench: BenchSession | None = item.bench if isinstance(item, BenchItem) else None
    if bench is None:
        if item.get_closest_marker("bench") is None and EXPERIMENT_FIXTURE not in getattr(item, "fixturenames", ()):
            return None
        bench = experiment_of(item, experiments)
    return group_name(gate_prefix(bench, experiments.several))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Worker, before it sends its node ids to the controller: the group of each grouped one, for the scheduler."""
    workerinput = getattr(session.config, "workerinput", {})
    folder = workerinput.get(WORKER_GROUPS_KEY)
    experiments = session.config.stash.get(experiments_key, None)
    if folder is None or experiments is None:
        return
    groups = {item.nodeid: group for item in session.items if (group := item_group(item, experiments)) is not None}
    atomic_write_json(Path(folder) / f"{workerinput['workerid']}.json", groups, private=True)


def collected_groups(folder: Path) -> dict[str, str]:
    """{node id: group} as the workers wrote them (each collected the same tests)."""
    groups: dict[str, str] = {}
    for file in sorted(folder.glob("*.json")):
        written = json.loads(file.read_text(encoding="utf-8"))
        if isinstance(written, dict):
            groups.update({str(nodeid): str(group) for nodeid, group in written.items()})
    return groups


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist controller: `loadgroup` that groups the benchmark's tests as the workers found them."""
    found = config.stash.get(groups_dir_key, None)
    if config.getvalue("dist") != "loadgroup" or found is None:
        return None
    folder: Path = found
    from xdist.scheduler import LoadGroupScheduling

    groups: dict[str, str] = {}

    class BenchGroupScheduling(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            # Called once every worker has collected, so every worker has written its groups.
            if not groups:
                groups.update(collected_groups(folder))
            return groups.get(nodeid) or str(super()._split_scope(nodeid))

    return BenchGroupScheduling(config, log)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Worker: hand this worker's summaries (plain JSON) to the controller, which alone writes files."""
    experiments = session.config.stash.get(experiments_key, None)
    if experiments is None or not hasattr(session.config, "workeroutput"):
        return
    summaries = {bench.plan.label: bench.summary() for bench in experiments if bench.active}
    if summaries:
        session.config.workeroutput[WORKER_OUTPUT_KEY] = json.dumps(summaries, default=str)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: keep each worker's benchmark summaries (plain JSON) for writing and the table."""
    raw = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
    if raw:
        try:
            parsed = {label: parse_summary(summary, f"an xdist worker's summary of {label}")
                      for label, summary in json.loads(raw).items()}
        except BenchError as exc:  # the same version wrote it: only a broken worker gets here
            warn(node.config, f"pytest-finetune-bench: {exc}")
            return
        node.config.stash.setdefault(worker_summaries_key, []).append(parsed)


def worker_summary(config: pytest.Config, label: str) -> BenchmarkSummary | None:
    """The summary a worker made of experiment `label`: a complete one when any worker has it."""
    summaries = [by_label[label] for by_label in config.stash.get(worker_summaries_key, []) if label in by_label]
    complete = [s for s in summaries if s.get("status") == "complete"]
    best = complete or summaries
    return best[0] if best else None
