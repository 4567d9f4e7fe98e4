"""The settings identity (core/settings.py) is the one source of what defines a score.

Every field of EvalSettings and Side is walked: changed alone, it must change both cache keys (the
base-score cache entry and lm-eval's response cache), and a field lm-eval is given must appear in
the reproduce command and reach lm-eval in a run and in the partial scoring of a stopped run.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from shlex import quote as shlex_quote
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_finetune_bench.core.records import Execution, RunRecord, RunRequest, samples_argument
from pytest_finetune_bench.core.settings import (
    EvalSettings,
    Side,
    canonical_gen_kwargs,
    identity,
    lm_eval_arguments,
    settings_part,
)
from pytest_finetune_bench.demo import demo_data_dir
from pytest_finetune_bench.plan import Plan
from pytest_finetune_bench.plan.choices import BenchOptions
from pytest_finetune_bench.report.summary import reproduce
from pytest_finetune_bench.run import child_lm, child_partial
from pytest_finetune_bench.run.executor import Executor
from pytest_finetune_bench.store.base_cache import BaseCache
from pytest_finetune_bench.store.reference import settings_differences
from tests.fake_sessions import make_fake_model

SETTINGS = EvalSettings(
    tasks=("ifeval",), limit=5, num_fewshot=None, batch_size="4", device="cpu", dtype="float32",
    gen_kwargs="max_gen_toks=32", apply_chat_template=True, task_versions=(("ifeval", "4.0"),),
    data_files=("a" * 64,), lm_eval_version="0.4.13", include_path="/out/offline-tasks",
)
SIDE = Side(role="base", model="/models/base", backend="hf", lm_eval_model="hf",
            model_args="pretrained=/models/base,dtype=float32", fingerprint="f" * 64, source="--bench-base")

SETTING_CHANGES: dict[str, Any] = {
    "tasks": ("ifeval", "gsm8k"),
    "limit": 10,
    "num_fewshot": 3,
    "batch_size": "8",
    "device": "cuda",
    "dtype": "bfloat16",
    "gen_kwargs": "max_gen_toks=64",
    "apply_chat_template": False,
    "seeds": (1, 1234, 1234, 1234),
    "task_versions": (("ifeval", "5.0"),),
    "data_files": ("b" * 64,),
    "lm_eval_version": "0.4.14",
    "include_path": "/elsewhere/offline-tasks",
    "tensor_parallel": 2,
    "data_parallel": 2,
    "gpu_memory_utilization": 0.7,
    "max_model_len": 2048,
    "parallelize": True,
    "trust_remote_code": True,
}
SIDE_CHANGES: dict[str, Any] = {
    "model": "/models/other",
    "backend": "ollama",
    "lm_eval_model": "local-chat-completions",
    "model_args": "pretrained=/models/base,dtype=bfloat16",
    "fingerprint": "e" * 64,
    "role": "fine-tuned",
    "source": "lora/adapter_config.json:base_model_name_or_path",
    "child_imports": ("my_models",),
}
# Fields that do not define a score, and why: the same model under the same settings gives the same
# answers whichever side it is on and however it was named; an import only registers a model type; the
# overlay folder is made from the tasks and data files, which are in the identity. `model` is reached
# through model_args (the path is in it).
OUTSIDE_IDENTITY = {"role", "source", "child_imports", "include_path", "model"}
# Pins of the inputs: in the identity, not arguments of lm-eval (recorded beside the command).
PINS = {"task_versions", "data_files", "lm_eval_version", "fingerprint", "backend", "dtype"}


# The engines' GPU settings reach only the model type they belong to: they are walked on a side of that type.
VLLM_SIDE = dataclasses.replace(SIDE, backend="vllm", lm_eval_model="vllm")
ENGINE_SIDES = {"tensor_parallel": VLLM_SIDE, "data_parallel": VLLM_SIDE, "gpu_memory_utilization": VLLM_SIDE,
                "max_model_len": VLLM_SIDE}


def baseline(field: str) -> tuple[EvalSettings, Side]:
    """The settings and side a field is changed from."""
    return SETTINGS, ENGINE_SIDES.get(field, SIDE)


def test_the_tables_cover_every_field() -> None:
    assert set(SETTING_CHANGES) == {f.name for f in dataclasses.fields(EvalSettings)}
    assert set(SIDE_CHANGES) == {f.name for f in dataclasses.fields(Side)}


def changed(field: str) -> tuple[EvalSettings, Side]:
    settings, side = baseline(field)
    if field in SETTING_CHANGES:
        return dataclasses.replace(settings, **{field: SETTING_CHANGES[field]}), side
    return settings, dataclasses.replace(side, **{field: SIDE_CHANGES[field]})


def responses_dir(settings: EvalSettings, side: Side, tmp_path: Path) -> Path | None:
    """Where the executor keeps lm-eval's response cache for this side."""
    plan = Plan(options=BenchOptions(model="unused"), location=None, base=side, finetuned=side,  # type: ignore[arg-type]
                base_backend=None, backend=None, settings=settings, skipped={}, output_dir=tmp_path,  # type: ignore[arg-type]
                headlines={})
    return Executor(plan, print)._responses_cache("base")


