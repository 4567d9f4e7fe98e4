"""--bench-log: the results read back from a real MLflow file store and a real W&B offline run."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.plan import choices
from pytest_finetune_bench.report.mlflow_tracker import ARTIFACT_FOLDER, log_to_mlflow
from pytest_finetune_bench.report.tracking import TABLE_COLUMNS, TrackedResults, log_each, tracked_results
from pytest_finetune_bench.report.wandb_tracker import TABLE_KEY, log_to_wandb
from pytest_finetune_bench.store.benchmark_file import read_summary
from tests.fake_sessions import bench_args, make_fake_model, use_fake_lm

mlflow = pytest.importorskip("mlflow")  # the `test` extra installs mlflow-skinny and wandb
wandb = pytest.importorskip("wandb")
GOLDEN = Path(__file__).parent / "golden" / "model" / "benchmarks"


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for a database unless told
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return uri


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "wandb-home"
    folder.mkdir()
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(folder), "WANDB_SILENT": "true",
                        "WANDB_CONFIG_DIR": str(folder / "config"), "WANDB_CACHE_DIR": str(folder / "cache"),
                        "WANDB_DATA_DIR": str(folder / "data")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    wandb.teardown()  # wandb reads its environment once per process: start afresh with this test's
    yield folder
    wandb.teardown()


def golden_results(tmp_path: Path) -> tuple[dict[str, Any], TrackedResults]:
    """The recorded session's benchmark.json (and a report.html beside it), as the trackers take it."""
    output = tmp_path / "benchmarks"
    output.mkdir()
    shutil.copy(GOLDEN / "benchmark.json", output / "benchmark.json")
    (output / "report.html").write_text("<p>report</p>")
    summary = read_summary(output / "benchmark.json", "")
    return json.loads((output / "benchmark.json").read_text()), tracked_results(summary, output / "benchmark.json",
                                                                                   output)


def expected_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Each task's numbers as benchmark.json holds them."""
    expected: dict[str, float] = {}
    for task, c in summary["comparison"].items():
        expected |= {f"{task}/base": c["base_accuracy"], f"{task}/fine-tuned": c["finetuned_accuracy"],
                     f"{task}/delta": c["delta"], f"{task}/ci_low": c["stats"]["ci_low"],
                     f"{task}/ci_high": c["stats"]["ci_high"], f"{task}/p_value": c["stats"]["p_value"]}
    return expected


def check_mlflow_run(run_id: str, summary: dict[str, Any], artifacts: set[str]) -> None:
    """The run holds benchmark.json's numbers, settings, gate outcomes and files."""
    client = mlflow.MlflowClient()
    data = client.get_run(run_id).data
    assert {k: v for k, v in data.metrics.items() if "/" in k} == pytest.approx(expected_metrics(summary))
    identity = summary["reproduce"]["identity"]
    shared = identity["fine-tuned"]
    assert data.params["bench.limit"] == json.dumps(shared["limit"])
    assert data.params["bench.device"] == shared["device"]
    assert data.params["bench.tasks"] == json.dumps(shared["tasks"])
    for task, version in shared["task_versions"].items():
        assert data.params[f"bench.task_versions.{task}"] == version
    for role in ("base", "fine-tuned"):  # what differs between the sides is kept per side
        assert data.params[f"bench.{role}.model_fingerprint"] == identity[role]["model_fingerprint"]
    assert "bench.model_fingerprint" not in data.params
    gates = summary.get("gates", {})
    assert {k.removeprefix("bench.gate."): v for k, v in data.tags.items() if k.startswith("bench.gate.")} == {
        name: gate["outcome"] for name, gate in gates.items()}
    assert data.tags["bench.status"] == summary["status"]
    logged = {Path(f.path).name for f in client.list_artifacts(run_id, ARTIFACT_FOLDER)}
    assert logged == artifacts
    copy = client.download_artifacts(run_id, f"{ARTIFACT_FOLDER}/benchmark.json")
    assert json.loads(Path(copy).read_text()) == summary


