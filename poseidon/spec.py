"""Playbook version 1: the models, a loader that locates every problem, the JSON Schema.

A playbook is YAML written by people, so this module is strict about what it
accepts and precise about where it refuses::

    loads(text, filename) / load(path)  ->  Playbook, or SpecError listing every Problem
    expand(step, values)                ->  a copy of the step with ${...} substituted
    json_schema()                       ->  the schema editors use, short forms included

Each step is written as a one-key mapping, ``{kind: body}``: a scalar or list
body fills the step's ``primary`` field (the short form), a mapping body gives
its options (the long form). Validation happens on the models' own shape
(``{"kind": "apt", "packages": [...]}``), so pydantic's error locations read
``("steps", 3, "apt", "packages")`` and map back onto the YAML nodes.

References (``${name}``, ``${env:NAME}``, ``${droplet.attribute}``; ``$${`` is
a literal ``${``) appear in step values only. ``load()`` checks that each one
can be resolved; fields that must match a pattern are checked with each
reference standing for a plain word, then checked again by ``expand()`` once
the real value is known. Variable values are inserted verbatim, never
expanded themselves.
"""

from __future__ import annotations

import codecs
import copy
import hashlib
import math
import os
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, NoReturn, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from poseidon import shell
from poseidon.errors import Problem, SpecError, UsageError, did_you_mean

__all__ = [
    "DROPLET_ATTRIBUTES",
    "MAX_PLAYBOOK_BYTES",
    "MAX_VALUE_CHARS",
    "STEP_KINDS",
    "STEP_MODELS",
    "SecretVar",
    "AptStep",
    "ChdirStep",
    "CreateDroplet",
    "DropletRef",
    "GitStep",
    "NamedDroplet",
    "NohupStep",
    "PipRStep",
    "PipStep",
    "Playbook",
    "ReadyCheck",
    "Report",
    "RunStep",
    "Source",
    "Step",
    "StepBase",
    "TaggedDroplets",
    "droplet_name_problem",
    "expand",
    "json_schema",
    "load",
    "loads",
    "parts",
    "process_conflicts",
    "references",
    "substitutions",
]

DROPLET_ATTRIBUTES: tuple[str, ...] = (
    "name",
    "id",
    "ip_address",
    "private_ip_address",
    "region",
    "tags",
)

# ---------------------------------------------------------------------------
# References: ${name}, ${env:NAME}, ${droplet.attribute}, and $${ for a literal ${

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_IDENT_RE = re.compile(_IDENT)
_TOKEN_RE = re.compile(r"\$\$\{|\$\{([^{}]*)\}|\$\{")
_REFERENCE_RE = re.compile(rf"env:{_IDENT}|droplet\.{_IDENT}|{_IDENT}")
_MALFORMED = "use ${name}, ${env:NAME} or ${droplet.attribute}, and $${ for a literal ${"


class _Token(NamedTuple):
    start: int
    end: int
    kind: Literal["literal", "reference", "malformed"]
    text: str  # the reference's name, the literal "${", or the malformed source text


def _tokens(text: str) -> Iterator[_Token]:
    for match in _TOKEN_RE.finditer(text):
        source = match.group(0)
        if source == "$${":
            yield _Token(match.start(), match.end(), "literal", "${")
        elif match.group(1) is not None and _REFERENCE_RE.fullmatch(match.group(1)):
            yield _Token(match.start(), match.end(), "reference", match.group(1))
        else:
            yield _Token(match.start(), match.end(), "malformed", source)


#: The longest playbook poseidon reads, in bytes.
MAX_PLAYBOOK_BYTES = 1 << 20
#: The longest value, in characters, a substitution may build (one variable used 250,000 times would
#: otherwise build gigabytes from a playbook of one).
MAX_VALUE_CHARS = 1 << 20


class ValueTooLong(ValueError):
    """A value that substitution would make longer than :data:`MAX_VALUE_CHARS`."""


def _rewrite(text: str, reference: Callable[[str], str]) -> str:
    parts: list[str] = []
    size = 0
    position = 0
    for token in _tokens(text):
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
        return _rewrite(text, lambda name: values.get(name, f"${{{name}}}"))
    except ValueTooLong:
        return text


def parts(text: str) -> list[str | shell.Reference]:
    """``text`` as literal pieces and the references between them (``$${`` is a literal ``${``).

    Raises ``ValueError`` for a malformed reference such as ``${a b}``.
    """
    pieces: list[str | shell.Reference] = []
    literal = ""
    position = 0
    for token in _tokens(text):
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
    for token in _tokens(text):
        if token.kind == "malformed":
            raise ValueError(f"malformed reference {token.text!r}: {_MALFORMED}")
        if token.kind == "reference" and token.text not in names:
            names.append(token.text)
    return names


def _reference_errors(text: str, var_names: set[str]) -> list[str]:
    errors: list[str] = []
    for token in _tokens(text):
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


def _shell_errors(text: str) -> list[str]:
    """Why a reference in shell the user wrote could never arrive as data (a quoted here-document)."""
    try:
        return shell.check(parts(text))
    except ValueError:
        return []  # malformed: _reference_errors says so


def _step_text_errors(
    kind: str, loc: tuple[str | int, ...], text: str, var_names: set[str]
) -> list[str]:
    """The reference problems of one string of a step; ``loc`` is its place, from ``("steps", i, kind)``."""
    errors = _reference_errors(text, var_names)
    model = STEP_MODELS.get(kind)
    field = ".".join(str(part) for part in loc[3:])
    if model is not None and field in model.shell_fields:
        errors += _shell_errors(text)
    return errors


def _var_references(value: object) -> list[str]:
    """The variables a ``vars:`` value refers to (not ``env:`` or ``droplet.``)."""
    if not isinstance(value, str):
        return []
    return [
        t.text for t in _tokens(value) if t.kind == "reference" and ":" not in t.text and "." not in t.text
    ]


def _var_problems(variables: Mapping[Any, Any]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """``(("vars", name), message)`` for each value referring to what does not exist, or to itself."""
    names = {name for name in variables if isinstance(name, str)}
    for name, value in variables.items():
        if isinstance(value, str):
            for message in _reference_errors(value, names):
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


def _to_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_to_text(item) for item in value)
    return str(value)


def _substitute(value: object, values: Mapping[str, str], keep: frozenset[str] = frozenset(), at: str = "") -> object:
    """``value`` with its references replaced, except in the fields named in ``keep`` (dotted paths)."""
    if isinstance(value, str):
        return value if at in keep else _rewrite(value, lambda name: _to_text(values[name]))
    if isinstance(value, list):
        return [_substitute(item, values, keep, at) for item in value]
    if isinstance(value, dict):
        return {
            key: _substitute(item, values, keep, f"{at}.{key}" if at else str(key)) for key, item in value.items()
        }
    return value


# ---------------------------------------------------------------------------
# Field checks. Each raises a PydanticCustomError so the message reads as written.


def _fail(message: str) -> NoReturn:
    # The message goes through the context: a literal "{" in user text stays literal.
    raise PydanticCustomError("poseidon", "{message}", {"message": message})


def _expanded(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get("expanded"))


