"""Run a playbook: resolve every droplet, then replay the steps on each, in parallel.

The phases are explicit: the playbook is already validated (offline) →
:func:`resolve` every droplet through the API → per droplet, in parallel:
connect → check and apply each step in order → snapshot → close. A failed
step stops its own droplet only; an exception in one droplet's worker becomes
that droplet's error and never cancels the others.

The executor is given :class:`Settings` (the API's URL and token, the SSH
login); where they point (DigitalOcean or a sandbox) is not its business.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poseidon import api, dns, errors, files, hostkeys, spec, steps
from poseidon.droplet import Droplet
from poseidon.errors import (
    APIConnectionError,
    APIError,
    DropletBusyError,
    NotFoundError,
    NotReadyError,
    PartlyCreatedError,
    PoseidonError,
    Problem,
    ResolveError,
    SSHConnectError,
    SSHError,
    SSHUnresponsiveError,
    SpecError,
    UsageError,
)
from poseidon.masker import Masker
from poseidon.settings import Settings
from poseidon.results import DropletRun, ProcessStatus, RunResult, StepResult
from poseidon.ssh import SESSIONS_ARGS, TOP_ARGS, SSHClient, ps_frames

__all__ = [
    "RunLog",
    "RunOptions",
    "Target",
    "apply",
    "check_creates",
    "create_missing",
    "resolve",
    "resume_points",
    "status",
    "step_labels",
]

#: The reason of a step a plan could not check because an earlier step would change the droplet first.
PREDICTED = "after the changes above (not checked)"
#: The reason of a step --resume skips because an earlier run did it.
RESUMED = "done in the run resumed"
#: Why a step and its droplet stopped when a second Ctrl-C closed the connection.
ABORTED = "interrupted by a second Ctrl-C: the step running was stopped and the connection closed"
#: The status of a step ``--resume`` did not run again: an earlier run did it.
DONE_EARLIER = "done-earlier"

#: Called as each step ends: ``(droplet_name, step_result)``.
Progress = Callable[[str, StepResult], None]
#: Called with what a droplet waits for before its first step: ``(droplet_name, text)``.
Notice = Callable[[str, str], None]


@dataclass(frozen=True)
class Target:
    """A resolved droplet with the login options its playbook entry gave.

    ``droplet`` is ``None`` for a droplet that does not exist yet and that
    ``create`` says how to make.
    """

    name: str
    droplet: Droplet | None
    user: str | None = None
    port: int | None = None
    create: spec.CreateDroplet | None = None
    #: The A record the playbook keeps pointing at it.
    dns: spec.DNSRecord | None = None

    @property
    def identity(self) -> tuple[int | None, str | None]:
        return (self.droplet.id, self.droplet.ip_address) if self.droplet else (None, None)


@dataclass(frozen=True)
class RunOptions:
    """How to run: what ``apply``, ``plan`` and their flags ask for."""

    mode: steps.Mode = "apply"
    #: Only these droplet names (``--limit``).
    limit: tuple[str, ...] | None = None
    #: Droplets run at once (``--forks``).
    forks: int = 20
    #: The first step (0-based) to run on every droplet (``--start-at``).
    start_at: int = 0
    #: Per droplet name, the first step to run (``--resume``); overrides ``start_at``.
    resume: Mapping[str, int] | None = None
    #: Stop launching steps anywhere after the first failure (``--fail-fast``).
    fail_fast: bool = False
    #: Run the I-th (1-based) of N equal slices of the resolved droplets (``--shard I/N``).
    shard: tuple[int, int] | None = None
    #: Name → (id, IPv4) a plan recorded: refuse when droplets resolve otherwise.
    expect: Mapping[str, tuple[int | None, str | None]] | None = None
    #: Append every step's result to this JSON Lines file as it ends.
    run_log: Path | None = None
    #: Seconds to wait for a droplet's SSH login.
    connect_timeout: float = 15.0
    #: How long to keep trying a droplet whose SSH port does not answer yet (booting).
    ready_timeout: float = 60.0


# -- resolve ------------------------------------------------------------------


def resolve(playbook: spec.Playbook, client: api.Client) -> list[Target]:
    """Every droplet the playbook names, in order, once each; every missing one reported at once.

    A named droplet that does not exist but has ``create:`` becomes a target
    without a droplet: :func:`create_missing` makes it.
    """
    targets: dict[int | str, Target] = {}
    problems: list[str] = []
    found_by_name = client.droplets.find_many(ref.name for ref in playbook.droplets if isinstance(ref, spec.NamedDroplet))
    for ref in playbook.droplets:
        try:
            if isinstance(ref, spec.TaggedDroplets):
                found = client.droplets.list(tag=ref.tag)
                if not found:
                    raise ResolveError(f"no droplet carries the tag {ref.tag!r}")
                refused = [f"{problem} (droplet {d.id}, tag {ref.tag!r})" for d in found if (problem := spec.droplet_name_problem(d.name))]
                if refused:
                    raise ResolveError("; ".join(refused))
            else:
                found = found_by_name[ref.name]
                if len(found) != 1 and not (not found and ref.create):
                    client.droplets.by_name(ref.name)  # raises the detailed "none" or "several" error
                if not found:
                    targets.setdefault(ref.name, Target(ref.name, None, ref.user, ref.port, ref.create, ref.dns))
        except ResolveError as exc:
            problems.append(str(exc))
            continue
        record = ref.dns if isinstance(ref, spec.NamedDroplet) else None
        for droplet in found:
            targets.setdefault(droplet.id, Target(droplet.name, droplet, ref.user, ref.port, dns=record))
    names = [t.name for t in targets.values()]
    twins = sorted({n for n in names if names.count(n) > 1})
    if twins:
        problems.append(f"several droplets are named {', '.join(map(repr, twins))}: give them unique names")
    if problems:
        raise ResolveError("; ".join(problems))
    return list(targets.values())


def check_creates(targets: list[Target], client: api.Client) -> list[dict[str, Any]]:
    """Refuse, before anything is created, a ``create:`` the API would refuse: a region, size,
    image or SSH key it does not have, or a size the region does not offer. Raises
    :class:`SpecError` locating each field, with the API's valid choices nearest to it.

    Returns the sizes the API listed (their prices are the report's); none when nothing is to be created.
    """
    creates = [(t.name, t.create) for t in targets if t.droplet is None and t.create is not None]
    if not creates:
        return []
    regions = {str(r["slug"]): r for r in client.regions.list()}
    listed = client.sizes.list()
    sizes = {str(s["slug"]): s for s in listed}
    images: dict[str | int, str] = {}  # per image asked for, why it cannot be used ("" if it can)
    problems: list[Problem] = []

    def refuse(name: str, create: spec.CreateDroplet, field: str, message: str) -> None:
        where = create.source(field) or spec.Source("<playbook>", 0, 0, f"{name}.create.{field}")
        problems.append(Problem(where.file, where.line, where.column, where.path, message))

    for name, create in creates:
        if create.region not in regions:
            refuse(name, create, "region", f"{create.region!r} is not a region{errors.did_you_mean(create.region, regions)}")
        elif not regions[create.region].get("available", True):
            refuse(name, create, "region", f"{create.region!r} takes no new droplets now")
        if create.size not in sizes:
            refuse(name, create, "size", f"{create.size!r} is not a droplet size{errors.did_you_mean(create.size, sizes)}")
        elif create.region in regions and create.region not in sizes[create.size].get("regions", [create.region]):
            offered = ", ".join(sorted(sizes[create.size].get("regions", [])))
            refuse(name, create, "size", f"{create.size!r} is not offered in {create.region} (it is in: {offered})")
        if create.image not in images:
            images[create.image] = _image_problem(client, create.image)
        if images[create.image]:
            refuse(name, create, "image", images[create.image])
        try:
            client.keys._identifiers(create.ssh_keys)
        except ResolveError as exc:
            refuse(name, create, "ssh_keys", str(exc))
    if problems:
        raise SpecError(problems)
    return listed


def _image_problem(client: api.Client, image: str | int) -> str:
    """Why ``image`` cannot make a droplet (it does not exist), or ``""``."""
    try:
        client.images.get(image)
        return ""
    except NotFoundError:
        pass
    if isinstance(image, int):
        return f"no image has the id {image}"
    slugs = [str(i["slug"]) for i in client.images.list(type="distribution") if i.get("slug")]
    return f"{image!r} is not an image slug{errors.did_you_mean(image, slugs)}"


def create_missing(
    targets: list[Target],
    client: api.Client,
    *,
    pin_host_keys: bool = True,
    known_hosts: str | None = None,
    timeout: float = 300.0,
    owner_tag: str | None = None,
    notice: Notice | None = None,
) -> list[Target]:
    """Create the droplets that do not exist yet, all at once, and wait until they are active.

    Each carries ``owner_tag`` too (the playbook's, :meth:`spec.Playbook.owner_tag`):
    ``destroy`` deletes only droplets that carry it.

    With ``pin_host_keys``, each new droplet gets a host key generated here,
    handed over in its cloud-init user data and recorded under the droplet's
    id before it boots, so even the first connection is verified. The user
    data (it holds the private key) is never logged or reported.
    """
    missing = [t for t in targets if t.droplet is None and t.create is not None]
    requests: dict[str, tuple[dict[str, Any], str | None]] = {}
    for target in missing:  # every user data is checked before anything is created
        assert target.create is not None
        options = target.create.model_dump()
        if owner_tag and owner_tag not in options["tags"]:
            options["tags"] = [*options["tags"], owner_tag]
        public = None
        if pin_host_keys:
            options["user_data"], public = hostkeys.pinned_user_data(options.pop("user_data", None))
        requests[target.name] = (options, public)
    made: dict[str, Droplet] = {}
    started = time.monotonic()

    def say(name: str, text: str) -> None:
        if notice is not None:
            notice(name, text)

    try:
        for name, (options, public) in requests.items():
            say(name, f"creating it ({options['region']}, {options['size']}, {options['image']})")
            made[name] = client.droplets.create(name, wait=False, **options)
            if public:
                # No address yet: the first connection adds it beside the alias.
                hostkeys.record(hostkeys.known_hosts_path(known_hosts), [hostkeys.alias(made[name].id)], public)
        if made:
            for name in made:
                say(name, f"waiting until it is active (at most {timeout:.0f} s)")

            def active(droplet: Droplet) -> None:
                say(droplet.name, f"active: id {droplet.id}, {droplet.ip_address}, after {time.monotonic() - started:.0f} s")

            listed = client.droplets.wait(list(made.values()), timeout=timeout, on_ready=active)
            ready = {d.id: d for d in listed}
            made = {name: ready[d.id] for name, d in made.items()}
    except (APIError, APIConnectionError) as exc:
        if not made:
            raise
        # Droplets now exist that no report will show: the error names them.
        raise PartlyCreatedError(exc, [(name, d.id) for name, d in made.items()]) from exc
    return [
        Target(t.name, made[t.name], t.user, t.port, t.create, t.dns) if t.name in made and t.droplet is None else t
        for t in targets
    ]


def _check_expected(targets: list[Target], expect: Mapping[str, tuple[int | None, str | None]]) -> None:
    """Refuse when names resolve otherwise than a plan saw (renamed, recreated, added, duplicated)."""
    now = {t.name: t.identity for t in targets}
    problems = []
    for name in sorted(set(expect) | set(now)):
        was, found = expect.get(name), now.get(name)
        if was == found:
            continue
        before = _identity_text(was)
        after = _identity_text(found)
        problems.append(f"{name} was {before} when planned, is {after} now")
    if problems:
        raise ResolveError("the droplets changed since the plan: " + "; ".join(problems) + "; plan again")


def _identity_text(identity: tuple[int | None, str | None] | None) -> str:
    if identity is None:
        return "not in the playbook"
    droplet_id, address = identity
    return f"{droplet_id} at {address or 'no address'}" if droplet_id else "still to be created"


def _limit(targets: list[Target], patterns: Iterable[str] | None) -> list[Target]:
    """``--limit``: droplet names or shell-style patterns (``web-*``, ``db-[12]``); each must match one."""
    if patterns is None:
        return targets
    names = [t.name for t in targets]
    wanted: set[str] = set()
    for pattern in patterns:
        matched = fnmatch.filter(names, pattern)
        if not matched:
            raise UsageError(f"--limit {pattern}: no droplet of the playbook matches{errors.did_you_mean(pattern, names)}")
        wanted.update(matched)
    return [t for t in targets if t.name in wanted]


# -- variables and secrets ----------------------------------------------------


def _environment(playbook: spec.Playbook) -> dict[str, str]:
    """The variables the steps read with ``${env:NAME}``; an unset one stops the run before it starts."""
    names = playbook.env_names()
    missing = [n for n in names if n not in os.environ]
    if missing:
        raise UsageError(f"the playbook reads environment variables that are not set: {', '.join(missing)}")
    return {n: os.environ[n] for n in names}


def _secrets(playbook: spec.Playbook) -> dict[str, str]:
    """The git tokens the steps may need, read from this machine's environment."""
    names = {s.token_env for s in playbook.steps if isinstance(s, spec.GitStep)}
    return {n: os.environ[n] for n in names if os.environ.get(n)}


# -- one droplet --------------------------------------------------------------


def _connect(
    target: Target,
    settings: Settings,
    options: RunOptions,
    notice: Notice | None,
    stop: threading.Event | None = None,
) -> SSHClient:
    """Connect, retrying with backoff while the SSH port does not answer (a droplet still booting).

    The playbook's ``user``/``port`` win over the settings', unless the settings' login is
    pinned (a sandbox has one user and one port)."""
    pinned = settings.login_pinned
    deadline = time.monotonic() + options.ready_timeout
    delay = 1.0
    assert target.droplet is not None
    while True:
        ssh = target.droplet.connect(
            user=settings.ssh_user if pinned else target.user or settings.ssh_user,
            port=settings.ssh_port if pinned else target.port or settings.ssh_port,
            key_filename=settings.ssh_key,
            known_hosts=settings.known_hosts,
            connect_timeout=options.connect_timeout,
        )
        if notice:  # first contact, or a new droplet on a reused address
            ssh.on_notice = lambda text, name=target.name: notice(name, text)
        try:
            return ssh.open()
        except SSHConnectError as exc:
            if time.monotonic() + delay > deadline or (stop is not None and stop.is_set()):
                raise
            if notice:
                notice(target.droplet.name, f"waiting for SSH ({exc}); again in {delay:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _lock(ssh: SSHClient, run: DropletRun, notice: Notice | None) -> None:
    """Hold the droplet's apply lock for as long as the connection lives; refuse when another run has it."""
    holder = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
    answer, _, rest = ssh.lock(holder).partition("\n")
    if answer.strip() == steps.BUSY:
        other = rest.strip() or "an unknown run"
        raise DropletBusyError(f"{run.name} is being provisioned by another poseidon run ({other}); try again when it ends")
    if answer.strip() != steps.LOCKED and notice:
        why = answer.strip().removeprefix("poseidon-lock: ") or "no answer"
        notice(run.name, f"no apply lock on the droplet ({why}): this run is not protected from another at the same time")


@dataclass(frozen=True)
class _Before:
    """A droplet as the first step found it: its process ids, and the session of poseidon's shell."""

    pids: frozenset[int]
    session: int | None


def _started(before: _Before | None, ps: Any, sessions: Any, nohups: set[int]) -> Any:
    """Rows of the final ``ps`` whose process the run started (or restarted): not there before
    the first step, and in poseidon's session or in the session of one of this playbook's
    ``nohup`` processes on this droplet (``nohups``: the pids their pid files hold; each leads a
    session of its own). Processes others started meanwhile (a cron job, other droplets'
    programs on a sandbox's shared machine) are not."""
    if before is None or ps is None or sessions is None or not {"PID", "PPID"} <= set(ps.columns):
        return None
    if not {"PID", "SID"} <= set(sessions.columns):
        return None
    leaders = set(nohups)
    if before.session is not None:
        leaders.add(before.session)
    ours = set(sessions.loc[sessions["SID"].isin(leaders), "PID"]) - before.pids
    parents = dict(zip(ps["PID"], ps["PPID"]))
    # Still under poseidon's shell: the snapshot being taken. A process a step left running was
    # handed to init when its step ended.
    ours = {pid for pid in ours if not _descends(pid, before.session, parents)}
    return ps[ps["PID"].isin(ours)].reset_index(drop=True)


def _descends(pid: int, ancestor: int | None, parents: Mapping[int, int]) -> bool:
    seen: set[int] = set()
    while pid in parents and pid not in seen:
        seen.add(pid)
        pid = parents[pid]
        if pid == ancestor:
            return True
    return False


def _ready(ssh: SSHClient, run: DropletRun, playbook: spec.Playbook, notice: Notice | None) -> _Before | None:
    """The gate before the first step: cloud-init finished, the dpkg lock free (when apt runs).

    Returns the droplet's process ids right after it and the session of
    poseidon's shell, to tell which processes the run started; the shell's pid
    goes to ``ssh.shell_pid`` when the lock did not give it (a second Ctrl-C
    stops what runs under it). All travel in one round trip.
    """
    dpkg = any(isinstance(step, spec.AptStep) for step in playbook.steps)
    result, *snapshot = ssh.run_pipelined([steps.readiness(dpkg=dpkg), steps.PIDS])
    if notice:
        for line in result.stderr.splitlines():
            notice(run.name, line.removeprefix("poseidon: "))
    if result.exited != 0:
        tail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.exited}"]
        raise NotReadyError(f"{run.name} is not ready: {tail[0].removeprefix('poseidon: ')}")
    if not snapshot or snapshot[0].exited != 0:
        return None
    shell, _, pids = snapshot[0].stdout.partition("\n")
    numbers = [int(word) if word.isdecimal() else None for word in shell.split()] + [None, None]
    if ssh.shell_pid is None:  # a plan takes no lock, whose answer names the shell otherwise
        ssh.shell_pid = numbers[0]
    return _Before(frozenset(int(pid) for pid in pids.split() if pid.isdecimal()), numbers[1])


def _snapshots(
    ssh: SSHClient, run: DropletRun, before: _Before | None, playbook: spec.Playbook, masker: Masker, pid_files: list[str]
) -> None:
    """The report's ``ps`` and ``top`` of the droplet, each process's session and the pids in the
    ``nohup`` steps' pid files (``pid_files``), in one round trip."""
    wanted = [name for name in ("ps", "top") if getattr(playbook.report, name)]
    if not wanted:
        return
    arguments = {"ps": "-Af", "top": TOP_ARGS, "sessions": SESSIONS_ARGS}
    if "ps" in wanted:
        wanted.append("sessions")
    args = [arguments[name] for name in wanted]
    *results, leaders = ssh.run_pipelined([*map(steps.ps_command, args), steps.pid_files(pid_files)])
    frames = dict(zip(wanted, ps_frames(args, results)))
    if "ps" in frames:
        run.ps = masker.frame(frames["ps"])
        nohups = {int(pid) for pid in leaders.stdout.split() if pid.isdecimal()}
        run.started_processes = _started(before, run.ps, frames["sessions"], nohups)
    if "top" in frames:
        run.top = masker.frame(frames["top"])


@dataclass(frozen=True)
class _Context:
    """What every droplet's worker shares."""

    playbook: spec.Playbook
    environ: dict[str, str]
    secrets: dict[str, str]
    settings: Settings
    options: RunOptions
    masker: Masker
    #: Each step's label (:func:`step_labels`).
    labels: list[str]
    progress: Progress | None
    notice: Notice | None
    log: RunLog | None
    #: Set on the first failure with --fail-fast, or on Ctrl-C: no new step starts anywhere.
    stop: threading.Event = field(default_factory=threading.Event)
    interrupted: threading.Event = field(default_factory=threading.Event)
    #: Set on a second Ctrl-C: the connections are closed under the running steps.
    aborted: threading.Event = field(default_factory=threading.Event)
    #: Per droplet, what it is doing and since when; and its open connection.
    activity: dict[str, tuple[str, float]] = field(default_factory=dict)
    connections: dict[str, SSHClient] = field(default_factory=dict)
    #: Per droplet, the pid files of the ``nohup`` steps run there (for the processes the run started).
    pid_files: dict[str, list[str]] = field(default_factory=dict)

    def doing(self, droplet: str, what: str) -> None:
        self.activity[droplet] = (what, time.monotonic())

    @contextmanager
    def holding(self, droplet: str, ssh: SSHClient) -> Iterator[None]:
        """While the block runs, a second Ctrl-C may close ``ssh`` (:meth:`abort`)."""
        self.connections[droplet] = ssh
        try:
            yield
        finally:
            self.connections.pop(droplet, None)
            self.activity.pop(droplet, None)

    def waiting_for(self) -> list[tuple[str, str]]:
        """What each droplet still busy is doing, for the first Ctrl-C's notice."""
        now = time.monotonic()
        return [(name, f"{what}, for {now - since:.0f} s") for name, (what, since) in sorted(self.activity.items())]

    def abort(self) -> None:
        """A second Ctrl-C: on every droplet, stop the step running (its processes, and poseidon's
        shell with the apply lock), then close the connection; those steps end as failed. All
        droplets at once, within :data:`STOP_PATIENCE` seconds however many they are."""
        self.aborted.set()
        stoppers = [
            threading.Thread(target=_stop_running, args=(ssh,), daemon=True) for ssh in list(self.connections.values())
        ]
        for stopper in stoppers:
            stopper.start()
        deadline = time.monotonic() + STOP_PATIENCE + 1
        for stopper in stoppers:
            stopper.join(max(0.0, deadline - time.monotonic()))

    @property
    def mode(self) -> steps.Mode:
        return self.options.mode

    def first_step(self, droplet: str) -> int:
        if self.options.resume is not None:
            return self.options.resume.get(droplet, 0)
        return self.options.start_at

    def label(self, index: int) -> str:
        """Step ``index`` as reports show it (:func:`step_labels`)."""
        return self.labels[index]

    def report(self, droplet: str, result: StepResult) -> None:
        if self.log:
            self.log.step(droplet, result)
        if self.progress:
            self.progress(droplet, result)
        if result.status == "failed" and self.options.fail_fast:
            self.stop.set()


#: Seconds a second Ctrl-C waits, per droplet, for the running step to be stopped there.
STOP_PATIENCE = 5.0


def _stop_running(ssh: SSHClient) -> None:
    try:
        if ssh.shell_pid is not None:
            ssh.stop_tree(ssh.shell_pid, timeout=STOP_PATIENCE)
    except Exception:  # noqa: BLE001 - a droplet that does not answer: its connection closes all the same
        pass
    try:
        ssh.close()
    except Exception:  # noqa: BLE001 - closing what is already broken
        pass


def _run_droplet(target: Target, ctx: _Context) -> DropletRun:
    droplet, playbook = target.droplet, ctx.playbook
    if ctx.stop.is_set():  # queued behind --forks when the run was stopped: never connect
        return _finish(DropletRun(target.name, *target.identity), ctx)
    if droplet is None:
        # Only a plan gets here: apply creates missing droplets before the workers start.
        run = DropletRun(target.name, created=True)
        for index, step in enumerate(playbook.steps):
            reason = "the droplet will be created first"
            run.steps.append(StepResult(index, step.kind, ctx.label(index), "would-change", reason=reason))
        return run
    run = DropletRun(droplet.name, droplet.id, droplet.ip_address, created=target.create is not None)
    try:
        values = spec.substitutions(playbook, droplet=droplet, environ=ctx.environ)
        conflicts = spec.process_conflicts(
            (i, spec.expand(s, values)) for i, s in enumerate(playbook.steps) if isinstance(s, spec.NohupStep)
        )
        if conflicts:  # names made of values: the same on this droplet
            raise UsageError("; ".join(conflicts))
        ctx.doing(run.name, "connecting")
        with _connect(target, ctx.settings, ctx.options, ctx.notice, ctx.stop) as ssh, ctx.holding(run.name, ssh):
            if ctx.mode == "apply":
                _lock(ssh, run, ctx.notice)  # held until the connection closes
            ctx.doing(run.name, "waiting until it is ready")
            before = _ready(ssh, run, playbook, ctx.notice)
            if not _run_steps(ssh, run, values, ctx):
                return _finish(run, ctx)  # the connection is gone: no snapshots
            if ctx.aborted.is_set() or ctx.mode == "check":  # a plan reports what would change, not processes
                return _finish(run, ctx)
            ctx.doing(run.name, "taking snapshots")
            _snapshots(ssh, run, before, playbook, ctx.masker, ctx.pid_files.get(run.name, []))
    except Exception as exc:  # noqa: BLE001 - one droplet's failure (or bug) must not cancel the others
        if ctx.aborted.is_set():
            # A second Ctrl-C closed the connection under whatever ran: that is the whole story.
            run.error = ABORTED
        elif isinstance(exc, SSHError):
            run.error, run.unreachable = ctx.masker.text(str(exc)), True
        elif isinstance(exc, PoseidonError):
            run.error = ctx.masker.text(str(exc))
        else:
            run.error = ctx.masker.text(f"{type(exc).__name__}: {exc}")
    return _finish(run, ctx)


def _finish(run: DropletRun, ctx: _Context) -> DropletRun:
    reason = ""
    if ctx.stop.is_set():
        reason = "stopped: interrupted" if ctx.interrupted.is_set() else "stopped by --fail-fast"
    _skip_rest(run, ctx, reason)
    return run


def _before_the_start(step: spec.Step, resuming: bool) -> spec.Step | None:
    """What a step before --start-at or the --resume point still runs as; ``None``: it is skipped.

    ``chdir`` runs: it changes nothing, and later paths depend on it. On
    --resume, a ``nohup`` runs as one that does not restart: the process it
    started may have died since (the droplet rebooted) and starts again; a
    running one is left alone unless what it runs changed (``restart: always``
    counts as ``on-change`` there).
    """
    if step.kind == "chdir":
        return step
    if resuming and isinstance(step, spec.NohupStep):
        return step.model_copy(update={"restart": "on-change"}) if step.restart == "always" else step
    return None


def _run_steps(ssh: SSHClient, run: DropletRun, values: dict[str, str], ctx: _Context) -> bool:
    """Run the steps in order; return ``False`` when the connection was lost (that step failed)."""
    playbook, mask = ctx.playbook, ctx.masker.text
    first = ctx.first_step(run.name)
    for index, raw in enumerate(playbook.steps):
        if ctx.stop.is_set():
            return True  # _finish says why
        kept = _before_the_start(raw, ctx.options.resume is not None) if index < first else raw
        if kept is None:
            ssh.pass_step(spec.expand(raw, values))  # a later nohup still sees what it changed
            if ctx.options.resume is not None:
                skipped = StepResult(index, raw.kind, ctx.label(index), DONE_EARLIER, reason=RESUMED)
            else:
                skipped = StepResult(index, raw.kind, ctx.label(index), "skipped", reason="before --start-at")
            run.steps.append(skipped)
            if ctx.log:
                ctx.log.step(run.name, skipped)
            continue
        step = spec.expand(kept, values)
        ctx.doing(run.name, f"step {index + 1} ({ctx.label(index)})")
        try:
            outcome = ssh.run_step(step, mode=ctx.mode, secrets=ctx.secrets, values=values)
        except SSHError as exc:
            if ctx.aborted.is_set():  # a second Ctrl-C closed the connection
                lost = StepResult(index, step.kind, ctx.label(index), "failed", reason=ABORTED, exited=-1)
                run.error = ABORTED
            else:
                # The connection dropped (a reboot, a network cut) or the droplet froze during the
                # step: the step failed. A frozen droplet is unreachable for the rest of the run.
                lost = StepResult(index, step.kind, ctx.label(index), "failed", stderr=mask(str(exc)), exited=-1)
                if isinstance(exc, SSHUnresponsiveError):
                    run.error, run.unreachable = mask(str(exc)), True
            run.steps.append(lost)
            ctx.report(run.name, lost)
            return False
        result = StepResult(
            index=index,
            kind=step.kind,
            label=ctx.label(index),
            status=outcome.status,
            duration=outcome.duration,
            stdout=mask(outcome.stdout),
            stderr=mask(outcome.stderr),
            exited=outcome.exited,
            reason=mask(outcome.reason),
        )
        if ctx.aborted.is_set() and result.status == "failed":  # it ended as a second Ctrl-C stopped it
            result.reason, run.error = ABORTED, ABORTED
        if isinstance(step, spec.NohupStep):
            where = ssh.cwd or "~"
            ctx.pid_files.setdefault(run.name, []).append(f"{where}/.poseidon/{step.process_name()}.pid")
        if ctx.mode == "check" and result.status == "ok" and _restarts_after(step, run):
            # Its process runs as it should now, but an earlier step will change what it runs.
            result.status, result.reason = "would-change", "would restart: an earlier step would change first"
        if ctx.mode == "check" and result.status == "failed" and _would_change_before(run):
            # The droplet is not yet as this step expects (its directory, its
            # venv…): an earlier step would make it so. Say that, and stop predicting.
            result.status, result.reason = "would-change", PREDICTED
            run.steps.append(result)
            ctx.report(run.name, result)
            _predict_rest(run, ctx)
            return True
        run.steps.append(result)
        ctx.report(run.name, result)
        if result.status == "failed":
            return True
    return True


def _would_change_before(run: DropletRun) -> bool:
    return any(s.status == "would-change" for s in run.steps)


def _restarts_after(step: spec.Step, run: DropletRun) -> bool:
    """Whether ``step`` is a nohup that an earlier step's coming change would restart."""
    return isinstance(step, spec.NohupStep) and step.restart == "on-change" and _would_change_before(run)


def _predict_rest(run: DropletRun, ctx: _Context) -> None:
    for index in range(len(run.steps), len(ctx.playbook.steps)):
        step = ctx.playbook.steps[index]
        run.steps.append(StepResult(index, step.kind, ctx.label(index), "would-change", reason=PREDICTED))


def _skip_rest(run: DropletRun, ctx: _Context, reason: str = "") -> None:
    """Mark the steps that never ran as skipped, so every droplet reports every step."""
    for index in range(len(run.steps), len(ctx.playbook.steps)):
        step = ctx.playbook.steps[index]
        run.steps.append(StepResult(index, step.kind, ctx.label(index), "skipped", reason=reason))


# -- the run ------------------------------------------------------------------


def apply(
    playbook: spec.Playbook | str | os.PathLike[str],
    *,
    path: str | None = None,
    settings: Settings | None = None,
    options: RunOptions | None = None,
    progress: Progress | None = None,
    notice: Notice | None = None,
    client: api.Client | None = None,
) -> RunResult:
    """Resolve the playbook's droplets and run its steps on each; return what happened.

    Raises before any SSH connection when a droplet cannot be resolved
    (:class:`ResolveError`), an ``${env:…}`` is unset, ``limit`` names an
    unknown droplet or ``start_at`` no step (:class:`UsageError`), droplets
    resolve otherwise than a plan's ``expect`` (:class:`ResolveError`), or the
    API fails (:class:`APIError`). Ctrl-C stops launching steps, lets running
    ones end, and returns what was done with ``interrupted`` set.

    ``playbook`` is a path (loaded, and refused located as ``validate`` would),
    or a :class:`spec.Playbook` with ``path`` naming its file for reports.
    """
    if not isinstance(playbook, spec.Playbook):
        path = path or os.fspath(playbook)
        playbook = spec.load(playbook)
    path = path or "<playbook>"
    settings = settings if settings is not None else Settings.from_environ()
    options = options or RunOptions()
    if not 0 <= options.start_at < max(1, len(playbook.steps)):
        raise UsageError(f"there is no step {options.start_at + 1}: the playbook has {len(playbook.steps)}")
    started = time.time()
    clock = time.monotonic()
    environ = _environment(playbook)
    secrets = _secrets(playbook)
    client = client or api.connect(settings=settings)
    targets = _shard(_limit(resolve(playbook, client), options.limit), options.shard)
    if options.expect is not None:
        _check_expected(targets, options.expect)
    sizes = check_creates(targets, client)
    result = RunResult(playbook=path, name=playbook.name, mode=options.mode, started=started)
    masker = _masker(playbook, environ, secrets, settings, client)
    # The log first: a run that cannot record itself must not create droplets.
    log = RunLog.start(options.run_log, result, [t.name for t in targets], options.resume) if options.run_log else None
    try:
        if options.mode == "apply":
            targets = create_missing(
                targets,
                client,
                pin_host_keys=settings.pin_host_keys,
                known_hosts=settings.known_hosts,
                owner_tag=playbook.owner_tag(path),
                notice=notice,
            )
        # The records first: the name answers by the time the steps have started the app.
        wanted = [(t.name, t.dns, t.droplet.ip_address if t.droplet else None) for t in targets if t.dns]
        records = dns.sync(wanted, client, apply=options.mode == "apply")
        labels = step_labels(playbook, environ, masker)
        context = _Context(playbook, environ, secrets, settings, options, masker, labels, progress, notice, log)
        result.droplets = _run_all(targets, context, result)
        prices = _prices(targets, sizes)
        for run in result.droplets:
            run.dns = records.get(run.name)
            run.price_monthly, run.price_hourly = prices.get(run.name, (None, None))
    finally:
        if log:
            log.close()
            result.run_log, result.run_log_error = str(log.path), log.error
    result.duration = time.monotonic() - clock
    return result


def _prices(targets: list[Target], listed: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Per droplet created (or to be), its size's monthly and hourly price, from the sizes
    :func:`check_creates` listed (no second request)."""
    sizes = {t.name: t.create.size for t in targets if t.create is not None}
    if not sizes:
        return {}
    try:
        known = {str(s["slug"]): (float(s["price_monthly"]), float(s["price_hourly"])) for s in listed}
    except (KeyError, TypeError, ValueError):
        return {}  # the prices are information: the run does not fail for nonsense in them
    return {name: known[size] for name, size in sizes.items() if size in known}


def _masker(
    playbook: spec.Playbook,
    environ: Mapping[str, str],
    secrets: Mapping[str, str],
    settings: Settings,
    client: api.Client | None = None,
) -> Masker:
    secret_values = [v for n, v in playbook.var_values(environ).items() if n in playbook.secret_names()]
    # The API tokens of this machine's environment too: on a sandbox the client holds another one.
    return Masker([*secret_values, *secrets.values(), *settings.tokens], also=getattr(client, "mask", None))


def step_labels(
    playbook: spec.Playbook,
    environ: Mapping[str, str] | None = None,
    masker: Masker | None = None,
    settings: Settings | None = None,
) -> list[str]:
    """Each step as progress lines and reports show it, whole, on one line: its references to
    the playbook's variables substituted; those to the droplet, to secret variables, to the
    environment (``${env:…}``: an undeclared secret, maybe) and to variables made of those, as
    written; any secret written in it masked (``environ`` defaults to this machine's)."""
    environ = os.environ if environ is None else environ
    secret = playbook.secret_names()
    values = {k: v for k, v in spec.substitutions(playbook, environ={}).items() if k not in secret}
    settings = settings if settings is not None else Settings.from_environ()
    masker = masker or _masker(playbook, environ, _secrets(playbook), settings)
    return [masker.text(steps.describe(step, values)) for step in playbook.steps]


def _run_all(targets: list[Target], ctx: _Context, result: RunResult) -> list[DropletRun]:
    if not targets:
        return []
    if ctx.playbook.report.ps or ctx.playbook.report.top:
        # The snapshots need pandas (~0.2 s to import): import it while the droplets connect.
        threading.Thread(target=importlib.import_module, args=("pandas",), daemon=True).start()
    pool = ThreadPoolExecutor(max_workers=max(1, min(ctx.options.forks, len(targets))))
    futures = [pool.submit(_run_droplet, t, ctx) for t in targets]
    try:
        _wait_all(futures)
    except KeyboardInterrupt:
        # Stop launching steps everywhere; the running ones end or time out, unless Ctrl-C comes again.
        ctx.interrupted.set()
        ctx.stop.set()
        result.interrupted = True
        try:
            if ctx.notice:
                for name, what in ctx.waiting_for():
                    ctx.notice(name, f"Ctrl-C: waiting for it to end: {what} (Ctrl-C again stops it)")
            _wait_all(futures)
        except KeyboardInterrupt:  # at any moment after the first, even while its notices print
            ctx.abort()
            # The connections are closed: the workers end at once, or are given up on.
            wait(futures, timeout=STOP_PATIENCE)
    pool.shutdown(wait=False, cancel_futures=True)
    return [f.result() if f.done() else _given_up(t, ctx) for f, t in zip(futures, targets)]


def _given_up(target: Target, ctx: _Context) -> DropletRun:
    """A droplet whose worker did not end after a second Ctrl-C closed its connection."""
    run = DropletRun(target.name, *target.identity)
    run.error = ABORTED
    return _finish(run, ctx)


def _wait_all(futures: list[Future[DropletRun]]) -> None:
    while not all(f.done() for f in futures):
        wait(futures, timeout=0.2)  # short waits keep Ctrl-C responsive in the main thread


def _shard(targets: list[Target], shard: tuple[int, int] | None) -> list[Target]:
    """The I-th of N slices, by name: every droplet in exactly one shard, sizes within one."""
    if shard is None:
        return targets
    index, count = shard
    if not 1 <= index <= count:
        raise UsageError(f"--shard {index}/{count}: I must be between 1 and N")
    ordered = sorted(targets, key=lambda t: t.name)
    chosen = {t.name for t in ordered[index - 1 :: count]}
    return [t for t in targets if t.name in chosen]


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
        self._file = os.fdopen(descriptor, "a", encoding="utf-8") if descriptor is not None else open(path, "a", encoding="utf-8")

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
        header: dict[str, Any] = {"playbook": playbook, "mode": result.mode, "started": result.started, "droplets": droplets}
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
        if index < steps and (record.get("status") in ("ok", "changed", DONE_EARLIER) or record.get("reason") == RESUMED):
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


# -- status ---------------------------------------------------------------------


def status(
    playbook: spec.Playbook,
    *,
    settings: Settings | None = None,
    client: api.Client | None = None,
    forks: int = 20,
) -> list[ProcessStatus]:
    """The processes the playbook's ``nohup`` steps manage, on every droplet: alive or dead, pid, uptime, log.

    Changes nothing: ``chdir`` steps are followed (they only check), every
    other step but ``nohup`` is passed over.
    """
    settings = settings if settings is not None else Settings.from_environ()
    environ = _environment(playbook)
    client = client or api.connect(settings=settings)
    masker = _masker(playbook, environ, _secrets(playbook), settings, client)
    targets = [t for t in resolve(playbook, client) if t.droplet is not None]
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(targets)))) as pool:
        found = list(pool.map(lambda t: _droplet_status(t, playbook, environ, settings), targets))
    entries = [entry for entries in found for entry in entries]
    for entry in entries:
        entry.log_tail = masker.text(entry.log_tail)
    return entries


def _droplet_status(
    target: Target, playbook: spec.Playbook, environ: dict[str, str], settings: Settings
) -> list[ProcessStatus]:
    nohups = [s for s in playbook.steps if isinstance(s, spec.NohupStep)]
    assert target.droplet is not None
    values = spec.substitutions(playbook, droplet=target.droplet, environ=environ)
    found: list[ProcessStatus] = []
    try:
        with _connect(target, settings, RunOptions(), None) as ssh:
            for raw in playbook.steps:
                step = spec.expand(raw, values)
                if isinstance(step, spec.ChdirStep):
                    if ssh.run_step(step, mode="check").status == "failed":
                        break  # later steps' directories do not exist yet
                elif isinstance(step, spec.NohupStep):
                    found.append(_process_status(ssh, target.name, step))
    except PoseidonError as exc:
        state = "unreachable" if isinstance(exc, SSHError) else "unknown"
        return [ProcessStatus(target.name, s.process_name(), state, log_tail=str(exc)) for s in nohups]
    seen = {p.name for p in found}
    found += [ProcessStatus(target.name, s.process_name(), "dead") for s in nohups if s.process_name() not in seen]
    return found


def _process_status(ssh: SSHClient, droplet: str, step: spec.NohupStep) -> ProcessStatus:
    result = ssh.run(steps.nohup_status(step), title=f"status {step.process_name()}")
    first, _, tail = result.stdout.partition("\n")
    state, pid, uptime, leftover = (first.split("\t") + ["", "", "", ""])[:4]
    return ProcessStatus(
        droplet,
        step.process_name(),
        state or "unknown",
        int(pid) if pid.isdecimal() and state == "alive" else None,
        "" if uptime == "-" else uptime,
        tail.rstrip("\n"),
        ssh.cwd or "~",
        [int(p) for p in leftover.split() if p.isdecimal()],
    )
