"""Eight droplets, one of which loses its connection or reboots mid-run: the others finish, --resume mends it."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from poseidon.cli import main
from poseidon.sandbox import Sandbox
from sandboxes import point_at, process_running

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
    with Sandbox(NAMES) as sandbox:
        point_at(sandbox, monkeypatch)
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
    assert resumed["n5"] == ["skipped", "skipped", "changed", "changed"]
    for name in NAMES:
        if name != "n5":
            assert resumed[name] == ["skipped"] * 4
        home = fleet.home(name)
        for step in (1, 2, 4):
            assert (home / f"fault-count-{step}").read_text().count("\n") == 1, (name, step)  # nothing ran twice


# On n5, the third step waits for the test to power the droplet off under it, once.
REBOOT_PLAYBOOK = f"""
version: 1
droplets: {json.dumps(NAMES)}
steps:
  - run: echo one >> boot-count-1
  - nohup: {{cmd: sleep 600, name: app, grace: 0}}
  - run: |
      if [ "${{droplet.name}}" = n5 ] && [ ! -e rebooted ]; then
        touch rebooted power-off-now
        sleep 30
      fi
      echo three >> boot-count-3
  - run: echo four >> boot-count-4
report: {{ps: false, top: false}}
"""


def _app_pid(home: Path) -> int:
    return int((home / ".poseidon" / "app.pid").read_text())


def _power_off_when_asked(sandbox: Sandbox, name: str, timeout: float = 30.0) -> threading.Thread:
    """Power ``name`` off as soon as its step asks, in a thread."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not (sandbox.home(name) / "power-off-now").exists():
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        sandbox.power_off(name)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def test_a_droplet_that_reboots_mid_run_fails_at_that_step_and_resume_waits_for_it_and_restarts_its_app(
    tmp_path: Path, fleet: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = tmp_path / "site.yaml"
    playbook.write_text(textwrap.dedent(REBOOT_PLAYBOOK))
    watcher = _power_off_when_asked(fleet, "n5")
    assert main(["apply", str(playbook), "--json"]) == 1
    watcher.join(timeout=5)
    report = json.loads(capsys.readouterr().out)
    runs = {d["name"]: d for d in report["droplets"]}
    for name in NAMES:
        if name != "n5":
            assert [s["status"] for s in runs[name]["steps"]] == ["changed"] * 4, name
    lost = runs["n5"]
    assert [s["status"] for s in lost["steps"]] == ["changed", "changed", "failed", "skipped"]
    assert "connection was lost" in lost["steps"][2]["stderr_tail"]
    assert "rebooted" in lost["steps"][2]["stderr_tail"]
    log = next((tmp_path / ".poseidon" / "runs").glob("*.jsonl"))
    assert len(log.read_text().splitlines()[1:]) == 7 * 4 + 3  # every step that ended, on every droplet
    # The power cut ended the app the second step started.
    first_app = _app_pid(fleet.home("n5"))
    assert not process_running(first_app)
    others = {name: _app_pid(fleet.home(name)) for name in NAMES if name != "n5"}

    # The droplet is still off when --resume starts, and comes back two seconds later.
    boot = threading.Timer(2.0, fleet.power_on, ["n5"])
    boot.start()
    try:
        assert main(["apply", str(playbook), "--json", "--resume"]) == 0
    finally:
        boot.cancel()
    out, err = capsys.readouterr()
    assert "waiting for SSH" in err
    resumed = {d["name"]: [s["status"] for s in d["steps"]] for d in json.loads(out)["droplets"]}
    # --resume checks the nohup step again: it restarts the app the reboot ended, and leaves running ones be.
    assert resumed["n5"] == ["skipped", "changed", "changed", "changed"]
    for name in NAMES:
        if name != "n5":
            assert resumed[name] == ["skipped", "ok", "skipped", "skipped"], name
            assert _app_pid(fleet.home(name)) == others[name]
        for step in (1, 3, 4):
            assert (fleet.home(name) / f"boot-count-{step}").read_text().count("\n") == 1, (name, step)
    app = _app_pid(fleet.home("n5"))
    assert app != first_app and process_running(app)
