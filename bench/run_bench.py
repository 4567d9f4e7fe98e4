"""Where a benchmark session spends its time: the pieces, measured one by one on this machine.

    python bench/run_bench.py [--model outputs/demo-smollm2] [--report FILE]

Without --model it benchmarks the demo fine-tune (`python -m pytest_finetune_bench demo` builds it
once, a few minutes on a CPU; an existing build in --outputs is reused). It measures, with the
bundled offline data, the demo's 5 IFEval prompts and answers of up to 64 tokens (the demo allows 256:
`--gen-kwargs max_gen_toks=256`):

1. building lm-eval's task index (what the plugin checks task names against; built once per lm-eval
   release and cached, so this is what a first session on an empty cache folder pays),
2. loading the fine-tuned model with transformers (a fresh Python process, imports included),
3. a first session: the base run and the fine-tuned run (each an lm-eval child process, split into
   its phases), then the comparison with its paired statistics,
4. a second, identical session: the base from the base-score cache, the fine-tuned run from lm-eval's
   response cache,

and prints a Markdown table (also written to --report). Everything goes to a temporary folder (or
--work), so the user's caches are neither used nor changed. About 3 to 6 minutes on 2 CPU cores
(5 to 9 with max_gen_toks=256), plus the demo build when there is none yet.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_finetune_bench.demo.build import BENCH_DATA_DIR, build_demo  # noqa: E402
from pytest_finetune_bench.orchestrate.session import BenchSession  # noqa: E402
from pytest_finetune_bench.plan.choices import BenchOptions  # noqa: E402
from pytest_finetune_bench.plan.planner import make_plan  # noqa: E402
from pytest_finetune_bench.plan.tasks import TaskCatalog  # noqa: E402

DEMO_GEN_KWARGS = "max_gen_toks=256"  # what `python -m pytest_finetune_bench demo` uses
# A quarter of the demo's answer length keeps this script within about 5 minutes on 2 shared cores;
# generation time grows about linearly with it (--gen-kwargs max_gen_toks=256 measures the demo's).
DEFAULT_GEN_KWARGS = "max_gen_toks=64"

T = TypeVar("T")


@dataclass
class Phases:
    """Timestamps of one model run, taken from the plugin's own progress lines."""

    marks: dict[str, float] = field(default_factory=dict)
    generated: str = ""

    def note(self, line: str, now: float) -> None:
        for key, needle in (("start", ": evaluating "), ("loading", ": loading model"),
                            ("requests", " requests to run: "), ("done", ": done in ")):
            if needle in line:
                self.marks.setdefault(key, now)
        if "% samples" in line or "samples (" in line:
            self.marks["last_sample"] = now
        if ": done in " in line:
            self.generated = line.rsplit("(", 1)[-1].rstrip(")")

    def span(self, first: str, last: str) -> float | None:
        if first in self.marks and last in self.marks:
            return self.marks[last] - self.marks[first]
        return None


class Recorder:
    """The `say` of a BenchSession: echoes lines and timestamps each run's phases."""

    def __init__(self) -> None:
        self.runs: dict[str, Phases] = {}
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        now = time.perf_counter()
        self.lines.append(line)
        print(f"    {line}", flush=True)
        for role in ("base", "fine-tuned"):
            if line.startswith(f"[bench] {role}:"):
                self.runs.setdefault(role, Phases()).note(line, now)


@dataclass
class Row:
    piece: str
    seconds: float | None
    note: str = ""


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """What `call` returns, and how many seconds it took."""
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


def options(model: Path, work: Path, limit: int, gen_kwargs: str) -> BenchOptions:
    return BenchOptions(
        model=str(model),
        suite="test",
        limit=limit,
        limit_set=True,
        data_dir=BENCH_DATA_DIR,
        gen_kwargs=gen_kwargs,
        output=work / "benchmarks",
        cache_dir=work / "cache",
    )


def run_session(
    model: Path, work: Path, limit: int, gen_kwargs: str
) -> tuple[BenchSession, Recorder, dict[str, float]]:
    """One benchmark session as the plugin runs it, without pytest around it."""
    say = Recorder()
    times: dict[str, float] = {}
    plan, times["setup"] = timed(lambda: make_plan(options(model, work, limit, gen_kwargs), Path.cwd(), say))
    session = BenchSession(plan, say)
    _, times["base"] = timed(lambda: session.run("base"))
    _, times["fine-tuned"] = timed(lambda: session.run("fine-tuned"))
    _, times["comparison"] = timed(session.comparison)
    session.write_summary()
    return session, say, times


