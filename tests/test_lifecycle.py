"""A demo environment's life: plan, apply (create, DNS, steps), plan again, destroy, apply again."""

from __future__ import annotations

import json
import shutil
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import poseidon.api as po
from poseidon.cli import main
from poseidon.sandbox import Sandbox
from support.sandboxes import pointed, process_running

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main([*args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def droplet(report: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(d for d in report["droplets"] if d["name"] == name)


@pytest.fixture
def demo(tmp_path: Path, offline_pip: dict[str, str]) -> Iterator[Path]:
    """examples/demo-lifecycle.yaml and its app, copied; the sandbox it keeps is removed at the end.
    Flask comes from tests/.wheelhouse (``offline_pip``), not from PyPI."""
    shutil.copy(EXAMPLES / "demo-lifecycle.yaml", tmp_path)
    shutil.copytree(EXAMPLES / "apps", tmp_path / "apps")
    yield tmp_path / "demo-lifecycle.yaml"
    Sandbox.wipe(tmp_path / ".poseidon" / "sandbox" / "demo-lifecycle")


@pytest.mark.sandbox
def test_the_demo_goes_from_nothing_to_an_app_at_a_dns_name_and_back_and_again(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = str(demo)
    kept = demo.parent / ".poseidon" / "sandbox" / "demo-lifecycle"

    code, plan = run(capsys, "plan", playbook, "--sandbox")
    assert code == 0
    web = droplet(plan, "demo-web")
    assert web["to_create"] and not web["created"] and web["id"] is None and web["price_monthly"] == 6.0
    assert web["dns"]["status"] == "would-change" and web["dns"]["record"] == "demo.example.com"

    code, applied = run(capsys, "apply", playbook, "--sandbox")
    assert code == 0, applied
    web = droplet(applied, "demo-web")
    address, first_id = web["ip_address"], web["id"]
    assert web["created"] and web["dns"] == {
        "record": "demo.example.com",
        "address": address,
        "status": "changed",
        "detail": "created, in the new domain example.com",
    }
    with urllib.request.urlopen(f"http://{address}:5000/", timeout=10) as answer:  # the app answers
        assert answer.status == 200
    home = kept / "hosts" / address
    app = int((home / "hello" / ".poseidon" / "web.pid").read_text())

    code, again = run(capsys, "plan", playbook, "--sandbox")  # nothing to do
    web = droplet(again, "demo-web")
    assert code == 0 and not web["to_create"] and not web["created"] and web["id"] == first_id
    assert {s["status"] for s in web["steps"]} == {"ok"} and web["dns"]["status"] == "ok"

    code, listed = run(capsys, "destroy", playbook, "--sandbox", "--check")
    assert code == 0 and not listed["deleted"]
    assert [d["id"] for d in listed["droplets"]] == [first_id]
    assert listed["records"][0]["record"] == "demo.example.com" and listed["records"][0]["data"] == address
    code, _ = run(capsys, "destroy", playbook, "--sandbox")  # no terminal to confirm on: nothing deleted
    assert code == 2
    assert process_running(app)

    code, destroyed = run(capsys, "destroy", playbook, "--sandbox", "--yes")
    assert code == 0 and destroyed["deleted"] and destroyed["tag"] == "poseidon:hello-demo"
    assert not process_running(app) and not home.exists()
    code, after = run(capsys, "plan", playbook, "--sandbox")
    web = droplet(after, "demo-web")
    assert code == 0 and web["to_create"] and web["dns"]["status"] == "would-change"
    code, listed = run(capsys, "destroy", playbook, "--sandbox", "--check")
    assert code == 0 and listed["droplets"] == [] and listed["records"] == []

    code, rebuilt = run(capsys, "apply", playbook, "--sandbox")
    web = droplet(rebuilt, "demo-web")
    assert code == 0 and web["created"] and web["id"] != first_id  # another droplet, as on DigitalOcean
    assert web["dns"]["status"] == "changed" and web["dns"]["detail"] == "created"
    with urllib.request.urlopen(f"http://{web['ip_address']}:5000/", timeout=10) as answer:
        assert answer.status == 200


OWNED = """
    version: 1
    name: mixed
    droplets:
      - name: shared
        create: {region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}
      - name: ours
        create: {region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}
        dns: {domain: example.org, name: ours}
      - existing
    steps:
      - run: "true"
    report: {ps: false, top: false}
"""


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    # "shared" exists already, made by someone else: no tag of this playbook.
    with pointed(["shared", "existing"], monkeypatch) as sandbox:
        yield sandbox


@pytest.mark.sandbox
def test_destroy_refuses_a_droplet_the_playbook_did_not_create_and_deletes_its_own(
    tmp_path: Path, account: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = tmp_path / "mixed.yaml"
    playbook.write_text(textwrap.dedent(OWNED))
    code, applied = run(capsys, "apply", str(playbook))
    assert code == 0 and droplet(applied, "ours")["created"] and not droplet(applied, "shared")["created"]
    shared = po.connect().droplets.by_name("shared")

    code, destroyed = run(capsys, "destroy", str(playbook), "--yes")
    assert code == 1  # not everything asked for could be done
    assert [d["name"] for d in destroyed["droplets"]] == ["ours"]
    assert destroyed["refused"] == [
        {
            "name": "shared",
            "id": shared.id,
            "reason": "it does not carry the tag poseidon:mixed: this playbook did not create it",
        }
    ]
    assert destroyed["kept"] == ["existing"]
    client = po.connect()
    assert (
        client.droplets.find("ours") == []
        and client.droplets.find("shared") != []
        and client.droplets.find("existing") != []
    )
    assert client.domains.records("example.org").list(type="A") == []

    code, _ = run(capsys, "destroy", str(playbook), "--yes")  # what is left is not its own
    assert code == 1
    assert client.droplets.by_name("shared").id == shared.id


FOLLOWING = """
    version: 1
    name: following
    droplets:
      - name: moving
        create: {region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}
        dns: {domain: example.net, name: app, ttl: 300}
    steps:
      - run: "true"
    report: {ps: false, top: false}
"""


@pytest.mark.sandbox
def test_the_record_follows_a_droplet_whose_address_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = tmp_path / "following.yaml"
    playbook.write_text(textwrap.dedent(FOLLOWING))
    with pointed([], monkeypatch):  # an account with no droplet yet
        code, first = run(capsys, "apply", str(playbook))
        old = droplet(first, "moving")["ip_address"]
        assert code == 0 and droplet(first, "moving")["dns"]["status"] == "changed"
        client = po.connect()
        # The droplet is lost and made again elsewhere; its record still points at the old address.
        client.droplets.delete(client.droplets.by_name("moving").id)
        code, planned = run(capsys, "plan", str(playbook))
        assert code == 0 and droplet(planned, "moving")["dns"]["status"] == "would-change"
        code, listed = run(capsys, "destroy", str(playbook), "--check")  # the record points at no droplet of its own
        assert code == 0 and listed["records"] == [] and [r["data"] for r in listed["left"]] == [old]

        code, second = run(capsys, "apply", str(playbook))
        moved = droplet(second, "moving")
        assert code == 0 and moved["ip_address"] != old
        assert moved["dns"]["status"] == "changed" and moved["dns"]["detail"] == f"was {old}, ttl 300"
        records = client.domains.records("example.net").list(type="A", name="app")
        assert [(r["data"], r["ttl"]) for r in records] == [(moved["ip_address"], 300)]
        code, third = run(capsys, "apply", str(playbook))
        assert code == 0 and droplet(third, "moving")["dns"]["status"] == "ok"

        # A second A record for the name: poseidon does not guess which one it keeps.
        client.domains.records("example.net").create("A", "app", "203.0.113.50", ttl=300)
        code, fourth = run(capsys, "apply", str(playbook))
        record = droplet(fourth, "moving")["dns"]
        assert code == 1 and record["status"] == "failed"
        assert record["detail"].startswith("2 A records answer for it") and "remove the others" in record["detail"]


@pytest.mark.sandbox
def test_destroy_deletes_its_own_droplet_and_not_a_stranger_s_of_the_same_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = tmp_path / "pair.yaml"
    playbook.write_text(
        textwrap.dedent("""
        version: 1
        name: pair
        droplets:
          - {name: web, create: {region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}}
        steps:
          - run: touch mine
        report: {ps: false, top: false}
    """)
    )
    with pointed([], monkeypatch) as sandbox:
        code, applied = run(capsys, "apply", str(playbook))
        ours = droplet(applied, "web")
        assert code == 0 and ours["created"]
        client = po.connect()
        # Someone else makes a droplet of the same name, as the API allows.
        stranger = client.droplets.create(
            "web", region="nyc3", size="s-1vcpu-1gb", image="ubuntu-24-04-x64", wait=True, timeout=30
        )
        with stranger.connect() as ssh:
            ssh.wait("touch theirs")

        code, destroyed = run(capsys, "destroy", str(playbook), "--yes")
        assert code == 1 and [d["id"] for d in destroyed["droplets"]] == [ours["id"]]
        assert [r["id"] for r in destroyed["refused"]] == [stranger.id]
        assert [d.id for d in client.droplets.find("web")] == [stranger.id]
        assert not (sandbox.farm.hosts / ours["ip_address"]).exists()  # type: ignore[union-attr]
        with stranger.connect() as ssh:  # the stranger's droplet answers, its files untouched
            assert ssh.wait("ls theirs") == "theirs\n"


def test_destroy_waits_until_the_api_no_longer_has_the_droplets(tmp_path: Path) -> None:
    from poseidon import spec, teardown
    from poseidon.sandbox.emulator import Emulator
    from support.fakeclock import FakeClock

    clock = FakeClock()
    with Emulator("t", pending_reads=2) as emulator:  # a deleted droplet shows by id for two more reads
        emulator.add_droplet("web", "203.0.113.9", tags=["poseidon:waiting"])
        client = po.Client("t", api_url=emulator.url, sleep=clock.sleep, clock=clock.time, poll_interval=3)
        playbook = spec.loads(
            "version: 1\nname: waiting\ndroplets:\n  - {name: web, create: {region: nyc3, size: s-1vcpu-1gb,"
            " image: ubuntu-24-04-x64}}\nsteps: [{run: 'true'}]\n"
        )
        found = teardown.survey(playbook, "waiting.yaml", client)
        teardown.destroy(found, client)
        reads = [path for method, path in emulator.request_log if method == "GET" and path.startswith("/v2/droplets/")]
    assert len(reads) == 3  # shown, shown, then gone
    assert clock.sleeps == [3.0, 3.0]


PRICED = """
    version: 1
    name: priced
    droplets:
      - name: small
        create: {region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}
      - name: large
        create: {region: nyc3, size: s-2vcpu-4gb, image: ubuntu-24-04-x64}
      - existing
    steps:
      - run: "true"
    report: {ps: false, top: false}
"""


@pytest.mark.sandbox
def test_the_plan_prices_every_droplet_to_create_from_the_sizes_and_totals_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = tmp_path / "priced.yaml"
    playbook.write_text(textwrap.dedent(PRICED))
    with pointed(["existing"], monkeypatch):
        sizes = {s["slug"]: s for s in po.connect().sizes.list()}
        code, plan = run(capsys, "plan", str(playbook))
        assert code == 0
        for name, size in (("small", "s-1vcpu-1gb"), ("large", "s-2vcpu-4gb")):
            assert droplet(plan, name)["price_monthly"] == sizes[size]["price_monthly"]
            assert droplet(plan, name)["price_hourly"] == sizes[size]["price_hourly"]
        assert droplet(plan, "existing")["price_monthly"] is None
        assert main(["plan", str(playbook)]) == 0
        terminal = capsys.readouterr().out
    monthly = sizes["s-1vcpu-1gb"]["price_monthly"] + sizes["s-2vcpu-4gb"]["price_monthly"]
    hourly = sizes["s-1vcpu-1gb"]["price_hourly"] + sizes["s-2vcpu-4gb"]["price_hourly"]
    assert f"total to create: 2 droplet(s), ${monthly:,.2f}/month (${hourly:.5f}/hour)" in terminal
    assert plan["prices"] == {"droplets": 2, "monthly": round(monthly, 2), "hourly": round(hourly, 5)}


@pytest.mark.sandbox
def test_an_apply_that_creates_lists_the_sizes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The create check lists the sizes; the prices come from that listing, not a second request."""
    playbook = tmp_path / "priced.yaml"
    playbook.write_text(textwrap.dedent(PRICED))
    with pointed(["existing"], monkeypatch) as sandbox:
        code, applied = run(capsys, "apply", str(playbook))
        assert code == 0 and droplet(applied, "small")["price_monthly"] is not None
        listings = [
            path for method, path in sandbox.emulator.request_log if method == "GET" and path.startswith("/v2/sizes")
        ]
        assert len(listings) == 1, listings