def _as_checked(value: str, info: ValidationInfo) -> str:
    """The text a pattern check sees: before expansion a reference stands for a plain word."""
    if _expanded(info):
        return value
    return _rewrite(value, lambda name: "x")


def _text(value: str) -> str:
    if "\x00" in value:
        _fail("must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _fail("must be valid Unicode text (a lone surrogate escape is not)")
    return value


def _nonempty_text(value: str) -> str:
    _text(value)
    if not value.strip():
        _fail("must not be empty")
    return value


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _line(value: str) -> str:
    _text(value)
    if _CONTROL_RE.search(value):
        _fail("must be one line without control characters (no newline, no NUL)")
    return value


def _path(value: str, info: ValidationInfo) -> str:
    _line(value)
    if not value:
        _fail("must not be empty")
    if _as_checked(value, info).startswith("-"):
        _fail(f"{value!r} must not start with '-' (write ./{value} for a relative path)")
    return value


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[str, ValidationInfo], str]:
    def check(value: str, info: ValidationInfo) -> str:
        _line(value)
        checked = _as_checked(value, info)
        if checked.startswith("-"):
            _fail(f"{value!r} must not start with '-': options are not accepted here")
        if not pattern.fullmatch(checked):
            _fail(f"{value!r} is not {what}")
        return value

    return check


def _words(value: object, info: ValidationInfo) -> object:
    """A space-separated string is a list of words.

    Once expanded, a list item split too: ``["${packages}"]`` may name several.
    Before that, list items stay whole, so an error's index is the one written.
    """
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and _expanded(info):
        items: list[object] = []
        for item in value:
            items.extend(item.split() if isinstance(item, str) else [item])
        return items
    return value


_APT_RE = re.compile(r"[a-z0-9][a-z0-9+.-]*(?::[a-z0-9]+)?(?:=[A-Za-z0-9.+:~-]+)?")
_PIP_RE = re.compile(r"[A-Za-z0-9._/][A-Za-z0-9._\[\],<>=!~*+@:/#%-]*")
_GIT_REF_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./+@-]*")
_LABEL_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_DROPLET_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
_TAG_RE = re.compile(r"[A-Za-z0-9_:][A-Za-z0-9_:-]*")
_DNS_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"(?=.{{1,253}}$)(?:{_DNS_LABEL}\.)+[a-z][a-z0-9-]{{0,61}}[a-z0-9]")
_RECORD_NAME_RE = re.compile(rf"@|\*|(?:\*\.)?{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_HOST_RE = re.compile(r"[A-Za-z0-9_.:-]+|\[[0-9A-Fa-f:.]+\]")
_HTTP_URL_RE = re.compile(r"https?://[A-Za-z0-9\[][A-Za-z0-9._:\[\]-]*(?:/[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]*)?")
_SHORTHAND_RE = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_URL_RE = re.compile(
    r"(?:https?|ssh)://(?:[A-Za-z0-9._~%+-]+(?::[A-Za-z0-9._~%+-]*)?@)?"
    r"[A-Za-z0-9\[][A-Za-z0-9._:\[\]-]*(?:/[A-Za-z0-9._~:/?#@+,=%-]*)?"
)
_FILE_URL_RE = re.compile(r"file://[A-Za-z0-9._~:/@+,=%-]*/[A-Za-z0-9._~:/@+,=%-]*")
_SCP_RE = re.compile(
    r"[A-Za-z0-9_][A-Za-z0-9_.-]*@[A-Za-z0-9][A-Za-z0-9.-]*:[A-Za-z0-9._~/+@%][A-Za-z0-9._~/+@%-]*"
)


def _is_shorthand(repo: str) -> bool:
    return bool(_SHORTHAND_RE.fullmatch(repo)) and not any(
        part in (".", "..") for part in repo.split("/")
    )


def _repository(value: str, info: ValidationInfo) -> str:
    _line(value)
    checked = _as_checked(value, info)
    if checked.startswith("-"):
        _fail(f"{value!r} must not start with '-': options are not accepted here")
    if not (
        _is_shorthand(checked)
        or _URL_RE.fullmatch(checked)
        or _FILE_URL_RE.fullmatch(checked)
        or _SCP_RE.fullmatch(checked)
    ):
        _fail(
            f"{value!r} is not a repository: write owner/name for GitHub, or an "
            "https://, http://, ssh://, file:// or git@host:path URL"
        )
    return value


def _git_ref(value: str, info: ValidationInfo) -> str:
    _matching(_GIT_REF_RE, "a git branch, tag or commit")(value, info)
    if ".." in value:
        _fail(f"{value!r} is not a git branch, tag or commit ('..' is not allowed)")
    return value


def _identifier(value: str) -> str:
    if not _IDENT_RE.fullmatch(value):
        _fail(f"{value!r} is not a name: letters, digits and _, not starting with a digit")
    return value


def _var_value(value: object) -> object:
    if type(value) not in (str, int, float, bool):
        _fail("a variable's value is a string, a number or a boolean")
    if isinstance(value, float) and not math.isfinite(value):
        _fail("a variable's value must be a finite number")
    if isinstance(value, str):
        _text(value)
    return value


_Text = Annotated[str, AfterValidator(_text)]
_Command = Annotated[str, AfterValidator(_nonempty_text)]
_Line = Annotated[str, AfterValidator(_line)]
_Path = Annotated[str, AfterValidator(_path)]
_Identifier = Annotated[
    str,
    AfterValidator(_identifier),
    WithJsonSchema({"type": "string", "pattern": f"^{_IDENT}$"}),
]
_EnvName = Annotated[
    str,
    AfterValidator(_matching(_IDENT_RE, "an environment variable name")),
    WithJsonSchema({"type": "string", "pattern": f"^{_IDENT}$"}),
]
_AptPackage = Annotated[
    str,
    AfterValidator(
        _matching(
            _APT_RE,
            "a Debian package name (lowercase letters, digits, + . -; "
            "then optional :arch and =version)",
        )
    ),
]
_PipRequirement = Annotated[
    str,
    AfterValidator(_matching(_PIP_RE, "a pip requirement (one word, such as flask or flask>=3)")),
]


def _words_schema(what: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1, "description": f"{what}, separated by spaces"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
            ]
        }
    )


_AptPackages = Annotated[
    list[_AptPackage], BeforeValidator(_words), _words_schema("Debian package names")
]
_PipRequirements = Annotated[
    list[_PipRequirement], BeforeValidator(_words), _words_schema("pip requirements")
]
_PlainValue = Annotated[str | bool | int | float, BeforeValidator(_var_value)]




# ---------------------------------------------------------------------------
# Models


class _Model(BaseModel):
    # strict: YAML's `yes` is a boolean and must not become the string "True".
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


class Report(_Model):
    """What poseidon reports about every droplet after the steps."""

    ps: bool = Field(default=True, description="Take a `ps -Af` snapshot of every droplet.")
    top: bool = Field(
        default=True,
        description="Take a `ps -Ao %cpu,%mem,user,comm` snapshot of every droplet.",
    )


_User = Annotated[
    Annotated[str, AfterValidator(_matching(_LABEL_RE, "a user name"))] | None,
    Field(description="SSH user; default root (or POSEIDON_SSH_USER)."),
]
_Port = Annotated[
    int | None,
    Field(ge=1, le=65535, description="SSH port; default 22 (or POSEIDON_SSH_PORT)."),
]


