"""Results for people and for programs: terminal lines and tables, JSON.

One :class:`Reporter` owns all terminal output. It follows the terminal:
colour on a TTY, plain text otherwise, ``NO_COLOR`` respected (rich does
both). rich is imported when a reporter is made, never by the library.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from poseidon import files
from poseidon.errors import printable
from poseidon.results import DropletRun, ProcessStatus, RunResult, StepResult

if TYPE_CHECKING:
    from rich.console import Console

    from poseidon.droplet import Droplet
    from poseidon.teardown import Teardown

__all__ = ["Reporter", "to_json", "write_report_dir"]

_STYLES = {
    "ok": "green",
    "changed": "yellow",
    "would-change": "yellow",
    "failed": "bold red",
    "skipped": "dim",
    "done-earlier": "dim",
}
#: After a run, each droplet's busiest processes shown, by %CPU; ``--json`` and ``--report-dir`` have every row.
TOP_ROWS = 5
#: At most this many of the processes a run started are shown (``--json`` has them all).
STARTED_ROWS = 20
#: The width of output that is not a terminal: a pipe, a file, a CI log. Nothing is cut or wrapped there.
UNCUT = 1_000_000


def to_json(result: RunResult) -> str:
    """The run as one JSON document (snapshots as lists of rows)."""
    return json.dumps(result.to_dict(), indent=2, default=str)


def write_report_dir(result: RunResult, folder: str) -> list[Path]:
    """``report.json`` plus one CSV per snapshot (``<droplet>-ps.csv``, ``<droplet>-top.csv``); returns the files."""
    target = files.folder(folder)
    written = [target / "report.json"]
    files.write(written[0], to_json(result) + "\n")
    for run in result.droplets:
        for kind, frame in (("ps", run.ps), ("top", run.top)):
            if frame is not None:
                path = files.name_in(target, f"{run.name}-{kind}.csv")  # a name never leads out of the folder
                files.write(path, frame.to_csv(index=False))
                written.append(path)
    return written


def _escaping_console(**options: Any) -> Console:
    """A rich ``Console`` that prints every control character of the text it is given escaped (``\\x1b``).

    Most of what poseidon prints did not come from poseidon: droplet names,
    tags and addresses from the API, its error messages, a step's output, a
    process's log. A step must not clear the screen, retitle the terminal or
    print a fake "all droplets succeeded" over the real line, on a terminal or
    off it. rich's own colours and cursor moves (the live panel) are added after,
    as styles and control segments, and pass. ``--json`` keeps the raw text.
    """
    from rich.console import Console
    from rich.segment import Segment

    class EscapingConsole(Console):
        def render(self, renderable: Any, options: Any = None) -> Any:
            for segment in super().render(renderable, options):
                text = segment.text
                if segment.control or text.isprintable() or text == "\n":
                    yield segment
                else:
                    yield Segment(printable(text, newlines=True), segment.style, segment.control)

    return EscapingConsole(**options)


class Reporter:
    """Prints progress as steps end, then the summary and the snapshots."""

    def __init__(self, file: IO[str] | None = None, *, width: int | None = None) -> None:
        # emoji=False: no ":name:" codes to expand, and rich's table of them costs ~0.1 s to import.
        self.console: Console = _escaping_console(file=file or sys.stdout, width=width, highlight=False, emoji=False)
        if width is None and not self.console.is_terminal:
            self.console.width = UNCUT
        self._lock = threading.Lock()
        self._labels: list[str] = []
        #: droplet → (index of its current step, when it started), while a live panel shows.
        self._current: dict[str, tuple[int, float]] | None = None

    @contextmanager
    def live(self, labels: Sequence[str]) -> Iterator[None]:
        """On a terminal, a panel under the scrolling lines: each droplet's current step and elapsed time."""
        if not self.console.is_terminal:
            yield
            return
        from rich.live import Live

        self._labels, self._current = list(labels), {}
        try:
            with Live(get_renderable=self._panel, console=self.console, refresh_per_second=4, transient=True):
                yield
        finally:
            self._current = None

    def _panel(self) -> Any:
        from rich.table import Table

        table = Table(box=None, show_header=False, pad_edge=False)
        now = time.monotonic()
        for droplet, (index, since) in sorted((self._current or {}).items()):
            label = self._labels[index] if index < len(self._labels) else "snapshots"
            shown = f"{min(index + 1, len(self._labels))}/{len(self._labels)} {label}"
            table.add_row(_plain(droplet), _plain(shown), f"{now - since:.0f}s")
        return table

    def _advance(self, droplet: str, index: int) -> None:
        if self._current is not None:
            self._current[droplet] = (index, time.monotonic())

    def _box(self) -> Any:
        from rich import box

        return box.ROUNDED if self.console.is_terminal else box.ASCII

    def message(self, text: str, style: str | None = None) -> None:
        self.console.print(text, style=style, markup=False)

    def error(self, text: str) -> None:
        # Not wrapped: a path or a command in it must stay one piece to copy.
        self.console.print(f"error: {text}", style="bold red", markup=False, soft_wrap=True)

    # -- while running -------------------------------------------------------------

    def step_done(self, droplet: str, step: StepResult) -> None:
        """One line per step as it ends; safe to call from the droplets' threads."""
        from rich.text import Text

        line = Text.assemble(
            (f"{droplet:<14} ", "bold"),
            (f"{step.status:<12}", _STYLES.get(step.status, "")),
            f" {step.label}",
            (f"  {step.duration:.2f}s", "dim"),
        )
        if step.status == "ok" and step.reason:
            line.append(f"  ({step.reason})", "dim")
        with self._lock:
            self._advance(droplet, step.index + 1)
            self.console.print(line, no_wrap=True, overflow="ellipsis")
            if step.status == "failed":
                self._output(step)

    def _output(self, step: StepResult) -> None:
        """What a failed step printed: the last lines of stdout, then of stderr."""
        for name, text in (("stdout", step.stdout), ("stderr", step.stderr)):
            lines = text.strip().splitlines()[-_TAIL_LINES:]
            if lines:
                self.console.print(f"  {name}:", style="red", markup=False, highlight=False)
                self.console.print(_indent("\n".join(lines)), style="red", markup=False, highlight=False)

    def droplets(self, droplets: Sequence[Droplet]) -> None:
        """A table of droplets: name, id, status, public IP, region, size, tags."""
        from rich.table import Table

        table = Table(box=self._box())
        for column in ("name", "id", "status", "public ip", "region", "size", "tags"):
            table.add_column(column)
        for d in droplets:
            size = str(d.data.get("size_slug") or "")
            cells = (d.name, str(d.id), d.status, d.ip_address or "-", d.region, size, ",".join(d.tags))
            table.add_row(*map(_plain, cells))
        for kept in table.columns[:4]:  # name, id, status, address: whole, never wrapped
            kept.no_wrap = True
        self.console.print(table)

    def processes(self, found: Sequence[ProcessStatus]) -> None:
        """``poseidon status``: one row per managed process, its log's last line."""
        from rich.table import Table
        from rich.text import Text

        if not found:
            self.message("the playbook's nohup and service steps manage no process")
            return
        table = Table(box=self._box())
        for column in ("droplet", "process", "state", "pid", "uptime"):
            table.add_column(column, no_wrap=True)
        for column in ("directory", "log"):  # the long ones: folded on a terminal that is too narrow
            table.add_column(column, overflow="fold", min_width=12)
        for p in found:
            shown = f"{p.state}, {len(p.leftover)} left running" if p.leftover else p.state
            state = Text(shown, style="green" if p.state == "alive" else "bold red")
            last = p.log_tail.strip().splitlines()[-1:] or [""]
            name = f"{p.name} (service)" if p.kind == "service" else p.name
            cells = (p.droplet, name, state, str(p.pid or "-"), p.uptime or "-", p.directory, last[0])
            table.add_row(*map(_plain, cells))
        self.console.print(table)

    def notice(self, droplet: str, text: str) -> None:
        """What a droplet waits for before its first step; safe to call from the droplets' threads."""
        with self._lock:
            if self._current is not None and droplet not in self._current:
                self._advance(droplet, 0)
            self.console.print(f"{droplet:<14} {text}", style="dim", markup=False, highlight=False)

    # -- after the run ---------------------------------------------------------------

    def summary(self, result: RunResult, *, snapshots: bool = True) -> None:
        """The snapshots first, then what matters most, last: the steps, the failures, the verdict."""
        if snapshots:
            for run in result.droplets:
                self._snapshots(run)
        self._steps_table(result)
        for run in result.droplets:
            if run.error:
                self.console.print(f"{run.name}: {run.error}", style="bold red", markup=False)
            for step in run.steps:
                if step.status == "failed":
                    self.console.print(
                        f"{run.name}: step {step.index + 1} ({step.label}) failed, exit {step.exited}:",
                        style="bold red",
                        markup=False,
                    )
                    if step.stdout.strip() or step.stderr.strip():
                        self._output(step)
                    else:
                        self.console.print(_indent("(no output)"), style="red", markup=False)
        self._records(result)
        self._costs(result)
        self._totals(result)

    def teardown(self, found: Teardown, *, check: bool) -> None:
        """What ``destroy`` deletes (or, with ``check``, would), what it refuses and what it leaves."""
        verb = "would delete" if check else "to delete"
        self.console.print(f"droplets carrying {found.tag}:", style="bold", markup=False)
        for droplet in found.droplets:
            address = droplet.ip_address or "no address"
            self.console.print(f"  {verb}: droplet {droplet.name} (id {droplet.id}, {address})", markup=False)
        for record in found.records:
            self.console.print(f"  {verb}: {record}", markup=False)
        for refusal in found.refused:
            self.console.print(
                f"  refused: {refusal.name} (id {refusal.id}): {refusal.reason}", style="bold red", markup=False
            )
        for name in found.kept:
            self.console.print(f"  kept: {name} (no create: in the playbook)", style="dim", markup=False)
        for record in found.left:
            self.console.print(f"  left: {record} (it points at no droplet deleted here)", style="yellow", markup=False)
        if found.empty:
            self.console.print("  nothing to delete", markup=False)

    def _records(self, result: RunResult) -> None:
        """The A records the playbook keeps (``dns:``): one line each."""
        for run in result.droplets:
            if run.dns is not None:
                record = run.dns
                line = f"dns {record.record} A {record.address or '(the new address)'}: {record.status}"
                style = _STYLES.get(record.status, "")
                self.console.print(f"{line} ({record.detail})" if record.detail else line, style=style, markup=False)

    def _costs(self, result: RunResult) -> None:
        """The droplets created (or to be, in a plan) with their prices, and the total."""
        if not result.priced:
            return
        verb = "to create" if result.mode == "check" else "created"
        for run in result.priced:
            self.console.print(f"{verb}: {run.name} {_price(run.price_monthly, run.price_hourly)}", markup=False)
        total = result.prices()
        line = f"total {verb}: {total['droplets']} droplet(s), {_price(total['monthly'], total['hourly'])}"
        self.console.print(line, style="bold", markup=False)

    def _steps_table(self, result: RunResult) -> None:
        """Steps as rows and droplets as columns while they fit the terminal; one row per droplet after that."""
        if not result.droplets:
            self.message("no droplets to run on")
            return
        labels = [step.label for step in result.droplets[0].steps]
        cell = len("would-change 0.0s")
        wide = 4 + max(map(len, labels), default=4) + sum(max(len(r.name), cell) + 3 for r in result.droplets)
        if wide > self.console.width:
            self._droplets_table(result)
            return
        from rich.table import Table

        table = Table(title=_plain(_title(result)), box=self._box())
        table.add_column("#", justify="right")
        table.add_column("step")
        for run in result.droplets:
            table.add_column(_plain(run.name))
        for index, step in enumerate(result.droplets[0].steps):
            cells = []
            for run in result.droplets:
                this = run.steps[index] if index < len(run.steps) else None
                cells.append(_cell(this, timed=result.mode != "check"))
            table.add_row(str(index + 1), _plain(step.label), *cells)
        self.console.print(table)

    def _droplets_table(self, result: RunResult) -> None:
        """One line per droplet: how many steps ended how, and where it failed (a fleet too wide for columns).

        Plain aligned columns: a rich Table of fifty rows takes seconds to lay out.
        """
        statuses = [s for s in _STYLES if any(step.status == s for run in result.droplets for step in run.steps)]
        header = ["droplet", *statuses, "time", "failed at"]
        rows = []
        for run in result.droplets:
            counts = [str(sum(step.status == s for step in run.steps) or "-") for s in statuses]
            failed = next((step for step in run.steps if step.status == "failed"), None)
            where = f"{failed.index + 1} {failed.label}" if failed else ("(the error below)" if run.error else "")
            rows.append([run.name, *counts, f"{sum(step.duration for step in run.steps):.1f}s", where])
        lines = _columns(header, rows, self.console.width).splitlines()
        self.console.print(_title(result), style="bold", markup=False)
        self.console.print(lines[0], style="bold", markup=False, highlight=False, soft_wrap=True)
        for run, line in zip(result.droplets, lines[1:], strict=False):
            style = "red" if run.failed else None
            self.console.print(line, style=style, markup=False, highlight=False, soft_wrap=True)

    def _snapshots(self, run: DropletRun) -> None:
        """What a user looks at after a run: the processes it started (or restarted), and the
        busiest few. The whole ``ps -Af`` and ``top`` are in ``--json`` and ``--report-dir``."""
        started = run.started_processes
        if started is not None and not started.empty:
            self.table(f"{run.name}: started by this run", started, limit=STARTED_ROWS)
        if run.top is not None and not run.top.empty:
            self.table(f"{run.name}: busiest", run.top, limit=TOP_ROWS, sort="%CPU")

    def table(self, title: str, frame: Any, *, limit: int | None = None, sort: str | None = None) -> None:
        """A snapshot as aligned columns, the largest ``sort`` values first, at most ``limit`` rows.

        Plain columns, as ps prints them: a rich Table per snapshot costs ~15 ms
        to lay out, which adds up over 50 droplets.
        """
        # Plain lists: pandas' per-call overhead adds up over 50 droplets.
        header = [str(c) for c in frame.columns]
        rows = frame.values.tolist()
        if sort in header:
            at = header.index(sort)
            rows.sort(key=lambda row: row[at], reverse=True)  # stable: ties keep ps's order
        shown = rows if limit is None else rows[:limit]
        what = f"{len(shown)} of {len(rows)} rows by {sort}" if sort else f"{len(shown)} of {len(rows)} rows"
        if len(shown) < len(rows):
            what += "; --json has them all"
        self.console.print(f"{title} ({what})", style="bold", markup=False)
        lines = _columns(header, [[str(v) for v in row] for row in shown], self.console.width)
        self.console.print(lines, markup=False, soft_wrap=True)

    def _totals(self, result: RunResult) -> None:
        if result.mode == "check":
            self._plan_totals(result)
            return
        self._run_totals(result)

    def _plan_totals(self, result: RunResult) -> None:
        """A plan's last line: what would be created and changed, what is in place, what could not be checked."""
        changes = sum(run.count("would-change") for run in result.droplets)
        in_place = sum(run.count("ok") for run in result.droplets)
        created = sum(1 for run in result.droplets if run.created)
        parts = [f"{created} droplet(s) to create"] if created else []
        parts += [f"{changes} step(s) to change" if changes or created else "nothing to change", f"{in_place} in place"]
        style = "bold yellow" if changes or created else "bold green"
        failed = [r.name for r in result.droplets if r.failed]
        if failed:
            parts.append(f"could not check {', '.join(failed)} (above)")
            style = "bold red"
        if result.interrupted:
            parts.append("interrupted")
            style = "bold red"
        line = f"plan for {len(result.droplets)} droplet(s): {', '.join(parts)} ({result.duration:.1f}s)"
        self.console.print(line, style=style, markup=False)

    def _run_totals(self, result: RunResult) -> None:
        counts = {s: 0 for s in _STYLES}
        for run in result.droplets:
            for step in run.steps:
                counts[step.status] = counts.get(step.status, 0) + 1
        parts = [f"{n} {s}" for s, n in counts.items() if n]
        failed = [r.name for r in result.droplets if r.failed]
        verdict = f"failed on {', '.join(failed)}" if failed else "all droplets succeeded"
        if result.interrupted:
            verdict = "interrupted: the steps shown skipped never started" + (f"; {verdict}" if failed else "")
        style = "bold red" if failed or result.interrupted else "bold green"
        self.console.print(
            f"{len(result.droplets)} droplet(s), {', '.join(parts) or 'no steps'} in {result.duration:.1f}s: {verdict}",
            style=style,
            markup=False,
        )


