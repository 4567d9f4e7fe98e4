"""A fine-tune that is clearly better on the bundled MMLU questions, for timing early stop on MMLU.

SmolLM2-135M scores near chance on MMLU, and so does any small perturbation of it: no pair of the test
suite's models differs clearly there. This one is SmolLM2 LoRA-tuned on the bundled questions themselves
(pytest_finetune_bench/data/demo/mmlu, 57 subjects × 2), each prompt exactly the one lm-eval builds, trained
to put the most likelihood on the right letter. It has seen the test questions: it is a stand-in for "a
clearly better model" in a timing figure, never a claim about MMLU.

Built once into the test cache (tests/models.py `test_cache_root`), in the pipeline layout: `lora/` (a real PEFT adapter
whose config names SmolLM2's folder, so the plugin finds the base itself) and `merged_16bit/`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from pytest_finetune_bench.demo import demo_data_dir
from pytest_finetune_bench.demo.build import IGNORE_INDEX, Example, TrainConfig, fine_tune_lora
from pytest_finetune_bench.plan.offline import write_overlay
from pytest_finetune_bench.plan.tasks import load_task_index
from pytest_finetune_bench.store.files import bench_cache_dir

NAME = "mmlu-tuned-smollm2"
# About eight passes over the 114 questions: enough for a 135M model to learn them by heart.
CONFIG = TrainConfig(steps=240, batch_size=4, learning_rate=1e-3, warmup_steps=10, log_every=20)


def mmlu_tuned_outputs(cache: Path, base: Path) -> Path:
    """outputs/mmlu-tuned-smollm2/ in the test cache, built on first use (a few minutes on 2 cores)."""
    root = cache / "outputs" / NAME
    if (root / "merged_16bit" / "config.json").is_file():
        return root
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    examples = [encode(tokenizer, context, answer) for context, answer in lm_eval_answers()]
    print(f"LoRA-tuning {base.name} on {len(examples)} MMLU questions, {CONFIG.steps} steps", flush=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=root.parent))
    try:
        fine_tune_lora(base, tokenizer, examples, CONFIG, staging, lambda line: print(line, flush=True))
        staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def lm_eval_answers() -> list[tuple[str, str]]:
    """(context, right continuation) of every bundled MMLU question, as lm-eval's own requests hold them."""
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as folder:
        write_overlay(["mmlu"], demo_data_dir(), Path(folder), load_task_index(bench_cache_dir()), None)
        tasks = TaskManager(include_path=folder, include_defaults=False).load(["mmlu"])["tasks"]
        pairs = []
        for task in tasks.values():
            task.build_all_requests(limit=None, rank=0, world_size=1)
            pairs += [inst.arguments for inst in task.instances if inst.idx == task.doc_to_target(inst.doc)]
    return pairs


def encode(tokenizer: Any, context: str, continuation: str) -> Example:
    """The context and the answer tokenized apart, as lm-eval scores them; only the answer is trained."""
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    return Example(input_ids=[*context_ids, *answer_ids], labels=[IGNORE_INDEX] * len(context_ids) + answer_ids)
