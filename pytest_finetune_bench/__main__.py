"""`python -m pytest_finetune_bench`: see cli.py."""

import sys

from pytest_finetune_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
