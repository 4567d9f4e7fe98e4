"""Error rates and time to verdict of early stopping, simulated: the numbers behind docs/performance.md.

    python bench/early_stop_sim.py [--replicates 1000] [--documents 541] [--chunk 25] [--report FILE]

Each row is one gate on a population of paired pass/fail documents with a known Δ (IFEval's 541
prompts by default), evaluated in `--replicates` random orders, looked at after every chunk and
stopped at the first decisive look. It compares the anytime-valid confidence sequence early stopping
uses (compare/sequential.py) with the fixed-n percentile bootstrap monitored the same way. Error:
the run stopped on the wrong verdict. numpy only; a minute or two on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_finetune_bench.plan.gates import IMPROVES, NO_REGRESSION, Gate  # noqa: E402
from tests.sequential_sim import METHOD_BOOTSTRAP, METHOD_SEQUENCE, Scenario, simulate  # noqa: E402


def scenarios(documents: int) -> list[Scenario]:
    """Gates at the default thresholds (min gain 2, max drop 5 points), from clearly settled to on the bar."""
    rows = []
    for points in (-25, -15, -10, -5):
        rows.append(_scenario(NO_REGRESSION, 0.05, points, documents))
    rows.append(_scenario(NO_REGRESSION, 0.05, 0, documents))
    for points in (25, 10, 2):
        rows.append(_scenario(IMPROVES, 0.02, points, documents))
    return rows


def _scenario(gate: str, threshold: float, points: int, documents: int) -> Scenario:
    """A population with Δ = `points` (as near as whole documents allow) and 10% of documents flipping each way."""
    change = round(documents * points / 100)
    base_flips = documents // 10
    improved, regressed = base_flips + max(change, 0), base_flips + max(-change, 0)
    bar = "min gain" if gate == IMPROVES else "max drop"
    name = f"{gate} ({bar} {threshold * 100:g}), Δ {100 * (improved - regressed) / documents:+.1f}"
    return Scenario(name, Gate("task", gate, threshold), documents, improved, regressed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--documents", type=int, default=541)
    parser.add_argument("--chunk", type=int, default=25)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--grid", type=int, default=801, help="candidate means (the plugin uses 4001)")
    parser.add_argument("--report", type=Path)
    args = parser.parse_args(argv)
    lines = [
        f"{args.replicates} random orders per row, {args.documents} documents, a look every {args.chunk}, "
        f"α = {args.alpha}",
        "",
        "| gate, true Δ (points) | right verdict | method | wrong verdicts | settled by N/2 | median documents |",
        "|---|---|---|---|---|---|",
    ]
    for scenario in scenarios(args.documents):
        for method in (METHOD_SEQUENCE, METHOD_BOOTSTRAP):
            outcome = simulate(scenario, method, replicates=args.replicates, chunk=args.chunk, alpha=args.alpha,
                               seed=2026, grid=args.grid)
            lines.append(f"| {scenario.name} | {scenario.correct} | {method} | {outcome.error_rate:.1%} | "
                         f"{outcome.decided_by(args.documents // 2):.0%} | {outcome.median_stop:.0f} |")
            print(lines[-1], flush=True)
    if args.report:
        args.report.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
