"""Write bench_* keys into the project's pytest configuration, leaving everything else as it was.

pyproject.toml is edited as text, statement by statement (each found by parsing it alone with
tomllib), so comments, order and other tables stay; INI files (pytest.ini, tox.ini) line by line.
Either way the result is parsed again and must equal the old configuration plus the new keys before
it replaces the file (atomically), so a file this cannot edit safely is refused, never damaged.
"""

from __future__ import annotations

import copy
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import iniconfig

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.store.files import atomic_write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Value = str | tuple[str, ...]  # a tuple for the keys that take several values (pytest's "args" ini type)
INI_OPTIONS = ("tool", "pytest", "ini_options")
NATIVE = ("tool", "pytest")  # pytest 9's own TOML table
INI_SECTION = "pytest"


@dataclass(frozen=True)
class ConfigTarget:
    """The file the keys go to, and the table or section inside it."""

    path: Path
    toml_table: tuple[str, ...] | None  # None: an INI file, section [pytest]

    @property
    def where(self) -> str:
        section = "[pytest]" if self.toml_table is None else f"[{'.'.join(self.toml_table)}]"
        return f"{self.path.name} {section}"


@dataclass(frozen=True)
class Changes:
    """What a write did: keys added, keys replaced (with their old text) and bench_* keys it left alone."""

    added: tuple[str, ...]
    replaced: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)


def locate_config(cwd: Path) -> ConfigTarget:
    """The file pytest reads its settings from in `cwd`, in pytest's order; pytest.ini when there is none yet."""
    for name in ("pytest.toml", ".pytest.toml"):
        if (cwd / name).is_file():
            raise BenchError(f"{name} holds this project's pytest settings, and init does not edit it: "
                             "add the bench_* keys by hand (docs/configuration.md)")
    for name in ("pytest.ini", ".pytest.ini"):
        if (cwd / name).is_file():
            return ConfigTarget(cwd / name, None)
    pyproject = cwd / "pyproject.toml"
    table = _pyproject_table(pyproject) if pyproject.is_file() else None
    if table is not None and _has_table(_read_toml(pyproject), table):
        return ConfigTarget(pyproject, table)
    tox = cwd / "tox.ini"
    if tox.is_file() and INI_SECTION in _read_ini(tox, tox.read_text()):
        return ConfigTarget(tox, None)
    setup_cfg = cwd / "setup.cfg"
    if setup_cfg.is_file() and "tool:pytest" in _read_ini(setup_cfg, setup_cfg.read_text()):
        raise BenchError("setup.cfg [tool:pytest] holds this project's pytest settings, and init does not edit it: "
                         "move them to pytest.ini, or pass --config pytest.ini after doing so")
    if table is not None:
        return ConfigTarget(pyproject, table)
    return ConfigTarget(cwd / "pytest.ini", None)


def target_for(path: Path) -> ConfigTarget:
    """The target of `--config FILE`: a .toml file gets [tool.pytest.ini_options], any other file [pytest]."""
    if path.suffix != ".toml":
        return ConfigTarget(path, None)
    return ConfigTarget(path, _pyproject_table(path) if path.is_file() else INI_OPTIONS)


def write_config(target: ConfigTarget, keys: dict[str, Value]) -> Changes:
    """Put `keys` into the target file (created if missing), verified, atomically."""
    old = target.path.read_text(encoding="utf-8") if target.path.is_file() else ""
    if target.toml_table is None:
        new, changes = edit_ini(old, keys, target.path)
    else:
        new, changes = edit_toml(old, keys, target.path, target.toml_table)
    atomic_write_text(target.path, new)
    return changes


# --- pyproject.toml ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Statement:
    """Lines [start, end) of one TOML statement: a table header (`table`) or a key/value (`key`)."""

    start: int
    end: int
    table: tuple[str, ...] | None
    key: str | None


def edit_toml(text: str, keys: dict[str, Value], path: Path,
              table: tuple[str, ...] = INI_OPTIONS) -> tuple[str, Changes]:
    """`text` with `keys` set in `table`: replaced where they are, added after its last key otherwise."""
    before = _parse_toml(text, path)
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += newline
    statements = _toml_statements(lines, path)
    header = next((i for i, s in enumerate(statements) if s.table == table), None)
    old_values = _get_table(before, table)
    kept = {k: _show(v) for k, v in old_values.items() if k.startswith("bench_") and k not in keys}
    replaced = {k: _show(old_values[k]) for k in keys if k in old_values}
    rendered = {key: f"{key} = {_toml_value(value)}{newline}" for key, value in keys.items()}
    if header is None:
        block = ([newline] if lines and lines[-1].strip() else []) + [f"[{'.'.join(table)}]{newline}"]
        lines += block + list(rendered.values())
    else:
        section = _section(statements, header)
        for statement in reversed(section):
            if statement.key in rendered:
                lines[statement.start:statement.end] = [rendered[statement.key]]
        after = (section[-1] if section else statements[header]).end
        after -= sum(s.end - s.start - 1 for s in section if s.key in rendered)
        lines[after:after] = [line for key, line in rendered.items() if key not in old_values]
    new = "".join(lines)
    expected = copy.deepcopy(before)
    _get_table(expected, table, create=True).update(
        {k: list(v) if isinstance(v, tuple) else v for k, v in keys.items()})
    try:
        after_doc = tomllib.loads(new)
    except tomllib.TOMLDecodeError:
        after_doc = None
    if after_doc != expected:
        raise BenchError(f"{path}: cannot add the bench_* keys here without changing anything else; add them under "
                         f"[{'.'.join(table)}] by hand: {'; '.join(line.strip() for line in rendered.values())}")
    return new, Changes(tuple(k for k in keys if k not in old_values), replaced, kept)


