"""The questions of `pytest-finetune-bench init`, each with a default and a flag that answers it.

Asked on a terminal; with --yes every question without a flag takes its default, so it runs
in scripts and CI. The answers become bench_* keys, named and defaulted by the option table (plan/option_table.py).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends import backend_names
from pytest_finetune_bench.backends.openai import check_base_url
from pytest_finetune_bench.init.config_file import ConfigTarget, Value, locate_config, target_for, write_config
from pytest_finetune_bench.init.discover import Experiment, config_path, find_experiments
from pytest_finetune_bench.init.estimate import (
    Machine,
    default_suite,
    estimate_note,
    suite_size,
    suite_time,
    this_machine,
)
from pytest_finetune_bench.init.workflow import WORKFLOW, workflow_text
from pytest_finetune_bench.plan.choices import (
    NO_BASE,
    SUITES,
    parse_backends,
    parse_bool,
    parse_choice,
    parse_task_values,
)
from pytest_finetune_bench.plan.option_table import option

T = TypeVar("T")
LOCAL_BACKENDS = ("hf", "vllm")  # they load the merged model's folder
SERVER_DEFAULT_URLS = {"ollama": "http://localhost:11434", "openai": None}
NO_TERMINAL = ("no terminal to ask on: pass --yes to take every default "
               "(and --suite, --backend, ... for other answers; see --help)")


@dataclass(frozen=True)
class Answers:
    """Everything init asked, ready to become bench_* keys."""

    models: tuple[str, ...]
    suite: str
    backend: str
    target_tasks: tuple[str, ...]
    min_gain: tuple[str, ...]
    max_drop: tuple[str, ...]
    base: str | None = None
    base_url: str | None = None


def bench_keys(answers: Answers) -> dict[str, Value]:
    """The ini keys init writes: the plugin's own (plan/option_table.py), tests/test_init.py checks each."""
    given: dict[str, Value | None] = {
        "model": answers.models,
        "base": answers.base,
        "suite": answers.suite,
        "backend": answers.backend,
        "base-url": answers.base_url,
        "target-tasks": ",".join(answers.target_tasks),
        "min-gain": answers.min_gain,
        "max-drop": answers.max_drop,
    }
    return {option(name).ini: value for name, value in given.items() if value is not None}


