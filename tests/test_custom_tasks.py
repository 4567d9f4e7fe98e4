"""Tasks of the user's own (--bench-include-path) and suites of the user's own (bench_suites).

The task is written in the test as a user writes one (tests/custom_task_files.py): a YAML file with
`!function` helpers, its own metric and direction, and a local data file. The real run compares the
plugin's scores with `lm_eval --include_path` on SmolLM2 and a fine-tune of it; the fake model checks
the direction of a lower-is-better gate, and that editing the task re-evaluates while moving it does not.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.plan.choices import parse_suites
from pytest_finetune_bench.plan.metrics import choose_headlines
from pytest_finetune_bench.plan.offline import reads_local_data
from pytest_finetune_bench.plan.tasks import TaskCatalog
from pytest_finetune_bench.store.files import bench_cache_dir
from tests.conftest import read_json
from tests.custom_task_files import QUESTIONS, SHOUTING, SHOUTING_METRICS, write_task
from tests.fake_sessions import bench_args, make_fake_model, use_fake_lm


def catalog_for(root: Path, *folders: str) -> TaskCatalog:
    return TaskCatalog(bench_cache_dir(), [Path(f) for f in folders or ("tasks",)], cwd=root)


# ------------------------------------------------------------------------------------------ the catalog


def test_a_task_of_ones_own_is_known_with_its_metric_and_direction(tmp_path: Path) -> None:
    write_task(tmp_path)
    write_task(tmp_path, "quiet_task", SHOUTING, SHOUTING_METRICS)
    catalog = catalog_for(tmp_path)
    catalog.validate(["my_task", "quiet_task", "ifeval"])  # the user's next to lm-eval's
    headlines = choose_headlines(["my_task", "quiet_task"], catalog.index, {})
    assert (headlines["my_task"].key, headlines["my_task"].higher_is_better) == ("mentions_answer,none", True)
    assert (headlines["quiet_task"].key, headlines["quiet_task"].higher_is_better) == ("shouting,none", False)
    assert catalog.output_types(["my_task"]) == {"my_task": frozenset({"generate_until"})}
    chosen = choose_headlines(["my_task"], catalog.index, {"my_task": ("mentions_answer", None)})["my_task"]
    assert chosen.source == "--bench-metric"
    with pytest.raises(BenchError, match="is not one of its metrics"):
        choose_headlines(["my_task"], catalog.index, {"my_task": ("acc", None)})
    with pytest.raises(BenchError, match=r"unknown lm-eval task 'my_tsak'; did you mean my_task.*include-path"):
        catalog.validate(["my_tsak"])


def test_function_metrics_are_named_as_lm_eval_reports_them_and_custom_aggregations_are_point_estimates(
    tmp_path: Path,
) -> None:
    metrics = [{"metric": "!function utils.exact", "aggregation": "!function utils.f1_over_corpus",
                "higher_is_better": True}]
    tasks = write_task(tmp_path, metrics=[])
    yaml_text = (tasks / "my_task.yaml").read_text().replace("metric_list: []", "metric_list:\n" + "".join(
        f"  - metric: {m['metric']}\n    aggregation: {m['aggregation']}\n    higher_is_better: true\n"
        for m in metrics))
    (tasks / "my_task.yaml").write_text(yaml_text)
    headline = choose_headlines(["my_task"], catalog_for(tmp_path).index, {})["my_task"]
    assert headline.key == "exact,none" and headline.per_document is False


def test_later_include_paths_override_earlier_ones(tmp_path: Path) -> None:
    write_task(tmp_path / "a")
    write_task(tmp_path / "b", process_results=SHOUTING, metrics=SHOUTING_METRICS)
    catalog = TaskCatalog(bench_cache_dir(), [tmp_path / "a" / "tasks", tmp_path / "b" / "tasks"], cwd=tmp_path / "b")
    headline = choose_headlines(["my_task"], catalog.index, {})["my_task"]
    assert headline.metric == "shouting"


@pytest.mark.parametrize("edit", ["yaml", "helper", "data"])
def test_editing_the_task_changes_its_version(tmp_path: Path, edit: str) -> None:
    tasks = write_task(tmp_path)
    before = catalog_for(tmp_path).versions(["my_task"])["my_task"]
    target = {"yaml": tasks / "my_task.yaml", "helper": tasks / "utils.py",
              "data": tmp_path / "data" / "my_task.jsonl"}[edit]
    text = target.read_text()
    target.write_text(text.replace("max_gen_toks: 8", "max_gen_toks: 9") if edit == "yaml" else
                      text + ("# reworded\n" if edit == "helper" else json.dumps({"question": "2+2?", "answer": "4"})))
    assert catalog_for(tmp_path).versions(["my_task"])["my_task"] != before


def test_moving_the_task_folder_keeps_its_version(tmp_path: Path) -> None:
    write_task(tmp_path / "here")
    before = catalog_for(tmp_path / "here").versions(["my_task"])
    shutil.copytree(tmp_path / "here", tmp_path / "elsewhere")
    assert catalog_for(tmp_path / "elsewhere").versions(["my_task"]) == before
    assert str(tmp_path) not in json.dumps(before)


def test_bad_include_paths_and_missing_data_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"--bench-include-path .*nowhere is not a folder"):
        catalog_for(tmp_path, "nowhere").validate(["my_task"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match=r"--bench-include-path .*empty defines no lm-eval task"):
        catalog_for(tmp_path, "empty").validate(["my_task"])
    write_task(tmp_path)
    (tmp_path / "data" / "my_task.jsonl").unlink()
    with pytest.raises(BenchError, match=r"task 'my_task' reads data/my_task.jsonl, which does not exist"):
        catalog_for(tmp_path).versions(["my_task"])


def test_with_offline_data_too_only_hub_tasks_are_redirected(tmp_path: Path, demo_data: Path) -> None:
    write_task(tmp_path)
    folder = tmp_path / "folder"
    hashes = catalog_for(tmp_path).prepare_offline(["my_task", "ifeval"], demo_data, folder, None)
    own = json.loads((folder / "my_task.yaml").read_text())
    assert own == {"include": str((tmp_path / "tasks" / "my_task.yaml").resolve())}  # reads its own files
    ifeval = json.loads((folder / "ifeval.yaml").read_text())
    assert ifeval["dataset_kwargs"]["data_files"]["train"].startswith(str(demo_data))  # the Hub's: redirected
    assert len(hashes) == 1


def test_a_group_of_ones_own_may_hold_built_in_tasks(
    tmp_path: Path, demo_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lm_eval.tasks import TaskManager

    tasks = write_task(tmp_path)
    (tasks / "domain.yaml").write_text("group: domain\ntask:\n  - my_task\n  - ifeval\n")
    catalog = catalog_for(tmp_path)
    versions = catalog.versions(["domain"])
    assert versions["domain"].startswith("sha256:") and versions["my_task"].startswith("sha256:")
    assert versions["ifeval"] == 4.0  # lm-eval's own task keeps lm-eval's version
    folder = tmp_path / "folder"
    catalog.prepare_offline(["domain"], demo_data, folder, None)
    monkeypatch.chdir(tmp_path)
    loaded = TaskManager(include_path=str(folder), include_defaults=False).load(["domain"])
    assert loaded.get("group_map") == {"domain": ["my_task", "ifeval"]}


@pytest.mark.parametrize(
    ("data_files", "local"),
    [({"test": "data/my_task.jsonl"}, True), ("data/*.jsonl", True), ({"test": ["a.jsonl", "b.jsonl"]}, True),
     ({"test": "https://example.org/questions.json"}, False), (None, False)],
)
def test_only_local_data_files_keep_a_task_off_the_offline_data(data_files: object, local: bool) -> None:
    assert reads_local_data({"dataset_path": "json", "dataset_kwargs": {"data_files": data_files}}) is local


def test_the_task_folder_runs_the_task_as_its_own_folder_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """lm-eval loads the plugin's one-folder view of the task (built-ins left out) as it loads the user's own."""
    from lm_eval.tasks import TaskManager

    write_task(tmp_path)
    monkeypatch.chdir(tmp_path)  # where the relative data file is read from
    folder = tmp_path / "folder"
    catalog_for(tmp_path).prepare_offline(["my_task"], None, folder, None)
    ours = TaskManager(include_path=str(folder), include_defaults=False).load(["my_task"])["tasks"]["my_task"]
    theirs = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False).load(["my_task"])["tasks"]
    ours_config, theirs_config = ours.dump_config(), theirs["my_task"].dump_config()
    for config in (ours_config, theirs_config):
        config["metadata"].pop("config_source")  # the file lm-eval read it from: ours includes theirs
    assert ours_config == theirs_config


# ------------------------------------------------------------------------------------------ suites


def test_user_suites_parse_from_ini_lines_and_flags() -> None:
    suites = parse_suites("domain: ifeval, my_task  Other: gsm8k hellaswag ")
    assert suites["domain"].tasks == ("ifeval", "my_task") and suites["domain"].limit is None
    assert suites["other"].tasks == ("gsm8k", "hellaswag")
    for text, message in (("ifeval, my_task", "is not a suite"), ("quick: my_task", "is built in"),
                          ("domain: a domain: b", "defined twice"), ("domain:", "names no task")):
        with pytest.raises(BenchError, match=message):
            parse_suites(text)


def test_a_user_suite_selects_the_task_and_its_marked_tests(pytester: pytest.Pytester) -> None:
    write_task(pytester.path)
    model = make_fake_model(pytester.path)
    pytester.makeini("[pytest]\nbench_include_path = tasks\nbench_suites =\n    domain: my_task\n"
                     "bench_target_tasks = my_task\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.bench(suite="domain")
        def test_domain(bench_result):
            pass

        @pytest.mark.bench(suite="core")
        def test_core(bench_result):
            pass
        """
    )
    out = pytester.path / "out"
    # In-process: planning and collecting start no process.
    plan = pytester.runpytest(f"--bench-model={model}", f"--bench-output={out}", "--bench-suite=domain",
                              "--bench-device=cpu", "--bench-plan", "-p", "no:cacheprovider")
    plan.stdout.fnmatch_lines(["tasks: my_task", "  headline my_task: mentions_answer,none (higher is better; *",
                               f"  include_path: {out / 'tasks'}", "gates my_task: improves by +2 (point), *"])
    collected = pytester.runpytest(f"--bench-model={model}", f"--bench-output={out}",
                                   "--bench-suite=domain", "--collect-only", "-q", "-p", "no:cacheprovider")
    collected.stdout.fnmatch_lines(["test_*::test_domain", "test_*::test_core", "finetune-bench::my_task::improves",
                                    "finetune-bench::my_task::no_regression"])
    unknown = pytester.runpytest(f"--bench-model={model}", "--bench-suite=domian", "-p", "no:cacheprovider")
    unknown.stderr.fnmatch_lines(["*--bench-suite: 'domian' is not a suite: choose one of *, domain"])


