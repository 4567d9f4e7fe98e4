"""The headline metric of each task and its direction: choosing it, comparing, gating and showing it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.evidence import TaskAnalysis
from pytest_finetune_bench.compare.flips import find_flips
from pytest_finetune_bench.compare.gates import UnreliableIntervalWarning
from pytest_finetune_bench.compare.samples import SampleRecord
from pytest_finetune_bench.compare.scores import UNIT_METRIC, UNIT_POINTS, TaskComparison, compare
from pytest_finetune_bench.plan.metrics import (
    DEFAULT_HEADLINES,
    SOURCE_DEFAULT,
    SOURCE_FLAG,
    SOURCE_ONLY,
    Headline,
    choose_headlines,
    headline_from_results,
    headlines_for_results,
    parse_metric_choices,
)
from pytest_finetune_bench.plan.tasks import load_task_index
from pytest_finetune_bench.report.table import arrow, comparison_table, detail_tables, improvement_cell
from pytest_finetune_bench.store.files import bench_cache_dir
from tests.bench_sessions import Session, run_bench
from tests.gate_checks import improves_failure, regression_failure

# --------------------------------------------------------------------------------------------
# Parsing --bench-metric
# --------------------------------------------------------------------------------------------


def test_metric_choices_take_an_optional_filter() -> None:
    assert parse_metric_choices(["gsm8k=exact_match,flexible-extract", " wikitext = bits_per_byte "]) == {
        "gsm8k": ("exact_match", "flexible-extract"),
        "wikitext": ("bits_per_byte", None),
    }
    assert parse_metric_choices([]) == {}


@pytest.mark.parametrize("entry", ["gsm8k", "=acc", "gsm8k=", "gsm8k=exact_match,", "gsm8k=a,b,c"])
def test_a_malformed_metric_choice_says_the_form(entry: str) -> None:
    with pytest.raises(BenchError, match=r"is not TASK=METRIC\[,FILTER\], e.g. gsm8k=exact_match,strict-match"):
        parse_metric_choices([entry])


def test_two_different_choices_for_one_task_are_refused() -> None:
    with pytest.raises(BenchError, match="'gsm8k' is given two metrics: keep one TASK="):
        parse_metric_choices(["gsm8k=exact_match,strict-match", "gsm8k=exact_match,flexible-extract"])


# --------------------------------------------------------------------------------------------
# Choosing the headline from lm-eval's task index
# --------------------------------------------------------------------------------------------


def entry(kind: str, **cfg: Any) -> SimpleNamespace:
    """An lm-eval task index entry as plan/ reads it: kind, config, YAML path."""
    return SimpleNamespace(kind=SimpleNamespace(name=kind), cfg=cfg, yaml_path="/tasks/x.yaml")


GSM8K_FILTERS = [{"name": "strict-match"}, {"name": "flexible-extract"}]
INDEX = {
    "gsm8k": entry("TASK", metric_list=[{"metric": "exact_match", "higher_is_better": True}],
                   filter_list=GSM8K_FILTERS),
    "wikitext": entry("TASK", metric_list=[{"metric": m} for m in ("word_perplexity", "byte_perplexity",
                                                                   "bits_per_byte")]),
    "boolq": entry("TASK", metric_list=[{"metric": "acc"}]),
    "two_scores": entry("TASK", metric_list=[{"metric": "acc"}, {"metric": "perplexity", "aggregation": "perplexity",
                                                                 "higher_is_better": False}]),
    "errors": entry("TASK", metric_list=[{"metric": "error_rate", "aggregation": "mean", "higher_is_better": False}]),
    "mystery": entry("TASK", metric_list=[{"metric": "mystery_score"}]),
    "plain_mc": entry("TASK", output_type="multiple_choice"),
    "a_group": entry("GROUP", aggregate_metric_list=[{"metric": "acc", "weight_by_size": True}]),
    "bare_group": entry("GROUP", task=["boolq"]),
    "python_task": entry("PY_TASK", **{"class": "/tasks/x.MyTask"}),
}


def test_known_benchmarks_get_their_usual_headline() -> None:
    headlines = choose_headlines(["gsm8k", "wikitext"], INDEX, {})
    assert headlines["gsm8k"] == Headline("gsm8k", "exact_match", "strict-match", True, SOURCE_DEFAULT)
    assert headlines["gsm8k"].key == "exact_match,strict-match"
    # wikitext's config gives no direction: lm-eval's registered default for the name says lower is better.
    assert headlines["wikitext"] == Headline("wikitext", "word_perplexity", "none", False, SOURCE_DEFAULT,
                                             per_document=False)


def test_a_task_with_one_metric_needs_no_choice() -> None:
    headlines = choose_headlines(["boolq", "a_group", "errors"], INDEX, {})
    assert headlines["boolq"] == Headline("boolq", "acc", "none", True, SOURCE_ONLY)
    assert headlines["a_group"] == Headline("a_group", "acc", "none", True, SOURCE_ONLY)
    # The config's direction wins over the name; a mean of per-document values keeps its statistics.
    assert headlines["errors"] == Headline("errors", "error_rate", "none", False, SOURCE_ONLY)


def test_an_ambiguous_task_stops_the_run_naming_its_metrics_and_the_flag() -> None:
    with pytest.raises(BenchError) as info:
        choose_headlines(["two_scores"], INDEX, {})
    assert str(info.value) == (
        "'two_scores' has no known headline metric; it reports acc,none, perplexity,none: pick one with "
        "--bench-metric two_scores=METRIC,FILTER (ini: bench_metric)"
    )
    # Without a metric_list lm-eval scores with its output type's defaults: acc and acc_norm here.
    with pytest.raises(BenchError, match="'plain_mc' has no known headline metric; it reports acc,none, acc_norm,none"):
        choose_headlines(["plain_mc"], INDEX, {})


def test_bench_metric_picks_the_headline_and_its_direction() -> None:
    choices = parse_metric_choices(["two_scores=perplexity", "wikitext=bits_per_byte,none",
                                    "gsm8k=exact_match,flexible-extract"])
    headlines = choose_headlines(["two_scores", "wikitext", "gsm8k"], INDEX, choices)
    assert headlines["two_scores"] == Headline("two_scores", "perplexity", "none", False, SOURCE_FLAG,
                                               per_document=False)
    assert headlines["wikitext"].key == "bits_per_byte,none" and not headlines["wikitext"].higher_is_better
    assert headlines["gsm8k"] == Headline("gsm8k", "exact_match", "flexible-extract", True, SOURCE_FLAG)


def test_bench_metric_must_name_one_of_the_tasks_metrics() -> None:
    with pytest.raises(BenchError) as info:
        choose_headlines(["wikitext"], INDEX, parse_metric_choices(["wikitext=acc"]))
    assert str(info.value) == (
        "--bench-metric wikitext=acc is not one of its metrics; 'wikitext' reports bits_per_byte,none, "
        "byte_perplexity,none, word_perplexity,none: pass --bench-metric wikitext=METRIC,FILTER"
    )
    with pytest.raises(BenchError, match="gsm8k=exact_match names more than one metric; 'gsm8k' reports "
                                         "exact_match,flexible-extract, exact_match,strict-match"):
        choose_headlines(["gsm8k"], INDEX, parse_metric_choices(["gsm8k=exact_match"]))
    with pytest.raises(BenchError, match="--bench-metric names nosuchtask, which lm-eval does not know"):
        choose_headlines(["gsm8k"], INDEX, parse_metric_choices(["nosuchtask=acc"]))


def test_choices_for_known_tasks_outside_the_run_are_ignored() -> None:
    assert choose_headlines(["boolq"], INDEX, parse_metric_choices(["wikitext=bits_per_byte"]))["boolq"].metric == "acc"


def test_a_metric_without_a_known_direction_is_refused() -> None:
    with pytest.raises(BenchError, match="lm-eval does not say whether a higher mystery_score is better for 'mystery'"):
        choose_headlines(["mystery"], INDEX, {})


def test_python_tasks_are_left_to_their_results_and_groups_without_a_score_stop() -> None:
    assert choose_headlines(["python_task"], INDEX, {}) == {}
    with pytest.raises(BenchError, match=r"lm-eval reports no metric for 'bare_group'.*--bench-tasks"):
        choose_headlines(["bare_group"], INDEX, {})


def test_the_default_headlines_exist_in_lm_evals_real_index() -> None:
    index = load_task_index(bench_cache_dir())  # as the plugin keeps it (built once per test run)
    headlines = choose_headlines(list(DEFAULT_HEADLINES), index, {})
    assert {task: (h.metric, h.filter) for task, h in headlines.items()} == DEFAULT_HEADLINES
    assert all(h.source == SOURCE_DEFAULT for h in headlines.values())
    assert [task for task, h in headlines.items() if not h.higher_is_better] == ["wikitext"]


# --------------------------------------------------------------------------------------------
# Choosing the headline from lm-eval's results (tasks defined in Python)
# --------------------------------------------------------------------------------------------

RESULT = {"alias": "python_task", "acc,none": 0.5, "acc_stderr,none": 0.1, "loss,none": 2.0, "sample_len": 10}


def test_a_result_with_several_metrics_needs_a_choice() -> None:
    with pytest.raises(BenchError, match="'python_task' has no known headline metric; it reports acc,none, loss,none"):
        headline_from_results("python_task", RESULT, {"acc": True, "loss": False}, None)
    loss = headline_from_results("python_task", RESULT, {"acc": True, "loss": False}, ("loss", None))
    assert loss == Headline("python_task", "loss", "none", False, SOURCE_FLAG)
    with pytest.raises(BenchError, match="python_task=f1 is not one of its metrics"):
        headline_from_results("python_task", RESULT, {}, ("f1", None))


def test_lm_evals_own_direction_wins_over_the_registry() -> None:
    # lm-eval registers acc as higher-is-better; the task's own results say otherwise.
    only_acc = {"acc,none": 0.5, "acc_stderr,none": 0.1}
    assert not headline_from_results("python_task", only_acc, {"acc": False}, None).higher_is_better
    assert headline_from_results("python_task", only_acc, {}, None).source == SOURCE_ONLY


def test_headlines_for_results_fill_the_gaps_from_the_first_run_that_has_the_task() -> None:
    chosen = {"boolq": Headline("boolq", "acc", "none", True, SOURCE_ONLY)}
    finetuned = {"results": {"python_task": RESULT}, "higher_is_better": {"python_task": {"loss": False}}}
    headlines = headlines_for_results(["boolq", "python_task", "never_ran"], chosen,
                                      {"base": {}, "fine-tuned": finetuned}, {"python_task": ("loss", None)})
    assert list(headlines) == ["boolq", "python_task"]
    assert headlines["python_task"].key == "loss,none" and not headlines["python_task"].higher_is_better


def test_a_headline_is_read_from_the_base_first_whoever_asks() -> None:
    """Early stopping picks a headline from the base's results alone; the comparison, benchmark.json and
    `summary` read both runs and must pick the same one, so the base's results come first for everyone."""
    only_acc = {"acc,none": 0.5}
    base = {"results": {"python_task": only_acc}, "higher_is_better": {"python_task": {"acc": True}}}
    finetuned = {"results": {"python_task": {"acc,none": 0.6}}, "higher_is_better": {"python_task": {"acc": False}}}
    early = headlines_for_results(["python_task"], {}, {"base": base}, {})["python_task"]
    for given in ({"base": base, "fine-tuned": finetuned}, {"fine-tuned": finetuned, "base": base}):
        assert headlines_for_results(["python_task"], {}, given, {})["python_task"] == early
    assert early.higher_is_better
    with pytest.raises(ValueError, match="unknown roles"):
        headlines_for_results(["python_task"], {}, {"reference": base}, {})


