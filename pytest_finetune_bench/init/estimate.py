"""How long each suite takes on this machine, said before anything runs.

The per-run workload estimate (run/progress.py) needs lm-eval's loaded tasks; before a run only the
suites' sizes are known, so they are listed here. On a CPU the time comes from the same measured rate
the run's own warning uses; on a GPU, or for a model behind a server, nothing measured predicts it,
and the estimate says so instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_finetune_bench.plan.choices import SUITES, Suite
from pytest_finetune_bench.run.progress import CPU_TOKEN_PARAMS_PER_S, generation_seconds
from pytest_finetune_bench.run.watchdog import format_duration

# Documents each suite task evaluates (the split lm-eval 0.4.13 scores) and its generation budget
# (max_gen_toks; 0 for multiple choice, which is scored by log-likelihood and generates nothing).
TASK_SIZES: dict[str, tuple[int, int]] = {
    "ifeval": (541, 1280),
    "gsm8k": (1319, 256),
    "hellaswag": (10042, 0),
    "mmlu": (14042, 0),
}
# Above this, a CPU default suite is `test`: the quick suite would keep a newcomer waiting for hours.
DEFAULT_SUITE_LIMIT_S = 60 * 60
RATE_SOURCE = (f"rough: generation alone, at the rate measured on a 2-core CPU in docs/performance.md "
               f"({CPU_TOKEN_PARAMS_PER_S / 135e6:.0f} prompt-token slots a second for 135M parameters, "
               "scaled by model size); slower when other work shares the cores")


@dataclass(frozen=True)
class Machine:
    """What the estimate depends on: the device `auto` picks here and the largest model's size."""

    device: str
    params: int | None  # None: no local weights to measure (GGUF for a server, Hub id)

    @property
    def label(self) -> str:
        size = f", models of {self.params / 1e6:,.0f}M parameters" if self.params else ""
        return f"{self.device}{size}"


def this_machine(model_folders: list[str]) -> Machine:
    """The device `--bench-device auto` resolves to here, and the parameters of the largest model folder."""
    from pytest_finetune_bench.core.settings import resolve_device
    from pytest_finetune_bench.run.child_lm import folder_params

    sizes = [size for folder in model_folders if (size := folder_params(Path(folder))) is not None]
    return Machine(resolve_device("auto"), max(sizes) if sizes else None)


def suite_size(suite: Suite) -> str:
    """What a suite evaluates: documents per task and, for generation, the answer length."""
    parts = []
    for task in suite.tasks:
        docs, tokens = TASK_SIZES.get(task, (0, 0))
        docs = min(docs, suite.limit) if suite.limit else docs
        parts.append(f"{task} {docs:,} " + (f"prompts x up to {tokens} tokens" if tokens else "multiple-choice"))
    return ", ".join(parts)


def suite_seconds(suite: Suite, machine: Machine) -> float | None:
    """Generation time of one model on this machine's CPU; None where nothing measured predicts it."""
    tasks = {}
    for task in suite.tasks:
        docs, tokens = TASK_SIZES.get(task, (0, 0))
        tasks[task] = {"docs": min(docs, suite.limit) if suite.limit else docs, "max_gen_toks": tokens}
    return generation_seconds({"device": machine.device, "model_params": machine.params, "tasks": tasks})


def suite_time(suite: Suite, machine: Machine) -> str:
    """The time of one model run, as a guide shows it."""
    seconds = suite_seconds(suite, machine)
    if seconds is None:
        return "not estimated"
    scored = sum(TASK_SIZES.get(task, (0, 0))[0] for task in suite.tasks if not TASK_SIZES.get(task, (0, 1))[1])
    return (f"~{format_duration(seconds)} per model" if not scored
            else f"over {format_duration(seconds)} per model, plus the multiple-choice scoring")


def estimate_note(machine: Machine) -> str:
    """Where the times come from, or why there are none."""
    if machine.device != "cpu":
        return (f"Times on {machine.device}: not estimated, nothing measured here predicts a GPU; "
                "the run shows its pace as it goes.")
    if machine.params is None:
        return "Times: not estimated, the model has no local weights to size (a GGUF for a server, or a Hub id)."
    return f"Times on this CPU: {RATE_SOURCE}."


def default_suite(machine: Machine) -> str:
    """quick, unless this machine would take over an hour on it: then test, to check the set-up first."""
    seconds = suite_seconds(SUITES["quick"], machine)
    return "test" if seconds is not None and seconds > DEFAULT_SUITE_LIMIT_S else "quick"
