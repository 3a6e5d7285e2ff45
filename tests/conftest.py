"""Shared fixtures: a clean environment, and sandboxes over real OpenSSH.

A test that starts a sandbox (OpenSSH's sshd and the API emulator), or runs
poseidon against one, carries the ``sandbox`` marker, so that
``pytest -m "not sandbox"`` runs the fast tests alone: the tests that use the
shared sandbox get it here; the others are marked in their files. A test
without the marker that starts a sandbox fails, saying so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from poseidon.sandbox import Sandbox
from support.sandboxes import point_at

TESTS = Path(__file__).parent
ROOT = TESTS.parent


#: The fixtures that start a sandbox: a test that uses one (sandbox_env does) starts it.
SANDBOX_FIXTURES = {"shared_sandbox"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SANDBOX_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.sandbox)


@pytest.fixture(autouse=True)
def sandboxes_only_when_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test without the ``sandbox`` marker cannot start one: its marker would lie to ``-m "not sandbox"``."""
    if request.node.get_closest_marker("sandbox") is None:

        def refuse(sandbox: Sandbox) -> Sandbox:
            pytest.fail(f"{request.node.nodeid} starts a sandbox: mark it `@pytest.mark.sandbox`", pytrace=False)

        monkeypatch.setattr(Sandbox, "start", refuse)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees this machine's DigitalOcean or poseidon settings."""
    for name in list(os.environ):
        if name.startswith(("DIGITALOCEAN_", "POSEIDON_")) or name == "GITHUB_TOKEN":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def demo_wheels() -> Path:
    """The demo app's dependencies as wheels (``make install-test`` fetches them), so it installs offline."""
    folder = TESTS / ".wheelhouse"
    if not list(folder.glob("flask-*.whl")):
        # Never fetched here: a test that reached the network would hide that the suite needs it.
        pytest.fail(f"the demo app's wheels are not in {folder}: run `make install-test` once (it fetches them)")
    return folder


@pytest.fixture
def offline_pip(demo_wheels: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """pip settings, in this process's environment, that sandboxes pass to their droplets: no index, the wheels."""
    settings = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(demo_wheels)}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return settings


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
