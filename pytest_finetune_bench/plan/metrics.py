"""The headline metric of each task: which of lm-eval's numbers gates, and which way is better.

lm-eval reports several numbers per task (GSM8K: exact_match under two filters; wikitext: three
perplexity-like scores), and for some of them lower is better. Picking "the first number" compared
the wrong score, or gated a perplexity as if it were an accuracy. Here the headline is chosen, in
order, from:

1. `--bench-metric TASK=METRIC[,FILTER]`, checked against the task's own metrics when its config
   lists them;
2. the defaults below, for the benchmarks whose headline is well known;
3. the task's only metric × filter, when its config yields exactly one;

and otherwise the run stops, naming the candidates and the flag that picks one. Tasks whose
metrics are not in lm-eval's index (defined in Python, or tags) are resolved the same way from the
results of their run (`headline_from_results`).

The direction is the task config's `higher_is_better` for that metric, else lm-eval's registered
default for the metric's name; lm-eval's own results (`higher_is_better`) win when present.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_finetune_bench import BenchError

SOURCE_FLAG = "--bench-metric"
SOURCE_DEFAULT = "default"
SOURCE_ONLY = "only metric"
NO_FILTER = "none"  # lm-eval's filter name for a task without a filter_list

# Headlines whose choice is settled practice. GSM8K gates on strict-match: it only accepts the
# "#### N" answer format the few-shot examples teach, so a fine-tune that changes the answer format
# alone moves strict-match, and flexible-extract (any last number) shows whether the maths changed.
DEFAULT_HEADLINES: dict[str, tuple[str, str]] = {
    "ifeval": ("prompt_level_strict_acc", NO_FILTER),
    "gsm8k": ("exact_match", "strict-match"),
    "hellaswag": ("acc_norm", NO_FILTER),
    "mmlu": ("acc", NO_FILTER),
    "mmlu_generative": ("exact_match", "get_response"),
    "arc_easy": ("acc_norm", NO_FILTER),
    "arc_challenge": ("acc_norm", NO_FILTER),
    "piqa": ("acc_norm", NO_FILTER),
    "wikitext": ("word_perplexity", NO_FILTER),
}

# lm-eval aggregations that average per-document values; the others (perplexity, bits_per_byte,
# BLEU, F1...) are computed over the whole corpus, so per-document statistics do not apply to them.
MEAN_AGGREGATIONS = ("mean", "nanmean")


@dataclass(frozen=True)
class Headline:
    """The metric that stands for `task` in comparisons and gates, and where that choice came from."""

    task: str
    metric: str
    filter: str
    higher_is_better: bool
    source: str  # SOURCE_FLAG, SOURCE_DEFAULT or SOURCE_ONLY
    # The score is a mean of per-document values, so paired statistics and percentage points apply.
    per_document: bool = True

    @property
    def key(self) -> str:
        """lm-eval's "metric,filter" key of this metric in a task's results."""
        return f"{self.metric},{self.filter}"


@dataclass(frozen=True)
class _Candidate:
    """One metric × filter a task reports, with what its config says about it."""

    metric: str
    filter: str
    higher_is_better: bool | None  # None: the config does not say
    aggregation: str | None  # the config's aggregation name or function path; None: not given

    @property
    def key(self) -> str:
        return f"{self.metric},{self.filter}"


MetricChoice = tuple[str, str | None]


def parse_metric_choices(entries: Sequence[str]) -> dict[str, MetricChoice]:
    """Parse ["gsm8k=exact_match,flexible-extract", "wikitext=bits_per_byte"] into {task: (metric, filter)}.

    The filter is None when not given. One entry per flag or ini line; a task given two metrics is
    an error. Messages leave out the flag: the options reader names where the entry came from.
    """
    choices: dict[str, MetricChoice] = {}
    for entry in entries:
        task, choice = _parse_choice(entry)
        if task in choices and choices[task] != choice:
            raise BenchError(f"{task!r} is given two metrics: keep one TASK=METRIC[,FILTER]")
        choices[task] = choice
    return choices


def _parse_choice(entry: str) -> tuple[str, MetricChoice]:
    task, sep, rest = entry.strip().partition("=")
    metric, comma, filter_name = rest.strip().partition(",")
    parts = (task.strip(), metric.strip(), filter_name.strip())
    if not sep or not parts[0] or not parts[1] or (comma and not parts[2]) or "," in parts[2]:
        raise BenchError(f"{entry!r} is not TASK=METRIC[,FILTER], e.g. gsm8k=exact_match,strict-match")
    return parts[0], (parts[1], parts[2] or None)


def choose_headlines(
    tasks: Sequence[str], index: Mapping[str, Any], choices: Mapping[str, MetricChoice]
) -> dict[str, Headline]:
    """The headline of every task whose metrics lm-eval's index knows; see the module docstring.

    Tasks left out (defined in Python, tags) are resolved from their results with
    `headline_from_results`. A choice for a task lm-eval does not know is a BenchError (a typo
    would otherwise be ignored); choices for known tasks outside this run are ignored, so one ini
    file can serve several runs.
    """
    unknown = sorted(task for task in choices if task not in index)
    if unknown:
        raise BenchError(f"--bench-metric names {', '.join(unknown)}, which lm-eval does not know: check the task name")
    headlines = {}
    for task in tasks:
        candidates = _index_candidates(task, index)
        if candidates is not None:
            headlines[task] = _choose(task, candidates, choices.get(task))
    return headlines


def headline_from_results(
    task: str, task_result: Mapping[str, Any], higher_is_better_map: Mapping[str, Any], choice: MetricChoice | None
) -> Headline:
    """The headline of `task` from lm-eval's per-task result dict (for tasks the index cannot describe).

    `higher_is_better_map` is lm-eval's `results["higher_is_better"][task]`, metric → bool.
    """
    candidates = [
        _Candidate(metric, filter_name, _bool_or_none(higher_is_better_map.get(metric)), None)
        for metric, filter_name in _result_keys(task_result)
    ]
    return _choose(task, candidates, choice)


# The order in which runs' results are read for a headline: early stopping picks a task's headline from the
# base's results before the fine-tuned run exists, so everything that reads it later must read the base first.
RESULTS_ORDER = ("base", "fine-tuned")


def headlines_for_results(
    tasks: Sequence[str],
    chosen: Mapping[str, Headline],
    results: Mapping[str, Mapping[str, Any]],
    choices: Mapping[str, MetricChoice],
) -> dict[str, Headline]:
    """`chosen`, plus the headline of each other task from lm-eval's results of the runs, by role.

    The one place a headline is resolved from results (the comparison, benchmark.json, early stopping
    and `summary` all call it): the base's results first, then the fine-tuned's (RESULTS_ORDER). A task
    no run has (one that stopped before reaching it) gets no headline.
    """
    unknown = set(results) - set(RESULTS_ORDER)
    if unknown:
        raise ValueError(f"results of unknown roles {sorted(unknown)}: expected {', '.join(RESULTS_ORDER)}")
    ordered = [results[role] for role in RESULTS_ORDER if role in results]
    headlines = {}
    for task in tasks:
        if task in chosen:
            headlines[task] = chosen[task]
            continue
        found = next((r for r in ordered if (r.get("results") or {}).get(task)), None)
        if found is not None:
            directions = (found.get("higher_is_better") or {}).get(task) or {}
            headlines[task] = headline_from_results(task, found["results"][task], directions, choices.get(task))
    return headlines


def _result_keys(task_result: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(metric, filter) of every number in a result dict, skipping stderrs and bookkeeping keys."""
    for key, value in task_result.items():
        metric, sep, filter_name = key.partition(",")
        if not sep or metric.endswith("_stderr") or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            yield metric, filter_name


