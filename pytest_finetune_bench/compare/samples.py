"""Per-document scores from lm-eval's samples_<task>_<timestamp>.jsonl files, paired across two runs.

Each line of a samples file is one document: what was asked, what the model answered, and the
per-document value of every metric. The statistics and the flips work on these records.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError

# Prompt fields of the benchmarks' dataset rows, most specific first; the rendered prompt
# (arguments) is the fallback because it carries the chat template and few-shot examples.
_PROMPT_KEYS = ("prompt", "question", "query", "ctx", "problem", "input", "instruction", "text", "sentence")


@dataclass(frozen=True)
class SampleRecord:
    """One document's headline-metric value and what was asked and answered, for display."""

    doc_id: int
    value: float  # the per-document metric; pass/fail metrics are 0.0 or 1.0
    prompt: str
    response: str
    target: str = ""


class CorpusLevelMetric(BenchError):
    """A metric whose per-document values are not scores (lm-eval aggregates them over the whole corpus)."""


def split_metric_key(metric_key: str) -> tuple[str, str]:
    """Split lm-eval's "metric,filter" key: "exact_match,strict-match" → ("exact_match", "strict-match")."""
    metric, sep, filter_name = metric_key.partition(",")
    if not sep or not metric or not filter_name:
        raise BenchError(f"metric {metric_key!r} must be lm-eval's 'metric,filter' key, e.g. 'acc,none'")
    return metric, filter_name


def load_samples(path: Path, metric_key: str) -> dict[int, SampleRecord]:
    """Map doc_id → SampleRecord for the records of `metric_key`'s filter in one samples file.

    A task with several filters (GSM8K: strict-match and flexible-extract) logs one record per
    document per filter; only the records of the requested filter are kept. An empty file gives
    an empty dict. A corrupt line, a filter the file does not have, or a metric that is not a
    per-document score raises BenchError.
    """
    metric, filter_name = split_metric_key(metric_key)
    samples: dict[int, SampleRecord] = {}
    filters_seen: set[str] = set()
    for lineno, record in _read_records(path):
        filters_seen.add(record["filter"])
        if record["filter"] != filter_name:
            continue
        doc_id = record["doc_id"]
        if doc_id in samples:
            raise _corrupt(path, lineno, f"doc_id {doc_id} appears twice for filter {filter_name!r}")
        samples[doc_id] = _sample_record(path, lineno, record, metric)
    if filters_seen and not samples:
        raise BenchError(
            f"{path} has no records for filter {filter_name!r} of metric {metric_key!r} "
            f"(it has: {', '.join(sorted(filters_seen))}): use one of those filters"
        )
    return samples


def _read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) for every non-blank line; anything unreadable names its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        # The byte offset is all Python gives; turn it into the line a person can look at.
        lineno = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise _corrupt(path, lineno, "not UTF-8") from None
    except OSError as exc:
        raise BenchError(f"cannot read lm-eval samples {path}: {exc.strerror or exc}; re-run the benchmark") from None
    records = []
    # Not splitlines(): lm-eval writes ensure_ascii=False, so U+2028 and friends appear raw inside records.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            records.append((lineno, _parse_record(path, lineno, line)))
    return records


def _parse_record(path: Path, lineno: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        # Typically the last line of a run that was killed while lm-eval was writing.
        raise _corrupt(path, lineno, "not valid JSON") from None
    if not isinstance(record, dict):
        raise _corrupt(path, lineno, "not a JSON object")
    doc_id = record.get("doc_id")
    if not isinstance(doc_id, int) or isinstance(doc_id, bool):
        raise _corrupt(path, lineno, "no integer doc_id")
    if not isinstance(record.get("filter"), str):
        raise _corrupt(path, lineno, "no filter name")
    return record


def _corrupt(path: Path, lineno: int, reason: str) -> BenchError:
    return BenchError(
        f"{path} line {lineno} is corrupt ({reason}): delete the run folder that holds it, or re-run the benchmark"
    )


def _sample_record(path: Path, lineno: int, record: dict[str, Any], metric: str) -> SampleRecord:
    if metric not in record:
        logged = record.get("metrics")
        have = ", ".join(str(m) for m in logged) if isinstance(logged, list) else "none listed"
        raise BenchError(f"{path} line {lineno} has no {metric!r} value (metrics: {have}): check the metric name")
    value = document_value(record[metric])
    if value is None:
        raise CorpusLevelMetric(
            f"{path} line {lineno}: {metric!r} is {str(record[metric])[:60]!r}, not a per-document score "
            "(lm-eval aggregates it over the whole corpus): compare on a different metric"
        )
    return SampleRecord(
        doc_id=record["doc_id"],
        value=value,
        prompt=_prompt_text(record),
        response=_response_text(record, metric),
        target=_target_text(record),
    )


def document_value(raw: Any) -> float | None:
    """A per-document score as a float, or None when the logged value is not one.

    Lists of bools are IFEval's per-instruction results; a document scores the fraction it
    followed. (lm-eval's inst_level aggregate pools instructions across documents instead, so
    the mean of these values weighs documents equally and differs slightly from that aggregate.)
    Other lists or tuples, such as F1's (gold, prediction), only mean something corpus-wide.
    """
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, (int, float)):
        value = float(raw)
        return value if math.isfinite(value) else None
    if isinstance(raw, list) and raw and all(isinstance(item, bool) for item in raw):
        return sum(raw) / len(raw)
    return None


