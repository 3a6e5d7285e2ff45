r"""Shell words and values bound into shell the user wrote.

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
  where the shell evaluates arithmetic     ``${_poseidon_1}``, a whole number
  (``$(( ))``; bash's ``(( ))``, ``let``,
  ``[[ ]]``, ``$[ ]``, an index or offset)
  where bash reads a variable's name        ``"${_poseidon_1}"``, a plain name
  (after ``-v``; ``unset``, ``read``, ``declare``)
  in single quotes                         refused (see below)
  in a quoted here-document (``<<'EOF'``)  refused: nothing expands there
  after a backslash (``\${app}``)          refused: the backslash would
                                           quote the first character
  ======================================  ==================================

  The shell expands a variable's value after it has parsed the command, so
  the value is never parsed: ``$(…)``, backquotes, quotes, ``;`` and newlines
  in it stay text, and inside double quotes the value arrives byte for byte.
  Arithmetic is the exception: bash evaluates a variable's value there as an
  expression, and an array index in it (``a[$(…)]``) runs a command; so a
  value there must be a whole number (Ubuntu's ``/bin/sh`` is dash, Fedora's
  and Rocky's is bash).
  Single quotes are refused because the shell takes their text literally:
  the value could only be pasted there, into text that is often code for
  another interpreter (``sh -c '…'``, ``awk '…'``, ``python3 -c '…'``).

This module knows shell text only; which names a text refers to is the
caller's business (:mod:`poseidon.spec` finds them).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["BindError", "Bound", "Reference", "bind", "check", "quote", "quote_all", "quote_path"]


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


_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")


class BindError(ValueError):
    """A value that the shell could not receive as data at its place in a command."""


def bind(parts: Parts, values: Mapping[str, str], *, prefix: str = "_poseidon_") -> Bound:
    """The command ``parts`` spell, each :class:`Reference` replaced by a variable holding its value.

    Raises :class:`BindError` for a reference the shell could not receive as
    data (see :func:`check`), or inside ``$(( ))`` with a value that is not a
    whole number.
    """
    names: dict[str, str] = {}
    bindings: dict[str, str] = {}
    pieces: list[str] = []
    for piece, context in _contexts(parts):
        if isinstance(piece, str):
            pieces.append(piece)
            continue
        if context in _REFUSED:
            raise BindError(_REFUSED[context].format(name=piece.name))
        value = values[piece.name]
        if piece.name not in names:
            names[piece.name] = f"{prefix}{len(names) + 1}"
            bindings[names[piece.name]] = value
        variable = names[piece.name]
        if context == _NAME and not _NAME_RE.fullmatch(value):
            raise BindError(
                f"${{{piece.name}}} stands where bash reads a variable's name (after -v, in unset, read or"
                f" declare), so its value must be a plain name, not {value!r}"
            )
        if context == _ARITHMETIC and not _NUMBER_RE.fullmatch(value.strip()):
            raise BindError(
                f"${{{piece.name}}} stands where the shell evaluates arithmetic ($(( )), (( )), let, [[ ]],"
                f" an index or an offset), so its value must be a whole number, not {value!r}"
                f" (for an associative array's key, set a variable first: k=${{{piece.name}}}; m[$k]=1)"
            )
        bare = context in (_DOUBLE, _BRACE_DOUBLE, _HEREDOC, _ARITHMETIC, _COMMENT)
        pieces.append(f"${{{variable}}}" if bare else f'"${{{variable}}}"')
    return Bound("".join(pieces), bindings)


def check(parts: Parts) -> list[str]:
    """Why some references in ``parts`` could never be bound, whatever their values: one line each."""
    return [
        _REFUSED[context].format(name=piece.name)
        for piece, context in _contexts(parts)
        if isinstance(piece, Reference) and context in _REFUSED
    ]


# -- the lexer: just enough of POSIX sh to know the quoting at each reference ----------

_PLAIN = "plain"  # unquoted: top level, ${ } outside double quotes
_SINGLE = "single"
_DOUBLE = "double"
_BACKQUOTE = "backquote"
_PAREN = "paren"  # inside $( ): unquoted, ends at its )
_BRACE_PLAIN = "brace"  # ${ ... } outside double quotes
_BRACE_DOUBLE = "brace-double"  # ${ ... } inside double quotes or a here-document
_ARITHMETIC = "arithmetic"
_COMMENT = "comment"
_HEREDOC = "heredoc"
_QUOTED_HEREDOC = "quoted-heredoc"
_ESCAPED = "escaped"  # right after a backslash
_TEST = "test"  # in bash's [[ ]]: arithmetic as an operand of -eq, -lt…, else as it is quoted
_DECLARE = "declare"  # in declare (typeset, local…): arithmetic when it gives -i, else as it is quoted
_NAME = "name"  # where bash reads a variable's name: the value must be one
_AS_QUOTED = (_PLAIN, _PAREN, _BACKQUOTE, _DOUBLE)
_READ_OPTIONS_WITH_VALUE = frozenset("pdtunNiCcO")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAMEREF_VALUE_RE = re.compile(r'[A-Za-z_][A-Za-z0-9_]*="?')
_NUMERIC_OPERATORS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})
#: declare, typeset or local, its options (across continued lines), and the rest of its command.
_DECLARATION_RE = re.compile(
    r"""\b(?:declare|typeset|local)(?![\w-])((?:(?:\s|\\\n)+["']?[-+][A-Za-z]+["']?)*)([^;&|\n]*)"""
)
_DECLARED_NAME_RE = re.compile(r"(?:^|\s)([A-Za-z_]\w*)(?==|\s|$)")
_SEPARATORS = " \t\n;&|()<>"
#: Words after which a command starts again.
_RESERVED = frozenset({"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "time", "in", "coproc"})
_RESERVED_CHAR_RE = re.compile(r"[!{}]")
_DECLARING = frozenset({"declare", "typeset", "local", "readonly", "export"})
#: Commands whose arguments bash reads as variables' names (an index in one is evaluated).
_NAME_READERS = frozenset({"unset", "read", "mapfile", "readarray", *_DECLARING})
#: Words after which the next word is still the command: builtin let, command let, time -p.
_PREFIXES = frozenset({"builtin", "command", "time"})
_OPTION_RE = re.compile(r"-[A-Za-z]+")
_AFTER_DASH_V_RE = re.compile(r"(?:^|\s)-v\s+$")
#: Commands whose -v takes a variable's name (grep -v, docker -v, command -v do not).
_DASH_V_NAMES = frozenset({"test", "[", "[[", "printf"})
#: A command word spelt with quotes or backslashes: 'let', "declare", l\\et.
_SPELT_WORD_RE = re.compile(r"""(?:'[A-Za-z_]*'|"[A-Za-z_]*"|\\[A-Za-z_]|[A-Za-z_])+""")
_NAME_INDEX_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\[")
_ASSIGNMENT_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\+?=")

_REFUSED = {
    _SINGLE: (
        "${{{name}}} is inside single quotes, where the shell takes text literally: the value could only be"
        " pasted into text that may be code for another program (sh -c '...', awk '...'); write \"${{{name}}}\""
        ' in double quotes, or pass it through env: and use "$NAME" in the quoted code'
    ),
    _QUOTED_HEREDOC: (
        "${{{name}}} is inside a quoted here-document (<<'EOF'), where the shell expands nothing:"
        " write the delimiter unquoted (<<EOF) to use a value there"
    ),
    _ESCAPED: (
        "${{{name}}} follows a backslash, which would quote the value's first character; remove the"
        " backslash (write $${{ for a literal ${{)"
    ),
}

_HEREDOC_RE = re.compile(r"<<(-?)[ \t]*((?:'[^']*'|\"[^\"]*\"|\\.|[^\s;&|<>()])+)")
_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNQUOTED = (_PLAIN, _PAREN, _BACKQUOTE)


@dataclass
class _Heredoc:
    delimiter: str
    quoted: bool
    strip_tabs: bool


@dataclass
class _Level:
    """One open context, and what it needs to find its end."""

    kind: str
    parens: int = 0  # ( open inside a $( ) or $(( ))
    cases: int = 0  # case statements open inside it, whose patterns end with a bare )
    heredoc: _Heredoc | None = None
    closer: str = "))"  # what ends an arithmetic level: )) or, for $[ ] and an index, ]
    #: An arithmetic level opened by ``((`` or ``$((`` that may turn out to be two parentheses
    #: (``((cd /tmp) 2>&1)``): bash reads it so when it does not parse as arithmetic.
    parens_maybe: bool = False
    #: The command being read, when bash may evaluate its words as arithmetic: ``let`` (to the
    #: command's end), ``[[`` (to its ``]]``: the operands of -eq, -lt…) or ``declare`` (and
    #: typeset, local, readonly, export: with -i); else empty.
    arithmetic_command: str = ""
    command_at: int = 0  # where that command stands in the whole text
    command_name: str = ""  # the command being read (its first word that is no assignment)
    #: Inside ``${ }``: ``name`` (its name so far), ``index`` (in ``[ ]``), ``offset`` (after a
    #: ``:`` that starts no ``:-``, ``:=``, ``:?``, ``:+``) or ``rest``. bash evaluates index and offset.
    brace: str = "name"
    param: str = ""  # of an array's words (array): the array's name
    array: bool = False  # the words of an array assignment, a=( … )


class _Lexer:
    """Walks literal shell text, keeping the stack of quoting contexts across the pieces."""

    def __init__(self) -> None:
        self.stack: list[_Level] = [_Level(_PLAIN)]
        self.pending: list[_Heredoc] = []  # here-documents whose bodies start at the next newline
        self.line = ""  # the here-document line read so far
        self.word_start = True
        self.escaped = False  # the last piece ended with a backslash
        self.base = 0  # where the piece being fed starts in the whole text
        #: A command's first word may start here (also after NAME=value words).
        self.command_start = True
        #: Variables declared integer (declare -i): what is assigned to them is arithmetic.
        self.integers: set[str] = set()
        #: In the value of an assignment word to one of those (n=${v} after declare -i n).
        self.integer_word = False
        #: After builtin, command or time (and their options): the next word is still a command.
        self.prefixed = False
        #: The whole text, references as NUL: what a ``((`` turns out to be is read ahead in it.
        self.whole = ""

    @property
    def top(self) -> _Level:
        return self.stack[-1]

    @property
    def context(self) -> str:
        if self.escaped:
            return _ESCAPED
        level = self.top
        if level.kind in (_BRACE_PLAIN, _BRACE_DOUBLE) and level.brace in ("index", "offset"):
            return _ARITHMETIC
        command = self.command
        if command.arithmetic_command == "let" or self.integer_word:
            return _ARITHMETIC
        if command.array and command.param in self.integers:  # c=(${n}) after declare -i c
            return _ARITHMETIC
        if command.arithmetic_command == "[[":
            return _TEST
        if command.arithmetic_command == "declare":
            return _DECLARE
        return level.kind

    @property
    def command(self) -> _Level:
        """The level whose command a reference here is a word of (through one pair of double quotes)."""
        return self.stack[-2] if self.top.kind == _DOUBLE and len(self.stack) > 1 else self.top

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            i = self._step(text, i)
        if i > len(text):  # a backslash ended the piece: it escapes what follows
            self.escaped = True

    def mark_reference(self) -> None:
        """A reference stands here: text, as far as word starts and here-document ends are concerned."""
        self.escaped = False
        self.word_start = False
        self.line += "\0"

    def _push(self, kind: str) -> None:
        self.stack.append(_Level(kind))
        self.line += "\0"

    def _push_index(self, text: str, i: int) -> int | None:
        """At ``NAME[`` of an array (an assignment, a name given to -v, unset, read…): its index
        is arithmetic up to its ``]`` (an associative array's key too: which kind the array is
        depends on what ran before, which text cannot tell). Where that index starts; ``None``
        elsewhere."""
        match = _NAME_INDEX_RE.match(text, i)
        if match is None:
            return None
        self._push(_ARITHMETIC)
        self.top.closer = "]"
        return match.end()

    def _reads_a_name(self, text: str, i: int) -> bool:
        """Whether the word starting at ``i`` is one bash reads as a variable's name: given to -v
        (test, [[, printf), or an argument of unset, read, declare and the like."""
        command = self.command.command_name
        return command in _NAME_READERS or (command in _DASH_V_NAMES and bool(_AFTER_DASH_V_RE.search(text, 0, i)))

    def _step(self, text: str, i: int) -> int:
        self.escaped = False
        kind, char = self.top.kind, text[i]
        if kind == _QUOTED_HEREDOC:
            return self._heredoc_char(text, i)
        if kind == _COMMENT:
            if char == "\n":
                self.stack.pop()
                return self._newline(i)
            return i + 1
        if kind == _SINGLE:
            if char == "'":
                self.stack.pop()
            return i + 1
        if char == "\\":
            if kind == _HEREDOC:
                self.line += text[i : i + 2]
            if self.word_start and kind in _UNQUOTED and text[i + 1 : i + 2].isalpha():
                return i + 1  # \let is let: the backslash quotes a letter, which is itself
            return i + 2
        if char == "$" and text.startswith("$((", i):
            if not _closes_as_arithmetic(self.whole, self.base + i + 3):  # $((cd x) 2>&1): $( then (
                self._push(_PAREN)
                self.word_start = self.command_start = True
                return i + 2
            self._push(_ARITHMETIC)
            self.top.parens_maybe = True
            return i + 3
        if char == "$" and text.startswith("$[", i):
            self._push(_ARITHMETIC)
            self.top.closer = "]"
            return i + 2
        if char == "$" and text.startswith("$(", i):
            self._push(_PAREN)
            self.word_start = self.command_start = True
            return i + 2
        if char == "$" and text.startswith("${", i):
            self._push(_BRACE_DOUBLE if kind in (_DOUBLE, _HEREDOC, _BRACE_DOUBLE) else _BRACE_PLAIN)
            self.word_start = False
            return i + 2
        if char == "`":
            if kind == _BACKQUOTE:
                self.stack.pop()
            else:
                self._push(_BACKQUOTE)
                self.word_start = self.command_start = True
            return i + 1
        if kind == _HEREDOC:
            return self._heredoc_char(text, i)
        if kind == _ARITHMETIC:
            return self._arithmetic_char(text, i)
        if kind == _DOUBLE:
            if char == '"':
                self.stack.pop()
            return i + 1
        if char == "}" and kind in (_BRACE_PLAIN, _BRACE_DOUBLE):
            self.stack.pop()
            return i + 1
        if kind in (_BRACE_PLAIN, _BRACE_DOUBLE):
            self._brace_char(text, i)
        if char == '"':
            spelt = self._quoted_command_word(text, i)
            if spelt is not None:
                return spelt
            begins = self.word_start and kind in _UNQUOTED
            self.stack.append(_Level(_DOUBLE))
            self.word_start = False
            if begins:
                self.command_start = False
                if self._reads_a_name(text, i):
                    index = self._push_index(text, i + 1)  # "a[${i}]" given to -v, printf -v…
                    if index is not None:
                        return index
            return i + 1
        if kind == _BRACE_DOUBLE:
            return i + 1
        return self._unquoted_char(text, i)

    def _unquoted_char(self, text: str, i: int) -> int:
        level, char = self.top, text[i]
        if char in "'\\" or (char.isalpha() and "\\" in text[i : i + 12]):
            spelt = self._quoted_command_word(text, i)
            if spelt is not None:
                return spelt
        if char == "'":
            self.stack.append(_Level(_SINGLE))
            self.word_start = False
            return i + 1
        if char == "#" and self.word_start and level.kind in _UNQUOTED:
            self.stack.append(_Level(_COMMENT))
            return i + 1
        if self.word_start and level.kind in _UNQUOTED:
            if self.command_start and text.startswith("((", i):  # bash's arithmetic command
                return self._arithmetic_command(i + 2)
            if text.startswith("]]", i) and _delimited(text, i + 2) and level.arithmetic_command == "[[":
                level.arithmetic_command = ""
                self.word_start = False
                return i + 2
            if char not in _SEPARATORS:
                went = self._word(text, i)
                if went is not None:
                    return went
        if level.kind == _PAREN and char == "(":
            level.parens += 1
        elif level.kind == _PAREN and char == ")":
            if level.parens:
                level.parens -= 1
            elif not level.cases:  # a case pattern's ) does not end the $( )
                self.stack.pop()
                self.word_start, self.command_start = False, level.array  # a=(…) cmd: the command comes after
                return i + 1
        if text.startswith("<<<", i):  # a here-string: the word after it is an ordinary word
            self.word_start = False
            return i + 3
        if char == "<":
            match = _HEREDOC_RE.match(text, i)
            if match:
                word = match.group(2)
                quoted = any(c in word for c in "'\"\\")
                delimiter = re.sub(r"\\(.)", r"\1", word).replace("'", "").replace('"', "")
                self.pending.append(_Heredoc(delimiter, quoted, bool(match.group(1))))
                self.word_start = False
                return match.end()
        if char in _SEPARATORS:
            self.integer_word = False
        if char in ";&|\n)" and level.arithmetic_command in ("let", "declare"):
            level.arithmetic_command = ""
        if char in ";&|\n(" or (char == ")" and (level.cases or text[i - 1 : i] == "(")):
            self.command_start = True  # a command may start next (after a case pattern, and f() too)
            level.command_name = ""
        elif char == ")":
            self.command_start = False
        if char == "\n":
            return self._newline(i)
        self.word_start = char in _SEPARATORS
        return i + 1

    def _arithmetic_command(self, i: int) -> int:
        """After a ``((`` that starts a command (``i`` past it)."""
        if not _closes_as_arithmetic(self.whole, self.base + i):  # ((cd x) 2>&1): two subshells
            self.word_start = self.command_start = True
            return i - 1
        self._push(_ARITHMETIC)
        self.top.parens_maybe = True
        self.command_start = False
        return i

    def _word(self, text: str, i: int) -> int | None:
        """A word starts at ``i``, unquoted: what it is to the command. Where to go on, or ``None``
        to read it a character at a time."""
        level = self.top
        if level.array and text.startswith("[", i):  # [index]=value in an array's words
            self._push(_ARITHMETIC)
            self.top.closer = "]"
            return i + 1
        if not self.command_start:
            assignment = _ASSIGNMENT_RE.match(text, i)
            if assignment and level.command_name in _DECLARING and text.startswith("(", assignment.end()):
                return self._array_words(assignment, level)  # declare -a a=([${i}]=x)
            if self._reads_a_name(text, i):
                return self._push_index(text, i)  # a[${i}] given to -v, unset, read…
            return None
        if self.prefixed and text.startswith("-", i):  # builtin -p, time -p: options, then the command
            option = _OPTION_RE.match(text, i)
            if option and _delimited(text, option.end()):
                self.word_start = False
                return option.end()
        if text.startswith("[", i) and _delimited(text, i + 1):  # [ -v NAME ]
            level.command_name = "["
            self.word_start = self.command_start = False
            return i + 1
        if text.startswith("[[", i) and _delimited(text, i + 2):
            level.arithmetic_command, level.command_at, level.command_name = "[[", self.base + i, "[["
            self.word_start = self.command_start = False
            return i + 2
        if char_word := _RESERVED_CHAR_RE.match(text, i):  # ! { }: the next word is a command
            if _delimited(text, char_word.end()):
                self.word_start = False
                return char_word.end()
        keyword = _WORD_RE.match(text, i)
        if keyword and _delimited(text, keyword.end()):
            return self._command_word(keyword.group(), text, i, keyword.end())
        index = self._push_index(text, i)  # a[${i}]=value: the command comes after it
        if index is not None:
            self.word_start = False
            self.integer_word = text[i:index].rstrip("[") in self.integers  # c[1]=${n} after declare -i c
            return index
        assignment = _ASSIGNMENT_RE.match(text, i)
        if assignment and text.startswith("(", assignment.end()):  # a=([${i}]=x y): an array's words
            return self._array_words(assignment, level)
        self.command_start = assignment is not None  # NAME=value: the command comes after it
        self.integer_word = assignment is not None and assignment.group(1) in self.integers
        if self.integer_word:
            assert assignment is not None
            self.word_start = False
            return assignment.end()
        if not self.command_start:
            level.command_name = ""
        return None

    def _quoted_command_word(self, text: str, i: int) -> int | None:
        """A command word spelt with quotes or backslashes ('let', "declare", l\\et): read as the
        word it is. Where to go on, or ``None`` (no such word here)."""
        if not (self.word_start and self.command_start and self.top.kind in _UNQUOTED):
            return None
        spelt = _SPELT_WORD_RE.match(text, i)
        if spelt is None or not _delimited(text, spelt.end()):
            return None
        name = re.sub(r"['\"\\]", "", spelt.group())
        if name == spelt.group() or not _WORD_RE.fullmatch(name):
            return None
        return self._command_word(name, text, i, spelt.end())

    def _command_word(self, name: str, text: str, i: int, end: int) -> int:
        """The word ``name`` (from ``i`` to ``end``) stands where a command starts."""
        level = self.top
        if name == "case":
            level.cases += 1
        elif name == "esac" and level.cases:
            level.cases -= 1
        self.prefixed = name in _PREFIXES
        if not self.prefixed and name not in _RESERVED:
            level.command_name = name
        if name == "let":
            level.arithmetic_command = "let"
        elif name in _DECLARING:
            level.arithmetic_command, level.command_at = "declare", self.base + i
        elif name == "for":  # for ((i = 0; i < n; i++)), or for c in …, c an integer
            after = len(text[end:]) - len(text[end:].lstrip(" \t"))
            if text.startswith("((", end + after):
                return self._arithmetic_command(end + after + 2)
            variable = _WORD_RE.match(text, end + after)
            if variable and variable.group() in self.integers:
                level.arithmetic_command = "let"  # each word is assigned to it: arithmetic
        # After if, while, do…, a command starts, even with no space: if((n > 1)).
        self.command_start = self.word_start = name in _RESERVED or self.prefixed
        return end

    def _array_words(self, assignment: re.Match[str], level: _Level) -> int:
        """After ``NAME=(``: the array's words, up to its ``)``."""
        self._push(_PAREN)
        self.top.array, self.top.param = True, assignment.group(1)
        self.word_start, self.command_start = True, False
        return assignment.end() + 1

    def _brace_char(self, text: str, i: int) -> None:
        """Follows ``${ }``'s parts: its name, an index, an offset and length, or the rest."""
        level, char = self.top, text[i]
        if level.brace == "index":
            if char == "]":
                level.brace = "name"
        elif level.brace == "name":
            if char == "[":
                level.brace = "index"
            elif char == ":":
                level.brace = "rest" if text[i + 1 : i + 2] in ("-", "=", "?", "+") else "offset"
            elif not (char.isalnum() or char in "_#!@*?$"):
                level.brace = "rest"

    def _arithmetic_char(self, text: str, i: int) -> int:
        level, char = self.top, text[i]
        if level.closer == "]":
            if char == "[":
                level.parens += 1
            elif char == "]":
                if level.parens == 0:
                    self.stack.pop()
                    return i + 1
                level.parens -= 1
            return i + 1
        if char == "(":
            level.parens += 1
        elif char == ")":
            if level.parens == 0 and text.startswith("))", i):
                self.stack.pop()
                return i + 2
            if level.parens == 0 and level.parens_maybe:
                # ((cd /tmp) 2>&1): two parentheses, the inner one closed here; read on in the outer.
                self.stack.pop()
                self.stack.append(_Level(_PAREN))
                self.command_start = False
                return i + 1
            level.parens = max(0, level.parens - 1)
        return i + 1

    def _newline(self, i: int) -> int:
        self.word_start = self.command_start = True
        self.integer_word = False
        if self.pending:
            self._next_heredoc()
        return i + 1

    def _next_heredoc(self) -> None:
        doc = self.pending.pop(0)
        self.stack.append(_Level(_QUOTED_HEREDOC if doc.quoted else _HEREDOC, heredoc=doc))
        self.line = ""

    def _heredoc_char(self, text: str, i: int) -> int:
        char = text[i]
        if char != "\n":
            self.line += char
            return i + 1
        doc = self.top.heredoc
        assert doc is not None
        line = self.line.lstrip("\t") if doc.strip_tabs else self.line
        self.line = ""
        if line == doc.delimiter:
            self.stack.pop()
            if self.pending:
                self._next_heredoc()
            else:
                self.word_start = self.command_start = True
        return i + 1


def _delimited(text: str, end: int) -> bool:
    """Whether a word ending at ``end`` ends there (the text ends, or a separator follows)."""
    return end == len(text) or text[end] in _SEPARATORS


def _numeric_operand(whole: str, at: int) -> bool:
    """Whether the word at ``at`` is next to -eq, -lt… (an operand bash evaluates as arithmetic)."""
    _, previous = _word_before(whole, at)
    end = at
    while end < len(whole) and not whole[end].isspace():
        end += 1
    return any(word.strip("\"'") in _NUMERIC_OPERATORS for word in previous + whole[end:].split()[:1])


def _declared(whole: str, option: str) -> set[str]:
    """The names declared with ``option`` (``i``: integers)."""
    names: set[str] = set()
    for declaration in _DECLARATION_RE.finditer(whole):
        options = [word.strip("\"'") for word in declaration.group(1).split()]
        if any(option in word for word in options if word.startswith("-")):
            names.update(_DECLARED_NAME_RE.findall(declaration.group(2)))
    return names


def _closes_as_arithmetic(whole: str, at: int) -> bool:
    """Whether the ``((`` just before ``at`` closes with ``))`` (arithmetic), rather than with
    ``)`` and later ``)`` (two parentheses: ``((cd x) 2>&1)``). Quotes are not read: a text
    that fools this is taken for arithmetic, the stricter reading."""
    depth = 2
    for index in range(at, len(whole)):
        char = whole[index]
        if char in "'\"\\`":  # quoting this scan does not follow: arithmetic, the stricter reading
            return True
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 1:
                return whole.startswith(")", index + 1)
    return True


def _word_before(whole: str, at: int) -> tuple[str, list[str]]:
    """The text of the word holding ``at`` before it, and the word before that word (none, or one)."""
    start = at
    while start > 0 and not whole[start - 1].isspace():
        start -= 1
    return whole[start:at], whole[:start].split()[-1:]


def _a_name_here(whole: str, lexer: _Lexer) -> bool:
    """Whether the reference at the lexer's place is all or the start of a word bash reads as a
    variable's name: after -v, an argument of unset or read, a name declare is given."""
    before, previous = _word_before(whole, lexer.base)
    before = before.lstrip('"')
    command = lexer.command.command_name
    if command in _DECLARING and _NAMEREF_VALUE_RE.fullmatch(before):  # declare -n r=${n}: r names the value
        declaration = _DECLARATION_RE.match(whole, lexer.command.command_at)
        return declaration is not None and "n" in declaration.group(1)
    if before or (previous and previous[0][-1:] in "<>"):  # a redirection's word is a file's, a string's
        return False
    if previous == ["-v"] and command in _DASH_V_NAMES:
        return True
    if command == "unset":
        return previous != ["-f"]  # unset -f takes a function's name
    if command in ("read", "mapfile", "readarray"):  # not the value of -p, -d, -t… (also as in -rp)
        return not (previous and previous[0].startswith("-") and previous[0][-1] in _READ_OPTIONS_WITH_VALUE)
    return command in _DECLARING


def _contexts(parts: Parts) -> Iterator[tuple[str | Reference, str]]:
    """Each piece of ``parts`` with the quoting context it starts in."""
    lexer = _Lexer()
    whole = "".join(piece if isinstance(piece, str) else "\0" for piece in parts)
    lexer.whole = whole
    lexer.integers = _declared(whole, "i")
    for piece in parts:
        context = lexer.context
        if context == _TEST:
            context = _ARITHMETIC if _numeric_operand(whole, lexer.base) else lexer.top.kind
        elif context == _DECLARE:
            declaration = _DECLARATION_RE.match(whole, lexer.command.command_at)
            assigned = _ASSIGNMENT_RE.match(_word_before(whole, lexer.base)[0].lstrip('"'))
            integer = (declaration is not None and "i" in declaration.group(1)) or (
                assigned is not None and assigned.group(1) in lexer.integers  # export c=${n} after declare -i c
            )
            context = _ARITHMETIC if integer else lexer.top.kind
        if context in _AS_QUOTED and isinstance(piece, Reference) and _a_name_here(whole, lexer):
            context = _NAME
        yield piece, context
        if isinstance(piece, str):
            lexer.feed(piece)
            lexer.base += len(piece)
        else:
            lexer.mark_reference()
            lexer.base += 1
