"""--bench-early-stop on groups (MMLU) and few-shot tasks: lm-eval's own objects, a fake session, real SmolLM2.

What lets a task stop early is read from the objects lm-eval builds: a few-shot task only when each
document's examples do not depend on which others are evaluated (lm-eval's `first_n` sampler), a
group only when its score is the size-weighted mean over its leaves (the mean of all their documents).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_finetune_bench.demo import demo_data_dir
from pytest_finetune_bench.plan.gates import NO_REGRESSION, PASSED
from pytest_finetune_bench.plan.tasks import TaskCatalog
from pytest_finetune_bench.run.child_early_stop import (
    final_samples,
    fixed_fewshot_contexts,
    group_note,
    pruned_group,
)
from pytest_finetune_bench.store.files import bench_cache_dir
from tests.bench_sessions import assert_rebuilt_alike, assert_scores_equal_the_lm_eval_cli, run_bench
from tests.conftest import read_json
from tests.fake_backend import FAKE_ENV
from tests.fake_sessions import REPO_ROOT, bench_args, make_fake_model
from tests.schema_check import validate_file

SUBJECT = "mmlu_anatomy"
SHOTS = 5


def _rows(subject: str, first: int, count: int) -> str:
    rows = [{"question": f"Which answer does question {i} have?", "subject": subject,
             "choices": [f"{i}a", f"{i}b", f"{i}c", f"{i}d"], "answer": i % 4} for i in range(first, first + count)]
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture(scope="module")
def subjects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """lm-eval's mmlu_anatomy and mmlu_astronomy (their own YAML: the first_n sampler, the dev split's examples),
    5-shot, on local data."""
    from lm_eval.tasks import TaskManager

    root = tmp_path_factory.mktemp("subjects")
    for subject in ("anatomy", "astronomy"):
        (root / "data" / "mmlu" / subject).mkdir(parents=True)
        (root / "data" / "mmlu" / subject / "test.jsonl").write_text(_rows(subject, 0, 12))
        (root / "data" / "mmlu" / subject / "dev.jsonl").write_text(_rows(subject, 100, 6))
    (root / "overlay").mkdir()
    names = [SUBJECT, "mmlu_astronomy"]
    TaskCatalog(bench_cache_dir()).prepare_offline(names, root / "data", root / "overlay", SHOTS)
    tasks: dict[str, Any] = TaskManager(include_path=str(root / "overlay"), include_defaults=False).load(names)["tasks"]
    for task in tasks.values():
        task.set_config(key="num_fewshot", value=SHOTS)
    return tasks


@pytest.fixture
def anatomy(subjects: dict[str, Any]) -> Any:
    return subjects[SUBJECT]


def _contexts(task: Any, samples: list[int] | None) -> dict[int, str]:
    """doc id → the prompt lm-eval builds for it, evaluating `samples` (None: every document), seeded as a run is."""
    task.set_fewshot_seed(1234)
    task.build_all_requests(samples=samples)
    # lm-eval numbers a `samples=` selection's documents from 0; its evaluator maps them back the same way.
    ids = samples or range(len(task.eval_docs))
    return {ids[instance.doc_id]: instance.args[0] for instance in task.instances}


def test_first_n_few_shot_prompts_are_the_same_for_a_subset(anatomy: Any) -> None:
    assert fixed_fewshot_contexts(anatomy)
    full = _contexts(anatomy, None)
    subset = _contexts(anatomy, [2, 5, 11])
    assert list(subset) == [2, 5, 11]
    assert all(subset[doc] == full[doc] for doc in subset)
    assert full[5].count("Answer:") == SHOTS + 1  # five examples, then the question


def test_default_sampler_prompts_change_with_the_subset(anatomy: Any) -> None:
    """Why other few-shot tasks run in full: the same documents get other examples in a subset."""
    from lm_eval.api.samplers import ContextSampler

    first_n = anatomy.sampler
    try:
        anatomy.sampler = ContextSampler(list(anatomy.fewshot_docs()))
        assert not fixed_fewshot_contexts(anatomy)
        full, subset = _contexts(anatomy, None), _contexts(anatomy, [2, 5, 11])
        assert any(subset[doc] != full[doc] for doc in subset)
    finally:
        anatomy.sampler = first_n


def _group(name: str, weighted: bool, *children: Any) -> Any:
    from lm_eval.api.group import Group
    from lm_eval.config.group import AggMetricConfig

    group = Group(name, aggregate_metric_list=[AggMetricConfig("acc", weight_by_size=weighted)])
    for child in children:
        group.add(child)
    return group


def test_a_group_stops_early_only_when_weighted_by_size_at_every_level(anatomy: Any) -> None:
    leaves = [SUBJECT]
    assert group_note(_group("outer", True, _group("inner", True, anatomy)), "acc,none", leaves) is None
    note = group_note(_group("outer", True, _group("inner", False, anatomy)), "acc,none", leaves)
    assert note is not None and note.startswith("inner averages its tasks' acc without weighting them by size")
    assert "runs in full" in note
    assert "does not aggregate acc_norm,none" in (group_note(_group("g", True, anatomy), "acc_norm,none", leaves) or "")
    assert "not those of the base's run" in (group_note(_group("g", True, anatomy), "acc,none", ["other"]) or "")


def test_a_pruned_group_keeps_only_the_leaves_evaluated(subjects: dict[str, Any]) -> None:
    tree = _group("outer", True, _group("a", True, subjects[SUBJECT]), _group("b", True, subjects["mmlu_astronomy"]))
    pruned = pruned_group(tree, {SUBJECT})
    assert [t.task_name for t in pruned.get_all_tasks()] == [SUBJECT]
    assert [g.name for g in pruned.get_all_groups()] == ["a"]  # the subgroup left with no leaf is dropped
    assert len(tree.get_all_tasks()) == 2  # the group lm-eval loaded is left as it was


# ---------------------------------------------------------------------------------------------
# Sessions: the fake model (every answer the same on both sides) and SmolLM2
# ---------------------------------------------------------------------------------------------

MMLU_DOCUMENTS = 114  # the bundled MMLU: two questions for each of the 57 subjects


def _pooled_mean(side: dict[str, Any], evaluated: dict[str, list[int]], only_evaluated: bool) -> float:
    """The mean acc over the evaluated documents, read from the side's per-leaf samples files.

    `only_evaluated`: the side scored those documents alone (the early-stopped one), every leaf holding any.
    """
    values: list[float] = []
    for leaf, ids in evaluated.items():
        if not ids:
            assert not only_evaluated or leaf not in side["samples_files"], leaf
            continue
        lines = Path(side["samples_files"][leaf]).read_text().splitlines()
        scores = {(r := json.loads(line))["doc_id"]: float(r["acc"]) for line in lines if line.strip()}
        assert not only_evaluated or sorted(scores) == ids, leaf
        values.extend(scores[doc] for doc in ids)
    return sum(values) / len(values)


def _check_stopped_group(summary: dict[str, Any], documents: int = MMLU_DOCUMENTS,
                         paired: bool = False) -> dict[str, Any]:
    """What every stopped MMLU records; returns its early stop record.

    `paired`: the base had no scores yet, so it was evaluated on the same chunks and stopped too.
    """
    comp = summary["comparison"]["mmlu"]
    record: dict[str, Any] = comp["early_stop"]
    assert record["task"] == "mmlu" and record["group"] is True and record["stopped_early"], record
    assert record["documents"] == documents and record["evaluated"] < documents
    evaluated = record["evaluated_ids"]
    assert len(evaluated) == 57 and sum(map(len, evaluated.values())) == record["evaluated"]
    assert any(not ids for ids in evaluated.values())  # leaves with nothing evaluated yet: left out of the group
    fine_tuned = summary["fine_tuned_model"]
    # lm-eval's own aggregate of the group over exactly the evaluated documents: their pooled mean.
    assert fine_tuned["results"]["mmlu"]["sample_len"] == record["evaluated"]
    assert comp["finetuned_accuracy"] == fine_tuned["results"]["mmlu"]["acc,none"]
    assert comp["finetuned_accuracy"] == pytest.approx(_pooled_mean(fine_tuned, evaluated, True), abs=1e-12)
    base = summary["base_model"]
    assert record["sides"] == (["base", "fine-tuned"] if paired else ["fine-tuned"])
    # The base's on the same documents: from its full run's per-document scores, or lm-eval's own when it stopped too.
    assert comp["base_accuracy"] == pytest.approx(_pooled_mean(base, evaluated, paired), abs=1e-12)
    if paired:
        assert base["results"]["mmlu"]["sample_len"] == record["evaluated"] and "base_all_documents" not in record
        assert comp["base_accuracy"] == base["results"]["mmlu"]["acc,none"]
    else:
        assert record["base_all_documents"] == base["results"]["mmlu"]["acc,none"]
    assert comp["stats"]["n"] == record["evaluated"]  # every evaluated document paired with the base's
    return record


@pytest.mark.slow  # starts lm-eval children (a fake model)
def test_a_group_stops_early_on_the_fake_model(tmp_path: Path) -> None:
    """Both sides answer alike: Δ is 0 on every document, so a 30-point drop is ruled out long before the end."""
    model = make_fake_model(tmp_path)
    env = {**os.environ, FAKE_ENV: "", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                                     os.environ.get("PYTHONPATH")]))}
    args = bench_args(model, tmp_path / "out", "--bench-tasks=mmlu", "--bench-limit=none", "--bench-max-drop=30")
    # The base's scores first, in full and cached: then only the fine-tuned side stops early against them.
    for extra in ("--bench-only-base", "--bench-early-stop"):
        done = subprocess.run([sys.executable, "-m", "pytest", str(model), *args, extra], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
    validate_file(tmp_path / "out" / "benchmark.json")
    summary = read_json(tmp_path / "out" / "benchmark.json")
    record = _check_stopped_group(summary)
    assert record["verdicts"] == {NO_REGRESSION: PASSED}
    assert summary["comparison"]["mmlu"]["delta"] == 0.0
    assert f"early stop: mmlu decided after {record['evaluated']} of {MMLU_DOCUMENTS} documents" in done.stdout
    # Rebuilt from disk, the comparison is still on the evaluated documents, the base's all-documents score aside.
    assert_rebuilt_alike(tmp_path / "out")


def test_mmlu_stops_early_on_smollm2_with_lm_evals_scores(tmp_path: Path, unchanged_outputs: Path) -> None:
    """The unchanged SmolLM2 fine-tune (the base's weights) on one question of each MMLU subject, a first run.

    No base scores yet: both models answer the same chunks and both stop. Both scores of the stopped
    group are lm-eval's own aggregates of the pruned group over the evaluated documents, and the two
    models are the same, so they must be equal, and the verdict is the full run's.
    """
    session = run_bench(tmp_path, unchanged_outputs, demo_data_dir(), "--bench-tasks", "mmlu", "--bench-limit", "1",
                        "--bench-max-drop", "25", "--bench-early-stop")
    summary, out = session.summary, session.proc.stdout
    assert session.proc.returncode == 0 and summary["status"] == "complete", out
    record = _check_stopped_group(summary, documents=57, paired=True)
    assert summary["comparison"]["mmlu"]["delta"] == 0.0
    assert record["verdicts"] == {NO_REGRESSION: PASSED}
    assert summary["gates"]["mmlu::no_regression"]["outcome"] == PASSED
    for side in ("base_model", "fine_tuned_model"):  # four choices a question
        assert summary[side]["generated"] == 4 * record["evaluated"], side
    assert f"early stop: mmlu decided after {record['evaluated']} of 57 documents" in out
    # The group was scored on the subjects it reached; the recorded command builds that group for the CLI too.
    assert record["evaluated"] < 57 and "--include_path" in summary["reproduce"]["commands"]["base"]
    assert_scores_equal_the_lm_eval_cli(summary, "base_model", tmp_path / "cli", "mmlu",
                                        ("acc,none", "acc_stderr,none"))


def test_the_last_call_selects_a_stopped_groups_evaluated_documents_and_the_limit_for_the_others() -> None:
    def task(name: str, documents: int) -> SimpleNamespace:
        return SimpleNamespace(task_name=name, eval_docs=list(range(documents)))

    leaves = [task("g_a", 5), task("g_b", 5)]
    loaded = {"tasks": {"g_a": leaves[0], "g_b": leaves[1], "solo": task("solo", 10)},
              "groups": {"g": SimpleNamespace(get_all_tasks=lambda: leaves)}}
    evaluated = {"g": [("g_a", 3), ("g_a", 1)]}
    # g_b is left out of the group in that call (an empty selection would select all of it), never given the limit.
    assert final_samples(evaluated, loaded, 2) == {"g_a": [1, 3], "solo": [0, 1]}
    assert final_samples(evaluated, loaded, None) == {"g_a": [1, 3]}


def test_a_pruned_groups_task_folder_replaces_only_its_groups(tmp_path: Path) -> None:
    from pytest_finetune_bench.plan.offline import write_pruned_groups

    session = tmp_path / "session-tasks"
    session.mkdir()
    (session / "g.yaml").write_text('{"include": "/lm_eval/g.yaml"}\n')
    (session / "g_a.yaml").write_text('{"include": "/lm_eval/g_a.yaml", "dataset_path": "json"}\n')
    groups = {"g": {"yaml": str(session / "g.yaml"), "task": ["g_a"]}}
    folder = write_pruned_groups(tmp_path / "tasks", str(session), groups)
    assert folder == tmp_path / "tasks"
    assert json.loads((folder / "g.yaml").read_text()) == {"include": str(session / "g.yaml"), "task": ["g_a"]}
    assert (folder / "g_a.yaml").read_text() == (session / "g_a.yaml").read_text()
    # A group built without a config file of its own cannot be included: no folder, the session's is used.
    assert write_pruned_groups(tmp_path / "none", None, {"g": {"yaml": None, "task": ["g_a"]}}) is None
    assert not (tmp_path / "none").exists()

