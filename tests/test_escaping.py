"""Text from models and files is escaped wherever it is shown: HTML, terminal, Markdown, commands, charts (issue 22).

A crafted flips file must not run script in a real browser; model output must not drive the terminal;
names and errors must not break a Markdown table or inject HTML into it; printed commands must run
as shown; chart titles are never parsed as mathtext.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from pytest_finetune_bench.backends.ollama import create_command
from pytest_finetune_bench.backends.openai import OpenAIBackend
from pytest_finetune_bench.compare.flips import Flip, format_flips
from pytest_finetune_bench.report import html
from pytest_finetune_bench.report.card import card_section
from pytest_finetune_bench.report.chart import chart_png
from pytest_finetune_bench.report.facts import comparisons
from pytest_finetune_bench.report.github import step_summary_markdown
from pytest_finetune_bench.report.history import history_rows, plot_history, render, summary_files
from pytest_finetune_bench.text import markdown_inline, printable
from tests.cli_runs import run_cli
from tests.fake_sessions import read_summary
from tests.test_reports import GOLDEN_RUN, _browser, _chromium, golden_benchmark, golden_model

HOSTILE = "a\rb\x1b[2J\x1b]0;title\x07c\u202eevil\u200b\u2028d\x00e\x85f\ufeff"
MARKER = "pwned"  # what an injected script would set as the page's title


def test_printable_shows_every_control_and_format_character_as_an_escape() -> None:
    shown = printable(HOSTILE)
    assert shown.isprintable()
    assert shown == "a\\rb\\x1b[2J\\x1b]0;title\\x07c\\u202eevil\\u200b\\u2028d\\x00e\\x85f\\ufeff"
    assert printable(shown) == shown  # escaping twice changes nothing
    assert printable("tab\tand\nline", keep="\n") == "tab\\tand\nline"
    assert printable("Δ +2.0 → ↗ 答え ¿Qué?") == "Δ +2.0 → ↗ 答え ¿Qué?"


def test_a_gate_failure_quoting_model_output_cannot_drive_the_terminal() -> None:
    flip = Flip(doc_id=3, direction="regressed", prompt=HOSTILE, base_response="ok", finetuned_response=HOSTILE,
                base_value=1.0, finetuned_value=0.0)
    block = format_flips([flip])
    assert all(line.isprintable() for line in block.split("\n"))
    assert len(block.split("\n")) == 4 and "\\x1b[2J" in block


def crafted_flips_page(tmp_path: Path) -> Path:
    """The golden report with a flips file crafted to inject script through every field of a flip."""
    model = golden_model(tmp_path)
    flips_file = model / "benchmarks" / "fine-tuned" / GOLDEN_RUN / "flips_ifeval.jsonl"
    script = f"<img src=x onerror=\"document.title='{MARKER}'\">"
    good = json.loads(flips_file.read_text(encoding="utf-8").split("\n")[0])
    crafted = [
        {**good, "doc_id": script},
        {**good, "direction": f'regressed" onmouseover="document.title=\'{MARKER}\'" x="'},
        {**good, "prompt": f"</pre><script>document.title='{MARKER}'</script>{script}",
         "finetuned_response": f"</td></tr></table>{script}", "target": script},
    ]
    flips_file.write_text("".join(json.dumps(flip) + "\n" for flip in crafted), encoding="utf-8")
    summary_path = model / "benchmarks" / "benchmark.json"
    summary = read_summary(summary_path)
    summary["model_name"] = f"<script>document.title='{MARKER}'</script>"
    summary["errors"] = {f"<b onclick=x>{MARKER}": script}
    summary_path.write_text(json.dumps(summary), encoding="utf-8")
    done = run_cli("report", str(model))
    assert done.returncode == 0, done.stderr
    return model / "benchmarks" / html.REPORT_NAME


def test_a_crafted_flips_file_is_escaped_and_type_checked(tmp_path: Path) -> None:
    page = crafted_flips_page(tmp_path).read_text(encoding="utf-8")
    assert "<img src=x" not in page and "onerror=\"" not in page and 'onmouseover="' not in page
    assert page.count("<script>") == 1  # the page's own
    assert page.count('<tr class="flip"') == 1 and "2 unreadable lines skipped" in page
    assert '<meta http-equiv="Content-Security-Policy"' in page and "default-src 'none'" in page


def test_a_crafted_flips_file_runs_no_script_in_a_real_browser(tmp_path: Path) -> None:
    browser = _browser()
    page = crafted_flips_page(tmp_path)
    dom = _chromium(browser, tmp_path / "profile", "--dump-dom", page.as_uri())
    assert f"<title>{MARKER}" not in dom and 'id="flip-count">1 of 1 shown<' in dom  # our own script ran


def test_the_content_security_policy_stops_any_other_script(tmp_path: Path) -> None:
    browser = _browser()
    page = tmp_path / "page.html"
    page.write_text(html._page("t", f"<script>document.title = '{MARKER}';</script>"
                                    f"<img src=x onerror=\"document.title='{MARKER}'\">"), encoding="utf-8")
    dom = _chromium(browser, tmp_path / "profile", "--dump-dom", page.as_uri())
    assert "<title>t</title>" in dom and MARKER not in dom.split("<body>")[0]


def test_names_and_errors_cannot_break_or_inject_into_markdown() -> None:
    summary = golden_benchmark()
    summary["model_name"] = "evil\n# Injected heading <img src=x onerror=alert(1)> | x"
    summary["errors"] = {"fine-tuned": "line one\nline two </details><script>alert(1)</script>"}
    summary["skipped_tasks"] = {"mmlu": "needs\r\nlog-likelihoods | <b>"}
    for text in (step_summary_markdown(summary), card_section(summary, [("dataset", "x\n## y <i>")])):
        assert "<img" not in text and "<script" not in text and "<b>" not in text and "<i>" not in text
        assert not any(line.startswith(("# Injected", "## y", "line two")) for line in text.split("\n"))
    assert markdown_inline("a|b\nc<d>&") == "a\\|b c&lt;d&gt;&amp;"


def test_history_tables_escape_names(tmp_path: Path) -> None:
    model = golden_model(tmp_path)
    summary_path = model / "benchmarks" / "benchmark.json"
    summary = read_summary(summary_path)
    summary["label"] = "exp\x1b[31m|red\n<b>"
    summary_path.write_text(json.dumps(summary), encoding="utf-8")
    rows = history_rows(summary_files([model]))
    table = render(rows, "simple")
    assert "\x1b" not in table and "\\x1b[31m" in table
    markdown = render(rows, "markdown")
    assert "<b>" not in markdown and all(line.count(" | ") == 7 for line in markdown.split("\n")[2:])


def test_printed_commands_run_as_shown(tmp_path: Path) -> None:
    model = "my model; rm -rf ~"
    gguf = tmp_path / "with space $(touch x)" / "model.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    assert shlex.split(create_command(model, gguf)) == [
        "ollama", "create", model, "-f", str((gguf.parent / "Modelfile").resolve())]
    message = OpenAIBackend("http://127.0.0.1:9/v1")._missing(model, "fine-tuned", [], [gguf])
    command = message.split("`")[1]
    assert shlex.split(command) == ["python", "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", model]
    assert html.rebuild_command("a b") == "python -m pytest_finetune_bench report 'a b'"


@pytest.mark.parametrize("name", ["exp$\\frac$", "$\\alpha$ and $", "price $5 to $6"])
def test_chart_titles_and_names_are_never_mathtext(tmp_path: Path, name: str) -> None:
    assert chart_png(comparisons(golden_benchmark()), f"{name} vs base").startswith(b"\x89PNG")
    model = golden_model(tmp_path)
    summary_path = model / "benchmarks" / "benchmark.json"
    summary = read_summary(summary_path)
    summary["label"] = name
    summary_path.write_text(json.dumps(summary), encoding="utf-8")
    assert plot_history(history_rows(summary_files([model])), tmp_path / "h.png").is_file()
