"""Several experiments side by side: which passed, which is best, and whether the differences are real (no pytest).

Everything is read from the experiments' own benchmark.json files (the numbers are theirs), and
the comparison of two experiments uses the same paired statistics on the same documents as base
against fine-tuned (report/from_disk.py `paired_comparison`), so "best" is only called real when
the paired test says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.scores import UNIT_POINTS, TaskComparison, display_name
from pytest_finetune_bench.plan.gates import FAILED, PASSED
from pytest_finetune_bench.report.facts import confidence_level
from pytest_finetune_bench.report.from_disk import paired_comparison, record_from_summary
from pytest_finetune_bench.store.benchmark_file import (
    RANKING_SCHEMA_VERSION,
    BenchmarkSummary,
    ComparisonRecord,
    comparison_of,
    gates_of,
    side_of,
)

RANKING_NAME = "benchmarks-summary.json"
_ADVICE = "run that experiment's benchmark again"
MAX_ALL_PAIRS = 12  # beyond this many experiments, only neighbours in the ranking are compared


def build_ranking(summaries: Sequence[BenchmarkSummary]) -> dict[str, Any]:
    """benchmarks-summary.json's content from the experiments' summaries (benchmark.json dicts)."""
    experiments = [_experiment(summary) for summary in summaries]
    _assign_mean_ranks(experiments)
    ranked = sorted(experiments, key=_rank_key)
    tasks = list(dict.fromkeys(task for e in experiments for task in e["scores"]))
    by_label = {e["label"]: summary for e, summary in zip(experiments, summaries, strict=True)}
    pairs = [{"first": a, "second": b, "tasks": pairwise(by_label[a], by_label[b])}
             for a, b in pairs_to_compare([e["label"] for e in ranked])]
    return {
        "schema_version": RANKING_SCHEMA_VERSION,
        "status": "complete" if all(e["status"] == "complete" for e in experiments) else "incomplete",
        "ranked_by": "gates passed, then the mean rank over tasks of the fine-tuned scores",
        "ranking": [e["label"] for e in ranked],
        "experiments": ranked,
        "differing_training_facts": differing_facts(experiments),
        "pairwise": pairs,
        "best_vs_runner_up": {task: _best_vs_runner_up(task, experiments, pairs) for task in tasks},
        "quantization_cost": quantization_costs(summaries),
    }


def _experiment(summary: BenchmarkSummary) -> dict[str, Any]:
    headlines = summary.get("headlines") or {}
    scores = (summary.get("scores") or {}).get("fine-tuned") or {}
    comparison = comparison_of(summary)
    # The decisions the gate tests recorded: the ranking counts them, it never decides a gate again.
    gates = gates_of(summary)
    outcomes = [record["outcome"] for record in gates.values()]
    return {
        "label": summary.get("label") or summary.get("model_name"),
        "model": (side_of(summary, "fine-tuned") or {}).get("model"),
        # Which export was measured (lora, merged_16bit, gguf, …): an adapter and its merge are different models.
        "variant": summary.get("model_variant"),
        "benchmark_dir": _benchmark_dir(summary),
        "status": summary.get("status"),
        "backend": (summary.get("backends") or {}).get("fine-tuned"),
        "scores": {task: {**h, "value": scores.get(task), **_delta(comparison.get(task))}
                   for task, h in headlines.items()},
        "gates": {"passed": outcomes.count(PASSED), "failed": outcomes.count(FAILED), "total": len(gates),
                  "outcomes": gates},
        "training": summary.get("training") or {},
        "timestamp": summary.get("timestamp"),
    }


def _benchmark_dir(summary: BenchmarkSummary) -> str | None:
    results_file = (side_of(summary, "fine-tuned") or {}).get("results_file")
    return str(Path(results_file).parent.parent) if results_file else None


def _delta(comparison: ComparisonRecord | None) -> dict[str, Any]:
    if not comparison:
        return {}
    stats = comparison.get("stats") or {}
    return {"base": comparison.get("base_accuracy"), "delta": comparison.get("delta"),
            "ci_low": stats.get("ci_low"), "ci_high": stats.get("ci_high"), "p_value": stats.get("p_value")}


def _rank_key(experiment: Mapping[str, Any]) -> tuple[int, float, str]:
    return (-experiment["gates"]["passed"], experiment.get("mean_rank", 0.0), str(experiment["label"]))


def _assign_mean_ranks(experiments: list[dict[str, Any]]) -> None:
    """Each experiment's mean position over the tasks (1 = best on a task), in each metric's own direction."""
    positions: dict[str, list[int]] = {e["label"]: [] for e in experiments}
    for task in {task for e in experiments for task in e["scores"]}:
        for place, experiment in enumerate(_order_on(task, experiments), start=1):
            positions[experiment["label"]].append(place)
    for experiment in experiments:
        places = positions[experiment["label"]]
        experiment["mean_rank"] = sum(places) / len(places) if places else float(len(experiments))


def _order_on(task: str, experiments: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The experiments that scored `task`, best first."""
    scored = [e for e in experiments if (e["scores"].get(task) or {}).get("value") is not None]
    return sorted(scored, key=lambda e: e["scores"][task]["value"] * (-1 if e["scores"][task]["higher_is_better"]
                                                                      else 1))


