"""The offline demo: SmolLM2-135M-Instruct fine-tuned with LoRA on the CPU, and its bundled benchmark data."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def demo_data_dir() -> Path:
    """Offline task data for the demo: IFEval, GSM8K, HellaSwag and MMLU in their Hub schemas."""
    return PACKAGE_DIR / "data" / "demo"
