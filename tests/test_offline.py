"""Offline task data: overlays of lm-eval's own task configs, checked against lm-eval's real index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.plan.offline import LeafTask, expand_tasks
from pytest_finetune_bench.plan.task_data import TaskData, task_data
from pytest_finetune_bench.plan.tasks import TaskCatalog
from pytest_finetune_bench.store.files import bench_cache_dir
from tests import data_check
from tests.data_check import lm_eval_config
from tests.test_metrics import entry


@pytest.fixture(scope="module")
def catalog() -> TaskCatalog:
    return TaskCatalog(bench_cache_dir())


def test_bundled_demo_data_is_valid_for_lm_eval() -> None:
    assert data_check.main() == 0


def test_overlay_includes_lm_evals_config_and_points_at_local_files(
    catalog: TaskCatalog, demo_data: Path, tmp_path: Path
) -> None:
    hashes = catalog.prepare_offline(["ifeval", "gsm8k"], demo_data, tmp_path, None)
    ifeval = json.loads((tmp_path / "ifeval.yaml").read_text())
    assert ifeval["include"].endswith("lm_eval/tasks/ifeval/ifeval.yaml")
    assert ifeval["dataset_path"] == "json"
    assert ifeval["dataset_kwargs"]["data_files"] == {"train": str(demo_data.resolve() / "ifeval" / "train.jsonl")}
    gsm8k = json.loads((tmp_path / "gsm8k.yaml").read_text())
    # 5-shot by default: the few-shot split must be local too.
    assert set(gsm8k["dataset_kwargs"]["data_files"]) == {"test", "train"}
    assert len(hashes) == 3


def test_group_tasks_are_expanded_and_the_group_reregistered(
    catalog: TaskCatalog, demo_data: Path, tmp_path: Path
) -> None:
    catalog.prepare_offline(["mmlu"], demo_data, tmp_path, None)
    subjects = sorted(p.stem for p in tmp_path.glob("mmlu_*.yaml") if not p.stem.startswith("mmlu_st"))
    assert "mmlu_anatomy" in subjects
    assert (tmp_path / "mmlu.yaml").is_file()
    anatomy = json.loads((tmp_path / "mmlu_anatomy.yaml").read_text())
    assert anatomy["dataset_kwargs"]["data_files"]["test"].endswith("mmlu/anatomy/test.jsonl")
    # Zero-shot by default: MMLU's dev split is not needed and must not be looked up.
    assert anatomy["fewshot_split"] is None


def test_missing_task_data_names_the_expected_path(catalog: TaskCatalog, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(BenchError, match=r"no data for task 'ifeval': expected .*data/ifeval/train.jsonl"):
        catalog.prepare_offline(["ifeval"], tmp_path / "data", tmp_path / "overlay", None)


def test_missing_fewshot_split_is_named(catalog: TaskCatalog, demo_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data" / "gsm8k"
    data.mkdir(parents=True)
    (data / "test.jsonl").write_text((demo_data / "gsm8k" / "test.jsonl").read_text())
    with pytest.raises(BenchError, match=r"task 'gsm8k' needs .*gsm8k/train.jsonl"):
        catalog.prepare_offline(["gsm8k"], tmp_path / "data", tmp_path / "overlay", None)
    catalog.prepare_offline(["gsm8k"], tmp_path / "data", tmp_path / "overlay", 0)  # zero-shot needs no train


def test_unknown_task_suggests_close_matches(catalog: TaskCatalog) -> None:
    with pytest.raises(BenchError, match=r"unknown lm-eval task 'ifevall'; did you mean ifeval"):
        catalog.validate(["ifevall"])


@pytest.mark.parametrize(("task", "entry", "files"), [
    ("squadv2", "squadv2", {"squadv2.yaml", "task.py"}),  # a task class in Python
    ("flan_held_in", "flan_held_in (inline tasks)", {"flan_held_in.yaml"}),  # a group defining tasks inline
])
def test_tasks_the_overlay_cannot_redirect_still_get_a_version(
    catalog: TaskCatalog, tmp_path: Path, task: str, entry: str, files: set[str]
) -> None:
    """Without --bench-data-dir every lm-eval task runs; its definition's digest stands in for a version."""
    versions = catalog.versions([task])
    assert set(versions[entry]) == files
    assert all(len(digest) == 64 for digest in versions[entry].values())
    with pytest.raises(BenchError, match="--bench-data-dir cannot redirect"):
        catalog.prepare_offline([task], tmp_path, tmp_path / "overlay", None)


def test_task_data_names_the_dataset_of_lm_evals_own_config(catalog: TaskCatalog, demo_data: Path,
                                                            tmp_path: Path) -> None:
    catalog.prepare_offline(["ifeval", "mmlu"], demo_data, tmp_path, None)  # redirecting changes nothing here
    found = task_data(["ifeval", "mmlu"], catalog.index)
    config = lm_eval_config("ifeval/ifeval.yaml")
    assert found["ifeval"] == TaskData(dataset_path=config["dataset_path"], dataset_name=None,
                                       split=config["test_split"], revision=None, output_type=config["output_type"])
    leaves = [item for item in expand_tasks(["mmlu"], catalog.index) if isinstance(item, LeafTask)]
    paths = {leaf.config["dataset_path"] for leaf in leaves}
    assert len(leaves) > 50 and len(paths) == 1
    # Each subject is a configuration of the one dataset: the group names the dataset, not a configuration.
    assert (found["mmlu"].dataset_path, found["mmlu"].dataset_name) == (paths.pop(), None)
    assert found["mmlu"].output_type == "multiple_choice"


def test_task_data_keeps_what_a_groups_tasks_share_and_drops_local_files() -> None:
    index = {
        "group": entry("GROUP", task=["a", "b"]),
        "a": entry("TASK", dataset_path="org/data", dataset_name="one", test_split="test", output_type="generate_until",
                   dataset_kwargs={"revision": "abc"}),
        "b": entry("TASK", dataset_path="org/data", dataset_name="two", test_split="test", output_type="generate_until",
                   dataset_kwargs={"revision": "abc"}),
        "mine": entry("TASK", dataset_path="json", validation_split="validation", output_type="multiple_choice",
                      dataset_kwargs={"data_files": {"validation": "data/mine.jsonl"}}),
    }
    found = task_data(["group", "a", "mine"], index)
    assert found["group"] == TaskData("org/data", None, "test", "abc", "generate_until")
    assert found["a"] == TaskData("org/data", "one", "test", "abc", "generate_until")
    assert found["mine"] == TaskData(None, None, "validation", None, "multiple_choice")
