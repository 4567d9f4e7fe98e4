"""Ollama: GGUF exports served by `ollama serve`, evaluated through its OpenAI-compatible chat endpoint.

lm-eval has no Ollama model type; `local-chat-completions` against http://HOST:11434/v1 is the path
that works. Ollama's own /api/tags answers the pre-flight (is it running, is the model there) and
gives each model's digest, which keys lm-eval's response cache by content instead of by name.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends.openai import OpenAIBackend, check_base_url, fetch_json

DEFAULT_URL = "http://localhost:11434"


def server_root(url: str) -> str:
    """Ollama's root address, whether given as http://host:11434 or http://host:11434/v1[/…]."""
    root = check_base_url(url).rstrip("/")
    head, sep, _ = root.partition("/v1")
    return head if sep else root


class OllamaBackend(OpenAIBackend):
    """`local-chat-completions` on Ollama's /v1 endpoint, with Ollama-specific pre-flight advice."""

    name = "ollama"

    def __init__(self, base_url: str | None = None, num_concurrent: int = 1) -> None:
        self.root = server_root(base_url or DEFAULT_URL)
        super().__init__(f"{self.root}/v1", num_concurrent)
        self._digests: dict[str, str] = {}

    def fingerprint(self, model: str, cache_dir: Path) -> str | None:
        digest = self._digests.get(model)
        return f"ollama:{digest}" if digest else None

    def preflight(self, model: str, role: str, gguf_files: Sequence[Path] = ()) -> None:
        tags = fetch_json(
            f"{self.root}/api/tags", f"Ollama is not running at {self.root}: start it with `ollama serve`"
        )
        models = [m for m in tags.get("models", []) if isinstance(m, dict)]
        installed = {str(m.get("name")): str(m.get("digest", "")) for m in models}
        # `ollama create NAME` stores NAME:latest, and the API answers to both spellings.
        digest = installed.get(model) or installed.get(f"{model}:latest")
        if digest is None:
            raise BenchError(self._missing(model, role, sorted(installed), gguf_files))
        self._digests[model] = digest

    def _missing(self, model: str, role: str, served: list[str], gguf_files: Sequence[Path]) -> str:
        where = f"{role} model {model!r} is not in Ollama at {self.root}"
        if role == "base":
            listed = ", ".join(served) or "none"
            return f"{where}: run `ollama pull {shlex.quote(model)}`, or pass --bench-base NAME (installed: {listed})"
        if not gguf_files:
            return (
                f"{where} and no GGUF export was found (outputs/<name>/gguf/*.gguf): export one, then "
                f"`ollama create {shlex.quote(model)} -f Modelfile`, or pass --bench-server-model NAME"
            )
        return f"{where}: import the GGUF export with `{create_command(model, gguf_files[0])}`"


def create_command(model: str, gguf: Path) -> str:
    """`ollama create MODEL -f Modelfile`, with a Modelfile beside the GGUF (Unsloth's own when present)."""
    modelfile = gguf.parent / "Modelfile"
    if not modelfile.is_file():
        try:
            # A relative FROM keeps the folder movable; Ollama reads the chat template from the GGUF.
            modelfile.write_text(f"FROM ./{gguf.name}\n")
        except OSError:
            line = shlex.quote(f"FROM {gguf.resolve()}")
            return f"echo {line} > Modelfile && ollama create {shlex.quote(model)} -f Modelfile"
    return f"ollama create {shlex.quote(model)} -f {shlex.quote(str(modelfile.resolve()))}"
