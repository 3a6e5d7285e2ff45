"""Steps as shell text: one small function per step kind, no I/O.

Every step becomes a :class:`Script`: a *check* that exits 0 when the droplet
is already as wanted, 1 when there is work to do and anything else when the
check itself failed, and an *apply* that does the work. :func:`render` joins
them, with the working directory, environment, ``sudo`` and ``timeout``, into
one remote command, so one round trip both decides and acts.

This module is the one place that builds remote shell text. Every value a
user gave reaches it through :func:`quote` or :func:`quote_path`; commands
the user wrote as shell (``run``, ``nohup``, ``unless``) travel as a single
quoted argument of ``sh -c``.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from poseidon import spec
from poseidon.spec import (
    AptStep,
    ChdirStep,
    GitStep,
    NohupStep,
    PipRStep,
    PipStep,
    RunStep,
)

__all__ = [
    "BUSY",
    "LOCKED",
    "MARKER",
    "PIDS",
    "Mode",
    "Script",
    "StepContext",
    "build",
    "describe",
    "nohup_status",
    "parse_status",
    "quote",
    "quote_path",
    "readiness",
    "render",
    "script_for",
    "session_command",
    "session_lock",
    "uses_sudo",
    "SESSION_SHELL",
]

Mode = Literal["apply", "check"]

#: Printed by a rendered step as its last line of stdout: ``::poseidon:ok`` etc.
MARKER = "::poseidon:"

# The step's timeout gives the command this long to end after SIGTERM before SIGKILL.
_KILL_AFTER = 5


@dataclass(frozen=True)
class StepContext:
    """Who a step runs as on the droplet (the working directory is SSHClient's: it prefixes every command)."""

    user: str = "root"

    @property
    def is_root(self) -> bool:
        return self.user == "root"


@dataclass(frozen=True)
class Script:
    """Shell text for one step: how to check it and how to apply it."""

    apply: str
    #: Run once before the check, at the script's top level (variables, secrets read from stdin).
    setup: str = ""
    #: Exits 0: nothing to do; 1: work to do; else the check failed. ``None``: always work to do.
    check: str | None = None
    ok_reason: str = ""
    #: Whether running the step twice is safe and reports ``ok`` the second time.
    idempotent: bool = True
    #: Whether the step needs root (then ``sudo -n`` when the user is not root).
    needs_root: bool = False
    #: A secret sent on the command's stdin (never in its argv).
    stdin: str | None = None


# -- quoting: the one place values meet shell text ---------------------------


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


def _sh(command: str) -> str:
    """A command the user wrote as shell, run by ``sh -c`` as one quoted argument."""
    return f"sh -c {quote(command)}"


# -- one function per step kind ----------------------------------------------


def chdir(step: ChdirStep, ctx: StepContext) -> Script:
    # Prints the absolute directory so the executor can resolve later relative paths.
    return Script(
        check=f"cd -- {quote_path(step.path)} || exit 2; pwd",
        apply=":",
        ok_reason="directory exists",
    )


# `name=version` is installed only at that version; `name:arch` is dpkg-query's own syntax.
_DPKG_INSTALLED = (
    "_installed() { n=${1%%=*}\n"
    "  s=$(dpkg-query -W -f='${Status}|${Version}' \"$n\" 2>/dev/null) || return 1\n"
    "  case \"$s\" in *' installed|'*) ;; *) return 1 ;; esac\n"
    "  [ \"$n\" = \"$1\" ] || [ \"${s##*|}\" = \"${1#*=}\" ]; }"
)
# cloud-init holds the dpkg lock right after a droplet boots: wait for it, bounded.
_APT_GET = "DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300"


def apt(step: AptStep, ctx: StepContext) -> Script:
    names = quote_all(step.packages)
    missing = f'set --; for p in {names}; do _installed "$p" || set -- "$@" "$p"; done'
    update = f"{_APT_GET} update && " if step.update else ""
    return Script(
        setup=_DPKG_INSTALLED,
        check=f'{missing}\n[ "$#" -eq 0 ]',
        apply=f'{missing}\n{update}{_APT_GET} install -y -- "$@"',
        ok_reason=f"{len(step.packages)} package(s) already installed",
        needs_root=True,
    )


# Resolves the wanted ref from `git ls-remote` output by exact name: a peeled
# annotated tag first (it names the commit), then a branch, a tag, an exact ref
# (HEAD, refs/...). Prints "SHA KIND", or nothing when the remote lacks the ref.
_PICK_REF = (
    "awk -v r=\"$ref\" '"
    '$2 == "refs/tags/" r "^{}" {t=$1} $2 == "refs/heads/" r {h=$1} '
    '$2 == "refs/tags/" r {g=$1} $2 == r {e=$1} '
    'END {if (t) print t, "tag"; else if (h) print h, "branch"; '
    'else if (g) print g, "tag"; else if (e) print e, "ref"}\''
)

_ASKPASS = (
    # The token arrives on stdin and reaches git through GIT_ASKPASS: never argv,
    # never the droplet's .git/config. It is read once, before the check.
    "IFS= read -r POSEIDON_GIT_TOKEN || true; export POSEIDON_GIT_TOKEN\n"
    "askpass=$(mktemp) || exit 2; trap 'rm -f \"$askpass\"' EXIT\n"
    "printf '%s\\n' '#!/bin/sh' "
    "'case \"$1\" in Username*) echo x-access-token ;; *) printf \"%s\\n\" \"$POSEIDON_GIT_TOKEN\" ;; esac'"
    ' > "$askpass" && chmod 700 "$askpass" || exit 2\n'
    'export GIT_ASKPASS="$askpass"'
)


def git(step: GitStep, ctx: StepContext, token: str | None = None) -> Script:
    dest = quote_path(step.target())
    setup = (
        # GIT_OPTIONAL_LOCKS=0: `git status` in the check must not rewrite the index (plan changes nothing).
        f"export GIT_TERMINAL_PROMPT=0 GIT_OPTIONAL_LOCKS=0\nref={quote(step.ref or 'HEAD')}\nwant= kind=\n"
        + (_ASKPASS if token else "")
    )
    # What the remote has under the ref; a remote that cannot be read fails the check.
    resolve = (
        f'out=$(git -C {dest} ls-remote -- origin "$ref" "refs/heads/$ref" "refs/tags/$ref" "refs/tags/$ref^{{}}") || return 2\n'
        f'set -- $(printf "%s\\n" "$out" | {_PICK_REF}); want=${{1-}} kind=${{2-}}'
    )
    check = (
        f"[ -d {dest}/.git ] || return 1\n"
        f"head=$(git -C {dest} rev-parse HEAD) || return 2\n"
        f"{resolve}\n"
        # A ref the remote does not list is a commit id: the checkout must start with it.
        f'[ -n "$want" ] || {{ case "$head" in "$ref"*) ;; *) return 1 ;; esac; want=$head; }}\n'
        f'[ "$head" = "$want" ] && [ -z "$(git -C {dest} status --porcelain --untracked-files=no)" ]'
    )
    checkout = ' && git -C {d} checkout -q "$ref"'.format(d=dest) if step.ref else ""
    apply = (
        f"if [ -d {dest}/.git ]; then\n"
        f'  if [ "$kind" = branch ]; then\n'
        f'    git -C {dest} fetch -q origin "$want" && git -C {dest} checkout -q --force -B "$ref" "$want"\n'
        f'  elif [ "$kind" = ref ]; then\n'
        f'    git -C {dest} fetch -q origin "$want" && git -C {dest} reset -q --hard "$want"\n'
        f'  elif [ -n "$want" ]; then\n'
        f'    git -C {dest} fetch -q origin "$want" && git -C {dest} checkout -q --force --detach "$want"\n'
        f"  else\n"
        f'    git -C {dest} fetch -q --tags origin && git -C {dest} checkout -q --force --detach "$ref"\n'
        f"  fi\n"
        f"else\n"
        f"  git clone -q -- {quote(step.url())} {dest}{checkout}\n"
        f"fi"
    )
    return Script(
        setup=setup,
        check=check,
        apply=apply,
        ok_reason=f"{step.target()} is at {step.ref or 'the remote HEAD'}",
        stdin=token + "\n" if token else None,
    )


def _venv(venv: str) -> str:
    path = quote_path(venv)
    return f"[ -x {path}/bin/python ] || python3 -m venv -- {path}"


@dataclass(frozen=True)
class _Python:
    """Where pip steps install: a virtualenv (created when missing), or the system Python."""

    python: str
    prepare: str
    pip_options: str
    #: What the installed set depends on besides the requirements (a pyvenv.cfg is remade with its venv).
    identity: str
    stamps: str


def _python(step: PipStep | PipRStep) -> _Python:
    if step.system:
        # Modern Debian and Ubuntu refuse a system-wide pip (PEP 668) unless told;
        # pip before 23 has no such option and needs none.
        flag = (
            'if python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages;'
            ' then set -- --break-system-packages; else set --; fi'
        )
        return _Python("python3", flag, '"$@"', "python3 --version 2>&1", ".poseidon")
    venv = quote_path(step.venv)
    return _Python(f"{venv}/bin/python", _venv(step.venv), "", f"cat {venv}/pyvenv.cfg", venv)


# Exits 0 when every requirement given as an argument is installed at a matching version.
_SATISFIED = (
    "import sys\n"
    "from importlib.metadata import version, PackageNotFoundError\n"
    "try:\n from packaging.requirements import Requirement\n"
    "except ImportError:\n from pip._vendor.packaging.requirements import Requirement\n"
    "for text in sys.argv[1:]:\n"
    " r = Requirement(text)\n"
    " try:\n  v = version(r.name)\n"
    " except PackageNotFoundError:\n  sys.exit(1)\n"
    " if not r.specifier.contains(v, prereleases=True):\n  sys.exit(1)\n"
)


def pip(step: PipStep, ctx: StepContext) -> Script:
    where = _python(step)
    names = quote_all(step.packages)
    return Script(
        check=(
            f"command -v {where.python} >/dev/null 2>&1 || [ -x {where.python} ] || return 1\n"
            f"{where.python} -c {quote(_SATISFIED)} {names} 2>/dev/null || return 1"
        ),
        apply=f"{where.prepare} && {where.python} -m pip install -q {where.pip_options} -- {names}",
        ok_reason=f"{len(step.packages)} requirement(s) already satisfied",
    )


def pip_r(step: PipRStep, ctx: StepContext) -> Script:
    where = _python(step)
    req = quote_path(step.requirements)
    key = hashlib.sha256(step.requirements.encode()).hexdigest()[:16]
    stamp = f"{where.stamps}/{quote('.poseidon-pip_r-' + key)}"
    # What the last successful install saw: the requirements file, and the
    # Python it went into. Other steps installing into the same place do not
    # count as a change.
    state = f"_state() {{ {{ cat {req} && {where.identity}; }} | sha256sum | cut -c1-64; }}"
    return Script(
        setup=state,
        check=f'[ -f {stamp} ] || return 1\n[ "$(_state 2>/dev/null)" = "$(cat {stamp})" ]',
        apply=(
            f"{where.prepare} && {where.python} -m pip install -q {where.pip_options} -r {req}"
            f" && mkdir -p {where.stamps} && _state > {stamp}"
        ),
        ok_reason=f"{step.requirements} unchanged since the last install",
    )


# A zombie answers `kill -0` but runs no more (an init that reaps slowly keeps it).
_ALIVE = '_alive() { s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1; case "$s" in Z*|"") return 1 ;; esac; }'


def nohup(step: NohupStep, ctx: StepContext) -> Script:
    name = step.process_name()
    pidfile = f".poseidon/{quote(name + '.pid')}"
    cmdfile = f".poseidon/{quote(name + '.cmd')}"
    log = quote_path(step.log_path())
    # The command's hash is kept beside the pid: a changed command restarts the process.
    digest = hashlib.sha256(step.cmd.encode()).hexdigest()
    running = f'[ -f {pidfile} ] && _alive "$(cat {pidfile})"'
    current = f'{running} && [ "$(cat {cmdfile} 2>/dev/null)" = {digest} ]'
    # The process leads its own process group (setsid): TERM the group, then KILL
    # what is left after five seconds. (dash's kill takes `--` only without a signal.)
    stop = (
        f'if {running}; then pid=$(cat {pidfile}); kill -- "-$pid" 2>/dev/null || kill "$pid";'
        ' n=0; while _alive "$pid" && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done;'
        ' kill -9 "-$pid" 2>/dev/null; fi'
    )
    # setsid gives the process a session of its own, so it outlives the SSH
    # session; all three streams are redirected so the channel can close.
    start = (
        f"mkdir -p .poseidon || exit 2\n"
        f"nohup setsid {_sh(step.cmd)} > {log} 2>&1 < /dev/null &\n"
        f"echo $! > {pidfile} && echo {digest} > {cmdfile}\n"
        + (  # grace: 0 starts it and does not wait to see it live
            f"sleep {step.grace:g}\n"
            f'if ! _alive "$(cat {pidfile})"; then\n'
            f"  echo {quote(f'poseidon: {name} exited within {step.grace:g} s; the end of its log:')} >&2\n"
            f"  tail -n 20 {log} >&2; exit 1\n"
            f"fi\n"
            if step.grace > 0
            else ""
        )
        + f"echo {quote(f'{name} started')}, pid \"$(cat {pidfile})\""
    )
    return Script(
        setup=_ALIVE,
        check="return 1" if step.restart else current,
        apply=stop + "\n" + start,
        ok_reason=f"{name} is running",
        idempotent=not step.restart,
    )


def run(step: RunStep, ctx: StepContext) -> Script:
    guards = []
    if step.creates:
        guards.append(f"[ -e {quote_path(step.creates)} ] && return 0")
    if step.unless:
        guards.append(f"{_sh(step.unless)} >/dev/null 2>&1 && return 0")
    reason = f"{step.creates} exists" if step.creates else "the unless command succeeded"
    return Script(
        check="\n".join([*guards, "return 1"]) if guards else None,
        apply=_sh(step.cmd),
        ok_reason=reason if guards else "",
        idempotent=bool(guards),
    )


_BUILDERS: dict[str, Callable[..., Script]] = {
    "chdir": chdir,
    "apt": apt,
    "git": git,
    "pip": pip,
    "pip_r": pip_r,
    "nohup": nohup,
    "run": run,
}


def script_for(step: spec.Step, ctx: StepContext, *, secrets: Mapping[str, str] | None = None) -> Script:
    """The :class:`Script` of ``step``; ``secrets`` holds the git tokens by variable name."""
    if isinstance(step, GitStep):
        token = (secrets or {}).get(step.token_env) or None
        return git(step, ctx, token)
    return _BUILDERS[step.kind](step, ctx)


def describe(step: spec.Step, width: int = 60) -> str:
    """A one-line description: the step's ``name``, else its kind and main value."""
    if step.name:
        return step.name
    value = getattr(step, step.primary)
    text = " ".join(value) if isinstance(value, list) else str(value)
    text = f"{step.kind} {' '.join(text.split())}"
    return text if len(text) <= width else text[: width - 1] + "…"


def build(kind: str, **fields: Any) -> spec.Step:
    """A validated step model from keyword arguments, as a playbook would give them."""
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(spec.Step)
    return adapter.validate_python({"kind": kind, **fields})  # type: ignore[no-any-return]


# -- readiness: before the first step on a droplet --------------------------------

#: How long the readiness gate waits for cloud-init and for the dpkg lock, each.
READY_WAIT = 600

# Holds and releases the dpkg locks as apt does (fcntl, not flock), so it
# returns once no apt or dpkg run holds them.
_DPKG_LOCK_FREE = (
    "import fcntl, os, sys, time\n"
    "deadline = time.time() + float(sys.argv[1])\n"
    "told = False\n"
    "for path in ('/var/lib/dpkg/lock-frontend', '/var/lib/dpkg/lock'):\n"
    " try:\n  fd = os.open(path, os.O_RDWR)\n"
    " except OSError:\n  continue\n"
    " while True:\n"
    "  try:\n   fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); fcntl.lockf(fd, fcntl.LOCK_UN); break\n"
    "  except OSError:\n"
    "   if not told:\n    print('poseidon: waiting for the dpkg lock (another apt or dpkg run)', file=sys.stderr, flush=True); told = True\n"
    "   if time.time() > deadline:\n    sys.exit('poseidon: the dpkg lock is still held after %s s' % sys.argv[1])\n"
    "   time.sleep(1)\n"
)


def readiness(*, dpkg: bool, wait: int = READY_WAIT) -> str:
    """The gate before the first step: cloud-init has finished, and (for apt) the dpkg lock is free.

    A droplet that just booted runs cloud-init, which holds the dpkg lock; the
    first apt-get of a run would fail or hang on it. Each wait is bounded and
    says what it waits for on stderr.
    """
    lines = [
        "if command -v cloud-init >/dev/null 2>&1 && cloud-init status 2>/dev/null | grep -q running; then",
        "  echo 'poseidon: waiting for cloud-init to finish' >&2",
        f"  timeout {wait} cloud-init status --wait >/dev/null 2>&1",
        f"  if [ $? -eq 124 ]; then echo 'poseidon: cloud-init still runs after {wait} s' >&2; exit 1; fi",
        "fi",
    ]
    if dpkg:
        # Python waits for the lock as apt takes it (fcntl); it starts only when
        # /proc/locks shows a lock on one of the files' inodes (or cannot tell).
        lines += [
            "_held() { [ -r /proc/locks ] || return 0; i=$(stat -c %i \"$1\" 2>/dev/null) || return 1;"
            ' grep -q ":$i " /proc/locks; }',
            'if [ "$(id -u)" -eq 0 ] && command -v python3 >/dev/null 2>&1 &&'
            " { _held /var/lib/dpkg/lock-frontend || _held /var/lib/dpkg/lock; }; then",
            f"  python3 -c {quote(_DPKG_LOCK_FREE)} {wait} || exit 1",
            "fi",
        ]
    return f"sh -c {quote(chr(10).join(lines))}"


#: Lists the droplet's process ids with shell builtins only: cheaper than ``ps`` for "what ran before".
PIDS = "cd /proc && echo [0-9]*"


def nohup_status(step: NohupStep, lines: int = 5) -> str:
    """A nohup step's process, read-only: 'STATE<TAB>PID<TAB>UPTIME' then the end of its log."""
    name = step.process_name()
    pidfile = f".poseidon/{quote(name + '.pid')}"
    script = (
        f"{_ALIVE}\n"
        f"pid=$(cat {pidfile} 2>/dev/null)\n"
        'if [ -n "$pid" ] && _alive "$pid"; then state=alive; up=$(ps -o etime= -p "$pid" | tr -d " ");'
        ' else state=dead; up=-; fi\n'
        "printf '%s\\t%s\\t%s\\n' \"$state\" \"${pid:--}\" \"$up\"\n"
        f"tail -n {int(lines)} {quote_path(step.log_path())} 2>/dev/null; exit 0"
    )
    return f"sh -c {quote(script)}"


# -- one apply at a time per droplet ------------------------------------------------

#: What the lock prints first (:func:`session_lock`): held for as long as the session's shell lives.
LOCKED, BUSY = "poseidon-lock: held", "poseidon-lock: busy"


# -- one shell for many commands ---------------------------------------------------

#: The command of a session's channel: a shell that reads commands from the channel's stdin.
SESSION_SHELL = "exec sh -s"

#: The session's shell holds the apply lock on this descriptor; no command inherits it.
_LOCK_FD = 9


def _session_begin(token: str) -> str:
    """Starts a command's stdout and stderr with a ``<token><`` line: what came before is not its output."""
    return f"printf '%s<\\n' {quote(token)}; printf '%s<\\n' {quote(token)} >&2\n"


def _session_end(token: str) -> str:
    """Ends a command's stdout with ``\\n<token> <exit status>\\n`` and its stderr with ``\\n<token>\\n``."""
    return f"_rc=$?\nprintf '\\n%s %s\\n' {quote(token)} \"$_rc\"; printf '\\n%s\\n' {quote(token)} >&2\n"


def session_command(command: str, token: str, *, stdin: str | None = None) -> str:
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
    return f"{_session_begin(token)}{source}( eval {quote(command)} ){sink} {_LOCK_FD}>&-\n{_session_end(token)}"


def session_lock(holder: str, token: str) -> str:
    """Shell text that makes the session's shell hold ``~/.poseidon/apply.lock`` (flock) until it ends.

    Prints :data:`LOCKED`, or :data:`BUSY` and the holder's line, or another
    line saying why there is no lock (no ``flock``, the file cannot be
    opened). The lock ends with the session, so with the connection, even
    when poseidon dies without a word; commands never inherit its descriptor
    (:func:`session_command`). ``command exec`` fails without ending the shell.
    """
    info = "~/.poseidon/apply.lock.info"
    fd = _LOCK_FD
    return (
        f"{_session_begin(token)}"
        "if ! mkdir -p ~/.poseidon 2>/dev/null || ! command -v flock >/dev/null 2>&1; then\n"
        "  echo 'poseidon-lock: no flock'\n"
        f"elif ! command exec {fd}>>~/.poseidon/apply.lock; then\n"
        "  echo 'poseidon-lock: cannot open ~/.poseidon/apply.lock'\n"
        f"elif flock -n {fd}; then\n"
        f"  printf '%s\\n' {quote(holder)} > {info}; echo {quote(LOCKED)}\n"
        f"else\n  echo {quote(BUSY)}; cat {info} 2>/dev/null; exec {fd}>&-\nfi </dev/null\n"
        f"{_session_end(token)}"
    )


# -- the one remote command ---------------------------------------------------


def render(
    script: Script,
    ctx: StepContext,
    *,
    mode: Mode = "apply",
    sudo: bool = False,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    interactive: bool = False,
) -> str:
    """The single remote command that checks, then (in ``apply`` mode) applies.

    Its last line of stdout is ``::poseidon:ok``, ``::poseidon:changed`` or
    ``::poseidon:would-change``; any other ending is a failure, told by the
    exit status.
    """
    lines = []
    for key, value in (env or {}).items():
        lines.append(f"export {key}={quote(value)}")
    if script.setup:
        lines.append(script.setup)
    check = script.check or "return 1"
    lines.append(f"_check() {{\n{check}\n}}")
    lines.append(
        f"_check; rc=$?\n"
        f"if [ $rc -eq 0 ]; then printf '\\n{MARKER}ok\\n'; exit 0; fi\n"
        f'if [ $rc -ne 1 ]; then echo "poseidon: the check failed (exit $rc)" >&2; exit $rc; fi'
    )
    if mode == "check":
        lines.append(f"printf '\\n{MARKER}would-change\\n'; exit 0")
    else:
        lines.append(f"_apply() {{\n{script.apply}\n}}")
        lines.append(f"_apply || exit $?\nprintf '\\n{MARKER}changed\\n'")
    command = f"sh -c {quote(chr(10).join(lines))}"
    if uses_sudo(script, ctx, sudo):
        command = f"sudo {'' if interactive else '-n '}-- {command}"
    if timeout:
        command = f"timeout -k {_KILL_AFTER} {timeout:g} {command}"
    return command


def uses_sudo(script: Script, ctx: StepContext, sudo: bool = False) -> bool:
    """Whether the rendered command runs under ``sudo``: asked for, or needed by a user who is not root."""
    return sudo or (script.needs_root and not ctx.is_root)


def parse_status(stdout: str) -> tuple[str | None, str]:
    """Split a rendered step's stdout into its status marker and the step's own output."""
    text = stdout.rstrip("\n")
    head, _, last = text.rpartition("\n")
    if last.startswith(MARKER):
        return last[len(MARKER):], head.rstrip("\n")
    return None, stdout
