"""The pytest plugin, registered through the `pytest11` entry point: hooks and fixtures.

This package is the only code that imports pytest: it reads the options, makes the plan, runs it
through the engine and reports what came back.
"""

from pytest_finetune_bench.plugin.fixtures import (
    base_score,
    bench_backend,
    bench_experiment,
    bench_model,
    bench_result,
)
from pytest_finetune_bench.plugin.hooks import (
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_generate_tests,
    pytest_sessionfinish,
    pytest_terminal_summary,
)

__all__ = [
    "base_score",
    "bench_backend",
    "bench_experiment",
    "bench_model",
    "bench_result",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_generate_tests",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
]
