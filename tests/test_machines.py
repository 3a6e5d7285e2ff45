"""Sandbox machines: Debian booted with systemd-nspawn on an overlay of one base system.

They need root, debootstrap, systemd-container and a Debian mirror: elsewhere these
tests are skipped with the reason (under CI, where all of that is installed, they fail).
The base is built once into the user's cache folder and reused by later runs.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from poseidon.sandbox import machines
from poseidon.sandbox.machines import Machine
from poseidon.ssh import SSHClient

pytestmark = pytest.mark.sandbox

#: Seconds a machine may take to boot to SSH on a busy machine: a safety net, never a pace.
BOOT_PATIENCE = 60.0


def _cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "poseidon" / "machines"


@pytest.fixture(scope="module")
def base() -> Path:
    reason = machines.unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"machines cannot run on this CI machine: {reason}")
        pytest.skip(reason)
    return machines.build_base(_cache())


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    for name in ("client", "host"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    return {"client": folder / "client", "host": folder / "host", "known_hosts": folder / "known_hosts"}


_addresses = iter(range(2, 250))


@pytest.fixture
def machine(base: Path, keys: dict[str, Path], tmp_path: Path) -> Iterator[Machine]:
    address = f"127.211.{os.getpid() % 200}.{next(_addresses)}"
    made = Machine(
        "m1",
        address,
        2222,
        tmp_path / "m1",
        base,
        authorized_key=(keys["client"].with_suffix(".pub")).read_text(),
        host_key=keys["host"],
    )
    made.start()
    try:
        made.wait_for_ssh(BOOT_PATIENCE)
        yield made
    finally:
        made.remove()


def login(machine: Machine, keys: dict[str, Path]) -> SSHClient:
    return SSHClient(
        machine.address,
        port=machine.port,
        key_filename=str(keys["client"]),
        known_hosts=str(keys["known_hosts"]),
        label=machine.name,
    )


def test_a_machine_is_a_system_of_its_own_that_shows_only_its_processes(
    machine: Machine, keys: dict[str, Path]
) -> None:
    with login(machine, keys) as ssh:
        assert ssh.wait("hostname").strip() == "m1"
        processes = ssh.wait("ps -e -o pid=,comm=").split("\n")
        assert processes[0].split() == ["1", "systemd"]
        assert not any("pytest" in line or "python3" in line for line in processes), processes
        assert len(processes) < 30, processes
        assert ssh.wait("id -un").strip() == "root"


def test_apt_installs_in_the_machine_and_only_there(machine: Machine, keys: dict[str, Path]) -> None:
    assert subprocess.run(["dpkg", "-s", "hello"], capture_output=True).returncode != 0, "this machine has hello"
    with login(machine, keys) as ssh:
        ssh.wait("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hello")
        assert ssh.wait("hello").strip() == "Hello, world!"
    assert subprocess.run(["dpkg", "-s", "hello"], capture_output=True).returncode != 0


def test_power_off_then_on_keeps_the_files_and_a_cut_does_too(machine: Machine, keys: dict[str, Path]) -> None:
    with login(machine, keys) as ssh:
        ssh.wait("echo kept > /root/note && sync")
    machine.stop()
    assert not machine.running
    machine.start()
    machine.wait_for_ssh(BOOT_PATIENCE)
    with login(machine, keys) as ssh:
        assert ssh.wait("cat /root/note").strip() == "kept"
        ssh.wait("echo cut > /root/note && sync")
    machine.cut()
    assert not machine.running
    machine.start()
    machine.wait_for_ssh(BOOT_PATIENCE)
    with login(machine, keys) as ssh:
        assert ssh.wait("cat /root/note").strip() == "cut"


def test_a_reboot_inside_brings_the_machine_back(machine: Machine, keys: dict[str, Path]) -> None:
    with login(machine, keys) as ssh:
        ssh.wait("touch /run/before-the-reboot")  # /run is a new tmpfs at each boot
        ssh.run("systemctl reboot")
    deadline = time.monotonic() + BOOT_PATIENCE
    while machine.boots < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert machine.boots == 2, "nspawn was not started again after the reboot"
    machine.wait_for_ssh(BOOT_PATIENCE)
    with login(machine, keys) as ssh:
        assert ssh.run("test -e /run/before-the-reboot").exited == 1
        assert ssh.wait("systemctl is-system-running --wait").strip() in ("running", "degraded")


def test_removing_a_machine_unmounts_it_first_and_leaves_the_base_as_it_was(
    base: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    before = sorted(p.name for p in (base / "etc").iterdir())
    made = Machine(
        "gone",
        f"127.211.{os.getpid() % 200}.{next(_addresses)}",
        2222,
        tmp_path / "gone",
        base,
        authorized_key=(keys["client"].with_suffix(".pub")).read_text(),
        host_key=keys["host"],
    )
    made.start()
    made.wait_for_ssh(BOOT_PATIENCE)
    with login(made, keys) as ssh:
        ssh.wait("rm -rf /etc/apt /usr/share/doc && touch /etc/only-here")
    made.remove()
    assert not (tmp_path / "gone").exists()
    assert sorted(p.name for p in (base / "etc").iterdir()) == before
    assert (base / "etc" / "apt").is_dir() and (base / "usr" / "share" / "doc").is_dir()
    assert not (base / "etc" / "only-here").exists()