class Asker:
    """One question at a time: its flag's value when given, else the terminal, else (--yes) the default."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive

    def answer(self, flag: str, given: str | None, question: str, default: str | None,
               check: Callable[[str], T]) -> T:
        if given is not None:
            return _checked(flag, given, check)
        if not self.interactive:
            if default is None:
                raise BenchError(f"{question.rstrip('?: ')}: there is no default, pass {flag}")
            return _checked(flag, default, check)
        while True:
            try:
                text = input(f"{question}" + (f" [{default}]" if default else "") + ": ").strip()
            except EOFError:
                raise BenchError(f"input ended before every question was answered (pass {flag} ...)") from None
            text = text or default or ""
            if not text:
                print("  an answer is needed here")
                continue
            try:
                return check(text)
            except BenchError as exc:
                print(f"  {exc}")


def _checked(flag: str, text: str, check: Callable[[str], T]) -> T:
    try:
        return check(text)
    except BenchError as exc:
        raise BenchError(f"{flag} {text!r}: {exc}") from None


def run_init(args: argparse.Namespace, cwd: Path) -> int:
    """Ask, write the configuration (and the workflow when asked), print the command to run next."""
    if not args.yes and not sys.stdin.isatty():
        raise BenchError(NO_TERMINAL)
    asker = Asker(interactive=not args.yes)
    outputs = args.outputs if args.outputs.is_absolute() else cwd / args.outputs
    found = find_experiments(outputs, cwd)
    print(f"Experiments under {config_path(outputs, cwd)}/:")
    for number, experiment in enumerate(found, 1):
        print(f"  {number}. {experiment.name}: {experiment.describe()}")
    chosen = _ask_experiments(asker, args, found)
    base = _ask_base(asker, args, chosen)
    machine = this_machine([e.hf_path for e in chosen if e.hf_path])
    suite = _ask_suite(asker, args, machine, runs=len(chosen) + (base != NO_BASE))
    backend, base_url = _ask_backend(asker, args, chosen)
    targets, min_gain, max_drop = _ask_thresholds(asker, args, suite)
    answers = Answers(tuple(e.spec for e in chosen), suite, backend, targets, min_gain, max_drop, base, base_url)
    target = target_for(args.config) if args.config else locate_config(cwd)
    ci = asker.answer("--ci", None if args.ci is None else str(args.ci),
                      f"Also write a GitHub Actions job ({WORKFLOW})?", "no", lambda text: _workflow_wanted(text, cwd))
    keys = bench_keys(answers)
    print(f"\nFor {target.where}:")
    for key, value in keys.items():
        print(f"  {key} = {_shown(value)}")
    if not asker.answer("--yes", None, f"Write them to {target.path.name}?", "yes", yes_no):
        print("Nothing written.")
        return 1
    _write(target, keys)
    command = next_command(target, config_path(outputs, cwd), cwd)
    if ci:
        text = workflow_text(command, list(answers.models), target.path.name, gpu=suite != "test")
        from pytest_finetune_bench.store.files import atomic_write_text

        atomic_write_text(cwd / WORKFLOW, text)
        print(f"wrote {WORKFLOW}: add the step that trains or downloads the models to it")
    print(f"Next: {shlex.join(command)}")
    return 0


def _ask_experiments(asker: Asker, args: argparse.Namespace, found: list[Experiment]) -> list[Experiment]:
    ready = [n for n, e in enumerate(found, 1) if e.benchmarkable]
    if not ready:
        raise BenchError("none of these experiments has a merged model or a GGUF export to benchmark: "
                         "build merged_16bit/ (or gguf/) first")
    default = "all" if len(ready) == len(found) else ",".join(map(str, ready))
    return asker.answer("--experiments", args.experiments, "Benchmark which? (numbers or names, comma-separated, "
                        "or all)", default, lambda text: pick_experiments(text, found))


def pick_experiments(text: str, found: list[Experiment]) -> list[Experiment]:
    """The experiments `text` names: numbers, names or `all` (every one that can be benchmarked)."""
    if text.strip().lower() == "all":
        return [e for e in found if e.benchmarkable]
    by_name = {e.name: e for e in found}
    chosen: list[Experiment] = []
    for word in filter(None, (w.strip() for w in text.split(","))):
        if word.isdigit() and 1 <= int(word) <= len(found):
            experiment = found[int(word) - 1]
        elif word in by_name:
            experiment = by_name[word]
        else:
            raise BenchError(f"{word!r} is none of the experiments: use 1 to {len(found)}, their names, or all")
        if not experiment.benchmarkable:
            raise BenchError(f"{experiment.name} has no merged model or GGUF export yet: build merged_16bit/ first, "
                             "or leave it out")
        if experiment not in chosen:
            chosen.append(experiment)
    if not chosen:
        raise BenchError("no experiment chosen")
    return chosen


def _ask_base(asker: Asker, args: argparse.Namespace, chosen: list[Experiment]) -> str | None:
    unnamed = [e.name for e in chosen if e.base is None]
    if not unnamed and args.base is None:
        return None
    named = {e.base[0] for e in chosen if e.base is not None}
    if unnamed:
        print(f"No base model is named in lora/adapter_config.json or lora/training_metrics.json of "
              f"{', '.join(unnamed)}." + (" The one you give is used for every experiment chosen." if named else ""))
    # The other experiments' base is the likely one; bench_base replaces theirs too, so only when they agree.
    default = named.pop() if len(named) == 1 else None
    return asker.answer("--base", args.base, f"Base model to compare against (a folder or Hub id; {NO_BASE}: "
                        "evaluate the fine-tune alone, without gates)", default, _base_value)


def _base_value(text: str) -> str:
    value = text.strip()
    if not value or any(c.isspace() for c in value):
        raise BenchError("give a model folder, a Hub id such as HuggingFaceTB/SmolLM2-135M-Instruct, or none")
    return value


def _ask_suite(asker: Asker, args: argparse.Namespace, machine: Machine, runs: int) -> str:
    print(f"\nSuites (on {machine.label}):")
    width = max(map(len, SUITES))
    for suite in SUITES.values():
        print(f"  {suite.name:<{width}}  {suite_time(suite, machine)}: {suite_size(suite)}")
    print(f"  {estimate_note(machine)}")
    if runs > 1:
        print(f"  A session makes {runs} model runs: the base once (then its cached scores), and each fine-tune.")
    return asker.answer("--suite", args.suite, "Suite", default_suite(machine),
                        lambda text: parse_choice(text, tuple(SUITES), "suite"))


def _ask_backend(asker: Asker, args: argparse.Namespace, chosen: list[Experiment]) -> tuple[str, str | None]:
    known = backend_names()
    print("\nBackends: auto (hf for a merged model, ollama for a GGUF export), " + ", ".join(known) + ".")
    names = asker.answer("--backend", args.backend, "Backend", option("backend").default,
                         lambda text: _backends(text, known, chosen))
    servers = [name for name in names if name in SERVER_DEFAULT_URLS]
    if not servers and args.base_url is None:
        return ",".join(names), None
    default = SERVER_DEFAULT_URLS.get(servers[0]) if servers else None
    url = asker.answer("--base-url", args.base_url, f"Address of the {servers[0] if servers else 'model'} server",
                       default, lambda text: check_base_url(text.strip()))
    return ",".join(names), url


def _backends(text: str, known: tuple[str, ...], chosen: list[Experiment]) -> tuple[str, ...]:
    names = parse_backends(text, known)
    gguf_only = [e.name for e in chosen if e.gguf_only]
    local = [name for name in names if name in LOCAL_BACKENDS]
    if local and gguf_only:
        raise BenchError(f"{local[0]} loads a merged model, and {', '.join(gguf_only)} has only a GGUF export: "
                         "choose auto or ollama")
    return names


def _ask_thresholds(asker: Asker, args: argparse.Namespace,
                    suite: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    tasks = SUITES[suite].tasks
    print(f"\nGates: the target tasks must gain points over the base model; no task ({', '.join(tasks)}) may lose "
          "more than the allowed drop. TASK=N sets one task's own threshold.")
    targets = asker.answer("--target-tasks", args.target_tasks, "Tasks that must improve", tasks[0],
                           lambda text: _target_tasks(text, tasks))
    min_gain = asker.answer("--min-gain", args.min_gain, "Points they must gain", option("min-gain").default,
                            lambda text: _thresholds(text, tasks))
    max_drop = asker.answer("--max-drop", args.max_drop, "Points any task may lose", option("max-drop").default,
                            lambda text: _thresholds(text, tasks))
    return targets, min_gain, max_drop


def _target_tasks(text: str, tasks: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [name for name in names if name not in tasks]
    if not names or unknown:
        raise BenchError(f"choose among this suite's tasks: {', '.join(tasks)}")
    return names


def _thresholds(text: str, tasks: tuple[str, ...]) -> tuple[str, ...]:
    """Validated like the plugin's bench_min_gain / bench_max_drop: N, TASK=N, separated by spaces or commas."""
    entries = tuple(part for part in text.replace(",", " ").split() if part)
    _, per_task = parse_task_values(list(entries), 0.0)
    unknown = [task for task in per_task if task not in tasks]
    if not entries or unknown:
        raise BenchError(f"give points as N or TASK=N (tasks: {', '.join(tasks)})")
    return entries


