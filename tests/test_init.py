"""`pytest-finetune-bench init`: the guided set-up, through a real terminal and with --yes.

The written configuration is read back (tomllib, iniconfig, and pytest itself), and the command init
prints is run as written: with --bench-plan after the terminal session, and as a real benchmark
session (small limits, offline data) after the --yes run.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import iniconfig
import pexpect
import pytest
import yaml

from pytest_finetune_bench import BenchError, cli
from pytest_finetune_bench.init.config_file import (
    ConfigTarget,
    edit_ini,
    edit_toml,
    locate_config,
    write_config,
)
from pytest_finetune_bench.init.wizard import Answers, bench_keys
from pytest_finetune_bench.plan.option_table import OPTIONS
from tests.cli_runs import run_cli

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

BIN = Path(sys.executable).parent
SCRIPT = BIN / "pytest-finetune-bench"
PYPROJECT = """\
[project]
name = "my-finetunes"  # the project's own settings stay as they are
dependencies = [
    "torch",
    "peft",
]

[tool.pytest.ini_options]
# our tests
testpaths = ["tests"]
bench_suite = "full"

[tool.ruff]
line-length = 100
"""


def fake_experiment(outputs: Path, name: str, *, merged: bool = True, base: str | None = "org/base-model") -> Path:
    """outputs/<name>/ in the pipeline layout, without weights (enough for discovery, not for a run)."""
    root = outputs / name
    (root / "lora").mkdir(parents=True)
    if base:
        (root / "lora" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    if merged:
        (root / "merged_16bit").mkdir()
        (root / "merged_16bit" / "config.json").write_text("{}")
    return root


def real_experiment(outputs: Path, name: str, model: Path) -> Path:
    """outputs/<name>/ whose merged model is `model` and whose lora/ names `model` as the base."""
    root = outputs / name
    (root / "lora").mkdir(parents=True)
    (root / "lora" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(model)}))
    (root / "merged_16bit").symlink_to(model, target_is_directory=True)
    return root


def run_init(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`pytest-finetune-bench init ARGS` in `cwd` with no terminal (stdin empty, as in a script or CI), in this
    process (tests/cli_runs.py); the terminal tests below run the console script itself."""
    return run_cli("init", *args, cwd=cwd, prog=cli.SCRIPT)


def printed_command(stdout: str) -> list[str]:
    lines = [line for line in stdout.splitlines() if line.startswith("Next: ")]
    assert len(lines) == 1, stdout
    return shlex.split(lines[0].removeprefix("Next: "))


