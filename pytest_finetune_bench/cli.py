"""Command line: `python -m pytest_finetune_bench` (also installed as `pytest-finetune-bench`).

`demo` fine-tunes SmolLM2-135M-Instruct for a few minutes on CPU, writes it as `outputs/demo-smollm2`
(the layout an Unsloth run leaves) and benchmarks it against its base with the plugin, all offline.
`summary` rebuilds benchmark.json from the run files on disk. `init` is the guided set-up (init/).
`power` says how many documents a gate needs (compare/power.py).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.power import DEFAULT_MARGIN, TARGET_POWER, at_level, plan_documents
from pytest_finetune_bench.demo.build import DEFAULT_STEPS
from pytest_finetune_bench.plan.choices import parse_confidence, parse_points
from pytest_finetune_bench.plan.gates import (
    DEFAULT_CONFIDENCE,
    IMPROVES,
    KINDS,
    NO_REGRESSION,
    POINTS_PER_FRACTION,
    RULE_PROVEN,
    RULES,
    Gate,
)
from pytest_finetune_bench.plan.option_table import MAX_DROP, MIN_GAIN, option
from pytest_finetune_bench.report.history import FORMATS as HISTORY_FORMATS
from pytest_finetune_bench.report.history import history_rows, plot_history, render, summary_files
from pytest_finetune_bench.run.watchdog import format_duration
from pytest_finetune_bench.store.files import reading
from pytest_finetune_bench.store.summaries import SUMMARY
from pytest_finetune_bench.text import printable

PROG = "python -m pytest_finetune_bench"
REBUILD_ADVICE = "rebuild it with the `summary` command, or run the benchmark again"
SCRIPT = "pytest-finetune-bench"  # the console script: the same commands
DEMO_GEN_KWARGS = "max_gen_toks=256"  # IFEval's default 1280 tokens is minutes per prompt on a CPU
# All 24 bundled IFEval prompts, not the test suite's 5: with 5, one prompt is 20 points, and the first five
# (case changes, quotes, an end phrase) are the ones a 135M model learns least in 30 steps.
DEMO_LIMIT = "24"
LM_EVAL_COMMAND = "lm-eval"
POWER_COMMAND = "power"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line that points at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = _Parser(
        prog=prog,
        description=("Helpers for pytest-finetune-bench: the guided set-up, the offline demo, and results rebuilt "
                     "from disk."),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="fine-tune the bundled SmolLM2 demo model and benchmark it against its base",
        description=(
            "Fine-tune SmolLM2-135M-Instruct with LoRA on a small bundled instruction set (a few minutes on "
            "CPU, done once and reused), write it to OUTPUTS/demo-smollm2 (lora/, merged_16bit/), then run "
            "pytest with --bench-model on it: the 24 bundled IFEval prompts, base vs fine-tuned, offline."
        ),
    )
    demo.add_argument("--outputs", type=Path, default=Path("outputs"), metavar="DIR",
                      help="folder that receives demo-smollm2/ (default: ./outputs)")
    demo.add_argument("--no-run", action="store_true", help="only build the demo model; do not run the benchmark")
    demo.add_argument("--steps", type=_positive_int, default=DEFAULT_STEPS, metavar="N",
                      help=f"LoRA training steps (default: {DEFAULT_STEPS}; a different count rebuilds the model)")
    commands.add_parser(
        LM_EVAL_COMMAND,
        help="the lm_eval CLI with its scorers seeded (the reproduce commands in benchmark.json use it)",
        description=(
            "Run lm-eval's own command line (`lm_eval ARGS`) with langdetect seeded first, as the plugin scores: "
            "IFEval's language checks are random otherwise (lm-eval issue #4213)."
        ),
    )
    commands.add_parser(
        "data-dir",
        help="print the bundled offline benchmark data folder (for --bench-data-dir)",
        description="Print the absolute path of the bundled demo benchmark data, for --bench-data-dir.",
    )
    _add_model_arguments(commands.add_parser(
        "summary",
        help="rebuild benchmarks/benchmark.json from the newest complete run on disk",
        description=(
            "Rebuild MODEL/benchmarks/benchmark.json from the newest complete run folder "
            "(benchmarks/fine-tuned/<timestamp>/) and the base results it used, with the statistics and flips "
            "a session computes. Empty, failed and partial run folders are skipped. Prints the folders used."
        ),
    ))
    _add_model_arguments(commands.add_parser(
        "readme",
        help="write the Benchmark Results section into the model's README files",
        description=(
            "Write a 'Benchmark Results' section (table, IFEval detail, chart, settings, training facts) from "
            "MODEL/benchmarks/benchmark.json into MODEL/README.md and the README.md of each of lora/, "
            "merged_16bit/, merged_4bit/, gguf/ that exists. Only the text between the section's markers changes; "
            "running it again changes nothing."
        ),
    ))
    _add_model_arguments(commands.add_parser(
        "report",
        help="write benchmarks/report.html (results, chart, flipped prompts) from benchmark.json",
        description=(
            "Write MODEL/benchmarks/report.html from MODEL/benchmarks/benchmark.json: one self-contained page with "
            "the results table, the chart, the settings, the reproduce commands and the flipped documents (prompt "
            "and both answers), filterable by task and direction."
        ),
    ))
    _add_init_arguments(commands.add_parser(
        "init",
        help="guided set-up: find the experiments under outputs/, ask the settings, write them to the pytest config",
        description=(
            "Find the fine-tunes under OUTPUTS (outputs/<name>/ with lora/, merged_16bit/, merged_4bit/, gguf/), "
            "ask which to benchmark, the suite (with its time on this machine), the backend and the gates' "
            "thresholds, write them as bench_* keys into the project's pytest configuration (pytest.ini, "
            "pyproject.toml [tool.pytest.ini_options] or tox.ini [pytest], keeping everything else) and, if asked, "
            "a GitHub Actions workflow; then print the command to run. Each question has a flag; --yes takes the "
            "defaults of the others, without a terminal."
        ),
    ))
    history = commands.add_parser(
        "history",
        help="every benchmarked session over time and across experiments, as a table, CSV or JSON",
        description=(
            "Read every benchmark.json under PATHS (model folders, their benchmarks/ folders, folders of "
            "experiments such as outputs/, or the files themselves), including each earlier session's "
            "benchmarks/fine-tuned/<timestamp>/benchmark.json, into one table: a row per session and task."
        ),
    )
    history.add_argument("paths", nargs="*", type=Path, default=[Path(".")], metavar="PATH",
                         help="where to look (default: the current folder)")
    history.add_argument("--format", choices=HISTORY_FORMATS, default="table",
                         help="table (default), markdown, csv or json")
    history.add_argument("--plot", type=Path, default=None, metavar="FILE",
                         help="also draw Δ per experiment and task over time, with intervals (PNG, SVG or PDF)")
    _add_power_arguments(commands.add_parser(
        POWER_COMMAND,
        help="how many documents a gate needs to reach the right verdict (sample-size planning)",
        description=(
            "The least number of documents at which a gate on a pass/fail metric reaches the verdict the true "
            "gain deserves with the chosen chance (80%): estimated from seeded simulated sessions, each decided "
            "by the gate's own rule on the paired interval the session uses. Prints the number and what it assumes."
        ),
    ))
    return parser


def _add_power_arguments(command: argparse.ArgumentParser) -> None:
    """The gate (kind, rule, threshold, level) and what the plan must assume about the models."""
    command.add_argument("--base", required=True, type=_share, metavar="SCORE",
                         help="the base model's score on the task: 0.62, or 62 (a value above 1 is a percent)")
    command.add_argument("--kind", choices=KINDS, default=NO_REGRESSION, help="the gate [default: no_regression]")
    command.add_argument("--rule", choices=RULES, default=RULE_PROVEN, help="its rule [default: proven]")
    command.add_argument("--min-gain", type=_points, default=float(MIN_GAIN), metavar="POINTS",
                         help=f"improves: the minimum gain [default: {MIN_GAIN}]")
    command.add_argument("--max-drop", type=_points, default=float(MAX_DROP), metavar="POINTS",
                         help=f"no_regression: the allowed drop [default: {MAX_DROP}]")
    command.add_argument("--gain", type=_points, default=None, metavar="POINTS",
                         help=f"the true gain to plan for [default: improves: the minimum gain + "
                              f"{100 * DEFAULT_MARGIN:g}; no_regression: 0, no change]")
    command.add_argument("--discordance", type=_share, default=None, metavar="SHARE",
                         help="the share of documents the two models disagree on, e.g. 0.2 (from an earlier run's "
                              "improved + regressed documents) [default: half of what two independent models "
                              "with these scores would disagree on]")
    command.add_argument("--confidence", type=_confidence, default=DEFAULT_CONFIDENCE, metavar="LEVEL",
                         help=f"the statistical rules' level [default: {DEFAULT_CONFIDENCE}]")
    command.add_argument("--gates", type=_positive_int, default=1, metavar="N",
                         help="statistical gates in the session (Holm): planned at the strictest level, "
                              "1 - (1 - confidence) / N [default: 1]")
    command.add_argument("--power", type=_share, default=TARGET_POWER, metavar="SHARE",
                         help=f"the chance of the right verdict to reach [default: {TARGET_POWER}]")


def _add_init_arguments(command: argparse.ArgumentParser) -> None:
    """init's flags: one per question, and --yes for the defaults of the rest."""
    command.add_argument("-y", "--yes", action="store_true",
                         help="take the default of every question not answered by a flag; needs no terminal")
    command.add_argument("--outputs", type=Path, default=Path("outputs"), metavar="DIR",
                         help="where the experiments are (default: ./outputs)")
    command.add_argument("--experiments", metavar="LIST",
                         help="which to benchmark: numbers or names, comma-separated, or all [default: every one "
                              "with a merged model or GGUF export]")
    command.add_argument("--base", metavar="PATH_OR_ID",
                         help="base model to compare against, or none [default: the one lora/ names; asked when "
                              "it names none]")
    command.add_argument("--suite", metavar="NAME",
                         help="test, quick, core or full [default: quick, or test where quick would take over an "
                              "hour on this machine]")
    command.add_argument("--backend", metavar="NAME",
                         help=f"auto, hf, vllm, ollama or openai [default: {option('backend').default}]")
    command.add_argument("--base-url", metavar="URL", help="address of the ollama/openai server")
    command.add_argument("--target-tasks", metavar="TASKS",
                         help="comma-separated tasks that must improve [default: ifeval]")
    command.add_argument("--min-gain", metavar="POINTS",
                         help="points the target tasks must gain: N or TASK=N, space-separated "
                              f"[default: {option('min-gain').default}]")
    command.add_argument("--max-drop", metavar="POINTS",
                         help="points any task may lose: N or TASK=N, space-separated "
                              f"[default: {option('max-drop').default}]")
    command.add_argument("--ci", action=argparse.BooleanOptionalAction, default=None,
                         help="also write .github/workflows/bench.yml [default: no]")
    command.add_argument("--config", type=Path, metavar="FILE",
                         help="the file to write [default: the one pytest reads here: pytest.ini, pyproject.toml "
                              "or tox.ini; a new pytest.ini when there is none]")


