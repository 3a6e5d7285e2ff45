"""The readiness gate before the first step: SSH answers, cloud-init finished, the dpkg lock free."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from poseidon import executor, spec, steps
from poseidon.sandbox import Sandbox

LOCK = "/var/lib/dpkg/lock-frontend"


def sandbox_settings(sandbox: Sandbox, **overrides: object) -> executor.SSHSettings:
    fields = dict(
        user=sandbox.user,
        port=sandbox.ssh_port,
        key_filename=sandbox.key_filename,
        known_hosts=sandbox.known_hosts,
        pinned=True,
    )
    fields.update(overrides)
    return executor.SSHSettings(**fields)  # type: ignore[arg-type]


def apply(sandbox: Sandbox, text: str, **settings: object) -> tuple[object, list[tuple[str, str]]]:
    notices: list[tuple[str, str]] = []
    result = executor.apply(
        spec.loads(textwrap.dedent(text)),
        api_url=sandbox.api_url,
        token=sandbox.token,
        ssh=sandbox_settings(sandbox, **settings),
        notice=lambda droplet, text: notices.append((droplet, text)),
    )
    return result, notices


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    with Sandbox(["ready"]) as sandbox:
        yield sandbox  # type: ignore[misc]


def hold_dpkg_lock(seconds: float) -> subprocess.Popen[bytes]:
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import fcntl,os,time; fd=os.open({LOCK!r}, os.O_RDWR); fcntl.lockf(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep({seconds})"],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    return holder


needs_root_and_dpkg = pytest.mark.skipif(
    os.geteuid() != 0 or not Path(LOCK).exists(), reason="the dpkg lock is root's, on Debian"
)


@needs_root_and_dpkg
def test_apt_waits_for_the_dpkg_lock_and_says_so(sandbox: Sandbox) -> None:
    holder = hold_dpkg_lock(2)
    try:
        started = time.monotonic()
        result, notices = apply(sandbox, "version: 1\ndroplets: [ready]\nsteps: [{apt: [git]}]\nreport: {ps: false, top: false}\n")
        waited = time.monotonic() - started
    finally:
        holder.wait()
    run = result.droplets[0]  # type: ignore[attr-defined]
    assert run.error is None, run.error
    assert [s.status for s in run.steps] == ["ok"]
    assert ("ready", "waiting for the dpkg lock (another apt or dpkg run)") in notices
    assert waited >= 1


@needs_root_and_dpkg
def test_the_dpkg_wait_is_bounded() -> None:
    holder = hold_dpkg_lock(5)
    try:
        gate = subprocess.run(["sh", "-c", steps.readiness(dpkg=True, wait=1)], capture_output=True, text=True)
    finally:
        holder.kill()
        holder.wait()
    assert gate.returncode == 1
    assert "the dpkg lock is still held after 1 s" in gate.stderr


def test_steps_wait_until_cloud_init_has_finished(tmp_path: Path) -> None:
    with Sandbox(["booting"]) as sandbox:
        done = tmp_path / "cloud-init-done"
        fake = sandbox.root / "shims" / "cloud-init"
        fake.write_text(textwrap.dedent(f"""\
            #!/bin/sh
            # A cloud-init that finishes one second after it is first asked to wait.
            if [ "$2" = --wait ]; then sleep 1; touch {done}; fi
            if [ -e {done} ]; then echo "status: done"; else echo "status: running"; fi
        """))
        fake.chmod(0o755)
        result, notices = apply(sandbox, "version: 1\ndroplets: [booting]\nsteps: [{run: echo hi}]\nreport: {ps: false, top: false}\n")
    run = result.droplets[0]  # type: ignore[attr-defined]
    assert [s.status for s in run.steps] == ["changed"], run.error
    assert ("booting", "waiting for cloud-init to finish") in notices
    assert done.exists()


def test_a_droplet_whose_ssh_port_never_answers_is_reported_unreachable_after_retries(sandbox: Sandbox) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    started = time.monotonic()
    result, notices = apply(
        sandbox,
        "version: 1\ndroplets: [ready]\nsteps: [{run: echo hi}]\n",
        port=port,
        ready_timeout=2.5,
        connect_timeout=1,
    )
    run = result.droplets[0]  # type: ignore[attr-defined]
    assert run.unreachable
    assert "cannot connect" in run.error
    assert [s.status for s in run.steps] == ["skipped"]
    assert [n for d, n in notices if n.startswith("waiting for SSH")]
    assert time.monotonic() - started < 10
