"""The HuggingFace transformers backend: lm-eval's `hf` model on a merged model folder or Hub id."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.plan.settings import EvalSettings
from pytest_finetune_bench.store.fingerprint import model_fingerprint


class HFBackend:
    name = "hf"
    lm_eval_model = "hf"
    is_server = False
    chat_template_applied_by = "tokenizer"
    child_imports: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._revisions: dict[str, str | None] = {}

    def model_args(self, model: str, settings: EvalSettings) -> dict[str, str]:
        args = {"pretrained": model, "dtype": settings.dtype}
        revision = self.revision(model)
        if revision is not None:
            # Pinned: an upstream update of the same id is another model, never the one measured here.
            args["revision"] = revision
        return args

    def revision(self, model: str) -> str | None:
        """The commit a Hub id stands for, resolved once per session; None for a local folder or when unknown."""
        if model not in self._revisions:
            self._revisions[model] = None if Path(model).is_dir() else hub_commit(model)
        return self._revisions[model]

    def has_chat_template(self, model: str) -> bool:
        folder = Path(model)
        if folder.is_dir():
            return _folder_has_chat_template(folder)
        return _hub_has_chat_template(model, self.revision(model))

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
        if Path(model).is_dir():
            return model_fingerprint(model)
        revision = self.revision(model)
        # A Hub id whose commit is unknown could be any upload of it: nothing is cached for it.
        return None if revision is None else model_fingerprint(model, revision)


def hub_commit(model_id: str) -> str | None:
    """The commit sha of a Hub model's main branch: from the Hub, else (offline) from the local snapshot's ref."""
    from huggingface_hub import HfApi, constants

    if not constants.HF_HUB_OFFLINE:
        try:
            sha = HfApi().model_info(model_id).sha
        except Exception:  # noqa: BLE001 - unreachable, unknown or private: fall back to the local copy
            sha = None
        if sha:
            return str(sha)
    ref = Path(constants.HF_HUB_CACHE) / f"models--{model_id.replace('/', '--')}" / "refs" / "main"
    try:
        return ref.read_text().strip() or None
    except OSError:
        return None


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


def _hub_has_chat_template(model: str, revision: str | None) -> bool:
    try:
        from transformers import AutoTokenizer

        return bool(AutoTokenizer.from_pretrained(model, revision=revision).chat_template)
    except Exception:  # noqa: BLE001 - an unreachable Hub is reported when the model loads
        return False
