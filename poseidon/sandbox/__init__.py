"""A local stand-in for DigitalOcean: an API emulator and OpenSSH droplets.

::

    with Sandbox(["web-1", "web-2"]) as sandbox:
        os.environ.update(sandbox.environ)
        client = poseidon.api.connect()      # talks to the emulator
        ssh = client.droplets.by_name("web-1").connect()   # real sshd on 127.A.B.2

Every droplet is a real SSH endpoint on a loopback address of its own
(127.A.B.2, .3, …: a block of 127.0.0.0/8 per sandbox) with a home directory
of its own; ``apt-get`` only simulates there and GitHub
shorthand repositories resolve to local bare repositories (``repos=``).
A droplet powered off (``power_off``, or the API's ``power_off`` and
``shutdown`` actions) stops as a power cut would: its SSH port refuses, its
connections drop and its processes end; its files stay. ``reboot`` (the
API's ``reboot`` and ``power_cycle``) brings it back after ``downtime``.
The sandbox imports nothing from poseidon's core but its errors.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from poseidon import files
from poseidon.errors import SandboxError, UsageError
from poseidon.sandbox import machines, power
from poseidon.sandbox.authority import Authority, authority
from poseidon.sandbox.emulator import Emulator, public_ipv4
from poseidon.sandbox.machines import MachineFarm
from poseidon.sandbox.repos import build_bare_repo, github_redirect
from poseidon.sandbox.sshd import SSHFarm

__all__ = ["Sandbox", "SandboxError"]

# Droplets take addresses .2 … .254 of the sandbox's block of 127.0.0.0/8.
_FIRST_HOST = 2
_LAST_HOST = 254


def _pip_cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "poseidon" / "sandbox-pip"


class Sandbox:
    """The API emulator and the SSH droplets, started together, stopped together.

    ``droplets`` lists names, or mappings with ``name`` and ``tags``;
    ``repos`` maps GitHub shorthands (``owner/name``) to folders whose files
    become that repository's ``main`` branch; ``shared`` lists folders of this
    machine every droplet reads at the same path (a light droplet reads this
    machine's files anyway; a machine gets each bound in, read-only).
    """

    def __init__(
        self,
        droplets: Iterable[str | Mapping[str, Any]] = ("test",),
        *,
        repos: Mapping[str, str | os.PathLike[str]] | None = None,
        shared: Iterable[str | os.PathLike[str]] = (),
        root: str | os.PathLike[str] | None = None,
        keep: bool = False,
        machines: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self._droplets = [{"name": d} if isinstance(d, str) else dict(d) for d in droplets]
        if len(self._droplets) > _LAST_HOST - _FIRST_HOST + 1:
            raise SandboxError(f"the sandbox serves at most {_LAST_HOST - _FIRST_HOST + 1} droplets")
        if keep and root is None:
            raise SandboxError("a sandbox kept between runs needs a root folder")
        self._repos = {k: Path(v) for k, v in (repos or {}).items()}
        self._shared = [Path(folder).resolve() for folder in shared]
        self._own_root = root is None
        self._given_root = Path(root).resolve() if root else None
        self.keep = keep
        #: Droplets are machines (Debian booted by systemd-nspawn), not homes on this machine.
        self.machines = machines
        #: Told of slow preparations (the machines' base system, built once).
        self.progress = progress
        self.root = Path()
        #: The first three bytes of the droplets' addresses (``127.A.B``): chosen at start, this sandbox's alone.
        self.network = ""
        #: The descriptor whose lock holds ``network`` while the sandbox runs (:func:`_claim_network`).
        self._block_lock: int | None = None
        self.token = "sandbox-" + secrets.token_hex(16)
        self.emulator = Emulator(
            self.token,
            on_create=self._droplets_created,
            on_power=self._power_action,
            on_delete=self._droplet_deleted,
            on_change=self._save_account,
        )
        self.farm: SSHFarm | MachineFarm | None = None
        self._gitconfig = ""
        self._next_host = _FIRST_HOST
        # Reentrant: a hook that holds it saves the account, which takes it too.
        self._lock = threading.RLock()
        self.api_url = ""
        self.authority: Authority | None = None
        self._started = False
        #: Seconds a droplet rebooted through the API stays unreachable.
        self.reboot_downtime = 1.0
        #: Per address of a droplet being rebooted, the timer that powers it on again.
        self._boots: dict[str, threading.Timer] = {}
        #: Every reboot timer started, for :meth:`wait_for_reboots`.
        self._timers: list[threading.Timer] = []
        #: While :meth:`reboots_held`: the addresses whose reboot's downtime ended meanwhile.
        self._held: list[str] | None = None
        #: Each droplet's name by its address, in the order they were made: names may repeat, addresses do not.
        self._named: dict[str, str] = {}

    # -- life cycle ----------------------------------------------------------

    def start(self) -> Sandbox:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if self._given_root is None:
            self.root = Path(tempfile.mkdtemp(prefix="poseidon-sandbox-"))
        else:
            self.root = self._given_root
            self.root.mkdir(parents=True, exist_ok=True)
            self.root.chmod(0o700)
        self._check_kind()
        self.network, self._block_lock = _claim_network(self._given_root, self.root / "hosts")
        farm: SSHFarm | MachineFarm
        if self.machines:
            # pip as where the sandbox starts: its PIP_* settings, as the light sandbox's droplets have them.
            farm = MachineFarm(
                self.root, machines.cache_folder(), binds=[self.root / "repos", *self._shared], environ=os.environ
            )
            farm.progress = self.progress
        else:
            farm = SSHFarm(self.root)
        self.farm = farm
        pip_cache = _pip_cache()
        pip_cache.mkdir(parents=True, exist_ok=True)
        farm.prepare(pip_cache)
        repos = self.root / "repos"
        for shorthand, source in self._repos.items():
            build_bare_repo(source, repos / f"{shorthand}.git")
        self._gitconfig = github_redirect(repos)
        #: The sandbox's certificate authority: the emulator serves HTTPS that clients can verify.
        self.authority = authority(self.root / "tls")
        self.emulator.tls = self.authority.server_context()
        self.api_url = self.emulator.start()
        account = self.root / "account.json"
        if self.keep and account.exists():
            try:
                self.emulator.restore_account(_read_kept(account))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise SandboxError(f"{account} is damaged ({exc!r}): 'poseidon sandbox reset' starts afresh") from None
        known = self._load_droplets()
        self._next_host = max([_FIRST_HOST - 1, *(int(k.get("host", 0)) for k in known)]) + 1
        for spec in known + [d for d in self._droplets if d["name"] not in {k["name"] for k in known}]:
            address = self._add_home(spec["name"], host=spec.get("host"))
            kind = {k: spec[k] for k in ("region", "size", "image") if spec.get(k)}
            status = "off" if spec.get("status") == "off" else "active"
            if status == "off":
                farm.off.add(address)
            self.emulator.add_droplet(
                spec["name"],
                address,
                tags=tuple(spec.get("tags", ())),
                droplet_id=spec.get("id"),
                status=status,
                **kind,
            )
        farm.start()
        self._started = True
        self._save_account()
        if isinstance(farm, MachineFarm):
            watcher = threading.Thread(target=self._watch_machines, name="sandbox machines", daemon=True)
            watcher.start()

    #: Seconds between two looks at whether a machine went off by itself.
    WATCH_INTERVAL = 0.5

    def _watch_machines(self) -> None:
        """A machine that went off from inside (``poweroff``, ``shutdown -h``) is off for the API
        too, and stays off until a power action: as a droplet does."""
        while True:
            time.sleep(self.WATCH_INTERVAL)
            with self._lock:
                farm = self.farm
                if not self._started or not isinstance(farm, MachineFarm):
                    return
                for address in farm.went_off():
                    farm.off.add(address)
                    if self.emulator.powered_off(address):
                        self._save_account()

    def _check_kind(self) -> None:
        """A kept sandbox is of one kind, light or machines, for good: its files say which."""
        if not self.keep:
            return
        kind = "machines" if self.machines else "light"
        kept = self.kept_kind(self.root)
        if kept and kept != kind:
            raise UsageError(f"the sandbox kept in {self.root} has {kept} droplets, not {kind}: reset it first")
        (self.root / "kind").write_text(f"{kind}\n")

    @staticmethod
    def kept_kind(root: str | os.PathLike[str]) -> str | None:
        """``light`` or ``machines``: the kind of the sandbox kept in ``root``; ``None`` when none is."""
        folder = Path(root)
        try:
            return (folder / "kind").read_text().strip() or None
        except OSError:
            return "light" if (folder / "hosts").is_dir() else None

    def _add_home(self, name: str, host: int | None = None) -> str:
        """Give the droplet ``name`` its loopback address (``.host``, else the next one) and a home;
        return the address."""
        assert self.farm is not None
        if host is None:
            host, self._next_host = self._next_host, self._next_host + 1
        address = f"{self.network}.{host}"
        if isinstance(self.farm, MachineFarm):
            # Written by the machine's start, never through a link the machine made.
            self.farm.add_host(address, files={"root/.gitconfig": self._gitconfig})
            self.farm.name(address, name)
        else:
            home = self.farm.add_host(address)
            (home / ".gitconfig").write_text(self._gitconfig)
        self._named[address] = name
        return address

    @property
    def homes(self) -> dict[str, Path]:
        """Each droplet's home by its name; of two droplets of one name (the API allows it), the later one's."""
        farm = self.farm
        if farm is None:
            return {name: self.root / "hosts" / address for address, name in self._named.items()}
        return {name: farm.home(address) for address, name in self._named.items()}

    # A kept sandbox remembers its droplets (name, id, address, tags, size,
    # region, image) and its domains and records, so that the emulator shows
    # the same account at the next start.

    def _load_droplets(self) -> list[dict[str, Any]]:
        path = self.root / "droplets.json"
        if not self.keep or not path.exists():
            return []
        return list(_read_kept(path))

    def _save_droplets(self, known: list[dict[str, Any]]) -> None:
        if self.keep:
            (self.root / "droplets.json").write_text(json.dumps(known, indent=1))

    def _save_account(self) -> None:
        """Write down the account as the API has it now, after every change (a command killed
        mid-run loses nothing): the droplets the sandbox serves, by address; domains; records."""
        if not self.keep:
            return
        with self._lock:
            droplets = [
                {**_kept(droplet), "host": _host(address)}
                for droplet in self.emulator.droplets()
                if (address := public_ipv4(droplet)) in self._named
            ]
            self._save_droplets(droplets)
            (self.root / "account.json").write_text(json.dumps(self.emulator.account_state(), indent=1))

    def _droplets_created(self, names: list[str]) -> list[str | None]:
        """The emulator is creating droplets through the API: make them real SSH endpoints too,
        all of them or, when sshd cannot serve them, none (the API then answers 500)."""
        with self._lock:
            if self.farm is None or not self._started:
                return [None] * len(names)
            first = self._next_host
            # Past the last host, the emulator gives documentation addresses, unreachable.
            served = names[: max(0, _LAST_HOST + 1 - first)]
            added = [self._add_home(name) for name in served]
            try:
                self.farm.reload()
            except Exception:  # sshd too slow, a fork refused, a full disk: undone all the same
                self._undo_homes(added, first)
                raise
            # The account is saved once the emulator has the droplets (on_change).
            return [*added, *[None] * (len(names) - len(added))]

    def _undo_homes(self, addresses: list[str], first_host: int) -> None:
        """Forget droplets a failed create set up, and stop listening for them (as far as sshd lets us)."""
        assert self.farm is not None
        for address in addresses:
            del self._named[address]
            self.farm.remove_host(address)
        self._next_host = first_host
        try:
            self.farm.reload()
        except Exception:  # noqa: BLE001 - the create's own error is the one to report
            pass

    def _droplet_deleted(self, name: str, address: str | None) -> None:
        """The API deleted a droplet: it stops for good, its files go, the sandbox forgets it."""
        with self._lock:
            if address not in self._named or self.farm is None or not self._started:
                return  # a droplet the sandbox had no address for
            self._power_off(address)  # a reboot under way is cancelled with it
            del self._named[address]
            self.farm.forget_host(address)

    # -- power -------------------------------------------------------------------

    def power_off(self, name: str) -> None:
        """Stop the droplet ``name`` as a power cut would: its SSH port refuses
        connections, its connections drop, its processes end (those steps left
        running too). Its files stay."""
        self._power_off(self.address(name))

    def power_on(self, name: str) -> None:
        """Start the droplet ``name`` again: its SSH port answers."""
        self._power_on(self.address(name))

    def is_on(self, name: str) -> bool:
        """Whether the droplet ``name`` is on: its SSH port answers."""
        return self.address(name) not in self._running.off

    def reboot(self, name: str, downtime: float = 1.0) -> None:
        """Power the droplet ``name`` off now and on again ``downtime`` seconds later."""
        self._reboot(self.address(name), downtime)

    def freeze(self, name: str) -> set[int]:
        """Make the droplet ``name`` stop answering on its open SSH connections, as a hung
        machine would: the sshd processes serving them are stopped (SIGSTOP), so the client's
        bytes are taken by the kernel and nothing comes back. Returns them, for :meth:`thaw`."""
        farm = self._running
        address = self.address(name)
        frozen = power.connections_to(address, farm.port) - set(farm.pids)
        if not frozen:
            raise SandboxError(f"no SSH connection to {name} to freeze")
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        return frozen

    @staticmethod
    def thaw(frozen: set[int]) -> None:
        """Let the processes :meth:`freeze` stopped run again."""
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass

    # The API acts on droplets by id, and names may repeat: inside, a droplet is its address.

    def _power_off(self, address: str) -> None:
        with self._lock:
            self._cancel_boot(address)
            farm = self._running
            farm.off.add(address)
            farm.reload()
            power.cut(address, farm.port, farm.hosts / address, set(farm.pids))

    def _power_on(self, address: str) -> None:
        with self._lock:
            self._cancel_boot(address)
            if self.farm is None or not self._started or address not in self._named:
                return  # stopped while a reboot was under way, or deleted
            self.farm.off.discard(address)
            self.farm.reload()

    def _reboot(self, address: str, downtime: float) -> None:
        with self._lock:
            self._power_off(address)
            boot = threading.Timer(downtime, self._boot, [address])
            boot.daemon = True
            self._boots[address] = boot
            self._timers = [timer for timer in self._timers if timer.is_alive()] + [boot]
            boot.start()

    def _boot(self, address: str) -> None:
        """A reboot's timer: power on, unless a later power action or a delete took its place."""
        with self._lock:
            if self._boots.get(address) is not threading.current_thread():
                return
            if self._held is not None:
                self._held.append(address)  # powered on when the hold ends, unless overridden meanwhile
            else:
                self._power_on(address)

    @contextmanager
    def reboots_held(self) -> Iterator[None]:
        """Within the block, a droplet rebooting stays off past its downtime; it comes back as the
        block ends (unless a power action or a delete took its place): a test sees it down, surely."""
        with self._lock:
            self._held = []
        try:
            yield
        finally:
            with self._lock:
                held, self._held = self._held or [], None
                for address in held:
                    if address in self._boots:
                        self._power_on(address)

    def wait_for_reboots(self, timeout: float = 60.0) -> None:
        """Return once every reboot timer started so far has fired or been cancelled."""
        with self._lock:
            timers = list(self._timers)
        for timer in timers:
            timer.join(timeout)

    def _cancel_boot(self, address: str) -> None:
        """A power action overrides a reboot under way: its timer does nothing now. The caller holds the lock."""
        boot = self._boots.pop(address, None)
        if boot is not None:
            boot.cancel()

    def _power_action(self, address: str | None, kind: str) -> None:
        """The emulator accepted a power action: do it to the droplet's SSH endpoint too."""
        if address not in self._named or not self._started:
            return  # a droplet the sandbox had no address for, or a sandbox stopping
        assert address is not None
        if kind in ("power_off", "shutdown"):
            self._power_off(address)
        elif kind == "power_on":
            self._power_on(address)
        elif kind == "reboot" and isinstance(self.farm, MachineFarm):
            with self._lock:  # a machine reboots as a droplet does: its systemd shuts down and boots again
                self._cancel_boot(address)
                self.farm.reboot(address)
        else:  # reboot, power_cycle
            self._reboot(address, self.reboot_downtime)

    def stop(self) -> None:
        """Stop sshd and the emulator; unless the sandbox is kept, end the droplets' processes and remove the files."""
        with self._lock:  # a power action under way ends first; none starts after
            running, self._started = self._started, False
        with self._lock:
            boots, self._boots = list(self._boots.values()), {}
        for boot in boots:
            boot.cancel()
            if boot is not threading.current_thread():
                boot.join()
        if running:
            self._save_account()
        self.emulator.stop()
        if self.farm is not None:
            with self._lock:
                if isinstance(self.farm, MachineFarm):
                    self.farm.stop(leave_running=self.keep)  # a kept sandbox's droplets go on, as light ones' processes
                else:
                    self.farm.stop()
            if not self.keep:
                power.end_droplet_processes(self.farm.hosts)
                if self._own_root:
                    machines.unmount_under(self.root)  # never remove a folder with a machine mounted in it
                    files.remove_tree(self.root)
        self.farm = None
        self._started = False
        if self._block_lock is not None:
            # The block is free for another sandbox (a kept one's processes still guard it). The file goes
            # while the lock is held: whoever opened it before takes a lock on a file that is gone, and lets it go.
            _block_file(self.network).unlink(missing_ok=True)
            os.close(self._block_lock)
            self._block_lock = None

    @staticmethod
    def wipe(root: str | os.PathLike[str]) -> bool:
        """End a kept sandbox's processes and remove its folder; say whether there was one."""
        folder = Path(root).resolve()
        if not (folder / "hosts").is_dir():
            return False
        power.end_droplet_processes(folder / "hosts")
        power.kill(power.servers_of(folder))  # an sshd left listening by a command that was killed
        machines.unmount_under(folder)  # machines a killed command left running, cut and unmounted
        files.remove_tree(folder)
        return True

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what clients need ---------------------------------------------------

    @property
    def _running(self) -> SSHFarm | MachineFarm:
        if self.farm is None or not self._started:
            raise SandboxError("the sandbox is not running")
        return self.farm

    @property
    def ssh_port(self) -> int:
        return self._running.port

    @property
    def key_filename(self) -> str:
        return str(self._running.key_filename)

    @property
    def known_hosts(self) -> str:
        return str(self._running.known_hosts)

    @property
    def user(self) -> str:
        return self._running.user

    @property
    def environ(self) -> dict[str, str]:
        """The variables that make ``poseidon.api.connect()`` and ``droplet.connect()`` reach the sandbox,
        and other DigitalOcean clients trust its HTTPS: ``SSL_CERT_FILE`` and ``REQUESTS_CA_BUNDLE``
        name a bundle of this machine's authorities and the sandbox's, ``POSEIDON_SANDBOX_CA`` the
        sandbox's alone; ``POSEIDON_SANDBOX_HTTP_URL`` is the same API over plain HTTP."""
        assert self.authority is not None, "the sandbox is not started"
        return {
            "POSEIDON_API_URL": self.api_url,
            "POSEIDON_SANDBOX_HTTP_URL": self.emulator.http_url,
            "POSEIDON_SANDBOX_CA": str(self.authority.ca),
            "SSL_CERT_FILE": str(self.authority.bundle),
            "REQUESTS_CA_BUNDLE": str(self.authority.bundle),
            "DIGITALOCEAN_TOKEN": self.token,
            "POSEIDON_SSH_USER": self.user,
            "POSEIDON_SSH_PORT": str(self.ssh_port),
            "POSEIDON_SSH_KEY": self.key_filename,
            "POSEIDON_KNOWN_HOSTS": self.known_hosts,
            # One sshd serves every sandbox droplet with one host key: a key pinned at birth could not be served.
            "POSEIDON_PIN_HOST_KEYS": "0",
            # Machines have real users: a playbook's user: logs in as itself there.
            **({"POSEIDON_SANDBOX": "machines"} if self.machines else {}),
        }

    def home(self, name: str) -> Path:
        """The home directory of the droplet called ``name``."""
        return self.homes[name]

    def address(self, name: str) -> str:
        """The loopback address of the droplet called ``name`` (of two of one name, the later one's)."""
        found = [address for address, named in self._named.items() if named == name]
        if not found:
            raise KeyError(name)
        return found[-1]

    def tmpdir(self, name: str) -> Path:
        """The droplet ``name``'s temporary folder (its ``TMPDIR``, where ``mktemp`` creates files): its /tmp."""
        return self.root / "system" / self.address(name) / "tmp"

    def dpkg_dir(self, name: str) -> Path:
        """The folder of the droplet ``name``'s dpkg locks (``lock-frontend``, ``lock``): its /var/lib/dpkg.

        The readiness gate waits while a process holds one (fcntl, as apt takes them).
        """
        return self.root / "system" / self.address(name) / "dpkg"

    def pids(self, name: str) -> set[int]:
        """The processes of the droplet ``name`` now: those whose HOME is its home (every login's are)."""
        wanted = str(self.home(name)).encode()
        return power.with_home(lambda value: value == wanted)


def _host(address: str) -> int:
    """The last byte of a sandbox address: what a kept sandbox records it by."""
    return int(address.rsplit(".", 1)[1])


def _kept(droplet: dict[str, Any]) -> dict[str, Any]:
    """What a kept sandbox records of a droplet, to add it back alike at the next start."""
    return {
        "name": droplet["name"],
        "id": droplet["id"],
        "tags": list(droplet["tags"]),
        "size": droplet["size_slug"],
        "region": droplet["region"]["slug"],
        "image": (droplet.get("image") or {}).get("slug"),
        # Powered off through the API: off again at the next start (a droplet still new comes back on).
        "status": "off" if droplet["status"] == "off" else "active",
    }


def _read_kept(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise SandboxError(f"{path} is damaged ({exc}): 'poseidon sandbox reset' starts afresh") from None


#: Random blocks tried before a sandbox gives up finding a free one.
_BLOCK_TRIES = 64


def _random_block() -> tuple[int, int]:
    """``(A, B)`` of a block ``127.A.B`` chosen at random."""
    return secrets.randbelow(254) + 1, secrets.randbelow(254) + 1


def _claim_network(root: Path | None, hosts: Path) -> tuple[str, int]:
    """The first three bytes of this sandbox's loopback addresses, and the descriptor that holds them.

    All of 127.0.0.0/8 is this machine, so each sandbox takes a block of its
    own. A block is taken while a sandbox holds its lock (``flock`` on
    ``poseidon-sandbox-127.A.B.lock`` in the temporary folder, one file per
    block, for every user; the lock ends with the sandbox or its process) and
    while any TCP socket is bound in it (a kept sandbox that is not running
    leaves its droplets' processes listening there). A kept sandbox keeps the
    block its droplets' homes are on, and tries first the one derived from its
    folder; a sandbox without a folder tries blocks at random.
    """
    existing = sorted(path.name for path in hosts.iterdir()) if root is not None and hosts.is_dir() else []
    if existing:
        network = existing[0].rsplit(".", 1)[0]
        lock = _lock_block(network)
        if lock is None:
            raise SandboxError(
                f"another sandbox runs on {network}.*, the addresses of the droplets kept in {root}: stop it first"
            )
        return network, lock
    candidates: list[tuple[int, int]] = []
    if root is not None:
        digest = hashlib.sha256(str(root).encode()).digest()
        candidates.append((digest[0] % 254 + 1, digest[1] % 254 + 1))
    candidates += [_random_block() for _ in range(_BLOCK_TRIES)]
    for a, b in candidates:
        network = f"127.{a}.{b}"
        if power.bound_in(network):
            continue
        lock = _lock_block(network)
        if lock is None:
            continue
        if power.bound_in(network):  # something bound there between the two looks
            os.close(lock)
            continue
        return network, lock
    raise SandboxError(f"no free block of 127.0.0.0/8 for a sandbox after {len(candidates)} tries")


def _block_file(network: str) -> Path:
    """The lock file of the block ``network``, shared by every sandbox on this machine."""
    return Path(tempfile.gettempdir()) / f"poseidon-sandbox-{network}.lock"


def _lock_block(network: str) -> int | None:
    """Take the lock of the block ``network`` without waiting; ``None`` when another sandbox holds it."""
    path = _block_file(network)
    try:
        # Read-only is enough for flock, so another user's lock file serves as well as one's own.
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError:
        return None  # a file we may not open (a link, another user's in a protected folder): taken
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held = os.fstat(fd)
        now = os.stat(path, follow_symlinks=False)
    except OSError:  # held by another, or removed by the sandbox that just let it go
        os.close(fd)
        return None
    if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino):  # removed and made anew meanwhile
        os.close(fd)
        return None
    return fd
