"""Options → Plan, in one pass and in a fixed order (no pytest here).

Each step needs only what the steps above it produced: where the model is, which backends reach
the two sides, which base, which tasks both backends can score, the device and dtype, the offline
data, the chat template, the servers' pre-flight (which also gives a served model its identity),
then the settings and the two sides. Every failure is a one-line BenchError, before any model runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends import Backend, format_model_args, get_backend
from pytest_finetune_bench.backends.hf import adapter_has_tokenizer, check_custom_code
from pytest_finetune_bench.backends.openai import cleartext_key_warning, served_name
from pytest_finetune_bench.core.settings import (
    EvalSettings,
    Side,
    canonical_gen_kwargs,
    output_dir_for,
    resolve_batch_size,
    resolve_device,
    resolve_dtype,
)
from pytest_finetune_bench.plan import Plan
from pytest_finetune_bench.plan.choices import BenchOptions
from pytest_finetune_bench.plan.gates import Gate, make_gates
from pytest_finetune_bench.plan.metrics import Headline, choose_headlines
from pytest_finetune_bench.plan.models import ModelLocation, detect_base, expand_models, locate_model, resolve_base
from pytest_finetune_bench.plan.parallel import parallel_settings
from pytest_finetune_bench.plan.task_data import task_data
from pytest_finetune_bench.plan.tasks import TaskCatalog, lm_eval_version
from pytest_finetune_bench.store.fingerprint import adapter_fingerprint

Say = Callable[[str], None]
OFFLINE_TASKS_DIR = "offline-tasks"
TASKS_DIR = "tasks"  # the task folder lm-eval is given for --bench-include-path without --bench-data-dir


def make_plans(options: BenchOptions, cwd: Path, say: Say, catalog: TaskCatalog | None = None) -> tuple[Plan, ...]:
    """One plan per model named by --bench-model (globs and folders of experiments expanded) and per backend."""
    if options.only_base and options.without_base:
        raise BenchError("--bench-only-base evaluates the base model, but --bench-base none names none: drop one")
    warning = cleartext_key_warning(options.base_url)
    if warning:
        # Before the pre-flight, which sends the key too.
        say(warning)
    specs = expand_models(options.models or (options.model,), cwd)
    backends = options.backends
    catalog = catalog or TaskCatalog(options.cache_root, options.include_paths, cwd)
    plans = []
    for spec in specs:
        for backend in backends:
            label = spec if len(backends) == 1 else f"{spec}@{backend}"
            output = _output_for(options, spec, backend, cwd, several_models=len(specs) > 1)
            one = replace(options, model=spec, backend=backend, output=output,
                          base_backend=options.base_backend or (backends[0] if len(backends) > 1 else None))
            plans.append(make_plan(one, cwd, say, catalog, label))
    _check_distinct_outputs(plans)
    return tuple(plans)


def _output_for(options: BenchOptions, spec: str, backend: str, cwd: Path, several_models: bool) -> Path | None:
    """Each plan's own results folder, so no session's files hide another's."""
    if options.output is None and len(options.backends) <= 1:
        return None
    location = locate_model(spec, cwd)
    folder = options.output or output_dir_for(location.root, location.name, cwd)
    if options.output is not None and several_models:
        folder = folder / location.name.replace("/", "__")
    return folder / backend if len(options.backends) > 1 else folder


def _check_distinct_outputs(plans: list[Plan]) -> None:
    seen: dict[Path, str] = {}
    for plan in plans:
        other = seen.setdefault(plan.output_dir.resolve(), plan.label)
        if other != plan.label:
            raise BenchError(f"{other} and {plan.label} would write their results to the same folder "
                             f"{plan.output_dir}: rename one of the model folders or benchmark them separately")


