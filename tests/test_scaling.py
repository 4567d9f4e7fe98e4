"""Scaling out (issue 15): the vLLM backend, hf over several GPUs, xdist workers pinned to their GPUs.

The model arguments are checked against lm-eval's own constructors (their signatures, read from the
installed lm-eval), not against strings written here: a renamed or dropped parameter fails these tests.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import re
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends import backend_names, format_model_args, get_backend
from pytest_finetune_bench.backends import vllm as vllm_backend
from pytest_finetune_bench.core.records import RunRequest
from pytest_finetune_bench.core.settings import EvalSettings, Side, lm_eval_arguments
from pytest_finetune_bench.plan.choices import BenchOptions
from pytest_finetune_bench.plan.gpus import worker_devices, worker_number
from pytest_finetune_bench.plan.parallel import ENGINE_FLAGS, parallel_settings
from pytest_finetune_bench.run.recovery import VLLM_MEMORY_FLOOR, failure_message, lower_gpu_memory
from tests.conftest import FAST_ARGS
from tests.fake_sessions import REPO_ROOT, bench_args, make_fake_model, own_cache_dir, use_fake_lm
from tests.test_errors import RUN, usage_error

ALL_SET = EvalSettings(tasks=("ifeval",), device="cuda", dtype="bfloat16", tensor_parallel=2, data_parallel=2,
                       gpu_memory_utilization=0.8, max_model_len=4096, parallelize=True, seeds=(0, 1, 7, 3))


def full_model_args(backend: str, settings: EvalSettings = ALL_SET) -> dict[str, Any]:
    """What lm-eval's constructor of `backend`'s model type receives, parsed by lm-eval's own parser."""
    from lm_eval.utils import simple_parse_args_string

    chosen = get_backend(backend)
    side = Side(role="base", model="/models/m", backend=backend, lm_eval_model=chosen.lm_eval_model,
                model_args=format_model_args(chosen.model_args("/models/m", settings)), fingerprint=None)
    parsed: dict[str, Any] = simple_parse_args_string(lm_eval_arguments(settings, side)["model_args"])
    return parsed


def vllm_constructor() -> tuple[dict[str, str | None], bool]:
    """({parameter: annotation} of lm-eval's VLLM.__init__, whether it takes **kwargs), read from its source.

    The module imports vllm at its top, so without vLLM it cannot be imported: its source is parsed instead.
    """
    spec = find_spec("lm_eval.models.vllm_causallms")
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "VLLM")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    params = {a.arg: ast.unparse(a.annotation) if a.annotation else None for a in init.args.args[1:]}
    return params, init.args.kwarg is not None


# Passed through VLLM(**kwargs) into vllm.LLM / EngineArgs, where vLLM defines them.
VLLM_ENGINE_KWARGS = {"gpu_memory_utilization"}
ANNOTATION_TYPES = {"int": int, "int | None": int, "float": float, "float | None": float, "str": str,
                    "str | None": str, "bool": bool}


def test_vllm_model_args_are_parameters_of_lm_evals_vllm_constructor() -> None:
    params, takes_kwargs = vllm_constructor()
    args = full_model_args("vllm")
    assert set(args) - set(params) == VLLM_ENGINE_KWARGS and takes_kwargs
    for name, value in args.items():
        annotation = params.get(name)
        if annotation in ANNOTATION_TYPES:
            assert isinstance(value, ANNOTATION_TYPES[annotation]), (name, value, annotation)
    assert args["tensor_parallel_size"] == 2 and args["data_parallel_size"] == 2
    assert args["max_model_len"] == 4096 and args["gpu_memory_utilization"] == 0.8
    assert args["dtype"] == "bfloat16" and args["seed"] == 7  # the settings' torch seed
    # The child also gives the constructor lm-eval's batch arguments (run/child_lm.build_lm).
    assert {"batch_size", "max_batch_size"} <= set(params)


def test_hf_parallelize_is_a_parameter_of_lm_evals_hflm_constructor() -> None:
    from lm_eval.models.huggingface import HFLM

    params = inspect.signature(HFLM.__init__).parameters
    args = full_model_args("hf")
    assert set(args) <= set(params)
    assert args["parallelize"] is True and params["parallelize"].default is False
    assert "parallelize" not in full_model_args("hf", dataclasses.replace(ALL_SET, parallelize=False))


