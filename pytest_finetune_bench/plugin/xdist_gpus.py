"""pytest-xdist: each worker gets its own GPUs (CUDA_VISIBLE_DEVICES), dealt out by the controller.

Registered by hooks.pytest_addoption as a plugin of its own, so that its pytest_configure runs first
in a worker: before the plan asks torch about CUDA and before any lm-eval child inherits the
environment. See plan/gpus.py for how the GPUs are dealt out.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.plan.gpus import CUDA_VISIBLE, visible_devices, worker_devices, worker_number
from pytest_finetune_bench.plugin.options import gpus_per_worker, read_options

WORKER_DEVICES_KEY = "finetune_bench_cuda_visible_devices"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller, before a worker starts: the GPUs that worker may use, when benchmarking on GPUs."""
    config = node.config
    options = read_options(config)
    if options is None or options.device == "cpu" or options.device == "mps":
        return
    try:
        devices = worker_devices(worker_number(node.gateway.id), int(node.workerinput["workercount"]),
                                 visible_devices(), gpus_per_worker(config))
    except BenchError as exc:
        raise pytest.UsageError(str(exc)) from None
    if devices is not None:
        node.workerinput[WORKER_DEVICES_KEY] = ",".join(devices)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """xdist worker: see only the GPUs the controller gave it (the lm-eval children inherit this)."""
    devices = getattr(config, "workerinput", {}).get(WORKER_DEVICES_KEY)
    if devices is not None:
        os.environ[CUDA_VISIBLE] = devices
