"""Droplets created through the API on a sandbox become real SSH endpoints."""

from __future__ import annotations

import socket

import pytest
import requests

import poseidon.api as po
from sandboxes import PATIENCE, pointed


def test_a_droplet_created_through_the_api_answers_over_ssh(monkeypatch: pytest.MonkeyPatch) -> None:
    with pointed(["first"], monkeypatch) as sandbox:
        client = po.connect()
        created = client.droplets.create("second", region="nyc3", size="s-1vcpu-1gb", image="ubuntu-24-04-x64", wait=True, timeout=30)
        assert created.status == "active"
        assert created.ip_address == f"{sandbox.network}.3"
        assert sandbox.address("second") == created.ip_address
        with created.connect() as ssh:
            assert ssh.wait("echo hello; pwd") == f"hello\n{sandbox.home('second')}\n"
        with client.droplets.by_name("first").connect() as ssh:  # the first droplet still answers
            assert ssh.wait("echo still here") == "still here\n"


def test_a_farm_larger_than_one_sshd_serves_every_droplet(monkeypatch: pytest.MonkeyPatch) -> None:
    from poseidon.sandbox.sshd import ADDRESSES_PER_SSHD

    names = [f"d{i}" for i in range(ADDRESSES_PER_SSHD)]
    with pointed(names, monkeypatch) as sandbox:
        client = po.connect()
        # The first sshd is full: the next droplet needs a second one, on the same port.
        client.droplets.create("one-more", region="nyc3", size="s-1vcpu-1gb", image="ubuntu-24-04-x64", wait=True, timeout=30)
        assert sandbox.farm is not None and len(sandbox.farm.pids) == 2
        for name in (names[0], names[-1], "one-more"):
            with client.droplets.by_name(name).connect() as ssh:
                assert ssh.wait("pwd") == f"{sandbox.home(name)}\n"


def _catches_sighup(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGHUP (bit 0 of SigCgt in /proc/PID/status)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & 1)
    raise AssertionError(f"no SigCgt line for {pid}")


def test_every_reload_returns_once_sshd_takes_the_next_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    """sshd re-executes itself on SIGHUP and ignores SIGHUP until it has set up again: a reload
    that returned before then lost the next one (a droplet created under load never listened)."""
    with pointed(["web", "db"], monkeypatch) as sandbox:
        farm = sandbox.farm
        assert farm is not None
        for _ in range(25):
            sandbox.power_off("web")
            assert all(_catches_sighup(pid) for pid in farm.pids)
            sandbox.power_on("web")
            assert all(_catches_sighup(pid) for pid in farm.pids)
        with po.connect().droplets.by_name("web").connect() as ssh:
            assert ssh.wait("echo back") == "back\n"


def test_a_create_that_sshd_cannot_serve_is_undone_and_answers_500(monkeypatch: pytest.MonkeyPatch) -> None:
    from poseidon.errors import SandboxError
    from poseidon.sandbox.sshd import SSHFarm

    with pointed(["first"], monkeypatch) as sandbox:
        client = po.connect()
        real_reload = SSHFarm.reload
        failing = [True]

        def reload_then_fail(farm: SSHFarm) -> None:
            real_reload(farm)  # the new addresses listen, as when sshd took too long on a busy machine
            if failing.pop() if failing else False:
                raise SandboxError("sshd did not listen within 10 s")

        monkeypatch.setattr(SSHFarm, "reload", reload_then_fail)
        answer = requests.post(
            f"{sandbox.api_url}/v2/droplets",
            json={"names": [f"web-{i}" for i in range(5)], "region": "nyc3", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64"},
            headers={"Authorization": f"Bearer {sandbox.token}"},
            timeout=PATIENCE,
        )
        assert answer.status_code == 500 and "sshd did not listen" in answer.json()["message"]
        assert [d.name for d in client.droplets.list()] == ["first"]
        assert set(sandbox.homes) == {"first"}
        for host in range(3, 8):  # the addresses the create had set up listen no more
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((f"{sandbox.network}.{host}", sandbox.ssh_port), timeout=2).close()

        again = client.droplets.create("web-0", region="nyc3", size="s-1vcpu-1gb", image="ubuntu-24-04-x64", wait=True, timeout=30)
        assert again.ip_address == f"{sandbox.network}.3", "the undone create's addresses are free again"
        with again.connect() as ssh:
            assert ssh.wait("ls -A | grep -v '^\\.' | wc -l") == "0\n"
