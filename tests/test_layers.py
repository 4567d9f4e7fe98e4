"""The package's layers (docs/architecture.md): every import points down, no two modules import each other.

Imports are read from the source with `ast`, all of them: at the top, inside functions (lazy
imports of heavy or optional parts) and under `if TYPE_CHECKING:`, since each is a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import pytest_finetune_bench

PACKAGE = "pytest_finetune_bench"
# The imported package's source (the checkout under an editable install, site-packages under a wheel's).
ROOT = Path(pytest_finetune_bench.__file__).resolve().parent
# Top to bottom. A module may import its own package and the packages of lower layers; the packages
# of one layer are independent of each other. "" is the package's own __init__ (BenchError).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("plugin", "cli"),
    ("orchestrate", "init", "demo"),
    ("report",),
    ("run",),
    ("compare",),
    ("plan",),
    ("backends",),
    ("store",),
    ("core", "text"),
    ("",),
)
PYTEST_ONLY_IN = "plugin"


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it was written."""

    module: str  # the importing module
    target: str  # the imported module (a submodule when `from package import submodule` names one)
    line: int

    def where(self) -> str:
        return f"{self.module} (line {self.line}) imports {self.target}"


def module_files() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name, not `.__init__`)."""
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = (PACKAGE, *path.relative_to(ROOT).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports(module: str, path: Path, known: set[str]) -> Iterator[Import]:
    """Every import in `path`: absolute, relative, at any depth of the source."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, path, node)
            for alias in node.names:
                # `from package import submodule` depends on that submodule, not only on the package.
                submodule = f"{base}.{alias.name}"
                yield Import(module, submodule if submodule in known else base, node.lineno)


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    package = package[: len(package) - node.level + 1]
    return ".".join([*package, *([node.module] if node.module else [])])


def package_of(module: str) -> str:
    """The layered part a module belongs to: `plan` for pytest_finetune_bench.plan.tasks, "" for the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(package: str) -> int:
    """Its layer's height: 0 for the bottom one."""
    for height, members in enumerate(reversed(LAYERS)):
        if package in members:
            return height
    raise AssertionError(f"{PACKAGE}.{package} is in no layer: add it to LAYERS here and to docs/architecture.md")


def all_imports() -> list[Import]:
    files = module_files()
    return [found for module, path in files.items() for found in imports(module, path, set(files))]


def internal_imports() -> list[Import]:
    """The imports of the package's own modules, each import statement's target once."""
    found = (i for i in all_imports() if i.target == PACKAGE or i.target.startswith(f"{PACKAGE}."))
    return list(dict.fromkeys(found))


def upward_imports(found: list[Import]) -> list[str]:
    """Each import of a package in a layer above the importer's, or beside it: what breaks the layering."""
    wrong = []
    for i in found:
        source, target = package_of(i.module), package_of(i.target)
        if source != target and layer_of(target) >= layer_of(source):
            wrong.append(f"{i.where()}: {target or PACKAGE} is not below {source}")
    return wrong


def cycles(found: list[Import]) -> list[list[str]]:
    """The groups of modules that import each other in a loop (strongly connected components, Tarjan)."""
    graph: dict[str, set[str]] = {}
    for i in found:
        if i.target != i.module:
            graph.setdefault(i.module, set()).add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return loops


def test_every_import_points_down_the_layers() -> None:
    found = internal_imports()
    assert found, "no imports were read: the walk over the package is broken"
    wrong = upward_imports(found)
    assert not wrong, "imports that run up (or across) the layers of docs/architecture.md:\n" + "\n".join(wrong)


def test_no_modules_import_each_other_in_a_loop() -> None:
    loops = cycles(internal_imports())
    assert not loops, "modules that import each other in a loop (move what they share into one both use):\n" + (
        "\n".join(" ↔ ".join(loop) for loop in loops))


def test_every_package_has_a_layer() -> None:
    for module in module_files():
        layer_of(package_of(module))


def test_pytest_is_imported_only_in_the_plugin() -> None:
    wrong = [i.where() for i in all_imports()
             if i.target.split(".")[0] in ("pytest", "_pytest") and package_of(i.module) != PYTEST_ONLY_IN]
    assert not wrong, f"pytest is the plugin's alone ({PACKAGE}/{PYTEST_ONLY_IN}/):\n" + "\n".join(wrong)


@pytest.mark.parametrize(("source", "expected"), [
    # A lazy import inside a function, under TYPE_CHECKING, or relative: each is read, and each is wrong here.
    ("def f():\n    from pytest_finetune_bench.report import summary\n", "pytest_finetune_bench.report.summary"),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pytest_finetune_bench.run.engine import x\n",
     "pytest_finetune_bench.run.engine"),
    ("from ..orchestrate import session\n", "pytest_finetune_bench.orchestrate.session"),
    ("import pytest_finetune_bench.plugin.hooks\n", "pytest_finetune_bench.plugin.hooks"),
])
def test_the_check_sees_every_kind_of_import(tmp_path: Path, source: str, expected: str) -> None:
    path = tmp_path / "engine.py"
    path.write_text(source)
    module = f"{PACKAGE}.store.engine"
    found = list(imports(module, path, set(module_files())))
    assert [i.target for i in found if i.target.startswith(PACKAGE)] == [expected]
    [wrong] = upward_imports([i for i in found if i.target.startswith(PACKAGE)])
    assert wrong.startswith(f"{module} (line ") and expected in wrong


def test_the_check_finds_a_loop() -> None:
    a, b, c = (f"{PACKAGE}.run.{name}" for name in "abc")
    found = [Import(a, b, 1), Import(b, c, 1), Import(c, a, 3), Import(c, f"{PACKAGE}.core.records", 4)]
    assert cycles(found) == [sorted([a, b, c])]


def test_the_layers_name_only_packages_that_exist() -> None:
    present = {package_of(module) for module in module_files()}
    named = {package for layer in LAYERS for package in layer}
    assert named == present, f"in LAYERS but not in the package: {sorted(named - present)}"

