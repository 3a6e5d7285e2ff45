"""Where a value is in a playbook: its location, a path of keys and indexes
(``("steps", 3, "apt", "packages")``); how that path reads (``steps[3].apt.packages``);
and where a step was written in its file (:class:`Source`).

Imports nothing of poseidon.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

#: A value's location: the keys and indexes that lead to it from the playbook's top.
Where = tuple[str | int, ...]


class Source(NamedTuple):
    """Where a step was written: ``site.yaml:12:5`` and ``steps[3].git``."""

    file: str
    line: int
    column: int
    path: str


def strings(value: object, loc: Where) -> Iterator[tuple[Where, str]]:
    """Every string in ``value`` and its location under ``loc``; a ``kind`` key names a step, not a value."""
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, (*loc, index))
    elif isinstance(value, dict):
        for key, item in value.items():
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
