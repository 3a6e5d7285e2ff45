"""Substitution: the values a playbook's references take on a droplet
(:func:`substitutions`), and a step with them substituted and checked again
(:func:`expand`) by its own model: the values it substitutes say they are final
text (:class:`~.references.Substituted`), no flag does.

Imports :mod:`.playbook`, :mod:`.models`, :mod:`.locations` and :mod:`.references`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

from pydantic import ValidationError

from poseidon.errors import Problem, SpecError, UsageError
from poseidon.spec.locations import Source, render
from poseidon.spec.models import StepBase
from poseidon.spec.playbook import Playbook
from poseidon.spec.references import DROPLET_ATTRIBUTES, ValueTooLong, rewrite, substitute, to_text

# ---------------------------------------------------------------------------
# Substitution

_StepT = TypeVar("_StepT", bound=StepBase)


def substitutions(
    playbook: Playbook,
    *,
    droplet: object | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The values ``expand()`` takes: vars, ``env:NAME`` and ``droplet.attribute`` keys.

    A variable's value may use the others, ``${env:NAME}`` and
    ``${droplet.attribute}``: it is resolved here (validation refused
    cycles). ``droplet`` is a mapping or an object with the attributes of
    ``DROPLET_ATTRIBUTES``; lists (tags) are joined with commas, a missing
    address is empty. ``environ`` defaults to ``os.environ``. A reference
    whose value is missing (an unset environment variable) leaves its
    variable out, so that using it raises ``KeyError`` naming it.
    """
    environment = os.environ if environ is None else environ
    values: dict[str, str] = {f"env:{name}": value for name, value in environment.items()}
    if droplet is not None:
        for attribute in DROPLET_ATTRIBUTES:
            if isinstance(droplet, Mapping):
                raw = droplet.get(attribute)
            else:
                raw = getattr(droplet, attribute, None)
            values[f"droplet.{attribute}"] = to_text(raw)
    raw_vars = playbook.var_values(environment)
    resolving: set[str] = set()

    def resolve(name: str) -> str:
        if name in values:
            return values[name]
        if name not in raw_vars or name in resolving:
            raise KeyError(name)
        resolving.add(name)
        text = rewrite(raw_vars[name], resolve) if name not in playbook.secret_names() else raw_vars[name]
        resolving.discard(name)
        values[name] = text
        return text

    for name in raw_vars:
        try:
            resolve(name)
        except KeyError:
            continue  # unresolvable (an unset environment variable): absent, so a use names it
        except ValueTooLong as exc:
            raise UsageError(f"vars.{name}: {exc}") from None
    return values


def expand(step: _StepT, values: Mapping[str, str]) -> _StepT:
    """A copy of ``step`` with every ``${...}`` in its strings replaced from ``values``,
    except in the shell the user wrote (``shell_fields``): :mod:`poseidon.steps` binds
    those references as shell variables, so that a value never becomes syntax.

    Keys are ``app``, ``env:HOME``, ``droplet.name``; a missing one raises
    ``KeyError`` naming it. The result is validated again by the same model, now
    with the real values, so a variable cannot smuggle ``; rm`` into a package
    name: that raises ``SpecError`` located where the step was written. The
    substituted strings are :class:`~.references.Substituted`, so the field checks
    read them as they are (a ``${`` in them is text) and split a list item of
    words. Expand a step once: ``$${`` has become a plain ``${`` in the copy.
    """
    source = step.source or Source("<step>", 0, 0, step.model_dump()["kind"])
    try:
        data = substitute(step.model_dump(), values, step.shell_fields)
    except ValueTooLong as exc:
        raise SpecError([Problem(source.file, source.line, source.column, source.path, str(exc))]) from None
    try:
        expanded = type(step).model_validate(data)
    except ValidationError as exc:
        problems = [
            Problem(
                source.file,
                source.line,
                source.column,
                render((source.path, *error["loc"])),
                f"{error['msg']} (after substitution)",
            )
            for error in exc.errors(include_url=False)
        ]
        raise SpecError(problems) from exc
    expanded._source = step._source
    return expanded