# --------------------------------------------------------------------------------------------
# Comparing, gating and showing a lower-is-better metric
# --------------------------------------------------------------------------------------------

PERPLEXITY = Headline("wikitext", "word_perplexity", "none", False, SOURCE_DEFAULT, per_document=False)
ACCURACY = Headline("boolq", "acc", "none", True, SOURCE_ONLY)


def results(**scores: float) -> dict[str, Any]:
    return {"results": {"wikitext": {"word_perplexity,none": scores["ppl"]}, "boolq": {"acc,none": scores["acc"]}}}


def test_compare_signs_the_gain_by_direction_and_picks_the_unit() -> None:
    comps = compare(results(ppl=20.0, acc=0.40), results(ppl=35.0, acc=0.45), {"wikitext": PERPLEXITY,
                                                                               "boolq": ACCURACY})
    ppl, acc = comps["wikitext"], comps["boolq"]
    assert (ppl.delta, ppl.gain, ppl.unit, ppl.gain_shown) == (15.0, -15.0, UNIT_METRIC, -15.0)
    assert acc.unit == UNIT_POINTS and acc.gain_shown == pytest.approx(5.0)
    assert ppl.describe() == (
        "base 20.0000 → fine-tuned 35.0000: Δ +15 word_perplexity (+75.0%) on word_perplexity,none (lower is better)"
    )
    data = json.loads(json.dumps(ppl.to_json()))
    assert {k: data[k] for k in ("metric", "filter", "higher_is_better", "unit", "delta", "gain", "delta_percent")} == {
        "metric": "word_perplexity,none", "filter": "none", "higher_is_better": False, "unit": "metric",
        "delta": 15.0, "gain": -15.0, "delta_percent": 75.0,
    }
    assert data["base_accuracy"] == 20.0 and data["finetuned_accuracy"] == 35.0


