"""One shell on one SSH channel that runs commands one after another: the protocol, both ways.

A channel per command costs two round trips more (open the channel, start
the command) before the command's own. So a connection keeps one shell
(:data:`SHELL`) that reads commands from the channel's stdin. Each command
is sent framed (:func:`command_text`): both its streams start with a
``<token><`` line and end with the token (stdout with the exit status too),
a token no command prints. :class:`Session` writes those frames and reads
them back into :class:`CommandResult` s, keeping a bounded head and tail of
each stream, asking a silent droplet whether it still answers.

The session's shell also holds the droplet's apply lock (:func:`lock_text`,
read back as a :class:`LockAnswer`) for as long as it lives.

The only module that writes or reads these frames. Imports :mod:`poseidon.shell`
(to quote) and nothing of the SSH client above it; the channel is paramiko's.
"""

from __future__ import annotations

import secrets
import select
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from poseidon.shell import quote

__all__ = [
    "BUSY",
    "LOCKED",
    "OUTPUT_KEPT",
    "SHELL",
    "CommandResult",
    "LockAnswer",
    "Session",
    "Unanswered",
    "command_text",
    "lock_text",
    "read_lock",
]

#: The command of a session's channel: a shell that reads commands from the channel's stdin.
SHELL = "exec sh -s"

#: Of a command's output, the first and last this many bytes of each stream are kept (by default).
OUTPUT_KEPT = 16 << 20


@dataclass(frozen=True)
class CommandResult:
    """What one command did: its output and exit status (``-1``: none came)."""

    command: str
    stdout: str
    stderr: str
    exited: int

    @property
    def ok(self) -> bool:
        return self.exited == 0

    @property
    def failed(self) -> bool:
        return not self.ok

    @property
    def return_code(self) -> int:
        """The exit status, as Fabric's ``Result`` names it too."""
        return self.exited

    def __bool__(self) -> bool:
        """True when the command succeeded, as Fabric's ``Result`` is: ``if ssh.run("test -e f"):``."""
        return self.ok

    def tail(self, stream: Literal["stdout", "stderr"], count: int = 10) -> str:
        """The last ``count`` lines of ``stream``, as Fabric's ``Result.tail`` gives them."""
        return "\n\n" + "\n".join(getattr(self, stream).splitlines()[-count:])


# -- one apply at a time per droplet ------------------------------------------------

#: What the lock prints first (:func:`lock_text`): held for as long as the session's shell lives.
LOCKED, BUSY = "poseidon-lock: held", "poseidon-lock: busy"
#: The last line of :func:`lock_text`'s answer, before the session shell's pid.
SHELL_LINE = "poseidon-shell: "


# -- one shell for many commands ---------------------------------------------------

#: The session's shell holds the apply lock on this descriptor; no command inherits it.
_LOCK_FD = 9


def _begin(token: str) -> str:
    """Starts a command's stdout and stderr with a ``<token><`` line: what came before is not its output."""
    return f"printf '%s<\\n' {quote(token)}; printf '%s<\\n' {quote(token)} >&2\n"


def _end(token: str) -> str:
    """Ends a command's stdout with ``\\n<token> <exit status>\\n`` and its stderr with ``\\n<token>\\n``."""
    return f"_rc=$?\nprintf '\\n%s %s\\n' {quote(token)} \"$_rc\"; printf '\\n%s\\n' {quote(token)} >&2\n"


def command_text(command: str, token: str, *, stdin: str | None = None) -> str:
    """Shell text that runs ``command`` in a session's shell, its output framed by ``token`` lines.

    The command runs in a subshell through ``eval``, so neither ``exit``, a
    ``cd`` nor a syntax error in it touches the session. Its stdin is
    ``/dev/null``, or ``stdin`` written by the shell's own ``printf``: the
    text travels inside the session's input, never in an argv or a file.
    Both streams start with a ``<token><`` line (what a process left running
    by an earlier command wrote before it is not this command's output);
    stdout ends with ``\\n<token> <exit status>\\n``, stderr with ``\\n<token>\\n``.
    """
    source = f"printf %s {quote(stdin)} | " if stdin is not None else ""
    sink = "" if stdin is not None else " </dev/null"
    return f"{_begin(token)}{source}( eval {quote(command)} ){sink} {_LOCK_FD}>&-\n{_end(token)}"


