"""Results people read: `summary` from disk, model cards, the chart, report.html and CI outputs.

Fast tests read tests/golden/model/benchmarks/: the files of a fake session (tests/fake_lm.py) whose
fine-tuned model answers in capitals, so IFEval has prompts flipping both ways; its folders were
renamed to /data/model, and `golden_model` points a copy's summaries at the copy. The slow tests
run such a session themselves (lm-eval children) and read what it wrote.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
import yaml
from huggingface_hub import ModelCard, ModelCardData

from pytest_finetune_bench import BenchError, cli
from pytest_finetune_bench.compare.flips import read_flips, write_flips
from pytest_finetune_bench.compare.scores import display_name
from pytest_finetune_bench.report.card import END, START, write_cards
from pytest_finetune_bench.report.chart import CHART_NAME, chart_figure, chart_png
from pytest_finetune_bench.report.facts import comparisons
from pytest_finetune_bench.report.from_disk import rebuild_summary
from pytest_finetune_bench.report.github import STEP_SUMMARY_ENV, append_step_summary
from pytest_finetune_bench.report.html import REPORT_NAME, write_report
from pytest_finetune_bench.store.benchmark_file import SCHEMA_VERSION, BenchmarkSummary, parse_summary
from pytest_finetune_bench.store.files import bench_cache_dir
from pytest_finetune_bench.store.fingerprint import model_fingerprint
from pytest_finetune_bench.text import printable
from tests.bench_sessions import pytest_html_extras
from tests.cli_runs import run_cli
from tests.fake_backend import FAKE_ENV
from tests.fake_sessions import REPO_ROOT, bench_args, make_fake_model, read_summary
from tests.schema_check import produced_summaries, validate, validate_file
from tests.test_recovery import session_with_a_broken

if TYPE_CHECKING:
    from matplotlib.collections import LineCollection

COMMANDS = ("summary", "readme", "report")
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
GOLDEN = Path(__file__).parent / "golden"
GOLDEN_ROOT = "/data/model"  # where the golden session's model folder was
GOLDEN_RUN = "2026-12-02T15-25-14"
USER_TEXT = "# My model\n\nWritten by hand: kept as it is.\n"
TRAINING_METRICS = {"model_name": "SmolLM2-135M-Instruct", "dataset": "demo_train", "learning_rate": 0.001,
                    "steps": 30, "final_loss": 1.0815}


def golden_model(tmp_path: Path) -> Path:
    """A copy of the golden session's model folder whose summaries name the copy's files."""
    model = tmp_path / "model"
    shutil.copytree(GOLDEN / "model", model)
    for summary in model.rglob("benchmark.json"):
        summary.write_text(summary.read_text().replace(f'"{GOLDEN_ROOT}/', f'"{model}/'))
    return model


def golden_summary() -> dict[str, Any]:
    return read_summary(GOLDEN / "model" / "benchmarks" / "benchmark.json")


def golden_benchmark() -> BenchmarkSummary:
    """golden_summary() typed as the report writers take it."""
    return cast(BenchmarkSummary, golden_summary())


# ------------------------------------------------------------------------------------------------ summary


def test_summary_reproduces_the_sessions_benchmark_json(tmp_path: Path) -> None:
    model = golden_model(tmp_path)
    # The golden session was written by schema version 2: the rebuild is the same summary in the current version.
    written = read_summary(model / "benchmarks" / "benchmark.json")
    assert written["schema_version"] == 2
    upgraded = dict(parse_summary(written, "the golden summary"))
    (model / "benchmarks" / "benchmark.json").unlink()
    done = run_cli("summary", str(model))
    assert done.returncode == 0, done.stderr
    rebuilt = read_summary(model / "benchmarks" / "benchmark.json")
    assert rebuilt == upgraded and rebuilt["schema_version"] == SCHEMA_VERSION
    assert done.stdout.splitlines() == [
        f"fine-tuned run: {model / 'benchmarks' / 'fine-tuned' / GOLDEN_RUN}",
        f"base results: {written['base_model']['results_file']}",
        f"fine-tuned results: {written['fine_tuned_model']['results_file']}",
        f"wrote {model / 'benchmarks' / 'benchmark.json'}",
    ]


def test_summary_skips_empty_and_failed_newer_runs(tmp_path: Path) -> None:
    model = golden_model(tmp_path)
    runs = model / "benchmarks" / "fine-tuned"
    (runs / "2999-01-01T00-00-00").mkdir()  # left by a killed session
    failed = runs / "2999-01-01T00-00-01"
    failed.mkdir()
    (failed / "benchmark.json").write_text(json.dumps({**golden_summary(), "status": "timeout"}))
    summary, sources = rebuild_summary(model / "benchmarks")
    assert sources.run_dir == runs / GOLDEN_RUN
    assert summary["status"] == "complete"
    assert summary["comparison"] == read_summary(model / "benchmarks" / "benchmark.json")["comparison"]


def test_summary_without_a_complete_run_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "benchmarks" / "fine-tuned" / "2024-01-01T00-00-00").mkdir(parents=True)
    done = run_cli("summary", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"python -m pytest_finetune_bench: error: no complete run in {tmp_path / 'benchmarks' / 'fine-tuned'} "
        "(empty, failed and partial runs are skipped): run the benchmark to the end first"]


def test_summary_names_a_lost_results_file(tmp_path: Path) -> None:
    model = golden_model(tmp_path)
    lost = next((model / "benchmarks" / "base" / "lm-eval").glob("results_*.json"))
    lost.unlink()
    done = run_cli("summary", str(model))
    assert done.returncode == 2
    assert done.stderr.strip() == (f"python -m pytest_finetune_bench: error: the base run's file {lost} is gone: "
                                   "run the benchmark again")


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_without_results_say_where_they_looked(command: str, tmp_path: Path) -> None:
    done = run_cli(command, str(tmp_path))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert f"no benchmark results in {tmp_path / 'benchmarks'}: run `pytest --bench-model" in done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m pytest_finetune_bench {command}") and "--output DIR" in out


def test_the_console_script_has_the_same_commands(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    entry = '\npytest-finetune-bench = "pytest_finetune_bench.cli:script"\n'
    assert entry in (REPO_ROOT / "pyproject.toml").read_text()
    monkeypatch.setattr(sys, "argv", ["pytest-finetune-bench", "summary", "--help"])
    with pytest.raises(SystemExit):
        cli.script()
    assert capsys.readouterr().out.startswith("usage: pytest-finetune-bench summary")


# ------------------------------------------------------------------------------------------ model cards


def test_the_readme_section_matches_its_golden_file(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "lora").mkdir(parents=True)
    (model / "lora" / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 32}))
    (model / "lora" / "training_metrics.json").write_text(json.dumps(TRAINING_METRICS))
    write_cards(model, golden_benchmark())
    assert (model / "README.md").read_text() == (GOLDEN / "README.md").read_text()


def test_a_second_run_changes_nothing_and_keeps_the_text_around(tmp_path: Path) -> None:
    model = tmp_path / "model"
    for variant in ("lora", "merged_16bit", "merged_4bit", "gguf"):
        (model / variant).mkdir(parents=True)
    after = "\n## License\n\nApache-2.0\n"
    (model / "README.md").write_text(USER_TEXT + f"\n{START}\nold numbers\n{END}\n" + after)
    (model / "lora" / "README.md").write_text(USER_TEXT)
    write_cards(model, golden_benchmark())
    first = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(model.rglob("*.*"))}
    write_cards(model, golden_benchmark())
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(model.rglob("*.*"))} == first
    text = card_body(model / "README.md")  # after the metadata block the cards now start with
    assert text.startswith(USER_TEXT) and text.endswith(f"{END}\n" + after)
    assert "old numbers" not in text and text.count(START) == 1
    section = text[text.index(START):text.index(END)]
    assert card_body(model / "lora" / "README.md") == USER_TEXT + "\n" + section + f"{END}\n"
    for variant in ("merged_16bit", "merged_4bit", "gguf"):
        assert card_body(model / variant / "README.md") == section + f"{END}\n"
        assert (model / variant / CHART_NAME).read_bytes() == (model / CHART_NAME).read_bytes()


def card_body(readme: Path) -> str:
    """A README's Markdown after its metadata block, as huggingface_hub splits them."""
    return str(ModelCard.load(readme).text)


