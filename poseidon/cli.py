"""The ``poseidon`` command.

Exit status: 0 every step ok or changed; 1 a step failed on some droplet;
2 the playbook, the command line or the environment is invalid (an unknown
droplet too; a report or run log that could not be written, a full disk,
after the run); 3 the API or SSH could not be reached or refused the
credentials; 130 interrupted. They are assigned here and nowhere else.

Heavy modules (pydantic's models aside: fabric, pandas, rich, requests) are
imported inside the commands that need them, so ``--help`` and ``validate``
start quickly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from poseidon import errors
from poseidon.settings import Settings, debugging

if TYPE_CHECKING:
    from poseidon import spec, teardown
    from poseidon.report import Reporter
    from poseidon.sandbox import Sandbox

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: Rows ``poseidon ps`` and ``poseidon top`` show without ``--all``.
SNAPSHOT_ROWS = 20


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poseidon",
        description="Provision DigitalOcean droplets from a YAML playbook, over SSH.",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="print poseidon's version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def run_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("playbook", help="the playbook (YAML), or a plan file (JSON) from 'plan --out'")
        command.add_argument(
            "--sandbox",
            action="store_true",
            help="run on a local sandbox of the playbook's droplets: --sandbox=machines makes each a Debian machine"
            " (root, systemd-nspawn), --sandbox=light (the default; POSEIDON_SANDBOX sets it) a home on this machine",
        )
        command.add_argument(
            "--limit", metavar="PATTERNS", help="only these droplets (comma-separated names or patterns: web-*)"
        )
        command.add_argument(
            "--forks", type=_at_least_one, default=20, metavar="N", help="droplets run at once (default 20)"
        )
        command.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
        command.add_argument("--report", metavar="FILE.json", help="also write the JSON report to this file")
        command.add_argument("--start-at", metavar="STEP", help="start at this step (its number, or its name)")
        command.add_argument(
            "--resume",
            action="store_true",
            help="start each droplet at its first step that did not succeed in the last run",
        )
        command.add_argument(
            "--fail-fast", action="store_true", help="after the first failure, start no new step anywhere"
        )
        command.add_argument(
            "--shard", metavar="I/N", help="run the I-th of N equal slices of the droplets (for CI matrices)"
        )
        command.add_argument("--quiet", action="store_true", help="print only the summary table")
        command.add_argument("--report-dir", metavar="DIR", help="write report.json and one CSV per snapshot there")

    apply = commands.add_parser("apply", help="run a playbook's steps on its droplets")
    run_options(apply)
    apply.add_argument("--check", action="store_true", help="only report what would change (as plan)")
    plan = commands.add_parser("plan", help="show what apply would change; changes nothing")
    run_options(plan)
    plan.add_argument(
        "--out",
        metavar="PLAN.json",
        help="record the plan; 'poseidon apply PLAN.json' then refuses if droplets changed",
    )
    plan.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when nothing would change, 2 when something would, 1 on any error (as Terraform)",
    )
    plan.set_defaults(check=True)

    destroy = commands.add_parser("destroy", help="delete the droplets and DNS records a playbook created")
    destroy.add_argument("playbook")
    destroy.add_argument("--sandbox", action="store_true", help="on the playbook's kept sandbox")
    destroy.add_argument("--yes", action="store_true", help="delete without asking")
    destroy.add_argument("--check", action="store_true", help="only list what would be deleted")
    destroy.add_argument("--json", action="store_true", help="print what was (or would be) deleted as JSON")

    status = commands.add_parser(
        "status", help="the processes a playbook's nohup and service steps manage: alive or dead"
    )
    status.add_argument("playbook")
    status.add_argument("--sandbox", action="store_true", help="look at the playbook's kept sandbox")
    status.add_argument("--json", action="store_true")

    validate = commands.add_parser("validate", help="check a playbook offline")
    validate.add_argument("playbook")
    commands.add_parser("schema", help="print the playbook's JSON Schema")

    droplets = commands.add_parser("droplets", help="list droplets")
    droplets.add_argument("--tag", help="only droplets with this tag")
    droplets.add_argument("--json", action="store_true")
    for name, what in (("ps", "a droplet's processes (ps -Af)"), ("top", "a droplet's busiest processes, by CPU")):
        command = commands.add_parser(name, help=what)
        command.add_argument("name", help="the droplet's name")
        command.add_argument("--all", action="store_true", help=f"every row (default: the first {SNAPSHOT_ROWS})")
        command.add_argument("--json", action="store_true", help="every row, as JSON")
        command.add_argument("--sandbox", metavar="PLAYBOOK", help="on the sandbox kept for this playbook")

    sandbox = commands.add_parser("sandbox", help="a local sandbox that outlives one command")
    sandbox.add_argument(
        "action",
        choices=["up", "env", "down", "reset"],
        help="up: run one in the background and print its variables; env: print them again; down: stop it;"
        " reset: stop it and remove it (with --playbook: the one --sandbox keeps for that playbook)",
    )
    sandbox.add_argument(
        "--droplet", action="append", metavar="NAME", help="a droplet to serve (repeatable; default: test)"
    )
    sandbox.add_argument("--playbook", help="the playbook's kept sandbox: its droplets and example repositories")
    sandbox.add_argument(
        "--machines",
        action="store_true",
        help="up: each droplet a Debian machine booted by systemd-nspawn (root; POSEIDON_SANDBOX=machines too)",
    )
    return parser


class _Version(argparse.Action):
    """``--version``, looked up only when asked: importlib.metadata is not on every command's start-up."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        print(f"poseidon {_version()}")
        parser.exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("poseidon")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def _at_least_one(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} droplets at once would run nothing: give 1 or more")
    return number


