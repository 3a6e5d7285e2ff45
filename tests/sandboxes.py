"""Pointing a test at a sandbox, and looking at what runs there."""

from __future__ import annotations

from pathlib import Path

import pytest

from poseidon.sandbox import Sandbox


def point_at(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """Make ``poseidon.api.connect()``, ``droplet.connect()`` and the CLI in this test reach ``sandbox``."""
    for key, value in sandbox.environ.items():
        monkeypatch.setenv(key, value)
    return sandbox


def process_running(pid: int) -> bool:
    """Whether ``pid`` runs: alive and not a zombie (an init that reaps slowly keeps those)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # the name, in parentheses, may hold spaces
