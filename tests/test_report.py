"""The reporter's output, pinned: a fixed run rendered at a fixed width with the ASCII box style."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from poseidon.report import Reporter, to_json
from poseidon.results import DropletRun, RunResult, StepResult

GOLDEN = Path(__file__).parent / "golden"


def a_run() -> RunResult:
    ps = pd.DataFrame(
        [
            ["root", 1, 0, 0, "10:00", "?", "00:00:01", "/sbin/init"],
            ["root", 4242, 1, 0, "10:01", "?", "00:00:00", "python app.py --port 5000"],
        ],
        columns=["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
    )
    top = pd.DataFrame(
        [[0.5, 1.0, "root", "init"], [12.5, 3.2, "root", "python"]], columns=["%CPU", "%MEM", "USER", "COMMAND"]
    )
    web1 = DropletRun("web-1", 101, "10.0.0.2", ps=ps, top=top)
    web1.steps = [
        StepResult(0, "apt", "apt git curl", "ok", 0.21, reason="2 package(s) already installed"),
        StepResult(1, "git", "git owner/app", "changed", 1.5),
        StepResult(2, "run", "run make", "changed", 0.4),
    ]
    web2 = DropletRun("web-2", 102, "10.0.0.3")
    web2.steps = [
        StepResult(0, "apt", "apt git curl", "ok", 0.2),
        StepResult(1, "git", "git owner/app", "failed", 0.3, stderr="fatal: repository not found\n", exited=128),
        StepResult(2, "run", "run make", "skipped"),
    ]
    return RunResult("site.yaml", "golden", "apply", [web1, web2], started=0.0, duration=2.25)


def render(write: object) -> str:
    buffer = io.StringIO()
    reporter = Reporter(buffer, width=90)
    write(reporter)  # type: ignore[operator]
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def no_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("FORCE_COLOR", raising=False)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; UPDATE_GOLDEN=1 rewrites it after review"


def test_the_summary_shows_every_step_per_droplet_the_snapshots_and_the_verdict() -> None:
    check_golden("summary.txt", render(lambda r: r.summary(a_run())))


def test_on_a_terminal_a_long_command_line_is_cut_to_its_width_and_the_busiest_come_first() -> None:
    run = a_run()
    web1 = run.droplets[0]
    web1.ps.loc[1, "CMD"] = "python app.py " + "--flag " * 40
    web1.started_processes = web1.ps.iloc[[1]]
    web1.top = pd.DataFrame(
        [[float(i), 0.1, "root", f"proc{i}"] for i in range(30)], columns=["%CPU", "%MEM", "USER", "COMMAND"]
    )
    lines = render(lambda r: r.summary(run)).splitlines()
    assert max(len(line) for line in lines) <= 90
    assert lines[0] == "web-1: started by this run (1 of 1 rows)"
    cut = next(line for line in lines if "python app.py --flag" in line)
    assert len(cut) == 90 and cut.endswith("…")
    top = lines.index("web-1: busiest (5 of 30 rows by %CPU; --json has them all)")
    assert [line.split()[0] for line in lines[top + 2 : top + 7]] == ["29.0", "28.0", "27.0", "26.0", "25.0"]
    assert not any("ps -Af" in line for line in lines), "the whole process list is in --json, not here"


def test_off_a_terminal_nothing_is_cut() -> None:
    run = a_run()
    run.droplets[0].started_processes = run.droplets[0].ps.assign(CMD="python app.py " + "--flag " * 40)
    buffer = io.StringIO()
    Reporter(buffer).summary(run)  # a file: no width given, none guessed
    assert "…" not in buffer.getvalue()
    assert "python app.py " + "--flag " * 39 + "--flag" in buffer.getvalue()


def test_a_fleet_too_wide_for_columns_gets_one_row_per_droplet() -> None:
    template = a_run()
    fleet = []
    for i in range(12):
        run = DropletRun(f"web-{i:02d}", 100 + i, f"10.0.0.{i}")
        run.steps = [
            StepResult(s.index, s.kind, s.label, s.status, s.duration, exited=s.exited)
            for s in template.droplets[i % 2].steps
        ]
        fleet.append(run)
    result = RunResult("site.yaml", "fleet", "apply", fleet, started=0.0, duration=3.0)
    lines = render(lambda r: r.summary(result, snapshots=False)).splitlines()
    assert max(len(line) for line in lines) <= 90
    header = lines.index("fleet (apply)") + 1
    assert lines[header].split() == ["droplet", "ok", "changed", "failed", "skipped", "time", "failed", "at"]
    rows = [line.split(None, 6) for line in lines[header + 1 : header + 13]]
    assert rows[0] == ["web-00", "1", "2", "-", "-", "2.1s"]
    assert rows[1] == ["web-01", "1", "-", "1", "1", "0.5s", "2 git owner/app"]
    assert all(row[0] == f"web-{i:02d}" for i, row in enumerate(rows))
    assert lines[header + 13] == "web-01: step 2 (git owner/app) failed, exit 128:"
    assert "12 droplet(s), 12 ok, 12 changed, 6 failed, 6 skipped in 3.0s" in " ".join(lines)


def test_progress_lines_show_the_status_the_reason_and_a_failures_tail() -> None:
    run = a_run()
    text = render(lambda r: [r.step_done(d.name, s) for d in run.droplets for s in d.steps if s.status != "skipped"])
    check_golden("progress.txt", text)


def test_the_json_report_holds_the_steps_and_every_snapshot_row() -> None:
    report = json.loads(to_json(a_run()))
    assert [d["name"] for d in report["droplets"]] == ["web-1", "web-2"]
    assert report["failed"] is True
    assert report["droplets"][1]["steps"][1]["stderr_tail"] == "fatal: repository not found"
    assert report["droplets"][0]["ps"][1]["CMD"] == "python app.py --port 5000"
    assert report["droplets"][0]["top"][1]["%CPU"] == 12.5
    assert report["droplets"][1]["ps"] is None


def test_a_terminal_gets_a_live_panel_of_each_droplets_current_step() -> None:
    from rich.console import Console

    reporter = Reporter(io.StringIO(), width=90)
    reporter.console = Console(file=io.StringIO(), width=90, force_terminal=True, color_system=None)
    run = a_run()
    with reporter.live(["apt git curl", "git owner/app", "run make"]):
        reporter.notice("web-2", "waiting for cloud-init to finish")
        reporter.step_done("web-1", run.droplets[0].steps[0])
        panel = Console(file=io.StringIO(), width=90, color_system=None)
        panel.print(reporter._panel())
        text = panel.file.getvalue()  # type: ignore[attr-defined]
    assert "web-1  2/3 git owner/app" in text
    assert "web-2  1/3 apt git curl" in text
    assert reporter._current is None  # the panel is gone with the run


def test_off_a_terminal_there_is_no_live_panel() -> None:
    reporter = Reporter(io.StringIO(), width=90)
    with reporter.live(["one"]):
        reporter.step_done("web-1", a_run().droplets[0].steps[0])
        assert reporter._current is None


def test_an_interrupted_run_never_says_all_droplets_succeeded() -> None:
    run = a_run()
    run.droplets = run.droplets[:1]
    run.interrupted = True
    last = render(lambda r: r.summary(run, snapshots=False)).splitlines()[-1]
    assert last.endswith("interrupted: the steps shown skipped never started")
    assert "succeeded" not in last
