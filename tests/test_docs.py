"""The documentation cannot drift from the code: options, ini keys and links are checked against the real plugin.

Flags and ini keys come from `pytest --help` (what users see), not from the source.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import pytest_finetune_bench
from pytest_finetune_bench.plan.option_docs import markdown_table
from pytest_finetune_bench.plan.option_table import OPTIONS
from pytest_finetune_bench.plan.tasks import LM_EVAL_INSTALL

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Every Markdown page users read: the docs, the README and the examples' READMEs.
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md", *sorted((ROOT / "conftest_examples").glob("*/README.md"))]
CONFIGURATION = DOCS / "configuration.md"
# Where the docs' links into the package lead: the imported package (site-packages when a wheel is tested).
PACKAGE = Path(pytest_finetune_bench.__file__).resolve().parent
REQUIRED_PAGES = (
    "quickstart.md", "configuration.md", "backends.md", "servers.md", "offline.md", "thresholds.md",
    "troubleshooting.md", "faq.md", "results.md", "performance.md",
)

_FLAG_DEFINITION = re.compile(r"^  (--bench-[a-z0-9-]+)", re.M)
_INI_DEFINITION = re.compile(r"^  (bench_[a-z0-9_]+) \(", re.M)
_FLAG_MENTION = re.compile(r"--bench-[a-z0-9]+(?:-[a-z0-9]+)*")
_INI_MENTION = re.compile(r"\bbench_[a-z0-9]+(?:_[a-z0-9]+)*\b")
_FIXTURE_LINE = re.compile(r"^(bench_[a-z0-9_]+)\b", re.M)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
# "[pytest] ini-options in the first …" (pytest 8) or "[pytest] configuration options in the first …" (pytest 9)
_INI_SECTION_START = re.compile(r"^\[pytest\] .* file found:$", re.M)


def help_text(pytester: pytest.Pytester) -> str:
    result = pytester.runpytest("--help")
    assert result.ret == 0, result.stderr.str()
    return result.stdout.str()


def help_flags(text: str) -> set[str]:
    """The `--bench-*` flags defined in `pytest --help` (definition lines only, not mentions in help texts)."""
    return set(_FLAG_DEFINITION.findall(text))


def help_ini_keys(text: str) -> set[str]:
    """The `bench_*` keys of the `[pytest] ini-options` section of `pytest --help`."""
    start = _INI_SECTION_START.search(text)
    assert start is not None, "pytest --help has no [pytest] ini-options section"
    section = text[start.end():]
    end = section.find("\nEnvironment variables:")
    return set(_INI_DEFINITION.findall(section if end < 0 else section[:end]))


def fixture_names(pytester: pytest.Pytester) -> set[str]:
    """The plugin's `bench_*` fixtures: names in the docs that are neither flags nor ini keys."""
    return set(_FIXTURE_LINE.findall(pytester.runpytest("--fixtures").stdout.str()))


def test_the_documentation_pages_exist() -> None:
    missing = [name for name in REQUIRED_PAGES if not (DOCS / name).is_file()]
    assert not missing, f"docs/ lacks {missing}"


def test_help_is_parsed_into_flags_and_their_ini_twins(pytester: pytest.Pytester) -> None:
    """Guards the parsing below: a change in pytest's --help layout must not make the other checks vacuous."""
    text = help_text(pytester)
    flags, keys = help_flags(text), help_ini_keys(text)
    assert {"--bench-model", "--bench-suite", "--bench-max-drop"} <= flags
    assert {f"bench_{flag.removeprefix('--bench-').replace('-', '_')}" for flag in flags} == keys


