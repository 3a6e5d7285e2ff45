"""A private git server for tests: bare repositories over git's dumb HTTP protocol, behind Basic auth."""

from __future__ import annotations

import base64
import functools
import http.server
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class _Handler(http.server.SimpleHTTPRequestHandler):
    token = ""
    seen_authorizations: list[str] = []
    delay = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay)  # a slow server keeps the clone running long enough to be watched
        header = self.headers.get("Authorization", "")
        self.seen_authorizations.append(header)
        expected = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
        if header != f"Basic {expected}":
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="private"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def private_git_server(root: Path, token: str, delay: float = 0.0) -> Iterator[tuple[str, list[str]]]:
    """Serve the bare repositories under ``root`` at ``http://127.0.0.1:PORT/``; yield the URL and the headers seen.

    Each request is answered ``delay`` seconds late.
    """
    for bare in root.glob("*.git"):
        subprocess.run(["git", "--git-dir", str(bare), "update-server-info"], check=True)
    seen: list[str] = []
    handler = type("Handler", (_Handler,), {"token": token, "seen_authorizations": seen, "delay": delay})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
