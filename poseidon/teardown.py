"""``poseidon destroy``: delete what a playbook created, and only that.

A playbook's droplets with ``create:`` carry its owner tag
(:meth:`spec.Playbook.owner_tag`) from birth. :func:`survey` finds them and
the A records their ``dns:`` keeps; a droplet of the same name without the
tag was made by someone else and is refused, named. :func:`destroy` deletes
the records, then the droplets, and waits until the API no longer has them.
Droplets the playbook only names (no ``create:``) are never touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from poseidon import api, dns, spec
from poseidon.droplet import Droplet
from poseidon.errors import NotFoundError, UsageError, WaitTimeoutError

__all__ = ["Refusal", "Teardown", "destroy", "record_name", "survey"]


@dataclass(frozen=True)
class Refusal:
    """A droplet ``destroy`` will not delete, and why."""

    name: str
    id: int
    reason: str


@dataclass
class Teardown:
    """What ``destroy`` deletes for a playbook, what it refuses, and what it leaves."""

    tag: str
    droplets: list[Droplet] = field(default_factory=list)
    #: ``(domain, record)``: the A records that point at the droplets deleted.
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    #: Droplets the playbook names without ``create:``: never deleted.
    kept: list[str] = field(default_factory=list)
    #: ``(domain, record)``: A records of the playbook's ``dns:`` names that point at no droplet
    #: deleted here (a droplet gone already, moved, or not the playbook's): left, and listed.
    left: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.droplets and not self.records

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "droplets": [{"name": d.name, "id": d.id, "ip_address": d.ip_address} for d in self.droplets],
            "records": [
                {"record": record_name(domain, record), "type": "A", "data": record.get("data"), "id": record.get("id")}
                for domain, record in self.records
            ],
            "refused": [{"name": r.name, "id": r.id, "reason": r.reason} for r in self.refused],
            "kept": self.kept,
            "left": [
                {"record": record_name(domain, record), "type": "A", "data": record.get("data"), "id": record.get("id")}
                for domain, record in self.left
            ],
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
    domains: set[str] | None = None
    for ref in playbook.droplets:
        if not isinstance(ref, spec.NamedDroplet):
            continue  # a tag selects droplets the playbook did not create
        ours = []
        if ref.create is None:
            teardown.kept.append(ref.name)
        else:
            for droplet in client.droplets.find(ref.name):
                if teardown.tag in droplet.tags:
                    ours.append(droplet)
                    continue
                reason = f"it does not carry the tag {teardown.tag}: this playbook did not create it"
                teardown.refused.append(Refusal(droplet.name, droplet.id, reason))
            teardown.droplets += ours
        if ref.dns is not None:
            if domains is None:
                domains = {d["name"] for d in client.domains.list()}
            addresses = {d.ip_address for d in ours}
            for record in dns.records_of(ref.dns, client, domains):
                pointing = record.get("data") in addresses
                (teardown.records if pointing else teardown.left).append((ref.dns.domain, record))
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
    for domain, record in teardown.records:
        try:
            client.domains.records(domain).delete(int(record["id"]))
        except NotFoundError:
            pass  # gone already: what was asked for
        if said:
            said(f"deleted dns {record_name(domain, record)} A {record.get('data')}")
    for droplet in teardown.droplets:
        try:
            client.droplets.delete(droplet.id)
        except NotFoundError:
            pass
    _wait_until_gone(teardown.droplets, client, timeout)
    if said:
        for droplet in teardown.droplets:
            said(f"deleted droplet {droplet.name} (id {droplet.id}, {droplet.ip_address or 'no address'})")


def _wait_until_gone(droplets: list[Droplet], client: api.Client, timeout: float) -> None:
    deadline = client.clock() + timeout
    waiting = {d.id: d.name for d in droplets}
    while waiting:
        for droplet_id in list(waiting):
            try:
                client.droplets.get(droplet_id)
            except NotFoundError:
                del waiting[droplet_id]
        if not waiting:
            return
        if client.clock() > deadline:
            names = ", ".join(f"{name} (id {i})" for i, name in waiting.items())
            raise WaitTimeoutError(f"still there after {timeout:g} s: {names}")
        client.sleep(client.poll_interval)


def record_name(domain: str, record: dict[str, Any]) -> str:
    """The name a record of ``domain`` answers for: ``www.example.com``, the domain for ``@``."""
    name = str(record.get("name", "@"))
    return domain if name == "@" else f"{name}.{domain}"
