"""The checks across fields of a playbook: droplets or DNS records selected twice,
references that resolve to nothing, variables that refer to each other in a cycle,
two nohup steps managing one process.

Imports :mod:`.models`, :mod:`.locations` and :mod:`.references`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from poseidon.spec.locations import render
from poseidon.spec.models import STEP_MODELS, DNSRecord, NamedDroplet, NohupStep, TaggedDroplets, derived_process_name
from poseidon.spec.references import reference_errors, shell_errors, tokens

def step_text_errors(
    kind: str, loc: tuple[str | int, ...], text: str, var_names: set[str]
) -> list[str]:
    """The reference problems of one string of a step; ``loc`` is its place, from ``("steps", i, kind)``."""
    errors = reference_errors(text, var_names)
    model = STEP_MODELS.get(kind)
    field = ".".join(str(part) for part in loc[3:])
    if model is not None and field in model.shell_fields:
        errors += shell_errors(text)
    return errors


def _var_references(value: object) -> list[str]:
    """The variables a ``vars:`` value refers to (not ``env:`` or ``droplet.``)."""
    if not isinstance(value, str):
        return []
    return [
        t.text for t in tokens(value) if t.kind == "reference" and ":" not in t.text and "." not in t.text
    ]


def var_problems(variables: Mapping[Any, Any]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """``(("vars", name), message)`` for each value referring to what does not exist, or to itself."""
    names = {name for name in variables if isinstance(name, str)}
    for name, value in variables.items():
        if isinstance(value, str):
            for message in reference_errors(value, names):
                yield ("vars", name), message
    uses = {name: [n for n in _var_references(value) if n in names] for name, value in variables.items()}
    reported: set[str] = set()
    for name in uses:
        cycle = _cycle_from(name, uses)
        if cycle and not reported & set(cycle):
            reported.update(cycle)
            chain = " -> ".join(f"${{{n}}}" for n in [*cycle, cycle[0]])
            yield ("vars", name), f"the variables refer to each other in a cycle: {chain}"


def _cycle_from(start: str, uses: Mapping[str, list[str]]) -> list[str] | None:
    """The variables of a cycle through ``start``, in order from it, or ``None``."""
    path: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> list[str] | None:
        if name == start and path:
            return list(path)
        if name in seen:
            return None
        seen.add(name)
        path.append(name)
        for used in uses.get(name, []):
            found = visit(used)
            if found:
                return found
        path.pop()
        return None

    return visit(start)


def _droplet_key(entry: object) -> tuple[str, str] | None:
    """What a droplet entry selects: ``("droplet", name)`` or ``("tag", tag)``."""
    if isinstance(entry, NamedDroplet):
        return "droplet", entry.name
    if isinstance(entry, TaggedDroplets):
        return "tag", entry.tag
    if isinstance(entry, str):
        return "droplet", entry
    if isinstance(entry, dict):
        if "name" in entry:
            return ("droplet", entry["name"]) if isinstance(entry["name"], str) else None
        if isinstance(entry.get("tag"), str):
            return "tag", entry["tag"]
    return None


def _dns_key(entry: object) -> tuple[str, str] | None:
    """``("dns record", "www.example.com")`` for an entry with ``dns:``: two droplets cannot both own one."""
    record = entry.dns if isinstance(entry, NamedDroplet) else entry.get("dns") if isinstance(entry, dict) else None
    if isinstance(record, DNSRecord):
        return "dns record", record.fqdn
    if isinstance(record, dict) and isinstance(record.get("domain"), str):
        name = record.get("name", "@")
        return "dns record", record["domain"] if name == "@" else f"{name}.{record['domain']}"
    return None


def duplicate_droplets(entries: list[Any]) -> Iterator[tuple[int, int, str]]:
    """``(index, first index, message)`` for each entry selecting what an earlier one does,
    or keeping a DNS record an earlier one keeps."""
    first: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(entries):
        for key in (_droplet_key(entry), _dns_key(entry)):
            if key is None:
                continue
            if key in first:
                yield index, first[key], f"duplicate {key[0]} {key[1]!r}"
            else:
                first[key] = index


def nohup_name(body: object) -> str | None:
    """The process name of a ``nohup`` step as written (a command, or a mapping), when it has one."""
    if isinstance(body, str):
        return derived_process_name(body)
    if isinstance(body, dict):
        name, cmd = body.get("name"), body.get("cmd")
        if isinstance(name, str):
            return name
        if isinstance(cmd, str):
            return derived_process_name(cmd)
    return None


def process_conflicts(steps: Iterable[tuple[int, NohupStep]]) -> list[str]:
    """``steps[i]: …`` for each ``(index, nohup step)`` whose process an earlier one manages: for
    names made of values (``name: "${app}"``), once they are substituted."""
    named = [(index, step.process_name()) for index, step in steps]
    return [f"{render(where)}: {message}" for where, message in duplicate_processes(named)]


def duplicate_processes(named: Iterable[tuple[int, str]]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """``(("steps", i), message)`` for each nohup step that names an earlier one's process."""
    first: dict[str, int] = {}
    for index, name in named:
        if name in first:
            yield (
                ("steps", index),
                f"process {name!r} is already started by steps[{first[name]}]: two nohup steps would fight"
                " over it; give one another name:",
            )
        else:
            first[name] = index
