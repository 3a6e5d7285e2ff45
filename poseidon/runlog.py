"""The run log: one JSON line per step as it ends, and where ``--resume`` starts again.

``.poseidon/runs/<time>-<pid>-<random>.jsonl`` starts with a header naming the
run (playbook, its text's digest, mode, droplets, where each resumed) and
gets a line per step as it ends, so a crash loses nothing done.
:func:`resume_points` reads the latest applied run of a playbook back: per
droplet, the first step not done.

Imports the playbook's models, results, files and errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from poseidon import files, spec
from poseidon.errors import UsageError
from poseidon.results import RunResult, StepResult

__all__ = ["DONE_EARLIER", "RESUMED", "NoRunLogged", "RunLog", "resume_points"]

#: The reason of a step --resume skips because an earlier run did it.
RESUMED = "done in the run resumed"
#: The status of a step ``--resume`` did not run again: an earlier run did it.
DONE_EARLIER = "done-earlier"


class RunLog:
    """``.poseidon/runs/<time>-<pid>-<random>.jsonl``: one JSON line per step as it ends, so a crash loses nothing done.

    The name starts with the run's start time to the microsecond (names sort by
    start time) and is unique: runs started in one second, in one process or
    not, never share a log. Which run is the latest is read from the header's
    ``started``, not from the name (:func:`resume_points`).
    """

    def __init__(self, path: Path, descriptor: int | None = None) -> None:
        self.path = path
        #: Why the log is incomplete (the first write that failed), or ``None``.
        self.error: str | None = None
        self._lock = threading.Lock()
        # The descriptor of the file just created: never the name again, where a link could be by now.
        self._file = (
            os.fdopen(descriptor, "a", encoding="utf-8")
            if descriptor is not None
            else open(path, "a", encoding="utf-8")
        )

    @classmethod
    def start(
        cls, folder: Path, result: RunResult, droplets: list[str], resumed: Mapping[str, int] | None = None
    ) -> RunLog:
        """Open a new log in ``folder``; its first line names the run. A run that resumes another
        records where each droplet resumed (every droplet of that run, not only this one's),
        so that resuming this one never goes back before it."""
        try:
            files.folder(folder)
            log = cls(*_new_log_file(folder, result.started))
        except OSError as exc:
            raise UsageError(f"cannot write the run log in {folder}: {exc.strerror}") from exc
        playbook = os.path.abspath(result.playbook)
        header: dict[str, Any] = {
            "playbook": playbook,
            "mode": result.mode,
            "started": result.started,
            "droplets": droplets,
        }
        header["sha256"] = _text_digest(playbook)
        if resumed is not None:
            header["resumed"] = dict(resumed)
        log._write({"run": header})
        return log

    def step(self, droplet: str, step: StepResult) -> None:
        self._write({"droplet": droplet, **step.to_dict()})

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=str) + "\n"
        with self._lock:
            try:
                self._file.write(line)
                self._file.flush()
            except OSError as exc:
                # A full disk must not stop the droplets' work: the report still has it, and
                # the first failure is kept for the command to tell.
                self.error = self.error or f"{exc.strerror or exc} (from {record.get('droplet', 'the start')} on)"

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as exc:
            self.error = self.error or f"{exc.strerror or exc} (at the end)"


def _new_log_file(folder: Path, started: float) -> tuple[Path, int]:
    """Create a new, empty log file (0600) in ``folder`` named after ``started`` (UTC, to the microsecond);
    return it and a descriptor open on it.

    A pid and a random part follow the time, and the file is created only if
    no file has its name (``O_EXCL``): no two runs ever write to one log.
    """
    seconds = int(started)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f".{int((started - seconds) * 1e6):06d}"
    while True:
        path = folder / f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        try:
            return path, files.create_new(path)
        except FileExistsError:
            continue  # the same microsecond, pid and random part: another name


class NoRunLogged(UsageError):
    """``--resume`` found no earlier run of this playbook as it is now (none, or one of another text)."""


def _text_digest(path: str) -> str | None:
    """The playbook's text's digest: a run of another text says nothing of which steps are done."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def resume_points(folder: Path, playbook: spec.Playbook, path: str) -> dict[str, int]:
    """Per droplet, the first step not done in the latest applied run of the playbook at ``path``.

    The latest is the one whose header records the latest ``started``, whatever the files are
    called, among those that ran a step (or resumed another).
    """
    playbook_path = os.path.abspath(path)
    runs: list[tuple[float, str]] = []
    for log in folder.glob("*.jsonl") if folder.is_dir() else []:
        header = _read_header(log)
        if header.get("mode") == "apply" and header.get("playbook") == playbook_path:
            runs.append((_start_time(header), log.name))  # the name only breaks a tie
    # The latest run that ran something: one refused before any step (another apply held the
    # droplets) says nothing of where they are.
    steps_count = len(playbook.steps)
    for _, name in sorted(runs, reverse=True):
        header, done, ran = _read_log(folder / name, steps_count)
        if ran or header.get("resumed"):
            break
    else:
        raise NoRunLogged(f"no run of this playbook is logged in {folder}")
    if header.get("sha256") != _text_digest(playbook_path):
        # Steps added, removed or reordered since: "step 3 was done" may name another step now.
        raise NoRunLogged("the playbook changed since its last run")
    # A run that resumed another is done up to where it resumed, for every droplet of that one.
    resumed: dict[str, int] = header.get("resumed") or {}
    points = {}
    for droplet in dict.fromkeys([*resumed, *header.get("droplets", [])]):
        succeeded = done.get(droplet, set()) | set(range(resumed.get(droplet, 0)))
        points[droplet] = next((i for i in range(steps_count) if i not in succeeded), steps_count)
    return points


def _read_header(path: Path) -> dict[str, Any]:
    """A log's header (its first line), or ``{}`` when it has none that can be read."""
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            record = json.loads(file.readline())
    except (OSError, ValueError):
        return {}
    header = record.get("run") if isinstance(record, dict) else None
    return header if isinstance(header, dict) else {}


def _start_time(header: dict[str, Any]) -> float:
    """When the run of this header started (seconds since the epoch); a header without a time, never."""
    try:
        return float(header["started"])
    except (KeyError, TypeError, ValueError):
        return float("-inf")


def _read_log(path: Path, steps: int) -> tuple[dict[str, Any], dict[str, set[int]], bool]:
    """A log's header, the steps done per droplet (below ``steps``), and whether any step record is in it.

    A log is poseidon's, but a file on disk: what is not as poseidon writes it is
    refused as ``FILE:LINE: what``, and step numbers are taken only below
    ``steps`` (a resume point of 10**14 builds nothing that large).
    """
    header: dict[str, Any] = {}
    done: dict[str, set[int]] = {}
    ran = False
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                continue  # the last line, cut short by a crash
            raise UsageError(f"{path}:{number}: --resume: not a JSON line: the run log is damaged") from None
        if not isinstance(record, dict):
            raise UsageError(f"{path}:{number}: --resume: a record is a JSON object, not {type(record).__name__}")
        if "run" in record:
            header = _checked_header(path, number, record["run"], steps)
            continue
        ran = True
        droplet, index = record.get("droplet"), record.get("index")
        if not isinstance(droplet, str) or type(index) is not int or index < 0:
            raise UsageError(f"{path}:{number}: --resume: a step record needs a droplet name and a step number")
        if index < steps and (
            record.get("status") in ("ok", "changed", DONE_EARLIER) or record.get("reason") == RESUMED
        ):
            done.setdefault(droplet, set()).add(index)
    return header, done, ran


def _checked_header(path: Path, number: int, header: Any, steps: int) -> dict[str, Any]:
    """The ``run`` record, its ``droplets`` names and its ``resumed`` points (each at most ``steps``)."""
    where = f"{path}:{number}: --resume"
    if not isinstance(header, dict):
        raise UsageError(f"{where}: run: a JSON object")
    droplets = header.get("droplets", [])
    if not isinstance(droplets, list) or not all(isinstance(name, str) for name in droplets):
        raise UsageError(f"{where}: run.droplets: a list of droplet names")
    resumed = header.get("resumed") or {}
    if not isinstance(resumed, dict) or not all(type(point) is int and point >= 0 for point in resumed.values()):
        raise UsageError(f"{where}: run.resumed: droplet names and step numbers")
    return {**header, "resumed": {str(name): min(point, steps) for name, point in resumed.items()}}
