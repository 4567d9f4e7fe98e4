"""OpenAI-compatible servers (llama.cpp, vLLM, LM Studio, hosted APIs): lm-eval's `local-chat-completions`.

The model is reached by its served name. The server renders the chat template, so lm-eval sends
messages, not a prompt string, and no log-likelihoods come back: tasks scored from them are
skipped with a reason instead of being run. The API key is read by lm-eval from OPENAI_API_KEY at
request time and appears in no model argument, file or command this plugin writes; it is stripped of
surrounding spaces and line breaks, checked before any request, and no error message carries it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import queue
import re
import shlex
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.core.settings import EvalSettings
from pytest_finetune_bench.core.task_types import LOGLIKELIHOOD_TYPES

API_KEY_ENV = "OPENAI_API_KEY"  # the variable lm-eval's local-chat-completions reads its bearer token from
MAX_RETRIES = 5  # lm-eval retries a failed request with exponential backoff (1 s, 2 s, 4 s, 8 s)
PREFLIGHT_TIMEOUT_S = 10.0  # for the whole pre-flight request, not per read: a trickling server cannot stretch it
PREFLIGHT_MAX_BYTES = 16 * 1024 * 1024  # far above any models list; a server streaming more is not one
_CHUNK_BYTES = 64 * 1024
_SERVED_NAME_JUNK = re.compile(r"[^a-z0-9._:/-]+")


def check_base_url(url: str) -> str:
    """A server address as given (stripped); BenchError for non-HTTP URLs and URLs carrying credentials."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchError(f"{url!r} is not an http(s) server address: use e.g. http://127.0.0.1:8080/v1")
    if parts.username or parts.password:
        # The URL is written to benchmark.json and the reproduce command; the key must not be.
        raise BenchError(f"the server address must not carry credentials: put the API key in {API_KEY_ENV} instead")
    return url


def api_root(url: str) -> str:
    """The OpenAI API root (…/v1) of an address given with or without /v1 or /v1/chat/completions."""
    root = check_base_url(url).rstrip("/")
    for suffix in ("/chat/completions", "/completions", "/models"):
        root = root.removesuffix(suffix)
    # A bare host:port means the usual /v1 root; any other path is the API root already (…/v1beta/openai).
    return root + "/v1" if urlsplit(root).path in ("", "/") else root


def served_name(folder_name: str) -> str:
    """Default served name for a model folder: lower case, with characters servers reject replaced."""
    return _SERVED_NAME_JUNK.sub("-", folder_name.lower()).strip("-.") or "model"


def api_key() -> str | None:
    """The API key, stripped of surrounding whitespace; None when unset or blank.

    BenchError (which never shows the key) when it holds a character an HTTP header cannot carry:
    requests would otherwise raise an error that quotes the whole header, key included.
    """
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        return None
    if not all("!" <= char <= "~" for char in key):
        raise BenchError(
            f"{API_KEY_ENV} holds a space, line break, control or non-ASCII character inside the key, which an "
            "HTTP header cannot carry: set it again to the key alone"
        )
    return key


def child_api_key(environ: Mapping[str, str]) -> dict[str, str]:
    """The key variable for lm-eval's process, stripped as api_key() does; {} when it is unset."""
    return {API_KEY_ENV: environ[API_KEY_ENV].strip()} if API_KEY_ENV in environ else {}


