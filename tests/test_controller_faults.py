"""Faults on the controlling machine: a full disk under the report or the run log.

/dev/full answers every write with ENOSPC, as a full disk does; a file-size
limit (RLIMIT_FSIZE) makes a file stop growing partway, as a disk that fills
up during the run does. The run goes on, the terminal shows everything, and
the command says what could not be written and exits 2.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from poseidon import runlog
from poseidon.cli import main
from poseidon.sandbox import Sandbox

pytestmark = pytest.mark.sandbox

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
    opened = runlog.RunLog.__init__

    def on_a_full_disk(self: runlog.RunLog, path: Path, descriptor: int | None = None) -> None:
        if descriptor is not None:
            os.close(descriptor)
        opened(self, FULL)  # every write fails as on a full disk; the path is the only fake

    monkeypatch.setattr(runlog.RunLog, "__init__", on_a_full_disk)
    assert main(["apply", str(playbook), "--json"]) == 2
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert [s["status"] for s in report["droplets"][0]["steps"]] == ["changed"]
    assert "is incomplete: No space left on device (from the start on)" in err
    assert "the report above has every step" in err


def _limit_file_size(limit: int) -> None:
    """In the child: no file grows past ``limit`` bytes, as on a disk that fills up (EFBIG, not a signal)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_run_log_that_fills_the_disk_partway_keeps_the_steps_before_and_the_droplets_finish(
    tmp_path: Path, sandbox_env: Sandbox
) -> None:
    steps = 30
    playbook = tmp_path / "site.yaml"
    playbook.write_text(
        "version: 1\ndroplets: [test]\nsteps:\n"
        + "".join(f"  - run: echo step-{i} >> partway\n" for i in range(steps))
        + "report: {ps: false, top: false}\n"
    )
    (sandbox_env.home("test") / "partway").unlink(missing_ok=True)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from poseidon.cli import main; sys.exit(main())",
            "apply",
            str(playbook),
            "--json",
        ],
        env={**os.environ, **sandbox_env.environ},
        capture_output=True,
        text=True,
        preexec_fn=lambda: _limit_file_size(4096),
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert [s["status"] for s in json.loads(done.stdout)["droplets"][0]["steps"]] == ["changed"] * steps
    assert "is incomplete: File too large (from test on)" in done.stderr
    assert (sandbox_env.home("test") / "partway").read_text().count("\n") == steps  # the droplet did all its work
    log = next((tmp_path / ".poseidon" / "runs").glob("*.jsonl"))
    lines = log.read_text().splitlines()
    assert 0 < len(lines) - 1 < steps  # the disk filled partway through
    records = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            records.append(json.loads(line))
        except ValueError:
            assert number == len(lines)  # only the last line may be cut short
    assert [r["index"] for r in records] == list(range(len(records)))  # what it kept is in order, from the start
    assert all(r["status"] == "changed" for r in records)
