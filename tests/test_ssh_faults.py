"""A droplet that refuses the key, and ones whose sudo refuses: each says what to do."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from poseidon.cli import main
from poseidon.sandbox import Sandbox
from support.sandboxes import pointed


def _apply(tmp_path: Path, steps: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    path = tmp_path / "site.yaml"
    path.write_text(f"version: 1\ndroplets: [test]\nsteps:\n{steps}report: {{ps: false, top: false}}\n")
    code = main(["apply", str(path), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_key_the_droplet_refuses_is_exit_3_and_names_the_variable_to_fix(
    tmp_path: Path, sandbox_env: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stranger = tmp_path / "id_stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    monkeypatch.setenv("POSEIDON_SSH_KEY", str(stranger))
    code, report = _apply(tmp_path, "  - run: touch never\n", capsys)
    droplet = report["droplets"][0]  # type: ignore[index]
    assert code == 3
    assert "the login was refused" in droplet["error"] and "check the key (POSEIDON_SSH_KEY)" in droplet["error"]
    assert not (sandbox_env.home("test") / "never").exists()


# What sudo (or the shell, when there is none) says on each kind of droplet, and what poseidon adds.
SUDO_REFUSALS = {
    "wants-a-password": (
        "echo 'sudo: a password is required' >&2; exit 1",
        "without one (a NOPASSWD line in /etc/sudoers.d/), or connect as root",
    ),
    "not-a-sudoer": (
        'echo "$(id -un) is not in the sudoers file." >&2; exit 1',
        "may not use sudo on test: allow it (a NOPASSWD line in /etc/sudoers.d/), or connect as root",
    ),
    "no-sudo": (
        "echo 'bash: line 1: sudo: command not found' >&2; exit 127",
        "test has no sudo: install it (apt-get install sudo), or connect as root",
    ),
}


@pytest.mark.sandbox
@pytest.mark.parametrize("refusal", SUDO_REFUSALS, ids=list(SUDO_REFUSALS))
def test_a_sudo_that_refuses_fails_the_step_and_says_what_to_do(
    refusal: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shim, advice = SUDO_REFUSALS[refusal]
    with pointed(["test"], monkeypatch) as sandbox:
        assert sandbox.farm is not None
        # This droplet's sudo refuses as the real one (or a droplet without one) does.
        (sandbox.farm.shims / "sudo").write_text(f"#!/bin/sh\n{shim}\n")
        code, report = _apply(tmp_path, "  - run: {cmd: touch as-root, sudo: true}\n  - run: touch after\n", capsys)
        steps = report["droplets"][0]["steps"]  # type: ignore[index]
        assert code == 1 and [s["status"] for s in steps] == ["failed", "skipped"]
        assert advice in steps[0]["stderr_tail"]
        assert not (sandbox.home("test") / "as-root").exists()


def test_a_step_not_under_sudo_that_mentions_sudo_gets_no_advice(
    tmp_path: Path, sandbox_env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _apply(tmp_path, "  - run: \"echo 'sudo: a password is required' >&2; exit 1\"\n", capsys)
    step = report["droplets"][0]["steps"][0]  # type: ignore[index]
    assert code == 1 and step["status"] == "failed"
    assert "sudo: a password is required" in step["stderr_tail"] and "poseidon:" not in step["stderr_tail"]


def test_timeout_s_words_for_a_missing_sudo_get_the_same_advice() -> None:
    from poseidon.ssh import _sudo_hint

    said = "timeout: failed to run command \u2018sudo\u2019: No such file or directory"
    assert (
        _sudo_hint(said, 127, "deploy", "web-1")
        == "web-1 has no sudo: install it (apt-get install sudo), or connect as root"
    )


def test_the_digitalocean_token_appears_in_no_output_log_report_error_or_droplet(
    tmp_path: Path, sandbox_env: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = sandbox_env.token
    path = tmp_path / "site.yaml"
    path.write_text(
        "version: 1\ndroplets: [test]\nsteps:\n"
        "  - run: ps -Aww -o args > seen-ps.txt\n"  # what runs on the droplet while poseidon works there
        "  - run: env > seen-env.txt\n"
    )
    report = tmp_path / "report.json"
    assert main(["apply", str(path), "--json", "--report", str(report)]) == 0
    out, err = capsys.readouterr()
    logs = list((tmp_path / ".poseidon" / "runs").glob("*.jsonl"))
    assert logs
    droplet_files = [p for p in sandbox_env.home("test").rglob("*") if p.is_file()]
    seen = {p.name: p.read_text() for p in droplet_files if p.name.startswith("seen-")}
    assert "sshd" in seen["seen-ps.txt"] and "HOME=" in seen["seen-env.txt"]  # they saw the droplet, whole
    texts = [out, err, report.read_text(), *(log.read_text() for log in logs)]
    texts += [p.read_bytes().decode(errors="replace") for p in droplet_files]
    assert not any(token in text for text in texts)

    # A token the API refuses: the error says so without repeating it.
    wrong = "dop_v1_" + "f" * 64
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", wrong)
    assert main(["apply", str(path)]) == 3
    out, err = capsys.readouterr()
    assert "401 unauthorized: Unable to authenticate you." in out + err
    assert wrong not in out + err


@pytest.mark.parametrize("value", ["ssh", "0", "70000", "２２"])
def test_a_port_variable_that_is_no_port_is_exit_2_naming_it_before_any_change(
    value: str,
    tmp_path: Path,
    sandbox_env: Sandbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSEIDON_SSH_PORT", value)
    path = tmp_path / "site.yaml"
    path.write_text("version: 1\ndroplets: [test]\nsteps:\n  - run: touch never\n")
    assert main(["apply", str(path)]) == 2
    assert f"POSEIDON_SSH_PORT must be a port number from 1 to 65535, not {value!r}" in capsys.readouterr().err
    assert not (sandbox_env.home("test") / "never").exists()


@pytest.mark.parametrize("variable", ["POSEIDON_SSH_PORT", "POSEIDON_SSH_KEEPALIVE"])
def test_a_bad_ssh_variable_stops_what_logs_in_and_nothing_else(
    variable: str,
    tmp_path: Path,
    sandbox_env: Sandbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``droplets`` and ``destroy`` never log in: a bad SSH setting is no reason to refuse them."""
    monkeypatch.setenv(variable, "-1")
    path = tmp_path / "site.yaml"
    path.write_text("version: 1\nname: site\ndroplets: [test]\nsteps:\n  - run: touch never\n")
    assert main(["droplets"]) == 0
    assert main(["destroy", str(path), "--check"]) == 0
    capsys.readouterr()
    for command in (["status", str(path)], ["ps", "test"], ["plan", str(path)]):
        assert main(command) == 2, command
        assert f"{variable} must be" in capsys.readouterr().err, command
    assert not (sandbox_env.home("test") / "never").exists()