def yes_no(text: str) -> bool:
    """y/n as well as the plugin's true/false words."""
    short = {"y": True, "n": False}.get(text.strip().lower())
    return parse_bool(text) if short is None else short


def _workflow_wanted(text: str, cwd: Path) -> bool:
    wanted = yes_no(text)
    if wanted and (cwd / WORKFLOW).exists():
        raise BenchError(f"{WORKFLOW} already exists and is left alone: move it away first, or answer no")
    return wanted


def _write(target: ConfigTarget, keys: dict[str, Value]) -> None:
    changes = write_config(target, keys)
    written = [f"{key} (was {old})" if old != _shown(keys[key]) else key for key, old in changes.replaced.items()]
    print(f"wrote {target.where}: " + ", ".join([*written, *changes.added]))
    for key, value in changes.kept.items():
        print(f"  kept {key} = {value} (not asked here; it still applies)")


def _shown(value: Value) -> str:
    return " ".join(value) if isinstance(value, tuple) else value


def next_command(target: ConfigTarget, outputs: str, cwd: Path) -> list[str]:
    """`pytest OUTPUTS`: only the gates run (the folder holds no tests), with the written settings.

    `-c FILE` is added when pytest would not find that file by itself: it looks for it from the folder
    it is given, so a file other than the one it reads here, or an outputs/ outside this folder, needs it.
    """
    try:
        found: Path | None = locate_config(cwd).path
    except BenchError:
        found = None
    finds_it = found is not None and found.resolve() == target.path.resolve() and not Path(outputs).is_absolute()
    chosen = [] if finds_it else [
        "-c", config_path(target.path, cwd)]
    return ["pytest", *chosen, outputs]
