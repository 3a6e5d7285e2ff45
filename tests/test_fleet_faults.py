"""Eight droplets, one of which loses its connection or reboots mid-run: the others finish, --resume mends it."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from poseidon.cli import main
from poseidon.errors import SSHConnectError
from poseidon.sandbox import Sandbox
from poseidon.ssh import SSHClient
from support.sandboxes import pointed, process_running

pytestmark = pytest.mark.sandbox

NAMES = [f"n{i}" for i in range(1, 9)]

# On n5, the third step kills the sshd process serving this connection, once.
PLAYBOOK = f"""
version: 1
droplets: {json.dumps(NAMES)}
steps:
  - run: echo one >> fault-count-1
  - run: echo two >> fault-count-2
  - run: |
      if [ "${{droplet.name}}" = n5 ] && [ ! -e dropped-once ]; then
        touch dropped-once
        p=$$
        while [ "$(ps -o comm= -p "$p")" != sshd ]; do p=$(ps -o ppid= -p "$p" | tr -d ' '); done
        kill -9 "$p"
      fi
      echo three >> fault-count-3
  - run: echo four >> fault-count-4
report: {{ps: true, top: false}}
"""


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with pointed(NAMES, monkeypatch) as sandbox:
        yield sandbox


def test_a_connection_lost_mid_run_fails_that_droplet_at_that_step_and_resume_finishes_it(
    tmp_path: Path, fleet: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = tmp_path / "site.yaml"
    playbook.write_text(textwrap.dedent(PLAYBOOK))
    assert main(["apply", str(playbook), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    runs = {d["name"]: d for d in report["droplets"]}
    for name in NAMES:
        if name != "n5":
            assert [s["status"] for s in runs[name]["steps"]] == ["changed"] * 4, name
    lost = runs["n5"]
    assert [s["status"] for s in lost["steps"]] == ["changed", "changed", "failed", "skipped"]
    assert "connection was lost" in lost["steps"][2]["stderr_tail"]
    assert not lost["unreachable"]

    log = next((tmp_path / ".poseidon" / "runs").glob("*.jsonl"))
    records = [json.loads(line) for line in log.read_text().splitlines()[1:]]
    assert len(records) == 7 * 4 + 3  # every step that ended, on every droplet

    assert main(["apply", str(playbook), "--json", "--resume"]) == 0
    resumed = {d["name"]: [s["status"] for s in d["steps"]] for d in json.loads(capsys.readouterr().out)["droplets"]}
    assert resumed["n5"] == ["done-earlier", "done-earlier", "changed", "changed"]
    for name in NAMES:
        if name != "n5":
            assert resumed[name] == ["done-earlier"] * 4
        home = fleet.home(name)
        for step in (1, 2, 4):
            assert (home / f"fault-count-{step}").read_text().count("\n") == 1, (name, step)  # nothing ran twice


# On n5, the fourth step waits for the test to power the droplet off under it, once.
REBOOT_PLAYBOOK = f"""
version: 1
droplets: {json.dumps(NAMES)}
steps:
  - run: echo one >> boot-count-1
  - nohup: {{cmd: sleep 600, name: app, grace: 0}}
  - nohup: {{cmd: sleep 601, name: worker, grace: 0, restart: true}}
  - run: |
      if [ "${{droplet.name}}" = n5 ] && [ ! -e rebooted ]; then
        touch rebooted power-off-now
        sleep 30
      fi
      echo four >> boot-count-4
  - run: echo five >> boot-count-5
