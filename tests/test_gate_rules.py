"""Gate rules (point, interval, proven) and Holm's family-wise adjustment: exhaustive small tables, a simulation,
the options."""

from __future__ import annotations

import dataclasses
import functools
import itertools

import numpy as np
import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.bench_result import BenchResult
from pytest_finetune_bench.compare.family import holm_divisors, strictest_divisor
from pytest_finetune_bench.compare.stats import mcnemar_exact_p, paired_proportion_ci
from pytest_finetune_bench.demo import demo_data_dir
from pytest_finetune_bench.plan.gates import (
    EPS,
    FAILED,
    IMPROVES,
    NO_REGRESSION,
    PASSED,
    RULE_INTERVAL,
    RULE_POINT,
    RULE_PROVEN,
    Gate,
    make_family,
)
from tests.fake_sessions import make_fake_model

ALPHA = 0.05
MAX_N = 30


def _all_tables(max_n: int = MAX_N) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every paired 2x2 table with 1 to max_n documents: b fail→pass, c pass→fail of n."""
    rows = [(b, c, n) for n in range(1, max_n + 1) for b in range(n + 1) for c in range(n + 1 - b)]
    b, c, n = (np.array(column) for column in zip(*rows, strict=True))
    return b, c, n


@pytest.fixture(scope="module")
def tables() -> dict[str, np.ndarray]:
    b, c, n = _all_tables()
    low, high = paired_proportion_ci(b, c, n, confidence=1 - ALPHA)
    return {"b": b, "c": c, "n": n, "low": low, "high": high}


@pytest.mark.parametrize("kind", [IMPROVES, NO_REGRESSION])
def test_proven_never_passes_an_interval_that_touches_or_crosses_the_bar(tables: dict[str, np.ndarray],
                                                                      kind: str) -> None:
    low, high = tables["low"], tables["high"]
    for threshold in (0.0, 0.02, 0.05, 0.2):
        gate = Gate("t", kind, threshold, rule=RULE_PROVEN, confidence=1 - ALPHA)
        passed, failed = gate.settled(low, high)
        assert not np.any(passed & (low <= gate.bar + EPS))
        assert np.array_equal(passed, low > gate.bar + EPS)
        assert not np.any(passed & failed)
        # The bar exactly at each table's lower end (touching): never a pass.
        for index in range(0, len(low), 97):
            touching = Gate("t", kind, low[index] if kind == IMPROVES else -low[index], rule=RULE_PROVEN)
            assert not touching.passes(float(low[index]), float(high[index]))


def test_interval_rule_fails_no_regression_only_on_an_interval_wholly_below_the_bar(
        tables: dict[str, np.ndarray]) -> None:
    low, high = tables["low"], tables["high"]
    for max_drop in (0.0, 0.05, 0.2):
        gate = Gate("t", NO_REGRESSION, max_drop, rule=RULE_INTERVAL, confidence=1 - ALPHA)
        fails = np.array([not gate.passes(lo, hi) for lo, hi in zip(low, high, strict=True)])
        assert np.array_equal(fails, high + EPS < -max_drop)
        # An interval touching the bar does not fail.
        for index in range(0, len(high), 89):
            assert Gate("t", NO_REGRESSION, -float(high[index]), rule=RULE_INTERVAL).passes(low[index], high[index])
        # Whatever interval rule passes, proven passes no more often.
        proven = Gate("t", NO_REGRESSION, max_drop, rule=RULE_PROVEN)
        assert not np.any(proven.settled(low, high)[0] & fails)


def test_interval_improves_passes_only_on_a_significant_gain_clear_of_the_bar(tables: dict[str, np.ndarray]) -> None:
    b, c, low, high = tables["b"], tables["c"], tables["low"], tables["high"]
    gate = Gate("t", IMPROVES, 0.0, rule=RULE_INTERVAL, confidence=1 - ALPHA)
    passed = np.array([gate.passes(lo, hi) for lo, hi in zip(low, high, strict=True)])
    assert np.array_equal(passed, low > 0)
    p_values = np.array([mcnemar_exact_p(int(up), int(down)) for up, down in zip(b[passed], c[passed], strict=True)])
    assert np.all(p_values < ALPHA)


def test_holm_adjusted_intervals_contain_the_unadjusted_ones(tables: dict[str, np.ndarray]) -> None:
    b, c, n = tables["b"], tables["c"], tables["n"]
    previous_low, previous_high = tables["low"], tables["high"]
    for divisor in range(2, 8):
        low, high = paired_proportion_ci(b, c, n, confidence=1 - ALPHA / divisor)
        assert np.all(low <= previous_low + 1e-12) and np.all(high >= previous_high - 1e-12)
        previous_low, previous_high = low, high


def _p_claims(p: float, r: int) -> bool:
    """A gate with p-value `p` claims at level α/r."""
    return p <= ALPHA / r


def _table_claims(claims: np.ndarray, i: int, r: int) -> bool:
    """Table `i` claims at level α/r (`claims[r - 1, i]`)."""
    return bool(claims[r - 1, i])


def _textbook_holm(p_values: list[float], alpha: float) -> list[bool]:
    order = sorted(range(len(p_values)), key=lambda g: p_values[g])
    rejected = [False] * len(p_values)
    for rank, gate in enumerate(order):
        if p_values[gate] > alpha / (len(p_values) - rank):
            break
        rejected[gate] = True
    return rejected


def test_holm_on_strictest_divisors_is_holm_on_p_values() -> None:
    rng = np.random.default_rng(7)
    for _ in range(2000):
        m = int(rng.integers(1, 9))
        p_values = list(rng.choice([rng.uniform(0, 0.1), rng.uniform(0, 1)], size=m) * rng.uniform(0.1, 1, size=m))
        strictest = [strictest_divisor(functools.partial(_p_claims, p), m) for p in p_values]
        outcome = holm_divisors(strictest)
        assert list(outcome.rejected) == _textbook_holm(p_values, ALPHA)
        # Each gate decided at its own level gives the same decision, and no level is looser than α.
        assert [p <= ALPHA / r for p, r in zip(p_values, outcome.divisors, strict=True)] == list(outcome.rejected)
        assert all(1 <= r <= m for r in outcome.divisors)
        ranks = sorted(r for r, rejected in zip(outcome.divisors, outcome.rejected, strict=True) if rejected)
        assert ranks == list(range(m - len(ranks) + 1, m + 1))  # the i-th claim at α/(m − i + 1)


def test_holm_on_real_intervals_matches_holm_on_their_p_values_against_the_bar() -> None:
    """Families of 2 to 4 proven gates drawn from the small tables: deciding each gate on its interval at its
    Holm level is Holm's step-down on the p-values against the bar (the smallest level whose interval claims,
    read off a fine grid of levels)."""
    b, c, n = _all_tables(20)
    keep = (n >= 12) & (c <= 2)
    b, c, n = b[keep], c[keep], n[keep]
    gate = Gate("t", NO_REGRESSION, 0.05, rule=RULE_PROVEN)
    grid = np.geomspace(1e-4, 0.5, 250)
    claims_on_grid = np.array([gate.settled(*paired_proportion_ci(b, c, n, confidence=1 - level))[0]
                               for level in grid])  # (levels, tables), monotone in the level
    first = np.where(claims_on_grid.any(axis=0), claims_on_grid.argmax(axis=0), len(grid))
    p_high = np.append(grid, 1.0)[first]  # the p-value lies in (p_low, p_high]
    p_low = np.concatenate([[0.0], grid])[first]
    # claims[r - 1, table]: the interval at α/r makes the claim (each table's strictest divisor counts them).
    claims = np.array([gate.settled(*paired_proportion_ci(b, c, n, confidence=1 - ALPHA / r))[0] for r in range(1, 5)])
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(400):
        m = int(rng.integers(2, 5))
        members = [int(i) for i in rng.choice(len(b), size=m)]
        levels = [ALPHA / r for r in range(1, m + 1)]
        if any(p_low[i] < level <= p_high[i] for i in members for level in levels):
            continue  # a level inside the grid step: the grid cannot tell the side
        outcome = holm_divisors([strictest_divisor(functools.partial(_table_claims, claims, i), m) for i in members])
        assert list(outcome.rejected) == _textbook_holm([float(p_high[i]) for i in members], ALPHA)
        decided = [bool(claims[r - 1, i]) for i, r in zip(members, outcome.divisors, strict=True)]
        assert decided == list(outcome.rejected)
        checked += 1
    assert checked > 200 and 0 < np.mean(p_high <= ALPHA) < 1


def _strictest(b: np.ndarray, c: np.ndarray, n: int, gate: Gate, m: int) -> np.ndarray:
    """Per table, the largest r whose interval at α/r makes the gate's claim (vectorised `strictest_divisor`)."""
    strictest = np.zeros(b.shape, dtype=int)
    for r in range(1, m + 1):
        low, high = paired_proportion_ci(b, c, n, confidence=1 - ALPHA / r)
        passed, failed = gate.settled(low, high)
        strictest = np.where(passed if gate.claims_pass else failed, r, strictest)
    return strictest