def lock_text(holder: str, token: str) -> str:
    """Shell text that makes the session's shell hold ``~/.poseidon/apply.lock`` (flock) until it ends.

    Prints :data:`LOCKED`, or :data:`BUSY` and the holder's line, or another
    line saying why there is no lock (no ``flock``, the file cannot be
    opened). The lock ends with the session, so with the connection, even
    when poseidon dies without a word; commands never inherit its descriptor
    (:func:`command_text`). ``command exec`` fails without ending the shell.
    """
    info = "~/.poseidon/apply.lock.info"
    fd = _LOCK_FD
    return (
        f"{_begin(token)}"
        "if ! mkdir -p ~/.poseidon 2>/dev/null || ! command -v flock >/dev/null 2>&1; then\n"
        "  echo 'poseidon-lock: no flock'\n"
        f"elif ! command exec {fd}>>~/.poseidon/apply.lock; then\n"
        "  echo 'poseidon-lock: cannot open ~/.poseidon/apply.lock'\n"
        f"elif flock -n {fd}; then\n"
        f"  printf '%s\\n' {quote(holder)} > {info}; echo {quote(LOCKED)}\n"
        f"else\n  echo {quote(BUSY)}; cat {info} 2>/dev/null; exec {fd}>&-\nfi </dev/null\n"
        # The shell that holds it: a second Ctrl-C stops what runs under it (and so frees the lock).
        f'echo "{SHELL_LINE}$$"\n'
        f"{_end(token)}"
    )


@dataclass(frozen=True)
class LockAnswer:
    """What the droplet answered :func:`lock_text`."""

    #: ``held``: this session holds the lock; ``busy``: another run does; ``none``: there is no lock to take.
    state: Literal["held", "busy", "none"]
    #: Busy: the holder's line (may be empty); none: why there is no lock.
    detail: str
    #: The pid of the session's shell, when it said.
    shell_pid: int | None = None

    @property
    def held(self) -> bool:
        return self.state == "held"


def read_lock(stdout: str) -> LockAnswer:
    """The answer :func:`lock_text` printed, read."""
    lines = stdout.splitlines()
    shell_pid = None
    if lines and lines[-1].startswith(SHELL_LINE) and lines[-1][len(SHELL_LINE) :].isdecimal():
        shell_pid = int(lines.pop()[len(SHELL_LINE) :])
    first = lines[0].strip() if lines else ""
    if first == LOCKED:
        return LockAnswer("held", "", shell_pid)
    if first == BUSY:
        return LockAnswer("busy", "\n".join(lines[1:]).strip(), shell_pid)
    return LockAnswer("none", first.removeprefix("poseidon-lock: "), shell_pid)


#: Bytes sent at a time: a droplet's window is watched between two.
_SEND_CHUNK = 32768


class Unanswered(Exception):
    """The droplet stopped answering: a keepalive went unanswered, or a step outlived its timeout."""


class _Keepalive:
    """One ``keepalive@openssh.com`` request, answered (either way) or not yet.

    paramiko's own keepalive sends requests that want no answer, so a server
    whose sshd froze goes unnoticed; this one waits for the answer on a
    thread of its own, which ends when the answer comes or the connection closes.
    """

    def __init__(self, transport: Any) -> None:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._ask, args=(transport,), daemon=True)
        self._thread.start()

    @staticmethod
    def _ask(transport: Any) -> None:
        try:
            transport.global_request("keepalive@openssh.com", wait=True)
        except Exception:  # noqa: BLE001 - the connection ended: the session notices
            pass

    @property
    def answered(self) -> bool:
        return not self._thread.is_alive()


