"""--bench-log mlflow: a session's results into an MLflow run (needs the `mlflow` extra: mlflow-skinny).

Where they go: the active run of this process, else the run `MLFLOW_RUN_ID` names (the training
run, say), else a new run in an experiment named after the model. With several experiments in one
session each gets a new run, the given run (if any) as its parent. The tracking store is MLflow's
own choice (`MLFLOW_TRACKING_URI`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.report.tracking import TrackedResults

ARTIFACT_FOLDER = "benchmark"
# MLflow's limits on one log_batch call.
MAX_PARAMS, MAX_TAGS, MAX_METRICS = 100, 100, 1000
PARENT_TAG = "mlflow.parentRunId"
T = TypeVar("T")


def log_to_mlflow(results: TrackedResults, several: bool) -> str:
    """Log `results`; returns where they went. `several`: one of several experiments of the session."""
    from mlflow import MlflowClient

    client = MlflowClient()
    given = _given_run()
    if given is not None and not several:
        _log(client, given, results)
        return f"mlflow: logged into run {given}"
    run_id = _new_run(client, results, parent=given)
    try:
        _log(client, run_id, results)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return f"mlflow: logged into new run {run_id} ({client.tracking_uri})"


def _given_run() -> str | None:
    import mlflow

    active = mlflow.active_run()
    return active.info.run_id if active is not None else os.environ.get("MLFLOW_RUN_ID") or None


def _new_run(client: Any, results: TrackedResults, parent: str | None) -> str:
    if parent is not None:
        experiment_id = client.get_run(parent).info.experiment_id
    else:
        experiment = client.get_experiment_by_name(results.model)
        experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(results.model)
    tags = {PARENT_TAG: parent} if parent is not None else {}
    return str(client.create_run(experiment_id, run_name=results.label, tags=tags).info.run_id)


def _log(client: Any, run_id: str, results: TrackedResults) -> None:
    """Metrics, tags, the parameters the run does not hold yet, and the files; a parameter it holds with
    another value (MLflow never changes one) is an error once everything else is logged."""
    from mlflow.entities import Metric, Param, RunTag

    held = client.get_run(run_id).data.params
    stamp = int(time.time() * 1000)
    for metrics in _chunks([Metric(k, v, stamp, 0) for k, v in results.metrics.items()], MAX_METRICS):
        client.log_batch(run_id, metrics=metrics)
    for tags in _chunks([RunTag(k, v) for k, v in results.tags.items()], MAX_TAGS):
        client.log_batch(run_id, tags=tags)
    for params in _chunks([Param(k, v) for k, v in results.params.items() if k not in held], MAX_PARAMS):
        client.log_batch(run_id, params=params)
    for path in results.artifacts:
        client.log_artifact(run_id, str(path), ARTIFACT_FOLDER)
    clashes = sorted(k for k, v in results.params.items() if k in held and held[k] != v)
    if clashes:
        raise BenchError(f"run {run_id} already holds {', '.join(clashes)} with other values (an earlier benchmark "
                         "with other settings); they kept those, everything else was logged")


def _chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])
