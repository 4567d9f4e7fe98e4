"""Time to verdict with --bench-early-stop against the full run, side by side on this machine.

    python bench/early_stop_timing.py [--model outputs/my-model] [--gen-kwargs max_gen_toks=24] [--rounds 2]
                                      [--first-run [--task ifeval|mmlu]] [--report FILE]

Both sessions benchmark the same fine-tune on the same IFEval-style prompts (tests/test_early_stop.py's,
real IFEval instructions scored by lm-eval). By default only the fine-tuned run is timed: each session
first computes the base's scores in full, untimed, and caches them. Each session has its own output and
cache folders, so neither reuses the other's answers (response caches live in the cache folder): the full
run answers every prompt, the early-stopping one only what it evaluates. Without --model it uses the test
suite's regressed SmolLM2 (the base with heavy weight noise), built into the test cache on first use.

--first-run times whole first sessions instead, each on caches of its own (no base scores yet, so an
early-stopping session evaluates both models on the same chunks), for a clearly worse fine-tune (the
regressed SmolLM2 against SmolLM2) and a clearly better one (SmolLM2 against the regressed model as its
base). A few minutes on 2 CPU cores. With --task mmlu they run on the bundled MMLU questions (57 subjects ×
2, scored as lm-eval's group aggregate) instead: SmolLM2 LoRA-tuned on those very questions
(bench/mmlu_model.py, built once into the test cache, about ten minutes) against SmolLM2 is the better
fine-tune, and SmolLM2 with the tuned model as its base the worse one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.mmlu_model import mmlu_tuned_outputs  # noqa: E402
from pytest_finetune_bench.compare.sequential import EARLY_STOP  # noqa: E402
from pytest_finetune_bench.demo import demo_data_dir  # noqa: E402
from pytest_finetune_bench.orchestrate.session import BenchSession  # noqa: E402
from pytest_finetune_bench.plan.choices import BenchOptions  # noqa: E402
from pytest_finetune_bench.plan.planner import make_plan  # noqa: E402
from tests.gate_checks import improves_failure, regression_failure  # noqa: E402
from tests.models import perturbed_outputs, smollm2_base, test_cache_root  # noqa: E402
from tests.test_early_stop import ifeval_style_rows  # noqa: E402

TASK = "ifeval"


def session(model: Path, data: Path, work: Path, name: str, gen_kwargs: str, early: bool) -> BenchSession:
    options = BenchOptions(model=str(model), tasks=(TASK,), limit=None, limit_set=True, data_dir=data,
                           gen_kwargs=gen_kwargs, batch_size="5", output=work / name, cache_dir=work / f"cache-{name}",
                           early_stop=early)
    return BenchSession(make_plan(options, Path.cwd(), lambda line: print(f"    {line}", flush=True)),
                        lambda line: print(f"    {line}", flush=True))


def measure(model: Path, data: Path, work: Path, gen_kwargs: str, early: bool, round_: int) -> list[str]:
    name = f"{'early' if early else 'full'}-{round_}"
    # The base's scores first, by a session without early stop: cached, so the timed session only reads them.
    session(model, data, work, name, gen_kwargs, early=False).run("base")
    bench = session(model, data, work, name, gen_kwargs, early)
    bench.run("base")
    start = time.perf_counter()
    finetuned = bench.run("fine-tuned")
    seconds = time.perf_counter() - start
    comp = bench.comparison()[TASK]
    opts = bench.plan.options
    analysis = bench.analysis(TASK)
    improves = improves_failure(comp, opts.min_gain_for(TASK) or 0.0, analysis, opts.confidence)
    no_regression = regression_failure(comp, opts.max_drop_for(TASK), analysis, opts.confidence)
    record = comp.extra.get(EARLY_STOP) or {}
    documents = record.get("documents") or finetuned.results["results"][TASK]["sample_len"]
    evaluated = record.get("evaluated", documents)
    verdict = (f"improves {'failed' if improves else 'passed'}, "
               f"no_regression {'failed' if no_regression else 'passed'}")
    return [str(round_), ("--bench-early-stop" if early else "full run"), f"{evaluated} of {documents}",
            str(finetuned.generated), f"{seconds:.0f} s", verdict]


def first_run(model: Path, base: str | None, task: str, data: Path, work: Path, gen_kwargs: str, early: bool,
              name: str) -> list[str]:
    """One whole first session (both sides, empty caches), timed from planning to the comparison."""
    folder = work / f"{task}-{name}-{'early' if early else 'full'}"
    options = BenchOptions(model=str(model), base=base, tasks=(task,), limit=None, limit_set=True, data_dir=data,
                           gen_kwargs=gen_kwargs, batch_size="5", output=folder / "out",
                           cache_dir=folder / "cache", early_stop=early)
    start = time.perf_counter()
    bench = BenchSession(make_plan(options, Path.cwd(), lambda line: print(f"    {line}", flush=True)),
                         lambda line: print(f"    {line}", flush=True))
    base_run, finetuned = bench.run("base"), bench.run("fine-tuned")
    comp = bench.comparison()[task]
    seconds = time.perf_counter() - start
    opts = bench.plan.options
    analysis = bench.analysis(task)
    no_regression = regression_failure(comp, opts.max_drop_for(task), analysis, opts.confidence)
    record = comp.extra.get(EARLY_STOP) or {}
    documents = record.get("documents") or finetuned.results["results"][task]["sample_len"]
    return [name, "--bench-early-stop" if early else "full run", f"{record.get('evaluated', documents)} of {documents}",
            f"{base_run.generated} + {finetuned.generated}", f"{seconds:.0f} s",
            f"Δ {100 * (comp.delta or 0.0):+.1f} pts, no_regression {'failed' if no_regression else 'passed'}"]


def first_runs(task: str, work: Path, gen_kwargs: str) -> list[str]:
    """Full and early-stopping first sessions of a clearly worse and a clearly better fine-tune of `task`."""
    cache = test_cache_root()
    smollm2 = smollm2_base(cache)
    unchanged = perturbed_outputs(cache, "unchanged-smollm2", smollm2, scale=0.0)
    cases: tuple[tuple[str, Path, str | None], ...]
    if task == "mmlu":
        tuned = mmlu_tuned_outputs(cache, smollm2)
        cases = (("worse", unchanged, str(tuned / "merged_16bit")), ("better", tuned, None))
        data, workload = demo_data_dir(), "the bundled MMLU questions (57 subjects × 2)"
    else:
        regressed = perturbed_outputs(cache, "regressed-smollm2", smollm2, scale=2.0)
        cases = (("worse", regressed, None), ("better", unchanged, str(regressed / "merged_16bit")))
        data, workload = ifeval_data(work), f"{len(ifeval_style_rows())} IFEval-style prompts, {gen_kwargs}"
    rows = [first_run(model, base, task, data, work, gen_kwargs, early, name)
            for name, model, base in cases for early in (False, True)]
    return [f"first sessions (no cached base), {workload}", "",
            "| fine-tune | run | documents evaluated | responses generated (base + fine-tuned) | whole session "
            "| verdict |", "|---|---|---|---|---|---|", *("| " + " | ".join(row) + " |" for row in rows)]


def ifeval_data(work: Path) -> Path:
    """A data folder holding tests/test_early_stop.py's IFEval-style prompts as the ifeval task's data."""
    data = work / "data"
    (data / "ifeval").mkdir(parents=True, exist_ok=True)
    (data / "ifeval" / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ifeval_style_rows()))
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an outputs/<name> folder (default: the tests' regressed SmolLM2)")
    parser.add_argument("--gen-kwargs", default="max_gen_toks=24")
    parser.add_argument("--work", type=Path, help="where to put both sessions (default: a temporary folder)")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of sessions, the order alternating")
    parser.add_argument("--first-run", action="store_true", help="time whole first sessions, both models")
    parser.add_argument("--task", choices=("ifeval", "mmlu"), default="ifeval", help="the task of --first-run")
    parser.add_argument("--report", type=Path)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="early-stop-bench-"))
    if args.first_run:
        lines = first_runs(args.task, work, args.gen_kwargs)
    else:
        cache = test_cache_root()
        model = args.model or perturbed_outputs(cache, "regressed-smollm2", smollm2_base(cache), scale=2.0)
        data = ifeval_data(work)
        # Alternating which goes first spreads a busy neighbour's effect over both.
        rows = [measure(model, data, work, args.gen_kwargs, early, round_) for round_ in range(1, args.rounds + 1)
                for early in ((False, True) if round_ % 2 else (True, False))]
        lines = [f"{model.name}, {len(ifeval_style_rows())} IFEval-style prompts, {args.gen_kwargs}, the base's "
                 "run untimed", "", "| round | run | documents evaluated | responses generated | fine-tuned run "
                 "| verdict |", "|---|---|---|---|---|---|", *("| " + " | ".join(row) + " |" for row in rows)]
    print("\n".join(lines))
    if args.report:
        args.report.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