def run_as_written(command: list[str], cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The printed command, its `pytest` being this environment's."""
    assert command[0] == "pytest"
    return subprocess.run([str(BIN / "pytest"), *command[1:], *extra], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


# --- the keys ---------------------------------------------------------------------------------------


def test_every_key_init_writes_is_an_ini_key_of_the_plugin() -> None:
    answers = Answers(("outputs/a", "outputs/b"), "core", "ollama", ("ifeval", "gsm8k"), ("2", "gsm8k=1"),
                      ("5",), base="org/base", base_url="http://localhost:11434")
    keys = bench_keys(answers)
    options = {option.ini: option for option in OPTIONS}
    assert set(keys) <= set(options), set(keys) - set(options)
    assert len(keys) == len(dataclasses.fields(Answers))  # every answer set: every key init writes is checked
    for key, value in keys.items():
        # several values (a tuple) exactly where the plugin reads a list (pytest's "args" ini type)
        assert isinstance(value, tuple) == options[key].multiple, key


# --- writing pyproject.toml -------------------------------------------------------------------------


KEYS: dict[str, str | tuple[str, ...]] = {
    "bench_model": ("outputs/a", "outputs/b c"), "bench_suite": "test", "bench_min_gain": ("2", "ifeval=5")}


def test_pyproject_keeps_everything_else_and_replaces_only_bench_keys(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    new, changes = edit_toml(PYPROJECT, KEYS, path)
    doc = tomllib.loads(new)
    assert doc["tool"]["pytest"]["ini_options"] == {
        "testpaths": ["tests"], "bench_suite": "test", "bench_model": ["outputs/a", "outputs/b c"],
        "bench_min_gain": ["2", "ifeval=5"]}
    assert doc["project"] == tomllib.loads(PYPROJECT)["project"] and doc["tool"]["ruff"] == {"line-length": 100}
    # Only the section's lines changed: bench_suite in place, the new keys after the section's last key.
    assert new.replace('bench_suite = "test"\n', 'bench_suite = "full"\n').replace(
        'bench_model = ["outputs/a", "outputs/b c"]\nbench_min_gain = ["2", "ifeval=5"]\n', "") == PYPROJECT
    assert changes.replaced == {"bench_suite": "full"} and changes.added == ("bench_model", "bench_min_gain")


def test_pyproject_without_the_section_gets_it_at_the_end(tmp_path: Path) -> None:
    text = '[project]\nname = "x"\n\n[[tool.mypy.overrides]]\nmodule = "a"\n'
    new, _ = edit_toml(text, {"bench_suite": "quick"}, tmp_path / "pyproject.toml")
    assert new == text + '\n[tool.pytest.ini_options]\nbench_suite = "quick"\n'
    again, changes = edit_toml(new, {"bench_suite": "core"}, tmp_path / "pyproject.toml")
    assert again == new.replace('"quick"', '"core"') and changes.replaced == {"bench_suite": "quick"}


def test_pyproject_multiline_values_and_comments_are_edited_whole(tmp_path: Path) -> None:
    text = ('[tool.pytest.ini_options]\nbench_max_drop = [\n  "5",  # all\n  "gsm8k=3",\n]\n'
            '# a comment that stays\nbench_data_dir = "data"\n"bench_suite" = """\ncore"""\n\n[tool.x]\ny = 1\n')
    new, changes = edit_toml(text, {"bench_max_drop": ("4",), "bench_suite": "test"}, tmp_path / "p.toml")
    assert new == ('[tool.pytest.ini_options]\nbench_max_drop = ["4"]\n# a comment that stays\n'
                   'bench_data_dir = "data"\nbench_suite = "test"\n\n[tool.x]\ny = 1\n')
    assert changes.kept == {"bench_data_dir": "data"}


def test_pyproject_that_cannot_be_edited_safely_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    text = '[tool]\npytest.ini_options.addopts = "-q"\n'  # the table exists only through a dotted key
    path.write_text(text)
    with pytest.raises(BenchError, match=r"by hand: bench_suite = \"test\""):
        write_config(ConfigTarget(path, ("tool", "pytest", "ini_options")), {"bench_suite": "test"})
    assert path.read_text() == text
    path.write_text("[tool.pytest.ini_options\n")
    with pytest.raises(BenchError, match="not valid TOML"):
        write_config(ConfigTarget(path, ("tool", "pytest", "ini_options")), {"bench_suite": "test"})


# --- writing pytest.ini / tox.ini -------------------------------------------------------------------


def ini_sections(text: str) -> dict[str, dict[str, str]]:
    return {section.name: dict(section.items()) for section in iniconfig.IniConfig("x.ini", data=text)}


def test_ini_keeps_comments_and_continuations_and_replaces_only_bench_keys(tmp_path: Path) -> None:
    text = ("# project settings\n[pytest]\naddopts = -q\nbench_model = outputs/old\n    outputs/older\n"
            "; kept comment\nmarkers =\n    slow: slow tests\n\n[flake8]\nmax-line-length = 100\n")
    new, changes = edit_ini(text, KEYS, tmp_path / "pytest.ini")
    assert new == ("# project settings\n[pytest]\naddopts = -q\nbench_model = outputs/a 'outputs/b c'\n"
                   "; kept comment\nmarkers =\n    slow: slow tests\nbench_suite = test\nbench_min_gain = 2 ifeval=5\n"
                   "\n[flake8]\nmax-line-length = 100\n")
    assert shlex.split(ini_sections(new)["pytest"]["bench_model"]) == ["outputs/a", "outputs/b c"]
    assert changes.replaced == {"bench_model": "outputs/old\noutputs/older"}


def test_tox_ini_without_a_pytest_section_gets_one(tmp_path: Path) -> None:
    text = "[tox]\nenvlist = py311\n\n[testenv]\ncommands = pytest {posargs}"
    new, _ = edit_ini(text, {"bench_suite": "core"}, tmp_path / "tox.ini")
    assert new == text + "\n\n[pytest]\nbench_suite = core\n"


def test_config_is_the_one_pytest_reads_here(tmp_path: Path) -> None:
    assert locate_config(tmp_path) == ConfigTarget(tmp_path / "pytest.ini", None)  # none yet: a new pytest.ini
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert locate_config(tmp_path).path.name == "pyproject.toml"  # no pytest table yet: it gets one
    (tmp_path / "tox.ini").write_text("[pytest]\naddopts = -q\n")
    assert locate_config(tmp_path).path.name == "tox.ini"  # pytest reads tox.ini [pytest] before it
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\naddopts = '-q'\n")
    assert locate_config(tmp_path).path.name == "pyproject.toml"
    (tmp_path / "pytest.ini").write_text("")
    assert locate_config(tmp_path).path.name == "pytest.ini"  # even empty, pytest.ini wins
    (tmp_path / "pytest.toml").write_text("")
    with pytest.raises(BenchError, match=r"pytest\.toml .* by hand"):
        locate_config(tmp_path)


# --- the command, without a terminal ----------------------------------------------------------------


def test_yes_without_a_terminal_writes_the_config_and_prints_the_command(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    fake_experiment(outputs, "run-b")
    fake_experiment(outputs, "run-a")
    fake_experiment(outputs, "adapter-only", merged=False)
    (outputs / "logs").mkdir()
    (tmp_path / "pytest.ini").write_text("[pytest]\n# mine\naddopts = -q\n")
    proc = run_init(tmp_path, "--yes", "--max-drop", "5 gsm8k=3", "--suite", "core")
    assert proc.returncode == 0, proc.stderr
    assert "adapter-only: lora/: no merged model, adapter weights or GGUF yet" in proc.stdout
    assert printed_command(proc.stdout) == ["pytest", "outputs"]
    text = (tmp_path / "pytest.ini").read_text()
    assert text.startswith("[pytest]\n# mine\naddopts = -q\n")
    assert ini_sections(text)["pytest"] == {
        "addopts": "-q", "bench_model": "outputs/run-a outputs/run-b", "bench_suite": "core",
        "bench_backend": "auto", "bench_target_tasks": "ifeval", "bench_min_gain": "2",
        "bench_max_drop": "5 gsm8k=3"}
    assert not (tmp_path / ".github").exists()


@pytest.mark.parametrize(("layout", "args", "message"), [
    ("empty", ["--yes"], "no experiments found under .*outputs: expected outputs/<name>/ folders holding lora/"),
    ("none", ["--yes"], "outputs is not a folder"),
    ("adapter", ["--yes"], "none of these experiments has a merged model or a GGUF export"),
    ("ok", [], "no terminal to ask on: pass --yes"),
    ("ok", ["--yes", "--suite", "huge"], "--suite 'huge': 'huge' is not a suite"),
    ("ok", ["--yes", "--target-tasks", "mmlu"], "--target-tasks 'mmlu': choose among this suite's tasks"),
    ("nobase", ["--yes"], "Base model to compare against .*: there is no default, pass --base"),
    ("ok", ["--yes", "--experiments", "7"], "--experiments '7': '7' is none of the experiments"),
    ("gguf", ["--yes", "--backend", "hf"], "--backend 'hf': hf loads a merged model, and exp has only a GGUF export"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, layout: str, args: list[str], message: str) -> None:
    outputs = tmp_path / "outputs"
    if layout != "none":
        outputs.mkdir()
    if layout in ("ok", "adapter", "nobase", "gguf"):
        root = fake_experiment(outputs, "exp", merged=layout in ("ok", "nobase"),
                               base=None if layout == "nobase" else "org/b")
        if layout == "gguf":
            (root / "gguf").mkdir()
            (root / "gguf" / "model.Q4_K_M.gguf").write_bytes(b"GGUF")
    proc = run_init(tmp_path, *args)
    assert proc.returncode == 2, proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert re.search(message, proc.stderr), proc.stderr
    assert not (tmp_path / "pytest.ini").exists()


def test_the_workflow_runs_the_printed_command(tmp_path: Path) -> None:
    fake_experiment(tmp_path / "outputs", "exp")
    proc = run_init(tmp_path, "--yes", "--ci", "--suite", "quick")
    assert proc.returncode == 0, proc.stderr
    workflow = yaml.safe_load((tmp_path / ".github" / "workflows" / "bench.yml").read_text())
    steps = {step.get("name"): step for step in workflow["jobs"]["bench"]["steps"]}
    assert steps["Benchmark"]["run"].startswith(f"python -m {shlex.join(printed_command(proc.stdout))} ")
    assert "test -d outputs/exp" in steps["Check the models are here"]["run"]
    # Not on PyPI: the job installs the wheel `python -m build` writes, by the name it gives it.
    built = f"pytest_finetune_bench-{importlib.metadata.version('pytest-finetune-bench')}-py3-none-any.whl"
    wheel = steps["Install"]["run"].removeprefix("python -m pip install ")
    assert fnmatch.fnmatch(f"wheels/{built}", wheel), wheel
    assert workflow["jobs"]["bench"]["runs-on"] == ["self-hosted", "gpu"]
    again = run_init(tmp_path, "--yes", "--ci")
    assert again.returncode == 2 and "bench.yml already exists and is left alone" in again.stderr


def test_a_file_pytest_would_not_find_is_named_in_the_command(tmp_path: Path) -> None:
    project = tmp_path / "project"
    fake_experiment(project / "outputs", "exp")
    (project / "pytest.ini").write_text("[pytest]\naddopts = -q\n")
    proc = run_init(project, "--yes", "--config", "bench/pytest.ini")
    assert proc.returncode == 0, proc.stderr
    assert printed_command(proc.stdout) == ["pytest", "-c", "bench/pytest.ini", "outputs"]
    assert "bench_suite = quick" in (project / "bench" / "pytest.ini").read_text()
    assert (project / "pytest.ini").read_text() == "[pytest]\naddopts = -q\n"
    fake_experiment(tmp_path / "elsewhere", "exp")  # outside the project: pytest would look for its ini there
    proc = run_init(project, "--yes", "--outputs", str(tmp_path / "elsewhere"))
    assert proc.returncode == 0, proc.stderr
    assert printed_command(proc.stdout) == ["pytest", "-c", "pytest.ini", str(tmp_path / "elsewhere")]
    assert f"bench_model = {tmp_path / 'elsewhere' / 'exp'}" in (project / "pytest.ini").read_text()


def test_terminal_answer_no_writes_nothing(tmp_path: Path) -> None:
    """Through a pseudo-terminal: flags answer their questions, Enter takes a default, `no` writes nothing."""
    fake_experiment(tmp_path / "outputs", "exp")
    child = pexpect.spawn(str(SCRIPT), ["init", "--suite", "core", "--backend", "hf"], cwd=str(tmp_path),
                          encoding="utf-8", timeout=60)
    child.expect(r"Benchmark which\? .* \[all\]: ")
    child.sendline("")
    child.expect(r"Tasks that must improve \[ifeval\]: ")  # suite and backend came from the flags
    assert "Suite [" not in child.before and "Backend [" not in child.before
    for _ in range(4):  # the gains, the drops and the workflow: their defaults
        child.sendline("")
    child.expect(r"bench_suite = core\r\n  bench_backend = hf\r\n")
    child.expect(r"Write them to pytest.ini\? \[yes\]: ")
    child.sendline("n")
    child.expect("Nothing written.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1 and not (tmp_path / "pytest.ini").exists()


# --- real sessions ----------------------------------------------------------------------------------


def test_terminal_session_then_the_printed_command(tmp_path: Path, base_model: Path) -> None:
    """init through a real pseudo-terminal, wrong answers included; the printed command plans the run."""
    real_experiment(tmp_path / "outputs", "exp-a", base_model)
    fake_experiment(tmp_path / "outputs", "adapter-only", merged=False)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    child = pexpect.spawn(str(SCRIPT), ["init"], cwd=str(tmp_path), encoding="utf-8", timeout=90,
                          env={**os.environ, "COLUMNS": "200"}, dimensions=(50, 200))
    child.expect(r"Benchmark which\? .* \[2\]: ")  # adapter-only (1) cannot be benchmarked yet
    child.sendline("adapter-only")
    child.expect("adapter-only has no merged model or GGUF export yet")
    child.expect(r"Benchmark which\?")
    child.sendline("exp-a")
    # A time on a CPU (135M parameters: minutes); none on a GPU, where nothing measured predicts it.
    child.expect(r"test +(~\S+ per model|not estimated): ifeval 5 prompts x up to 1280 tokens")
    child.expect(r"Suite \[\w+\]: ")
    child.sendline("test")
    child.expect(r"Backend \[auto\]: ")
    child.sendline("")
    child.expect(r"Tasks that must improve \[ifeval\]: ")
    child.sendline("gsm8k")
    child.expect("choose among this suite's tasks: ifeval")
    child.expect(r"Tasks that must improve \[ifeval\]: ")
    child.sendline("")
    child.expect(r"Points they must gain \[2\]: ")
    child.sendline("0")
    child.expect(r"Points any task may lose \[5\]: ")
    child.sendline("5 ifeval=10")
    child.expect(r"Also write a GitHub Actions job .*\[no\]: ")
    child.sendline("y")
    child.expect(r"Write them to pyproject.toml\? \[yes\]: ")
    child.sendline("")
    child.expect(r"Next: ([^\r\n]+)\r\n")
    command = shlex.split(child.match.group(1))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    text = (tmp_path / "pyproject.toml").read_text()
    assert text.startswith(PYPROJECT.split("bench_suite")[0]) and text.endswith("[tool.ruff]\nline-length = 100\n")
    assert tomllib.loads(text)["tool"]["pytest"]["ini_options"] == {
        "testpaths": ["tests"], "bench_suite": "test", "bench_model": ["outputs/exp-a"], "bench_backend": "auto",
        "bench_target_tasks": "ifeval", "bench_min_gain": ["0"], "bench_max_drop": ["5", "ifeval=10"]}
    assert command == ["pytest", "outputs"]
    assert "pytest outputs" in (tmp_path / ".github" / "workflows" / "bench.yml").read_text()
    plan = run_as_written(command, tmp_path, "--bench-plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "model under test: outputs/exp-a (merged_16bit)" in plan.stdout
    assert f"base: {base_model} via hf" in plan.stdout and "  limit: 5" in plan.stdout
    assert "gates ifeval: improves by +0 (point), no_regression beyond -10 (point)" in plan.stdout


def test_yes_then_the_printed_command_benchmarks_and_passes(tmp_path: Path, base_model: Path,
                                                            demo_data: Path) -> None:
    """From outputs/ to a passing session: init --yes without a terminal, then its command, for real."""
    real_experiment(tmp_path / "outputs", "exp-a", base_model)
    proc = run_init(tmp_path, "--yes", "--suite", "test", "--min-gain", "0")
    assert proc.returncode == 0, proc.stderr
    command = printed_command(proc.stdout)
    # Small and offline: 1 prompt, short answers, the bundled data; the settings otherwise as written.
    session = run_as_written(command, tmp_path, f"--bench-data-dir={demo_data}", "--bench-limit=1",
                             "--bench-gen-kwargs=max_gen_toks=8", "--bench-batch-size=1", "-p", "no:cacheprovider")
    assert session.returncode == 0, session.stdout[-3000:] + session.stderr[-2000:]
    assert re.search(r"\b2 passed\b", session.stdout)
    summary = json.loads((tmp_path / "outputs" / "exp-a" / "benchmarks" / "benchmark.json").read_text())
    assert summary["status"] == "complete" and set(summary["gates"]) == {"ifeval::improves", "ifeval::no_regression"}
    assert summary["base_model"]["results"]["ifeval"] and summary["fine_tuned_model"]["results"]["ifeval"]


def test_an_adapter_alone_can_be_picked(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    fake_experiment(outputs, "merged")
    adapter = fake_experiment(outputs, "adapter", merged=False)
    (adapter / "lora" / "adapter_model.safetensors").write_bytes(b"weights")
    proc = run_init(tmp_path, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "adapter: lora/ (the adapter is evaluated on its base)" in proc.stdout
    written = ini_sections((tmp_path / "pytest.ini").read_text())["pytest"]
    assert written["bench_model"] == "outputs/adapter outputs/merged"
