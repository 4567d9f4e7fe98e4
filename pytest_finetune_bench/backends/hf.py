"""The HuggingFace transformers backend: lm-eval's `hf` model on a merged model folder or Hub id."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from pytest_finetune_bench.errors import BenchError
from pytest_finetune_bench.fingerprint import model_fingerprint
from pytest_finetune_bench.settings import EvalSettings


class HFBackend:
    name = "hf"
    lm_eval_model = "hf"
    is_server = False
    chat_template_applied_by = "tokenizer"

    def model_args(self, model: str, settings: EvalSettings) -> dict[str, str]:
        return {"pretrained": model, "dtype": settings.dtype}

    def has_chat_template(self, model: str) -> bool:
        folder = Path(model)
        if folder.is_dir():
            return _folder_has_chat_template(folder)
        return _hub_has_chat_template(model)

    def preflight(self, model: str, role: str, gguf_files: Sequence[Path] = ()) -> None:
        # A missing Hub id is reported by transformers when the model loads; a folder can be checked now.
        folder = Path(model)
        if folder.is_dir() and not (folder / "config.json").is_file():
            flag = "--bench-base" if role == "base" else "--bench-model"
            raise BenchError(
                f"{role} model folder {folder} has no config.json: it is not a Hugging Face model folder "
                f"(for a LoRA adapter, merge it first); pass {flag} a model folder or Hub id"
            )

    def unsupported_tasks(self, output_types: Mapping[str, frozenset[str]]) -> dict[str, str]:
        # transformers gives log-likelihoods and generations alike.
        return {}

    def fingerprint(self, model: str) -> str | None:
        return model_fingerprint(model)


def _folder_has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return False
    try:
        return bool(json.loads(config.read_text()).get("chat_template"))
    except (OSError, ValueError):
        return False


def _hub_has_chat_template(model: str) -> bool:
    try:
        from transformers import AutoTokenizer

        return bool(AutoTokenizer.from_pretrained(model).chat_template)
    except Exception:  # noqa: BLE001 - an unreachable Hub is reported when the model loads
        return False
