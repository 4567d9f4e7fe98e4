"""A Hub id is pinned to the commit it stands for: model args, reproduce commands and cache keys carry it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import constants

from pytest_finetune_bench.backends.hf import HFBackend
from pytest_finetune_bench.core.records import RunRequest
from pytest_finetune_bench.core.settings import EvalSettings
from pytest_finetune_bench.plan.choices import BenchOptions
from pytest_finetune_bench.plan.planner import make_plan
from pytest_finetune_bench.plan.tasks import TaskCatalog

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SETTINGS = EvalSettings(tasks=("ifeval",))


def snapshot(hub_cache: Path, commit: str) -> None:
    """What huggingface_hub leaves after a download: refs/main naming the snapshot's commit."""
    repo = hub_cache / f"models--{MODEL.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def test_hub_id_is_pinned_to_its_snapshot_commit(offline_hub: Path) -> None:
    snapshot(offline_hub, "a" * 40)
    plan = make_plan(BenchOptions(model=MODEL, base=MODEL, device="cpu"), offline_hub, print, FakeCatalog(offline_hub))
    assert plan.base is not None and plan.base.model_args == f"pretrained={MODEL},dtype=float32,revision={'a' * 40}"
    request = RunRequest(plan.base, plan.settings, results_dir=offline_hub / "r", log_path=offline_hub / "log")
    assert f"revision={'a' * 40}" in request.cli_command()
    assert plan.identity("base")["model_fingerprint"] == HFBackend().fingerprint(MODEL, offline_hub)


class FakeCatalog(TaskCatalog):
    """lm-eval's catalog, answering for IFEval alone without indexing the 15,000 task files."""

    def validate(self, names: Sequence[str]) -> None:
        assert list(names) == ["ifeval"]

    def output_types(self, names: Sequence[str]) -> dict[str, frozenset[str]]:
        return {"ifeval": frozenset({"generate_until"})}

    def versions(self, names: Sequence[str]) -> dict[str, Any]:
        return {"ifeval": 4.0}


def test_an_upstream_update_is_another_model(offline_hub: Path) -> None:
    snapshot(offline_hub, "a" * 40)
    before = HFBackend().fingerprint(MODEL, offline_hub)
    snapshot(offline_hub, "b" * 40)  # the id now points at a newer upload
    after = HFBackend().fingerprint(MODEL, offline_hub)
    assert before is not None and after is not None and before != after


def test_an_unknown_commit_caches_nothing(offline_hub: Path) -> None:
    backend = HFBackend()
    assert backend.fingerprint(MODEL, offline_hub) is None  # no response cache, no base-score cache
    assert "revision" not in backend.model_args(MODEL, SETTINGS)


def test_local_folders_are_not_asked_about(offline_hub: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert "revision" not in HFBackend().model_args(str(folder), SETTINGS)
    assert HFBackend().fingerprint(str(folder), tmp_path) is not None
