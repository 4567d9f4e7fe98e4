"""A test server on 127.0.0.1 whose every thread ends with the `with` block that runs it.

A handler thread that outlives its test and prints a traceback (a client that timed out, then a write
to its closed socket) races whatever test runs next: on CPython 3.11 before 3.11.8, printing a
traceback parses source with `ast`, and two threads building ASTs at once fail with "AST constructor
recursion depth mismatch" (python/cpython#106905). So on exit the server stops, tells handlers that
wait on `stopping` to end, and joins them; a handler's error is raised in the test, never printed.
"""

from __future__ import annotations

import socketserver
import sys
import threading
from http.server import ThreadingHTTPServer
from typing import TypeVar

_Served = TypeVar("_Served", bound="Loopback")
JOIN_TIMEOUT_S = 10.0


class _JoiningServer(ThreadingHTTPServer):
    daemon_threads = False  # non-daemon threads are tracked on every Python, so server_close joins them
    block_on_close = True

    def __init__(self, handler: type[socketserver.BaseRequestHandler], errors: list[BaseException]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.errors = errors

    def handle_error(self, request: object, client_address: object) -> None:
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, ConnectionError):  # a client hanging up is no error
            self.errors.append(error)


class Loopback:
    """Serves `handler` on 127.0.0.1 for the length of a `with` block, then stops and joins every thread."""

    def __init__(self, handler: type[socketserver.BaseRequestHandler]) -> None:
        self.stopping = threading.Event()  # set on exit: a handler pacing or stalling its answer ends
        self.errors: list[BaseException] = []
        self._server = _JoiningServer(handler, self.errors)
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self: _Served) -> _Served:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._thread.join(JOIN_TIMEOUT_S)
        self._server.server_close()
        if self.errors and exc[0] is None:
            raise self.errors[0]