def summary_with_task_data(**changes: Any) -> dict[str, Any]:
    """The golden summary as version 4 writes it: the dataset of each task recorded, a Hub id as the base."""
    summary = {**dict(parse_summary(golden_summary(), "golden")), "base_model_name": "HuggingFaceTB/SmolLM2-135M",
               "task_data": {"ifeval": {"dataset_path": "google/IFEval", "dataset_name": None, "split": "train",
                                        "revision": "abc123", "output_type": "generate_until"}}}
    validate(summary, "benchmark")
    return {**summary, **changes}


def our_results(readme: Path) -> dict[tuple[str, str], tuple[Any, ...]]:
    """The card's eval results this plugin wrote: (task, metric) → dataset type, config, split, revision, value."""
    card = ModelCard.load(readme)
    return {(r.task_name, r.metric_type): (r.dataset_type, r.dataset_config, r.dataset_split, r.dataset_revision,
                                           r.metric_value)
            for r in card.data.eval_results or () if r.source_name == "pytest-finetune-bench"}


def test_the_card_metadata_holds_benchmark_json_numbers_and_loads_with_huggingface_hub(tmp_path: Path) -> None:
    summary = summary_with_task_data()
    write_cards(tmp_path, cast(BenchmarkSummary, summary))
    readme = tmp_path / "README.md"
    data = cast(ModelCardData, ModelCard(readme.read_text()).data)
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M"
    assert [r.task_type for r in data.eval_results or ()] == ["text-generation"]
    expected = {(task, c["metric"].split(",")[0]): ("google/IFEval", None, "train", "abc123", c["finetuned_accuracy"])
                for task, c in summary["comparison"].items()}
    assert our_results(readme) == expected and expected


