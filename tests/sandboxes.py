"""Pointing a test at a sandbox."""

from __future__ import annotations

import pytest

from poseidon.sandbox import Sandbox


def point_at(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """Make ``poseidon.api.connect()``, ``droplet.connect()`` and the CLI in this test reach ``sandbox``."""
    for key, value in sandbox.environ.items():
        monkeypatch.setenv(key, value)
    return sandbox
