"""A droplet: the API's data as attributes, its actions, and ``connect()``.

``poseidon.api`` builds these objects; this module refers to the API client
only for types and loads the SSH layer only when ``connect()`` is called, so
listing droplets never imports Fabric.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from poseidon.api import Client
    from poseidon.ssh import SSHClient

__all__ = ["Droplet"]


def _address(networks: dict[str, Any], version: str, kind: str) -> str | None:
    for net in networks.get(version) or []:
        if net.get("type") == kind:
            address = net.get("ip_address")
            return str(address) if address else None
    return None


class Droplet:
    """One droplet as the API describes it.

    The API's top-level fields are attributes (``id``, ``name``, ``status``,
    ``tags``, ``memory``…); ``ip_address`` is the public IPv4,
    ``private_ip_address`` the private one, ``region`` the region's slug.
    The full document is kept in ``data``.
    """

    def __init__(self, data: dict[str, Any], client: Client | None = None) -> None:
        self.data = data
        self.client = client

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not real attributes: expose the API's fields.
        data = self.__dict__.get("data", {})
        if name in data:
            return data[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def status(self) -> str:
        return str(self.data.get("status", ""))

    @property
    def tags(self) -> list[str]:
        return list(self.data.get("tags") or [])

    @property
    def region(self) -> str:
        region = self.data.get("region") or {}
        return str(region.get("slug", "")) if isinstance(region, dict) else str(region)

    @property
    def ip_address(self) -> str | None:
        return _address(self.data.get("networks") or {}, "v4", "public")

    @property
    def private_ip_address(self) -> str | None:
        return _address(self.data.get("networks") or {}, "v4", "private")

    @property
    def ipv6_address(self) -> str | None:
        return _address(self.data.get("networks") or {}, "v6", "public")

    def connect(
        self,
        interactive: bool = False,
        user: str | None = None,
        key_filename: str | None = None,
        *,
        port: int | None = None,
        known_hosts: str | None = None,
        connect_timeout: float = 15.0,
    ) -> SSHClient:
        """Open an SSH connection to the droplet's public IPv4.

        ``user``, ``port``, ``key_filename`` and ``known_hosts`` default to
        ``POSEIDON_SSH_USER`` (else ``root``), ``POSEIDON_SSH_PORT`` (else 22),
        ``POSEIDON_SSH_KEY`` (else ssh-agent and ``~/.ssh``) and
        ``POSEIDON_KNOWN_HOSTS`` (else ``~/.ssh/known_hosts``).
        """
        from poseidon.errors import SSHError
        from poseidon.ssh import SSHClient

        host = self.ip_address
        if not host:
            raise SSHError(f"droplet {self.name} ({self.id}) has no public IPv4 address yet")
        return SSHClient(
            host,
            user=user or os.environ.get("POSEIDON_SSH_USER") or "root",
            port=port or int(os.environ.get("POSEIDON_SSH_PORT") or 22),
            key_filename=key_filename or os.environ.get("POSEIDON_SSH_KEY") or None,
            known_hosts=known_hosts or os.environ.get("POSEIDON_KNOWN_HOSTS") or None,
            interactive=interactive,
            connect_timeout=connect_timeout,
            label=self.name,
        )

    def __repr__(self) -> str:
        return f"<Droplet {self.id} {self.name!r} {self.status} {self.ip_address or '-'}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Droplet) and other.data.get("id") == self.data.get("id")

    def __hash__(self) -> int:
        return hash(("droplet", self.data.get("id")))