def _add_model_arguments(command: argparse.ArgumentParser) -> None:
    """MODEL and --output, shared by the commands that read a model's results."""
    command.add_argument("model", nargs="?", type=Path, default=Path("."), metavar="MODEL",
                         help="the outputs/<name> folder that was benchmarked (default: the current folder)")
    command.add_argument("--output", type=Path, default=None, metavar="DIR",
                         help="the benchmarks folder, when --bench-output put it elsewhere (default: MODEL/benchmarks)")


def _share(text: str) -> float:
    """A share: 0.62, 62 or 62% (percent)."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share: use e.g. 0.62 or 62%") from None
    value = value / 100 if value > 1 else value
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share: use a value from 0 to 1, or a percent")
    return value


def _points(text: str) -> float:
    try:
        return parse_points(text)
    except BenchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _confidence(text: str) -> float:
    try:
        return parse_confidence(text)
    except BenchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def pytest_args(model_dir: Path, data_dir: Path) -> list[str]:
    """The pytest command line that benchmarks the demo model.

    The model folder is also the path to collect, so that only the plugin's gate tests run, never the
    tests of whatever project the command is started in. Values are joined with `=`: a path given as
    a separate word would count as a path to collect and move pytest's rootdir.
    """
    return [
        str(model_dir),
        f"--bench-model={model_dir}",
        "--bench-suite=test",
        f"--bench-limit={DEMO_LIMIT}",
        f"--bench-data-dir={data_dir}",
        f"--bench-gen-kwargs={DEMO_GEN_KWARGS}",
        "-p", "no:cacheprovider",
    ]


class PhaseClock:
    """How long each phase of the demo took, said as it ends and summed up at the end."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, float]] = []
        self._started = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.phases.append((name, now - self._started))
        self._started = now
        print(f"[demo] {name}: {format_duration(self.phases[-1][1])}", flush=True)

    def total_line(self) -> str:
        parts = ", ".join(f"{name} {format_duration(seconds)}" for name, seconds in self.phases)
        return f"[demo] total {format_duration(sum(s for _, s in self.phases))} ({parts})"


