"""Run a playbook: resolve every droplet, then replay the steps on each, in parallel.

The phases are explicit, each in a module of its own: the playbook is
already validated (offline, :mod:`poseidon.spec`) → the droplets are
resolved, created, limited and sharded (:mod:`poseidon.targets`) → per
droplet, in parallel (here): connect → check and apply each step in order →
snapshot → close, each step's result logged as it ends
(:mod:`poseidon.runlog`, which also tells ``--resume`` where to start).
``poseidon status`` reads the same droplets without changing them
(:mod:`poseidon.status`). A failed step stops its own droplet only; an
exception in one droplet's worker becomes that droplet's error and never
cancels the others.

The executor is given :class:`Settings` (the API's URL and token, the SSH
login); where they point (DigitalOcean or a sandbox) is not its business.
"""

from __future__ import annotations

import importlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poseidon import api, dns, spec, steps, variables
from poseidon.errors import (
    DropletBusyError,
    NotReadyError,
    PoseidonError,
    SSHError,
    SSHUnresponsiveError,
    UsageError,
)
from poseidon.masker import Masker
from poseidon.results import DropletRun, RunResult, StepResult
from poseidon.runlog import DONE_EARLIER, RESUMED, RunLog
from poseidon.settings import Settings
from poseidon.ssh import SESSIONS_ARGS, TOP_ARGS, SSHClient, ps_frames
from poseidon.targets import (
    Notice,
    Target,
    check_creates,
    check_expected,
    connect,
    create_missing,
    limit,
    prices,
    resolve,
    shard,
)

__all__ = ["Notice", "Progress", "RunOptions", "apply", "step_labels"]

#: The reason of a step a plan could not check because an earlier step would change the droplet first.
PREDICTED = "after the changes above (not checked)"
#: Why a step and its droplet stopped when a second Ctrl-C closed the connection.
ABORTED = "interrupted by a second Ctrl-C: the step running was stopped and the connection closed"

#: Called as each step ends: ``(droplet_name, step_result)``.
Progress = Callable[[str, StepResult], None]


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


# -- one droplet --------------------------------------------------------------


def _lock(ssh: SSHClient, run: DropletRun, notice: Notice | None) -> None:
    """Hold the droplet's apply lock for as long as the connection lives; refuse when another run has it."""
    holder = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
    answer = ssh.lock(holder)
    if answer.state == "busy":
        other = answer.detail or "an unknown run"
        raise DropletBusyError(
            f"{run.name} is being provisioned by another poseidon run ({other}); try again when it ends"
        )
    if answer.state == "none" and notice:
        notice(
            run.name,
            f"no apply lock on the droplet ({answer.detail or 'no answer'}):"
            " this run is not protected from another at the same time",
        )


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
    parents = dict(zip(ps["PID"], ps["PPID"], strict=True))
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
    ssh: SSHClient,
    run: DropletRun,
    before: _Before | None,
    playbook: spec.Playbook,
    masker: Masker,
    pid_files: list[str],
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
    frames = dict(zip(wanted, ps_frames(args, results), strict=True))
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
    #: Whose nohup processes these are (steps.StepContext.owner): known by it and their names.
    owner: str = ""
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
        with (
            connect(
                target,
                ctx.settings,
                connect_timeout=ctx.options.connect_timeout,
                ready_timeout=ctx.options.ready_timeout,
                notice=ctx.notice,
                stop=ctx.stop,
            ) as ssh,
            ctx.holding(run.name, ssh),
        ):
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
    --resume, a ``nohup`` or ``service`` runs as one that does not restart: the process it
    started may have died since (the droplet rebooted) and starts again; a
    running one is left alone unless what it runs changed (``restart: always``
    counts as ``on-change`` there).
    """
    if step.kind == "chdir":
        return step
    if resuming and isinstance(step, (spec.NohupStep, spec.ServiceStep)):
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
            content = _file_content(step, playbook, values)
        except (spec.AttachmentError, KeyError) as exc:
            why = f"no value for ${{{exc.args[0]}}}" if isinstance(exc, KeyError) else str(exc)
            unusable = StepResult(
                index, step.kind, ctx.label(index), "failed", stderr=mask(f"poseidon: {why}"), exited=2
            )
            run.steps.append(unusable)
            ctx.report(run.name, unusable)
            return True
        try:
            outcome = ssh.run_step(
                step, mode=ctx.mode, secrets=ctx.secrets, values=values, content=content, owner=ctx.owner
            )
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


def _file_content(step: spec.Step, playbook: spec.Playbook, values: dict[str, str]) -> bytes | None:
    """What a ``file`` step writes (its template substituted for this droplet); ``None`` for other steps."""
    return spec.file_content(step, playbook.attachments, values) if isinstance(step, spec.FileStep) else None


def _would_change_before(run: DropletRun) -> bool:
    return any(s.status == "would-change" for s in run.steps)


def _restarts_after(step: spec.Step, run: DropletRun) -> bool:
    """Whether ``step`` is a nohup or a service that an earlier step's coming change would restart."""
    if not isinstance(step, (spec.NohupStep, spec.ServiceStep)):
        return False
    return step.restart == "on-change" and _would_change_before(run)


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
    settings.check_login()  # a bad POSEIDON_SSH_PORT is refused before any change
    options = options or RunOptions()
    if not 0 <= options.start_at < max(1, len(playbook.steps)):
        raise UsageError(f"there is no step {options.start_at + 1}: the playbook has {len(playbook.steps)}")
    started = time.time()
    clock = time.monotonic()
    environ = variables.environment(playbook)
    secrets = variables.git_tokens(playbook)
    client = client or api.connect(settings=settings)
    targets = shard(limit(resolve(playbook, client), options.limit), options.shard)
    if options.expect is not None:
        check_expected(targets, options.expect)
    sizes = check_creates(targets, client)
    result = RunResult(playbook=path, name=playbook.name, mode=options.mode, started=started)
    masker = variables.masker(playbook, environ, secrets, settings, client)
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
        # A playbook without name: is known by its file's path: two projects' site.yaml are two owners.
        owner = playbook.owner_tag(path) if playbook.name else f"file:{Path(path).resolve()}"
        context = _Context(playbook, environ, secrets, settings, options, masker, labels, progress, notice, log, owner)
        result.droplets = _run_all(targets, context, result)
        costs = prices(targets, sizes)
        for run in result.droplets:
            run.dns = records.get(run.name)
            run.price_monthly, run.price_hourly = costs.get(run.name, (None, None))
    finally:
        if log:
            log.close()
            result.run_log, result.run_log_error = str(log.path), log.error
    result.duration = time.monotonic() - clock
    return result


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
    masker = masker or variables.masker(playbook, environ, variables.git_tokens(playbook), settings)
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
    return [f.result() if f.done() else _given_up(t, ctx) for f, t in zip(futures, targets, strict=True)]


def _given_up(target: Target, ctx: _Context) -> DropletRun:
    """A droplet whose worker did not end after a second Ctrl-C closed its connection."""
    run = DropletRun(target.name, *target.identity)
    run.error = ABORTED
    return _finish(run, ctx)


def _wait_all(futures: list[Future[DropletRun]]) -> None:
    while not all(f.done() for f in futures):
        wait(futures, timeout=0.2)  # short waits keep Ctrl-C responsive in the main thread
