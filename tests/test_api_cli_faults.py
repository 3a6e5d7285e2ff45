"""The API failing under a whole `poseidon apply`: recovered, or exit 3 with a message and nothing started."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import poseidon.api as po
from poseidon.cli import main
from poseidon.sandbox import Sandbox
from support.sandboxes import pointed

pytestmark = pytest.mark.sandbox


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    # A sandbox of its own: the faults staged here must not meet other tests' requests.
    with pointed(["api-a", "api-b"], monkeypatch) as started:
        yield started


@pytest.fixture
def playbook(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        "version: 1\ndroplets: [api-a, api-b]\nsteps:\n  - run: touch ran\nreport: {ps: false, top: false}\n"
    )
    return path


def _ran(sandbox: Sandbox) -> list[str]:
    return [name for name in ("api-a", "api-b") if (sandbox.home(name) / "ran").exists()]


def test_503_twice_then_an_answer_is_recovered(
    sandbox: Sandbox, playbook: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.emulator.inject(503, 2)
    assert main(["apply", str(playbook)]) == 0
    assert _ran(sandbox) == ["api-a", "api-b"]


def test_429_with_retry_after_is_waited_out(
    sandbox: Sandbox, playbook: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.emulator.inject(429, 2, retry_after=0.2)
    assert main(["apply", str(playbook)]) == 0
    assert _ran(sandbox) == ["api-a", "api-b"]


@pytest.mark.parametrize(
    ("stage", "said"),
    [
        (lambda e: e.inject(503, 20), "503"),
        (lambda e: e.inject(500, 20), "500"),
        (lambda e: e.drop(20), "cannot reach the DigitalOcean API"),
    ],
    ids=["503-until-the-end", "500-until-the-end", "dropped-until-the-end"],
)
def test_an_api_that_stays_down_is_exit_3_with_a_message_and_no_step_started(
    stage: object, said: str, sandbox: Sandbox, playbook: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stage(sandbox.emulator)  # type: ignore[operator]
    assert main(["apply", str(playbook)]) == 3
    out, err = capsys.readouterr()
    assert said in out + err
    assert "Traceback" not in out + err
    assert _ran(sandbox) == []


def test_an_api_slower_than_the_timeout_to_the_end_is_exit_3_naming_the_timeout_and_no_step_started(
    sandbox: Sandbox, playbook: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSEIDON_API_TIMEOUT", "1.5")  # well above a normal answer, even on a busy machine
    sandbox.emulator.slow(4.0, 20)
    assert main(["apply", str(playbook)]) == 3
    out, err = capsys.readouterr()
    assert "did not answer within 1.5 s (tried 3 times; POSEIDON_API_TIMEOUT sets the wait)" in err
    assert "Traceback" not in out + err
    assert _ran(sandbox) == []


def test_an_answer_late_once_is_asked_again_and_the_run_goes_on(
    sandbox: Sandbox, playbook: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSEIDON_API_TIMEOUT", "1.5")
    sandbox.emulator.slow(4.0, 1)
    assert main(["apply", str(playbook)]) == 0
    assert _ran(sandbox) == ["api-a", "api-b"]
    listings = [path for method, path in sandbox.emulator.request_log if path.startswith("/v2/droplets?")]
    assert listings.count("/v2/droplets?per_page=200") >= 2  # the late one, then again


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf"])
def test_a_timeout_that_is_not_a_positive_number_is_exit_2_naming_the_variable(
    value: str, sandbox: Sandbox, playbook: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSEIDON_API_TIMEOUT", value)
    assert main(["apply", str(playbook)]) == 2
    assert f"POSEIDON_API_TIMEOUT must be a number of seconds above 0, not {value!r}" in capsys.readouterr().err
    assert _ran(sandbox) == []


CREATING = """\
version: 1
name: creating
droplets:
  - {name: new-1, create: {region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}}
  - {name: new-2, create: {region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}}
steps:
  - run: touch ran
report: {ps: false, top: false}
"""


def test_an_api_that_fails_after_creating_some_droplets_names_them_and_apply_again_converges(
    sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = tmp_path / "creating.yaml"
    playbook.write_text(CREATING)
    sandbox.emulator.slow(0.0, 1, method="POST", path="/v2/droplets")  # the first create goes through
    sandbox.emulator.inject(422, 1, method="POST", path="/v2/droplets")  # the second is refused
    assert main(["apply", str(playbook)]) == 3
    out, err = capsys.readouterr()
    created = po.connect().droplets.find("new-1")
    assert len(created) == 1 and po.connect().droplets.find("new-2") == []
    assert f"created before that: new-1 (id {created[0].id}). They exist and are billed" in err
    assert "Traceback" not in out + err
    assert not (sandbox.home("new-1") / "ran").exists()

    assert main(["apply", str(playbook)]) == 0  # uses new-1, creates new-2
    capsys.readouterr()
    assert len(po.connect().droplets.find("new-1")) == 1
    assert all((sandbox.home(name) / "ran").exists() for name in ("new-1", "new-2"))
