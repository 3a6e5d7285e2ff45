"""The service step on sandbox machines, where systemd, users and reboots are real; and its
refusal on the light sandbox, which has no systemd.

The machines need root, debootstrap and systemd-container: elsewhere these tests are
skipped with the reason (under CI they fail), as in test_machines.py.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import poseidon.api as po
from poseidon import executor, spec, status
from poseidon.results import RunResult
from poseidon.sandbox import Sandbox
from poseidon.settings import Settings
from support.sandboxes import PATIENCE, command_lines_seen, machines_base, wait_for

pytestmark = pytest.mark.sandbox

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def machine() -> Iterator[Sandbox]:
    machines_base()
    with Sandbox(["svc"], machines=True) as sandbox:
        yield sandbox


def apply(sandbox: Sandbox, folder: Path, text: str, *, mode: str = "apply") -> RunResult:
    (folder / "site.yaml").write_text(textwrap.dedent(text))
    options = executor.RunOptions(mode="check" if mode == "check" else "apply")
    settings = Settings.from_environ(sandbox.environ)
    return executor.apply(spec.load(folder / "site.yaml"), settings=settings, options=options)


def outcomes(result: RunResult) -> list[tuple[str, str]]:
    if result.droplets[0].error:
        return [("error", result.droplets[0].error)]
    return [(step.status, step.reason or step.stderr) for step in result.droplets[0].steps]


def served(url: str, patience: float = PATIENCE) -> str:
    """The body ``url`` answers with, once it answers."""
    deadline = time.monotonic() + patience
    while True:
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2) as answer:
                return str(answer.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


SITE = """\
    version: 1
    droplets: [svc]
    vars: {port: 8080}
    steps:
      - run: {cmd: "id app >/dev/null 2>&1 || useradd -m app", unless: id app}
      - run: {cmd: install -d -o app -g app /srv/site, creates: /srv/site}
      - chdir: /srv/site
      - file: {path: index.html, template: index.tmpl, owner: app, group: app, mode: "0640"}
      - service:
          name: site
          cmd: exec python3 -m http.server --bind ${droplet.ip_address} ${port}
          user: app
          ready: {port: 8080}
    report: {ps: false, top: false}
    """


def test_a_service_with_its_file_runs_as_its_user_restarts_on_a_change_and_survives_a_reboot(
    machine: Sandbox, tmp_path: Path
) -> None:
    (tmp_path / "index.tmpl").write_text("version 1 on ${droplet.name}\n")
    first = apply(machine, tmp_path, SITE)
    assert [s for s, _ in outcomes(first)] == ["changed", "changed", "ok", "changed", "changed"], outcomes(first)
    url = f"http://{machine.address('svc')}:8080/index.html"
    assert served(url) == "version 1 on svc\n"
    page = machine.home("svc").parent / "srv" / "site" / "index.html"  # the machine's own files
    info = page.stat()
    assert (
        info.st_mode & 0o777,
        machine_name(machine, "passwd", info.st_uid),
        machine_name(machine, "group", info.st_gid),
    ) == (
        0o640,
        "app",
        "app",
    )

    again = apply(machine, tmp_path, SITE)
    assert outcomes(again) == [
        ("ok", "the unless command succeeded"),
        ("ok", "/srv/site exists"),
        ("ok", "directory exists"),
        ("ok", "index.html has its content, mode and owner"),
        ("ok", "poseidon-site.service is running"),
    ]

    # The template changes: the file is written, and the service that follows restarts (http.server
    # reads files as asked, so the restart shows in the journal, not the page: its pid changes).
    pid = service_pid(machine)
    (tmp_path / "index.tmpl").write_text("version 2 on ${droplet.name}\n")
    planned = apply(machine, tmp_path, SITE, mode="check")
    assert outcomes(planned)[3:] == [
        ("would-change", "its content differs"),
        ("would-change", "would restart: an earlier step would change first"),
    ]
    changed = apply(machine, tmp_path, SITE)
    assert outcomes(changed)[3:] == [
        ("changed", "its content differs"),
        ("changed", "an earlier step changed since it started"),
    ]
    assert served(url) == "version 2 on svc\n"
    assert service_pid(machine) != pid
    assert process_user(machine, service_pid(machine)) == "app"

    # A reboot through the API: systemd starts it again, with no apply.
    client = po.connect(token=machine.token, settings=Settings.from_environ(machine.environ))
    boots = machine.farm.machines[machine.address("svc")].boots  # type: ignore[union-attr]
    client.droplets.by_name("svc").reboot()
    deadline = time.monotonic() + PATIENCE
    while machine.farm.machines[machine.address("svc")].boots == boots:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the machine did not reboot"
        time.sleep(0.1)
    assert served(url) == "version 2 on svc\n"

    # status: the service as systemd has it now, with the end of its journal.
    (found,) = status.status(spec.load(tmp_path / "site.yaml"), settings=Settings.from_environ(machine.environ))
    inside = Path(f"/proc/{service_pid(machine)}/status").read_text().split("NSpid:")[1].split("\n")[0].split()[-1]
    assert (found.kind, found.name, found.state, found.pid) == ("service", "site", "alive", int(inside))
    assert found.uptime and "GET /index.html" in found.log_tail


def service_pid(sandbox: Sandbox) -> int:
    """The service's main pid, as this machine numbers it."""
    machine = sandbox.farm.machines[sandbox.address("svc")]  # type: ignore[union-attr]
    found = [
        int(p.parent.name)
        for p in Path("/proc").glob("[0-9]*/cmdline")
        if _reads(p).startswith(b"python3\0-m\0http.server")
        and f"poseidon-{machine.address}" in _reads(p.parent / "cgroup").decode()
    ]
    assert len(found) == 1, found
    return found[0]


