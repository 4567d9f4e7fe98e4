"""Nothing in a cache or a shipped folder runs code or is trusted without being the user's own (issue 22)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import lm_eval.tasks
import pytest

from pytest_finetune_bench.core.settings import EvalSettings, Side
from pytest_finetune_bench.plan import Plan, tasks
from pytest_finetune_bench.plan.choices import BenchOptions
from pytest_finetune_bench.plan.tasks import INDEX_CACHE_DIR, load_task_index
from pytest_finetune_bench.run.executor import Executor

POSIX_OWNERS = pytest.mark.skipif(not hasattr(os, "getuid"), reason="no POSIX file owners")
AS_ROOT = pytest.mark.skipif(getattr(os, "getuid", lambda: -1)() != 0, reason="giving a file away needs root")
OTHER_UID = 65534  # nobody


class Planted:
    """A pickle that, when loaded, leaves a marker file: proof that the loader ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class CountingTaskManager:
    """lm-eval's TaskManager over one real task folder (indexing all of lm-eval takes 10 s or more)."""

    builds = 0

    @property
    def task_index(self) -> dict[str, Any]:
        from lm_eval.tasks._index import TaskIndex

        CountingTaskManager.builds += 1
        index: dict[str, Any] = TaskIndex.build([Path(lm_eval.tasks.__file__).parent / "arc"])
        return index


@pytest.fixture
def small_index(monkeypatch: pytest.MonkeyPatch) -> type[CountingTaskManager]:
    CountingTaskManager.builds = 0
    monkeypatch.setattr(lm_eval.tasks, "TaskManager", CountingTaskManager)
    monkeypatch.setattr(tasks, "_installed_release", lambda version: f"{version}@test")
    return CountingTaskManager


def index_file(cache: Path, suffix: str = "jsonl") -> Path:
    name = hashlib.sha256(f"{tasks.lm_eval_version()}@test".encode()).hexdigest()
    return cache / INDEX_CACHE_DIR / f"{name}.{suffix}"


def stored_entries(path: Path) -> dict[str, Any]:
    """The entries of a cached task index (after its header line)."""
    entries: dict[str, Any] = json.loads(path.read_bytes().partition(b"\n")[2])
    return entries


def store_entries(path: Path, entries: dict[str, Any]) -> None:
    """Write `entries` as a cached index with a matching checksum: only the other checks can refuse it."""
    body = json.dumps(entries).encode()
    header = json.dumps({"format": tasks.INDEX_FORMAT, "sha256": hashlib.sha256(body).hexdigest()}).encode()
    path.write_bytes(header + b"\n" + body)


def test_the_task_index_is_cached_as_data_and_reads_back_equal(tmp_path: Path, small_index: Any) -> None:
    first = load_task_index(tmp_path)
    second = load_task_index(tmp_path)
    assert small_index.builds == 1 and first == second and "arc_easy" in second
    assert stored_entries(index_file(tmp_path))["arc_easy"]["kind"] == "TASK"
    assert not list((tmp_path / INDEX_CACHE_DIR).glob("*.pickle"))


@pytest.mark.parametrize("suffix", ["pickle", "json", "jsonl"])
def test_a_planted_pickle_never_runs(tmp_path: Path, small_index: Any, suffix: str) -> None:
    marker = tmp_path / "ran"
    planted = index_file(tmp_path, suffix)
    planted.parent.mkdir(parents=True, mode=0o700)
    planted.write_bytes(pickle.dumps(Planted(marker)))
    index = load_task_index(tmp_path)
    assert not marker.exists()
    assert "arc_easy" in index and small_index.builds == 1


def test_an_entry_pointing_outside_lm_eval_is_rebuilt(tmp_path: Path, small_index: Any) -> None:
    load_task_index(tmp_path)
    path = index_file(tmp_path)
    stored = stored_entries(path)
    root = Path(lm_eval.tasks.__file__).parent
    for planted in ("/tmp/evil/task.yaml", f"{root}/../../evil/task.yaml"):
        stored["arc_easy"]["yaml_path"] = planted
        store_entries(path, stored)
        assert load_task_index(tmp_path)["arc_easy"].yaml_path.parent.name == "arc"
    assert small_index.builds == 3


