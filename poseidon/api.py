"""A client for the DigitalOcean API v2.

::

    import poseidon.api as po

    client = po.connect()                      # token from the environment or doctl
    droplet = client.droplets.by_name("web-1")
    ssh = droplet.connect()

The client owns the policy: authentication, timeouts, retries, pagination and
the translation of every failure into ``poseidon.errors``. It sends the token
to its configured base URL only: pagination links are followed by their path
and query on that base, whatever host they name, and redirects are not
followed.
"""

from __future__ import annotations

import builtins
import email.utils
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import requests

from poseidon.droplet import Droplet
from poseidon.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    NotFoundError,
    RateLimitError,
    ResolveError,
    ServerError,
    ValidationError,
)

__all__ = [
    "DEFAULT_API_URL",
    "TOKEN_VARIABLES",
    "Client",
    "Droplets",
    "Keys",
    "connect",
]

DEFAULT_API_URL = "https://api.digitalocean.com"
# Looked up in this order; DIGITALOCEAN_ACCESS_TOKEN is doctl's own variable.
TOKEN_VARIABLES = ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_API_KEY")

_IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE"})


def _version() -> str:
    try:
        return metadata.version("poseidon")
    except metadata.PackageNotFoundError:
        return "0"


def connect(
    *,
    token: str | None = None,
    api_url: str | None = None,
    session: requests.Session | None = None,
) -> Client:
    """A client for the API, configured the way doctl and Terraform users expect.

    The token is ``token``, else the first of ``DIGITALOCEAN_TOKEN``,
    ``DIGITALOCEAN_ACCESS_TOKEN``, ``DIGITALOCEAN_API_KEY`` that is set, else
    doctl's saved credentials. The URL is ``api_url``, else ``POSEIDON_API_URL``,
    else the public API. ``session`` supplies the transport (adapters, proxies);
    the client never changes its headers.
    """
    return Client(
        token or _token_from_environment(),
        api_url=api_url or os.environ.get("POSEIDON_API_URL") or DEFAULT_API_URL,
        session=session,
    )


def _token_from_environment() -> str:
    for name in TOKEN_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    token = _token_from_doctl()
    if token:
        return token
    raise AuthenticationError(
        "no DigitalOcean API token: set DIGITALOCEAN_TOKEN (or DIGITALOCEAN_ACCESS_TOKEN,"
        " DIGITALOCEAN_API_KEY), or log in with `doctl auth init`"
    )


def _doctl_config_path() -> Path:
    """Where doctl keeps its config: Go's ``os.UserConfigDir()``/doctl/config.yaml."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home())
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "doctl" / "config.yaml"


def _token_from_doctl() -> str | None:
    """The token of doctl's current context, or None when doctl has none."""
    path = _doctl_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    import yaml  # only here: most runs take their token from the environment

    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(config, dict):
        return None
    # doctl honours DIGITALOCEAN_CONTEXT over the saved context, as its --context flag does.
    context = os.environ.get("DIGITALOCEAN_CONTEXT") or config.get("context") or "default"
    if context == "default":
        token = config.get("access-token")
    else:
        contexts = config.get("auth-contexts")
        token = contexts.get(context) if isinstance(contexts, dict) else None
    return token.strip() if isinstance(token, str) and token.strip() else None