ALL_FIELDS = sorted(SETTING_CHANGES) + sorted(SIDE_CHANGES)
SELECTOR = child_partial.CompleteOnly


@pytest.mark.parametrize("field", ALL_FIELDS)
def test_a_field_changes_both_cache_keys_exactly_when_it_is_in_the_identity(field: str, tmp_path: Path) -> None:
    settings, side = changed(field)
    settings0, side0 = baseline(field)
    cache = BaseCache(tmp_path)
    same_base_key = cache.entry_dir(identity(settings, side)) == cache.entry_dir(identity(settings0, side0))
    same_responses = responses_dir(settings, side, tmp_path) == responses_dir(settings0, side0, tmp_path)
    if field in OUTSIDE_IDENTITY:
        assert same_base_key and same_responses
    else:
        assert not same_base_key and not same_responses


@pytest.mark.parametrize("field", ALL_FIELDS)
def test_an_lm_eval_argument_is_in_the_reproduce_command(field: str) -> None:
    settings, side = changed(field)
    settings0, side0 = baseline(field)
    before = RunRequest(side0, settings0, Path("r"), Path("l")).cli_command()
    after = RunRequest(side, settings, Path("r"), Path("l")).cli_command()
    given_to_lm_eval = lm_eval_arguments(settings, side) != lm_eval_arguments(settings0, side0)
    assert (before != after) == given_to_lm_eval
    assert given_to_lm_eval == (field not in PINS and field not in {"role", "source", "child_imports", "model"})


