"""Carry out a plan: each side's run at most once per session, the base through its cache (no pytest here).

The base side comes from an earlier session's fine-tuned run with `--bench-compare-to`, else through
the base cache (store/base_cache.py), the one way a base run is shared: another experiment of this
session, an entry on disk with the same identity, else a run. Each run also gets lm-eval's response
cache under the same cache key, so a stopped run resumes where it stopped. That cache holds pickles, so
it lives in the per-user cache folder, never in the model's folder (a `benchmarks/` folder shipped
with someone else's model is never loaded), and only files the user owns are kept in it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.core.records import Execution, RunRecord, RunRequest
from pytest_finetune_bench.plan import Plan
from pytest_finetune_bench.run.early_stop import paired_early_stop, tasks_stopped_early, with_early_stop
from pytest_finetune_bench.run.progress import ProgressPrinter
from pytest_finetune_bench.run.recovery import (
    evaluate_sides_with_recovery,
    evaluate_with_recovery,
    interrupted,
    overall_status,
)
from pytest_finetune_bench.store.base_cache import BaseCache, describe_age, place_files, restore
from pytest_finetune_bench.store.files import claim_cache_dir, distrust, remove_stale_staging, unique_dir
from pytest_finetune_bench.store.locks import locked
from pytest_finetune_bench.store.reference import load_reference, settings_differences

Say = Callable[[str], None]
RESPONSES_DIR = "responses"  # in the cache folder (--bench-cache-dir)


class Executor:
    """The runs of one plan: evaluated on first use, remembered, failures kept with their reasons."""

    def __init__(self, plan: Plan, say: Say, started_at: datetime | None = None,
                 base_cache: BaseCache | None = None) -> None:
        self.plan = plan
        self.say = say
        self.started_at = started_at or datetime.now()
        self.run_stamp = self.started_at.strftime("%Y-%m-%dT%H-%M-%S")
        # One per pytest session, shared by its experiments: a base they have in common is evaluated once.
        self.base_cache = base_cache if base_cache is not None else BaseCache(plan.options.cache_root)
        self.runs: dict[str, RunRecord] = {}
        self.errors: dict[str, BenchError] = {}
        self.requests: dict[str, RunRequest] = {}
        self._finetuned_dir: Path | None = None

    @property
    def active(self) -> bool:
        """Whether any run was started (then benchmark.json is written)."""
        return bool(self.runs or self.errors)

    @property
    def finetuned_dir(self) -> Path | None:
        """This session's `fine-tuned/<timestamp>/` folder, once the fine-tuned run needed it."""
        return self._finetuned_dir

    def run(self, role: str) -> RunRecord:
        """The run for `role` ("base" or "fine-tuned"), evaluated on first use."""
        if role in self.runs:
            return self.runs[role]
        if role in self.errors:
            raise self.errors[role]
        try:
            record = self._evaluate(role)
        except BenchError as exc:
            self.errors[role] = exc
            raise
        except BaseException as exc:  # pytest-timeout's alarm or Ctrl-C: the child tree is stopped already
            self.errors[role] = interrupted(role, exc)
            raise
        self.runs[role] = record
        return record

    def statuses(self) -> dict[str, str]:
        """{role: complete | timeout | crashed} for every run this session started."""
        statuses = {role: record.status for role, record in self.runs.items()}
        statuses.update({role: getattr(exc, "status", "crashed") for role, exc in self.errors.items()})
        return statuses

    def status(self) -> str:
        """complete, timeout, crashed (a side failed, or was scored on part of its samples) or incomplete."""
        return overall_status(self.statuses(), self.plan.roles)

    def execution(self) -> Execution:
        """What the runs came to so far, as values (benchmark.json is built from them)."""
        return Execution(self.started_at, self.status(), self.statuses(), dict(self.runs), dict(self.requests),
                         dict(self.errors))

    def _evaluate(self, role: str) -> RunRecord:
        if not self.plan.has(role):
            raise BenchError(f"this session evaluates the {' and '.join(self.plan.roles)} model only "
                             f"(--bench-base none or --bench-only-base): there is no {role} run")
        if role == "fine-tuned":
            return self._run_model(role)
        if self.plan.options.compare_to is not None:
            return self._reference_run(self.plan.options.compare_to)
        return self._base_run()

    def _base_run(self) -> RunRecord:
        """The base run through the base cache: this session's, else the entry on disk, else a new run."""
        identity = self.plan.identity("base")
        shared = self.base_cache.shared(identity)
        if shared is not None:
            return self._shared_base(*shared)
        not_on_disk = self._why_not_on_disk()
        if not_on_disk is None:
            record = self._cached_or_run_base()
        else:
            self.say(f"[bench] base: {not_on_disk}")
            record = self._run_base()
        if _full_run(record):
            self.base_cache.share(identity, self.plan.label, record)
        return record

    def _why_not_on_disk(self) -> str | None:
        """Why the base's scores cannot be kept on disk (they are still shared within the session), else None."""
        if self.plan.side("base").fingerprint is None:
            return "this backend cannot fingerprint the model, so its scores are not cached"
        refused = self.base_cache.claim()
        if refused is not None:
            return f"not using the base-score cache ({refused}): set --bench-cache-dir to a folder of your own"
        return None

    def _shared_base(self, label: str, record: RunRecord) -> RunRecord:
        """The base run another experiment of this session obtained under the same identity, copied to ours."""
        results_file, samples_files = place_files(record.results_file, record.samples_files,
                                                  self.request("base").results_dir)
        self.say(f"[bench] base: scores shared with {label} (same base, same settings)")
        return replace(record, model=self.plan.side("base").model, results_file=results_file,
                       samples_files=samples_files, generated=0, seconds=None,
                       extra={**record.extra, "shared_with": label})

    def _cached_or_run_base(self) -> RunRecord:
        identity = self.plan.identity("base")
        # One session computes a given base; another one on the same base waits, then reuses it.
        with locked(self.base_cache.entry_dir(identity), on_wait=self._say_waiting):
            cached = self._cached_base()
            if cached is not None:
                return cached
            record = self._run_base()
            if _full_run(record):
                self.base_cache.store(identity, record)
            return record

    def _say_waiting(self, lock: Path) -> None:
        self.say(f"[bench] base: another session is computing the same base scores; waiting for it ({lock})")

    def _cached_base(self) -> RunRecord | None:
        if self.plan.options.refresh_base:
            self.say("[bench] base: --bench-refresh-base given: recomputing the base scores")
            return None
        identity = self.plan.identity("base")
        cached, corrupt = self.base_cache.load(identity)
        key = self.base_cache.entry_dir(identity).name[:12]
        if corrupt:
            self.say(f"[bench] base: cache entry {key} was corrupt ({corrupt}): recomputing")
        if cached is None:
            return None
        record = restore(cached, self.request("base").results_dir)
        record.model = self.plan.side("base").model
        self.say(f"[bench] base: scores from cache, computed {describe_age(cached.created)} "
                 f"(key {key} in {self.base_cache.root})")
        return record

    def _reference_run(self, path: Path) -> RunRecord:
        record, reference = load_reference(path)
        differences = settings_differences(reference, self.plan.identity("fine-tuned"))
        if differences:
            raise BenchError(
                f"--bench-compare-to {path} was measured under other settings ({'; '.join(differences)}): "
                "re-run it with the same settings, or drop --bench-compare-to"
            )
        self.say(f"[bench] reference: {record.model} from {path}")
        return record

    def _run_base(self) -> RunRecord:
        """The base's own run; with --bench-early-stop, paired with the fine-tuned run when that can be.

        A paired run evaluates both models in one child (run/early_stop.paired_early_stop): the
        fine-tuned run it yields is this session's too, and a failure is recorded for both.
        """
        pending = "fine-tuned" not in self.runs and "fine-tuned" not in self.errors
        wanted = pending and self.plan.options.early_stop and self.plan.compares
        paired = paired_early_stop(self.request("fine-tuned"), self.request("base"), self.plan,
                                   self.say) if wanted else None
        if paired is None:
            return self._run_model("base")
        base_side = self.plan.side("base")
        self.say(f"[bench] base and fine-tuned: evaluating {base_side.model} via {base_side.backend} and "
                 f"{paired.model} via {paired.side.backend} on {', '.join(paired.settings.tasks)}")
        started = time.monotonic()
        try:
            outcomes = evaluate_sides_with_recovery(paired, ProgressPrinter(self.say), self.say,
                                                    self.plan.options.timeout_s)
        except BenchError as exc:
            self.errors["fine-tuned"] = exc
            raise
        except BaseException as exc:  # pytest-timeout's alarm or Ctrl-C: the child tree is stopped already
            self.errors["fine-tuned"] = interrupted("fine-tuned", exc)
            raise
        seconds = time.monotonic() - started
        for outcome in outcomes.values():  # one run of both models: each side's time is theirs together
            if isinstance(outcome, RunRecord):
                outcome.seconds = seconds
        finetuned = outcomes["fine-tuned"]
        if isinstance(finetuned, BenchError):
            self.errors["fine-tuned"] = finetuned
        else:
            self.runs["fine-tuned"] = finetuned
        base = outcomes["base"]
        if isinstance(base, BenchError):
            raise base
        if base.status == "complete":
            self.say(f"[bench] base: done alongside the fine-tuned model ({base.generated} responses generated)")
        return base

    def _run_model(self, role: str) -> RunRecord:
        request = with_early_stop(self.request(role), self.plan, self.runs.get("base"), self.say)
        self.say(f"[bench] {role}: evaluating {request.model} via {request.side.backend} on "
                 f"{', '.join(request.settings.tasks)}")
        started = time.monotonic()
        record = evaluate_with_recovery(request, ProgressPrinter(self.say), self.say, self.plan.options.timeout_s)
        record.seconds = time.monotonic() - started
        return record

    def request(self, role: str) -> RunRequest:
        """What the child is asked to do for `role` (made once: the fine-tuned folder is new each session)."""
        if role not in self.requests:
            self.requests[role] = self._build_request(role)
        return self.requests[role]

    def _build_request(self, role: str) -> RunRequest:
        # Runs of a killed session left their scratch folders here; their answers are in the response cache.
        for folder in (self.plan.output_dir / "base", *(self.plan.output_dir / "fine-tuned").glob("*")):
            remove_stale_staging(folder)
        if role == "base":
            run_dir = self.plan.output_dir / "base"
            log = run_dir / f"run_{self.run_stamp}.log"
        else:
            self._finetuned_dir = run_dir = unique_dir(self.plan.output_dir / "fine-tuned", self.run_stamp)
            log = run_dir / "run.log"
        side = self.plan.side(role)
        return RunRequest(
            side=side,
            settings=self.plan.settings,
            results_dir=run_dir / "lm-eval",
            log_path=log,
            use_cache=self._claim_responses(role, self._responses_cache(role)),
        )

    def _responses_cache(self, role: str) -> Path | None:
        """lm-eval's response cache, one per identity; None when the model's content is unknown.

        lm-eval keys cached responses by prompt only (lm-eval issues #2715, #4063): a file shared by
        two models would hand the base model's answers to the fine-tuned one.
        """
        if self.plan.side(role).fingerprint is None:
            return None
        return self.plan.options.cache_root / RESPONSES_DIR / self.plan.key(role)[:24]

    def _claim_responses(self, role: str, cache: Path | None) -> Path | None:
        """`cache` once it is safe to hand to lm-eval, which unpickles what it holds; None to run without it.

        Its folder must be the user's alone (files.claim_cache_dir), and any of lm-eval's files for it
        (`<name>_rank<N>.db` and SQLite's journals) that the user does not own is deleted first.
        """
        if cache is None:
            return None
        try:
            refused = claim_cache_dir(cache.parent)
        except OSError as exc:
            refused = f"cannot be made ({exc.strerror or exc})"
        if refused is not None:
            self.say(f"[bench] {role}: not using lm-eval's response cache ({cache.parent} {refused}), so a "
                     "stopped run cannot resume: set --bench-cache-dir to a folder of your own")
            return None
        for file in cache.parent.glob(f"{cache.name}_rank*"):
            if distrust(file) is not None:
                file.unlink(missing_ok=True)
        return cache


def _full_run(record: RunRecord) -> bool:
    """Whether a base run may be shared and cached: complete, and on every document (no task stopped early)."""
    return record.status == "complete" and not tasks_stopped_early(record)