def _toml_statements(lines: list[str], path: Path) -> list[_Statement]:
    """Every statement, each the fewest lines from its first that parse alone (multi-line arrays, strings)."""
    statements = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        for end in range(i + 1, len(lines) + 1):
            try:
                parsed = tomllib.loads("".join(lines[i:end]))
            except tomllib.TOMLDecodeError:
                continue
            break
        else:
            raise BenchError(f"{path} is not valid TOML from line {i + 1}: fix it first")
        if stripped.startswith("["):
            statements.append(_Statement(i, end, _header_path(parsed, stripped.startswith("[[")), None))
        else:
            statements.append(_Statement(i, end, None, next(iter(parsed), None)))
        i = end
    return statements


def _header_path(parsed: dict[str, Any], array: bool) -> tuple[str, ...]:
    path: list[str] = []
    node: Any = parsed
    while isinstance(node, dict) and len(node) == 1:
        name, node = next(iter(node.items()))
        path.append(name)
    return ("[[", *path) if array else tuple(path)  # an array of tables is never the table we edit


def _section(statements: list[_Statement], header: int) -> list[_Statement]:
    section = []
    for statement in statements[header + 1:]:
        if statement.table is not None:
            break
        section.append(statement)
    return section


def _get_table(doc: dict[str, Any], table: tuple[str, ...], create: bool = False) -> dict[str, Any]:
    node: Any = doc
    for name in table:
        if create:
            node = node.setdefault(name, {})
        else:
            node = node.get(name, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _has_table(doc: dict[str, Any], table: tuple[str, ...]) -> bool:
    node: Any = doc
    for name in table:
        if not isinstance(node, dict) or name not in node:
            return False
        node = node[name]
    return True


def _pyproject_table(path: Path) -> tuple[str, ...]:
    """[tool.pytest] when the file already uses pytest 9's native table, else [tool.pytest.ini_options]."""
    native = _get_table(_read_toml(path), NATIVE)
    return NATIVE if set(native) - {"ini_options"} else INI_OPTIONS


def _read_toml(path: Path) -> dict[str, Any]:
    return _parse_toml(path.read_text(encoding="utf-8"), path)


def _parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        parsed: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"{path} is not valid TOML ({exc}): fix it first") from None
    return parsed


def _toml_value(value: Value) -> str:
    # JSON's string escapes are TOML's, once non-ASCII text is kept as it is.
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


# --- pytest.ini, tox.ini ----------------------------------------------------------------------------


def edit_ini(text: str, keys: dict[str, Value], path: Path) -> tuple[str, Changes]:
    """`text` with `keys` set in its [pytest] section (added at the end when it has none)."""
    before = _read_ini(path, text) if text else {}
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += newline
    rendered = {key: f"{key} = {_ini_value(key, value)}{newline}" for key, value in keys.items()}
    old_values = before.get(INI_SECTION, {})
    section = _ini_section(lines)
    if section is None:
        block = ([newline] if lines and lines[-1].strip() else []) + [f"[{INI_SECTION}]{newline}"]
        lines += block + list(rendered.values())
    else:
        header, spans = section
        for key, (start, end) in sorted(spans.items(), key=lambda item: -item[1][0]):
            if key in rendered:
                lines[start:end] = [rendered[key]]
        last = max((end for _, end in spans.values()), default=header + 1)
        last -= sum(end - start - 1 for key, (start, end) in spans.items() if key in rendered)
        lines[last:last] = [line for key, line in rendered.items() if key not in spans]
    new = "".join(lines)
    expected = copy.deepcopy(before)
    expected.setdefault(INI_SECTION, {}).update({k: _ini_value(k, v) for k, v in keys.items()})
    try:
        after_doc: dict[str, dict[str, str]] | None = _read_ini(path, new)
    except BenchError:
        after_doc = None
    if after_doc != expected:
        raise BenchError(f"{path}: cannot add the bench_* keys here without changing anything else; add them under "
                         f"[pytest] by hand: {'; '.join(line.strip() for line in rendered.values())}")
    kept = {k: v for k, v in old_values.items() if k.startswith("bench_") and k not in keys}
    replaced = {k: old_values[k] for k in keys if k in old_values}
    return new, Changes(tuple(k for k in keys if k not in old_values), replaced, kept)


def _ini_section(lines: list[str]) -> tuple[int, dict[str, tuple[int, int]]] | None:
    """The [pytest] header's line and each key's lines (with its indented continuation lines)."""
    header: int | None = None
    spans: dict[str, tuple[int, int]] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("["):
            if header is not None:
                break
            if line.strip().split("#")[0].strip() == f"[{INI_SECTION}]":
                header = i
        elif header is not None and line.strip() and line[0] not in " \t#;":
            end = i + 1
            while end < len(lines) and lines[end][:1] in (" ", "\t") and lines[end].strip():
                end += 1
            key = line.split("=", 1)[0].split(":", 1)[0].strip()
            spans.setdefault(key, (i, end))
            i = end
            continue
        i += 1
    return None if header is None else (header, spans)


def _ini_value(key: str, value: Value) -> str:
    text = shlex.join(value) if isinstance(value, tuple) else value
    if "\n" in text or "\r" in text or text != text.strip():
        raise BenchError(f"{key}: {text!r} cannot be written on one line of an INI file")
    return text


def _read_ini(path: Path, text: str) -> dict[str, dict[str, str]]:
    try:
        parsed = iniconfig.IniConfig(str(path), data=text)
    except iniconfig.ParseError as exc:
        raise BenchError(f"{path} cannot be read as pytest reads it ({exc}): fix it first") from None
    return {section.name: dict(section.items()) for section in parsed}