def test_no_key_anywhere_is_exit_3_at_once_and_says_where_keys_come_from(
    tmp_path: Path, sandbox_env: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("POSEIDON_SSH_KEY")
    monkeypatch.setenv("POSEIDON_KNOWN_HOSTS", sandbox_env.known_hosts)
    code, report = _apply(tmp_path, "  - run: touch never\n", capsys)
    droplet = report["droplets"][0]  # type: ignore[index]
    assert code == 3
    assert droplet["error"].endswith(
        "no key to log in with: set POSEIDON_SSH_KEY to a private key file, add one to ssh-agent, or put one in ~/.ssh"
    )
    assert "waiting for SSH" not in capsys.readouterr().err, "a missing key is no droplet still booting"
    assert not (sandbox_env.home("test") / "never").exists()


#: A server that answers "not ssh", and a client that connects to it, in a process of its own:
#: pytest's own logging handlers would hide what an application without any shows on stderr.
_NOT_SSH = """
import socket, threading
from poseidon.errors import SSHConnectError
from poseidon.ssh import SSHClient
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
def answer():
    connection, _ = server.accept()
    connection.sendall(b"not ssh\\r\\n")
    connection.close()
threading.Thread(target=answer, daemon=True).start()
try:
    SSHClient("127.0.0.1", port=server.getsockname()[1], known_hosts="/dev/null", connect_timeout=5).open()
except SSHConnectError as exc:
    print(exc)
"""


def test_a_server_that_is_no_ssh_server_is_one_error_without_paramikos_traceback() -> None:
    """paramiko logs the banner it could not read with a traceback; poseidon's error says it."""
    import sys

    done = subprocess.run([sys.executable, "-c", _NOT_SSH], capture_output=True, text=True, timeout=60)
    assert "cannot connect: Error reading SSH protocol banner" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
