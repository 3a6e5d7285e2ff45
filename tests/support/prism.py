"""For tests/prism: the running Prism server, and what a test's client sent it and got back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

TOKEN = "prism-token"


@dataclass(frozen=True)
class PrismServer:
    url: str
    log: Path  # Prism's output, one line per validation step


@dataclass(frozen=True)
class Exchange:
    """One request the client sent and Prism's answer to it."""

    method: str
    host: str
    path: str  # with the query
    body: Any  # the decoded JSON request body, None when there was none
    status: int
    violations: Any  # Prism's decoded sl-violations header, None when it had none


@dataclass
class Traffic:
    """Every exchange of one test's client with Prism, in order."""

    prism_url: str
    exchanges: list[Exchange] = field(default_factory=list)

    def record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        request = response.request
        raw = request.body
        body = json.loads(raw) if raw else None
        violations = response.headers.get("sl-violations")
        parts = urlsplit(request.url or "")
        self.exchanges.append(
            Exchange(
                method=str(request.method),
                host=parts.netloc,
                path=parts.path + (f"?{parts.query}" if parts.query else ""),
                body=body,
                status=response.status_code,
                violations=json.loads(violations) if violations else None,
            )
        )

    def assert_all_accepted(self) -> None:
        """Every request went to Prism, passed its validation and got a 2xx answer."""
        assert self.exchanges, "the client sent no request"
        prism_host = urlsplit(self.prism_url).netloc
        for exchange in self.exchanges:
            assert exchange.host == prism_host, exchange
            assert exchange.violations is None, exchange
            assert 200 <= exchange.status < 300, exchange

    def describe(self) -> str:
        """One paragraph per exchange, for a failing test's report."""
        lines = []
        for e in self.exchanges:
            lines.append(f"{e.method} {e.path} -> {e.status}")
            if e.body is not None:
                lines.append(f"  body: {json.dumps(e.body)}")
            for violation in e.violations or []:
                where = ".".join(str(part) for part in violation.get("location", []))
                lines.append(f"  violation at {where}: {violation.get('message')}")
        return "\n".join(lines) or "(no request sent)"

    def requests(self) -> list[tuple[str, str]]:
        return [(e.method, e.path) for e in self.exchanges]
