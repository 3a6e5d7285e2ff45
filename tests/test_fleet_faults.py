"""Eight droplets, one of which loses its connection mid-run: the others finish, --resume mends it."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from poseidon.cli import main
from poseidon.sandbox import Sandbox
from sandboxes import point_at

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