def process_user(sandbox: Sandbox, pid: int) -> str:
    uid = next(
        line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:")
    )
    return machine_name(sandbox, "passwd", int(uid))


def machine_name(sandbox: Sandbox, database: str, number: int) -> str:
    """The name of a user (``passwd``) or group (``group``) in the machine's own files, by number."""
    table = sandbox.home("svc").parent / "etc" / database  # changed by useradd: in the machine's own files
    return next(line.split(":")[0] for line in table.read_text().splitlines() if line.split(":")[2] == str(number))


def _reads(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_a_service_that_never_gets_ready_fails_with_the_end_of_its_journal(machine: Sandbox, tmp_path: Path) -> None:
    text = """\
        version: 1
        droplets: [svc]
        steps:
          - service:
              name: slow
              cmd: echo "warming up the cache"; exec sleep 600
              ready: {port: 9, timeout: 2}
        report: {ps: false, top: false}
        """
    ((status, stderr),) = outcomes(apply(machine, tmp_path, text))
    assert status == "failed"
    assert "poseidon: slow is not ready after 2 s (waited for port 9 on" in stderr
    assert "warming up the cache" in stderr  # the journal's tail


def test_a_service_that_exits_at_once_fails_the_step(machine: Sandbox, tmp_path: Path) -> None:
    text = """\
        version: 1
        droplets: [svc]
        steps:
          - service: {name: crash, cmd: 'echo "no config found" >&2; exit 3', grace: 1.5}
        report: {ps: false, top: false}
        """
    ((status, stderr),) = outcomes(apply(machine, tmp_path, text))
    assert status == "failed"
    assert "poseidon: crash exited within 1.5 s" in stderr
    assert "no config found" in stderr


def test_a_service_secret_stays_out_of_command_lines_and_of_its_unit(
    machine: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-" + os.urandom(8).hex()
    monkeypatch.setenv("API_KEY", secret)
    text = """\
        version: 1
        droplets: [svc]
        vars: {key: {secret: true, env: API_KEY}}
        steps:
          - service:
              name: keeper
              cmd: 'test "$KEY" = ${key} && exec sleep 600'
              env: {KEY: "${key}"}
        report: {ps: false, top: false}
        """
    with command_lines_seen() as seen:
        result = apply(machine, tmp_path, text)
    assert outcomes(result) == [("changed", "its unit is new or changed")]
    assert b"sleep\x00600\x00" in seen, "the watcher never saw the service run"
    assert not [line for line in seen if secret.encode() in line]
    etc = machine.home("svc").parent / "etc"
    assert secret not in (etc / "systemd" / "system" / "poseidon-keeper.service").read_text()
    script = etc / "poseidon" / "services" / "keeper.sh"
    assert script.stat().st_mode & 0o777 == 0o600 and secret in script.read_text()  # root's alone


def test_the_light_sandbox_refuses_a_service_in_one_line_naming_machines(
    shared_sandbox: Sandbox, tmp_path: Path
) -> None:
    text = """\
        version: 1
        droplets: [other]
        steps:
          - service: {name: web, cmd: sleep 60}
        report: {ps: false, top: false}
        """
    ((status, stderr),) = outcomes(apply(shared_sandbox, tmp_path, text))
    assert status == "failed"
    assert stderr.splitlines()[0] == (
        "poseidon: service: this droplet does not run systemd; the light sandbox has none,"
        " --sandbox=machines boots droplets that do"
    )


def test_the_service_example_serves_its_configured_greeting_and_a_second_run_changes_nothing(
    tmp_path: Path, offline_pip: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/service.yaml on machines, as its comment says to run it (pip offline, from the wheels here)."""
    import shutil

    from poseidon.cli import main

    machines_base()
    shutil.copytree(TESTS.parent / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns(".poseidon"))
    path = tmp_path / "examples" / "service.yaml"
    try:
        assert main(["apply", str(path), "--sandbox=machines", "--json"]) == 0, capsys.readouterr().err
        first = json.loads(capsys.readouterr().out)
        assert main(["apply", str(path), "--sandbox=machines", "--json"]) == 0, capsys.readouterr().err
        second = json.loads(capsys.readouterr().out)
        path.write_text(path.read_text().replace("greeting: hello, service", "greeting: hello again"))
        assert main(["apply", str(path), "--sandbox=machines", "--json"]) == 0, capsys.readouterr().err
        third = json.loads(capsys.readouterr().out)
    finally:
        main(["sandbox", "reset", "--playbook", str(path)])
    (droplet,) = first["droplets"]
    assert [s["status"] for s in droplet["steps"]][-3:] == ["changed", "changed", "ok"]
    assert droplet["steps"][-1]["stdout_tail"].startswith("hello, service from ")
    assert {s["status"] for d in second["droplets"] for s in d["steps"]} == {"ok"}
    # The greeting changes: the configuration is written, and the service that reads it at start restarts.
    (changed,) = third["droplets"]
    assert [(s["status"], s["reason"]) for s in changed["steps"]][-3:-1] == [
        ("changed", "its content differs"),
        ("changed", "an earlier step changed since it started"),
    ]
    assert changed["steps"][-1]["stdout_tail"].startswith("hello again from ")


RACER = """\
import os, re, time
name = re.compile(r"^[.]poseidon-file[.]")
end = time.time() + 60
while time.time() < end:
    for entry in os.listdir("/home/racer"):
        if name.match(entry):
            path = "/home/racer/" + entry
            try:
                os.unlink(path)
                os.symlink("/etc/victim", path)
            except OSError:
                pass
"""


def test_a_user_who_owns_the_folder_cannot_make_root_write_or_chown_another_file(
    machine: Sandbox, tmp_path: Path
) -> None:
    """While a file step writes in a folder its owner controls, that owner swaps poseidon's new
    file for a link to a file of root's, again and again: root never writes or chowns through it."""
    (tmp_path / "racer.py").write_text(RACER)
    setup = """\
        version: 1
        droplets: [svc]
        steps:
          - run: id racer >/dev/null 2>&1 || useradd -m racer
          - file: {path: /etc/victim, content: "root only\\n", owner: root, group: root, mode: "0600"}
          - file: {path: /tmp/racer.py, src: racer.py}
          - run: >-
              setsid setpriv --reuid=racer --regid=racer --init-groups python3 /tmp/racer.py
              </dev/null >/dev/null 2>&1 &
        report: {ps: false, top: false}
        """
    assert [s for s, _ in outcomes(apply(machine, tmp_path, setup))][1:] == ["changed"] * 3
    victim = machine.home("svc").parent / "etc" / "victim"
    try:
        for round in range(8):
            text = f"""\
                version: 1
                droplets: [svc]
                steps:
                  - file: {{path: /home/racer/app.ini, content: "round {round}\\\\n", owner: racer, mode: "0600"}}
                report: {{ps: false, top: false}}
                """
            apply(machine, tmp_path, text)  # it may fail (a name taken away under it): never write elsewhere
            info = victim.stat()
            assert (victim.read_text(), info.st_uid, info.st_mode & 0o777) == ("root only\n", 0, 0o600), round
    finally:
        stop = "steps: [{run: pkill -f /tmp/racer.py; true}]\nreport: {ps: false, top: false}\n"
        apply(machine, tmp_path, "version: 1\ndroplets: [svc]\n" + stop)


def with_deploy(then: str) -> str:
    """A playbook that makes the user deploy (root's key, passwordless sudo), then runs ``then``."""
    make = (
        "id deploy >/dev/null 2>&1 || useradd -m -s /bin/bash deploy;"
        " install -d -m 700 -o deploy -g deploy /home/deploy/.ssh;"
        " install -m 600 -o deploy -g deploy ~root/.ssh/authorized_keys /home/deploy/.ssh/;"
        " echo 'deploy ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/deploy; "
    )
    steps = json.dumps([{"run": make + then}])
    return f"version: 1\ndroplets: [svc]\nsteps: {steps}\nreport: {{ps: false, top: false}}\n"


def test_a_login_user_under_sudo_gets_files_in_its_own_home_owned_by_it(machine: Sandbox, tmp_path: Path) -> None:
    users = with_deploy("getent group web >/dev/null || groupadd web")
    assert [s for s, _ in outcomes(apply(machine, tmp_path, users))] == ["changed"]
    files = """\
        version: 1
        droplets: [{name: svc, user: deploy}]
        steps:
          - file: {path: "~/given.txt", content: "given\\n", owner: deploy, mode: "0600"}
          - file: {path: "~/grouped.txt", content: "grouped\\n", group: web}
        report: {ps: false, top: false}
        """
    assert [s for s, _ in outcomes(apply(machine, tmp_path, files))] == ["changed", "changed"]
    home = machine.home("svc").parent / "home" / "deploy"
    given, grouped = (home / "given.txt").stat(), (home / "grouped.txt").stat()
    assert machine_name(machine, "passwd", given.st_uid) == "deploy"
    assert (machine_name(machine, "passwd", grouped.st_uid), machine_name(machine, "group", grouped.st_gid)) == (
        "deploy",
        "web",
    )
    assert not (machine.home("svc") / "given.txt").exists()  # not root's home
    assert [s for s, _ in outcomes(apply(machine, tmp_path, files))] == ["ok", "ok"]
    # Elsewhere a new file is root's; folders made for one in the home are the login user's.
    more = """\
        version: 1
        droplets: [{name: svc, user: deploy}]
        steps:
          - file: {path: /etc/poseidon-sudo-test.conf, content: "x\\n", group: root}
          - file: {path: "~/sub/dir/b.txt", content: "b\\n", group: deploy}
        report: {ps: false, top: false}
        """
    assert [s for s, _ in outcomes(apply(machine, tmp_path, more))] == ["changed", "changed"]
    upper = machine.home("svc").parent
    assert (upper / "etc" / "poseidon-sudo-test.conf").stat().st_uid == 0
    for made in (home / "sub", home / "sub" / "dir", home / "sub" / "dir" / "b.txt"):
        assert machine_name(machine, "passwd", made.stat().st_uid) == "deploy", made


def test_links_among_the_folders_are_followed_only_when_root_owns_them_and_no_setuid_bit_is_kept(
    machine: Sandbox, tmp_path: Path
) -> None:
    text = """\
        version: 1
        droplets: [svc]
        steps:
          - run: >-
              id planter >/dev/null 2>&1 || useradd -m planter;
              su planter -s /bin/sh -c 'ln -sfn /root /home/planter/config';
              ln -sfn /srv/real /srv/linked; mkdir -p /srv/real;
              printf old > /srv/real/tool; chmod 4755 /srv/real/tool
          - file: {path: /srv/linked/tool, content: "#!/bin/sh\\n"}
          - file: {path: /home/planter/config/planted.conf, content: "x\\n", owner: planter}
        report: {ps: false, top: false}
        """
    (_, _), (tool, _), (planted, why) = outcomes(apply(machine, tmp_path, text))
    assert planted == "failed" and "is a link of uid" in why
    upper = machine.home("svc").parent
    assert not (upper / "root" / "planted.conf").exists()
    assert tool == "changed"
    written = upper / "srv" / "real" / "tool"
    assert written.read_text() == "#!/bin/sh\n" and written.stat().st_mode & 0o7777 == 0o755


READER = """\
import os, time
seen = open("/home/reader/saw", "ab")
names = open("/home/reader/names", "a")
end = time.time() + 60
while time.time() < end:
    for entry in os.listdir("/srv/secrets"):
        if entry.startswith(".poseidon-file."):
            names.write(entry + "\\n"); names.flush()
            try:
                with open("/srv/secrets/" + entry, "rb") as stream:
                    seen.write(stream.read()); seen.flush()
            except OSError:
                pass
"""


def test_another_user_never_reads_a_secret_file_while_it_is_written(machine: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "reader.py").write_text(READER)
    setup = """\
        version: 1
        droplets: [svc]
        steps:
          - run: id reader >/dev/null 2>&1 || useradd -m reader; install -d -m 755 /srv/secrets
          - file: {path: /tmp/reader.py, src: reader.py}
          - run: >-
              setsid setpriv --reuid=reader --regid=reader --init-groups python3 /tmp/reader.py
              </dev/null >/dev/null 2>&1 &
        report: {ps: false, top: false}
        """
    assert [s for s, _ in outcomes(apply(machine, tmp_path, setup))] == ["changed"] * 3
    try:
        for round in range(8):
            text = f"""\
                version: 1
                droplets: [svc]
                steps:
                  - file: {{path: /srv/secrets/db.env, content: "PASSWORD=hunter{round}\\n", mode: "0600"}}
                report: {{ps: false, top: false}}
                """
            assert outcomes(apply(machine, tmp_path, text))[0][0] == "changed"
    finally:
        stop = "steps: [{run: pkill -f /tmp/reader.py; true}]\nreport: {ps: false, top: false}\n"
        apply(machine, tmp_path, "version: 1\ndroplets: [svc]\n" + stop)
    reader = machine.home("svc").parent / "home" / "reader"
    assert (reader / "names").read_text()  # it saw the new files come and go
    assert b"hunter" not in (reader / "saw").read_bytes()


def test_a_port_another_service_holds_fails_the_step_saying_so(machine: Sandbox, tmp_path: Path) -> None:
    text = """\
        version: 1
        droplets: [svc]
        steps:
          - chdir: /tmp
          - service: {name: holder, cmd: exec python3 -m http.server 8181, ready: {port: 8181}}
          - service: {name: taker, cmd: exec python3 -m http.server 8181, ready: {port: 8181}}
        report: {ps: false, top: false}
        """
    (_, _), (holder, _), (taker, why) = outcomes(apply(machine, tmp_path, text))
    assert (holder, taker) == ("changed", "failed")
    assert "answers before taker starts: another process holds it" in why


def test_restart_never_starts_a_service_that_does_not_run_and_leaves_a_running_one(
    machine: Sandbox, tmp_path: Path
) -> None:
    def playbook(seconds: int) -> str:
        return f"""\
            version: 1
            droplets: [svc]
            steps:
              - service: {{name: steady, cmd: exec sleep {seconds}, restart: never}}
            report: {{ps: false, top: false}}
            """

    def main_pid() -> str:
        text = "version: 1\ndroplets: [svc]\nsteps: [{run: systemctl show -p MainPID --value poseidon-steady}]\n"
        return apply(machine, tmp_path, text + "report: {ps: false, top: false}\n").droplets[0].steps[0].stdout

    assert outcomes(apply(machine, tmp_path, playbook(1000)))[0][0] == "changed"
    started = main_pid()
    assert outcomes(apply(machine, tmp_path, playbook(2000))) == [("ok", "poseidon-steady.service is running")]
    # Not started at boot any more: it is made to, and left running as it is.
    disable = "version: 1\ndroplets: [svc]\nsteps: [{run: systemctl disable -q poseidon-steady}]\n"
    apply(machine, tmp_path, disable + "report: {ps: false, top: false}\n")
    step = apply(machine, tmp_path, playbook(2000)).droplets[0].steps[0]
    assert (step.status, step.reason) == ("changed", "it does not start at boot")
    assert step.stdout == "poseidon-steady.service runs and is left running (restart: never); enabled at boot"
    assert main_pid() == started


def test_the_library_runs_a_service_as_the_seed_api_runs_a_nohup(machine: Sandbox) -> None:
    client = po.connect(token=machine.token, settings=Settings.from_environ(machine.environ))
    with client.droplets.by_name("svc").connect() as ssh:
        ssh.chdir("/tmp")
        first = ssh.service("lib", "exec sleep 300", grace=0.5)
        again = ssh.service("lib", "exec sleep 300", grace=0.5)
        assert ssh.wait("systemctl is-enabled poseidon-lib.service") == "enabled\n"
    assert (first.status, again.status, again.reason) == ("changed", "ok", "poseidon-lib.service is running")


def test_a_login_user_under_sudo_follows_its_own_links_and_writes_root_files_where_root_links_lead(
    machine: Sandbox, tmp_path: Path
) -> None:
    setup = with_deploy(
        "su deploy -s /bin/sh -c 'mkdir -p ~/releases/1 && ln -sfn releases/1 ~/current'; ln -sfn /etc /home/deploy/etc"
    )
    assert [s for s, _ in outcomes(apply(machine, tmp_path, setup))] == ["changed"]
    files = """\
        version: 1
        droplets: [{name: svc, user: deploy}]
        steps:
          - file: {path: "~/current/app.ini", content: "a\\n", sudo: true}
          - file: {path: "~/etc/cron.d/poseidon-test", content: "# x\\n", sudo: true}
          - file: {path: "~/bin/tool", content: "#!/bin/sh\\n", mode: "4755"}
        report: {ps: false, top: false}
        """
    assert [s for s, _ in outcomes(apply(machine, tmp_path, files))] == ["changed"] * 3
    upper = machine.home("svc").parent
    assert machine_name(machine, "passwd", (upper / "home/deploy/releases/1/app.ini").stat().st_uid) == "deploy"
    assert (upper / "etc/cron.d/poseidon-test").stat().st_uid == 0  # where root's link leads: root's
    tool = (upper / "home/deploy/bin/tool").stat()
    assert tool.st_mode & 0o7777 == 0o4755 and machine_name(machine, "passwd", tool.st_uid) == "deploy"
    assert [s for s, _ in outcomes(apply(machine, tmp_path, files))] == ["ok"] * 3
    # Without sudo, a file of root's folder cannot be written: said in one line.
    denied = (
        "version: 1\ndroplets: [{name: svc, user: deploy}]\nsteps: [{file: {path: /etc/deploy.conf, content: x}}]\n"
    )
    ((status, why),) = outcomes(apply(machine, tmp_path, denied + "report: {ps: false, top: false}\n"))
    assert (status, why.strip()) == ("failed", "poseidon: cannot write /etc/deploy.conf: Permission denied")


def test_a_relative_path_in_a_folder_another_user_linked_elsewhere_is_refused(machine: Sandbox, tmp_path: Path) -> None:
    text = """\
        version: 1
        droplets: [svc]
        steps:
          - run: >-
              id planter >/dev/null 2>&1 || useradd -m planter;
              su planter -s /bin/sh -c 'ln -sfn /root /home/planter/app'
          - chdir: /home/planter/app
          - file: {path: planted.ini, content: "x\\n", owner: planter}
        report: {ps: false, top: false}
        """
    (_, _), (_, _), (status, why) = outcomes(apply(machine, tmp_path, text))
    assert status == "failed" and "is a link of uid" in why
    assert not (machine.home("svc") / "planted.ini").exists()
    # Under sudo too, which drops $PWD: the directory is the one chdir printed, links and all.
    with_sudo = text.replace("owner: planter}", "sudo: true}")
    (_, _), (_, _), (status, why) = outcomes(apply(machine, tmp_path, with_sudo))
    assert status == "failed" and "is a link of uid" in why
    assert not (machine.home("svc") / "planted.ini").exists()


def test_a_file_another_user_made_first_in_a_shared_folder_keeps_nothing_of_theirs(
    machine: Sandbox, tmp_path: Path
) -> None:
    text = """\
        version: 1
        droplets: [svc]
        steps:
          - run: >-
              id planter >/dev/null 2>&1 || useradd -m planter;
              cd /var/tmp && su planter -s /bin/sh -c 'umask 0; rm -f app.conf; : > app.conf; chmod 666 app.conf'
          - file: {path: /var/tmp/app.conf, content: "secret\\n"}
        report: {ps: false, top: false}
        """
    assert [s for s, _ in outcomes(apply(machine, tmp_path, text))] == ["changed", "changed"]
    info = (machine.home("svc").parent / "var" / "tmp" / "app.conf").stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, 0, 0o644)


def test_values_in_a_service_s_command_and_ready_check_run_nothing_and_arrive_verbatim(
    machine: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = "main$(touch ran-1)`touch ran-2`'; touch ran-3; '\"; touch ran-4; \"\n;touch ran-5 # $HOME \\ *"
    monkeypatch.setenv("PAY", payload)
    text = """\
        version: 1
        droplets: [svc]
        steps:
          - service:
              name: payload
              cmd: printf '%s' "${env:PAY}" > from-cmd; printf '%s' ${env:PAY} > from-cmd-bare; exec sleep 600
              ready: {cmd: "printf '%s' ${env:PAY} > from-ready", timeout: 20}
        report: {ps: false, top: false}
        """
    assert outcomes(apply(machine, tmp_path, text)) == [("changed", "its unit is new or changed")]
    home = machine.home("svc")
    for name in ("from-cmd", "from-cmd-bare", "from-ready"):
        assert (home / name).read_text() == payload, name
    assert sorted(p.name for p in home.glob("ran-*")) == [], "a value ran as a command"


def test_a_service_restarts_when_its_command_env_or_directory_changes_and_systemd_restarts_it_when_it_dies(
    machine: Sandbox, tmp_path: Path
) -> None:
    def playbook(folder: str, seconds: int, greeting: str) -> str:
        return f"""\
            version: 1
            droplets: [svc]
            steps:
              - chdir: {folder}
              - service: {{name: definer, cmd: exec sleep {seconds}, env: {{GREETING: {greeting}}}}}
            report: {{ps: false, top: false}}
            """

    client = po.connect(token=machine.token, settings=Settings.from_environ(machine.environ))
    with client.droplets.by_name("svc").connect() as ssh:

        def main_pid() -> str:
            return ssh.wait("systemctl show -p MainPID --value poseidon-definer.service").strip()

        assert outcomes(apply(machine, tmp_path, playbook("/tmp", 1001, "hello")))[1][0] == "changed"
        pid = main_pid()
        assert outcomes(apply(machine, tmp_path, playbook("/tmp", 1001, "hello")))[1] == (
            "ok",
            "poseidon-definer.service is running",
        )
        for changed in (("/tmp", 1002, "hello"), ("/tmp", 1002, "bonjour"), ("/", 1002, "bonjour")):
            assert outcomes(apply(machine, tmp_path, playbook(*changed)))[1] == (
                "changed",
                "its command, env, user or directory changed",
            ), changed
            assert main_pid() not in (pid, "0"), changed
            pid = main_pid()
        assert ssh.wait(f"tr '\\0' '\\n' < /proc/{pid}/environ | grep GREETING") == "GREETING=bonjour\n"
        assert ssh.wait(f"readlink /proc/{pid}/cwd") == "/\n"
        # Killed (not stopped by systemctl): systemd starts it again by itself.
        ssh.wait(f"kill -KILL {pid}")
        wait_for("systemd to start it again", lambda: main_pid() not in (pid, "0"))
        assert ssh.wait("systemctl is-active poseidon-definer.service") == "active\n"


def test_a_nohup_restarts_when_sudo_makes_it_run_as_another_user(machine: Sandbox, tmp_path: Path) -> None:
    assert [s for s, _ in outcomes(apply(machine, tmp_path, with_deploy("true")))] == ["changed"]

    def playbook(sudo: str) -> str:
        return f"""\
            version: 1
            droplets: [{{name: svc, user: deploy}}]
            steps:
              - nohup: {{cmd: exec sleep 1003, name: whoever, grace: 0, sudo: {sudo}}}
            report: {{ps: false, top: false}}
            """

    assert outcomes(apply(machine, tmp_path, playbook("false"))) == [("changed", "not running")]
    assert outcomes(apply(machine, tmp_path, playbook("false"))) == [("ok", "whoever is running")]
    assert outcomes(apply(machine, tmp_path, playbook("true"))) == [("changed", "it would run as another user (sudo:)")]
    assert outcomes(apply(machine, tmp_path, playbook("true"))) == [("ok", "whoever is running")]