def make_plan(options: BenchOptions, cwd: Path, say: Say, catalog: TaskCatalog | None = None,
              label: str | None = None) -> Plan:
    """Resolve everything that defines one model's runs; BenchError when something cannot be."""
    location = locate_model(options.model, cwd, options.variant)
    base_backend, backend = pick_backends(options, location)
    roles = options.roles
    base = resolve_base_model(options, location, base_backend, cwd) if "base" in roles else None
    finetuned = finetuned_model(options, location, backend, base if base_backend is backend else None, cwd) \
        if "fine-tuned" in roles else None
    output_dir = options.output or output_dir_for(location.root, location.name, cwd)
    catalog = catalog or TaskCatalog(options.cache_root, options.include_paths, cwd)
    tasks, skipped = task_plan(options.task_list, catalog, _used_backends(roles, base_backend, backend))
    # Before any model runs: a task without a known headline stops here, naming its metrics.
    headlines = choose_headlines(tasks, catalog.index, options.metrics)
    device = resolve_device(options.device)
    include_path, data_files = _task_folder(options, catalog, tasks, output_dir)
    models = [(base_backend, base[0], "base")] if base else []
    models += [(backend, finetuned.tokenizer_source, "fine-tuned")] if finetuned else []
    apply_chat_template = chat_template(options, models, say)
    loaded = [(backend, finetuned.loaded, "fine-tuned")] if finetuned else []
    loaded += [(base_backend, base[0], "base")] if base else []
    for side_backend, model, role in loaded:
        side_backend.preflight(model, role, location.gguf_files if role == "fine-tuned" else ())
    check_custom_code([(model, role) for b, model, role in loaded if not b.is_server], options.trust_remote_code)
    settings = EvalSettings(
        tasks=tasks,
        limit=options.effective_limit,
        num_fewshot=options.num_fewshot,
        batch_size=_batch_size(options, device, (base_backend, backend)),
        device=device,
        dtype=resolve_dtype(options.dtype, device),
        gen_kwargs=canonical_gen_kwargs(options.gen_kwargs),
        apply_chat_template=apply_chat_template,
        task_versions=tuple(sorted((t, str(v)) for t, v in catalog.versions(tasks).items())),
        data_files=data_files,
        lm_eval_version=lm_eval_version(),
        include_path=str(include_path) if include_path else None,
        trust_remote_code=options.trust_remote_code,
        **parallel_settings(options, (base_backend, backend), device),
    )
    return Plan(
        options=options,
        location=location,
        base=_side("base", SideModel(base[0]), base[1], base_backend, settings, options.cache_root) if base else None,
        finetuned=_side("fine-tuned", finetuned, "--bench-model", backend, settings, options.cache_root)
        if finetuned else None,
        base_backend=base_backend,
        backend=backend,
        settings=settings,
        skipped=skipped,
        output_dir=output_dir,
        headlines=headlines,
        label=label or location.source,
        gates=_gates(options, headlines) if base and finetuned else (),
        task_data=task_data(tasks, catalog.index),
    )


def _gates(options: BenchOptions, headlines: Mapping[str, Headline]) -> tuple[Gate, ...]:
    """One gate per requested task and kind, thresholds in each metric's own unit (plan/gates.py)."""
    tasks = options.task_list
    return make_gates(tasks, headlines, {t: options.min_gain_for(t) for t in tasks},
                      {t: options.max_drop_for(t) for t in tasks}, {t: options.gate_rule_for(t) for t in tasks},
                      options.confidence)


@dataclass(frozen=True)
class SideModel:
    """What a backend loads for one side: a model, or a base model with a LoRA adapter on top."""

    loaded: str  # the model folder, Hub id or served name the backend loads
    adapter: Path | None = None

    @property
    def shown(self) -> str:
        """The model as the user knows it: the adapter when there is one."""
        return str(self.adapter) if self.adapter is not None else self.loaded

    @property
    def tokenizer_source(self) -> str:
        """Where the tokenizer (and so the chat template) comes from: an adapter may ship its own."""
        if self.adapter is not None and adapter_has_tokenizer(self.adapter):
            return str(self.adapter)
        return self.loaded


def _used_backends(roles: tuple[str, ...], base_backend: Backend, backend: Backend) -> tuple[Backend, ...]:
    return tuple(b for role, b in (("base", base_backend), ("fine-tuned", backend)) if role in roles)


def _side(role: str, model: SideModel, source: str, backend: Backend, settings: EvalSettings,
          cache_dir: Path) -> Side:
    args = backend.model_args(model.loaded, settings)
    fingerprint = backend.fingerprint(model.loaded, cache_dir)
    if model.adapter is not None:
        args |= backend.adapter_args(model.adapter)
        fingerprint = adapter_fingerprint(fingerprint, model.adapter, cache_dir)
    return Side(
        role=role,
        model=model.shown,
        backend=backend.name,
        lm_eval_model=backend.lm_eval_model,
        model_args=format_model_args(args),
        fingerprint=fingerprint,
        source=source,
        child_imports=backend.child_imports,
    )


def pick_backends(options: BenchOptions, location: ModelLocation) -> tuple[Backend, Backend]:
    """(base backend, fine-tuned backend); auto is hf for a merged model or an adapter, ollama for a GGUF export."""
    auto = "ollama" if location.variant == "gguf" else "hf"
    name = auto if options.backend == "auto" else options.backend
    backend = get_backend(name, options.base_url, options.num_concurrent)
    base_name = options.base_backend or name
    base_backend = backend if base_name == name else get_backend(base_name, options.base_url, options.num_concurrent)
    return base_backend, backend