def test_a_per_document_mean_outside_0_to_1_keeps_its_own_unit() -> None:
    scores = compare(results(ppl=1.0, acc=42.0), results(ppl=1.0, acc=40.0), {"boolq": ACCURACY})
    assert scores["boolq"].unit == UNIT_METRIC


def perplexity(base: float, finetuned: float) -> TaskComparison:
    return compare(results(ppl=base, acc=0.5), results(ppl=finetuned, acc=0.5), {"wikitext": PERPLEXITY})["wikitext"]


def test_gates_follow_the_direction_of_a_lower_is_better_metric() -> None:
    worse, better = perplexity(20.0, 35.0), perplexity(20.0, 12.0)
    failure = regression_failure(worse, 5.0)
    assert failure is not None and failure.startswith("wikitext regressed by more than 5 word_perplexity: base 20.0000")
    assert regression_failure(worse, 15.0) is None  # exactly at the allowed drop passes
    assert regression_failure(better, 0.0) is None
    assert improves_failure(better, 8.0) is None
    assert "did not improve by +9 word_perplexity" in (improves_failure(better, 9.0) or "")
    assert improves_failure(worse, 0.0) is not None


def test_a_corpus_level_metric_is_gated_on_its_point_estimate_with_a_note() -> None:
    worse = perplexity(20.0, 35.0)
    analysis = TaskAnalysis("wikitext", {}, {}, higher_is_better=False, note="no paired statistics: corpus-level")
    assert analysis.stats() is None
    assert analysis.to_json(0.95) == {"stats": None, "stats_note": analysis.note, "flips": None}
    failure = regression_failure(worse, 5.0, analysis, confidence=0.95)
    assert failure is not None and failure.endswith("; no paired statistics: corpus-level")
    with pytest.warns(UnreliableIntervalWarning, match="wikitext no_regression passed on the point estimate"):
        assert regression_failure(worse, 20.0, analysis, confidence=0.95) is None


