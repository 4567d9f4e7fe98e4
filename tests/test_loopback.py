"""The tests' loopback server leaves no thread behind and prints nothing from one (tests/loopback.py)."""

from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from tests.loopback import Loopback

LATE_S = 1.5  # the handler still works when the `with` block ends (shutdown polls every 0.5 s)


def late_writer(error: type[Exception] | None = None) -> type[socketserver.BaseRequestHandler]:
    """A handler that answers `LATE_S` after the request, when its client has gone (or raises `error`)."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.rfile.readline()
            time.sleep(LATE_S)
            if error is not None:
                raise error("a handler's own bug")
            for _ in range(100):  # the first writes may still land in the socket's buffer
                self.wfile.write(b"x" * 65536)

    return Handler


def ask_and_hang_up(url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
    time.sleep(0.1)  # the server has taken the request


def test_a_client_that_hung_up_leaves_no_thread_and_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    before = set(threading.enumerate())
    with Loopback(late_writer()) as server:
        ask_and_hang_up(server.url)
    assert [t.name for t in set(threading.enumerate()) - before] == []
    time.sleep(LATE_S)  # where a handler had been left running, it would have printed by now
    assert capfd.readouterr().err == ""


def test_a_handlers_own_error_is_raised_in_the_test() -> None:
    with pytest.raises(ValueError, match="a handler's own bug"):
        with Loopback(late_writer(ValueError)) as server:
            ask_and_hang_up(server.url)