def run_demo(outputs: Path, *, run: bool, steps: int) -> int:
    """Build the demo model, then (when `run`) benchmark it; returns the exit code."""
    from pytest_finetune_bench.demo.build import BENCH_DATA_DIR, build_demo, checked_demo_dir, prepare_base

    checked_demo_dir(outputs)  # before minutes of work, not after
    clock = PhaseClock()
    base = prepare_base()
    clock.lap("base model")
    model_dir = build_demo(outputs, steps=steps, base=base)
    clock.lap("fine-tune")
    args = pytest_args(model_dir, BENCH_DATA_DIR)
    if not run:
        print(f"Benchmark it with:\n  pytest {shlex.join(args)}")
        return 0
    print(f"Running: pytest {shlex.join(args)}", flush=True)
    started_ns = time.time_ns()
    # A process of its own, as users run it: pytest starts clean of the modules training imported.
    code = subprocess.call([sys.executable, "-m", "pytest", *args])
    clock.lap("benchmark")
    print(clock.total_line())
    return _report_outcome(code, model_dir / "benchmarks" / "benchmark.json", started_ns)


def _report_outcome(code: int, summary: Path, started_ns: int) -> int:
    """Point at the results only when this run wrote them; a benchmark that did not finish fails the demo."""
    written = summary.is_file() and summary.stat().st_mtime_ns >= started_ns
    if not written:
        print(f"{PROG}: error: the benchmark wrote no results (pytest exit code {code}); see its output above",
              file=sys.stderr)
        return code or 1
    print(f"Results are in {summary}")
    if code != 0:
        print(f"{PROG}: the benchmark's gates did not all pass (pytest exit code {code})", file=sys.stderr)
    return code


