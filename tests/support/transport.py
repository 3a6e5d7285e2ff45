"""A requests transport for API client tests: a function answers each request, every exchange is recorded.

Mounted on a ``requests.Session`` given to ``poseidon.api.Client``, it stands
in for the network: ``handler(sent)`` returns ``(status, headers, body)`` for
the scenarios the emulator cannot stage (a foreign host in a pagination
link, a redirect, a body that is not JSON). Without a handler, requests go
on over the network as requests sends them (to the emulator, say), and the
transport records what went by, each answer read whole before the client
gets it.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import HTTPAdapter

#: An answer: status, headers, body (bytes as they are, None for none, anything else as JSON).
Reply = tuple[int, Mapping[str, str], Any]


@dataclass(frozen=True)
class Sent:
    """One request the client sent, and the timeout it gave requests."""

    request: requests.PreparedRequest
    timeout: Any

    @property
    def method(self) -> str:
        return self.request.method or ""

    @property
    def url(self) -> str:
        return self.request.url or ""

    @property
    def path(self) -> str:
        """The URL's path, without the query."""
        return urlsplit(self.url).path

    @property
    def query(self) -> dict[str, str]:
        """The query's parameters, the last value of each."""
        return {name: values[-1] for name, values in parse_qs(urlsplit(self.url).query).items()}

    @cached_property
    def body(self) -> Any:
        """The decoded JSON body, None when there was none."""
        return json.loads(self.request.body) if self.request.body else None

    @property
    def headers(self) -> Mapping[str, str]:
        return self.request.headers


@dataclass(frozen=True)
class Exchange:
    sent: Sent
    response: requests.Response


class Transport(HTTPAdapter):
    """Answers with ``handler(sent)``, or over the network without one; records every exchange in order."""

    def __init__(self, handler: Callable[[Sent], Reply] | None = None) -> None:
        super().__init__()
        self.handler = handler
        self.exchanges: list[Exchange] = []

    @property
    def sent(self) -> list[Sent]:
        """The requests, in the order they were sent."""
        return [exchange.sent for exchange in self.exchanges]

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        sent = Sent(request, timeout)
        if self.handler is None:
            response = super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
            _ = response.content  # read whole, so that the record has it whatever the client does next
        else:
            response = _response(request, *self.handler(sent))
        self.exchanges.append(Exchange(sent, response))
        return response


def _response(
    request: requests.PreparedRequest, status: int, headers: Mapping[str, str], body: Any
) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.reason = http.client.responses.get(status, "")
    response.headers.update(headers)
    if body is None:
        response._content = b""
    else:
        response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response.url = request.url or ""
    response.request = request
    return response


def mounted(handler: Callable[[Sent], Reply] | None = None) -> tuple[requests.Session, Transport]:
    """A session whose http and https requests all go through a new :class:`Transport`."""
    transport = Transport(handler)
    session = requests.Session()
    session.mount("http://", transport)
    session.mount("https://", transport)
    return session, transport
