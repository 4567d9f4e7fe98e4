"""benchmarks/report.html: one self-contained page to look at a session's results (no pytest here).

Everything is inline (styles, the filter script, the chart as a data: URL), so the file can be
opened from disk, attached to a CI job or mailed, and never reaches the network. The flips browser
lists, per task, the documents that went pass→fail and fail→pass with the prompt and both answers
side by side; for IFEval also the instructions each answer failed. The filter (task, direction) is
kept in the URL fragment, e.g. `report.html#task=ifeval&direction=regressed`, so a link shows the
same rows.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.compare.flips import Flip, read_flips
from pytest_finetune_bench.compare.scores import display_name
from pytest_finetune_bench.report.chart import chart_png
from pytest_finetune_bench.report.facts import (
    IFEVAL_HEADERS,
    comparisons,
    ifeval_rows,
    measured_on,
    produced_by,
    reproduce_commands,
    result_headers,
    result_rows,
    settings_facts,
)
from pytest_finetune_bench.store.files import atomic_write_text, json_object
from pytest_finetune_bench.text import html_text, printable

REPORT_NAME = "report.html"
DIRECTIONS = {"regressed": "pass→fail", "improved": "fail→pass"}
IFEVAL_FAILED_METRIC = "inst_level_strict_acc"  # per instruction, in the order of doc.instruction_id_list


def write_report(path: Path, summary: Mapping[str, Any], model_hint: str = "MODEL") -> Path:
    """Write the report of `summary` to `path` (atomically); `model_hint` goes into the rebuild command.

    When the page cannot be made, a page saying why replaces the previous one (never left stale, it
    would show another session's results), and BenchError says so in one line.
    """
    try:
        page = report_html(summary, model_hint)
    except Exception as exc:  # noqa: BLE001 - whatever failed, the old page must not stay as if it were this one
        why = f"{type(exc).__name__}: {exc}"
        atomic_write_text(path, failure_page(why, model_hint))
        raise BenchError(f"could not make {path} ({printable(why)}): it now says so; "
                         f"rebuild it with `{rebuild_command(model_hint)}`") from None
    atomic_write_text(path, page)
    return path


def rebuild_command(model_hint: str) -> str:
    """The command that writes the page again from the files on disk."""
    return f"python -m pytest_finetune_bench report {shlex.quote(model_hint)}"


def failure_page(why: str, model_hint: str) -> str:
    """The page written instead of the report when it could not be made."""
    body = (f"<h1>No report</h1><p class=\"status failed\">This session's report could not be made: "
            f"{html_text(why)}.</p><p>Its results are in benchmark.json beside this page; rebuild the page with</p>"
            f"<pre class=commands>{html_text(rebuild_command(model_hint))}</pre>")
    return _page("No report", body)


def report_html(summary: Mapping[str, Any], model_hint: str = "MODEL") -> str:
    """The whole page for `summary` (a benchmark.json), flips and failed instructions read from its files."""
    title = f"{summary.get('model_name', '?')} vs {summary.get('base_model_name', '?')}"
    body = [
        f"<h1>{html_text(title)}</h1>",
        _status(summary),
        *_results(summary),
        *_flips_browser(summary),
        *_settings(summary, model_hint),
    ]
    return _page(title, "\n".join(body))


def _page(title: str, body: str) -> str:
    return _PAGE.format(title=html_text(title), style=_STYLE, body=body, script=_SCRIPT, csp=CONTENT_SECURITY_POLICY)


def _status(summary: Mapping[str, Any]) -> str:
    status = str(summary.get("status", "?"))
    errors = "".join(f"<li>{html_text(k)}: {html_text(v)}</li>" for k, v in json_object(summary.get("errors")).items())
    line = (f'<p class="status {html_text(status)}">Session {html_text(status)}, {html_text(measured_on(summary))}. '
            f"{html_text(produced_by(summary).replace('`', ''))}</p>")
    return line + (f"<ul class=errors>{errors}</ul>" if errors else "")


def _results(summary: Mapping[str, Any]) -> list[str]:
    if not summary.get("comparison"):
        return ["<p>No comparison: the session did not finish both runs.</p>"]
    parts = ["<h2>Results</h2>", html_table(result_headers(summary), result_rows(summary), "results")]
    ifeval = ifeval_rows(summary)
    if ifeval:
        parts.append(html_table(IFEVAL_HEADERS, ifeval, "ifeval"))
    png = base64.b64encode(chart_png(comparisons(summary))).decode("ascii")
    parts.append(f'<img id="chart" alt="base vs fine-tuned per task" src="data:image/png;base64,{png}">')
    parts.append("<p class=note>Grey: base. Blue: fine-tuned. The line on the blue bar is the base score plus the "
                 "paired interval of the change.</p>")
    return parts


def _flips_browser(summary: Mapping[str, Any]) -> list[str]:
    if not summary.get("comparison"):
        return []
    flips, notes = flipped_documents(summary)
    tasks = sorted({task for task, _, _, _ in flips} | set(json_object(summary.get("comparison"))))
    task_options = "".join(f'<option value="{html_text(t)}">{html_text(display_name(t))}</option>' for t in tasks)
    direction_options = "".join(f'<option value="{d}">{label}</option>' for d, label in DIRECTIONS.items())
    rows = "\n".join(_flip_row(task, flip, base_failed, ft_failed) for task, flip, base_failed, ft_failed in flips)
    return [
        "<h2>Flipped documents</h2>",
        *(f"<p class=note>{html_text(note)}</p>" for note in notes),
        '<div class=filters><label>Task <select id="task-filter"><option value="">all tasks</option>'
        f'{task_options}</select></label> <label>Direction <select id="direction-filter">'
        f'<option value="">both</option>{direction_options}</select></label> '
        f'<span id="flip-count">{len(flips)} of {len(flips)} shown</span></div>',
        f'<table id="flips" data-total="{len(flips)}" data-shown="{len(flips)}"><thead><tr><th>Task</th><th>Doc</th>'
        "<th>Change</th><th>Prompt</th><th>Base answer</th><th>Fine-tuned answer</th></tr></thead>"
        f"<tbody>\n{rows}\n</tbody></table>",
        "" if flips else "<p>No document changed its score.</p>",
    ]


def _flip_row(task: str, flip: Flip, base_failed: Sequence[str] | None, ft_failed: Sequence[str] | None) -> str:
    direction = html_text(flip.direction)
    return (
        f'<tr class="flip" data-task="{html_text(task)}" data-direction="{direction}">'
        f"<td>{html_text(display_name(task))}</td><td>{html_text(str(flip.doc_id))}</td>"
        f'<td class="{direction}">{html_text(DIRECTIONS.get(flip.direction, flip.direction))}</td>'
        f"<td><pre>{html_text(flip.prompt)}</pre></td>"
        f"<td><pre>{html_text(flip.base_response)}</pre>{_failed(base_failed)}</td>"
        f"<td><pre>{html_text(flip.finetuned_response)}</pre>{_failed(ft_failed)}</td></tr>"
    )


def _failed(instructions: Sequence[str] | None) -> str:
    if instructions is None:
        return ""
    listed = ", ".join(html_text(i) for i in instructions) or "none"
    return f'<div class="failed">failed instructions: {listed}</div>'


FlipRow = tuple[str, Flip, "list[str] | None", "list[str] | None"]


def flipped_documents(summary: Mapping[str, Any]) -> tuple[list[FlipRow], list[str]]:
    """(task, flip, instructions the base failed, instructions the fine-tuned model failed) per flipped document,
    and a note for each flips file that could not be read in full.

    The instruction lists are None for tasks without per-instruction results (all but IFEval).
    """
    rows: list[FlipRow] = []
    notes: list[str] = []
    for task, comparison in json_object(summary.get("comparison")).items():
        flips_file = json_object(json_object(comparison).get("flips")).get("file")
        if not isinstance(flips_file, str) or not Path(flips_file).is_file():
            continue
        try:
            flips, skipped = read_flips(Path(flips_file))
        except OSError as exc:
            notes.append(f"{flips_file} could not be read ({exc.strerror or exc}): its flips are not shown.")
            continue
        if skipped:
            notes.append(f"{flips_file}: {skipped} unreadable line{'s' if skipped != 1 else ''} skipped.")
        base = failed_instructions(_samples_file(summary, "base_model", task))
        finetuned = failed_instructions(_samples_file(summary, "fine_tuned_model", task))
        rows.extend((task, flip, _lookup(base, flip.doc_id), _lookup(finetuned, flip.doc_id)) for flip in flips)
    return rows, notes


def _lookup(failed: dict[int, list[str]] | None, doc_id: int) -> list[str] | None:
    return None if failed is None else failed.get(doc_id)


def _samples_file(summary: Mapping[str, Any], side: str, task: str) -> Path | None:
    path = json_object(json_object(summary.get(side)).get("samples_files")).get(task)
    return Path(path) if isinstance(path, str) and path else None


def failed_instructions(samples_file: Path | None) -> dict[int, list[str]] | None:
    """{doc_id: ids of the instructions the answer failed}, from an lm-eval samples file with IFEval's
    per-instruction results; None when the file has none (another task, no file, or an unreadable one)."""
    if samples_file is None or not samples_file.is_file():
        return None
    failed: dict[int, list[str]] = {}
    try:
        text = samples_file.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in text.split("\n"):
        record = _json_object(line)
        ids = json_object(record.get("doc")).get("instruction_id_list")
        results = record.get(IFEVAL_FAILED_METRIC)
        if isinstance(ids, list) and isinstance(results, list) and type(record.get("doc_id")) is int:
            failed[record["doc_id"]] = [str(i) for i, ok in zip(ids, results, strict=False) if not ok]
    return failed or None


def _json_object(line: str) -> dict[str, Any]:
    """A samples line as a dict; {} for a blank or broken one (the report shows what it can)."""
    try:
        record = json.loads(line) if line.strip() else {}
    except (ValueError, RecursionError):
        return {}
    return record if isinstance(record, dict) else {}


def _settings(summary: Mapping[str, Any], model_hint: str) -> list[str]:
    facts = "".join(f"<dt>{html_text(name)}</dt><dd>{html_text(value)}</dd>" for name, value in settings_facts(summary))
    commands = [f"# {role}\n{command}" for role, command in reproduce_commands(summary).items()]
    commands.append(f"# this page again, from the files on disk\n{rebuild_command(model_hint)}")
    return ["<h2>Settings</h2>", f"<dl>{facts}</dl>", "<h2>Reproduce</h2>",
            f"<pre class=commands>{html_text(chr(10).join(commands))}</pre>"]


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], table_id: str) -> str:
    head = "".join(f"<th>{html_text(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html_text(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{style}</style></head>
<body>
{body}
<script>{script}</script>
</body></html>
"""

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 80em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .8em 0; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
#flips td:nth-child(n+4) { width: 30%; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0; font: 12px/1.4 ui-monospace, monospace; }
.regressed { color: #b00020; font-weight: 600; }
.improved { color: #1b7f3b; font-weight: 600; }
.failed { margin-top: .4em; font-size: 12px; color: #8a5a00; }
.status.complete { color: #1b7f3b; } .status:not(.complete) { color: #b00020; }
.filters { margin: .6em 0; } .note { color: #555; font-size: 12px; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; } dd { margin: 0; }
pre.commands { background: #f6f6f6; padding: .8em; }
"""

# Filters rows by task and direction; the choice lives in the URL fragment so a link reproduces it.
_SCRIPT = """
(function () {
  var task = document.getElementById('task-filter'), direction = document.getElementById('direction-filter');
  if (!task) { return; }
  function apply() {
    var rows = document.querySelectorAll('tr.flip'), shown = 0;
    rows.forEach(function (row) {
      var visible = (!task.value || row.dataset.task === task.value) &&
                    (!direction.value || row.dataset.direction === direction.value);
      row.hidden = !visible;
      if (visible) { shown += 1; }
    });
    document.getElementById('flips').dataset.shown = String(shown);
    document.getElementById('flip-count').textContent = shown + ' of ' + rows.length + ' shown';
  }
  function choose(select, value) {
    select.value = value || '';
    if (select.selectedIndex < 0) { select.value = ''; }
  }
  function fromFragment() {
    var params = new URLSearchParams(location.hash.slice(1));
    choose(task, params.get('task'));
    choose(direction, params.get('direction'));
    apply();
  }
  function toFragment() {
    var params = new URLSearchParams();
    if (task.value) { params.set('task', task.value); }
    if (direction.value) { params.set('direction', direction.value); }
    history.replaceState(null, '', '#' + params.toString());
    apply();
  }
  task.addEventListener('change', toFragment);
  direction.addEventListener('change', toFragment);
  window.addEventListener('hashchange', fromFragment);
  fromFragment();
})();
"""

# Nothing but the page's own script, styles and inline chart may load or run: text that escaped its
# escaping still could not run script, load anything or send anything anywhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()}'; "
    "base-uri 'none'; form-action 'none'"
)
