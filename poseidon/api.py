"""A client for the DigitalOcean API v2.

::

    import poseidon.api as po

    client = po.connect()                      # token from the environment or doctl
    droplet = client.droplets.create("web-1", region="nyc3", size="s-1vcpu-1gb",
                                     image="ubuntu-24-04-x64", ssh_keys=["laptop"])
    droplet.reboot()                           # waits for the action to complete
    client.domains.create("example.com", ip_address=droplet.ip_address)
    ssh = client.droplets.by_name("web-1").connect()

The client owns the policy: authentication, timeouts, retries, pagination,
the request budget and the translation of every failure into
``poseidon.errors``. The collections (``client.droplets``, ``keys``,
``images``, ``regions``, ``sizes``, ``actions``, ``tags``, ``domains``) own
the endpoints. It sends the token to its configured base URL only:
pagination links are followed by their path and query on that base, whatever
host they name, and redirects are not followed.

Failures, and what is repeated:

- 429: waited out as the answer says (``Retry-After``, else
  ``ratelimit-reset``), at most ``max_wait`` seconds, then repeated; any
  method, since the API refused the request before doing anything.
- 5xx, timeouts and dropped connections: repeated with exponential backoff
  and jitter for requests that are safe to repeat (GET, PUT, DELETE, and the
  POSTs that set rather than add: tags). A request that never left (the
  connection was refused) is repeated whatever its method.
- Creates (droplets, actions, keys, domains, records) are not repeated
  blindly: after an ambiguous failure the collection looks for what the
  request would have made and returns it; only when nothing is found is the
  request sent again.

The request budget (``RateBudget``) keeps the client under DigitalOcean's
limits (5,000 requests an hour, 250 a minute) before the API has to refuse.
"""

from __future__ import annotations

import base64
import builtins
import collections
import email.utils
import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any, TypeAlias, TypeVar, overload
from urllib.parse import quote, urlsplit

import requests
import urllib3

from poseidon.droplet import Droplet
from poseidon.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    NotFoundError,
    PoseidonError,
    RateLimitError,
    ResolveError,
    ServerError,
    UsageError,
    ValidationError,
    WaitTimeoutError,
)
from poseidon.settings import DEFAULT_API_TIMEOUT, DEFAULT_API_URL, TOKEN_VARIABLES, Settings

__all__ = [
    "DEFAULT_API_URL",
    "TOKEN_VARIABLES",
    "Actions",
    "Client",
    "Domains",
    "Droplets",
    "Images",
    "Keys",
    "RateBudget",
    "Records",
    "Regions",
    "Sizes",
    "Tags",
    "WaitTimeoutError",
    "connect",
]

DEFAULT_TIMEOUT = DEFAULT_API_TIMEOUT

_REPEATABLE = frozenset({"GET", "HEAD", "PUT", "DELETE"})
# How far the API's clock may differ from ours when deciding whether a droplet
# or an action found after an ambiguous failure is the one we asked for.
_CLOCK_SKEW = 60.0
_MAX_NAMES = 10  # droplets per create request: the API refuses more

T = TypeVar("T")


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
    settings: Settings | None = None,
) -> Client:
    """A client for the API, configured the way doctl and Terraform users expect.

    ``settings`` default to this process's environment (:meth:`Settings.from_environ`).
    The token is ``token``, else the first of ``DIGITALOCEAN_TOKEN``,
    ``DIGITALOCEAN_ACCESS_TOKEN``, ``DIGITALOCEAN_API_KEY`` that is set, else
    doctl's saved credentials. The URL is ``api_url``, else ``POSEIDON_API_URL``,
    else the public API. ``POSEIDON_API_TIMEOUT`` sets how many seconds to
    wait for a connection, then for each part of an answer (default 30).
    ``session`` supplies the transport (adapters, proxies); the client never
    changes its headers. The droplets the client lists log in as the settings say.
    """
    settings = settings if settings is not None else Settings.from_environ()
    return Client(
        token or _token(settings),
        api_url=api_url or settings.api_url,
        session=session,
        timeout=settings.api_timeout,
        settings=settings,
    )


def _token(settings: Settings) -> str:
    token = settings.token or _token_from_doctl(settings)
    if token:
        return token
    raise AuthenticationError(
        "no DigitalOcean API token: set DIGITALOCEAN_TOKEN (or DIGITALOCEAN_ACCESS_TOKEN,"
        " DIGITALOCEAN_API_KEY), or log in with `doctl auth init`"
    )


def _token_from_doctl(settings: Settings) -> str | None:
    """The token of doctl's current context, or None when doctl has none."""
    if settings.doctl_config is None:
        return None
    try:
        text = settings.doctl_config.read_text(encoding="utf-8")
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
    context = settings.doctl_context or config.get("context") or "default"
    if context == "default":
        token = config.get("access-token")
    else:
        contexts = config.get("auth-contexts")
        token = contexts.get(context) if isinstance(contexts, dict) else None
    return token.strip() if isinstance(token, str) and token.strip() else None


def _never_sent(exc: requests.RequestException) -> bool:
    """Whether the request surely never reached the API: no connection was ever made."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", exc.args[0])  # urllib3's MaxRetryError wraps the cause
        return isinstance(reason, urllib3.exceptions.NewConnectionError)
    return False


def _connection_failure(exc: requests.RequestException) -> str:
    """What went wrong, in the words of the system call when there is one (``connection refused``),
    not urllib3's nesting of wrappers."""
    cause: BaseException | None = exc
    seen = 0
    while cause is not None and seen < 10:  # MaxRetryError → NewConnectionError → OSError …
        if isinstance(cause, OSError) and cause.strerror and not isinstance(cause, requests.RequestException):
            return cause.strerror[:1].lower() + cause.strerror[1:]
        reason = getattr(cause, "reason", None)
        arg = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
        cause = reason if isinstance(reason, BaseException) else arg or cause.__cause__ or cause.__context__
        seen += 1
    return f"{type(exc).__name__}: {exc}"


