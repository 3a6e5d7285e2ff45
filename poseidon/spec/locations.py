"""Where a value is in a playbook: its location, a path of keys and indexes
(``("steps", 3, "apt", "packages")``); how that path reads (``steps[3].apt.packages``);
and where a step was written in its file (:class:`Source`).

Imports nothing of poseidon.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

#: A value's location: the keys and indexes that lead to it from the playbook's top.
Where = tuple[str | int, ...]


class Source(NamedTuple):
    """Where a step was written: ``site.yaml:12:5`` and ``steps[3].git``."""

    file: str
    line: int
    column: int
    path: str


def strings(value: object, loc: Where) -> Iterator[tuple[Where, str]]:
    """Every string in ``value`` and its location under ``loc``."""
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, (*loc, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, (*loc, key))


def step_strings(step: Mapping[Any, Any], loc: Where) -> Iterator[tuple[Where, str]]:
    """Every string of a step's values (in the models' shape) and its location under ``loc``.
    The step's own ``kind`` names it, and is no value; a ``kind`` deeper (an ``env:`` name) is."""
    for key, item in step.items():
        if key != "kind":
            yield from strings(item, (*loc, key))


class KeyText(str):
    """A non-string mapping key in a path, as the YAML writes it: ``[~]``, ``env[true]``."""


def render(loc: Where) -> str:
    """``loc`` as people read it: ``steps[3].apt.packages``."""
    text = ""
    for part in loc:
        if isinstance(part, (int, KeyText)):
            text += f"[{part}]"
        elif part != "[key]":
            text += f".{part}" if text else str(part)
    return text
