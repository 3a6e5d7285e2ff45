"""Sandbox droplets: OpenSSH servers, one loopback address per droplet.

``sshd`` listens on 127.A.B.2, 127.A.B.3, … on a port of its own; one
``sshd`` serves at most 16 addresses (OpenSSH's MAX_LISTEN_SOCKS), so a
larger farm runs one per 16, all on the same port and with the same keys.
Every login runs a forced command that picks the droplet from the address
the client connected to (``$SSH_CONNECTION``), gives it its own home
directory, temporary folder and dpkg locks, and a ``PATH`` whose shims keep the host safe (``apt-get`` only
simulates, ``sudo`` runs as the sandbox's user), then runs the requested
command with a non-login ``bash -c``.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from poseidon import files
from poseidon.errors import SandboxError

__all__ = ["SSHFarm"]

# Shell text of the shims. Each value interpolated by Python goes through shlex.quote.
_FORCED_COMMAND = """#!/bin/sh
# The address the client connected to names the droplet: $SSH_CONNECTION is
# "client_ip client_port server_ip server_port".
set -- $SSH_CONNECTION
home={hosts}/"$3" system={system}/"$3"
[ -d "$home" ] || {{ echo "sandbox: no droplet listens on $3" >&2; exit 255; }}
export HOME="$home" SHELL=/bin/bash
# Its own /tmp and dpkg lock folder (steps.readiness reads POSEIDON_DPKG_DIR): what a step
# leaves in a temporary file, or a lock it waits for, is this droplet's, never this machine's.
export TMPDIR="$system/tmp" POSEIDON_DPKG_DIR="$system/dpkg"
export PATH={shims}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Droplets share one pip download cache so that rebuilding a sandbox is quick.
export PIP_CACHE_DIR={pip_cache} PIP_DISABLE_PIP_VERSION_CHECK=1
# pip as it is set up where the sandbox started (index, proxy, find-links): it works there, so it works here.
{pip_settings}
cd "$home" || exit 255
if [ -n "${{SSH_ORIGINAL_COMMAND-}}" ]; then
    exec /bin/bash -c "$SSH_ORIGINAL_COMMAND"
fi
exec /bin/bash -i
"""

_APT_GET = """#!/bin/sh
# Sandbox droplets are this machine: apt-get only simulates (-s), so no step
# changes the host's packages; 'update' is skipped for the same reason.
for arg in "$@"; do
    if [ "$arg" = update ]; then echo "sandbox: apt-get update skipped"; exit 0; fi
done
exec /usr/bin/apt-get -s "$@"
"""

_SUDO = """#!/bin/sh
# A sandbox droplet's only user is the one running the sandbox: sudo's options
# are accepted and the command runs as that user.
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; break ;;
        -u|-g|-p|-C|-h|-D|-U) shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
