"""Tests only: vLLM's engine API as lm-eval's `vllm` model type uses it, answering with canned text.

$FAKE_VLLM_RECORD (a folder): each LLM(...) writes its keyword arguments and CUDA_VISIBLE_DEVICES there.
$FAKE_VLLM_MAX_MEMORY (a fraction): LLM(...) fails as CUDA out of memory when its gpu_memory_utilization
(vLLM's default 0.9) is above it.
$FAKE_VLLM_CRASH ("TEXT:N"): an engine whose model path contains TEXT dies (SIGKILL) after N generate calls.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPLY = "hello world, this is a short answer in lowercase."
DEFAULT_MAX_MODEL_LEN = 2048


class SamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


def TokensPrompt(prompt_token_ids: list[int]) -> dict[str, Any]:  # vLLM's name (a TypedDict there)
    return {"prompt_token_ids": prompt_token_ids}


class LLM:
    def __init__(self, **kwargs: Any) -> None:
        record = os.environ.get("FAKE_VLLM_RECORD")
        if record:
            Path(record).mkdir(parents=True, exist_ok=True)
            entry = {"kwargs": kwargs, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
            (Path(record) / f"{time.time_ns()}.json").write_text(json.dumps(entry, default=str))
        share = float(kwargs.get("gpu_memory_utilization") or 0.9)
        if share > float(os.environ.get("FAKE_VLLM_MAX_MEMORY", "1")):
            raise RuntimeError(f"CUDA out of memory (fake vLLM at gpu_memory_utilization {share})")
        config = SimpleNamespace(max_model_len=kwargs.get("max_model_len") or DEFAULT_MAX_MODEL_LEN)
        self.llm_engine = SimpleNamespace(model_config=config)
        text, _, after = os.environ.get("FAKE_VLLM_CRASH", "").rpartition(":")
        self.crash_after = int(after) if text and text in str(kwargs.get("model")) else -1
        self.calls = 0

    def generate(self, prompts: list[Any], sampling_params: Any = None, use_tqdm: bool = True,
                 lora_request: Any = None) -> list[Any]:
        if self.calls == self.crash_after:
            time.sleep(1.0)  # let lm-eval's response cache commit what came before, as a real run would have
            os.kill(os.getpid(), signal.SIGKILL)
        self.calls += 1
        return [SimpleNamespace(outputs=[SimpleNamespace(text=REPLY)]) for _ in prompts]
