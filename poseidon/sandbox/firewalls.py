"""The emulator's cloud firewalls: kept in memory, checked as the API checks them.

Ansible's ``digital_ocean_droplet`` lists firewalls before anything else, and other tools
manage them: list (paginated by the emulator), get, create, update, delete, and adding or
removing droplets, tags and rules. A droplet deleted leaves every firewall. Bodies that the
API would refuse are refused with 400, as the OpenAPI document says for firewalls.

Standard library only, as the emulator itself.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Firewalls", "Refused"]

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9.-]+")
_TAG = re.compile(r"[a-zA-Z0-9_\-:]{1,255}")
_PORTS = re.compile(r"0|all|[1-9][0-9]{0,4}(?:-[1-9][0-9]{0,4})?")
_PROTOCOLS = ("tcp", "udp", "icmp")
_TARGETS = ("addresses", "droplet_ids", "load_balancer_uids", "kubernetes_ids", "tags")


class Refused(Exception):
    """What the API answers instead: ``status`` (400, 404) and a message."""

    def __init__(self, status: int, message: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Firewalls:
    """Every firewall of the account, by id. ``droplet_exists(id)`` says which droplet ids are real;
    ``now()`` gives a creation time as the API writes it. The caller serializes access."""

    def __init__(self, droplet_exists: Callable[[int], bool], now: Callable[[], str]) -> None:
        self._droplet_exists = droplet_exists
        self._now = now
        self._by_id: dict[str, dict[str, Any]] = {}

    # -- reading ------------------------------------------------------------------------

    def every(self, droplet_id: int | None = None) -> list[dict[str, Any]]:
        """Every firewall (or those a droplet is in), oldest first."""
        return [copy.deepcopy(f) for f in self._by_id.values() if droplet_id is None or droplet_id in f["droplet_ids"]]

    def get(self, firewall_id: str) -> dict[str, Any]:
        return copy.deepcopy(self._firewall(firewall_id))

    # -- changing -----------------------------------------------------------------------

    def create(self, body: Any) -> dict[str, Any]:
        fields = self._whole(body)
        firewall = {
            "id": str(uuid.uuid4()),
            "status": "succeeded",
            "created_at": self._now(),
            "pending_changes": [],
            **fields,
        }
        self._by_id[firewall["id"]] = firewall
        return copy.deepcopy(firewall)

    def update(self, firewall_id: str, body: Any) -> dict[str, Any]:
        """Replace what a firewall is (name, rules, droplets, tags): a PUT is whole."""
        firewall = self._firewall(firewall_id)
        firewall.update(self._whole(body))
        return copy.deepcopy(firewall)

    def delete(self, firewall_id: str) -> None:
        self._firewall(firewall_id)
        del self._by_id[firewall_id]

    def add_droplets(self, firewall_id: str, body: Any) -> None:
        firewall = self._firewall(firewall_id)
        ids = self._droplet_ids(_field(body, "droplet_ids"), "droplet_ids", required=True)
        firewall["droplet_ids"] = _union(firewall["droplet_ids"], ids)

    def remove_droplets(self, firewall_id: str, body: Any) -> None:
        firewall = self._firewall(firewall_id)
        ids = self._droplet_ids(_field(body, "droplet_ids"), "droplet_ids", required=True, existing=False)
        firewall["droplet_ids"] = _without(firewall["droplet_ids"], ids)

    def add_tags(self, firewall_id: str, body: Any) -> None:
        firewall = self._firewall(firewall_id)
        firewall["tags"] = _union(firewall["tags"], _tags(_field(body, "tags"), "tags", required=True))

    def remove_tags(self, firewall_id: str, body: Any) -> None:
        firewall = self._firewall(firewall_id)
        gone = _tags(_field(body, "tags"), "tags", required=True)
        firewall["tags"] = _without(firewall["tags"], gone)

    def add_rules(self, firewall_id: str, body: Any) -> None:
        firewall = self._firewall(firewall_id)
        for kind, rules in self._rules(body).items():
            firewall[kind] = _union(firewall[kind], rules)

    def remove_rules(self, firewall_id: str, body: Any) -> None:
        firewall = self._firewall(firewall_id)
        for kind, rules in self._rules(body).items():
            firewall[kind] = _without(firewall[kind], rules)

    def forget_droplet(self, droplet_id: int) -> None:
        """A droplet was deleted: it leaves every firewall, and every rule that named it."""
        self._forget("droplet_ids", droplet_id)

    def forget_tag(self, tag: str) -> None:
        """A tag was deleted: it leaves every firewall, and every rule that named it."""
        self._forget("tags", tag)

    def _forget(self, key: str, value: object) -> None:
        """``value`` (under ``key``) leaves every firewall and rule; a rule left with nothing to
        allow goes too, so that what a client reads back it can write back as it is."""
        for firewall in self._by_id.values():
            firewall[key] = [v for v in firewall[key] if v != value]
            for kind, target in (("inbound_rules", "sources"), ("outbound_rules", "destinations")):
                for rule in firewall[kind]:
                    if key in rule[target]:
                        rule[target][key] = [v for v in rule[target][key] if v != value]
                firewall[kind] = [rule for rule in firewall[kind] if any(rule[target].get(k) for k in _TARGETS)]

    # -- a kept sandbox -----------------------------------------------------------------

    def state(self) -> list[dict[str, Any]]:
        return self.every()

    def restore(self, state: Iterable[dict[str, Any]]) -> None:
        self._by_id = {str(f["id"]): copy.deepcopy(f) for f in state}

    # -- checks -------------------------------------------------------------------------

    def _firewall(self, firewall_id: str) -> dict[str, Any]:
        firewall = self._by_id.get(firewall_id)
        if firewall is None:
            raise Refused(404)
        return firewall

    def _whole(self, body: Any) -> dict[str, Any]:
        """A firewall's fields as a create or an update gives them, checked."""
        if not isinstance(body, dict):
            raise Refused(400, "The request body must be a JSON object.")
        name = body.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 255:
            raise Refused(
                400,
                "name must begin with a letter or digit, then letters, digits, '.' or '-' (at least two characters)",
            )
        rules = self._rules(body)
        if not any(rules.values()):
            raise Refused(400, "At least one inbound or outbound rule is required.")
        return {
            "name": name,
            "droplet_ids": self._droplet_ids(body.get("droplet_ids"), "droplet_ids"),
            "tags": _tags(body.get("tags"), "tags"),
            "inbound_rules": rules.get("inbound_rules", []),
            "outbound_rules": rules.get("outbound_rules", []),
        }

    def _rules(self, body: Any) -> dict[str, list[dict[str, Any]]]:
        """The inbound and outbound rules of ``body``, checked; at least one rule is needed."""
        if not isinstance(body, dict):
            raise Refused(400, "The request body must be a JSON object.")
        found: dict[str, list[dict[str, Any]]] = {}
        for kind, target in (("inbound_rules", "sources"), ("outbound_rules", "destinations")):
            rules = body.get(kind)
            if rules is None:
                continue
            if not isinstance(rules, list):
                raise Refused(400, f"{kind} must be a list of rules.")
            found[kind] = _union([], [self._rule(rule, kind, target) for rule in rules])
        if not found:
            raise Refused(400, "At least one inbound or outbound rule is required.")
        return found

    def _rule(self, rule: Any, kind: str, target: str) -> dict[str, Any]:
        if not isinstance(rule, dict):
            raise Refused(400, f"each of {kind} is an object with protocol, ports and {target}.")
        protocol = rule.get("protocol")
        if protocol not in _PROTOCOLS:
            raise Refused(400, f"{kind}: protocol must be tcp, udp or icmp, not {protocol!r}.")
        ports = rule.get("ports", "0" if protocol == "icmp" else None)
        if protocol == "icmp":
            ports = "0"
        if not isinstance(ports, str) or not _PORTS.fullmatch(ports) or not _ports_in_range(ports):
            raise Refused(400, f"{kind}: ports must be a port, a range such as 8000-9000, or 0 for all.")
        where = rule.get(target)
        if not isinstance(where, dict) or not any(where.get(k) for k in _TARGETS):
            raise Refused(400, f"{kind}: {target} must name addresses, droplet_ids, tags or other resources.")
        return {"protocol": protocol, "ports": "0" if ports == "all" else ports, target: self._target(where, kind)}

    def _target(self, where: dict[str, Any], kind: str) -> dict[str, Any]:
        shown: dict[str, Any] = {}
        addresses = where.get("addresses")
        if addresses is not None:
            if not isinstance(addresses, list) or not all(_is_network(a) for a in addresses):
                raise Refused(400, f"{kind}: addresses must be IPv4 or IPv6 addresses or CIDRs.")
            shown["addresses"] = list(addresses)
        if where.get("droplet_ids") is not None:
            shown["droplet_ids"] = self._droplet_ids(where["droplet_ids"], f"{kind}: droplet_ids")
        for key in ("load_balancer_uids", "kubernetes_ids"):
            values = where.get(key)
            if values is not None:
                if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                    raise Refused(400, f"{kind}: {key} must be a list of ids.")
                shown[key] = list(values)
        if where.get("tags") is not None:
            shown["tags"] = _tags(where["tags"], f"{kind}: tags")
        return shown

    def _droplet_ids(self, value: Any, where: str, *, required: bool = False, existing: bool = True) -> list[int]:
        if value is None and not required:
            return []
        if not isinstance(value, list) or not all(type(i) is int for i in value):
            raise Refused(400, f"{where} must be a list of droplet ids.")
        if existing:
            unknown = [i for i in dict.fromkeys(value) if not self._droplet_exists(i)]
            if unknown:
                raise Refused(400, f"{where}: no droplet has the id {unknown[0]}.")
        return list(dict.fromkeys(value))