def main(argv: Sequence[str] | None = None) -> int:
    streams = sys.stdout, sys.stderr
    _survive_closed_pipes()
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = streams


#: The commands whose ``--sandbox`` takes a kind (``--sandbox=machines``); ps and top take a playbook.
_SANDBOX_KIND_COMMANDS = ("apply", "plan", "destroy", "status")
SANDBOX_KINDS = ("light", "machines")


def _sandbox_kind(argv: list[str]) -> tuple[list[str], str | None]:
    """``--sandbox=KIND`` as ``--sandbox`` and the kind: argparse cannot give a flag an optional
    value without taking the playbook after it (``--sandbox site.yaml``) for one."""
    command = next((word for word in argv if not word.startswith("-")), None)
    if command not in _SANDBOX_KIND_COMMANDS:
        return argv, None
    kind = None
    kept = []
    for word in argv:
        if word.startswith("--sandbox="):
            kind = word.partition("=")[2]
            word = "--sandbox"
        kept.append(word)
    return kept, kind


def _main(argv: Sequence[str] | None) -> int:
    words, kind = _sandbox_kind(list(sys.argv[1:] if argv is None else argv))
    try:
        parser = _parser()
        if kind is not None and kind not in SANDBOX_KINDS:
            parser.error(f"argument --sandbox: {kind!r} is no sandbox: --sandbox (light) or --sandbox=machines")
        args = parser.parse_args(words)
        args.sandbox_kind = kind
    except SystemExit as exc:  # a usage error (2), or --help and --version (0)
        given = sys.argv[1:] if argv is None else list(argv)
        if exc.code == EXIT_INVALID and "--detailed-exitcode" in given:
            return EXIT_FAILED  # as Terraform's: 2 would say changes are pending
        raise
    handler = {
        "apply": _apply,
        "plan": _apply,
        "status": _status,
        "destroy": _destroy,
        "validate": _validate,
        "schema": _schema,
        "droplets": _droplets,
        "ps": _snapshot,
        "top": _snapshot,
        "sandbox": _sandbox,
    }[args.command]
    # A TERM (a CI job cancelled, `kill`) ends poseidon as Ctrl-C does: what it started (a
    # sandbox's servers) is stopped on the way out instead of left listening.
    previous = _on_terminate(_interrupt)
    try:
        code = _exit_status(handler, args)
    finally:
        _on_terminate(previous)
    if getattr(args, "detailed_exitcode", False) and code != EXIT_INTERRUPTED:
        # As Terraform: 0 nothing to change, 2 changes pending, 1 any error.
        if code != EXIT_OK:
            return EXIT_FAILED
        return 2 if getattr(args, "changes_pending", False) else EXIT_OK
    return code


