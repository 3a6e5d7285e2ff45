"""Host keys: a known-hosts file kept as OpenSSH's ``accept-new`` keeps it, told droplet by droplet.

A droplet's key is recorded in an OpenSSH known-hosts file under two names::

    203.0.113.7,poseidon-droplet-3164494 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5…

its address (``[ip]:port`` off port 22), the name OpenSSH itself looks up,
and an alias made of its id. The id tells what the address cannot:
DigitalOcean gives a destroyed droplet's address to the next droplet made.
On every connection :func:`decide` compares the key presented with the file:

- the id's key → ``known`` (the address is pointed at it too);
- another key under the id → ``changed``: :class:`HostKeyChangedError`,
  nothing written, never a silent reconnection;
- nothing under the id, the key under the address → ``known`` (the id is added);
- nothing under the id, another key under the address that poseidon
  recorded for another droplet id → ``reused``: a new droplet on a recycled
  address; its key takes the address from poseidon's old lines, and a notice
  says so;
- nothing under the id, another key under the address known only as the
  address's (OpenSSH wrote it, or a person) → ``changed``: nothing says the
  address was reused, so it is refused as ssh would;
- nothing at all → ``new``: first contact, both names recorded, a notice.

Without a droplet id (an ``SSHClient`` made by hand) only the address counts,
and another key there is ``changed``.

Droplets that poseidon creates skip first contact: :func:`pinned_user_data`
makes their host key and hands it to cloud-init in the user data, and
:func:`record` writes it under the id as soon as the API has given one. The
private key exists only in that user data: never on disk here, never logged.

Lines poseidon did not write stay as they were: comments, hashed names
(``|1|…``, Debian's and Ubuntu's default), ``@cert-authority`` and
``@revoked`` lines (kept, not used). Writes are serialized within the process
(the executor's workers share one file); a line is added by appending, and a
rewrite (a reused address) takes names only from lines poseidon wrote (those
naming a droplet id) and goes through a temporary file and a rename, so no
reader ever sees half a file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from poseidon import cloudinit
from poseidon.errors import HostKeyChangedError, SSHError

__all__ = [
    "ALIAS_PREFIX",
    "Decision",
    "Entry",
    "HostKey",
    "address_name",
    "alias",
    "decide",
    "forget",
    "known_hosts_path",
    "load",
    "parse",
    "pinned_user_data",
    "preferred_types",
    "record",
    "verify",
]

ALIAS_PREFIX = "poseidon-droplet-"

log = logging.getLogger(__name__)

#: One lock for every file: the executor's workers connect in threads and share one known-hosts file.
_lock = threading.Lock()

Verdict = Literal["known", "new", "reused", "changed"]


def alias(droplet_id: int) -> str:
    """The name a droplet's key is recorded under besides its address: ``poseidon-droplet-<id>``."""
    return f"{ALIAS_PREFIX}{int(droplet_id)}"


def known_hosts_path(file: str | os.PathLike[str] | None = None) -> Path:
    """The known-hosts file to use and update: ``file`` (``POSEIDON_KNOWN_HOSTS``), else ``~/.ssh/known_hosts``."""
    chosen = file or Path.home() / ".ssh" / "known_hosts"
    return Path(chosen).expanduser()


def address_name(host: str, port: int = 22) -> str:
    """The name OpenSSH and paramiko look an address up by: ``host``, or ``[host]:port`` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


# -- keys and lines ------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class HostKey:
    """A public host key: its type (``ssh-ed25519``…) and its wire blob."""

    type: str
    blob: bytes

    @classmethod
    def parse(cls, text: str) -> HostKey:
        """Read ``TYPE BASE64 [COMMENT]`` (a ``.pub`` file's line); ``ValueError`` when it is not one."""
        fields = text.split()
        if len(fields) < 2:
            raise ValueError(f"not a public key line: {text.strip()[:40]!r}")
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"not a public key line (bad base64): {text.strip()[:40]!r}") from None
        # The blob names its own type: a line whose two names disagree is damaged.
        if _blob_type(blob) != fields[0]:
            raise ValueError(f"not a public key line (the key is not {fields[0]}): {text.strip()[:40]!r}")
        return cls(fields[0], blob)

    @property
    def base64(self) -> str:
        return base64.b64encode(self.blob).decode()

    @property
    def fingerprint(self) -> str:
        """As OpenSSH prints it: ``SHA256:`` and the digest in base64 without padding."""
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")

    def describe(self) -> str:
        """``TYPE SHA256:…``, for messages."""
        return f"{self.type} {self.fingerprint}"

    def __str__(self) -> str:
        return f"{self.type} {self.base64}"

    def __repr__(self) -> str:
        return f"HostKey({self.describe()!r})"


