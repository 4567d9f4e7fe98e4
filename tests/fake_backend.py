"""Tests only: a pytest plugin (`-p tests.fake_backend`) that adds test doubles through the backend interface.

- `--bench-backend fake`: the hf backend's planning (folders, fingerprints, chat templates), but the
  child runs `bench-fake` (tests/fake_lm.py), which reads its behaviour from
  $PYTEST_FINETUNE_BENCH_TEST_FAKE_LM (not from its model arguments: a session that stops hanging must
  keep the run's identity, and so its response cache).
- `--bench-backend fake-twin`: the same fake under another name, for sessions with several backends
  (`--bench-backend fake,fake-twin` labels its experiments `<model>@fake` and `<model>@fake-twin`).
- `--bench-backend fake-unpinned`: the fake backend for models whose content it cannot tell (as a
  served model without a digest): nothing about them is cached on disk.
- `--bench-backend hf-hang`: the real hf backend, whose child also imports tests/fake_lm.py so that
  $PYTEST_FINETUNE_BENCH_TEST_HANG can make the real model hang (the variable is not part of the
  run's identity, so a session without it resumes from the same response cache).
"""

from __future__ import annotations

from pathlib import Path

from pytest_finetune_bench.backends import Backend, register_backend
from pytest_finetune_bench.backends.hf import HFBackend
from pytest_finetune_bench.core.settings import EvalSettings

FAKE_ENV = "PYTEST_FINETUNE_BENCH_TEST_FAKE_LM"
HANG_ENV = "PYTEST_FINETUNE_BENCH_TEST_HANG"
CHILD_MODULE = "tests.fake_lm"


class FakeBackend(HFBackend):
    """Plans like hf; the child answers with canned output at once."""

    name = "fake"
    lm_eval_model = "bench-fake"
    child_imports: tuple[str, ...] = (CHILD_MODULE,)

    def model_args(self, model: str, settings: EvalSettings) -> dict[str, str]:
        return {"pretrained": model}


class FakeTwin(FakeBackend):
    """The fake under a second name: a session may then measure one model through two backends."""

    name = "fake-twin"


class UnpinnedFake(FakeBackend):
    """The fake backend without a content fingerprint: no base-score cache, no response cache."""

    name = "fake-unpinned"

    def fingerprint(self, model: str, cache_dir: Path) -> str | None:
        return None


class HangableHF(HFBackend):
    """The real hf backend; its child also imports tests/fake_lm.py, which may make the model hang."""

    name = "hf-hang"
    child_imports: tuple[str, ...] = (CHILD_MODULE,)


def _fake(base_url: str | None, num_concurrent: int) -> Backend:
    return FakeBackend()


def _fake_twin(base_url: str | None, num_concurrent: int) -> Backend:
    return FakeTwin()


def _unpinned(base_url: str | None, num_concurrent: int) -> Backend:
    return UnpinnedFake()


def _hangable_hf(base_url: str | None, num_concurrent: int) -> Backend:
    return HangableHF()


register_backend("fake", _fake)
register_backend("fake-twin", _fake_twin)
register_backend("fake-unpinned", _unpinned)
register_backend("hf-hang", _hangable_hf)
