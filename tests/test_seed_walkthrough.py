"""The original poseidon's SSH walkthrough, line by line, over real OpenSSH on the sandbox."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pandas as pd
import pytest

import poseidon.api as po
from poseidon.errors import CommandError
from poseidon.sandbox import Sandbox
from support.sandboxes import PATIENCE, command_lines_seen, end_once_seen, process_running, wait_for
from support.wheels import build_wheel, offline_pip_env


def test_the_seed_walkthrough_runs_line_by_line(sandbox_env: Sandbox) -> None:
    client = po.connect()
    droplet = client.droplets.by_name("test")
    ssh = droplet.connect()

    assert ssh.wait("echo foo") == "foo\n"

    stdin, stdout, stderr = ssh.exec_command("echo foo; echo bar >&2")
    assert stdout.read() == b"foo\n"
    assert stderr.read() == b"bar\n"

    git = ssh.git("changhiskhan", "test")
    assert git.changed
    assert ssh.chdir("test").endswith("/test")
    assert ssh.wait("cat index.html") == "hello from tiny\n"

    assert ssh.apt("git curl").status == "ok"  # both installed on this machine, which the droplet is

    wheels = build_wheel(sandbox_env.home("test") / "wheels").parent
    env = offline_pip_env(wheels)
    assert ssh.pip("tinyfoo", env=env).changed
    assert "tinyfoo==1.0" in ssh.pip_freeze()
    ssh.wait("echo 'tinyfoo==1.0' > requirements.txt")
    assert ssh.pip_r("requirements.txt", env=env).changed

    ip = droplet.ip_address
    started = ssh.nohup(f"python3 serve.py {ip} 8123", name="tiny")
    assert started.changed
    assert ssh.wait(f"curl -fsS --retry 5 --retry-connrefused --retry-delay 1 http://{ip}:8123/") == "hello from tiny\n"

    ps = ssh.ps()
    assert isinstance(ps, pd.DataFrame)
    assert list(ps.columns) == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert ps["CMD"].str.contains(f"serve.py {ip} 8123", regex=False).any()
    top = ssh.top()
    assert list(top.columns) == ["%CPU", "%MEM", "USER", "COMMAND"]
    assert top["%CPU"].dtype.kind == "f"

    ssh.close()


def test_a_second_run_of_each_convenience_has_nothing_to_do(sandbox_env: Sandbox) -> None:
    droplet = po.connect().droplets.by_name("other")
    wheels = build_wheel(sandbox_env.home("other") / "wheels").parent
    env = offline_pip_env(wheels)
    with droplet.connect() as ssh:
        first = [ssh.git("changhiskhan", "test", dest="again")]
        ssh.chdir("again")
        first.append(ssh.pip("tinyfoo==1.0", env=env))
        ssh.wait("echo tinyfoo > req.txt")
        first.append(ssh.pip_r("req.txt", env=env))
        first.append(ssh.nohup("sleep 300", name="sleeper", grace=0.2))
        assert [o.status for o in first] == ["changed"] * 4
        ssh.chdir("~")
        second = [ssh.git("changhiskhan", "test", dest="again")]
        ssh.chdir("again")
        second.append(ssh.pip("tinyfoo==1.0", env=env))
        second.append(ssh.pip_r("req.txt", env=env))
        second.append(ssh.nohup("sleep 300", name="sleeper", grace=0.2))
        assert [o.status for o in second] == ["ok"] * 4


def test_wait_raises_with_the_exit_status_and_stderr(sandbox_env: Sandbox) -> None:
    with po.connect().droplets.by_name("test").connect() as ssh:
        with pytest.raises(CommandError) as caught:
            ssh.wait("echo oops >&2; exit 7")
        assert caught.value.exited == 7
        assert "oops" in caught.value.stderr
        assert "oops" in str(caught.value)


def test_wait_does_not_raise_for_stderr_alone_or_when_told_not_to(sandbox_env: Sandbox) -> None:
    with po.connect().droplets.by_name("test").connect() as ssh:
        assert ssh.wait("echo warning >&2; echo done") == "done\n"
        assert ssh.wait("echo partial; exit 3", raise_on_error=False) == "partial\n"


def test_chdir_to_a_missing_directory_fails_instead_of_running_elsewhere(sandbox_env: Sandbox) -> None:
    with po.connect().droplets.by_name("test").connect() as ssh:
        with pytest.raises(CommandError, match="can't cd to no/such/dir"):
            ssh.chdir("no/such/dir")
        assert ssh.cwd is None


def test_nohup_fails_with_the_log_when_the_process_dies_at_once(sandbox_env: Sandbox) -> None:
    with po.connect().droplets.by_name("test").connect() as ssh:
        outcome = ssh.nohup("echo cannot start >&2; exit 1", name="dies", grace=0.3, raise_on_error=False)
        assert outcome.status == "failed"
        assert "cannot start" in outcome.stderr


def test_a_nohup_process_outlives_the_ssh_session(sandbox_env: Sandbox) -> None:
    droplet = po.connect().droplets.by_name("test")
    home = sandbox_env.home("test")
    go, log = home / "survivor.go", home / "survivor.log"
    go.unlink(missing_ok=True)
    # It says "outlived" only once told to, which happens after the session that started it has ended.
    command = "until [ -e survivor.go ]; do sleep 0.05; done; echo outlived; exec sleep 120"
    with droplet.connect() as ssh:
        assert ssh.nohup(command, name="survivor", grace=0.1).changed
        pid = int(ssh.wait("cat .poseidon/survivor.pid"))
        session = int(ssh.wait("echo $PPID"))  # the sshd process serving this connection
        assert Path(f"/proc/{session}/cmdline").read_bytes().startswith(b"sshd"), "not the session's sshd"
    # The session is over on the droplet's side too: whatever its end would do to its processes is done.
    wait_for("the session's sshd to exit", lambda: not process_running(session))

    with droplet.connect() as ssh:
        ssh.wait("touch survivor.go")

        def answered() -> bool:
            return log.exists() and "outlived" in log.read_text().splitlines()

        wait_for("the process to answer or end", lambda: answered() or not process_running(pid))
        assert answered(), f"the process ended with the session; its log: {log.read_text() if log.exists() else None!r}"
        assert ssh.wait(f"kill -0 {pid} && echo alive") == "alive\n"
        ssh.wait(f"kill -TERM {pid}")  # its wrapper ends the group; the next test starts clean


def test_interactive_prints_each_command_and_its_output(
    sandbox_env: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # what the user would type: nothing
    with po.connect().droplets.by_name("test").connect(interactive=True) as ssh:
        assert ssh.wait("echo interactive-foo") == "interactive-foo\n"
        assert ssh.apt("git").status == "ok"
    out = capsys.readouterr().out
    assert "[test] $ echo interactive-foo\n" in out
    assert "interactive-foo\r\n" in out or "interactive-foo\n" in out.split("$ echo interactive-foo", 1)[1]
    assert "[test] $ apt git" in out


def test_a_step_asks_sudo_for_a_password_only_in_an_interactive_session_without_secrets() -> None:
    from poseidon import steps

    script = steps.Script(apply="true", needs_root=True)
    quiet = steps.render(script, steps.StepContext(user="deploy"))
    asking = steps.render(script, steps.StepContext(user="deploy"), interactive=True)
    as_root = steps.render(script, steps.StepContext(user="root"))
    assert quiet.command == "sudo -n -- sh -c 'eval \"$(cat)\"'" and quiet.stdin and "true" in quiet.stdin
    assert asking.command.startswith("sudo -- sh -c ") and "true" in asking.command and asking.stdin is None
    assert as_root.command == "sh -c 'eval \"$(cat)\"'"
    # A terminal may have to answer sudo, but a token or an env: value still travels as input.
    secret = steps.Script(apply="git clone https://x-access-token:hunter2@example.com/r", needs_root=True, secret=True)
    for rendered in (
        steps.render(secret, steps.StepContext(user="deploy"), interactive=True),
        steps.render(script, steps.StepContext(user="deploy"), interactive=True, env={"PASSWORD": "hunter2"}),
    ):
        assert rendered.command == "sudo -n -- sh -c 'eval \"$(cat)\"'"
        assert rendered.stdin is not None and "hunter2" in rendered.stdin


def test_an_interactive_session_sends_an_env_value_as_input_never_on_a_command_line(
    sandbox_env: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from poseidon import steps

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # what the user would type: nothing
    secret = "hunter2-" + "v4lue" * 4
    home = sandbox_env.home("test")
    (home / "env-value").unlink(missing_ok=True)
    # It runs until the watcher has seen it running: then its sleep is ended.
    step = steps.build("run", cmd='printf %s "$PASSWORD" > env-value; sleep 60.4712; true', env={"PASSWORD": secret})
    outcomes = []
    with po.connect().droplets.by_name("test").connect(interactive=True) as ssh, command_lines_seen() as seen:
        runner = threading.Thread(target=lambda: outcomes.append(ssh.run_step(step)))
        runner.start()
        end_once_seen(sandbox_env, "test", seen, b"sleep\x0060.4712\x00")
        runner.join(PATIENCE)
    capsys.readouterr()
    outcome = outcomes[0]
    assert outcome.status == "changed", outcome.stderr
    assert (home / "env-value").read_text() == secret  # the value arrived
    assert not [argv for argv in seen if secret.encode() in argv]


def test_apt_checks_versions_and_reports_missing_packages(sandbox_env: Sandbox) -> None:
    from poseidon import steps

    with po.connect().droplets.by_name("test").connect() as ssh:
        installed = ssh.wait("dpkg-query -W -f='${Version}' git")

        def plan(*packages: str) -> str:
            return ssh.run_step(steps.build("apt", packages=list(packages)), mode="check").status

        assert plan("git") == "ok"
        assert plan(f"git={installed}") == "ok"
        assert plan("git=0.0-not-this-one") == "would-change"
        assert plan("git", "poseidon-no-such-package") == "would-change"


def test_nohup_restarts_the_process_when_its_command_changes(sandbox_env: Sandbox) -> None:
    with po.connect().droplets.by_name("test").connect() as ssh:
        assert ssh.nohup("sleep 301", name="edited", grace=0.1).changed
        first = ssh.wait("cat .poseidon/edited.pid").strip()
        assert ssh.nohup("sleep 301", name="edited", grace=0.1).status == "ok"
        assert ssh.nohup("sleep 302", name="edited", grace=0.1).changed
        second = ssh.wait("cat .poseidon/edited.pid").strip()
        assert first != second
        assert ssh.wait(f"ps -o stat= -g {first} | grep -v '^Z' || true") == ""
        assert ssh.wait(f"ps -o args= -p {second}") == 'sh -c eval "$(cat)" poseidon:edited\n'
        assert "sleep 302" in ssh.wait(f"ps -o args= -g {second}").splitlines()


def test_pip_into_the_system_python_is_an_explicit_opt_in(sandbox_env: Sandbox) -> None:
    home = sandbox_env.home("test")
    wheels = build_wheel(home / "sys-wheels", name="tinysys").parent
    offline = offline_pip_env(wheels)
    # Each install is fenced off this machine's real system Python, which the sandbox droplet shares:
    # without system: true, pip is told to refuse any Python but a virtualenv's;
    # with it, PIP_TARGET sends the package to a folder of the droplet's home.
    venv_only = {**offline, "PIP_REQUIRE_VIRTUALENV": "1"}
    target = {**offline, "PIP_TARGET": str(home / "sys-target"), "PYTHONPATH": str(home / "sys-target")}
    with po.connect().droplets.by_name("test").connect() as ssh:
        ssh.wait("rm -rf opt-in system && mkdir opt-in system")
        ssh.chdir("opt-in")
        default = ssh.pip("tinysys", env=venv_only, raise_on_error=False)
        ssh.chdir("../system")
        first = ssh.pip("tinysys", system=True, env=target)
        second = ssh.pip("tinysys", system=True, env=target)
    assert default.status == "changed", default.stderr
    (in_venv,) = (home / "opt-in" / ".venv").glob("lib/python*/site-packages/tinysys")  # the default: a virtualenv
    assert (first.status, second.status) == ("changed", "ok"), first.stderr
    assert (home / "sys-target" / "tinysys" / "__init__.py").exists()
    assert not (home / "system" / ".venv").exists()
    assert list(home.glob("**/site-packages/tinysys")) == [in_venv]  # no virtualenv was used for the system one


def test_a_system_pip_passes_break_system_packages_only_where_pip_knows_it() -> None:
    from poseidon import steps

    script = steps.script_for(steps.build("pip", packages=["flask"], system=True), steps.StepContext())
    assert "--break-system-packages" in script.apply
    assert "python3 -m pip install --help" in script.apply
    venv = steps.script_for(steps.build("pip", packages=["flask"]), steps.StepContext())
    assert "--break-system-packages" not in venv.apply
