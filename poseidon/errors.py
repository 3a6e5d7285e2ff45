"""The exception tree of poseidon.

::

    PoseidonError                      every error poseidon raises on purpose
    ├── SpecError (ValueError)         a playbook is invalid (carries every problem)
    ├── UsageError (ValueError)        the command line or the environment is invalid
    ├── ResolveError (LookupError)     a droplet named by a playbook cannot be resolved
    ├── APIError                       the DigitalOcean API answered with an error
    │   ├── AuthenticationError        401/403: the token is missing, wrong or lacks a scope
    │   ├── NotFoundError              404: no such resource
    │   ├── RateLimitError             429 still answered after the retries
    │   ├── ServerError                5xx still answered after the retries
    │   ├── ValidationError            422 / 400: the API refused the request's content
    │   └── WaitTimeoutError (TimeoutError)  a droplet or an action did not get there in time
    ├── APIConnectionError             the API could not be reached at all
    ├── SSHError                       a droplet could not be reached or refused the login
    │   ├── SSHConnectError            the SSH port did not answer (yet): refused, timed out
    │   └── HostKeyChangedError        a droplet presented another host key than the one recorded
    ├── CommandError                   a remote command exited non-zero
    ├── NotReadyError                  a droplet did not get ready (cloud-init, dpkg lock) in time
    ├── DropletBusyError               another poseidon apply is running on that droplet
    └── SandboxError                   the local sandbox could not start

Exit codes are not decided here: ``cli.py`` maps this tree to them. No message
in this module ever contains a token; ``APIError`` is built from the API's
answer, never from the request's headers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "APIConnectionError",
    "APIError",
    "AuthenticationError",
    "CommandError",
    "DropletBusyError",
    "HostKeyChangedError",
    "NotFoundError",
    "NotReadyError",
    "PoseidonError",
    "Problem",
    "RateLimitError",
    "ResolveError",
    "SSHConnectError",
    "SSHError",
    "SSHUnresponsiveError",
    "SandboxError",
    "ServerError",
    "SpecError",
    "UsageError",
    "ValidationError",
    "WaitTimeoutError",
]


class PoseidonError(Exception):
    """Raised on purpose by poseidon; anything else is a bug."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a playbook, located in its file."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{printable(self.file)}:{self.line}:{self.column}"
        path, message = printable(self.path), printable(self.message)
        return f"{where}: {path}: {message}" if path else f"{where}: {message}"


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` with control characters escaped (``\\x1b``), newlines kept when ``newlines``: what did
    not come from poseidon (a playbook's values, a droplet's output, an API's answer) reaches the
    terminal and must not move its cursor, colour it, retitle it or split a message's line."""
    if text.isprintable() or (newlines and text.replace("\n", "").isprintable()):
        return text
    return "".join(
        c if c.isprintable() or (newlines and c == "\n") else c.encode("unicode_escape").decode("ascii") for c in text
    )


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``": did you mean 'chdir'?"`` for the choices closest to a mistyped ``word``; ``""`` when none is close."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return f": did you mean {' or '.join(repr(c) for c in close)}?"


class SpecError(PoseidonError, ValueError):
    """Raised when a playbook is invalid; ``problems`` lists every one found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UsageError(PoseidonError, ValueError):
    """Raised when the command line or the environment asks for something impossible."""


class ResolveError(PoseidonError, LookupError):
    """Raised when a droplet named by a playbook is missing or ambiguous."""


class APIError(PoseidonError):
    """Raised when the DigitalOcean API answers with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.id = id
        self.message = message
        self.request_id = request_id
        parts = [f"{status}" if status else "", f"{id}:" if id else "", message]
        text = " ".join(p for p in parts if p)
        if request_id:
            text += f" (request {request_id})"
        super().__init__(text)


class AuthenticationError(APIError):
    """Raised on 401/403: the token is missing, wrong or lacks a scope."""


class NotFoundError(APIError):
    """Raised on 404."""


class RateLimitError(APIError):
    """Raised when the API still answers 429 after the allowed waits."""


class ServerError(APIError):
    """Raised when the API still answers 5xx after the allowed retries."""


class ValidationError(APIError):
    """Raised on 400/422: the API refused what was sent."""


class WaitTimeoutError(APIError, TimeoutError):
    """Raised when a droplet or an action does not reach the wanted state in time."""


class APIConnectionError(PoseidonError):
    """Raised when the API cannot be reached (DNS, refused, timeout)."""


class PartlyCreatedError(PoseidonError):
    """Raised when the API failed after some of a playbook's droplets were created.

    ``created`` holds ``(name, id)`` of each droplet that now exists; ``cause``
    is the failure (an :class:`APIError` or :class:`APIConnectionError`).
    """

    def __init__(self, cause: PoseidonError, created: list[tuple[str, int]]) -> None:
        self.cause = cause
        self.created = created
        names = ", ".join(f"{name} (id {droplet_id})" for name, droplet_id in created)
        super().__init__(
            f"{cause}; created before that: {names}. They exist and are billed:"
            " apply again to provision them, or delete them"
        )


class SSHError(PoseidonError):
    """Raised when a droplet cannot be reached over SSH or refuses the login."""


class SSHConnectError(SSHError):
    """Raised when a droplet's SSH port does not answer: refused, timed out, no banner (still booting?)."""


class SSHUnresponsiveError(SSHError):
    """Raised when a droplet stops answering during a command (a frozen machine or sshd): its
    keepalives go unanswered, or a step runs on past its timeout. The connection is closed."""


class HostKeyChangedError(SSHError):
    """Raised when a droplet presents another host key than the one recorded for it, which may be an attack.

    ``was`` and ``now`` are ``TYPE SHA256:…`` as OpenSSH prints them;
    ``names`` are the known-hosts names whose lines a rebuilt droplet's owner removes.
    """

    def __init__(
        self,
        message: str,
        *,
        address: str,
        droplet_id: int | None = None,
        known_hosts: str = "",
        was: str = "",
        now: str = "",
        names: tuple[str, ...] = (),
    ) -> None:
        self.address = address
        self.droplet_id = droplet_id
        self.known_hosts = known_hosts
        self.was = was
        self.now = now
        self.names = names
        super().__init__(message)


class CommandError(PoseidonError):
    """Raised when a remote command exits non-zero."""

    def __init__(self, command: str, exited: int, stdout: str = "", stderr: str = "") -> None:
        self.command = command
        self.exited = exited
        self.stdout = stdout
        self.stderr = stderr
        tail = (stderr or stdout).strip().splitlines()[-5:]
        detail = ("\n" + "\n".join(tail)) if tail else ""
        super().__init__(f"command exited {exited}: {command}{detail}")


class NotReadyError(PoseidonError):
    """Raised when a droplet is still not ready for steps (cloud-init, the dpkg lock) after the wait."""


class DropletBusyError(PoseidonError):
    """Raised when another poseidon apply holds a droplet's lock: two applies must not interleave."""


class SandboxError(PoseidonError):
    """Raised when the local sandbox cannot start or stop."""
