"""Steps as shell text: one small function per step kind, no I/O.

Every step becomes a :class:`Script`: a *check* that exits 0 when the droplet
is already as wanted, 1 when there is work to do and anything else when the
check itself failed, and an *apply* that does the work. :func:`render` joins
them, with the working directory, environment, ``sudo`` and ``timeout``, into
one remote command, so one round trip both decides and acts.

This module and :mod:`poseidon.shell` build the remote shell text of steps
and commands; :mod:`poseidon.session` only frames each command it is given
(and takes the apply lock), quoting the same way. Every value poseidon places reaches it through :func:`quote` or
:func:`quote_path`; a command the user wrote as shell (``run``, ``nohup``,
``unless``, ``ready.cmd``) runs through ``eval`` of its quoted text, its
``${…}`` references bound as shell variables (:func:`poseidon.shell.bind`),
so that no value becomes syntax.

A rendered step travels to the droplet's shell as the *input* of
``sh -c 'eval "$(cat)"'``, not as its arguments: ``env:`` values, bound
values and tokens never show in ``/proc/*/cmdline``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets as _random
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from poseidon import shell, spec
from poseidon.shell import quote, quote_all, quote_path
from poseidon.spec import (
    USER_NAME_RE,
    AptStep,
    ChdirStep,
    FileStep,
    GitStep,
    NohupStep,
    PipRStep,
    PipStep,
    RunStep,
    ServiceStep,
)

__all__ = [
    "MARKER",
    "PIDS",
    "Mode",
    "Rendered",
    "Script",
    "StepContext",
    "build",
    "change_mark",
    "describe",
    "marks_change",
    "nohup_status",
    "parse_status",
    "quote",
    "quote_path",
    "readiness",
    "render",
    "script_for",
    "uses_sudo",
]

Mode = Literal["apply", "check"]

#: Printed by a rendered step as its last line of stdout: ``::poseidon:ok`` etc., then a reason.
MARKER = "::poseidon:"

# The step's timeout gives the command this long to end after SIGTERM before SIGKILL.
KILL_AFTER = 5


@dataclass(frozen=True)
class StepContext:
    """Where and how a step runs on the droplet (the working directory is SSHClient's: it prefixes every command)."""

    user: str = "root"
    #: Values of the references in shell the user wrote (``app``, ``env:HOME``, ``droplet.name``);
    #: ``None``: the text is plain shell, ``${HOME}`` the shell's own (the seed API's commands).
    values: Mapping[str, str] | None = None
    #: The droplet's address: where ``ready: {port: N}`` knocks by default.
    address: str = "127.0.0.1"
    #: This step's change mark (:func:`change_mark`), rewritten each time the step changes the droplet.
    mark: str | None = None
    #: The change marks of the steps before this one: a ``nohup`` restarts when one of them changed.
    inputs: tuple[str, ...] = ()
    #: The working directory (a ``chdir``'s absolute path); ``None``: the login's home.
    cwd: str | None = None
    #: Whose ``nohup`` processes these are: the playbook's owner tag (``poseidon:site``), or for
    #: one without ``name:`` its file's path; empty for the library. A process is known by it
    #: and its name across directories.
    owner: str = ""

    @property
    def is_root(self) -> bool:
        return self.user == "root"


@dataclass(frozen=True)
class Script:
    """Shell text for one step: how to check it and how to apply it."""

    apply: str
    #: Run once before the check, at the script's top level (functions, variables, secrets).
    setup: str = ""
    #: Exits 0: nothing to do; 1: work to do; else the check failed. ``None``: always work to do.
    #: It may set ``_why`` to say why there is work to do.
    check: str | None = None
    ok_reason: str = ""
    #: Whether the step needs root (then ``sudo -n`` when the user is not root).
    needs_root: bool = False
    #: The check is the whole step (``run`` with ``changes: false``): exit 0 is ok, anything else failed.
    check_only: bool = False
    #: Whether the script holds a secret (a token): it must never be sent as a command line.
    secret: bool = False


@dataclass(frozen=True)
class Rendered:
    """A step ready to send: the command line, and the script it reads on its standard input."""

    command: str
    #: The step's whole text, fed to ``command`` (``None``: the command line holds it, interactive only).
    stdin: str | None


# -- shell the user wrote ----------------------------------------------------


def _bound(text: str, ctx: StepContext) -> shell.Bound:
    if ctx.values is None:
        return shell.Bound(text)
    return shell.bind(spec.parts(text), ctx.values)


def _user_shell(text: str, ctx: StepContext) -> str:
    """A command the user wrote, run in a subshell: its values assigned to variables, then its text ``eval``'d."""
    return _subshell(_bound(text, ctx))


def _subshell(bound: shell.Bound) -> str:
    return f"( {bound.assignments()}eval {quote(bound.text)} )"


def _say(message: str) -> str:
    """Shell that prints ``message`` on stderr as it is (``echo`` would read its backslashes)."""
    return f"printf '%s\\n' {quote(message)} >&2"


def marks_change(step: spec.Step) -> bool:
    """Whether the step rewrites a change mark when it changes the droplet (:func:`change_mark`):
    all but ``chdir`` (it changes nothing) and a ``run`` that only checks."""
    return step.kind != "chdir" and getattr(step, "changes", True) is not False


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8", "surrogatepass")).hexdigest()


def change_mark(step: spec.Step, user: str) -> str:
    """The name of the file a step rewrites on the droplet each time it changes something.

    It depends on what the step does, not on its label or timeout: the same
    step shares its mark across playbooks and the seed API. (A ``nohup``
    step's name is what it does.) Two identical steps in two directories
    share one too: a change of either restarts what follows both, never less.
    """
    ignored = ("timeout",) if step.kind == "nohup" else ("name", "timeout")
    fields = {key: value for key, value in step.model_dump().items() if key not in ignored}
    return _digest(user, fields)[:24]


# The login user's home, also under sudo (whose HOME is root's): what `~` in a file's path means,
# and where the change marks are.
_LOGIN_HOME = (
    "_home=$HOME\n"
    'if [ -n "${SUDO_USER-}" ] && [ "$(id -u)" -eq 0 ]; then'
    ' _home=$(getent passwd "$SUDO_USER" | cut -d: -f6) && [ -n "$_home" ] || _home=$HOME; fi'
)

# The login user's ~/.poseidon/changes, also under sudo.
_MARKS_DIR = f"{_LOGIN_HOME}\n_pm=$_home/.poseidon/changes"


def _write_mark(mark: str) -> str:
    """Rewrites the step's change mark with a new random value; under sudo it stays the login user's."""
    name = quote(mark)
    return (
        f'mkdir -p "$_pm" && printf \'%s\\n\' {_random.token_hex(8)} > "$_pm/.{mark}.$$"'
        f' && mv -f "$_pm/.{mark}.$$" "$_pm/"{name}'
        ' && { [ -z "${SUDO_UID-}" ] || chown "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "${_pm%/*}" "$_pm" "$_pm/"'
        f"{name} 2>/dev/null || true; }}"
    )


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
    '  [ "$n" = "$1" ] || [ "${s##*|}" = "${1#*=}" ]; }'
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
    'awk -v r="$ref" \''
    '$2 == "refs/tags/" r "^{}" {t=$1} $2 == "refs/heads/" r {h=$1} '
    '$2 == "refs/tags/" r {g=$1} $2 == r {e=$1} '
    'END {if (t) print t, "tag"; else if (h) print h, "branch"; '
    'else if (g) print g, "tag"; else if (e) print e, "ref"}\''
)

