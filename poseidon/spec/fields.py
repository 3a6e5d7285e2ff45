"""The field types of the models, and the checks each field makes of its own value.

Each check raises a ``PydanticCustomError``, so that its message reads as written
(:func:`fail`). A field of a step that must match a pattern reads a written value with
each reference standing for a plain word, and a :class:`~.references.Substituted` one
(what ``expand()`` validates) as it is: the value says which it is, so one set of models
checks both. A field that is never substituted (the droplets' names, slugs, tags, DNS
names, users; ``env:`` and ``token_env`` names) takes no reference at all.
Knows no model; imports :mod:`.references` only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from poseidon.spec.references import IDENT, IDENT_RE, Substituted, rewrite


def fail(message: str) -> NoReturn:
    # The message goes through the context: a literal "{" in user text stays literal.
    raise PydanticCustomError("poseidon", "{message}", {"message": message})


#: A check of a value that also takes the text its pattern sees.
PatternCheck = Callable[[str, str], None]


def checked_text(raw: Any, handler: ValidatorFunctionWrapHandler, check: PatternCheck) -> Any:
    """Validate ``raw`` as its type says, then ``check`` it: a written value with each reference
    standing for a plain word, a substituted one as it is."""
    value = handler(raw)
    if isinstance(value, str):
        check(value, value if isinstance(raw, Substituted) else rewrite(value, lambda name: "x"))
    return value


def _checked(check: PatternCheck) -> WrapValidator:
    def checked(raw: Any, handler: ValidatorFunctionWrapHandler) -> Any:  # pydantic names a union's member after it
        return checked_text(raw, handler, check)

    return WrapValidator(checked)


def _literal(check: PatternCheck) -> AfterValidator:
    """The check of a field that is never substituted (a droplet's name, a slug, an ``env:``
    name): its value as written, where a reference would stay ``${…}`` for good."""

    def literal(value: str) -> str:
        if "${" in value:
            fail("${…} is substituted in the values of steps only: write the value itself here")
        check(value, value)
        return value

    return AfterValidator(literal)


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


def _path(value: str, seen: str) -> None:
    _line(value)
    if not value:
        fail("must not be empty")
    if seen.startswith("-"):
        fail(f"{value!r} must not start with '-' (write ./{value} for a relative path)")


def _matching(pattern: re.Pattern[str], what: str) -> PatternCheck:
    def check(value: str, seen: str) -> None:
        _line(value)
        if seen.startswith("-"):
            fail(f"{value!r} must not start with '-': options are not accepted here")
        if not pattern.fullmatch(seen):
            fail(f"{value!r} is not {what}")

    return check


def _split(text: str) -> list[str]:
    words = text.split()
    return [Substituted(word) for word in words] if isinstance(text, Substituted) else words


def _words(value: object) -> object:
    """A space-separated string is a list of words.

    A substituted list item is split too: ``["${packages}"]`` may name several.
    A written one stays whole, so an error's index is the one written.
    """
    if isinstance(value, str):
        return _split(value)
    if isinstance(value, list):
        return [word for item in value for word in (_split(item) if isinstance(item, Substituted) else [item])]
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
_SCP_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*@[A-Za-z0-9][A-Za-z0-9.-]*:[A-Za-z0-9._~/+@%][A-Za-z0-9._~/+@%-]*")


def is_shorthand(repo: str) -> bool:
    return bool(_SHORTHAND_RE.fullmatch(repo)) and not any(part in (".", "..") for part in repo.split("/"))


def _repository(value: str, checked: str) -> None:
    _line(value)
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


def _git_ref(value: str, seen: str) -> None:
    _matching(_GIT_REF_RE, "a git branch, tag or commit")(value, seen)
    if ".." in value:
        fail(f"{value!r} is not a git branch, tag or commit ('..' is not allowed)")


#: A nohup step's name also names its pid and log files, so it must be a plain word.
process_name = _matching(_LABEL_RE, "a process name (letters, digits, _ . -)")

_MODE_RE = re.compile(r"0?[0-7]{3}|[0-7]{4}")


def _file_mode(value: object) -> object:
    """A file's mode is written as text (``"0644"``): YAML reads an unquoted ``0644`` as the
    number 420 and ``644`` as six hundred and forty-four, neither of which is the mode meant."""
    if isinstance(value, int) and not isinstance(value, bool):
        fail(
            f"the mode is text, such as '0644' (quoted in YAML, which reads an unquoted 0644 as the number 420):"
            f" {value} is no mode"
        )
    return value


def _mode_digits(value: str, seen: str) -> None:
    _line(value)
    if not _MODE_RE.fullmatch(value):
        fail(f"{value!r} is not a file mode: three or four octal digits, such as '0644' or '0600'")


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
PathText = Annotated[str, _checked(_path)]
Identifier = Annotated[
    str,
    AfterValidator(_identifier),
    WithJsonSchema({"type": "string", "pattern": f"^{IDENT}$"}),
]
EnvName = Annotated[
    str,
    _literal(_matching(IDENT_RE, "an environment variable name")),
    WithJsonSchema({"type": "string", "pattern": f"^{IDENT}$"}),
]
_AptPackage = Annotated[
    str,
    _checked(
        _matching(
            _APT_RE,
            "a Debian package name (lowercase letters, digits, + . -; then optional :arch and =version)",
        )
    ),
]
_PipRequirement = Annotated[
    str,
    _checked(_matching(_PIP_RE, "a pip requirement (one word, such as flask or flask>=3)")),
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


AptPackages = Annotated[list[_AptPackage], BeforeValidator(_words), _words_schema("Debian package names")]
PipRequirements = Annotated[list[_PipRequirement], BeforeValidator(_words), _words_schema("pip requirements")]
PlainValue = Annotated[str | bool | int | float, BeforeValidator(_var_value)]


User = Annotated[
    Annotated[str, _literal(_matching(_LABEL_RE, "a user name"))] | None,
    Field(description="SSH user; default root (or POSEIDON_SSH_USER)."),
]
Port = Annotated[
    int | None,
    Field(ge=1, le=65535, description="SSH port; default 22 (or POSEIDON_SSH_PORT)."),
]


FileMode = Annotated[
    str,
    BeforeValidator(_file_mode),
    _literal(_mode_digits),
    WithJsonSchema({"type": "string", "pattern": "^(0?[0-7]{3}|[0-7]{4})$"}),
]


#: A user or group name, as useradd takes them (and a trailing $ for machine accounts).
USER_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?")


def _owner(value: str, seen: str) -> None:
    _matching(USER_NAME_RE, "a user or group name")(value, seen)
    if seen.isdigit() and int(seen) >= 0xFFFFFFFF:  # (uid_t)-1 means "leave it" to chown
        fail(f"{value!r} is no user or group id: ids go up to 4294967294")


#: A user or group on the droplet, by name or number (``chown``'s own words).
Owner = Annotated[str, _checked(_owner)]
#: A service's name, which names its systemd unit: never substituted, so its unit stays the same.
ServiceName = Annotated[str, _literal(_matching(_LABEL_RE, "a service name (letters, digits, _ . -)"))]
#: A local file beside the playbook: its path as written, never substituted (validate reads it).
LocalPath = Annotated[str, _literal(_path)]

Slug = Annotated[str, _literal(_matching(re.compile(r"[a-z0-9][a-z0-9.-]*"), "a slug (a-z, 0-9, . and -)"))]
DropletName = Annotated[str, _literal(_matching(_DROPLET_NAME_RE, "a droplet name (letters, digits, . and -)"))]
DropletTag = Annotated[str, _literal(_matching(_TAG_RE, "a tag (letters, digits, _, : and -)"))]
DomainName = Annotated[str, _literal(_matching(_DOMAIN_RE, "a domain name (lower-case, e.g. example.com)"))]
RecordName = Annotated[str, _literal(_matching(_RECORD_NAME_RE, "a record name (www, a.b, @ for the domain itself)"))]
Host = Annotated[str, _checked(_matching(_HOST_RE, "a host name or an IP address"))]
HttpUrl = Annotated[str, _checked(_matching(_HTTP_URL_RE, "an http:// or https:// URL"))]
Repository = Annotated[str, _checked(_repository)]
GitRef = Annotated[str, _checked(_git_ref)]


def droplet_name_problem(name: str) -> str | None:
    """Why ``name`` is no droplet name poseidon accepts (as a playbook may write one), or ``None``.

    Names the API gives for droplets found by tag are held to the same rule."""
    if _CONTROL_RE.search(name) or not _DROPLET_NAME_RE.fullmatch(name):
        return f"{name!r} is not a droplet name (letters, digits, . and -)"
    return None