def _price(monthly: float | None, hourly: float | None) -> str:
    return f"${monthly or 0:,.2f}/month (${hourly or 0:.5f}/hour)"


def _plain(text: Any) -> Any:
    """Text shown as it is: rich reads ``[bold]`` or ``[/]`` in a plain string as markup (a label
    made of a value, a droplet's name, a log line), and refuses or restyles it."""
    from rich.text import Text

    return text if isinstance(text, Text) else Text(str(text))


def _title(result: RunResult) -> str:
    return f"{result.name or result.playbook} ({'plan' if result.mode == 'check' else result.mode})"


def _cell(step: StepResult | None, *, timed: bool = True) -> Any:
    """A step's status in the table; in a plan (not ``timed``) how long its check took is noise."""
    from rich.text import Text

    if step is None:
        return ""
    if step.status in ("skipped", "done-earlier") or not timed:
        return Text(step.status, style=_STYLES.get(step.status, ""))
    return Text(f"{step.status} {step.duration:.1f}s", style=_STYLES.get(step.status, ""))


def _columns(header: list[str], rows: list[list[str]], width: int) -> str:
    """Aligned text columns, each line cut to ``width`` (the last column is the long one)."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = []
    for cells in (header, *rows):
        line = "  ".join(cell.ljust(w) for cell, w in zip(cells[:-1], widths[:-1], strict=False))
        line = f"  {line}  {cells[-1]}".rstrip() if len(cells) > 1 else f"  {cells[0]}"
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    return "\n".join(lines)


#: A failed step's output shown: the last lines of each stream (the report has 20).
_TAIL_LINES = 10


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
