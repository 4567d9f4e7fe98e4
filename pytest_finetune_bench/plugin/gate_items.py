"""The gate tests the plugin contributes when --bench-model is given, even without test files."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.gates import UnreliableIntervalWarning
from pytest_finetune_bench.compare.scores import TaskComparison
from pytest_finetune_bench.orchestrate.session import BenchSession
from pytest_finetune_bench.plan.gates import SKIPPED, Gate
from pytest_finetune_bench.run.recovery import incomplete_reason
from pytest_finetune_bench.run.watchdog import gate_item_timeout
from pytest_finetune_bench.text import printable

NODE_PREFIX = "finetune-bench"


class GateFailure(Exception):
    """A threshold was missed; its message is the whole report."""


class BenchItem(pytest.Item):
    """A test item of the plugin's, for one experiment: a GateFailure is reported as its message alone."""

    what = ""  # how reportinfo names the item

    def __init__(self, *, bench: BenchSession, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bench = bench

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, GateFailure):
            # It quotes model output: no escape sequence or carriage return may reach the terminal or CI log.
            return printable(str(excinfo.value), keep="\n")
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{NODE_PREFIX}: {self.what}"


class BenchGateItem(BenchItem):
    """One of the plan's gates (plan/gates.py): `improves` or `no_regression` on one task; gain > 0 is better."""

    def __init__(self, *, gate: Gate, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate
        self.what = f"{gate.task} {gate.kind}"

    def runtest(self) -> None:
        # The session decides and records the gate: its decision goes into benchmark.json and the ranking.
        try:
            decision = self.bench.decide(self.gate)
        except BaseException as exc:  # pytest-timeout's signal, an interrupt: the gate failed, and says so
            self.bench.record_failure(self.gate, exc)
            raise
        if decision.outcome == SKIPPED:
            pytest.skip(decision.message or "skipped")
        comp = self._comparison()
        if comp is not None:
            self.user_properties.extend(junit_properties(comp))
        if not decision.passed:
            raise GateFailure(decision.message)
        if decision.warning is not None:
            warnings.warn(UnreliableIntervalWarning(decision.warning), stacklevel=1)

    def _comparison(self) -> TaskComparison | None:
        try:
            return self.bench.comparison().get(self.gate.task)
        except BenchError:
            return None


def junit_properties(comp: TaskComparison) -> list[tuple[str, object]]:
    """The numbers behind a gate, for `--junitxml` (as fractions, like benchmark.json); absent ones left out."""
    stats = comp.extra.get("stats") or {}
    values = {
        "metric": comp.metric,
        "base": comp.base_accuracy,
        "fine_tuned": comp.finetuned_accuracy,
        "delta": comp.delta,
        "delta_percent": comp.delta_percent,
        "ci_low": stats.get("ci_low"),
        "ci_high": stats.get("ci_high"),
        "confidence": stats.get("confidence"),
        "p_value": stats.get("p_value"),
    }
    return [(name, value) for name, value in values.items() if value is not None]


class BenchRunItem(BenchItem):
    """`<role>::evaluated`: the one side a session without a comparison evaluates ran to the end."""

    def __init__(self, *, role: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.role = role
        self.what = f"{role} evaluated"

    def runtest(self) -> None:
        try:
            record = self.bench.run(self.role)
        except BenchError as exc:
            raise GateFailure(str(exc)) from None
        partial = incomplete_reason((record,))
        if partial:
            raise GateFailure(partial)


class BenchGates(pytest.Collector):
    """Collector of the gate tests, so pytest counts, selects (-k) and reports them like any test."""

    def __init__(self, *, bench: BenchSession, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bench = bench

    def collect(self) -> list[pytest.Item]:
        """One `no_regression` gate per task, plus `improves` for the target tasks; without a comparison,
        one item that evaluates the side the session has."""
        if not self.bench.plan.compares:
            role = self.bench.plan.roles[0]
            return [self._prepared(BenchRunItem.from_parent(self, name=f"{role}::evaluated",
                                                            bench=self.bench, role=role))]
        return [self._prepared(BenchGateItem.from_parent(self, name=gate.name, bench=self.bench, gate=gate))
                for gate in self.bench.plan.gates]

    def _prepared(self, item: pytest.Item) -> pytest.Item:
        # Their xdist group is added with the user's tests' (plugin/xdist_workers.py).
        self._add_timeout(item)
        return item

    def _add_timeout(self, item: pytest.Item) -> None:
        """pytest-timeout backstop for a gate test, which may start both runs (see watchdog.py).

        Method `signal` raises inside the test, so the engine still stops the child tree and the
        session still writes benchmark.json; `thread` would end the whole process at once.
        """
        seconds = gate_item_timeout(self.bench.plan.options.timeout_s)
        if seconds is not None and self.config.pluginmanager.has_plugin("timeout"):
            item.add_marker(pytest.mark.timeout(seconds, method="signal"))


def gate_prefix(bench: BenchSession, several: bool) -> str:
    """The first part of an experiment's gate ids: `finetune-bench`, or its label when there are several."""
    return bench.plan.label if several else NODE_PREFIX


def keep_gate_ids_readable(config: pytest.Config, prefixes: Sequence[str]) -> None:
    """Show the gates as `finetune-bench::ifeval::improves` (or `outputs/exp-a::…`) wherever pytest is started.

    pytest rewrites a node id's first part as a path from the current directory when that is not the
    rootdir; the gates are no file, so `finetune-bench` would become `../../…/finetune-bench`. Their
    ids are left as they are; every other id is rewritten as pytest does.
    """
    rewrite: Any = config.cwd_relative_nodeid
    ours = frozenset(prefixes)

    def cwd_relative_nodeid(nodeid: Any) -> Any:
        # A str up to pytest 8, a NodeId (whose str() is the id) from pytest 9.
        if str(nodeid).split("::", 1)[0] in ours:
            return nodeid
        return rewrite(nodeid)

    config.cwd_relative_nodeid = cwd_relative_nodeid  # type: ignore[method-assign]


def gate_items(session: pytest.Session, bench: BenchSession, prefix: str) -> list[pytest.Item]:
    """Collect one experiment's gates through pytest's own machinery (reports, counts, hooks)."""
    gates = BenchGates.from_parent(
        session, name=prefix, nodeid=prefix, path=bench.plan.location.root or session.path, bench=bench
    )
    return list(session.genitems(gates))
