"""--bench-log wandb: a session's results into a Weights & Biases run (needs the `wandb` extra).

Where they go: the run this process has open, else the run `WANDB_RUN_ID` names (resumed), else a
new run in the project `WANDB_PROJECT` or one named after the model. With several experiments in
one session each gets a new run, grouped under the given run's id. wandb's own settings apply:
`WANDB_MODE=offline` keeps everything in the local run folder for a later `wandb sync`.
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

from pytest_finetune_bench.report.tracking import TABLE_COLUMNS, TrackedResults

TABLE_KEY = "bench/results"
ARTIFACT_TYPE = "benchmark"


def log_to_wandb(results: TrackedResults, several: bool) -> str:
    """Log `results`; returns where they went. `several`: one of several experiments of the session."""
    import wandb

    if wandb.run is not None and not several:
        _log(wandb, wandb.run, results)
        return f"wandb: logged into run {wandb.run.id}"
    run = _start_run(wandb, results, several)
    try:
        _log(wandb, run, results)
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()
    return f"wandb: logged into run {run.id} ({run.settings.mode})"


def _start_run(wandb: Any, results: TrackedResults, several: bool) -> Any:
    given = os.environ.get("WANDB_RUN_ID") or None
    # wandb itself reads WANDB_RUN_ID: a run of its own per experiment needs an id of its own.
    own_id = None if given is not None and not several else uuid.uuid4().hex[:12]
    return wandb.init(
        project=None if os.environ.get("WANDB_PROJECT") else results.model,
        id=own_id or given,
        resume="allow" if own_id is None else None,
        name=results.label if own_id is not None else None,
        group=given if several else None,
        job_type="benchmark",
        reinit="create_new",  # leaves a run the user has open alone
        settings=wandb.Settings(console="off"),  # pytest's terminal stays pytest's
    )


def _log(wandb: Any, run: Any, results: TrackedResults) -> None:
    run.config.update(results.params, allow_val_change=True)
    run.summary.update({**results.metrics, **results.tags})
    run.log({TABLE_KEY: wandb.Table(columns=list(TABLE_COLUMNS), data=results.rows)})
    if results.artifacts:
        artifact = wandb.Artifact(_artifact_name(results.label), type=ARTIFACT_TYPE)
        for path in results.artifacts:
            artifact.add_file(str(path))
        run.log_artifact(artifact)


def _artifact_name(label: str) -> str:
    return "benchmark-" + re.sub(r"[^A-Za-z0-9_.-]", "_", label)
