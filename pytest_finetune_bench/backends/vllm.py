"""vLLM: lm-eval's `vllm` model type on the same merged model folder or Hub id as `hf`.

It reads the same weights as `hf` (a model folder or a pinned Hub commit), so the revision pinning,
the chat-template check and the content fingerprint are hf's. What differs is the engine: vLLM
batches continuously, splits a model over GPUs (tensor parallel) and runs copies side by side (data
parallel, through Ray). Those settings are shared by both models (core/settings.engine_model_args).
vLLM returns prompt log-likelihoods, so every task type is scored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends.hf import ADAPTER_CONFIG, HFBackend, adapter_has_tokenizer

VLLM_INSTALL = "pip install 'lm-eval[vllm]'"
RAY_INSTALL = "pip install ray"
RAY_ADDRESS = "RAY_ADDRESS"  # a Ray cluster vLLM joins (several machines)


class VLLMBackend(HFBackend):
    name = "vllm"
    lm_eval_model = "vllm"

    def preflight(self, model: str, role: str, gguf_files: Sequence[Path] = ()) -> None:
        require_vllm()
        super().preflight(model, role, gguf_files)

    def adapter_args(self, adapter: Path) -> dict[str, str]:
        """lm-eval's vllm serves a LoRA adapter beside the base weights (`lora_local_path`)."""
        args = {"lora_local_path": str(adapter), "max_lora_rank": str(lora_rank_slot(adapter_rank(adapter)))}
        if adapter_has_tokenizer(adapter):
            args["tokenizer"] = str(adapter)
        return args


# The ranks vLLM reserves LoRA slots for (its max_lora_rank must be one of them and at least the adapter's r).
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def adapter_rank(adapter: Path) -> int:
    """The adapter's rank `r` from adapter_config.json (PEFT's default, 8, when it is not written)."""
    try:
        rank = json.loads((adapter / ADAPTER_CONFIG).read_text()).get("r", 8)
    except (OSError, ValueError, AttributeError):
        raise BenchError(f"{adapter / ADAPTER_CONFIG} is not valid JSON: save the adapter again") from None
    if not isinstance(rank, int) or rank < 1:
        raise BenchError(f"{adapter / ADAPTER_CONFIG} gives the rank r={rank!r}, not a positive whole number")
    return rank


def lora_rank_slot(rank: int) -> int:
    """The smallest rank vLLM supports that holds an adapter of rank `rank`."""
    for slot in VLLM_LORA_RANKS:
        if slot >= rank:
            return slot
    raise BenchError(f"a LoRA adapter of rank {rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]}): "
                     "use --bench-backend hf")


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