def without_key(text: str) -> str:
    """`text` with the API key, if it appears, replaced: for messages built from other programs' errors."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    return text.replace(key, "<" + API_KEY_ENV + ">") if len(key) >= 4 else text


def auth_headers() -> dict[str, str]:
    """The bearer token lm-eval will send, for the pre-flight requests (never stored)."""
    key = api_key()
    return {"Authorization": f"Bearer {key}"} if key else {}


def fetch_json(url: str, unreachable: str) -> Any:
    """GET `url` as JSON within PREFLIGHT_TIMEOUT_S and PREFLIGHT_MAX_BYTES; `unreachable` is the one-line
    BenchError when nothing answers.

    No message quotes the request's errors: they can hold its headers, and so the key.
    """
    status, body = _bounded_get(url, unreachable)
    if status in (401, 403):
        raise BenchError(f"{url} refused the request (HTTP {status}): set {API_KEY_ENV} to a valid key")
    if not 200 <= status < 400:
        raise BenchError(f"{url} answered HTTP {status}: check --bench-base-url and --bench-backend")
    try:
        return json.loads(body)
    except ValueError:
        raise BenchError(f"{url} did not answer JSON: check --bench-base-url and --bench-backend") from None


def _bounded_get(url: str, unreachable: str) -> tuple[int, bytes]:
    """(status, body) of GET `url`, or a one-line BenchError once the deadline passes.

    requests' timeout bounds each read, not the whole answer, so a server sending a byte now and then
    holds it indefinitely (also while it sends the headers). The request runs in a daemon thread and
    the caller stops waiting at the deadline; a thread left behind ends at the byte cap, at its first
    chunk read after the deadline, or with the process.
    """
    headers = auth_headers()  # a malformed key stops here, in this thread, before any request
    deadline = time.monotonic() + PREFLIGHT_TIMEOUT_S
    outcome: queue.Queue[tuple[int, bytes] | Exception] = queue.Queue(maxsize=1)

    def attempt() -> None:
        try:
            outcome.put(_get_capped(url, headers, unreachable, deadline))
        except Exception as exc:  # noqa: BLE001 - handed to the caller, which raises it
            outcome.put(exc)

    threading.Thread(target=attempt, name="bench-preflight", daemon=True).start()
    try:
        answer = outcome.get(timeout=PREFLIGHT_TIMEOUT_S)
    except queue.Empty:
        answer = _too_slow(url)
    if isinstance(answer, Exception):
        raise answer
    return answer


def _get_capped(url: str, headers: dict[str, str], unreachable: str, deadline: float) -> tuple[int, bytes]:
    import requests

    try:
        with requests.get(url, headers=headers, timeout=PREFLIGHT_TIMEOUT_S, stream=True) as response:
            body = bytearray()
            for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
                body += chunk
                if len(body) > PREFLIGHT_MAX_BYTES:
                    raise BenchError(f"{url} answered more than {PREFLIGHT_MAX_BYTES // 2**20} MiB, which is no "
                                     "models list: check --bench-base-url and --bench-backend")
                if time.monotonic() > deadline:
                    raise _too_slow(url)
            return response.status_code, bytes(body)
    except requests.ConnectionError:
        # A refused or unreachable address; ConnectTimeout is one too.
        raise BenchError(unreachable) from None
    except requests.Timeout:
        raise _too_slow(url) from None
    except requests.RequestException as exc:
        raise BenchError(f"the request to {url} failed ({type(exc).__name__}): check --bench-base-url and "
                         f"{API_KEY_ENV}") from None


def _too_slow(url: str) -> BenchError:
    return BenchError(f"{url} did not answer within {PREFLIGHT_TIMEOUT_S:g} s: check that the server is healthy "
                      "and that --bench-base-url points at its API")


def cleartext_key_warning(url: str | None) -> str | None:
    """A warning when the API key would cross the network unencrypted: plain http to a host not on this machine."""
    if not url or not os.environ.get(API_KEY_ENV):
        return None
    parts = urlsplit(url)
    if parts.scheme != "http" or _is_loopback(parts.hostname or ""):
        return None
    return (f"[bench] WARNING: {API_KEY_ENV} is sent unencrypted to {parts.hostname} over plain http: "
            "use an https:// address for a server on another machine")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loglikelihood_skips(output_types: Mapping[str, frozenset[str]], server: str) -> dict[str, str]:
    """{task: reason} for the tasks that need log-likelihoods, which chat completions do not return."""
    skipped = {}
    for task, types in output_types.items():
        needed = sorted(types & LOGLIKELIHOOD_TYPES)
        if not needed:
            continue
        generative = " (lm-eval's generative MMLU: --bench-tasks mmlu_generative)" if task.startswith("mmlu") else ""
        skipped[task] = (
            f"{task} is scored from log-likelihoods ({', '.join(needed)}), which the {server} server's chat "
            f"completions do not return: benchmark it with --bench-backend hf on the merged model, or use a "
            f"generative task instead{generative}"
        )
    return skipped


class OpenAIBackend:
    """lm-eval's `local-chat-completions` against any OpenAI-compatible server."""

    name = "openai"
    lm_eval_model = "local-chat-completions"
    is_server = True
    chat_template_applied_by = "server"
    child_imports: tuple[str, ...] = ()

    def __init__(self, base_url: str, num_concurrent: int = 1) -> None:
        self.api_root = api_root(base_url)
        self.num_concurrent = num_concurrent

    def model_args(self, model: str, settings: EvalSettings) -> dict[str, str]:
        return {
            "model": model,
            "base_url": f"{self.api_root}/chat/completions",
            "num_concurrent": str(self.num_concurrent),
            "max_retries": str(MAX_RETRIES),
            # The server tokenizes; lm-eval loads no tokenizer for a served name.
            "tokenized_requests": "False",
        }

    def adapter_args(self, adapter: Path) -> dict[str, str]:
        raise BenchError(f"the {self.name} backend serves whole models by name and cannot apply the LoRA adapter "
                         f"{adapter}: use --bench-backend hf (or vllm), or serve the merged model")

    def has_chat_template(self, model: str) -> bool:
        # The server renders every chat request with the model's own template.
        return True

    def unsupported_tasks(self, output_types: Mapping[str, frozenset[str]]) -> dict[str, str]:
        return loglikelihood_skips(output_types, self.name)

    def fingerprint(self, model: str, cache_dir: Path) -> str | None:
        # A served name says nothing about the weights behind it, so lm-eval's response cache stays off.
        return None

    def preflight(self, model: str, role: str, gguf_files: Sequence[Path] = ()) -> None:
        models_url = f"{self.api_root}/models"
        answer = fetch_json(
            models_url,
            f"no OpenAI-compatible server at {self.api_root}: start it (e.g. `python -m llama_cpp.server "
            f"--model MODEL.gguf --model_alias {shlex.quote(model)}`) or fix --bench-base-url",
        )
        served = [str(m.get("id")) for m in answer.get("data", []) if isinstance(m, dict)]
        if model not in served:
            raise BenchError(self._missing(model, role, served, gguf_files))

    def _missing(self, model: str, role: str, served: list[str], gguf_files: Sequence[Path]) -> str:
        flag = "--bench-base" if role == "base" else "--bench-server-model"
        listed = ", ".join(served) or "none"
        example = (
            f" (e.g. `python -m llama_cpp.server --model {shlex.quote(str(gguf_files[0]))} "
            f"--model_alias {shlex.quote(model)}`)" if gguf_files else ""
        )
        where = f"{role} model {model!r} is not served at {self.api_root} (it serves: {listed})"
        return f"{where}: serve it under that name{example} or pass {flag} NAME"
