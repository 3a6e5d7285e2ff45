"""Droplets with `create:` are made when no droplet has their name, then provisioned like the others."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import poseidon.api as po
from poseidon import hostkeys
from poseidon.cli import main
from poseidon.hostkeys import HostKey
from poseidon.sandbox import Sandbox
from support.sandboxes import pointed

pytestmark = pytest.mark.sandbox

PLAYBOOK = """
    version: 1
    name: fresh-ones
    droplets:
      - existing
      - name: fresh
        create: {region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64, tags: [demo]}
    steps:
      - run: {cmd: "echo made > made", creates: made}
    report: {ps: false, top: false}
"""


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with pointed(["existing"], monkeypatch) as sandbox:
        yield sandbox


def run(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_plan_says_a_missing_droplet_will_be_created_and_creates_nothing(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = tmp_path / "site.yaml"
    playbook.write_text(textwrap.dedent(PLAYBOOK))
    code, report = run("plan", str(playbook), capsys=capsys)
    assert code == 0
    fresh = next(d for d in report["droplets"] if d["name"] == "fresh")
    assert fresh["to_create"] is True and fresh["created"] is False and fresh["id"] is None
    assert [(s["status"], s["reason"]) for s in fresh["steps"]] == [
        ("would-change", "the droplet will be created first")
    ]
    assert po.connect().droplets.find("fresh") == []


def test_apply_creates_the_missing_droplet_once_and_provisions_it(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = tmp_path / "site.yaml"
    playbook.write_text(textwrap.dedent(PLAYBOOK))
    code, first = run("apply", str(playbook), capsys=capsys)
    assert code == 0, first
    fresh = next(d for d in first["droplets"] if d["name"] == "fresh")
    assert fresh["created"] is True and fresh["ip_address"] == sandbox.address("fresh")
    assert [s["status"] for s in fresh["steps"]] == ["changed"]
    assert (sandbox.home("fresh") / "made").read_text() == "made\n"
    made = po.connect().droplets.by_name("fresh")
    assert made.tags == ["demo", "poseidon:fresh-ones"] and made.data["size_slug"] == "s-1vcpu-1gb"  # and the owner tag

    code, second = run("apply", str(playbook), capsys=capsys)
    assert code == 0
    assert [d["created"] for d in second["droplets"]] == [False, False]
    assert {s["status"] for d in second["droplets"] for s in d["steps"]} == {"ok"}
    assert len(po.connect().droplets.find("fresh")) == 1


def test_a_missing_droplet_without_create_is_still_an_error(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = tmp_path / "site.yaml"
    playbook.write_text("version: 1\ndroplets: [existing, absent]\nsteps: [{run: ls}]\n")
    assert main(["apply", str(playbook)]) == 2
    assert "no droplet named 'absent'" in capsys.readouterr().err


def test_a_created_droplets_host_key_is_pinned_at_birth_and_checked_on_first_contact(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox cannot serve a pinned key (one sshd, one key): the first connection must refuse its key."""
    monkeypatch.setenv("POSEIDON_PIN_HOST_KEYS", "1")
    playbook = tmp_path / "site.yaml"
    playbook.write_text(textwrap.dedent(PLAYBOOK))
    code, report = run("apply", str(playbook), capsys=capsys)
    assert code == 3
    fresh = next(d for d in report["droplets"] if d["name"] == "fresh")
    assert fresh["created"] and fresh["unreachable"]
    user_data = sandbox.emulator.user_data(fresh["id"])
    assert user_data is not None and user_data.startswith("#cloud-config\n")
    sent = HostKey.parse(yaml.safe_load(user_data)["ssh_keys"]["ed25519_public"])
    # The key recorded under the droplet's id is the one sent in its user data, and the refusal names it.
    known = Path(sandbox.known_hosts).read_text()
    recorded = [e.key for e in hostkeys.parse(known) if e.matches(hostkeys.alias(fresh["id"]))]
    assert recorded == [sent]
    assert f"droplet fresh (id {fresh['id']})" in fresh["error"]
    assert f"changed: was ssh-ed25519 {sent.fingerprint}, now" in fresh["error"]
    assert "PRIVATE KEY" not in known + json.dumps(report)
    existing = next(d for d in report["droplets"] if d["name"] == "existing")
    assert [s["status"] for s in existing["steps"]] == ["changed"]  # the others go on


def test_creating_a_droplet_shows_its_progress(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """Creating takes seconds to a minute: each droplet says it is being created, then that it is active."""
    playbook = tmp_path / "site.yaml"
    playbook.write_text(textwrap.dedent(PLAYBOOK))
    assert main(["apply", str(playbook)]) == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    creating = lines.index("fresh creating it (nyc3, s-1vcpu-1gb, ubuntu-24-04-x64)")
    waiting = lines.index("fresh waiting until it is active (at most 300 s)")
    active = next(i for i, line in enumerate(lines) if line.startswith("fresh active: id "))
    assert creating < waiting < active
    assert f", {sandbox.address('fresh')}, after " in lines[active]
    assert not any(line.startswith("existing creating") for line in lines)
