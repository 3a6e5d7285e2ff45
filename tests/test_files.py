"""Files poseidon writes: whole, for their owner only, never through a planted link, never out of their folder."""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from poseidon import files
from poseidon.cli import main
from poseidon.report import write_report_dir
from poseidon.results import DropletRun, RunResult
from poseidon.sandbox import Sandbox
from support.sandboxes import point_at

PLAYBOOK = """\
    version: 1
    droplets: [test]
    steps:
      - run: {cmd: "true", changes: false}
    report: {ps: false, top: false}
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def site(tmp_path: Path, shared_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Path:
    point_at(shared_sandbox, monkeypatch)
    monkeypatch.chdir(tmp_path)
    playbook = tmp_path / "site.yaml"
    playbook.write_text(textwrap.dedent(PLAYBOOK))
    return playbook


def test_report_plan_and_run_log_are_0600_in_0700_folders_and_no_planted_link_is_followed(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "report.json.partial").symlink_to(victim)  # where a report used to be written first
    (tmp_path / "plan.json").symlink_to(victim)  # the plan's own name: replaced, not written through
    assert main(["apply", str(site), "--report", "report.json", "--report-dir", "reports"]) == 0
    assert main(["plan", str(site), "--out", "plan.json"]) == 0
    capsys.readouterr()
    assert victim.read_text() == "precious\n"
    assert json.loads((tmp_path / "report.json").read_text())["droplets"][0]["name"] == "test"
    assert (
        not (tmp_path / "plan.json").is_symlink() and json.loads((tmp_path / "plan.json").read_text())["poseidon_plan"]
    )
    logs = list((tmp_path / ".poseidon" / "runs").glob("*.jsonl"))
    assert logs
    for path in [tmp_path / "report.json", tmp_path / "plan.json", tmp_path / "reports" / "report.json", *logs]:
        assert mode(path) == 0o600, path
    for path in (tmp_path / "reports", tmp_path / ".poseidon" / "runs"):
        assert mode(path) == 0o700, path
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial") and not p.is_symlink()]


def test_a_report_path_that_is_a_link_is_checked_without_creating_its_target(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "elsewhere" / "created-by-the-check"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "r.json").symlink_to(target)
    assert main(["apply", str(site), "--report", "r.json"]) == 0
    capsys.readouterr()
    assert not target.exists(), "the check before the run opened the link's target"
    assert (tmp_path / "r.json").is_file() and not (tmp_path / "r.json").is_symlink()


def test_a_droplet_name_never_leads_a_snapshot_out_of_the_report_folder(tmp_path: Path) -> None:
    import pandas as pd

    result = RunResult(playbook="site.yaml", name=None, mode="apply", started=0.0)
    run = DropletRun("../../escaped", 1, "127.0.0.2")
    run.ps = pd.DataFrame({"PID": [1], "CMD": ["init"]})
    result.droplets = [run]
    folder = tmp_path / "deep" / "reports"
    written = write_report_dir(result, str(folder))
    assert all(path.parent == folder for path in written), written
    assert [path.parent for path in tmp_path.rglob("*escaped*")] == [folder]


def test_writing_into_what_is_not_a_regular_file_writes_into_it(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        files.write(fifo, "through\n")
        assert os.read(reader, 100) == b"through\n"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