def test_an_index_edited_or_cut_short_is_rebuilt(tmp_path: Path, small_index: Any) -> None:
    load_task_index(tmp_path)
    path = index_file(tmp_path)
    header, _, body = path.read_bytes().partition(b"\n")
    path.write_bytes(header + b"\n" + body.replace(b'"arc_easy"', b'"arc_eas"', 1))
    assert "arc_easy" in load_task_index(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    assert "arc_easy" in load_task_index(tmp_path)
    assert small_index.builds == 3


@POSIX_OWNERS
def test_an_index_others_can_write_is_thrown_away(tmp_path: Path, small_index: Any) -> None:
    load_task_index(tmp_path)
    folder = tmp_path / INDEX_CACHE_DIR
    stored = stored_entries(index_file(tmp_path))
    stored["arc_easy"]["cfg"]["dataset_path"] = "planted"
    store_entries(index_file(tmp_path), stored)
    folder.chmod(0o777)
    assert load_task_index(tmp_path)["arc_easy"].cfg["dataset_path"] != "planted"
    assert small_index.builds == 2 and folder.stat().st_mode & 0o777 == 0o700


@AS_ROOT
def test_an_index_of_another_user_is_not_read(tmp_path: Path, small_index: Any) -> None:
    load_task_index(tmp_path)
    os.chown(index_file(tmp_path), OTHER_UID, OTHER_UID)
    load_task_index(tmp_path)
    assert small_index.builds == 2


def executor_for(model_dir: Path, cache: Path, said: list[str]) -> Executor:
    """An executor of a plan for a model folder, with the per-user cache in `cache` (no model is run)."""
    settings = EvalSettings(tasks=("ifeval",), limit=5, gen_kwargs="max_gen_toks=32", batch_size="4",
                            apply_chat_template=True, lm_eval_version="0.4.13")
    side = Side(role="fine-tuned", model=str(model_dir), backend="hf", lm_eval_model="hf",
                model_args=f"pretrained={model_dir}", fingerprint="f" * 64)
    plan = Plan(options=BenchOptions(model=str(model_dir), cache_dir=cache), location=None,  # type: ignore[arg-type]
                base=side, finetuned=side, base_backend=None, backend=None,  # type: ignore[arg-type]
                settings=settings, skipped={}, output_dir=model_dir / "benchmarks", headlines={})
    return Executor(plan, said.append)


def test_the_response_cache_lives_in_the_user_cache_not_the_model_folder(tmp_path: Path) -> None:
    model = tmp_path / "shipped-model"
    shipped = model / "benchmarks" / ".responses"
    shipped.mkdir(parents=True)
    use_cache = executor_for(model, tmp_path / "cache", []).request("base").use_cache
    assert use_cache is not None and use_cache.parent == tmp_path / "cache" / "responses"
    assert not use_cache.is_relative_to(model)
    if hasattr(os, "getuid"):
        assert use_cache.parent.stat().st_mode & 0o777 == 0o700


@POSIX_OWNERS
def test_a_response_cache_others_could_write_is_emptied_before_use(tmp_path: Path) -> None:
    said: list[str] = []
    use_cache = executor_for(tmp_path / "model", tmp_path / "cache", said).request("base").use_cache
    assert use_cache is not None
    planted = use_cache.with_name(f"{use_cache.name}_rank0.db")
    planted.write_bytes(b"planted")
    use_cache.parent.chmod(0o777)
    again = executor_for(tmp_path / "model", tmp_path / "cache", said).request("base").use_cache
    assert again == use_cache and not planted.exists() and use_cache.parent.stat().st_mode & 0o777 == 0o700


@AS_ROOT
def test_response_files_of_another_user_are_never_handed_to_lm_eval(tmp_path: Path) -> None:
    said: list[str] = []
    use_cache = executor_for(tmp_path / "model", tmp_path / "cache", said).request("base").use_cache
    assert use_cache is not None
    planted = [use_cache.with_name(f"{use_cache.name}_rank{n}") for n in ("0.db", "0.db-journal")]
    mine = use_cache.with_name(f"{use_cache.name}_rank1.db")
    for file in [*planted, mine]:
        file.write_bytes(b"x")
    for file in planted:
        os.chown(file, OTHER_UID, OTHER_UID)
    executor_for(tmp_path / "model", tmp_path / "cache", said).request("base")
    assert not any(file.exists() for file in planted) and mine.exists()
    os.chown(use_cache.parent, OTHER_UID, OTHER_UID)
    assert executor_for(tmp_path / "model", tmp_path / "cache", said).request("base").use_cache is None
    assert "belongs to user id 65534" in said[-1] and "--bench-cache-dir" in said[-1]
