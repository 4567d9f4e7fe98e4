"""A real llama.cpp server (llama-cpp-python) on loopback, serving the SmolLM2 GGUF, for one test session."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from pytest_finetune_bench.demo.smollm2 import gguf_path
from tests.models import test_cache_root

SERVED_NAME = "smollm2-ft"
STARTUP_TIMEOUT_S = 120.0
INSTALL = "pip install 'llama-cpp-python[server]==0.3.36'"


@dataclass(frozen=True)
class LlamaServer:
    """Where the server listens and what it serves."""

    url: str  # http://127.0.0.1:PORT (the OpenAI API lives under /v1)
    model: str  # the served name (--model_alias)
    gguf: Path
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    """Poll /v1/models until it answers; fail with the server's log tail if it dies or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama.cpp server exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/v1/models", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"llama.cpp server did not answer {url}/v1/models within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """`python -m llama_cpp.server` on 127.0.0.1 serving SmolLM2-135M-Instruct as SERVED_NAME."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(f"llama-cpp-python is not installed: run `{INSTALL}`")
    gguf = gguf_path(test_cache_root() / "models")  # the same copy the converted base came from
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    # llama_cpp.server's own arguments, through a launcher that avoids an AMX crash (see the launcher).
    launcher = Path(__file__).with_name("llama_server_launch.py")
    command = [sys.executable, str(launcher), "--model", str(gguf), "--host", "127.0.0.1",
               "--port", str(port), "--model_alias", SERVED_NAME,
               # One thread: llama.cpp's spinning workers collapse when the CPU is shared with the test run.
               "--n_threads", "1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_until_serving(proc, url, log, STARTUP_TIMEOUT_S)
        yield LlamaServer(url=url, model=SERVED_NAME, gguf=gguf, log=log)
    finally:
        stop(proc)
