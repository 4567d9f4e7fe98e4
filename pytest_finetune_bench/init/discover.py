"""The experiments under outputs/, as the training pipelines lay them out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.plan.models import EXPERIMENT_PARTS, detect_base, is_experiment, locate_model

EXPECTED_LAYOUT = ("outputs/<name>/ folders holding lora/, merged_16bit/, merged_4bit/ or gguf/ "
                   "(the training pipelines' layout), or model folders with a config.json")


@dataclass(frozen=True)
class Experiment:
    """One fine-tune found under outputs/, with what the plugin can benchmark in it."""

    spec: str  # how the configuration names it: relative to the project folder where it lies inside it
    parts: tuple[str, ...]  # the pipeline folders present (lora, merged_16bit, ...)
    hf_path: str | None  # the merged (or plain) model transformers loads; None when there is none
    variant: str  # the export the plugin evaluates by default: merged_16bit, merged_4bit, lora, gguf, folder or none
    gguf_count: int
    base: tuple[str, str] | None  # (base model, where it was read); None when nothing names it

    @property
    def name(self) -> str:
        return Path(self.spec).name

    @property
    def benchmarkable(self) -> bool:
        """Whether the plugin can evaluate it now: a merged model, a LoRA adapter, or a GGUF export for a server."""
        return self.variant != "none"

    @property
    def gguf_only(self) -> bool:
        """Whether only a server can evaluate it (nothing transformers loads)."""
        return self.variant == "gguf"

    def describe(self) -> str:
        """One line: what it holds and its base model."""
        held = ", ".join(f"{part}/" for part in self.parts) or "config.json"
        if self.gguf_count:
            held += f" ({self.gguf_count} GGUF file{'s' if self.gguf_count > 1 else ''})"
        if not self.benchmarkable:
            return f"{held}: no merged model, adapter weights or GGUF yet (save the fine-tune first)"
        if self.variant == "lora":
            held += " (the adapter is evaluated on its base)"
        base = f"base {self.base[0]} (from {self.base[1]})" if self.base else "base: not named in lora/"
        return f"{held}; {base}"


def find_experiments(outputs: Path, cwd: Path) -> list[Experiment]:
    """Every experiment under `outputs` (or `outputs` itself when it is one), sorted by name."""
    if not outputs.is_dir():
        raise BenchError(f"{outputs} is not a folder: expected {EXPECTED_LAYOUT}; pass --outputs DIR")
    folders = [outputs] if is_experiment(outputs) else sorted(
        (child for child in outputs.iterdir() if child.is_dir() and is_experiment(child)), key=lambda p: p.name)
    if not folders:
        raise BenchError(f"no experiments found under {outputs}: expected {EXPECTED_LAYOUT}; "
                         "pass --outputs DIR if they are elsewhere")
    return [_experiment(folder, cwd) for folder in folders]


def _experiment(folder: Path, cwd: Path) -> Experiment:
    spec = config_path(folder, cwd)
    location = locate_model(spec, cwd)
    return Experiment(
        spec=spec,
        parts=tuple(part for part in EXPERIMENT_PARTS if (folder / part).is_dir()),
        hf_path=location.hf_path,
        variant=location.variant,
        gguf_count=len(location.gguf_files),
        base=detect_base(location),
    )


def config_path(path: Path, cwd: Path) -> str:
    """`path` as a configuration names it: relative to the project folder when inside it, else absolute."""
    absolute = Path(os.path.abspath(path))  # not resolved: a symlinked outputs/ keeps its name
    try:
        return absolute.relative_to(os.path.abspath(cwd)).as_posix() or "."
    except ValueError:
        return str(absolute)