@pytest.mark.parametrize("field", ALL_FIELDS)
def test_an_lm_eval_argument_reaches_lm_eval_in_a_run_and_in_partial_scoring(
    field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, side = changed(field)
    settings0, side0 = baseline(field)
    run_before, partial_before = what_lm_eval_receives(settings0, side0, monkeypatch)
    run_after, partial_after = what_lm_eval_receives(settings, side, monkeypatch)
    reaches = lm_eval_arguments(settings, side) != lm_eval_arguments(settings0, side0)
    assert (run_before != run_after) == reaches
    assert (partial_before != partial_after) == reaches
    assert run_before == partial_before  # one source for both paths (partial replaces only the limit)


def what_lm_eval_receives(settings: EvalSettings, side: Side, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """What lm-eval is called with (model type, its arguments, task manager, simple_evaluate's keywords)."""
    import lm_eval
    import lm_eval.api.registry

    calls: list[dict[str, Any]] = []

    class Model:
        def __init__(self, name: str) -> None:
            self.name = name

        def create_from_arg_string(self, model_args: str, config: dict[str, Any]) -> Any:
            calls[-1]["model"] = (self.name, model_args, config)
            return SimpleNamespace()

    def simple_evaluate(**kwargs: Any) -> dict[str, Any]:
        kwargs.pop("model")
        calls[-1]["simple_evaluate"] = kwargs
        return {"config": {}}

    def recording_selector(limit: float | None, fewshot_seed: int | None) -> Any:
        calls[-1]["selector limit"] = limit
        return SELECTOR(limit, fewshot_seed)

    monkeypatch.setattr(child_partial, "CompleteOnly", recording_selector)
    monkeypatch.setattr(lm_eval.api.registry, "get_model", Model)
    monkeypatch.setattr(lm_eval, "simple_evaluate", simple_evaluate)
    monkeypatch.setattr(child_lm, "load_tasks", lambda *args: None)
    monkeypatch.setattr(child_lm, "_instrument", lambda *args: None)
    monkeypatch.setattr(child_lm, "_loading_task_manager", lambda args: ("task manager", args["include_path"]))
    monkeypatch.setattr(child_lm, "task_manager", lambda args: ("task manager", args["include_path"]))
    spec = RunRequest(side, settings, Path("r"), Path("l"), use_cache=Path("cache")).child_spec(Path("out"))
    received = []
    for run in (lambda: child_lm.evaluate(spec, child_lm.Events(open("/dev/null", "w"))),
                lambda: child_partial.score_cached(spec)):
        calls.append({})
        run()
        received.append(calls[-1])
    run_call, partial_call = received
    # Partial scoring selects the complete documents (samples=) instead of passing the limit: its selector
    # applies the limit, as the stopped run did.
    scored = partial_call["simple_evaluate"]
    assert scored.pop("limit") is None and scored.pop("samples") == {}
    scored["limit"] = partial_call.pop("selector limit")
    return run_call, partial_call


def _as_lm_eval_cli_reads_it(command: str) -> Any:
    """lm-eval's own configuration from the reproduce command, read by its CLI's parser (nothing is run)."""
    import shlex

    from lm_eval._cli.harness import HarnessCLI
    from lm_eval.config.evaluate_config import EvaluatorConfig

    argv = shlex.split(command)
    assert argv[:5] == ["python", "-m", "pytest_finetune_bench", "lm-eval", "run"]
    return EvaluatorConfig.from_cli(HarnessCLI()._parser.parse_args(argv[4:]))


def test_a_side_scored_on_a_subset_of_documents_reproduces_on_those() -> None:
    """An early stop or partial scoring is reproduced with lm-eval's --samples, in place of the limit."""
    request = RunRequest(SIDE, SETTINGS, Path("r"), Path("l"))
    full = _as_lm_eval_cli_reads_it(request.cli_command())
    assert full.limit == 5 and full.samples is None
    # The selection as the child gave it to lm-eval: per leaf task (a group's leaves), in any order. A task
    # name from the user's own YAML may hold a quote: the shell must hand lm-eval the JSON as it is.
    scored = {"mmlu_anatomy": [7, 2], "ifeval": [0, 3, 11], "it's \"mine\"": [1]}
    command = request.cli_command(scored)
    subset = _as_lm_eval_cli_reads_it(command)
    assert subset.samples == {"ifeval": [0, 3, 11], "it's \"mine\"": [1], "mmlu_anatomy": [2, 7]}
    assert subset.limit is None  # the selection holds what the limit chose; lm-eval refuses both
    assert command.replace(f" --samples {shlex_quote(samples_argument(scored))}", "") == \
        request.cli_command().replace(" --limit 5", "")  # everything else as the full command has it
    assert request.cli_command({}) == request.cli_command()  # an empty selection is no selection


def test_only_the_sides_scored_on_a_subset_get_samples_in_benchmark_json(tmp_path: Path) -> None:
    """A fine-tune stopped early against a full base: its command selects the documents, the base's does not."""
    finetuned = dataclasses.replace(SIDE, role="fine-tuned", model="/models/ft",
                                    model_args="pretrained=/models/ft,dtype=float32")
    plan = Plan(options=BenchOptions(model="unused"), location=None, base=SIDE, finetuned=finetuned,  # type: ignore[arg-type]
                base_backend=None, backend=None, settings=SETTINGS, skipped={}, output_dir=tmp_path,  # type: ignore[arg-type]
                headlines={})
    requests = {side.role: RunRequest(side, SETTINGS, tmp_path, tmp_path / "log") for side in (SIDE, finetuned)}
    runs = {role: RunRecord(role, request.model, {}, tmp_path / "results.json", {}, "now",
                            scored_samples={"ifeval": [4, 1]} if role == "fine-tuned" else None)
            for role, request in requests.items()}
    execution = Execution(datetime.now(), "complete", {}, runs, requests, {})
    commands = reproduce(plan, execution)["commands"]
    assert commands["base"] == requests["base"].cli_command() and "--samples" not in commands["base"]
    assert _as_lm_eval_cli_reads_it(commands["fine-tuned"]).samples == {"ifeval": [1, 4]}


def test_compare_to_compares_everything_but_the_model() -> None:
    reference = identity(SETTINGS, SIDE)
    other_model = identity(SETTINGS, dataclasses.replace(SIDE, model_args="pretrained=/x,dtype=float32",
                                                         fingerprint="e" * 64))
    assert settings_differences(reference, other_model) == []
    other_limit = identity(dataclasses.replace(SETTINGS, limit=10), SIDE)
    assert settings_differences(reference, other_limit) == ["limit: 5 → 10"]
    # The engines' settings are in model_args, and compared all the same.
    shorter = settings_differences(identity(SETTINGS, VLLM_SIDE),
                                   identity(dataclasses.replace(SETTINGS, max_model_len=1024), VLLM_SIDE))
    assert len(shorter) == 1 and shorter[0].startswith("engine_args: ") and "max_model_len" in shorter[0]
    assert set(settings_part(reference)) == set(reference) - {"model", "model_args", "backend", "model_fingerprint"}


# --------------------------------------------------------------------------- generation kwargs, one spelling
GEN_KWARGS_SPELLINGS = ("max_gen_toks=32,temperature=0", "temperature=0,max_gen_toks=32",
                        " temperature = 0 , max_gen_toks=+32 ", "max_gen_toks=32,temperature=0,")


@pytest.mark.parametrize("spelling", GEN_KWARGS_SPELLINGS)
def test_gen_kwargs_have_one_spelling_that_lm_eval_reads_as_given(spelling: str) -> None:
    from lm_eval._cli.utils import key_val_to_dict
    from lm_eval.utils import simple_parse_args_string

    canonical = canonical_gen_kwargs(spelling)
    assert canonical == "max_gen_toks=32,temperature=0"
    given = {key.strip(): value for key, value in simple_parse_args_string(spelling).items()}
    # The run (simple_evaluate) and the reproduce command (lm-eval's CLI) read the same values, of the same types.
    for parse in (simple_parse_args_string, key_val_to_dict):
        read = parse(canonical)
        assert read == given and {k: type(v) for k, v in read.items()} == {k: type(v) for k, v in given.items()}
    settings = dataclasses.replace(SETTINGS, gen_kwargs=canonical)
    assert f"--gen_kwargs {canonical}" in RunRequest(SIDE, settings, Path("r"), Path("l")).cli_command()


def test_gen_kwargs_keep_the_types_lm_eval_gives_them() -> None:
    assert canonical_gen_kwargs("do_sample=true,until=none") == "do_sample=True,until=None"
    assert canonical_gen_kwargs('stop="5"') == 'stop="5"'  # a quoted string stays a string, not the number 5
    assert canonical_gen_kwargs("temperature=0") != canonical_gen_kwargs("temperature=0.0")  # an int, a float
    assert canonical_gen_kwargs("") is None and canonical_gen_kwargs(None) is None


def test_gen_kwargs_in_another_order_make_one_plan(pytester: pytest.Pytester) -> None:
    """Through the planner: both spellings give one settings identity, so one cache key per side."""
    model = make_fake_model(pytester.path)

    def plan_lines(gen_kwargs: str) -> list[str]:
        result = pytester.runpytest_subprocess(
            f"--bench-model={model}", f"--bench-data-dir={demo_data_dir()}", "--bench-device=cpu", "--bench-plan",
            f"--bench-gen-kwargs={gen_kwargs}", "-p", "no:cacheprovider")
        assert result.ret == pytest.ExitCode.OK, result.stderr.str()
        return [line for line in result.stdout.lines if "cache key: " in line or "gen_kwargs: " in line]

    first = plan_lines(GEN_KWARGS_SPELLINGS[0])
    assert "  gen_kwargs: max_gen_toks=32,temperature=0" in first and len(first) == 3
    assert plan_lines(GEN_KWARGS_SPELLINGS[2]) == first
