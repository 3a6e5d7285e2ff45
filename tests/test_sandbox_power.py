"""Power actions through the API reach a sandbox droplet: off drops its connections and ends its processes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import poseidon.api as po
from poseidon.errors import SSHError
from poseidon.sandbox import Sandbox
from support.sandboxes import point_at, pointed, process_running, wait_for

pytestmark = pytest.mark.sandbox

DETACHED_SLEEP = "nohup setsid sleep 600 > /dev/null 2>&1 < /dev/null & echo $!"


def _refuses(sandbox: Sandbox, name: str) -> bool:
    try:
        with socket.create_connection((sandbox.address(name), sandbox.ssh_port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_power_off_drops_the_connection_ends_the_processes_keeps_the_files_and_power_on_brings_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pointed(["web", "db"], monkeypatch) as sandbox:
        client = po.connect()
        web, db = client.droplets.by_name("web"), client.droplets.by_name("db")
        with web.connect() as ssh, db.connect() as other:
            ssh.wait("echo kept > notes.txt")
            detached = int(ssh.wait(DETACHED_SLEEP))
            web.power_off(wait=False)
            with pytest.raises(SSHError, match="connection was lost"):
                ssh.wait("echo still here")
            assert other.wait("echo db answers") == "db answers\n"  # served by the same sshd
        assert client.droplets.by_name("web").status == "off"
        assert _refuses(sandbox, "web")
        assert not process_running(detached)
        assert (sandbox.home("web") / "notes.txt").read_text() == "kept\n"

        web.power_on(wait=False)
        with web.connect() as ssh:
            assert ssh.wait("cat notes.txt") == "kept\n"


def test_a_reboot_through_the_api_comes_back_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    with pointed(["alone"], monkeypatch) as sandbox:  # its sshd has no other droplet to listen for meanwhile
        sandbox.reboot_downtime = 0.5
        droplet = po.connect().droplets.by_name("alone")
        with droplet.connect() as ssh:
            detached = int(ssh.wait(DETACHED_SLEEP))
        with sandbox.reboots_held():  # down it stays, however late this look comes
            droplet.reboot(wait=False)
            assert _refuses(sandbox, "alone")
            assert not process_running(detached)
        wait_for("the droplet to come back", lambda: not _refuses(sandbox, "alone"))
        with droplet.connect() as ssh:
            assert ssh.wait("echo back") == "back\n"


def test_a_group_of_droplets_all_off_stops_its_sshd_and_the_others_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from poseidon.sandbox.sshd import ADDRESSES_PER_SSHD

    names = [f"d{i}" for i in range(ADDRESSES_PER_SSHD + 1)]  # the last one has an sshd of its own
    with pointed(names, monkeypatch) as sandbox:
        assert sandbox.farm is not None and len(sandbox.farm.pids) == 2
        sandbox.power_off(names[-1])
        assert len(sandbox.farm.pids) == 1 and _refuses(sandbox, names[-1])
        client = po.connect()
        with client.droplets.by_name(names[0]).connect() as ssh:
            assert ssh.wait("echo on") == "on\n"
        sandbox.power_on(names[-1])
        assert len(sandbox.farm.pids) == 2
        with client.droplets.by_name(names[-1]).connect() as ssh:
            assert ssh.wait("echo back") == "back\n"


@pytest.mark.parametrize("then", ["delete", "power_off"])
def test_a_power_action_right_after_a_reboot_wins_over_the_reboots_timer(
    then: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reboot powers the droplet on again after its downtime, unless the droplet was deleted
    or powered off meanwhile."""
    with pointed(["web", "db"], monkeypatch) as sandbox:
        sandbox.reboot_downtime = 0.5
        web = po.connect().droplets.by_name("web")
        address = sandbox.address("web")
        web.reboot(wait=False)
        if then == "delete":
            web.delete()
        else:
            web.power_off(wait=False)
        sandbox.wait_for_reboots()  # the reboot's timer fired or was cancelled: it must not have acted
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, sandbox.ssh_port), timeout=2).close()
        if then == "power_off":
            assert po.connect().droplets.by_name("web").status == "off" and not sandbox.is_on("web")
        else:
            assert "web" not in sandbox.homes


def test_a_kept_sandbox_brings_a_droplet_back_as_it_was_powered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A droplet powered off through the API stays off when its kept sandbox starts again."""
    root = tmp_path / "kept"
    with Sandbox(["web", "db"], root=root, keep=True) as sandbox:
        point_at(sandbox, monkeypatch)
        po.connect().droplets.by_name("web").power_off(wait=False)
        assert _refuses(sandbox, "web")
    with Sandbox(["web", "db"], root=root, keep=True) as again:
        point_at(again, monkeypatch)
        client = po.connect()
        assert client.droplets.by_name("web").status == "off" and _refuses(again, "web")
        assert client.droplets.by_name("db").status == "active" and not _refuses(again, "db")
        client.droplets.by_name("web").power_on(wait=False)
        assert not _refuses(again, "web")
    Sandbox.wipe(root)
