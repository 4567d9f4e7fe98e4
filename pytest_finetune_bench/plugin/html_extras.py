"""pytest-html: each gate's row in the HTML report carries its task's comparison table and chart.

Registered only when pytest-html is active (`--html`); the junit properties of the gates are unchanged.
The extras are plain dicts built with pytest-html's own `extras` helpers, so pytest-xdist carries them
from the workers like any report attribute.
"""

from __future__ import annotations

import base64
from collections.abc import Generator
from typing import Any

import pytest

from pytest_finetune_bench.plugin.gate_items import BenchGateItem
from pytest_finetune_bench.report.chart import chart_png
from pytest_finetune_bench.report.facts import comparisons, result_headers, result_rows
from pytest_finetune_bench.report.html import html_table
from pytest_finetune_bench.text import printable

PLUGIN_NAME = "finetune-bench-html-extras"


def register_if_html_is_active(config: pytest.Config) -> None:
    """Add the extras to the HTML report when pytest-html is installed and asked for."""
    if config.pluginmanager.hasplugin("html") and getattr(config.option, "htmlpath", None):
        config.pluginmanager.register(HtmlExtras(), PLUGIN_NAME)


class HtmlExtras:
    """Adds the table row and the chart of a gate's task to that gate's report."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome = yield
        if call.when != "call" or not isinstance(item, BenchGateItem):
            return
        report = outcome.get_result()
        report.extras = [*getattr(report, "extras", []), *gate_extras(item)]


def gate_extras(item: BenchGateItem) -> list[dict[str, Any]]:
    """The gate's task as pytest-html extras: its comparison row (with the headers) and its chart."""
    from pytest_html import extras

    try:
        summary = item.bench.summary()
    except Exception as exc:  # noqa: BLE001 - the report must not fail a gate; the reason is shown instead
        return [extras.text(printable(f"no comparison to show: {type(exc).__name__}: {exc}"), name="benchmark")]
    tasks = comparisons(summary)
    if item.task not in tasks:
        return []
    row = result_rows(summary)[list(tasks).index(item.task)]
    chart = chart_png({item.task: tasks[item.task]}, f"{summary.get('model_name', '')}: {item.task}")
    return [
        extras.html(html_table(result_headers(summary), [row], "bench-comparison")),
        extras.png(base64.b64encode(chart).decode("ascii"), name=f"{item.task} chart"),
    ]
