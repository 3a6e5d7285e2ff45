"""Power, as a machine's acts: what a power cut ends, found in ``/proc``.

A sandbox droplet is a home directory and a loopback address served by a
shared sshd. Cutting its power ends the connections to its address and every
process whose ``HOME`` is its home (:func:`cut`); a hung droplet is one whose
connections' sshd processes are stopped (:func:`holding` finds them). The same
scans find a sandbox's sshds and whether a block of addresses is in use.

Linux only (``/proc/net/tcp``, ``/proc/PID/environ``, ``/proc/PID/fd``).
Imports only :mod:`poseidon.errors`.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from poseidon.errors import SandboxError

__all__ = ["bound_in", "connections_to", "cut", "end_droplet_processes", "holding", "kill", "servers_of", "with_home"]


def bound_in(network: str) -> bool:
    """Whether a TCP socket (listening or connected) has a local address in ``network``.* (/proc/net/tcp)."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    prefix = network + "."
    for line in lines:
        local = line.split()[1].split(":")[0]
        # The kernel prints the address as the hex of its 32 bits read in this machine's byte order.
        if socket.inet_ntoa(struct.pack("=I", int(local, 16))).startswith(prefix):
            return True
    return False


def servers_of(folder: Path) -> set[int]:
    """This user's sshds started with this sandbox's configuration (``-f <folder>/etc/sshd_config-N``)."""
    config = b"-f\0" + str(folder / "etc").encode() + b"/sshd_config"
    retitled = b" -f " + str(folder / "etc").encode() + b"/sshd_config"  # sshd rewrites its argv as one title
    found = set()
    for pid in _pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if os.stat(f"/proc/{pid}").st_uid != os.getuid():
                continue
        except OSError:
            continue
        if b"sshd" in cmdline and (config in cmdline or retitled in cmdline):
            found.add(pid)
    return found


def end_droplet_processes(hosts: Path) -> None:
    """End what steps left running (nohup): every process whose HOME is a droplet's home."""
    prefix = str(hosts).encode() + b"/"
    kill(with_home(lambda value: value.startswith(prefix)))


def with_home(match: Callable[[bytes], bool]) -> set[int]:
    """The processes whose HOME matches: a droplet's processes, found by the home the login gave them."""
    found = set()
    for pid in _pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if any(v.startswith(b"HOME=") and match(v[5:]) for v in environ.split(b"\0")):
            found.add(pid)
    return found


def cut(address: str, port: int, home: Path, listeners: set[int], passes: int = 50) -> None:
    """End the connections to ``address`` and every process of the droplet whose home is ``home``.

    The connections stop first, so that no output of a process dying after them
    reaches a client; every one is stopped before any is killed; again, while a
    process forked in between is left.
    """
    wanted = str(home).encode()
    for _ in range(passes):
        processes = with_home(lambda value: value == wanted)
        connections = connections_to(address, port) - listeners
        if not processes and not connections:
            return
        kill([*connections, *processes])
        time.sleep(0.02)
    raise SandboxError(f"the processes of the droplet at {address} did not end")


def connections_to(address: str, port: int) -> set[int]:
    """The processes holding a TCP socket whose local end is ``address:port`` (the listener too)."""
    return holding(_sockets_to(address, port))


def _sockets_to(address: str, port: int) -> set[str]:
    """The inodes of the TCP sockets whose local end is ``address:port`` (/proc/net/tcp)."""
    # The kernel prints the address as the hex of its 32 bits read in this machine's byte order.
    local = f"{struct.unpack('=I', socket.inet_aton(address))[0]:08X}:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {fields[9] for fields in (line.split() for line in lines) if fields[1] == local}


def holding(inodes: set[str]) -> set[int]:
    """The processes that hold one of these sockets open."""
    if not inodes:
        return set()
    links = {f"socket:[{inode}]" for inode in inodes}
    found = set()
    for pid in _pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in links:
                    found.add(pid)
                    break
            except OSError:
                continue
    return found


def kill(pids: Iterable[int]) -> None:
    """SIGKILL ``pids`` as a power cut would: all stopped first, so none runs on while the others die
    (a shell whose ``sleep`` was killed first would run the next command of its script)."""
    pids = list(pids)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass


def _pids() -> list[int]:
    own = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != own]
