"""Every example in conftest_examples/, copied into a fresh project and run as its README says.

The cheap checks (option names, ini values, the gates each example collects) use a stand-in model
folder and never run a model. The end-to-end runs use the real SmolLM2 fixtures, the bundled
offline data and lm-eval, with the settings of test_end_to_end.py (10 IFEval prompts, 32 new
tokens): the base model's scores then come from the session's base-score cache after the first
run, and every run of the unchanged model shares one --bench-output, whose lm-eval response cache
answers the repeated prompts.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from iniconfig import IniConfig

from tests.conftest import FAST_ARGS, read_json
from tests.test_docs import help_flags, help_ini_keys, help_text

EXAMPLES = Path(__file__).resolve().parent.parent / "conftest_examples"
NAMES = ("ci_regression_gate", "acceptance", "custom_tasks", "domain_test")
WORKFLOW = EXAMPLES / "ci_regression_gate" / "github-workflow.yml"
LIMIT = ("--bench-suite", "test", "--bench-limit", "10")
RUN_TIMEOUT_S = 1200


def copy_example(pytester: pytest.Pytester, name: str) -> Path:
    shutil.copytree(EXAMPLES / name, pytester.path, dirs_exist_ok=True)
    return pytester.path


def stand_in_model(pytester: pytest.Pytester) -> tuple[str, ...]:
    """A model folder that lets the plugin configure itself without running anything."""
    pytester.mkdir("stand-in")
    (pytester.path / "stand-in" / "config.json").write_text("{}")
    return ("--bench-model", "stand-in", "--bench-base", "stand-in")


@pytest.fixture(scope="session")
def shared_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The --bench-output of every example run (their response caches are shared through the cache folder)."""
    return tmp_path_factory.mktemp("examples-out")


def bench_args(model: Path, data: Path | None, output: Path, *extra: str) -> list[str]:
    """Paths as `--bench-x=PATH`: as separate words pytest would look for its ini file above them, not here."""
    args = [f"--bench-model={model}", f"--bench-output={output}"]
    if data is not None:
        args.append(f"--bench-data-dir={data}")
    return [*args, *extra, *FAST_ARGS, "-rA"]


def option_values(argv: list[str]) -> dict[str, str]:
    """{flag: value} of the `--bench-*` options in `argv`, in either `--flag=value` or `--flag value` form."""
    values = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--bench-"):
            flag, sep, value = arg.partition("=")
            values[flag] = value if sep else argv[i + 1]
    return values


def workflow() -> dict[Any, Any]:
    flow: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return flow


def pytest_step(flow: dict[Any, Any]) -> dict[str, Any]:
    steps = [s for s in flow["jobs"]["bench"]["steps"] if "-m pytest" in str(s.get("run", ""))]
    assert len(steps) == 1, steps
    step: dict[str, Any] = steps[0]
    return step


def pytest_arguments(step: dict[str, Any], environment: dict[str, str]) -> list[str]:
    """The step's pytest arguments, with shell variables expanded from `environment` only."""
    argv = shlex.split(step["run"])
    start = argv.index("pytest") + 1
    expanded = []
    for arg in argv[start:]:
        for name, value in environment.items():
            arg = arg.replace(f"${name}", value)
        assert "$" not in arg, f"unexpanded variable in {arg!r}"
        expanded.append(arg)
    return expanded


# ---------------------------------------------------------------------------------------------- cheap checks


@pytest.mark.parametrize("name", NAMES)
def test_example_has_a_readme(name: str) -> None:
    readme = EXAMPLES / name / "README.md"
    assert readme.is_file() and len(readme.read_text().strip().splitlines()) >= 3


@pytest.mark.parametrize("name", [n for n in NAMES if (EXAMPLES / n / "pytest.ini").is_file()])
def test_example_ini_keys_exist(pytester: pytest.Pytester, name: str) -> None:
    keys = help_ini_keys(help_text(pytester))
    ini = IniConfig(str(EXAMPLES / name / "pytest.ini"))
    used = {key for key in ini.sections["pytest"] if key.startswith("bench_")}
    assert used and used <= keys, f"{name}/pytest.ini: unknown {sorted(used - keys)}"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ci_regression_gate", ["finetune-bench::ifeval::improves", "finetune-bench::ifeval::no_regression",
                                "finetune-bench::gsm8k::no_regression", "finetune-bench::hellaswag::no_regression",
                                "*4 tests collected*"]),
        ("acceptance", ["test_acceptance.py::test_few_ifeval_prompts_lost",
                        "test_acceptance.py::test_gsm8k_gain_is_significant",
                        "finetune-bench::ifeval::improves", "finetune-bench::ifeval::no_regression",
                        "finetune-bench::gsm8k::improves", "finetune-bench::gsm8k::no_regression",
                        "finetune-bench::hellaswag::no_regression", "*7 tests collected*"]),
        ("custom_tasks", ["finetune-bench::arc_easy::improves", "finetune-bench::arc_easy::no_regression",
                          "finetune-bench::port_numbers::improves", "finetune-bench::port_numbers::no_regression",
                          "*4 tests collected*"]),
        ("domain_test", ["test_domain.py::test_no_json_prompt_lost", "*test_sixteen_bit_merge_is_evaluated",
                         "finetune-bench::ifeval::improves", "finetune-bench::ifeval::no_regression",
                         "*7 tests collected*"]),
    ],
)
def test_example_configures_the_plugin(pytester: pytest.Pytester, name: str, expected: list[str]) -> None:
    """The plugin accepts every value of the example's settings and collects the gates it describes."""
    copy_example(pytester, name)
    # In-process: collecting starts no process (tests/conftest.py imports what cannot be imported twice).
    result = pytester.runpytest(*stand_in_model(pytester), "--collect-only", "-q", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(expected, consecutive=False)


def test_example_tests_skip_without_bench_model(pytester: pytest.Pytester) -> None:
    copy_example(pytester, "domain_test")
    copy_example(pytester, "acceptance")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=7)
    result.stdout.fnmatch_lines(["*needs --bench-model*"])


