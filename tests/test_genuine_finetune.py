"""The headline claim on a genuine fine-tune: the demo's LoRA, benchmarked against its base through the plugin.

`demo_model` is a real LoRA fine-tune of SmolLM2-135M-Instruct, trained on the CPU in the test session (or
reused from the test cache). The session below measures both models on the bundled IFEval prompts; greedy
decoding on the CPU with fixed seeds makes the scores deterministic, so the direction of the change is a
stable fact of these settings. That the plugin's scores equal lm-eval's own CLI is checked on the same
backend and export (hf, merged weights) by tests/test_end_to_end.py, and with the adapter by
tests/test_adapters.py; repeating it here would generate 24 answers per side twice more.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench_sessions import Session, run_bench
from tests.demo_fixtures import demo_model  # noqa: F401 - session fixture: the built demo

# All 24 bundled IFEval prompts, none picked by hand. Measured through the plugin (prompt-level strict accuracy,
# base -> fine-tune): 24 prompts at 64 tokens 33.33% -> 50.00% (7 improved, 3 regressed); at 128 tokens
# 33.33% -> 54.17% (8, 3), the row of the README's demo table (256 tokens). The first 12 prompts gain one
# prompt net at 64 or 128 tokens, too few to show a direction. 64 tokens is the cheapest setting with a clear
# gain.
LIMIT = 24
MAX_GEN_TOKS = 64


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory, demo_model: Path, demo_data: Path) -> Session:  # noqa: F811
    return run_bench(tmp_path_factory.mktemp("genuine"), demo_model, demo_data,
                     "--bench-limit", str(LIMIT), "--bench-gen-kwargs", f"max_gen_toks={MAX_GEN_TOKS}")


def _outcome(stdout: str, gate: str) -> str:
    """PASSED or FAILED: the `-rA` summary line of IFEval's `gate` test (its node id starts with a path)."""
    (outcome,) = [words[0] for words in map(str.split, stdout.splitlines())
                  if words[:1] in (["PASSED"], ["FAILED"]) and words[1].endswith(f"finetune-bench::ifeval::{gate}")]
    return outcome


def test_both_sides_are_the_fine_tune_and_its_base(genuine: Session, demo_model: Path) -> None:  # noqa: F811
    summary = genuine.summary
    assert summary["status"] == "complete", genuine.proc.stdout
    base = json.loads((demo_model / "lora" / "adapter_config.json").read_text())["base_model_name_or_path"]
    model_args = summary["reproduce"]["model_args"]
    assert f"pretrained={base}" in model_args["base"]
    assert f"pretrained={demo_model / 'merged_16bit'}" in model_args["fine-tuned"]
    for side in ("base_model", "fine_tuned_model"):
        assert summary[side]["results"]["ifeval"]["sample_len"] == LIMIT
    assert summary["reproduce"]["gen_kwargs"] == f"max_gen_toks={MAX_GEN_TOKS}"


def test_fine_tune_improves_and_the_gate_says_so(genuine: Session) -> None:
    comp = genuine.summary["comparison"]["ifeval"]
    assert comp["metric"] == "prompt_level_strict_acc,none"
    # The direction of the measured change: the LoRA was trained to obey IFEval-style constraints.
    assert comp["finetuned_accuracy"] > comp["base_accuracy"], comp
    assert comp["flips"]["improved"] > comp["flips"]["regressed"], comp
    # The default `improves` gate asks for +2 points; the summary's delta clears it, so the gate passes.
    assert comp["delta"] * 100 >= 2.0
    out = genuine.proc.stdout
    assert _outcome(out, "improves") == "PASSED", out
    assert _outcome(out, "no_regression") == "PASSED"
    assert genuine.proc.returncode == 0
    row = next(line for line in out.splitlines() if line.startswith("Instruction-Following (IFEval)"))
    assert f"{comp['base_accuracy'] * 100:.2f}%" in row and f"{comp['finetuned_accuracy'] * 100:.2f}%" in row
    assert "↗" in row
