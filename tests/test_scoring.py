"""The same responses always get the same score: lm-eval's scorers run seeded wherever the plugin scores."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_finetune_bench.run.child import seed_scorers

# langdetect is torn between English and Lithuanian on this text (about 1 in 3 English, unseeded).
BORDERLINE = "bus stop bus"
LANGUAGE_DOC = {"key": 1, "prompt": "Answer in English.", "instruction_id_list": ["language:response_language"],
                "kwargs": [{"language": "en"}]}


def _outcomes(times: int) -> set[bool]:
    from lm_eval.tasks.ifeval.utils import process_results

    return {bool(process_results(LANGUAGE_DOC, [BORDERLINE])["prompt_level_strict_acc"]) for _ in range(times)}


def test_ifeval_language_check_is_random_unseeded_and_fixed_seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    from langdetect import DetectorFactory

    monkeypatch.setattr(DetectorFactory, "seed", None)
    assert _outcomes(80) == {True, False}  # lm-eval issue #4213: the scorer alone flips this document
    seed_scorers()
    assert len(_outcomes(80)) == 1


def test_reproduce_cli_is_lm_evals_own_with_the_seed() -> None:
    result = subprocess.run([sys.executable, "-m", "pytest_finetune_bench", "lm-eval", "run", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--model_args" in result.stdout and "--tasks" in result.stdout  # lm-eval's parser answered
    listed = subprocess.run([sys.executable, "-m", "pytest_finetune_bench", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert "lm-eval" in listed.stdout and "seeded" in listed.stdout