def test_workflow_runs_pytest_with_existing_options_only(pytester: pytest.Pytester) -> None:
    flow = workflow()
    step = pytest_step(flow)
    argv = pytest_arguments(step, {"GITHUB_WORKSPACE": "/w", "MODEL_DIR": "outputs/m"})
    flags = help_flags(help_text(pytester))
    values = option_values(argv)
    used = set(values)
    assert {"--bench-model", "--bench-output", "--bench-json"} <= used
    # A path given as a separate word would make pytest miss the gate folder's pytest.ini.
    assert all(arg.startswith("--bench-") or not arg.startswith("/") for arg in argv), argv
    assert used <= flags, f"unknown options in the workflow: {sorted(used - flags)}"
    job = flow["jobs"]["bench"]
    # The folder the pytest step runs in is where the example's pytest.ini is meant to go.
    assert step["working-directory"] == "bench-gate"
    assert "bench-gate/**" in (flow.get("on") or flow[True])["push"]["paths"]
    # The cached folder is the one the plugin reads base scores from.
    cache = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/cache"))
    assert job["env"]["PYTEST_FINETUNE_BENCH_CACHE"] == "${{ github.workspace }}/" + cache["with"]["path"]
    # Results are uploaded even when a gate fails the step.
    upload = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"
    assert upload["with"]["path"].rstrip("/") == values["--bench-output"].removeprefix("/w/")
    # The gate report artifact holds the JUnit XML and the benchmark.json copy.
    report = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")][1]
    junit = next(arg.partition("=")[2] for arg in argv if arg.startswith("--junitxml="))
    folder = report["with"]["path"].rstrip("/")
    assert {Path(junit).parent, Path(values["--bench-json"]).parent} == {Path("/w") / folder}
    assert report["if"] == "always()"


def test_workflow_installs_the_wheel_build_writes() -> None:
    # Not on PyPI: `pip install pytest-finetune-bench` would fail, so the job installs the wheel the
    # example's README says to put in bench-gate/, whose name `python -m build` derives from the metadata.
    [install] = [s for s in workflow()["jobs"]["bench"]["steps"] if s.get("name") == "Install"]
    pip, _, target = install["run"].partition("python -m pip install ")
    assert not pip and Path(target).parent == Path("bench-gate"), install["run"]
    built = f"pytest_finetune_bench-{importlib.metadata.version('pytest-finetune-bench')}-py3-none-any.whl"
    assert fnmatch.fnmatch(built, Path(target).name), (built, target)


# ---------------------------------------------------------------------------------------------- real runs


def test_ci_gate_end_to_end(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, unchanged_outputs: Path, demo_data: Path,
    shared_output: Path,
) -> None:
    """The workflow's pytest command in the gate folder: real base and fine-tuned runs, gates, job summary."""
    copy_example(pytester, "ci_regression_gate")
    workspace = unchanged_outputs.parent.parent
    argv = pytest_arguments(
        pytest_step(workflow()),
        {"GITHUB_WORKSPACE": str(workspace), "MODEL_DIR": str(unchanged_outputs.relative_to(workspace))},
    )
    assert Path(option_values(argv)["--bench-model"]) == unchanged_outputs
    job_summary = pytester.path / "job-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(job_summary))
    report = pytester.path / "bench-report"
    # Small settings for a CPU, and results kept out of the shared model folder (the last --bench-output,
    # --bench-json and --junitxml win).
    result = pytester.runpytest_subprocess(
        *argv, *bench_args(unchanged_outputs, demo_data, shared_output, *LIMIT), f"--bench-json={report}/b.json",
        f"--junitxml={report}/junit.xml", timeout=RUN_TIMEOUT_S
    )
    # The fine-tune changed nothing: it does not regress, and it does not gain the 2 points pytest.ini asks for.
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "configfile: pytest.ini",
        "*ifeval did not improve by +2.00 points: base * → fine-tuned *: Δ +0.00 points (+0.0%)*",
        "Instruction-Following (IFEval)*→ No change*",
        "PASSED finetune-bench::ifeval::no_regression",
    ])
    summary = read_json(shared_output / "benchmark.json")
    assert summary["status"] == "complete" and summary["comparison"]["ifeval"]["delta"] == 0.0
    table = job_summary.read_text()
    assert "### Fine-tune benchmark: unchanged-smollm2 vs " in table
    assert "| Instruction-Following (IFEval) |" in table and "| → No change |" in table
    assert read_json(report / "b.json") == summary
    assert '<property name="delta" value="0.0"' in (report / "junit.xml").read_text()


