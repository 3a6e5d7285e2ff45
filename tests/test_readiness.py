"""The readiness gate before the first step: SSH answers, cloud-init finished, the dpkg lock free.

A sandbox droplet has dpkg locks of its own (``Sandbox.dpkg_dir``): the tests
hold those, never this machine's, and need no root.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from poseidon import executor, spec, steps, targets
from poseidon.results import RunResult, StepResult
from poseidon.sandbox import Sandbox
from poseidon.settings import Settings
from support.fakeclock import FakeClock
from support.sandboxes import PATIENCE, wait_for

#: How long a test waits for an event before it fails: a safety net, never a pace.


def apply(
    sandbox: Sandbox,
    text: str,
    progress: executor.Progress | None = None,
    settings: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[RunResult, list[tuple[str, str]]]:
    """Apply ``text`` on ``sandbox`` (its login pinned, ``settings`` changed) with these run ``options``."""
    notices: list[tuple[str, str]] = []
    result = executor.apply(
        spec.loads(textwrap.dedent(text)),
        settings=dataclasses.replace(Settings.from_environ(sandbox.environ), login_pinned=True, **(settings or {})),
        options=executor.RunOptions(**options),
        progress=progress,
        notice=lambda droplet, text: notices.append((droplet, text)),
    )
    return result, notices


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(["ready"]) as sandbox:
        yield sandbox


@pytest.fixture
def lock_holders() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The lock holders a test starts (:func:`hold`): each let go and waited for at the end, whatever happened."""
    holders: list[subprocess.Popen[bytes]] = []
    yield holders
    for holder in holders:
        holder.kill()
        holder.wait()


def hold(lock: Path, holders: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """A process that holds ``lock`` as apt does (fcntl) until its standard input closes."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.lockf(fd, fcntl.LOCK_EX);"
                " print('held', flush=True); sys.stdin.read()"
            ),
            str(lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    holders.append(holder)
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    return holder


def let_go(holder: subprocess.Popen[bytes]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.wait(timeout=PATIENCE) == 0


def copying_python3_stderr(sandbox: Sandbox, copy: Path) -> None:
    """Make the droplets' ``python3`` the real one whose standard error is copied to ``copy`` as it is written.

    The gate's lock wait is a python3 that says it waits before it waits: the
    copy is how a test sees that while the wait lasts.
    """
    real = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    assert real is not None
    shim = sandbox.root / "shims" / "python3"
    shim.write_text(
        textwrap.dedent(f"""\
        #!/bin/bash
        set -o pipefail
        exec 3>&1
        {real} "$@" 2>&1 1>&3 3>&- | tee -a {copy} 1>&2 3>&-
    """)
    )
    shim.chmod(0o755)


@pytest.mark.sandbox
def test_apt_waits_for_the_dpkg_lock_and_says_so(tmp_path: Path, lock_holders: list[subprocess.Popen[bytes]]) -> None:
    said = tmp_path / "python3-stderr"
    said.touch()
    ended: list[StepResult] = []
    with Sandbox(["locked"]) as sandbox:
        copying_python3_stderr(sandbox, said)
        holder = hold(sandbox.dpkg_dir("locked") / "lock-frontend", lock_holders)
        outcome: list[tuple[RunResult, list[tuple[str, str]]]] = []
        run = threading.Thread(
            target=lambda: outcome.append(
                apply(
                    sandbox,
                    "version: 1\ndroplets: [locked]\nsteps: [{apt: [git]}]\nreport: {ps: false, top: false}\n",
                    progress=lambda droplet, step: ended.append(step),
                )
            ),
        )
        run.start()
        try:
            wait_for(
                "the gate says it waits for the dpkg lock", lambda: "waiting for the dpkg lock" in said.read_text()
            )
            assert ended == []  # the step waits behind the gate
        finally:
            let_go(holder)
            run.join(timeout=PATIENCE)
    assert not run.is_alive()
    result, notices = outcome[0]
    droplet = result.droplets[0]
    assert droplet.error is None, droplet.error
    assert [s.status for s in droplet.steps] == ["ok"]  # it ran once the lock was let go
    assert ("locked", "waiting for the dpkg lock (another apt or dpkg run)") in notices


def test_the_dpkg_wait_is_bounded(tmp_path: Path, lock_holders: list[subprocess.Popen[bytes]]) -> None:
    for lock in ("lock-frontend", "lock"):
        (tmp_path / lock).touch()
    hold(tmp_path / "lock", lock_holders)  # held until the test ends: only the gate's bound ends its wait
    gate = subprocess.run(
        ["sh", "-c", steps.readiness(dpkg=True, wait=1)],
        capture_output=True,
        text=True,
        env={**os.environ, "POSEIDON_DPKG_DIR": str(tmp_path)},
        timeout=PATIENCE,
        check=False,
    )
    assert gate.returncode == 1
    assert gate.stderr.splitlines() == [
        "poseidon: waiting for the dpkg lock (another apt or dpkg run)",
        "poseidon: the dpkg lock is still held after 1 s",
    ]


@pytest.mark.sandbox
def test_steps_wait_until_cloud_init_has_finished(tmp_path: Path) -> None:
    with Sandbox(["booting"]) as sandbox:
        done = tmp_path / "cloud-init-done"
        fake = sandbox.root / "shims" / "cloud-init"
        fake.write_text(
            textwrap.dedent(f"""\
            #!/bin/sh
            # A cloud-init that finishes one second after it is first asked to wait.
            if [ "$2" = --wait ]; then sleep 1; touch {done}; fi
            if [ -e {done} ]; then echo "status: done"; else echo "status: running"; fi
        """)
        )
        fake.chmod(0o755)
        # The step fails unless cloud-init had finished before it ran.
        result, notices = apply(
            sandbox,
            f"version: 1\ndroplets: [booting]\nsteps: [{{run: 'test -e {done}'}}]\nreport: {{ps: false, top: false}}\n",
        )
    run = result.droplets[0]
    assert [s.status for s in run.steps] == ["changed"], run.error
    assert ("booting", "waiting for cloud-init to finish") in notices
    assert done.exists()


@pytest.mark.sandbox
def test_a_droplet_whose_ssh_port_never_answers_is_reported_unreachable_after_retries(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()  # the waits between attempts to connect pass at once, and are counted
    monkeypatch.setattr(
        targets,
        "time",
        types.SimpleNamespace(
            time=clock.time, monotonic=clock.time, sleep=clock.sleep, strftime=time.strftime, gmtime=time.gmtime
        ),
    )
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result, notices = apply(
        sandbox,
        "version: 1\ndroplets: [ready]\nsteps: [{run: echo hi}]\n",
        settings={"ssh_port": port},
        ready_timeout=20,
        connect_timeout=1,
    )
    run = result.droplets[0]
    assert run.unreachable
    assert run.error is not None and "cannot connect" in run.error
    assert [s.status for s in run.steps] == ["skipped"]
    # Five attempts, waits doubling from 1 s, the next one (10 s) past the 20 s allowed: given up.
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0]
    waits = [n for d, n in notices if n.startswith("waiting for SSH")]
    assert [w.rsplit("; ", 1)[1] for w in waits] == ["again in 1 s", "again in 2 s", "again in 4 s", "again in 8 s"]
