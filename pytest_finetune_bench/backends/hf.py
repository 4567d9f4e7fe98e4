"""The HuggingFace transformers backend: lm-eval's `hf` model on a merged model folder or Hub id."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.core.settings import EvalSettings
from pytest_finetune_bench.store.fingerprint import model_fingerprint

# PEFT's files of a LoRA adapter, which lm-eval's hf model loads with `peft=` (plan/models.py finds them).
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


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

    def adapter_args(self, adapter: Path) -> dict[str, str]:
        """lm-eval's hf applies a PEFT adapter with `peft=`; an adapter that ships a tokenizer brings it along."""
        args = {"peft": str(adapter)}
        if adapter_has_tokenizer(adapter):
            # The pipeline saves the fine-tune's tokenizer (its chat template, added tokens) with the adapter,
            # and the merged export carries the same one: evaluating with the base's would measure another model.
            args["tokenizer"] = str(adapter)
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

    def fingerprint(self, model: str, cache_dir: Path) -> str | None:
        if Path(model).is_dir():
            return model_fingerprint(model, cache_dir)
        revision = self.revision(model)
        # A Hub id whose commit is unknown could be any upload of it: nothing is cached for it.
        return None if revision is None else model_fingerprint(model, cache_dir, revision)


def adapter_has_tokenizer(adapter: Path) -> bool:
    """Whether a LoRA adapter folder holds a tokenizer of its own (the pipelines save one beside the adapter)."""
    return (adapter / "tokenizer_config.json").is_file()


def check_custom_code(models: Sequence[tuple[str, str]], trusted: bool) -> None:
    """One-line BenchError, before anything loads, for a (model, role) whose code would run untrusted.

    transformers runs a model folder's own Python (config.json `auto_map`) only with trust_remote_code;
    without it the load fails minutes later with a long traceback. A model type transformers knows is
    loaded with its own classes and needs nothing.
    """
    if trusted:
        return
    for model, role in models:
        code = custom_code_source(model)
        if code is not None:
            raise BenchError(
                f"the {role} model {model} runs its own Python code ({code}), which is loaded only with "
                "--bench-trust-remote-code (ini: bench_trust_remote_code = true): pass it if you trust that code"
            )


def custom_code_source(model: str) -> str | None:
    """Where a model's custom code comes from (its auto_map), or None when transformers' own classes load it."""
    config = _local_config(model)
    auto_map = config.get("auto_map")
    if not isinstance(auto_map, dict) or not auto_map:
        return None
    from transformers import CONFIG_MAPPING

    if config.get("model_type") in CONFIG_MAPPING:
        return None
    references = sorted({str(v[0] if isinstance(v, list) and v else v) for v in auto_map.values()})
    # "org/repo--module.Class" is code from another Hub repository; "module.Class" is a file of the model's own.
    repos = sorted({ref.split("--", 1)[0] for ref in references if "--" in ref})
    return f"from {', '.join(repos)}" if repos else f"{', '.join(references)} in {model}"


def _local_config(model: str) -> dict[str, object]:
    """config.json of a model folder, or of a Hub id's local snapshot; {} when there is none to read."""
    path: Path | None = Path(model) / "config.json"
    if not Path(model).is_dir():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
        path = Path(cached) if isinstance(cached, str) else None
    try:
        data = json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


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
