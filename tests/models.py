"""Real models for the tests, built once and cached on disk across test sessions."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from pytest_finetune_bench.demo.smollm2 import base_model_dir
from pytest_finetune_bench.plan.tasks import INDEX_CACHE_DIR, load_task_index
from pytest_finetune_bench.store.files import bench_cache_dir


def test_cache_root() -> Path:
    """Where converted and perturbed models live between test runs (PYTEST_FINETUNE_BENCH_TEST_CACHE)."""
    env = os.environ.get("PYTEST_FINETUNE_BENCH_TEST_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "pytest-finetune-bench" / "test-cache"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def built_once(cache: Path, name: str) -> Iterator[None]:
    """Hold the test cache's lock on model `name` while it is looked up or built: under pytest-xdist each
    worker sets up the session fixtures, and a worker that finds the model being built waits for it
    instead of building it again (the demo's LoRA takes minutes)."""
    with FileLock(cache / f".{name}.lock"):
        yield


def smollm2_base(cache: Path) -> Path:
    return base_model_dir(cache / "models")


def perturbed_outputs(cache: Path, name: str, base: Path, scale: float, seed: int = 0) -> Path:
    """An outputs/<name>/ folder in the pipeline layout whose merged model is the base plus noise.

    `scale` is relative to each weight matrix's standard deviation: large values force a regression.
    Built in a temporary sibling and renamed, so an interrupted build is never reused.
    """
    root = cache / "outputs" / name
    if (root / "lora" / "adapter_config.json").is_file():
        return root
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param.ndim == 2 and "embed" not in param_name:
                param.add_(torch.randn(param.shape, generator=generator) * param.std() * scale)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root.parent))
    model.save_pretrained(staging / "merged_16bit")
    AutoTokenizer.from_pretrained(base).save_pretrained(staging / "merged_16bit")
    (staging / "lora").mkdir()
    adapter = {"base_model_name_or_path": str(base), "peft_type": "LORA", "r": 16}
    (staging / "lora" / "adapter_config.json").write_text(json.dumps(adapter))
    (staging / "lora" / "training_metrics.json").write_text(json.dumps({"model_name": str(base)}))
    try:
        staging.rename(root)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def share_task_index(cache: Path) -> None:
    """Give the cache folder `cache` (a test's own PYTEST_FINETUNE_BENCH_CACHE) this test session's index of
    lm-eval's tasks: every session on an empty cache folder would index lm-eval's ~15,000 task files again
    (10 to 20 s on two busy cores) before it benchmarks anything."""
    if not any((bench_cache_dir() / INDEX_CACHE_DIR).glob("*.jsonl")):
        load_task_index(bench_cache_dir())  # indexes once into the session's cache folder
    link_task_index(bench_cache_dir(), cache)


def link_task_index(source: Path, target: Path) -> None:
    """Hard-link the cached task indexes of cache folder `source` into cache folder `target` (kept private,
    as the plugin requires of a cache folder); an index `target` has already is left alone."""
    folder = target / INDEX_CACHE_DIR
    for index in (source / INDEX_CACHE_DIR).glob("*.jsonl"):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.link(index, folder / index.name)
        except FileExistsError:
            continue
        except OSError:  # another file system: a copy costs a few milliseconds more
            shutil.copy2(index, folder / index.name)