def _choose(task: str, candidates: Sequence[_Candidate], choice: MetricChoice | None) -> Headline:
    by_key = {c.key: c for c in candidates}
    if choice is not None:
        return _headline(task, _chosen_candidate(task, candidates, choice), SOURCE_FLAG)
    default = DEFAULT_HEADLINES.get(task)
    if default is not None and f"{default[0]},{default[1]}" in by_key:
        return _headline(task, by_key[f"{default[0]},{default[1]}"], SOURCE_DEFAULT)
    if len(by_key) == 1:
        return _headline(task, next(iter(by_key.values())), SOURCE_ONLY)
    if not by_key:
        raise BenchError(
            f"lm-eval reports no metric for {task!r} (a group without aggregate_metric_list has no score of its "
            "own): benchmark its tasks by name with --bench-tasks"
        )
    raise BenchError(
        f"{task!r} has no known headline metric; it reports {_names(candidates)}: pick one with "
        f"--bench-metric {task}=METRIC,FILTER (ini: bench_metric)"
    )


def _chosen_candidate(task: str, candidates: Sequence[_Candidate], choice: MetricChoice) -> _Candidate:
    """The candidate `choice` names; a missing filter is the metric's only one."""
    metric, filter_name = choice
    matches = [c for c in candidates if c.metric == metric and filter_name in (None, c.filter)]
    if len(matches) == 1:
        return matches[0]
    if not candidates:  # nothing known about the task: trust the user's name
        return _Candidate(metric, filter_name or NO_FILTER, None, None)
    wanted = metric if filter_name is None else f"{metric},{filter_name}"
    problem = "names more than one metric" if matches else "is not one of its metrics"
    raise BenchError(
        f"--bench-metric {task}={wanted} {problem}; {task!r} reports {_names(matches or candidates)}: "
        f"pass --bench-metric {task}=METRIC,FILTER"
    )