class _Watch:
    """The droplet, watched while a command is sent and its answer awaited: ``limit`` seconds at
    most, and, after ``keepalive`` seconds of silence, a keepalive that must be answered as fast."""

    def __init__(self, transport: Any, keepalive: float | None, limit: float | None) -> None:
        self.transport, self.keepalive, self.limit = transport, keepalive, limit
        self.heard = time.monotonic()
        self.end = self.heard + limit if limit else None
        self.probe: _Keepalive | None = None
        #: How long to wait for the channel at a time, between two looks at the clock.
        self.pause = min(1.0, keepalive or 1.0)

    def answered(self) -> None:
        """The droplet just took or sent bytes: it is alive."""
        self.heard, self.probe = time.monotonic(), None

    def sent_some(self) -> None:
        """The droplet took some of the command: while it is sent, only a stall as long as
        ``limit`` ends it (a slow upload that goes on is no timeout)."""
        self.answered()
        self.end = self.heard + self.limit if self.limit else None

    def check(self) -> None:
        """Raises :class:`Unanswered` when the limit passed or a keepalive went unanswered."""
        now = time.monotonic()
        if self.end is not None and now > self.end:
            raise Unanswered(f"the step was still running {self.limit:g} s after it started, past its timeout")
        if self.keepalive and now - self.heard > self.keepalive:
            if self.probe is None:
                self.probe = _Keepalive(self.transport)
            elif self.probe.answered:
                self.heard, self.probe = now, None
            elif now - self.probe.started > self.keepalive:
                raise Unanswered(f"it has not answered for {now - self.heard:.0f} s (keepalives unanswered)")


class Session:
    """One shell on one channel that runs commands one after another: one round trip each.

    A channel per command costs two round trips more (open the channel, start
    the command) before the command's own. The session's shell reads each
    command from the channel's stdin (:func:`command_text`) and ends its
    stdout and stderr with a token no command prints.
    """

    def __init__(self, transport: Any, keepalive: float | None = None) -> None:
        self.token = f"::poseidon-end-{secrets.token_hex(8)}"
        self.transport = transport
        #: Seconds of silence after which the droplet is asked whether it still answers;
        #: as long again without an answer and it is taken for frozen.
        self.keepalive = keepalive
        self.channel = transport.open_session()
        self.channel.exec_command(SHELL)
        self._out, self._err = bytearray(), bytearray()

    def run(
        self, command: str, stdin: str | None = None, limit: float | None = None, keep: int = OUTPUT_KEPT
    ) -> CommandResult:
        """Run ``command``. Raises ``EOFError`` when the shell ended, :class:`Unanswered` when the
        droplet stops answering or ``limit`` seconds pass."""
        watch = self._watch(limit)
        self.send(command_text(command, self.token, stdin=stdin), watch)
        watch.sent_some()  # all of it: its limit counts from now
        return self.receive(command, keep=keep, watch=watch)

    def run_all(self, commands: list[str]) -> list[CommandResult]:
        """Run ``commands`` one after another, sent at once: one round trip for all of them."""
        self.send("".join(command_text(command, self.token) for command in commands))
        return [self.receive(command) for command in commands]

    def lock(self, holder: str) -> LockAnswer:
        """Make this session's shell hold the droplet's apply lock (:func:`lock_text`)."""
        self.send(lock_text(holder, self.token))
        return read_lock(self.receive("lock").stdout)

    def _watch(self, limit: float | None = None) -> _Watch:
        return _Watch(self.transport, self.keepalive, limit)

    def send(self, text: str, watch: _Watch | None = None) -> None:
        """Send shell text that ends with :func:`command_text`'s end lines; several may wait.

        A droplet that stops taking bytes (its window stays shut) raises :class:`Unanswered`
        as one that stops answering does: a frozen droplet holds up no send.
        """
        watch = watch or self._watch()
        # A value read from this machine's environment may hold bytes that are not UTF-8: they go as they are.
        data = memoryview(text.encode("utf-8", "surrogateescape"))
        channel = self.channel
        channel.settimeout(watch.pause)
        try:
            while data:
                try:
                    sent = channel.send(data[:_SEND_CHUNK])
                except TimeoutError:  # no room in the droplet's window for that long
                    watch.check()
                    continue
                if sent == 0:
                    raise EOFError("the session's shell ended")
                data = data[sent:]
                watch.sent_some()
        finally:
            channel.settimeout(None)

    def receive(self, command: str, keep: int = OUTPUT_KEPT, watch: _Watch | None = None) -> CommandResult:
        """The result of the next command sent (``command``, as the result names it).

        Of an output longer than thrice ``keep`` bytes, the first and last ``keep`` are kept
        and the rest streams away: a command printing gigabytes costs no more memory than that.
        """
        token = self.token.encode()
        out = _Framed(self._out, token + b"<\n", b"\n" + token + b" ")
        err = _Framed(self._err, token + b"<\n", b"\n" + token + b"\n")
        channel = self.channel
        watch = watch or self._watch()
        while not (out.done() and err.done()):
            watch.check()
            if channel.recv_ready():
                self._out += channel.recv(65536)
                out.done()
                out.trim(keep)
                watch.answered()
                continue
            if channel.recv_stderr_ready():
                self._err += channel.recv_stderr(65536)
                err.done()
                err.trim(keep)
                watch.answered()
                continue
            if channel.closed or channel.eof_received:
                raise EOFError("the session's shell ended")
            # The channel's fileno is readable while either stream has data.
            select.select([channel], [], [], watch.pause)
        status_end = self._out.index(b"\n", out.end + len(out.end_marker))
        status = bytes(self._out[out.end + len(out.end_marker) : status_end])
        stdout, stderr = out.output(), err.output()
        # What follows belongs to the next command (or to a process this one left writing).
        del self._out[: status_end + 1]
        del self._err[: err.end + len(err.end_marker)]
        exited = int(status) if status.isdigit() else -1
        return CommandResult(command, stdout.decode(errors="replace"), stderr.decode(errors="replace"), exited)

    def close(self) -> None:
        self.channel.close()


