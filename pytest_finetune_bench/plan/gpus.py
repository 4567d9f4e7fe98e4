"""Which GPUs a pytest-xdist worker may use: each worker its own set, through CUDA_VISIBLE_DEVICES.

The controller sees every GPU and deals them out; a worker sets CUDA_VISIBLE_DEVICES before anything
in it touches CUDA, so its lm-eval children (hf, vLLM) see only its GPUs. Nothing here schedules
work: xdist hands out the tests, the engines use the GPUs they see.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from pytest_finetune_bench import BenchError

CUDA_VISIBLE = "CUDA_VISIBLE_DEVICES"


def visible_devices() -> tuple[str, ...]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them (indices or UUIDs)."""
    shown = os.environ.get(CUDA_VISIBLE)
    if shown is not None:
        return tuple(d.strip() for d in shown.split(",") if d.strip())
    import torch

    count = int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    return tuple(str(i) for i in range(count))


def worker_devices(
    worker: int, workers: int, devices: Sequence[str], per_worker: int | None = None
) -> tuple[str, ...] | None:
    """The devices of xdist worker number `worker` (0-based) of `workers`; None when there is no GPU to pin.

    The devices are cut into consecutive sets of `per_worker` (default: as many as each of the workers
    can have, at least one). With more workers than sets, workers share the sets in turn: a worker
    that runs no benchmark needs no GPU, and the benchmark runs themselves never share a worker.
    """
    if not devices:
        if per_worker is not None:
            raise BenchError(f"--bench-gpus-per-worker {per_worker}: no CUDA GPU is visible")
        return None
    size = per_worker or max(1, len(devices) // workers)
    if size > len(devices):
        raise BenchError(f"--bench-gpus-per-worker {size}: only {len(devices)} GPUs are visible "
                         f"({','.join(devices)})")
    sets = len(devices) // size
    start = (worker % sets) * size
    return tuple(devices[start:start + size])


def worker_number(worker_id: str) -> int:
    """0 for xdist's "gw0", 3 for "gw3"."""
    digits = worker_id.removeprefix("gw")
    if not digits.isdigit():
        raise BenchError(f"{worker_id!r} is not an xdist worker id (gw0, gw1, …)")
    return int(digits)
