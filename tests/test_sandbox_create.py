"""Droplets created through the API on a sandbox become real SSH endpoints."""

from __future__ import annotations

import pytest

import poseidon.api as po
from sandboxes import pointed


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
