"""lm-eval inside the child process: what its three modes share (see run/child.py).

The task manager with the tasks loaded, the model instrumented to count its responses, the
arguments `simple_evaluate` is given (as the settings identity says) and the files saved as the
lm_eval CLI saves them. Evaluating (child.py), scoring a stopped run's cache (child_partial.py) and
evaluating chunk by chunk (child_early_stop.py) all build on these.
"""

from __future__ import annotations

import json
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import IO, Any


class Events:
    """JSON-lines channel to the parent, throttled so a fast model cannot flood it."""

    def __init__(self, stream: IO[str], role: str | None = None) -> None:
        self._stream = stream
        self._last_progress = 0.0
        self.role = role  # a paired run's base names itself; otherwise the parent names the run's role
        self.generated = 0  # responses the model produced so far, for the last word of a stopped run
        self.cache: Any = None  # lm-eval's response cache (SqliteDict), flushed when the run is stopped
        self.sides: dict[str, Events] = {}  # a paired run's other model: its own counts and cache

    def side(self, role: str) -> Events:
        """The channel of a paired run's other model: the same stream, its events naming `role`."""
        self.sides[role] = Events(self._stream, role)
        return self.sides[role]

    def send(self, event: str, **data: Any) -> None:
        named = {"role": self.role} if self.role else {}
        self._stream.write(json.dumps({"event": event, **named, **data}, default=str) + "\n")
        self._stream.flush()

    def progress(self, force: bool, **data: Any) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= 2.0:
            self._last_progress = now
            self.send("progress", **data)


class ProgressTracker:
    """Counts responses per task as the model produces them, via lm-eval's per-response cache hook."""

    def __init__(self, events: Events) -> None:
        self.events = events
        self.task_of: dict[str, str] = {}
        self.total: Counter[str] = Counter()
        self.done: Counter[str] = Counter()
        self.generated = 0
        self.generation_args: dict[str, list[Any]] = {}  # context -> the generate_until requests' args

    def expect(self, attr: str, requests: list[Any]) -> None:
        from lm_eval.api.model import hash_args

        for req in requests:
            self.task_of[hash_args(attr, req.args)] = req.task_name
            self.total[req.task_name] += 1
            if attr == "generate_until":
                self.generation_args.setdefault(req.args[0], []).append(req.args)
        self.events.send("requests", kind=attr, tasks=dict(Counter(r.task_name for r in requests)))

    def request_args(self, attr: str, args: Any) -> Any:
        """The args of the request a response answers, as lm-eval's response cache looks them up.

        lm-eval 0.4.13's vllm model hands its cache hook (context, gen_kwargs completed with `until`
        and `max_gen_toks`) instead of the request's own (context, gen_kwargs). Only a finished run
        stores its responses again under the right key, so the responses of a run that stopped part-way
        would never be found (nothing to score, nothing to resume from). The request with the same
        context, when there is exactly one, is the one answered.
        """
        from lm_eval.api.model import hash_args

        if attr != "generate_until" or hash_args(attr, args) in self.task_of:
            return args
        candidates = self.generation_args.get(args[0], [])
        return candidates[0] if len(candidates) == 1 else args

    def produced(self, attr: str, args: Any) -> None:
        from lm_eval.api.model import hash_args

        task = self.task_of.get(hash_args(attr, args), "?")
        self.done[task] += 1
        self.generated += 1
        self.events.generated = self.generated
        finished = self.done[task] == self.total[task]
        self.events.progress(
            finished, task=task, done=self.done[task], total=self.total[task], generated=self.generated
        )


class _ChainedHook:
    """Sees each response as it is produced, then hands it to lm-eval's own hook (the sqlite cache)."""

    def __init__(self, inner: Any, tracker: ProgressTracker) -> None:
        self.inner = inner
        self.tracker = tracker

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        req = self.tracker.request_args(attr, req)
        self.inner.add_partial(attr, req, res)
        self.tracker.produced(attr, req)


