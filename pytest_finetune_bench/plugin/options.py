"""Command-line flags `--bench-*`, their ini twins `bench_*`, and typed parsing that names the source."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends import backend_names
from pytest_finetune_bench.plan.choices import SUITES, BenchOptions, Suite
from pytest_finetune_bench.plan.option_table import OPTIONS, PLUGIN_SETTINGS, Known, Option, option

GROUP = "finetune-bench"


def register(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, "benchmark a fine-tuned model against its base (pytest-finetune-bench)")
    for opt in OPTIONS:
        default = f" [default: {opt.default}]" if opt.default not in (None, "default") else ""
        default += f"; environment: {opt.env}" if opt.env else ""
        if opt.switch:
            group.addoption(opt.flag, dest=opt.ini, action="store_const", const="true", default=None,
                            help=f"{opt.help}; ini: {opt.ini} = true")
            parser.addini(opt.ini, f"{opt.help} (same as {opt.flag})", type="string")
            continue
        group.addoption(
            opt.flag,
            dest=opt.ini,
            action="append" if opt.multiple else "store",
            default=None,
            metavar=opt.metavar,
            help=f"{opt.help}{default}; ini: {opt.ini}",
        )
        ini_type: Literal["args", "string"] = "args" if opt.multiple else "string"
        parser.addini(opt.ini, f"{opt.help} (same as {opt.flag})", type=ini_type)


class _Reader:
    """Looks a setting up in CLI, then environment, then ini, then default, remembering which it used."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def raw(self, opt: Option) -> tuple[Any, str]:
        cli = self.config.getoption(opt.ini)
        if cli is not None:
            return cli, opt.flag
        if opt.env and os.environ.get(opt.env):
            return os.environ[opt.env], f"environment variable {opt.env}"
        ini = self.config.getini(opt.ini)
        if ini not in ("", [], None):
            return ini, f"ini option {opt.ini}"
        return ([opt.default] if opt.multiple else opt.default), "default"

    def parse(self, name: str, known: Known | None = None) -> Any:
        """The typed value of `--bench-<name>` (its row's parser); a bad one is a UsageError naming its source."""
        opt = option(name)
        value, source = self.raw(opt)
        try:
            return opt.parse(value, known or Known(tuple(SUITES), backend_names()))
        except BenchError as exc:
            raise pytest.UsageError(f"{source}: {exc}") from None


@dataclass(frozen=True)
class OutputChoices:
    """Extra outputs of a session; they decide nothing about the runs, so they are not part of the plan."""

    readme: bool
    json_copy: Path | None
    trackers: tuple[str, ...] = ()  # --bench-log: where the results are logged after the session


def output_choices(config: pytest.Config) -> OutputChoices:
    """--bench-readme, --bench-json and --bench-log (or their ini twins)."""
    reader = _Reader(config)
    return OutputChoices(readme=reader.parse("readme"), json_copy=reader.parse("json"), trackers=reader.parse("log"))


def gpus_per_worker(config: pytest.Config) -> int | None:
    """--bench-gpus-per-worker (or its ini twin); None: split the GPUs evenly among the xdist workers."""
    return _Reader(config).parse("gpus-per-worker")  # type: ignore[no-any-return]


def show_plan_only(config: pytest.Config) -> bool:
    """Whether --bench-plan (or `bench_plan = true`) asks for the plan alone."""
    return bool(_Reader(config).parse("plan"))


def user_suites(config: pytest.Config) -> dict[str, Suite]:
    """The user's own suites (--bench-suites, ini bench_suites)."""
    return _Reader(config).parse("suites")  # type: ignore[no-any-return]


def all_suites(config: pytest.Config) -> dict[str, Suite]:
    """The built-in suites and the user's own, for `--bench-suite` and `@pytest.mark.bench(suite=...)`."""
    return {**SUITES, **user_suites(config)}


def read_options(config: pytest.Config) -> BenchOptions | None:
    """The session's BenchOptions, or None when no --bench-model was given: every option's row, parsed."""
    reader = _Reader(config)
    models = reader.parse("model")
    only_base = reader.parse("only-base")
    base_raw, _ = reader.raw(option("base"))
    if not models and not (only_base and base_raw):
        return None
    known = Known((*SUITES, *user_suites(config)), backend_names())
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        if opt.field in PLUGIN_SETTINGS:
            continue
        value = reader.parse(opt.name, known)
        if opt.per_task is None:
            values[opt.field] = value
        else:
            values[opt.field], values[opt.per_task] = value
    return BenchOptions(
        **values,
        model=models[0] if models else base_raw,
        backend=values["backends"][0],
        limit_set=reader.raw(option("limit"))[0] is not None,
    )