def reference_rows(path: Path) -> dict[str, list[list[str]]]:
    """{flag: [cells of each table row whose first cell names that flag]} of a Markdown page."""
    rows: dict[str, list[list[str]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        flag = _FLAG_MENTION.search(cells[0])
        if flag:
            rows.setdefault(flag.group(), []).append(cells)
    return rows


def test_configuration_reference_has_a_row_for_every_option(pytester: pytest.Pytester) -> None:
    """One table row per option: its flag, its ini key, its environment variable (if any), a default, a meaning."""
    text = help_text(pytester)
    rows = reference_rows(CONFIGURATION)
    env_of = {opt.flag: opt.env for opt in OPTIONS}
    problems = []
    for flag in sorted(help_flags(text)):
        ini = f"bench_{flag.removeprefix('--bench-').replace('-', '_')}"
        found = rows.get(flag, [])
        if len(found) != 1:
            problems.append(f"{flag}: {len(found)} rows")
            continue
        cells = found[0]
        if len(cells) != 5:
            problems.append(f"{flag}: {len(cells)} cells instead of flag, ini key, environment, default, meaning")
            continue
        if cells[1] != f"`{ini}`":
            problems.append(f"{flag}: ini key cell {cells[1]!r}, expected `{ini}`")
        expected_env = f"`{env_of[flag]}`" if env_of.get(flag) else ""
        if cells[2] != expected_env:
            problems.append(f"{flag}: environment cell {cells[2]!r}, expected {expected_env!r}")
        if not cells[3] or not cells[4]:
            problems.append(f"{flag}: empty default or meaning")
    assert not problems, "docs/configuration.md:\n" + "\n".join(problems)


def help_entries(text: str) -> dict[str, str]:
    """{--bench-* flag as defined (`--bench-suite=NAME`): its help text} from `pytest --help`, whitespace dropped
    (argparse wraps the text and may break a line after a hyphen)."""
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        definition = re.match(r"^  (--bench-\S+)(.*)$", line)
        if definition:
            current = entries.setdefault(definition.group(1), [])
            current.append(definition.group(2))
        elif current is not None and line.startswith(" " * 8):
            current.append(line)
        else:
            current = None
    return {flag: _packed("".join(parts)) for flag, parts in entries.items()}


def _packed(text: str) -> str:
    return "".join(text.split())


def test_each_flags_help_as_pytest_prints_it_comes_from_the_option_table(pytester: pytest.Pytester) -> None:
    entries = help_entries(help_text(pytester))
    assert len(entries) == len(OPTIONS)
    for opt in OPTIONS:
        shown = entries.get(opt.flag if opt.switch else f"{opt.flag}={opt.metavar}")
        assert shown is not None, f"{opt.flag} is not defined as the table says in pytest --help"
        assert shown.startswith(_packed(opt.help)), opt.flag
        suffix = " = true" if opt.switch else ""
        assert shown.endswith(_packed(f"; ini: {opt.ini}{suffix}")), opt.flag
        if opt.default not in (None, "default") and not opt.switch:
            assert _packed(f"[default: {opt.default}]") in shown, opt.flag
        if opt.env:
            assert _packed(f"environment: {opt.env}") in shown, opt.flag


def test_the_docs_table_of_settings_is_made_from_the_option_table() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    start = text.index("| Flag | ini key |")
    table = text[start:text.index("\n\n", start) + 1]
    assert table == markdown_table(), ("docs/configuration.md's table of settings differs from the option table: "
                                       "paste the output of `python -m pytest_finetune_bench.plan.option_docs`")
    details = text[text.index("### Each setting in detail"):]
    documented = re.findall(r"^- `(--bench-[a-z0-9-]+)[ `]", details, re.M)
    assert documented == [opt.flag for opt in OPTIONS], "one detail entry per option, in the table's order"


def test_every_flag_and_ini_key_in_the_docs_exists(pytester: pytest.Pytester) -> None:
    text = help_text(pytester)
    flags, keys = help_flags(text), help_ini_keys(text) | fixture_names(pytester)
    unknown = []
    for page in PAGES:
        content = page.read_text(encoding="utf-8")
        for name in sorted(set(_FLAG_MENTION.findall(content)) - flags):
            unknown.append(f"{page.relative_to(ROOT)}: {name}")
        for name in sorted(set(_INI_MENTION.findall(content)) - keys):
            unknown.append(f"{page.relative_to(ROOT)}: {name}")
    assert not unknown, "options that `pytest --help` does not know:\n" + "\n".join(unknown)


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", page.read_text(encoding="utf-8"), re.M)
    return {github_anchor(h) for h in headings}


def in_package(path: Path) -> Path:
    """`path`, or where it is in the imported package when it is a file of the checkout's package folder."""
    source = ROOT / PACKAGE.name
    return PACKAGE / path.relative_to(source) if path.is_relative_to(source) else path


def test_relative_links_resolve() -> None:
    broken = []
    for page in PAGES:
        for target in _LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto: outside the repository
            path_part, _, anchor = target.partition("#")
            resolved = in_package((page.parent / path_part).resolve()) if path_part else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_pinned_lm_eval_install_line_is_the_declared_requirement() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirement = next(r for r in project["dependencies"] if r.startswith("lm-eval"))
    assert LM_EVAL_INSTALL == f"pip install '{requirement}'"
    quoted = [(page.name, line) for page in PAGES
              for line in re.findall(r"pip install '(lm-eval\[[^']*\]==[^']*)'", page.read_text(encoding="utf-8"))]
    assert quoted, "no page quotes the pinned install line"
    assert [q for q in quoted if q[1] != requirement] == []