def _instrument(lm: Any, tracker: ProgressTracker) -> None:
    """Report requests and responses of the model that really runs (not those the cache answers)."""
    set_hook = lm.set_cache_hook

    # lm-eval's CachingLM installs its own hook later; keep ours chained in front of whatever comes.
    def chained_set_hook(hook: Any) -> None:
        set_hook(_ChainedHook(hook, tracker))
        # CachingLM's hook carries its sqlite dict: remember it, to flush it if the run is stopped.
        tracker.events.cache = getattr(hook, "dbdict", None) or tracker.events.cache

    lm.set_cache_hook = chained_set_hook
    chained_set_hook(lm.cache_hook)
    for attr in ("generate_until", "loglikelihood", "loglikelihood_rolling"):
        original = getattr(lm, attr)

        def counted(requests: list[Any], _attr: str = attr, _original: Any = original) -> Any:
            tracker.expect(_attr, requests)
            return _original(requests)

        setattr(lm, attr, counted)


def build_lm(args: dict[str, Any]) -> Any:
    """lm-eval's model object, made as the CLI makes it from `--model`, `--model_args`, batch size and device."""
    import lm_eval.api.registry

    return lm_eval.api.registry.get_model(args["model"]).create_from_arg_string(
        args["model_args"], {"batch_size": args["batch_size"], "max_batch_size": None, "device": args["device"]}
    )


def task_manager(args: dict[str, Any]) -> Any:
    """lm-eval's TaskManager as the CLI makes it: the offline overlay alone when there is one."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=args["include_path"], include_defaults=args["include_path"] is None)


def simple_evaluate_arguments(spec: dict[str, Any]) -> dict[str, Any]:
    """`lm_eval.simple_evaluate`'s arguments from the spec: one place for the run and for partial scoring."""
    args = spec["lm_eval"]
    random_seed, numpy_seed, torch_seed, fewshot_seed = args["seeds"]
    return {
        # Responses are committed to sqlite one by one, so a killed run resumes where it stopped.
        "use_cache": spec.get("use_cache"),
        "tasks": args["tasks"],
        "num_fewshot": args["num_fewshot"],
        "limit": args["limit"],
        "log_samples": True,
        "apply_chat_template": args["apply_chat_template"],
        "fewshot_as_multiturn": args["fewshot_as_multiturn"],
        "gen_kwargs": args["gen_kwargs"],
        "random_seed": random_seed,
        "numpy_random_seed": numpy_seed,
        "torch_random_seed": torch_seed,
        "fewshot_random_seed": fewshot_seed,
    }


def _loading_task_manager(args: dict[str, Any]) -> Any:
    """lm-eval's TaskManager, except that the tasks (and so their data) are loaded once, before the model.

    simple_evaluate loads them only after the model; a dataset the Hub cannot provide then fails
    minutes later than it needs to. The loaded tasks are handed back unchanged when it asks.
    """
    from lm_eval.tasks import TaskManager

    class LoadOnce(TaskManager):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.loaded: dict[str, Any] = {}

        def load(self, task_list: Any) -> Any:
            key = json.dumps(task_list, sort_keys=True, default=str)
            if key not in self.loaded:
                self.loaded[key] = super().load(task_list)
            return self.loaded[key]

    return LoadOnce(include_path=args["include_path"], include_defaults=args["include_path"] is None)


def load_tasks(args: dict[str, Any], manager: Any, events: Events) -> None:
    """Load every task's data up front and tell the parent how much work the run is."""
    events.send("loading_data", tasks=args["tasks"])
    try:
        loaded = manager.load(args["tasks"])
    except Exception as exc:
        if _is_hub_unreachable(exc):
            raise DataUnavailable(f"{', '.join(args['tasks'])}: {_first_line(exc)}") from exc
        raise
    try:
        described = workload(loaded["tasks"], args)
    except Exception:  # noqa: BLE001 - a task that cannot say its size still runs; only the estimate is lost
        traceback.print_exc()
        return
    events.send("workload", tasks=described, device=args["device"], model_params=model_params(args["model_args"]))


