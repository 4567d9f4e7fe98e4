"""One benchmarking session: resolve the models, run both under one set of settings, compare.

No pytest here: the plugin owns one BenchSession per pytest session and asks it for results.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError, __version__
from pytest_finetune_bench.backends import Backend, get_backend
from pytest_finetune_bench.backends.openai import served_name
from pytest_finetune_bench.compare.evidence import TaskAnalysis, analyse
from pytest_finetune_bench.compare.scores import TaskComparison, compare
from pytest_finetune_bench.plan.metrics import Headline, MetricChoice, choose_headlines, headlines_for_results
from pytest_finetune_bench.plan.models import ModelLocation, detect_base, locate_model, resolve_base
from pytest_finetune_bench.plan.settings import (
    SUITES,
    EvalSettings,
    output_dir_for,
    resolve_batch_size,
    resolve_device,
    resolve_dtype,
)
from pytest_finetune_bench.plan.tasks import TaskCatalog, lm_eval_version
from pytest_finetune_bench.run.engine import RunRecord, RunRequest
from pytest_finetune_bench.run.progress import ProgressPrinter
from pytest_finetune_bench.run.recovery import evaluate_with_recovery, interrupted, overall_status, with_batch_size
from pytest_finetune_bench.store.base_cache import BaseCache, BaseKey, describe_age, restore
from pytest_finetune_bench.store.base_cache import default_cache_dir as default_base_cache_dir
from pytest_finetune_bench.store.files import unique_dir
from pytest_finetune_bench.store.locks import locked
from pytest_finetune_bench.store.reference import load_reference, settings_differences
from pytest_finetune_bench.store.summaries import publish_summary

Say = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    """The user's choices, already parsed and validated (see options.py for their sources)."""

    model: str
    base: str | None = None
    suite: str = "quick"
    tasks: tuple[str, ...] = ()
    limit: float | None = None
    limit_set: bool = False
    num_fewshot: int | None = None
    batch_size: str = "default"
    device: str = "auto"
    dtype: str = "auto"
    gen_kwargs: str | None = None
    chat_template: str = "auto"
    output: Path | None = None
    data_dir: Path | None = None
    backend: str = "auto"  # auto: hf for a merged model, else ollama for a GGUF export
    base_backend: str | None = None  # None: the same backend as the fine-tuned model
    base_url: str | None = None  # the ollama/openai server (no credentials: keys come from the environment)
    server_model: str | None = None  # the fine-tuned model's served name (default: from its folder name)
    num_concurrent: int = 1
    min_gain: float = 2.0
    min_gain_per_task: dict[str, float] = field(default_factory=dict)
    max_drop: float = 5.0
    max_drop_per_task: dict[str, float] = field(default_factory=dict)
    target_tasks: tuple[str, ...] = ("ifeval",)
    metrics: dict[str, MetricChoice] = field(default_factory=dict)  # --bench-metric: task → (metric, filter)
    confidence: float | None = None
    cache_dir: Path | None = None
    refresh_base: bool = False
    compare_to: Path | None = None
    timeout_s: float | None = None  # --bench-timeout: limit of each model run; None: unlimited

    @property
    def task_list(self) -> tuple[str, ...]:
        return self.tasks or SUITES[self.suite].tasks

    @property
    def effective_limit(self) -> float | None:
        return self.limit if self.limit_set else SUITES[self.suite].limit if not self.tasks else None

    def min_gain_for(self, task: str) -> float | None:
        """Points a target task must gain; None for tasks that only must not regress."""
        if task in self.min_gain_per_task:
            return self.min_gain_per_task[task]
        return self.min_gain if task in self.target_tasks else None

    def max_drop_for(self, task: str) -> float:
        return self.max_drop_per_task.get(task, self.max_drop)


