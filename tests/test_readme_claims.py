"""README claims that no other test proved, each shown for real on the sandbox.

tests/README.md ("README claims, and the tests that prove them") maps every
claim of README.md to its test, these and the others. Tests here wait on
events (a marker file a step writes, a line a process prints), never on
the clock; timeouts are safety nets only.
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import poseidon.api as po
import poseidon.sandbox as sandbox_module
import poseidon.sandbox.power as sandbox_power
from poseidon import executor, spec, steps
from poseidon.cli import main
from poseidon.results import RunResult
from poseidon.sandbox import Sandbox, SandboxError
from poseidon.settings import Settings
from poseidon.ssh import SSHClient
from support.sandboxes import point_at, pointed, process_running, runs_on, wait_for
from support.wheels import build_wheel, offline_pip_env

pytestmark = pytest.mark.sandbox

WORKERS = ["w1", "w2", "w3", "w4"]
#: A safety net for waits on events: never reached when things work.
PATIENCE = 120.0


@pytest.fixture(scope="module")
def fleet() -> Iterator[Sandbox]:
    """Four droplets tagged ``workers`` and one tagged ``data``, for the tests that leave the shims alone."""
    droplets = [{"name": name, "tags": ["workers"]} for name in WORKERS] + [{"name": "db", "tags": ["data"]}]
    with Sandbox(droplets) as sandbox:
        yield sandbox


@pytest.fixture
def env(fleet: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """The fleet, with its variables in the environment (as `poseidon sandbox up` prints them)."""
    monkeypatch.setenv("COLUMNS", "200")  # tables wide enough not to fold an address
    return point_at(fleet, monkeypatch)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def statuses(report: dict[str, Any]) -> dict[str, list[str]]:
    return {d["name"]: [s["status"] for s in d["steps"]] for d in report["droplets"]}


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    """``poseidon ARGS --json`` in this process: its exit status and what it printed, parsed."""
    code = main([*args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def user_environment(**more: str) -> dict[str, str]:
    """This environment as a user's shell has it: no poseidon or DigitalOcean settings but ``more``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("POSEIDON_", "DIGITALOCEAN_"))}
    return {**kept, "COLUMNS": "200", **more}


def kept_sandbox(playbook: Path) -> Path:
    return playbook.parent / ".poseidon" / "sandbox" / playbook.stem


# -- `apply --check`: "(as plan)": says what would change, changes nothing ---------------------------


def test_apply_check_says_what_would_change_as_plan_does_and_changes_nothing(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        droplets: [w1, w2]
        steps:
          - run: {cmd: touch checked-file, creates: checked-file}
          - nohup: {cmd: "sleep 611", name: checked, grace: 0}
        report: {ps: false, top: false}
        """,
    )
    code, checked = run_json(capsys, "apply", str(playbook), "--check")
    assert code == 0 and checked["mode"] == "check"
    assert statuses(checked) == {"w1": ["would-change"] * 2, "w2": ["would-change"] * 2}
    code, planned = run_json(capsys, "plan", str(playbook))
    assert code == 0 and statuses(planned) == statuses(checked)
    for name in ("w1", "w2"):
        assert not (env.home(name) / "checked-file").exists()
        assert not (env.home(name) / ".poseidon" / "checked.pid").exists()
    assert not (tmp_path / ".poseidon" / "runs").exists()  # a check is no run: nothing to resume from

    code, applied = run_json(capsys, "apply", str(playbook))
    assert code == 0 and statuses(applied) == {"w1": ["changed"] * 2, "w2": ["changed"] * 2}
    code, again = run_json(capsys, "apply", str(playbook), "--check")
    assert code == 0 and statuses(again) == {"w1": ["ok"] * 2, "w2": ["ok"] * 2}


# -- droplets by tag: `poseidon droplets --tag T`, and `- tag: workers` in a playbook --------------


def test_droplets_tag_lists_only_the_droplets_that_carry_the_tag(
    env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    code, listed = run_json(capsys, "droplets", "--tag", "workers")
    assert code == 0
    assert sorted(d["name"] for d in listed) == WORKERS
    assert all("workers" in d["tags"] for d in listed)
    code, none = run_json(capsys, "droplets", "--tag", "nobody-carries-this")
    assert code == 0 and none == []

    assert main(["droplets", "--tag", "data"]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if env.address("db") in line]
    assert len(rows) == 1 and "db" in rows[0] and "data" in rows[0]
    assert not any(name in table for name in WORKERS)


def test_a_tag_in_the_playbook_runs_the_steps_on_every_droplet_that_carries_it(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        droplets:
          - tag: workers
        steps:
          - run: echo "${droplet.name} ${droplet.tags}" > tagged-by-the-playbook
        report: {ps: false, top: false}
        """,
    )
    code, report = run_json(capsys, "apply", str(playbook))
    assert code == 0
    assert statuses(report) == {name: ["changed"] for name in WORKERS}
    for name in WORKERS:
        said = (env.home(name) / "tagged-by-the-playbook").read_text()
        assert said.split()[0] == name and "workers" in said
    assert not (env.home("db") / "tagged-by-the-playbook").exists()


# -- `poseidon ps NAME` and `poseidon top NAME` ----------------------------------------------------