def finetuned_model(options: BenchOptions, location: ModelLocation, backend: Backend,
                    base: tuple[str, str] | None, cwd: Path) -> SideModel:
    """What the backend loads for the fine-tuned side; `base` is the resolved base when the same backend runs it."""
    if backend.is_server:
        if location.variant == "lora" and (options.variant == "lora" or not location.gguf_files):
            raise BenchError(f"the {backend.name} backend serves whole models by name and cannot apply the LoRA "
                             f"adapter {location.adapter}: use --bench-backend hf (or vllm), or merge the adapter "
                             "and serve the merged model or its GGUF")
        return SideModel(options.server_model or served_name(location.name))
    if location.adapter is None:
        return SideModel(location.require_hf())
    # The adapter is applied to the base the session compares against: adapter_config.json's, or --bench-base.
    if base is None:
        explicit = None if options.without_base else options.base
        base = resolve_base_model(replace(options, base=explicit), location, backend, cwd)
    return SideModel(base[0], location.adapter)


def resolve_base_model(options: BenchOptions, location: ModelLocation, backend: Backend, cwd: Path) -> tuple[str, str]:
    if backend.is_server:
        # A server knows models by served name, which no adapter config records: it must be given.
        if options.base:
            return options.base.strip(), "--bench-base"
        found = detect_base(location)
        detected = f" ({found[1]} names {found[0]!r}, which is not a served name)" if found else ""
        raise BenchError(f"the {backend.name} backend needs the base model's served name{detected}: "
                         "pass --bench-base NAME")
    if options.base:
        return resolve_base(options.base, location, cwd), "--bench-base"
    found = detect_base(location)
    if found is None:
        where = location.root or location.source
        raise BenchError(
            f"cannot tell the base model of {where}: no lora/adapter_config.json "
            "(base_model_name_or_path) or lora/training_metrics.json (model_name); pass --bench-base PATH_OR_ID"
        )
    value, source = found
    return resolve_base(value, location, cwd), source


def task_plan(
    requested: tuple[str, ...], catalog: TaskCatalog, backends: tuple[Backend, ...]
) -> tuple[tuple[str, ...], dict[str, str]]:
    """(tasks both models run, {task: reason} for those a backend cannot score)."""
    catalog.validate(requested)
    types = catalog.output_types(requested)
    skipped: dict[str, str] = {}
    for backend in backends:
        for task, reason in backend.unsupported_tasks(types).items():
            skipped.setdefault(task, reason)
    tasks = tuple(t for t in requested if t not in skipped)
    if not tasks:
        raise BenchError(f"no task of this run can be benchmarked: {' '.join(skipped.values())}")
    return tasks, skipped


def _task_folder(
    options: BenchOptions, catalog: TaskCatalog, tasks: tuple[str, ...], output_dir: Path
) -> tuple[Path | None, tuple[str, ...]]:
    """The one folder lm-eval is given as its include path, and the hashes of the offline data files.

    It holds a config for every task of the run, pointing at local files with --bench-data-dir and at
    the user's own tasks with --bench-include-path: one folder, because lm-eval's CLI takes one.
    """
    if options.data_dir is None and not options.include_paths:
        return None, ()
    include_path = output_dir / (OFFLINE_TASKS_DIR if options.data_dir is not None else TASKS_DIR)
    hashes = catalog.prepare_offline(tasks, options.data_dir, include_path, options.num_fewshot)
    return include_path, tuple(sorted(hashes.values()))


def _batch_size(options: BenchOptions, device: str, backends: tuple[Backend, ...]) -> str:
    # Chat servers take one conversation per request (lm-eval forces 1), so record what really runs.
    if options.batch_size == "default" and all(b.is_server for b in backends):
        return "1"
    return resolve_batch_size(options.batch_size, device)


def chat_template(options: BenchOptions, models: list[tuple[Backend, str, str]], say: Say) -> bool:
    """On when every evaluated tokenizer has a template (or when asked); the same for both models.

    `models` holds (backend, model, role) for each side the session evaluates.
    """
    server = next((backend for backend, _, _ in models if backend.is_server), None)
    if options.chat_template != "auto":
        apply = options.chat_template == "on"
        _check_server_template(server, apply)
        return apply
    has = {role: backend.has_chat_template(model) for backend, model, role in models}
    if len(set(has.values())) > 1:
        _check_server_template(server, False)
        only = next(role for role, present in has.items() if present)
        say(f"[bench] only the {only} tokenizer has a chat template: evaluating both without one "
            "(force with --bench-chat-template on)")
    return all(has.values())


def _check_server_template(server: Backend | None, apply: bool) -> None:
    """A chat server always renders the model's own template, so a run without one cannot match it."""
    if not apply and server is not None:
        raise BenchError(
            f"the {server.name} server always applies the model's chat template, so both models must use one: "
            "drop --bench-chat-template off, or compare against a base model that has a chat template"
        )