def data_dir() -> Path:
    """The bundled offline benchmark data folder."""
    from pytest_finetune_bench.demo.build import BENCH_DATA_DIR

    return BENCH_DATA_DIR


def run_lm_eval_cli(arguments: Sequence[str]) -> int:
    """`lm_eval ARGUMENTS`, in this process, with the scorers seeded as in the plugin's own runs."""
    from lm_eval.__main__ import cli_evaluate

    from pytest_finetune_bench.run.child import seed_scorers

    seed_scorers()
    sys.argv = ["lm_eval", *arguments]
    cli_evaluate()
    return 0


def rebuild_summary(model: Path, output: Path | None) -> int:
    """`summary`: write benchmark.json again from disk and say what it was built from."""
    from pytest_finetune_bench.report.from_disk import benchmarks_dir, write_rebuilt_summary

    folder = benchmarks_dir(model, output)
    with reading(folder / SUMMARY, "run the benchmark again"):
        written, sources = write_rebuilt_summary(folder)
    for line in sources.describe():
        print(line)
    print(f"wrote {written}")
    return 0


def write_readmes(model: Path, output: Path | None) -> int:
    """`readme`: the results section in every README of the model, from its benchmark.json."""
    from pytest_finetune_bench.report.card import write_cards
    from pytest_finetune_bench.report.from_disk import benchmarks_dir, latest_summary

    folder = benchmarks_dir(model, output)
    with reading(folder / SUMMARY, REBUILD_ADVICE):
        written = write_cards(model, latest_summary(folder))
    for readme in written:
        print(f"wrote {readme}")
    return 0


