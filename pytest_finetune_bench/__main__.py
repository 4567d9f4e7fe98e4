"""Command line: `python -m pytest_finetune_bench demo|data-dir`.

`demo` fine-tunes SmolLM2-135M-Instruct for a few minutes on CPU, writes it as `outputs/demo-smollm2`
(the layout an Unsloth run leaves) and benchmarks it against its base with the plugin, all offline.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pytest_finetune_bench.errors import BenchError

PROG = "python -m pytest_finetune_bench"
DEMO_GEN_KWARGS = "max_gen_toks=256"  # IFEval's default 1280 tokens is minutes per prompt on a CPU
# All 24 bundled IFEval prompts, not the test suite's 5: with 5, one prompt is 20 points, and the first five
# (case changes, quotes, an end phrase) are the ones a 135M model learns least in 30 steps.
DEMO_LIMIT = "24"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line that points at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for both subcommands."""
    parser = _Parser(
        prog=PROG,
        description="Helpers for pytest-finetune-bench: build and run the offline demo.",
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
    demo.add_argument("--steps", type=_positive_int, default=30, metavar="N",
                      help="LoRA training steps (default: 30; a different count rebuilds the model)")
    commands.add_parser(
        "data-dir",
        help="print the bundled offline benchmark data folder (for --bench-data-dir)",
        description="Print the absolute path of the bundled demo benchmark data, for --bench-data-dir.",
    )
    return parser


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
    tests of whatever project the command is started in.
    """
    return [
        str(model_dir),
        "--bench-model", str(model_dir),
        "--bench-suite", "test",
        "--bench-limit", DEMO_LIMIT,
        "--bench-data-dir", str(data_dir),
        "--bench-gen-kwargs", DEMO_GEN_KWARGS,
        "-p", "no:cacheprovider",
    ]


def run_demo(outputs: Path, *, run: bool, steps: int) -> int:
    """Build the demo model, then (when `run`) benchmark it; returns the exit code."""
    from pytest_finetune_bench.demo import BENCH_DATA_DIR, build_demo

    model_dir = build_demo(outputs, steps=steps)
    if not run:
        print(f"Benchmark it with:\n  pytest {shlex.join(pytest_args(model_dir, BENCH_DATA_DIR))}")
        return 0
    import pytest

    args = pytest_args(model_dir, BENCH_DATA_DIR)
    print(f"Running: pytest {shlex.join(args)}", flush=True)
    code = int(pytest.main(args))
    print(f"Results are in {model_dir / 'benchmarks'}")
    return code


def data_dir() -> Path:
    """The bundled offline benchmark data folder."""
    from pytest_finetune_bench.demo import BENCH_DATA_DIR

    return BENCH_DATA_DIR


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m pytest_finetune_bench`; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "data-dir":
            print(data_dir())
            return 0
        return run_demo(args.outputs, run=not args.no_run, steps=args.steps)
    except BenchError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
