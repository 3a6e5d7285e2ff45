"""Reading a playbook's YAML: ``loads(text, filename)`` and ``load(path)`` return a
:class:`~poseidon.spec.playbook.Playbook` or raise ``SpecError`` listing every problem
at its ``file:line:column``.

The document is composed into nodes (no aliases, no merge keys, no tags beyond the
plain ones) and turned into plain data that remembers each value's node. Then every
problem is put on the node that holds it:

- a step that is none, as :func:`~.models.written_step` says (a file holds the
  written form only, never the models' own shape);
- the problems across fields, as :func:`~.checks.problems` finds them in the data as
  read, so that they are reported even beside a field's own problems;
- pydantic's errors, by their location, less the one error in which the model
  repeats the problems across fields.

Imports :mod:`.playbook`, :mod:`.models`, :mod:`.checks` and :mod:`.locations`.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from poseidon.errors import Problem, SpecError, did_you_mean
from poseidon.spec import checks
from poseidon.spec.attachments import AttachmentError, Attachments, template_problems
from poseidon.spec.locations import KeyText, Source, Where, render
from poseidon.spec.models import DROPLET_TAGS, STEP_MODELS, CreateDroplet, Model, written_step
from poseidon.spec.playbook import Playbook

#: The longest playbook poseidon reads, in bytes.
MAX_PLAYBOOK_BYTES = 1 << 20


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
    """Every model of a playbook and its parts."""
    found: list[type[BaseModel]] = []
    pending: list[type[BaseModel]] = [Model]
    while pending:
        model = pending.pop()
        found.append(model)
        pending.extend(model.__subclasses__())
    return found


# ---------------------------------------------------------------------------
# YAML: nodes keep their marks, so every problem gets its line and column.

_MAX_DEPTH = 64
_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "str", "timestamp", "binary")
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
                self.problem(node, render(loc), f"unsupported tag {_short_tag(node.tag)}")
                return _INVALID
            try:
                return self._constructor.construct_object(node)
            except (yaml.YAMLError, ValueError, ArithmeticError, TypeError):
                kind = node.tag.rpartition(":")[2]
                shown = node.value if len(node.value) <= 40 else node.value[:40] + "..."
                self.problem(node, render(loc), f"invalid {kind} value {shown!r}")
                return _INVALID
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                self.problem(node, render(loc), f"unsupported tag {_short_tag(node.tag)}")
                return _INVALID
            return [self.data(item, (*loc, index)) for index, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:
                self.problem(node, render(loc), f"unsupported tag {_short_tag(node.tag)}")
                return _INVALID
            return self._mapping(node, loc)
        self.problem(node, render(loc), "unsupported YAML node")
        return _INVALID

    def _mapping(self, node: yaml.MappingNode, loc: tuple[str | int, ...]) -> dict[Any, Any] | _Invalid:
        result: dict[Any, Any] = {}
        entries: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        self.entries[id(node)] = entries
        # Keys are the same in YAML when their tags and values are: 1 and true differ,
        # although Python's 1 == True would merge them.
        same: dict[tuple[str, Any], yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self.problem(key_node, render(loc), "merge keys (<<) are not supported")
                return _INVALID
            key = self.data(key_node, loc)
            if key is _INVALID:
                continue
            if isinstance(key, (list, dict)):
                self.problem(key_node, render(loc), "a mapping key must be a plain value")
                continue
            shown = key if isinstance(key, str) else KeyText(_key_text(key_node))
            earlier = same.get((key_node.tag, key))
            if earlier is not None:
                first = earlier.start_mark.line + 1
                written = repr(key) if isinstance(key, str) else shown
                self.problem(
                    key_node,
                    render((*loc, shown)),
                    f"duplicate key {written} (first at line {first})",
                )
                continue
            if key in entries:
                # Equal in Python only, so neither is a string: no key here may be one.
                self.problem(
                    key_node,
                    render((*loc, shown)),
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
                shown.append(part if isinstance(written, str) else KeyText(_key_text(key_node)))
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    return node, (*shown, *rest)
                key_node, node = None, node.value[part]
                shown.append(part)
            elif isinstance(part, str):
                # A short form's value is the step's primary field itself; a member of a
                # union (`str`, `int`, `function-wrap[…]`) is pydantic's, not a place to show.
                key_node = None
                if not _UNION_MEMBER_RE.fullmatch(part):
                    shown.append(part)
            else:
                return node, (*shown, *rest)
        return (key_node if at_key and key_node is not None else node), tuple(shown)

    def validation_problems(self, exc: ValidationError) -> list[Problem]:
        problems: list[Problem] = []
        for error in exc.errors(include_url=False):
            if error.get("input") is _INVALID or error["type"] == checks.ERROR_TYPE:
                continue  # reported already: a value as it was read, or across fields at each place
            loc = tuple(error["loc"])
            if len(loc) > 2 and loc[0] == "droplets" and loc[2] in DROPLET_TAGS:
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
            problems.append(Problem(self.file, mark.line + 1, mark.column + 1, render(shown), message))
        return problems

    def written_steps(self, data: dict[Any, Any]) -> tuple[dict[Any, Any], dict[Any, Any]]:
        """``data`` as the models validate it, and as the checks across fields read it.

        A file holds steps in their written form only. Each is read here, by the models'
        own :func:`~.models.written_step`: a step that is none is reported at its place and
        stands as already reported for the models; the checks read each in the models' shape.
        """
        steps = data.get("steps")
        if not isinstance(steps, list):
            return data, data
        for_models: list[Any] = []
        for_checks: list[Any] = []
        for index, item in enumerate(steps):
            fields, problem = (None, None) if item is _INVALID else written_step(item)
            if problem is not None:
                self.problems.append(self._at(("steps", index), problem))
            for_models.append(_INVALID if problem is not None else item)
            for_checks.append(fields)
        return {**data, "steps": for_models}, {**data, "steps": for_checks}

    def cross_field_problems(self, data: dict[Any, Any]) -> list[Problem]:
        """What :func:`~.checks.problems` finds, each at its own node; another place a message
        names is cited by its line."""
        return [self._at(where, message) for where, message in checks.problems(data, cite=self._line_of)]

    def _line_of(self, where: Where) -> str:
        return f"line {self.locate(where).start_mark.line + 1}"

    def _at(self, where: tuple[str | int, ...], message: str) -> Problem:
        mark = self.locate(where).start_mark
        return Problem(self.file, mark.line + 1, mark.column + 1, render(where), message)

    def attachment_problems(self, data: dict[Any, Any], attachments: Attachments) -> list[Problem]:
        """The files ``file:`` steps take that cannot be used, and the problems in templates'
        references, each in the template's own text. Read from the data the checks read, so
        that they are told with every other problem."""
        found = []
        variables = data.get("vars")
        names = {name for name in variables if isinstance(name, str)} if isinstance(variables, dict) else set()
        steps = data.get("steps")
        for index, step in enumerate(steps if isinstance(steps, list) else []):
            if not isinstance(step, dict) or step.get("kind") != "file":
                continue
            for field in ("src", "template"):
                written = step.get(field)
                if not isinstance(written, str) or not written or "${" in written:
                    continue  # the models say what is wrong with it
                where = ("steps", index, "file", field)
                try:
                    if field == "src":
                        attachments.read(written)
                        continue
                    text = attachments.text(written)
                except AttachmentError as exc:
                    found.append(self._at(where, str(exc)))
                    continue
                shown = attachments.shown(written)
                found += [
                    Problem(shown, p.line, p.column, render(where), p.message) for p in template_problems(text, names)
                ]
        return found

    def set_sources(self, playbook: Playbook) -> None:
        for index, ref in enumerate(playbook.droplets):
            create = getattr(ref, "create", None)
            if not isinstance(create, CreateDroplet):
                continue
            for field in create.model_fields_set:
                where = ("droplets", index, "create", field)
                mark = self.locate(where).start_mark
                create._sources[field] = Source(self.file, mark.line + 1, mark.column + 1, render(where))
        for index, step in enumerate(playbook.steps):
            node = self.locate(("steps", index))
            mark = node.start_mark
            step._source = Source(self.file, mark.line + 1, mark.column + 1, f"steps[{index}].{step.kind}")


#: How pydantic names the member of a union a value failed: never a field of a model.
_UNION_MEMBER_RE = re.compile(r"str|int|float|bool|[a-z-]+\[.*\]")


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
        return Problem(filename, line, column, "", f"character U+{exc.character:04X} is not allowed in YAML")
    return Problem(filename, 1, 1, "", str(exc))


_TOO_BIG = f"the playbook is over {MAX_PLAYBOOK_BYTES:,} bytes, the most poseidon reads"


def loads(
    text: str, filename: str = "<string>", *, folder: str | os.PathLike[str] | None = None, files: bool = True
) -> Playbook:
    """Validate a playbook's text; raise ``SpecError`` listing every problem, located.

    The files its ``file:`` steps take (``src:``, ``template:``) are read from ``folder``:
    by default the folder of ``filename``, or the current one for ``<string>``. With
    ``files=False`` (a command that writes no file: status, destroy) they are not read.
    """
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

    for_models, for_checks = tree.written_steps(data)
    if folder is None:
        folder = Path.cwd() if filename.startswith("<") else Path(filename).parent
    attachments = Attachments(folder)
    problems = tree.problems + tree.cross_field_problems(for_checks)
    if files:
        problems += tree.attachment_problems(for_checks, attachments)
    playbook: Playbook | None = None
    try:
        playbook = Playbook.model_validate(for_models)
    except ValidationError as exc:
        problems += tree.validation_problems(exc)
        if not problems:  # the checks over the file's data missed what the model's found: its words, unplaced
            problems = [Problem(filename, 1, 1, "", error["msg"]) for error in exc.errors(include_url=False)]
    if problems or playbook is None:
        unique = sorted(set(problems), key=lambda p: (p.file != filename, p.file, p.line, p.column, p.path, p.message))
        raise SpecError(unique)
    tree.set_sources(playbook)
    playbook._attachments = attachments
    return playbook


def load(path: str | os.PathLike[str], *, files: bool = True) -> Playbook:
    """Read and validate a playbook file; every failure, even an unreadable file, is a SpecError.
    ``files``: read and check the files its ``file:`` steps take (:func:`loads`)."""
    filename = os.fspath(path)
    try:
        with open(filename, "rb") as stream:
            raw = stream.read(MAX_PLAYBOOK_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SpecError([Problem(filename, 1, 1, "", f"cannot read the playbook: {reason}")]) from exc
    if len(raw) > MAX_PLAYBOOK_BYTES:
        raise SpecError([Problem(filename, 1, 1, "", _TOO_BIG)])
    body = raw.removeprefix(codecs.BOM_UTF8)  # as YAML does, columns do not count a BOM
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(body[: exc.start].decode("utf-8", "replace"))
        message = f"not UTF-8: byte 0x{body[exc.start]:02x} cannot be decoded"
        raise SpecError([Problem(filename, line, column, "", message)]) from exc
    return loads(text, filename, files=files)
