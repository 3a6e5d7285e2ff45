"""poseidon's own settings: read once from the environment, checked, then passed down.

Every ``POSEIDON_*`` variable and DigitalOcean's token variables are read here
and nowhere else (:meth:`Settings.from_environ`); README.md's table lists them
with the defaults below. A value that is not what its variable takes is a
:class:`UsageError` naming the variable, before anything is changed.

Variables a playbook reads (``${env:NAME}``, a git step's ``token_env``) are
the playbook's, not poseidon's: they travel as the playbook's environment.

Imports only :mod:`poseidon.errors`.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from poseidon.errors import UsageError

__all__ = ["DEFAULT_API_TIMEOUT", "DEFAULT_API_URL", "DEFAULT_KEEPALIVE", "TOKEN_VARIABLES", "Settings", "debugging"]

DEFAULT_API_URL = "https://api.digitalocean.com"
#: Seconds one request may take (``POSEIDON_API_TIMEOUT``).
DEFAULT_API_TIMEOUT = 30.0
#: Seconds a droplet may be silent during a command before it is asked whether it answers.
DEFAULT_KEEPALIVE = 15.0
#: Where the API token is looked for, in this order (doctl's and Terraform's names).
TOKEN_VARIABLES = ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_API_KEY")

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """What poseidon's variables say, checked; the defaults are those of an empty environment.

    A bad API setting is refused at once. A bad SSH setting (``POSEIDON_SSH_PORT``,
    ``POSEIDON_SSH_KEEPALIVE``) is kept in :attr:`login_problems` and refused by
    :meth:`check_login` where SSH is used, before anything changes: ``destroy`` or
    ``droplets`` never log in, and a sandbox brings its own port.
    """

    #: ``POSEIDON_API_URL``: the API's base URL.
    api_url: str = DEFAULT_API_URL
    #: ``POSEIDON_API_TIMEOUT``: seconds to wait for a connection, then for each part of an answer.
    api_timeout: float = DEFAULT_API_TIMEOUT
    #: ``REQUESTS_CA_BUNDLE``, as requests reads it (a file or a folder): the authorities the API's
    #: certificate is checked against (``None``: requests' own); a sandbox's bundle holds its authority too.
    ca_bundle: str | None = None
    #: The API token: the first token variable set, else ``None`` (doctl's saved one is looked up then).
    token: str | None = field(default=None, repr=False)
    #: Every token variable's value: masked in all output, whichever API the run talks to.
    tokens: tuple[str, ...] = field(default=(), repr=False)
    #: doctl's config file (``os.UserConfigDir()``/doctl/config.yaml) and ``DIGITALOCEAN_CONTEXT``.
    doctl_config: Path | None = field(default_factory=lambda: _doctl_config({}))
    doctl_context: str | None = None
    #: ``POSEIDON_SSH_USER``, ``POSEIDON_SSH_PORT``, ``POSEIDON_SSH_KEY`` (``None``: ssh-agent and ~/.ssh).
    ssh_user: str = "root"
    ssh_port: int = 22
    ssh_key: str | None = None
    #: ``POSEIDON_KNOWN_HOSTS`` (``None``: ~/.ssh/known_hosts).
    known_hosts: str | None = None
    #: ``POSEIDON_SSH_KEEPALIVE`` seconds; ``None`` (``0``) never asks.
    ssh_keepalive: float | None = DEFAULT_KEEPALIVE
    #: ``POSEIDON_PIN_HOST_KEYS``: give droplets poseidon creates a host key made here.
    pin_host_keys: bool = True
    #: ``POSEIDON_SANDBOX``: the kind of sandbox ``--sandbox`` means (``light``, ``machines``), when set.
    sandbox: str | None = None
    #: The login above wins over a playbook's ``user``/``port`` (a sandbox has one user, one port).
    login_pinned: bool = False
    #: ``(variable, why)`` of each SSH variable that is not what it takes (its default stands meanwhile).
    login_problems: tuple[tuple[str, str], ...] = ()

    def check_login(self) -> Settings:
        """These settings, when they can log in; else :class:`UsageError` naming the first bad variable."""
        if self.login_problems:
            raise UsageError(self.login_problems[0][1])
        return self

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings ``environ`` (default: this process's environment) gives."""
        env = os.environ if environ is None else environ

        def text(name: str) -> str:
            return env.get(name, "").strip()

        tokens = tuple(value for name in TOKEN_VARIABLES if (value := text(name)))
        problems: list[tuple[str, str]] = []
        return cls(
            # Set but blank is refused by the client, never taken for the public API.
            api_url=env.get("POSEIDON_API_URL") or DEFAULT_API_URL,
            api_timeout=_api_timeout(text("POSEIDON_API_TIMEOUT")),
            ca_bundle=text("REQUESTS_CA_BUNDLE") or None,
            token=tokens[0] if tokens else None,
            tokens=tokens,
            doctl_config=_doctl_config(env),
            doctl_context=text("DIGITALOCEAN_CONTEXT") or None,
            ssh_user=env.get("POSEIDON_SSH_USER") or "root",
            ssh_port=_deferred(_ssh_port, text("POSEIDON_SSH_PORT"), "POSEIDON_SSH_PORT", 22, problems),
            ssh_key=env.get("POSEIDON_SSH_KEY") or None,
            known_hosts=env.get("POSEIDON_KNOWN_HOSTS") or None,
            ssh_keepalive=_deferred(
                _keepalive, text("POSEIDON_SSH_KEEPALIVE"), "POSEIDON_SSH_KEEPALIVE", None, problems
            ),
            pin_host_keys=env.get("POSEIDON_PIN_HOST_KEYS", "1") != "0",
            sandbox=text("POSEIDON_SANDBOX") or None,
            login_problems=tuple(problems),
        )


def _deferred(parse: Callable[[str], T], text: str, name: str, default: T, problems: list[tuple[str, str]]) -> T:
    """``parse(text)``; when it refuses, ``default`` (never used: :meth:`Settings.check_login` refuses
    first), and why goes to ``problems`` under ``name``."""
    try:
        return parse(text)
    except UsageError as exc:
        problems.append((name, str(exc)))
        return default


def debugging(environ: Mapping[str, str] | None = None) -> bool:
    """``POSEIDON_DEBUG``: whether an unexpected error shows its traceback. Read alone, as the
    last resort of an error that may be a bad setting itself."""
    return bool((os.environ if environ is None else environ).get("POSEIDON_DEBUG"))


def _api_timeout(text: str) -> float:
    if not text:
        return DEFAULT_API_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise UsageError(f"POSEIDON_API_TIMEOUT must be a number of seconds above 0, not {text!r}")
    return seconds


def _ssh_port(text: str) -> int:
    if not text:
        return 22
    if text.isascii() and text.isdigit() and 1 <= int(text) <= 65535:
        return int(text)
    raise UsageError(f"POSEIDON_SSH_PORT must be a port number from 1 to 65535, not {text!r}")


def _keepalive(text: str) -> float | None:
    if not text:
        return DEFAULT_KEEPALIVE
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not (0 <= seconds < 86400):
        raise UsageError(f"POSEIDON_SSH_KEEPALIVE must be a number of seconds (0 turns keepalives off), not {text!r}")
    return seconds or None


def _doctl_config(env: Mapping[str, str]) -> Path:
    """Where doctl keeps its config: Go's ``os.UserConfigDir()``/doctl/config.yaml."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform == "win32":
        base = Path(env.get("APPDATA") or Path.home())
    else:
        base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "doctl" / "config.yaml"
