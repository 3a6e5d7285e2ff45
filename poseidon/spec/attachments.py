"""The files a playbook's ``file:`` steps take from beside it: ``src:``, copied byte for byte,
and ``template:``, text whose ``${…}`` are substituted as in steps.

Each is read once per playbook, so every droplet of a run gets the same bytes however
long the run takes, and at most :data:`MAX_FILE_BYTES`. A template's references are
checked in its own text, each problem at its own line and column of that file.

Imports :mod:`.models` and :mod:`.references`.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from poseidon.spec.models import FileStep
from poseidon.spec.references import ValueTooLong, reference_errors, rewrite, to_text, tokens

__all__ = ["MAX_FILE_BYTES", "AttachmentError", "Attachments", "TemplateProblem", "content"]

#: The most a ``file:`` step writes, in bytes: its content travels inside the step's script.
MAX_FILE_BYTES = 1 << 20


class AttachmentError(ValueError):
    """A file beside the playbook that cannot be used: missing, unreadable, too big, not text."""


class TemplateProblem(NamedTuple):
    """A problem in a template's own text, where it is."""

    line: int
    column: int
    message: str


class Attachments:
    """The files beside one playbook (relative paths are taken from ``folder``), read once each."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).absolute()
        self._read: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def path(self, written: str) -> Path:
        """Where the file written as ``written`` is: ``~`` is this machine's home; a relative
        path is taken from the playbook's folder."""
        return self.folder / os.path.expanduser(written)

    def shown(self, written: str) -> str:
        """The file's path as messages show it: relative to the current directory when it is below it."""
        path = self.path(written)
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def read(self, written: str) -> bytes:
        """The file's bytes, as they were the first time they were asked for; :class:`AttachmentError` if unusable."""
        with self._lock:
            if written not in self._read:
                self._read[written] = self._load(self.path(written), self.shown(written))
            return self._read[written]

    def digests(self) -> dict[str, str]:
        """The SHA-256 of each file read so far, by its path as written (what a plan records)."""
        with self._lock:
            return {written: hashlib.sha256(data).hexdigest() for written, data in sorted(self._read.items())}

    def text(self, written: str) -> str:
        """The file as UTF-8 text (a template)."""
        data = self.read(written)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise AttachmentError(
                f"{self.shown(written)} is no UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}):"
                " a template is text; copy other files with src:"
            ) from None

    @staticmethod
    def _load(path: Path, shown: str) -> bytes:
        try:
            # Not blocking: a FIFO put there is refused, not waited on forever.
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            with open(descriptor, "rb") as stream:
                if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                    raise AttachmentError(f"{shown} is not a regular file")
                data = stream.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise AttachmentError(f"cannot read {shown}: {exc.strerror or type(exc).__name__}") from None
        if len(data) > MAX_FILE_BYTES:
            raise AttachmentError(
                f"{shown} is over {MAX_FILE_BYTES:,} bytes, the most a file: step writes"
                " (put bigger files in a git repository)"
            )
        return data


def template_problems(text: str, var_names: set[str]) -> Iterator[TemplateProblem]:
    """What is wrong with the references in a template's ``text``: each at its line and column."""
    for token in tokens(text):
        if token.kind == "literal":
            continue
        errors = reference_errors(text[token.start : token.end], var_names)
        if errors:
            before = text[: token.start]
            line = before.count("\n") + 1
            column = token.start - (before.rfind("\n") + 1) + 1
            yield from (TemplateProblem(line, column, error) for error in errors)


def content(step: FileStep, attachments: Attachments, values: Mapping[str, str]) -> bytes:
    """The bytes ``step`` (expanded: its ``content`` substituted already) writes.

    Raises :class:`AttachmentError` for an unusable file, and ``KeyError`` naming a
    template's reference that has no value.
    """
    if step.content is not None:
        data = step.content.encode("utf-8")
    elif step.src is not None:
        data = attachments.read(step.src)
    else:
        assert step.template is not None
        try:
            data = rewrite(attachments.text(step.template), lambda name: to_text(values[name])).encode("utf-8")
        except ValueTooLong as exc:
            raise AttachmentError(f"{attachments.shown(step.template)}: {exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise AttachmentError(
            f"{step.path}: its content is {len(data):,} bytes, over the {MAX_FILE_BYTES:,} a file: step writes"
        )
    return data
