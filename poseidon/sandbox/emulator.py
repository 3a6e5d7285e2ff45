"""A local stand-in for the DigitalOcean API v2, on 127.0.0.1.

It speaks the subset poseidon uses, statefully, with the response shapes of
the official OpenAPI document (``tests/openapi/openapi.yaml``; a test
validates every operation in ``Emulator.OPERATIONS`` against it)::

    GET    /v2/account
    GET    /v2/account/keys                 POST (201)
    GET    /v2/account/keys/{id|fingerprint}   DELETE (204)
    GET    /v2/actions/{id}
    GET    /v2/droplets  ?tag_name= ?name= ?type=   POST (202)   DELETE ?tag_name= (204)
    GET    /v2/droplets/{id}                DELETE (204)
    GET    /v2/droplets/{id}/actions        POST (201)
    GET    /v2/droplets/{id}/actions/{action_id}
    GET    /v2/droplets/{id}/kernels | snapshots | backups
    GET    /v2/images  ?type= ?private= ?tag_name=
    GET    /v2/images/{id|slug}
    GET    /v2/regions, /v2/sizes
    GET    /v2/tags                         POST (201)
    GET    /v2/tags/{name}                  DELETE (204)
    POST   /v2/tags/{name}/resources (204)  DELETE (204)
    GET    /v2/domains                      POST (201)
    GET    /v2/domains/{name}               DELETE (204)
    GET    /v2/domains/{name}/records  ?type= ?name=   POST (201)
    GET    /v2/domains/{name}/records/{id}  PATCH, PUT (200)  DELETE (204)

Time passes in reads, not seconds: a created droplet is ``new`` (without
addresses) in its create answer and in the first ``pending_reads`` answers
that show it, then ``active`` with its addresses; an action is
``in-progress`` the same way, then ``completed``. Tests therefore need no real
waiting, and a client that polls sees both states. An action's effect (a new
name, a power state, a snapshot) shows at once.

Every answer carries the ``ratelimit-*`` headers and an ``x-request-id``; the
limits (5,000 requests an hour, 250 a minute, both rolling) are enforced with
429s. Errors have the API's ``{"id", "message", "request_id"}`` body; 204s
have none. ``inject()``, ``slow()`` and ``drop()`` stage faults for the next
requests, optionally after the request has taken effect, as when a gateway
fails after the backend acted.

This module uses the standard library only: the sandbox must not depend on
poseidon's core, or a bug in the client could hide itself in its own emulator.
"""

from __future__ import annotations

import base64
import collections
import copy
import hashlib
import hmac
import http.server
import ipaddress
import json
import math
import re
import secrets
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from poseidon.sandbox.firewalls import Firewalls, Refused

_T = TypeVar("_T")

__all__ = ["Emulator", "public_ipv4"]

# Real ids are large integers; starting near today's values keeps code that
# assumes small ids (or fits them in a column) honest.
_FIRST_DROPLET_ID = 412_000_001
_FIRST_KEY_ID = 43_210_001
_FIRST_ACTION_ID = 2_300_000_001
_FIRST_IMAGE_ID = 170_000_001
_FIRST_RECORD_ID = 330_000_001

_PER_HOUR = 5000  # the real API's limits, both over rolling windows
_PER_MINUTE = 250
_DEFAULT_PER_PAGE = 20
_MAX_PER_PAGE = 200
_MAX_NAMES = 10  # droplets per create request, as on the real API
_MAX_USER_DATA = 64 * 1024

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
_DEFAULT_REGION = "nyc3"

# slug: (memory MiB, vcpus, disk GiB, transfer TiB, price per month USD, description)
_SIZES = {
    "s-1vcpu-512mb-10gb": (512, 1, 10, 0.5, 4.0, "Basic"),
    "s-1vcpu-1gb": (1024, 1, 25, 1.0, 6.0, "Basic"),
    "s-1vcpu-2gb": (2048, 1, 50, 2.0, 12.0, "Basic"),
    "s-2vcpu-2gb": (2048, 2, 60, 3.0, 18.0, "Basic"),
    "s-2vcpu-4gb": (4096, 2, 80, 4.0, 24.0, "Basic"),
    "s-4vcpu-8gb": (8192, 4, 160, 5.0, 48.0, "Basic"),
    "s-8vcpu-16gb": (16384, 8, 320, 6.0, 96.0, "Basic"),
    "gpu-h100x1-80gb": (245760, 20, 720, 15.0, 2522.88, "GPU"),
}
# Droplets of these sizes are GPU droplets: the API lists them only when asked (?type=gpus).
_GPU_SIZES = {"gpu-h100x1-80gb": {"count": 1, "model": "nvidia_h100", "vram": {"amount": 80, "unit": "gib"}}}

# slug: (id, name, distribution, kind); kind is what ``GET /v2/images?type=`` filters on.
_IMAGES = {
    "ubuntu-24-04-x64": (160_232_537, "24.04 (LTS) x64", "Ubuntu", "distribution"),
    "ubuntu-22-04-x64": (129_211_873, "22.04 (LTS) x64", "Ubuntu", "distribution"),
    "debian-12-x64": (133_907_404, "12 x64", "Debian", "distribution"),
    "rockylinux-9-x64": (137_512_021, "9 x64", "Rocky Linux", "distribution"),
    "fedora-40-x64": (157_384_390, "40 x64", "Fedora", "distribution"),
    "docker-20-04": (146_910_567, "Docker 24.0.7 on Ubuntu 22.04", "Ubuntu", "application"),
    "wordpress-22-04": (148_004_173, "WordPress 6.4 on Ubuntu 22.04", "Ubuntu", "application"),
}

# (id, name, version): what ``GET /v2/droplets/{id}/kernels`` offers every droplet.
_KERNELS = (
    (7515, "DigitalOcean GrubLoader v0.2 (20160714)", "2016.07.13-DigitalOcean_loader_Ubuntu"),
    (8211, "Ubuntu 22.04 x64 vmlinuz-5.15.0-91-generic", "5.15.0-91-generic"),
    (8213, "Ubuntu 24.04 x64 vmlinuz-6.8.0-31-generic", "6.8.0-31-generic"),
)

_STATUSES = ("new", "active", "off", "archive")

_POWER_ACTIONS = frozenset({"power_off", "shutdown", "power_on", "reboot", "power_cycle"})

_ACTION_TYPES = frozenset(
    {
        "enable_backups",
        "disable_backups",
        "change_backup_policy",
        "reboot",
        "power_cycle",
        "shutdown",
        "power_off",
        "power_on",
        "restore",
        "password_reset",
        "resize",
        "rebuild",
        "rename",
        "change_kernel",
        "enable_ipv6",
        "enable_private_networking",
        "snapshot",
    }
)

_RECORD_TYPES = ("A", "AAAA", "CAA", "CNAME", "MX", "NS", "SOA", "SRV", "TXT")
_NAMESERVERS = ("ns1.digitalocean.com", "ns2.digitalocean.com", "ns3.digitalocean.com")

_REGION_FEATURES = ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"]

_NAMESPACE = uuid.UUID("6f1c1d2e-52a4-4b55-9a51-3d1e5c0b9a77")
_ACCOUNT_EMAIL = "sandbox@example.com"

_DROPLET_NAME = re.compile(r"[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]")
_TAG_NAME = re.compile(r"[a-zA-Z0-9_\-:]{1,255}")
_DOMAIN_NAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")

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

