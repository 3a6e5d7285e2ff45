"""The A records that follow droplets: a playbook's ``dns:`` entries, through the API.

``sync`` makes each record point at its droplet's public IPv4 (``plan``
only says what it would do); ``records_of`` finds a name's A records, for
``destroy``; ``domain_names`` lists the account's domains once for either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from poseidon import api
from poseidon.errors import APIConnectionError, APIError
from poseidon.results import DNSResult
from poseidon.spec import DNSRecord

__all__ = ["domain_names", "records_of", "sync"]


def sync(
    wanted: Iterable[tuple[str, DNSRecord, str | None]], client: api.Client, *, apply: bool
) -> dict[str, DNSResult]:
    """Per droplet name, its record made to point at ``address`` (or, without ``apply``, what would be done).

    ``wanted`` holds ``(droplet name, record, public IPv4)``; the address is
    ``None`` for a droplet still to be created. A domain the account lacks is
    created first. An API failure fails that record only.
    """
    results: dict[str, DNSResult] = {}
    domains: set[str] | None = None
    for name, record, address in wanted:
        try:
            if domains is None:
                domains = domain_names(client)
            results[name] = _sync_one(record, address, client, domains, apply)
        except (APIError, APIConnectionError) as exc:
            results[name] = DNSResult(record.fqdn, address, "failed", str(exc))
    return results


def _sync_one(record: DNSRecord, address: str | None, client: api.Client, domains: set[str], apply: bool) -> DNSResult:
    change = "changed" if apply else "would-change"
    created_domain = ""
    if record.domain not in domains:
        if not apply:
            return DNSResult(record.fqdn, address, change, f"to be created, in the new domain {record.domain}")
        client.domains.create(record.domain)
        domains.add(record.domain)
        created_domain = f", in the new domain {record.domain}"
    if address is None:
        if apply:
            return DNSResult(record.fqdn, None, "failed", "the droplet has no public IPv4 address")
        return DNSResult(record.fqdn, None, change, "to point at the droplet once it is created")
    records = client.domains.records(record.domain)
    found = records.list(type="A", name=record.name)
    if not found:
        if apply:
            records.create("A", record.name, address, ttl=record.ttl)
        return DNSResult(record.fqdn, address, change, ("created" if apply else "to be created") + created_domain)
    if len(found) > 1:
        listed = ", ".join(str(r.get("data")) for r in found)
        return DNSResult(
            record.fqdn,
            address,
            "failed",
            f"{len(found)} A records answer for it ({listed}): poseidon keeps one; remove the others",
        )
    current = found[0]
    if current.get("data") == address and current.get("ttl") == record.ttl:
        return DNSResult(record.fqdn, address, "ok", "points at the droplet")
    was = f"was {current.get('data')}, ttl {current.get('ttl')}"
    if apply:
        records.update(int(current["id"]), type="A", data=address, ttl=record.ttl)
    return DNSResult(record.fqdn, address, change, was)


def domain_names(client: api.Client) -> set[str]:
    """The account's domains (one listing: look them up once per command)."""
    return {d["name"] for d in client.domains.list()}


def records_of(record: DNSRecord, client: api.Client, domains: set[str]) -> list[dict[str, Any]]:
    """The A records answering for ``record``'s name (none when the account has not its domain)."""
    if record.domain not in domains:
        return []
    return client.domains.records(record.domain).list(type="A", name=record.name)