def test_a_session_of_twenty_gates_at_the_threshold_keeps_family_wise_error_below_alpha() -> None:
    """20 proven no_regression gates whose true gain is exactly minus the allowed drop: any pass is an error."""
    m, n, reps = 20, 200, 600
    rng = np.random.default_rng(20)
    down, up = 0.15, 0.10  # gain = up - down = -0.05, the bar
    counts = rng.multinomial(n, [up, down, 1 - up - down], size=(reps, m))
    gate = Gate("t", NO_REGRESSION, 0.05, rule=RULE_PROVEN)
    strictest = _strictest(counts[..., 0], counts[..., 1], n, gate, m)
    holm_errors = np.mean([any(holm_divisors(list(row)).rejected) for row in strictest])
    unadjusted_errors = np.mean(np.any(strictest >= 1, axis=1))
    assert holm_errors <= ALPHA, holm_errors
    assert unadjusted_errors > 3 * ALPHA, unadjusted_errors  # what the adjustment is for


def test_proven_settles_an_early_stop_pass_only_once_the_sequence_clears_the_bar() -> None:
    proven = Gate("t", NO_REGRESSION, 0.05, rule=RULE_PROVEN)
    interval = Gate("t", NO_REGRESSION, 0.05, rule=RULE_INTERVAL)
    point = Gate("t", NO_REGRESSION, 0.05, rule=RULE_POINT)
    assert proven.verdict(-0.05, 0.2) is None and interval.verdict(-0.05, 0.2) == PASSED
    assert point.verdict(-0.05, 0.2) == PASSED
    assert proven.verdict(-0.049, 0.2) == PASSED
    assert proven.verdict(-0.3, -0.05) == FAILED and interval.verdict(-0.3, -0.05) is None
    improves = Gate("t", IMPROVES, 0.02, rule=RULE_PROVEN)
    assert improves.verdict(0.02, 0.3) is None and improves.verdict(0.021, 0.3) == PASSED


