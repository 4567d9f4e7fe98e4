"""Sample-size planning (compare/power.py): the planned number checked against sessions decided by the real gate
code, the `power` command, and the documents `--bench-plan` prints."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.cli import main
from pytest_finetune_bench.compare.evidence import TaskAnalysis
from pytest_finetune_bench.compare.flips import find_flips
from pytest_finetune_bench.compare.gates import decide
from pytest_finetune_bench.compare.power import (
    DEFAULT_MARGIN,
    assumed_discordance,
    at_level,
    cell_probabilities,
    default_gain,
    plan_documents,
)
from pytest_finetune_bench.compare.samples import SampleRecord
from pytest_finetune_bench.compare.scores import TaskComparison
from pytest_finetune_bench.demo import demo_data_dir
from pytest_finetune_bench.plan.gates import (
    IMPROVES,
    NO_REGRESSION,
    PASSED,
    RULE_INTERVAL,
    RULE_POINT,
    RULE_PROVEN,
    Gate,
)
from pytest_finetune_bench.run.watchdog import format_duration
from tests.fake_sessions import make_fake_model

GOLDEN = Path(__file__).parent / "golden" / "model" / "benchmarks"
CHECK_SESSIONS = 400  # sessions decided one by one through compare/gates.py: the power is known to about ±2 points


def _session(rng: np.random.Generator, documents: int, base: float, improve: float, regress: float
             ) -> tuple[TaskComparison, TaskAnalysis]:
    """One simulated run: every document's base and fine-tuned pass/fail, as a session's comparison and evidence."""
    cells = rng.choice(4, size=documents, p=[improve, regress, base - regress, 1.0 - base - improve])
    base_vals = np.isin(cells, (1, 2)).astype(float)  # regressed and both-pass documents pass on the base
    tuned_vals = np.isin(cells, (0, 2)).astype(float)
    records = [{i: SampleRecord(i, float(v), "", "") for i, v in enumerate(side)} for side in (base_vals, tuned_vals)]
    comp = TaskComparison("task", "acc,none", float(base_vals.mean()), float(tuned_vals.mean()))
    return comp, TaskAnalysis("task", records[0], records[1], find_flips(records[0], records[1]))


def _empirical_power(gate: Gate, documents: int, base: float, gain: float, discordance: float, seed: int) -> float:
    """The share of simulated sessions that `decide` (the session's own code) settles as the true gain deserves."""
    improve, regress = cell_probabilities(base, gain, discordance)
    rng = np.random.default_rng(seed)
    right = sum((decide(gate, *_session(rng, documents, base, improve, regress)).outcome == PASSED)
                == (gate.correct(gain) == PASSED) for _ in range(CHECK_SESSIONS))
    return right / CHECK_SESSIONS


@pytest.mark.parametrize(("gate", "base", "gain", "discordance"), [
    (Gate("task", NO_REGRESSION, 0.05, rule=RULE_PROVEN, confidence=0.95), 0.6, 0.0, 0.2),
    (Gate("task", IMPROVES, 0.02, rule=RULE_PROVEN, confidence=0.95), 0.45, 0.10, 0.3),
    (Gate("task", IMPROVES, 0.0, rule=RULE_INTERVAL, confidence=0.95), 0.7, 0.06, 0.2),
    # Four gates under Holm: planned at the strictest level, 1 - 0.05 / 4.
    (at_level(Gate("task", NO_REGRESSION, 0.04, rule=RULE_PROVEN), 0.95, 4), 0.8, 0.01, 0.12),
    # The interval rule's no_regression claims a failure: planned for catching a loss of 9 points beyond 5.
    (Gate("task", NO_REGRESSION, 0.05, rule=RULE_INTERVAL, confidence=0.95), 0.5, -0.12, 0.3),
    (Gate("task", IMPROVES, 0.02, rule=RULE_POINT), 0.5, 0.05, 0.25),
])
def test_the_planned_documents_give_the_target_power_when_the_real_gate_decides(
        gate: Gate, base: float, gain: float, discordance: float) -> None:
    planned = plan_documents(gate, base, gain, discordance)
    assert planned.documents is not None and planned.power >= 0.8
    at_plan = _empirical_power(gate, planned.documents, base, gain, discordance, seed=1)
    assert 0.75 <= at_plan <= 0.9, (planned.documents, at_plan)
    # Fewer documents are clearly not enough: half for an interval; the point rule's power falls more slowly.
    fewer = planned.documents // (2 if gate.statistical else 8)
    at_fewer = _empirical_power(gate, fewer, base, gain, discordance, seed=2)
    assert at_fewer <= at_plan - 0.15, (planned.documents, at_plan, at_fewer)


def test_the_plan_is_reproducible_and_follows_the_level() -> None:
    gate = Gate("task", NO_REGRESSION, 0.02, rule=RULE_PROVEN, confidence=0.95)
    once, again = (plan_documents(gate, 0.62, 0.0, 0.2) for _ in range(2))
    assert once == again
    stricter = plan_documents(at_level(gate, 0.95, 6), 0.62, 0.0, 0.2)
    assert stricter.gate.confidence == pytest.approx(1 - 0.05 / 6)
    assert once.documents is not None and stricter.documents is not None and stricter.documents > once.documents
    more_agreement = plan_documents(gate, 0.62, 0.0, 0.1)
    assert more_agreement.documents is not None and more_agreement.documents < once.documents


def test_a_gain_at_the_bar_cannot_be_proven_at_any_size() -> None:
    gate = Gate("task", IMPROVES, 0.02, rule=RULE_PROVEN, confidence=0.95)
    planned = plan_documents(gate, 0.5, 0.02, 0.2, cap=20_000)
    assert planned.documents is None and planned.power < 0.1
    assert planned.documents_text().startswith("more than 20,000 documents")


def test_the_interval_rule_passes_a_kept_score_at_any_size_and_says_so() -> None:
    gate = Gate("task", NO_REGRESSION, 0.05, rule=RULE_INTERVAL, confidence=0.95)
    planned = plan_documents(gate, 0.6)
    assert planned.documents == 1 and planned.verdict == "pass"
    assert "passes at any size" in (planned.note() or "")
    assert plan_documents(gate, 0.6, -0.1, 0.3).note() is None


def test_defaults_are_stated() -> None:
    improves = Gate("task", IMPROVES, 0.03, rule=RULE_PROVEN, confidence=0.95)
    gain_and_source: tuple[object, str] = default_gain(improves)  # object: compared with an approx, not a float
    assert gain_and_source == (pytest.approx(0.03 + DEFAULT_MARGIN), "the minimum gain plus 2 pts")
    assert default_gain(dataclasses.replace(improves, kind=NO_REGRESSION)) == (0.0, "no change")
    # Half the disagreement of independent models: 0.5 * (0.6 * 0.4 + 0.4 * 0.6).
    assert assumed_discordance(0.6, 0.0) == pytest.approx(0.24)
    assert assumed_discordance(0.95, 0.04) == pytest.approx(0.04)  # never below the gain it must carry
    planned = plan_documents(improves, 0.6)
    assert planned.gain == pytest.approx(0.05) and planned.discordance_source == "assumed"
    assert "true gain +5 pts (the minimum gain plus 2 pts)" in planned.assumptions()


@pytest.mark.parametrize(("base", "gain", "discordance", "says"), [
    (0.5, 0.05, 0.02, "needs the models to disagree on at least 5%"),
    (0.98, 0.0, 0.3, "cannot go together"),
    (1.2, 0.0, 0.1, "not between 0 and 100%"),
    (0.5, 0.0, 1.5, "not between 0 and 100%"),
    (0.99, 0.04, None, "a document can only improve where the base fails"),
])
def test_impossible_assumptions_are_one_line_errors(base: float, gain: float, discordance: float | None,
                                                    says: str) -> None:
    gate = Gate("task", NO_REGRESSION, 0.05, rule=RULE_PROVEN, confidence=0.95)
    with pytest.raises(BenchError, match=says) as caught:
        plan_documents(gate, base, gain, discordance)
    assert "\n" not in str(caught.value)


def test_a_fine_tune_that_changes_nothing_is_planned_too() -> None:
    # No document changes: the interval around 0 narrows as documents are added, until it clears the drop.
    gate = Gate("task", NO_REGRESSION, 0.05, rule=RULE_PROVEN, confidence=0.95)
    planned = plan_documents(gate, 0.0)
    assert planned.discordance == 0.0 and planned.documents is not None and planned.power == 1.0


def test_a_metric_in_its_own_unit_is_not_planned() -> None:
    gate = Gate("task", NO_REGRESSION, 2.0, higher_is_better=False, fraction=False, rule=RULE_PROVEN, confidence=0.95)
    with pytest.raises(BenchError, match="only for pass/fail metrics"):
        plan_documents(gate, 0.5)


# ---------------------------------------------------------------------------------------------
# The power command
# ---------------------------------------------------------------------------------------------


def test_the_power_command_prints_the_documents_and_the_assumptions(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["power", "--base", "0.62", "--gain", "3", "--discordance", "0.2", "--rule", "proven",
            "--kind", "no_regression", "--max-drop", "2", "--confidence", "0.95", "--gates", "6"]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    gate = at_level(Gate("task", NO_REGRESSION, 0.02, rule=RULE_PROVEN), 0.95, 6)
    planned = plan_documents(gate, 0.62, 0.03, 0.2)
    assert out[0] == ("gate: no_regression beyond -2 (proven at 99.17%); Holm's strictest level for 6 gates at 95%")
    assert out[1] == f"needs: {planned.documents_text()}"
    assert out[2] == ("assuming: base score 62% (given), true gain +3 pts (given), discordance 20% (given): "
                      "11.5% of documents improve, 8.5% regress")
    assert out[3].startswith("target: pass in at least 80% of runs")


def test_the_power_command_defaults_say_what_they_assumed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["power", "--base", "62%", "--kind", "improves"]) == 0
    out = capsys.readouterr().out
    assert "gate: improves by +2 (proven at 95%)" in out
    assert "true gain +4 pts (the minimum gain plus 2 pts)" in out and "(assumed)" in out


def test_the_power_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["power", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m pytest_finetune_bench power") and "--discordance SHARE" in out


def test_the_interval_rules_no_regression_says_why_it_needs_so_few(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["power", "--base", "0.6", "--rule", "interval"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "needs: 1 document (power 100.0%)" and lines[-1].startswith("note: no_regression under interval")


@pytest.mark.parametrize(("args", "says"), [
    (["--base", "0.6", "--rule", "strict"], "argument --rule: invalid choice: 'strict'"),
    (["--base", "0.6", "--gain", "lots"], "argument --gain: 'lots' is not a number of points"),
    (["--base", "-3"], "argument --base: '-3' is not a share"),
    (["--base", "0.6", "--confidence", "0.2"], "argument --confidence: '0.2' is not a confidence level"),
    (["--base", "0.6", "--gates", "0"], "argument --gates: '0' must be at least 1"),
    ([], "the following arguments are required: --base"),
])
def test_bad_power_arguments_are_one_line_errors(capsys: pytest.CaptureFixture[str], args: list[str],
                                                 says: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["power", *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_assumptions_that_cannot_go_together_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["power", "--base", "0.5", "--gain", "3", "--discordance", "0.02"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m pytest_finetune_bench: error: a gain of +3 pts needs") and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# --bench-plan
# ---------------------------------------------------------------------------------------------


def _plan(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    model = make_fake_model(pytester.path)
    return pytester.runpytest(f"--bench-model={model}", f"--bench-output={pytester.path / 'out'}",
                              f"--bench-data-dir={demo_data_dir()}", "--bench-device=cpu", "--bench-plan",
                              "--bench-tasks=ifeval", "--bench-gate-rule=proven", "--bench-target-tasks=ifeval",
                              "--bench-max-drop=5", "-p", "no:cacheprovider", *args)


def test_the_plan_shows_the_documents_each_gate_needs_on_stated_assumptions(pytester: pytest.Pytester) -> None:
    result = _plan(pytester)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    improves = at_level(Gate("ifeval", IMPROVES, 0.02, rule=RULE_PROVEN), 0.95, 2)
    planned = plan_documents(improves, 0.5, base_source="assumed: no earlier run")
    result.stdout.fnmatch_lines([
        f"documents ifeval::improves (proven at 97.5%): needs {planned.documents_text()}",
        f"  assuming {planned.assumptions()}",
        "documents ifeval::no_regression (proven at 97.5%): needs *",
        "time: unknown (no earlier run)",
    ])
    assert "base score 50% (assumed: no earlier run)" in planned.assumptions()


def test_the_plan_reads_an_earlier_runs_paired_counts(pytester: pytest.Pytester) -> None:
    # A real session's benchmark.json: IFEval's base at 30%, 1 of 10 prompts improved and 1 regressed.
    earlier = GOLDEN / "benchmark.json"
    (pytester.path / "out").mkdir()
    shutil.copy(earlier, pytester.path / "out" / "benchmark.json")
    result = _plan(pytester)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    no_regression = at_level(Gate("ifeval", NO_REGRESSION, 0.05, rule=RULE_PROVEN), 0.95, 2)
    planned = plan_documents(no_regression, 0.3, discordance=2 / 10, base_source="earlier run",
                             discordance_source="earlier run: 2 of 10 documents changed")
    result.stdout.fnmatch_lines([
        "documents ifeval::improves (proven at 97.5%): needs *",
        f"documents ifeval::no_regression (proven at 97.5%): needs {planned.documents_text()}",
        "  assuming base score 30% (earlier run), true gain +0 pts (no change), discordance 20% "
        "(earlier run: 2 of 10 documents changed)*",
        "time: unknown (the earlier fine-tuned run was not timed, or its answers came from a cache)",
    ])


@pytest.mark.parametrize(("seconds", "generated", "timed"), [(42.0, 10, True), (42.0, 0, False), (None, 10, False)])
def test_the_plan_turns_documents_into_time_at_a_timed_earlier_runs_pace(
        pytester: pytest.Pytester, seconds: float | None, generated: int, timed: bool) -> None:
    """Only a run that generated its own answers and was timed sets the pace; one answered by a cache would not."""
    summary = json.loads((GOLDEN / "benchmark.json").read_text())
    summary["fine_tuned_model"].update(seconds=seconds, generated=generated)  # 10 documents done
    (pytester.path / "out").mkdir()
    (pytester.path / "out" / "benchmark.json").write_text(json.dumps(summary))
    result = _plan(pytester)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    no_regression = at_level(Gate("ifeval", NO_REGRESSION, 0.05, rule=RULE_PROVEN), 0.95, 2)
    planned = plan_documents(no_regression, 0.3, discordance=2 / 10, base_source="earlier run",
                             discordance_source="earlier run: 2 of 10 documents changed")
    assert planned.documents is not None
    if timed:
        took = format_duration(planned.documents * 42.0 / 10)
        result.stdout.fnmatch_lines([
            f"documents ifeval::no_regression (proven at 97.5%): needs {planned.documents_text()}, about {took}",
            "time: per model, at the earlier fine-tuned run's pace on this machine (10 documents in 42s, its tasks "
            "together, model loading included); the base takes about as long again unless its scores are cached",
        ])
    else:
        result.stdout.fnmatch_lines([
            f"documents ifeval::no_regression (proven at 97.5%): needs {planned.documents_text()}",
            "time: unknown (the earlier fine-tuned run was not timed, or its answers came from a cache)",
        ])
        assert ", about " not in result.stdout.str()


def test_the_plan_says_when_the_limit_is_below_what_a_gate_needs(pytester: pytest.Pytester) -> None:
    result = _plan(pytester, "--bench-limit=24")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["documents ifeval::improves (proven at 97.5%): needs * documents (power *); "
                                 "--bench-limit evaluates at most 24"])


def test_an_unreadable_earlier_run_falls_back_to_the_assumptions(pytester: pytest.Pytester) -> None:
    (pytester.path / "out").mkdir()
    (pytester.path / "out" / "benchmark.json").write_text(json.dumps({"schema_version": 99}))
    result = _plan(pytester)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["documents: the earlier results are not used: *schema version 99*",
                                 "  assuming base score 50% (assumed: no earlier run)*"])
