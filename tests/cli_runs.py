"""The plugin's command line run in this process, read back as a finished command's exit code and output.

A `python -m pytest_finetune_bench …` process spends seconds importing what this process has already
imported; the commands start no process and install no signal handler, so a test may call their entry
point instead. tests/test_demo.py still starts the real command and tests/test_init.py the console script.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from pytest_finetune_bench import cli


def run_cli(*args: str, cwd: Path | None = None, prog: str = cli.PROG) -> subprocess.CompletedProcess[str]:
    """`prog ARGS` run in `cwd` with an empty stdin (as in a script or CI); argparse's exits become the code."""
    out, err = io.StringIO(), io.StringIO()
    with _in_folder(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _stdin(io.StringIO()):
        try:
            code = cli.main(list(args), prog=prog)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess([prog, *args], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _in_folder(folder: Path | None) -> Iterator[None]:
    here = Path.cwd()
    if folder is not None:
        os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


@contextlib.contextmanager
def _stdin(stream: io.StringIO) -> Iterator[None]:
    saved, sys.stdin = sys.stdin, stream
    try:
        yield
    finally:
        sys.stdin = saved