# method, path template, handler method: the operations served, in the document's terms.
_ROUTES = (
    ("GET", "/v2/account", "_account"),
    ("GET", "/v2/account/keys", "_list_keys"),
    ("POST", "/v2/account/keys", "_create_key"),
    ("GET", "/v2/account/keys/{ssh_key_identifier}", "_get_key"),
    ("PUT", "/v2/account/keys/{ssh_key_identifier}", "_update_key"),
    ("DELETE", "/v2/account/keys/{ssh_key_identifier}", "_delete_key"),
    ("GET", "/v2/actions/{action_id}", "_get_action"),
    ("GET", "/v2/droplets", "_list_droplets"),
    ("POST", "/v2/droplets", "_create_droplets"),
    ("DELETE", "/v2/droplets", "_delete_droplets_by_tag"),
    ("GET", "/v2/droplets/{droplet_id}", "_get_droplet"),
    ("DELETE", "/v2/droplets/{droplet_id}", "_delete_droplet"),
    ("GET", "/v2/droplets/{droplet_id}/actions", "_list_droplet_actions"),
    ("POST", "/v2/droplets/{droplet_id}/actions", "_post_droplet_action"),
    ("GET", "/v2/droplets/{droplet_id}/actions/{action_id}", "_get_droplet_action"),
    ("GET", "/v2/droplets/{droplet_id}/kernels", "_list_kernels"),
    ("GET", "/v2/droplets/{droplet_id}/snapshots", "_list_droplet_snapshots"),
    ("GET", "/v2/droplets/{droplet_id}/backups", "_list_droplet_backups"),
    ("GET", "/v2/images", "_list_images"),
    ("GET", "/v2/images/{image_id}", "_get_image"),
    ("GET", "/v2/regions", "_list_regions"),
    ("GET", "/v2/sizes", "_list_sizes"),
    ("GET", "/v2/tags", "_list_tags"),
    ("POST", "/v2/tags", "_create_tag"),
    ("GET", "/v2/tags/{tag_id}", "_get_tag"),
    ("DELETE", "/v2/tags/{tag_id}", "_delete_tag"),
    ("POST", "/v2/tags/{tag_id}/resources", "_tag_resources"),
    ("DELETE", "/v2/tags/{tag_id}/resources", "_untag_resources"),
    ("GET", "/v2/domains", "_list_domains"),
    ("POST", "/v2/domains", "_create_domain"),
    ("GET", "/v2/domains/{domain_name}", "_get_domain"),
    ("DELETE", "/v2/domains/{domain_name}", "_delete_domain"),
    ("GET", "/v2/domains/{domain_name}/records", "_list_records"),
    ("POST", "/v2/domains/{domain_name}/records", "_create_record"),
    ("GET", "/v2/domains/{domain_name}/records/{domain_record_id}", "_get_record"),
    ("PATCH", "/v2/domains/{domain_name}/records/{domain_record_id}", "_update_record"),
    ("PUT", "/v2/domains/{domain_name}/records/{domain_record_id}", "_update_record"),
    ("DELETE", "/v2/domains/{domain_name}/records/{domain_record_id}", "_delete_record"),
    ("GET", "/v2/firewalls", "_list_firewalls"),
    ("POST", "/v2/firewalls", "_create_firewall"),
    ("GET", "/v2/firewalls/{firewall_id}", "_get_firewall"),
    ("PUT", "/v2/firewalls/{firewall_id}", "_update_firewall"),
    ("DELETE", "/v2/firewalls/{firewall_id}", "_delete_firewall"),
    ("POST", "/v2/firewalls/{firewall_id}/droplets", "_add_firewall_droplets"),
    ("DELETE", "/v2/firewalls/{firewall_id}/droplets", "_remove_firewall_droplets"),
    ("POST", "/v2/firewalls/{firewall_id}/tags", "_add_firewall_tags"),
    ("DELETE", "/v2/firewalls/{firewall_id}/tags", "_remove_firewall_tags"),
    ("POST", "/v2/firewalls/{firewall_id}/rules", "_add_firewall_rules"),
    ("DELETE", "/v2/firewalls/{firewall_id}/rules", "_remove_firewall_rules"),
    ("GET", "/v2/droplets/{droplet_id}/firewalls", "_list_droplet_firewalls"),
)


def _compile(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)))


_COMPILED = tuple((method, _compile(template), handler) for method, template, handler in _ROUTES)


def _timestamp(when: float | None = None) -> str:
    moment = datetime.now(UTC) if when is None else datetime.fromtimestamp(when, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _v6_network(droplet_id: int) -> dict[str, Any]:
    # 2001:db8::/32 is the documentation range: nothing real answers there.
    address = ipaddress.IPv6Address("2001:db8:10::") + droplet_id % 0xFFFF
    return {"ip_address": str(address), "netmask": 64, "gateway": "2001:db8:10::1", "type": "public"}


def _is_address(text: Any, version: int) -> bool:
    try:
        return isinstance(text, str) and ipaddress.ip_address(text).version == version
    except ValueError:
        return False


class _HTTPError(Exception):
    def __init__(self, status: int, message: str | None = None) -> None:
        self.status = status
        self.message = message


@dataclass
class _Fault:
    """A staged misbehaviour for one request."""

    status: int | None = None  # answer with this error status
    retry_after: float | None = None
    delay: float = 0.0  # answer this late
    until: threading.Event | None = None  # answer once this is set (``delay`` at most)
    drop: bool = False  # close the connection without answering
    processed: bool = False  # let the request take effect first
    method: str | None = None
    path: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or self.path == path)


@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    body: Any = None  # None: no body (204)
    delay: float = 0.0
    until: threading.Event | None = None
    drop: bool = False


