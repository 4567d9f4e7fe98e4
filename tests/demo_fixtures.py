"""The embedded demo model (a real CPU LoRA fine-tune of SmolLM2), built once and cached on disk."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_finetune_bench.demo.build import build_demo, prepare_base
from tests.models import built_once


def _say(line: str) -> None:
    # Past pytest's capture: the first build takes minutes and should not look like a hang.
    print(line, file=sys.__stderr__, flush=True)


def demo_outputs(cache_root: Path) -> Path:
    """`<cache_root>/outputs/demo-smollm2`, built on first use against the cache's own converted base."""
    with built_once(cache_root, "base"):
        base = prepare_base(cache_root / "models", _say)
    return build_demo(cache_root / "outputs", say=_say, base=base)


@pytest.fixture(scope="session")
def demo_model(cache_root: Path) -> Path:
    """outputs/demo-smollm2 (lora/, merged_16bit/), as `python -m pytest_finetune_bench demo` makes it."""
    with built_once(cache_root, "demo"):
        return demo_outputs(cache_root)