def _prompt_text(record: dict[str, Any]) -> str:
    doc = record.get("doc")
    if isinstance(doc, dict):
        for key in _PROMPT_KEYS:
            value = doc.get(key)
            if isinstance(value, str) and value.strip():
                return value
    contexts = _request_arguments(record)
    return contexts[0][0] if contexts else ""


def _request_arguments(record: dict[str, Any]) -> list[list[str]]:
    """The text arguments of each request: [[context, continuation], ...] for multiple choice.

    lm-eval's tracker writes them as {"gen_args_0": {"arg_0": ..., "arg_1": ...}, ...};
    the in-memory form (a list of argument tuples) is accepted too.
    """
    requests = _in_order(record.get("arguments"))
    return [[arg for arg in _in_order(args) if isinstance(arg, str)] for args in requests]


def _in_order(value: Any) -> list[Any]:
    """A list as is, or the values of a {"name_0": ..., "name_1": ...} dict in index order."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, dict):
        return [value[key] for key in sorted(value, key=_trailing_number)]
    return []


def _trailing_number(key: str) -> int:
    """gen_args_10 sorts after gen_args_9."""
    digits = key.rpartition("_")[2]
    return int(digits) if digits.isdigit() else -1


def _response_text(record: dict[str, Any], metric: str) -> str:
    """What the model answered: its generation, or for multiple choice the choice it picked."""
    filtered = record.get("filtered_resps")
    loglikelihoods = _loglikelihoods(filtered)
    if loglikelihoods is not None:
        return _picked_choice(record, loglikelihoods, metric)
    raw = _first_text(record.get("resps"))
    extracted = _first_text(filtered)
    if raw is None:
        return extracted or ""
    if extracted is not None and extracted.strip() != raw.strip():
        # A filter such as GSM8K's strict-match scores only what it extracted; show both.
        return f"{raw}\n(extracted: {extracted})"
    return raw


def _first_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            text = _first_text(item)
            if text is not None:
                return text
    return None


def _loglikelihoods(filtered: Any) -> list[float] | None:
    """The per-choice log-likelihoods of a multiple-choice record, else None.

    lm-eval stringifies each request's (loglikelihood, is_greedy) pair: ["-12.5", "False"].
    """
    if not isinstance(filtered, list) or not filtered:
        return None
    values = []
    for item in filtered:
        if not (isinstance(item, list) and len(item) == 2 and item[1] in ("True", "False")):
            return None
        try:
            values.append(float(item[0]))
        except (TypeError, ValueError):
            return None
    return values


def _continuations(record: dict[str, Any]) -> list[str]:
    """The text each multiple-choice request scored: lm-eval's delimiter followed by one choice."""
    return [args[1] if len(args) > 1 else "" for args in _request_arguments(record)]


def _picked_choice(record: dict[str, Any], loglikelihoods: list[float], metric: str) -> str:
    continuations = _continuations(record)
    if len(continuations) != len(loglikelihoods):
        return f"choice {loglikelihoods.index(max(loglikelihoods))}"
    scores = [ll / _choice_length(cont, metric) for ll, cont in zip(loglikelihoods, continuations, strict=True)]
    best = scores.index(max(scores))
    return f"choice {best}: {continuations[best].strip()}"


def _choice_length(continuation: str, metric: str) -> float:
    """The divisor lm-eval uses to pick a choice for `metric` (1 for plain acc)."""
    # The continuation carries lm-eval's target delimiter (a space); its choice lengths do not.
    choice = continuation[1:] if continuation.startswith(" ") else continuation
    if metric.startswith("acc_norm"):
        return float(max(len(choice), 1))
    if metric.startswith("acc_bytes"):
        return float(max(len(choice.encode("utf-8")), 1))
    return 1.0


def _target_text(record: dict[str, Any]) -> str:
    target = record.get("target")
    if not isinstance(target, str):
        return ""
    if _loglikelihoods(record.get("filtered_resps")) is not None and target.isdigit():
        # Multiple-choice targets are choice indices; name the choice the way responses do.
        continuations = _continuations(record)
        index = int(target)
        if index < len(continuations):
            return f"choice {index}: {continuations[index].strip()}"
    return target


def paired_values(
    base: dict[int, SampleRecord], finetuned: dict[int, SampleRecord]
) -> tuple[list[float], list[float], list[int]]:
    """(base values, fine-tuned values, doc ids) for the documents both sides scored, by doc id."""
    doc_ids = sorted(base.keys() & finetuned.keys())
    return [base[d].value for d in doc_ids], [finetuned[d].value for d in doc_ids], doc_ids
