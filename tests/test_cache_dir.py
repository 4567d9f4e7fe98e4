"""--bench-cache-dir governs every cache: the task index, the file digests, the base scores and lm-eval's responses.

Each session runs with the default cache places ($XDG_CACHE_HOME and $HOME, the environment variable unset)
pointing at empty folders, which must stay without a cache of the plugin.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_finetune_bench.demo import demo_data_dir
from pytest_finetune_bench.plan.tasks import INDEX_CACHE_DIR
from pytest_finetune_bench.run.executor import RESPONSES_DIR
from pytest_finetune_bench.store.files import CACHE_ENV
from pytest_finetune_bench.store.fingerprint import INDEX_NAME
from tests.fake_sessions import bench_args, make_fake_model, own_cache_dir, use_fake_lm

DIGESTED_BYTES = 17 << 20  # above the size from which a file's digest is remembered (store/fingerprint.py)


def empty_default_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, ...]:
    """Where the caches would go without --bench-cache-dir; empty folders until a session leaks into them.

    Called once the test's own cache folder is made: that takes the suite's task index from the default place.
    """
    monkeypatch.delenv(CACHE_ENV, raising=False)
    xdg, home = tmp_path / "xdg", tmp_path / "home"
    xdg.mkdir()
    home.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.setenv("HOME", str(home))
    return xdg / "pytest-finetune-bench", home / ".cache" / "pytest-finetune-bench"


def test_planning_keeps_the_task_index_and_file_digests_in_the_cache_dir(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_fake_model(pytester.path)
    with (model / "merged_16bit" / "model.safetensors").open("wb") as weights:
        weights.truncate(DIGESTED_BYTES)
    cache = own_cache_dir(pytester.path / "cache")  # holds the task index already: nothing to index again
    default_places = empty_default_places(pytester.path, monkeypatch)
    result = pytester.runpytest_subprocess(
        f"--bench-model={model}", f"--bench-data-dir={demo_data_dir()}", "--bench-device=cpu", "--bench-plan",
        f"--bench-cache-dir={cache}", "-p", "no:cacheprovider",
    )
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    assert list((cache / INDEX_CACHE_DIR).glob("*.jsonl"))
    assert (cache / INDEX_NAME).is_file()  # the weights' digest, remembered
    assert not any(place.exists() for place in default_places)


@pytest.mark.slow  # starts lm-eval children (a fake model)
def test_a_session_keeps_base_scores_and_responses_in_the_cache_dir(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_fake_model(pytester.path)
    use_fake_lm(monkeypatch)
    out = pytester.path / "out"
    args = bench_args(model, out)
    default_places = empty_default_places(pytester.path, monkeypatch)
    result = pytester.runpytest_subprocess(*args, "--bench-min-gain=0")
    result.assert_outcomes(passed=2)
    cache = out.parent / "base-cache"  # bench_args' --bench-cache-dir
    assert list((cache / "base").glob("*/entry.json"))
    assert {path.name.split("_rank")[0] for path in (cache / RESPONSES_DIR).glob("*_rank*.db")} != set()
    assert not any(place.exists() for place in default_places)