class _Framed:
    """Finds one command's output in a stream's buffer: after its begin line, up to its end marker.

    Each search starts where the last one stopped, so a large output is
    scanned once, not once per packet.
    """

    def __init__(self, buffer: bytearray, begin: bytes, end_marker: bytes) -> None:
        self.buffer, self.begin, self.end_marker = buffer, begin, end_marker
        self.start = self.end = -1
        self._scanned = 0
        #: Bytes of the output dropped from its middle (:meth:`trim`), after its first ``_head`` bytes.
        self.dropped = 0
        self._head = 0

    def trim(self, keep: int) -> None:
        """Drop the middle of an output longer than thrice ``keep``: its first and last ``keep`` bytes stay.

        While the output is arriving, its last ``keep`` bytes are kept past what could be the
        start of the end marker, so the end marker is found whatever was dropped before it.
        Once the end marker is in, the output ends there and is cut to exactly its head and tail.
        """
        if self.start < 0:
            return
        complete = self.end >= 0
        stop = self.end if complete else len(self.buffer)
        if stop - self.start <= (2 * keep if complete and self.dropped else 3 * keep):
            return
        head, tail = self.start + keep, stop - keep - (0 if complete else len(self.end_marker))
        del self.buffer[head:tail]
        self.dropped += tail - head
        self._head = keep
        if complete:
            self.end -= tail - head
        self._scanned = max(head, self._scanned - (tail - head))

    def output(self) -> bytes:
        """The output between the markers; where its middle was dropped, a line says how much."""
        data = bytes(self.buffer[self.start : self.end])
        if not self.dropped:
            return data
        note = f"\n[poseidon: {self.dropped:,} bytes of output not kept here]\n".encode()
        return data[: self._head] + note + data[self._head :]

    def done(self) -> bool:
        data = self.buffer
        if self.start < 0:
            at = data.find(self.begin, max(0, self._scanned - len(self.begin)))
            self._scanned = len(data)
            if at < 0:
                return False
            self.start = self._scanned = at + len(self.begin)
        if self.end < 0:
            at = data.find(self.end_marker, max(self.start, self._scanned - len(self.end_marker)))
            self._scanned = len(data)
            if at < 0:
                return False
            self.end = at
        # stdout's end marker is followed by the exit status: complete once its line is.
        return self.end_marker.endswith(b"\n") or data.find(b"\n", self.end + len(self.end_marker)) >= 0