def test_the_users_metadata_stays_and_our_results_are_replaced_not_added(tmp_path: Path) -> None:
    user_result = {"task": {"type": "text-generation"}, "dataset": {"name": "MMLU", "type": "cais/mmlu"},
                   "metrics": [{"type": "acc", "value": 0.5}],
                   "source": {"name": "Open LLM Leaderboard", "url": "https://example.org/leaderboard"}}
    metadata = {"license": "apache-2.0", "tags": ["sft"], "base_model": "org/their-base",
                "model-index": [{"name": "my-model", "results": [user_result]}]}
    readme = tmp_path / "README.md"
    readme.write_text("---\n" + yaml.safe_dump(metadata, sort_keys=False) + "---\n" + USER_TEXT)
    earlier = summary_with_task_data(base_model_name="/data/model-base")  # a local base: their base_model stays
    earlier["task_data"] = {"ifeval": {**earlier["task_data"]["ifeval"], "revision": "an-older-one"}}
    write_cards(tmp_path, cast(BenchmarkSummary, earlier))
    summary = summary_with_task_data(base_model_name="/data/model-base")
    write_cards(tmp_path, cast(BenchmarkSummary, summary))
    first = readme.read_bytes()
    write_cards(tmp_path, cast(BenchmarkSummary, summary))
    assert readme.read_bytes() == first
    card = ModelCard.load(readme)
    assert (card.data.license, card.data.tags, card.data.base_model) == ("apache-2.0", ["sft"], "org/their-base")
    assert card.data.model_name == "my-model"
    assert {r.source_name: (r.dataset_revision, r.metric_value) for r in card.data.eval_results} == {
        "Open LLM Leaderboard": (None, 0.5),
        "pytest-finetune-bench": ("abc123", summary["comparison"]["ifeval"]["finetuned_accuracy"])}
    assert card.text.startswith(USER_TEXT)


