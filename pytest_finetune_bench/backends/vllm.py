"""vLLM: lm-eval's `vllm` model type on the same merged model folder or Hub id as `hf`.

It reads the same weights as `hf` (a model folder or a pinned Hub commit), so the revision pinning,
the chat-template check and the content fingerprint are hf's. What differs is the engine: vLLM
batches continuously, splits a model over GPUs (tensor parallel) and runs copies side by side (data
parallel, through Ray). Those settings are shared by both models (plan/settings.engine_model_args).
vLLM returns prompt log-likelihoods, so every task type is scored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends.hf import HFBackend

VLLM_INSTALL = "pip install 'lm-eval[vllm]'"
RAY_INSTALL = "pip install ray"
RAY_ADDRESS = "RAY_ADDRESS"  # a Ray cluster vLLM joins (several machines)


class VLLMBackend(HFBackend):
    name = "vllm"
    lm_eval_model = "vllm"

    def preflight(self, model: str, role: str, gguf_files: Sequence[Path] = ()) -> None:
        require_vllm()
        super().preflight(model, role, gguf_files)


def require_vllm() -> None:
    """One-line BenchError unless vLLM is importable and a CUDA GPU is visible."""
    if find_spec("vllm") is None:
        raise BenchError(f"the vllm backend needs vLLM, which is not installed: run `{VLLM_INSTALL}` "
                         "(on a machine with an NVIDIA GPU), or use --bench-backend hf")
    if visible_gpus() == 0:
        shown = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={shown!r})" if shown is not None else ""
        raise BenchError(f"the vllm backend needs a CUDA GPU and none is visible{hint}: "
                         "run on a GPU machine, or use --bench-backend hf")


def visible_gpus() -> int:
    """CUDA devices this process can use (0 without CUDA)."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def check_gpu_count(tensor_parallel: int, data_parallel: int, num_gpus: int) -> None:
    """vLLM needs tensor_parallel × data_parallel GPUs, and Ray for more than one copy.

    With RAY_ADDRESS set, vLLM runs on that Ray cluster, whose GPUs may be on other machines: this
    machine's count says nothing then, and vLLM reports a cluster too small for the model itself.
    """
    wanted = tensor_parallel * data_parallel
    if wanted > num_gpus and not os.environ.get(RAY_ADDRESS):
        raise BenchError(f"--bench-tensor-parallel {tensor_parallel} × --bench-data-parallel {data_parallel} needs "
                         f"{wanted} GPUs and {num_gpus} are visible: lower them, or set CUDA_VISIBLE_DEVICES "
                         f"(or {RAY_ADDRESS} for a Ray cluster of several machines)")
    if data_parallel > 1 and find_spec("ray") is None:
        raise BenchError(f"--bench-data-parallel {data_parallel} runs vLLM copies through Ray, which is not "
                         f"installed: run `{RAY_INSTALL}`")