def test_ps_and_top_print_a_droplet_s_processes(env: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    with po.connect().droplets.by_name("w3").connect() as ssh:
        # Ready once the command itself runs in the process group the step started.
        ready = "ps -o args= -g $(cat .poseidon/seen-by-ps.pid) | grep -qx 'sleep 4711'"
        ssh.nohup("sleep 4711", name="seen-by-ps", ready={"cmd": ready, "timeout": 30})
    assert main(["ps", "w3", "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]  # after the title
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    shown = {int(line.split()[1]) for line in lines[1:] if line.rstrip().endswith("sleep 4711")}
    assert shown & env.pids("w3"), "ps shows the droplet's own sleep"
    # A sandbox droplet is this machine: its snapshot shows the whole process table, this test's own process too.
    assert any(line.split()[1] == str(os.getpid()) for line in lines[1:])

    assert main(["top", "w3", "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert lines[0].split() == ["%CPU", "%MEM", "USER", "COMMAND"]
    assert any(line.split()[2:] == [env.user, "sleep"] for line in lines[1:])
    assert runs_on(env, ["w3"], "sleep 4711"), "the sleep top shows is the droplet's own"

    for command in ("ps", "top"):
        assert main([command, "no-such-droplet"]) == 2
        assert "no droplet named 'no-such-droplet'" in capsys.readouterr().err


# -- `poseidon sandbox up --playbook F`, then `down`: as a user types it --------------------------


def test_sandbox_up_with_a_playbook_serves_its_droplets_and_repositories_until_down(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(project / "apps" / "hello" / "index.html", "hello from the playbook's own app\n")
    write(
        project / "site.yaml",
        """
        version: 1
        droplets:
          - web-1
          - tag: workers
        steps:
          - git: {repo: acme/hello, dest: hello}
          - chdir: hello
          - run: {cmd: cat index.html, changes: false}
        report: {ps: false, top: false}
        """,
    )
    bin_dir = Path(sys.executable).parent
    script = f"""
        set -e
        command -v poseidon >/dev/null || poseidon() {{ {shlex.quote(sys.executable)} -m poseidon.cli "$@"; }}
        eval "$(poseidon sandbox up --playbook site.yaml)"
        trap 'poseidon sandbox down --playbook site.yaml > down.txt' EXIT
        poseidon apply site.yaml --json > applied.json
        poseidon droplets --json > droplets.json
        poseidon top web-1 > top.txt
        """
    environment = user_environment(
        XDG_STATE_HOME=str(tmp_path / "state"), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    )
    try:
        done = subprocess.run(
            ["bash", "-c", textwrap.dedent(script)],
            check=False,
            cwd=project,
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:  # a script cut short leaves no sandbox behind
        down = [sys.executable, "-m", "poseidon.cli", "sandbox", "reset", "--playbook", "site.yaml"]
        subprocess.run(down, check=False, cwd=project, env=environment, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    applied = json.loads((project / "applied.json").read_text())
    assert statuses(applied) == {"web-1": ["changed", "ok", "ok"], "workers-1": ["changed", "ok", "ok"]}
    assert {d["steps"][2]["stdout_tail"] for d in applied["droplets"]} == {"hello from the playbook's own app"}
    listed = json.loads((project / "droplets.json").read_text())
    assert sorted((d["name"], tuple(d["tags"])) for d in listed) == [("web-1", ()), ("workers-1", ("workers",))]
    assert (project / "top.txt").read_text().splitlines()[1].split() == ["%CPU", "%MEM", "USER", "COMMAND"]
    assert re.fullmatch(r"sandbox stopped \(pid \d+\)\n", (project / "down.txt").read_text())
    # Its state was the playbook's kept sandbox's, beside it; the user's state folder was not used.
    assert not (project / ".poseidon" / "sandbox" / "site" / "state.json").exists()
    assert not (tmp_path / "state" / "poseidon").exists()
    daemon = int((project / "down.txt").read_text().split("pid ")[1].rstrip(")\n"))
    assert not process_running(daemon)


# -- `status --sandbox`: alive or dead, pid, uptime --------------------------------------------------


def _seconds(uptime: str) -> int:
    """``ps -o etime`` text (``[[dd-]hh:]mm:ss``) in seconds."""
    days, _, clock = uptime.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def test_status_sandbox_shows_each_process_alive_with_its_pid_and_uptime_then_dead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        droplets: [status-1]
        steps:
          - nohup: {cmd: "echo serving; exec sleep 900", name: napper, ready: {cmd: "grep -q serving napper.log"}}
        report: {ps: false, top: false}
        """,
    )
    try:
        started = time.monotonic()
        assert main(["apply", str(playbook), "--sandbox", "--quiet"]) == 0
        capsys.readouterr()
        code, found = run_json(capsys, "status", str(playbook), "--sandbox")
        elapsed = time.monotonic() - started
        assert code == 0 and len(found) == 1
        napper = found[0]
        assert (napper["droplet"], napper["name"], napper["state"], napper["log_tail"]) == (
            "status-1",
            "napper",
            "alive",
            "serving",
        )
        assert re.fullmatch(r"(\d+-)?(\d+:)?\d\d:\d\d", napper["uptime"]), napper["uptime"]
        assert 0 <= _seconds(napper["uptime"]) <= elapsed + 1
        pid = napper["pid"]
        assert process_running(pid)

        assert main(["status", str(playbook), "--sandbox"]) == 0
        table = capsys.readouterr().out
        header = next(line for line in table.splitlines() if "uptime" in line)
        assert [c.strip() for c in header.strip().strip("|").split("|")] == [
            "droplet",
            "process",
            "state",
            "pid",
            "uptime",
            "directory",
            "log",
        ]
        row = next(line for line in table.splitlines() if "napper" in line)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2:4] == ["alive", str(pid)] and re.fullmatch(r"(\d+-)?(\d+:)?\d\d:\d\d", cells[4])

        os.killpg(pid, signal.SIGKILL)  # the group the process leads: the whole app
        wait_for(f"process {pid} to end", lambda: not process_running(pid))
        code, found = run_json(capsys, "status", str(playbook), "--sandbox")
        assert code == 1 and (found[0]["state"], found[0]["pid"], found[0]["uptime"]) == ("dead", None, "")
    finally:
        Sandbox.wipe(kept_sandbox(playbook))


# -- a droplet's `user:`; apt's `sudo -n` when the user is not root ---------------------------------


def test_a_droplet_s_user_is_the_ssh_login_the_playbook_names(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        droplets:
          - w1
          - {name: w2, user: poseidon-no-such-user}
        steps:
          - run: touch logged-in
        report: {ps: false, top: false}
        """,
    )
    code, report = run_json(capsys, "apply", str(playbook))
    assert code == 3
    w1, w2 = report["droplets"]
    assert w1["error"] is None and [s["status"] for s in w1["steps"]] == ["changed"]  # POSEIDON_SSH_USER
    assert f"poseidon-no-such-user@{env.address('w2')}:{env.ssh_port}" in w2["error"]
    assert "the login was refused" in w2["error"]
    assert not (env.home("w2") / "logged-in").exists()


def test_without_the_variables_the_ssh_user_is_root_and_the_port_22(
    env: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    droplet = po.connect().droplets.by_name("w1")
    with droplet.connect() as pointed_at:
        assert (pointed_at.user, pointed_at.port) == (env.user, env.ssh_port)
    monkeypatch.delenv("POSEIDON_SSH_USER")
    monkeypatch.delenv("POSEIDON_SSH_PORT")
    # The settings are read once, when the client is made: a client made now logs in by default.
    with droplet.connect() as still:
        assert (still.user, still.port) == (env.user, env.ssh_port)
    droplet = po.connect().droplets.by_name("w1")
    with droplet.connect() as default:  # not opened: only what it would log in as
        assert (default.user, default.port, default.host) == ("root", 22, env.address("w1"))


# Records every call of the sandbox's sudo, then does what it did.
_SUDO_RECORDER = """#!/bin/sh
printf '%s\\n' "$*" >> "$HOME/sudo-calls"
exec {original} "$@"
"""


def test_apt_for_a_user_who_is_not_root_runs_under_sudo_n_and_for_root_without_sudo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The light sandbox logs in only as the user who runs it, and its sudo runs as that user:
    what can be shown is what poseidon sends for the user a playbook names. The SSH login is
    made as the sandbox's user; the client keeps the playbook's user, which alone decides sudo."""
    with pointed(["deb"], monkeypatch) as sandbox:
        assert sandbox.farm is not None
        shim = sandbox.farm.shims / "sudo"
        original = shim.with_name("sudo-as-it-was")
        shim.rename(original)
        write(shim, _SUDO_RECORDER.format(original=shlex.quote(str(original)))).chmod(0o755)
        login = SSHClient._open

        def login_as_the_sandbox_user(self: SSHClient) -> Any:
            named, self.user = self.user, sandbox.user
            try:
                return login(self)
            finally:
                self.user = named

        monkeypatch.setattr(SSHClient, "_open", login_as_the_sandbox_user)
        calls = sandbox.home("deb") / "sudo-calls"
        under_sudo = '-n -- sh -c eval "$(cat)"'
        # deploy: the apt step and the step that asks; root: only the step that asks.
        for user, sudo_calls in (("deploy", [under_sudo] * 2), ("root", [under_sudo])):
            playbook = write(
                tmp_path / f"{user}.yaml",
                f"""
                version: 1
                droplets:
                  - {{name: deb, user: {user}}}
                steps:
                  - run: echo a step that needs no root
                  - apt: [git]
                  - run: {{cmd: id -un, sudo: true, changes: false}}
                report: {{ps: false, top: false}}
                """,
            )
            calls.unlink(missing_ok=True)
            code, report = run_json(capsys, "apply", str(playbook))
            assert code == 0 and statuses(report) == {"deb": ["changed", "ok", "ok"]}
            recorded = calls.read_text().splitlines() if calls.exists() else []
            assert recorded == sudo_calls  # never the first step, which needs no root
            assert report["droplets"][0]["steps"][2]["stdout_tail"] == sandbox.user  # the sandbox's sudo runs as you
            assert steps.uses_sudo(steps.Script(apply=":", needs_root=True), steps.StepContext(user=user)) == (
                user != "root"
            )


# -- POSEIDON_SSH_KEY and POSEIDON_KNOWN_HOSTS unset: ssh-agent and ~/.ssh, ~/.ssh/known_hosts ------


@pytest.fixture
def own_home(tmp_path: Path, env: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of the test's own with an empty ~/.ssh, no agent, and neither variable set."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    for name in ("POSEIDON_SSH_KEY", "POSEIDON_KNOWN_HOSTS", "SSH_AUTH_SOCK"):
        monkeypatch.delenv(name, raising=False)
    return home


def _one_step(tmp_path: Path, droplet: str) -> Path:
    return write(
        tmp_path / "site.yaml",
        f"version: 1\ndroplets: [{droplet}]\nsteps:\n  - run: echo logged in\nreport: {{ps: false, top: false}}\n",
    )


def test_without_poseidon_ssh_key_the_key_in_dot_ssh_logs_in_and_host_keys_go_to_dot_ssh_known_hosts(
    tmp_path: Path, own_home: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = _one_step(tmp_path, "w4")
    sandbox_known_hosts = Path(env.known_hosts).read_bytes()
    assert not (own_home / ".ssh" / "known_hosts").exists()
    # No agent, no variable: the one key there is, is the one in ~/.ssh.
    shutil.copy(env.key_filename, own_home / ".ssh" / "id_ed25519")
    (own_home / ".ssh" / "id_ed25519").chmod(0o600)
    code, report = run_json(capsys, "apply", str(playbook))
    assert code == 0 and statuses(report) == {"w4": ["changed"]}
    droplet = po.connect().droplets.by_name("w4")
    recorded = (own_home / ".ssh" / "known_hosts").read_text()
    assert f"[{env.address('w4')}]:{env.ssh_port}" in recorded and f"poseidon-droplet-{droplet.id}" in recorded
    assert Path(env.known_hosts).read_bytes() == sandbox_known_hosts  # the file the variable named is not used


def test_without_poseidon_ssh_key_a_key_held_by_ssh_agent_logs_in(
    tmp_path: Path, own_home: Path, env: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not shutil.which("ssh-agent") or not shutil.which("ssh-add"):
        pytest.skip("needs OpenSSH's ssh-agent and ssh-add (Debian: openssh-client)")
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert agent.stdout is not None
        assert agent.stdout.readline().startswith("SSH_AUTH_SOCK="), "the agent printed where it listens"
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        subprocess.run(["ssh-add", "-q", env.key_filename], check=True, capture_output=True, timeout=60)
        assert list((own_home / ".ssh").iterdir()) == []  # no key file to fall back on
        code, report = run_json(capsys, "apply", str(_one_step(tmp_path, "w4")))
        assert code == 0 and statuses(report) == {"w4": ["changed"]}
        assert (own_home / ".ssh" / "known_hosts").exists()
    finally:
        agent.terminate()
        agent.wait(timeout=30)


# -- `apt: {update: true}` ---------------------------------------------------------------------------

# Records every call of the sandbox's apt-get; an install is recorded and not made (the
# packages exist nowhere); anything else goes to the sandbox's own shim (which skips update).
_APT_RECORDER = """#!/bin/sh
printf '%s\\n' "$*" >> "$HOME/apt-get-calls"
for arg in "$@"; do
    if [ "$arg" = install ]; then echo "recorded, not installed"; exit 0; fi
done
exec {original} "$@"
"""


def test_apt_update_true_refreshes_the_package_lists_before_installing_and_only_then(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pointed(["pkg"], monkeypatch) as sandbox:
        assert sandbox.farm is not None
        shim = sandbox.farm.shims / "apt-get"
        original = shim.with_name("apt-get-as-it-was")
        shim.rename(original)
        write(shim, _APT_RECORDER.format(original=shlex.quote(str(original)))).chmod(0o755)
        playbook = write(
            tmp_path / "site.yaml",
            """
            version: 1
            droplets: [pkg]
            steps:
              - apt: {packages: [poseidon-readme-absent-one], update: true}
              - apt: [poseidon-readme-absent-two]
            report: {ps: false, top: false}
            """,
        )
        calls = sandbox.home("pkg") / "apt-get-calls"
        code, planned = run_json(capsys, "plan", str(playbook))
        assert code == 0 and statuses(planned) == {"pkg": ["would-change", "would-change"]}
        assert not calls.exists()  # a plan refreshes nothing either

        code, report = run_json(capsys, "apply", str(playbook))
        assert code == 0 and statuses(report) == {"pkg": ["changed", "changed"]}
        options = "-q -o DPkg::Lock::Timeout=300"
        assert calls.read_text().splitlines() == [
            f"{options} update",
            f"{options} install -y -- poseidon-readme-absent-one",
            f"{options} install -y -- poseidon-readme-absent-two",
        ]
        first, second = report["droplets"][0]["steps"]
        assert first["stdout_tail"].splitlines() == ["sandbox: apt-get update skipped", "recorded, not installed"]
        assert second["stdout_tail"] == "recorded, not installed"


# -- `run` guards and checks; `restart: always` and `never` -----------------------------------------


def test_run_guards_say_when_nothing_is_to_do_and_a_check_is_ok_or_failed_never_changed(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    home = env.home("w2")
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        droplets: [w2]
        steps:
          - run: {cmd: "echo created >> guarded-creates", creates: guarded-creates}
          - run: {cmd: "echo ran >> guarded-unless", unless: "grep -q ran guarded-unless"}
          - run: {cmd: "test -e guarded-creates", changes: false}
          - run: {cmd: "test -e check-flag", changes: false}
          - run: echo again >> unguarded
        report: {ps: false, top: false}
        """,
    )
    (home / "check-flag").touch()
    code, first = run_json(capsys, "apply", str(playbook))
    assert code == 0 and statuses(first) == {"w2": ["changed", "changed", "ok", "ok", "changed"]}
    code, second = run_json(capsys, "apply", str(playbook))
    assert code == 0 and statuses(second) == {"w2": ["ok", "ok", "ok", "ok", "changed"]}  # no guard: every time
    assert [s["reason"] for s in second["droplets"][0]["steps"][:2]] == [
        "guarded-creates exists",
        "the unless command succeeded",
    ]
    assert (home / "guarded-creates").read_text() == "created\n" and (home / "guarded-unless").read_text() == "ran\n"
    assert (home / "unguarded").read_text() == "again\n" * 2

    (home / "check-flag").unlink()
    for command in ("plan", "apply"):  # a plan runs the checks too
        code, report = run_json(capsys, command, str(playbook))
        assert code == 1 and statuses(report)["w2"][:4] == ["ok", "ok", "ok", "failed"]
    assert (home / "unguarded").read_text() == "again\n" * 2  # the failed check stopped the droplet


def test_restart_always_restarts_at_every_apply_and_never_only_starts_what_does_not_run(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    home = env.home("w3")
    text = """
        version: 1
        droplets: [w3]
        steps:
          - nohup: {cmd: "sleep 3301", name: every-time, restart: always, grace: 0}
          - nohup: {cmd: "sleep COMMAND", name: left-alone, restart: never, grace: 0}
        report: {ps: false, top: false}
        """
    playbook = write(tmp_path / "site.yaml", text.replace("COMMAND", "3302"))

    def pids() -> tuple[int, int]:
        return int((home / ".poseidon" / "every-time.pid").read_text()), int(
            (home / ".poseidon" / "left-alone.pid").read_text()
        )

    code, first = run_json(capsys, "apply", str(playbook))
    assert code == 0 and statuses(first) == {"w3": ["changed", "changed"]}
    always, never = pids()
    write(playbook, text.replace("COMMAND", "3303"))  # a new definition: never restarts it all the same
    code, second = run_json(capsys, "apply", str(playbook))
    assert code == 0 and statuses(second) == {"w3": ["changed", "ok"]}
    again_always, again_never = pids()
    assert again_always != always and not process_running(always)
    assert again_never == never and process_running(never)
    os.killpg(never, signal.SIGKILL)
    wait_for(f"process {never} to end", lambda: not process_running(never))
    code, third = run_json(capsys, "apply", str(playbook))
    assert code == 0 and statuses(third) == {"w3": ["changed", "changed"]}  # not running: started
    assert pids()[1] != never


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_ready_port_knocks_on_the_droplet_s_address_unless_host_says_otherwise(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _free_port()
    serve = f"exec python3 -m http.server {port} --bind 127.0.0.1"
    playbook = write(
        tmp_path / "site.yaml",
        f"""
        version: 1
        droplets: [db]
        steps:
          - nohup: {{cmd: "{serve}", name: local-only, ready: {{port: {port}, timeout: 1}}}}
        report: {{ps: false, top: false}}
        """,
    )
    # Listening on 127.0.0.1 only: the droplet's own address never answers, so it is never ready.
    code, report = run_json(capsys, "apply", str(playbook))
    step = report["droplets"][0]["steps"][0]
    assert code == 1 and step["status"] == "failed"
    assert f"local-only is not ready after 1 s (waited for port {port} on {env.address('db')})" in step["stderr_tail"]
    write(playbook, playbook.read_text().replace(f"port: {port},", f"port: {port}, host: 127.0.0.1,"))
    code, report = run_json(capsys, "apply", str(playbook))
    # The process the failed run started still runs; knocking on 127.0.0.1 finds it ready.
    step = report["droplets"][0]["steps"][0]
    assert code == 0 and (step["status"], step["reason"]) == ("ok", "local-only is running")
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass  # it answers where the step waited for it


# -- `pip_r`: installs again when the requirements file (or the venv) changed ------------------------


def _installed_version(venv: Path, name: str) -> str:
    found = list(venv.glob(f"lib/python3*/site-packages/{name}/__init__.py"))
    assert len(found) == 1, found
    return found[0].read_text().split("=", 1)[1].strip().strip("'\"")


def test_pip_r_installs_again_when_the_requirements_file_or_the_venv_changed(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    wheels = build_wheel(tmp_path / "wheels", name="tinyreq", version="1.0").parent
    build_wheel(wheels, name="tinyreq", version="2.0")
    app = env.home("db") / "pip-r-app"
    requirements = write(app / "requirements.txt", "tinyreq==1.0\n")
    offline = json.dumps(offline_pip_env(wheels))
    playbook = write(
        tmp_path / "site.yaml",
        f"""
        version: 1
        droplets: [db]
        steps:
          - chdir: pip-r-app
          - pip_r: {{requirements: requirements.txt, env: {offline}}}
        report: {{ps: false, top: false}}
        """,
    )

    def apply(command: str = "apply") -> dict[str, Any]:
        code, report = run_json(capsys, command, str(playbook))
        assert code == 0
        step: dict[str, Any] = report["droplets"][0]["steps"][1]
        return step

    assert apply()["status"] == "changed"
    assert _installed_version(app / ".venv", "tinyreq") == "1.0"
    again = apply()
    assert (again["status"], again["reason"]) == ("ok", "requirements.txt unchanged since the last install")

    requirements.write_text("tinyreq==2.0\n")
    assert apply("plan")["status"] == "would-change"
    assert apply()["status"] == "changed"
    assert _installed_version(app / ".venv", "tinyreq") == "2.0"
    assert apply()["status"] == "ok"

    shutil.rmtree(app / ".venv")  # the venv made anew: installed into again
    assert apply()["status"] == "changed"
    assert _installed_version(app / ".venv", "tinyreq") == "2.0"


# -- `destroy` asks on a terminal ---------------------------------------------------------------------


def _on_a_terminal(args: list[str], answer: str, *, cwd: Path, prompt: bytes = b"[y/N] ") -> tuple[int, str]:
    """Run ``poseidon ARGS`` on a pseudo-terminal, answer ``answer`` once it shows ``prompt``;
    return its exit status and all it wrote."""
    primary, secondary = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "poseidon.cli", *args],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        cwd=cwd,
        env=user_environment(),
        start_new_session=True,
    )
    os.close(secondary)
    screen = b""
    answered = False
    deadline = time.monotonic() + PATIENCE
    try:
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"poseidon {' '.join(args)} still runs; it wrote: {screen.decode(errors='replace')}"
                )
            readable, _, _ = select.select([primary], [], [], 1.0)
            if not readable:
                continue
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: every copy of the terminal's other end is closed
                break
            if not chunk:
                break
            screen += chunk
            if not answered and prompt in screen:
                os.write(primary, answer.encode() + b"\n")
                answered = True
        return process.wait(timeout=PATIENCE), screen.decode(errors="replace")
    finally:
        os.close(primary)
        if process.poll() is None:
            process.kill()
            process.wait()


def test_destroy_asks_on_a_terminal_and_deletes_only_after_yes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        name: asked-first
        droplets:
          - name: asked-web
            create: {region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}
        steps:
          - run: "true"
        report: {ps: false, top: false}
        """,
    )
    try:
        assert main(["apply", str(playbook), "--sandbox", "--quiet"]) == 0
        capsys.readouterr()
        code, listed = run_json(capsys, "destroy", str(playbook), "--sandbox", "--check")
        assert code == 0 and [d["name"] for d in listed["droplets"]] == ["asked-web"]

        code, screen = _on_a_terminal(["destroy", "site.yaml", "--sandbox"], "n", cwd=tmp_path)
        assert code == 1, screen  # declined: nothing done, as apt-get answers n
        assert "delete 1 droplet(s) and 0 DNS record(s)? [y/N]" in screen
        assert "nothing deleted: not confirmed" in screen
        code, listed = run_json(capsys, "destroy", str(playbook), "--sandbox", "--check")
        assert code == 0 and [d["name"] for d in listed["droplets"]] == ["asked-web"]  # still there

        code, screen = _on_a_terminal(["destroy", "site.yaml", "--sandbox"], "y", cwd=tmp_path)
        assert code == 0, screen
        assert "deleted 1 droplet(s) and 0 DNS record(s)" in screen
        code, listed = run_json(capsys, "destroy", str(playbook), "--sandbox", "--check")
        assert code == 0 and listed["droplets"] == []
    finally:
        Sandbox.wipe(kept_sandbox(playbook))


# -- `interactive=True`: commands printed, and sudo may ask for a password --------------------------

# sudo as it is for a user who needs a password: with -n it refuses; else it asks on the
# terminal, and runs the command (as the sandbox's user) once the answer is right.
_SUDO_WITH_A_PASSWORD = """#!/bin/sh
for arg in "$@"; do
    case "$arg" in
        -n) echo "sudo: a password is required" >&2; exit 1 ;;
        --) break ;;
    esac
done
if ! { : > /dev/tty; } 2>/dev/null; then echo "sudo: a terminal is required to read the password" >&2; exit 1; fi
printf '[sudo] password for %s: ' "$(id -un)" > /dev/tty
IFS= read -r answer < /dev/tty
[ "$answer" = "open sesame" ] || { echo "sudo: 1 incorrect password attempt" >&2; exit 1; }
while [ $# -gt 0 ]; do case "$1" in --) shift; break ;; -*) shift ;; *) break ;; esac; done
exec "$@"
"""


def test_interactive_prints_each_step_and_lets_sudo_ask_for_a_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pointed(["asks"], monkeypatch) as sandbox:
        assert sandbox.farm is not None
        write(sandbox.farm.shims / "sudo", _SUDO_WITH_A_PASSWORD).chmod(0o755)
        made = sandbox.home("asks") / "made-under-sudo"
        step = steps.build("run", cmd="id -un > made-under-sudo", sudo=True)
        droplet = po.connect().droplets.by_name("asks")

        with droplet.connect() as ssh:  # not interactive: sudo -n, which fails at once and says why
            refused = ssh.run_step(step)
        assert refused.status == "failed" and "sudo: a password is required" in refused.stderr
        assert "wants a password" in refused.stderr and not made.exists()
        capsys.readouterr()

        with droplet.connect(interactive=True) as ssh:
            monkeypatch.setattr("sys.stdin", io.StringIO(""))  # what the user types: nothing
            assert ssh.wait("echo shown-as-it-runs") == "shown-as-it-runs\n"
            monkeypatch.setattr("sys.stdin", io.StringIO("open sesame\n"))  # the password, when sudo asks
            asked = ssh.run_step(step)
        assert asked.status == "changed", asked.stderr
        assert made.read_text() == f"{sandbox.user}\n"
        out = capsys.readouterr().out
        assert "[asks] $ echo shown-as-it-runs\n" in out
        assert "[asks] $ run id -un > made-under-sudo\n" in out
        assert f"[sudo] password for {sandbox.user}: " in out


# -- one SSH connection per droplet, droplets in parallel --------------------------------------------


def test_droplets_run_in_parallel_each_over_one_ssh_connection(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    met = tmp_path / "met"
    met.mkdir()
    # The middle step ends only once every droplet has reached it: one at a time, it would never end.
    playbook = write(
        tmp_path / "site.yaml",
        f"""
        version: 1
        droplets: {json.dumps(WORKERS)}
        vars:
          met: {json.dumps(str(met))}
        steps:
          - run: echo "$SSH_CONNECTION"
          - run:
              cmd: |
                mkdir "${{met}}/${{droplet.name}}"
                while [ "$(ls "${{met}}" | wc -l)" -lt {len(WORKERS)} ]; do sleep 0.05; done
              timeout: {PATIENCE:g}
          - run: echo "$SSH_CONNECTION"
        report: {{ps: false, top: false}}
        """,
    )
    code, report = run_json(capsys, "apply", str(playbook))  # no --forks: the default lets all four run
    assert code == 0 and statuses(report) == {name: ["changed"] * 3 for name in WORKERS}
    connections = {}
    for droplet in report["droplets"]:
        first, _, last = (s["stdout_tail"] for s in droplet["steps"])
        assert first == last, "the steps of a droplet share its one connection"
        client_address, client_port, server_address, _ = first.split()
        assert server_address == env.address(droplet["name"])
        connections[droplet["name"]] = (client_address, client_port)
    assert len(set(connections.values())) == len(WORKERS)


# -- `--forks N`: at most N droplets at once -------------------------------------------------------


def test_forks_runs_at_most_n_droplets_at_once(tmp_path: Path, env: Sandbox) -> None:
    markers = tmp_path / "forks"
    (markers / "slots").mkdir(parents=True)
    # Each droplet takes a slot, records how many are taken, waits for the test's go, frees its slot.
    playbook = write(
        tmp_path / "site.yaml",
        f"""
        version: 1
        droplets: {json.dumps(WORKERS)}
        vars:
          dir: {json.dumps(str(markers))}
        steps:
          - run: |
              mkdir "${{dir}}/slots/${{droplet.name}}"
              ls "${{dir}}/slots" | wc -l > "${{dir}}/seen.tmp.${{droplet.name}}"
              mv "${{dir}}/seen.tmp.${{droplet.name}}" "${{dir}}/seen.${{droplet.name}}"
              while [ ! -e "${{dir}}/go.${{droplet.name}}" ]; do sleep 0.05; done
              rmdir "${{dir}}/slots/${{droplet.name}}"
        report: {{ps: false, top: false}}
        """,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "poseidon.cli", "apply", str(playbook), "--forks", "2", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )

    def started() -> set[str]:
        return {p.name.removeprefix("seen.") for p in markers.glob("seen.w*")}

    released: list[str] = []

    def in_their_step(count: int) -> Callable[[], bool]:
        return lambda: len(started() - set(released)) >= count

    try:
        while len(released) < len(WORKERS):
            holding = min(2, len(WORKERS) - len(released))
            wait_for(f"{holding} droplets in their step", in_their_step(holding))
            running = sorted(started() - set(released))
            assert len(running) == holding, f"more than 2 droplets in the step at once: {running}"
            (markers / f"go.{running[0]}").touch()
            released.append(running[0])
        out, err = process.communicate(timeout=PATIENCE)
    finally:
        for name in WORKERS:
            (markers / f"go.{name}").touch()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, out + err
    assert statuses(json.loads(out)) == {name: ["changed"] for name in WORKERS}
    seen = {name: int((markers / f"seen.{name}").read_text()) for name in WORKERS}
    assert max(seen.values()) == 2, seen  # two at once, never three


# -- "sandboxes never meet": a block of 127.0.0.0/8 each ----------------------------------------------


def test_two_sandboxes_take_two_blocks_even_when_the_random_choice_collides(monkeypatch: pytest.MonkeyPatch) -> None:
    with Sandbox(["one"]) as first, Sandbox(["two"]) as second:
        assert first.network != second.network
        assert first.address("one").rsplit(".", 1)[0] == first.network
        assert second.address("two").rsplit(".", 1)[0] == second.network
        _, a, b = first.network.split(".", 2)
        taken = (int(a), int(b))
        real = sandbox_module._random_block
        asked: list[tuple[int, int]] = []

        def collide() -> tuple[int, int]:
            asked.append(taken if not asked else real())  # the first choice: the first sandbox's block
            return asked[-1]

        monkeypatch.setattr(sandbox_module, "_random_block", collide)
        with Sandbox(["three"]) as third:
            assert asked[0] == taken
            assert third.network not in (first.network, second.network)
            with (
                po.connect(settings=Settings.from_environ(third.environ))
                .droplets.by_name("three")
                .connect(
                    user=third.user, port=third.ssh_port, key_filename=third.key_filename, known_hosts=third.known_hosts
                ) as ssh
            ):
                assert ssh.wait("pwd").strip() == str(third.home("three"))  # its own droplet answers


def test_a_block_where_something_listens_is_not_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a kept sandbox leaves running listens on its block after it stops: no other sandbox takes that block."""
    a, b = sandbox_module._random_block()
    while sandbox_power.bound_in(f"127.{a}.{b}"):
        a, b = sandbox_module._random_block()
    with socket.socket() as leftover:
        leftover.bind((f"127.{a}.{b}.77", 0))
        leftover.listen()
        choices = iter([(a, b)])
        real = sandbox_module._random_block
        monkeypatch.setattr(sandbox_module, "_random_block", lambda: next(choices, None) or real())
        with Sandbox(["newcomer"]) as sandbox:
            assert sandbox.network != f"127.{a}.{b}"


def test_a_kept_sandbox_keeps_its_block_and_refuses_to_start_where_another_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "kept"
    try:
        with Sandbox(["kept"], root=root, keep=True) as kept:
            network = kept.network
            _, a, b = network.split(".", 2)
            taken = (int(a), int(b))
        with Sandbox(["kept"], root=root, keep=True) as again:
            assert again.network == network  # its homes are on those addresses
        choices = iter([taken])
        real = sandbox_module._random_block
        monkeypatch.setattr(sandbox_module, "_random_block", lambda: next(choices, None) or real())
        with Sandbox(["borrower"]) as borrower:  # the block is free while the kept sandbox is stopped
            assert borrower.network == network
            with pytest.raises(SandboxError, match=f"another sandbox runs on {re.escape(network)}"):
                Sandbox(["kept"], root=root, keep=True).start()
    finally:
        Sandbox.wipe(root)


# -- secrets: masked in errors and in the run log -------------------------------------------------------


def test_secrets_are_masked_in_the_run_log_and_in_errors(
    tmp_path: Path, env: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cret-for-the-log"
    monkeypatch.setenv("DB_PASSWORD", secret)
    head = "version: 1\ndroplets: [w2]\nvars:\n  db_password: {secret: true, env: DB_PASSWORD}\n"
    playbook = write(
        tmp_path / "site.yaml",
        head
        + 'steps:\n  - run: echo "password is ${db_password}"\n  - chdir: "${db_password}"\n'
        + "report: {ps: false, top: false}\n",
    )
    assert main(["apply", str(playbook), "--json"]) == 1
    out, err = capsys.readouterr()
    logs = list((tmp_path / ".poseidon" / "runs").glob("*.jsonl"))
    assert len(logs) == 1
    log = logs[0].read_text()
    records = [json.loads(line) for line in log.splitlines()][1:]
    assert (records[0]["status"], records[0]["stdout_tail"]) == ("changed", "password is ***")
    assert records[1]["status"] == "failed" and "***" in records[1]["stderr_tail"]  # cd names the directory it missed
    for text in (out, err, log):
        assert secret not in text

    # An error that stops the droplet before any step, made of the secret's value: two process
    # names that only become the same once the values are in.
    clash = write(
        tmp_path / "clash" / "site.yaml",
        head + '  alias: "${db_password}"\n'
        'steps:\n  - nohup: {cmd: sleep 1, name: "${db_password}"}\n  - nohup: {cmd: sleep 2, name: "${alias}"}\n',
    )
    assert main(["apply", str(clash), "--json"]) == 1
    out, err = capsys.readouterr()
    error = json.loads(out)["droplets"][0]["error"]
    assert "***" in error and secret not in out + err
    clash_logs = list((tmp_path / "clash" / ".poseidon" / "runs").glob("*.jsonl"))
    assert clash_logs and secret not in clash_logs[0].read_text()


# -- the library: `poseidon.executor.apply(playbook, ...)` ------------------------------------------------


def test_executor_apply_returns_the_results_with_snapshots_as_dataframes(tmp_path: Path, env: Sandbox) -> None:
    path = write(
        tmp_path / "site.yaml",
        """
        version: 1
        droplets: [w1]
        steps:
          - nohup:
              cmd: "sleep 1905"
              name: library-run
              ready: {cmd: "ps -o args= -g $(cat .poseidon/library-run.pid) | grep -qx 'sleep 1905'"}
          - run: {cmd: "echo from the library", changes: false}
        """,
    )
    result = executor.apply(spec.load(path), path=str(path))  # the API and SSH from the environment
    assert isinstance(result, RunResult) and result.mode == "apply" and not result.failed
    (run,) = result.droplets
    assert (run.name, run.ip_address) == ("w1", env.address("w1"))
    assert [s.status for s in run.steps] == ["changed", "ok"] and run.steps[1].stdout == "from the library"
    assert isinstance(run.ps, pd.DataFrame) and isinstance(run.top, pd.DataFrame)
    assert isinstance(run.started_processes, pd.DataFrame)
    assert list(run.ps.columns) == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert list(run.top.columns) == ["%CPU", "%MEM", "USER", "COMMAND"]
    assert run.ps["PID"].dtype.kind == "i" and run.top["%CPU"].dtype.kind == "f"
    assert (run.started_processes["CMD"] == "sleep 1905").any()