_ASKPASS = (
    # The token is in the script, which the shell reads on its input; it reaches
    # git through GIT_ASKPASS: never argv, never the droplet's .git/config.
    "export POSEIDON_GIT_TOKEN\n"
    "askpass=$(mktemp) || exit 2; trap 'rm -f \"$askpass\"' EXIT\n"
    "printf '%s\\n' '#!/bin/sh' "
    '\'case "$1" in Username*) echo x-access-token ;; *) printf "%s\\n" "$POSEIDON_GIT_TOKEN" ;; esac\''
    ' > "$askpass" && chmod 700 "$askpass" || exit 2\n'
    'export GIT_ASKPASS="$askpass"'
)


def git(step: GitStep, ctx: StepContext, token: str | None = None) -> Script:
    dest = quote_path(step.target())
    setup = (
        # GIT_OPTIONAL_LOCKS=0: `git status` in the check must not rewrite the index (plan changes nothing).
        f"export GIT_TERMINAL_PROMPT=0 GIT_OPTIONAL_LOCKS=0\nref={quote(step.ref or 'HEAD')}\nwant= kind=\n"
        + (f"POSEIDON_GIT_TOKEN={quote(token)}\n{_ASKPASS}" if token else "")
    )
    # What the remote has under the ref; a remote that cannot be read fails the check.
    resolve = (
        f"out=$(git -C {dest} ls-remote -- origin"
        ' "$ref" "refs/heads/$ref" "refs/tags/$ref" "refs/tags/$ref^{}") || return 2\n'
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
    checkout = f' && git -C {dest} checkout -q "$ref"' if step.ref else ""
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
        secret=bool(token),
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
    #: How the check runs a program: away from the working directory, whose modules (an app's
    #: own ``packaging/``) would come first: isolated in a virtualenv; from / for the system
    #: Python, whose PYTHONPATH (a PIP_TARGET folder) counts.
    run: str


def _python(step: PipStep | PipRStep) -> _Python:
    if step.system:
        # Modern Debian and Ubuntu refuse a system-wide pip (PEP 668) unless told;
        # pip before 23 has no such option and needs none.
        flag = (
            "if python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages;"
            " then set -- --break-system-packages; else set --; fi"
        )
        return _Python("python3", flag, '"$@"', "python3 --version 2>&1", ".poseidon", "cd / && python3")
    venv = quote_path(step.venv)
    python = f"{venv}/bin/python"
    return _Python(python, _venv(step.venv), "", f"cat {venv}/pyvenv.cfg", venv, f"{python} -I")


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
            f"( {where.run} -c {quote(_SATISFIED)} {names} ) 2>/dev/null || return 1"
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


# -- nohup: a supervised process ---------------------------------------------------
#
# .poseidon/NAME.pid holds the process's pid, .poseidon/NAME.state its identity
# (start time in clock ticks since boot, boot id, a random token exported to the
# process and its children as POSEIDON_PROCESS) and what it was started from
# (a digest of its definition; the file's time is when it started, which the change
# marks of the steps before it are compared with). "Running" means that identity is
# alive: a reused pid is never taken for it. ~/.poseidon/processes/NAME (the login
# user's) holds the directory it was started in: started in another one, the process
# there is stopped first, never left running beside the new one.

# What a restart on change asks: whether a change mark of the steps before (the marks named)
# differs from its value when the process started, which FILE recorded (mark.NAME=VALUE lines,
# written by _inputs_now). A step added since that changed nothing has no mark: it restarts
# nothing. No clock is read. A start an earlier poseidon recorded (one digest of all the marks,
# inputs=) is compared as it was.
_INPUTS = r"""_recorded() { [ ! -L "$1" ] && sed -n "s/^$2=//p" "$1" 2>/dev/null | head -n 1; }
_inputs_now() { for _k in "$@"; do printf 'mark.%s=%s\n' "$_k" "$(cat "$_pm/$_k" 2>/dev/null)"; done; }
_inputs_changed() {
  _f=$1; shift; [ -f "$_f" ] || return 0
  _old=$(_recorded "$_f" inputs)  # a nohup's state; a service's file held the digest alone
  [ -n "$_old" ] || { _old=$(head -n 1 "$_f"); case "$_old" in *=*) _old= ;; esac; }
  if [ -n "$_old" ]; then
    _now=$(for _k in "$@"; do printf '%s=' "$_k"; cat "$_pm/$_k" 2>/dev/null || echo; done | sha256sum | cut -c1-64)
    [ "$_old" != "$_now" ]; return; fi
  for _k in "$@"; do [ "$(cat "$_pm/$_k" 2>/dev/null)" = "$(_recorded "$_f" "mark.$_k")" ] || return 0; done
  return 1; }"""

_PROCESS = (
    r"""_boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)
_field() { [ ! -L "$_state" ] && sed -n "s/^$1=//p" "$_state" 2>/dev/null | head -n 1; }
_procstat() { _s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; _s=${_s##*) }; set -- $_s
  _pstate=$1 _pgrp=$3 _psid=$4 _pstart=${20}; case "$_pstate" in Z|X|x) return 1 ;; esac; }
_carries() {  # the process's environment holds the token (when it can be read: another user's cannot)
  [ -r "/proc/$1/environ" ] || return 0
  grep -qaF -e "POSEIDON_PROCESS=$2" "/proc/$1/environ" 2>/dev/null; }
_running() {  # the recorded identity runs: same pid, start time, boot, session, token
  _pid=$(cat "$_pidfile" 2>/dev/null); case "$_pid" in ''|*[!0-9]*|0|1) _pid=; return 1 ;; esac
  [ ! -L "$_pidfile" ] && _procstat "$_pid" || return 1
  [ "$_pstart" = "$(_field start)" ] && [ -n "$_boot" ] && [ "$_boot" = "$(_field boot)" ] &&
    [ "$_psid" = "$_pid" ] && _t=$(_field token) && [ -n "$_t" ] && _carries "$_pid" "$_t"
}
_members() { _t=$(_field token); case "$_t" in ''|*[!0-9a-f]*) return 0 ;; esac
  [ "$_boot" = "$(_field boot)" ] || return 0
  grep -lsaF -e "POSEIDON_PROCESS=$_t" /proc/[0-9]*/environ 2>/dev/null | sed -n 's|^/proc/\([0-9]*\)/environ$|\1|p'; }
_legacy() {  # started by poseidon before identities: a .cmd file, and `sh -c` leading its group here
  [ -f "${_pidfile%.pid}.cmd" ] && [ ! -f "$_state" ] || return 1
  _pid=$(cat "$_pidfile" 2>/dev/null); case "$_pid" in ''|*[!0-9]*|0|1) return 1 ;; esac
  _procstat "$_pid" && [ "$_pgrp" = "$_pid" ] && [ "$(readlink "/proc/$_pid/cwd")" = "$(pwd -P)" ] &&
    [ "$(tr '\0' ' ' < "/proc/$_pid/cmdline" 2>/dev/null | cut -c1-6)" = "sh -c " ]
}
_stop() {  # TERM the group and every process carrying the token; KILL what is left after 10 s
  _group=; if _running || _legacy; then _group=$_pid _gstart=$_pstart; fi
  rm -f "${_pidfile%.pid}.cmd"
  _left=$(_members)
  [ -n "$_group$_left" ] || return 0
  [ -z "$_group" ] || kill -TERM "-$_group" 2>/dev/null || kill -TERM "$_group" 2>/dev/null
  [ -z "$_left" ] || kill -TERM $_left 2>/dev/null
  _n=0
  while [ $_n -lt 100 ] &&
    { { [ -n "$_group" ] && _procstat "$_group" && [ "$_pstart" = "$_gstart" ]; } || [ -n "$(_members)" ]; }; do
    sleep 0.1; _n=$((_n+1))
  done
  if [ -n "$_group" ] && _procstat "$_group" && [ "$_pstart" = "$_gstart" ]; then kill -KILL "-$_group" 2>/dev/null; fi
  _left=$(_members); [ -z "$_left" ] || kill -KILL $_left 2>/dev/null
  return 0
}
_others() {  # the other processes recorded in this .poseidon that still run: name (pid)
  for _f in .poseidon/*.pid; do [ -f "$_f" ] && [ "$_f" != "$_pidfile" ] || continue
    _o=$(cat "$_f" 2>/dev/null); case "$_o" in ''|*[!0-9]*) continue ;; esac
    _procstat "$_o" && { _n=${_f#.poseidon/}; printf '%s (pid %s) ' "${_n%.pid}" "$_o"; }
  done; }
_write() {  # _write FILE: standard input into FILE, through a new file of our own (never through a link)
  _tmp=$(mktemp "$1.XXXXXX") && cat > "$_tmp" && mv -f "$_tmp" "$1"; }
_moved() {  # the directory it was started in (printed), when that is another one
  [ ! -L "$_where" ] && _d=$(cat "$_where" 2>/dev/null) && [ -n "$_d" ] && [ "$_d" != "$_here" ] && printf '%s' "$_d"; }
_runs_elsewhere() { _d=$(_moved) && ( cd "$_d" 2>/dev/null && _running ); }
_remember_where() {  # this directory, for a start elsewhere to find; the login user's, also under sudo
  [ ! -L "$_home/.poseidon" ] && [ ! -L "${_where%/*}" ] || return 0  # never through a link someone planted
  mkdir -p "${_where%/*}" && printf '%s\n' "$_here" | _write "$_where" || return 1
  [ -z "${SUDO_UID-}" ] ||
    chown -h "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$_home/.poseidon" "${_where%/*}" "$_where" 2>/dev/null
  return 0; }
"""
    + _INPUTS
)

# The process runs under `sh -c 'eval "$(cat)"' poseidon:NAME`, reading this on its input:
# it leads its own session and process group (setsid), and a TERM (a user's `kill PID`,
# or poseidon's stop) ends the whole group.
_WRAPPER = (
    "exec </dev/null\n"
    "_poseidon_stop() { trap '' TERM INT HUP; kill -TERM 0 2>/dev/null; wait; exit 143; }\n"
    "trap _poseidon_stop TERM INT HUP\n"
    "{command} &\n"
    "wait $!\n"
)

_PORT_OPEN = (
    "import os, socket, sys\n"
    "try:\n"
    " address = (os.environ['POSEIDON_READY_HOST'], int(os.environ['POSEIDON_READY_PORT']))\n"
    " socket.create_connection(address, 1).close()\n"
    "except OSError:\n sys.exit(1)\n"
)
_HTTP_OK = (
    "import os, sys, urllib.request as r\n"
    "try:\n a = r.build_opener(r.ProxyHandler({})).open(os.environ['POSEIDON_READY_URL'], timeout=2)\n"
    "except Exception:\n sys.exit(1)\n"
    "sys.exit(0 if 200 <= a.status < 300 else 1)\n"
)


def _ready_probe(ready: spec.ReadyCheck, ctx: StepContext) -> tuple[str, str]:
    """``(shell that exits 0 when ready, what it waits for)``. Values travel in the environment, not argv."""
    if ready.port is not None:
        host = ready.host or ctx.address
        return (
            f"POSEIDON_READY_HOST={quote(host)} POSEIDON_READY_PORT={ready.port} python3 -I -c {quote(_PORT_OPEN)}",
            f"port {ready.port} on {host}",
        )
    if ready.http is not None:
        return (
            f"POSEIDON_READY_URL={quote(ready.http)} python3 -I -c {quote(_HTTP_OK)}",
            f"a 2xx answer from {ready.http}",
        )
    assert ready.cmd is not None
    return f"{_user_shell(ready.cmd, ctx)} >/dev/null 2>&1", "its ready command to succeed"


def _fail_with_log(log: str, message: str) -> str:
    """Shell that says ``message``, shows the end of the log and fails the step. A process that died
    is cleared away with what it left running; one that runs but is not ready is left running (the
    next apply finds it not ready and restarts it)."""
    return f"{{ {_say(message)}; tail -n 20 {log} >&2; _running || _stop; exit 1; }}"


def _await_started(
    step: NohupStep | ServiceStep,
    name: str,
    ready: tuple[str, str],
    *,
    alive: str,
    fail: Callable[[str], str],
    output: str,
    not_ready: str = "",
) -> str:
    """Shell that waits, once the process started, until it is ready (``ready:``: ``(probe,
    what it waits for)``) or has lived ``grace`` seconds. ``alive`` exits 0 while it runs;
    ``fail(message)`` says the message, shows the end of its ``output`` and fails the step."""
    probe, awaited = ready
    if step.ready:
        late = f"poseidon: {name} is not ready after {step.ready.timeout:g} s (waited for {awaited}); {not_ready}"
        return (
            f"_end=$(( $(date +%s) + {math.ceil(step.ready.timeout)} ))\n"
            "while :; do\n"
            f"  {alive} || {fail(f'poseidon: {name} exited before it was ready; the end of its {output}:')}\n"
            f"  {probe} && break\n"
            f'  [ "$(date +%s)" -lt "$_end" ] || {fail(f"{late}the end of its {output}:")}\n'
            "  sleep 0.2\n"
            "done\n"
            f"{alive} || {fail(f'poseidon: {name} exited as it became ready; the end of its {output}:')}"
        )
    if step.grace > 0:  # grace: 0 starts it and does not wait to see it live
        ended = f"poseidon: {name} exited within {step.grace:g} s; the end of its {output}:"
        return f"sleep {step.grace:g}\n{alive} || {fail(ended)}"
    return ":"


def nohup(step: NohupStep, ctx: StepContext) -> Script:
    name = step.process_name()
    log = quote_path(step.log_path())
    bound = _bound(step.cmd, ctx)
    wrapper = _WRAPPER.replace("{command}", _subshell(bound))
    # What it runs: a change to any of these restarts it (on-change). The directory is added there;
    # the log and the user it runs as are recorded beside (a process started before they were is
    # not restarted for them).
    definition = _digest(bound.text, bound.bindings, step.env, ctx.user)
    # Where it was started is kept per owner (the playbook) and name: two playbooks' processes of
    # one name in two directories are two processes.
    where = (
        f"{hashlib.sha256(ctx.owner.encode('utf-8', 'surrogateescape')).hexdigest()[:12]}-{name}" if ctx.owner else name
    )
    setup = (
        f"{_PROCESS}\n{_LOGIN_HOME}\n"
        f"_pidfile=.poseidon/{quote(name + '.pid')} _state=.poseidon/{quote(name + '.state')}\n"
        f'_where="$_home/.poseidon/processes"/{quote(where)} _here=$(pwd -P)\n'
        f"_def=$(printf '%s\\n' {definition} \"$PWD\" | sha256sum | cut -c1-64)\n"
        "_why="
    )
    probe, awaited = _ready_probe(step.ready, ctx) if step.ready else ("", "")
    # A port or a URL is knocked on by python3; it also answers for another process, if one holds it.
    knocks = step.ready is not None and step.ready.cmd is None
    if knocks:
        setup += (
            "\ncommand -v python3 >/dev/null 2>&1 ||"
            f" {{ {_say(f'poseidon: ready: {awaited} is checked with python3, which the droplet lacks')}; exit 2; }}"
        )
    check = [f'[ {quote(step.restart)} != always ] || {{ _why="restart: always"; return 1; }}']
    if step.restart == "never":  # one that runs where it was started is left alone
        check.append('_running || _runs_elsewhere || { _why="not running"; return 1; }')
    else:
        moved = "it was started in another directory"
        check.append(f"! _runs_elsewhere || {{ _why={quote(moved)}; return 1; }}")
        check.append('_running || { _why="not running"; return 1; }')
    if step.restart == "on-change":
        check.append(
            '[ "$(_field definition)" = "$_def" ] || { _why="its command, env, user or directory changed"; return 1; }'
        )
        check.append(
            f'[ -z "$(_field log)" ] || [ "$(_field log)" = {quote(step.log_path())} ] ||'
            ' { _why="its log changed"; return 1; }'
        )
        check.append(
            '[ -z "$(_field uid)" ] || [ "$(_field uid)" = "$(id -u)" ] ||'
            ' { _why="it would run as another user (sudo:)"; return 1; }'
        )
        check.append(
            f'! _inputs_changed "$_state" {quote_all(ctx.inputs)} ||'
            ' { _why="an earlier step changed since it started"; return 1; }'
        )
    if probe and step.restart != "never":
        check.append(f"{probe} || {{ _why={quote(f'it runs but is not ready ({awaited})')}; return 1; }}")
    token = _random.token_hex(8)
    start = (
        # Started in another directory: that one is stopped too (its files there are left).
        'if _d=$(_moved); then ( cd "$_d" 2>/dev/null && _stop ); fi\n'
        "_stop\n"
        "if [ -L .poseidon ]; then\n"
        "  echo 'poseidon: .poseidon is a symbolic link: poseidon does not write through links' >&2; exit 2\n"
        "fi\n"
        "mkdir -p .poseidon || exit 2\n"
        # A log that exists is replaced by a new file of ours: set -C never opens one a link points to.
        f"rm -f -- {log} || exit 2\n"
    )
    if knocks:
        # What answers now cannot be the process about to start: the check could not tell them apart.
        taken = f"poseidon: {awaited} answers before {name} starts: another process holds it"
        start += (
            f"if {probe}; then _o=$(_others); printf '%s%s\\n' {quote(taken)}"
            ' "${_o:+ (still running here: ${_o% })}; stop it, or name the step as before (name:)" >&2; exit 1; fi\n'
        )
    start += (
        f"printf '%s' {quote(wrapper)} | ( set -C; POSEIDON_PROCESS={token} exec nohup setsid sh -c 'eval \"$(cat)\"'"
        f" {quote('poseidon:' + name)} > {log} 2>&1 ) &\n"
        "_pid=$!\n"
        '_procstat "$_pid" || _pstart=gone\n'
        'printf \'%s\\n\' "$_pid" | _write "$_pidfile" || exit 2\n'
        f'{{ printf \'start=%s\\nboot=%s\\ntoken=%s\\ndefinition=%s\\nlog=%s\\nuid=%s\\n\' "$_pstart" "$_boot" {token}'
        f' "$_def" {quote(step.log_path())} "$(id -u)"; _inputs_now {quote_all(ctx.inputs)}; }}'
        ' | _write "$_state" || exit 2\n'
        "_remember_where || exit 2\n"
    )
    wait = _await_started(
        step,
        name,
        (probe, awaited),
        alive="_running",
        fail=lambda message: _fail_with_log(log, message),
        output="log",
        not_ready="it is left running, and the next apply restarts it; ",
    )
    started = f'printf \'%s started%s, pid %s\\n\' {quote(name)} "${{_why:+ ($_why)}}" "$_pid"'
    return Script(
        setup=setup,
        check="\n".join(check),
        apply=f"{start}{wait}\n{started}",
        ok_reason=f"{name} is running",
    )


def run(step: RunStep, ctx: StepContext) -> Script:
    command = _user_shell(step.cmd, ctx)
    if not step.changes:
        return Script(check=command, apply=":", ok_reason="the check passed", check_only=True)
    guards = []
    if step.creates:
        guards.append(f"[ -e {quote_path(step.creates)} ] && return 0")
    if step.unless:
        guards.append(f"{_user_shell(step.unless, ctx)} >/dev/null 2>&1 && return 0")
    reason = f"{step.creates} exists" if step.creates else "the unless command succeeded"
    return Script(
        check="\n".join([*guards, "return 1"]) if guards else None,
        apply=command,
        ok_reason=reason if guards else "",
    )


# -- file: content put in place -----------------------------------------------------


# Checks (``check``: exit 0 when the file is as wanted, 1 and why on stdout when not) or puts
# (``put``: the bytes of its standard input, base64) the file at POSEIDON_FILE_PATH, an absolute
# path, following no link someone else could have planted. The folders are walked from / one
# descriptor at a time, each held open: ``..`` goes back to the folder held, never looked up by
# name, and a link is followed only when root, the user writing or (under sudo) the login user
# owns it, checked again once it is read (a link cannot change, only be replaced). Missing
# folders are made (the login user's under its home, under sudo). The new file is made in the
# last folder with O_EXCL under a random name, given its owner and mode through its descriptor
# before a byte of content, then renamed over the path, and the rename checked to have moved
# it. Whatever cannot be done says so in one line and exits 3. Run with ``python3 -I``: nothing
# of the working directory (a ``secrets.py`` in an app) is imported.
_PUT_FILE = r"""import base64, errno, grp, hashlib, os, pwd, stat, sys
env = os.environ
path, shown, doing = env["POSEIDON_FILE_PATH"], env["POSEIDON_FILE_SHOWN"], sys.argv[1]
DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
class Explained(Exception):
    pass
def fail(message):
    raise Explained(message)
def change(why):
    sys.stdout.write(why); sys.exit(1)
def ident(fd):
    info = os.fstat(fd); return (info.st_dev, info.st_ino)
def uid(name):
    if name.isdigit() and int(name) >= 0xFFFFFFFF: fail("%s is no user id" % name)
    try: return int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid
    except KeyError: return None
def gid(name):
    if name.isdigit() and int(name) >= 0xFFFFFFFF: fail("%s is no group id" % name)
    try: return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError: return None
def main():
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not path.startswith("/") or not parts or parts[-1] == ".." or path.endswith(("/", "/.")):
        fail(shown + " names a folder, not a file")
    name = parts[-1]
    euid = os.geteuid()
    login = int(env["SUDO_UID"]) if euid == 0 and env.get("SUDO_UID", "").isdigit() else None
    # Links of root's, of the user writing, and (under sudo) of the login user, who may act as root.
    trusted = {0, euid} | ({login} if login is not None else set())
    home = give = None
    if login is not None:
        try:
            account = pwd.getpwuid(login)
            info = os.stat(account.pw_dir)
            home, give = (info.st_dev, info.st_ino), (account.pw_uid, account.pw_gid)
        except (KeyError, OSError):
            pass
    # The folders walked, each held open: `..` goes back to the one held, never looked up by name.
    held = [os.open("/", DIR)]
    ids = [ident(held[0])]
    todo, hops = parts[:-1][::-1], 0
    while todo:
        part = todo.pop()
        if part == ".":
            continue
        if part == "..":
            if len(held) > 1:
                os.close(held.pop()); ids.pop()
            continue
        if len(held) > 200:
            fail("the folders of %s are over 200 deep" % shown)
        here = held[-1]
        try:
            before = os.stat(part, dir_fd=here, follow_symlinks=False)
        except FileNotFoundError:
            if doing == "check":
                change("it does not exist")
            os.mkdir(part, 0o755, dir_fd=here)
            made = os.open(part, DIR, dir_fd=here)
            if give and home in ids:
                os.fchown(made, *give)
            held.append(made); ids.append(ident(made))
            continue
        if stat.S_ISLNK(before.st_mode):
            hops += 1
            if hops > 40:
                fail("too many links among the folders of " + shown)
            if before.st_uid not in trusted:
                fail("a folder of %s is a link of uid %d's: poseidon follows only links of root's, of the user"
                     " it writes as, or of the login user under sudo" % (shown, before.st_uid))
            target = os.readlink(part, dir_fd=here)
            after = os.stat(part, dir_fd=here, follow_symlinks=False)
            if (after.st_ino, after.st_dev, after.st_uid) != (before.st_ino, before.st_dev, before.st_uid):
                fail("a link among the folders of %s changed while poseidon read it" % shown)
            if target.startswith("/"):
                for fd in held[1:]:
                    os.close(fd)
                del held[1:], ids[1:]
            todo += [p for p in target.split("/") if p not in ("", ".")][::-1]
            continue
        if not stat.S_ISDIR(before.st_mode):
            fail("a folder of %s is not a folder" % shown)
        opened = os.open(part, DIR, dir_fd=here)
        held.append(opened); ids.append(ident(opened))
    folder = held[-1]
    try:
        was = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        was = None
    if was is not None and stat.S_ISDIR(was.st_mode):
        fail(shown + " is a directory")
    if was is not None and not stat.S_ISREG(was.st_mode) and not stat.S_ISLNK(was.st_mode):
        fail(shown + " is not a regular file")
    owner, group = env.get("POSEIDON_FILE_OWNER"), env.get("POSEIDON_FILE_GROUP")
    mode = int(env["POSEIDON_FILE_MODE"], 8) if env.get("POSEIDON_FILE_MODE") else None
    if doing == "check":
        if was is None:
            change("it does not exist")
        if stat.S_ISLNK(was.st_mode):
            change("it is a symbolic link, to be replaced by the file")
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
        except PermissionError:
            fail("cannot read %s (sudo: true reads as root)" % shown)
        with os.fdopen(fd, "rb") as stream:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                fail(shown + " is not a regular file")
            digest = hashlib.sha256()
            for block in iter(lambda: stream.read(1 << 16), b""):
                digest.update(block)
        if digest.hexdigest() != env["POSEIDON_FILE_DIGEST"]:
            change("its content differs")
        if mode is not None and stat.S_IMODE(info.st_mode) != mode:
            change("its mode is %o, not %o" % (stat.S_IMODE(info.st_mode), mode))
        if owner and info.st_uid != uid(owner):
            change("its owner is not " + owner)
        if group and info.st_gid != gid(group):
            change("its group is not " + group)
        return
    was = was if was is not None and stat.S_ISREG(was.st_mode) else None
    shared = os.fstat(folder)
    if was and shared.st_mode & stat.S_ISVTX and shared.st_mode & 0o002 and was.st_uid not in trusted:
        was = None  # in /tmp anyone may have made it first: its mode and group are not to be kept
    new_uid, new_gid = -1, -1
    if was and euid == 0:
        new_uid, new_gid = was.st_uid, was.st_gid
    elif not was and give and home in ids:
        new_uid, new_gid = give
    if owner:
        new_uid = uid(owner)
        if new_uid is None:
            fail("no user %r on this droplet" % owner)
    if group:
        new_gid = gid(group)
        if new_gid is None:
            fail("no group %r on this droplet" % group)
    if mode is None:
        mode = stat.S_IMODE(was.st_mode) & 0o777 if was else 0o644  # never a setuid bit onto new content
    temporary = ".poseidon-file." + os.urandom(8).hex()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
    try:
        if (new_uid, new_gid) != (-1, -1):
            os.fchown(fd, new_uid, new_gid)
        os.fchmod(fd, mode & 0o777)  # its final permissions before a byte of content
        data = base64.b64decode(sys.stdin.buffer.read())
        while data:
            data = data[os.write(fd, data):]
        os.fchmod(fd, mode)  # a write by a user who is not root clears setuid bits
        os.fsync(fd)
        ours = os.fstat(fd)
        def taken(at):
            now = os.stat(at, dir_fd=folder, follow_symlinks=False)
            return (now.st_ino, now.st_dev) != (ours.st_ino, ours.st_dev)
        if taken(temporary):
            fail("the new file of %s was taken away while it was written" % shown)
        os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        if taken(name):
            fail("%s was replaced by another file as it was put in place" % shown)
    except BaseException:
        try: os.unlink(temporary, dir_fd=folder)
        except OSError: pass
        raise
    finally:
        os.close(fd)
try:
    main()
except Explained as exc:
    sys.stderr.write("poseidon: %s\n" % exc); sys.exit(3)
except OSError as exc:
    verb = "read" if doing == "check" else "write"
    sys.stderr.write("poseidon: cannot %s %s: %s\n" % (verb, shown, exc.strerror or exc))
    sys.exit(3)
"""


#: A check's exit status for "failed, and it said why on stderr": no line of render()'s is added.
EXPLAINED = 3


def _login_path(path: str) -> str:
    """Shell for ``path`` with a leading ``~`` as the login user's home (``$_home``), sudo or not."""
    if path == "~":
        return '"$_home"'
    if path.startswith("~/"):
        return f'"$_home"/{quote(path[2:])}' if path[2:] else '"$_home"/'
    return quote(path)


def _file_path(path: str, cwd: str | None) -> str:
    """Shell for ``path`` made absolute: ``~`` is the login user's home (``$_home``), sudo or not;
    a relative path is the working directory's as ``chdir`` printed it, links and all, so that the
    walk judges each link on the way (``$PWD`` would not do: sudo drops it, and the shell it starts
    finds the directory without its links); without a ``chdir``, the login user's home."""
    if path == "~" or path.startswith("~/"):
        return _login_path(path)
    if path.startswith("/"):
        return quote(path)
    return quote(f"{cwd.rstrip('/')}/{path}") if cwd else f'"$_home"/{quote(path)}'


def file(step: FileStep, ctx: StepContext, data: bytes) -> Script:
    """Put ``data`` at the step's path: the droplet's ``python3`` (:data:`_PUT_FILE`) compares
    digest, mode and owner, and writes the file following no link someone else planted, giving
    the new file its owner and mode before its content, and renaming it over the path, so no
    reader ever sees half a file."""
    settings = {
        "POSEIDON_FILE_SHOWN": step.path,
        "POSEIDON_FILE_DIGEST": hashlib.sha256(data).hexdigest(),
        "POSEIDON_FILE_MODE": step.mode or "",
        "POSEIDON_FILE_OWNER": step.owner or "",
        "POSEIDON_FILE_GROUP": step.group or "",
    }
    program = (
        f'POSEIDON_FILE_PATH="$_path" {" ".join(f"{k}={quote(v)}" for k, v in settings.items())}'
        f" python3 -I -c {quote(_PUT_FILE)}"
    )
    python = "poseidon: file: the droplet has no python3, which puts files in place"
    setup = (
        f"{_LOGIN_HOME}\n_path={_file_path(step.path, ctx.cwd)}\n"
        f"command -v python3 >/dev/null 2>&1 || {{ {_say(python)}; exit {EXPLAINED}; }}"
    )
    return Script(
        setup=setup,
        check=f"_why=$({program} check); return $?",
        apply=f"printf %s {base64.b64encode(data).decode('ascii')} | {program} put",
        ok_reason=f"{step.path} has its content, mode and owner",
        needs_root=step.needs_root(),
        secret=True,  # its content may hold one: never in a command line
    )


# -- service: a systemd unit of poseidon's -------------------------------------------
#
# /etc/systemd/system/poseidon-NAME.service runs `sh -c 'eval "$(cat)"'`, whose input
# systemd opens, as root, from /etc/poseidon/services/NAME.sh (root's alone): the
# command with its directory, environment and bound values. Values and secrets never
# reach the unit (any user reads units and `systemctl show`) nor a command line.

#: The folder of the services' scripts and states (root's alone).
SERVICES = "/etc/poseidon/services"
_UNITS = "/etc/systemd/system"

_NO_SYSTEMD = (
    "poseidon: service: this droplet does not run systemd; the light sandbox has none,"
    " --sandbox=machines boots droplets that do"
)


def service_unit(step: ServiceStep, user: str) -> str:
    """The unit file of ``step``, running as ``user``: names only, every value is in its script."""
    return (
        f"# poseidon's service step {step.name!r}: poseidon apply writes this file.\n"
        "[Unit]\n"
        f"Description=poseidon service {step.name}\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        f"User={user}\n"
        f"ExecStart=/bin/sh -c 'eval \"$$(cat)\"' poseidon:{step.name}\n"
        f"StandardInput=file:{SERVICES}/{step.name}.sh\n"
        "StandardOutput=journal\n"
        "StandardError=journal\n"
        "Restart=on-failure\n"
        "RestartSec=1\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def service_script(step: ServiceStep, ctx: StepContext) -> str:
    """What the service's shell reads: its directory, environment and values, then the command."""
    bound = _bound(step.cmd, ctx)
    where = f"cd -- {quote(ctx.cwd)}" if ctx.cwd else "cd"
    lines = [f"{where} || exit 200"]
    lines += [f"export {key}={quote(value)}" for key, value in step.env.items()]
    lines.append(f"{bound.assignments()}exec </dev/null")
    lines.append(f"eval {quote(bound.text)}")
    return "\n".join(lines) + "\n"


def _put(text: str, path: str, mode: str) -> str:
    """Shell that writes ``text`` at ``path`` (root's) through a new file renamed over it."""
    data = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return f"printf %s {data} | base64 -d | _put {quote(path)} {mode} || exit 2"


def service(step: ServiceStep, ctx: StepContext) -> Script:
    user = step.user or ctx.user  # the login user may come from POSEIDON_SSH_USER, unchecked so far
    if not USER_NAME_RE.fullmatch(user):
        raise shell.BindError(f"service {step.name}: {user!r} is no user name a unit can run as")
    unit, script = service_unit(step, user), service_script(step, ctx)
    name, unit_name = step.name, step.unit()
    unit_file, script_file, inputs_file = f"{_UNITS}/{unit_name}", f"{SERVICES}/{name}.sh", f"{SERVICES}/{name}.inputs"
    setup = (
        f"command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] || {{ {_say(_NO_SYSTEMD)}; exit 2; }}\n"
        f"{_INPUTS}\n_why=\n"
        '_digest() { { sha256sum < "$1"; } 2>/dev/null | cut -c1-64; }\n'
        '_put() { _t=$(mktemp "$1.XXXXXX") && cat > "$_t" && chmod "$2" "$_t" && mv -fT -- "$_t" "$1" ||'
        ' { rm -f -- "$_t"; return 1; }; }\n'
        f'_journal() {{ journalctl -u {unit_name} --since "$_since" -n 20 --no-pager -o cat >&2 2>/dev/null; }}\n'
        f"_main() {{ systemctl show -p MainPID --value {unit_name}; }}\n"
        f'_alive() {{ systemctl is-active --quiet {unit_name} && [ "$(_main)" = "$_pid" ]; }}'
    )
    probe, awaited = _ready_probe(step.ready, ctx) if step.ready else ("", "")
    digest = hashlib.sha256
    enabled = (
        f'[ "$(systemctl is-enabled {unit_name} 2>/dev/null)" = enabled ] ||'
        ' { _why="it does not start at boot"; return 1; }'
    )
    active = f'systemctl is-active --quiet {unit_name} || {{ _why="it is not running"; return 1; }}'
    if step.restart == "never":  # only started when it does not run: what it was started from is not compared
        check = [f'[ -f {unit_file} ] || {{ _why="its unit is new"; return 1; }}', enabled, active]
    else:
        check = [
            f'[ {quote(step.restart)} != always ] || {{ _why="restart: always"; return 1; }}',
            f'[ "$(_digest {unit_file})" = {digest(unit.encode()).hexdigest()} ] ||'
            ' { _why="its unit is new or changed"; return 1; }',
            f'[ "$(_digest {quote(script_file)})" = {digest(script.encode()).hexdigest()} ] ||'
            ' { _why="its command, env, user or directory changed"; return 1; }',
            enabled,
            active,
        ]
    if step.restart == "on-change":
        check.append(
            f"! _inputs_changed {quote(inputs_file)} {quote_all(ctx.inputs)} ||"
            ' { _why="an earlier step changed since it started"; return 1; }'
        )
    if probe and step.restart != "never":
        check.append(f"{probe} || {{ _why={quote(f'it runs but is not ready ({awaited})')}; return 1; }}")
    failed = f"poseidon: {unit_name} did not start; the end of its journal:"
    running = f"{unit_name} runs and is left running (restart: never); enabled at boot"
    apply = [
        # never: one that runs is not stopped, whatever it runs; it is only made to start at boot.
        f"if systemctl is-active --quiet {unit_name}; then"
        f" systemctl enable --quiet {unit_name} || exit 2; printf '%s\\n' {quote(running)}; return 0; fi"
        if step.restart == "never"
        else ":",
        f"( umask 022; mkdir -p {_UNITS} ) && ( umask 077; mkdir -p {SERVICES} ) || exit 2",
        _put(script, script_file, "600"),
        _put(unit, unit_file, "644"),
        "systemctl daemon-reload || exit 2",
        f"systemctl enable --quiet {unit_name} || exit 2",
        "_since=$(date '+%Y-%m-%d %H:%M:%S')",
        # Stopped first: what answers on its port once it is stopped is another process's.
        f"systemctl stop {unit_name} 2>/dev/null",
        # A unit that failed too often in a row refuses to start until told to forget it.
        f"systemctl reset-failed {unit_name} 2>/dev/null",
    ]
    if step.ready is not None and step.ready.cmd is None:
        taken = f"poseidon: {awaited} answers before {name} starts: another process holds it (another service?)"
        apply.append(f"if {probe}; then {_say(taken)}; exit 1; fi")
    apply += [
        f"systemctl start {unit_name} || {{ {_say(failed)}; _journal; exit 1; }}",
        # The marks of the steps before it as it starts: one that changed since restarts it.
        f"_inputs_now {quote_all(ctx.inputs)} | _put {quote(inputs_file)} 600 || exit 2",
        "_pid=$(_main)",
    ]
    apply.append(
        _await_started(
            step,
            name,
            (probe, awaited),
            alive="_alive",
            fail=lambda message: f"{{ {_say(message)}; _journal; exit 1; }}",
            output="journal",
        )
    )
    apply.append(f'printf \'%s started%s, pid %s\\n\' {quote(unit_name)} "${{_why:+ ($_why)}}" "$_pid"')
    return Script(
        setup=setup,
        check="\n".join(check),
        apply="\n".join(apply),
        ok_reason=f"{unit_name} is running",
        needs_root=True,
        secret=True,  # the script holds the values of its env: and of its command's references
    )


_BUILDERS: dict[str, Callable[..., Script]] = {
    "chdir": chdir,
    "apt": apt,
    "git": git,
    "pip": pip,
    "pip_r": pip_r,
    "nohup": nohup,
    "run": run,
    "service": service,
}


def script_for(
    step: spec.Step, ctx: StepContext, *, secrets: Mapping[str, str] | None = None, content: bytes | None = None
) -> Script:
    """The :class:`Script` of ``step``; ``secrets`` holds the git tokens by variable name,
    ``content`` what a ``file`` step writes.

    Raises :class:`poseidon.shell.BindError` when a value cannot reach its place in a command as data.
    """
    if isinstance(step, FileStep):
        if content is None:
            raise ValueError("a file step needs its content")
        return file(step, ctx, content)
    if isinstance(step, GitStep):
        token = (secrets or {}).get(step.token_env) or None
        return git(step, ctx, token)
    return _BUILDERS[step.kind](step, ctx)


def describe(step: spec.Step, values: Mapping[str, str] | None = None) -> str:
    """A one-line description, whole (a terminal cuts it, not this): the step's ``name``, else
    its kind and main value (a ``nohup``'s process name), with the references ``values`` holds
    substituted (:func:`poseidon.spec.preview`)."""
    if step.name and not isinstance(step, (spec.NohupStep, spec.ServiceStep)):
        text = step.name
    else:
        value = step.name or getattr(step, step.primary)
        words = " ".join(value) if isinstance(value, list) else str(value)
        text = f"{step.kind} {' '.join(words.split())}"
    # One line: a value may hold newlines (a fake line in the progress must not be possible).
    return " ".join(spec.preview(text, values).split()) if values else text


def build(kind: str, **fields: Any) -> spec.Step:
    """A validated step model from keyword arguments, as a playbook would give them."""
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(spec.Step)
    return adapter.validate_python({"kind": kind, **fields})  # type: ignore[no-any-return]


# -- readiness: before the first step on a droplet --------------------------------

#: How long the readiness gate waits for cloud-init and for the dpkg lock, each.
READY_WAIT = 600

# Holds and releases the dpkg locks (in the folder argv[2]) as apt does (fcntl, not
# flock), so it returns once no apt or dpkg run holds them.
_DPKG_LOCK_FREE = (
    "import fcntl, os, sys, time\n"
    "deadline = time.time() + float(sys.argv[1])\n"
    "told = False\n"
    "for path in (os.path.join(sys.argv[2], 'lock-frontend'), os.path.join(sys.argv[2], 'lock')):\n"
    " try:\n  fd = os.open(path, os.O_RDWR)\n"
    " except OSError:\n  continue\n"
    " while True:\n"
    "  try:\n   fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); fcntl.lockf(fd, fcntl.LOCK_UN); break\n"
    "  except OSError:\n"
    "   if not told:\n"
    "    print('poseidon: waiting for the dpkg lock (another apt or dpkg run)', file=sys.stderr, flush=True)\n"
    "    told = True\n"
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
        # Python waits for the lock as apt takes it (fcntl); it starts only when the
        # lock can be taken here (the file is writable: root's, on a droplet) and
        # /proc/locks shows a lock on one of the files' inodes (or cannot tell).
        # The locks are in /var/lib/dpkg; a sandbox droplet has its own (POSEIDON_DPKG_DIR).
        lines += [
            '_dpkg="${POSEIDON_DPKG_DIR:-/var/lib/dpkg}"',
            (
                '_held() { [ -w "$1" ] || return 1; [ -r /proc/locks ] || return 0;'
                ' i=$(stat -c %i "$1" 2>/dev/null) || return 1; grep -q ":$i " /proc/locks; }'
            ),
            'if command -v python3 >/dev/null 2>&1 && { _held "$_dpkg/lock-frontend" || _held "$_dpkg/lock"; }; then',
            f'  python3 -I -c {quote(_DPKG_LOCK_FREE)} {wait} "$_dpkg" || exit 1',
            "fi",
        ]
    return f"sh -c {quote(chr(10).join(lines))}"


#: Lists the droplet's process ids with shell builtins only: cheaper than ``ps`` for "what ran before".
#: The pid and the session of the shell poseidon's steps run from, then the droplet's process ids, on two lines.
PIDS = "echo $$ $(ps -o sid= -p $$) && cd /proc && echo [0-9]*"


def ps_command(arguments: str) -> str:
    """``ps`` with ``arguments`` (``-Af``, ``-Ao %cpu,%mem,user,comm``), each word quoted."""
    return shlex.join(["ps", *shlex.split(arguments)])


def pid_files(paths: Iterable[str]) -> str:
    """Shell text printing the pid each of these files holds (those that exist), one a line."""
    files = " ".join(quote_path(path) for path in paths)
    return f'for f in {files}; do [ -f "$f" ] && head -n 1 -- "$f"; done; true' if files else "true"


def stop_tree(pid: int) -> str:
    """Shell text that ends process ``pid`` and every process under it (TERM).

    For a second Ctrl-C: ``pid`` is the session's shell, under which only the
    step running now is (what earlier steps left running was handed to init);
    the apply lock, held by that shell, goes with it.
    """
    # The whole tree is stopped (STOP) before any of it is told to end: a shell whose command was
    # ended first would otherwise go on to its next command before its own TERM arrived. One ps
    # gives the tree (a step that forks without end cannot outrun one pgrep per process); a
    # second one, once the first tree is stopped, catches what was forked meanwhile.
    return (
        'tree() { ps -e -o pid= -o ppid= | awk -v root="$1" \'{ up[$1] = $2 }\n'
        " END { want[root] = 1; more = 1; while (more) { more = 0; for (p in up)"
        " if (!(p in want) && (up[p] in want)) { want[p] = 1; more = 1 } } for (p in want) print p }'; }\n"
        f"first=$(tree {int(pid)}); kill -STOP $first 2>/dev/null\n"
        f"all=$(tree {int(pid)}); kill -STOP $all 2>/dev/null\n"
        "kill -TERM $first $all 2>/dev/null; kill -CONT $first $all 2>/dev/null\n"
    )


def nohup_status(step: NohupStep, lines: int = 5) -> str:
    """A nohup step's process, read-only: 'STATE<TAB>PID<TAB>UPTIME<TAB>LEFTOVER PIDS' then the end of its log.

    STATE is ``alive`` when the recorded identity runs (the pid is the group's
    leader: killing it ends the app); LEFTOVER PIDS are processes of a dead
    one that still run (they may hold its port).
    """
    name = step.process_name()
    script = (
        f"{_PROCESS}\n"
        f"_pidfile=.poseidon/{quote(name + '.pid')} _state=.poseidon/{quote(name + '.state')}\n"
        'if _running; then state=alive; up=$(ps -o etime= -p "$_pid" | tr -d " "); left=;'
        ' else state=dead; up=-; left=$(_members | tr "\\n" " "); fi\n'
        'printf \'%s\\t%s\\t%s\\t%s\\n\' "$state" "${_pid:--}" "$up" "${left% }"\n'
        f"tail -n {int(lines)} {quote_path(step.log_path())} 2>/dev/null; exit 0"
    )
    return f"sh -c {quote(script)}"


def service_status(step: ServiceStep, lines: int = 5) -> str:
    """A service step's unit, read-only, in :func:`nohup_status`'s form: 'STATE<TAB>PID<TAB>UPTIME<TAB>'
    then the end of its journal (``sudo -n`` reads it for a user who is not root)."""
    unit = step.unit()
    script = (
        "if ! command -v systemctl >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then\n"
        "  printf 'dead\\t-\\t-\\t\\n'; echo 'this droplet does not run systemd'; exit 0; fi\n"
        f"pid=$(systemctl show -p MainPID --value {unit} 2>/dev/null)\n"
        f'if systemctl is-active --quiet {unit} && [ "${{pid:-0}}" != 0 ]; then\n'
        '  state=alive; up=$(ps -o etime= -p "$pid" | tr -d " "); else state=dead; pid=-; up=-; fi\n'
        'printf \'%s\\t%s\\t%s\\t\\n\' "$state" "$pid" "$up"\n'
        f"set -- journalctl -u {unit} -n {int(lines)} --no-pager -o cat\n"
        '{ [ "$(id -u)" -eq 0 ] && "$@" || sudo -n "$@"; } 2>/dev/null; exit 0'
    )
    return f"sh -c {quote(script)}"


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
) -> Rendered:
    """The single remote command that checks, then (in ``apply`` mode) applies.

    Its last line of stdout is ``::poseidon:ok``, ``::poseidon:changed`` or
    ``::poseidon:would-change``, then a space and why when the check said;
    any other ending is a failure, told by the exit status.

    The step's text is the command's input (``sh -c 'eval "$(cat)"'``), so
    ``env:`` values and secrets stay out of every command line. Only an
    ``interactive`` step (a terminal may have to answer sudo's password
    prompt) without secrets or ``env:`` carries its text as an argument.
    """
    lines = [f"export {key}={quote(value)}" for key, value in (env or {}).items()]
    if ctx.mark or ctx.inputs:
        lines.append(_MARKS_DIR)
    if script.setup:
        lines.append(script.setup)
    lines.append(f"_check() {{\n{script.check or 'return 1'}\n}}")
    if script.check_only:
        lines.append(
            f"_check; rc=$?\n"
            f"if [ $rc -eq 0 ]; then printf '\\n{MARKER}ok\\n'; exit 0; fi\n"
            f'echo "poseidon: the check failed (exit $rc)" >&2; exit $rc'
        )
    else:
        lines.append(
            f"_why=\n_check; rc=$?\n"
            f"if [ $rc -eq 0 ]; then printf '\\n{MARKER}ok\\n'; exit 0; fi\n"
            f"if [ $rc -ne 1 ]; then [ $rc -eq {EXPLAINED} ] ||"
            ' echo "poseidon: the check failed (exit $rc)" >&2; exit $rc; fi'
        )
        if mode == "check":
            lines.append(f"printf '\\n{MARKER}would-change %s\\n' \"$_why\"; exit 0")
        else:
            lines.append(f"_apply() {{\n{script.apply}\n}}")
            lines.append("_apply || exit $?" + (f"\n{_write_mark(ctx.mark)}" if ctx.mark else ""))
            lines.append(f"printf '\\n{MARKER}changed %s\\n' \"$_why\"")
    text = "\n".join(lines)
    argv = interactive and not script.secret and not env
    command = f"sh -c {quote(text)}" if argv else "sh -c 'eval \"$(cat)\"'"
    if uses_sudo(script, ctx, sudo):
        command = f"sudo {'' if argv else '-n '}-- {command}"
    if timeout:
        command = f"timeout -k {KILL_AFTER} {timeout:g} {command}"
    return Rendered(command, None if argv else text)


def uses_sudo(script: Script, ctx: StepContext, sudo: bool = False) -> bool:
    """Whether the rendered command runs under ``sudo``: asked for, or needed by a user who is not root."""
    return sudo or (script.needs_root and not ctx.is_root)


def parse_status(stdout: str) -> tuple[str | None, str, str]:
    """Split a rendered step's stdout into its status marker, why (may be empty) and the step's own output."""
    text = stdout.rstrip("\n")
    head, _, last = text.rpartition("\n")
    if last.startswith(MARKER):
        status, _, why = last[len(MARKER) :].partition(" ")
        return status, why.strip(), head.rstrip("\n")
    return None, "", stdout
