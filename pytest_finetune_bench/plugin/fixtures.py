"""The fixtures user tests take: the model under test, its backend, the base run and the comparison."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends import Backend
from pytest_finetune_bench.compare.bench_result import BenchResult
from pytest_finetune_bench.core.records import RunRecord
from pytest_finetune_bench.orchestrate.session import BenchSession
from pytest_finetune_bench.plan.models import ModelLocation
from pytest_finetune_bench.plugin.state import experiments_key
from pytest_finetune_bench.run.recovery import incomplete_reason


@pytest.fixture(scope="session")
def bench_experiment(request: pytest.FixtureRequest) -> BenchSession:
    """The benchmark of one experiment (model); with several, tests using it run once per experiment."""
    experiments = request.config.stash.get(experiments_key, None)
    if experiments is None:
        pytest.skip("benchmark fixture: needs --bench-model")
    label = getattr(request, "param", None)
    return experiments.sessions[label] if label is not None else experiments.first


def _needs(bench: BenchSession, role: str, fixture: str) -> None:
    if not bench.plan.has(role):
        pytest.skip(f"{fixture} needs the {role} model, which this session does not evaluate "
                    "(--bench-base none or --bench-only-base)")


def _or_fail(call: Callable[[], object]) -> object:
    try:
        return call()
    except BenchError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def bench_model(bench_experiment: BenchSession) -> ModelLocation:
    """The fine-tuned model under test: where it lives and which export is evaluated."""
    return bench_experiment.plan.location


@pytest.fixture(scope="session")
def bench_backend(bench_experiment: BenchSession) -> Backend:
    """The backend that runs the fine-tuned model (auto: hf for a merged model, else ollama for a GGUF)."""
    return bench_experiment.plan.backend


@pytest.fixture(scope="session")
def base_score(bench_experiment: BenchSession) -> RunRecord:
    """The base model's run (computed once per session), under the same settings as the fine-tune."""
    bench = bench_experiment
    _needs(bench, "base", "base_score")

    def complete_base() -> RunRecord:
        record = bench.run("base")
        _require_complete(record)
        return record

    return _or_fail(complete_base)  # type: ignore[return-value]


def _require_complete(*records: RunRecord) -> None:
    """Scores from part of the samples (a run timed out or crashed) must not pass a test."""
    reason = incomplete_reason(records)
    if reason:
        raise BenchError(reason)


@pytest.fixture(scope="session")
def bench_result(bench_experiment: BenchSession) -> BenchResult:
    """The fine-tuned run compared with the base: `delta(task)`, `assert_improves`, `assert_no_regression`."""
    bench = bench_experiment
    _needs(bench, "base", "bench_result")
    _needs(bench, "fine-tuned", "bench_result")

    def build() -> BenchResult:
        comparisons = bench.comparison()
        analyses = {task: analysis for task in comparisons if (analysis := bench.analysis(task)) is not None}
        _require_complete(bench.run("base"), bench.run("fine-tuned"))
        return BenchResult(bench.run("base"), bench.run("fine-tuned"), comparisons, analyses)

    return _or_fail(build)  # type: ignore[return-value]
