"""Stand-in HTTP servers for tests: a hostile or broken API on 127.0.0.1, served on a thread."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class JSONHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with :meth:`answer` as JSON; subclasses say what."""

    status = 200

    def answer(self) -> Any:
        raise NotImplementedError

    def do_GET(self) -> None:
        send_json(self, self.status, self.answer())

    def log_message(self, format: str, *args: object) -> None:
        pass


def send_json(handler: http.server.BaseHTTPRequestHandler, status: int, body: Any) -> None:
    """One whole JSON answer; a client that hung up is not the test's failure."""
    payload = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    try:
        handler.wfile.write(payload)
    except OSError:
        pass


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free port of 127.0.0.1 for the block; yield its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
