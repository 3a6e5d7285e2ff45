"""Run poseidon's API client against Stoplight Prism mocking DigitalOcean's OpenAPI document.

Prism validates every request it receives against the document (path and
query parameters, body, the bearer token's presence) and answers an invalid
one with 422 (401 without a bearer token), so a test that passes here shows
the client sends what the official document describes. Valid requests are
answered with the document's first static example, whatever the request
asked for: the answers are deterministic, not a model of an account.

Prism is an npm package pinned in ``package.json``/``package-lock.json``
beside this file; install it with ``npm ci --prefix tests/prism``. Prism
5.16 needs Node.js >= 20.19, which can require() ES modules (its package
declares >= 24.18, but 20.19 runs it). Without it these tests are skipped, except
when ``CI`` is ``true``: CI must run them. ``POSEIDON_DO_OPENAPI`` may name
another copy of the document than ``tests/openapi/openapi.yaml``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import requests

import poseidon.api
from support.prism import TOKEN, PrismServer, Traffic

HERE = Path(__file__).parent
PRISM = HERE / "node_modules" / ".bin" / "prism"
# Read at import time: the autouse fixture of tests/conftest.py removes POSEIDON_* variables.
DOCUMENT = Path(os.environ.get("POSEIDON_DO_OPENAPI") or HERE.parent / "openapi" / "openapi.yaml")
# Prism parses the 3 MB document in about 5 s on a developer machine; a cold CI machine may be much slower.
STARTUP_TIMEOUT = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrismServer]:
    """One Prism mock server for the whole session, stopped at its end."""
    if not PRISM.exists():
        reason = (
            f"Stoplight Prism is not installed ({PRISM.relative_to(HERE.parent.parent)} is missing):"
            " run `npm ci --prefix tests/prism` (Node.js >= 20.19)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Prism tests: {reason}", pytrace=False)
        pytest.skip(reason)
    if not DOCUMENT.is_file():
        pytest.fail(f"the OpenAPI document {DOCUMENT} does not exist", pytrace=False)

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("prism") / "prism.log"
    command = [
        str(PRISM), "mock", str(DOCUMENT),
        "--host", "127.0.0.1", "--port", str(port),
        # Static examples: the same answer every time. Request validation is
        # always on in mock mode; --errors also turns any violation Prism
        # reports into an error answer instead of a warning header.
        "--dynamic=false", "--errors=true",
    ]  # fmt: skip
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                # Prism listens only once the document is parsed: any answer means ready.
                requests.get(url + "/", timeout=2)
                break
            except requests.RequestException:
                pass
            if process.poll() is not None:
                pytest.fail(f"Prism exited with {process.returncode} before answering:\n{_tail(log)}", pytrace=False)
            if time.monotonic() - started > STARTUP_TIMEOUT:
                pytest.fail(f"Prism did not answer within {STARTUP_TIMEOUT:.0f} s:\n{_tail(log)}", pytrace=False)
            time.sleep(0.1)
        yield PrismServer(url=url, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test's report shows what its client sent Prism and what Prism objected to."""
    report = yield
    traffic = getattr(item, "funcargs", {}).get("traffic")
    if report.when == "call" and report.failed and isinstance(traffic, Traffic):
        report.sections.append(("Prism exchanges", traffic.describe()))
    return report


@pytest.fixture
def traffic(prism: PrismServer) -> Traffic:
    return Traffic(prism.url)


@pytest.fixture
def client(prism: PrismServer, traffic: Traffic) -> Iterator[poseidon.api.Client]:
    """A client of Prism whose every exchange is recorded in ``traffic``."""
    session = requests.Session()
    session.hooks["response"].append(traffic.record)
    with session, poseidon.api.connect(token=TOKEN, api_url=prism.url, session=session) as client:
        yield client