def _blob_type(blob: bytes) -> str | None:
    if len(blob) < 4:
        return None
    size = int.from_bytes(blob[:4], "big")
    name = blob[4 : 4 + size]
    return name.decode("ascii", errors="replace") if len(name) == size else None


@dataclass(frozen=True)
class Entry:
    """One key line of a known-hosts file."""

    names: tuple[str, ...]  # as written: clear names or patterns, or one hashed ``|1|salt|hash``
    key: HostKey
    marker: str = ""  # "@cert-authority" or "@revoked": kept in the file, not used here
    comment: str = ""

    def matches(self, name: str) -> bool:
        return any(_matches(pattern, name) for pattern in self.names)

    def line(self) -> str:
        fields = [self.marker, ",".join(self.names), str(self.key), self.comment]
        return " ".join(f for f in fields if f)


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):
        # OpenSSH's HashKnownHosts: base64 salt and base64 HMAC-SHA1 of the name keyed by the salt.
        try:
            salt, digest = (base64.b64decode(part, validate=True) for part in pattern[3:].split("|"))
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(hmac.new(salt, name.encode(), "sha1").digest(), digest)
    # Wildcard patterns are taken literally: poseidon writes none, and a droplet's address needs none.
    return pattern.lower() == name.lower()


def _parse_line(line: str) -> Entry | None:
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    marker = fields.pop(0) if fields[0].startswith("@") else ""
    if len(fields) < 3:
        return None
    try:
        key = HostKey.parse(f"{fields[1]} {fields[2]}")
    except ValueError:
        return None  # a line paramiko or OpenSSH would skip too; it stays in the file as it was
    return Entry(tuple(fields[0].split(",")), key, marker, " ".join(fields[3:]))


def parse(text: str) -> list[Entry]:
    """The key lines of a known-hosts file's text; comments and damaged lines are left out."""
    return [e for e in map(_parse_line, text.splitlines()) if e is not None]


def load(file: str | os.PathLike[str]) -> list[Entry]:
    """The key lines of a known-hosts file; none when it does not exist."""
    return parse(_read(Path(file)))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise SSHError(f"cannot read the known-hosts file {path}: {exc.strerror or exc}") from None


def _keys(entries: Iterable[Entry], name: str) -> list[HostKey]:
    found: list[HostKey] = []
    for entry in entries:
        if not entry.marker and entry.matches(name) and entry.key not in found:
            found.append(entry.key)
    return found


# -- the decision --------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What to make of the key a droplet presented, and what to write for it."""

    verdict: Verdict
    key: HostKey
    #: The names to point at ``key`` (those already pointing at it are left alone).
    record: tuple[str, ...] = ()
    #: What was recorded before: under the id (or the address) for ``changed``, under the address for ``reused``.
    was: tuple[HostKey, ...] = ()
    #: The droplets whose aliases shared the address's old lines (``reused``): the address's previous tenants.
    previous: tuple[int, ...] = ()
    #: ``changed`` because of a key known for the address only, not under a droplet id (OpenSSH's, a person's).
    address_only: bool = False

    @property
    def was_key(self) -> HostKey | None:
        """The recorded key to show beside the new one: the same type when there is one."""
        same = [k for k in self.was if k.type == self.key.type]
        return next(iter(same or self.was), None)


def decide(entries: Sequence[Entry], key: HostKey, *, address: str, droplet_id: int | None = None) -> Decision:
    """Judge ``key``, presented at ``address`` (as :func:`address_name` writes it) by droplet ``droplet_id``.

    Pure: the file's entries in, a :class:`Decision` out; see the module's
    docstring for the rules.
    """
    by_address = _keys(entries, address)
    if droplet_id is None:
        if not by_address:
            return Decision("new", key, record=(address,))
        if key in by_address:
            return Decision("known", key)
        return Decision("changed", key, was=tuple(by_address))
    name = alias(droplet_id)
    by_id = _keys(entries, name)
    if by_id:
        if key in by_id:
            return Decision("known", key, record=(address, name))
        return Decision("changed", key, was=tuple(by_id))
    if not by_address:
        return Decision("new", key, record=(address, name))
    if key in by_address:
        return Decision("known", key, record=(name,))
    previous = sorted(
        {
            int(n.removeprefix(ALIAS_PREFIX))
            for e in entries
            if not e.marker and e.key in by_address and e.matches(address)
            for n in e.names
            if n.startswith(ALIAS_PREFIX) and n.removeprefix(ALIAS_PREFIX).isdecimal()
        }
    )
    if not previous:
        # Another key is known for the address, and not as another droplet's (OpenSSH or a person
        # wrote it): nothing says this is a new droplet on a reused address. Refuse, as ssh would.
        return Decision("changed", key, was=tuple(by_address), address_only=True)
    return Decision("reused", key, record=(address, name), was=tuple(by_address), previous=tuple(previous))


