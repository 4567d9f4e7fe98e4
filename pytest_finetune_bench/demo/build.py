"""Build the embedded demo: a real LoRA fine-tune of SmolLM2-135M-Instruct, laid out like an Unsloth run.

`build_demo(outputs)` writes `outputs/demo-smollm2/` with

- `lora/`: the PEFT adapter, whose adapter_config.json names the converted base folder,
- `lora/training_metrics.json`: what the fine-tune did (written last: it marks a finished build),
- `merged_16bit/`: the adapter merged into the base, in float16, with the tokenizer and chat template,

so that `pytest --bench-model outputs/demo-smollm2` has a base and a fine-tuned model to compare
without downloading anything. The training set (`data/demo_train/train.jsonl`) holds prompts with
IFEval-style verifiable constraints (none of them from the benchmark data) and answers that pass
lm-eval's IFEval checkers: mostly the base model's own answers, edited just enough to obey the
constraint (self-distillation), so the fine-tune learns the constraints rather than a new style.
Training runs on the CPU with fixed seeds, so a rebuild gives the same model on the same machine.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.demo import demo_data_dir
from pytest_finetune_bench.demo.smollm2 import base_model_dir
from pytest_finetune_bench.store.files import atomic_write_json

DEMO_NAME = "demo-smollm2"
BENCH_DATA_DIR = demo_data_dir()
TRAIN_FILE = BENCH_DATA_DIR.parent / "demo_train" / "train.jsonl"
METRICS_RELATIVE = Path("lora") / "training_metrics.json"
METRICS_KEYS = ("model_name", "steps", "final_loss", "train_examples", "lora_rank", "seconds")
IGNORE_INDEX = -100  # label value torch's cross-entropy skips
DEFAULT_STEPS = 30


@dataclass(frozen=True)
class TrainConfig:
    """The fine-tune's settings; together with the seed they make the build reproducible."""

    steps: int = DEFAULT_STEPS
    batch_size: int = 4
    learning_rate: float = 1e-3
    warmup_steps: int = 3
    lora_rank: int = 16
    lora_alpha: int = 32
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    seed: int = 0
    log_every: int = 5


@dataclass(frozen=True)
class Example:
    """One chat turn, tokenized: labels are -100 everywhere but the assistant's answer."""

    input_ids: list[int]
    labels: list[int]


def demo_dir(outputs_dir: Path) -> Path:
    """Where `build_demo(outputs_dir)` puts the demo model."""
    return outputs_dir / DEMO_NAME


def prepare_base(models_cache: Path | None = None, say: Callable[[str], None] = print) -> Path:
    """The demo's base model: SmolLM2-135M-Instruct converted into `models_cache` (fetched once)."""
    return base_model_dir(models_cache, say).resolve()


