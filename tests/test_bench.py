"""The benchmark still runs: poseidon's side of it, once, on two droplets, with the delay proxy.

Nothing here measures time (that is the benchmark's job, `make bench`); it
checks that the workload applies, that every run is verified on the
droplets, and that the table and the JSON come out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_runs_poseidons_workload_and_prints_the_table(tmp_path: Path) -> None:
    poseidon = Path(sys.executable).with_name("poseidon")
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--quick",
            "--n",
            "2",
            "--tools",
            "poseidon",
            "--rtt-ms",
            "20",
            "--startup-runs",
            "2",
            "--poseidon",
            str(poseidon),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line.split("|")[1:-1] for line in run.stdout.splitlines() if line.startswith(("| cold", "| warm"))]
    cases = [[" cold ", " 2 ", " 0 ms "], [" warm ", " 2 ", " 0 ms "], [" warm ", " 2 ", " 20 ms "]]
    # The times, then the CPU seconds of poseidon and of the droplets' sessions.
    assert [row[:3] for row in rows] == cases + cases
    assert all(row[3].strip().endswith(" s") for row in rows[:3])
    assert all(" / " in row[3] for row in rows[3:])
    assert "`poseidon validate examples/site.yaml`" in run.stdout
    figures = json.loads(out.read_text())
    assert set(figures["runs"]) == {"poseidon/cold/N=2/rtt=0", "poseidon/warm/N=2/rtt=0", "poseidon/warm/N=2/rtt=20"}
    for samples in figures["runs"].values():
        assert all(s["wall"] > 0 and s["cpu"] > 0 and s["rss_largest"] > 0 for s in samples)
