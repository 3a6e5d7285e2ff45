"""The reference language of step values: ``${name}``, ``${env:NAME}``, ``${droplet.attribute}``,
and ``$${`` for a literal ``${``.

What a text refers to (:func:`references`, :func:`parts`), what is wrong with its
references (:func:`reference_errors`), and the text with them substituted
(:func:`rewrite`, :func:`substitute`, :func:`preview`); text substitution wrote is
:class:`Substituted`, final. Knows text only, no model: imports :mod:`poseidon.shell`
and nothing else of poseidon.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Literal, NamedTuple

from poseidon import shell

DROPLET_ATTRIBUTES: tuple[str, ...] = (
    "name",
    "id",
    "ip_address",
    "private_ip_address",
    "region",
    "tags",
)


IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
IDENT_RE = re.compile(IDENT)
_TOKEN_RE = re.compile(r"\$\$\{|\$\{([^{}]*)\}|\$\{")
_REFERENCE_RE = re.compile(rf"env:{IDENT}|droplet\.{IDENT}|{IDENT}")
_MALFORMED = "use ${name}, ${env:NAME} or ${droplet.attribute}, and $${ for a literal ${"


class Token(NamedTuple):
    start: int
    end: int
    kind: Literal["literal", "reference", "malformed"]
    text: str  # the reference's name, the literal "${", or the malformed source text


def tokens(text: str) -> Iterator[Token]:
    for match in _TOKEN_RE.finditer(text):
        source = match.group(0)
        if source == "$${":
            yield Token(match.start(), match.end(), "literal", "${")
        elif match.group(1) is not None and _REFERENCE_RE.fullmatch(match.group(1)):
            yield Token(match.start(), match.end(), "reference", match.group(1))
        else:
            yield Token(match.start(), match.end(), "malformed", source)


#: The longest value, in characters, a substitution may build (one variable used 250,000 times would
#: otherwise build gigabytes from a playbook of one).
MAX_VALUE_CHARS = 1 << 20


class ValueTooLong(ValueError):
    """A value that substitution would make longer than :data:`MAX_VALUE_CHARS`."""


def rewrite(text: str, reference: Callable[[str], str]) -> str:
    parts: list[str] = []
    size = 0
    position = 0
    for token in tokens(text):
        parts.append(text[position : token.start])
        parts.append(reference(token.text) if token.kind == "reference" else token.text)
        size += len(parts[-2]) + len(parts[-1])
        if size > MAX_VALUE_CHARS:
            raise ValueTooLong(f"once its references are substituted it is over {MAX_VALUE_CHARS:,} characters")
        position = token.end
    parts.append(text[position:])
    return "".join(parts)


def preview(text: str, values: Mapping[str, str]) -> str:
    """``text`` with the references ``values`` holds substituted and the others as written:
    how a step reads before the droplet it runs on is known (its label)."""
    try:
        return rewrite(text, lambda name: values.get(name, f"${{{name}}}"))
    except ValueTooLong:
        return text


def parts(text: str) -> list[str | shell.Reference]:
    """``text`` as literal pieces and the references between them (``$${`` is a literal ``${``).

    Raises ``ValueError`` for a malformed reference such as ``${a b}``.
    """
    pieces: list[str | shell.Reference] = []
    literal = ""
    position = 0
    for token in tokens(text):
        literal += text[position : token.start]
        position = token.end
        if token.kind == "malformed":
            raise ValueError(f"malformed reference {token.text!r}: {_MALFORMED}")
        if token.kind == "literal":
            literal += token.text
            continue
        if literal:
            pieces.append(literal)
        pieces.append(shell.Reference(token.text))
        literal = ""
    literal += text[position:]
    if literal:
        pieces.append(literal)
    return pieces


def references(text: str) -> list[str]:
    """The names ``text`` refers to, in order, each once: ``app``, ``env:HOME``, ``droplet.name``.

    Raises ``ValueError`` for a malformed reference such as ``${a b}``.
    """
    names: list[str] = []
    for token in tokens(text):
        if token.kind == "malformed":
            raise ValueError(f"malformed reference {token.text!r}: {_MALFORMED}")
        if token.kind == "reference" and token.text not in names:
            names.append(token.text)
    return names


def reference_errors(text: str, var_names: set[str]) -> list[str]:
    errors: list[str] = []
    for token in tokens(text):
        if token.kind == "malformed":
            errors.append(f"malformed reference {token.text!r}: {_MALFORMED}")
        elif token.kind == "reference":
            name = token.text
            if name.startswith("env:"):
                continue  # the environment is the running machine's, checked when a run starts
            if name.startswith("droplet."):
                attribute = name.partition(".")[2]
                if attribute not in DROPLET_ATTRIBUTES:
                    known = ", ".join(DROPLET_ATTRIBUTES)
                    errors.append(f"unknown droplet attribute {attribute!r} (known: {known})")
            elif name not in var_names:
                errors.append(f"undefined variable {name!r}")
    return errors


def shell_errors(text: str) -> list[str]:
    """Why a reference in shell the user wrote could never arrive as data (a quoted here-document)."""
    try:
        return shell.check(parts(text))
    except ValueError:
        return []  # malformed: reference_errors says so


def to_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(to_text(item) for item in value)
    return str(value)


class Substituted(str):
    """Text that substitution wrote: final, no longer in the reference language (a ``${`` in
    it is text). A field check reads it as it is, where it reads written text with each
    reference standing for a plain word."""


def substitute(value: object, values: Mapping[str, str], keep: frozenset[str] = frozenset(), at: str = "") -> object:
    """``value`` with its references replaced, except in the fields named in ``keep`` (dotted paths).

    Every other string of it, mapping keys included, comes out :class:`Substituted`.
    """
    if isinstance(value, str):
        return value if at in keep else Substituted(rewrite(value, lambda name: to_text(values[name])))
    if isinstance(value, list):
        return [substitute(item, values, keep, at) for item in value]
    if isinstance(value, dict):
        return {
            Substituted(key) if isinstance(key, str) else key: substitute(
                item, values, keep, f"{at}.{key}" if at else str(key)
            )
            for key, item in value.items()
        }
    return value
