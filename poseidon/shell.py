"""Shell words and values bound into shell the user wrote.

Two ways a value reaches the droplet's shell, and neither lets it become syntax:

- :func:`quote` and :func:`quote_path` make one shell word of a value that
  poseidon places itself (a package name, a path, a URL);
- :func:`bind` handles a command the user wrote as shell (``run``, ``nohup``,
  ``unless``, ``ready.cmd``) that refers to values (``${app}``). Each
  reference becomes a reference to a shell variable assigned before the
  command, written in the form its place in the text needs:

  ======================================  ==================================
  where the reference stands               what replaces it
  ======================================  ==================================
  unquoted (also in ``$( )``, backquotes)  ``"${_poseidon_1}"``: one word
  in double quotes, an unquoted here-doc   ``${_poseidon_1}``
  in single quotes                         ``'"${_poseidon_1}"'``
  in ``$(( ))``                            ``${_poseidon_1}``, a whole number
  in a quoted here-document (``<<'EOF'``)  refused: nothing expands there
  ======================================  ==================================

  The shell expands a variable's value after it has parsed the command, so
  the value is never parsed: ``$(…)``, backquotes, quotes, ``;`` and newlines
  in it stay text, and inside double quotes the value arrives byte for byte.

This module knows shell text only; which names a text refers to is the
caller's business (:mod:`poseidon.spec` finds them).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["BindError", "Bound", "Reference", "bind", "check", "contexts", "quote", "quote_all", "quote_path"]


def quote(value: object) -> str:
    """One shell word for ``value``, whatever it contains."""
    return shlex.quote(str(value))


def quote_all(values: Iterable[object]) -> str:
    return " ".join(quote(v) for v in values)


def quote_path(path: str) -> str:
    """Quote a path, leaving a leading ``~`` or ``~/`` outside the quotes so the shell expands it."""
    if path == "~":
        return "~"
    if path.startswith("~/"):
        rest = path[2:]
        return "~/" + quote(rest) if rest else "~/"
    return quote(path)


@dataclass(frozen=True)
class Reference:
    """A value's place in shell text: ``${name}`` as the user wrote it."""

    name: str


#: Shell text the user wrote, as literal pieces and the references between them.
Parts = Sequence["str | Reference"]


@dataclass(frozen=True)
class Bound:
    """A command whose references are shell variables: assign :attr:`bindings`, then run :attr:`text`."""

    text: str
    #: Variable name → value, in the order of first use.
    bindings: dict[str, str] = field(default_factory=dict)

    def assignments(self) -> str:
        """Shell lines that set the variables (each value one quoted word)."""
        return "".join(f"{name}={quote(value)}\n" for name, value in self.bindings.items())


_NUMBER_RE = re.compile(r"-?[0-9]+")


class BindError(ValueError):
    """A value that the shell could not receive as data at its place in a command."""


def bind(parts: Parts, values: Mapping[str, str], *, prefix: str = "_poseidon_") -> Bound:
    """The command ``parts`` spell, each :class:`Reference` replaced by a variable holding its value.

    Raises :class:`BindError` for a reference the shell could not receive as data:
    inside a quoted here-document, or inside ``$(( ))`` with a value that is
    not a whole number.
    """
    names: dict[str, str] = {}
    bindings: dict[str, str] = {}
    pieces: list[str] = []
    for piece, context in _contexts(parts):
        if isinstance(piece, str):
            pieces.append(piece)
            continue
        value = values[piece.name]
        if piece.name not in names:
            names[piece.name] = f"{prefix}{len(names) + 1}"
            bindings[names[piece.name]] = value
        variable = names[piece.name]
        if context == _ARITHMETIC and not _NUMBER_RE.fullmatch(value.strip()):
            raise BindError(f"${{{piece.name}}} is inside $(( )), so its value must be a whole number, not {value!r}")
        pieces.append(_reference(variable, context, piece.name))
    return Bound("".join(pieces), bindings)


def check(parts: Parts) -> list[str]:
    """Why some references in ``parts`` could never be bound, whatever their values: one line each."""
    problems = []
    for piece, context in _contexts(parts):
        if isinstance(piece, Reference) and context == _QUOTED_HEREDOC:
            problems.append(_QUOTED_HEREDOC_PROBLEM.format(name=piece.name))
    return problems


_QUOTED_HEREDOC_PROBLEM = (
    "${{{name}}} is inside a quoted here-document (<<'EOF'), where the shell expands nothing:"
    " write the delimiter unquoted (<<EOF) to use a value there"
)


def _reference(variable: str, context: str, name: str) -> str:
    if context == _QUOTED_HEREDOC:
        raise BindError(_QUOTED_HEREDOC_PROBLEM.format(name=name))
    if context == _SINGLE:
        return f"'\"${{{variable}}}\"'"
    if context in (_DOUBLE, _HEREDOC, _ARITHMETIC, _COMMENT):
        return f"${{{variable}}}"
    return f'"${{{variable}}}"'


# -- the lexer: just enough of POSIX sh to know the quoting at each reference ----------

_PLAIN = "plain"  # unquoted: top level, $( ), ${ } outside double quotes
_SINGLE = "single"
_DOUBLE = "double"
_BACKQUOTE = "backquote"
_PAREN = "paren"  # inside $( ): unquoted, ends at its )
_BRACE_PLAIN = "brace"  # ${ ... } outside double quotes
_BRACE_DOUBLE = "brace-double"  # ${ ... } inside double quotes
_ARITHMETIC = "arithmetic"
_COMMENT = "comment"
_HEREDOC = "heredoc"
_QUOTED_HEREDOC = "quoted-heredoc"

