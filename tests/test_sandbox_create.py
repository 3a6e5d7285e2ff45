"""Droplets created through the API on a sandbox become real SSH endpoints."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import requests

import poseidon.api as po
from poseidon.errors import SandboxError
from poseidon.sandbox import Sandbox
from support.sandboxes import PATIENCE, pointed

pytestmark = pytest.mark.sandbox


def test_a_droplet_created_through_the_api_answers_over_ssh(monkeypatch: pytest.MonkeyPatch) -> None:
    with pointed(["first"], monkeypatch) as sandbox:
        client = po.connect()
        created = client.droplets.create(
            "second", region="nyc3", size="s-1vcpu-1gb", image="ubuntu-24-04-x64", wait=True, timeout=30
        )
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
        client.droplets.create(
            "one-more", region="nyc3", size="s-1vcpu-1gb", image="ubuntu-24-04-x64", wait=True, timeout=30
        )
        assert sandbox.farm is not None and len(sandbox.farm.pids) == 2
        for name in (names[0], names[-1], "one-more"):
            with client.droplets.by_name(name).connect() as ssh:
                assert ssh.wait("pwd") == f"{sandbox.home(name)}\n"


def _slow_sshd(folder: Path, monkeypatch: pytest.MonkeyPatch, delay: float) -> Path:
    """Serve the sandbox with tests/support/slow_sshd.py: SIGHUP is taken ``delay`` seconds after it listens
    (the number in the file returned, read at each start)."""
    from poseidon.sandbox import sshd

    stand_in = folder / "slow-sshd"
    stand_in.write_text(f"#!{sys.executable}\n" + (Path(__file__).parent / "support" / "slow_sshd.py").read_text())
    stand_in.chmod(0o755)
    monkeypatch.setattr(sshd, "find_sshd", lambda: str(stand_in))
    delay_file = folder / "delay"
    delay_file.write_text(str(delay))
    monkeypatch.setenv("SLOW_SSHD_DELAY_FILE", str(delay_file))
    return delay_file


def _listens(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=2).close()
        return True
    except ConnectionRefusedError:
        return False


def test_reloads_in_a_row_reach_an_sshd_slow_to_take_signals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race, made certain: each reload comes while the last one's sshd is still setting up."""
    _slow_sshd(tmp_path, monkeypatch, delay=0.3)
    with Sandbox(["web", "db"]) as sandbox:
        for _ in range(3):
            sandbox.power_off("web")
            assert not _listens(sandbox.address("web"), sandbox.ssh_port)
            sandbox.power_on("web")
            assert _listens(sandbox.address("web"), sandbox.ssh_port)
        assert _listens(sandbox.address("db"), sandbox.ssh_port)


def test_a_reload_replaces_an_sshd_still_restarting_past_its_patience(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An sshd that has not finished setting up (a reload timed out on it) is replaced, not signalled in vain."""
    from poseidon.errors import SandboxError
    from poseidon.sandbox import sshd

    delay = _slow_sshd(tmp_path, monkeypatch, delay=0.2)
    monkeypatch.setattr(sshd, "SETUP_PATIENCE", 1.0)
    with Sandbox(["web", "db"]) as sandbox:
        farm = sandbox.farm
        assert farm is not None
        delay.write_text("600")  # the restart the next reload starts does not end
        with pytest.raises(SandboxError, match="did not write its pid file"):
            sandbox.power_off("web")
        delay.write_text("0.2")
        stuck = farm.pids
        sandbox.power_on("web")
        assert farm.pids != stuck, "a fresh sshd"
        assert _listens(sandbox.address("web"), sandbox.ssh_port) and _listens(sandbox.address("db"), sandbox.ssh_port)


@pytest.mark.parametrize(
    ("failure", "present"),
    [
        (SandboxError("sshd did not listen within 10 s"), 1),
        (BlockingIOError(11, "Resource temporarily unavailable"), 16),
    ],
    ids=["sshd-too-slow", "fork-refused-for-a-new-sshd"],
)
def test_a_create_that_sshd_cannot_serve_is_undone_and_answers_500(
    failure: Exception, present: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever stops the reload (sshd too slow, no process for a new sshd), the create leaves nothing
    behind: with 16 droplets present its droplets needed a second sshd, which is ended too."""
    from poseidon.sandbox.sshd import SSHFarm

    names = ["first", *(f"d{i}" for i in range(present - 1))]
    with pointed(names, monkeypatch) as sandbox:
        client = po.connect()
        farm = sandbox.farm
        assert farm is not None
        servers = len(farm.pids)
        real_reload = SSHFarm.reload
        failing = [True]

        def reload_then_fail(farm: SSHFarm) -> None:
            real_reload(farm)  # the new addresses listen (a second sshd started), as when the failure came late
            if failing.pop() if failing else False:
                raise failure

        monkeypatch.setattr(SSHFarm, "reload", reload_then_fail)
        answer = requests.post(
            f"{sandbox.api_url}/v2/droplets",
            json={
                "names": [f"web-{i}" for i in range(5)],
                "region": "nyc3",
                "size": "s-1vcpu-1gb",
                "image": "ubuntu-24-04-x64",
            },
            headers={"Authorization": f"Bearer {sandbox.token}"},
            timeout=PATIENCE,
        )
        assert answer.status_code == 500 and type(failure).__name__ in answer.json()["message"]
        assert sorted(d.name for d in client.droplets.list()) == sorted(names)
        assert set(sandbox.homes) == set(names)
        assert len(farm.pids) == servers
        first_new = 2 + present
        for host in range(first_new, first_new + 5):  # the addresses the create had set up listen no more
            assert not _listens(f"{sandbox.network}.{host}", sandbox.ssh_port)

        again = client.droplets.create(
            "web-0", region="nyc3", size="s-1vcpu-1gb", image="ubuntu-24-04-x64", wait=True, timeout=30
        )
        assert again.ip_address == f"{sandbox.network}.{first_new}", "the undone create's addresses are free again"
        with again.connect() as ssh:
            assert ssh.wait("ls -A | grep -v '^\\.' | wc -l") == "0\n"