def per_document_errors(base: list[float], finetuned: list[float]) -> tuple[TaskComparison, TaskAnalysis]:
    """A lower-is-better metric averaged over documents (an error rate), with its per-document evidence."""
    records = [{i: SampleRecord(i, v, f"prompt {i}", f"answer {i}") for i, v in enumerate(side)}
               for side in (base, finetuned)]
    comp = TaskComparison("errors", "error_rate,none", sum(base) / len(base), sum(finetuned) / len(finetuned),
                          higher_is_better=False)
    flips = find_flips(records[0], records[1], higher_is_better=False)
    return comp, TaskAnalysis("errors", records[0], records[1], flips, higher_is_better=False)


def test_confidence_gates_mirror_the_interval_of_a_lower_is_better_metric() -> None:
    base = [1.0] * 60 + [0.0] * 40
    fewer_errors = [0.0] * 30 + [1.0] * 30 + [0.0] * 40  # 30 of 60 errors fixed: delta [-43.2, -19.6] points
    comp, analysis = per_document_errors(base, fewer_errors)
    stats = analysis.stats()
    assert stats is not None and stats.ci_high is not None and stats.ci_high < 0
    assert (stats.improved, stats.regressed) == (30, 0)
    low, high = stats.gain_interval
    assert low == -stats.ci_high and high == -(stats.ci_low or 0) and stats.gain == -(stats.delta or 0) == 0.3
    assert stats.confident_improvement(0.1) and not stats.confident_regression()
    assert improves_failure(comp, 10.0, analysis, 0.95) is None
    assert improves_failure(comp, 25.0, analysis, 0.95) is not None
    assert regression_failure(comp, 0.0, analysis, 0.95) is None
    worse_comp, worse = per_document_errors(fewer_errors, base)
    failure = regression_failure(worse_comp, 5.0, worse, 0.95)
    # An error indicator that went 0 → 1 is a regression, and not shown as fail→pass.
    assert failure is not None and "0↑ 30↓" in failure and "doc 0 0→1" in failure
    assert regression_failure(worse_comp, 25.0, worse, 0.95) is None