exec "$@"
"""


def _pip_settings(environ: Mapping[str, str]) -> str:
    """``export PIP_…=…`` lines for the pip settings in ``environ`` (the cache is the sandbox's own)."""
    own = ("PIP_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK")
    names = sorted(n for n in environ if n.startswith("PIP_") and n not in own and re.fullmatch(r"PIP_[A-Z0-9_]+", n))
    return "".join(f"export {name}={shlex.quote(environ[name])}\n" for name in names)


def free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    path.chmod(mode)


def keygen(path: Path, comment: str) -> str:
    """Create an ed25519 key pair without a passphrase, unless one is there; return the public key line."""
    if path.exists() and path.with_suffix(".pub").exists():
        return path.with_suffix(".pub").read_text().strip()
    try:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
    except FileNotFoundError:
        raise SandboxError(
            "the sandbox needs ssh-keygen: install OpenSSH (Debian: apt-get install openssh-client)"
        ) from None
    except subprocess.CalledProcessError as exc:
        raise SandboxError(f"ssh-keygen failed: {exc.stderr.decode(errors='replace').strip()}") from None
    return path.with_suffix(".pub").read_text().strip()


def find_sshd() -> str:
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SandboxError("the sandbox needs OpenSSH's server: install it (Debian: apt-get install openssh-server)")


#: Seconds sshd may take to set up (listen, then catch SIGHUP and write its pid file) at a start or
#: a reload; a reload that finds one still restarting from the last waits as long, then replaces it.
SETUP_PATIENCE = 10.0

#: OpenSSH's MAX_LISTEN_SOCKS: the most addresses one sshd listens on.
ADDRESSES_PER_SSHD = 16


class SSHFarm:
    """The ``sshd`` servers that serve every sandbox droplet on its own loopback address."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.etc = root / "etc"
        self.hosts = root / "hosts"
        #: Per droplet address, its stand-ins for system folders: ``tmp`` (its TMPDIR) and ``dpkg`` (its dpkg locks).
        self.system = root / "system"
        self.shims = root / "shims"
        # The account sshd will log in, whatever $USER says.
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.port = 0
        self.addresses: list[str] = []
        #: Addresses whose droplet is powered off: no sshd listens on them.
        self.off: set[str] = set()
        self.key_filename = self.etc / "id_ed25519"
        self.known_hosts = self.etc / "known_hosts"
        #: Per group of addresses (see _groups), its running sshd and the addresses it listens on;
        #: a group whose every droplet is off has none.
        self._servers: dict[int, tuple[subprocess.Popen[bytes], list[str]]] = {}
        self.running = False
        self._host_key_line = ""

    # -- preparation ---------------------------------------------------------

    def prepare(self, pip_cache: Path) -> None:
        for folder in (self.etc, self.hosts, self.system, self.shims):
            folder.mkdir(parents=True, exist_ok=True)
        self._host_key_line = keygen(self.etc / "ssh_host_ed25519_key", "poseidon-sandbox-host")
        client_key = keygen(self.key_filename, "poseidon-sandbox-client")
        wrapper = self.etc / "droplet-shell"
        _write(
            wrapper,
            _FORCED_COMMAND.format(
                hosts=shlex.quote(str(self.hosts)),
                system=shlex.quote(str(self.system)),
                shims=shlex.quote(str(self.shims)),
                pip_cache=shlex.quote(str(pip_cache)),
                pip_settings=_pip_settings(os.environ),
            ),
            0o700,  # an index URL may hold a password
        )
        # sshd runs the forced command with the user's shell: quote the path for it.
        command = shlex.quote(str(wrapper)).replace('"', '\\"')
        forced = f'command="{command}",no-port-forwarding,no-agent-forwarding,no-X11-forwarding'
        _write(self.etc / "authorized_keys", f"{forced} {client_key}\n", 0o600)
        _write(self.shims / "apt-get", _APT_GET, 0o755)
        _write(self.shims / "sudo", _SUDO, 0o755)

    def add_host(self, address: str) -> Path:
        """Give the droplet at ``address`` a home; return it."""
        home = self.hosts / address
        home.mkdir(parents=True, exist_ok=True)
        system = self.system / address
        (system / "tmp").mkdir(parents=True, exist_ok=True)
        (system / "dpkg").mkdir(parents=True, exist_ok=True)
        for lock in ("lock-frontend", "lock"):  # as dpkg has them: empty files that apt and dpkg lock (fcntl)
            (system / "dpkg" / lock).touch()
        self.addresses.append(address)
        return home

    def home(self, address: str) -> Path:
        """The home of the droplet at ``address``."""
        return self.hosts / address

    def forget_host(self, address: str) -> None:
        """The droplet at ``address`` was deleted (and is off): its files go."""
        files.remove_tree(self.hosts / address)
        files.remove_tree(self.system / address)

    def remove_host(self, address: str) -> None:
        """Forget the droplet at ``address`` and its files (the next :meth:`reload` stops listening there)."""
        self.addresses.remove(address)
        self.off.discard(address)
        files.remove_tree(self.hosts / address)
        files.remove_tree(self.system / address)

    # -- life cycle ----------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        """The process ids of the running sshd servers (their children are the droplets' sessions)."""
        return [process.pid for process, _ in self._servers.values()]

    def _groups(self) -> list[list[str]]:
        """The addresses each sshd serves, in order."""
        n = ADDRESSES_PER_SSHD
        return [self.addresses[i : i + n] for i in range(0, len(self.addresses), n)]

    def _listening(self, group: list[str]) -> list[str]:
        """The addresses of ``group`` its sshd listens on: those of droplets that are on."""
        return [address for address in group if address not in self.off]

    def _config(self, index: int, addresses: list[str]) -> str:
        listen = "\n".join(f"ListenAddress {a}:{self.port}" for a in addresses)
        return f"""\
{listen}
HostKey "{self.etc / "ssh_host_ed25519_key"}"
PidFile "{self._pid_file(index)}"
AuthorizedKeysFile "{self.etc / "authorized_keys"}"
AllowUsers {self.user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
# The sandbox lives under /tmp, which is world-writable: StrictModes would refuse its keys.
StrictModes no
# Many droplets log in at once through one server.
MaxStartups 200:30:400
MaxSessions 100
# bash sources ~/.bashrc when it believes sshd started it as a top-level shell;
# a raised SHLVL skips that (about 90 ms per command on some machines).
SetEnv SHLVL=3
PrintMotd no
PrintLastLog no
UseDNS no
LogLevel ERROR
"""

    def _pid_file(self, index: int) -> Path:
        return self.root / f"sshd-{index}.pid"

    def start(self, attempts: int = 3) -> None:
        """Start serving; with no droplet yet, only choose the port (the first droplet created starts an sshd)."""
        find_sshd()  # no server installed: say so now, not at the first droplet
        for attempt in range(attempts):
            # The port is chosen free, then bound by sshd: another program may take
            # it in between, on any of the addresses. Then choose again.
            self.port = free_port(self.addresses[0] if self.addresses else "127.0.0.1")
            try:
                self.running = True
                for index, group in enumerate(self._groups()):
                    self._start_sshd(index, group)
                break
            except SandboxError:
                self.stop()
                if attempt == attempts - 1:
                    raise
        self._write_known_hosts()

    def _start_sshd(self, index: int, group: list[str]) -> None:
        addresses = self._listening(group)
        if not addresses:
            return  # every droplet of the group is off; without a ListenAddress sshd would take them all
        sshd = find_sshd()
        config = self.etc / f"sshd_config-{index}"
        _write(config, self._config(index, addresses), 0o600)
        if os.geteuid() == 0:
            # sshd's privilege separation needs this directory when started as root.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self._pid_file(index).unlink(missing_ok=True)
        with open(self.root / "sshd.log", "ab") as log:
            process = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._servers[index] = (process, addresses)
        self._wait_until_serving(process, index, addresses)

    def reload(self) -> None:
        """Listen as the droplets now are. An sshd whose addresses changed (a droplet added,
        powered off or on) gets its config rewritten and a SIGHUP (it re-executes itself);
        one whose droplets are all off stops; a group without one (new, or back on) gets one.
        Sessions already open stay."""
        if not self.running:
            raise SandboxError("sshd is not running")
        groups = self._groups()
        for index in [index for index in self._servers if index >= len(groups)]:
            # Its droplets were forgotten (a create undone): nothing left to serve.
            process, before = self._servers.pop(index)
            _end(process)
        for index, group in enumerate(groups):
            addresses = self._listening(group)
            if index not in self._servers:
                self._start_sshd(index, group)
                continue
            process, before = self._servers[index]
            if addresses == before:  # an unchanged server keeps listening undisturbed
                continue
            if addresses and not self._pid_written(index, process, timeout=SETUP_PATIENCE):
                # Still restarting from a reload that timed out (it would ignore this one's signal),
                # or gone: a fresh sshd reads the config as it is now.
                del self._servers[index]
                _end(process)
                self._start_sshd(index, group)
                continue
            if not addresses:
                del self._servers[index]
                _end(process)
            else:
                _write(self.etc / f"sshd_config-{index}", self._config(index, addresses), 0o600)
                # sshd removes its pid file, re-executes itself ignoring SIGHUP, listens, catches
                # SIGHUP again and only then writes the file: the next reload must wait for it,
                # or its signal is lost. The file goes first, in case this signal is not taken yet.
                self._pid_file(index).unlink(missing_ok=True)
                process.send_signal(signal.SIGHUP)
                self._servers[index] = (process, addresses)
            # Refused first: until the re-executed sshd has closed its old sockets,
            # the addresses it keeps answer on them and prove nothing.
            self._wait_until_refused([a for a in before if a not in addresses])
            if addresses:
                self._wait_until_serving(process, index, addresses)
        self._write_known_hosts()

    def _write_known_hosts(self) -> None:
        """The sandbox's addresses with its host key; lines others wrote (pinned keys, aliases) stay."""
        ours = {f"[{address}]:{self.port}" for address in self.addresses}
        kept = []
        if self.known_hosts.exists():
            kept = [
                line
                for line in self.known_hosts.read_text().splitlines()
                if not set(line.split(" ", 1)[0].split(",")) & ours
            ]
        lines = kept + [f"[{address}]:{self.port} {self._host_key_line}" for address in self.addresses]
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def _wait_until_serving(self, process: subprocess.Popen[bytes], index: int, addresses: list[str]) -> None:
        """Wait until the sshd ``process`` has written its pid file (it then takes SIGHUP)
        and answers on ``addresses``."""
        timeout = SETUP_PATIENCE
        deadline = time.monotonic() + timeout
        pending = list(addresses)
        if not self._pid_written(index, process, timeout):
            self._check_alive(process)
            raise SandboxError(
                f"sshd (pid {process.pid}) did not write its pid file {self._pid_file(index)} within {timeout:.0f} s"
                f" (it takes SIGHUP only then): {self._log_tail() or 'sshd.log says nothing'}"
            )
        while pending:
            self._check_alive(process)
            try:
                with socket.create_connection((pending[0], self.port), timeout=0.5):
                    pending.pop(0)
            except OSError:
                if time.monotonic() > deadline:
                    raise SandboxError(
                        f"sshd did not listen on {pending[0]}:{self.port} within {timeout:.0f} s"
                    ) from None
                time.sleep(0.05)

    def _pid_written(self, index: int, process: subprocess.Popen[bytes], timeout: float) -> bool:
        """Wait until ``process`` has written its pid file (it has set up, and takes SIGHUP); say whether it did."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._pid_file(index).read_text().strip() == str(process.pid):
                    return True
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.root / "sshd.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def _check_alive(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is not None:
            raise SandboxError(f"sshd exited at start ({process.returncode}): {self._log_tail(20)}")

    def _wait_until_refused(self, addresses: list[str], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for address in addresses:
            while True:
                try:
                    with socket.create_connection((address, self.port), timeout=0.5):
                        pass
                except ConnectionRefusedError:
                    break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SandboxError(f"sshd still listens on {address}:{self.port} after {timeout:.0f} s")
                time.sleep(0.05)

    def stop(self) -> None:
        processes = [process for process, _ in self._servers.values()]
        self._servers = {}
        self.running = False
        for process in processes:
            process.terminate()
        for process in processes:
            _end(process)


def _end(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process`` (again, if it was already told) and wait for it; kill it after five seconds."""
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