def write_html_report(model: Path, output: Path | None) -> int:
    """`report`: benchmarks/report.html from the latest complete session's benchmark.json."""
    from pytest_finetune_bench.report.from_disk import benchmarks_dir, latest_summary
    from pytest_finetune_bench.report.html import REPORT_NAME, write_report

    folder = benchmarks_dir(model, output)
    with reading(folder / SUMMARY, REBUILD_ADVICE):
        written = write_report(folder / REPORT_NAME, latest_summary(folder), str(model))
    print(f"wrote {written}")
    return 0


def show_history(paths: Sequence[Path], fmt: str, plot: Path | None) -> int:
    """Print the history of the sessions under `paths`; with `plot`, draw it too."""
    notes: list[str] = []
    rows = history_rows(summary_files(paths), notes)
    for note in notes:
        print(printable(note), file=sys.stderr)
    print(render(rows, fmt).rstrip("\n"))  # render escapes the names it shows
    if plot is not None:
        print(f"wrote {plot_history(rows, plot)}", file=sys.stderr)
    return 0


def plan_power(args: argparse.Namespace) -> int:
    """`power`: the documents one gate needs, and the assumptions behind the number."""
    threshold = args.min_gain if args.kind == IMPROVES else args.max_drop
    gate = at_level(Gate("task", args.kind, threshold / POINTS_PER_FRACTION, rule=args.rule),
                    args.confidence, args.gates)
    gain = None if args.gain is None else args.gain / POINTS_PER_FRACTION
    plan = plan_documents(gate, args.base, gain, args.discordance, target=args.power)
    family = (f"; Holm's strictest level for {args.gates} gates at {100 * args.confidence:.4g}%"
              if gate.statistical and args.gates > 1 else "")
    print(f"gate: {gate.describe()}{family}")
    print(f"needs: {plan.documents_text()}")
    print(f"assuming: {plan.assumptions()}")
    print(f"target: {plan.target_text()}")
    note = plan.note()
    if note is not None:
        print(f"note: {note}")
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == POWER_COMMAND:
        return plan_power(args)
    if args.command == "history":
        return show_history(args.paths, args.format, args.plot)
    if args.command == "init":
        from pytest_finetune_bench.init.wizard import run_init

        return run_init(args, Path.cwd())
    if args.command == "data-dir":
        print(data_dir())
        return 0
    if args.command == "summary":
        return rebuild_summary(args.model, args.output)
    if args.command == "readme":
        return write_readmes(args.model, args.output)
    if args.command == "report":
        return write_html_report(args.model, args.output)
    return run_demo(args.outputs, run=not args.no_run, steps=args.steps)


def script() -> int:
    """Entry point of the `pytest-finetune-bench` console script."""
    return main(prog=SCRIPT)


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Entry point of `python -m pytest_finetune_bench`; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [LM_EVAL_COMMAND] and argv[1:2] not in (["-h"], ["--help"]):
        # Everything after it is lm-eval's to parse, --help included.
        return run_lm_eval_cli(argv[1:])
    args = build_parser(prog).parse_args(argv)
    try:
        return _dispatch(args)
    except BenchError as exc:
        print(f"{prog}: error: {printable(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130

