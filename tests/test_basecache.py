"""The base-score cache: reuse, corruption and replacement (its key is tested in tests/test_identity.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_finetune_bench.core.records import RunRecord
from pytest_finetune_bench.core.settings import EvalSettings, Side, identity
from pytest_finetune_bench.store.base_cache import BaseCache, restore
from pytest_finetune_bench.store.files import file_sha256

SETTINGS = EvalSettings(tasks=("ifeval",), limit=5, gen_kwargs="max_gen_toks=32", batch_size="4",
                        apply_chat_template=True, task_versions=(("ifeval", "4.0"),), data_files=("a" * 64,),
                        lm_eval_version="0.4.13")
SIDE = Side(role="base", model="/models/base", backend="hf", lm_eval_model="hf",
            model_args="pretrained=/models/base,dtype=float32", fingerprint="f" * 64)
KEY = identity(SETTINGS, SIDE)


def test_unchanged_key_hits_and_restores_the_files(tmp_path: Path) -> None:
    cache = BaseCache(tmp_path / "cache")
    run = fake_run(tmp_path / "run")
    cache.store(KEY, run)
    cached, corrupt = cache.load(identity(SETTINGS, SIDE))
    assert corrupt is None and cached is not None
    record = restore(cached, tmp_path / "model" / "benchmarks" / "base" / "lm-eval")
    assert record.from_cache and record.results == run.results
    assert record.results_file.parent == tmp_path / "model" / "benchmarks" / "base" / "lm-eval"
    assert record.samples_files["ifeval"].read_text() == run.samples_files["ifeval"].read_text()


@pytest.mark.parametrize("damage", ["truncate results", "edit samples", "drop entry", "garble entry"])
def test_a_corrupt_entry_is_discarded_not_used(tmp_path: Path, damage: str) -> None:
    cache = BaseCache(tmp_path / "cache")
    folder = cache.store(KEY, fake_run(tmp_path / "run"))
    results = next(folder.glob("results_*.json"))
    samples = next(folder.glob("samples_*.jsonl"))
    if damage == "truncate results":
        results.write_text(results.read_text()[:20])
    elif damage == "edit samples":
        samples.write_text(samples.read_text().replace("true", "false"))
    elif damage == "drop entry":
        (folder / "entry.json").unlink()
    else:
        (folder / "entry.json").write_text("{not json")
    cached, reason = cache.load(KEY)
    assert cached is None and reason
    assert not folder.exists()
    cache.store(KEY, fake_run(tmp_path / "run2"))
    assert cache.load(KEY)[0] is not None


def fake_run(folder: Path) -> RunRecord:
    """A run as lm-eval writes it: results json and per-sample jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    results = {"results": {"ifeval": {"prompt_level_strict_acc,none": 0.4}}}
    results_file = folder / "results_2026-01-01T00-00-00.json"
    results_file.write_text(json.dumps(results))
    samples = folder / "samples_ifeval_2026-01-01T00-00-00.jsonl"
    samples.write_text(json.dumps({"doc_id": 0, "filter": "none", "prompt_level_strict_acc": True}) + "\n")
    return RunRecord("base", "/models/base", results, results_file, {"ifeval": samples}, "2026-01-01T00:00:00")


def test_storing_again_replaces_the_entry(tmp_path: Path) -> None:
    cache = BaseCache(tmp_path / "cache")
    cache.store(KEY, fake_run(tmp_path / "old"))
    newer = fake_run(tmp_path / "new")
    newer.results["results"]["ifeval"]["prompt_level_strict_acc,none"] = 0.6
    newer.results_file.write_text(json.dumps(newer.results))
    cache.store(KEY, newer)
    cached, _ = cache.load(KEY)
    assert cached is not None
    assert json.loads(cached.results_file.read_text()) == newer.results


def stored_entry(tmp_path: Path) -> tuple[BaseCache, Path, dict[str, Any]]:
    cache = BaseCache(tmp_path / "cache")
    folder = cache.store(KEY, fake_run(tmp_path / "run"))
    return cache, folder, json.loads((folder / "entry.json").read_text())


@pytest.mark.parametrize("field, value", [
    ("results_file", "ABSOLUTE"), ("results_file", "../../../run/results_2026-01-01T00-00-00.json"),
    ("results_file", "."), ("results_file", ["a"]), ("sha256", []), ("sha256", {"x": 1}),
    ("samples_files", {"ifeval": "/etc/passwd"}), ("samples_files", "x"), ("created", 3), ("generated", "7"),
])
def test_an_entry_out_of_shape_is_discarded_never_followed(tmp_path: Path, field: str, value: Any) -> None:
    cache, folder, entry = stored_entry(tmp_path)
    if value == "ABSOLUTE":
        value = str(next((tmp_path / "run").glob("results_*.json")))
    entry[field] = value
    if field == "results_file" and isinstance(value, str) and (folder / value).is_file():
        # A right checksum does not make a file outside the entry acceptable.
        entry["sha256"][value] = file_sha256(folder / value)
    (folder / "entry.json").write_text(json.dumps(entry))
    cached, reason = cache.load(KEY)
    assert cached is None and reason and not folder.exists()


def test_a_linked_file_is_not_followed(tmp_path: Path) -> None:
    cache, folder, _ = stored_entry(tmp_path)
    results = next(folder.glob("results_*.json"))
    outside = tmp_path / "outside.json"
    outside.write_bytes(results.read_bytes())
    results.unlink()
    results.symlink_to(outside)
    cached, reason = cache.load(KEY)
    assert cached is None and reason and "not a plain file" in reason


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="no POSIX file owners")
def test_an_entry_others_could_write_is_discarded(tmp_path: Path) -> None:
    cache, folder, _ = stored_entry(tmp_path)
    assert all(p.stat().st_mode & 0o077 == 0 for p in folder.iterdir())
    folder.chmod(0o777)
    cached, reason = cache.load(KEY)
    assert cached is None and reason and "other users" in reason


@pytest.mark.skipif(getattr(os, "getuid", lambda: -1)() != 0, reason="giving a file away needs root")
def test_a_cache_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    cache, folder, _ = stored_entry(tmp_path)
    os.chown(cache.root, 65534, 65534)
    assert "belongs to user id 65534" in (cache.claim() or "")
    os.chown(cache.root, os.getuid(), os.getgid())
    cache.root.chmod(0o775)
    assert cache.claim() is None and not folder.exists() and cache.root.stat().st_mode & 0o777 == 0o700
