"""An API that answers nonsense: exit 3 naming the field, never an unexpected error; pages followed are bounded."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import poseidon.api as po
from poseidon.cli import main
from poseidon.errors import APIError
from support.stubhttp import JSONHandler, serving

DROPLET = {
    "id": 1,
    "name": "web-1",
    "status": "active",
    "tags": [],
    "networks": {"v4": [{"ip_address": "203.0.113.1", "type": "public"}]},
}


class _Server(JSONHandler):
    """What the test sets: a fixed answer, or a function of the path (``staticmethod``)."""

    given: Any = None
    requests = 0

    def answer(self) -> Any:
        type(self).requests += 1
        return self.given(self.path) if callable(self.given) else self.given


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Server]]:
    handler = type("Handler", (_Server,), {"given": None, "requests": 0})
    with serving(handler) as url:
        monkeypatch.setenv("DIGITALOCEAN_TOKEN", "t0ken")
        monkeypatch.setenv("POSEIDON_API_URL", url)
        yield handler


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        ({"droplets": [DROPLET], "links": {"pages": {"next": 7}}}, "links.pages.next: a URL, not int"),
        ({"droplets": {"id": 1}}, "droplets: a list, not dict"),
        ([DROPLET], "a JSON object, not list"),
        ({"droplets": [{"name": "web-1"}]}, "id: a number, not None"),
        ({"droplets": [{"id": "abc", "name": "web-1"}]}, "id: a number, not 'abc'"),
        ({"droplets": [{"id": 1}]}, "name: text, not None"),
        ({"droplets": [{**DROPLET, "networks": {"v4": "zzz"}}]}, "networks.v4: a list"),
        ({"droplets": [{**DROPLET, "tags": "web"}]}, "tags: a list of text"),
        ({"droplets": [{**DROPLET, "networks": "zzz"}]}, "networks: an object"),
    ],
    ids=[
        "next-not-text",
        "object-for-list",
        "list-for-object",
        "no-id",
        "id-text",
        "no-name",
        "v4-text",
        "tags-text",
        "networks-text",
    ],
)
def test_nonsense_from_the_api_is_exit_3_naming_the_field(
    answer: Any, named: str, api: type[_Server], capsys: pytest.CaptureFixture[str]
) -> None:
    api.given = answer
    assert main(["droplets"]) == 3
    err = capsys.readouterr().err
    assert "the API answered nonsense" in err and named in err, err
    assert "unexpected" not in err


def test_pages_that_never_end_are_followed_to_a_bound(api: type[_Server]) -> None:
    pages = iter(range(1, 10**6))
    # Every answer names a next page no answer named before: no loop to notice, only a bound.
    api.given = staticmethod(
        lambda path: {"droplets": [], "links": {"pages": {"next": f"/v2/droplets?page={next(pages)}"}}}
    )
    client = po.connect()
    client.max_pages = 25
    with pytest.raises(APIError, match="pagination goes on past 25 pages"):
        client.droplets.list(tag="x")
    assert api.requests == 26


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Headers at once, then a byte of the body every 50 ms, for as long as the client listens."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(10**6))
        self.end_headers()
        try:
            for _ in range(10**6):
                self.wfile.write(b" ")
                self.wfile.flush()
                threading.Event().wait(0.05)
        except OSError:
            pass  # the client gave up: what this test waits for

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Huge(JSONHandler):
    def answer(self) -> Any:
        return {"droplets": [], "padding": "x" * (2 << 20)}


def test_an_answer_that_trickles_in_is_given_up_at_the_whole_answer_s_deadline() -> None:
    from poseidon.errors import APIConnectionError

    with (
        serving(_Trickle) as url,
        pytest.raises(APIConnectionError, match=r"the answer took over 2 s to arrive \(4 times POSEIDON_API_TIMEOUT\)"),
    ):
        # Every read is within its 0.5 s: only the whole answer's deadline ends it.
        po.Client("t0ken", api_url=url, timeout=0.5, max_attempts=1).droplets.list(tag="x")


def test_an_answer_over_the_size_bound_is_refused() -> None:
    with serving(_Huge) as url, pytest.raises(APIError, match=r"is over 1,048,576 bytes: poseidon reads no more"):
        po.Client("t0ken", api_url=url, max_answer_bytes=1 << 20).droplets.list(tag="x")


def test_the_emulator_reads_no_body_before_the_token_and_answers_a_bad_length_with_400() -> None:
    import socket

    from poseidon.sandbox.emulator import Emulator

    with Emulator("the-token") as emulator:
        host, port = emulator.url.removeprefix("http://").split(":")

        def exchange(request: bytes) -> bytes:
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
                return b"".join(iter(lambda: sock.recv(65536), b""))

        # No token: refused before its (huge, never sent) body is waited for.
        answer = exchange(b"POST /v2/droplets HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 401")
        bad = exchange(
            b"POST /v2/droplets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer the-token\r\nContent-Length: abc\r\n\r\n"
        )
        assert bad.startswith(b"HTTP/1.1 400") and b"Content-Length must be a number" in bad