def _names(candidates: Sequence[_Candidate]) -> str:
    return ", ".join(sorted({c.key for c in candidates}))


def _headline(task: str, candidate: _Candidate, source: str) -> Headline:
    higher = candidate.higher_is_better
    if higher is None:
        higher = _registered_direction(candidate.metric)
    if higher is None:
        raise BenchError(
            f"lm-eval does not say whether a higher {candidate.metric} is better for {task!r}: add "
            f"higher_is_better to its metric_list, or pick another metric with --bench-metric {task}=METRIC,FILTER"
        )
    return Headline(task, candidate.metric, candidate.filter, higher, source, _is_mean(candidate))


def _index_candidates(task: str, index: Mapping[str, Any]) -> list[_Candidate] | None:
    """What a task or group reports, from its config; None when only its results can tell."""
    entry = index.get(task)
    if entry is None:
        return None
    kind, cfg = entry.kind.name, entry.cfg or {}
    if kind == "GROUP":
        return _group_candidates(cfg)
    if kind != "TASK" or cfg.get("class"):
        return None  # Python-defined tasks declare their metrics in code; tags have no score of their own
    return _task_candidates(cfg)


def _task_candidates(cfg: Mapping[str, Any]) -> list[_Candidate] | None:
    from lm_eval.api.registry import DEFAULT_METRIC_REGISTRY

    metrics = cfg.get("metric_list")
    if metrics is None:
        # lm-eval scores a task without metric_list with its output type's default metrics.
        defaults = DEFAULT_METRIC_REGISTRY.get(str(cfg.get("output_type", "generate_until")))
        if defaults is None:
            return None
        metrics = [{"metric": name} for name in defaults]
    filters = [str(f.get("name")) for f in cfg.get("filter_list") or []] or [NO_FILTER]
    return [
        _Candidate(_metric_name(m["metric"]), f, _bool_or_none(m.get("higher_is_better")),
                   _str_or_none(m.get("aggregation")))
        for m in metrics
        if isinstance(m, Mapping) and "metric" in m
        for f in filters
    ]


def _metric_name(metric: Any) -> str:
    """The name lm-eval reports a metric under: a `!function utils.f` metric is reported as `f`.

    lm-eval's index keeps such a reference as the text `/folder/utils.f` (a metric name has no slash).
    """
    name = str(metric)
    return name.rpartition(".")[2] if "/" in name else name


def _group_candidates(cfg: Mapping[str, Any]) -> list[_Candidate]:
    """A group's aggregates; their direction and per-document kind are those of the metric's name."""
    candidates = []
    for m in cfg.get("aggregate_metric_list") or []:
        filters = m.get("filter_list", NO_FILTER)
        for f in filters if isinstance(filters, list) else [filters]:
            candidates.append(_Candidate(str(m["metric"]), str(f), _bool_or_none(m.get("higher_is_better")), None))
    return candidates


def _registered_direction(metric: str) -> bool | None:
    """lm-eval's default higher_is_better for a metric name (acc: True, word_perplexity: False)."""
    import lm_eval.api.metrics  # noqa: F401 - registers lm-eval's metrics
    from lm_eval.api.registry import higher_is_better_registry

    return _bool_or_none(higher_is_better_registry.get(metric)) if metric in higher_is_better_registry else None


def _is_mean(candidate: _Candidate) -> bool:
    """Whether the score averages per-document values (an unknown aggregation name counts as one).

    An aggregation name lm-eval does not register is taken at its word: its per-document values
    decide when the samples are read (evidence.py), where a value that is not a number stops the
    statistics. A task's own aggregation function (`aggregation: !function utils.f`, kept by the
    index as `/folder/utils.f`) may compute anything from them, so it is gated on its point estimate.
    """
    import lm_eval.api.metrics  # noqa: F401 - registers lm-eval's aggregations
    from lm_eval.api.registry import aggregation_registry, metric_agg_registry

    means = [aggregation_registry.get(name) for name in MEAN_AGGREGATIONS]
    if candidate.aggregation is not None:
        if "/" in candidate.aggregation:
            return False
        return candidate.aggregation in MEAN_AGGREGATIONS or candidate.aggregation not in aggregation_registry
    if candidate.metric not in metric_agg_registry:
        return True
    return any(metric_agg_registry.get(candidate.metric) is mean for mean in means)


def _bool_or_none(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
