"""Tests only, imported by the benchmark child through a backend's `child_imports` (see tests/fake_backend.py).

- `bench-fake`: an lm-eval model that answers at once with canned output, committed to lm-eval's
  response cache one by one like a real model. $PYTEST_FINETUNE_BENCH_TEST_FAKE_LM ("k=v,…") may set
  `hang_after=N` / `crash_after=N` (sleep forever / die by SIGKILL after N answers), `only=TEXT` (those
  two apply only to models whose path contains TEXT), `missing=MODULE` (fail as a missing dependency),
  `pid_dir=DIR` (write the child's pid there), `oom_above_batch=N` (fail as CUDA out of memory does
  when the batch size is above N), `shout_for=TEXT` (models whose path contains TEXT answer in capitals:
  IFEval's lower-case prompts then go pass→fail and its capitals prompts fail→pass).
- PYTEST_FINETUNE_BENCH_TEST_HANG="TEXT:N": the real hf model hangs after N generations when its
  path contains TEXT (a real model, a real hang, at a known point).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from tests.fake_backend import FAKE_ENV, HANG_ENV

REPLY = "hello world, this is a short answer in lowercase."


def _hang_forever() -> None:
    while True:
        time.sleep(3600)


def _hang_hf_after(count: int, path_text: str) -> None:
    """Let the real model generate `count` times (one sample each at batch size 1), then hang."""
    from lm_eval.models.huggingface import HFLM

    generate = HFLM._model_generate
    calls = {"n": 0}

    def generate_then_hang(self: Any, *args: Any, **kwargs: Any) -> Any:
        if path_text in str(self.pretrained) and calls["n"] >= count:
            _hang_forever()
        calls["n"] += 1
        return generate(self, *args, **kwargs)

    HFLM._model_generate = generate_then_hang


def _behaviour() -> dict[str, str]:
    """The fake's options from the environment (see the module docstring)."""
    return dict(item.split("=", 1) for item in os.environ.get(FAKE_ENV, "").split(",") if "=" in item)


class FakeLM(LM):  # type: ignore[misc]
    """Answers every request at once with canned output, through lm-eval's cache hook like a real model."""

    def __init__(self, pretrained: str = "", batch_size: int | str = 1, **kwargs: Any) -> None:
        super().__init__()
        options = _behaviour()
        hang_after, crash_after = int(options.get("hang_after", -1)), int(options.get("crash_after", -1))
        only, missing, pid_dir = options.get("only", ""), options.get("missing", ""), options.get("pid_dir", "")
        oom_above_batch = int(options.get("oom_above_batch", -1))
        shout_for = options.get("shout_for", "")
        if missing:
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
        if 0 <= int(oom_above_batch) < int(batch_size):
            raise RuntimeError(f"CUDA out of memory at batch size {batch_size} (fake, above {oom_above_batch})")
        applies = only in pretrained
        self.hang_after = hang_after if applies else -1
        self.crash_after = crash_after if applies else -1
        self.answered = 0
        self.reply = REPLY.upper() if shout_for and shout_for in pretrained else REPLY
        if pid_dir:
            Path(pid_dir).mkdir(parents=True, exist_ok=True)
            (Path(pid_dir) / f"{os.getpid()}.pid").write_text(pretrained)

    def _answer(self, attr: str, request: Any, response: Any) -> Any:
        if self.answered == self.hang_after:
            _hang_forever()
        if self.answered == self.crash_after:
            time.sleep(1.0)  # let the cache's writer thread commit, as it would have long since in a real run
            os.kill(os.getpid(), signal.SIGKILL)
        self.answered += 1
        self.cache_hook.add_partial(attr, request.args, response)
        return response

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        return [self._answer("generate_until", r, self.reply) for r in requests]

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return [self._answer("loglikelihood", r, (-float(len(r.args[1])), False)) for r in requests]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        return [self._answer("loglikelihood_rolling", r, -1.0) for r in requests]


def _register() -> None:
    """Run in the child at import: register `bench-fake`, and make the real hf model hang when asked."""
    import lm_eval.models  # noqa: F401 - lm-eval's own models first: it loads them only into an empty registry

    register_model("bench-fake")(FakeLM)
    hang = os.environ.get(HANG_ENV)
    if hang is not None:
        text, _, after = hang.rpartition(":")
        _hang_hf_after(int(after), text)


_register()