class Client:
    """One authenticated session with the API.

    ``get``/``post``/``delete`` return the decoded JSON body (None when the
    answer is empty). GET and DELETE are retried on 429, 5xx and connection
    errors, ``max_attempts`` attempts in all; POST only on 429. ``sleep`` is
    how the client waits, injectable so tests need not.
    """

    def __init__(
        self,
        token: str,
        *,
        api_url: str = DEFAULT_API_URL,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        max_attempts: int = 3,
        backoff: float = 0.5,
        max_wait: float = 60.0,
        per_page: int = 200,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        token = (token or "").strip()
        if not token:
            raise AuthenticationError("the DigitalOcean API token is empty")
        if not token.isascii() or any(c.isspace() or not c.isprintable() for c in token):
            # requests would echo the header value in its error message; refuse first.
            raise AuthenticationError(
                "the DigitalOcean API token contains spaces, control or non-ASCII characters"
            )
        base = urlsplit(api_url)
        if base.scheme not in ("http", "https") or not base.netloc:
            raise APIConnectionError(f"the API URL must look like https://host, not {api_url!r}")
        self._token = token
        self.api_url = f"{base.scheme}://{base.netloc}{base.path.rstrip('/')}"
        self._base_path = base.path.rstrip("/")
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_wait = max_wait
        self.per_page = per_page
        self.sleep = sleep
        self.user_agent = f"poseidon/{_version()}"
        self.droplets = Droplets(self)
        self.keys = Keys(self)

    def __repr__(self) -> str:
        return f"<Client {self.api_url} token=***>"

    def close(self) -> None:
        """Close the session, unless it was lent by the caller."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._request("GET", path, params=params)

    def post(self, path: str, json: Any = None) -> Any:
        return self._request("POST", path, json=json)

    def delete(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._request("DELETE", path, params=params)

    def account(self) -> dict[str, Any]:
        """The account the token belongs to (``GET /v2/account``)."""
        return dict(self.get("/v2/account")["account"])

    def _relative(self, link: str) -> str:
        """The path and query of ``link`` below the base URL; its scheme and host are dropped."""
        parts = urlsplit(link)
        target = parts.path if parts.path.startswith("/") else "/" + parts.path
        if self._base_path and (target == self._base_path or target.startswith(self._base_path + "/")):
            target = target[len(self._base_path) :]
        return target + (f"?{parts.query}" if parts.query else "")

    def _url(self, path: str) -> str:
        """``path`` on the configured base URL, whatever host it names."""
        return self.api_url + self._relative(path)

    def _headers(self) -> dict[str, str]:
        # Built per request and never stored, so no long-lived object holds the token.
        return {
            "Authorization": f"Bearer {self._token}",
            "User-Agent": self.user_agent,
            "Accept": "application/json",
        }

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        url = self._url(path)
        # A POST that failed with 5xx or a broken connection may still have
        # created its resource: repeating it blindly could create two droplets.
        # A 429 is refused before any work is done, so every method may retry it.
        idempotent = method in _IDEMPOTENT
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self.max_attempts
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=self._headers(),
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                if idempotent and not last:
                    self.sleep(self._backoff(attempt))
                    continue
                reason = self._scrub(f"{type(exc).__name__}: {exc}")
                raise APIConnectionError(f"cannot reach the DigitalOcean API at {self.api_url}: {reason}") from exc
            status = response.status_code
            if status == 429 and not last:
                self.sleep(self._rate_limit_wait(response, attempt))
                continue
            if status >= 500 and idempotent and not last:
                self.sleep(self._backoff(attempt))
                continue
            if not 200 <= status < 300:
                raise self._error(response)
            return self._decode(response)

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter, so many clients do not retry in lockstep.
        delay = self.backoff * 2 ** (attempt - 1)
        return float(min(delay / 2 + random.uniform(0, delay / 2), self.max_wait))

    def _rate_limit_wait(self, response: requests.Response, attempt: int) -> float:
        """How long a 429 asks us to wait: Retry-After, else until ratelimit-reset."""
        wait: float | None = None
        retry_after = response.headers.get("Retry-After")
        if retry_after:
            try:
                wait = float(retry_after)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(retry_after)
                    wait = when.timestamp() - time.time()
                except (TypeError, ValueError):
                    wait = None
        if wait is None:
            reset = response.headers.get("ratelimit-reset")
            try:
                wait = float(reset) - time.time() if reset else None
            except ValueError:
                wait = None
        if wait is None:
            wait = self._backoff(attempt)
        return min(max(wait, 0.0), self.max_wait)

    def _decode(self, response: requests.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise APIError(
                f"the API answered {response.status_code} with a body that is not JSON",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
            ) from exc

    def _error(self, response: requests.Response) -> APIError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        message = body.get("message")
        if not isinstance(message, str) or not message:
            text = " ".join(response.text.split())[:200]
            message = text or response.reason or f"HTTP {status}"
        error_id = body.get("id") if isinstance(body.get("id"), str) else None
        request_id = body.get("request_id") or response.headers.get("x-request-id")
        cls: type[APIError]
        if status in (401, 403):
            cls = AuthenticationError
        elif status == 404:
            cls = NotFoundError
        elif status == 429:
            cls = RateLimitError
        elif status >= 500:
            cls = ServerError
        elif status in (400, 422):
            cls = ValidationError
        else:
            cls = APIError
        return cls(
            self._scrub(message),
            status=status,
            id=error_id,
            request_id=str(request_id) if request_id else None,
        )

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***")

    # -- pagination ----------------------------------------------------------------

    def _paginate(self, path: str, key: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """Yield ``body[key]`` items of every page, following ``links.pages.next``."""
        query: dict[str, Any] | None = {"per_page": self.per_page, **(params or {})}
        target = path
        seen: set[str] = set()
        while True:
            body = self.get(target, query)
            yield from body.get(key) or []
            pages = (body.get("links") or {}).get("pages") or {}
            following = pages.get("next")
            if not following:
                return
            # Only the path and query of the link are used: a link naming
            # another host must not receive the token.
            target = self._relative(following)
            if target in seen:
                raise APIError(f"the API's pagination loops back to {target}")
            seen.add(target)
            query = None


class Droplets:
    """``client.droplets``: list, get and resolve droplets by name."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, tag: str | None = None) -> builtins.list[Droplet]:
        """Every droplet, or those carrying ``tag``."""
        params = {"tag_name": tag} if tag is not None else None
        return [Droplet(data, self._client) for data in self._client._paginate("/v2/droplets", "droplets", params)]

    def get(self, id: int) -> Droplet:
        """The droplet with this id; ``NotFoundError`` if there is none."""
        body = self._client.get(f"/v2/droplets/{int(id)}")
        return Droplet(body["droplet"], self._client)

    def by_name(self, name: str) -> Droplet:
        """The one droplet called exactly ``name`` (case-sensitive).

        Raises ``ResolveError`` when no droplet or several droplets have that name.
        """
        # The API's name filter ignores case; droplet names do not.
        found = self._client._paginate("/v2/droplets", "droplets", {"name": name})
        candidates = [Droplet(data, self._client) for data in found]
        exact = [d for d in candidates if d.name == name]
        if len(exact) == 1:
            return exact[0]
        if not exact:
            near = ", ".join(repr(d.name) for d in candidates)
            hint = f" (names differ in case only: {near})" if near else ""
            raise ResolveError(f"no droplet named {name!r}{hint}")
        listing = "; ".join(f"id {d.id} in {d.region or '?'} at {d.ip_address or 'no public IPv4'}" for d in exact)
        raise ResolveError(f"{len(exact)} droplets are named {name!r}: {listing}; give them unique names")


class Keys:
    """``client.keys``: the SSH keys of the account."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every SSH key of the account (``id``, ``name``, ``fingerprint``, ``public_key``)."""
        return [dict(key) for key in self._client._paginate("/v2/account/keys", "ssh_keys")]
