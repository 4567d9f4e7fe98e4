"""The API key never reaches a message, a log line or the terminal, whatever goes wrong (issue 22 item 3)."""

from __future__ import annotations

import http.server
import json
import socket
import time
import traceback
from collections.abc import Iterator
from typing import ClassVar

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends import openai
from pytest_finetune_bench.backends.openai import API_KEY_ENV, OpenAIBackend
from pytest_finetune_bench.run.engine import child_environment
from tests.loopback import Loopback

SENTINEL = "sk-SENTINEL-4c1d9e"


class Server(http.server.BaseHTTPRequestHandler):
    """Answers /<status>/v1/models: 200 with one served model, or the status given, or after a long wait."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        Server.seen.append(self.headers.get("Authorization"))
        status = self.path.strip("/").split("/")[0]
        if status == "slow":
            time.sleep(2)
            status = "200"
        body = json.dumps({"data": [{"id": "m"}]} if status == "200" else {"error": f"key {SENTINEL} is bad"})
        self.send_response(int(status))
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with Loopback(Server) as loopback:
        yield loopback.url


def refused_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def failure_text(exc: BaseException) -> str:
    """Everything pytest or a log could show of the error: message, repr and the rendered traceback."""
    return f"{exc}\n{exc!r}\n{''.join(traceback.format_exception(exc))}"


@pytest.mark.parametrize("path, key", [
    ("200", f"{SENTINEL}\nX-Injected: 1"), ("200", f"{SENTINEL} {SENTINEL}"), ("200", f"{SENTINEL}\x7f"),
    ("401", SENTINEL), ("500", SENTINEL), ("slow", SENTINEL), ("refused", SENTINEL),
])
def test_no_failure_of_the_pre_flight_shows_the_key(
    server: str, monkeypatch: pytest.MonkeyPatch, path: str, key: str
) -> None:
    monkeypatch.setenv(API_KEY_ENV, key)
    monkeypatch.setattr(openai, "PREFLIGHT_TIMEOUT_S", 0.5)
    root = refused_address() if path == "refused" else f"{server}/{path}"
    with pytest.raises(BenchError) as caught:
        OpenAIBackend(root).preflight("m", "fine-tuned")
    assert SENTINEL not in failure_text(caught.value)
    assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize("padding", ["\n", " ", "\r\n", "\t "])
def test_a_key_with_surrounding_whitespace_is_sent_stripped(
    server: str, monkeypatch: pytest.MonkeyPatch, padding: str
) -> None:
    monkeypatch.setenv(API_KEY_ENV, f"{padding}{SENTINEL}{padding}")
    Server.seen.clear()
    OpenAIBackend(f"{server}/200").preflight("m", "fine-tuned")
    assert Server.seen == [f"Bearer {SENTINEL}"]
    assert child_environment()[API_KEY_ENV] == SENTINEL  # what lm-eval's process reads


def test_messages_from_lm_eval_lose_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, f"{SENTINEL}\n")
    message = openai.without_key(f"InvalidHeader: Header value 'Bearer {SENTINEL}' must not end in whitespace")
    assert SENTINEL not in message and API_KEY_ENV in message