def _exit_status(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run the command; what went wrong is one line on stderr and its exit status."""
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except errors.SpecError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    except (errors.UsageError, errors.ResolveError) as exc:
        _say(exc)
        return EXIT_INVALID
    except errors.APIError as exc:
        _say(exc)
        # 400, 422: the API found the request invalid (a value of the playbook): as a playbook check would.
        return EXIT_INVALID if exc.status in (400, 422) else EXIT_UNREACHABLE
    except errors.APIConnectionError as exc:
        _say(f"{exc}{_sandbox_hint()}")
        return EXIT_UNREACHABLE
    except (errors.PartlyCreatedError, errors.SSHError, errors.SandboxError) as exc:
        _say(exc)  # an API's or a droplet's words, escaped
        return EXIT_UNREACHABLE
    except errors.PoseidonError as exc:
        _say(exc)
        return EXIT_FAILED
    except Exception as exc:
        if debugging():
            raise
        _say(f"unexpected {type(exc).__name__}: {exc} (POSEIDON_DEBUG=1 shows where)")
        return EXIT_FAILED


class _PipeEnd:
    """A standard stream whose reader may go away (``poseidon schema | head``): the rest of
    the output is dropped, quietly, and the command ends with the status it would have had."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        # What is still buffered, and all that follows, goes to /dev/null: flushing at exit succeeds.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _survive_closed_pipes() -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, _PipeEnd) and hasattr(stream, "fileno"):
            try:
                stream.fileno()
            except (OSError, ValueError):  # a stream without a descriptor (a test's capture)
                continue
            setattr(sys, name, _PipeEnd(stream))


def _sandbox_hint() -> str:
    """When the API that did not answer is on this machine: most likely a sandbox no longer up."""
    from urllib.parse import urlsplit

    try:
        url = Settings.from_environ().api_url
    except errors.UsageError:
        return ""
    host = urlsplit(url).hostname or ""
    if host not in ("localhost", "::1") and not host.startswith("127."):
        return ""
    return (
        f" (POSEIDON_API_URL is {url}, on this machine: is its sandbox up? 'poseidon sandbox up' starts one"
        " and prints its variables ('--playbook F' for a playbook's); 'poseidon sandbox env [--playbook F]'"
        " prints those of one that is up)"
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _on_terminate(handler: Any) -> Any:
    """Handle SIGTERM with ``handler`` (where signals can be handled: the main thread); return the one before."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def _say(message: object) -> None:
    """One line on stderr, its control characters escaped: the text may be an API's or a droplet's."""
    print(f"poseidon: {errors.printable(str(message))}", file=sys.stderr)


# -- commands -------------------------------------------------------------------------


def _load(path: str, *, files: bool = True) -> spec.Playbook:
    """The playbook at ``path``; ``files=False`` for a command that writes no file (the files
    its ``file:`` steps take are then not read: status and destroy work without them)."""
    from poseidon import spec

    return spec.load(path, files=files)


def _validate(args: argparse.Namespace) -> int:
    playbook = _load(args.playbook)
    droplets, steps = len(playbook.droplets), len(playbook.steps)
    print(f"{args.playbook}: valid ({_count(droplets, 'droplet entry', 'droplet entries')}, {_count(steps, 'step')})")
    return EXIT_OK


def _count(number: int, one: str, many: str | None = None) -> str:
    return f"{number} {one if number == 1 else many or one + 's'}"


def _schema(args: argparse.Namespace) -> int:
    import json

    from poseidon import spec

    print(json.dumps(spec.json_schema(), indent=2))
    return EXIT_OK


def _apply(args: argparse.Namespace) -> int:
    from poseidon import executor, files, planfile
    from poseidon.report import Reporter, to_json

    plan = planfile.read(args.playbook) if planfile.is_plan(args.playbook) else None
    if plan is not None:
        args.playbook = str(plan.playbook)
        if args.sandbox and not plan.sandbox:
            raise errors.UsageError(
                f"{plan.path} was made against the DigitalOcean API, not a sandbox: apply it without --sandbox"
            )
        args.sandbox = plan.sandbox  # a plan made on the sandbox is applied there
    playbook = _load(args.playbook)
    if plan is not None and (changed := plan.environment_changes(os.environ)):
        raise errors.UsageError(
            f"{plan.path}: {', '.join(changed)} differ(s) from the value(s) this plan was made with: plan again"
        )
    if plan is not None and (changed := plan.file_changes(playbook.attachments.digests())):
        raise errors.UsageError(f"{plan.path}: {', '.join(changed)} changed since this plan was made: plan again")
    mode: Literal["apply", "check"] = "check" if args.command == "plan" or args.check else "apply"
    start_at = _step_index(playbook, args.start_at) if args.start_at is not None else 0
    if args.report:
        _check_writable(args.report)
    if args.report_dir:
        try:
            files.folder(args.report_dir)
        except OSError as exc:
            raise errors.UsageError(f"--report-dir {args.report_dir}: {exc.strerror}") from exc
    reporter = Reporter(sys.stderr if args.json else None)
    with ExitStack() as stack:
        settings = _settings(
            stack,
            None if args.quiet else reporter,
            (args.playbook, playbook) if args.sandbox else None,
            args.sandbox_kind,
        )
        # A sandbox's runs are logged apart: --resume must never mix them with real droplets'.
        runs = (
            _kept_sandbox_root(args.playbook) if args.sandbox else Path(args.playbook).resolve().parent / ".poseidon"
        ) / "runs"
        options = executor.RunOptions(
            mode=mode,
            limit=_limit(args.limit) if args.limit is not None else None,
            forks=args.forks,
            start_at=start_at,
            resume=_resume_points(runs, playbook, args.playbook, reporter) if args.resume else None,
            fail_fast=args.fail_fast,
            shard=_shard(args.shard) if args.shard else None,
            expect=plan.droplets if plan else None,
            run_log=runs if mode == "apply" else None,
        )
        if not args.quiet:
            stack.enter_context(reporter.live(executor.step_labels(playbook, settings=settings)))
        result = executor.apply(
            playbook,
            path=args.playbook,
            options=options,
            progress=None if args.quiet else reporter.step_done,
            notice=None if args.quiet else reporter.notice,
            settings=settings,
        )
    # The terminal first: whatever cannot be written after, the user has seen what happened.
    if args.json:
        print(to_json(result))
    else:
        reporter.summary(result, snapshots=not args.quiet)
    unwritten = _write_records(args, result, reporter, playbook)
    args.changes_pending = any(run.created or run.count("would-change") for run in result.droplets)
    if result.interrupted:
        return EXIT_INTERRUPTED
    if unwritten:
        return EXIT_INVALID
    if any(r.unreachable for r in result.droplets):
        return EXIT_UNREACHABLE
    return EXIT_FAILED if result.failed else EXIT_OK


def _settings(
    stack: ExitStack,
    reporter: Reporter | None,
    sandbox: tuple[str, spec.Playbook] | None = None,
    kind: str | None = None,
) -> Settings:
    """poseidon's settings for this command, read once: this environment's, or with ``sandbox``
    (--sandbox: a playbook's path and the playbook) pointed at the playbook's kept sandbox, of
    ``kind`` (--sandbox=KIND) when given."""
    settings = Settings.from_environ()
    return _enter_sandbox(stack, *sandbox, settings, reporter, kind) if sandbox else settings


def _enter_sandbox(
    stack: ExitStack,
    path: str,
    playbook: spec.Playbook,
    settings: Settings,
    reporter: Reporter | None,
    asked: str | None = None,
) -> Settings:
    """The playbook's kept sandbox for this command: the one 'sandbox up --playbook' serves in
    the background, else started here (saying so to ``reporter``); ``settings`` pointed at it."""
    from poseidon.sandbox import Sandbox, daemon

    root = _kept_sandbox_root(path)
    environ = daemon.running(root)
    kept = environ.get("POSEIDON_SANDBOX", "light") if environ else Sandbox.kept_kind(root)
    kind = _kind(asked, settings, path, kept)
    if environ is not None:
        if reporter is not None:
            reporter.message(f"sandbox: the one 'poseidon sandbox up' serves for {path}", "dim")
        return _sandbox_settings(settings, environ)
    say = (lambda text: reporter.message(f"sandbox: {text}", "dim")) if reporter is not None else None
    sandbox = stack.enter_context(_sandbox_for(path, playbook, kind, say))
    if reporter is not None:
        reporter.message(
            f"sandbox: {_count(len(sandbox.homes), 'droplet')} on {sandbox.network}.2+, kept in"
            f" {sandbox.root} ('poseidon sandbox reset --playbook {path}' removes it)",
            "dim",
        )
    return _sandbox_settings(settings, sandbox.environ)


def _kind(asked: str | None, settings: Settings, path: str, kept: str | None) -> str:
    """The sandbox's kind: --sandbox=KIND, else POSEIDON_SANDBOX, else the kept one's, else light.
    A kept sandbox is of one kind: asking another is refused, with how to start afresh."""
    wanted = asked or settings.sandbox or kept or "light"
    if wanted not in SANDBOX_KINDS:
        raise errors.UsageError(f"POSEIDON_SANDBOX must be light or machines, not {wanted!r}")
    if wanted == "machines":
        from poseidon.sandbox import machines

        reason = machines.unavailable()
        if reason:
            raise errors.UsageError(f"--sandbox=machines: {reason}")
    if kept is not None and wanted != kept:
        raise errors.UsageError(
            f"the sandbox kept for {path} has {kept} droplets, not {wanted}:"
            f" 'poseidon sandbox reset --playbook {path}' removes it, and the next --sandbox={wanted} makes them"
        )
    return wanted


def _sandbox_settings(settings: Settings, environ: dict[str, str]) -> Settings:
    """``settings`` pointed at a sandbox, from the variables that reach it (:attr:`Sandbox.environ`).
    The tokens of this environment stay, to be masked. A light sandbox's login wins over a
    playbook's (it has one user); machines have the users the playbook makes."""
    import dataclasses

    return dataclasses.replace(
        settings,
        api_url=environ["POSEIDON_API_URL"],
        ca_bundle=environ.get("REQUESTS_CA_BUNDLE") or settings.ca_bundle,
        token=environ["DIGITALOCEAN_TOKEN"],
        ssh_user=environ["POSEIDON_SSH_USER"],
        ssh_port=int(environ["POSEIDON_SSH_PORT"]),
        ssh_key=environ["POSEIDON_SSH_KEY"],
        known_hosts=environ["POSEIDON_KNOWN_HOSTS"],
        login_pinned=environ.get("POSEIDON_SANDBOX", "light") != "machines",
        # The sandbox's port replaces this environment's, bad or not.
        login_problems=tuple(p for p in settings.login_problems if p[0] != "POSEIDON_SSH_PORT"),
        # Sandbox droplets share one sshd and its host key: a key pinned at birth could not be served.
        pin_host_keys=False,
    )


def _destroy(args: argparse.Namespace) -> int:
    import json

    from poseidon import api, teardown
    from poseidon.report import Reporter

    playbook = _load(args.playbook, files=False)
    reporter = Reporter(sys.stderr if args.json else None)
    with ExitStack() as stack:
        settings = _settings(stack, reporter, (args.playbook, playbook) if args.sandbox else None, args.sandbox_kind)
        client = api.connect(settings=settings)
        found = teardown.survey(playbook, args.playbook, client)
        reporter.teardown(found, check=args.check)
        if found.empty or args.check:
            if args.json:
                print(json.dumps({**found.to_dict(), "deleted": False}, indent=2))
            return EXIT_FAILED if found.refused else EXIT_OK
        if not args.yes:
            if not sys.stdin.isatty():
                raise errors.UsageError(f"destroy would delete {_what(found)}: off a terminal, only with --yes")
            if not _confirmed(f"delete {_what(found)}? [y/N] "):
                reporter.message("nothing deleted: not confirmed", "yellow")
                return EXIT_FAILED
        started = time.monotonic()
        teardown.destroy(found, client, said=reporter.message)
        reporter.message(f"deleted {_what(found)} in {time.monotonic() - started:.1f}s", "bold green")
    if args.json:
        print(json.dumps({**found.to_dict(), "deleted": True}, indent=2))
    return EXIT_FAILED if found.refused else EXIT_OK


def _what(found: teardown.Teardown) -> str:
    return f"{len(found.droplets)} droplet(s) and {len(found.records)} DNS record(s)"


def _confirmed(question: str) -> bool:
    """Ask on the terminal (stdin is one)."""
    print(question, end="", file=sys.stderr, flush=True)  # stdout may be carrying --json
    try:
        return input().strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _status(args: argparse.Namespace) -> int:
    import json

    from poseidon import status
    from poseidon.report import Reporter

    playbook = _load(args.playbook, files=False)
    reporter = Reporter(sys.stderr if args.json else None)
    with ExitStack() as stack:
        settings = _settings(stack, reporter, (args.playbook, playbook) if args.sandbox else None, args.sandbox_kind)
        found = status.status(playbook, settings=settings)
    if args.json:
        print(json.dumps([p.to_dict() for p in found], indent=2))
    else:
        reporter.processes(found)
    if any(p.state == "unreachable" for p in found):
        return EXIT_UNREACHABLE
    return EXIT_OK if all(p.state == "alive" for p in found) else EXIT_FAILED


def _resume_points(runs: Path, playbook: spec.Playbook, path: str, reporter: Reporter) -> dict[str, int] | None:
    """``--resume``: where each droplet starts; with no earlier run logged (a first run in CI,
    where --resume is always given), from the first step, saying so."""
    from poseidon import runlog

    try:
        return runlog.resume_points(runs, playbook, path)
    except runlog.NoRunLogged as exc:
        reporter.message(f"--resume: {exc}: starting from the first step", "yellow")
        return None


def _step_index(playbook: spec.Playbook, wanted: str) -> int:
    """``--start-at``: a 1-based step number, a step's ``name``, or its label as progress shows it."""
    from poseidon import executor

    if wanted.isascii() and wanted.isdigit():  # not "²", which isdigit() also takes
        return int(wanted) - 1
    labels = executor.step_labels(playbook)
    for index, step in enumerate(playbook.steps):
        if wanted in (step.name, labels[index]):
            return index
    raise errors.UsageError(f"--start-at {wanted}: no step has that number, name or label ({', '.join(labels)})")


def _limit(text: str) -> tuple[str, ...]:
    """``--limit``: comma-separated names or patterns; none at all is a mistake, not the whole fleet."""
    parts = tuple(part.strip() for part in text.split(","))
    if not any(parts):
        raise errors.UsageError(
            "--limit names no droplet (an empty value, as from an unset variable): give names or patterns"
        )
    return tuple(part for part in parts if part)


def _shard(text: str) -> tuple[int, int]:
    """``--shard I/N``."""
    index, _, count = text.partition("/")
    if not (index.isdecimal() and count.isdecimal() and 1 <= int(index) <= int(count)):
        raise errors.UsageError(f"--shard {text}: write I/N with 1 <= I <= N, e.g. 2/4")
    return int(index), int(count)


def _check_writable(path: str) -> None:
    """Fail before the run, not after it, when the report cannot be written. Nothing is created
    or opened (a link at the name is not followed): its folder must exist and take new files."""
    target = Path(path)
    if target.is_dir() and not target.is_symlink():  # a link is replaced, not written through
        raise errors.UsageError(f"--report {path}: Is a directory")
    folder = target.parent
    if not folder.is_dir():
        raise errors.UsageError(f"--report {path}: No such file or directory (its folder {folder})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise errors.UsageError(f"--report {path}: Permission denied (its folder {folder})")


def _write_plan(target: str, result: Any, playbook: spec.Playbook, path: str, sandbox: bool) -> None:
    """The plan file: with the environment variables the playbook reads (``${env:…}``) and their
    values now, and the digests of the files its ``file:`` steps took, as the run read them."""
    from poseidon import planfile

    environ = {name: os.environ.get(name) for name in playbook.env_names()}
    planfile.write(target, result, path, environ, sandbox=sandbox, attached=playbook.attachments.digests())


def _write_records(args: argparse.Namespace, result: Any, reporter: Reporter, playbook: spec.Playbook) -> bool:
    """The plan file, the report file and folder; say what could not be written (a full disk). True if any."""
    from poseidon import files
    from poseidon.report import to_json, write_report_dir

    failed = False
    if result.run_log_error:
        reporter.error(
            f"the run log {result.run_log} is incomplete: {result.run_log_error}; the report above has every step"
        )
        failed = True
    writes: list[tuple[str, str | None, Callable[[str], object]]] = [
        (
            "--out",
            getattr(args, "out", None),
            lambda target: _write_plan(target, result, playbook, args.playbook, bool(args.sandbox)),
        ),
        ("--report", args.report, lambda target: files.write(target, to_json(result) + "\n")),
        ("--report-dir", args.report_dir, lambda target: write_report_dir(result, target)),
    ]
    for option, target, write in writes:
        if not target:
            continue
        try:
            write(target)
        except OSError as exc:
            reporter.error(f"{option} {target}: could not be written ({exc.strerror or exc})")
            failed = True
    return failed


def _droplets(args: argparse.Namespace) -> int:
    from poseidon import api
    from poseidon.report import Reporter

    found = api.connect().droplets.list(tag=args.tag)
    if args.json:
        import json

        print(json.dumps([d.data for d in found], indent=2))
    else:
        Reporter().droplets(found)
    return EXIT_OK


def _snapshot(args: argparse.Namespace) -> int:
    """``poseidon ps NAME`` and ``poseidon top NAME``."""
    from poseidon import api
    from poseidon.report import Reporter

    reporter = Reporter(sys.stderr if args.json else None)
    with ExitStack() as stack:
        settings = _settings(
            stack, reporter, (args.sandbox, _load(args.sandbox, files=False)) if args.sandbox else None
        )
        client = api.connect(settings=settings)
        droplet = client.droplets.by_name(args.name)
        with droplet.connect() as ssh:  # as the client's settings say
            frame = ssh.ps() if args.command == "ps" else ssh.top()
    if args.json:
        print(frame.to_json(orient="records", indent=2))
        return EXIT_OK
    limit = None if args.all else SNAPSHOT_ROWS
    sort = "%CPU" if args.command == "top" else None
    reporter.table(f"{droplet.name}: {'ps -Af' if args.command == 'ps' else 'top'}", frame, limit=limit, sort=sort)
    return EXIT_OK


# -- the sandbox ------------------------------------------------------------------------


def _sandbox_contents(path: str, playbook: spec.Playbook) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """The playbook's droplets, and the GitHub repositories found in ``apps/`` beside it."""
    from poseidon import spec

    droplets: list[dict[str, Any]] = []
    for ref in playbook.droplets:
        if isinstance(ref, spec.TaggedDroplets):
            droplets.append({"name": f"{ref.tag}-1", "tags": [ref.tag]})
        elif ref.create is None:  # a droplet with create: is made through the API, as on DigitalOcean
            droplets.append({"name": ref.name})
    apps = Path(path).resolve().parent / "apps"
    repos: dict[str, Path] = {}
    for step in playbook.steps:
        if isinstance(step, spec.GitStep) and step.url().startswith("https://github.com/"):
            name = step.repo.rstrip("/").removesuffix(".git").rsplit("/", 1)[-1]
            if (apps / name).is_dir():
                repos[step.repo] = apps / name
    return droplets, repos


def _kept_sandbox_root(path: str) -> Path:
    """Where ``--sandbox`` keeps a playbook's droplets between runs."""
    playbook = Path(path).resolve()
    return playbook.parent / ".poseidon" / "sandbox" / playbook.stem


def _sandbox_for(
    path: str, playbook: spec.Playbook, kind: str = "light", say: Callable[[str], None] | None = None
) -> Sandbox:
    """The playbook's sandbox, kept between runs like real droplets, until 'sandbox reset'."""
    from poseidon.sandbox import Sandbox

    droplets, repos = _sandbox_contents(path, playbook)
    root = _kept_sandbox_root(path)
    return Sandbox(droplets, repos=repos, root=root, keep=True, machines=kind == "machines", progress=say)


def _sandbox(args: argparse.Namespace) -> int:
    """``poseidon sandbox up|env|down|reset``: one background sandbox per playbook (its kept one),
    and one per user for droplets named on the command line."""
    from poseidon.sandbox import Sandbox, daemon

    folder = _kept_sandbox_root(args.playbook) if args.playbook else daemon.state_dir()
    if args.action == "down":
        print(daemon.down(folder))
        return EXIT_OK
    if args.action == "env":
        environ = daemon.running(folder)
        if environ is None:
            where = f" --playbook {args.playbook}" if args.playbook else ""
            raise errors.UsageError(f"no sandbox is up in {folder}: 'poseidon sandbox up{where}' starts one")
        _print_exports(environ)
        return EXIT_OK
    if args.action == "reset":
        daemon.down(folder)
        if args.playbook:
            wiped = Sandbox.wipe(folder)
            print(f"removed the sandbox kept in {folder}" if wiped else f"no sandbox is kept in {folder}")
            return EXIT_OK
    droplets: list[dict[str, Any]] = [{"name": n} for n in args.droplet or []]
    repos: dict[str, Path] = {}
    if args.playbook:
        more, repos = _sandbox_contents(args.playbook, _load(args.playbook, files=False))
        droplets += more
    settings = Settings.from_environ()
    kept = Sandbox.kept_kind(folder) if args.playbook else None
    kind = _kind("machines" if args.machines else None, settings, args.playbook or "these droplets", kept)
    environ = daemon.up(
        droplets or [{"name": "test"}], repos, folder, kept=bool(args.playbook), machines=kind == "machines"
    )
    _print_exports(environ)
    return EXIT_OK


def _print_exports(environ: dict[str, str]) -> None:
    for key, value in environ.items():
        print(f"export {key}={_shell_quote(value)}")


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
