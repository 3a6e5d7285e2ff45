"""The field types of the models and the checks each field makes on its own value.

Each check raises a ``PydanticCustomError`` so that its message reads as written
(:func:`fail`). A field that must match a pattern is checked with each reference
standing for a plain word, and checked again by ``expand()`` once the real value is
known. Imports :mod:`.references` only (to read references); knows no model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, NoReturn

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError

from poseidon.spec.references import IDENT, IDENT_RE, rewrite

# ---------------------------------------------------------------------------
# Field checks. Each raises a PydanticCustomError so the message reads as written.


def fail(message: str) -> NoReturn:
    # The message goes through the context: a literal "{" in user text stays literal.
    raise PydanticCustomError("poseidon", "{message}", {"message": message})


def _expanded(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get("expanded"))


def _as_checked(value: str, info: ValidationInfo) -> str:
    """The text a pattern check sees: before expansion a reference stands for a plain word."""
    if _expanded(info):
        return value
    return rewrite(value, lambda name: "x")


def _text(value: str) -> str:
    if "\x00" in value:
        fail("must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        fail("must be valid Unicode text (a lone surrogate escape is not)")
    return value


def _nonempty_text(value: str) -> str:
    _text(value)
    if not value.strip():
        fail("must not be empty")
    return value


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _line(value: str) -> str:
    _text(value)
    if _CONTROL_RE.search(value):
        fail("must be one line without control characters (no newline, no NUL)")
    return value


def _path(value: str, info: ValidationInfo) -> str:
    _line(value)
    if not value:
        fail("must not be empty")
    if _as_checked(value, info).startswith("-"):
        fail(f"{value!r} must not start with '-' (write ./{value} for a relative path)")
    return value


def matching(pattern: re.Pattern[str], what: str) -> Callable[[str, ValidationInfo], str]:
    def check(value: str, info: ValidationInfo) -> str:
        _line(value)
        checked = _as_checked(value, info)
        if checked.startswith("-"):
            fail(f"{value!r} must not start with '-': options are not accepted here")
        if not pattern.fullmatch(checked):
            fail(f"{value!r} is not {what}")
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
LABEL_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
DROPLET_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
TAG_RE = re.compile(r"[A-Za-z0-9_:][A-Za-z0-9_:-]*")
_DNS_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?"
DOMAIN_RE = re.compile(rf"(?=.{{1,253}}$)(?:{_DNS_LABEL}\.)+[a-z][a-z0-9-]{{0,61}}[a-z0-9]")
RECORD_NAME_RE = re.compile(rf"@|\*|(?:\*\.)?{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
HOST_RE = re.compile(r"[A-Za-z0-9_.:-]+|\[[0-9A-Fa-f:.]+\]")
HTTP_URL_RE = re.compile(r"https?://[A-Za-z0-9\[][A-Za-z0-9._:\[\]-]*(?:/[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]*)?")
_SHORTHAND_RE = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_URL_RE = re.compile(
    r"(?:https?|ssh)://(?:[A-Za-z0-9._~%+-]+(?::[A-Za-z0-9._~%+-]*)?@)?"
    r"[A-Za-z0-9\[][A-Za-z0-9._:\[\]-]*(?:/[A-Za-z0-9._~:/?#@+,=%-]*)?"
)
_FILE_URL_RE = re.compile(r"file://[A-Za-z0-9._~:/@+,=%-]*/[A-Za-z0-9._~:/@+,=%-]*")
_SCP_RE = re.compile(
    r"[A-Za-z0-9_][A-Za-z0-9_.-]*@[A-Za-z0-9][A-Za-z0-9.-]*:[A-Za-z0-9._~/+@%][A-Za-z0-9._~/+@%-]*"
)


def is_shorthand(repo: str) -> bool:
    return bool(_SHORTHAND_RE.fullmatch(repo)) and not any(
        part in (".", "..") for part in repo.split("/")
    )


def repository(value: str, info: ValidationInfo) -> str:
    _line(value)
    checked = _as_checked(value, info)
    if checked.startswith("-"):
        fail(f"{value!r} must not start with '-': options are not accepted here")
    if not (
        is_shorthand(checked)
        or _URL_RE.fullmatch(checked)
        or _FILE_URL_RE.fullmatch(checked)
        or _SCP_RE.fullmatch(checked)
    ):
        fail(
            f"{value!r} is not a repository: write owner/name for GitHub, or an "
            "https://, http://, ssh://, file:// or git@host:path URL"
        )
    return value


def git_ref(value: str, info: ValidationInfo) -> str:
    matching(_GIT_REF_RE, "a git branch, tag or commit")(value, info)
    if ".." in value:
        fail(f"{value!r} is not a git branch, tag or commit ('..' is not allowed)")
    return value


def _identifier(value: str) -> str:
    if not IDENT_RE.fullmatch(value):
        fail(f"{value!r} is not a name: letters, digits and _, not starting with a digit")
    return value


def _var_value(value: object) -> object:
    if type(value) not in (str, int, float, bool):
        fail("a variable's value is a string, a number or a boolean")
    if isinstance(value, float) and not math.isfinite(value):
        fail("a variable's value must be a finite number")
    if isinstance(value, str):
        _text(value)
    return value


Text = Annotated[str, AfterValidator(_text)]
Command = Annotated[str, AfterValidator(_nonempty_text)]
Line = Annotated[str, AfterValidator(_line)]
PathText = Annotated[str, AfterValidator(_path)]
Identifier = Annotated[
    str,
    AfterValidator(_identifier),
    WithJsonSchema({"type": "string", "pattern": f"^{IDENT}$"}),
]
EnvName = Annotated[
    str,
    AfterValidator(matching(IDENT_RE, "an environment variable name")),
    WithJsonSchema({"type": "string", "pattern": f"^{IDENT}$"}),
]
_AptPackage = Annotated[
    str,
    AfterValidator(
        matching(
            _APT_RE,
            "a Debian package name (lowercase letters, digits, + . -; "
            "then optional :arch and =version)",
        )
    ),
]
_PipRequirement = Annotated[
    str,
    AfterValidator(matching(_PIP_RE, "a pip requirement (one word, such as flask or flask>=3)")),
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


AptPackages = Annotated[
    list[_AptPackage], BeforeValidator(_words), _words_schema("Debian package names")
]
PipRequirements = Annotated[
    list[_PipRequirement], BeforeValidator(_words), _words_schema("pip requirements")
]
PlainValue = Annotated[str | bool | int | float, BeforeValidator(_var_value)]


User = Annotated[
    Annotated[str, AfterValidator(matching(LABEL_RE, "a user name"))] | None,
    Field(description="SSH user; default root (or POSEIDON_SSH_USER)."),
]
Port = Annotated[
    int | None,
    Field(ge=1, le=65535, description="SSH port; default 22 (or POSEIDON_SSH_PORT)."),
]


Slug = Annotated[str, AfterValidator(matching(re.compile(r"[a-z0-9][a-z0-9.-]*"), "a slug (a-z, 0-9, . and -)"))]


def droplet_name_problem(name: str) -> str | None:
    """Why ``name`` is no droplet name poseidon accepts (as a playbook may write one), or ``None``.

    Names the API gives for droplets found by tag are held to the same rule."""
    if _CONTROL_RE.search(name) or not DROPLET_NAME_RE.fullmatch(name):
        return f"{name!r} is not a droplet name (letters, digits, . and -)"
    return None