_Slug = Annotated[str, AfterValidator(_matching(re.compile(r"[a-z0-9][a-z0-9.-]*"), "a slug (a-z, 0-9, . and -)"))]


class CreateDroplet(_Model):
    """How to create the droplet when no droplet has its name yet."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"region": "nyc3", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64", "ssh_keys": ["laptop"]}]
        }
    )

    region: _Slug = Field(description="Region slug, e.g. nyc3.")
    size: _Slug = Field(description="Size slug, e.g. s-1vcpu-1gb.")
    image: _Slug | int = Field(description="Image slug (e.g. ubuntu-24-04-x64) or image id.")
    ssh_keys: list[_Line | int] = Field(
        default_factory=list, description="SSH keys to install: names, ids or fingerprints."
    )
    tags: list[Annotated[str, AfterValidator(_matching(_TAG_RE, "a tag (letters, digits, _, : and -)"))]] = Field(
        default_factory=list, description="Tags the new droplet carries."
    )
    user_data: _Text | None = Field(default=None, description="cloud-init user data for the first boot.")
    ipv6: bool = Field(default=False, description="Give it a public IPv6 address too.")
    monitoring: bool = Field(default=False, description="Install the monitoring agent.")
    backups: bool = Field(default=False, description="Enable weekly backups (billed).")
    _sources: dict[str, Source] = PrivateAttr(default_factory=dict)

    def source(self, field: str) -> Source | None:
        """Where ``field`` was written, when the playbook was read from YAML."""
        return self._sources.get(field)


class DNSRecord(_Model):
    """An A record that follows the droplet's public IPv4: created when missing, updated when it moved."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"domain": "example.com", "name": "www", "ttl": 300}]})

    domain: Annotated[str, AfterValidator(_matching(_DOMAIN_RE, "a domain name (lower-case, e.g. example.com)"))] = Field(
        description="The domain (created in the account when it has none of that name)."
    )
    name: Annotated[str, AfterValidator(_matching(_RECORD_NAME_RE, "a record name (www, a.b, @ for the domain itself)"))] = Field(
        default="@", description="The record's name in the domain: www, or @ for the domain itself."
    )
    ttl: int = Field(default=1800, ge=30, description="Seconds resolvers may keep the answer.")

    @property
    def fqdn(self) -> str:
        """The name the record answers for: ``www.example.com``, or the domain itself for ``@``."""
        return self.domain if self.name == "@" else f"{self.name}.{self.domain}"


class NamedDroplet(_Model):
    """One droplet, found by its name. A plain string entry is its name."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "web-2", "user": "root", "port": 22}]}
    )

    name: Annotated[
        str,
        AfterValidator(_matching(_DROPLET_NAME_RE, "a droplet name (letters, digits, . and -)")),
    ] = Field(description="The droplet's name, as the API lists it.")
    user: _User = None
    port: _Port = None
    create: CreateDroplet | None = Field(
        default=None, description="Create the droplet like this when no droplet has this name."
    )
    dns: DNSRecord | None = Field(default=None, description="Keep an A record pointing at the droplet's public IPv4.")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class TaggedDroplets(_Model):
    """Every droplet that carries a tag."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"tag": "workers"}]})

    tag: Annotated[
        str, AfterValidator(_matching(_TAG_RE, "a tag (letters, digits, _, : and -)"))
    ] = Field(description="The tag; every droplet carrying it is selected.")
    user: _User = None
    port: _Port = None


def droplet_name_problem(name: str) -> str | None:
    """Why ``name`` is no droplet name poseidon accepts (as a playbook may write one), or ``None``.

    Names the API gives for droplets found by tag are held to the same rule."""
    if _CONTROL_RE.search(name) or not _DROPLET_NAME_RE.fullmatch(name):
        return f"{name!r} is not a droplet name (letters, digits, . and -)"
    return None


def _droplet_member(value: Any) -> str | None:
    if isinstance(value, (str, NamedDroplet)):
        return "NamedDroplet"
    if isinstance(value, TaggedDroplets):
        return "TaggedDroplets"
    if isinstance(value, dict):
        if "name" in value:
            return "NamedDroplet"
        if "tag" in value:
            return "TaggedDroplets"
    return None


_DROPLET_TAGS = ("NamedDroplet", "TaggedDroplets")


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


def _duplicate_droplets(entries: list[Any]) -> Iterator[tuple[int, int, str]]:
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

DropletRef = Annotated[
    Annotated[NamedDroplet, Tag("NamedDroplet")] | Annotated[TaggedDroplets, Tag("TaggedDroplets")],
    Discriminator(
        _droplet_member,
        custom_error_type="droplet",
        custom_error_message="a droplet entry is a name, or a mapping with name: or tag:",
    ),
]


class Source(NamedTuple):
    """Where a step was written: ``site.yaml:12:5`` and ``steps[3].git``."""

    file: str
    line: int
    column: int
    path: str


class StepBase(_Model):
    """Options every step takes."""

    primary: ClassVar[str]
    """The field a short form (``kind: value``) fills."""
    shell_fields: ClassVar[frozenset[str]] = frozenset()
    """The fields (dotted paths) that hold shell the user wrote: their references are bound, not pasted."""

    name: _Line | None = Field(default=None, description="A label for the step, shown in reports.")
    sudo: bool = Field(default=False, description="Run the step with `sudo -n`.")
    env: dict[_EnvName, _Text] = Field(
        default_factory=dict, description="Environment variables for the step's commands."
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Seconds after which the step fails; default: no limit.",
    )

    _source: Source | None = PrivateAttr(default=None)

    @property
    def source(self) -> Source | None:
        """Where the step was written, when it was loaded from a file."""
        return self._source

    def __eq__(self, other: object) -> bool:
        # Two steps that do the same are equal wherever they were written.
        if not isinstance(other, StepBase):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # the fields hold lists and dicts


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class ChdirStep(StepBase):
    """Set the working directory of every later step; fails when it does not exist."""

    model_config = _examples({"kind": "chdir", "path": "hello_world"})
    primary: ClassVar[str] = "path"

    kind: Literal["chdir"] = Field(default="chdir", description="The step's kind.")
    path: _Path = Field(
        description="Directory, relative to the previous one; `~` at the start is home."
    )


class AptStep(StepBase):
    """Install Debian packages with apt-get, only those dpkg reports missing."""

    model_config = _examples(
        {"kind": "apt", "packages": ["git", "python3-venv"]},
        {"kind": "apt", "packages": ["nginx"], "update": True},
    )
    primary: ClassVar[str] = "packages"

    kind: Literal["apt"] = Field(default="apt", description="The step's kind.")
    packages: _AptPackages = Field(
        min_length=1, description="Package names, with optional :arch and =version."
    )
    update: bool = Field(default=False, description="Refresh the package lists first.")


