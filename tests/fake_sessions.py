"""Helpers for sessions that run the fake lm-eval model of tests/fake_lm.py in the benchmark child."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_finetune_bench.demo import demo_data_dir
from tests.fake_backend import FAKE_ENV
from tests.models import share_task_index

REPO_ROOT = Path(__file__).resolve().parent.parent
LIMIT = 10  # IFEval prompts per run


def make_fake_model(root: Path, name: str = "model") -> Path:
    """outputs/<name>/ in the pipeline layout: merged_16bit/ and lora/adapter_config.json naming base/.

    The two config.json files differ, so the two models get different response caches.
    """
    model = root / name
    (model / "merged_16bit").mkdir(parents=True)
    (model / "merged_16bit" / "config.json").write_text(json.dumps({"name": f"{name}-fine-tuned"}))
    base = root / f"{name}-base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"name": f"{name}-base"}))
    (model / "lora").mkdir()
    (model / "lora" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    return model


def use_fake_lm(monkeypatch: pytest.MonkeyPatch, options: str = "") -> None:
    """Make fake sessions (bench_args) run the fake model with `options` (see tests/fake_lm.py)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv(FAKE_ENV, options)


def bench_args(model: Path, output: Path, *extra: str) -> list[str]:
    """Arguments of a fake session; values joined with '=' so pytest does not take them for rootdir hints."""
    return [
        f"--bench-model={model}", f"--bench-data-dir={demo_data_dir()}", f"--bench-output={output}",
        "--bench-device=cpu", f"--bench-limit={LIMIT}", "--bench-batch-size=4", "-p", "no:cacheprovider", "-rA",
        "-p", "tests.fake_backend", "--bench-backend=fake",
        # The caches live in the test's folder: another test's base scores are never reused.
        f"--bench-cache-dir={own_cache_dir(output.parent / 'base-cache')}",
        *extra,
    ]


def own_cache_dir(folder: Path) -> Path:
    """`folder` as a session's cache folder of its own, holding a link to the test run's lm-eval task index.

    Every cache follows --bench-cache-dir, the task index too; linking the one the test run built (in
    $PYTEST_FINETUNE_BENCH_CACHE) spares each session indexing lm-eval's ~15,000 task files again.
    """
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    share_task_index(folder)
    return folder


def read_summary(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