def differing_facts(experiments: Sequence[Mapping[str, Any]]) -> list[str]:
    """The training facts (dataset, learning rate, rank, …) whose values are not the same in every experiment."""
    labels = list(dict.fromkeys(label for e in experiments for label in e["training"]))
    return [label for label in labels if len({str(e["training"].get(label)) for e in experiments}) > 1]


def pairs_to_compare(ranked: list[str]) -> list[tuple[str, str]]:
    """Every pair of experiments (lower-ranked first), or neighbours in the ranking when there are many."""
    if len(ranked) <= MAX_ALL_PAIRS:
        return [(ranked[j], ranked[i]) for i in range(len(ranked)) for j in range(i + 1, len(ranked))]
    return [(ranked[i + 1], ranked[i]) for i in range(len(ranked) - 1)]


def _best_vs_runner_up(task: str, experiments: Sequence[dict[str, Any]],
                       pairs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    order = _order_on(task, experiments)
    if len(order) < 2:
        return None
    best, runner_up = order[0]["label"], order[1]["label"]
    for pair in pairs:
        if {pair["first"], pair["second"]} == {best, runner_up} and task in pair["tasks"]:
            found = dict(pair["tasks"][task])
            if pair["second"] != best:  # stored the other way round: turn it to best minus runner-up
                found.update(reversed_pair(found))
            return {"best": best, "runner_up": runner_up, **found}
    return {"best": best, "runner_up": runner_up, "note": "not compared pairwise (too many experiments)"}


def reversed_pair(pair: Mapping[str, Any]) -> dict[str, Any]:
    """The same comparison read the other way round: first and second swapped, Δ and its interval negated."""
    flip = {"first": pair.get("second"), "second": pair.get("first")}
    for key, other in (("delta", None), ("ci_low", "ci_high"), ("ci_high", "ci_low")):
        value = pair.get(other or key)
        flip[key] = -value if isinstance(value, (int, float)) else value
    return flip


def pairwise(first: BenchmarkSummary, second: BenchmarkSummary) -> dict[str, dict[str, Any]]:
    """Per task: `second`'s fine-tuned run against `first`'s on their shared documents (paired statistics)."""
    try:
        runs = [record_from_summary(s, "fine-tuned", _ADVICE) for s in (first, second)]
        comparisons = paired_comparison(runs[0], runs[1], second, None)
    except BenchError as exc:
        return {task: {"note": str(exc)} for task in (second.get("headlines") or {})}
    alpha = 1 - confidence_level(second)
    return {task: _pair_json(c, alpha) for task, c in comparisons.items()}


def _pair_json(comparison: TaskComparison, alpha: float) -> dict[str, Any]:
    stats = comparison.extra.get("stats") or {}
    p_value = stats.get("p_value")
    significant = p_value is not None and p_value < alpha
    return {
        "metric": comparison.metric, "unit": comparison.unit,
        "first": comparison.base_accuracy, "second": comparison.finetuned_accuracy,
        "delta": comparison.delta, "ci_low": stats.get("ci_low"), "ci_high": stats.get("ci_high"),
        "p_value": p_value, "documents": stats.get("n"), "significant": significant,
        "verdict": ("a real difference" if significant else "not significantly different")
        + f" at {1 - alpha:.0%} confidence",
    }


def quantization_costs(summaries: Sequence[BenchmarkSummary]) -> list[dict[str, Any]]:
    """For a model benchmarked through several backends (`hf,ollama`): each served export against the first."""
    by_model: dict[str, list[BenchmarkSummary]] = {}
    for summary in summaries:
        label = str(summary.get("label") or "")
        if "@" in label:
            by_model.setdefault(label.rsplit("@", 1)[0], []).append(summary)
    costs = []
    for model, group in by_model.items():
        reference = group[0]
        for other in group[1:]:
            costs.append({"model": model, "reference": reference.get("label"), "export": other.get("label"),
                          "tasks": pairwise(reference, other)})
    return costs


def ranking_lines(ranking: Mapping[str, Any]) -> list[str]:
    """The ranking as terminal lines: the table, then best vs runner-up and the quantization cost per task."""
    experiments = ranking.get("experiments") or []
    tasks = list(dict.fromkeys(task for e in experiments for task in e["scores"]))
    facts = ranking.get("differing_training_facts") or []
    costs = {cost["export"]: cost for cost in ranking.get("quantization_cost") or []}
    headers = ["#", "Experiment", "Export", *(display_name(t) for t in tasks), "Gates", *facts]
    headers += ["Quantization cost"] if costs else []
    rows = [[place, e["label"], e.get("variant") or "", *(_score_cell(e["scores"].get(t)) for t in tasks),
             f"{e['gates']['passed']}/{e['gates']['total']}", *(e["training"].get(f, "") for f in facts),
             *([_cost_cell(costs.get(e["label"]))] if costs else [])]
            for place, e in enumerate(experiments, start=1)]
    lines = [tabulate(rows, headers=headers, tablefmt="github"), f"ranked by {ranking.get('ranked_by')}"]
    for task, pair in (ranking.get("best_vs_runner_up") or {}).items():
        if pair:
            lines.append(f"{display_name(task)}: {pair['best']} vs {pair['runner_up']}: {_pair_text(pair)}")
    for cost in ranking.get("quantization_cost") or []:
        for task, pair in cost["tasks"].items():
            lines.append(f"quantization cost, {display_name(task)}: {cost['export']} vs {cost['reference']}: "
                         f"{_pair_text(pair)}")
    return lines


def _cost_cell(cost: Mapping[str, Any] | None) -> str:
    """An export's change against the merged weights, per task: `IFEval -3.33 [-12.1, +5.4]`."""
    if cost is None:
        return ""
    cells = []
    for task, pair in cost["tasks"].items():
        if pair.get("delta") is not None:
            scale = 100.0 if pair.get("unit") == UNIT_POINTS else 1.0
            cells.append(f"{display_name(task)} {_signed(pair['delta'], scale)}{_interval(pair, scale)}")
    return "; ".join(cells) or "n/a"


def _score_cell(score: Mapping[str, Any] | None) -> str:
    if not score or score.get("value") is None:
        return "n/a"
    scale = 100.0 if score.get("unit", UNIT_POINTS) == UNIT_POINTS else 1.0
    value = f"{score['value'] * 100:.2f}%" if scale == 100 else f"{score['value']:.4g}"
    if score.get("delta") is None:
        return value
    return f"{value} (Δ {_signed(score['delta'], scale)}{_interval(score, scale)})"


def _signed(amount: float, scale: float) -> str:
    return f"{amount * scale:+.2f}" if scale == 100 else f"{amount:+.4g}"


def _interval(values: Mapping[str, Any], scale: float) -> str:
    if values.get("ci_low") is None or values.get("ci_high") is None:
        return ""
    return f" [{values['ci_low'] * scale:+.1f}, {values['ci_high'] * scale:+.1f}]"


def _pair_text(pair: Mapping[str, Any]) -> str:
    if "verdict" not in pair:
        return str(pair.get("note", "no paired comparison"))
    scale = 100.0 if pair.get("unit") == UNIT_POINTS else 1.0
    unit = " points" if scale == 100 else ""
    shown = "n/a" if pair.get("delta") is None else _signed(pair["delta"], scale)
    p_value = pair.get("p_value")
    p_text = "n/a" if p_value is None else f"{p_value:.2g}"
    return (f"Δ {shown}{unit}{_interval(pair, scale)}, p {p_text} over {pair.get('documents')} documents: "
            f"{pair['verdict']}")