def test_domain_tests_use_the_fixtures(
    pytester: pytest.Pytester, unchanged_outputs: Path, demo_data: Path, shared_output: Path
) -> None:
    copy_example(pytester, "domain_test")
    result = pytester.runpytest_subprocess(
        *bench_args(unchanged_outputs, demo_data, shared_output, *LIMIT, "--bench-min-gain", "0"),
        timeout=RUN_TIMEOUT_S,
    )
    result.assert_outcomes(passed=6, skipped=1)
    result.stdout.fnmatch_lines([
        "*PASSED test_domain.py::test_no_json_prompt_lost*",
        "*PASSED test_domain.py::test_loose_ifeval_holds*",
        "*SKIPPED*test_domain.py:*benchmark test needs gsm8k, hellaswag, which this run (--bench-suite test)*",
    ])


def test_acceptance_per_task_thresholds_and_compare_to(
    pytester: pytest.Pytester, unchanged_outputs: Path, demo_data: Path, shared_output: Path
) -> None:
    copy_example(pytester, "acceptance")
    args = bench_args(unchanged_outputs, demo_data, shared_output, *LIMIT)

    first = pytester.runpytest_subprocess(*args, timeout=RUN_TIMEOUT_S)
    # pytest.ini's per-task threshold (ifeval=5, not the default 2) at its confidence level (90%), which
    # Holm shares between IFEval's two interval gates: here each is held to 95%.
    first.assert_outcomes(passed=2, failed=1, skipped=1)
    first.stdout.fnmatch_lines(
        ["configfile: pytest.ini", "*ifeval did not improve by +5.00 points with 95% confidence*"]
    )
    experiment_1 = read_json(shared_output / "benchmark.json")
    run_folder = Path(experiment_1["fine_tuned_model"]["benchmark_dir"])

    second = pytester.runpytest_subprocess(*args, f"--bench-compare-to={run_folder}", timeout=RUN_TIMEOUT_S)
    second.assert_outcomes(passed=2, failed=1, skipped=1)
    out = second.stdout.str()
    assert "[bench] reference: " in out and "[bench] base:" not in out
    experiment_2 = read_json(shared_output / "benchmark.json")
    assert experiment_2["comparison"]["ifeval"]["base_accuracy"] == experiment_1["comparison"]["ifeval"][
        "finetuned_accuracy"
    ]
    assert experiment_2["base_model"]["results_file"] == experiment_1["fine_tuned_model"]["results_file"]


def test_custom_tasks_read_local_data_and_tasks_of_their_own(
    pytester: pytest.Pytester, unchanged_outputs: Path, shared_output: Path
) -> None:
    """The example's suite, for real: arc_easy on its own questions (the offline overlay) and its own
    port_numbers task (--bench-include-path: YAML, helper and data), both runs and the gates."""
    project = copy_example(pytester, "custom_tasks")
    questions = (project / "data" / "arc_easy" / "test.jsonl").read_text().splitlines()
    ports = (project / "tasks" / "port_numbers.jsonl").read_text().splitlines()
    # pytest.ini names the suite, the data and task folders; relative paths are taken from where pytest starts.
    result = pytester.runpytest_subprocess(*bench_args(unchanged_outputs, None, shared_output), timeout=RUN_TIMEOUT_S)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["configfile: pytest.ini", "arc_easy: acc_norm *→ No change*",
                                 "port_numbers: port_named *→ No change*"], consecutive=False)
    summary = read_json(shared_output / "benchmark.json")
    comparison = summary["comparison"]["arc_easy"]
    assert comparison["metric"] == "acc_norm,none" and comparison["stats"]["n"] == len(questions)
    own = summary["comparison"]["port_numbers"]
    assert own["metric"] == "port_named,none" and own["higher_is_better"] is True and own["stats"]["n"] == len(ports)
    assert summary["reproduce"]["limit"] is None  # a suite of one's own: no sample limit
    overlay = json.loads((shared_output / "offline-tasks" / "arc_easy.yaml").read_text())
    expected = (project / "data" / "arc_easy" / "test.jsonl").resolve()
    assert overlay["dataset_kwargs"]["data_files"] == {"test": str(expected)}
    assert os.path.basename(overlay["include"]) == "arc_easy.yaml"
    # The task of its own reads its own files: the folder lm-eval is given only points at it.
    stub = json.loads((shared_output / "offline-tasks" / "port_numbers.yaml").read_text())
    assert stub == {"include": str((project / "tasks" / "port_numbers.yaml").resolve())}
