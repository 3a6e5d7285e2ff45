"""Green means current and alive: nohup processes that poseidon really supervises.

Each test runs the command line against a sandbox of its own, over real
OpenSSH: a new commit or a changed ``env:`` restarts the app and the new one
answers; the pid ``status`` shows is the one to kill; a crash before the app
is ready fails the step; a reused pid is never taken for the app nor
signalled; a frozen droplet ends the run instead of hanging it; secrets
passed through ``env:`` are in no command line another user can read.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from poseidon.cli import main
from poseidon.sandbox import Sandbox
from support.sandboxes import PATIENCE, pointed, process_running, runs_on, wait_for

pytestmark = pytest.mark.sandbox

PORT = 5311

APP = """\
import http.server, os, sys
host, port = sys.argv[1], int(sys.argv[2])
body = (open("version.txt").read().strip() + " " + os.environ.get("GREETING", "")).encode()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer((host, port), Handler).serve_forever()
"""

PLAYBOOK = """\
version: 1
name: supervised
droplets: [web]
vars: {{port: {port}}}
steps:
  - git: {{repo: "{repo}", dest: app}}
  - chdir: app
  - nohup:
      cmd: python3 app.py ${{droplet.ip_address}} ${{port}}
      name: web
      env: {{GREETING: "${{env:GREETING}}"}}
      ready: {{port: {port}, timeout: 10}}
  - run: {{cmd: "curl -fsS http://${{droplet.ip_address}}:${{port}}/", changes: false}}
report: {{ps: false, top: false}}
"""


def _git(repo: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def _commit(repo: Path, version: str) -> None:
    (repo / "version.txt").write_text(version + "\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", version)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Sandbox, Path, Path]]:
    """A sandbox with droplet 'web', a repository holding the app at v1, and the playbook that serves it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "app.py").write_text(APP)
    _commit(repo, "v1")
    playbook = tmp_path / "site.yaml"
    playbook.write_text(PLAYBOOK.format(repo=repo.as_uri(), port=PORT))
    monkeypatch.setenv("GREETING", "hello")
    monkeypatch.chdir(tmp_path)
    with pointed(["web"], monkeypatch) as sandbox:
        yield sandbox, repo, playbook


@pytest.fixture
def started() -> Iterator[list[Path]]:
    """Pid files of the processes a test starts on the shared sandbox: stopped after it, pass or fail."""
    pidfiles: list[Path] = []
    yield pidfiles
    for pidfile in pidfiles:
        try:
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass  # never started, or ended already