def test_card_metadata_huggingface_hub_cannot_read_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("---\nmodel-index:\n- results: []\n---\n" + USER_TEXT)
    with pytest.raises(BenchError) as raised:
        write_cards(tmp_path, golden_benchmark())
    message = str(raised.value)
    assert message.startswith(f"{readme}: huggingface_hub cannot read its metadata") and "\n" not in message
    assert message.endswith("fix or remove that block, then write the cards again")
    assert readme.read_text().endswith(USER_TEXT)  # left as it was


def test_readme_command_writes_every_readme_once(tmp_path: Path) -> None:
    model = golden_model(tmp_path)
    (model / "merged_16bit").mkdir()
    done = run_cli("readme", str(model))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"wrote {model / 'README.md'}", f"wrote {model / 'merged_16bit' / 'README.md'}"]
    before = {p: p.read_bytes() for p in model.rglob("README.md")}
    assert run_cli("readme", str(model)).returncode == 0
    assert {p: p.read_bytes() for p in model.rglob("README.md")} == before


def test_the_chart_bars_match_the_data() -> None:
    summary = golden_summary()
    comps = comparisons(cast(BenchmarkSummary, summary))
    axes = chart_figure(comps).axes[0]
    base_bars, finetuned_bars = axes.containers[:2]
    assert [bar.get_height() for bar in base_bars] == pytest.approx(
        [cast(float, c.base_accuracy) * 100 for c in comps.values()])
    assert [bar.get_height() for bar in finetuned_bars] == pytest.approx(
        [cast(float, c.finetuned_accuracy) * 100 for c in comps.values()])
    stats = summary["comparison"]["ifeval"]["stats"]
    base = summary["comparison"]["ifeval"]["base_accuracy"]
    (segments,) = [c for c in cast("list[LineCollection]", axes.collections) if c.get_segments()]
    (low, high) = sorted(y for _, y in segments.get_segments()[0])
    assert (low, high) == pytest.approx(((base + stats["ci_low"]) * 100, (base + stats["ci_high"]) * 100))
    png = chart_png(comps)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png == chart_png(comps)


# -------------------------------------------------------------------------------------------- report.html


def test_the_report_is_self_contained(tmp_path: Path) -> None:
    model = golden_model(tmp_path)
    summary = cast(BenchmarkSummary, read_summary(model / "benchmarks" / "benchmark.json"))
    page = write_report(tmp_path / REPORT_NAME, summary, "MODEL")
    text = page.read_text()
    assert "<script src" not in text and "<link" not in text and 'src="http' not in text  # nothing from the network
    assert 'src="data:image/png;base64,' in text
    assert "python -m pytest_finetune_bench report MODEL" in text


def golden_flips(model: Path) -> Path:
    return model / "benchmarks" / "fine-tuned" / GOLDEN_RUN / "flips_ifeval.jsonl"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\r", "\x1c", "\x0b", "\x0c"])
def test_model_output_with_unicode_line_separators_is_shown_whole(tmp_path: Path, separator: str) -> None:
    model = golden_model(tmp_path)
    flips, _ = read_flips(golden_flips(model))
    flips[0] = dataclasses.replace(flips[0], finetuned_response=f"first{separator}second")
    write_flips(golden_flips(model), flips)
    done = run_cli("report", str(model))
    assert done.returncode == 0, done.stderr
    page = (model / "benchmarks" / REPORT_NAME).read_bytes().decode("utf-8")
    assert page.count('<tr class="flip"') == 2 and "unreadable" not in page
    assert f"first{printable(separator)}second" in page


def test_unreadable_flip_lines_are_skipped_with_a_note(tmp_path: Path) -> None:
    model = golden_model(tmp_path)
    flips_file = golden_flips(model)
    lines = flips_file.read_text(encoding="utf-8").split("\n")
    bad = ['{"doc_id": "1", "direction": "regressed"}', "[1, 2]", "\xff\xfe not json", lines[1][:40]]
    flips_file.write_text("\n".join([lines[0], *bad]), encoding="utf-8")  # the last line cut short
    done = run_cli("report", str(model))
    assert done.returncode == 0, done.stderr
    page = (model / "benchmarks" / REPORT_NAME).read_text(encoding="utf-8")
    assert page.count('<tr class="flip"') == 1
    assert f"{flips_file}: 4 unreadable lines skipped." in page


