"""A corpus of invalid playbooks: each is refused with exit status 2 and a located
problem, before anything touches the network, and never with a traceback.

Every file in ``playbooks/invalid/`` starts with a header written by hand from
what the file contains::

    # expect: LINE:COLUMN: PATH: FRAGMENT

the first problem the loader must report (``PATH`` is empty for a file-level
problem such as a YAML syntax error; ``FRAGMENT`` is a piece of the message).
The commands run in-process against two local TCP listeners standing in for
the DigitalOcean API and for SSH: neither may see a single connection.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from poseidon.cli import main

CORPUS = Path(__file__).parent / "playbooks" / "invalid"
EXIT_INVALID = 2
BOM = b"\xef\xbb\xbf"
HEADER_RE = re.compile(r"# expect: (?P<line>\d+):(?P<column>\d+): (?P<path>.*?): (?P<fragment>.+)")
LOCATED_RE = re.compile(r":\d+:\d+: ")

# Files that show a bug in poseidon/spec/: their header says what should be
# reported; strict, so each one fails loudly once the bug is fixed.
KNOWN_BUGS: dict[str, str] = {}


@dataclass(frozen=True)
class Expected:
    line: int
    column: int
    path: str
    fragment: str

    @classmethod
    def of(cls, playbook: Path) -> Expected:
        first = playbook.read_bytes().split(b"\n", 1)[0].removeprefix(BOM).rstrip(b"\r")
        match = HEADER_RE.fullmatch(first.decode("utf-8"))
        assert match, f"{playbook.name}: line 1 must be '# expect: LINE:COLUMN: PATH: FRAGMENT'"
        return cls(int(match["line"]), int(match["column"]), match["path"], match["fragment"])

    def prefix(self, playbook: Path) -> str:
        where = f"{playbook}:{self.line}:{self.column}: "
        return f"{where}{self.path}: " if self.path else where


class Listener:
    """A TCP listener on loopback that accepts, records and drops every connection."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self._peers: list[tuple[str, int]] = []
        self._sentinels: set[tuple[str, int]] = set()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, peer = self._socket.accept()
            except OSError:
                return
            connection.close()
            with self._changed:
                self._peers.append(peer)
                self._changed.notify_all()

    def connections(self) -> int:
        """Connections seen so far; a connection of our own flushes the accept queue first."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as probe:
            sentinel = probe.getsockname()
        with self._changed:
            assert self._changed.wait_for(lambda: sentinel in self._peers, timeout=5)
            self._sentinels.add(sentinel)
            return sum(1 for peer in self._peers if peer not in self._sentinels)

    def close(self) -> None:
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._socket.close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def listeners() -> Iterator[tuple[Listener, Listener]]:
    api, ssh = Listener(), Listener()
    yield api, ssh
    api.close()
    ssh.close()


@dataclass(frozen=True)
class Network:
    api: Listener
    ssh: Listener

    def connections(self) -> tuple[int, int]:
        return self.api.connections(), self.ssh.connections()


@pytest.fixture
def network(listeners: tuple[Listener, Listener], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Network:
    """The API and SSH settings point at the listeners."""
    api, ssh = listeners
    monkeypatch.setenv("POSEIDON_API_URL", f"http://127.0.0.1:{api.port}")
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", "x")
    monkeypatch.setenv("POSEIDON_SSH_PORT", str(ssh.port))
    monkeypatch.setenv("POSEIDON_KNOWN_HOSTS", str(tmp_path / "known_hosts"))
    return Network(api, ssh)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def _assert_refused(playbook: Path, expected: Expected, network: Network, capsys: pytest.CaptureFixture[str]) -> None:
    before = network.connections()
    status, out, err = _run(["apply", str(playbook)], capsys)
    validated = _run(["validate", str(playbook)], capsys)

    assert network.connections() == before, "an invalid playbook reached the network"
    assert "Traceback" not in out + err + validated[1] + validated[2]
    assert status == EXIT_INVALID, err
    assert out == ""
    lines = err.splitlines()
    assert lines, "no problem reported"
    prefix = expected.prefix(playbook)
    assert lines[0].startswith(prefix) and expected.fragment in lines[0][len(prefix) :], (
        f"expected {prefix}...{expected.fragment}...\nreported:\n{err}"
    )
    for line in lines:
        assert line.startswith(str(playbook)) and LOCATED_RE.match(line, len(str(playbook))), line
    assert validated == (EXIT_INVALID, "", err), "validate must refuse it the same way"


def _corpus() -> list[Path]:
    return sorted(CORPUS.glob("*.yaml"))


def _params() -> list[object]:
    params: list[object] = []
    for playbook in _corpus():
        marks = []
        if playbook.name in KNOWN_BUGS:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[playbook.name]))
        params.append(pytest.param(playbook, id=playbook.name, marks=marks))
    return params


@pytest.mark.parametrize("playbook", _params())
def test_an_invalid_playbook_is_refused_where_the_problem_is(
    playbook: Path, network: Network, capsys: pytest.CaptureFixture[str]
) -> None:
    _assert_refused(playbook, Expected.of(playbook), network, capsys)


@pytest.mark.parametrize("content", [b"", b"\n\n", b"   \n  \n", BOM], ids=["0-bytes", "newlines", "blanks", "bom"])
def test_an_empty_file_is_refused(
    content: bytes, tmp_path: Path, network: Network, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = tmp_path / "empty.yaml"
    playbook.write_bytes(content)

    _assert_refused(playbook, Expected(1, 1, "", "the playbook is empty"), network, capsys)


def test_the_corpus_is_large_and_every_file_says_what_to_expect() -> None:
    corpus = _corpus()

    assert len(corpus) >= 30
    assert set(KNOWN_BUGS) <= {playbook.name for playbook in corpus}
    for playbook in corpus:
        Expected.of(playbook)
