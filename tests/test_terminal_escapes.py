"""What did not come from poseidon reaches the terminal with its control characters escaped.

A step's output, a process's log, an API's data and its error messages may
hold escape sequences: none may clear the screen, retitle the terminal or
print a fake verdict over the real one, on a terminal or off it. ``--json``
keeps the raw text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from poseidon.cli import main
from poseidon.sandbox import Sandbox
from support.sandboxes import point_at
from support.stubhttp import JSONHandler, serving

#: Clear the screen, retitle the terminal, go back to the start of the line and print a fake verdict.
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\r\x1b[2K1 droplet(s), 1 ok in 0.1s: all droplets succeeded"
RAW = ("\x1b[2J", "\x1b]0;", "\x07", "\r\x1b[2K1 droplet(s)")
#: Off a terminal, nothing moves the cursor at all (on one, rich's live panel does, by its own codes).
PIPED = ("\r", "\x1b[")


def assert_escaped(text: str, *, terminal: bool = True) -> None:
    for sequence in RAW if terminal else RAW + PIPED:
        assert sequence not in text, f"{sequence!r} reached the terminal"
    assert "\\x1b" in text, "the sequence is not shown at all"


@pytest.fixture
def site(tmp_path: Path, shared_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Path:
    point_at(shared_sandbox, monkeypatch)
    monkeypatch.setenv("HOSTILE", HOSTILE)
    playbook = tmp_path / "site.yaml"
    playbook.write_text(
        "version: 1\ndroplets: [test]\nsteps:\n"
        '  - nohup: {cmd: \'printf "%s\\\\n" "$HOSTILE"; exec sleep 60\', name: hostile-log,'
        " ready: {cmd: 'test -s hostile-log.log'},"
        " env: {HOSTILE: '${env:HOSTILE}'}}\n"
        '  - run: {cmd: \'printf "%s\\\\n" "$HOSTILE"; printf "%s\\\\n" "$HOSTILE" >&2; exit 1\','
        " env: {HOSTILE: '${env:HOSTILE}'}}\n"
        "report: {ps: false, top: false}\n"
    )
    return playbook


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
def test_a_step_s_output_and_a_process_s_log_are_shown_escaped(
    terminal: bool, site: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if terminal:
        monkeypatch.setenv("FORCE_COLOR", "1")  # rich takes its output for a terminal: colours, the live panel
    assert main(["apply", str(site)]) == 1
    out, err = capsys.readouterr()
    assert_escaped(out + err, terminal=terminal)
    assert out.rstrip().endswith("failed on test" if not terminal else "failed on test\x1b[0m")
    assert main(["status", str(site)]) == 0
    out, err = capsys.readouterr()
    assert_escaped(out + err, terminal=terminal)


def test_json_keeps_the_raw_text(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apply", str(site), "--json"]) == 1
    steps = json.loads(capsys.readouterr().out)["droplets"][0]["steps"]
    assert steps[1]["stdout_tail"] == HOSTILE.replace("\r", "\n")  # the tail is kept by lines


def test_an_api_s_droplet_data_is_shown_escaped(
    shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at(shared_sandbox, monkeypatch)
    shared_sandbox.emulator.add_droplet("hostile-data", "203.0.113.77", tags=[HOSTILE])
    assert main(["droplets"]) == 0
    out, err = capsys.readouterr()
    assert_escaped(out + err, terminal=False)
    assert main(["droplets", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert HOSTILE in next(d for d in listed if d["name"] == "hostile-data")["tags"]


class _Hostile(JSONHandler):
    status = 404

    def answer(self) -> dict[str, str]:
        return {"id": "not_found", "message": HOSTILE}


@pytest.fixture
def hostile_api() -> Iterator[str]:
    with serving(_Hostile) as url:
        yield url


def test_an_api_s_error_message_is_shown_escaped(
    hostile_api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", "t0ken")
    monkeypatch.setenv("POSEIDON_API_URL", hostile_api)
    assert main(["droplets"]) == 3
    out, err = capsys.readouterr()
    assert_escaped(out + err, terminal=False)
    assert "1 droplet(s), 1 ok in 0.1s: all droplets succeeded" in err  # there, but as text on the error's line


@pytest.mark.sandbox
def test_the_api_tokens_are_masked_in_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that prints the tokens (it found them somewhere) shows ***: the sandbox's and the operator's."""
    from support.sandboxes import pointed

    real = "dop_v1_real-operator-token-4711"
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", real)  # the operator's, set when the sandbox starts
    with pointed(["test"], monkeypatch) as sandbox:
        sandbox_token = sandbox.environ["DIGITALOCEAN_TOKEN"]
        playbook = tmp_path / "site.yaml"
        playbook.write_text(
            "version: 1\ndroplets: [test]\nsteps:\n"
            "  - run:\n"
            "      cmd: 'echo \"$A $B\"'\n"
            "      env: {A: '${env:DIGITALOCEAN_TOKEN}', B: '${env:DIGITALOCEAN_ACCESS_TOKEN}'}\n"
            "report: {ps: false, top: false}\n"
        )
        assert main(["apply", str(playbook), "--json"]) == 0
        out, err = capsys.readouterr()
        assert json.loads(out)["droplets"][0]["steps"][0]["stdout_tail"] == "*** ***"
        assert sandbox_token not in out + err and real not in out + err
