"""Reading the account: every request poseidon sends passes Prism's validation.

Prism answers with the document's static examples and ignores filters
(``name``, ``tag_name``): the expected values below are those examples.
"""

from __future__ import annotations

import pytest

from poseidon.api import Client
from poseidon.errors import APIError, ResolveError
from support.prism import Traffic

EXAMPLE_DROPLETS = {3164444: "example.com", 3164459: "assets.example.com", 3164412: "stage.example.com"}


def test_the_account_is_read_with_a_request_prism_accepts(client: Client, traffic: Traffic) -> None:
    account = client.account()
    assert account["email"] == "sammy@digitalocean.com"
    assert account["droplet_limit"] == 25
    assert traffic.requests() == [("GET", "/v2/account")]
    traffic.assert_all_accepted()


def test_listing_droplets_reads_the_example_page_and_stops_without_a_next_link(
    client: Client, traffic: Traffic
) -> None:
    droplets = client.droplets.list()
    assert {d.id: d.name for d in droplets} == EXAMPLE_DROPLETS
    assert droplets[0].ip_address == "192.241.165.154"
    assert droplets[0].region == "nyc3"
    # The example's links.pages is empty: one request per kind (GPU droplets are
    # listed only when asked for), with the largest page the document allows.
    assert traffic.requests() == [
        ("GET", "/v2/droplets?per_page=200"),
        ("GET", "/v2/droplets?per_page=200&type=gpus"),
    ]
    traffic.assert_all_accepted()


def test_listing_droplets_by_tag_sends_the_tag_name_filter(client: Client, traffic: Traffic) -> None:
    droplets = client.droplets.list(tag="web")
    # Prism ignores the filter and answers the whole example.
    assert len(droplets) == len(EXAMPLE_DROPLETS)
    assert traffic.requests() == [("GET", "/v2/droplets?per_page=200&tag_name=web")]
    traffic.assert_all_accepted()


def test_a_droplet_is_read_by_its_id(client: Client, traffic: Traffic) -> None:
    droplet = client.droplets.get(3164444)
    assert (droplet.id, droplet.name, droplet.status) == (3164444, "example.com", "active")
    assert droplet.private_ip_address == "10.128.192.124"
    assert traffic.requests() == [("GET", "/v2/droplets/3164444")]
    traffic.assert_all_accepted()


def test_by_name_picks_the_one_droplet_named_exactly_so_among_what_the_api_returns(
    client: Client, traffic: Traffic
) -> None:
    # Prism ignores the `name` filter and returns all three example droplets,
    # so this also exercises by_name's own exact-name selection.
    droplet = client.droplets.by_name("assets.example.com")
    assert (droplet.id, droplet.ip_address) == (3164459, "162.243.0.4")
    assert traffic.requests() == [
        ("GET", "/v2/droplets?per_page=200&name=assets.example.com"),
        ("GET", "/v2/droplets?per_page=200&name=assets.example.com&type=gpus"),
    ]
    traffic.assert_all_accepted()


def test_by_name_refuses_a_name_no_droplet_has(client: Client, traffic: Traffic) -> None:
    # The message's hint then calls Prism's three unfiltered droplets "names
    # differing in case only": by_name trusts the API's filter for that hint.
    with pytest.raises(ResolveError, match="no droplet named 'web-1'"):
        client.droplets.by_name("web-1")
    traffic.assert_all_accepted()


def test_listing_keys_reads_the_example_key(client: Client, traffic: Traffic) -> None:
    keys = client.keys.list()
    assert [(k["id"], k["name"]) for k in keys] == [(289794, "Other Public Key")]
    assert keys[0]["fingerprint"] == "3b:16:e4:bf:8b:00:8b:b8:59:8c:a9:d3:f0:19:fa:45"
    assert traffic.requests() == [("GET", "/v2/account/keys?per_page=200")]
    traffic.assert_all_accepted()


def test_listing_images_reads_the_example_page(client: Client, traffic: Traffic) -> None:
    images = client.images.list()
    assert len(images) == 6
    assert "ubuntu-20-04-x64" in [image["slug"] for image in images]
    assert [method for method, _ in traffic.requests()] == ["GET"]
    assert traffic.requests()[0][1].startswith("/v2/images?")
    traffic.assert_all_accepted()


@pytest.mark.parametrize("resource", ["regions", "sizes"])
def test_listing_follows_the_next_link_on_prism_and_stops_when_the_example_loops(
    client: Client, traffic: Traffic, resource: str
) -> None:
    # The document's example for /v2/regions (and /v2/sizes) is page 1 of a
    # 1-per-page listing whose next link names https://api.digitalocean.com.
    # The client must follow it on its own base URL (Prism), never on that
    # host; Prism answers page 2 with the same example and the same link, so
    # the client's loop guard must stop instead of asking forever.
    with pytest.raises(APIError, match=f"loops back to /v2/{resource}\\?page=2&per_page=1"):
        getattr(client, resource).list()
    assert traffic.requests() == [
        ("GET", f"/v2/{resource}?per_page=200"),
        ("GET", f"/v2/{resource}?page=2&per_page=1"),
    ]
    traffic.assert_all_accepted()


def test_listing_domains_reads_the_example_domain(client: Client, traffic: Traffic) -> None:
    domains = client.domains.list()
    assert [(d["name"], d["ttl"]) for d in domains] == [("example.com", 1800)]
    assert traffic.requests() == [("GET", "/v2/domains?per_page=200")]
    traffic.assert_all_accepted()


def test_listing_domain_records_reads_the_example_records(client: Client, traffic: Traffic) -> None:
    records = client.domains.records("example.com").list()
    assert [(r["type"], r["name"], r["data"]) for r in records] == [
        ("NS", "@", "ns1.digitalocean.com"),
        ("NS", "@", "ns2.digitalocean.com"),
        ("NS", "@", "ns3.digitalocean.com"),
        ("A", "@", "1.2.3.4"),
    ]
    assert traffic.requests() == [("GET", "/v2/domains/example.com/records?per_page=200")]
    traffic.assert_all_accepted()
