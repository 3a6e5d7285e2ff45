"""Faults on the controlling machine: a full disk under the report or the run log.

/dev/full answers every write with ENOSPC, as a full disk does: the run
goes on, the terminal shows everything, and the command says what could
not be written and exits 2.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from poseidon import executor
from poseidon.cli import main
from poseidon.sandbox import Sandbox

FULL = Path("/dev/full")
pytestmark = pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full")

PLAYBOOK = "version: 1\ndroplets: [test]\nsteps:\n  - run: echo hi\nreport: {ps: false, top: false}\n"


@pytest.fixture
def playbook(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(PLAYBOOK)
    return path


def test_a_report_on_a_full_disk_is_an_error_after_the_run_and_the_terminal_has_it_all(
    playbook: Path, sandbox_env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["apply", str(playbook), "--report", str(FULL)]) == 2
    out, err = capsys.readouterr()
    assert "1 droplet(s), 1 changed" in out
    assert f"--report {FULL}: could not be written (No space left on device)" in out + err
    assert stat.S_ISCHR(FULL.stat().st_mode)  # written into, never replaced by a file


def test_a_run_log_on_a_full_disk_lets_the_droplets_finish_and_says_so(
    playbook: Path, sandbox_env: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = executor.RunLog.__init__

    def on_a_full_disk(self: executor.RunLog, path: Path) -> None:
        opened(self, FULL)  # every write fails as on a full disk; the path is the only fake

    monkeypatch.setattr(executor.RunLog, "__init__", on_a_full_disk)
    assert main(["apply", str(playbook), "--json"]) == 2
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert [s["status"] for s in report["droplets"][0]["steps"]] == ["changed"]
    assert "is incomplete: No space left on device (from the start on)" in err
    assert "the report above has every step" in err
