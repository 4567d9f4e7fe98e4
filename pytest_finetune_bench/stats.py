"""Per-document benchmark scores and paired statistics for base vs fine-tuned.

The aggregate scores lm-eval reports say how much a model changed, not whether the change is more
than noise. Both models answer the same documents, so the comparison is paired: each document's
difference (fine-tuned minus base) is the unit, which cancels out how hard each document is and
gives much tighter intervals than comparing two independent accuracies.

- The interval is a paired bootstrap percentile interval of the mean difference.
- The p-value is the exact McNemar test for pass/fail metrics and a sign-flip permutation test for
  continuous ones. Both test the same null hypothesis: swapping the base and fine-tuned labels
  within any document changes nothing. On 0/1 data the sign-flip test *is* McNemar's exact test,
  so the two never disagree; unlike a paired t-test it assumes nothing about normality, which
  matters for bounded, lumpy per-document scores (IFEval's instruction fractions) on small runs.

The interval and the p-value come from different procedures, so at the margin one can call a
change significant while the other just misses; gates should pick one and say which.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_finetune_bench.errors import BenchError

TEST_MCNEMAR = "exact McNemar"
TEST_SIGN_FLIP = "sign-flip permutation"

# Up to 2**16 sign patterns are cheap to enumerate, which makes the p-value exact.
_EXACT_SIGN_FLIP_MAX_PAIRS = 16
# Keeps one block of resampled indices or sign patterns around 32 MiB of float64.
_BLOCK_ELEMENTS = 1 << 22
# With this few distinct differences, resampling counts per value beats resampling indices.
_MAX_DISTINCT_FOR_COUNTS = 64
# Prompt fields of the benchmarks' dataset rows, most specific first; the rendered prompt
# (arguments) is the fallback because it carries the chat template and few-shot examples.
_PROMPT_KEYS = ("prompt", "question", "query", "ctx", "problem", "input", "instruction", "text", "sentence")

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SampleRecord:
    """One document's headline-metric value and what was asked and answered, for display."""

    doc_id: int
    value: float  # the per-document metric; pass/fail metrics are 0.0 or 1.0
    prompt: str
    response: str
    target: str = ""