def test_flips_of_a_lower_is_better_metric_are_regressions_when_it_rises() -> None:
    base = {1: SampleRecord(1, 2.0, "p", "a"), 2: SampleRecord(2, 2.0, "p", "a")}
    finetuned = {1: SampleRecord(1, 3.0, "p", "b"), 2: SampleRecord(2, 1.0, "p", "b")}
    assert [(f.doc_id, f.direction) for f in find_flips(base, finetuned, higher_is_better=False)] == [
        (1, "regressed"), (2, "improved"),
    ]


def test_arrows_say_better_or_worse_and_the_number_is_the_real_change() -> None:
    assert (arrow(1.0), arrow(-1.0), arrow(0.0), arrow(None)) == ("↗", "↘", "→ No change", "?")
    assert improvement_cell(perplexity(20.0, 12.0)) == "↗ -8.0000 (-40.0%)"
    assert improvement_cell(perplexity(20.0, 35.0)) == "↘ +15.0000 (+75.0%)"
    accuracy = TaskComparison("boolq", "acc,none", 0.40, 0.50)
    assert improvement_cell(accuracy) == "↗ +10.00% (+25.0%)"
    table = comparison_table({"wikitext": perplexity(20.0, 1.5e9), "boolq": accuracy})
    assert "wikitext: word_perplexity (lower is better)" in table
    assert "1500000000.0000" in table and "e+09" not in table
    assert "40.00%" in table


