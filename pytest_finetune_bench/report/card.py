"""Model cards: a "Benchmark Results" section in the model's README files (no pytest here).

Each README also gets the numbers as metadata in its YAML front matter (report/model_index.py),
which the Hub shows as the model's evaluation results.

The pipelines users come from end by writing their numbers into outputs/<name>/README.md and into
each export's README (lora/, merged_16bit/, merged_4bit/, gguf/). The section sits between two
markers: a new run replaces what is between them and nothing else, and the same benchmark.json
writes the same bytes, so running it twice changes nothing.
"""

from __future__ import annotations

from pathlib import Path

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.report.chart import CHART_NAME, chart_png
from pytest_finetune_bench.report.facts import (
    IFEVAL_HEADERS,
    comparisons,
    confidence_level,
    ifeval_rows,
    markdown_table,
    measured_on,
    produced_by,
    result_headers,
    result_rows,
    settings_facts,
    training_facts,
)
from pytest_finetune_bench.report.model_index import with_model_index
from pytest_finetune_bench.store.benchmark_file import BenchmarkSummary, comparison_of
from pytest_finetune_bench.store.files import atomic_write_bytes, atomic_write_text
from pytest_finetune_bench.text import markdown_inline

START = "<!-- pytest-finetune-bench: benchmark results start (generated; edits between the markers are replaced) -->"
END = "<!-- pytest-finetune-bench: benchmark results end -->"
VARIANT_FOLDERS = ("lora", "merged_16bit", "merged_4bit", "gguf")
README = "README.md"


def card_folders(model_dir: Path) -> list[Path]:
    """outputs/<name>/ and each export folder in it that exists."""
    return [model_dir, *(model_dir / name for name in VARIANT_FOLDERS if (model_dir / name).is_dir())]


def write_cards(model_dir: Path, summary: BenchmarkSummary) -> list[Path]:
    """Write the section (and the chart beside it) into every card folder's README.md; returns the READMEs.

    Files whose content would not change are left alone, so their modification times stay too.
    """
    if not model_dir.is_dir():
        raise BenchError(f"{model_dir} is not a folder: pass the outputs/<name> folder that was benchmarked")
    if not comparison_of(summary):
        raise BenchError("benchmark.json holds no comparison (the session did not finish both runs): "
                         "run the benchmark to the end, then write the cards")
    section = card_section(summary, training_facts(model_dir))
    chart = chart_png(comparisons(summary), f"{summary.get('model_name', '')} vs base")
    readmes = []
    for folder in card_folders(model_dir):
        _write_if_changed(folder / CHART_NAME, chart)
        readme = folder / README
        old = readme.read_text(encoding="utf-8") if readme.is_file() else ""
        new = with_model_index(with_section(old, section), summary, str(readme))
        if new != old:
            atomic_write_text(readme, new)
        readmes.append(readme)
    return readmes


def with_section(text: str, section: str) -> str:
    """`text` with the section between the markers replaced, or appended when it has none yet."""
    block = f"{START}\n{section.rstrip()}\n{END}\n"
    start, end = text.find(START), text.find(END)
    if start != -1 and end > start:
        after = text[end + len(END):]
        return text[:start] + block + after.removeprefix("\n")
    if not text:
        return block
    return text.rstrip("\n") + "\n\n" + block


def card_section(summary: BenchmarkSummary, training: list[tuple[str, str]]) -> str:
    """The section's Markdown: table, IFEval detail, chart, who produced the numbers, settings, training."""
    level = confidence_level(summary)
    parts = [
        "## Benchmark Results",
        f"**{markdown_inline(summary.get('model_name', '?'))}** against its base "
        f"**{markdown_inline(summary.get('base_model_name', '?'))}**, measured {markdown_inline(measured_on(summary))} "
        "with lm-evaluation-harness.",
        markdown_table(result_headers(summary), result_rows(summary)),
        "↗ better, ↘ worse, → unchanged. The change is in percentage points with the relative change in "
        f"brackets; the interval is the paired {level:.0%} confidence interval of the change, p the paired "
        "test's p-value, and flips the documents that went pass→fail (↓) and fail→pass (↑).",
    ]
    ifeval = ifeval_rows(summary)
    if ifeval:
        parts.append(markdown_table(IFEVAL_HEADERS, ifeval))
    parts += [
        f"![Base vs fine-tuned per task]({CHART_NAME})",
        f"Bars: each model's score. Line on the fine-tuned bar: the base score plus the {level:.0%} interval "
        "of the change.",
        f"**Measured on:** {markdown_inline(produced_by(summary))}.",
        "**Settings:** " + markdown_inline("; ".join(f"{name}: {value}" for name, value in settings_facts(summary)))
        + ".",
    ]
    if training:
        facts = "; ".join(f"{name}: {value}" for name, value in training)
        parts.append(f"**Training:** {markdown_inline(facts)}.")
    return "\n\n".join(parts) + "\n"


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.is_file() or path.read_bytes() != data:
        atomic_write_bytes(path, data)