def preferred_types(entries: Sequence[Entry], *, address: str, droplet_id: int | None = None) -> list[str]:
    """The key types to ask the droplet for first: those recorded under its id, else under its address.

    A server offers several host keys and the client picks a type; asking
    for the recorded type lets the recorded key be compared with its like.
    """
    keys = _keys(entries, alias(droplet_id)) if droplet_id is not None else []
    return list(dict.fromkeys(k.type for k in keys or _keys(entries, address)))


def _changed(decision: Decision, *, address: str, droplet_id: int | None, droplet_name: str | None, file: Path) -> str:
    was = decision.was_key
    change = f"was {was.describe() if was else 'another key'}, now {decision.key.describe()}"
    if droplet_id is None:
        return (
            f"the host key of {address} changed: {change};"
            f" if the machine was rebuilt, remove the lines for {address} from {file}"
        )
    who = f"droplet {droplet_name} (id {droplet_id})" if droplet_name else f"droplet {droplet_id}"
    if decision.address_only:
        return (
            f"the host key of {who} at {address} is not the one {file} holds for {address}: {change};"
            f" that line was not written by poseidon for another droplet, so nothing says the address was"
            f" reused: if this droplet is new, remove the lines for {address} from {file}"
        )
    return (
        f"the host key of {who} at {address} changed: {change};"
        f" if you rebuilt it, remove the lines for {alias(droplet_id)} and {address} from {file}"
    )


def _notice(decision: Decision, *, address: str, droplet_id: int | None, droplet_name: str | None, file: Path) -> str:
    who = droplet_name or address
    if droplet_id is not None:
        who += f" (id {droplet_id})"
    if decision.verdict == "new":
        return f"first contact with {who} at {address}: recorded its host key {decision.key.describe()} in {file}"
    was = decision.was_key
    tenants = ", ".join(str(i) for i in decision.previous)
    before = (
        f"droplet {tenants}'s" if len(decision.previous) == 1 else (f"droplets {tenants}'" if tenants else "another")
    )
    return (
        f"{who} is a new droplet at {address}, which had {before} host key"
        f" ({was.describe() if was else 'unknown'}): DigitalOcean reuses addresses;"
        f" recorded {decision.key.describe()} in its place in {file}"
    )