class GitStep(StepBase):
    """Clone a repository, or fetch and reset an existing clone, and check out a ref."""

    model_config = _examples(
        {"kind": "git", "repo": "changhiskhan/hello_world"},
        {"kind": "git", "repo": "https://github.com/org/app.git", "dest": "app", "ref": "main"},
    )
    primary: ClassVar[str] = "repo"

    kind: Literal["git"] = Field(default="git", description="The step's kind.")
    repo: Annotated[str, AfterValidator(_repository)] = Field(
        description="owner/name on GitHub, or a git URL (https, http, ssh, file, git@host:path)."
    )
    dest: _Path | None = Field(
        default=None, description="Directory to clone into; default: the repository's name."
    )
    ref: Annotated[str, AfterValidator(_git_ref)] | None = Field(
        default=None, description="Branch, tag or commit to check out; default: the remote's HEAD."
    )
    token_env: _EnvName = Field(
        default="GITHUB_TOKEN",
        description="Environment variable, on the machine running poseidon, holding a token.",
    )

    def url(self) -> str:
        """The URL git clones: GitHub shorthand becomes ``https://github.com/owner/name.git``."""
        if _is_shorthand(self.repo):
            name = self.repo if self.repo.endswith(".git") else f"{self.repo}.git"
            return f"https://github.com/{name}"
        return self.repo

    def target(self) -> str:
        """The directory the clone lands in: ``dest``, or the repository's last path component."""
        if self.dest:
            return self.dest
        tail = re.split(r"[/:]", self.repo.rstrip("/"))[-1]
        return tail.removesuffix(".git") or tail


class _PythonTarget(StepBase):
    """Where pip steps install: a virtualenv by default."""

    venv: _Path = Field(
        default=".venv", description="The virtualenv, relative to the working directory."
    )
    system: bool = Field(
        default=False,
        description=(
            "Install into the system Python instead of a virtualenv. This overrides PEP 668's"
            " protection of the distribution's own packages (pip --break-system-packages):"
            " only for droplets that run nothing else."
        ),
    )


class PipStep(_PythonTarget):
    """Install pip packages into a virtualenv, created when missing."""

    model_config = _examples(
        {"kind": "pip", "packages": ["flask", "gunicorn>=21"]},
        {"kind": "pip", "packages": ["pandas"], "venv": "/opt/app/venv"},
    )
    primary: ClassVar[str] = "packages"

    kind: Literal["pip"] = Field(default="pip", description="The step's kind.")
    packages: _PipRequirements = Field(
        min_length=1, description="Requirements, one word each (flask, flask>=3, git+https://...)."
    )


class PipRStep(_PythonTarget):
    """Install a requirements file (a path on the droplet) into a virtualenv."""

    model_config = _examples({"kind": "pip_r", "requirements": "requirements.txt"})
    primary: ClassVar[str] = "requirements"

    kind: Literal["pip_r"] = Field(default="pip_r", description="The step's kind.")
    requirements: _Path = Field(description="The requirements file on the droplet.")


class ReadyCheck(_Model):
    """When a started process counts as ready: exactly one of ``port``, ``http`` or ``cmd``."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"port": 5000}, {"http": "http://127.0.0.1:5000/health"}, {"cmd": "test -S app.sock"}]}
    )

    port: int | None = Field(default=None, ge=1, le=65535, description="Ready when this TCP port accepts a connection.")
    host: Annotated[str, AfterValidator(_matching(_HOST_RE, "a host name or an IP address"))] | None = Field(
        default=None, description="Where `port` is tried; default: the droplet's own address."
    )
    http: Annotated[str, AfterValidator(_matching(_HTTP_URL_RE, "an http:// or https:// URL"))] | None = Field(
        default=None, description="Ready when this URL answers with a 2xx status."
    )
    cmd: _Command | None = Field(default=None, description="Ready when this shell command exits 0.")
    timeout: float = Field(
        default=30, gt=0, allow_inf_nan=False, description="Seconds to wait for readiness before the step fails."
    )

    @model_validator(mode="after")
    def _one_check(self) -> ReadyCheck:
        given = [name for name in ("port", "http", "cmd") if getattr(self, name) is not None]
        if len(given) != 1:
            _fail(f"ready takes exactly one of port:, http: or cmd: (found {', '.join(given) or 'none'})")
        if self.host is not None and self.port is None:
            _fail("ready: host: goes with port:")
        return self


def _restart_mode(value: Any) -> Any:
    # Before restart: took a mode, true meant "always" and false what is now "on-change".
    if value is True:
        return "always"
    if value is False:
        return "on-change"
    return value


class NohupStep(StepBase):
    """Start a detached process that outlives the session, supervised: its own session and
    process group, an identity file, restarts when its inputs change, a readiness check."""

    model_config = _examples(
        {"kind": "nohup", "cmd": "python app.py"},
        {
            "kind": "nohup",
            "cmd": ".venv/bin/python app.py",
            "name": "web",
            "log": "web.log",
            "restart": "on-change",
            "ready": {"port": 5000},
        },
    )
    primary: ClassVar[str] = "cmd"
    shell_fields: ClassVar[frozenset[str]] = frozenset({"cmd", "ready.cmd"})

    kind: Literal["nohup"] = Field(default="nohup", description="The step's kind.")
    cmd: _Command = Field(description="The shell command to start.")
    log: _Path | None = Field(default=None, description="Log file; default: <process name>.log.")
    restart: Annotated[
        Literal["on-change", "always", "never"],
        BeforeValidator(_restart_mode),
        WithJsonSchema({"anyOf": [{"enum": ["on-change", "always", "never"]}, {"type": "boolean"}]}),
    ] = Field(
        default="on-change",
        description=(
            "on-change: restart when the command, env, user or directory changed, or an earlier step on the"
            " droplet changed (a new commit, new requirements); always: on every apply; never: only start it"
            " when it is not running. (true and false are the older spellings of always and on-change.)"
        ),
    )
    ready: ReadyCheck | None = Field(
        default=None, description="Wait until the process is ready (a port, a URL, a command), or fail with its log."
    )
    grace: float = Field(
        default=1.0,
        ge=0,
        allow_inf_nan=False,
        description="Without ready: seconds to wait after starting before checking it still runs.",
    )

    @field_validator("name")
    @classmethod
    def _process_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        # The name also names the pid and log files, so it must be a plain word.
        if value is not None:
            _matching(_LABEL_RE, "a process name (letters, digits, _ . -)")(value, info)
        return value

    def process_name(self) -> str:
        """``name``, or the command's program and a stable hash of it: ``python-1a2b3c4d``."""
        return self.name or _derived_process_name(self.cmd)

    def log_path(self) -> str:
        """``log``, or ``<process_name>.log``."""
        return self.log or f"{self.process_name()}.log"


