"""Running a fleet: --fail-fast, Ctrl-C, the run log and --resume, --shard, --quiet, --report-dir."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from poseidon import executor
from poseidon.cli import main
from poseidon.sandbox import Sandbox
from support.fakeclock import FakeClock
from support.sandboxes import PATIENCE, point_at, pointed, process_running, runs_on, wait_for

pytestmark = pytest.mark.sandbox

NAMES = ["d1", "d2", "d3", "d4", "d5"]

#: How long a test waits for an event before it fails: a safety net, never a pace.


@pytest.fixture(scope="module")
def fleet() -> Iterator[Sandbox]:
    with Sandbox(NAMES) as sandbox:
        yield sandbox


@pytest.fixture
def env(fleet: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    point_at(fleet, monkeypatch)
    return fleet


def playbook(tmp_path: Path, steps: str, droplets: list[str] = NAMES) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        f"version: 1\ndroplets: {json.dumps(droplets)}\nsteps:\n{textwrap.dedent(steps)}"
        "report: {ps: false, top: false}\n"
    )
    return path


def statuses(report: dict) -> dict[str, list[str]]:  # type: ignore[type-arg]
    return {d["name"]: [s["status"] for s in d["steps"]] for d in report["droplets"]}


def test_fail_fast_starts_no_new_step_after_the_first_failure(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    # d1 fails once every other droplet runs its first step; those end once d1's connection has
    # closed (its apply lock is free), which poseidon does after it counted d1's failure.
    others = " && ".join(f"[ -e {tmp_path}/started-{name} ]" for name in NAMES[1:])
    d1_lock = env.home("d1") / ".poseidon" / "apply.lock"
    path = playbook(
        tmp_path,
        f"""\
        - run:
            cmd: >-
              if [ "${{droplet.name}}" = d1 ]; then
              until {others}; do sleep 0.05; done; touch {tmp_path}/failed-d1; exit 9; fi;
              touch {tmp_path}/started-${{droplet.name}};
              until [ -e {tmp_path}/failed-d1 ] && flock -n {d1_lock} true; do sleep 0.05; done
            timeout: {PATIENCE:g}
        - run: echo second
        """,
    )
    assert main(["apply", str(path), "--json", "--fail-fast"]) == 1
    report = json.loads(capsys.readouterr().out)
    found = statuses(report)
    assert found["d1"] == ["failed", "skipped"]
    for name in NAMES[1:]:
        assert found[name] == ["changed", "skipped"], found  # their first step was running; the second never started
    assert report["droplets"][1]["steps"][1]["reason"] == "stopped by --fail-fast"


def test_shards_split_the_droplets_without_overlap(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    path = playbook(tmp_path, "- run: echo hi\n")
    seen: list[str] = []
    for index in (1, 2, 3):
        assert main(["apply", str(path), "--json", "--shard", f"{index}/3"]) == 0
        names = [d["name"] for d in json.loads(capsys.readouterr().out)["droplets"]]
        assert 1 <= len(names) <= 2
        seen += names
    assert sorted(seen) == NAMES
    assert main(["apply", str(path), "--shard", "4/3"]) == 2
    assert "1 <= I <= N" in capsys.readouterr().err


def test_the_run_log_records_every_step_and_resume_starts_where_each_droplet_stopped(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    flag = tmp_path / "d3-may-pass"
    path = playbook(
        tmp_path,
        f"""\
        - run: echo one >> resume-count-1
        - run: '[ "${{droplet.name}}" != d3 ] || [ -e {flag} ]'
        - run: echo three >> resume-count-3
        """,
    )
    assert main(["apply", str(path), "--json"]) == 1
    first = statuses(json.loads(capsys.readouterr().out))
    assert first["d3"] == ["changed", "failed", "skipped"]
    logs = list((tmp_path / ".poseidon" / "runs").glob("*.jsonl"))
    assert len(logs) == 1
    records = [json.loads(line) for line in logs[0].read_text().splitlines()]
    assert records[0]["run"]["droplets"] == NAMES
    assert len(records) == 1 + 5 * 3 - 1  # every step that ended, d3's last never ran

    flag.touch()
    assert main(["apply", str(path), "--json", "--resume"]) == 0
    second = statuses(json.loads(capsys.readouterr().out))
    assert second["d3"] == ["done-earlier", "changed", "changed"]
    assert second["d1"] == ["done-earlier", "done-earlier", "done-earlier"]
    assert (env.home("d3") / "resume-count-1").read_text() == "one\n"  # not run twice

    assert main(["apply", str(path), "--json", "--resume"]) == 0  # resuming a resumed run: nothing left
    third = statuses(json.loads(capsys.readouterr().out))
    assert third["d3"] == ["done-earlier"] * 3 and third["d1"] == ["done-earlier"] * 3

    other = tmp_path / "other.yaml"
    other.write_text(path.read_text())
    # Another playbook's log is not its own: a first run, from the first step, saying so.
    assert main(["apply", str(other), "--resume", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "--resume: no run of this playbook is logged in" in err and "starting from the first step" in err
    assert statuses(json.loads(out))["d1"] == ["changed"] * 3


def test_resume_after_the_playbook_changed_starts_from_the_first_step_and_says_why(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """A step inserted since the last run is not 'done earlier': another text, another count."""
    path = playbook(tmp_path, "- run: echo one >> changed-count\n- run: 'false'\n", droplets=["d1"])
    assert main(["apply", str(path), "--json"]) == 1
    capsys.readouterr()
    path = playbook(
        tmp_path, "- run: echo new >> changed-new\n- run: echo one >> changed-count\n- run: 'true'\n", droplets=["d1"]
    )
    assert main(["apply", str(path), "--json", "--resume"]) == 0
    out, err = capsys.readouterr()
    assert "--resume: the playbook changed since its last run: starting from the first step" in err
    assert statuses(json.loads(out))["d1"] == ["changed"] * 3
    assert (env.home("d1") / "changed-new").read_text() == "new\n"


def test_two_runs_in_one_second_get_a_log_each_and_resume_takes_the_later(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()  # when runs start; their waits are real
    monkeypatch.setattr(
        executor,
        "time",
        types.SimpleNamespace(
            time=clock.time, monotonic=time.monotonic, sleep=time.sleep, strftime=time.strftime, gmtime=time.gmtime
        ),
    )
    one_second = float(int(clock.now))
    path = playbook(
        tmp_path,
        f"""\
        - run: echo one
        - run: '[ "${{droplet.name}}" != d2 ] || [ -e {tmp_path}/second-may-pass ]'
        - run: '[ "${{droplet.name}}" != d2 ] || [ -e {tmp_path}/third-may-pass ]'
        """,
        droplets=["d1", "d2"],
    )
    clock.now = one_second + 0.25
    assert main(["apply", str(path), "--json"]) == 1  # d2 stops at the second step
    assert statuses(json.loads(capsys.readouterr().out))["d2"] == ["changed", "failed", "skipped"]
    (tmp_path / "second-may-pass").touch()
    clock.now = one_second + 0.75
    assert main(["apply", str(path), "--json"]) == 1  # the same second, the same process: d2 stops at the third
    assert statuses(json.loads(capsys.readouterr().out))["d2"] == ["changed", "changed", "failed"]

    logs = sorted((tmp_path / ".poseidon" / "runs").glob("*.jsonl"))
    headers = [json.loads(log.read_text().splitlines()[0])["run"] for log in logs]
    assert [h["started"] for h in headers] == [one_second + 0.25, one_second + 0.75]  # a log each, by start time
    # Each has its own run's steps only: d2's last never ran in the first, every step ended in the second.
    assert [len(log.read_text().splitlines()) for log in logs] == [1 + 5, 1 + 6]
    # The names do not decide which run is the later: swapped, --resume still takes the later one.
    earlier, later = logs
    later.rename(tmp_path / "swapping")
    earlier.rename(later)
    (tmp_path / "swapping").rename(earlier)

    (tmp_path / "third-may-pass").touch()
    clock.now = one_second + 0.9
    assert main(["apply", str(path), "--json", "--resume"]) == 0
    resumed = statuses(json.loads(capsys.readouterr().out))
    assert resumed["d2"] == ["done-earlier", "done-earlier", "changed"]  # from the later run's stop, not the earlier's
    assert resumed["d1"] == ["done-earlier", "done-earlier", "done-earlier"]


def test_quiet_prints_only_the_summary_and_report_dir_writes_csvs(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("version: 1\ndroplets: [d1, d2]\nsteps: [{run: echo hi}]\n")
    assert main(["apply", str(path), "--quiet", "--report-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "changed" in out and "all droplets succeeded" in out
    assert "ps -Af" not in out and "d1             changed" not in out
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["d1-ps.csv", "d1-top.csv", "d2-ps.csv", "d2-top.csv", "report.json"]
    assert (tmp_path / "out" / "d1-ps.csv").read_text().startswith("UID,PID,PPID,C,STIME,TTY,TIME,CMD\n")


class _Lines:
    """A process's stdout, read line by line in a thread, so a test can wait for a line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        self._thread = threading.Thread(target=lambda: self.lines.extend(process.stdout or []), daemon=True)
        self._thread.start()

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def text(self) -> str:
        self._thread.join(PATIENCE)
        return "".join(self.lines)


