"""``poseidon destroy``: delete what a playbook created, and only that.

A playbook's droplets with ``create:`` carry its owner tag
(:meth:`spec.Playbook.owner_tag`) from birth. :func:`survey` finds them and
the A records their ``dns:`` keeps; a droplet of the same name without the
tag was made by someone else and is refused, named. :func:`destroy` deletes
the records, then the droplets, and waits until the API no longer has them.
Droplets the playbook only names (no ``create:``) are never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from poseidon import api, dns, spec
from poseidon.droplet import Droplet
from poseidon.errors import NotFoundError, UsageError

__all__ = ["Record", "Refusal", "Teardown", "destroy", "survey"]


@dataclass(frozen=True)
class Refusal:
    """A droplet ``destroy`` will not delete, and why."""

    name: str
    id: int
    reason: str


@dataclass(frozen=True)
class Record:
    """An A record answering for one of the playbook's ``dns:`` names."""

    dns: spec.DNSRecord
    id: int
    data: str

    def __str__(self) -> str:
        return f"dns {self.dns.fqdn} A {self.data}"

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.dns.fqdn, "type": "A", "data": self.data, "id": self.id}


@dataclass
class Teardown:
    """What ``destroy`` deletes for a playbook, what it refuses, and what it leaves."""

    tag: str
    droplets: list[Droplet] = field(default_factory=list)
    #: The A records that point at the droplets deleted.
    records: list[Record] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    #: Droplets the playbook names without ``create:``: never deleted.
    kept: list[str] = field(default_factory=list)
    #: A records of the playbook's ``dns:`` names that point at no droplet deleted here
    #: (a droplet gone already, moved, or not the playbook's): left, and listed.
    left: list[Record] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.droplets and not self.records

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "droplets": [{"name": d.name, "id": d.id, "ip_address": d.ip_address} for d in self.droplets],
            "records": [r.to_dict() for r in self.records],
            "refused": [{"name": r.name, "id": r.id, "reason": r.reason} for r in self.refused],
            "kept": self.kept,
            "left": [r.to_dict() for r in self.left],
        }


def survey(playbook: spec.Playbook, path: str, client: api.Client) -> Teardown:
    """What ``destroy`` would do to the playbook at ``path``; changes nothing.

    Refuses (``UsageError``) a playbook without ``name:``: its tag would come
    from its file name, which other playbooks may share.
    """
    if playbook.name is None:
        raise UsageError(
            f"destroy needs the playbook's name: (its droplets carry {playbook.owner_tag(path)}, from its file name,"
            " which other playbooks may share): add name: to it"
        )
    teardown = Teardown(playbook.owner_tag(path))
    named = [ref for ref in playbook.droplets if isinstance(ref, spec.NamedDroplet)]  # a tag selects others' droplets
    found = client.droplets.find_many(ref.name for ref in named if ref.create is not None)
    domains = dns.domain_names(client) if any(ref.dns for ref in named) else set()
    for ref in named:
        ours = []
        if ref.create is None:
            teardown.kept.append(ref.name)
        else:
            for droplet in found[ref.name]:
                if teardown.tag in droplet.tags:
                    ours.append(droplet)
                    continue
                reason = f"it does not carry the tag {teardown.tag}: this playbook did not create it"
                teardown.refused.append(Refusal(droplet.name, droplet.id, reason))
            teardown.droplets += ours
        if ref.dns is not None:
            addresses = {d.ip_address for d in ours}
            for found_record in dns.records_of(ref.dns, client, domains):
                record = Record(ref.dns, int(found_record["id"]), str(found_record.get("data")))
                (teardown.records if record.data in addresses else teardown.left).append(record)
    return teardown


def destroy(
    teardown: Teardown,
    client: api.Client,
    *,
    timeout: float = 300.0,
    said: Callable[[str], None] | None = None,
) -> None:
    """Delete the records, then the droplets, and wait until the API has none of them left.

    ``said`` hears one line per thing deleted. Raises ``WaitTimeoutError``
    naming the droplets still there after ``timeout`` seconds.
    """
    for record in teardown.records:
        try:
            client.domains.records(record.dns.domain).delete(record.id)
        except NotFoundError:
            pass  # gone already: what was asked for
        if said:
            said(f"deleted {record}")
    for droplet in teardown.droplets:
        try:
            client.droplets.delete(droplet.id)
        except NotFoundError:
            pass
    client.droplets.wait_deleted([d.id for d in teardown.droplets], timeout=timeout)
    if said:
        for droplet in teardown.droplets:
            said(f"deleted droplet {droplet.name} (id {droplet.id}, {droplet.ip_address or 'no address'})")
