"""Creating things: the bodies poseidon sends pass Prism's validation.

Prism answers a valid request with the document's example, not with what
was asked for (a droplet created as 'web-1' comes back as 'example.com'),
so these tests check the request that was sent and that it was accepted.
"""

from __future__ import annotations

from poseidon.api import Client
from support.prism import Traffic

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBDd5v9aiy0cBh2R0g3pbs4UKZKmPm8fF0mDV4Nrqsyh me@laptop"


def test_creating_a_droplet_without_waiting_sends_one_valid_post(client: Client, traffic: Traffic) -> None:
    droplet = client.droplets.create(
        "web-1",
        region="nyc3",
        size="s-1vcpu-1gb",
        image="ubuntu-22-04-x64",
        ssh_keys=(289794,),
        tags=("web",),
        wait=False,
    )
    assert (droplet.id, droplet.status) == (3164444, "new")
    # wait=False: no polling of the droplet or its action afterwards.
    assert traffic.requests() == [("POST", "/v2/droplets")]
    body = traffic.exchanges[0].body
    assert {k: body[k] for k in ("name", "region", "size", "image")} == {
        "name": "web-1",
        "region": "nyc3",
        "size": "s-1vcpu-1gb",
        "image": "ubuntu-22-04-x64",
    }
    assert body["ssh_keys"] == [289794]
    assert body["tags"] == ["web"]
    assert traffic.exchanges[0].status == 202
    traffic.assert_all_accepted()


def test_creating_a_droplet_with_no_keys_or_tags_is_still_a_valid_request(client: Client, traffic: Traffic) -> None:
    client.droplets.create("web-2", region="nyc3", size="s-1vcpu-1gb", image="ubuntu-22-04-x64", wait=False)
    assert traffic.requests() == [("POST", "/v2/droplets")]
    # The document refuses "ssh_keys": null; an empty list or no key at all is fine.
    assert traffic.exchanges[0].body.get("ssh_keys", []) == []
    traffic.assert_all_accepted()


def test_rebooting_a_droplet_without_waiting_posts_one_reboot_action(client: Client, traffic: Traffic) -> None:
    droplet = client.droplets.get(3164444)
    droplet.reboot(wait=False)
    assert traffic.requests() == [("GET", "/v2/droplets/3164444"), ("POST", "/v2/droplets/3164444/actions")]
    assert traffic.exchanges[1].body == {"type": "reboot"}
    assert traffic.exchanges[1].status == 201
    traffic.assert_all_accepted()


def test_adding_an_ssh_key_sends_its_name_and_public_key(client: Client, traffic: Traffic) -> None:
    key = client.keys.create("laptop", PUBLIC_KEY)
    assert key["id"] == 512189  # the document's example, whatever was sent
    assert traffic.requests() == [("POST", "/v2/account/keys")]
    assert traffic.exchanges[0].body == {"name": "laptop", "public_key": PUBLIC_KEY}
    traffic.assert_all_accepted()


def test_creating_a_domain_with_an_address_sends_it(client: Client, traffic: Traffic) -> None:
    domain = client.domains.create("example.com", ip_address="192.0.2.10")
    assert domain["name"] == "example.com"
    assert traffic.requests() == [("POST", "/v2/domains")]
    assert traffic.exchanges[0].body == {"name": "example.com", "ip_address": "192.0.2.10"}
    traffic.assert_all_accepted()


def test_creating_a_domain_without_an_address_leaves_the_address_out(client: Client, traffic: Traffic) -> None:
    # The document refuses "ip_address": null, so None must not be sent.
    client.domains.create("example.com")
    assert traffic.requests() == [("POST", "/v2/domains")]
    body = traffic.exchanges[0].body
    assert body["name"] == "example.com"
    assert "ip_address" not in body
    traffic.assert_all_accepted()


def test_creating_a_domain_record_sends_its_type_name_data_and_default_ttl(client: Client, traffic: Traffic) -> None:
    record = client.domains.records("example.com").create("A", "www", "192.0.2.10")
    assert record["id"] == 28448433  # the document's example
    assert traffic.requests() == [("POST", "/v2/domains/example.com/records")]
    body = traffic.exchanges[0].body
    assert {k: body[k] for k in ("type", "name", "data", "ttl")} == {
        "type": "A",
        "name": "www",
        "data": "192.0.2.10",
        "ttl": 1800,
    }
    traffic.assert_all_accepted()
