"""Where the package keeps its bundled demo data."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def demo_data_dir() -> Path:
    """Offline task data for the demo: IFEval, GSM8K, HellaSwag and MMLU in their Hub schemas."""
    return PACKAGE_DIR / "data" / "demo"