def build_demo(outputs_dir: Path, *, steps: int = DEFAULT_STEPS, say: Callable[[str], None] = print,
               base: Path | None = None) -> Path:
    """Build `outputs_dir/demo-smollm2/` (LoRA adapter, metrics, merged model) once; reuse a finished build.

    `base` is the model to fine-tune (default: `prepare_base()`). A finished build made with the same
    base folder, step count and training data is returned as is. The build happens in a hidden sibling
    folder renamed into place at the end, so an interrupted one is never reused.
    """
    if steps < 1:
        raise BenchError(f"--steps must be at least 1, got {steps}")
    dest = checked_demo_dir(outputs_dir)
    base = (base or prepare_base(say=say)).resolve()
    if _reusable(dest, base, steps):
        say(f"Reusing the demo model in {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        _build(staging, base, TrainConfig(steps=steps), say)
        _move_into_place(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"Demo model ready in {dest}")
    return dest


def checked_demo_dir(outputs_dir: Path) -> Path:
    """Where the demo goes; BenchError when something that is not a finished demo build is there."""
    dest = demo_dir(outputs_dir.expanduser().resolve())
    if dest.exists() and read_metrics(dest) is None:
        # Ours are renamed into place only when finished, so this folder is someone else's: leave it alone.
        raise BenchError(f"{dest} exists but is not a finished demo build: delete it or pick another outputs folder")
    return dest


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """The build's training_metrics.json, or None when the build is missing or unfinished."""
    try:
        data = json.loads((folder / METRICS_RELATIVE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _reusable(dest: Path, base: Path, steps: int) -> bool:
    metrics = read_metrics(dest)
    if metrics is None or not (dest / "merged_16bit" / "config.json").is_file():
        return False
    # A build against a base folder that moved, or with other settings, would compare the wrong models.
    return bool(metrics.get("model_name") == str(base) and metrics.get("steps") == steps
                and metrics.get("train_data_sha256") == train_data_digest())


def train_data_digest(path: Path = TRAIN_FILE) -> str:
    """Fingerprint of the training set: a package upgrade that changes it rebuilds the demo."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _move_into_place(staging: Path, dest: Path) -> None:
    """Rename the finished build to `dest`, replacing an older finished build (never anything else)."""
    old: Path | None = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}-old-", dir=dest.parent))
        dest.rename(old / dest.name)
    try:
        staging.rename(dest)
    except OSError:
        # Another process finished the same build first: its folder is as good as ours.
        if not (dest / METRICS_RELATIVE).is_file():
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build(folder: Path, base: Path, config: TrainConfig, say: Callable[[str], None]) -> None:
    import torch
    from transformers import AutoTokenizer

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    examples = [encode_chat(tokenizer, messages) for messages in load_train_messages()]
    say(f"Fine-tuning {base.name} with LoRA (rank {config.lora_rank}) on {len(examples)} examples for "
        f"{config.steps} steps on the CPU ({torch.get_num_threads()} threads; a few minutes, done once)...")
    final_loss = fine_tune_lora(base, tokenizer, examples, config, folder, say)
    # Written last: its presence is what marks the build as finished.
    atomic_write_json(folder / METRICS_RELATIVE, {
        "model_name": str(base),
        "steps": config.steps,
        "final_loss": round(final_loss, 4),
        "train_examples": len(examples),
        "lora_rank": config.lora_rank,
        "seconds": round(time.monotonic() - started, 1),
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "train_data_sha256": train_data_digest(),
    })


def fine_tune_lora(base: Path, tokenizer: Any, examples: Sequence[Example], config: TrainConfig, folder: Path,
                   say: Callable[[str], None]) -> float:
    """LoRA-tune the model in `base` on `examples` with fixed seeds; write the adapter to `folder/lora` and
    the merged model to `folder/merged_16bit`. Returns the mean loss of the last logged steps."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    started = time.monotonic()
    _seed_everything(config.seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft calls a transformers API that is deprecated for v6; the warning is not the user's to act on.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, lora)
    final_loss = _train(peft_model, examples, pad_token_id(tokenizer), config, say, started)
    peft_model.save_pretrained(str(folder / "lora"))
    _save_merged(peft_model, tokenizer, folder / "merged_16bit")
    return final_loss


def load_train_messages(path: Path = TRAIN_FILE) -> list[list[dict[str, str]]]:
    """The chat examples of the demo training set (one {"messages": [...]} object per line)."""
    rows: list[list[dict[str, str]]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        messages = json.loads(line).get("messages")
        if not isinstance(messages, list) or not messages or messages[-1].get("role") != "assistant":
            raise BenchError(f"{path}:{number}: expected {{\"messages\": [...]}} ending with an assistant turn")
        rows.append(messages)
    return rows


def encode_chat(tokenizer: Any, messages: Sequence[dict[str, str]]) -> Example:
    """Tokenize a chat with the model's template, training only on the final assistant answer and its end token."""
    prompt = tokenizer.apply_chat_template(list(messages[:-1]), tokenize=False, add_generation_prompt=True)
    # The end-of-turn token is trained so the model learns to stop, as IFEval generates until it appears.
    full = prompt + messages[-1]["content"] + tokenizer.eos_token
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise BenchError("the chat template tokenizes the prompt differently inside the full chat")
    labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids):]
    return Example(input_ids=list(full_ids), labels=labels)


def pad_token_id(tokenizer: Any) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its end token.

    Some transformers releases convert SmolLM2's GGUF without a pad token; any id will do, since
    padding is masked out of attention and loss.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise BenchError("the base model's tokenizer has neither a pad token nor an end token to pad batches with")
    return int(pad)


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def _batches(examples: Sequence[Example], config: TrainConfig) -> Iterator[list[Example]]:
    """Endless batches: each pass over the data in a fresh seeded order, so epochs differ but runs do not."""
    order_rng = random.Random(config.seed)
    while True:
        order = list(range(len(examples)))
        order_rng.shuffle(order)
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            yield [examples[i] for i in order[start:start + config.batch_size]]


def _collate(batch: Sequence[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors; padding is masked out of attention and loss."""
    import torch

    width = max(len(e.input_ids) for e in batch)

    def padded(values: list[int], fill: int, length: int) -> list[int]:
        return values + [fill] * (length - len(values))

    return {
        "input_ids": torch.tensor([padded(e.input_ids, pad_id, width) for e in batch]),
        "attention_mask": torch.tensor([padded([1] * len(e.input_ids), 0, width) for e in batch]),
        "labels": torch.tensor([padded(e.labels, IGNORE_INDEX, width) for e in batch]),
    }


def _learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then linear decay to zero: the usual short-fine-tune schedule."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    remaining = config.steps - step
    return config.learning_rate * remaining / max(1, config.steps - config.warmup_steps)


def _train(model: Any, examples: Sequence[Example], pad_id: int, config: TrainConfig,
           say: Callable[[str], None], started: float) -> float:
    """A plain training loop; returns the mean loss of the last logged window."""
    import torch

    if len(examples) < config.batch_size:
        raise BenchError(f"the training set has {len(examples)} examples: need at least {config.batch_size}")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                                  weight_decay=0.0)
    model.train()
    window: list[float] = []
    last = float("nan")
    batches = _batches(examples, config)
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, config)
        loss = model(**_collate(next(batches), pad_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window.append(float(loss.item()))
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            last = sum(window) / len(window)
            say(f"  step {step + 1}/{config.steps}  loss {last:.3f}  ({time.monotonic() - started:.0f}s)")
            window = []
    model.eval()
    return last


def _save_merged(peft_model: Any, tokenizer: Any, folder: Path) -> None:
    """Fold the adapter into the base weights and save a plain float16 model with the tokenizer."""
    import torch

    merged = peft_model.merge_and_unload()
    merged.to(torch.float16).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
