"""DigitalOcean's own Python client, pydo, unchanged, against the sandbox over HTTPS.

The client is pointed at the sandbox as the README says: its ``endpoint`` is
``POSEIDON_API_URL`` and it trusts the sandbox's authority through
``REQUESTS_CA_BUNDLE``, both from the variables ``poseidon sandbox up`` exports.
pydo refuses to send a token over plain HTTP, so these calls prove the HTTPS too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from poseidon.sandbox import Sandbox

pydo = pytest.importorskip("pydo", reason="pydo is a test extra: pip install -e '.[test]'")
from azure.core.exceptions import HttpResponseError  # noqa: E402 - installed with pydo

pytestmark = pytest.mark.sandbox

#: A safety net for what the API does in a moment (a droplet becoming active, an action completing).
PATIENCE = 30.0


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(["web-1", "web-2", "web-3", {"name": "db-1", "tags": ["db"]}]) as sandbox:
        yield sandbox


@pytest.fixture
def client(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(name, sandbox.environ[name])
    return pydo.Client(token=sandbox.token, endpoint=sandbox.environ["POSEIDON_API_URL"])


def until(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {PATIENCE:g} s"
        time.sleep(0.05)


def answer(operation: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """The status and body of a call: pydo returns the body of an error the document lists for
    the operation (a 404 of a GET), and raises ``HttpResponseError`` for the others."""

    def with_status(response: Any, body: Any, headers: Any) -> tuple[int, Any]:
        return response.http_response.status_code, body

    try:
        return operation(*args, cls=with_status, **kwargs)  # type: ignore[no-any-return]
    except HttpResponseError as exc:
        return exc.status_code or 0, exc.response.json() if exc.response is not None else None


def test_pydo_refuses_plain_http_and_talks_https(sandbox: Sandbox, client: Any) -> None:
    plain = pydo.Client(token=sandbox.token, endpoint=sandbox.environ["POSEIDON_SANDBOX_HTTP_URL"])
    with pytest.raises(Exception, match="non-TLS"):
        plain.account.get()
    assert client.account.get()["account"]["status"] == "active"


def test_droplets_keys_actions_and_deletion(sandbox: Sandbox, client: Any) -> None:
    key = client.ssh_keys.create(
        body={"name": "laptop", "public_key": Path(sandbox.key_filename + ".pub").read_text()}
    )["ssh_key"]
    renamed = client.ssh_keys.update(ssh_key_identifier=key["fingerprint"], body={"name": "laptop-2"})["ssh_key"]
    assert (renamed["id"], renamed["name"]) == (key["id"], "laptop-2")
    assert client.ssh_keys.get(ssh_key_identifier=key["id"])["ssh_key"]["name"] == "laptop-2"
    assert answer(client.ssh_keys.update, ssh_key_identifier=1, body={"name": "x"})[0] == 404
    status, body = answer(client.ssh_keys.update, ssh_key_identifier=key["id"], body={"name": ""})
    assert (status, body["id"]) == (422, "unprocessable_entity")

    created = client.droplets.create(
        body={
            "name": "app-1",
            "region": "nyc3",
            "size": "s-1vcpu-1gb",
            "image": "ubuntu-24-04-x64",
            "ssh_keys": [key["fingerprint"]],
            "tags": ["app"],
        }
    )["droplet"]
    until("app-1 active", lambda: client.droplets.get(created["id"])["droplet"]["status"] == "active")

    # Every droplet, a page of two at a time, following the links pydo is given.
    names, page = [], 1
    while True:
        listing = client.droplets.list(per_page=2, page=page)
        names += [d["name"] for d in listing["droplets"]]
        if "next" not in listing["links"].get("pages", {}):
            break
        page += 1
    assert sorted(names) == ["app-1", "db-1", "web-1", "web-2", "web-3"]
    assert listing["meta"]["total"] == 5
    assert [d["name"] for d in client.droplets.list(tag_name="app")["droplets"]] == ["app-1"]
    assert [d["name"] for d in client.droplets.list(tag_name="db")["droplets"]] == ["db-1"]

    action = client.droplet_actions.post(created["id"], body={"type": "power_off"})["action"]
    until("power_off completed", lambda: client.actions.get(action["id"])["action"]["status"] == "completed")
    assert client.droplets.get(created["id"])["droplet"]["status"] == "off"
    assert not sandbox.is_on("app-1")

    assert answer(client.droplets.destroy, created["id"])[0] == 204
    assert answer(client.droplets.destroy, created["id"])[0] == 204  # sent again at once: accepted again
    until("app-1 gone", lambda: answer(client.droplets.get, created["id"])[0] == 404)
    status, body = answer(client.droplets.destroy, created["id"])
    assert (status, body["id"]) == (404, "not_found")
    client.ssh_keys.delete(ssh_key_identifier=key["id"])


def test_tags_domains_and_records(sandbox: Sandbox, client: Any) -> None:
    client.tags.create(body={"name": "env:prod"})
    web = next(d for d in client.droplets.list(name="web-1")["droplets"])
    client.tags.assign_resources(
        tag_id="env:prod", body={"resources": [{"resource_id": str(web["id"]), "resource_type": "droplet"}]}
    )
    assert client.tags.get(tag_id="env:prod")["tag"]["resources"]["droplets"]["count"] == 1
    assert "env:prod" in [t["name"] for t in client.tags.list()["tags"]]
    client.tags.unassign_resources(
        tag_id="env:prod", body={"resources": [{"resource_id": str(web["id"]), "resource_type": "droplet"}]}
    )
    client.tags.delete(tag_id="env:prod")
    assert answer(client.tags.get, tag_id="env:prod")[0] == 404

    client.domains.create(body={"name": "example.com"})
    record = client.domains.create_record(
        domain_name="example.com", body={"type": "A", "name": "www", "data": "203.0.113.7", "ttl": 300}
    )["domain_record"]
    assert (
        client.domains.get_record(domain_name="example.com", domain_record_id=record["id"])["domain_record"]["data"]
        == "203.0.113.7"
    )
    client.domains.patch_record(domain_name="example.com", domain_record_id=record["id"], body={"data": "203.0.113.8"})
    listed = client.domains.list_records(domain_name="example.com", type="A", name="www.example.com")
    assert [r["data"] for r in listed["domain_records"]] == ["203.0.113.8"]
    client.domains.delete_record(domain_name="example.com", domain_record_id=record["id"])
    assert "example.com" in [d["name"] for d in client.domains.list()["domains"]]
    client.domains.delete(domain_name="example.com")
    status, body = answer(client.domains.get, domain_name="example.com")
    assert (status, body["id"]) == (404, "not_found")


def test_images_regions_and_sizes(client: Any) -> None:
    images = client.images.list(type="distribution")["images"]
    ubuntu = next(i for i in images if i["slug"] == "ubuntu-24-04-x64")
    assert client.images.get(image_id=ubuntu["id"])["image"]["slug"] == "ubuntu-24-04-x64"
    regions = {r["slug"]: r for r in client.regions.list()["regions"]}
    assert "nyc3" in regions and regions["nyc3"]["available"]
    sizes = {s["slug"]: s for s in client.sizes.list()["sizes"]}
    assert sizes["s-1vcpu-1gb"]["memory"] == 1024 and "nyc3" in sizes["s-1vcpu-1gb"]["regions"]


def test_firewalls_from_creation_to_deletion(sandbox: Sandbox, client: Any) -> None:
    web = {d["name"]: d["id"] for d in client.droplets.list()["droplets"]}
    ssh = {"protocol": "tcp", "ports": "22", "sources": {"addresses": ["0.0.0.0/0", "::/0"]}}
    http = {"protocol": "tcp", "ports": "80", "sources": {"tags": ["web"]}}
    out = {"protocol": "tcp", "ports": "0", "destinations": {"addresses": ["0.0.0.0/0"]}}
    created = client.firewalls.create(
        body={"name": "web-fw", "inbound_rules": [ssh], "outbound_rules": [out], "droplet_ids": [web["web-1"]]}
    )["firewall"]
    firewall_id = created["id"]
    assert (created["status"], created["droplet_ids"], created["inbound_rules"]) == ("succeeded", [web["web-1"]], [ssh])

    client.firewalls.assign_droplets(firewall_id=firewall_id, body={"droplet_ids": [web["web-2"], web["web-3"]]})
    client.firewalls.delete_droplets(firewall_id=firewall_id, body={"droplet_ids": [web["web-3"]]})
    client.firewalls.add_tags(firewall_id=firewall_id, body={"tags": ["db"]})
    client.firewalls.add_rules(firewall_id=firewall_id, body={"inbound_rules": [http]})
    got = client.firewalls.get(firewall_id=firewall_id)["firewall"]
    assert (got["droplet_ids"], got["tags"], got["inbound_rules"]) == (
        [web["web-1"], web["web-2"]],
        ["db"],
        [ssh, http],
    )
    assert [f["id"] for f in client.droplets.list_firewalls(droplet_id=web["web-2"])["firewalls"]] == [firewall_id]
    client.firewalls.delete_tags(firewall_id=firewall_id, body={"tags": ["db"]})
    client.firewalls.delete_rules(firewall_id=firewall_id, body={"inbound_rules": [ssh]})

    updated = client.firewalls.update(
        firewall_id=firewall_id, body={"name": "web-fw-2", "inbound_rules": [http], "droplet_ids": [web["web-2"]]}
    )["firewall"]
    assert (updated["name"], updated["droplet_ids"], updated["outbound_rules"]) == ("web-fw-2", [web["web-2"]], [])

    second = client.firewalls.create(body={"name": "db-fw", "inbound_rules": [ssh], "tags": ["db"]})["firewall"]
    first_page = client.firewalls.list(per_page=1)
    assert len(first_page["firewalls"]) == 1 and first_page["meta"]["total"] == 2
    assert "next" in first_page["links"]["pages"]

    status, body = answer(client.firewalls.create, body={"name": "no-rules"})
    assert (status, body["id"]) == (400, "bad_request")
    status, body = answer(client.firewalls.assign_droplets, firewall_id=firewall_id, body={"droplet_ids": [1]})
    assert status == 400 and "no droplet has the id 1" in body["message"]

    client.firewalls.delete(firewall_id=firewall_id)
    client.firewalls.delete(firewall_id=second["id"])
    assert answer(client.firewalls.get, firewall_id=firewall_id)[0] == 404
    assert client.firewalls.list()["firewalls"] == []


def test_the_error_bodies_pydo_reads(sandbox: Sandbox, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    status, body = answer(client.droplets.get, droplet_id=1)
    assert (status, body["id"]) == (404, "not_found") and body["message"]
    status, body = answer(client.droplets.create, body={"name": "bad name!", "region": "nyc3"})
    assert (status, body["id"]) == (422, "unprocessable_entity")
    stranger = pydo.Client(token="not-the-token", endpoint=sandbox.environ["POSEIDON_API_URL"])
    status, body = answer(stranger.droplets.list)
    assert (status, body["id"]) == (401, "unauthorized")


def test_a_deleted_droplet_leaves_its_firewalls_and_a_kept_account_keeps_them(sandbox: Sandbox, client: Any) -> None:
    from poseidon.sandbox.emulator import Emulator

    rule = {"protocol": "tcp", "ports": "443", "sources": {"addresses": ["0.0.0.0/0"]}}
    created = client.droplets.create(
        body={"name": "short-lived", "region": "nyc3", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64"}
    )["droplet"]
    firewall = client.firewalls.create(body={"name": "kept", "inbound_rules": [rule], "droplet_ids": [created["id"]]})
    firewall_id = firewall["firewall"]["id"]
    client.droplets.destroy(created["id"])
    assert client.firewalls.get(firewall_id=firewall_id)["firewall"]["droplet_ids"] == []

    again = Emulator("another-token")
    again.restore_account(sandbox.emulator.account_state())
    with again:  # read through the API, as any client reads it
        answer = requests.get(
            f"{again.url}/v2/firewalls/{firewall_id}", headers={"Authorization": "Bearer another-token"}, timeout=10
        )
    assert answer.status_code == 200 and answer.json()["firewall"]["name"] == "kept"
    client.firewalls.delete(firewall_id=firewall_id)


def test_a_firewall_read_back_is_accepted_as_it_is_after_its_droplet_and_tag_are_gone(
    sandbox: Sandbox, client: Any
) -> None:
    client.tags.create(body={"name": "cache"})
    created = client.droplets.create(
        body={"name": "cache-1", "region": "nyc3", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64"}
    )["droplet"]
    rule = {"protocol": "tcp", "ports": "6379", "sources": {"droplet_ids": [created["id"]], "tags": ["cache"]}}
    ssh = {"protocol": "tcp", "ports": "22", "sources": {"addresses": ["0.0.0.0/0"], "droplet_ids": [created["id"]]}}
    body = {"name": "cache-fw", "inbound_rules": [rule, rule, ssh], "droplet_ids": [created["id"]], "tags": ["cache"]}
    firewall = client.firewalls.create(body=body)["firewall"]
    assert firewall["inbound_rules"] == [rule, ssh]  # each once
    client.droplets.destroy(created["id"])
    client.tags.delete(tag_id="cache")
    read = client.firewalls.get(firewall_id=firewall["id"])["firewall"]
    # The droplet and the tag left the firewall and its rules; a rule left with nothing to allow went.
    assert (read["droplet_ids"], read["tags"]) == ([], [])
    assert read["inbound_rules"] == [{**ssh, "sources": {"addresses": ["0.0.0.0/0"], "droplet_ids": []}}]
    # What a tool read, it may write back (Terraform, doctl do).
    written = {k: read[k] for k in ("name", "inbound_rules", "outbound_rules", "droplet_ids", "tags")}
    assert client.firewalls.update(firewall_id=firewall["id"], body=written)["firewall"]["name"] == "cache-fw"
    client.firewalls.delete(firewall_id=firewall["id"])
    key = client.ssh_keys.list()["ssh_keys"][0]
    status, body = answer(client.ssh_keys.update, ssh_key_identifier=key["id"], body={"name": "a\nb\u0000c"})
    assert (status, body["id"]) == (422, "unprocessable_entity")


PYDO_SCRIPT = """\
import json, os, pydo
client = pydo.Client(token=os.environ["DIGITALOCEAN_TOKEN"], endpoint=os.environ["POSEIDON_API_URL"])
names = sorted(d["name"] for d in client.droplets.list()["droplets"])
rule = {"protocol": "tcp", "ports": "22", "sources": {"addresses": ["0.0.0.0/0"]}}
firewall = client.firewalls.create(body={"name": "up-fw", "inbound_rules": [rule]})["firewall"]
client.firewalls.delete(firewall_id=firewall["id"])
print(json.dumps({"names": names, "firewall": firewall["name"]}))
"""


def test_pydo_reaches_the_sandbox_that_sandbox_up_serves_with_the_variables_it_exports(tmp_path: Path) -> None:
    """The README's way: `eval "$(poseidon sandbox up)"`, then pydo as DigitalOcean documents it."""
    import json
    import shlex
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSEIDON_", "DIGITALOCEAN_"))}
    env["XDG_STATE_HOME"] = str(tmp_path)

    def poseidon(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "poseidon.cli", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    up = poseidon("sandbox", "up", "--droplet", "up-1", "--droplet", "up-2")
    assert up.returncode == 0, up.stderr
    try:
        exported = dict(shlex.split(line)[1].split("=", 1) for line in up.stdout.splitlines())
        ran = subprocess.run(
            [sys.executable, "-c", PYDO_SCRIPT], env={**env, **exported}, capture_output=True, text=True, timeout=120
        )
        assert ran.returncode == 0, ran.stderr
        assert json.loads(ran.stdout) == {"names": ["up-1", "up-2"], "firewall": "up-fw"}
    finally:
        assert poseidon("sandbox", "down").returncode == 0