def test_gsm8k_and_ifeval_detail_tables_come_from_one_table_and_mark_the_gating_metric() -> None:
    gsm8k = {"exact_match,strict-match": 0.30, "exact_match,flexible-extract": 0.45}
    base = {"results": {"gsm8k": gsm8k, "ifeval": {"prompt_level_strict_acc,none": 0.5}}}
    finetuned = {"results": {"gsm8k": {**gsm8k, "exact_match,strict-match": 0.10}, "ifeval": {}}}
    comps = {"gsm8k": TaskComparison("gsm8k", "exact_match,strict-match", 0.30, 0.10)}
    (table,) = detail_tables(comps, base, finetuned)
    lines = table.splitlines()
    assert lines[0].startswith("GSM8K metric")
    assert lines[2].startswith("Strict Match (gates)") and "↘ -20.00% (-66.7%)" in lines[2]
    assert lines[3].startswith("Flexible Extract") and "→ No change" in lines[3]
    comps["ifeval"] = TaskComparison("ifeval", "prompt_level_strict_acc,none", 0.5, None)
    ifeval, gsm = detail_tables(comps, base, finetuned)
    assert ifeval.splitlines()[0].startswith("IFEval metric") and "Strict Prompt (gates)" in ifeval
    assert gsm == table


# --------------------------------------------------------------------------------------------
# Real lm-eval, real model: a perplexity task on local wikitext-style pages
# --------------------------------------------------------------------------------------------

PAGES = (
    " = River Thames = \n The River Thames flows through southern England , including London . "
    "It is the longest river entirely in England . \n",
    " = Honey bee = \n Honey bees live in colonies with a single queen . Worker bees collect nectar and "
    "pollen from flowers . \n",
    " = Mount Everest = \n Mount Everest is the highest mountain above sea level . It lies in the Himalayas "
    "on the border of Nepal and China . \n",
)


@pytest.fixture(scope="module")
def wikitext_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR/wikitext/test.jsonl in the schema of EleutherAI/wikitext_document_level: one `page` per line."""
    data = tmp_path_factory.mktemp("wikitext-data")
    (data / "wikitext").mkdir()
    (data / "wikitext" / "test.jsonl").write_text("".join(json.dumps({"page": page}) + "\n" for page in PAGES))
    return data


def wikitext_session(tmp_path: Path, model: Path, data: Path, *extra: str) -> Session:
    # A threshold between the two metrics' changes: the noisy model's perplexity explodes, its
    # bits per byte rise by about 5.
    return run_bench(tmp_path, model, data, "--bench-tasks", "wikitext", "--bench-max-drop", "10", *extra)


def test_a_perplexity_rise_fails_no_regression(tmp_path: Path, regressed_outputs: Path, wikitext_data: Path) -> None:
    session = wikitext_session(tmp_path, regressed_outputs, wikitext_data)
    comp = session.summary["comparison"]["wikitext"]
    assert comp["metric"] == "word_perplexity,none" and comp["higher_is_better"] is False
    assert comp["unit"] == "metric" and comp["delta"] > 10 and comp["gain"] == -comp["delta"]
    assert comp["stats"] is None and "computed over the whole corpus" in comp["stats_note"]
    out = session.proc.stdout
    assert session.proc.returncode == 1, out
    assert "wikitext regressed by more than 10 word_perplexity: base " in out
    row = next(line for line in out.splitlines() if line.startswith("wikitext: word_perplexity (lower is better)"))
    assert "↘ +" in row


def test_bench_metric_changes_the_headline_and_the_gate(
    tmp_path: Path, regressed_outputs: Path, wikitext_data: Path
) -> None:
    session = wikitext_session(tmp_path, regressed_outputs, wikitext_data, "--bench-metric", "wikitext=bits_per_byte")
    comp = session.summary["comparison"]["wikitext"]
    assert comp["metric"] == "bits_per_byte,none" and comp["higher_is_better"] is False
    assert 0 < comp["delta"] < 10, comp  # worse, but by less than the allowed drop
    out = session.proc.stdout
    assert session.proc.returncode == 0, out
    assert "1 passed" in out
    assert any(line.startswith("wikitext: bits_per_byte (lower is better)") for line in out.splitlines())