def _field(body: Any, name: str) -> Any:
    if not isinstance(body, dict):
        raise Refused(400, "The request body must be a JSON object.")
    return body.get(name)


def _tags(value: Any, where: str, *, required: bool = False) -> list[str]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) and _TAG.fullmatch(t) for t in value):
        raise Refused(400, f"{where} must be a list of tag names (letters, digits, _, - and :).")
    return list(dict.fromkeys(value))


def _key(item: Any) -> str:
    return json.dumps(item, sort_keys=True)


def _union(kept: list[Any], more: list[Any]) -> list[Any]:
    """``kept``, then what ``more`` adds, each once (in linear time: a request may name 100,000)."""
    seen = {_key(item) for item in kept}
    added = []
    for item in more:
        if _key(item) not in seen:
            seen.add(_key(item))
            added.append(item)
    return kept + added


def _without(kept: list[Any], gone: list[Any]) -> list[Any]:
    """``kept`` without what ``gone`` names (in linear time)."""
    drop = {_key(item) for item in gone}
    return [item for item in kept if _key(item) not in drop]


def _ports_in_range(ports: str) -> bool:
    if ports in ("0", "all"):
        return True
    bounds = [int(p) for p in ports.split("-")]
    return all(1 <= b <= 65535 for b in bounds) and bounds == sorted(bounds)


def _is_network(text: Any) -> bool:
    if not isinstance(text, str) or "%" in text:  # an IPv6 zone names an interface of this machine
        return False
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True
