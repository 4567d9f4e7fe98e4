"""pytest-finetune-bench: did my fine-tune help, and did it break anything?"""

from __future__ import annotations

__version__ = "0.1.0"


class BenchError(Exception):
    """Bad input or an unusable environment, explained in one actionable line that says what to do."""