# ------------------------------------------------------------------------------------------ fake model


@pytest.mark.slow  # three sessions, each with lm-eval children
def test_a_lower_is_better_metric_gates_the_right_way_and_edits_re_evaluate(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake fine-tune shouts: its `shouting` score rises, which the task's metric says is worse."""
    use_fake_lm(monkeypatch, "shout_for=merged_16bit")
    project = pytester.path / "project"
    write_task(project, "quiet_task", SHOUTING, SHOUTING_METRICS)
    model = make_fake_model(pytester.path)
    args = ["--bench-include-path=tasks", "--bench-tasks=quiet_task", "--bench-target-tasks=quiet_task",
            "--bench-min-gain=0"]

    def session(folder: Path) -> pytest.RunResult:
        monkeypatch.chdir(folder)  # relative data files are read from where pytest starts, as lm-eval does
        return pytester.runpytest_subprocess(*bench_args(model, pytester.path / "out", *args))

    first = session(project)
    first.assert_outcomes(failed=2)
    first.stdout.fnmatch_lines(["*quiet_task regressed by more than 5.00 points: base 0.00% → fine-tuned 100.00%*",
                                "quiet_task: shouting (lower is better)*"])
    summary = read_json(pytester.path / "out" / "benchmark.json")
    comparison = summary["comparison"]["quiet_task"]
    assert comparison["higher_is_better"] is False and comparison["gain"] == -1.0
    assert comparison["stats"]["n"] == len(QUESTIONS)
    # Moved elsewhere, the task is the same measurement: the base's scores come from the cache.
    shutil.copytree(project, pytester.path / "moved")
    moved = session(pytester.path / "moved")
    assert "[bench] base: scores from cache" in moved.stdout.str()
    # Edited, it is another: the base is evaluated again.
    helper = pytester.path / "moved" / "tasks" / "utils.py"
    helper.write_text(helper.read_text() + "\n# scoring unchanged, definition edited\n")
    edited = session(pytester.path / "moved")
    assert "[bench] base: scores from cache" not in edited.stdout.str()
    assert "[bench] base: quiet_task" in edited.stdout.str()


# ------------------------------------------------------------------------------------------ real model


def test_scores_of_a_task_of_ones_own_equal_lm_eval_include_path(
    tmp_path: Path, regressed_outputs: Path
) -> None:
    """`pytest --bench-include-path=tasks --bench-tasks=my_task` on SmolLM2 and a fine-tune of it, then the
    lm_eval CLI with `--include_path tasks` and the same settings: the same scores and replies."""
    tasks = write_task(tmp_path)
    output = tmp_path / "bench-out"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", f"--bench-model={regressed_outputs}", f"--bench-output={output}",
         "--bench-include-path=tasks", "--bench-tasks=my_task", "--bench-batch-size=5", "-p", "no:cacheprovider",
         "-rA"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    summary = read_json(output / "benchmark.json")
    comparison = summary["comparison"]["my_task"]
    assert comparison["metric"] == "mentions_answer,none" and comparison["stats"]["n"] == len(QUESTIONS)
    assert "finetune-bench::my_task::no_regression" in proc.stdout, proc.stdout + proc.stderr
    assert (proc.returncode == 1) == (comparison["gain"] < -0.05), proc.stdout  # no_regression: at most 5 points
    assert summary["reproduce"]["identity"]["base"]["task_versions"]["my_task"].startswith("sha256:")
    # One side through the CLI: both sides' commands come from one settings identity, and each CLI run indexes
    # lm-eval's built-in tasks (as the user's would) before it loads the model. The base's replies score some
    # documents and miss others; the regressed fine-tune's miss nearly all.
    argv = shlex.split(summary["reproduce"]["commands"]["base"].replace(" OUT", f" {tmp_path / 'cli'}"))
    # The user's own folder instead of the plugin's: what the user would type.
    position = argv.index("--include_path")
    assert argv[position + 1] == str(output / "tasks")
    argv[position + 1] = str(tasks.relative_to(tmp_path))
    run = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    cli = read_json(next((tmp_path / "cli").rglob("results_*.json")))["results"]["my_task"]
    assert summary["base_model"]["results"]["my_task"]["mentions_answer,none"] == cli["mentions_answer,none"]
    # Reply by reply, too: the same prompts, the same generations, the same per-document scores.
    ours = replies(next(Path(summary["base_model"]["results_file"]).parent.glob("samples_my_task_*.jsonl")))
    assert ours == replies(next((tmp_path / "cli").rglob("samples_my_task_*.jsonl")))


def replies(samples_file: Path) -> list[tuple[int, str, float]]:
    """(doc id, reply, score) of each document in an lm-eval samples file."""
    rows = [json.loads(line) for line in samples_file.read_text().splitlines() if line.strip()]
    return sorted((row["doc_id"], row["filtered_resps"][0], row["mentions_answer"]) for row in rows)