def _apply_in_background(path: Path) -> subprocess.Popen[str]:
    """``poseidon apply PATH``, its stdout and stderr in one pipe (read with :class:`_Lines`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "poseidon.cli", "apply", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )


def _interrupted_once(path: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], _Lines]:
    """``apply PATH`` in the background, given Ctrl-C once both its first steps (on d4 and d5,
    each touching ``running-NAME`` in ``tmp_path``) run, and once it has said what it waits for."""
    process = _apply_in_background(path)
    out = _Lines(process)
    try:
        wait_for("both first steps run", lambda: all((tmp_path / f"running-{n}").exists() for n in ("d4", "d5")))
        process.send_signal(signal.SIGINT)
        wait_for("Ctrl-C's notice for each droplet", lambda: out.count("(Ctrl-C again stops it)") == 2)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, out


def test_ctrl_c_says_what_it_waits_for_lets_running_steps_end_and_exits_130(tmp_path: Path, env: Sandbox) -> None:
    stopped = tmp_path / "stopped"
    # Each first step runs until the test has seen Ctrl-C's notice: it ends after Ctrl-C, never before.
    path = playbook(
        tmp_path,
        f"""\
        - run:
            cmd: >-
              touch {tmp_path}/running-${{droplet.name}};
              until [ -e {stopped} ]; do sleep 0.05; done; echo slept > interrupted-first
            timeout: {PATIENCE:g}
        - run: echo never > interrupted-second
        """,
        droplets=["d4", "d5"],
    )
    process, out = _interrupted_once(path, tmp_path)
    try:
        assert out.count("Ctrl-C: waiting for it to end: step 1 (run touch") == 2
        stopped.touch()
        process.wait(timeout=2 * PATIENCE)
    finally:
        process.kill()
        process.wait()
    text = out.text()
    assert process.returncode == 130, text
    assert "interrupted: the steps shown skipped never started" in text
    assert "Traceback" not in text
    for name in ("d4", "d5"):
        assert (env.home(name) / "interrupted-first").read_text() == "slept\n"  # the running step ended
        assert not (env.home(name) / "interrupted-second").exists()


def _interrupted(process: subprocess.Popen[str], times: int) -> float:
    """Ctrl-C ``process`` ``times`` times, 5 ms apart; the seconds until it ended (killed if it did not)."""
    started = time.monotonic()
    try:
        for _ in range(times):
            process.send_signal(signal.SIGINT)
            time.sleep(0.005)
        process.wait(timeout=PATIENCE)
        return time.monotonic() - started
    finally:
        process.kill()
        process.wait()


def test_a_second_ctrl_c_stops_the_running_steps_and_exits_130(tmp_path: Path, env: Sandbox) -> None:
    path = playbook(
        tmp_path,
        f"""\
        - run: touch {tmp_path}/running-${{droplet.name}}; sleep {PATIENCE + 0.123:g}; echo slept > aborted-first
        - run: echo never > aborted-second
        """,
        droplets=["d4", "d5"],
    )
    process, out = _interrupted_once(path, tmp_path)
    took = _interrupted(process, times=1)
    text = out.text()
    assert process.returncode == 130, text
    assert took < PATIENCE / 2, "it did not wait for the steps"
    assert text.count("interrupted by a second Ctrl-C") >= 2 and "Traceback" not in text
    for name in ("d4", "d5"):
        assert not (env.home(name) / "aborted-second").exists()
    # The running steps were stopped there (their sleep too), and the apply lock went with poseidon's shell.
    wait_for("the steps' processes end", lambda: not runs_on(env, ["d4", "d5"], f"sleep {PATIENCE + 0.123:g}"))
    again = playbook(tmp_path, "- run: echo free > free-again\n", droplets=["d4", "d5"])
    assert main(["apply", str(again), "--quiet"]) == 0, "the droplets are free again at once"
    assert all((env.home(name) / "free-again").exists() for name in ("d4", "d5"))


@pytest.mark.parametrize("step", ["forks", "readiness"])
def test_two_quick_ctrl_cs_stop_even_a_step_that_forks_or_a_readiness_wait_and_free_the_droplets(
    step: str, tmp_path: Path, env: Sandbox
) -> None:
    """Ctrl-C twice, 5 ms apart: the second comes while the first's notices print. Bounded, and the
    apply lock freed: whether the step forks without end or the droplet waits for the dpkg lock."""
    import fcntl

    held = None
    if step == "forks":
        steps = f"- run: touch {tmp_path}/running-${{droplet.name}}; while :; do sleep 7.77 & sleep 0.02; done\n"
    else:  # apt waits for the dpkg lock before the first step, as on a droplet still booting
        held = {n: open(env.dpkg_dir(n) / "lock-frontend", "w") for n in ("d4", "d5")}
        for lock in held.values():
            fcntl.lockf(lock, fcntl.LOCK_EX)
        steps = "- apt: [git]\n"
    path = playbook(tmp_path, steps, droplets=["d4", "d5"])
    process = _apply_in_background(path)
    out = _Lines(process)
    try:
        if step == "forks":
            wait_for("both steps fork", lambda: all((tmp_path / f"running-{n}").exists() for n in ("d4", "d5")))
        else:
            # The readiness gate's waiter names the droplet's dpkg folder on its command line.
            waiting = lambda: all(runs_on(env, [n], str(env.dpkg_dir(n))) for n in ("d4", "d5"))  # noqa: E731
            wait_for("both wait for the dpkg lock", waiting)
        took = _interrupted(process, times=2)
    finally:
        if process.poll() is None:  # a wait above failed
            process.kill()
            process.wait()
        for lock in (held or {}).values():
            lock.close()
    text = out.text()
    assert process.returncode == 130, text
    assert took < PATIENCE / 3, f"it took {took:.1f} s"
    assert "Traceback" not in text and "droplet(s)" in text, "the report is printed"
    if step == "forks":
        wait_for("no step forks any more", lambda: not runs_on(env, ["d4", "d5"], "sleep 7.77"), timeout=PATIENCE)
    free = playbook(tmp_path, "- run: echo free > free-again\n", droplets=["d4", "d5"])
    assert main(["apply", str(free), "--quiet"]) == 0, "the apply lock went with the run"


def test_a_second_apply_on_a_busy_droplet_refuses_and_says_who_holds_it(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    import poseidon.api as po

    path = playbook(tmp_path, "- run: echo hi\n", droplets=["d1", "d2"])
    holder = po.connect().droplets.by_name("d1").connect()
    assert holder.lock("the other run").held  # held while the connection lives
    try:
        assert main(["apply", str(path), "--json"]) == 1
        report = json.loads(capsys.readouterr().out)
        d1, d2 = report["droplets"]
        assert "d1 is being provisioned by another poseidon run (the other run)" in d1["error"]
        assert [s["status"] for s in d1["steps"]] == ["skipped"]
        assert [s["status"] for s in d2["steps"]] == ["changed"]
    finally:
        holder.close()  # the lock ends with the connection
    assert main(["apply", str(path), "--json"]) == 0
    capsys.readouterr()


def test_the_report_shows_the_processes_the_run_started(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ready once its sleep runs (not when some time has passed); the rows that count are d2's own
    # processes: a sandbox droplet's ps lists the whole machine.
    ready = "ps -o args= -g $(cat .poseidon/started.pid) | grep -qx 'sleep 777'"
    path = tmp_path / "site.yaml"
    path.write_text(
        "version: 1\ndroplets: [d2]\n"
        f"steps: [{{nohup: {{cmd: 'sleep 777', name: started, ready: {{cmd: {json.dumps(ready)}}}}}}}]\n"
        "report: {ps: true, top: false}\n"
    )
    assert main(["apply", str(path), "--json"]) == 0
    started = json.loads(capsys.readouterr().out)["droplets"][0]["started_processes"]
    mine = env.pids("d2")
    sleepers = [row["PID"] for row in started if row["PID"] in mine and row["CMD"] == "sleep 777"]
    assert len(sleepers) == 1
    # Only d2's: on a sandbox, ps lists the whole machine; the snapshot's own ps is not listed either.
    assert {row["PID"] for row in started} <= mine, started
    assert {row["CMD"] for row in started} == {"sleep 777", 'sh -c eval "$(cat)" poseidon:started'}
    assert main(["apply", str(path), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["droplets"][0]
    mine = env.pids("d2")
    assert sleepers[0] in mine and sleepers[0] in [row["PID"] for row in again["ps"]]  # it still runs
    assert not [row for row in again["started_processes"] if row["PID"] in mine and "sleep 777" in row["CMD"]]


def test_status_lists_each_managed_process_alive_or_dead_with_its_log(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    path = playbook(
        tmp_path,
        """\
        - run: {cmd: mkdir -p status-app, creates: status-app}
        - chdir: status-app
        - nohup: {cmd: "echo serving; sleep 900", name: server, ready: {cmd: "grep -qx serving server.log"}}
        - nohup: {cmd: "echo one-off", name: short, grace: 0}
        """,
        droplets=["d3"],
    )
    assert main(["apply", str(path), "--quiet"]) == 0
    capsys.readouterr()
    short = int((env.home("d3") / "status-app" / ".poseidon" / "short.pid").read_text())
    wait_for("'short' ends", lambda: not process_running(short))
    assert main(["status", str(path), "--json"]) == 1  # one process is dead
    found = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert found["server"]["state"] == "alive" and found["server"]["pid"] > 0
    assert found["server"]["log_tail"] == "serving"
    assert found["server"]["directory"] == str(env.home("d3") / "status-app")
    assert found["short"]["state"] == "dead" and found["short"]["log_tail"] == "one-off"
    assert main(["status", str(path)]) == 1
    table = capsys.readouterr().out
    assert "server" in table and "alive" in table and "dead" in table


def test_droplets_queued_behind_forks_never_start_after_a_fail_fast_stop(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    path = playbook(
        tmp_path,
        """\
        - run: '[ "${droplet.name}" != d1 ] || exit 4; touch queued-ran'
        """,
        droplets=["d1", "d2", "d3"],
    )
    assert main(["apply", str(path), "--json", "--fail-fast", "--forks", "1"]) == 1
    runs = {d["name"]: d for d in json.loads(capsys.readouterr().out)["droplets"]}
    assert [s["status"] for s in runs["d1"]["steps"]] == ["failed"]
    for name in ("d2", "d3"):
        assert [(s["status"], s["reason"]) for s in runs[name]["steps"]] == [("skipped", "stopped by --fail-fast")]
        assert not (env.home(name) / "queued-ran").exists()


def test_status_masks_secrets_in_log_tails(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATUS_SECRET", "status-secret-value")
    path = tmp_path / "site.yaml"
    path.write_text(
        "version: 1\ndroplets: [d4]\nvars:\n  token: {secret: true, env: STATUS_SECRET}\n"
        "steps:\n  - nohup: {cmd: 'echo using ${token}; sleep 600', name: masked,"
        " ready: {cmd: 'grep -q using masked.log'}}\n"
    )
    assert main(["apply", str(path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert "status-secret-value" not in out
    assert json.loads(out)[0]["log_tail"] == "using ***"


def test_droplets_sharing_a_name_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import poseidon.api as po

    with pointed([{"name": "twin", "tags": ["pair"]}], monkeypatch) as sandbox:
        po.connect().droplets.create(
            "twin", region="nyc3", size="s-1vcpu-1gb", image="ubuntu-24-04-x64", tags=["pair"], wait=True, timeout=30
        )
        path = tmp_path / "site.yaml"
        path.write_text("version: 1\ndroplets: [{tag: pair}]\nsteps: [{run: touch twin-ran}]\n")
        assert main(["apply", str(path)]) == 2
        assert "several droplets are named 'twin'" in capsys.readouterr().err
        assert not (sandbox.home("twin") / "twin-ran").exists()


def test_a_run_that_cannot_write_its_log_creates_no_droplet(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    import poseidon.api as po

    (tmp_path / ".poseidon").write_text("a file where the run log's folder should be\n")
    path = tmp_path / "site.yaml"
    path.write_text(
        "version: 1\nname: never\ndroplets:\n"
        "  - {name: never-made, create: {region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}}\n"
        "steps: [{run: echo hi}]\n"
    )
    assert main(["apply", str(path)]) == 2
    assert "cannot write the run log" in capsys.readouterr().err
    assert po.connect().droplets.find("never-made") == []


def test_resume_passes_over_a_run_that_was_refused_before_any_step(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    import poseidon.api as po

    path = playbook(tmp_path, "- run: echo one >> refused-count\n- run: test -e refused-may-pass\n", droplets=["d1"])
    assert main(["apply", str(path), "--json"]) == 1  # the second step fails: resume from it
    holder = po.connect().droplets.by_name("d1").connect()
    assert holder.lock("the other run").held
    try:
        assert main(["apply", str(path), "--json"]) == 1  # refused as busy: its log holds no step
    finally:
        holder.close()
    capsys.readouterr()
    assert len(list((tmp_path / ".poseidon" / "runs").glob("*.jsonl"))) == 2
    (env.home("d1") / "refused-may-pass").touch()
    assert main(["apply", str(path), "--resume", "--json"]) == 0
    assert statuses(json.loads(capsys.readouterr().out))["d1"] == ["done-earlier", "changed"]
    assert (env.home("d1") / "refused-count").read_text() == "one\n", "the first step ran again"


def test_a_hand_edited_run_log_is_a_located_error_and_a_huge_resume_point_builds_nothing_huge(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    from poseidon import runlog, spec

    path = playbook(tmp_path, "- run: echo one\n- run: echo two\n", droplets=["d1"])
    runs = tmp_path / ".poseidon" / "runs"
    runs.mkdir(parents=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()  # a log of this playbook as it is
    header = {"run": {"playbook": str(path), "mode": "apply", "started": 1.0, "droplets": ["d1"], "sha256": digest}}
    log = runs / "edited.jsonl"

    def write(*records: object, raw: str = "") -> None:
        log.write_text("".join(json.dumps(r) + "\n" for r in records) + raw)

    loaded = spec.load(path)
    write({"run": {**header["run"], "resumed": {"d1": 99999999999999}}})
    assert runlog.resume_points(runs, loaded, str(path)) == {"d1": 2}  # the end, at once
    write(header, raw='{"droplet": "d1", "index": "abc", "status": "ok"}\n')
    assert main(["apply", str(path), "--resume"]) == 2
    assert f"{log}:2: --resume: a step record needs a droplet name and a step number" in capsys.readouterr().err
    write(header, raw='not json\n{"droplet": "d1", "index": 0, "status": "ok"}\n')
    assert main(["apply", str(path), "--resume"]) == 2
    assert f"{log}:2: --resume: not a JSON line: the run log is damaged" in capsys.readouterr().err
    write(header, {"droplet": "d1", "index": 0, "status": "ok"}, raw='{"droplet": "d1", "ind')  # cut by a crash
    assert runlog.resume_points(runs, loaded, str(path)) == {"d1": 1}
