"""A droplet: the API's data as attributes, its actions, and ``connect()``.

``poseidon.api`` builds these objects and hands them itself as their client;
this module knows of that client only what :class:`Client` (a protocol) says,
so the two never import each other, and it loads the SSH layer only when
``connect()`` is called, so listing droplets never imports Fabric.

Every action method (``reboot()``, ``resize()``, ``snapshot()``…) starts the
action and, with ``wait=True`` (the default), polls it until it completes,
then returns the action document. The droplet's own attributes are not
reloaded: ``refresh()`` does that.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from poseidon.errors import APIError, SSHError, UsageError, printable
from poseidon.settings import Settings

if TYPE_CHECKING:
    from poseidon.ssh import SSHClient

__all__ = ["Client", "Droplet", "DropletActions"]


class _Settings(enum.Enum):
    """A parameter's default: what the settings say."""

    SAY = "as the settings say"


class DropletActions(Protocol):
    """What a droplet asks of the API's droplets endpoint (``poseidon.api.Droplets`` is one)."""

    def get(self, id: int) -> Droplet: ...
    def delete(self, id: int) -> None: ...
    def kernels(self, id: int) -> list[dict[str, Any]]: ...
    def snapshots(self, id: int) -> list[dict[str, Any]]: ...
    def backups(self, id: int) -> list[dict[str, Any]]: ...
    def actions(self, id: int) -> list[dict[str, Any]]: ...
    def act(
        self, id: int, type: str, *, wait: bool = True, timeout: float = 300.0, **params: Any
    ) -> dict[str, Any]: ...


class Client(Protocol):
    """What a droplet asks of the client that listed it (``poseidon.api.Client`` is one)."""

    @property
    def droplets(self) -> DropletActions: ...

    @property
    def settings(self) -> Settings | None: ...


def _address(networks: dict[str, Any], version: str, kind: str) -> str | None:
    for net in networks.get(version) or []:
        if net.get("type") == kind:
            address = net.get("ip_address")
            return str(address) if address else None
    return None


def _check_shape(data: Any) -> None:
    """Refuse droplet data that is not shaped as the API documents it, naming the field (``APIError``, exit 3).

    What the API gives is used as data (names, tags, addresses): a field of the wrong kind
    would otherwise surface later as an unexpected ``KeyError`` or ``AttributeError``."""

    def refuse(field: str, problem: str) -> NoReturn:
        name = data.get("name") if isinstance(data, dict) else None
        who = f"droplet {printable(name)!r}" if isinstance(name, str) else "a droplet"
        raise APIError(f"the API answered nonsense for {who}: {field}: {problem}")

    if not isinstance(data, dict):
        refuse("droplet", f"an object, not {type(data).__name__}")
    if type(data.get("id")) is not int:
        refuse("id", f"a number, not {printable(repr(data.get('id')))}")
    if not isinstance(data.get("name"), str):
        refuse("name", f"text, not {printable(repr(data.get('name')))}")
    for field in ("status", "size_slug"):
        if field in data and data[field] is not None and not isinstance(data[field], str):
            refuse(field, "text")
    if not isinstance(data.get("tags") or [], list) or not all(isinstance(t, str) for t in data.get("tags") or []):
        refuse("tags", "a list of text")
    if not isinstance(data.get("region") or {}, (dict, str)):
        refuse("region", "an object")
    networks = data.get("networks") or {}
    if not isinstance(networks, dict):
        refuse("networks", "an object")
    for version in ("v4", "v6"):
        entries = networks.get(version) or []
        if not isinstance(entries, list):
            refuse(f"networks.{version}", "a list")
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not all(
                isinstance(entry.get(key), str) for key in ("ip_address", "type") if key in entry
            ):
                refuse(f"networks.{version}[{index}]", "an object with text ip_address and type")