report: {{ps: false, top: false}}
"""


def _pid(home: Path, process: str) -> int:
    return int((home / ".poseidon" / f"{process}.pid").read_text())


@contextmanager
def _power_off_when_asked(sandbox: Sandbox, name: str) -> Iterator[None]:
    """While the block runs, power ``name`` off as soon as its step asks (a file in its home)."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if (sandbox.home(name) / "power-off-now").exists():
                sandbox.power_off(name)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def _power_on_after_a_refusal(sandbox: Sandbox, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Power ``name`` on when a connection to it has been refused, so that poseidon surely waited for it."""
    opened = SSHClient.open

    def open_or_boot(client: SSHClient) -> SSHClient:
        try:
            return opened(client)
        except SSHConnectError:
            if client.host == sandbox.address(name):
                assert not sandbox.is_on(name)
                sandbox.power_on(name)
            raise

    monkeypatch.setattr(SSHClient, "open", open_or_boot)


def test_a_droplet_that_reboots_mid_run_fails_at_that_step_and_resume_waits_for_it_and_restarts_its_processes(
    tmp_path: Path, fleet: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    playbook = tmp_path / "site.yaml"
    playbook.write_text(textwrap.dedent(REBOOT_PLAYBOOK))
    with _power_off_when_asked(fleet, "n5"):
        assert main(["apply", str(playbook), "--json"]) == 1
    assert not fleet.is_on("n5"), "the step never asked to be powered off"
    report = json.loads(capsys.readouterr().out)
    runs = {d["name"]: d for d in report["droplets"]}
    for name in NAMES:
        if name != "n5":
            assert [s["status"] for s in runs[name]["steps"]] == ["changed"] * 5, name
    lost = runs["n5"]
    assert [s["status"] for s in lost["steps"]] == ["changed", "changed", "changed", "failed", "skipped"]
    assert "connection was lost" in lost["steps"][3]["stderr_tail"]
    log = next((tmp_path / ".poseidon" / "runs").glob("*.jsonl"))
    assert len(log.read_text().splitlines()[1:]) == 7 * 5 + 4  # every step that ended, on every droplet
    # The power cut ended the processes the nohup steps started.
    before = {name: {p: _pid(fleet.home(name), p) for p in ("app", "worker")} for name in NAMES}
    assert not any(process_running(pid) for pid in before["n5"].values())

    # The droplet is still off when --resume starts; it comes back once poseidon has been refused.
    _power_on_after_a_refusal(fleet, "n5", monkeypatch)
    assert main(["apply", str(playbook), "--json", "--resume"]) == 0
    out, err = capsys.readouterr()
    assert "waiting for SSH" in err
    resumed = {d["name"]: [s["status"] for s in d["steps"]] for d in json.loads(out)["droplets"]}
    # --resume checks the nohup steps again, restart: true or not: it starts the processes
    # the reboot ended, and leaves running ones be.
    assert resumed["n5"] == ["done-earlier", "changed", "changed", "changed", "changed"]
    for name in NAMES:
        after = {p: _pid(fleet.home(name), p) for p in ("app", "worker")}
        if name == "n5":
            assert all(after[p] != before[name][p] and process_running(after[p]) for p in after)
        else:
            assert resumed[name] == ["done-earlier", "ok", "ok", "done-earlier", "done-earlier"], name
            assert after == before[name]
        for step in (1, 4, 5):
            assert (fleet.home(name) / f"boot-count-{step}").read_text().count("\n") == 1, (name, step)


RESUME_PLAYBOOK = """
version: 1
droplets: [n1, n2, n3]
steps:
  - run: echo one >> count-1
  - run: "[ -e may-pass ] && echo two >> count-2"
  - run: echo three >> count-3
report: {ps: false, top: false}
"""


def test_a_resume_limited_to_some_droplets_keeps_the_others_where_they_were(
    tmp_path: Path, fleet: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = tmp_path / "site.yaml"
    playbook.write_text(RESUME_PLAYBOOK)
    assert main(["apply", str(playbook), "--json"]) == 1  # step 2 fails everywhere
    for name in ("n1", "n2", "n3"):
        (fleet.home(name) / "may-pass").touch()
    assert main(["apply", str(playbook), "--json", "--resume", "--limit", "n1"]) == 0
    assert main(["apply", str(playbook), "--json", "--resume"]) == 0
    capsys.readouterr()
    for name in ("n1", "n2", "n3"):
        for step in (1, 2, 3):
            assert (fleet.home(name) / f"count-{step}").read_text().count("\n") == 1, (name, step)


def test_a_droplet_a_resume_could_not_reach_resumes_next_time_where_it_was(
    tmp_path: Path, fleet: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    from poseidon import executor, runlog, spec

    path = tmp_path / "site.yaml"
    path.write_text(RESUME_PLAYBOOK)
    playbook = spec.loads(RESUME_PLAYBOOK)
    runs = tmp_path / ".poseidon" / "runs"  # where `apply` logs this playbook's runs
    assert main(["apply", str(path), "--json"]) == 1  # step 2 fails everywhere
    capsys.readouterr()
    for name in ("n1", "n2", "n3"):
        (fleet.home(name) / "may-pass").touch()

    # A resume of n1 and n2 (n3 left out with --limit) while n2 is powered off. As `apply --resume`
    # does, but with no wait for a droplet whose SSH port refuses: poseidon's own is a minute.
    fleet.power_off("n2")
    resumed = executor.apply(
        playbook,
        path=str(path),
        options=executor.RunOptions(
            limit=("n1", "n2"),
            resume=runlog.resume_points(runs, playbook, str(path)),
            run_log=runs,
            ready_timeout=0.0,
        ),
    )
    reached = {d.name: d for d in resumed.droplets}
    assert reached["n2"].unreachable and reached["n2"].error, "n2 was reached"
    assert [s.status for s in reached["n1"].steps] == ["done-earlier", "changed", "changed"]
    assert not (fleet.home("n2") / "count-2").exists()
    assert runlog.resume_points(runs, playbook, str(path)) == {"n1": 3, "n2": 1, "n3": 1}

    fleet.power_on("n2")
    assert main(["apply", str(path), "--json", "--resume"]) == 0
    statuses = {d["name"]: [s["status"] for s in d["steps"]] for d in json.loads(capsys.readouterr().out)["droplets"]}
    assert statuses == {
        "n1": ["done-earlier", "done-earlier", "done-earlier"],
        "n2": ["done-earlier", "changed", "changed"],  # where it was before the resume that could not reach it
        "n3": ["done-earlier", "changed", "changed"],
    }
    for name in ("n1", "n2", "n3"):
        for step in (1, 2, 3):
            assert (fleet.home(name) / f"count-{step}").read_text().count("\n") == 1, (name, step)
