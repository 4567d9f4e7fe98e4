"""Every session ever run, over time and across experiments: the `history` command (no pytest here).

Each session leaves its summary in `benchmarks/fine-tuned/<timestamp>/benchmark.json` (and the latest
complete one in `benchmarks/benchmark.json`); history reads them all, one row per session and task.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.scores import UNIT_POINTS, display_name
from pytest_finetune_bench.plan.models import is_experiment
from pytest_finetune_bench.store.benchmark_file import BenchmarkSummary, comparison_of, parse_summary
from pytest_finetune_bench.store.files import MALFORMED, atomic_write_bytes, json_object
from pytest_finetune_bench.store.summaries import SUMMARY
from pytest_finetune_bench.text import markdown_inline, printable

FORMATS = ("table", "markdown", "csv", "json")


@dataclass(frozen=True)
class HistoryRow:
    """One task of one session."""

    timestamp: str
    experiment: str
    task: str
    metric: str
    unit: str
    base: float | None
    fine_tuned: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    status: str
    backend: str
    file: str


def summary_files(paths: Sequence[Path]) -> list[Path]:
    """Every benchmark.json under `paths`: files, benchmarks/ folders, model folders or folders of experiments."""
    found: dict[Path, None] = {}
    for path in paths:
        for file in _summaries_under(path):
            found.setdefault(file.resolve(), None)
    if not found:
        where = ", ".join(str(p) for p in paths)
        raise BenchError(f"no benchmark.json under {where}: run `pytest --bench-model MODEL` first, or pass the "
                         "model folders (outputs/<name>) or their benchmarks/ folders")
    return list(found)


def _summaries_under(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    if not path.is_dir():
        raise BenchError(f"{path} does not exist: pass benchmark.json files, model folders or folders of experiments")
    benchmarks = path if (path / SUMMARY).is_file() or (path / "fine-tuned").is_dir() else path / "benchmarks"
    if benchmarks.is_dir():
        yield from _in_benchmarks(benchmarks)
        for backend in sorted(p for p in benchmarks.iterdir() if p.is_dir() and (p / "fine-tuned").is_dir()):
            yield from _in_benchmarks(backend)  # --bench-backend hf,ollama: one folder per backend
    elif not is_experiment(path):
        for child in sorted(p for p in path.iterdir() if p.is_dir() and is_experiment(p)):
            yield from _summaries_under(child)


def _in_benchmarks(folder: Path) -> Iterator[Path]:
    yield from sorted(folder.glob(f"fine-tuned/*/{SUMMARY}"))
    if (folder / SUMMARY).is_file():
        yield folder / SUMMARY


def history_rows(files: Iterable[Path], notes: list[str] | None = None) -> list[HistoryRow]:
    """One row per session and task, oldest first; the latest summary and its run folder's copy count once.

    A summary that cannot be read, or is not shaped as this version writes them, is skipped with a
    line in `notes`.
    """
    rows: dict[tuple[str, str, str], HistoryRow] = {}
    for file in files:
        try:
            found = list(_rows(parse_summary(json.loads(file.read_text(encoding="utf-8")), file), file))
        except BenchError as exc:  # another schema version, or not a benchmark.json at all
            if notes is not None:
                notes.append(f"skipped {exc}")
            continue
        except (OSError, *MALFORMED) as exc:
            if notes is not None:
                notes.append(f"skipped {file}: {type(exc).__name__}")
            continue
        for row in found:
            rows.setdefault((row.timestamp, row.experiment, row.task), row)
    return sorted(rows.values(), key=lambda r: (r.timestamp, r.experiment, r.task))


def _rows(summary: BenchmarkSummary, file: Path) -> Iterator[HistoryRow]:
    headlines = json_object(summary.get("headlines"))
    comparison = json_object(comparison_of(summary))
    scores = json_object(summary.get("scores"))
    tasks = list(dict.fromkeys([*comparison, *headlines]))
    for task in tasks:
        compared = json_object(comparison.get(task))
        headline = json_object(headlines.get(task))
        stats = json_object(compared.get("stats"))
        yield HistoryRow(
            timestamp=str(summary.get("timestamp", "")),
            experiment=str(summary.get("label") or summary.get("model_name") or file.parent),
            task=task,
            metric=str(compared.get("metric") or headline.get("metric") or ""),
            unit=str(compared.get("unit") or headline.get("unit") or UNIT_POINTS),
            base=_number(compared.get("base_accuracy", json_object(scores.get("base")).get(task))),
            fine_tuned=_number(compared.get("finetuned_accuracy", json_object(scores.get("fine-tuned")).get(task))),
            delta=_number(compared.get("delta")),
            ci_low=_number(stats.get("ci_low")),
            ci_high=_number(stats.get("ci_high")),
            status=str(summary.get("status", "")),
            backend=str(json_object(summary.get("backends")).get("fine-tuned") or ""),
            file=str(file),
        )


def _number(value: Any) -> float | None:
    """A finite number read from a summary; None for anything else."""
    if type(value) not in (int, float) or not math.isfinite(value):
        return None
    return float(value)


def render(rows: Sequence[HistoryRow], fmt: str) -> str:
    """The rows as a terminal table, a Markdown table, CSV or JSON (numbers as lm-eval reports them in CSV/JSON)."""
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(HistoryRow.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
        return buffer.getvalue()
    from tabulate import tabulate

    headers = ["When", "Experiment", "Benchmark", "Base", "Fine-tuned", "Δ", "CI", "Status"]
    cell = markdown_inline if fmt == "markdown" else printable
    table = [[cell(c) for c in (r.timestamp[:19], r.experiment, display_name(r.task), _value(r, r.base),
                                _value(r, r.fine_tuned), _change(r), _interval(r), r.status)] for r in rows]
    return tabulate(table, headers=headers, tablefmt="github" if fmt == "markdown" else "simple",
                    disable_numparse=True)


def _scale(row: HistoryRow) -> float:
    return 100.0 if row.unit == UNIT_POINTS else 1.0


def _value(row: HistoryRow, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:.2f}%" if row.unit == UNIT_POINTS else f"{value:.4g}"


def _change(row: HistoryRow) -> str:
    return "" if row.delta is None else f"{row.delta * _scale(row):+.2f}"


def _interval(row: HistoryRow) -> str:
    if row.ci_low is None or row.ci_high is None:
        return ""
    return f"[{row.ci_low * _scale(row):+.1f}, {row.ci_high * _scale(row):+.1f}]"


def _shown(row: HistoryRow) -> float:
    return (row.delta or 0.0) * _scale(row)


def _below(row: HistoryRow) -> float:
    return 0.0 if row.ci_low is None else max(0.0, _shown(row) - row.ci_low * _scale(row))


def _above(row: HistoryRow) -> float:
    return 0.0 if row.ci_high is None else max(0.0, row.ci_high * _scale(row) - _shown(row))


def plot_history(rows: Sequence[HistoryRow], target: Path) -> Path:
    """Δ per experiment over its sessions, one panel per task, with each session's interval as an error bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    compared = [r for r in rows if r.delta is not None]
    if not compared:
        raise BenchError("no session with a comparison to plot (sessions run with --bench-base none have no Δ)")
    tasks = list(dict.fromkeys(r.task for r in compared))
    sessions = sorted({r.timestamp[:16] for r in compared})
    experiments = list(dict.fromkeys(r.experiment for r in compared))
    figure = Figure(figsize=(max(7.0, 1.2 * len(sessions) + 3), 3.0 * len(tasks)), dpi=100)
    FigureCanvasAgg(figure)
    for index, task in enumerate(tasks, start=1):
        axes = figure.add_subplot(len(tasks), 1, index)
        for number, experiment in enumerate(experiments):
            own = [r for r in compared if r.task == task and r.experiment == experiment]
            if not own:
                continue
            # Side by side within a session, so experiments with equal results stay visible.
            offset = (number - (len(experiments) - 1) / 2) * 0.08
            axes.errorbar([sessions.index(r.timestamp[:16]) + offset for r in own], [_shown(r) for r in own],
                          yerr=[[_below(r) for r in own], [_above(r) for r in own]], marker="o", capsize=4,
                          label=experiment)
        axes.axhline(0.0, color="#8c8c8c", linewidth=0.8)
        unit = "points" if compared[0].unit == UNIT_POINTS else compared[0].metric
        # Names are text, never mathtext: a `$` in an experiment or task name must not be parsed.
        axes.set_title(display_name(task), parse_math=False)
        axes.set_ylabel(f"Δ ({unit})")
        axes.set_xticks(range(len(sessions)), sessions, rotation=20, fontsize="small", parse_math=False)
        axes.set_xlim(-0.5, len(sessions) - 0.5)
        for text in axes.legend(fontsize="small").get_texts():
            text.set_parse_math(False)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format=target.suffix.lstrip(".") or "png")
    atomic_write_bytes(target, image.getvalue())
    return target