def _epoch(timestamp: Any) -> float | None:
    """An API timestamp (``2024-04-24T14:35:19Z``) as seconds since the epoch, or None."""
    try:
        return datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class RateBudget:
    """One request budget, shared by every thread of a client.

    DigitalOcean allows 5,000 requests an hour and 250 a minute, over rolling
    windows, and reports the hourly one in every answer (``ratelimit-limit``,
    ``ratelimit-remaining``, ``ratelimit-reset``: when the oldest counted
    request expires). ``acquire()`` is called before each request and sleeps
    when needed:

    - never more than ``per_minute`` requests in any 60 seconds;
    - once the remaining hourly budget falls to ``reserve`` (a fraction of the
      limit), the remaining requests are spread evenly until the reset, and
      with none left the next waits for the reset;
    - after a 429, ``pause()`` holds every thread until the wait is over.

    The estimate of what remains counts requests sent since the answer that
    reported it, so threads racing each other do not overspend. Waits for the
    hourly budget and for a 429 are capped at ``max_wait``. ``clock`` and
    ``sleep`` are injectable, so tests need not wait.
    """

    def __init__(
        self,
        *,
        per_minute: int = 250,
        reserve: float = 0.1,
        max_wait: float = 60.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.per_minute = per_minute
        self.reserve = reserve
        self.max_wait = max_wait
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._sent: collections.deque[float] = collections.deque()  # send times in the last minute
        self._next_at = float("-inf")  # no request may start before this
        self._issued = 0
        # (ticket of the answer, remaining, reset, limit) from the newest answer seen.
        self._known: tuple[int, int, float, int] | None = None

    def acquire(self) -> int:
        """Wait for a turn to send; returns a ticket to hand to ``record()``."""
        with self._lock:
            now = self.clock()
            at = max(now, self._next_at)
            interval = 0.0
            if self._known is not None:
                seen, remaining, reset, limit = self._known
                # Requests sent after the one that reported ``remaining`` are spent too.
                left = remaining - (self._issued - seen - 1)
                if reset > at:
                    if left <= 0:
                        at = max(at, min(reset, now + self.max_wait))
                    elif left <= self.reserve * limit:
                        interval = min((reset - at) / left, self.max_wait)
            # The minute's limit is kept strictly: a thread queued behind
            # others may wait longer than max_wait, but never overspends.
            while self._sent and self._sent[0] <= at - 60:
                self._sent.popleft()
            if len(self._sent) >= self.per_minute:
                at = max(at, self._sent[len(self._sent) - self.per_minute] + 60)
            ticket = self._issued
            self._issued += 1
            self._sent.append(at)
            self._next_at = at + interval
        if at > now:
            self.sleep(at - now)
        return ticket

    def record(self, ticket: int, headers: Mapping[str, str]) -> None:
        """Learn the budget from the ``ratelimit-*`` headers of the answer to ``ticket``."""
        try:
            limit = int(headers["ratelimit-limit"])
            remaining = int(headers["ratelimit-remaining"])
            reset = float(headers["ratelimit-reset"])
        except (KeyError, ValueError):
            return
        with self._lock:
            # An older answer arriving late knows less than the one already seen.
            if self._known is None or ticket >= self._known[0]:
                self._known = (ticket, remaining, reset, limit)

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` (at most ``max_wait``), as a 429 asks."""
        with self._lock:
            until = self.clock() + min(max(seconds, 0.0), self.max_wait)
            self._next_at = max(self._next_at, until)


class Client:
    """One authenticated session with the API.

    ``get``/``post``/``put``/``patch``/``delete`` return the decoded JSON body
    (None when the answer is empty). A request is tried ``max_attempts``
    times at most (see the module's docstring for which failures are
    repeated); ``backoff`` is the first backoff delay and ``max_wait`` caps
    every wait. ``poll_interval`` is how often droplets and actions are
    polled while waiting. ``sleep`` and ``clock`` are how the client waits
    and tells the time, injectable so tests need not wait; ``budget`` may be
    shared by several clients of one token.
    """

    def __init__(
        self,
        token: str,
        *,
        api_url: str = DEFAULT_API_URL,
        session: requests.Session | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_attempts: int = 3,
        backoff: float = 0.5,
        max_wait: float = 60.0,
        per_page: int = 200,
        max_pages: int = 500,
        max_answer_bytes: int = 32 << 20,
        deadline_factor: float = 4.0,
        poll_interval: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        budget: RateBudget | None = None,
        settings: Settings | None = None,
    ) -> None:
        token = (token or "").strip()
        if not token:
            raise AuthenticationError("the DigitalOcean API token is empty")
        if not token.isascii() or any(c.isspace() or not c.isprintable() for c in token):
            # requests would echo the header value in its error message; refuse first.
            raise AuthenticationError("the DigitalOcean API token contains spaces, control or non-ASCII characters")
        base = urlsplit(api_url)
        if base.username is not None or base.password is not None:
            # requests would send them as Basic auth in place of the token, and print them in errors.
            shown = base._replace(netloc="***@" + base.netloc.rpartition("@")[2]).geturl()
            raise UsageError(f"the API URL must not hold a user or password ({shown}): the token is the credential")
        if base.scheme not in ("http", "https") or not base.netloc:
            raise UsageError(f"the API URL must look like https://host, not {api_url!r}")
        self._token = token
        #: How the droplets listed log in (``None``: as this process's environment says, when they connect).
        self.settings = settings
        self.api_url = f"{base.scheme}://{base.netloc}{base.path.rstrip('/')}"
        self._base_path = base.path.rstrip("/")
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()
        #: The authorities the API's certificate is checked against (``None``: requests' choice, which
        #: this process's REQUESTS_CA_BUNDLE may make; and a session given keeps its own). Given with
        #: each request: requests lets the process's environment override a session's.
        self.ca_bundle = settings.ca_bundle if settings is not None and session is None else None
        if self.ca_bundle and not Path(self.ca_bundle).exists():  # a file, or a folder as requests takes
            raise UsageError(
                f"the certificate authorities {self.ca_bundle} (REQUESTS_CA_BUNDLE) do not exist: a sandbox's,"
                " now down? unset REQUESTS_CA_BUNDLE and SSL_CERT_FILE, or start the sandbox again"
            )
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_wait = max_wait
        self.per_page = per_page
        #: Pages followed at most for one listing (100,000 items at 200 a page): an API whose
        #: ``next`` links never end is not followed forever.
        self.max_pages = max_pages
        #: The longest answer read, in bytes once decompressed (a page of 200 droplets is about 1 MB).
        self.max_answer_bytes = max_answer_bytes
        #: A whole answer must arrive within this many times ``timeout`` (which bounds each read only).
        self.deadline_factor = deadline_factor
        self.poll_interval = poll_interval
        self.sleep = sleep
        self.clock = clock
        self.budget = budget if budget is not None else RateBudget(max_wait=max_wait, clock=clock, sleep=sleep)
        self.user_agent = f"poseidon/{_version()} python-requests/{requests.__version__}"
        self.droplets = Droplets(self)
        self.keys = Keys(self)
        self.images = Images(self)
        self.regions = Regions(self)
        self.sizes = Sizes(self)
        self.actions = Actions(self)
        self.tags = Tags(self)
        self.domains = Domains(self)

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

    def post(self, path: str, json: Any = None, *, repeatable: bool = False) -> Any:
        """POST ``json``; ``repeatable`` when sending it twice does no more than once."""
        return self._request("POST", path, json=json, repeatable=repeatable)

    def put(self, path: str, json: Any = None) -> Any:
        return self._request("PUT", path, json=json)

    def patch(self, path: str, json: Any = None, *, repeatable: bool = True) -> Any:
        return self._request("PATCH", path, json=json, repeatable=repeatable)

    def delete(self, path: str, params: Mapping[str, Any] | None = None, json: Any = None) -> Any:
        return self._request("DELETE", path, params=params, json=json)

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
        repeatable: bool | None = None,
    ) -> Any:
        url = self._url(path)
        # A POST that failed with 5xx or a broken connection may still have
        # created its resource: repeating it blindly could create two droplets.
        # A 429 is refused before any work is done, so every method may retry it.
        if repeatable is None:
            repeatable = method in _REPEATABLE
        maybe_done = False  # an earlier attempt may have taken effect
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self.max_attempts
            ticket = self.budget.acquire()
            try:
                started = time.monotonic()
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=self._headers(),
                    timeout=self.timeout,
                    allow_redirects=False,
                    stream=True,
                    verify=self.ca_bundle if self.ca_bundle else None,
                )
                self._read_whole(response, started)
            except requests.RequestException as exc:
                unsent = _never_sent(exc)
                if (repeatable or unsent) and not last:
                    maybe_done = maybe_done or not unsent
                    self.sleep(self._backoff(attempt))
                    continue
                raise self._unreachable(exc, attempt) from exc
            status = response.status_code
            if status == 429:
                if not last:
                    # Every thread waits: the budget is the account's, not this request's.
                    self.budget.pause(self._rate_limit_wait(response, attempt))
                    continue
            else:
                self.budget.record(ticket, response.headers)
            if status >= 500 and repeatable and not last:
                maybe_done = True
                self.sleep(self._backoff(attempt))
                continue
            if status == 404 and method == "DELETE" and maybe_done:
                return None  # an earlier attempt did delete it
            if not 200 <= status < 300:
                raise self._error(response)
            return self._decode(response)

    def _read_whole(self, response: requests.Response, started: float) -> None:
        """Read the answer's body, bounded: at most :attr:`max_answer_bytes` (once decompressed), and
        all of it within :attr:`deadline_factor` times the timeout (which bounds each read only,
        so an API trickling a byte at a time would otherwise hold a request open for ever)."""
        deadline = started + self.timeout * self.deadline_factor
        chunks: list[bytes] = []
        size = 0
        # read1 returns what has arrived (up to 64 KiB): a read of a whole chunk would wait for a
        # trickle to fill it, past any deadline.
        raw = response.raw
        if raw is None or raw.closed:  # handed over whole, or read already (by a transport of the caller's)
            if len(response.content) > self.max_answer_bytes:
                raise APIError(f"the API's answer is over {self.max_answer_bytes:,} bytes: poseidon reads no more")
            return
        pieces = (
            iter(lambda: b"" if raw.closed else raw.read1(65536, decode_content=True), b"")
            if hasattr(raw, "read1")
            else response.iter_content(65536)
        )
        try:
            for chunk in pieces:
                size += len(chunk)
                if size > self.max_answer_bytes:
                    raise APIError(
                        f"the API's answer to {response.request.method} {response.request.path_url} is over"
                        f" {self.max_answer_bytes:,} bytes: poseidon reads no more",
                        status=response.status_code,
                    )
                if time.monotonic() > deadline:
                    raise requests.Timeout(
                        f"the answer took over {self.timeout * self.deadline_factor:g} s to arrive"
                        f" ({self.deadline_factor:g} times POSEIDON_API_TIMEOUT)"
                    )
                chunks.append(chunk)
        finally:
            response.close()
        response._content = b"".join(chunks)  # what .content and .json() read from now on

    def _unreachable(self, exc: requests.RequestException, attempts: int) -> APIConnectionError:
        reason = self.mask(_connection_failure(exc))
        if isinstance(exc, requests.Timeout):
            tried = f"{attempts} times" if attempts > 1 else "once"
            return APIConnectionError(
                f"the DigitalOcean API at {self.api_url} did not answer within {self.timeout:g} s"
                f" (tried {tried}; POSEIDON_API_TIMEOUT sets the wait): {reason}"
            )
        return APIConnectionError(f"cannot reach the DigitalOcean API at {self.api_url}: {reason}")

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
                    wait = when.timestamp() - self.clock()
                except (TypeError, ValueError):
                    wait = None
        if wait is None:
            reset = response.headers.get("ratelimit-reset")
            try:
                wait = float(reset) - self.clock() if reset else None
            except ValueError:
                wait = None
        if wait is None:
            wait = self._backoff(attempt)
        return min(max(wait, 0.0), self.max_wait)

    def _decode(self, response: requests.Response) -> Any:
        if not response.content:
            return None
        try:
            body = response.json()
        except ValueError as exc:
            raise APIError(
                f"the API answered {response.status_code} with a body that is not JSON",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
            ) from exc
        if not isinstance(body, dict):
            raise APIError(
                f"the API answered nonsense for {response.request.path_url}: a JSON object, not {type(body).__name__}",
                status=response.status_code,
            )
        return _Answer(body)

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
            self.mask(message),
            status=status,
            id=error_id,
            request_id=str(request_id) if request_id else None,
        )

    def mask(self, text: str) -> str:
        """``text`` with the client's token replaced by ``***``: for whatever may hold it (a step's output)."""
        return text.replace(self._token, "***")

    # -- pagination and waiting ------------------------------------------------------

    def _paginate(self, path: str, key: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """Yield ``body[key]`` items of every page, following ``links.pages.next``."""
        query: dict[str, Any] | None = {"per_page": self.per_page, **(params or {})}
        target = path
        seen: set[str] = set()
        while True:
            body = self.get(target, query) or {}  # _decode gave a JSON object, or None for no body
            items = body.get(key)
            if items is not None and not isinstance(items, list):
                raise APIError(f"the API answered nonsense for {target}: {key}: a list, not {type(items).__name__}")
            yield from items or []
            links = body.get("links") or {}
            pages = links.get("pages") or {} if isinstance(links, dict) else None
            if not isinstance(pages, dict):
                raise APIError(f"the API answered nonsense for {target}: links.pages: an object")
            following = pages.get("next")
            if not following:
                return
            if not isinstance(following, str):
                raise APIError(
                    f"the API answered nonsense for {target}: links.pages.next: a URL, not {type(following).__name__}"
                )
            if len(seen) >= self.max_pages:
                raise APIError(
                    f"the API's pagination goes on past {self.max_pages} pages of {self.per_page} for {path}:"
                    " poseidon stops there (an account that large, or an API that never ends)"
                )
            # Only the path and query of the link are used: a link naming
            # another host must not receive the token.
            target = self._relative(following)
            if target in seen:
                raise APIError(f"the API's pagination loops back to {target}")
            seen.add(target)
            query = None

    def _wait(self, deadline: float) -> None:
        """Sleep one poll interval, or until ``deadline`` when that comes first."""
        self.sleep(max(min(self.poll_interval, deadline - self.clock()), 0.0))

    def _create(self, send: Callable[[], T], find: Callable[[], T | None]) -> T:
        """``send()`` a create; after an ambiguous failure, ``find()`` what it made before sending again.

        A 5xx, a timeout or a dropped connection leave unknown whether the API
        acted. Sending again could make a second droplet, key or record, so
        the collection looks first; only when nothing is found (the request
        did not take effect) is it sent again, up to ``max_attempts`` times.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return send()
            except (ServerError, APIConnectionError) as exc:
                try:
                    found = find()
                except PoseidonError:
                    raise exc from None
                if found is not None:
                    return found
                if attempt >= self.max_attempts:
                    raise
                self.sleep(self._backoff(attempt))


class _Answer(dict):  # type: ignore[type-arg]
    """An answer's top-level object: a field it lacks is the API's error (exit 3), not a KeyError."""

    def __missing__(self, key: object) -> Any:
        raise APIError(f"the API answered nonsense: its answer has no {key!r}")


def _path(value: Any) -> str:
    """One path segment, escaped: names and fingerprints come from users."""
    return quote(str(value), safe=":")


class Droplets:
    """``client.droplets``: list, resolve, create, act on and delete droplets."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _wrap(self, items: Iterable[dict[str, Any]]) -> builtins.list[Droplet]:
        seen: set[Any] = set()
        droplets = []
        for data in items:
            # The same droplet twice (a server ignoring the type filter) is one droplet.
            if data.get("id") not in seen:
                seen.add(data.get("id"))
                droplets.append(Droplet(data, self._client))
        return droplets

    def list(self, tag: str | None = None, *, type: str | None = None) -> builtins.list[Droplet]:
        """Every droplet, or those carrying ``tag``.

        The API lists GPU droplets only when asked (``type=gpus``): without a
        tag, both kinds are listed unless ``type`` (``"droplets"`` or
        ``"gpus"``) picks one. The API refuses a tag together with a type.
        """
        paginate = self._client._paginate
        if tag is not None:
            if type is not None:
                raise ValidationError("the API lists droplets by tag or by type, not both")
            return self._wrap(paginate("/v2/droplets", "droplets", {"tag_name": tag}))
        if type is not None:
            return self._wrap(paginate("/v2/droplets", "droplets", {"type": type}))
        return self._wrap(
            [*paginate("/v2/droplets", "droplets"), *paginate("/v2/droplets", "droplets", {"type": "gpus"})]
        )

    def get(self, id: int) -> Droplet:
        """The droplet with this id; ``NotFoundError`` if there is none."""
        body = self._client.get(f"/v2/droplets/{int(id)}")
        return Droplet(body["droplet"], self._client)

    def _named(self, name: str) -> builtins.list[Droplet]:
        """Droplets the API's name filter returns for ``name``: either case, both kinds."""
        paginate = self._client._paginate
        return self._wrap(
            [
                *paginate("/v2/droplets", "droplets", {"name": name}),
                *paginate("/v2/droplets", "droplets", {"name": name, "type": "gpus"}),
            ]
        )

    def find(self, name: str) -> builtins.list[Droplet]:
        """Every droplet called exactly ``name`` (case-sensitive), GPU droplets included; maybe none."""
        return [d for d in self._named(name) if d.name == name]

    def find_many(self, names: Iterable[str]) -> dict[str, builtins.list[Droplet]]:
        """:meth:`find` for each name: one listing of the account for several names, a query for one.

        The API's name filter takes one name a request (two: droplets and GPU
        droplets), and the requests go one after another; ten names would wait
        for twenty round trips where one listing takes two (a page per 200
        droplets).
        """
        wanted = list(dict.fromkeys(names))
        if len(wanted) < 2:
            return {name: self.find(name) for name in wanted}
        index: dict[str, builtins.list[Droplet]] = {name: [] for name in wanted}
        for droplet in self.list():
            if droplet.name in index:
                index[droplet.name].append(droplet)
        return index

    def by_name(self, name: str) -> Droplet:
        """The one droplet called exactly ``name`` (case-sensitive), GPU droplets included.

        Raises ``ResolveError`` when no droplet or several droplets have that name.
        """
        # The API's name filter ignores case; droplet names do not.
        candidates = self._named(name)
        exact = [d for d in candidates if d.name == name]
        if len(exact) == 1:
            return exact[0]
        if not exact:
            near = ", ".join(repr(d.name) for d in candidates)
            hint = f" (names differ in case only: {near})" if near else ""
            raise ResolveError(f"no droplet named {name!r}{hint}")
        listing = "; ".join(f"id {d.id} in {d.region or '?'} at {d.ip_address or 'no public IPv4'}" for d in exact)
        raise ResolveError(f"{len(exact)} droplets are named {name!r}: {listing}; give them unique names")

    @overload
    def create(
        self,
        names: str,
        *,
        region: str,
        size: str,
        image: str | int,
        ssh_keys: Iterable[str | int] = (),
        tags: Iterable[str] = (),
        user_data: str | None = None,
        ipv6: bool = False,
        monitoring: bool = False,
        backups: bool = False,
        vpc_uuid: str | None = None,
        wait: bool = True,
        timeout: float = 300.0,
    ) -> Droplet: ...

    @overload
    def create(
        self,
        names: builtins.list[str] | tuple[str, ...],
        *,
        region: str,
        size: str,
        image: str | int,
        ssh_keys: Iterable[str | int] = (),
        tags: Iterable[str] = (),
        user_data: str | None = None,
        ipv6: bool = False,
        monitoring: bool = False,
        backups: bool = False,
        vpc_uuid: str | None = None,
        wait: bool = True,
        timeout: float = 300.0,
    ) -> builtins.list[Droplet]: ...

    def create(
        self,
        names: str | builtins.list[str] | tuple[str, ...],
        *,
        region: str,
        size: str,
        image: str | int,
        ssh_keys: Iterable[str | int] = (),
        tags: Iterable[str] = (),
        user_data: str | None = None,
        ipv6: bool = False,
        monitoring: bool = False,
        backups: bool = False,
        vpc_uuid: str | None = None,
        wait: bool = True,
        timeout: float = 300.0,
    ) -> Droplet | builtins.list[Droplet]:
        """Create one droplet (a name) or several (a list of names).

        ``image`` is a slug or an id; ``ssh_keys`` are key ids, fingerprints or
        names (names are looked up). With ``wait``, returns once every droplet
        is ``active`` with a public IPv4, or raises ``WaitTimeoutError`` after
        ``timeout`` seconds; without, returns the droplets as created (``new``).

        After an ambiguous failure (a 5xx, a timeout, a dropped connection)
        the droplets are looked up by name and those created since the request
        was sent are taken as made by it; only the names not found are sent
        again. A name that already had a droplet does not count: that one is
        older than the request.
        """
        single = isinstance(names, str)
        wanted = [names] if isinstance(names, str) else builtins.list(names)
        if not wanted:
            raise ValidationError("create() needs at least one droplet name")
        body: dict[str, Any] = {"region": region, "size": size, "image": image}
        keys = self._client.keys._identifiers(ssh_keys)
        if keys:
            body["ssh_keys"] = keys
        tag_list = builtins.list(tags)
        if tag_list:
            body["tags"] = tag_list
        if user_data is not None:
            body["user_data"] = user_data
        for flag, value in (("ipv6", ipv6), ("monitoring", monitoring), ("backups", backups)):
            if value:
                body[flag] = True
        if vpc_uuid is not None:
            body["vpc_uuid"] = vpc_uuid
        created: builtins.list[Droplet] = []
        for start in range(0, len(wanted), _MAX_NAMES):
            created += self._create_batch(wanted[start : start + _MAX_NAMES], body)
        if wait:
            created = self.wait(created, timeout=timeout)
        order = {name: index for index, name in enumerate(wanted)}
        created.sort(key=lambda d: order.get(d.name, len(order)))
        return created[0] if single else created

    def _create_batch(self, names: builtins.list[str], body: dict[str, Any]) -> builtins.list[Droplet]:
        client = self._client
        found: builtins.list[Droplet] = []
        pending = builtins.list(names)
        started = client.clock()

        def send() -> builtins.list[Droplet]:
            nonlocal started
            started = client.clock()
            payload = {"name": pending[0], **body} if len(pending) == 1 else {"names": pending, **body}
            answer = client.post("/v2/droplets", json=payload)
            return [Droplet(d, client) for d in (answer.get("droplets") or [answer["droplet"]])]

        def find() -> builtins.list[Droplet] | None:
            made = self._created_since(pending, started - _CLOCK_SKEW)
            found.extend(made)
            pending[:] = [n for n in pending if n not in {d.name for d in made}]
            # Names not found were not created: send() asks for those alone.
            return [] if not pending else None

        return found + client._create(send, find)

    def _created_since(self, names: Iterable[str], since: float) -> builtins.list[Droplet]:
        found = []
        for name in names:
            for droplet in self._named(name):
                when = _epoch(droplet.data.get("created_at"))
                if droplet.name == name and when is not None and when >= since:
                    found.append(droplet)
                    break
        return found

    def wait(
        self,
        droplets: Iterable[Droplet | int],
        *,
        timeout: float = 300.0,
        on_ready: Callable[[Droplet], None] | None = None,
    ) -> builtins.list[Droplet]:
        """Poll until every droplet is ``active`` with a public IPv4; returns them, refreshed.
        ``on_ready(droplet)`` is called for each as it gets there.

        Raises ``WaitTimeoutError`` naming the droplets still waited for after ``timeout`` seconds.
        """
        client = self._client
        deadline = client.clock() + timeout
        latest = {(d.id if isinstance(d, Droplet) else int(d)): d for d in droplets}

        def ready(droplet: Droplet | int) -> bool:
            return isinstance(droplet, Droplet) and droplet.status == "active" and bool(droplet.ip_address)

        waiting = [i for i, d in latest.items() if not ready(d)]
        while waiting:
            if client.clock() >= deadline:
                states = ", ".join(
                    f"{d.name} ({i}) is {d.status}" if isinstance(d, Droplet) else f"droplet {i}"
                    for i, d in ((i, latest[i]) for i in waiting)
                )
                raise WaitTimeoutError(f"not active with a public IPv4 after {timeout:g} s: {states}")
            client._wait(deadline)
            for droplet_id in waiting:
                latest[droplet_id] = self.get(droplet_id)
                if on_ready is not None and ready(latest[droplet_id]):
                    on_ready(latest[droplet_id])  # type: ignore[arg-type]  # ready() saw a Droplet
            waiting = [i for i in waiting if not ready(latest[i])]
        return [d for d in latest.values() if isinstance(d, Droplet)]

    def wait_deleted(self, ids: Iterable[int], *, timeout: float = 300.0) -> None:
        """Poll until the API has none of these droplets (deletion takes a moment).

        Raises ``WaitTimeoutError`` naming the droplets still there after ``timeout`` seconds.
        """
        client = self._client
        deadline = client.clock() + timeout
        waiting = [int(i) for i in ids]
        while True:
            still = []
            for droplet_id in waiting:
                try:
                    self.get(droplet_id)
                except NotFoundError:
                    continue
                still.append(droplet_id)
            waiting = still
            if not waiting:
                return
            if client.clock() >= deadline:
                raise WaitTimeoutError(f"still there after {timeout:g} s: droplets {', '.join(map(str, waiting))}")
            client._wait(deadline)

    def delete(self, id: int) -> None:
        """Destroy the droplet with this id; ``NotFoundError`` if there is none."""
        self._client.delete(f"/v2/droplets/{int(id)}")

    def delete_by_tag(self, tag: str) -> None:
        """Destroy every droplet carrying ``tag``."""
        if not tag:
            raise ValidationError("delete_by_tag() needs a tag: an empty one would match nothing")
        self._client.delete("/v2/droplets", params={"tag_name": tag})

    def kernels(self, id: int) -> builtins.list[dict[str, Any]]:
        """The kernels the droplet may boot (``id``, ``name``, ``version``)."""
        return builtins.list(self._client._paginate(f"/v2/droplets/{int(id)}/kernels", "kernels"))

    def snapshots(self, id: int) -> builtins.list[dict[str, Any]]:
        """The droplet's snapshots (``id``, ``name``, ``created_at``, ``regions``, sizes)."""
        return builtins.list(self._client._paginate(f"/v2/droplets/{int(id)}/snapshots", "snapshots"))

    def backups(self, id: int) -> builtins.list[dict[str, Any]]:
        """The droplet's backups, in the shape of its snapshots."""
        return builtins.list(self._client._paginate(f"/v2/droplets/{int(id)}/backups", "backups"))

    def actions(self, id: int) -> builtins.list[dict[str, Any]]:
        """Every action taken on the droplet, its creation included."""
        return builtins.list(self._client._paginate(f"/v2/droplets/{int(id)}/actions", "actions"))

    def act(self, id: int, type: str, *, wait: bool = True, timeout: float = 300.0, **params: Any) -> dict[str, Any]:
        """Start action ``type`` on the droplet (``POST /v2/droplets/{id}/actions``) with ``params``.

        With ``wait``, polls the action until it completes and returns it;
        raises ``APIError`` if it errors and ``WaitTimeoutError`` after
        ``timeout`` seconds. After an ambiguous failure, an action of this
        type started since the request was sent is taken as its own.
        """
        client = self._client
        path = f"/v2/droplets/{int(id)}/actions"
        body = {"type": type, **params}
        started = client.clock()

        def send() -> dict[str, Any]:
            return dict(client.post(path, json=body)["action"])

        def find() -> dict[str, Any] | None:
            mine = [
                a
                for a in client._paginate(path, "actions")
                if a.get("type") == type and (_epoch(a.get("started_at")) or 0) >= started - _CLOCK_SKEW
            ]
            return max(mine, key=lambda a: int(a["id"])) if mine else None

        action = client._create(send, find)
        if wait and action.get("status") != "completed":
            action = client.actions.wait(int(action["id"]), timeout=timeout)
        return action


class Actions:
    """``client.actions``: read actions and wait for them."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, id: int) -> dict[str, Any]:
        """The action with this id (``status`` is ``in-progress``, ``completed`` or ``errored``)."""
        return dict(self._client.get(f"/v2/actions/{int(id)}")["action"])

    def wait(self, id: int, timeout: float = 300.0) -> dict[str, Any]:
        """Poll until the action completes and return it.

        Raises ``APIError`` when it errors, ``WaitTimeoutError`` after ``timeout`` seconds.
        """
        client = self._client
        deadline = client.clock() + timeout
        while True:
            client._wait(deadline)
            action = self.get(id)
            status = action.get("status")
            if status == "completed":
                return action
            what = f"action {id} ({action.get('type')} on {action.get('resource_type')} {action.get('resource_id')})"
            if status == "errored":
                raise APIError(f"{what} errored")
            if client.clock() >= deadline:
                raise WaitTimeoutError(f"{what} still {status} after {timeout:g} s")


def _fingerprint(public_key: str) -> str | None:
    """The MD5 fingerprint the API shows for an OpenSSH public key line, or None."""
    fields = public_key.split()
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (IndexError, ValueError):
        return None
    # MD5 because that is how the API names keys, not for security.
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _is_fingerprint(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 16 and all(len(p) == 2 and all(c in "0123456789abcdef" for c in p.lower()) for p in parts)


class Keys:
    """``client.keys``: the SSH keys of the account."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every SSH key of the account (``id``, ``name``, ``fingerprint``, ``public_key``)."""
        return [dict(key) for key in self._client._paginate("/v2/account/keys", "ssh_keys")]

    def get(self, id_or_fingerprint: int | str) -> dict[str, Any]:
        """The key with this id or MD5 fingerprint; ``NotFoundError`` if there is none."""
        return dict(self._client.get(f"/v2/account/keys/{_path(id_or_fingerprint)}")["ssh_key"])

    def by_name(self, name: str) -> dict[str, Any]:
        """The one key called exactly ``name``; ``ResolveError`` when none or several are."""
        found = [key for key in self.list() if key.get("name") == name]
        if len(found) == 1:
            return found[0]
        if not found:
            raise ResolveError(f"no SSH key named {name!r}")
        ids = ", ".join(str(key.get("id")) for key in found)
        raise ResolveError(f"{len(found)} SSH keys are named {name!r} (ids {ids}); use an id or a fingerprint")

    def create(self, name: str, public_key: str) -> dict[str, Any]:
        """Add a public key (an OpenSSH line) to the account and return it.

        After an ambiguous failure the key is looked up by its fingerprint
        rather than added twice.
        """
        fingerprint = _fingerprint(public_key)

        def send() -> dict[str, Any]:
            body = {"name": name, "public_key": public_key}
            return dict(self._client.post("/v2/account/keys", json=body)["ssh_key"])

        def find() -> dict[str, Any] | None:
            if fingerprint is None:
                return None
            try:
                return self.get(fingerprint)
            except NotFoundError:
                return None

        return self._client._create(send, find)

    def update(self, id_or_fingerprint: int | str, name: str) -> dict[str, Any]:
        """Rename the key with this id or fingerprint (its name is all a key lets change)."""
        return dict(self._client.put(f"/v2/account/keys/{_path(id_or_fingerprint)}", json={"name": name})["ssh_key"])

    def delete(self, id_or_fingerprint: int | str) -> None:
        """Remove the key with this id or fingerprint from the account."""
        self._client.delete(f"/v2/account/keys/{_path(id_or_fingerprint)}")

    def _identifiers(self, keys: Iterable[str | int]) -> builtins.list[str | int]:
        """Ids and fingerprints as given; names resolved to their ids (one listing for all)."""
        result: builtins.list[str | int] = []
        listing: builtins.list[dict[str, Any]] | None = None
        for key in keys:
            if isinstance(key, int) or key.isdecimal() or _is_fingerprint(key):
                result.append(int(key) if isinstance(key, str) and key.isdecimal() else key)
                continue
            if listing is None:
                listing = self.list()
            named = [k for k in listing if k.get("name") == key]
            if len(named) != 1:
                problem = "no SSH key is named" if not named else f"{len(named)} SSH keys are named"
                raise ResolveError(f"{problem} {key!r}; give its id or fingerprint")
            result.append(int(named[0]["id"]))
        return result


class Images:
    """``client.images``: distribution, application and the account's own images."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, type: str | None = None, private: bool = False) -> builtins.list[dict[str, Any]]:
        """Images: all, or ``type`` ``"distribution"`` or ``"application"``; ``private`` for the account's own."""
        if type not in (None, "distribution", "application"):
            raise ValidationError(f"image type must be 'distribution' or 'application', not {type!r}")
        params: dict[str, Any] = {}
        if type is not None:
            params["type"] = type
        if private:
            params["private"] = "true"
        return [dict(i) for i in self._client._paginate("/v2/images", "images", params)]

    def get(self, id_or_slug: int | str) -> dict[str, Any]:
        """The image with this id or slug; ``NotFoundError`` if there is none."""
        return dict(self._client.get(f"/v2/images/{_path(id_or_slug)}")["image"])


class Regions:
    """``client.regions``: the datacenter regions."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every region (``slug``, ``name``, ``features``, ``available``, ``sizes``)."""
        return [dict(r) for r in self._client._paginate("/v2/regions", "regions")]


class Sizes:
    """``client.sizes``: the droplet sizes and their prices."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every size (``slug``, ``memory``, ``vcpus``, ``disk``, prices, ``regions``)."""
        return [dict(s) for s in self._client._paginate("/v2/sizes", "sizes")]


Resource: TypeAlias = Droplet | tuple[str, int | str]


class Tags:
    """``client.tags``: tags and what carries them."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every tag (``name``, ``resources`` with counts)."""
        return [dict(t) for t in self._client._paginate("/v2/tags", "tags")]

    def get(self, name: str) -> dict[str, Any]:
        """The tag called ``name``; ``NotFoundError`` if there is none."""
        return dict(self._client.get(f"/v2/tags/{_path(name)}")["tag"])

    def create(self, name: str) -> dict[str, Any]:
        """Create the tag (creating one that exists returns it) and return it."""
        return dict(self._client.post("/v2/tags", json={"name": name}, repeatable=True)["tag"])

    def delete(self, name: str) -> None:
        """Delete the tag; what carried it loses it."""
        self._client.delete(f"/v2/tags/{_path(name)}")

    def tag(self, name: str, resources: Iterable[Resource]) -> None:
        """Put the existing tag ``name`` on droplets, or ``(type, id)`` pairs (``("image", 123)``)."""
        self._client.post(f"/v2/tags/{_path(name)}/resources", json=self._resources(resources), repeatable=True)

    def untag(self, name: str, resources: Iterable[Resource]) -> None:
        """Take the tag ``name`` off droplets or ``(type, id)`` pairs."""
        self._client.delete(f"/v2/tags/{_path(name)}/resources", json=self._resources(resources))

    @staticmethod
    def _resources(resources: Iterable[Resource]) -> dict[str, Any]:
        listed = []
        for resource in resources:
            kind, ident = ("droplet", resource.id) if isinstance(resource, Droplet) else resource
            # The API takes resource ids as strings, whatever their type elsewhere.
            listed.append({"resource_id": str(ident), "resource_type": kind})
        if not listed:
            raise ValidationError("tagging needs at least one resource")
        return {"resources": listed}


class Domains:
    """``client.domains``: DNS domains; ``records(domain)`` for their records."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every domain (``name``, ``ttl``, ``zone_file``)."""
        return [dict(d) for d in self._client._paginate("/v2/domains", "domains")]

    def get(self, name: str) -> dict[str, Any]:
        """The domain called ``name``; ``NotFoundError`` if there is none."""
        return dict(self._client.get(f"/v2/domains/{_path(name)}")["domain"])

    def create(self, name: str, ip_address: str | None = None) -> dict[str, Any]:
        """Add a domain; with ``ip_address``, the API also makes an A record for its apex.

        After an ambiguous failure the domain is looked up rather than added twice.
        """
        body = {"name": name} if ip_address is None else {"name": name, "ip_address": ip_address}

        def send() -> dict[str, Any]:
            return dict(self._client.post("/v2/domains", json=body)["domain"])

        def find() -> dict[str, Any] | None:
            try:
                return self.get(name)
            except NotFoundError:
                return None

        return self._client._create(send, find)

    def delete(self, name: str) -> None:
        """Delete the domain and its records."""
        self._client.delete(f"/v2/domains/{_path(name)}")

    def records(self, domain: str) -> Records:
        """The records of ``domain``."""
        return Records(self._client, domain)


class Records:
    """``client.domains.records(domain)``: the DNS records of one domain."""

    def __init__(self, client: Client, domain: str) -> None:
        self._client = client
        self.domain = domain
        self._path = f"/v2/domains/{_path(domain)}/records"

    def __repr__(self) -> str:
        return f"<Records of {self.domain}>"

    def list(self, type: str | None = None, name: str | None = None) -> builtins.list[dict[str, Any]]:
        """The records, or those of ``type`` and/or ``name``.

        ``name`` is as records show it (``www``, ``@`` for the apex) or fully
        qualified (``www.example.com``); the API filters on the latter.
        """
        params: dict[str, Any] = {}
        if type is not None:
            params["type"] = type
        if name is not None:
            params["name"] = self._qualified(name)
        return [dict(r) for r in self._client._paginate(self._path, "domain_records", params)]

    def _qualified(self, name: str) -> str:
        domain = self.domain.lower().rstrip(".")
        name = name.lower().rstrip(".")
        if name in ("@", "", domain):
            return domain
        return name if name.endswith("." + domain) else f"{name}.{domain}"

    def get(self, id: int) -> dict[str, Any]:
        """The record with this id."""
        return dict(self._client.get(f"{self._path}/{int(id)}")["domain_record"])

    def create(
        self,
        type: str,
        name: str,
        data: str,
        ttl: int = 1800,
        *,
        priority: int | None = None,
        port: int | None = None,
        weight: int | None = None,
        flags: int | None = None,
        tag: str | None = None,
    ) -> dict[str, Any]:
        """Add a record (``create("A", "www", "203.0.113.10")``) and return it.

        ``priority`` (MX, SRV), ``port`` and ``weight`` (SRV), ``flags`` and
        ``tag`` (CAA) are always sent, null when not given: the document
        requires ``flags`` and ``tag`` of TXT, NS and SRV records too, and
        the API shows every record with all of them. After an ambiguous
        failure an identical record is looked for rather than added twice.
        """
        body: dict[str, Any] = {
            "type": type,
            "name": name,
            "data": data,
            "ttl": ttl,
            "priority": priority,
            "port": port,
            "weight": weight,
            "flags": flags,
            "tag": tag,
        }

        def send() -> dict[str, Any]:
            return dict(self._client.post(self._path, json=body)["domain_record"])

        def find() -> dict[str, Any] | None:
            same = [
                r
                for r in self.list(type=type, name=name)
                if r.get("data", "").rstrip(".") == data.rstrip(".") and r.get("name") == name
            ]
            return same[-1] if same else None

        return self._client._create(send, find)

    def update(self, id: int, **fields: Any) -> dict[str, Any]:
        """Change fields of a record (``update(id, data="203.0.113.11", ttl=300)``) and return it.

        The document requires the record's ``type`` in every update; when not
        given, it is read from the record first.
        """
        if "type" not in fields:
            fields = {"type": self.get(id)["type"], **fields}
        return dict(self._client.patch(f"{self._path}/{int(id)}", json=fields)["domain_record"])

    def delete(self, id: int) -> None:
        """Delete the record with this id."""
        self._client.delete(f"{self._path}/{int(id)}")
