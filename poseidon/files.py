"""Files poseidon writes on this machine: whole or not at all, for their owner only, never through a link.

Reports, plan files and run logs may hold what a run printed: they are
created 0600 (a folder poseidon creates, 0700). A file is replaced through a
temporary file of our own, made with ``O_EXCL`` beside it, then renamed over
it: a link planted at a predictable temporary name is never followed, and a
link at the name itself is replaced, its target left alone. What is not a
regular file (a pipe, ``/dev/stdout``) is written into as it is.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path

__all__ = ["FILE_MODE", "FOLDER_MODE", "create_new", "folder", "name_in", "remove_tree", "write"]

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def write(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (text is UTF-8), atomically, mode 0600."""
    target = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode) and not stat.S_ISLNK(info.st_mode):
        with open(target, "wb") as stream:  # a pipe, a terminal, /dev/stdout: no rename there
            stream.write(payload)
        return
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(payload)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def folder(path: str | os.PathLike[str]) -> Path:
    """``path`` as a folder, created (with its parents) 0700 when missing."""
    target = Path(path)
    target.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    return target


def create_new(path: str | os.PathLike[str]) -> int:
    """A descriptor on a new, empty file at ``path`` (0600): raises ``FileExistsError`` if anything is there."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def name_in(directory: str | os.PathLike[str], name: str) -> Path:
    """A path inside ``directory`` named after ``name``: separators and other characters become ``_``,
    so that no name, whoever gave it (``../../x``), leads out of the folder."""
    safe = _UNSAFE.sub("_", name).lstrip(".") or "_"
    return Path(directory) / safe


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove the folder ``path`` and all it holds, however deep (a droplet may have made a tree
    deeper than Python's recursion limit), never crossing into another file system (a mount left
    under it) nor following a link: ``rm -rf --one-file-system``. What cannot be removed stays."""
    import subprocess

    subprocess.run(["rm", "-rf", "--one-file-system", "--", os.fspath(path)], check=False, capture_output=True)