def test_mlflow_gets_a_new_run_named_after_the_model(tmp_path: Path, mlflow_store: str) -> None:
    summary, results = golden_results(tmp_path)
    said = log_to_mlflow(results, several=False)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(summary["model_name"])
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_id in said and run.info.status == "FINISHED"
    check_mlflow_run(run.info.run_id, summary, {"benchmark.json", "report.html"})


def test_mlflow_logs_into_the_training_run(tmp_path: Path, mlflow_store: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    client = mlflow.MlflowClient()
    training = client.create_run(client.create_experiment("training"))
    run_id = training.info.run_id
    client.log_param(run_id, "dtype", "bfloat16")  # the training's own setting, under the same short name
    client.set_terminated(run_id)
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    summary, results = golden_results(tmp_path)
    log_to_mlflow(results, several=False)
    check_mlflow_run(run_id, summary, {"benchmark.json", "report.html"})
    assert client.get_run(run_id).data.params["dtype"] == "bfloat16"
    assert client.get_experiment_by_name(summary["model_name"]) is None  # no run made elsewhere
    log_to_mlflow(results, several=False)  # a second session with the same settings logs again
    changed = TrackedResults(**{**results.__dict__, "params": {**results.params, "bench.limit": "20"}})
    with pytest.raises(BenchError, match=r"already holds bench\.limit with other values"):
        log_to_mlflow(changed, several=False)


def test_several_experiments_get_child_runs_of_the_given_run(tmp_path: Path, mlflow_store: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    client = mlflow.MlflowClient()
    parent = client.create_run(client.create_experiment("sweep")).info
    monkeypatch.setenv("MLFLOW_RUN_ID", parent.run_id)
    summary, results = golden_results(tmp_path)
    log_to_mlflow(results, several=True)
    [child] = [r for r in client.search_runs([parent.experiment_id]) if r.info.run_id != parent.run_id]
    assert child.data.tags["mlflow.parentRunId"] == parent.run_id
    check_mlflow_run(child.info.run_id, summary, {"benchmark.json", "report.html"})


def wandb_records(run_dir: Path) -> dict[str, Any]:
    """The config and summary an offline run wrote to its .wandb file (LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    [log] = run_dir.glob("run-*.wandb")
    data = log.read_bytes()
    found: dict[str, dict[str, Any]]
    block, position, pending, found = 32768, 7, b"", {"config": {}, "summary": {}}
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]  # built at import, no stubs
            record.ParseFromString(pending)
            pending = b""
            updates = (record.run.config.update if record.HasField("run") else
                       record.config.update if record.HasField("config") else
                       record.summary.update if record.HasField("summary") else [])
            part = "summary" if record.HasField("summary") else "config"
            found[part] |= {item.key: json.loads(item.value_json) for item in updates if item.key}
    return found


def check_wandb_run(run_dir: Path, summary: dict[str, Any]) -> None:
    # wandb's service writes the run file after finish() returns; teardown waits for it, as a process's end does.
    wandb.teardown()
    records = wandb_records(run_dir)
    metrics = {k: v for k, v in records["summary"].items() if "/" in k and not k.startswith("_")}
    assert metrics == pytest.approx(expected_metrics(summary))
    shared = summary["reproduce"]["identity"]["fine-tuned"]
    assert records["config"]["bench.limit"] == json.dumps(shared["limit"])
    assert {k: v for k, v in records["summary"].items() if k.startswith("bench.gate.")} == {
        f"bench.gate.{name}": gate["outcome"] for name, gate in summary.get("gates", {}).items()}
    [table] = (run_dir / "files" / "media" / "table").glob(f"{TABLE_KEY}_*.table.json")
    content = json.loads(table.read_text())
    assert content["columns"] == list(TABLE_COLUMNS)
    rows = {row[0]: dict(zip(TABLE_COLUMNS, row, strict=True)) for row in content["data"]}
    for task, c in summary["comparison"].items():
        assert rows[task]["base"] == pytest.approx(c["base_accuracy"])
        assert rows[task]["p_value"] == pytest.approx(c["stats"]["p_value"])


def test_wandb_offline_run_holds_the_numbers(tmp_path: Path, wandb_offline: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_RUN_ID", "training1")
    summary, results = golden_results(tmp_path)
    said = log_to_wandb(results, several=False)
    assert "training1" in said and "offline" in said
    [run_dir] = (wandb_offline / "wandb").glob("offline-run-*-training1")
    check_wandb_run(run_dir, summary)


def test_wandb_without_a_given_run_starts_its_own(tmp_path: Path, wandb_offline: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    summary, results = golden_results(tmp_path)
    log_to_wandb(results, several=False)
    monkeypatch.setenv("WANDB_RUN_ID", "sweep1")  # several experiments: a run each, grouped under it
    log_to_wandb(results, several=True)
    runs = sorted((wandb_offline / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and not any(run.name.endswith("-sweep1") for run in runs)
    for run in runs:
        check_wandb_run(run, summary)


def test_a_failing_tracker_is_an_error_line_and_the_others_still_log() -> None:
    logged: list[str] = []

    def unreachable() -> None:
        raise ConnectionError("http://tracking:5000 refused the connection\nretrying would not help")

    errors = log_each({"mlflow": unreachable, "wandb": lambda: logged.append("wandb")})
    assert errors == {"tracker mlflow": "could not log to mlflow (ConnectionError: http://tracking:5000 refused "
                                        "the connection)"}
    assert logged == ["wandb"]


def test_a_missing_tracker_package_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert choices.parse_trackers(" mlflow ,mlflow") == ("mlflow",)
    with pytest.raises(BenchError, match=r"wandb is not installed: pip install wandb \(the `wandb` extra\)"):
        choices.parse_trackers("mlflow,wandb")


def test_an_unknown_tracker_is_a_usage_error_naming_its_source(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nbench_log = mlflow,neptune\n")
    result = pytester.runpytest("--bench-model=nowhere", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini option bench_log: 'neptune' is not a tracker: choose one of mlflow, wandb*"])


def fake_session(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> tuple[pytest.RunResult, Path]:
    model = make_fake_model(pytester.path)
    use_fake_lm(monkeypatch, "shout_for=merged_16bit")  # answers that differ: flips, a real interval
    output = pytester.path / "out"
    result = pytester.runpytest_subprocess(*bench_args(model, output, "--bench-min-gain=0", "--bench-max-drop=100",
                                                       "--bench-log=mlflow,wandb"))
    return result, output


@pytest.mark.slow  # starts lm-eval children (a fake model)
def test_a_session_logs_its_benchmark_json_to_both(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                   mlflow_store: str, wandb_offline: Path) -> None:
    result, output = fake_session(pytester, monkeypatch)
    result.assert_outcomes(passed=2)
    summary = json.loads((output / "benchmark.json").read_text())
    assert summary["errors"] == {}
    client = mlflow.MlflowClient()
    [run] = client.search_runs([client.get_experiment_by_name("model").experiment_id])
    flips = Path(summary["comparison"]["ifeval"]["flips"]["file"]).name
    check_mlflow_run(run.info.run_id, summary, {"benchmark.json", "report.html", flips})
    [run_dir] = (wandb_offline / "wandb").glob("offline-run-*")
    check_wandb_run(run_dir, summary)
    result.stdout.fnmatch_lines([f"mlflow: logged into new run {run.info.run_id} *", "wandb: logged into run *"])


@pytest.mark.slow  # starts lm-eval children (a fake model)
def test_an_unreachable_tracker_fails_nothing(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                              wandb_offline: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    result, output = fake_session(pytester, monkeypatch)
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    summary = json.loads((output / "benchmark.json").read_text())
    assert summary["status"] == "complete"
    assert summary["errors"]["tracker mlflow"].startswith("could not log to mlflow (")
    result.stdout.fnmatch_lines(["pytest-finetune-bench: could not log to mlflow (*", "wandb: logged into run *"])
    [run_dir] = (wandb_offline / "wandb").glob("offline-run-*")
    check_wandb_run(run_dir, {**summary, "errors": {}})