def _derived_process_name(cmd: str) -> str:
    try:
        words = shlex.split(cmd)
    except ValueError:
        words = cmd.split()
    # Leading VAR=value assignments say nothing about what runs.
    words = [w for w in words if not re.fullmatch(rf"{_IDENT}=.*", w, re.DOTALL)]
    program = posixpath.basename(words[0].rstrip("/")) if words else ""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", program).strip("-.")[:32] or "process"
    digest = hashlib.sha256(cmd.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{slug}-{digest}"


def _nohup_name(body: object) -> str | None:
    """The process name of a ``nohup`` step as written (a command, or a mapping), when it has one."""
    if isinstance(body, str):
        return _derived_process_name(body)
    if isinstance(body, dict):
        name, cmd = body.get("name"), body.get("cmd")
        if isinstance(name, str):
            return name
        if isinstance(cmd, str):
            return _derived_process_name(cmd)
    return None


def process_conflicts(steps: Iterable[tuple[int, NohupStep]]) -> list[str]:
    """``steps[i]: …`` for each ``(index, nohup step)`` whose process an earlier one manages: for
    names made of values (``name: "${app}"``), once they are substituted."""
    named = [(index, step.process_name()) for index, step in steps]
    return [f"{_render(where)}: {message}" for where, message in _duplicate_processes(named)]


def _duplicate_processes(named: Iterable[tuple[int, str]]) -> Iterator[tuple[tuple[str | int, ...], str]]:
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


class RunStep(StepBase):
    """Run a shell command; ``creates`` and ``unless`` make it skip, as in Ansible; ``changes: false``
    makes it a check."""

    model_config = _examples(
        {"kind": "run", "cmd": "curl -fsS localhost:5000/", "changes": False},
        {"kind": "run", "cmd": "make install", "creates": "/usr/local/bin/app"},
    )
    primary: ClassVar[str] = "cmd"
    shell_fields: ClassVar[frozenset[str]] = frozenset({"cmd", "unless"})

    kind: Literal["run"] = Field(default="run", description="The step's kind.")
    cmd: _Command = Field(description="The shell command.")
    creates: _Text | None = Field(default=None, description="Skip the step when this path exists.")
    unless: _Text | None = Field(
        default=None, description="Skip the step when this shell command exits 0."
    )
    changes: bool = Field(
        default=True,
        description=(
            "false: the command only checks (a smoke test): ok when it exits 0, failed otherwise, never"
            " changed; plan runs it too."
        ),
    )


STEP_MODELS: dict[str, type[StepBase]] = {
    "chdir": ChdirStep,
    "apt": AptStep,
    "git": GitStep,
    "pip": PipStep,
    "pip_r": PipRStep,
    "nohup": NohupStep,
    "run": RunStep,
}
STEP_KINDS: tuple[str, ...] = tuple(STEP_MODELS)


def _yaml_form(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get("yaml"))


#: Step kinds people write from habit (Ansible, pyinfra, shell), and poseidon's word for them.
_KIND_HABITS = {"shell": "run", "command": "run", "cmd": "run", "exec": "run", "cd": "chdir", "apt_get": "apt", "package": "apt"}
#: Fields people write from habit (Ansible, git, shell), and poseidon's word for them.
_HABITS = {"branch": "ref", "tag": "ref", "version": "ref", "command": "cmd", "shell": "cmd", "args": "cmd"}


def _extra_field(loc: tuple[Any, ...]) -> str:
    """The message for a field the model does not have: the field meant, when it can tell."""
    name = str(loc[-1])
    fields: Iterable[str] = ()
    if len(loc) >= 4 and loc[0] == "steps" and loc[2] in STEP_MODELS:
        fields = STEP_MODELS[loc[2]].model_fields
        if _HABITS.get(name) in fields:
            return f"not a field of a {loc[2]} step: write {_HABITS[name]!r}"
    else:
        fields = {field for model in _all_models() for field in model.model_fields}
    return f"not a field here{did_you_mean(name, fields)}"


def _all_models() -> list[type[BaseModel]]:
    return [model for model in globals().values() if isinstance(model, type) and issubclass(model, _Model)]


def _step_form(value: Any, info: ValidationInfo) -> Any:
    """Turn ``{"apt": body}`` into the model's shape, ``{"kind": "apt", ...}``."""
    if isinstance(value, StepBase):
        return value
    known = ", ".join(STEP_KINDS)
    if isinstance(value, dict) and len(value) == 1:
        ((kind, body),) = value.items()
        model = STEP_MODELS.get(kind) if isinstance(kind, str) else None
        if model is None:
            hint = ""
            if isinstance(kind, str):
                hint = f": did you mean {_KIND_HABITS[kind]!r}?" if kind in _KIND_HABITS else did_you_mean(kind, STEP_KINDS)
            _fail(f"unknown step kind {kind!r}{hint} (known kinds: {known})")
        if body is None:
            hint = ' (write "~" in quotes for the home directory)' if kind == "chdir" else ""
            _fail(f"{kind} needs a value{hint}")
        if isinstance(body, dict):
            if "kind" in body:
                _fail(f"{kind}: 'kind' is not an option: the step's key is its kind")
            return {"kind": kind, **body}
        return {"kind": kind, model.primary: body}
    if isinstance(value, dict) and not _yaml_form(info) and value.get("kind") in STEP_MODELS:
        return value  # the models' own shape, as model_dump() writes it
    if isinstance(value, dict):
        keys = ", ".join(str(key) for key in value) or "none"
        _fail(
            f"a step is a mapping with exactly one key, its kind (found: {keys}); "
            f"put options under it; known kinds: {known}"
        )
    _fail(f"a step is a one-key mapping such as 'run: make'; known kinds: {known}")


Step = Annotated[
    ChdirStep | AptStep | GitStep | PipStep | PipRStep | NohupStep | RunStep,
    Field(discriminator="kind"),
    BeforeValidator(_step_form),
]


def _strings(
    value: object, loc: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*loc, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            if key != "kind":
                yield from _strings(item, (*loc, key))


class _KeyText(str):
    """A non-string mapping key in a path, as the YAML writes it: ``[~]``, ``env[true]``."""


def _render(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, (int, _KeyText)):
            text += f"[{part}]"
        elif part != "[key]":
            text += f".{part}" if text else str(part)
    return text


class SecretVar(_Model):
    """A value masked as *** in every output: written here, or read from this machine's environment."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"secret": True, "env": "DB_PASSWORD"}, {"secret": True, "value": "s3cr3t"}]}
    )

    secret: Literal[True] = Field(description="Always true: the value is masked as *** in all output.")
    value: _Text | None = Field(default=None, description="The value itself (prefer env: for real secrets).")
    env: _Identifier | None = Field(
        default=None, description="Read the value from this environment variable of the machine running poseidon."
    )

    @model_validator(mode="after")
    def _one_source(self) -> SecretVar:
        if (self.value is None) == (self.env is None):
            raise ValueError("a secret takes exactly one of value: or env:")
        return self


def _plain_or_secret(value: Any) -> str:
    return "secret" if isinstance(value, dict) else "plain"


_VarValue = Annotated[
    Annotated[_PlainValue, Tag("plain")] | Annotated[SecretVar, Tag("secret")],
    Discriminator(_plain_or_secret),
]


class Playbook(_Model):
    """A poseidon playbook, version 1: which droplets, which steps, what to report."""

    version: Literal[1] = Field(description="The playbook format's version; always 1.")
    name: _Line | None = Field(default=None, description="A name shown in reports.")
    droplets: list[DropletRef] = Field(
        min_length=1,
        description="The droplets: names, {name: ...} or {tag: ...}, resolved through the API.",
    )
    vars: dict[_Identifier, _VarValue] = Field(
        default_factory=dict,
        description="Values for ${name} in steps; ${env:NAME} and ${droplet.attribute} also work.",
    )
    steps: list[Step] = Field(
        min_length=1,
        description="What to do, in order, on every droplet: one-key mappings {kind: ...}.",
    )
    report: Report = Field(default_factory=Report, description="Snapshots taken after the steps.")

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_a_number(cls, value: Any) -> Any:
        # 1 == True == 1.0 in Python; only the integer 1 is version 1.
        if type(value) is not int:
            _fail("Input should be 1")
        return value

    @field_validator("droplets", mode="after")
    @classmethod
    def _creates_are_named(cls, value: list[Any], info: ValidationInfo) -> list[Any]:
        # What a playbook creates carries its owner tag, and destroy deletes by that tag alone: one
        # taken from the file's name could be another playbook's (two site.yaml), so destroy refuses it.
        if info.data.get("name") is None:
            creating = [ref.name for ref in value if isinstance(ref, NamedDroplet) and ref.create is not None]
            if creating:
                _fail(
                    f"{', '.join(creating)} would be created: give the playbook a name: (it tags what"
                    " it creates, and 'poseidon destroy' deletes only droplets carrying that tag)"
                )
        return value

    @field_validator("droplets", mode="after")
    @classmethod
    def _droplets_differ(cls, value: list[Any], info: ValidationInfo) -> list[Any]:
        # The same droplet twice would run every step twice on it.
        if _yaml_form(info):
            return value  # loads() reports these itself, each at its own entry
        problems = [
            f"droplets[{index}]: {message} (first at droplets[{first}])"
            for index, first, message in _duplicate_droplets(value)
        ]
        if problems:
            _fail("; ".join(problems))
        return value

    @model_validator(mode="after")
    def _references_resolve(self, info: ValidationInfo) -> Playbook:
        if _yaml_form(info):
            return self  # loads() reports these itself, each at its own line
        problems = [f"{_render(loc)}: {message}" for loc, message in self._reference_errors()]
        if problems:
            _fail("; ".join(problems))
        return self

    def _reference_errors(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        names = set(self.vars)
        yield from _var_problems(self.vars)
        for index, step in enumerate(self.steps):
            for loc, text in _strings(step.model_dump(), ("steps", index, step.kind)):
                for message in _step_text_errors(step.kind, loc, text, names):
                    yield loc, message
        yield from _duplicate_processes((index, step.process_name()) for index, step in enumerate(self.steps) if isinstance(step, NohupStep))

    def var_values(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """``vars`` as text, the way they are substituted (booleans as ``true``/``false``).

        A secret read from the environment (``env:``) takes its value from
        ``environ`` (default ``os.environ``); an unset one is left out.
        """
        environment = os.environ if environ is None else environ
        values: dict[str, str] = {}
        for name, value in self.vars.items():
            if isinstance(value, SecretVar):
                text = value.value if value.env is None else environment.get(value.env)
                if text is not None:
                    values[name] = text
            else:
                values[name] = _to_text(value)
        return values

    def owner_tag(self, path: str | os.PathLike[str]) -> str:
        """The tag on every droplet this playbook creates (``poseidon:hello-flask``): its ``name``,
        else its file's name, as a tag may spell it. ``destroy`` deletes only droplets carrying it.

        A name a tag cannot spell as it is (``web app``) is followed by a digest of
        it (``poseidon:web-app-1a2b3c4d``), so two names never share a tag."""
        base = self.name or Path(path).stem
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-")[:200] or "playbook"
        if slug == base:
            return f"poseidon:{slug}"
        # Spelled otherwise than written: a digest of the name keeps "web app" and "web/app!" apart.
        return f"poseidon:{slug}-{hashlib.sha256(base.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"

    def secret_names(self) -> list[str]:
        """The variables marked secret."""
        return [name for name, value in self.vars.items() if isinstance(value, SecretVar)]

    def env_names(self) -> list[str]:
        """The environment variables the steps and vars refer to with ``${env:NAME}``, and the
        secrets read from the environment, in order."""
        texts = [text for index, step in enumerate(self.steps) for _, text in _strings(step.model_dump(), ("steps", index))]
        texts += [value for value in self.vars.values() if isinstance(value, str)]
        names = [
            token.text.removeprefix("env:")
            for text in texts
            for token in _tokens(text)
            if token.kind == "reference" and token.text.startswith("env:")
        ]
        names += [v.env for v in self.vars.values() if isinstance(v, SecretVar) and v.env]
        return list(dict.fromkeys(names))


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
            values[f"droplet.{attribute}"] = _to_text(raw)
    raw_vars = playbook.var_values(environment)
    resolving: set[str] = set()

    def resolve(name: str) -> str:
        if name in values:
            return values[name]
        if name not in raw_vars or name in resolving:
            raise KeyError(name)
        resolving.add(name)
        text = _rewrite(raw_vars[name], resolve) if name not in playbook.secret_names() else raw_vars[name]
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
    ``KeyError`` naming it. The result is validated again, now with the real
    values, so a variable cannot smuggle ``; rm`` into a package name: that
    raises ``SpecError`` located where the step was written. Expand a step
    once: ``$${`` has become a plain ``${`` in the copy.
    """
    source = step.source or Source("<step>", 0, 0, step.model_dump()["kind"])
    try:
        data = _substitute(step.model_dump(), values, step.shell_fields)
    except ValueTooLong as exc:
        raise SpecError([Problem(source.file, source.line, source.column, source.path, str(exc))]) from None
    try:
        expanded = type(step).model_validate(data, context={"expanded": True})
    except ValidationError as exc:
        problems = [
            Problem(
                source.file,
                source.line,
                source.column,
                _render((source.path, *error["loc"])),
                f"{error['msg']} (after substitution)",
            )
            for error in exc.errors(include_url=False)
        ]
        raise SpecError(problems) from exc
    expanded._source = step._source
    return expanded


# ---------------------------------------------------------------------------
# YAML: nodes keep their marks, so every problem gets its line and column.

_MAX_DEPTH = 64
_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("null", "bool", "int", "float", "str", "timestamp", "binary")
)
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """Composes nodes only; refuses aliases, which could expand a small file into a huge one."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent) or self._depth >= _MAX_DEPTH:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            problem = (
                "aliases (*name) are not supported: repeat the value"
                if isinstance(event, yaml.AliasEvent)
                else f"nested deeper than {_MAX_DEPTH} levels"
            )
            raise yaml.composer.ComposerError(None, None, problem, event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Invalid:
    """Stands for a value already reported, so validation does not report it twice."""

    def __repr__(self) -> str:
        return "<invalid>"


_INVALID = _Invalid()
_NO_KEY = object()


def _key_text(node: yaml.Node) -> str:
    """A scalar key as the YAML writes it; an empty null key is ``~``."""
    return (str(node.value) or "~") if isinstance(node, yaml.ScalarNode) else "?"


def _short_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!", 1)


class _Tree:
    """The composed document, turned into plain data while remembering each value's node."""

    def __init__(self, file: str, root: yaml.Node) -> None:
        self.file = file
        self.root = root
        self.problems: list[Problem] = []
        self.entries: dict[int, dict[Any, tuple[yaml.Node, yaml.Node]]] = {}
        self._constructor = yaml.SafeLoader("")

    def problem(self, node: yaml.Node, path: str, message: str) -> None:
        mark = node.start_mark
        self.problems.append(Problem(self.file, mark.line + 1, mark.column + 1, path, message))

    def data(self, node: yaml.Node, loc: tuple[str | int, ...] = ()) -> Any:
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in _SCALAR_TAGS:
                self.problem(node, _render(loc), f"unsupported tag {_short_tag(node.tag)}")
                return _INVALID
            try:
                return self._constructor.construct_object(node)
            except (yaml.YAMLError, ValueError, ArithmeticError, TypeError):
                kind = node.tag.rpartition(":")[2]
                shown = node.value if len(node.value) <= 40 else node.value[:40] + "..."
                self.problem(node, _render(loc), f"invalid {kind} value {shown!r}")
                return _INVALID
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                self.problem(node, _render(loc), f"unsupported tag {_short_tag(node.tag)}")
                return _INVALID
            return [self.data(item, (*loc, index)) for index, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:
                self.problem(node, _render(loc), f"unsupported tag {_short_tag(node.tag)}")
                return _INVALID
            return self._mapping(node, loc)
        self.problem(node, _render(loc), "unsupported YAML node")
        return _INVALID

    def _mapping(
        self, node: yaml.MappingNode, loc: tuple[str | int, ...]
    ) -> dict[Any, Any] | _Invalid:
        result: dict[Any, Any] = {}
        entries: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        self.entries[id(node)] = entries
        # Keys are the same in YAML when their tags and values are: 1 and true differ,
        # although Python's 1 == True would merge them.
        same: dict[tuple[str, Any], yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self.problem(key_node, _render(loc), "merge keys (<<) are not supported")
                return _INVALID
            key = self.data(key_node, loc)
            if key is _INVALID:
                continue
            if isinstance(key, (list, dict)):
                self.problem(key_node, _render(loc), "a mapping key must be a plain value")
                continue
            shown = key if isinstance(key, str) else _KeyText(_key_text(key_node))
            earlier = same.get((key_node.tag, key))
            if earlier is not None:
                first = earlier.start_mark.line + 1
                written = repr(key) if isinstance(key, str) else shown
                self.problem(
                    key_node,
                    _render((*loc, shown)),
                    f"duplicate key {written} (first at line {first})",
                )
                continue
            if key in entries:
                # Equal in Python only, so neither is a string: no key here may be one.
                self.problem(
                    key_node,
                    _render((*loc, shown)),
                    f"Keys should be strings, not {_short_tag(key_node.tag)} {shown}",
                )
                continue
            same[(key_node.tag, key)] = key_node
            entries[key] = (key_node, value_node)
            result[key] = self.data(value_node, (*loc, key))
        return result

    def locate(self, loc: tuple[str | int, ...], *, at_key: bool = False) -> yaml.Node:
        """The deepest node along ``loc``; for a missing field, the mapping that lacks it."""
        return self.resolve(loc, at_key=at_key)[0]

    def _entry(
        self, node: yaml.MappingNode, part: str | int, key: object
    ) -> tuple[Any, tuple[yaml.Node, yaml.Node]] | None:
        entries = self.entries.get(id(node), {})
        if key is not _NO_KEY:  # the error's input is the key itself
            for candidate, entry in entries.items():
                if type(candidate) is type(key) and candidate == key:
                    return candidate, entry
        for candidate, entry in entries.items():
            if type(candidate) is type(part) and candidate == part:
                return candidate, entry
        # pydantic writes other keys as ints (true is 1) or as text (None is 'None').
        for candidate, entry in entries.items():
            if not isinstance(candidate, str) and (candidate == part or str(candidate) == part):
                return candidate, entry
        return None

    def resolve(
        self, loc: tuple[str | int, ...], *, at_key: bool = False, key: object = _NO_KEY
    ) -> tuple[yaml.Node, tuple[str | int, ...]]:
        """``locate()``, and ``loc`` with each non-string key written as in the YAML.

        ``key``, when given, is the key that the last mapping part of ``loc`` names.
        """
        node = self.root
        key_node: yaml.Node | None = None
        shown: list[str | int] = []
        for position, part in enumerate(loc):
            rest = loc[position:]
            if part == "[key]":
                return key_node or node, (*shown, *rest)
            if isinstance(node, yaml.MappingNode):
                last = len(rest) == 1 or rest[1] == "[key]"
                found = self._entry(node, part, key if last else _NO_KEY)
                if found is None:
                    return node, (*shown, *rest)
                written, (key_node, node) = found
                shown.append(part if isinstance(written, str) else _KeyText(_key_text(key_node)))
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    return node, (*shown, *rest)
                key_node, node = None, node.value[part]
                shown.append(part)
            elif isinstance(part, str):
                # A short form's value is the step's primary field itself.
                key_node = None
                shown.append(part)
            else:
                return node, (*shown, *rest)
        return (key_node if at_key and key_node is not None else node), tuple(shown)

    def validation_problems(self, exc: ValidationError) -> list[Problem]:
        problems: list[Problem] = []
        for error in exc.errors(include_url=False):
            if error.get("input") is _INVALID:
                continue
            loc = tuple(error["loc"])
            if len(loc) > 2 and loc[0] == "droplets" and loc[2] in _DROPLET_TAGS:
                loc = loc[:2] + loc[3:]
            if len(loc) > 2 and loc[0] == "vars" and loc[2] in ("plain", "secret"):
                loc = loc[:2] + loc[3:]
            is_key = error["type"] == "invalid_key" or loc[-1:] == ("[key]",)
            node, shown = self.resolve(
                loc,
                at_key=is_key or error["type"] == "extra_forbidden",
                key=error.get("input") if is_key else _NO_KEY,
            )
            mark = node.start_mark
            message = _extra_field(loc) if error["type"] == "extra_forbidden" else error["msg"]
            problems.append(Problem(self.file, mark.line + 1, mark.column + 1, _render(shown), message))
        return problems

    def droplet_problems(self, data: dict[Any, Any]) -> list[Problem]:
        droplets = data.get("droplets")
        problems: list[Problem] = []
        for index, first, message in _duplicate_droplets(
            droplets if isinstance(droplets, list) else []
        ):
            mark = self.locate(("droplets", index)).start_mark
            line = self.locate(("droplets", first)).start_mark.line + 1
            problems.append(
                Problem(
                    self.file,
                    mark.line + 1,
                    mark.column + 1,
                    f"droplets[{index}]",
                    f"{message} (first at line {line})",
                )
            )
        return problems

    def reference_problems(self, data: dict[Any, Any]) -> list[Problem]:
        variables = data.get("vars")
        names = (
            {key for key in variables if isinstance(key, str)}
            if isinstance(variables, dict)
            else set()
        )
        steps = data.get("steps")
        problems: list[Problem] = []
        for index, item in enumerate(steps if isinstance(steps, list) else []):
            if not (isinstance(item, dict) and len(item) == 1):
                continue
            ((kind, body),) = item.items()
            model = STEP_MODELS.get(kind) if isinstance(kind, str) else None
            if model is None:
                continue
            loc: tuple[str | int, ...] = ("steps", index, kind)
            if not isinstance(body, dict):
                loc = (*loc, model.primary)
            for where, text in _strings(body, loc):
                for message in _step_text_errors(kind, where, text, names):
                    problems.append(self._at(where, message))
        if isinstance(variables, dict):
            problems += [self._at(where, message) for where, message in _var_problems(variables)]
        processes = [
            (index, name)
            for index, item in enumerate(steps if isinstance(steps, list) else [])
            if isinstance(item, dict) and len(item) == 1 and (name := _nohup_name(item.get("nohup")))
        ]
        problems += [self._at(where, message) for where, message in _duplicate_processes(processes)]
        return problems

    def _at(self, where: tuple[str | int, ...], message: str) -> Problem:
        mark = self.locate(where).start_mark
        return Problem(self.file, mark.line + 1, mark.column + 1, _render(where), message)

    def set_sources(self, playbook: Playbook) -> None:
        for index, ref in enumerate(playbook.droplets):
            create = getattr(ref, "create", None)
            if not isinstance(create, CreateDroplet):
                continue
            for field in create.model_fields_set:
                where = ("droplets", index, "create", field)
                mark = self.locate(where).start_mark
                create._sources[field] = Source(self.file, mark.line + 1, mark.column + 1, _render(where))
        for index, step in enumerate(playbook.steps):
            node = self.locate(("steps", index))
            mark = node.start_mark
            step._source = Source(
                self.file, mark.line + 1, mark.column + 1, f"steps[{index}].{step.kind}"
            )


_BREAK_RE = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def _position(before: str) -> tuple[int, int]:
    """The line and column, in characters, just after ``before``, counted as YAML's marks are."""
    breaks = list(_BREAK_RE.finditer(before))
    start = breaks[-1].end() if breaks else 0
    return len(breaks) + 1, len(before) - start + 1


def _yaml_error(filename: str, text: str, exc: yaml.YAMLError) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        parts = [part for part in (exc.context, exc.problem) if part]
        message = ", ".join(parts) or "invalid YAML"
        if mark is not None:
            return Problem(filename, mark.line + 1, mark.column + 1, "", message)
        return Problem(filename, 1, 1, "", message)
    if isinstance(exc, yaml.reader.ReaderError):
        line, column = _position(text[: exc.position])
        return Problem(
            filename, line, column, "", f"character U+{exc.character:04X} is not allowed in YAML"
        )
    return Problem(filename, 1, 1, "", str(exc))


_TOO_BIG = f"the playbook is over {MAX_PLAYBOOK_BYTES:,} bytes, the most poseidon reads"


def loads(text: str, filename: str = "<string>") -> Playbook:
    """Validate a playbook's text; raise ``SpecError`` listing every problem, located."""
    if len(text) > MAX_PLAYBOOK_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_PLAYBOOK_BYTES:
        raise SpecError([Problem(filename, 1, 1, "", _TOO_BIG)])
    try:
        loader = _Loader(text)  # the reader already refuses control characters here
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise SpecError([_yaml_error(filename, text, exc)]) from exc
    except RecursionError as exc:
        raise SpecError([Problem(filename, 1, 1, "", "the document is nested too deeply")]) from exc
    if root is None:
        empty = "the playbook is empty: it needs version, droplets and steps"
        raise SpecError([Problem(filename, 1, 1, "", empty)])

    tree = _Tree(filename, root)
    data = tree.data(root)
    if not isinstance(data, dict):
        if data is not _INVALID:
            tree.problem(root, "", "a playbook is a mapping with version, droplets and steps")
        raise SpecError(tree.problems)

    problems = tree.problems + tree.reference_problems(data) + tree.droplet_problems(data)
    playbook: Playbook | None = None
    try:
        playbook = Playbook.model_validate(data, context={"yaml": True})
    except ValidationError as exc:
        problems += tree.validation_problems(exc)
    if problems or playbook is None:
        unique = sorted(set(problems), key=lambda p: (p.line, p.column, p.path, p.message))
        raise SpecError(unique)
    tree.set_sources(playbook)
    return playbook


def load(path: str | os.PathLike[str]) -> Playbook:
    """Read and validate a playbook file; every failure, even an unreadable file, is a SpecError."""
    filename = os.fspath(path)
    try:
        with open(filename, "rb") as stream:
            raw = stream.read(MAX_PLAYBOOK_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SpecError(
            [Problem(filename, 1, 1, "", f"cannot read the playbook: {reason}")]
        ) from exc
    if len(raw) > MAX_PLAYBOOK_BYTES:
        raise SpecError([Problem(filename, 1, 1, "", _TOO_BIG)])
    body = raw.removeprefix(codecs.BOM_UTF8)  # as YAML does, columns do not count a BOM
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(body[: exc.start].decode("utf-8", "replace"))
        message = f"not UTF-8: byte 0x{body[exc.start]:02x} cannot be decoded"
        raise SpecError([Problem(filename, line, column, "", message)]) from exc
    return loads(text, filename)


# ---------------------------------------------------------------------------
# JSON Schema, of the playbook as users write it


def _long_form(schema: dict[str, Any]) -> dict[str, Any]:
    """A step model's schema without ``kind``: the key that holds the body names it."""
    body = copy.deepcopy(schema)
    body["properties"].pop("kind", None)
    if "required" in body:
        body["required"] = [name for name in body["required"] if name != "kind"]
        if not body["required"]:
            del body["required"]
    body.pop("examples", None)
    return body


def _step_entry(kind: str, model: type[StepBase], definition: dict[str, Any]) -> dict[str, Any]:
    short = copy.deepcopy(definition["properties"][model.primary])
    short.pop("title", None)
    short.pop("default", None)
    examples: list[dict[str, Any]] = []
    for example in definition.get("examples", []):
        body = {key: value for key, value in example.items() if key != "kind"}
        examples.append({kind: body[model.primary] if list(body) == [model.primary] else body})
    return {
        "type": "object",
        "title": f"{kind} step",
        "description": (model.__doc__ or "").strip(),
        "properties": {
            kind: {
                "description": f"Short form: the {model.primary}; long form: a mapping with options.",
                "anyOf": [short, {"$ref": f"#/$defs/{model.__name__}"}],
            },
        },
        "required": [kind],
        "additionalProperties": False,
        "examples": examples,
    }


def _close_pattern_objects(schema: Any) -> None:
    # Keys checked by a pattern (vars, env) admit nothing else.
    if isinstance(schema, dict):
        if "patternProperties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            _close_pattern_objects(value)
    elif isinstance(schema, list):
        for value in schema:
            _close_pattern_objects(value)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a playbook as written, short forms included."""
    generated = Playbook.model_json_schema(mode="validation")
    definitions: dict[str, Any] = generated.pop("$defs")
    entries = []
    for kind, model in STEP_MODELS.items():
        definition = definitions[model.__name__]
        entries.append(_step_entry(kind, model, definition))
        definitions[model.__name__] = _long_form(definition)
    properties = generated["properties"]
    properties["steps"]["items"] = {"oneOf": entries}
    properties["droplets"]["items"] = {
        "anyOf": [
            {"type": "string", "description": "A droplet's name."},
            {"$ref": "#/$defs/NamedDroplet"},
            {"$ref": "#/$defs/TaggedDroplets"},
        ]
    }
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "poseidon playbook",
        "description": (Playbook.__doc__ or "").strip(),
        **{key: value for key, value in generated.items() if key not in ("title", "description")},
        "$defs": {name: definitions[name] for name in sorted(definitions)},
    }
    _close_pattern_objects(schema)
    return schema