@dataclass
class _Request:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    body: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class Emulator:
    """A thread-safe, in-memory DigitalOcean API on an ephemeral port of 127.0.0.1.

    ::

        with Emulator("secret") as emulator:
            emulator.add_droplet("web-1", "127.0.0.2", tags=["web"])
            requests.get(emulator.url + "/v2/droplets",
                         headers={"Authorization": "Bearer secret"})

    ``on_create(names)`` is called when the API creates droplets (one call per
    request, so that a hook can set up all of them or none); it returns the
    public IPv4 address each droplet gets, or None for the next address of
    203.0.113.0/24 (a documentation range). When it raises, nothing is created
    and the answer is a 500. ``on_power(public IPv4, type)`` is
    called after a power action (``power_off``, ``shutdown``, ``power_on``,
    ``reboot``, ``power_cycle``) was accepted; ``on_delete(name, public
    IPv4)`` after a droplet was deleted; ``on_change()`` after any request
    that changed the account. ``pending_reads`` is how many
    answers still show a created droplet ``new``, an action ``in-progress``
    and a deleted droplet (by id, ``off``) after the answer that made them. ``per_hour`` and
    ``per_minute`` are the rate limits.
    """

    OPERATIONS: tuple[tuple[str, str], ...] = tuple((method, template) for method, template, _ in _ROUTES)

    def __init__(
        self,
        token: str,
        on_create: Callable[[list[str]], list[str | None]] | None = None,
        *,
        on_power: Callable[[str | None, str], None] | None = None,
        on_delete: Callable[[str, str | None], None] | None = None,
        on_change: Callable[[], None] | None = None,
        pending_reads: int = 1,
        per_hour: int = _PER_HOUR,
        per_minute: int = _PER_MINUTE,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if pending_reads < 0:
            raise ValueError("pending_reads cannot be negative")
        self._token = token
        self._on_create = on_create
        self._on_power = on_power
        self._on_delete = on_delete
        self._on_change = on_change
        #: Deleted droplets still shown by id, for as many reads as ``pending_reads`` (deletion takes a moment).
        self._vanishing: dict[int, list[Any]] = {}
        self._pending_reads = pending_reads
        self._per_hour = per_hour
        self._per_minute = per_minute
        self._lock = threading.RLock()
        self._droplets: dict[int, dict[str, Any]] = {}
        self._next_droplet_id = _FIRST_DROPLET_ID
        # Created droplets and actions: how many more reads show them pending.
        self._pending: dict[tuple[str, int], int] = {}
        self._addresses: dict[int, dict[str, Any]] = {}  # networks a new droplet gets when active
        self._next_public = 2
        self._next_private = 2
        self._keys: list[dict[str, Any]] = []
        self._next_key_id = _FIRST_KEY_ID
        self._actions: dict[int, dict[str, Any]] = {}
        self._next_action_id = _FIRST_ACTION_ID
        self._images: dict[int, dict[str, Any]] = {}
        self._image_kind: dict[int, str] = {}
        self._image_droplet: dict[int, int] = {}  # snapshot or backup id -> its droplet
        self._next_image_id = _FIRST_IMAGE_ID
        self._tags: dict[str, str | None] = {}  # name -> URI of the last resource tagged
        self._domains: dict[str, dict[str, Any]] = {}
        self._records: dict[str, list[dict[str, Any]]] = {}
        self._next_record_id = _FIRST_RECORD_ID
        self._firewalls = Firewalls(lambda droplet_id: droplet_id in self._droplets, _timestamp)
        self._faults: list[_Fault] = []
        self._hour: collections.deque[float] = collections.deque()
        self._minute: collections.deque[float] = collections.deque()
        self._requests: list[tuple[str, str]] = []
        self._mail: list[dict[str, Any]] = []  # what DigitalOcean would have emailed the account
        self._user_data: dict[int, str] = {}  # what each droplet's metadata service serves as its user data
        #: With it (set before :meth:`start`), :attr:`url` is HTTPS and :attr:`http_url` plain HTTP,
        #: for the tools that need it.
        self.tls = tls
        self._servers: list[tuple[_Server, threading.Thread]] = []
        #: The base URL of the listener the current request came through: its links name it.
        self._serving = threading.local()
        self._account_uuid = str(uuid.uuid5(_NAMESPACE, "account"))
        for slug, (image_id, name, distribution, kind) in _IMAGES.items():
            self._images[image_id] = {
                "id": image_id,
                "name": name,
                "type": "base",
                "distribution": distribution,
                "slug": slug,
                "public": True,
                "regions": sorted(_REGIONS),
                "created_at": "2024-04-24T14:35:19Z",
                "min_disk_size": 7 if kind == "distribution" else 25,
                "size_gigabytes": 2.61,
                "description": f"{distribution} {name}",
                "tags": [],
                "status": "available",
                "error_message": "",
            }
            self._image_kind[image_id] = kind
        self.add_ssh_key("sandbox", _fake_public_key("sandbox"))

    def __repr__(self) -> str:
        # The token stays out of the repr: it is the sandbox's credential.
        where = self._base_url() if self._server else "stopped"
        return f"<Emulator {where} droplets={len(self._droplets)}>"

    # -- life cycle ------------------------------------------------------------

    def start(self) -> str:
        """Serve in daemon threads; returns the base URL (``https://127.0.0.1:PORT`` with ``tls``,
        else ``http://…``). With ``tls``, plain HTTP is served on a port of its own too."""
        if self._server is not None:
            return self._base_url()
        for tls in [self.tls, None] if self.tls is not None else [None]:
            server = _Server(("127.0.0.1", 0), _Handler)
            server.emulator, server.tls = self, tls
            # A short poll interval keeps stop() quick: tests start one emulator each.
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="poseidon-emulator", daemon=True
            )
            thread.start()
            self._servers.append((server, thread))
        return self._base_url()

    def stop(self) -> None:
        """Stop serving; a no-op when not started."""
        servers, self._servers = self._servers, []
        for server, _ in servers:
            server.shutdown()
            server.server_close()
        for _, thread in servers:
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

    @property
    def _server(self) -> _Server | None:
        """The first listener: the one :attr:`url` names (``None`` when stopped)."""
        return self._servers[0][0] if self._servers else None

    @property
    def http_url(self) -> str:
        """The base URL of plain HTTP (the same as :attr:`url` without ``tls``)."""
        if self._server is None:
            raise RuntimeError("the emulator is not running: call start() first")
        return self._servers[-1][0].url

    def _base_url(self) -> str:
        """The listener's the current request came through, else the main one's."""
        serving = getattr(self._serving, "base", None)
        if serving:
            return str(serving)
        server = self._server
        if server is None:
            # Links in answers built while stopping still need a host.
            return "http://127.0.0.1"
        return server.url

    # -- state -----------------------------------------------------------------

    def add_droplet(
        self,
        name: str,
        ip_address: str,
        *,
        tags: Iterable[str] = (),
        region: str = _DEFAULT_REGION,
        size: str = "s-1vcpu-1gb",
        image: str = "ubuntu-24-04-x64",
        private_ip_address: str | None = None,
        status: str = "active",
        droplet_id: int | None = None,
    ) -> dict[str, Any]:
        """Add a droplet and return its API document (a copy).

        A droplet of a GPU size (``gpu-h100x1-80gb``) is a GPU droplet, listed
        only when ``?type=gpus`` asks for them. ``droplet_id`` gives it that
        id (a kept sandbox's droplet, back with the id it had); later droplets
        get higher ones.
        """
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
        with self._lock:
            if droplet_id in self._droplets:
                raise ValueError(f"droplet id {droplet_id} is taken")
            droplet = self._new_droplet(
                name, region, size, _IMAGES[image][0], list(tags), features, status, droplet_id=droplet_id
            )
            droplet["networks"]["v4"] = v4
            return copy.deepcopy(droplet)

    def remove_droplet(self, droplet_id: int) -> None:
        """Forget a droplet, as if it had been destroyed; ``KeyError`` if unknown."""
        with self._lock:
            self._forget_droplet(droplet_id)

    def powered_off(self, address: str) -> bool:
        """The droplet at ``address`` went off by itself (``poweroff`` inside it): the API says
        ``off``, as DigitalOcean's does. Whether there was an active droplet there to say it of."""
        with self._lock:
            for droplet in self._droplets.values():
                if droplet.get("status") == "active" and public_ipv4(droplet) == address:
                    droplet["status"] = "off"
                    return True
        return False

    def droplets(self) -> list[dict[str, Any]]:
        """Every droplet's API document (copies), in id order, with the addresses it will have once active."""
        with self._lock:
            documents = []
            for droplet_id in sorted(self._droplets):
                document = copy.deepcopy(self._droplets[droplet_id])
                if droplet_id in self._addresses:
                    document["networks"] = copy.deepcopy(self._addresses[droplet_id])
                documents.append(document)
            return documents

    def account_state(self) -> dict[str, Any]:
        """What a kept sandbox's account keeps besides its droplets: domains, records, the ids to come."""
        with self._lock:
            return copy.deepcopy(
                {
                    "domains": list(self._domains.values()),
                    "records": self._records,
                    "next_record_id": self._next_record_id,
                    "next_droplet_id": self._next_droplet_id,
                    "firewalls": self._firewalls.state(),
                }
            )

    def restore_account(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`account_state` gave (before any droplet is added)."""
        with self._lock:
            self._domains = {d["name"]: dict(d) for d in state["domains"]}
            self._records = {name: [dict(r) for r in records] for name, records in state["records"].items()}
            self._next_record_id = int(state["next_record_id"])
            # Ids are never given twice, as on DigitalOcean: a droplet made again is another droplet.
            self._next_droplet_id = max(self._next_droplet_id, int(state["next_droplet_id"]))
            self._firewalls.restore(state.get("firewalls", []))

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

    def add_backup(self, droplet_id: int, name: str | None = None) -> dict[str, Any]:
        """Record a backup of a droplet, as the daily backup job would; returns the image document."""
        with self._lock:
            droplet = self._droplets[droplet_id]
            return copy.deepcopy(self._new_user_image(droplet, "backup", name or f"{droplet['name']} {_timestamp()}"))

    def inject(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: float | None = None,
        method: str | None = None,
        path: str | None = None,
        processed: bool = False,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` and the API's error body.

        ``retry_after`` adds a ``Retry-After`` header (seconds). ``method`` and
        ``path`` (without the query) limit the fault to matching requests;
        with ``processed`` the request takes effect before the error answer.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"inject() takes an error status (4xx or 5xx), not {status}")
        self._stage(
            count, _Fault(status=status, retry_after=retry_after, processed=processed, method=method, path=path)
        )

    def slow(
        self,
        seconds: float,
        count: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        until: threading.Event | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests ``seconds`` late; they take effect at once.

        With ``until``, each answer waits for that event instead, ``seconds`` at
        most: a test sets it once the client has given up, so that no timeout races a delay.
        """
        self._stage(count, _Fault(delay=seconds, until=until, processed=True, method=method, path=path))

    def drop(
        self, count: int = 1, *, method: str | None = None, path: str | None = None, processed: bool = False
    ) -> None:
        """Close the connection of the next ``count`` matching requests without answering."""
        self._stage(count, _Fault(drop=True, processed=processed, method=method, path=path))

    def _stage(self, count: int, fault: _Fault) -> None:
        with self._lock:
            self._faults.extend(copy.copy(fault) for _ in range(count))

    def user_data(self, droplet_id: int) -> str | None:
        """The user data the droplet was created with, as its metadata service serves it to cloud-init
        (the API never shows it); None without any. ``KeyError`` for a droplet it does not know."""
        with self._lock:
            if droplet_id not in self._droplets:
                raise KeyError(droplet_id)
            return self._user_data.get(droplet_id)

    @property
    def mail(self) -> list[dict[str, Any]]:
        """The emails the account was sent, oldest first (copies): a ``password_reset`` sends the
        droplet's new root password, as DigitalOcean does, as ``{"to", "droplet_id", "root_password"}``."""
        with self._lock:
            return copy.deepcopy(self._mail)

    @property
    def request_log(self) -> list[tuple[str, str]]:
        """Every request served so far, as ``(method, path?query)``; headers are not kept."""
        with self._lock:
            return list(self._requests)

    # -- serving ---------------------------------------------------------------

    def _handle(
        self, method: str, target: str, authorization: str | None, body: Any = None, *, base: str | None = None
    ) -> _Answer:
        """One request in, an answer out; called by the handler threads (``base``: their listener's URL)."""
        self._serving.base = base
        path = urlsplit(target).path.rstrip("/") or "/"
        with self._lock:
            self._requests.append((method, target))
            now = time.time()
            fault = next((f for f in self._faults if f.matches(method, path)), None)
            if fault is not None:
                self._faults.remove(fault)
            limited = self._limited(now, count=fault is None or fault.processed)
            headers = self._rate_headers(now)
        headers["x-request-id"] = str(uuid.uuid4())
        if fault is not None and not fault.processed:
            return self._fault_answer(fault, headers, now)
        if not _authorized(authorization, self._token):
            return _Answer(401, headers, _error_body(401, request_id=headers["x-request-id"]))
        if limited is not None:
            headers["Retry-After"] = str(limited)
            headers["ratelimit-remaining"] = "0"
            return _Answer(429, headers, _error_body(429, request_id=headers["x-request-id"]))
        try:
            status, answer = self._route(method, target, body)
        except _HTTPError as exc:
            status, answer = exc.status, _error_body(exc.status, exc.message, headers["x-request-id"])
        if method != "GET" and 200 <= status < 300 and self._on_change:
            self._on_change()
        if fault is not None:
            if fault.delay or not (fault.drop or fault.status):
                return _Answer(status, headers, answer, delay=fault.delay, until=fault.until)
            return self._fault_answer(fault, headers, now)
        return _Answer(status, headers, answer)

    def _fault_answer(self, fault: _Fault, headers: dict[str, str], now: float) -> _Answer:
        if fault.drop:
            return _Answer(0, headers, drop=True)
        assert fault.status is not None
        if fault.status == 429:
            headers["ratelimit-remaining"] = "0"
            headers["ratelimit-reset"] = str(math.ceil(now + (fault.retry_after or 1)))
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        return _Answer(fault.status, headers, _error_body(fault.status, request_id=headers["x-request-id"]))

    def _limited(self, now: float, count: bool) -> int | None:
        """Seconds to wait when a limit is reached, else None (and the request is counted)."""
        while self._hour and self._hour[0] <= now - 3600:
            self._hour.popleft()
        while self._minute and self._minute[0] <= now - 60:
            self._minute.popleft()
        if len(self._minute) >= self._per_minute:
            return max(math.ceil(self._minute[0] + 60 - now), 1)
        if len(self._hour) >= self._per_hour:
            return max(math.ceil(self._hour[0] + 3600 - now), 1)
        if count:
            self._hour.append(now)
            self._minute.append(now)
        return None

    def _rate_headers(self, now: float) -> dict[str, str]:
        oldest = self._hour[0] if self._hour else now
        return {
            "ratelimit-limit": str(self._per_hour),
            "ratelimit-remaining": str(max(self._per_hour - len(self._hour), 0)),
            # When the oldest request in the window expires, as the real API reports it.
            "ratelimit-reset": str(math.ceil(oldest + 3600)),
        }

    def _route(self, method: str, target: str, body: Any) -> tuple[int, Any]:
        parts = urlsplit(target)
        path = parts.path.rstrip("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        allowed = False
        for route_method, pattern, name in _COMPILED:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            allowed = True
            if route_method == method:
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                handler: Callable[[_Request], tuple[int, Any]] = getattr(self, name)
                return handler(_Request(method, path, params, query, body))
        raise _HTTPError(405 if allowed else 404)

    # -- droplets ----------------------------------------------------------------

    def _new_droplet(
        self,
        name: str,
        region: str,
        size: str,
        image_id: int,
        tags: list[str],
        features: list[str],
        status: str,
        vpc_uuid: str | None = None,
        droplet_id: int | None = None,
    ) -> dict[str, Any]:
        """Store a droplet without addresses, with the next id unless given one; the caller holds the lock."""
        memory, vcpus, disk, _, _, _ = _SIZES[size]
        if droplet_id is None:
            droplet_id = self._next_droplet_id
        self._next_droplet_id = max(self._next_droplet_id, droplet_id + 1)
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
            "created_at": _timestamp(),
            "features": features,
            "backup_ids": [],
            "next_backup_window": None,
            "snapshot_ids": [],
            "image": copy.deepcopy(self._images[image_id]),
            "volume_ids": [],
            "size": _size_document(size),
            "size_slug": size,
            "networks": {"v4": [], "v6": []},
            "region": _region_document(region),
            "tags": [],
            "vpc_uuid": vpc_uuid or str(uuid.uuid5(_NAMESPACE, f"vpc-{region}")),
        }
        if size in _GPU_SIZES:
            droplet["gpu_info"] = copy.deepcopy(_GPU_SIZES[size])
        self._droplets[droplet_id] = droplet
        for tag in tags:
            self._tag_droplet(droplet, tag)
        return droplet

    def _show_droplet(self, droplet: dict[str, Any]) -> dict[str, Any]:
        """The droplet as an answer shows it; each showing of a new droplet counts as one read."""
        key = ("droplet", droplet["id"])
        if key in self._pending:
            if self._pending[key] > 0:
                self._pending[key] -= 1
            else:
                del self._pending[key]
                droplet["status"] = "active"
                networks = self._addresses.pop(droplet["id"], None)
                if networks is not None:
                    droplet["networks"] = networks
                # An active droplet's create action is over, whether anyone read it or not.
                for action in self._actions.values():
                    if action["resource_id"] == droplet["id"] and action["type"] == "create":
                        self._pending[("action", action["id"])] = 0
                        self._show_action(action)
        return copy.deepcopy(droplet)

    def _droplet(self, request: _Request) -> dict[str, Any]:
        try:
            droplet = self._droplets.get(int(request.params["droplet_id"]))
        except ValueError:
            droplet = None
        if droplet is None:
            raise _HTTPError(404)
        return droplet

    def _list_droplets(self, request: _Request) -> tuple[int, Any]:
        query = request.query
        tag, name, kind = query.get("tag_name"), query.get("name"), query.get("type")
        if tag is not None and (name is not None or kind is not None):
            raise _HTTPError(422, "The tag_name filter cannot be combined with name or type.")
        if kind not in (None, "droplets", "gpus"):
            raise _HTTPError(400, "type must be droplets or gpus")
        with self._lock:
            droplets = list(self._droplets.values())
            if tag is not None:
                droplets = [d for d in droplets if tag in d["tags"]]
            else:
                # Without a tag the API lists one kind only: plain droplets unless type=gpus.
                gpus = kind == "gpus"
                droplets = [d for d in droplets if ("gpu_info" in d) == gpus]
            if name is not None:
                # The real filter returns whole-name matches, compared case-insensitively.
                droplets = [d for d in droplets if d["name"].lower() == name.lower()]
            return 200, self._page("droplets", droplets, request, self._show_droplet)

    def _get_droplet(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            vanishing = self._read_vanishing(request)
            if vanishing is not None:
                return 200, {"droplet": vanishing}
            return 200, {"droplet": self._show_droplet(self._droplet(request))}

    def _read_vanishing(self, request: _Request) -> dict[str, Any] | None:
        """A droplet deleted a moment ago, as one more read by id sees it (``off``); ``None`` when it
        is not one. GET and DELETE see it alike, for the same reads: a delete sent again in that
        moment is accepted again, then both answer 404. The caller holds the lock."""
        vanishing = self._vanishing.get(_int_or_404(request.params["droplet_id"]))
        if vanishing is None:
            return None
        vanishing[1] -= 1
        if vanishing[1] <= 0:
            del self._vanishing[vanishing[0]["id"]]
        shown: dict[str, Any] = copy.deepcopy(vanishing[0])
        return shown

    def _create_droplets(self, request: _Request) -> tuple[int, Any]:
        body = _object(request.body)
        if ("name" in body) == ("names" in body):
            raise _HTTPError(422, "Give either name or names.")
        names = [body["name"]] if "name" in body else body["names"]
        if not isinstance(names, list) or not names or len(names) > _MAX_NAMES:
            raise _HTTPError(422, f"names must list 1 to {_MAX_NAMES} droplet names.")
        for name in names:
            if not isinstance(name, str) or len(name) > 255 or not _DROPLET_NAME.fullmatch(name):
                raise _HTTPError(422, f"Name {name!r} is not a valid droplet name.")
        region = body.get("region", _DEFAULT_REGION)
        size, image = body.get("size"), body.get("image")
        if region not in _REGIONS:
            raise _HTTPError(422, "You specified an invalid region for Droplet creation.")
        if size not in _SIZES:
            raise _HTTPError(422, "You specified an invalid size for Droplet creation.")
        tags = _string_list(body, "tags")
        for tag in tags:
            _check_tag(tag)
        user_data = body.get("user_data")
        if user_data is not None and (not isinstance(user_data, str) or len(user_data.encode()) > _MAX_USER_DATA):
            raise _HTTPError(422, "user_data must be a string of at most 64 KiB.")
        flags = {flag: body.get(flag, False) for flag in ("ipv6", "monitoring", "backups")}
        if not all(isinstance(v, bool) for v in flags.values()):
            raise _HTTPError(422, "ipv6, monitoring and backups must be booleans.")
        vpc_uuid = body.get("vpc_uuid")
        if vpc_uuid is not None and not isinstance(vpc_uuid, str):
            raise _HTTPError(422, "vpc_uuid must be a string.")
        with self._lock:
            image_id = self._image_id(image)
            if image_id is None:
                raise _HTTPError(422, "You specified an invalid image for Droplet creation.")
            for key in body.get("ssh_keys") or []:
                if self._find_key(str(key)) is None:
                    raise _HTTPError(422, f"SSH key {key!r} does not exist on this account.")
        # The hook runs outside the lock: it may be slow, or call back into the emulator.
        addresses: list[str | None] = self._on_create(list(names)) if self._on_create else [None] * len(names)
        created, links = [], []
        with self._lock:
            for name, address in zip(names, addresses, strict=True):
                features = ["droplet_agent", "private_networking"]
                features += [flag for flag in ("monitoring", "ipv6", "backups") if flags[flag]]
                droplet = self._new_droplet(name, region, size, image_id, tags, features, "new", vpc_uuid)
                if flags["backups"]:
                    droplet["next_backup_window"] = _backup_window()
                self._pending[("droplet", droplet["id"])] = self._pending_reads
                if user_data is not None:
                    self._user_data[droplet["id"]] = user_data
                self._addresses[droplet["id"]] = self._networks_for(droplet, address, flags["ipv6"])
                action = self._new_action(droplet, "create")
                created.append(copy.deepcopy(droplet))
                links.append(
                    {"id": action["id"], "rel": "create", "href": f"{self._base_url()}/v2/actions/{action['id']}"}
                )
        if "name" in body:
            return 202, {"droplet": created[0], "links": {"actions": links}}
        return 202, {"droplets": created, "links": {"actions": links}}

    def _networks_for(self, droplet: dict[str, Any], address: str | None, ipv6: bool) -> dict[str, Any]:
        if address is None:
            host = self._next_public
            self._next_public += 1
            # 203.0.113.0/24 then 198.51.100.0/24: documentation ranges that route nowhere.
            address = f"203.0.113.{host}" if host < 255 else f"198.51.100.{host - 253}"
        private = f"10.{list(_REGIONS).index(droplet['region']['slug']) + 100}.0.{self._next_private}"
        self._next_private = self._next_private % 250 + 2
        return {
            "v4": [_v4_network(private, "private"), _v4_network(address, "public")],
            "v6": [_v6_network(droplet["id"])] if ipv6 else [],
        }

    def _delete_droplet(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            if self._read_vanishing(request) is not None:
                return 204, None  # being deleted already
            gone = [self._delete(self._droplet(request))]
        self._deleted(gone)
        return 204, None

    def _delete(self, droplet: dict[str, Any]) -> tuple[str, str | None]:
        """Forget the droplet, still showing it by id for a few reads; its name and public IPv4.
        The caller holds the lock."""
        shown = self._show_droplet(droplet)
        address = public_ipv4(shown)
        self._forget_droplet(droplet["id"])
        if self._pending_reads:
            self._vanishing[droplet["id"]] = [{**shown, "status": "off"}, self._pending_reads]
        return droplet["name"], address

    def _deleted(self, gone: list[tuple[str, str | None]]) -> None:
        """Tell the hook (outside the lock, as on_create) which droplets are gone."""
        if self._on_delete:
            for name, address in gone:
                self._on_delete(name, address)

    def _delete_droplets_by_tag(self, request: _Request) -> tuple[int, Any]:
        tag = request.query.get("tag_name")
        if not tag:
            raise _HTTPError(422, "tag_name is required to delete droplets by tag.")
        with self._lock:
            gone = [self._delete(d) for d in [d for d in self._droplets.values() if tag in d["tags"]]]
        self._deleted(gone)
        return 204, None

    def _forget_droplet(self, droplet_id: int) -> None:
        del self._droplets[droplet_id]
        self._firewalls.forget_droplet(droplet_id)
        self._pending.pop(("droplet", droplet_id), None)
        self._user_data.pop(droplet_id, None)
        self._addresses.pop(droplet_id, None)
        # Backups go with their droplet; snapshots stay, as on the real API.
        for image_id, owner in list(self._image_droplet.items()):
            if owner == droplet_id and self._images[image_id]["type"] == "backup":
                del self._images[image_id]
                del self._image_droplet[image_id]

    def _list_kernels(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            self._droplet(request)
        kernels = [{"id": i, "name": n, "version": v} for i, n, v in _KERNELS]
        return 200, self._page("kernels", kernels, request)

    def _list_droplet_snapshots(self, request: _Request) -> tuple[int, Any]:
        return 200, self._droplet_images(request, "snapshot", "snapshots")

    def _list_droplet_backups(self, request: _Request) -> tuple[int, Any]:
        return 200, self._droplet_images(request, "backup", "backups")

    def _droplet_images(self, request: _Request, kind: str, key: str) -> dict[str, Any]:
        with self._lock:
            droplet_id = self._droplet(request)["id"]
            images = [
                {
                    k: image[k]
                    for k in ("id", "name", "created_at", "regions", "min_disk_size", "size_gigabytes", "type")
                }
                for image_id, image in self._images.items()
                if self._image_droplet.get(image_id) == droplet_id and image["type"] == kind
            ]
        return self._page(key, images, request)

    # -- actions -------------------------------------------------------------------

    def _new_action(self, droplet: dict[str, Any], kind: str) -> dict[str, Any]:
        action_id = self._next_action_id
        self._next_action_id += 1
        action = {
            "id": action_id,
            "status": "in-progress",
            "type": kind,
            "started_at": _timestamp(),
            "completed_at": None,
            "resource_id": droplet["id"],
            "resource_type": "droplet",
            "region": copy.deepcopy(droplet["region"]),
            "region_slug": droplet["region"]["slug"],
        }
        self._actions[action_id] = action
        self._pending[("action", action_id)] = self._pending_reads
        return action

    def _show_action(self, action: dict[str, Any]) -> dict[str, Any]:
        key = ("action", action["id"])
        if key in self._pending:
            if self._pending[key] > 0:
                self._pending[key] -= 1
            else:
                del self._pending[key]
                action["status"] = "completed"
                action["completed_at"] = _timestamp()
        return copy.deepcopy(action)

    def _get_action(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            action = self._actions.get(_int_or_404(request.params["action_id"]))
            if action is None:
                raise _HTTPError(404)
            return 200, {"action": self._show_action(action)}

    def _get_droplet_action(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            droplet = self._droplet(request)
            action = self._actions.get(_int_or_404(request.params["action_id"]))
            if action is None or action["resource_id"] != droplet["id"]:
                raise _HTTPError(404)
            return 200, {"action": self._show_action(action)}

    def _list_droplet_actions(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            droplet_id = self._droplet(request)["id"]
            actions = [a for a in self._actions.values() if a["resource_id"] == droplet_id]
            return 200, self._page("actions", actions, request, self._show_action)

    def _post_droplet_action(self, request: _Request) -> tuple[int, Any]:
        body = _object(request.body)
        kind = body.get("type")
        if kind not in _ACTION_TYPES:
            raise _HTTPError(422, f"{kind!r} is not a droplet action type.")
        with self._lock:
            droplet = self._droplet(request)
            self._apply(droplet, kind, body)
            action = copy.deepcopy(self._new_action(droplet, kind))
            address = public_ipv4(droplet)  # a droplet still being created takes no action
        if kind in _POWER_ACTIONS and self._on_power:
            self._on_power(address, kind)  # outside the lock, as on_create
        return 201, {"action": action}

    def _apply(self, droplet: dict[str, Any], kind: str, body: dict[str, Any]) -> None:
        """An action's effect on the droplet, validated first; the caller holds the lock."""
        if droplet["status"] == "new" and kind != "password_reset":
            raise _HTTPError(422, "The droplet is still being created.")
        features: list[str] = droplet["features"]
        if kind in ("power_off", "shutdown"):
            droplet["status"] = "off"
        elif kind in ("power_on", "reboot", "power_cycle"):
            droplet["status"] = "active"
        elif kind == "password_reset":
            password = secrets.token_urlsafe(12)
            self._mail.append({"to": _ACCOUNT_EMAIL, "droplet_id": droplet["id"], "root_password": password})
        elif kind == "rename":
            name = body.get("name")
            if not isinstance(name, str) or not _DROPLET_NAME.fullmatch(name):
                raise _HTTPError(422, "rename needs a valid droplet name.")
            droplet["name"] = name
        elif kind == "resize":
            size = body.get("size")
            if size not in _SIZES or size in _GPU_SIZES:
                raise _HTTPError(422, "resize needs a valid size slug.")
            disk = body.get("disk", False)
            if not isinstance(disk, bool):
                raise _HTTPError(422, "disk must be a boolean.")
            memory, vcpus, new_disk, _, _, _ = _SIZES[size]
            if not disk and new_disk < droplet["disk"]:
                new_disk = droplet["disk"]
            droplet.update(memory=memory, vcpus=vcpus, size=_size_document(size), size_slug=size)
            if disk:
                droplet["disk"] = new_disk
                droplet["disk_info"] = [{"type": "local", "size": {"amount": new_disk, "unit": "gib"}}]
        elif kind == "rebuild":
            image_id = self._image_id(body.get("image"))
            if image_id is None:
                raise _HTTPError(422, "rebuild needs an existing image id or slug.")
            droplet["image"] = copy.deepcopy(self._images[image_id])
        elif kind == "restore":
            image = body.get("image")
            if not isinstance(image, int) or self._image_droplet.get(image) != droplet["id"]:
                raise _HTTPError(422, "restore needs the id of a backup or snapshot of this droplet.")
        elif kind == "change_kernel":
            kernel = next((k for k in _KERNELS if k[0] == body.get("kernel")), None)
            if kernel is None:
                raise _HTTPError(422, "change_kernel needs the id of an available kernel.")
            droplet["kernel"] = {"id": kernel[0], "name": kernel[1], "version": kernel[2]}
        elif kind == "snapshot":
            name = body.get("name")
            if name is not None and not isinstance(name, str):
                raise _HTTPError(422, "A snapshot name must be a string.")
            self._new_user_image(droplet, "snapshot", name or f"{droplet['name']}-{int(time.time())}")
        elif kind in ("enable_backups", "change_backup_policy"):
            if "backups" not in features:
                features.append("backups")
            droplet["next_backup_window"] = _backup_window()
        elif kind == "disable_backups":
            if "backups" in features:
                features.remove("backups")
            droplet["next_backup_window"] = None
        elif kind == "enable_ipv6":
            if "ipv6" not in features:
                features.append("ipv6")
                droplet["networks"]["v6"] = [_v6_network(droplet["id"])]
        elif kind == "enable_private_networking":
            if "private_networking" not in features:
                features.append("private_networking")
                region = list(_REGIONS).index(droplet["region"]["slug"]) + 100
                private = f"10.{region}.1.{droplet['id'] % 250 + 2}"
                droplet["networks"]["v4"].insert(0, _v4_network(private, "private"))

    # -- images, regions, sizes ------------------------------------------------------

    def _new_user_image(self, droplet: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
        image_id = self._next_image_id
        self._next_image_id += 1
        image = {
            "id": image_id,
            "name": name,
            "type": kind,
            "distribution": droplet["image"]["distribution"],
            "slug": None,
            "public": False,
            "regions": [droplet["region"]["slug"]],
            "created_at": _timestamp(),
            "min_disk_size": droplet["disk"],
            "size_gigabytes": 2.36,
            "description": "",
            "tags": [],
            "status": "available",
            "error_message": "",
        }
        self._images[image_id] = image
        self._image_kind[image_id] = "user"
        self._image_droplet[image_id] = droplet["id"]
        droplet["snapshot_ids" if kind == "snapshot" else "backup_ids"].append(image_id)
        return image

    def _image_id(self, image: Any) -> int | None:
        """The id of an image given by id or slug, or None; the caller holds the lock."""
        if isinstance(image, bool):
            return None
        if isinstance(image, int) or (isinstance(image, str) and image.isdecimal()):
            return int(image) if int(image) in self._images else None
        for candidate in self._images.values():
            if isinstance(image, str) and candidate["slug"] == image:
                return int(candidate["id"])
        return None

    def _list_images(self, request: _Request) -> tuple[int, Any]:
        kind, private, tag = request.query.get("type"), request.query.get("private"), request.query.get("tag_name")
        if kind not in (None, "application", "distribution"):
            raise _HTTPError(400, "type must be application or distribution")
        if private not in (None, "true", "false"):
            raise _HTTPError(400, "private must be true or false")
        with self._lock:
            images = [
                image
                for image_id, image in self._images.items()
                if (kind is None or self._image_kind[image_id] == kind)
                and (private != "true" or self._image_kind[image_id] == "user")
                and (tag is None or tag in image["tags"])
            ]
            return 200, self._page("images", copy.deepcopy(images), request)

    def _get_image(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            image_id = self._image_id(request.params["image_id"])
            if image_id is None:
                raise _HTTPError(404)
            return 200, {"image": copy.deepcopy(self._images[image_id])}

    def _list_regions(self, request: _Request) -> tuple[int, Any]:
        return 200, self._page("regions", [_region_document(slug) for slug in _REGIONS], request)

    def _list_sizes(self, request: _Request) -> tuple[int, Any]:
        return 200, self._page("sizes", [_size_document(slug) for slug in _SIZES], request)

    # -- keys and account ------------------------------------------------------------

    def _find_key(self, identifier: str) -> dict[str, Any] | None:
        for key in self._keys:
            if str(key["id"]) == identifier or key["fingerprint"] == identifier:
                return key
        return None

    def _list_keys(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            return 200, self._page("ssh_keys", copy.deepcopy(self._keys), request)

    def _get_key(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            key = self._find_key(request.params["ssh_key_identifier"])
            if key is None:
                raise _HTTPError(404)
            return 200, {"ssh_key": dict(key)}

    def _create_key(self, request: _Request) -> tuple[int, Any]:
        body = _object(request.body)
        name, public_key = body.get("name"), body.get("public_key")
        if not isinstance(name, str) or not name.strip():
            raise _HTTPError(422, "Name can't be blank")
        if not isinstance(public_key, str):
            raise _HTTPError(422, "Key invalid type, we support 'ssh-rsa', 'ssh-ed25519' and 'ecdsa-sha2-nistp*'")
        try:
            fingerprint = _fingerprint(public_key)
        except ValueError:
            raise _HTTPError(422, "Key invalid, key should be of the form 'TYPE BASE64 [COMMENT]'") from None
        with self._lock:
            if self._find_key(fingerprint) is not None:
                raise _HTTPError(422, "SSH Key is already in use on your account")
        return 201, {"ssh_key": self.add_ssh_key(name, public_key)}

    def _update_key(self, request: _Request) -> tuple[int, Any]:
        """Rename a key (its name is all that changes), by id or fingerprint."""
        body = _object(request.body)
        name = body.get("name")
        with self._lock:
            key = self._find_key(request.params["ssh_key_identifier"])
            if key is None:
                raise _HTTPError(404)
            if not isinstance(name, str) or not name.strip():
                raise _HTTPError(422, "Name can't be blank")
            if len(name) > 255 or any(not c.isprintable() for c in name):
                raise _HTTPError(422, "Name must be at most 255 printable characters")
            key["name"] = name
            return 200, {"ssh_key": dict(key)}

    def _delete_key(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            key = self._find_key(request.params["ssh_key_identifier"])
            if key is None:
                raise _HTTPError(404)
            self._keys.remove(key)
        return 204, None

    def _account(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            droplets = len(self._droplets)
        return 200, {
            "account": {
                "droplet_limit": max(25, droplets),
                "floating_ip_limit": 3,
                "email": _ACCOUNT_EMAIL,
                "name": "Sandbox",
                "uuid": self._account_uuid,
                "email_verified": True,
                "status": "active",
                "status_message": "",
                "team": {"uuid": str(uuid.uuid5(_NAMESPACE, "team")), "name": "My Team"},
            }
        }

    # -- tags ------------------------------------------------------------------------

    def _tag_droplet(self, droplet: dict[str, Any], tag: str) -> None:
        if tag not in droplet["tags"]:
            droplet["tags"].append(tag)
        self._tags[tag] = f"{self._base_url()}/v2/droplets/{droplet['id']}"

    def _tag_document(self, name: str) -> dict[str, Any]:
        droplets = sum(1 for d in self._droplets.values() if name in d["tags"])
        images = sum(1 for i in self._images.values() if name in i["tags"])
        last = self._tags.get(name)
        summary: dict[str, Any] = {"count": droplets + images}
        tagged: dict[str, Any] = {"count": droplets}
        if last and droplets + images:
            summary["last_tagged_uri"] = last
            if "/droplets/" in last:
                tagged["last_tagged_uri"] = last
        return {"name": name, "resources": {**summary, "droplets": tagged}}

    def _list_tags(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            return 200, self._page("tags", [self._tag_document(name) for name in self._tags], request)

    def _create_tag(self, request: _Request) -> tuple[int, Any]:
        name = _check_tag(_object(request.body).get("name"))
        with self._lock:
            # Creating a tag that exists returns it, as the real API does.
            self._tags.setdefault(name, None)
            return 201, {"tag": self._tag_document(name)}

    def _tag(self, request: _Request) -> str:
        name = request.params["tag_id"]
        if name not in self._tags:
            raise _HTTPError(404)
        return name

    def _get_tag(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            return 200, {"tag": self._tag_document(self._tag(request))}

    def _delete_tag(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            name = self._tag(request)
            del self._tags[name]
            for resource in [*self._droplets.values(), *self._images.values()]:
                if name in resource["tags"]:
                    resource["tags"].remove(name)
            self._firewalls.forget_tag(name)
        return 204, None

    def _tagged_resources(self, request: _Request) -> list[dict[str, Any]]:
        """The droplets and images a tag request names, all checked first; the caller holds the lock."""
        resources = _object(request.body).get("resources")
        if not isinstance(resources, list) or not resources:
            raise _HTTPError(422, "resources must list at least one resource.")
        found = []
        for resource in resources:
            if not isinstance(resource, dict):
                raise _HTTPError(422, "Each resource needs resource_id and resource_type.")
            kind, ident = resource.get("resource_type"), resource.get("resource_id")
            if kind not in ("droplet", "image", "volume", "volume_snapshot") or not isinstance(ident, str):
                raise _HTTPError(422, "Each resource needs a string resource_id and a known resource_type.")
            # The emulator has no volumes: tagging one finds nothing, as for an unknown id.
            store = self._droplets if kind == "droplet" else self._images if kind == "image" else {}
            target = store.get(int(ident)) if ident.isdecimal() else None
            if target is None:
                raise _HTTPError(404, f"{kind} {ident} not found")
            found.append(target)
        return found

    def _tag_resources(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            name = self._tag(request)
            for resource in self._tagged_resources(request):
                if "networks" in resource:
                    self._tag_droplet(resource, name)
                elif name not in resource["tags"]:
                    resource["tags"].append(name)
                    self._tags[name] = f"{self._base_url()}/v2/images/{resource['id']}"
        return 204, None

    def _untag_resources(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            name = self._tag(request)
            for resource in self._tagged_resources(request):
                if name in resource["tags"]:
                    resource["tags"].remove(name)
        return 204, None

    # -- domains and records -------------------------------------------------------------

    def _domain(self, request: _Request) -> dict[str, Any]:
        domain = self._domains.get(request.params["domain_name"].lower())
        if domain is None:
            raise _HTTPError(404)
        return domain

    def _domain_document(self, domain: dict[str, Any]) -> dict[str, Any]:
        name = domain["name"]
        lines = [f"$ORIGIN {name}.", f"$TTL {domain['ttl']}"]
        for record in self._records[name]:
            data = record["data"]
            if record["type"] in ("CNAME", "MX", "NS", "SRV") and data != "@":
                data += "."
            lines.append(f"{record['name']} IN {record['type']} {data}")
        return {**domain, "zone_file": "\n".join(lines) + "\n"}

    def _list_domains(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            return 200, self._page("domains", [self._domain_document(d) for d in self._domains.values()], request)

    def _get_domain(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            return 200, {"domain": self._domain_document(self._domain(request))}

    def _create_domain(self, request: _Request) -> tuple[int, Any]:
        body = _object(request.body)
        name, address = body.get("name"), body.get("ip_address")
        if not isinstance(name, str) or not _DOMAIN_NAME.fullmatch(name.lower()):
            raise _HTTPError(422, "Name is invalid")
        if address is not None and not _is_address(address, 4) and not _is_address(address, 6):
            raise _HTTPError(422, "IP address is invalid")
        name = name.lower()
        with self._lock:
            if name in self._domains:
                raise _HTTPError(422, "Domain already exists.")
            domain = {"name": name, "ttl": 1800}
            self._domains[name] = domain
            self._records[name] = []
            self._add_record(name, {"type": "SOA", "name": "@", "data": "1800", "ttl": 1800})
            for server in _NAMESERVERS:
                self._add_record(name, {"type": "NS", "name": "@", "data": server, "ttl": 1800})
            if address is not None:
                kind = "A" if _is_address(address, 4) else "AAAA"
                self._add_record(name, {"type": kind, "name": "@", "data": address, "ttl": 1800})
            # The create answer names the domain only; ttl and zone file come with a GET.
            return 201, {"domain": {"name": name, "ttl": None, "zone_file": None}}

    def _delete_domain(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            name = self._domain(request)["name"]
            del self._domains[name]
            del self._records[name]
        return 204, None

    def _add_record(self, domain: str, fields: dict[str, Any]) -> dict[str, Any]:
        record = {
            "id": self._next_record_id,
            "type": fields["type"],
            "name": fields.get("name", "@"),
            "data": fields.get("data", ""),
            "priority": fields.get("priority"),
            "port": fields.get("port"),
            "ttl": fields.get("ttl", 1800),
            "weight": fields.get("weight"),
            "flags": fields.get("flags"),
            "tag": fields.get("tag"),
        }
        self._next_record_id += 1
        self._records[domain].append(record)
        return record

    def _record(self, request: _Request) -> tuple[str, dict[str, Any]]:
        domain = self._domain(request)["name"]
        record_id = _int_or_404(request.params["domain_record_id"])
        for record in self._records[domain]:
            if record["id"] == record_id:
                return domain, record
        raise _HTTPError(404)

    def _list_records(self, request: _Request) -> tuple[int, Any]:
        kind, name = request.query.get("type"), request.query.get("name")
        if kind is not None and kind not in _RECORD_TYPES:
            raise _HTTPError(400, f"type must be one of {', '.join(_RECORD_TYPES)}")
        with self._lock:
            domain = self._domain(request)["name"]
            records = [
                r
                for r in self._records[domain]
                if (kind is None or r["type"] == kind) and (name is None or _fqdn(r["name"], domain) == name.lower())
            ]
            return 200, self._page("domain_records", copy.deepcopy(records), request)

    def _get_record(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            return 200, {"domain_record": copy.deepcopy(self._record(request)[1])}

    def _create_record(self, request: _Request) -> tuple[int, Any]:
        fields = _record_fields(_object(request.body))
        with self._lock:
            domain = self._domain(request)["name"]
            return 201, {"domain_record": copy.deepcopy(self._add_record(domain, fields))}

    def _update_record(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            _, record = self._record(request)
            fields = _record_fields({**record, **_object(request.body)})
            if fields["type"] != record["type"]:
                raise _HTTPError(422, "A record's type cannot change.")
            record.update({k: v for k, v in fields.items() if k != "id"})
            return 200, {"domain_record": copy.deepcopy(record)}

    def _delete_record(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            domain, record = self._record(request)
            self._records[domain].remove(record)
        return 204, None

    # -- pagination ----------------------------------------------------------------------

    # -- firewalls (poseidon.sandbox.firewalls keeps them) ---------------------------------

    def _list_firewalls(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            return 200, self._page("firewalls", self._firewalls.every(), request)

    def _list_droplet_firewalls(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            droplet = self._droplet(request)
            return 200, self._page("firewalls", self._firewalls.every(droplet["id"]), request)

    def _create_firewall(self, request: _Request) -> tuple[int, Any]:
        return 202, {"firewall": self._on_firewalls(lambda: self._firewalls.create(request.body))}

    def _get_firewall(self, request: _Request) -> tuple[int, Any]:
        return 200, {"firewall": self._on_firewalls(lambda: self._firewalls.get(request.params["firewall_id"]))}

    def _update_firewall(self, request: _Request) -> tuple[int, Any]:
        firewall_id = request.params["firewall_id"]
        return 200, {"firewall": self._on_firewalls(lambda: self._firewalls.update(firewall_id, request.body))}

    def _delete_firewall(self, request: _Request) -> tuple[int, Any]:
        self._on_firewalls(lambda: self._firewalls.delete(request.params["firewall_id"]))
        return 204, None

    def _firewall_change(self, request: _Request, change: Callable[[str, Any], None]) -> tuple[int, Any]:
        self._on_firewalls(lambda: change(request.params["firewall_id"], request.body))
        return 204, None

    def _add_firewall_droplets(self, request: _Request) -> tuple[int, Any]:
        return self._firewall_change(request, self._firewalls.add_droplets)

    def _remove_firewall_droplets(self, request: _Request) -> tuple[int, Any]:
        return self._firewall_change(request, self._firewalls.remove_droplets)

    def _add_firewall_tags(self, request: _Request) -> tuple[int, Any]:
        return self._firewall_change(request, self._firewalls.add_tags)

    def _remove_firewall_tags(self, request: _Request) -> tuple[int, Any]:
        return self._firewall_change(request, self._firewalls.remove_tags)

    def _add_firewall_rules(self, request: _Request) -> tuple[int, Any]:
        return self._firewall_change(request, self._firewalls.add_rules)

    def _remove_firewall_rules(self, request: _Request) -> tuple[int, Any]:
        return self._firewall_change(request, self._firewalls.remove_rules)

    def _on_firewalls(self, operation: Callable[[], _T]) -> _T:
        """``operation()`` under the lock; what the firewalls refuse becomes the API's answer."""
        with self._lock:
            try:
                return operation()
            except Refused as exc:
                raise _HTTPError(exc.status, exc.message) from None

    def _page(
        self,
        key: str,
        items: list[dict[str, Any]],
        request: _Request,
        show: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """One page of ``items`` with the API's ``links`` and ``meta``; ``show`` renders each shown item."""
        query = request.query
        page = _positive_int(query, "page", 1)
        per_page = min(_positive_int(query, "per_page", _DEFAULT_PER_PAGE), _MAX_PER_PAGE)
        total = len(items)
        last = max(1, math.ceil(total / per_page))
        filters = {k: v for k, v in query.items() if k not in ("page", "per_page")}

        def link(number: int) -> str:
            return f"{self._base_url()}{request.path}?" + urlencode({**filters, "page": number, "per_page": per_page})

        pages: dict[str, str] = {}
        if page > 1:
            pages["first"] = link(1)
            pages["prev"] = link(min(page - 1, last))
        if page < last:
            pages["last"] = link(last)
            pages["next"] = link(page + 1)
        start = (page - 1) * per_page
        shown = items[start : start + per_page]
        return {
            key: [show(item) for item in shown] if show else shown,
            "links": {"pages": pages} if pages else {},
            "meta": {"total": total},
        }


def _region_document(slug: str) -> dict[str, Any]:
    return {
        "name": _REGIONS[slug],
        "slug": slug,
        "features": list(_REGION_FEATURES),
        "available": True,
        "sizes": list(_SIZES),
    }


def _size_document(slug: str) -> dict[str, Any]:
    memory, vcpus, disk, transfer, price, description = _SIZES[slug]
    document: dict[str, Any] = {
        "slug": slug,
        "memory": memory,
        "vcpus": vcpus,
        "disk": disk,
        "transfer": transfer,
        "price_monthly": price,
        # DigitalOcean bills a month as 672 hours.
        "price_hourly": round(price / 672, 5),
        "regions": sorted(_REGIONS),
        "available": True,
        "description": description,
        "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}],
    }
    if slug in _GPU_SIZES:
        document["gpu_info"] = copy.deepcopy(_GPU_SIZES[slug])
    return document


def _backup_window() -> dict[str, str]:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    return {"start": _timestamp(start.timestamp()), "end": _timestamp((start + timedelta(hours=4)).timestamp())}


def _fqdn(name: str, domain: str) -> str:
    return domain if name == "@" else f"{name.lower()}.{domain}"


def _record_fields(body: dict[str, Any]) -> dict[str, Any]:
    """A record's fields, checked as the real API checks them per type."""
    kind = body.get("type")
    if kind not in _RECORD_TYPES:
        raise _HTTPError(422, f"type must be one of {', '.join(_RECORD_TYPES)}")
    data, name = body.get("data"), body.get("name", "@")
    if not isinstance(name, str) or not isinstance(data, str) or not data:
        raise _HTTPError(422, "Record name and data must be strings; data cannot be blank.")
    if kind == "A" and not _is_address(data, 4):
        raise _HTTPError(422, "Data needs to be an IPv4 address.")
    if kind == "AAAA" and not _is_address(data, 6):
        raise _HTTPError(422, "Data needs to be an IPv6 address.")
    needed = {"MX": ("priority",), "SRV": ("priority", "port", "weight"), "CAA": ("flags", "tag")}.get(kind, ())
    for key in needed:
        if body.get(key) is None:
            raise _HTTPError(422, f"{kind} records need {key}.")
    for key in ("priority", "port", "ttl", "weight", "flags"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise _HTTPError(422, f"{key} must be a non-negative integer.")
    ttl = body.get("ttl", 1800)
    if ttl is not None and ttl < 30:
        raise _HTTPError(422, "TTL must be at least 30 seconds.")
    return {k: body.get(k) for k in ("type", "name", "data", "priority", "port", "weight", "flags", "tag")} | {
        "name": name,
        "ttl": 1800 if ttl is None else ttl,
    }


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _HTTPError(400, "The request body must be a JSON object.")
    return body


def _string_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _HTTPError(422, f"{key} must be a list of strings.")
    return value


def _check_tag(name: Any) -> str:
    if not isinstance(name, str) or not _TAG_NAME.fullmatch(name):
        raise _HTTPError(422, "Tag names use letters, digits, colons, dashes and underscores (at most 255).")
    return name


def public_ipv4(droplet: dict[str, Any]) -> str | None:
    """A droplet document's public IPv4 address, if it has one yet."""
    return next((n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "public"), None)


def _int_or_404(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _HTTPError(404) from None


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


def _error_body(status: int, message: str | None = None, request_id: str | None = None) -> dict[str, str]:
    error_id, default = _ERRORS.get(status, ("error", "The request failed."))
    body = {"id": error_id, "message": message or default}
    if request_id:
        body["request_id"] = request_id
    return body


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    emulator: Emulator
    #: Serves HTTPS with this context; ``None``: plain HTTP.
    tls: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host!s}:{port}"

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, in the request's own thread: a client that never
        # finishes it holds up no other (the listening thread only accepts).
        if self.tls is not None:
            request.settimeout(_Handler.timeout)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is not the emulator's problem.
        if isinstance(sys.exc_info()[1], OSError):  # a connection reset, a TLS session cut short
            return
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 keeps the connection open across pages, as the real API does.
    protocol_version = "HTTP/1.1"
    server_version = "poseidon-emulator"
    # Idle keep-alive connections must not pin a thread forever.
    timeout = 30
    # Headers and body leave in two writes: without TCP_NODELAY the body waits
    # for the client's delayed ACK, 40 ms a request on Linux.
    disable_nagle_algorithm = True
    server: _Server

    def _serve(self) -> None:
        answer = self._refusal()
        if answer is None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                answer = _Answer(400, {}, _error_body(400, "The request body is not valid JSON."))
        if answer is None:
            try:
                answer = self.server.emulator._handle(
                    self.command, self.path, self.headers.get("Authorization"), body, base=self.server.url
                )
            except Exception as exc:  # noqa: BLE001 - a bug in the emulator shows up as a 500 the test can read
                answer = _Answer(500, {}, {"id": "server_error", "message": f"emulator: {exc!r}"})
        assert answer is not None
        if answer.until is not None:
            answer.until.wait(answer.delay)
        elif answer.delay:
            time.sleep(answer.delay)
        if answer.drop:
            # No status line at all: the client sees the connection close mid-request.
            self.close_connection = True
            return
        payload = b"" if answer.body is None else json.dumps(answer.body).encode()
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        if answer.status != 204:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815 - the http.server API

    #: The largest request body read (the API's own bodies are a few kilobytes).
    MAX_BODY = 1 << 20

    def _refusal(self) -> _Answer | None:
        """An answer given before any body is read: no token (401), or a length that is no length (400).
        The body of a request that is refused is never read, and never kept."""
        authorization = self.headers.get("Authorization")
        if not _authorized(authorization, self.server.emulator._token):
            self.close_connection = True  # its body, unread, must not be taken for the next request
            return self.server.emulator._handle(self.command, self.path, authorization, None, base=self.server.url)
        text = self.headers.get("Content-Length") or "0"
        if not text.isascii() or not text.isdigit() or int(text) > self.MAX_BODY:
            self.close_connection = True
            return _Answer(
                400, {}, _error_body(400, f"Content-Length must be a number of bytes up to {self.MAX_BODY}.")
            )
        return None

    def log_message(self, format: str, *args: Any) -> None:
        # Tests and the CLI own stderr; the emulator stays quiet.
        pass