class BenchSession:
    """Runs the base and fine-tuned evaluations at most once per session and compares them."""

    def __init__(self, options: BenchOptions, cwd: Path, say: Say) -> None:
        self.options = options
        self.cwd = cwd
        self.say = say
        self.location: ModelLocation = locate_model(options.model, cwd)
        backend_name = self._auto_backend() if options.backend == "auto" else options.backend
        self.backend: Backend = self._make_backend(backend_name)
        base_name = options.base_backend or self.backend.name
        self.base_backend: Backend = self.backend if base_name == self.backend.name else self._make_backend(base_name)
        self.base_model, self.base_source = self._resolve_base()
        self.output_dir = options.output or output_dir_for(self.location.root, self.location.name, cwd)
        self.catalog = TaskCatalog()
        self.started_at = datetime.now()
        self.run_stamp = self.started_at.strftime("%Y-%m-%dT%H-%M-%S")
        self._settings: EvalSettings | None = None
        self._include_path: Path | None = None
        self._data_hashes: dict[str, str] = {}
        self._runs: dict[str, RunRecord] = {}
        self._requests: dict[str, RunRequest] = {}
        self._errors: dict[str, BenchError] = {}
        self._finetuned_dir: Path | None = None
        self._plan: tuple[tuple[str, ...], dict[str, str]] | None = None
        self._headlines: dict[str, Headline] = {}
        self.base_cache = BaseCache(options.cache_dir or default_base_cache_dir())
        self._comparison: dict[str, TaskComparison] | None = None
        self._analyses: dict[str, TaskAnalysis] = {}
        self.analysis_error: str | None = None

    # ----------------------------------------------------------------- resolution
    def _auto_backend(self) -> str:
        """hf for a merged model; ollama for a GGUF-only export; else hf, which asks for a merged model."""
        return "ollama" if self.location.hf_path is None and self.location.gguf_files else "hf"

    def _make_backend(self, name: str) -> Backend:
        return get_backend(name, self.options.base_url, self.options.num_concurrent)

    def _backends(self) -> tuple[Backend, ...]:
        return (self.base_backend,) if self.base_backend is self.backend else (self.base_backend, self.backend)

    def _resolve_base(self) -> tuple[str, str]:
        if self.base_backend.is_server:
            return self._served_base()
        if self.options.base:
            return resolve_base(self.options.base, self.location, self.cwd), "--bench-base"
        found = detect_base(self.location)
        if found is None:
            where = self.location.root or self.location.source
            raise BenchError(
                f"cannot tell the base model of {where}: no lora/adapter_config.json "
                "(base_model_name_or_path) or lora/training_metrics.json (model_name); pass --bench-base PATH_OR_ID"
            )
        value, source = found
        return resolve_base(value, self.location, self.cwd), source

    def _served_base(self) -> tuple[str, str]:
        """A server knows models by served name, which no adapter config records: it must be given."""
        if self.options.base:
            return self.options.base.strip(), "--bench-base"
        found = detect_base(self.location)
        detected = f" ({found[1]} names {found[0]!r}, which is not a served name)" if found else ""
        raise BenchError(
            f"the {self.base_backend.name} backend needs the base model's served name{detected}: pass --bench-base NAME"
        )

    @property
    def finetuned_model(self) -> str:
        if self.backend.is_server:
            return self.options.server_model or served_name(self.location.name)
        return self.location.require_hf()

    @property
    def tasks(self) -> list[str]:
        return list(self.options.task_list)

    @property
    def active(self) -> bool:
        """Whether any benchmark was started (then benchmark.json is written)."""
        return bool(self._runs or self._errors)

    def settings(self) -> EvalSettings:
        """The one set of settings both models run under, resolved on first use."""
        if self._settings is None:
            self._settings = self._resolve_settings()
        return self._settings

    def _resolve_settings(self) -> EvalSettings:
        opts = self.options
        finetuned = self.finetuned_model
        tasks, skipped = self._task_plan()
        if not tasks:
            raise BenchError(f"no task of this run can be benchmarked: {' '.join(skipped.values())}")
        # Before any model runs: a task without a known headline stops here, naming its metrics.
        self._headlines = choose_headlines(tasks, self.catalog.index, opts.metrics)
        device = resolve_device(opts.device)
        if opts.data_dir is not None:
            self._include_path = self.output_dir / "offline-tasks"
            self._data_hashes = self.catalog.prepare_offline(tasks, opts.data_dir, self._include_path, opts.num_fewshot)
        apply_chat_template = self._chat_template(finetuned)
        self._preflight(finetuned)
        return EvalSettings(
            tasks=tasks,
            limit=opts.effective_limit,
            num_fewshot=opts.num_fewshot,
            batch_size=self._batch_size(device),
            device=device,
            dtype=resolve_dtype(opts.dtype, device),
            gen_kwargs=opts.gen_kwargs,
            apply_chat_template=apply_chat_template,
            data_dir=str(opts.data_dir.resolve()) if opts.data_dir else None,
            backend=self._backend_label(),
        )

    def _task_plan(self) -> tuple[tuple[str, ...], dict[str, str]]:
        """(tasks both models run, {task: reason} for those a backend cannot score), decided once."""
        if self._plan is None:
            self.catalog.validate(self.tasks)
            types = self.catalog.output_types(self.tasks)
            skipped: dict[str, str] = {}
            for backend in self._backends():
                for task, reason in backend.unsupported_tasks(types).items():
                    skipped.setdefault(task, reason)
            self._plan = tuple(t for t in self.tasks if t not in skipped), skipped
        return self._plan

    def skipped_tasks(self) -> dict[str, str]:
        """{task: reason} for requested tasks that are not benchmarked, for the gates and the summary.

        {} while the task plan cannot be made: the run that needs it reports that error.
        """
        try:
            return dict(self._task_plan()[1])
        except BenchError:
            return {}

    def _preflight(self, finetuned: str) -> None:
        """Fail in one line, before any benchmarking, when a server or a served model is missing."""
        self.backend.preflight(finetuned, "fine-tuned", self.location.gguf_files)
        self.base_backend.preflight(self.base_model, "base", ())

    def _batch_size(self, device: str) -> str:
        # Chat servers take one conversation per request (lm-eval forces 1), so record what really runs.
        if self.options.batch_size == "default" and all(b.is_server for b in self._backends()):
            return "1"
        return resolve_batch_size(self.options.batch_size, device)

    def _backend_label(self) -> str:
        if self.base_backend is self.backend:
            return self.backend.name
        return f"base={self.base_backend.name},fine-tuned={self.backend.name}"

    def backends_line(self) -> str:
        """Which backend produces each side, for the terminal summary."""
        return (
            f"backends: base {self.base_model} via {self.base_backend.name} ({self.base_backend.lm_eval_model}), "
            f"fine-tuned {self.finetuned_model_name()} via {self.backend.name} ({self.backend.lm_eval_model})"
        )

    def finetuned_model_name(self) -> str:
        """The fine-tuned model as its backend reaches it, or the folder name when it cannot."""
        try:
            return self.finetuned_model
        except BenchError:
            return self.location.name

    def _chat_template(self, finetuned: str) -> bool:
        """On when both tokenizers have a template (or when asked); the same for both models."""
        choice = self.options.chat_template
        if choice != "auto":
            return self._server_template_check(choice == "on")
        base_has = self.base_backend.has_chat_template(self.base_model)
        ft_has = self.backend.has_chat_template(finetuned)
        if base_has != ft_has:
            self._server_template_check(False)
            self.say(
                "[bench] only the "
                + ("base" if base_has else "fine-tuned")
                + " tokenizer has a chat template: evaluating both without one (force with --bench-chat-template on)"
            )
        return base_has and ft_has

    def _server_template_check(self, apply: bool) -> bool:
        """A chat server always renders the model's own template, so a run without one cannot match it."""
        server = next((b for b in self._backends() if b.is_server), None)
        if not apply and server is not None:
            raise BenchError(
                f"the {server.name} server always applies the model's chat template, so both models must use one: "
                "drop --bench-chat-template off, or compare against a base model that has a chat template"
            )
        return apply

    # ----------------------------------------------------------------- running
    def run(self, role: str) -> RunRecord:
        """The run for `role` ("base" or "fine-tuned"), evaluated on first use."""
        if role in self._runs:
            return self._runs[role]
        if role in self._errors:
            raise self._errors[role]
        try:
            record = self._evaluate(role)
        except BenchError as exc:
            self._errors[role] = exc
            raise
        except BaseException as exc:  # pytest-timeout's alarm or Ctrl-C: the child tree is stopped already
            self._errors[role] = interrupted(role, exc)
            raise
        self._runs[role] = record
        return record

    def _evaluate(self, role: str) -> RunRecord:
        if role == "base" and self.options.compare_to is not None:
            return self._reference_run(self.options.compare_to)
        if role != "base":
            return self._run_model(role)
        key = self.base_key()
        if key is None:
            self.say("[bench] base: this backend cannot fingerprint the model, so its scores are not cached")
            return self._run_model(role)
        # One session computes a given base; another one on the same base waits, then reuses it.
        with locked(self.base_cache.entry_dir(key), on_wait=self._say_waiting):
            cached = self._cached_base(key)
            if cached is not None:
                return cached
            record = self._run_model(role)
            if record.status == "complete":
                self.base_cache.store(key, record)
            return record

    def _say_waiting(self, lock: Path) -> None:
        self.say(f"[bench] base: another session is computing the same base scores; waiting for it ({lock})")

    def _run_model(self, role: str) -> RunRecord:
        request = self.request(role)
        tasks = ", ".join(request.settings.tasks)
        self.say(f"[bench] {role}: evaluating {request.model} via {request.backend.name} on {tasks}")
        return evaluate_with_recovery(request, ProgressPrinter(self.say), self.say, self.options.timeout_s)

    # ----------------------------------------------------------------- base cache
    def base_key(self) -> BaseKey | None:
        """The cache key of the base run; None when the base's content cannot be fingerprinted."""
        request = self.request("base")
        fingerprint = self.base_backend.fingerprint(request.model)
        if fingerprint is None:
            return None
        s = request.settings
        return BaseKey(
            model=request.model,
            model_fingerprint=fingerprint,
            backend=self.base_backend.name,
            model_args=request.model_args,
            tasks=s.tasks,
            task_versions=self.catalog.versions(s.tasks),
            limit=s.limit,
            num_fewshot=s.num_fewshot,
            gen_kwargs=s.gen_kwargs,
            apply_chat_template=s.apply_chat_template,
            fewshot_as_multiturn=s.fewshot_as_multiturn,
            dtype=s.dtype,
            device=s.device,
            batch_size=s.batch_size,
            seeds=s.seeds,
            lm_eval_version=lm_eval_version(),
            data_files=tuple(sorted(self._data_hashes.values())),
        )

    def _cached_base(self, key: BaseKey) -> RunRecord | None:
        if self.options.refresh_base:
            self.say("[bench] base: --bench-refresh-base given: recomputing the base scores")
            return None
        cached, corrupt = self.base_cache.load(key)
        if corrupt:
            self.say(f"[bench] base: cache entry {key.digest()[:12]} was corrupt ({corrupt}): recomputing")
        if cached is None:
            return None
        record = restore(cached, self.request("base").results_dir)
        record.model = key.model
        self.say(
            f"[bench] base: scores from cache, computed {describe_age(cached.created)} "
            f"(key {key.digest()[:12]} in {self.base_cache.root})"
        )
        return record

    def _reference_run(self, path: Path) -> RunRecord:
        record, reference = load_reference(path)
        self.request("fine-tuned")  # resolve our settings, so they can be compared
        differences = settings_differences(reference, self._reproduce())
        if differences:
            raise BenchError(
                f"--bench-compare-to {path} was measured under other settings ({'; '.join(differences)}): "
                "re-run it with the same settings, or drop --bench-compare-to"
            )
        self.say(f"[bench] reference: {record.model} from {path}")
        return record

    def request(self, role: str) -> RunRequest:
        if role not in self._requests:
            self._requests[role] = self._build_request(role)
        return self._requests[role]

    def _build_request(self, role: str) -> RunRequest:
        settings = self.settings()
        if role == "base":
            model, run_dir, backend = self.base_model, self.output_dir / "base", self.base_backend
            log = run_dir / f"run_{self.run_stamp}.log"
        else:
            model, run_dir, backend = self.finetuned_model, self.finetuned_dir(), self.backend
            log = run_dir / "run.log"
        return RunRequest(
            role=role,
            model=model,
            backend=backend,
            settings=settings,
            results_dir=run_dir / "lm-eval",
            log_path=log,
            include_path=self._include_path,
            include_defaults=self._include_path is None,
            use_cache=self._responses_cache(backend, model, settings),
        )

    def finetuned_dir(self) -> Path:
        if self._finetuned_dir is None:
            self._finetuned_dir = unique_dir(self.output_dir / "fine-tuned", self.run_stamp)
        return self._finetuned_dir

    def _responses_cache(self, backend: Backend, model: str, settings: EvalSettings) -> Path | None:
        """lm-eval's response cache, one per model content and settings; None when the content is unknown.

        lm-eval keys cached responses by prompt only (lm-eval issues #2715, #4063): a file shared by
        two models would hand the base model's answers to the fine-tuned one.
        """
        fingerprint = backend.fingerprint(model)
        if fingerprint is None:
            return None
        key = json.dumps(
            {"model": fingerprint, "settings": settings.to_json(), "data": self._data_hashes,
             "lm_eval": lm_eval_version()},
            sort_keys=True,
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        return self.output_dir / ".responses" / digest

    # ----------------------------------------------------------------- results
    def completed(self, role: str) -> RunRecord | None:
        return self._runs.get(role)

    def errors(self) -> dict[str, BenchError]:
        return dict(self._errors)

    def comparison(self) -> dict[str, TaskComparison]:
        """Per task: both scores, the delta, its paired statistics and flip counts (computed once)."""
        if self._comparison is None:
            base = self.run("base")
            finetuned = self.run("fine-tuned")
            tasks = [t for t in self.tasks if t not in self.skipped_tasks()]
            headlines = headlines_for_results(
                tasks, self._headlines, (finetuned.results, base.results), self.options.metrics
            )
            comparisons = compare(base.results, finetuned.results, headlines)
            self._analyses = self._analyse(comparisons, base, finetuned)
            self._comparison = comparisons
        return self._comparison

    def _analyse(self, comparisons: dict[str, TaskComparison], base: RunRecord,
                 finetuned: RunRecord) -> dict[str, TaskAnalysis]:
        """Statistics and flips behind each delta; when they fail, the failure is recorded and the scores kept."""
        try:
            analyses = analyse(comparisons, base, finetuned, self._finetuned_dir)
            for task, analysis in analyses.items():
                comparisons[task].extra.update(analysis.to_json(self.options.confidence or 0.95))
        except Exception as exc:  # noqa: BLE001 - both runs are done: nothing may cost their scores
            self.analysis_error = f"statistics and flips failed ({type(exc).__name__}: {exc}); the scores are kept"
            self.say(f"[bench] {self.analysis_error}")
            for comparison in comparisons.values():
                comparison.extra.clear()
            return {}
        return analyses

    def analysis(self, task: str) -> TaskAnalysis | None:
        """Per-document evidence (samples, flips, statistics) behind `task`'s delta; None when it failed."""
        self.comparison()
        return self._analyses.get(task)

    def summary(self) -> dict[str, Any]:
        """benchmark.json: what was compared, the scores, and what reproduces them."""
        base, finetuned = self._runs.get("base"), self._runs.get("fine-tuned")
        comparison = self.comparison() if base and finetuned else {}
        return {
            "schema_version": 1,
            "model_name": self.location.name,
            "model_path": self.finetuned_model_or_none(),
            "base_model_name": self.base_model,
            "base_model_source": self.base_source,
            "timestamp": self.started_at.astimezone().isoformat(timespec="seconds"),
            "status": self.status(),
            "run_status": self.run_statuses(),
            "errors": self._error_messages(),
            "base_model": self._run_summary("base", base),
            "fine_tuned_model": self._run_summary("fine-tuned", finetuned),
            "comparison": {task: c.to_json() for task, c in comparison.items()},
            "skipped_tasks": self.skipped_tasks(),
            "backends": {"base": self.base_backend.name, "fine-tuned": self.backend.name},
            "reproduce": self._reproduce(),
        }

    def _error_messages(self) -> dict[str, str]:
        """Per side, why its run failed; under `comparison`, why the statistics failed."""
        messages = {role: str(exc) for role, exc in self._errors.items()}
        if self.analysis_error:
            messages["comparison"] = self.analysis_error
        return messages

    def finetuned_model_or_none(self) -> str | None:
        return self.location.hf_path

    def status(self) -> str:
        """complete, timeout, crashed (a side failed, or was scored on part of its samples) or incomplete."""
        return overall_status(self.run_statuses())

    def run_statuses(self) -> dict[str, str]:
        """{role: complete | timeout | crashed} for every run this session started."""
        statuses = {role: record.status for role, record in self._runs.items()}
        statuses.update({role: getattr(exc, "status", "crashed") for role, exc in self._errors.items()})
        return statuses

    def _run_summary(self, role: str, record: RunRecord | None) -> dict[str, Any] | None:
        if record is None:
            return None
        backend = self.base_backend if role == "base" else self.backend
        applied = self._settings is not None and self._settings.apply_chat_template
        return {
            "model": record.model,
            "results": {t: record.results.get("results", {}).get(t) for t in self.tasks},
            "benchmark_dir": str(record.results_file.parent.parent),
            "results_file": str(record.results_file),
            "samples_files": {t: str(p) for t, p in record.samples_files.items()},
            "timestamp": record.timestamp,
            "status": record.status,
            "batch_size": record.extra.get("batch_size"),
            "samples": record.progress,
            "partial_reason": record.extra.get("failure"),
            "generated": record.generated,
            "from_cache": record.from_cache,
            "backend": backend.name,
            "lm_eval_model": backend.lm_eval_model,
            # Who rendered the chat template: lm-eval with the tokenizer's, or the server with the model's own.
            "chat_template": backend.chat_template_applied_by if applied else None,
        }

    def _reproduce(self) -> dict[str, Any]:
        if self._settings is None:
            return {"lm_eval_version": _safe_lm_eval_version(), "plugin_version": __version__}
        s = self._settings
        return {
            "lm_eval_version": lm_eval_version(),
            "plugin_version": __version__,
            "backend": s.backend,
            "device": s.device,
            "dtype": s.dtype,
            # What finished (smaller after an out-of-memory retry), and what was asked for.
            "batch_size": self._finished("batch_size") or s.batch_size,
            "batch_size_requested": s.batch_size,
            "gen_kwargs": s.gen_kwargs,
            "limit": s.limit,
            "num_fewshot": s.num_fewshot,
            "apply_chat_template": s.apply_chat_template,
            "fewshot_as_multiturn": s.fewshot_as_multiturn,
            "seeds": {"random": s.seeds[0], "numpy": s.seeds[1], "torch": s.seeds[2], "fewshot": s.seeds[3]},
            "tasks": list(s.tasks),
            "data_dir": s.data_dir,
            "data_files": self._data_hashes,
            "model_args": {role: req.model_args for role, req in self._requests.items()},
            "commands": {role: self._finished_request(role).cli_command() for role in self._requests},
        }

    def _finished_request(self, role: str) -> RunRequest:
        """The request whose run produced `role`'s scores: its batch size may be smaller than the one asked for."""
        request = self._requests[role]
        record = self._runs.get(role)
        finished = record.extra.get("batch_size") if record is not None else None
        return with_batch_size(request, str(finished)) if finished else request

    def _finished(self, key: str) -> str | None:
        """`key` of the runs' records when every finished run agrees on it, else the values per side."""
        values = {role: str(r.extra[key]) for role, r in self._runs.items() if key in r.extra}
        if not values:
            return None
        distinct = set(values.values())
        return distinct.pop() if len(distinct) == 1 else ", ".join(f"{r}={v}" for r, v in values.items())

    def write_summary(self) -> Path | None:
        """Write this session's summary (see history.py: an incomplete one never replaces a complete one).

        Returns the file that holds it.
        """
        if not self.active:
            return None
        try:
            summary = self.summary()
        except Exception as exc:  # noqa: BLE001 - the scores of finished runs must reach disk whatever else failed
            summary = self._scores_only_summary(f"building the summary failed ({type(exc).__name__}: {exc}); "
                                                "it holds the scores only")
            self.say(f"[bench] {summary['errors']['summary']}")
        return publish_summary(self.output_dir, self._finetuned_dir, summary)

    def _scores_only_summary(self, error: str) -> dict[str, Any]:
        """benchmark.json from what cannot fail: who was compared, the statuses and lm-eval's own results."""
        sides = {"base_model": self._runs.get("base"), "fine_tuned_model": self._runs.get("fine-tuned")}
        return {
            "schema_version": 1,
            "model_name": self.location.name,
            "base_model_name": self.base_model,
            "timestamp": self.started_at.astimezone().isoformat(timespec="seconds"),
            "status": self.status(),
            "run_status": self.run_statuses(),
            "errors": {**self._error_messages(), "summary": error},
            **{key: None if record is None else {"model": record.model, "results": record.task_results,
                                                 "results_file": str(record.results_file)}
               for key, record in sides.items()},
        }


def _safe_lm_eval_version() -> str | None:
    try:
        return lm_eval_version()
    except BenchError:
        return None