class Droplet:
    """One droplet as the API describes it.

    The API's top-level fields are attributes (``id``, ``name``, ``status``,
    ``tags``, ``memory``…); ``ip_address`` is the public IPv4,
    ``private_ip_address`` the private one, ``region`` the region's slug.
    The full document is kept in ``data``.
    """

    def __init__(self, data: dict[str, Any], client: Client | None = None) -> None:
        _check_shape(data)
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

    # -- the API ------------------------------------------------------------------

    def _droplets(self) -> DropletActions:
        if self.client is None:
            raise UsageError(f"droplet {self.data.get('name')!r} was built without a client: it cannot act")
        return self.client.droplets

    def _act(self, type: str, wait: bool, timeout: float, **params: Any) -> dict[str, Any]:
        return self._droplets().act(self.id, type, wait=wait, timeout=timeout, **params)

    def refresh(self) -> Droplet:
        """Reload the droplet's data from the API; returns the droplet itself."""
        self.data = self._droplets().get(self.id).data
        return self

    def delete(self) -> None:
        """Destroy the droplet."""
        self._droplets().delete(self.id)

    def kernels(self) -> list[dict[str, Any]]:
        """The kernels this droplet may boot."""
        return self._droplets().kernels(self.id)

    def snapshots(self) -> list[dict[str, Any]]:
        """This droplet's snapshots."""
        return self._droplets().snapshots(self.id)

    def backups(self) -> list[dict[str, Any]]:
        """This droplet's backups."""
        return self._droplets().backups(self.id)

    def actions(self) -> list[dict[str, Any]]:
        """Every action taken on this droplet."""
        return self._droplets().actions(self.id)

    def reboot(self, wait: bool = True, *, timeout: float = 300.0) -> dict[str, Any]:
        """Reboot gracefully, as ``reboot`` on the droplet would."""
        return self._act("reboot", wait, timeout)

    def power_cycle(self, wait: bool = True, *, timeout: float = 300.0) -> dict[str, Any]:
        """Power off hard, then on: a reset button."""
        return self._act("power_cycle", wait, timeout)

    def shutdown(self, wait: bool = True, *, timeout: float = 300.0) -> dict[str, Any]:
        """Shut down gracefully; the droplet ends ``off``."""
        return self._act("shutdown", wait, timeout)

    def power_off(self, wait: bool = True, *, timeout: float = 300.0) -> dict[str, Any]:
        """Cut the power: a hard shutdown."""
        return self._act("power_off", wait, timeout)

    def power_on(self, wait: bool = True, *, timeout: float = 300.0) -> dict[str, Any]:
        """Power on a droplet that is ``off``."""
        return self._act("power_on", wait, timeout)

    def password_reset(self, wait: bool = True, *, timeout: float = 300.0) -> dict[str, Any]:
        """Reset the root password; DigitalOcean mails the new one to the account."""
        return self._act("password_reset", wait, timeout)

    def enable_ipv6(self, wait: bool = True, *, timeout: float = 300.0) -> dict[str, Any]:
        """Give the droplet a public IPv6 address."""
        return self._act("enable_ipv6", wait, timeout)

    def enable_private_networking(self, wait: bool = True, *, timeout: float = 300.0) -> dict[str, Any]:
        """Give the droplet a private address (droplets made since 2020 have one in their VPC).

        The OpenAPI document's action schema no longer lists this type, though
        its own examples still send it; the API accepts it for older droplets.
        """
        return self._act("enable_private_networking", wait, timeout)

    def enable_backups(self, wait: bool = True, *, timeout: float = 300.0) -> dict[str, Any]:
        """Turn on backups (daily by default)."""
        return self._act("enable_backups", wait, timeout)

    def disable_backups(self, wait: bool = True, *, timeout: float = 300.0) -> dict[str, Any]:
        """Turn off backups; existing ones are kept until the droplet is destroyed."""
        return self._act("disable_backups", wait, timeout)

    def resize(self, size: str, disk: bool = False, *, wait: bool = True, timeout: float = 300.0) -> dict[str, Any]:
        """Move to size ``size``; ``disk=True`` grows the disk too, which cannot be undone."""
        return self._act("resize", wait, timeout, size=size, disk=disk)

    def restore(self, image: int, *, wait: bool = True, timeout: float = 300.0) -> dict[str, Any]:
        """Restore the droplet from one of its backups or snapshots (an image id)."""
        return self._act("restore", wait, timeout, image=int(image))

    def rebuild(self, image: str | int, *, wait: bool = True, timeout: float = 300.0) -> dict[str, Any]:
        """Reinstall the droplet from an image (slug or id), keeping its addresses."""
        return self._act("rebuild", wait, timeout, image=image)

    def rename(self, name: str, *, wait: bool = True, timeout: float = 300.0) -> dict[str, Any]:
        """Rename the droplet."""
        return self._act("rename", wait, timeout, name=name)

    def change_kernel(self, kernel: int, *, wait: bool = True, timeout: float = 300.0) -> dict[str, Any]:
        """Boot a kernel from ``kernels()`` (its id) from now on."""
        return self._act("change_kernel", wait, timeout, kernel=int(kernel))

    def snapshot(self, name: str | None = None, *, wait: bool = True, timeout: float = 300.0) -> dict[str, Any]:
        """Take a snapshot (named ``name``, else the API names it); ``snapshots()`` lists it."""
        params = {"name": name} if name is not None else {}
        return self._act("snapshot", wait, timeout, **params)

    # -- SSH ----------------------------------------------------------------------

    def connect(
        self,
        interactive: bool = False,
        user: str | None = None,
        key_filename: str | None = None,
        *,
        port: int | None = None,
        known_hosts: str | None = None,
        connect_timeout: float = 15.0,
        keepalive: float | None | _Settings = _Settings.SAY,
    ) -> SSHClient:
        """Open an SSH connection to the droplet's public IPv4.

        ``user``, ``port``, ``key_filename`` and ``known_hosts`` default to the
        settings of the client that listed the droplet (else this process's
        environment): ``POSEIDON_SSH_USER`` (else ``root``), ``POSEIDON_SSH_PORT``
        (else 22), ``POSEIDON_SSH_KEY`` (else ssh-agent and ``~/.ssh``) and
        ``POSEIDON_KNOWN_HOSTS`` (else ``~/.ssh/known_hosts``). A droplet silent
        for ``POSEIDON_SSH_KEEPALIVE`` seconds (else 15) during a command is asked
        whether it still answers, and given up as long again later (``keepalive``
        seconds when given; ``None``: never ask).
        """
        from poseidon.ssh import SSHClient

        settings = self.client.settings if self.client is not None else None
        settings = (settings if settings is not None else Settings.from_environ()).check_login()
        host = self.ip_address
        if not host:
            raise SSHError(f"droplet {self.name} ({self.id}) has no public IPv4 address yet")
        return SSHClient(
            host,
            user=user or settings.ssh_user,
            port=port or settings.ssh_port,
            key_filename=key_filename or settings.ssh_key,
            known_hosts=known_hosts or settings.known_hosts,
            interactive=interactive,
            connect_timeout=connect_timeout,
            label=self.name,
            droplet_id=self.id,
            keepalive=settings.ssh_keepalive if keepalive is _Settings.SAY else keepalive,
        )

    def __repr__(self) -> str:
        return f"<Droplet {self.id} {self.name!r} {self.status} {self.ip_address or '-'}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Droplet) and other.data.get("id") == self.data.get("id")

    def __hash__(self) -> int:
        return hash(("droplet", self.data.get("id")))