_HEREDOC_RE = re.compile(r"<<(-?)[ \t]*((?:'[^']*'|\"[^\"]*\"|\\.|[^\s;&|<>()])+)")


@dataclass
class _Heredoc:
    delimiter: str
    quoted: bool
    strip_tabs: bool


class _Lexer:
    """Walks literal shell text, keeping the stack of quoting contexts across the pieces."""

    def __init__(self) -> None:
        self.stack: list[str] = [_PLAIN]
        self.depth: list[int] = []  # parentheses open inside each $( ) or $(( ))
        self.pending: list[_Heredoc] = []  # here-documents whose bodies start at the next newline
        self.body: list[_Heredoc] = []  # the here-document being read, and the ones after it
        self.line = ""  # the here-document line read so far
        self.word_start = True

    @property
    def context(self) -> str:
        if self.body:
            return _QUOTED_HEREDOC if self.body[0].quoted else _HEREDOC
        return self.stack[-1]

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            i = self._step(text, i)

    def _step(self, text: str, i: int) -> int:
        if self.body:
            return self._heredoc_char(text, i)
        top = self.stack[-1]
        char = text[i]
        if top == _COMMENT:
            if char == "\n":
                self.stack.pop()
                return self._newline(i)
            return i + 1
        if top == _SINGLE:
            if char == "'":
                self.stack.pop()
            return i + 1
        if char == "\\":
            return i + 2
        if char == "$" and text.startswith("$((", i):
            self.stack.append(_ARITHMETIC)
            self.depth.append(0)
            return i + 3
        if char == "$" and text.startswith("$(", i):
            self.stack.append(_PAREN)
            self.depth.append(0)
            self.word_start = True
            return i + 2
        if char == "$" and text.startswith("${", i):
            self.stack.append(_BRACE_DOUBLE if top == _DOUBLE else _BRACE_PLAIN)
            return i + 2
        if char == "`":
            if top == _BACKQUOTE:
                self.stack.pop()
            else:
                self.stack.append(_BACKQUOTE)
                self.word_start = True
            return i + 1
        if top == _ARITHMETIC:
            return self._arithmetic_char(text, i)
        if top == _DOUBLE:
            if char == '"':
                self.stack.pop()
            return i + 1
        if char == '"':
            self.stack.append(_DOUBLE)
            self.word_start = False
            return i + 1
        if char == "}" and top in (_BRACE_PLAIN, _BRACE_DOUBLE):
            self.stack.pop()
            return i + 1
        if top == _BRACE_DOUBLE:
            return i + 1
        return self._unquoted_char(text, i)

    def _unquoted_char(self, text: str, i: int) -> int:
        char, top = text[i], self.stack[-1]
        if char == "'":
            self.stack.append(_SINGLE)
            self.word_start = False
            return i + 1
        if char == "#" and self.word_start:
            self.stack.append(_COMMENT)
            return i + 1
        if top == _PAREN and char == "(":
            self.depth[-1] += 1
        elif top == _PAREN and char == ")":
            if self.depth[-1] == 0:
                self.stack.pop()
                self.depth.pop()
                self.word_start = False
                return i + 1
            self.depth[-1] -= 1
        if char == "<":
            match = _HEREDOC_RE.match(text, i)
            if match:
                word = match.group(2)
                quoted = any(c in word for c in "'\"\\")
                delimiter = re.sub(r"\\(.)", r"\1", word).replace("'", "").replace('"', "")
                self.pending.append(_Heredoc(delimiter, quoted, bool(match.group(1))))
                self.word_start = False
                return match.end()
        if char == "\n":
            return self._newline(i)
        self.word_start = char in " \t;&|()<>"
        return i + 1

    def _arithmetic_char(self, text: str, i: int) -> int:
        char = text[i]
        if char == "(":
            self.depth[-1] += 1
        elif char == ")":
            if self.depth[-1] == 0 and text.startswith("))", i):
                self.stack.pop()
                self.depth.pop()
                return i + 2
            self.depth[-1] = max(0, self.depth[-1] - 1)
        return i + 1

    def _newline(self, i: int) -> int:
        self.word_start = True
        if self.pending:
            self.body, self.pending = self.pending, []
            self.line = ""
        return i + 1

    def _heredoc_char(self, text: str, i: int) -> int:
        doc = self.body[0]
        char = text[i]
        if not doc.quoted and char == "\\":
            self.line += text[i : i + 2]
            return i + 2
        if char != "\n":
            self.line += char
            return i + 1
        line = self.line.lstrip("\t") if doc.strip_tabs else self.line
        self.line = ""
        if line == doc.delimiter:
            self.body.pop(0)
        return i + 1

    def mark_reference(self) -> None:
        """A reference stands here: text, as far as the here-document's end line is concerned."""
        if self.body:
            self.line += "\0"
        else:
            self.word_start = False


def _contexts(parts: Parts) -> Iterator[tuple[str | Reference, str]]:
    """Each piece of ``parts`` with the quoting context it starts in."""
    lexer = _Lexer()
    for piece in parts:
        yield piece, lexer.context
        if isinstance(piece, str):
            lexer.feed(piece)
        else:
            lexer.mark_reference()


def contexts(parts: Parts) -> list[tuple[str, str]]:
    """``(reference name, context)`` for each reference: for tests and error messages."""
    return [(piece.name, context) for piece, context in _contexts(parts) if isinstance(piece, Reference)]

