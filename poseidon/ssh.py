"""SSH to a droplet: the original poseidon's API on a Fabric ``Connection``.

::

    ssh = droplet.connect()
    ssh.wait("echo foo")            # 'foo\\n'
    ssh.chdir("app")                 # later commands run as `cd -- DIR && …`
    ssh.apt("git python3-venv")
    ssh.ps()                         # a pandas DataFrame

The connection opens lazily on the first command and is reused for every
command after it: commands go to one shell session on it
(:mod:`poseidon.session`), one round trip each (a pseudo-terminal or a local
timeout takes a channel of its own). Every command returns a
:class:`~poseidon.session.CommandResult`.
The conveniences (``apt``, ``git``, ``pip``…) are the
playbook's steps (:mod:`poseidon.steps`): one round trip each, ``ok`` when
there was nothing to do.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from poseidon import hostkeys, spec, steps
from poseidon.errors import CommandError, SSHConnectError, SSHError, SSHUnresponsiveError, UsageError
from poseidon.masker import Masker
from poseidon.session import OUTPUT_KEPT, CommandResult, LockAnswer, Session, Unanswered
from poseidon.shell import BindError

if TYPE_CHECKING:
    import pandas as pd
    from fabric import Connection
    from paramiko import ChannelFile, ChannelStderrFile, ChannelStdinFile

__all__ = ["StepOutcome", "SSHClient", "parse_ps"]

# paramiko logs what failed in its own thread (a banner that never came, a reset) with a traceback,
# which logging prints on stderr when the application set up no logging; poseidon says each of
# those failures itself (SSHConnectError, SSHError). Its records still reach a handler set up.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

#: ``ps -Afo`` as the original documents it is refused by procps-ng: ``-f`` and ``-o`` both set the format.
TOP_ARGS = "-Ao %cpu,%mem,user,comm"
#: Each process's session: tells the processes a run started from those others did (the report).
SESSIONS_ARGS = "-Ao pid,sid"
_NUMERIC = {"PID", "PPID", "SID", "C", "%CPU", "%MEM", "UID"}


@dataclass
class StepOutcome:
    """What one step did on one droplet."""

    status: str  # ok | changed | would-change | failed
    stdout: str
    stderr: str
    exited: int
    duration: float
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    @property
    def changed(self) -> bool:
        return self.status == "changed"


class _AcceptNew:
    """paramiko host-key policy: OpenSSH's ``accept-new``, droplet by droplet (:mod:`poseidon.hostkeys` decides).

    Fabric installs paramiko's ``AutoAddPolicy``, which trusts every key and
    records nothing. paramiko itself compares a key only with what it was
    given for the address, and would refuse a new droplet on a reused address
    as an attack; so it is given nothing, every key reaches this policy, and
    the policy judges by the droplet's id as well as its address.
    """

    def __init__(
        self,
        path: Path,
        *,
        droplet_id: int | None,
        droplet_name: str | None,
        on_notice: Callable[[str], None] | None,
    ) -> None:
        self.path = path
        self.droplet_id = droplet_id
        self.droplet_name = droplet_name
        self.on_notice = on_notice

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        # ``hostname`` is paramiko's lookup name: the address, ``[address]:port`` off port 22.
        hostkeys.verify(
            self.path,
            hostkeys.HostKey(key.get_name(), key.asbytes()),
            address=hostname,
            droplet_id=self.droplet_id,
            droplet_name=self.droplet_name,
            on_notice=self.on_notice,
        )


#: paramiko records RSA host keys as ``ssh-rsa`` and negotiates them as SHA-2 signatures.
_SIGNATURES = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}


def _preferring(types: list[str]) -> Callable[..., Any]:
    """A paramiko transport factory that asks the server for the recorded key types first.

    paramiko does this itself only for keys loaded into it, and poseidon loads
    none (see :class:`_AcceptNew`). Without it a server with several host keys
    would offer its ed25519 one where an ecdsa one is recorded.
    """
    import paramiko

    def transport(sock: Any, **options: Any) -> Any:
        made = paramiko.Transport(sock, **options)
        security = made.get_security_options()
        offered = list(security.key_types)
        first = [t for name in types for t in _SIGNATURES.get(name, (name,)) if t in offered]
        security.key_types = [*dict.fromkeys(first), *(t for t in offered if t not in first)]
        return made

    return transport


#: What a step keeps of each stream: its head and its tail (the report shows the tail).
STEP_OUTPUT_KEPT = 64 << 10


def _sudo_hint(stderr: str, exited: int, user: str, label: str) -> str | None:
    """What to do when sudo, not the step's command, made a step that ran under sudo fail; ``None`` when it did not."""
    if "sudo" not in stderr:
        return None
    # The shell says "sudo: command not found"; timeout(1), "failed to run command 'sudo'".
    if exited == 127 and ("not found" in stderr or "failed to run command" in stderr):
        return f"{label} has no sudo: install it (apt-get install sudo), or connect as root"
    if "not in the sudoers file" in stderr or "is not allowed to execute" in stderr:
        return f"{user} may not use sudo on {label}: allow it (a NOPASSWD line in /etc/sudoers.d/), or connect as root"
    if "sudo:" in stderr and "password" in stderr:
        return (
            f"sudo on {label} wants a password for {user}: let {user} use sudo"
            " without one (a NOPASSWD line in /etc/sudoers.d/), or connect as root"
        )
    return None