def _cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main([*args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def _nohup(report: dict) -> dict:
    return next(s for s in report["droplets"][0]["steps"] if s["kind"] == "nohup")


def _answer(sandbox: Sandbox) -> str:
    with urllib.request.urlopen(f"http://{sandbox.address('web')}:{PORT}/", timeout=5) as answer:
        return answer.read().decode()


def _port_open(sandbox: Sandbox) -> bool:
    import socket

    try:
        socket.create_connection((sandbox.address("web"), PORT), 0.5).close()
        return True
    except OSError:
        return False


def test_a_new_commit_and_a_changed_env_each_restart_the_app_and_the_new_one_answers(
    site: tuple[Sandbox, Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox, repo, playbook = site
    code, report = _cli("apply", str(playbook), capsys=capsys)
    assert code == 0
    assert _answer(sandbox) == "v1 hello"
    smoke = report["droplets"][0]["steps"][-1]
    assert (smoke["status"], smoke["stdout_tail"]) == ("ok", "v1 hello"), "a check is ok, never changed"

    code, report = _cli("apply", str(playbook), capsys=capsys)
    assert (code, _nohup(report)["status"]) == (0, "ok")

    _commit(repo, "v2")
    code, report = _cli("plan", str(playbook), capsys=capsys)
    assert (_nohup(report)["status"], _nohup(report)["reason"]) == (
        "would-change",
        "would restart: an earlier step would change first",
    )
    code, report = _cli("apply", str(playbook), capsys=capsys)
    assert code == 0
    assert (_nohup(report)["status"], _nohup(report)["reason"]) == (
        "changed",
        "an earlier step changed since it started",
    )
    assert _answer(sandbox) == "v2 hello"

    monkeypatch.setenv("GREETING", "bonjour")
    code, report = _cli("plan", str(playbook), capsys=capsys)
    assert (_nohup(report)["status"], _nohup(report)["reason"]) == (
        "would-change",
        "its command, env, user or directory changed",
    )
    code, report = _cli("apply", str(playbook), capsys=capsys)
    assert code == 0 and _nohup(report)["status"] == "changed"
    assert _answer(sandbox) == "v2 bonjour"


def test_a_change_a_failed_run_left_behind_still_restarts_the_app(
    site: tuple[Sandbox, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The new commit lands, then the run fails before the nohup step: the next run still restarts."""
    sandbox, repo, playbook = site
    assert _cli("apply", str(playbook), capsys=capsys)[0] == 0
    text = playbook.read_text()
    playbook.write_text(text.replace("  - chdir: app\n", "  - chdir: app\n  - run: test -f go\n"))
    _commit(repo, "v2")
    code, report = _cli("apply", str(playbook), capsys=capsys)
    assert code == 1 and _answer(sandbox) == "v1 hello"  # the git step pulled v2, the run stopped
    (sandbox.home("web") / "app" / "go").touch()
    code, report = _cli("apply", str(playbook), capsys=capsys)
    assert code == 0 and _nohup(report)["reason"] == "an earlier step changed since it started"
    assert _answer(sandbox) == "v2 hello"


def test_killing_the_pid_status_shows_ends_the_app_and_the_next_apply_brings_it_back(
    site: tuple[Sandbox, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox, _, playbook = site
    assert _cli("apply", str(playbook), capsys=capsys)[0] == 0
    for sig in (signal.SIGTERM, signal.SIGKILL):
        code, found = _cli("status", str(playbook), capsys=capsys)
        assert (code, found[0]["state"]) == (0, "alive")
        os.kill(found[0]["pid"], sig)
        if sig == signal.SIGTERM:
            # The whole app ends with the process a user would kill: the port is free.
            wait_for("the port to be free once the pid status showed was killed", lambda: not _port_open(sandbox))
        else:
            # KILL cannot be passed on: status names what was left, and the next apply stops it.
            code, found = _cli("status", str(playbook), capsys=capsys)
            assert found[0]["state"] == "dead" and found[0]["leftover_pids"]
            assert _port_open(sandbox)
        code, report = _cli("apply", str(playbook), capsys=capsys)
        assert code == 0, report
        assert (_nohup(report)["status"], _nohup(report)["reason"]) == ("changed", "not running")
        assert _answer(sandbox) == "v1 hello"
        code, found = _cli("status", str(playbook), capsys=capsys)
        assert (found[0]["state"], found[0]["leftover_pids"]) == ("alive", [])


def test_a_reused_pid_is_neither_taken_for_the_app_nor_signalled(
    site: tuple[Sandbox, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox, _, playbook = site
    assert _cli("apply", str(playbook), capsys=capsys)[0] == 0
    code, found = _cli("status", str(playbook), capsys=capsys)
    os.kill(found[0]["pid"], signal.SIGTERM)
    wait_for("the port to be free", lambda: not _port_open(sandbox))
    # As after a reboot: the recorded pid now belongs to an unrelated process group.
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        pidfile = sandbox.home("web") / "app" / ".poseidon" / "web.pid"
        pidfile.write_text(f"{stranger.pid}\n")
        code, found = _cli("status", str(playbook), capsys=capsys)
        assert found[0]["state"] == "dead"
        code, report = _cli("apply", str(playbook), capsys=capsys)
        assert code == 0
        assert (_nohup(report)["status"], _nohup(report)["reason"]) == ("changed", "not running")
        assert stranger.poll() is None and process_running(stranger.pid), "poseidon signalled a stranger"
        assert _answer(sandbox) == "v1 hello"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_process_that_dies_before_it_is_ready_or_never_gets_ready_fails_with_its_log(
    shared_sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from support.sandboxes import point_at

    point_at(shared_sandbox, monkeypatch)
    url = f"http://{shared_sandbox.address('test')}:5398/"  # the droplet's own address: nothing listens there
    cases = {
        'cmd: "echo starting; sleep 1.5; echo boom >&2; exit 3", name: late-crash, ready: {port: 5399}': (
            "late-crash exited before it was ready; the end of its log:\nstarting\nboom"
        ),
        f'cmd: "echo up; exec sleep 60", name: never-ready, ready: {{http: "{url}", timeout: 1.5}}': (
            f"never-ready is not ready after 1.5 s (waited for a 2xx answer from {url});"
            " it is left running, and the next apply restarts it; the end of its log:\nup"
        ),
    }
    for step, told in cases.items():
        playbook = tmp_path / "site.yaml"
        playbook.write_text(
            f"version: 1\ndroplets: [test]\nsteps: [{{nohup: {{{step}}}}}]\nreport: {{ps: false, top: false}}\n"
        )
        assert main(["apply", str(playbook), "--json"]) == 1
        result = json.loads(capsys.readouterr().out)["droplets"][0]["steps"][0]
        assert result["status"] == "failed"
        assert told in result["stderr_tail"]


def test_a_frozen_droplet_ends_the_run_at_its_timeout_or_its_keepalives_and_the_others_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    playbook = tmp_path / "site.yaml"
    playbook.write_text(
        "version: 1\ndroplets: [hung, fine]\nsteps:\n"
        # The frozen one's step runs until its timeout ends it: sure to be frozen mid-step.
        "  - run: {cmd: 'touch started; [ \"${droplet.name}\" = fine ] || sleep 60', timeout: 8}\n"
        "report: {ps: false, top: false}\n"
    )
    with pointed(["hung", "fine"], monkeypatch) as sandbox:
        # Without keepalives, the controller's deadline is the step's timeout plus timeout(1)'s KILL delay
        # and a margin: 8 + 5 + 5 s.
        for keepalive, why in (("1", "keepalives unanswered"), ("0", "still running 18 s after it started")):
            (sandbox.home("hung") / "started").unlink(missing_ok=True)
            env = {**os.environ, "POSEIDON_SSH_KEEPALIVE": keepalive}
            run = subprocess.Popen(
                [sys.executable, "-m", "poseidon.cli", "apply", str(playbook), "--json"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path,
            )
            frozen: set[int] = set()
            try:
                wait_for("the step to start", lambda: (sandbox.home("hung") / "started").exists())
                frozen = sandbox.freeze("hung")
                out, err = run.communicate(timeout=60)  # it ends: that is the point
            finally:
                sandbox.thaw(frozen)
                run.kill()
            assert run.returncode == 3, err
            report = {d["name"]: d for d in json.loads(out)["droplets"]}
            assert report["fine"]["steps"][0]["status"] == "changed"
            assert report["hung"]["unreachable"] and "hung stopped answering" in report["hung"]["error"]
            assert why in report["hung"]["error"]
            # Thawed, its step goes on until its timeout ends it, and its shell with the apply lock.
            wait_for("the frozen run's processes to end", lambda: not sandbox.pids("hung"))


def test_an_env_secret_is_in_no_command_line_another_user_can_read(
    shared_sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    python = "/usr/bin/python3"  # one that another user may run (a virtualenv under /root is not)
    if os.geteuid() != 0 or not os.access(python, os.X_OK):
        pytest.skip("reading /proc as another user needs root to become that user, and the system's python3")
    from support.sandboxes import point_at

    point_at(shared_sandbox, monkeypatch)
    monkeypatch.setenv("DB_PASSWORD", "s3cret-in-env-4711")
    playbook = tmp_path / "site.yaml"
    playbook.write_text(
        textwrap.dedent(
            """\
            version: 1
            droplets: [test]
            vars: {password: {secret: true, env: DB_PASSWORD}}
            steps:
              - run: {cmd: 'sleep 1.4711; test -n "$PASSWORD"', env: {PASSWORD: "${password}"}}
              - nohup: {cmd: "exec sleep 2.4711", name: secret-env, env: {PASSWORD: "${password}"}, grace: 0.5}
            report: {ps: false, top: false}
            """
        )
    )
    # It watches from its first line until its input ends: from before the apply starts to after it ended.
    watch = (
        "import glob, select, sys\n"
        "seen = set()\n"
        "first = True\n"
        "while not select.select([sys.stdin], [], [], 0)[0]:\n"
        "    for path in glob.glob('/proc/[0-9]*/cmdline'):\n"
        "        try:\n            seen.add(open(path, 'rb').read())\n"
        "        except OSError:\n            pass\n"
        "    if first:\n        print('watching', flush=True)\n        first = False\n"
        "for line in seen:\n    print(line.replace(b'\\0', b' ').decode(errors='replace'))\n"
    )
    watcher = subprocess.Popen(
        [python, "-c", watch], user="nobody", cwd="/", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert watcher.stdin is not None and watcher.stdout is not None
    assert watcher.stdout.readline() == "watching\n"
    main(["apply", str(playbook)])
    watcher.stdin.close()
    seen = watcher.stdout.read()
    watcher.wait(PATIENCE)
    capsys.readouterr()
    assert watcher.returncode == 0
    assert "sleep 1.4711" in seen and "sleep 2.4711" in seen, "the watcher missed the steps"
    assert "s3cret-in-env-4711" not in seen


def test_a_running_process_that_is_not_ready_is_restarted_and_a_check_that_fails_fails(
    shared_sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from support.sandboxes import point_at

    point_at(shared_sandbox, monkeypatch)
    playbook = tmp_path / "site.yaml"
    playbook.write_text(
        textwrap.dedent(
            """\
            version: 1
            droplets: [test]
            steps:
              - nohup:
                  {cmd: "rm -f broken; exec sleep 120", name: repairs, ready: {cmd: "test ! -f broken", timeout: 5}}
              - run: {cmd: "echo checked; exit ${env:CHECK_EXIT}", changes: false}
            report: {ps: false, top: false}
            """
        )
    )
    monkeypatch.setenv("CHECK_EXIT", "0")
    assert main(["apply", str(playbook), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["droplets"][0]["steps"]
    assert [s["status"] for s in first] == ["changed", "ok"]
    pid = (shared_sandbox.home("test") / ".poseidon" / "repairs.pid").read_text()
    monkeypatch.setenv("CHECK_EXIT", "4")
    assert main(["plan", str(playbook), "--json"]) == 1
    planned = json.loads(capsys.readouterr().out)["droplets"][0]["steps"]
    assert [(s["status"], s["exited"]) for s in planned] == [("ok", 0), ("failed", 4)], "plan runs a check too"
    (shared_sandbox.home("test") / "broken").touch()
    assert main(["plan", str(playbook), "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)["droplets"][0]["steps"]
    assert (planned[0]["status"], planned[0]["reason"]) == (
        "would-change",
        "it runs but is not ready (its ready command to succeed)",
    )
    assert main(["apply", str(playbook), "--json"]) == 1
    second = json.loads(capsys.readouterr().out)["droplets"][0]["steps"]
    assert (second[0]["status"], second[0]["reason"]) == (
        "changed",
        "it runs but is not ready (its ready command to succeed)",
    )
    assert (shared_sandbox.home("test") / ".poseidon" / "repairs.pid").read_text() != pid
    assert (second[1]["status"], second[1]["exited"], second[1]["stdout_tail"]) == ("failed", 4, "checked")
    assert "the check failed (exit 4)" in second[1]["stderr_tail"]


def test_a_process_an_older_poseidon_started_is_stopped_before_the_new_one_starts(sandbox_env: Sandbox) -> None:
    import poseidon.api as po

    with po.connect().droplets.by_name("test").connect() as ssh:
        # What poseidon wrote before processes had identities: `sh -c CMD` leading its group, a .cmd file.
        ssh.wait(
            "mkdir -p .poseidon && { nohup setsid sh -c 'sleep 301; true' > old.log 2>&1 < /dev/null & }"
            " && echo $! > .poseidon/upgraded.pid && echo 0123 > .poseidon/upgraded.cmd"
        )
        old = int(ssh.wait("cat .poseidon/upgraded.pid"))
        wait_for("the old command to run", lambda: "sleep 301" in ssh.wait(f"ps -o args= -g {old} || true"))
        assert ssh.nohup("exec sleep 302", name="upgraded", grace=0.2).changed
        wait_for("the old group to end", lambda: ssh.wait(f"ps -o stat= -g {old} | grep -v '^Z' || true") == "")
        assert ssh.wait("ls .poseidon/upgraded.cmd 2>/dev/null || true") == ""


def test_a_forged_identity_a_planted_link_and_a_taken_port_are_refused_not_obeyed(
    sandbox_env: Sandbox, tmp_path: Path
) -> None:
    """What someone who may write the working directory (but is not the app) could plant there."""
    import poseidon.api as po
    from poseidon import steps

    home = sandbox_env.home("test")
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    try:
        with po.connect().droplets.by_name("test").connect() as ssh:
            ssh.wait("mkdir -p forged && cd forged && mkdir -p .poseidon")
            ssh.chdir("forged")
            # The stranger's real start time and boot id, all world-readable: only the token is missing.
            start = Path(f"/proc/{stranger.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
            boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
            dot = home / "forged" / ".poseidon"
            for pid, token in ((stranger.pid, "0123456789abcdef"), (1, "0123456789abcdef")):
                (dot / "forged.pid").write_text(f"{pid}\n")
                (dot / "forged.state").write_text(f"start={start}\nboot={boot}\ntoken={token}\n")
                outcome = ssh.nohup("exec sleep 303", name="forged", grace=0.2, restart="always")
                assert outcome.changed, outcome
                assert stranger.poll() is None and process_running(stranger.pid), "a forged identity was obeyed"
            (home / "forged" / "linked.log").symlink_to(victim)
            assert ssh.nohup("echo app output; exec sleep 304", name="linked", log="linked.log", grace=0.3).changed
            assert victim.read_text() == "precious\n", "the log was written through a planted link"
            assert (home / "forged" / "linked.log").read_text() == "app output\n"
            # A port that answers before the process starts: another holds it, and ready cannot tell them apart.
            holder = ssh.nohup(
                f"exec python3 -m http.server --bind {sandbox_env.address('test')} 5377",
                name="holder",
                ready={"port": 5377, "timeout": 10},
            )
            assert holder.changed, holder
            taken = ssh.run_step(steps.build("nohup", cmd="exec sleep 305", name="latecomer", ready={"port": 5377}))
            assert taken.status == "failed"
            assert (
                f"port 5377 on {sandbox_env.address('test')} answers before latecomer starts: another process holds it"
                in taken.stderr
            )
            assert "still running here: " in taken.stderr and "holder (pid" in taken.stderr
            ssh.wait("for f in .poseidon/*.pid; do kill $(cat $f) 2>/dev/null; done; true")
    finally:
        stranger.kill()
        stranger.wait()


def test_a_command_that_daemonizes_and_exits_fails_and_leaves_nothing_running(sandbox_env: Sandbox) -> None:
    import poseidon.api as po

    with po.connect().droplets.by_name("test").connect() as ssh:
        outcome = ssh.nohup("setsid sleep 306 & exit 0", False, name="daemonizes", ready={"cmd": "false", "timeout": 3})
        assert outcome.status == "failed"
        assert "daemonizes exited before it was ready" in outcome.stderr
        wait_for("the daemon it left to end", lambda: not runs_on(sandbox_env, ["test"], "sleep 306"))


def test_an_app_moved_to_another_directory_is_stopped_there_before_it_starts_here(
    site: tuple[Sandbox, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Its pid file is in the old directory: without the record of where it ran, both would run."""
    sandbox, _, playbook = site
    assert _cli("apply", str(playbook), capsys=capsys)[0] == 0
    old = sandbox.home("web") / "app" / ".poseidon" / "web.pid"
    first = int(old.read_text())
    text = playbook.read_text()
    playbook.write_text(text.replace("dest: app}", "dest: app2}").replace("chdir: app\n", "chdir: app2\n"))
    code, report = _cli("apply", str(playbook), capsys=capsys)
    # The old one still held the port: it was stopped first, or the new one would have been refused.
    assert code == 0, report
    assert (_nohup(report)["status"], _nohup(report)["reason"]) == (
        "changed",
        "it was started in another directory",
    )
    assert not process_running(first), "the app in the old directory still runs"
    assert _answer(sandbox) == "v1 hello"
    code, found = _cli("status", str(playbook), capsys=capsys)
    assert found[0]["state"] == "alive" and found[0]["pid"] != first
    code, report = _cli("apply", str(playbook), capsys=capsys)
    assert (code, _nohup(report)["status"]) == (0, "ok")


def test_a_new_log_restarts_the_app_and_a_step_added_that_changes_nothing_does_not(
    site: tuple[Sandbox, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox, _, playbook = site
    assert _cli("apply", str(playbook), capsys=capsys)[0] == 0
    pidfile = sandbox.home("web") / "app" / ".poseidon" / "web.pid"
    # Steps that change nothing, added before it: no earlier step changed, nothing restarts.
    text = playbook.read_text().replace(
        "  - chdir: app\n",
        '  - chdir: app\n  - run: {cmd: "true", creates: /}\n  - run: {cmd: "true", changes: false}\n',
    )
    playbook.write_text(text)
    pid = pidfile.read_text()
    code, report = _cli("apply", str(playbook), capsys=capsys)
    assert (code, _nohup(report)["status"]) == (0, "ok"), _nohup(report)
    assert pidfile.read_text() == pid
    playbook.write_text(text.replace("      name: web\n", "      name: web\n      log: web2.log\n"))
    code, report = _cli("plan", str(playbook), capsys=capsys)
    assert (_nohup(report)["status"], _nohup(report)["reason"]) == ("would-change", "its log changed")
    code, report = _cli("apply", str(playbook), capsys=capsys)
    assert (code, _nohup(report)["status"]) == (0, "changed")
    assert pidfile.read_text() != pid
    assert (sandbox.home("web") / "app" / "web2.log").exists()
    assert _answer(sandbox) == "v1 hello"


@pytest.mark.parametrize("named", [True, False], ids=["named", "two site.yaml"])
def test_two_playbooks_own_two_processes_of_one_name_in_two_directories(
    named: bool,
    shared_sandbox: Sandbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    started: list[Path],
) -> None:
    """The record of where a process was started is the playbook's (its name:, or its file's path):
    another playbook's process of the same name elsewhere is another process, and each apply
    leaves the other's running."""
    from support.sandboxes import point_at

    point_at(shared_sandbox, monkeypatch)
    pids, playbooks = {}, {}
    for app, seconds in (("one", 1001.5), ("two", 1002.5)):
        folder = tmp_path / app
        folder.mkdir()
        playbooks[app] = folder / "site.yaml"
        started.append(shared_sandbox.home("test") / f"{app}{named}" / ".poseidon" / "worker.pid")
        playbooks[app].write_text(
            f"version: 1\n{f'name: {app}' if named else ''}\ndroplets: [test]\nsteps:\n"
            f"  - run: {{cmd: mkdir -p {app}{named}, creates: {app}{named}}}\n  - chdir: {app}{named}\n"
            f"  - nohup: {{cmd: exec sleep {seconds}, name: worker, grace: 0}}\nreport: {{ps: false, top: false}}\n"
        )
    for app in ("one", "two", "one"):
        assert main(["apply", str(playbooks[app]), "--quiet"]) == 0
        capsys.readouterr()
        pids[app] = int((shared_sandbox.home("test") / f"{app}{named}" / ".poseidon" / "worker.pid").read_text())
    assert process_running(pids["one"]) and process_running(pids["two"])


def test_ready_http_passes_on_a_2xx_answer_and_fails_on_any_other(
    shared_sandbox: Sandbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    started: list[Path],
) -> None:
    from support.sandboxes import point_at

    point_at(shared_sandbox, monkeypatch)
    started.append(shared_sandbox.home("test") / "served" / ".poseidon" / "files.pid")
    address = shared_sandbox.address("test")
    (shared_sandbox.home("test") / "served").mkdir(exist_ok=True)
    (shared_sandbox.home("test") / "served" / "here.txt").write_text("here\n")
    playbook = tmp_path / "site.yaml"
    for path, code, status in (("here.txt", 0, "changed"), ("missing.txt", 1, "failed")):
        playbook.write_text(
            "version: 1\ndroplets: [test]\nsteps:\n  - chdir: served\n"
            "  - nohup: {cmd: 'exec python3 -m http.server --bind ${droplet.ip_address} 5313 2>/dev/null',"
            " name: files,"
            f" restart: always, ready: {{http: 'http://{address}:5313/{path}', timeout: 3}}}}\n"
            "report: {ps: false, top: false}\n"
        )
        assert main(["apply", str(playbook), "--json"]) == code
        result = json.loads(capsys.readouterr().out)["droplets"][0]["steps"][1]
        assert result["status"] == status, result
        if status == "failed":
            assert (
                f"files is not ready after 3 s (waited for a 2xx answer from http://{address}:5313/missing.txt)"
                in (result["stderr_tail"])
            )


def test_a_droplet_frozen_before_a_large_step_is_sent_ends_the_send_at_its_keepalives_or_its_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Megabytes of step text fill the droplet's window long before they are all sent: the send is
    watched as the answer is, by the keepalives and by the step's timeout."""
    import poseidon.api as po
    from poseidon import steps
    from poseidon.errors import SSHUnresponsiveError
    from poseidon.ssh import SSHClient

    big = "x" * (6 << 20)
    step = steps.build("run", cmd="printf %s ${big} | wc -c", timeout=3)
    with pointed(["cold"], monkeypatch) as sandbox:
        for keepalive, why in (("1", "keepalives unanswered"), ("0", "past its timeout")):
            monkeypatch.setenv("POSEIDON_SSH_KEEPALIVE", keepalive)
            with po.connect().droplets.by_name("cold").connect() as ssh:
                assert ssh.run_step(step, values={"big": "small"}).stdout == "5"
                frozen = sandbox.freeze("cold")
                raised: list[BaseException] = []

                def send(ssh: SSHClient = ssh, raised: list[BaseException] = raised) -> None:
                    try:
                        ssh.run_step(step, values={"big": big})
                    except BaseException as exc:  # noqa: BLE001 - what it raised is the point
                        raised.append(exc)

                sender = threading.Thread(target=send, daemon=True)
                sender.start()
                try:
                    sender.join(60)  # it ends: that is the point
                    assert not sender.is_alive(), "the send to a frozen droplet never ended"
                finally:
                    sandbox.thaw(frozen)
                assert len(raised) == 1 and isinstance(raised[0], SSHUnresponsiveError), raised
                assert why in str(raised[0])


def test_a_restart_on_change_reads_no_clock(
    shared_sandbox: Sandbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    started: list[Path],
) -> None:
    """Files dated an hour ahead (a clock stepped back since they were written) change nothing:
    an unchanged run restarts nothing, and a changed file still restarts the process."""
    from support.sandboxes import point_at

    point_at(shared_sandbox, monkeypatch)
    home = shared_sandbox.home("test")
    started.append(home / "clockless" / ".poseidon" / "clockless.pid")
    playbook = tmp_path / "site.yaml"
    playbook.write_text(
        "version: 1\ndroplets: [test]\nsteps:\n  - run: {cmd: mkdir -p clockless, creates: clockless}\n"
        '  - chdir: clockless\n  - file: {path: conf.txt, content: "${env:CONF}\\n"}\n'
        "  - nohup: {cmd: exec sleep 1004.5, name: clockless, grace: 0}\nreport: {ps: false, top: false}\n"
    )

    def nohup_outcome() -> tuple[str, str]:
        assert main(["apply", str(playbook), "--json"]) == 0
        step = json.loads(capsys.readouterr().out)["droplets"][0]["steps"][-1]
        return step["status"], step["reason"]

    monkeypatch.setenv("CONF", "first")
    assert nohup_outcome()[0] == "changed"
    ahead = time.time() + 3600
    for dated in [home / "clockless" / ".poseidon" / "clockless.state", *(home / ".poseidon" / "changes").iterdir()]:
        os.utime(dated, (ahead, ahead))
    assert nohup_outcome() == ("ok", "clockless is running")
    monkeypatch.setenv("CONF", "second")
    assert nohup_outcome() == ("changed", "an earlier step changed since it started")