def workload(tasks: dict[str, Any], args: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per leaf task: documents to run (after --limit), output type and the generation token budget."""
    from lm_eval.utils import simple_parse_args_string

    override = simple_parse_args_string(args["gen_kwargs"]) if args.get("gen_kwargs") else {}
    result: dict[str, dict[str, Any]] = {}
    for name, task in tasks.items():
        docs = len(task.eval_docs)
        limit = args.get("limit")
        if limit is not None:
            docs = min(docs, int(limit) if limit >= 1 else int(docs * limit))
        output_type = task.get_config("output_type")
        generation = {**(task.get_config("generation_kwargs") or {}), **override}
        max_tokens = int(generation.get("max_gen_toks", 256)) if output_type == "generate_until" else 0
        result[name] = {"docs": docs, "output_type": output_type, "max_gen_toks": max_tokens}
    return result


def model_params(model_args: str) -> int | None:
    """Parameter count of a local model, from its weight files (for the duration estimate).

    None for a Hub id or a server model, whose files are not here to measure.
    """
    from lm_eval.utils import simple_parse_args_string

    return folder_params(Path(str(simple_parse_args_string(model_args).get("pretrained", ""))))


def folder_params(folder: Path) -> int | None:
    """Parameter count of the model in `folder`, from the size of its weight files; None without any."""
    weights = sum(f.stat().st_size for f in [*folder.glob("*.safetensors"), *folder.glob("*.bin")])
    if not weights:
        return None
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    stored = str(config.get("dtype") or config.get("torch_dtype") or "float16")
    return weights // (4 if stored == "float32" else 2)


def prepare(spec: dict[str, Any], events: Events) -> tuple[Any, Any, ProgressTracker]:
    """What a run needs before it evaluates: the task manager with the tasks loaded, and the instrumented model."""
    args = spec["lm_eval"]
    manager = _loading_task_manager(args)
    load_tasks(args, manager, events)
    return (manager, *instrumented_lm(args, events))


def instrumented_lm(args: dict[str, Any], events: Events) -> tuple[Any, ProgressTracker]:
    """The model `args` name, built as the CLI builds it, its responses counted and reported on `events`."""
    events.send("loading", model=args["model_args"])
    lm = build_lm(args)
    tracker = ProgressTracker(events)
    _instrument(lm, tracker)
    return lm, tracker


def as_the_cli_names_it(results: dict[str, Any] | None, args: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's results, with the model named as the CLI would have (it names an LM object by its class)."""
    if results is None:
        raise RuntimeError("lm-eval returned no results")
    for key in ("model", "model_args", "batch_size", "device"):
        results["config"][key] = args[key]
    return results


def evaluate(spec: dict[str, Any], events: Events) -> tuple[dict[str, Any], int]:
    """Run lm-eval as the CLI would; returns its results and how many responses the model produced."""
    import lm_eval

    manager, lm, tracker = prepare(spec, events)
    results = lm_eval.simple_evaluate(model=lm, task_manager=manager, **simple_evaluate_arguments(spec))
    return as_the_cli_names_it(results, spec["lm_eval"]), tracker.generated


def completed_progress(results: dict[str, Any]) -> dict[str, dict[str, int]]:
    """{task: {done, total}} of a finished run: every selected document was scored."""
    counts = results.get("n-samples") or {}
    return {task: {"done": int(n["effective"]), "total": int(n["effective"])} for task, n in counts.items()}


def save(results: dict[str, Any], output_path: str) -> None:
    """Write results the way the lm_eval CLI does, with its EvaluationTracker."""
    from lm_eval.loggers import EvaluationTracker

    samples = results.pop("samples")
    tracker = EvaluationTracker(output_path=output_path)
    tracker.general_config_tracker.model_name_sanitized = "model"
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"]:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])


class DataUnavailable(Exception):
    """A task's dataset could not be had from the Hugging Face Hub (offline machine, no cached copy)."""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# What `datasets` and `huggingface_hub` raise when a dataset cannot be had from the Hub or its cache.
_HUB_ERRORS = ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "DatasetNotFoundError", "ConnectionError",
               "ConnectTimeout", "MaxRetryError")
_HUB_MESSAGES = ("couldn't reach", "offline mode", "on the hub", "huggingface.co")


def _is_hub_unreachable(exc: BaseException) -> bool:
    chain: BaseException | None = exc
    while chain is not None:
        message = str(chain).lower()
        if type(chain).__name__ in _HUB_ERRORS or any(m in message for m in _HUB_MESSAGES):
            return True
        chain = chain.__cause__ or chain.__context__
    return False