class SSHClient:
    """One SSH connection to one droplet, reused for every command."""

    #: Seconds a step with a ``timeout`` may run past it (and past ``timeout``'s own kill) before the
    #: droplet is taken for frozen.
    TIMEOUT_MARGIN = 5.0

    def __init__(
        self,
        host: str,
        *,
        user: str = "root",
        port: int = 22,
        key_filename: str | None = None,
        known_hosts: str | None = None,
        interactive: bool = False,
        connect_timeout: float = 15.0,
        label: str | None = None,
        droplet_id: int | None = None,
        on_notice: Callable[[str], None] | None = None,
        keepalive: float | None = 15.0,
    ) -> None:
        self.host = host
        self.user = user
        self.port = port
        self.key_filename = key_filename
        self.known_hosts = hostkeys.known_hosts_path(known_hosts)
        self.interactive = interactive
        self.connect_timeout = connect_timeout
        self.label = label or host
        #: The droplet's id: its host key is recorded under ``poseidon-droplet-<id>`` as well as its address.
        self.droplet_id = droplet_id
        #: Told of a first contact and of a new droplet on a reused address; ``None`` logs them
        #: (logger ``poseidon.hostkeys``). May be set after construction, before the connection opens.
        self.on_notice = on_notice
        #: Seconds of silence during a command after which the droplet is asked whether it still
        #: answers; unanswered as long again, the connection is closed (``None``: never ask).
        self.keepalive = keepalive
        #: The remote working directory set by :meth:`chdir` (absolute), or ``None`` for the login's.
        self.cwd: str | None = None
        #: The pid of the shell of this connection's session on the droplet, once known (:meth:`lock`).
        self.shell_pid: int | None = None
        self._connection: Connection | None = None
        self._session: Session | None = None
        #: Whether this client's session took the droplet's apply lock (:meth:`lock`).
        self._locked = False
        #: The change marks of the steps run so far (:func:`poseidon.steps.change_mark`).
        self._marks: list[str] = []

    # -- the connection -------------------------------------------------------

    @property
    def connection(self) -> Connection:
        """The open Fabric ``Connection`` (opened on first use)."""
        if self._connection is None:
            self._connection = self._open()
        return self._connection

    def _open(self) -> Connection:
        import paramiko
        from fabric import Connection

        connect_kwargs: dict[str, Any] = {}
        if self.key_filename:
            connect_kwargs.update(key_filename=self.key_filename, look_for_keys=False)
        connection = Connection(
            self.host,
            user=self.user,
            port=self.port,
            connect_timeout=int(self.connect_timeout),
            connect_kwargs=connect_kwargs,
        )
        # The name paramiko will pass to the policy; Fabric may have resolved the host through ~/.ssh/config.
        address = hostkeys.address_name(connection.host, int(connection.port))
        types = hostkeys.preferred_types(hostkeys.load(self.known_hosts), address=address, droplet_id=self.droplet_id)
        if types:
            connection.connect_kwargs["transport_factory"] = _preferring(types)
        connection.client.set_missing_host_key_policy(
            _AcceptNew(
                self.known_hosts,
                droplet_id=self.droplet_id,
                droplet_name=self.label if self.label != self.host else None,
                on_notice=self.on_notice,
            )
        )
        where = f"{self.user}@{self.host}:{self.port} ({self.label})"
        try:
            try:
                connection.open()
            except BaseException:
                # paramiko keeps its transport thread after a refused key or login.
                connection.client.close()
                raise
        except paramiko.AuthenticationException as exc:
            raise SSHError(f"{where}: the login was refused ({exc}); check the key (POSEIDON_SSH_KEY)") from exc
        except paramiko.SSHException as exc:
            if "No authentication methods available" not in str(exc):
                raise SSHConnectError(f"{where}: cannot connect: {exc or type(exc).__name__}") from exc
            # Nothing to offer: waiting for the droplet to boot would not help.
            raise SSHError(
                f"{where}: no key to log in with: set POSEIDON_SSH_KEY to a private key file,"
                " add one to ssh-agent, or put one in ~/.ssh"
            ) from exc
        except (OSError, EOFError) as exc:
            raise SSHConnectError(f"{where}: cannot connect: {exc or type(exc).__name__}") from exc
        return connection

    def open(self) -> SSHClient:
        """Connect now (commands connect on first use anyway); checks the host key."""
        if self._connection is None:
            self._connection = self._open()
        return self

    def close(self) -> None:
        """Close the connection; the next command opens a new one."""
        self._drop_session()
        self._locked = False
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def __enter__(self) -> SSHClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- plain commands ---------------------------------------------------------

    def _in_cwd(self, cmd: str) -> str:
        return f"cd -- {steps.quote_path(self.cwd)} && {cmd}" if self.cwd else cmd

    def stop_tree(self, pid: int, timeout: float = 5.0) -> None:
        """End process ``pid`` on the droplet and every process under it (:func:`steps.stop_tree`),
        over a channel of its own: the session may be busy with the command being stopped."""
        transport = self.connection.client.get_transport()
        if transport is None or not transport.is_active():
            return
        channel = transport.open_session(timeout=timeout)
        try:
            channel.settimeout(timeout)
            channel.exec_command(steps.stop_tree(pid))
            channel.status_event.wait(timeout)  # recv_exit_status() would wait without end
        finally:
            channel.close()

    def exec_command(self, cmd: str) -> tuple[ChannelStdinFile, ChannelFile, ChannelStderrFile]:
        """Start ``cmd`` and return paramiko's ``(stdin, stdout, stderr)`` files, as the original did."""
        client = self.connection.client  # opening the connection checks the host key
        return client.exec_command(self._in_cwd(cmd))  # type: ignore[no-any-return]

    def run(
        self,
        cmd: str,
        *,
        stdin: str | None = None,
        timeout: float | None = None,
        title: str | None = None,
        deadline: float | None = None,
        keep: int = OUTPUT_KEPT,
    ) -> CommandResult:
        """Run ``cmd`` in the working directory; return what it did (never raises on exit status).

        Commands run one after another in the connection's shell session (one
        round trip each); ``stdin`` is their whole input. ``timeout`` (seconds,
        measured here) gives the command a channel of its own, closed when it
        expires. With ``interactive=True`` the command (or ``title``, for the long
        scripts of steps) and its output are printed, and a pseudo-terminal
        lets a sudo password prompt reach the user.

        A droplet that stops answering (its keepalives go unanswered), or a
        command still running ``deadline`` seconds after it started, raises
        :class:`SSHError` and closes the connection. Of each output stream, the
        first and last ``keep`` bytes are kept; a line marks what was not.
        """
        import paramiko

        interactive = self.interactive and stdin is None
        if not interactive and timeout is None:
            command = self._in_cwd(cmd)
            with self._session_in_use() as session:
                return session.run(command, stdin=stdin, limit=deadline, keep=keep)
        try:
            result = self._run_channel(cmd, stdin=stdin, timeout=timeout, title=title, interactive=interactive)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._lost(exc) from exc
        if result.exited == -1 and not self.connection.is_connected:
            # The channel closed without an exit status because the connection is gone.
            raise SSHError(
                f"{self.label}: the connection was lost during a command (the droplet rebooted or the network dropped)"
            )
        return result

    @contextmanager
    def _session_in_use(self) -> Iterator[Session]:
        """The connection's shell session; dropped when a command on it did not finish."""
        import paramiko

        if self._session is None:
            if self._locked:
                raise SSHError(
                    f"{self.label}: the shell session that held the apply lock ended;"
                    " this run no longer holds the droplet"
                )
            transport = self.connection.client.get_transport()
            if transport is None or not transport.is_active():
                raise self._lost(EOFError("the connection is closed"))
            self._session = Session(transport, self.keepalive)
        try:
            yield self._session
        except Unanswered as exc:
            # Its output may never come: this connection can carry nothing more.
            self.close()
            raise SSHUnresponsiveError(f"{self.label} stopped answering: {exc}; the connection was closed") from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._drop_session()
            raise self._lost(exc) from exc
        except BaseException:
            # Interrupted in the middle of a command: its output would be read as the next one's.
            self._drop_session()
            raise

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def run_pipelined(self, commands: list[str]) -> list[CommandResult]:
        """Run ``commands`` one after another, sent at once: one round trip for all of them.

        For commands whose outcome does not decide whether the next one runs
        (each runs whatever the others did).
        """
        with self._session_in_use() as session:
            return session.run_all([self._in_cwd(cmd) for cmd in commands])

    def lock(self, holder: str) -> LockAnswer:
        """Hold the droplet's apply lock until this connection closes (``~/.poseidon/apply.lock``, flock).

        Returns what the droplet answered: held, busy (with the holder's line),
        or none (with why there is no lock). The session's shell holds the
        lock; no command inherits it, so a process a step leaves running does
        not keep it. If that shell ends while the connection lives, later
        commands raise :class:`SSHError` instead of running unlocked.
        """
        with self._session_in_use() as session:
            answer = session.lock(holder)
        if answer.shell_pid is not None:
            self.shell_pid = answer.shell_pid
        self._locked = answer.held
        return answer

    def _lost(self, exc: BaseException) -> SSHError:
        """The error for a command that could not finish: the connection, or the session's shell, ended."""
        if not self.connection.is_connected:
            return SSHError(
                f"{self.label}: the connection was lost during a command (the droplet rebooted or the network dropped)"
            )
        return SSHError(f"{self.label}: the connection failed during a command: {exc}")

    def _run_channel(
        self, cmd: str, *, stdin: str | None, timeout: float | None, title: str | None, interactive: bool
    ) -> CommandResult:
        """A channel of its own: for a pseudo-terminal (sudo's password prompt) or a local timeout."""
        from invoke.exceptions import CommandTimedOut

        options: dict[str, Any] = {"warn": True, "timeout": timeout}
        if interactive:
            print(f"[{self.label}] $ {title or cmd}", flush=True)
            options.update(hide=False, pty=True)
        else:
            options.update(hide=True, in_stream=io.StringIO(stdin) if stdin else False)
        command = self._in_cwd(cmd)
        try:
            result = self.connection.run(command, **options)
        except CommandTimedOut as exc:
            raise CommandError(title or cmd, 124, stderr=f"timed out after {exc.timeout} s") from exc
        # A pseudo-terminal ends lines with CR LF; callers compare with plain text.
        stdout = result.stdout.replace("\r\n", "\n") if interactive else result.stdout
        return CommandResult(command, stdout, result.stderr, result.exited)

    def wait(self, cmd: str, raise_on_error: bool = True) -> str:
        """Run ``cmd`` and return its stdout; raise :class:`CommandError` when it exits non-zero.

        The exit status decides, not the presence of stderr: apt and pip write
        warnings there on success.
        """
        result = self.run(cmd)
        if raise_on_error and result.exited != 0:
            raise CommandError(cmd, result.exited, result.stdout, result.stderr)
        return str(result.stdout)

    # -- steps ------------------------------------------------------------------

    def run_step(
        self,
        step: Any,
        *,
        mode: steps.Mode = "apply",
        secrets: dict[str, str] | None = None,
        values: Mapping[str, str] | None = None,
        content: bytes | None = None,
        owner: str = "",
    ) -> StepOutcome:
        """Check and (in ``apply`` mode) apply one playbook step in one round trip.

        ``values`` are those of the ``${…}`` references in the shell the user
        wrote (``run``, ``nohup``…): bound as data, never pasted into the
        text. Without them, that shell is taken as it is written.

        A ``nohup`` step restarts when a step run before it on this client
        (or passed over with :meth:`pass_step`) changed the droplet since the
        process started. ``content`` is what a ``file`` step writes. ``owner`` says
        whose processes these are (a playbook's): a ``nohup`` process moved to another
        directory is stopped there when the same owner started it under the same name.
        """
        if content is None and isinstance(step, spec.FileStep):  # src: and template: from the current folder
            try:
                content = spec.file_content(step, spec.Attachments(os.getcwd()), values or {})
            except spec.AttachmentError as exc:
                raise UsageError(str(exc)) from None
            except KeyError as exc:
                raise UsageError(f"{step.template}: ${{{exc.args[0]}}} has no value in values=") from None
        mark = steps.change_mark(step, self.user) if steps.marks_change(step) else None
        ctx = steps.StepContext(
            user=self.user,
            values=values,
            address=self.host,
            mark=mark,
            inputs=tuple(sorted(set(self._marks) - {mark})),
            cwd=self.cwd,
            owner=owner,
        )
        started = time.monotonic()
        try:
            script = steps.script_for(step, ctx, secrets=secrets, content=content)
        except BindError as exc:
            return StepOutcome("failed", "", f"poseidon: {exc}", 2, 0.0)
        rendered = steps.render(
            script,
            ctx,
            mode=mode,
            sudo=step.sudo,
            env=step.env,
            timeout=step.timeout,
            interactive=self.interactive,
        )
        deadline = step.timeout + steps.KILL_AFTER + self.TIMEOUT_MARGIN if step.timeout else None
        # Printed with interactive=True, and named in errors: the git token masked as in reports.
        title = Masker((secrets or {}).values()).text(steps.describe(step))
        try:
            result = self.run(
                rendered.command, stdin=rendered.stdin, title=title, deadline=deadline, keep=STEP_OUTPUT_KEPT
            )
            exited, stdout, stderr = result.exited, result.stdout, result.stderr
        except CommandError as exc:
            exited, stdout, stderr = exc.exited, exc.stdout, exc.stderr
        duration = time.monotonic() - started
        status, why, output = steps.parse_status(stdout)
        if exited == 124 and step.timeout:
            stderr = (stderr + f"\nposeidon: timed out after {step.timeout:g} s").lstrip("\n")
        refused = exited != 0 and steps.uses_sudo(script, ctx, step.sudo)
        hint = _sudo_hint(stderr, exited, self.user, self.label) if refused else None
        if hint:
            stderr += f"\nposeidon: {hint}"
        if mark is not None:
            self._marks.append(mark)
        if exited != 0 or status is None:
            return StepOutcome("failed", output, stderr, exited or 1, duration)
        if step.kind == "chdir":
            self.cwd = output.strip().splitlines()[-1]
        reason = script.ok_reason if status == "ok" else why
        return StepOutcome(status, output, stderr, exited, duration, reason)

    def pass_step(self, step: Any) -> None:
        """Count ``step`` as run before the next ones without running it (``--start-at``, ``--resume``):
        a later ``nohup`` still restarts when it changed the droplet since the process started."""
        if steps.marks_change(step):
            self._marks.append(steps.change_mark(step, self.user))

    def _step(
        self,
        kind: str,
        raise_on_error: bool,
        *,
        secrets: dict[str, str] | None = None,
        values: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> StepOutcome:
        outcome = self.run_step(steps.build(kind, **fields), secrets=secrets, values=values)
        if raise_on_error and not outcome.ok:
            raise CommandError(kind, outcome.exited, outcome.stdout, outcome.stderr)
        return outcome

    def chdir(self, path: str) -> str:
        """Run later commands in ``path`` (relative to the current one); fail if it does not exist."""
        self._step("chdir", True, path=path)
        assert self.cwd is not None
        return self.cwd

    def nohup(self, cmd: str, raise_on_error: bool = True, **options: Any) -> StepOutcome:
        """Start ``cmd`` detached, with a log and a pid file; nothing to do while it still runs."""
        return self._step("nohup", raise_on_error, cmd=cmd, **options)

    def file(
        self,
        path: str,
        content: str | None = None,
        *,
        src: str | None = None,
        template: str | None = None,
        values: Mapping[str, str] | None = None,
        raise_on_error: bool = True,
        **options: Any,
    ) -> StepOutcome:
        """Put ``content``, a local file ``src`` (byte for byte) or a local ``template`` (its
        ``${name}`` from ``values``) at ``path`` on the droplet, atomically; ``mode``, ``owner``
        and ``group`` as options. Nothing to do when it is already so."""
        return self._step(
            "file", raise_on_error, values=values, path=path, content=content, src=src, template=template, **options
        )

    def service(self, name: str, cmd: str, raise_on_error: bool = True, **options: Any) -> StepOutcome:
        """Run ``cmd`` as the systemd service ``poseidon-<name>``: written, enabled at boot and
        started; restarted when it changed (``restart``, ``ready``, ``user``, ``env`` as options)."""
        return self._step("service", raise_on_error, name=name, cmd=cmd, **options)

    def apt(self, packages: str | list[str], raise_on_error: bool = True, **options: Any) -> StepOutcome:
        """``apt-get install -y`` the packages that are missing."""
        names = packages.split() if isinstance(packages, str) else list(packages)
        return self._step("apt", raise_on_error, packages=names, **options)

    def git(
        self,
        username: str,
        reponame: str | None = None,
        token: str | None = None,
        raise_on_error: bool = True,
        **options: Any,
    ) -> StepOutcome:
        """Clone ``username/reponame`` from GitHub (or ``username`` as any git URL), or bring it up to date.

        The token (``token``, else ``$GITHUB_TOKEN``) travels in the session's
        input to git's stdin, never in a command line.
        """
        repo = f"{username}/{reponame}" if reponame else username
        token_env = options.get("token_env", "GITHUB_TOKEN")
        token = token if token is not None else os.environ.get(token_env)
        secrets = {token_env: token} if token else None  # only the token, never the whole environment
        return self._step("git", raise_on_error, secrets=secrets, repo=repo, **options)

    def pip(self, packages: str | list[str], raise_on_error: bool = True, **options: Any) -> StepOutcome:
        """Install packages into the virtualenv (``.venv`` in the working directory by default)."""
        names = packages.split() if isinstance(packages, str) else list(packages)
        return self._step("pip", raise_on_error, packages=names, **options)

    def pip_r(self, requirements: str, raise_on_error: bool = True, **options: Any) -> StepOutcome:
        """``pip install -r`` a *remote* requirements file into the virtualenv."""
        return self._step("pip_r", raise_on_error, requirements=requirements, **options)

    def pip_freeze(self, venv: str = ".venv") -> str:
        """``pip freeze`` of the virtualenv."""
        return self.wait(f"{steps.quote_path(venv)}/bin/python -m pip freeze")

    # -- snapshots --------------------------------------------------------------

    def ps(self, args: str = "-Af") -> pd.DataFrame:
        """``ps`` (``-Af`` by default) as a DataFrame with the columns ``ps`` prints."""
        return self.snapshots(args)[0]

    def top(self) -> pd.DataFrame:
        """CPU and memory per process: ``ps -Ao %cpu,%mem,user,comm`` as a DataFrame."""
        return self.ps(TOP_ARGS)

    def snapshots(self, *args: str) -> list[pd.DataFrame]:
        """Several ``ps`` snapshots (``ps`` arguments each, like :meth:`ps`) in one round trip."""
        return ps_frames(args, self.run_pipelined([steps.ps_command(a) for a in args]))

    def __repr__(self) -> str:
        return f"<SSHClient {self.user}@{self.host}:{self.port} {self.label!r}>"


def ps_frames(args: Sequence[str], results: Sequence[CommandResult]) -> list[pd.DataFrame]:
    """The frames of ``ps`` commands run with ``args`` (:func:`steps.ps_command`); raises
    :class:`CommandError` for one that failed."""
    for a, result in zip(args, results, strict=True):
        if result.exited != 0:
            raise CommandError(f"ps {a}", result.exited, result.stdout, result.stderr)
    return [parse_ps(result.stdout) for result in results]


def parse_ps(text: str) -> pd.DataFrame:
    """Parse ``ps`` output: the header names the columns; the last column keeps its spaces."""
    import pandas as pd

    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return pd.DataFrame()
    columns = lines[0].split()
    rows = [line.split(None, len(columns) - 1) for line in lines[1:]]
    rows = [row + [""] * (len(columns) - len(row)) for row in rows]
    frame = pd.DataFrame(rows, columns=columns)
    for column in columns:
        if column in _NUMERIC:
            converted = pd.to_numeric(frame[column], errors="coerce")
            if not converted.isna().any():
                frame[column] = converted
    return frame