def verify(
    file: str | os.PathLike[str],
    key: HostKey,
    *,
    address: str,
    droplet_id: int | None = None,
    droplet_name: str | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> Decision:
    """Check ``key`` against the file, record it when :func:`decide` accepts it, and return the decision.

    Raises :class:`HostKeyChangedError` (and writes nothing) for a changed
    key. First contact and a reused address are told to ``on_notice``; without
    one they are logged on ``poseidon.hostkeys`` (first contact at INFO, a
    reused address at WARNING).
    """
    path = Path(file).expanduser()
    with _lock:
        text = _read(path)
        decision = decide(parse(text), key, address=address, droplet_id=droplet_id)
        if decision.verdict == "changed":
            was = decision.was_key
            names = (alias(droplet_id), address) if droplet_id is not None else (address,)
            raise HostKeyChangedError(
                _changed(decision, address=address, droplet_id=droplet_id, droplet_name=droplet_name, file=path),
                address=address,
                droplet_id=droplet_id,
                known_hosts=str(path),
                was=was.describe() if was else "",
                now=key.describe(),
                names=names,
            )
        _point(path, text, decision.record, key)
    if decision.verdict in ("new", "reused"):
        message = _notice(decision, address=address, droplet_id=droplet_id, droplet_name=droplet_name, file=path)
        if on_notice is not None:
            on_notice(message)
        else:
            log.log(logging.INFO if decision.verdict == "new" else logging.WARNING, message)
    return decision


# -- writing ---------------------------------------------------------------------


def record(file: str | os.PathLike[str], names: Iterable[str], public_key_line: str) -> None:
    """Record the key of ``public_key_line`` (``TYPE BASE64 [COMMENT]``) under ``names``.

    Each name then points at this key: a name that pointed at another key
    (a previous droplet's address) is removed from that key's lines; a name
    that already points at it is left as it is.
    """
    key = HostKey.parse(public_key_line)
    path = Path(file).expanduser()
    with _lock:
        _point(path, _read(path), tuple(names), key)


def forget(file: str | os.PathLike[str], names: Iterable[str]) -> int:
    """Remove ``names`` from every key line (a destroyed or rebuilt droplet); return how many lines changed."""
    wanted = tuple(names)
    path = Path(file).expanduser()
    with _lock:
        lines, changed = _without(_read(path), wanted, keep=lambda entry: bool(entry.marker))
        if changed:
            _rewrite(path, lines)
    return changed


def _without(text: str, names: tuple[str, ...], keep: Callable[[Entry], bool]) -> tuple[list[str], int]:
    """The file's lines with ``names`` taken out of each key line that ``keep`` does not protect."""
    lines: list[str] = []
    changed = 0
    for line in text.splitlines():
        entry = _parse_line(line)
        if entry is None or keep(entry) or not any(entry.matches(n) for n in names):
            lines.append(line)
            continue
        changed += 1
        # A hashed pattern stands for one name: it goes whole. Clear names go one by one.
        rest = tuple(p for p in entry.names if not any(_matches(p, n) for n in names))
        if rest:
            lines.append(Entry(rest, entry.key, entry.marker, entry.comment).line())
    return lines, changed


def _ours(entry: Entry) -> bool:
    """Whether poseidon wrote the line: it names a droplet's alias."""
    return any(name.startswith(ALIAS_PREFIX) for name in entry.names)


def _point(path: Path, text: str, names: tuple[str, ...], key: HostKey) -> None:
    entries = parse(text)
    missing = tuple(n for n in names if key not in _keys(entries, n))
    if not missing:
        return
    added = f"{','.join(missing)} {key}"
    # Only lines poseidon wrote (they name a droplet id) give up a name: never OpenSSH's or a person's.
    lines, changed = _without(
        text, missing, keep=lambda entry: bool(entry.marker) or entry.key == key or not _ours(entry)
    )
    if changed:
        _rewrite(path, [*lines, added])
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write(("\n" if text and not text.endswith("\n") else "") + added + "\n")
    except OSError as exc:
        raise SSHError(f"cannot write the known-hosts file {path}: {exc.strerror or exc}") from None


def _rewrite(path: Path, lines: list[str]) -> None:
    # A symlinked known_hosts (dotfile managers) keeps its link: the file it points at is replaced.
    target = path.resolve()
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    try:
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write("".join(f"{line}\n" for line in lines))
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise SSHError(f"cannot write the known-hosts file {path}: {exc.strerror or exc}") from None


# -- pinning at birth ------------------------------------------------------------

_OWNED = {
    "ssh_keys": "user_data sets ssh_keys (host keys) itself: poseidon pins the host key of the droplets it"
    " creates; remove ssh_keys from user_data",
}


def pinned_user_data(extra_user_data: str | None = None) -> tuple[str, str]:
    """Make a droplet's host key; return ``(user_data, public_key_line)``.

    The user data is cloud-config that installs a fresh ed25519 host key
    (``ssh_keys``), removes the image's keys (``ssh_deletekeys``) and makes no
    others (``ssh_genkeytypes: []``), so the pinned key is the only one the
    droplet can offer. ``extra_user_data``, the playbook's own, is kept
    (:func:`poseidon.cloudinit.join`; its own ``ssh_deletekeys`` and
    ``ssh_genkeytypes`` win).

    Raises :class:`~poseidon.errors.UsageError` when the user data installs host keys itself
    (``ssh_keys``) or is in no format cloud-init knows. Send the user data to
    the API only: it holds the private key.
    """
    private, public = _new_ed25519()
    ours: dict[str, Any] = {
        # The image's keys are the same on every droplet made from it.
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": private, "ed25519_public": public},
    }
    return cloudinit.join(ours, extra_user_data, _OWNED), public


def _new_ed25519() -> tuple[str, str]:
    """A fresh ed25519 key pair: the private key in OpenSSH's format, the public key line. Only in memory."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()