def model_load_seconds(merged: Path) -> tuple[float, float]:
    """(imports, loading) of the merged model in a fresh Python process, as the lm-eval child starts."""
    folder = repr(str(merged))
    code = (
        "import time; t0 = time.perf_counter(); import torch, transformers; t1 = time.perf_counter(); "
        f"transformers.AutoModelForCausalLM.from_pretrained({folder}, dtype=torch.float32); "
        f"transformers.AutoTokenizer.from_pretrained({folder}); t2 = time.perf_counter(); "
        "print(t1 - t0, t2 - t1)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    imports, load = (float(x) for x in out.split()[-2:])
    return imports, load


def run_rows(label: str, phases: Phases | None, total: float) -> list[Row]:
    """The run's total and its phases, from the timestamps of the plugin's progress lines."""
    if phases is None or "loading" not in phases.marks:
        return [Row(f"{label}: whole run", total, "no lm-eval child: scores from the base-score cache")]
    rows = [
        Row(f"{label}: whole run", total, phases.generated),
        Row(f"{label}: child start, imports, task loading", phases.span("start", "loading")),
    ]
    if "requests" in phases.marks and "last_sample" in phases.marks:
        rows.append(Row(f"{label}: model load, requests built", phases.span("loading", "requests")))
        rows.append(Row(f"{label}: generation", phases.span("requests", "last_sample")))
        rows.append(Row(f"{label}: scoring, writing results", phases.span("last_sample", "done")))
    else:
        rows.append(Row(f"{label}: model load, answers read from the response cache, scoring",
                        phases.span("loading", "done")))
    return rows


def base_name(session: BenchSession) -> str:
    """The base model's folder or Hub name, as the report's header shows it."""
    base = session.plan.base
    return Path(base.model).name if base else "none"


def markdown(rows: list[Row], header: str) -> str:
    lines = [header, "", "| Piece | Seconds | Note |", "|---|---:|---|"]
    for row in rows:
        seconds = "" if row.seconds is None else f"{row.seconds:.1f}"
        lines.append(f"| {row.piece} | {seconds} | {row.note} |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        gpu, threads = "unknown", 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores ({threads} torch threads), {gpu}; "
            f"Python {platform.python_version()}; load average {load:.1f} at the start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="outputs/<name> folder to measure (default: the demo build)")
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="where the demo is built or reused")
    parser.add_argument("--limit", type=int, default=5, help="IFEval prompts per run (default: 5, the test suite)")
    parser.add_argument("--gen-kwargs", default=DEFAULT_GEN_KWARGS,
                        help=f"lm-eval generation settings (default: {DEFAULT_GEN_KWARGS}; "
                        f"the demo uses {DEMO_GEN_KWARGS})")
    parser.add_argument("--work", type=Path, help="folder for outputs and caches (default: a new temporary one)")
    parser.add_argument("--report", type=Path, help="also write the Markdown table to this file")
    args = parser.parse_args(argv)

    rows: list[Row] = []
    started = time.perf_counter()
    header = f"Machine: {machine()}"
    if args.model is None:
        print("demo model:", flush=True)
        said: list[str] = []

        def say(line: str) -> None:
            said.append(line)
            print(f"    {line}", flush=True)

        model, seconds = timed(lambda: build_demo(args.outputs, say=say))
        reused = any(line.startswith("Reusing") for line in said)
        rows.append(Row("demo build (once per machine)", None if reused else seconds,
                        "an earlier build was reused" if reused else "LoRA fine-tune and merge"))
    else:
        model = args.model.resolve()
    merged = model / "merged_16bit"
    work = args.work or Path(tempfile.mkdtemp(prefix="pfb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}", flush=True)

    print("task index:", flush=True)
    # A cache folder of its own: the index is built, not read from the sessions' cache (nor put there for them).
    index, seconds = timed(lambda: TaskCatalog(work / "index-only-cache").index)
    rows.append(Row("lm-eval task index, built afresh (parent; cached per lm-eval release)", seconds,
                    f"{len(index)} tasks, groups and tags"))

    print("model load:", flush=True)
    imports, load = model_load_seconds(merged)
    rows.append(Row("import torch + transformers (fresh process)", imports, ""))
    rows.append(Row("load the merged model + tokenizer", load, f"{merged.name}, float32"))

    print("first session (nothing cached):", flush=True)
    session, say, times = run_session(model, work, args.limit, args.gen_kwargs)
    rows.append(Row("session set-up: task index, offline overlay, chat template check", times["setup"], ""))
    rows += run_rows("base run", say.runs.get("base"), times["base"])
    rows += run_rows("fine-tuned run", say.runs.get("fine-tuned"), times["fine-tuned"])
    rows.append(Row("comparison: paired interval, McNemar, flips", times["comparison"], ""))
    first_total = sum(times.values())
    rows.append(Row("**first session, total**", first_total, ""))

    print("second session (same settings: caches):", flush=True)
    session, say, times = run_session(model, work, args.limit, args.gen_kwargs)
    rows.append(Row("session set-up", times["setup"], ""))
    rows += run_rows("base run, cached", say.runs.get("base"), times["base"])
    rows += run_rows("fine-tuned run, response cache", say.runs.get("fine-tuned"), times["fine-tuned"])
    rows.append(Row("**second session, total**", sum(times.values()), ""))

    header += (f"\n\nModel: {model.name} (base {base_name(session)}); "
               f"IFEval, {args.limit} prompts, {args.gen_kwargs}, bundled offline data; "
               f"whole script {time.perf_counter() - started:.0f} s")
    table = markdown(rows, header)
    print()
    print(table)
    if args.report:
        args.report.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