def test_a_report_that_cannot_be_made_replaces_the_old_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    model = golden_model(tmp_path)
    page = model / "benchmarks" / REPORT_NAME
    page.write_text("<p>the previous session's results</p>")

    def broken(*args: object) -> bytes:
        raise RuntimeError("chart failed\nsecond line \x1b[2J")

    monkeypatch.setattr("pytest_finetune_bench.report.html.chart_png", broken)
    assert cli.main(["report", str(model)]) == 2
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1 and "\x1b" not in error
    assert f"could not make {page} (RuntimeError: chart failed\\nsecond line \\x1b[2J)" in error
    text = page.read_text(encoding="utf-8")
    assert "previous session" not in text and "could not be made: RuntimeError: chart failed" in text


def _browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        pytest.skip(f"no headless browser: none of {', '.join(BROWSERS)} is on PATH (apt-get install chromium)")
    return found


def _chromium(browser: str, profile: Path, *args: str) -> str:
    """Run headless Chromium once; its stdout (the DOM for --dump-dom)."""
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                           "--virtual-time-budget=5000", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _shown_rows(dom: str) -> list[str]:
    """The flip rows the page did not hide."""
    rows = dom.split('<tr class="flip"')[1:]
    return [row for row in rows if 'hidden=""' not in row.split(">", 1)[0]]