def test_vllm_shares_the_hf_contract_and_the_defaults_reach_vllm() -> None:
    """The same weights argument, dtype and revision pinning as hf; the engine's defaults are written out."""
    settings = EvalSettings(tasks=("ifeval",), device="cuda", dtype="float16")
    hf, vllm = full_model_args("hf", settings), full_model_args("vllm", settings)
    assert {k: vllm[k] for k in hf} == hf
    assert vllm == {**hf, "tensor_parallel_size": 1, "data_parallel_size": 1, "seed": 1234}
    assert "vllm" in backend_names()


def test_vllm_backend_is_refused_in_one_line_without_vllm_or_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    if find_spec("vllm") is None:
        missing = r"needs vLLM, which is not installed: run `pip install 'lm-eval\[vllm\]'`"
        with pytest.raises(BenchError, match=missing):
            vllm_backend.require_vllm()
    monkeypatch.setattr(vllm_backend, "find_spec", lambda name: object())
    monkeypatch.setattr(vllm_backend, "visible_gpus", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(BenchError, match=r"needs a CUDA GPU and none is visible \(CUDA_VISIBLE_DEVICES=''\)"):
        vllm_backend.require_vllm()


def test_vllm_backend_without_vllm_stops_the_session_before_any_run(pytester: pytest.Pytester) -> None:
    if find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    usage_error(pytester.runpytest("--bench-model=model", "--bench-base=model", "--bench-backend=vllm", *RUN),
                "the vllm backend needs vLLM, which is not installed: run `pip install 'lm-eval[[]vllm]'` *")


def test_gpu_counts_are_checked_against_the_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    vllm_backend.check_gpu_count(2, 1, 4)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(BenchError, match="needs 6 GPUs and 4 are visible"):
        vllm_backend.check_gpu_count(3, 2, 4)
    monkeypatch.setattr(vllm_backend, "find_spec", lambda name: object())  # as if Ray were installed
    vllm_backend.check_gpu_count(2, 2, 4)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a cluster: its GPUs are on other machines too
    vllm_backend.check_gpu_count(16, 1, 8)
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setattr(vllm_backend, "find_spec", lambda name: None if name == "ray" else object())
    with pytest.raises(BenchError, match="through Ray, which is not installed: run `pip install ray`"):
        vllm_backend.check_gpu_count(1, 2, 4)


@pytest.mark.parametrize("flag", list(ENGINE_FLAGS))
def test_an_engine_flag_without_its_engine_is_refused(flag: str) -> None:
    field, _, engine = ENGINE_FLAGS[flag]
    value = {"tensor_parallel": 2, "data_parallel": 2, "gpu_memory_utilization": 0.5, "max_model_len": 512,
             "parallelize": True}[field]
    engine_option: dict[str, Any] = {field: value}  # the flag's field: its type differs from flag to flag
    options = BenchOptions(model="m", **engine_option)
    other = "vllm" if engine == "hf" else "hf"
    with pytest.raises(BenchError, match=f"^{flag} applies to the {engine} backend only: add --bench-backend "
                                         f"{engine}, or drop {flag}$"):
        parallel_settings(options, [get_backend(other)], "cuda")


def test_parallelize_needs_a_cuda_device() -> None:
    with pytest.raises(BenchError, match="--bench-parallelize spreads a model over GPUs and the device is cpu"):
        parallel_settings(BenchOptions(model="m", parallelize=True), [get_backend("hf")], "cpu")
    assert parallel_settings(BenchOptions(model="m", parallelize=True), [get_backend("hf")], "cuda")["parallelize"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bench-tensor-parallel", "0"], "--bench-tensor-parallel: '0' is not a positive whole number"),
        (["--bench-data-parallel", "two"], "--bench-data-parallel: 'two' is not a positive whole number"),
        (["--bench-gpu-memory-utilization", "90"], "--bench-gpu-memory-utilization: '90' is not a fraction: *"),
        (["--bench-max-model-len", "-1"], "--bench-max-model-len: '-1' is not a positive whole number"),
    ],
)
def test_bad_engine_values_name_their_flag(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    usage_error(pytester.runpytest("--bench-model", "model", "--bench-base", "model", *args), message)


def test_bad_ini_engine_value_names_the_ini_key(pytester: pytest.Pytester) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    pytester.makeini("[pytest]\nbench_model = model\nbench_base = model\nbench_gpu_memory_utilization = 0\n")
    usage_error(pytester.runpytest(), "ini option bench_gpu_memory_utilization: '0' is not a fraction: *")


def vllm_request(settings: EvalSettings, lm_eval_model: str = "vllm") -> RunRequest:
    side = Side(role="base", model="/m", backend=lm_eval_model, lm_eval_model=lm_eval_model, model_args="pretrained=/m",
                fingerprint=None)
    return RunRequest(side, settings, Path("r"), Path("log"))


def test_out_of_memory_on_vllm_lowers_the_memory_share_to_a_floor_and_never_the_context() -> None:
    request = vllm_request(EvalSettings(tasks=("ifeval",), max_model_len=4096))
    shares = []
    while (lowered := lower_gpu_memory(request)) is not None:
        request = lowered
        shares.append(request.settings.gpu_memory_utilization)
        assert request.settings.max_model_len == 4096
    assert shares == [0.8, 0.7, 0.6, 0.5] and shares[-1] == VLLM_MEMORY_FLOOR
    assert "gpu_memory_utilization=0.5" in request.cli_command()  # the retry's setting reaches lm-eval
    assert lower_gpu_memory(vllm_request(EvalSettings(tasks=("ifeval",)), "hf")) is None


def test_out_of_memory_on_vllm_names_the_vllm_remedies() -> None:
    from pytest_finetune_bench.run.engine import RunFailed

    message = failure_message(vllm_request(EvalSettings(tasks=("ifeval",), batch_size="1")),
                              RunFailed("oom", "CUDA out of memory", Path("log")))
    assert message.startswith("base run ran out of GPU memory even at batch size 1: use a shorter "
                              "--bench-max-model-len, more GPUs per copy (--bench-tensor-parallel)")


@pytest.mark.parametrize(
    ("devices", "workers", "per_worker", "expected"),
    [
        (4, 2, None, [("0", "1"), ("2", "3")]),
        (4, 4, None, [("0",), ("1",), ("2",), ("3",)]),
        (8, 2, 2, [("0", "1"), ("2", "3")]),  # two GPUs each; the rest stay free
        (5, 2, None, [("0", "1"), ("2", "3")]),
        (2, 4, None, [("0",), ("1",), ("0",), ("1",)]),  # more workers than GPUs: they take turns
        (4, 3, 2, [("0", "1"), ("2", "3"), ("0", "1")]),
        (1, 1, None, [("0",)]),
    ],
)
def test_each_worker_gets_its_own_gpus(devices: int, workers: int, per_worker: int | None,
                                       expected: list[tuple[str, ...]]) -> None:
    visible = [str(i) for i in range(devices)]
    assert [worker_devices(w, workers, visible, per_worker) for w in range(workers)] == expected


def test_worker_gpus_keep_the_names_cuda_visible_devices_gives_them() -> None:
    uuids = ["GPU-aa", "GPU-bb", "GPU-cc", "GPU-dd"]
    assert worker_devices(1, 2, uuids) == ("GPU-cc", "GPU-dd")
    assert worker_devices(0, 2, []) is None  # CPU: nothing to pin
    with pytest.raises(BenchError, match="--bench-gpus-per-worker 3: only 2 GPUs are visible"):
        worker_devices(0, 2, ["0", "1"], 3)
    with pytest.raises(BenchError, match="--bench-gpus-per-worker 1: no CUDA GPU is visible"):
        worker_devices(0, 2, [], 1)
    assert worker_number("gw11") == 11


@pytest.mark.slow  # three pytest processes, each loading lm-eval's task index (~25 s on 2 cores)
def test_xdist_workers_see_only_their_own_gpus(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller deals CUDA_VISIBLE_DEVICES out; each worker (and so each lm-eval child) sees its own."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    pytester.makepyfile(
        "import os, pytest\n"
        "@pytest.mark.parametrize('n', range(8))\n"
        "def test_devices(n, worker_id):\n"
        "    print('DEVICES', worker_id, os.environ['CUDA_VISIBLE_DEVICES'])\n"
    )
    result = pytester.runpytest_subprocess(
        "-n", "2", "-rA", "-k", "test_devices", "--bench-model=model", "--bench-base=model",
        "--bench-gpus-per-worker=2", "-p", "no:cacheprovider",
    )
    result.assert_outcomes(passed=8)
    seen = {tuple(line.split()[1:3]) for line in result.stdout.lines if line.startswith("DEVICES")}
    assert seen == {("gw0", "0,1"), ("gw1", "2,3")}, result.stdout.str()


FAKE_VLLM = Path(__file__).resolve().parent / "fake_vllm"


def vllm_engine_calls(record: Path) -> list[dict[str, Any]]:
    """The arguments of each vllm.LLM(...) the fake engine was made with, oldest first."""
    return [json.loads(p.read_text())["kwargs"] for p in sorted(record.glob("*.json"))]


def test_vllm_session_reaches_the_engine_through_lm_evals_vllm_model_type(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, unchanged_outputs: Path, demo_data: Path
) -> None:
    """A real session with `--bench-backend vllm`: lm-eval's own `vllm` model type (its constructor,
    SmolLM2's tokenizer and chat template, truncation, IFEval scoring) over a stand-in for vLLM's engine
    (tests/fake_vllm), which runs out of memory above 0.75 of the GPU: the flags reach vllm.LLM, the
    memory share is lowered before the batch size, and what finished is what the reproduce command says.
    """
    record = pytester.path / "engine-calls"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(FAKE_VLLM), str(REPO_ROOT),
                                                                    os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    monkeypatch.setenv("FAKE_VLLM_MAX_MEMORY", "0.75")
    # The plugin's GPU count (a CPU machine has none); everything else is the real vllm backend.
    pytester.makeconftest("import pytest_finetune_bench.backends.vllm as v\nv.visible_gpus = lambda: 2\n")
    out = pytester.path / "out"
    session = (
        f"--bench-model={unchanged_outputs}", f"--bench-data-dir={demo_data}", f"--bench-output={out}",
        f"--bench-cache-dir={own_cache_dir(pytester.path / 'base-cache')}", "--bench-suite=test", "--bench-limit=5",
        "--bench-min-gain=0", "--bench-backend=vllm", "--bench-tensor-parallel=2", "--bench-max-model-len=1024",
        "--bench-device=cpu", *FAST_ARGS,
    )
    result = pytester.runpytest_subprocess(*session)
    result.assert_outcomes(passed=2)
    for role in ("base", "fine-tuned"):
        result.stdout.fnmatch_lines([
            f"[[]bench[]] {role}: out of GPU memory with vLLM: retrying with gpu_memory_utilization 0.8",
            f"[[]bench[]] {role}: out of GPU memory with vLLM: retrying with gpu_memory_utilization 0.7",
            # Each response is stored as it comes under its request's key (lm-eval's vllm model keys it
            # otherwise, see run/child_lm.ProgressTracker.request_args), so it counts for its task.
            f"[[]bench[]] {role}: ifeval 5/5 samples (100%)*",
        ])
    calls = vllm_engine_calls(record)
    assert [c.get("gpu_memory_utilization") for c in calls] == [None, 0.8, 0.7] * 2
    assert {(c["tensor_parallel_size"], c["max_model_len"], c["seed"], c["dtype"]) for c in calls} == {
        (2, 1024, 1234, "float32")}
    assert [Path(c["model"]).name for c in calls[::3]] == [Path(str(base_model_of(unchanged_outputs))).name,
                                                          "merged_16bit"]
    summary = json.loads((out / "benchmark.json").read_text())
    assert summary["status"] == "complete" and summary["comparison"]["ifeval"]["delta"] == 0.0
    for side in ("base_model", "fine_tuned_model"):
        assert summary[side]["lm_eval_model"] == "vllm"
        assert summary[side]["samples"] == {"ifeval": {"done": 5, "total": 5}}
    assert all("tensor_parallel_size=2" in args for args in summary["reproduce"]["model_args"].values())
    for command in summary["reproduce"]["commands"].values():
        assert "--model vllm" in command and "tensor_parallel_size=2" in command
        assert "max_model_len=1024" in command and "gpu_memory_utilization=0.7" in command
    # The next session answers the fine-tuned model from the response cache: nothing is generated again.
    monkeypatch.setenv("FAKE_VLLM_MAX_MEMORY", "1")
    again = pytester.runpytest_subprocess(*session)
    again.assert_outcomes(passed=2)
    again.stdout.fnmatch_lines(["[[]bench[]] fine-tuned: done in * (0 responses generated)"])


@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
def test_a_vllm_run_that_dies_is_scored_from_the_responses_it_produced(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, unchanged_outputs: Path, demo_data: Path
) -> None:
    """The responses lm-eval's vllm model produced before its engine died are found by the partial scoring."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(FAKE_VLLM), str(REPO_ROOT),
                                                                    os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("FAKE_VLLM_CRASH", "merged_16bit:2")  # the fine-tuned engine, after 2 of 5 batches of 1
    pytester.makeconftest("import pytest_finetune_bench.backends.vllm as v\nv.visible_gpus = lambda: 1\n")
    out = pytester.path / "out"
    result = pytester.runpytest_subprocess(
        f"--bench-model={unchanged_outputs}", f"--bench-data-dir={demo_data}", f"--bench-output={out}",
        f"--bench-cache-dir={own_cache_dir(pytester.path / 'base-cache')}", "--bench-suite=test", "--bench-limit=5",
        "--bench-min-gain=0", "--bench-backend=vllm", "--bench-device=cpu", "--bench-gen-kwargs=max_gen_toks=32",
        "--bench-batch-size=1", "-p", "no:cacheprovider",
    )
    result.stdout.fnmatch_lines(["[[]bench[]] fine-tuned: fine-tuned run crashed (*): scored 2 of 5 samples "
                                 "(partial); re-run to resume"])
    summary = json.loads((out / "benchmark.json").read_text())
    assert summary["fine_tuned_model"]["samples"] == {"ifeval": {"done": 2, "total": 5}}


def base_model_of(outputs: Path) -> str:
    return str(json.loads((outputs / "lora" / "adapter_config.json").read_text())["base_model_name_or_path"])


_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}[:-]\d{2}[:-]\d{2}(\.\d+)?([+-]\d{2}:\d{2})?")


def comparable(summary: Any, session_root: Path) -> Any:
    """A benchmark.json with its session folder, its timestamps and its runs' wall times taken out."""
    if isinstance(summary, dict):
        return {k: comparable(v, session_root) for k, v in summary.items() if k != "seconds"}
    if isinstance(summary, list):
        return [comparable(v, session_root) for v in summary]
    if isinstance(summary, str):
        return _TIME.sub("TIME", summary.replace(str(session_root), "SESSION"))
    return summary


@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
def test_two_xdist_workers_give_the_same_benchmark_as_none_and_run_each_model_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-n 2 over two tasks equals -n 0 (timestamps and folders aside), each model run in one child process."""
    model = make_fake_model(pytester.path)
    summaries = {}
    for workers in ("0", "2"):
        session_root = pytester.path / f"session-n{workers}"
        pids = session_root / "children"
        # The fine-tuned model answers in capitals: IFEval verdicts flip both ways (paired statistics, flips).
        use_fake_lm(monkeypatch, f"pid_dir={pids},shout_for=merged_16bit")
        result = pytester.runpytest_subprocess(
            "-n", workers, *bench_args(model, session_root / "out", "--bench-tasks=ifeval,gsm8k",
                                       "--bench-min-gain=-100", "--bench-max-drop=100"))
        result.assert_outcomes(passed=3)
        children = sorted(p.read_text() for p in pids.glob("*.pid"))
        assert children == sorted([str(model.parent / "model-base"), str(model / "merged_16bit")]), children
        summary = json.loads((session_root / "out" / "benchmark.json").read_text())
        summaries[workers] = comparable(summary, session_root)
    assert summaries["0"]["comparison"]["ifeval"]["flips"]["improved"] > 0
    assert summaries["2"] == summaries["0"]
