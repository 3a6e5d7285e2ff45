"""The checks across the fields of a playbook, written once, over plain data.

A playbook here is what ``Playbook.model_dump()`` gives, or what the YAML loader
builds from a file: a mapping with ``droplets``, ``vars`` and ``steps``, each step in
the models' shape ``{"kind": ..., field: ...}``. Any value may be anything: a check
reads what it can and leaves the rest to the models. :func:`problems` returns
``(location, message)`` pairs; :class:`~.playbook.Playbook` raises them (as one error
of type :data:`ERROR_TYPE`), the YAML loader puts each on its own node.

Imports :mod:`.models` (each kind's shell fields, a command's process name),
:mod:`.locations` and :mod:`.references`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeGuard

from pydantic_core import PydanticCustomError

from poseidon.spec.locations import Where, render, step_strings
from poseidon.spec.models import STEP_MODELS, NohupStep, derived_process_name
from poseidon.spec.references import reference_errors, shell_errors, tokens

#: A problem and where it is.
Finding = tuple[Where, str]
#: How a message names another place: ``droplets[0]`` from Python, ``line 3`` from a file.
Cite = Callable[[Where], str]
#: The type of the error :class:`~.playbook.Playbook` raises for them.
ERROR_TYPE = "poseidon_playbook"


def problems(playbook: Mapping[Any, Any], cite: Cite = render) -> list[Finding]:
    """Every problem across the fields of ``playbook``: droplets or DNS records selected twice,
    variables that refer to nothing or to each other in a cycle, step values whose references
    resolve to nothing, two nohup steps managing one process, two service steps of one unit."""
    droplets, variables, steps = (playbook.get(key) for key in ("droplets", "vars", "steps"))
    droplets = droplets if isinstance(droplets, list) else []
    variables = variables if isinstance(variables, dict) else {}
    steps = steps if isinstance(steps, list) else []
    names = {name for name in variables if isinstance(name, str)}
    named = [(index, name) for index, step in enumerate(steps) if (name := _process_name(step))]
    services = [
        (index, step["name"])
        for index, step in enumerate(steps)
        if _is_step(step) and step["kind"] == "service" and isinstance(step.get("name"), str)
    ]
    return [
        *_duplicate_droplets(droplets, cite),
        *_var_problems(variables),
        *_step_reference_problems(steps, names),
        *_duplicate_processes(named),
        *_duplicate_services(services),
    ]


def error(found: list[Finding]) -> PydanticCustomError:
    """The one error that says each of them, ``where: message``, in order."""
    message = "; ".join(f"{render(where)}: {text}" for where, text in found)
    return PydanticCustomError(ERROR_TYPE, "{message}", {"message": message})


def _var_references(value: object) -> list[str]:
    """The variables a ``vars:`` value refers to (not ``env:`` or ``droplet.``)."""
    if not isinstance(value, str):
        return []
    return [t.text for t in tokens(value) if t.kind == "reference" and ":" not in t.text and "." not in t.text]


def _var_problems(variables: Mapping[Any, Any]) -> Iterator[Finding]:
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
    record = entry.get("dns") if isinstance(entry, dict) else None
    if isinstance(record, dict) and isinstance(record.get("domain"), str):
        name = record.get("name", "@")
        return "dns record", record["domain"] if name == "@" else f"{name}.{record['domain']}"
    return None


def _duplicate_droplets(entries: list[Any], cite: Cite) -> Iterator[Finding]:
    """Each entry selecting what an earlier one does, or keeping a DNS record an earlier one keeps."""
    first: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(entries):
        for key in (_droplet_key(entry), _dns_key(entry)):
            if key is None:
                continue
            if key in first:
                earlier = cite(("droplets", first[key]))
                yield ("droplets", index), f"duplicate {key[0]} {key[1]!r} (first at {earlier})"
            else:
                first[key] = index


def _step_reference_problems(steps: list[Any], names: set[str]) -> Iterator[Finding]:
    """Each reference of a step's values that resolves to nothing, or that shell the user wrote
    could never receive as data."""
    for index, step in enumerate(steps):
        model = STEP_MODELS.get(step["kind"]) if _is_step(step) else None
        if model is None:
            continue
        for where, text in step_strings(step, ("steps", index, step["kind"])):
            for message in reference_errors(text, names):
                yield where, message
            if ".".join(str(part) for part in where[3:]) in model.shell_fields:
                for message in shell_errors(text):
                    yield where, message


def _process_name(step: object) -> str | None:
    """The process a ``nohup`` step manages, when its values tell."""
    if not (_is_step(step) and step["kind"] == "nohup"):
        return None
    name, cmd = step.get("name"), step.get("cmd")
    if isinstance(name, str):
        return name
    if isinstance(cmd, str):
        return derived_process_name(cmd)
    return None


def _is_step(step: object) -> TypeGuard[dict[str, Any]]:
    return isinstance(step, dict) and isinstance(step.get("kind"), str)


def process_conflicts(steps: Iterable[tuple[int, NohupStep]]) -> list[str]:
    """``steps[i]: …`` for each ``(index, nohup step)`` whose process an earlier one manages: for
    names made of values (``name: "${app}"``), once they are substituted."""
    named = [(index, step.process_name()) for index, step in steps]
    return [f"{render(where)}: {message}" for where, message in _duplicate_processes(named)]


def _duplicate_services(named: Iterable[tuple[int, str]]) -> Iterator[Finding]:
    """``(("steps", i), message)`` for each service step that names an earlier one's unit."""
    return _duplicates(
        named, "service {name!r} is already run by steps[{first}]: two service steps would fight over its unit"
    )


def _duplicate_processes(named: Iterable[tuple[int, str]]) -> Iterator[Finding]:
    """``(("steps", i), message)`` for each nohup step that names an earlier one's process."""
    return _duplicates(
        named, "process {name!r} is already started by steps[{first}]: two nohup steps would fight over it"
    )


def _duplicates(named: Iterable[tuple[int, str]], clash: str) -> Iterator[Finding]:
    """``(("steps", i), clash + advice)`` for each step whose name an earlier one has (``clash`` formats
    ``name`` and ``first``, that step's index)."""
    first: dict[str, int] = {}
    for index, name in named:
        if name in first:
            yield ("steps", index), clash.format(name=name, first=first[name]) + "; give one another name:"
        else:
            first[name] = index