def test_the_family_states_its_error_and_splits_the_sequences_error_rate() -> None:
    gates = [Gate(task, kind, 0.05, rule=rule, confidence=0.9)
             for task, rule in (("a", RULE_PROVEN), ("b", RULE_INTERVAL), ("c", RULE_POINT))
             for kind in (IMPROVES, NO_REGRESSION)]
    family = make_family(gates, "holm", 0.9)
    assert family.gates == ("a::improves", "a::no_regression", "b::improves", "b::no_regression")
    assert family.statement() == "family-wise error ≤ 0.1 over 4 gates (Holm)"
    assert family.controlled == 0.1 and family.to_json()["family_wise_error"] == 0.1
    assert family.sequence_alpha("a", 0.05) == 0.025 and family.sequence_alpha("c", 0.05) == 0.05
    unadjusted = make_family(gates, "none", 0.9)
    assert unadjusted.controlled is None and unadjusted.sequence_alpha("a", 0.05) == 0.05
    assert "together up to 0.4" in (unadjusted.statement() or "")
    assert make_family(gates[:1], "holm", None).statement() == "family-wise error ≤ 0.05 over 1 gate"
    assert make_family(gates[4:], "holm", None).statement() is None


def _plan_lines(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    model = make_fake_model(pytester.path)
    return pytester.runpytest(f"--bench-model={model}", f"--bench-output={pytester.path / 'out'}",
                              "--bench-device=cpu", "--bench-suite=core", "--bench-plan", "-p", "no:cacheprovider",
                              *args)


def test_the_plan_shows_each_tasks_rule_and_the_family(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nbench_gate_rule = proven gsm8k=point\n")
    result = _plan_lines(pytester, f"--bench-data-dir={demo_data_dir()}", "--bench-confidence=0.9")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines([
        "gates ifeval: improves by +2 (proven at 90%), no_regression beyond -5 (proven at 90%)",
        "gates gsm8k: no_regression beyond -5 (point)",
        "gates hellaswag: no_regression beyond -5 (proven at 90%)",
        "family-wise error ≤ 0.1 over 3 gates (Holm); each gate's interval at its Holm level once the scores are in",
    ])


def test_confidence_alone_still_means_the_interval_rule(pytester: pytest.Pytester) -> None:
    result = _plan_lines(pytester, f"--bench-data-dir={demo_data_dir()}", "--bench-confidence=95",
                         "--bench-family-adjust=none")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["gates ifeval: improves by +2 (interval at 95%), no_regression beyond -5 "
                                 "(interval at 95%)", "no family-wise adjustment (--bench-family-adjust none)*"])


@pytest.mark.parametrize(("args", "ini", "source", "what"), [
    (["--bench-gate-rule", "ifeval=strict"], "", "--bench-gate-rule", "gate rule"),
    ([], "bench_gate_rule = maybe\n", "ini option bench_gate_rule", "gate rule"),
    (["--bench-family-adjust", "bonferroni"], "", "--bench-family-adjust", "family-wise adjustment"),
])
def test_a_bad_rule_names_its_source(pytester: pytest.Pytester, args: list[str], ini: str, source: str,
                                     what: str) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    pytester.makeini(f"[pytest]\n{ini}")
    result = pytester.runpytest("--bench-model", "model", "--bench-base", "model", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {source}: * is not a {what}: choose one of *"])


def test_every_rule_pair_of_kinds_has_a_claim() -> None:
    claims = {(kind, rule): Gate("t", kind, 0.0, rule=rule).claims_pass
              for kind, rule in itertools.product((IMPROVES, NO_REGRESSION), (RULE_INTERVAL, RULE_PROVEN))}
    assert claims == {(IMPROVES, RULE_INTERVAL): True, (IMPROVES, RULE_PROVEN): True,
                      (NO_REGRESSION, RULE_INTERVAL): False, (NO_REGRESSION, RULE_PROVEN): True}


def test_family_levels_give_each_gate_its_holm_level() -> None:
    from pytest_finetune_bench.compare.family import family_levels
    from pytest_finetune_bench.compare.gates import BY_INTERVAL, Decision

    p_values = {"a": 0.001, "b": 0.02, "c": 0.04, "d": 0.5}
    gates = [Gate(task, NO_REGRESSION, 0.05, rule=RULE_PROVEN, confidence=0.95) for task in p_values]
    gates.append(Gate("e", NO_REGRESSION, 0.05, rule=RULE_POINT))

    def decide_at(gate: Gate) -> Decision:
        claimed = p_values[gate.task] <= 1 - (gate.confidence or 0) + 1e-12
        return Decision(gate, PASSED if claimed else FAILED, BY_INTERVAL, 10)

    levels = family_levels(make_family(gates, "holm", 0.95), gates, decide_at)
    # a at α/4, b at α/3 (0.02 > 0.0167): the step-down stops there, c and d checked at α/3 too.
    assert {task: round(1 - level, 6) for task, level in ((n.split("::")[0], v) for n, v in levels.items())} == {
        "a": 0.0125, "b": round(0.05 / 3, 6), "c": round(0.05 / 3, 6), "d": round(0.05 / 3, 6)}
    assert [decide_at(dataclasses.replace(g, confidence=levels[g.name])).passed for g in gates[:4]] == \
        [True, False, False, False]
    assert family_levels(make_family(gates, "none", 0.95), gates, decide_at) == {g.name: 0.95 for g in gates[:4]}


def test_an_assertion_with_an_unknown_rule_names_the_rules() -> None:
    result = BenchResult.__new__(BenchResult)
    with pytest.raises(BenchError, match=r"rule='strict' is not a gate rule: use one of point, interval, proven"):
        result.assert_no_regression("ifeval", rule="strict")
