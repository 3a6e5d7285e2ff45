"""Shared fixtures: a clean environment, and sandboxes over real OpenSSH."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from poseidon.sandbox import Sandbox
from sandboxes import point_at

TESTS = Path(__file__).parent
ROOT = TESTS.parent


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees this machine's DigitalOcean or poseidon settings."""
    for name in list(os.environ):
        if name.startswith(("DIGITALOCEAN_", "POSEIDON_")) or name == "GITHUB_TOKEN":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def shared_sandbox() -> Iterator[Sandbox]:
    """One sandbox for the read-mostly tests: droplets 'test' and 'other', repo changhiskhan/test."""
    with Sandbox(["test", "other"], repos={"changhiskhan/test": TESTS / "apps" / "tiny"}) as sandbox:
        yield sandbox


@pytest.fixture
def sandbox_env(shared_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """The shared sandbox, with its variables in the environment (as `poseidon sandbox up` prints)."""
    point_at(shared_sandbox, monkeypatch)
    return shared_sandbox