# ---------------------------------------------------------------------------------------------
# Reading lm-eval's samples_<task>_<timestamp>.jsonl
# ---------------------------------------------------------------------------------------------


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
    value = _metric_value(record[metric])
    if value is None:
        raise BenchError(
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


def _metric_value(raw: Any) -> float | None:
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


# ---------------------------------------------------------------------------------------------
# Paired statistics
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedStats:
    """Fine-tuned minus base over the same documents. Scores and deltas are fractions (0.05 = 5 points).

    With no paired documents (n == 0) every estimate is None and every count 0.
    """

    n: int
    delta: float | None  # mean of (fine-tuned - base) = fine-tuned score - base score
    ci_low: float | None
    ci_high: float | None
    confidence: float  # of the interval, e.g. 0.95
    p_value: float | None  # two-sided, of "no difference"
    test: str | None  # TEST_MCNEMAR or TEST_SIGN_FLIP
    improved: int  # fail→pass, or fine-tuned > base
    regressed: int  # pass→fail, or fine-tuned < base
    unchanged: int
    base_mean: float | None = None
    finetuned_mean: float | None = None

    def confident_improvement(self, by: float = 0.0) -> bool:
        """The whole interval is at or above `by`: the fine-tuned model gained at least `by`."""
        return self.ci_low is not None and self.ci_low >= by

    def confident_regression(self, max_drop: float = 0.0) -> bool:
        """The whole interval is below -`max_drop`: the model lost more than `max_drop` points (as a fraction)."""
        return self.ci_high is not None and self.ci_high < -max_drop

    def significant(self, alpha: float = 0.05) -> bool:
        """The paired test rejects "no difference" at level `alpha` (in either direction)."""
        return self.p_value is not None and self.p_value < alpha

    def summary(self) -> str:
        """One line for reports, e.g. "+3.2 pts [-1.0, +7.5] 95% CI, p=0.12 (exact McNemar), n=541, 20↑ 12↓"."""
        if self.n == 0 or self.delta is None or self.ci_low is None or self.ci_high is None:
            return "no documents scored by both models"
        level = f"{self.confidence * 100:g}%"
        return (
            f"{self.delta * 100:+.1f} pts [{self.ci_low * 100:+.1f}, {self.ci_high * 100:+.1f}] {level} CI, "
            f"p={_format_p(self.p_value)} ({self.test}), n={self.n}, {self.improved}↑ {self.regressed}↓"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _format_p(p_value: float | None) -> str:
    if p_value is None:
        return "n/a"
    return f"{p_value:.2g}" if p_value >= 0.001 else "<0.001"


def paired_stats(
    base_vals: Sequence[float],
    ft_vals: Sequence[float],
    *,
    confidence: float = 0.95,
    n_boot: int = 10000,
    seed: int = 0,
    n_perm: int = 10000,
) -> PairedStats:
    """Paired comparison of two per-document score lists (same documents, same order).

    The interval is the percentile interval of `n_boot` paired bootstrap resamples of the mean
    difference. The test is exact McNemar when every value is 0 or 1, else a sign-flip
    permutation test (exact up to 16 non-zero differences, otherwise `n_perm` random sign
    patterns). Results depend only on the inputs, `n_boot`, `n_perm` and `seed`.
    """
    _check_arguments(base_vals, ft_vals, confidence, n_boot, n_perm)
    n = len(base_vals)
    if n == 0:
        return PairedStats(0, None, None, None, confidence, None, None, 0, 0, 0)
    base = np.asarray(base_vals, dtype=np.float64)
    finetuned = np.asarray(ft_vals, dtype=np.float64)
    diffs = finetuned - base
    boot_seed, perm_seed = np.random.SeedSequence(seed).spawn(2)
    ci_low, ci_high = bootstrap_ci(diffs, confidence=confidence, n_boot=n_boot, rng=np.random.default_rng(boot_seed))
    improved, regressed = int(np.sum(diffs > 0)), int(np.sum(diffs < 0))
    if _is_binary(base) and _is_binary(finetuned):
        test, p_value = TEST_MCNEMAR, mcnemar_exact_p(improved, regressed)
    else:
        test = TEST_SIGN_FLIP
        p_value = sign_flip_p(diffs, n_perm=n_perm, rng=np.random.default_rng(perm_seed))
    return PairedStats(
        n=n,
        delta=math.fsum(diffs.tolist()) / n,
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
        p_value=p_value,
        test=test,
        improved=improved,
        regressed=regressed,
        unchanged=n - improved - regressed,
        base_mean=math.fsum(base.tolist()) / n,
        finetuned_mean=math.fsum(finetuned.tolist()) / n,
    )


def _check_arguments(
    base_vals: Sequence[float], ft_vals: Sequence[float], confidence: float, n_boot: int, n_perm: int
) -> None:
    if len(base_vals) != len(ft_vals):
        raise ValueError(f"paired values differ in length: {len(base_vals)} base vs {len(ft_vals)} fine-tuned")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    if n_boot < 1 or n_perm < 1:
        raise ValueError("n_boot and n_perm must be at least 1")
    if not all(math.isfinite(v) for v in (*base_vals, *ft_vals)):
        raise ValueError("paired values must be finite numbers")


def _is_binary(values: FloatArray) -> bool:
    return bool(np.all((values == 0.0) | (values == 1.0)))


def mcnemar_exact_p(improved: int, regressed: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts b and c.

    Under "no difference" each discordant document is equally likely to go either way, so
    min(b, c) ~ Binomial(b + c, 1/2) and p = min(1, 2 P(X <= min(b, c))); 1.0 when b + c == 0.
    Summed in exact integers, so it stays accurate for tiny p-values and thousands of documents.
    """
    if improved < 0 or regressed < 0:
        raise ValueError("discordant pair counts cannot be negative")
    discordant = improved + regressed
    if discordant == 0:
        return 1.0
    term = tail = 1  # C(m, 0)
    for i in range(min(improved, regressed)):
        # C(m, i+1) from C(m, i): math.comb per term is quadratic in the number of terms.
        term = term * (discordant - i) // (i + 1)
        tail += term
    # Python's int / int is correctly rounded even for numbers far beyond float range.
    return min(1.0, (2 * tail) / (1 << discordant))


def bootstrap_ci(diffs: FloatArray, *, confidence: float, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile interval of the mean of `diffs` over `n_boot` resamples of the documents."""
    means = _bootstrap_means(diffs, n_boot, rng)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def _bootstrap_means(diffs: FloatArray, n_boot: int, rng: np.random.Generator) -> FloatArray:
    values, counts = np.unique(diffs, return_counts=True)
    if len(values) <= _MAX_DISTINCT_FOR_COUNTS:
        return _bootstrap_means_by_counts(values, counts, n_boot, rng)
    return _bootstrap_means_by_index(diffs, n_boot, rng)


def _bootstrap_means_by_counts(
    values: FloatArray, counts: npt.NDArray[np.int64], n_boot: int, rng: np.random.Generator
) -> FloatArray:
    """Resampling n documents with replacement draws each distinct value a Multinomial number of times.

    That is the same distribution as resampling indices, in O(distinct values) per resample
    instead of O(n): pass/fail differences take only -1, 0 and 1, and MMLU has 14k documents.
    """
    n = int(counts.sum())
    draws = rng.multinomial(n, counts / n, size=n_boot)
    means: FloatArray = (draws @ values) / n
    return means


def _bootstrap_means_by_index(diffs: FloatArray, n_boot: int, rng: np.random.Generator) -> FloatArray:
    """Resample document indices with replacement, in blocks so memory stays bounded."""
    n = len(diffs)
    block = max(1, _BLOCK_ELEMENTS // n)
    means: FloatArray = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        means[start : start + size] = diffs[rng.integers(0, n, size=(size, n))].mean(axis=1)
    return means


def sign_flip_p(diffs: FloatArray, *, n_perm: int, rng: np.random.Generator) -> float:
    """Two-sided p-value of the paired sign-flip permutation test on the sum of differences.

    Under "no difference" each document's difference is as likely to have either sign, so the
    p-value is the share of sign patterns whose |sum| reaches the observed |sum|. Zero
    differences never change a sum and are left out. With up to 16 non-zero differences all
    patterns are enumerated (exact); beyond, `n_perm` random patterns give the Monte Carlo
    estimate (hits + 1) / (n_perm + 1), which counts the observed pattern and so is never 0.
    """
    nonzero = diffs[diffs != 0.0]
    if len(nonzero) == 0:
        return 1.0
    observed = abs(float(nonzero.sum()))
    # Sums taken in a different order round differently; a pattern as extreme as the
    # observed one must not miss by the last bit.
    threshold = observed - 1e-12 * float(np.abs(nonzero).sum())
    if len(nonzero) <= _EXACT_SIGN_FLIP_MAX_PAIRS:
        signs = _all_sign_patterns(len(nonzero))
        return float(np.mean(np.abs(signs @ nonzero) >= threshold))
    hits = 0
    block = max(1, _BLOCK_ELEMENTS // len(nonzero))
    for start in range(0, n_perm, block):
        size = min(block, n_perm - start)
        hits += int(np.sum(np.abs(_random_sign_sums(nonzero, size, rng)) >= threshold))
    return (hits + 1) / (n_perm + 1)


def _random_sign_sums(diffs: FloatArray, size: int, rng: np.random.Generator) -> FloatArray:
    """`size` sums of `diffs` under independent fair random signs.

    Random bytes unpacked to bits cost a fraction of one integer draw per sign. With a bit b
    per difference the sign is 1 - 2b, so the sum is sum(d) - 2 * (b @ d).
    """
    m = len(diffs)
    packed = np.frombuffer(rng.bytes(size * ((m + 7) // 8)), dtype=np.uint8).reshape(size, -1)
    bits = np.unpackbits(packed, axis=1, count=m)
    sums: FloatArray = float(diffs.sum()) - 2.0 * (bits.astype(np.float64) @ diffs)
    return sums


def _all_sign_patterns(m: int) -> FloatArray:
    """Every ±1 vector of length m, one per row (2**m rows)."""
    bits = (np.arange(1 << m)[:, None] >> np.arange(m)) & 1
    patterns: FloatArray = 1.0 - 2.0 * bits.astype(np.float64)
    return patterns
