"""Bad input: each case ends in one line (a usage error or a failed gate with its reason), never a traceback.

Sessions that load lm-eval's task machinery run in a subprocess: `datasets` cannot be imported twice
into one process, which pytester's in-process runs would do.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.run.engine import _collect
from pytest_finetune_bench.run.recovery import pip_command
from pytest_finetune_bench.store.files import check_writable_dir, read_json_file
from pytest_finetune_bench.store.locks import locked
from tests.fake_sessions import bench_args, make_fake_model, use_fake_lm

RUN = ("-p", "no:cacheprovider", "--bench-device=cpu")


def usage_error(result: pytest.RunResult, message: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "Traceback" not in result.stderr.str()


def gates_fail_with(result: pytest.RunResult, message: str, gates: int = 2) -> None:
    """Every gate fails, its whole report being `message` (one line)."""
    result.assert_outcomes(failed=gates)
    text = result.stdout.str()
    assert "Traceback" not in text
    lines = text.splitlines()
    reports = [lines[i + 1] for i, line in enumerate(lines) if line.startswith("_") and "finetune-bench:" in line]
    assert len(reports) == gates and all(fnmatch_one(report, message) for report in reports), reports


def fnmatch_one(line: str, pattern: str) -> bool:
    from fnmatch import fnmatch

    return fnmatch(line, pattern.replace("[", "[[]"))  # only * is a wildcard here


def model_with_base(root: Path, base: str) -> Path:
    model = root / "outputs" / "m"
    (model / "merged_16bit").mkdir(parents=True)
    (model / "merged_16bit" / "config.json").write_text("{}")
    (model / "lora").mkdir()
    (model / "lora" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    return model


def test_missing_model_folder(pytester: pytest.Pytester) -> None:
    pytester.mkdir("outputs")  # a typo in the name, not a Hub id
    usage_error(pytester.runpytest("--bench-model=outputs/nothing-here", *RUN),
                "--bench-model outputs/nothing-here does not exist: pass an outputs/<name> folder, *")


def test_model_without_merged_export_or_adapter_weights_names_what_is_looked_for(pytester: pytest.Pytester) -> None:
    base = pytester.mkdir("base")
    (base / "config.json").write_text("{}")
    model = pytester.path / "outputs" / "m"
    (model / "lora").mkdir(parents=True)
    (model / "lora" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    usage_error(pytester.runpytest(f"--bench-model={model}", *RUN),
                f"No merged model or LoRA adapter found in {model} (looked for merged_16bit/config.json, "
                "merged_4bit/config.json, and lora/adapter_config.json with lora/adapter_model.safetensors or "
                "lora/adapter_model.bin): save the fine-tune there, or use --bench-backend ollama for its GGUF")


def test_base_model_that_does_not_exist(pytester: pytest.Pytester) -> None:
    model = model_with_base(pytester.path, "/nonexistent/base-model")
    usage_error(pytester.runpytest(f"--bench-model={model}", *RUN),
                "base model '/nonexistent/base-model' is neither a model folder nor a Hub id: pass --bench-base*")


def test_base_model_that_cannot_be_told(pytester: pytest.Pytester) -> None:
    model = pytester.path / "m"
    (model / "merged_16bit").mkdir(parents=True)
    (model / "merged_16bit" / "config.json").write_text("{}")
    usage_error(pytester.runpytest(f"--bench-model={model}", *RUN),
                f"cannot tell the base model of {model}: no lora/adapter_config.json *; pass --bench-base PATH_OR_ID")


def test_base_folder_that_is_not_a_model(pytester: pytest.Pytester, demo_data: Path) -> None:
    not_a_model = pytester.mkdir("adapter-only")
    model = model_with_base(pytester.path, str(not_a_model))
    usage_error(pytester.runpytest(f"--bench-model={model}", f"--bench-data-dir={demo_data}", *RUN),
                f"base model folder {not_a_model} has no config.json: *; pass --bench-base a model folder or Hub id")


def test_unknown_task_names_close_matches(pytester: pytest.Pytester) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    usage_error(
        pytester.runpytest("--bench-model=model", "--bench-base=model", "--bench-tasks=ifevl", *RUN),
        "unknown lm-eval task 'ifevl'; did you mean ifeval*?",
    )


@pytest.mark.parametrize(("tasks", "message"), [
    ("mmlu,mmlu_anatomy", "tasks 'mmlu' and 'mmlu_anatomy' both hold 'mmlu_anatomy', and lm-eval evaluates a task "
                          "once per run: ask for one of them"),
    ("mmlu_stem,mmlu", "tasks 'mmlu_stem' and 'mmlu' both hold 'mmlu_*', *: ask for one of them"),
])
def test_tasks_that_hold_the_same_task(pytester: pytest.Pytester, tasks: str, message: str) -> None:
    """lm-eval refuses a run that holds a task twice; said before any model loads, with what to do."""
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    usage_error(pytester.runpytest("--bench-model=model", "--bench-base=model", f"--bench-tasks={tasks}", *RUN),
                message)


def test_unknown_suite(pytester: pytest.Pytester) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    usage_error(pytester.runpytest("--bench-model=model", "--bench-base=model", "--bench-suite=quik", *RUN),
                "--bench-suite: 'quik' is not a suite: choose one of test, quick, core, full")


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (["--bench-timeout=soon"], "",
         "--bench-timeout: 'soon' is not a duration: use e.g. 30min, 10m, 600s, 600 or 1h"),
        (["--bench-timeout=-5m"], "", "--bench-timeout: '-5m' is not a duration*"),
        ([], "bench_timeout = 10 parsecs", "ini option bench_timeout: '10 parsecs' is not a duration*"),
        (["--bench-max-drop=gsm8k=lots"], "", "--bench-max-drop: 'lots' is not a number of points*"),
        (["--bench-min-gain=much"], "", "--bench-min-gain: 'much' is not a number of points*"),
        ([], "bench_max_drop = =3", "ini option bench_max_drop: '=3' has no task name before '='"),
    ],
)
def test_malformed_thresholds_and_timeouts(pytester: pytest.Pytester, args: list[str], ini: str, message: str) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    usage_error(pytester.runpytest("--bench-model=model", "--bench-base=model", *args, *RUN), message)


def test_output_folder_that_cannot_be_written_stops_the_session_at_once(pytester: pytest.Pytester) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    (pytester.path / "a-file").write_text("not a folder")
    result = pytester.runpytest("--bench-model=model", "--bench-base=model", "--bench-output=a-file/results", *RUN)
    usage_error(result, "cannot write results to a-file/results: a-file is not a folder; choose another with "
                        "--bench-output")


def test_check_writable_dir_probes_without_creating(tmp_path: Path) -> None:
    check_writable_dir(tmp_path / "new" / "deeper", "--bench-output")
    assert not (tmp_path / "new").exists()
    assert not list(tmp_path.iterdir())  # the probe file is gone too


def test_data_dir_without_the_task_file(pytester: pytest.Pytester) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    empty = pytester.mkdir("data")
    usage_error(
        pytester.runpytest("--bench-model=model", "--bench-base=model", f"--bench-data-dir={empty}", *RUN),
        f"--bench-data-dir has no data for task 'ifeval': expected {empty}/ifeval/train.jsonl in the google/IFEval "
        "schema (see docs/offline.md)",
    )


@pytest.mark.parametrize(
    ("module", "command"),
    [
        ("langdetect", "pip install 'lm-eval[ifeval]'"),
        ("immutabledict", "pip install 'lm-eval[ifeval]'"),
        ("nltk.tokenize", "pip install 'lm-eval[ifeval]'"),
        ("tenacity", "pip install 'lm-eval[api]'"),
        ("lm_eval", "pip install 'lm-eval[api,hf,ifeval]==0.4.13'"),
        ("sacrebleu_extra_thing", "pip install sacrebleu_extra_thing"),
    ],
)
def test_missing_module_maps_to_its_pip_command(module: str, command: str) -> None:
    assert pip_command(module) == command


@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
def test_missing_dependency_in_the_child_is_one_line_with_the_fix(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_fake_model(pytester.path)
    use_fake_lm(monkeypatch, "missing=langdetect")
    result = pytester.runpytest_subprocess(*bench_args(model, pytester.path / "out"))
    gates_fail_with(result, "base run needs the Python module 'langdetect', which is not installed: "
                            "run `pip install 'lm-eval[ifeval]'`")


def test_read_json_file_names_the_file_and_the_remedy(tmp_path: Path) -> None:
    corrupt = tmp_path / "results_2024.json"
    corrupt.write_text('{"results": {"ifeval": ')
    with pytest.raises(BenchError, match=r"results_2024.json is not valid JSON \(.*\): delete it and re-run$"):
        read_json_file(corrupt, "delete it and re-run")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(BenchError, match=r"list.json does not hold a JSON object: pick another run$"):
        read_json_file(tmp_path / "list.json", "pick another run")
    with pytest.raises(BenchError, match=r"missing.json does not exist: pick another run$"):
        read_json_file(tmp_path / "missing.json", "pick another run")
    good = tmp_path / "ok.json"
    good.write_text('{"a": 1}')
    assert read_json_file(good, "pick another run") == {"a": 1}


def test_corrupt_lm_eval_results_file_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "staging"
    out.mkdir()
    (out / "results_2024-01-01T00-00-00.json").write_text("{oops")
    request = SimpleNamespace(role="base", model="m", results_dir=tmp_path / "lm-eval", log_path=tmp_path / "run.log")
    with pytest.raises(BenchError, match=r"results_2024-01-01T00-00-00.json is not valid JSON .*: lm-eval wrote an "
                                         r"unreadable results file; see .*run.log$"):
        _collect(request, out, 0)  # type: ignore[arg-type]


def test_a_held_lock_makes_others_wait_or_give_up(tmp_path: Path) -> None:
    import subprocess
    import sys

    target = tmp_path / "benchmark.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from pytest_finetune_bench.store.locks import locked\n"
         "with locked(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(2)\n", str(target)],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    held_at = time.monotonic()
    with pytest.raises(BenchError, match=r"another session still holds .*benchmark.json.lock after 0s"):
        with locked(target, timeout_s=0.3):
            pass
    waited: list[Path] = []
    with locked(target, on_wait=waited.append):
        assert time.monotonic() - held_at > 1.0  # we got in only once the holder was done
    assert waited == [tmp_path / "benchmark.json.lock"]
    holder.wait()


@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
def test_hub_data_unreachable_names_the_offline_option_before_loading_a_model(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_fake_model(pytester.path / "outputs")
    use_fake_lm(monkeypatch)
    # As on a machine without the Hub: no network for the Hub clients, and no cached copy of the dataset.
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_HOME", str(pytester.path / "hf-home"))
    result = pytester.runpytest_subprocess(f"--bench-model={model}", f"--bench-output={pytester.path / 'out'}",
                                           "--bench-suite=test", *RUN)
    gates_fail_with(result, "base run could not load benchmark data from the Hugging Face Hub (ifeval: *): "
                            "on a machine without the Hub, pass --bench-data-dir DIR with the datasets as local files "
                            "(see docs/offline.md)")
    assert "loading model" not in result.stdout.str()
    # A task defined in Python gets as far as its data too: only the offline overlay refuses such tasks.
    python_task = pytester.runpytest_subprocess(f"--bench-model={model}", f"--bench-output={pytester.path / 'out2'}",
                                                "--bench-tasks=squadv2", *RUN)
    gates_fail_with(python_task, "base run could not load benchmark data from the Hugging Face Hub (squadv2: *", 1)
