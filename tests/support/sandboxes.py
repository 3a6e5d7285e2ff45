"""Pointing a test at a sandbox, and looking at what runs there."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from poseidon.sandbox import Sandbox, machines


@contextmanager
def pointed(droplets: list[Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A sandbox of these droplets for this test alone, with :func:`point_at` done."""
    with Sandbox(droplets) as sandbox:
        yield point_at(sandbox, monkeypatch)


def point_at(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """Make ``poseidon.api.connect()``, ``droplet.connect()`` and the CLI in this test reach ``sandbox``."""
    for key, value in sandbox.environ.items():
        monkeypatch.setenv(key, value)
    return sandbox


def machines_base() -> Path:
    """The machines' base system, built once into the user's cache folder. Where machines cannot
    run, the test is skipped with the reason; under CI, where all they need is installed, it fails."""
    reason = machines.unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"machines cannot run on this CI machine: {reason}")
        pytest.skip(reason)
    return machines.build_base(machines.cache_folder())


#: How long a test waits for an event before it fails: a safety net, not a guess at how long it takes.
PATIENCE = 60.0


def wait_for(what: str, event: Callable[[], bool], timeout: float = PATIENCE) -> None:
    """Return once ``event()`` holds (a marker file, a line printed, a process gone); fail the test
    naming ``what`` if it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not event():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(0.02)


def command_lines(pids: set[int]) -> list[str]:
    """The command lines of those of ``pids`` that still run (a zombie's is empty)."""
    found = []
    for pid in pids:
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue  # it ended
    return found


def runs_on(sandbox: Sandbox, names: Iterable[str], text: str) -> bool:
    """Whether a process of these droplets (and of no other sandbox) has ``text`` in its command line."""
    return any(text in line for name in names for line in command_lines(sandbox.pids(name)))


def end_once_seen(sandbox: Sandbox, name: str, seen: set[bytes], argv: bytes) -> None:
    """Once the watcher of :func:`command_lines_seen` has seen ``argv`` (NUL-separated, as in
    ``/proc/PID/cmdline``), TERM the droplet's processes running it: a command that waits for this
    is sure to have been seen running."""
    wait_for(f"the watcher to see {argv!r}", lambda: argv in set(seen))
    for pid in sandbox.pids(name):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == argv:
                os.kill(pid, signal.SIGTERM)
        except OSError:
            continue


def process_running(pid: int) -> bool:
    """Whether ``pid`` runs: alive and not a zombie (an init that reaps slowly keeps those)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # the name, in parentheses, may hold spaces


@contextmanager
def command_lines_seen() -> Iterator[set[bytes]]:
    """Every process's argv (``/proc/*/cmdline``, NUL-separated) seen while the block runs.

    A sandbox droplet is this machine: this is what ``ps -Aww -o args`` on it
    would have shown at some moment of the block.
    """
    seen: set[bytes] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    seen.add(cmdline.read_bytes())
                except OSError:
                    continue
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        stop.set()
        watcher.join()