def test_the_report_in_a_real_browser(tmp_path: Path) -> None:
    browser = _browser()
    model = golden_model(tmp_path)
    done = run_cli("report", str(model))
    assert done.returncode == 0, done.stderr
    page = model / "benchmarks" / REPORT_NAME
    assert done.stdout == f"wrote {page}\n"
    screenshot = tmp_path / "report.png"
    _chromium(browser, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1200,1600", page.as_uri())
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    print(f"screenshot of report.html: {screenshot}")
    flips = golden_summary()["comparison"]["ifeval"]["flips"]
    total = flips["regressed"] + flips["improved"]
    assert total == 2

    dom = _chromium(browser, tmp_path / "profile", "--dump-dom", page.as_uri())
    assert len(_shown_rows(dom)) == dom.count('<tr class="flip"') == total
    assert f'id="flip-count">{total} of {total} shown<' in dom
    assert "<td>Instruction-Following (IFEval)</td><td>30.00%</td><td>30.00%</td>" in dom  # the results table

    dom = _chromium(browser, tmp_path / "profile", "--dump-dom", page.as_uri() + "#task=ifeval&direction=regressed")
    shown = _shown_rows(dom)
    assert len(shown) == flips["regressed"] == 1
    assert 'data-direction="regressed"' in shown[0] and "pass→fail" in shown[0]
    assert f'id="flip-count">1 of {total} shown<' in dom
    # The fine-tuned model's capitals fail the lower-case instruction that the base's answer met.
    assert "HELLO WORLD" in shown[0] and "failed instructions: change_case:english_lowercase" in shown[0]
    assert "failed instructions: none" in shown[0]

    dom = _chromium(browser, tmp_path / "profile", "--dump-dom", page.as_uri() + "#direction=improved")
    shown = _shown_rows(dom)
    assert len(shown) == flips["improved"] == 1 and "fail→pass" in shown[0]
    assert "failed instructions: change_case:english_capital" in shown[0]  # the base's lower case failed this one


# ----------------------------------------------------------------------------------------------- CI outputs


def test_the_job_summary_is_appended_after_earlier_steps(tmp_path: Path) -> None:
    job_summary = tmp_path / "step-summary.md"
    job_summary.write_text("## an earlier step\n")
    summary = golden_summary()
    append_step_summary(job_summary, cast(BenchmarkSummary, summary))
    text = job_summary.read_text()
    assert text.startswith("## an earlier step\n### Fine-tune benchmark: model vs /data/model-base\n")
    stats = summary["comparison"]["ifeval"]["stats"]
    interval = f"[{stats['ci_low'] * 100:+.1f}, {stats['ci_high'] * 100:+.1f}]"
    assert (f"| Instruction-Following (IFEval) | 30.00% | 30.00% | → No change | {interval} | 1 | 1↓ 1↑ of 10 |"
            in text)
    assert "| 95% CI (points) | p | Flips |" in text and "| Strict Inst |" in text


def test_a_bad_readme_switch_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--bench-model=anything", "-o", "bench_readme=maybe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ini option bench_readme: 'maybe' is not true or false"])


# ------------------------------------------------------------------------------------- a real (fake) session


@dataclass(frozen=True)
class FakeRun:
    """A finished fake session: the model folder, its benchmarks folder and the session's output."""

    model: Path
    output: Path
    stdout: str
    ci: Path  # the step summary, --bench-json copy and JUnit XML

    @property
    def summary(self) -> dict[str, Any]:
        return read_summary(self.output / "benchmark.json")


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> FakeRun:
    """One fake session with every output on, whose fine-tuned model answers in capitals (flips both ways)."""
    root = tmp_path_factory.mktemp("reports")
    model = make_fake_model(root)
    (model / "merged_4bit").mkdir()  # an export folder without a README: the session creates one
    (model / "README.md").write_text(USER_TEXT)
    (model / "lora" / "training_metrics.json").write_text(json.dumps(TRAINING_METRICS))
    ci = root / "ci"
    ci.mkdir()
    (ci / "step-summary.md").write_text("## an earlier step\n")
    env = {**os.environ, FAKE_ENV: "shout_for=merged_16bit", STEP_SUMMARY_ENV: str(ci / "step-summary.md"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    args = bench_args(model, model / "benchmarks", "--bench-min-gain=0", "--bench-max-drop=100", "--bench-readme",
                      f"--bench-json={ci / 'benchmark.json'}", f"--junitxml={ci / 'junit.xml'}",
                      f"--html={ci / 'pytest-html.html'}", "--self-contained-html")
    # Started from another folder than the rootdir (the model folder, which pytest is given to collect).
    (root / "elsewhere").mkdir()
    done = subprocess.run([sys.executable, "-m", "pytest", str(model), "-v", *args], cwd=root / "elsewhere", env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return FakeRun(model, model / "benchmarks", done.stdout, ci)


@pytest.mark.slow  # starts lm-eval children (a fake model)
def test_a_session_writes_every_output(fake_run: FakeRun) -> None:
    summary = fake_run.summary
    flips = summary["comparison"]["ifeval"]["flips"]
    assert flips["regressed"] > 0 and flips["improved"] > 0
    assert read_summary(fake_run.ci / "benchmark.json") == summary  # --bench-json
    for path in produced_summaries(fake_run.output):  # the summary and the run folder's copy
        validate_file(path)
    assert "### Fine-tune benchmark: model vs " in (fake_run.ci / "step-summary.md").read_text()
    page = (fake_run.output / REPORT_NAME).read_text()
    assert page.count('<tr class="flip"') == flips["regressed"] + flips["improved"]
    assert f"python -m pytest_finetune_bench report {fake_run.model}" in page


@pytest.mark.slow  # starts lm-eval children (a fake model)
def test_each_gate_row_of_the_pytest_html_report_holds_its_comparison_and_chart(fake_run: FakeRun) -> None:
    extras = pytest_html_extras(fake_run.ci / "pytest-html.html")
    gates = {test_id: found for test_id, found in extras.items() if "finetune-bench::" in test_id}
    assert {test_id.rsplit("::", 1)[1] for test_id in gates} == {"improves", "no_regression"}
    comparison = fake_run.summary["comparison"]["ifeval"]
    base = f"{comparison['base_accuracy'] * 100:.2f}%"
    for test_id, found in gates.items():
        tables = [e["content"] for e in found if e["format_type"] == "html"]
        assert len(tables) == 1 and '<table id="bench-comparison">' in tables[0], test_id
        assert f"<td>{html.escape(display_name('ifeval'))}</td><td>{base}</td>" in tables[0], tables[0]
        charts = [e for e in found if e["format_type"] == "image"]
        assert len(charts) == 1 and charts[0]["content"].startswith("data:image/png;base64,iVBOR"), test_id
    assert not any(extras[test_id] for test_id in extras if test_id not in gates)


@pytest.mark.slow  # starts lm-eval children (a fake model)
def test_the_session_writes_every_card_and_leaves_the_fingerprint_alone(fake_run: FakeRun) -> None:
    for folder in ("", "lora", "merged_16bit", "merged_4bit"):
        readme = (fake_run.model / folder / "README.md").read_text()
        assert readme.count("## Benchmark Results") == 1, folder
        assert (fake_run.model / folder / CHART_NAME).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    main = card_body(fake_run.model / "README.md")
    assert main.startswith(USER_TEXT)
    comparison = fake_run.summary["comparison"]["ifeval"]
    for folder in ("", "lora", "merged_16bit", "merged_4bit"):  # the fake session planned lm-eval's own IFEval
        metadata = ModelCard.load(fake_run.model / folder / "README.md").data
        assert [(r.dataset_type, r.metric_value) for r in metadata.eval_results] == [
            (fake_run.summary["task_data"]["ifeval"]["dataset_path"], comparison["finetuned_accuracy"])]
    assert "`merged_16bit`" in main and "via fake" in main  # from benchmark.json, not a fixed line
    assert "dataset: demo_train" in main and "final loss: 1.0815" in main
    fingerprint = fake_run.summary["reproduce"]["identity"]["fine-tuned"]["model_fingerprint"]
    assert model_fingerprint(str(fake_run.model / "merged_16bit"), bench_cache_dir()) == fingerprint


@pytest.mark.slow  # starts lm-eval children (a fake model)
def test_gate_results_carry_the_numbers_as_junit_properties(fake_run: FakeRun) -> None:
    comparison = fake_run.summary["comparison"]["ifeval"]
    stats = comparison["stats"]
    expected = {"base": comparison["base_accuracy"], "fine_tuned": comparison["finetuned_accuracy"],
                "delta": comparison["delta"], "ci_low": stats["ci_low"], "ci_high": stats["ci_high"],
                "p_value": stats["p_value"], "confidence": stats["confidence"]}
    cases = ET.parse(fake_run.ci / "junit.xml").getroot().iter("testcase")
    gates = {f"{case.get('classname')}::{case.get('name')}": case for case in cases}
    assert set(gates) == {"finetune-bench.ifeval::improves", "finetune-bench.ifeval::no_regression"}
    for case in gates.values():
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert properties["metric"] == "prompt_level_strict_acc,none"
        assert {name: float(cast(str, properties[name])) for name in expected} == pytest.approx(expected)


@pytest.mark.slow  # starts lm-eval children (a fake model)
def test_gates_keep_their_names_when_started_outside_the_rootdir(fake_run: FakeRun) -> None:
    rootdir = next(line for line in fake_run.stdout.splitlines() if line.startswith("rootdir: "))
    assert rootdir.removeprefix("rootdir: ") != str(fake_run.model.parent / "elsewhere")
    for gate in ("improves", "no_regression"):
        assert f"\nfinetune-bench::ifeval::{gate} PASSED" in fake_run.stdout  # -v's progress lines
        assert f"\nPASSED finetune-bench::ifeval::{gate}\n" in fake_run.stdout  # the short summary
    assert "/finetune-bench::" not in fake_run.stdout


@pytest.mark.slow  # starts lm-eval children (a fake model)
def test_a_report_failure_never_costs_benchmark_json(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    result, summary = session_with_a_broken(pytester, monkeypatch, "pytest_finetune_bench.report.html:report_html",
                                            "RuntimeError('forced report failure')")
    result.assert_outcomes(passed=2)
    assert summary["status"] == "complete"
    result.stdout.fnmatch_lines(["*could not write */report.html: could not make */report.html "
                                 "(RuntimeError: forced report failure): it now says so*"])
    assert "forced report failure" in (pytester.path / "out" / REPORT_NAME).read_text(encoding="utf-8")
