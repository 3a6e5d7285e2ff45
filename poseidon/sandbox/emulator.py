"""A local stand-in for the DigitalOcean API v2, on 127.0.0.1.

It speaks the subset poseidon uses, with the response shapes of the official
OpenAPI document (``tests/openapi/openapi.yaml``; a test validates every
endpoint against it)::

    GET /v2/droplets            ?tag_name= ?name= ?page= ?per_page=
    GET /v2/droplets/{id}
    GET /v2/account/keys        ?page= ?per_page=
    GET /v2/account

Every answer carries the ``ratelimit-*`` headers and an ``x-request-id``;
errors have the API's ``{"id", "message"}`` body. ``inject()`` makes the next
requests fail, so clients can be tested against 429s and 5xxs.

This module uses the standard library only: the sandbox must not depend on
poseidon's core, or a bug in the client could hide itself in its own emulator.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import http.server
import ipaddress
import json
import math
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

__all__ = ["Emulator"]

# Real droplet ids are large integers; starting near today's values keeps
# code that assumes small ids (or fits them in a column) honest.
_FIRST_DROPLET_ID = 412_000_001
_FIRST_KEY_ID = 43_210_001

_RATE_LIMIT = 5000  # requests per hour, as on the real API
_RATE_WINDOW = 3600
_DEFAULT_PER_PAGE = 20
_MAX_PER_PAGE = 200

# The region slugs that the OpenAPI document's image schema allows.
_REGIONS = {
    "ams2": "Amsterdam 2",
    "ams3": "Amsterdam 3",
    "blr1": "Bangalore 1",
    "fra1": "Frankfurt 1",
    "lon1": "London 1",
    "nyc1": "New York 1",
    "nyc2": "New York 2",
    "nyc3": "New York 3",
    "sfo2": "San Francisco 2",
    "sfo3": "San Francisco 3",
    "sgp1": "Singapore 1",
    "syd1": "Sydney 1",
    "tor1": "Toronto 1",
}

# slug: (memory MiB, vcpus, disk GiB, transfer TiB, price per month USD)
_SIZES = {
    "s-1vcpu-512mb-10gb": (512, 1, 10, 0.5, 4.0),
    "s-1vcpu-1gb": (1024, 1, 25, 1.0, 6.0),
    "s-1vcpu-2gb": (2048, 1, 50, 2.0, 12.0),
    "s-2vcpu-2gb": (2048, 2, 60, 3.0, 18.0),
    "s-2vcpu-4gb": (4096, 2, 80, 4.0, 24.0),
    "s-4vcpu-8gb": (8192, 4, 160, 5.0, 48.0),
    "s-8vcpu-16gb": (16384, 8, 320, 6.0, 96.0),
}

# slug: (id, name, distribution)
_IMAGES = {
    "ubuntu-24-04-x64": (160_232_537, "24.04 (LTS) x64", "Ubuntu"),
    "ubuntu-22-04-x64": (129_211_873, "22.04 (LTS) x64", "Ubuntu"),
    "debian-12-x64": (133_907_404, "12 x64", "Debian"),
    "rockylinux-9-x64": (137_512_021, "9 x64", "Rocky Linux"),
    "fedora-40-x64": (157_384_390, "40 x64", "Fedora"),
}

_STATUSES = ("new", "active", "off", "archive")

_REGION_FEATURES = ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"]

_NAMESPACE = uuid.UUID("6f1c1d2e-52a4-4b55-9a51-3d1e5c0b9a77")

_ERRORS = {
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthorized", "Unable to authenticate you."),
    403: ("forbidden", "You do not have access for the attempted action."),
    404: ("not_found", "The resource you requested could not be found."),
    405: ("method_not_allowed", "The method is not allowed for this resource."),
    422: ("unprocessable_entity", "The request could not be processed."),
    429: ("too_many_requests", "API rate limit exceeded."),
    500: ("server_error", "Unexpected server-side error"),
    502: ("bad_gateway", "Bad gateway."),
    503: ("service_unavailable", "The service is temporarily unavailable."),
    504: ("gateway_timeout", "The gateway timed out."),
}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fingerprint(public_key: str) -> str:
    """The MD5 fingerprint of an OpenSSH public key, as the API shows it."""
    fields = public_key.split()
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (IndexError, ValueError):
        raise ValueError("not an OpenSSH public key line (expected 'TYPE BASE64 [COMMENT]')") from None
    # MD5 because the API shows fingerprints that way, not for security.
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _fake_public_key(name: str) -> str:
    """A well-formed ed25519 public key line; nobody holds its private half."""
    algorithm = b"ssh-ed25519"
    point = hashlib.sha256(name.encode()).digest()
    blob = len(algorithm).to_bytes(4, "big") + algorithm + len(point).to_bytes(4, "big") + point
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {name}"


def _v4_network(address: str, kind: str) -> dict[str, Any]:
    # DigitalOcean puts droplets in /20 networks whose first host is the gateway.
    interface = ipaddress.IPv4Interface(f"{address}/20")
    return {
        "ip_address": str(interface.ip),
        "netmask": str(interface.netmask),
        "gateway": str(interface.network.network_address + 1),
        "type": kind,
    }


class _HTTPError(Exception):
    def __init__(self, status: int, message: str | None = None) -> None:
        self.status = status
        self.message = message


class Emulator:
    """A thread-safe, in-memory DigitalOcean API on an ephemeral port of 127.0.0.1.

    ::

        with Emulator("secret") as emulator:
            emulator.add_droplet("web-1", "127.0.0.2", tags=["web"])
            requests.get(emulator.url + "/v2/droplets",
                         headers={"Authorization": "Bearer secret"})
    """

    def __init__(self, token: str) -> None:
        self._token = token
        self._lock = threading.Lock()
        self._droplets: dict[int, dict[str, Any]] = {}
        self._next_droplet_id = _FIRST_DROPLET_ID
        self._keys: list[dict[str, Any]] = []
        self._next_key_id = _FIRST_KEY_ID
        self._faults: list[tuple[int, float | None]] = []
        self._window_start = time.time()
        self._used = 0
        self._requests: list[tuple[str, str]] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._account_uuid = str(uuid.uuid5(_NAMESPACE, "account"))
        self.add_ssh_key("sandbox", _fake_public_key("sandbox"))

    def __repr__(self) -> str:
        # The token stays out of the repr: it is the sandbox's credential.
        where = self._base_url() if self._server else "stopped"
        return f"<Emulator {where} droplets={len(self._droplets)}>"

    # -- life cycle ------------------------------------------------------------

    def start(self) -> str:
        """Serve in a daemon thread; returns the base URL (``http://127.0.0.1:PORT``)."""
        if self._server is not None:
            return self._base_url()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.emulator = self
        # A short poll interval keeps stop() quick: tests start one emulator each.
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="poseidon-emulator", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        return self._base_url()

    def stop(self) -> None:
        """Stop serving; a no-op when not started."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL; raises ``RuntimeError`` before ``start()``."""
        if self._server is None:
            raise RuntimeError("the emulator is not running: call start() first")
        return self._base_url()

    def _base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- state -----------------------------------------------------------------

    def add_droplet(
        self,
        name: str,
        ip_address: str,
        *,
        tags: Iterable[str] = (),
        region: str = "nyc3",
        size: str = "s-1vcpu-1gb",
        image: str = "ubuntu-24-04-x64",
        private_ip_address: str | None = None,
        status: str = "active",
    ) -> dict[str, Any]:
        """Add a droplet and return its API document (a copy)."""
        if region not in _REGIONS:
            raise ValueError(f"unknown region {region!r}; the emulator knows {', '.join(_REGIONS)}")
        if size not in _SIZES:
            raise ValueError(f"unknown size {size!r}; the emulator knows {', '.join(_SIZES)}")
        if image not in _IMAGES:
            raise ValueError(f"unknown image {image!r}; the emulator knows {', '.join(_IMAGES)}")
        if status not in _STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {', '.join(_STATUSES)}")
        v4 = [_v4_network(ip_address, "public")]
        features = ["droplet_agent", "monitoring"]
        if private_ip_address is not None:
            v4.insert(0, _v4_network(private_ip_address, "private"))
            features.append("private_networking")
        memory, vcpus, disk, transfer, price = _SIZES[size]
        image_id, image_name, distribution = _IMAGES[image]
        with self._lock:
            droplet_id = self._next_droplet_id
            self._next_droplet_id += 1
            droplet: dict[str, Any] = {
                "id": droplet_id,
                "name": name,
                "memory": memory,
                "vcpus": vcpus,
                "disk": disk,
                "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}],
                "locked": False,
                "status": status,
                "kernel": None,
                "created_at": _now(),
                "features": features,
                "backup_ids": [],
                "next_backup_window": None,
                "snapshot_ids": [],
                "image": {
                    "id": image_id,
                    "name": image_name,
                    "distribution": distribution,
                    "slug": image,
                    "public": True,
                    "regions": sorted(_REGIONS),
                    "created_at": "2024-04-24T14:35:19Z",
                    "type": "base",
                    "min_disk_size": 7,
                    "size_gigabytes": 2.61,
                    "description": f"{distribution} {image_name}",
                    "tags": [],
                    "status": "available",
                    "error_message": "",
                },
                "volume_ids": [],
                "size": {
                    "slug": size,
                    "memory": memory,
                    "vcpus": vcpus,
                    "disk": disk,
                    "transfer": transfer,
                    "price_monthly": price,
                    # DigitalOcean bills a month as 672 hours.
                    "price_hourly": round(price / 672, 5),
                    "regions": sorted(_REGIONS),
                    "available": True,
                    "description": "Basic",
                    "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}],
                },
                "size_slug": size,
                "networks": {"v4": v4, "v6": []},
                "region": {
                    "name": _REGIONS[region],
                    "slug": region,
                    "features": _REGION_FEATURES,
                    "available": True,
                    "sizes": list(_SIZES),
                },
                "tags": list(tags),
                "vpc_uuid": str(uuid.uuid5(_NAMESPACE, f"vpc-{region}")),
            }
            self._droplets[droplet_id] = droplet
            return copy.deepcopy(droplet)

    def remove_droplet(self, droplet_id: int) -> None:
        """Forget a droplet, as if it had been destroyed; ``KeyError`` if unknown."""
        with self._lock:
            del self._droplets[droplet_id]

    def add_ssh_key(self, name: str, public_key: str) -> dict[str, Any]:
        """Add an SSH key to the account (``/v2/account/keys``) and return its document."""
        with self._lock:
            key = {
                "id": self._next_key_id,
                "fingerprint": _fingerprint(public_key),
                "public_key": public_key,
                "name": name,
            }
            self._next_key_id += 1
            self._keys.append(key)
            return dict(key)

    def inject(self, status: int, count: int = 1, *, retry_after: float | None = None) -> None:
        """Answer the next ``count`` requests with ``status`` and the API's error body.

        ``retry_after`` adds a ``Retry-After`` header (seconds) to those answers.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"inject() takes an error status (4xx or 5xx), not {status}")
        with self._lock:
            self._faults.extend([(status, retry_after)] * count)

    @property
    def request_log(self) -> list[tuple[str, str]]:
        """Every request served so far, as ``(method, path?query)``; headers are not kept."""
        with self._lock:
            return list(self._requests)

    # -- serving ---------------------------------------------------------------

    def _handle(self, method: str, target: str, authorization: str | None) -> tuple[int, dict[str, str], Any]:
        """One request in, ``(status, headers, body)`` out; called by the handler threads."""
        with self._lock:
            self._requests.append((method, target))
            now = time.time()
            if now - self._window_start >= _RATE_WINDOW:
                self._window_start, self._used = now, 0
            self._used += 1
            remaining = max(_RATE_LIMIT - self._used, 0)
            reset = math.ceil(self._window_start + _RATE_WINDOW)
            fault = self._faults.pop(0) if self._faults else None
            over_limit = self._used > _RATE_LIMIT
        headers = {
            "ratelimit-limit": str(_RATE_LIMIT),
            "ratelimit-remaining": str(remaining),
            "ratelimit-reset": str(reset),
            "x-request-id": str(uuid.uuid4()),
        }
        if fault is not None:
            status, retry_after = fault
            if status == 429:
                headers["ratelimit-remaining"] = "0"
                headers["ratelimit-reset"] = str(math.ceil(now + (retry_after or 1)))
            if retry_after is not None:
                headers["Retry-After"] = f"{retry_after:g}"
            return status, headers, _error_body(status)
        if not _authorized(authorization, self._token):
            return 401, headers, _error_body(401)
        if over_limit:
            headers["Retry-After"] = str(max(reset - math.floor(now), 1))
            return 429, headers, _error_body(429)
        try:
            return 200, headers, self._route(method, target)
        except _HTTPError as exc:
            return exc.status, headers, _error_body(exc.status, exc.message)

    def _route(self, method: str, target: str) -> Any:
        parts = urlsplit(target)
        path = parts.path.rstrip("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        routes = {
            "/v2/droplets": self._list_droplets,
            "/v2/account/keys": self._list_keys,
            "/v2/account": self._account,
        }
        handler = routes.get(path)
        match = re.fullmatch(r"/v2/droplets/(\d+)", path)
        if handler is None and match is None:
            raise _HTTPError(404)
        if method != "GET":
            raise _HTTPError(405)
        if match is not None:
            return self._get_droplet(int(match.group(1)))
        assert handler is not None
        return handler(path, query)

    def _list_droplets(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        tag, name = query.get("tag_name"), query.get("name")
        if tag is not None and name is not None:
            raise _HTTPError(422, "The name and tag_name filters cannot be combined.")
        with self._lock:
            droplets = list(self._droplets.values())
        if tag is not None:
            droplets = [d for d in droplets if tag in d["tags"]]
        if name is not None:
            # The real filter returns exact matches, compared case-insensitively.
            droplets = [d for d in droplets if d["name"].lower() == name.lower()]
        if query.get("type") == "gpus":
            droplets = []
        return self._page("droplets", droplets, path, query)

    def _get_droplet(self, droplet_id: int) -> dict[str, Any]:
        with self._lock:
            droplet = self._droplets.get(droplet_id)
        if droplet is None:
            raise _HTTPError(404)
        return {"droplet": droplet}

    def _list_keys(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            keys = list(self._keys)
        return self._page("ssh_keys", keys, path, query)

    def _account(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            droplets = len(self._droplets)
        return {
            "account": {
                "droplet_limit": max(25, droplets),
                "floating_ip_limit": 3,
                "email": "sandbox@example.com",
                "name": "Sandbox",
                "uuid": self._account_uuid,
                "email_verified": True,
                "status": "active",
                "status_message": "",
                "team": {"uuid": str(uuid.uuid5(_NAMESPACE, "team")), "name": "My Team"},
            }
        }

    def _page(self, key: str, items: list[dict[str, Any]], path: str, query: dict[str, str]) -> dict[str, Any]:
        """One page of ``items`` with the API's ``links`` and ``meta``."""
        page = _positive_int(query, "page", 1)
        per_page = min(_positive_int(query, "per_page", _DEFAULT_PER_PAGE), _MAX_PER_PAGE)
        total = len(items)
        last = max(1, math.ceil(total / per_page))
        filters = {k: v for k, v in query.items() if k not in ("page", "per_page")}

        def link(number: int) -> str:
            return f"{self._base_url()}{path}?" + urlencode({**filters, "page": number, "per_page": per_page})

        pages: dict[str, str] = {}
        if page > 1:
            pages["first"] = link(1)
            pages["prev"] = link(min(page - 1, last))
        if page < last:
            pages["last"] = link(last)
            pages["next"] = link(page + 1)
        start = (page - 1) * per_page
        return {
            key: items[start : start + per_page],
            "links": {"pages": pages} if pages else {},
            "meta": {"total": total},
        }


def _positive_int(query: dict[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _HTTPError(400, f"{name} must be a positive integer") from None
    if value < 1:
        raise _HTTPError(400, f"{name} must be a positive integer")
    return value


def _authorized(header: str | None, token: str) -> bool:
    scheme, _, credential = (header or "").partition(" ")
    # compare_digest: the sandbox token should not leak through timing either.
    return scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode(), token.encode())


def _error_body(status: int, message: str | None = None) -> dict[str, str]:
    error_id, default = _ERRORS.get(status, ("error", "The request failed."))
    return {"id": error_id, "message": message or default}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    emulator: Emulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is not the emulator's problem.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 keeps the connection open across pages, as the real API does.
    protocol_version = "HTTP/1.1"
    server_version = "poseidon-emulator"
    # Idle keep-alive connections must not pin a thread forever.
    timeout = 30
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # drained so the next request on this connection parses
        try:
            status, headers, body = self.server.emulator._handle(
                self.command, self.path, self.headers.get("Authorization")
            )
        except Exception as exc:  # a bug in the emulator shows up as a 500 the test can read
            status, headers, body = 500, {}, {"id": "server_error", "message": f"emulator: {exc!r}"}
        payload = json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        # Tests and the CLI own stderr; the emulator stays quiet.
        pass
