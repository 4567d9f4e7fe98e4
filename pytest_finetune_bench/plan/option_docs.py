"""docs/configuration.md's table of settings, made from the one option table (plan/option_table.py).

tests/test_docs.py compares the table in the docs with `markdown_table()`, so the docs cannot drift
from the flags: after changing a row, paste the output of `python -m pytest_finetune_bench.plan.option_docs`.
"""

from __future__ import annotations

from pytest_finetune_bench.plan.option_table import OPTIONS, Option
from pytest_finetune_bench.text import markdown_inline

HEADERS = ("Flag", "ini key", "Environment", "Default", "Summary (as `pytest --help` says it)")
NO_DEFAULT = "—"  # the option is unset: the summary (and the details below the table) say what that means


def markdown_row(option: Option) -> str:
    """One option's row: flag and value, ini key, environment variable, default and its help text."""
    flag = f"`{option.flag}`" if option.switch else f"`{option.flag} {option.metavar}`"
    if option.switch:
        default = "off"
    elif option.default in (None, "default"):
        default = NO_DEFAULT
    else:
        default = f"`{option.default}`"
    env = f"`{option.env}`" if option.env else ""
    cells = (flag, f"`{option.ini}`", env, default, markdown_inline(option.help))
    return "| " + " | ".join(cells) + " |"


def markdown_table() -> str:
    """The table of every `--bench-*` option, in the table's order."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    return "\n".join([*lines, *(markdown_row(option) for option in OPTIONS)]) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
