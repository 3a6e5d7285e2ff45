"""Sandbox machines: Debian booted with systemd-nspawn on an overlay of one base system.

They need root, debootstrap, systemd-container and a Debian mirror: elsewhere these
tests are skipped with the reason (under CI, where all of that is installed, they fail).
The base is built once into the user's cache folder and reused by later runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import poseidon.api as po
from poseidon import executor, spec
from poseidon.errors import SandboxError
from poseidon.results import RunResult, StepResult
from poseidon.sandbox import Sandbox, machines
from poseidon.sandbox.machines import Machine
from poseidon.settings import Settings
from poseidon.ssh import SSHClient
from support.sandboxes import machines_base

TESTS = Path(__file__).parent

pytestmark = pytest.mark.sandbox

#: Seconds a machine may take to boot to SSH on a busy machine: a safety net, never a pace.
BOOT_PATIENCE = 60.0


@pytest.fixture(scope="module")
def base() -> Path:
    return machines_base()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    for name in ("client", "host"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    return {"client": folder / "client", "host": folder / "host", "known_hosts": folder / "known_hosts"}


_addresses = iter(range(2, 250))


def new_machine(name: str, base: Path, keys: dict[str, Path], folder: Path) -> Machine:
    """A machine on an address of its own (this test run's block of 127.211.0.0/16), not started."""
    return Machine(
        name,
        f"127.211.{os.getpid() % 200}.{next(_addresses)}",
        2222,
        folder / name,
        base,
        authorized_key=(keys["client"].with_suffix(".pub")).read_text(),
        host_key=keys["host"],
    )


@pytest.fixture
def machine(base: Path, keys: dict[str, Path], tmp_path: Path) -> Iterator[Machine]:
    made = new_machine("m1", base, keys, tmp_path)
    made.start()
    try:
        made.wait_for_ssh(BOOT_PATIENCE)
        yield made
    finally:
        made.remove()


def login(machine: Machine, keys: dict[str, Path]) -> SSHClient:
    return SSHClient(
        machine.address,
        port=machine.port,
        key_filename=str(keys["client"]),
        known_hosts=str(keys["known_hosts"]),
        label=machine.name,
    )


def test_a_machine_is_a_system_of_its_own_that_shows_only_its_processes(
    machine: Machine, keys: dict[str, Path]
) -> None:
    with login(machine, keys) as ssh:
        assert ssh.wait("hostname").strip() == "m1"
        processes = ssh.wait("ps -e -o pid=,comm=").split("\n")
        assert processes[0].split() == ["1", "systemd"]
        assert not any("pytest" in line or "python3" in line for line in processes), processes
        assert len(processes) < 30, processes
        assert ssh.wait("id -un").strip() == "root"


def test_apt_installs_in_the_machine_and_only_there(machine: Machine, keys: dict[str, Path]) -> None:
    assert subprocess.run(["dpkg", "-s", "hello"], capture_output=True).returncode != 0, "this machine has hello"
    with login(machine, keys) as ssh:
        ssh.wait("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hello")
        assert ssh.wait("hello").strip() == "Hello, world!"
    assert subprocess.run(["dpkg", "-s", "hello"], capture_output=True).returncode != 0


def test_power_off_then_on_keeps_the_files_and_a_cut_does_too(machine: Machine, keys: dict[str, Path]) -> None:
    with login(machine, keys) as ssh:
        ssh.wait("echo kept > ~/note && sync")
    machine.stop()
    assert not machine.running
    machine.start()
    machine.wait_for_ssh(BOOT_PATIENCE)
    with login(machine, keys) as ssh:
        assert ssh.wait("cat ~/note").strip() == "kept"
        ssh.wait("echo cut > ~/note && sync")
    machine.cut()
    assert not machine.running
    machine.start()
    machine.wait_for_ssh(BOOT_PATIENCE)
    with login(machine, keys) as ssh:
        assert ssh.wait("cat ~/note").strip() == "cut"


def test_a_reboot_inside_brings_the_machine_back(machine: Machine, keys: dict[str, Path]) -> None:
    with login(machine, keys) as ssh:
        ssh.wait("touch /run/before-the-reboot")  # /run is a new tmpfs at each boot
        ssh.run("systemctl reboot")
    deadline = time.monotonic() + BOOT_PATIENCE
    while machine.boots < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert machine.boots == 2, "nspawn was not started again after the reboot"
    machine.wait_for_ssh(BOOT_PATIENCE)
    with login(machine, keys) as ssh:
        assert ssh.run("test -e /run/before-the-reboot").exited == 1
        assert ssh.wait("systemctl is-system-running --wait").strip() in ("running", "degraded")


def test_removing_a_machine_unmounts_it_first_and_leaves_the_base_as_it_was(
    base: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    before = sorted(p.name for p in (base / "etc").iterdir())
    made = new_machine("gone", base, keys, tmp_path)
    made.start()
    made.wait_for_ssh(BOOT_PATIENCE)
    with login(made, keys) as ssh:
        ssh.wait("rm -rf /etc/apt /usr/share/doc && touch /etc/only-here")
    made.remove()
    assert not (tmp_path / "gone").exists()
    assert sorted(p.name for p in (base / "etc").iterdir()) == before
    assert (base / "etc" / "apt").is_dir() and (base / "usr" / "share" / "doc").is_dir()
    assert not (base / "etc" / "only-here").exists()


# -- droplets of a sandbox, driven by the API emulator -------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this machine the fleet's machines read at the same path."""
    folder = tmp_path_factory.mktemp("shared")
    (folder / "note").write_text("read from here\n")
    return folder


@pytest.fixture(scope="module")
def fleet(base: Path, shared: Path) -> Iterator[Sandbox]:
    with Sandbox(
        ["m1", "m2"], machines=True, repos={"changhiskhan/test": TESTS / "apps" / "tiny"}, shared=[shared]
    ) as sandbox:
        yield sandbox


def run(sandbox: Sandbox, text: str) -> RunResult:
    """Apply ``text`` on the machines, logging in as each droplet entry says (machines have real users)."""
    settings = Settings.from_environ(sandbox.environ)
    return executor.apply(spec.loads(textwrap.dedent(text)), settings=settings)


def statuses(result: RunResult) -> dict[str, list[str]]:
    return {droplet.name: [step.status for step in droplet.steps] for droplet in result.droplets}


def test_a_playbook_installs_with_apt_for_real_and_a_second_run_is_ok(fleet: Sandbox) -> None:
    playbook = """\
        version: 1
        droplets: [m1, m2]
        steps:
          - apt: hello
          - run: {cmd: hello > greeting, creates: greeting}
          - git: changhiskhan/test
        """
    first = run(fleet, playbook)
    assert statuses(first) == {"m1": ["changed"] * 3, "m2": ["changed"] * 3}, [d.error for d in first.droplets]
    again = run(fleet, playbook)
    assert statuses(again) == {"m1": ["ok"] * 3, "m2": ["ok"] * 3}
    assert (fleet.home("m1") / "greeting").read_text() == "Hello, world!\n"
    # The snapshots are the droplet's own: its init is PID 1, poseidon and this test are not there.
    frame = again.droplets[0].ps
    assert frame is not None
    assert frame.loc[frame["PID"] == 1, "CMD"].str.contains("systemd|/sbin/init").all()
    assert not frame["CMD"].str.contains("pytest").any()


def test_a_shared_folder_is_read_at_its_own_path_and_never_written(fleet: Sandbox, shared: Path) -> None:
    note = shared / "note"
    result = run(
        fleet,
        f"""\
        version: 1
        droplets: [m1]
        steps:
          - run: cat {note}
          - run: touch {shared}/written
        report: {{ps: false, top: false}}
        """,
    )
    read, write = result.droplets[0].steps
    assert (read.status, read.stdout) == ("changed", "read from here")
    assert write.status == "failed" and "Read-only file system" in write.stderr
    assert sorted(p.name for p in shared.iterdir()) == ["note"]


def test_a_user_with_sudo_installs_and_one_without_is_told_why_not(fleet: Sandbox) -> None:
    users = """\
        version: 1
        droplets: [m2]
        steps:
          - run:
              cmd: >-
                for u in deploy nosudo; do id "$u" >/dev/null 2>&1 || useradd -m -s /bin/bash "$u";
                install -d -m 700 -o "$u" -g "$u" "/home/$u/.ssh";
                install -m 600 -o "$u" -g "$u" ~root/.ssh/authorized_keys "/home/$u/.ssh/"; done;
                echo 'deploy ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/deploy
        report: {ps: false, top: false}
        """
    assert statuses(run(fleet, users)) == {"m2": ["changed"]}
    as_deploy = run(fleet, "version: 1\ndroplets: [{name: m2, user: deploy}]\nsteps: [{apt: cowsay}]\n")
    assert statuses(as_deploy) == {"m2": ["changed"]}, as_deploy.droplets[0].error
    as_nosudo = run(fleet, "version: 1\ndroplets: [{name: m2, user: nosudo}]\nsteps: [{apt: sl}]\n")
    step = as_nosudo.droplets[0].steps[0]
    assert step.status == "failed"
    # A user sudo does not know is asked for a password, which -n refuses: as on a droplet.
    assert "sudo on m2 wants a password for nosudo" in step.stderr
    assert "unable to resolve host" not in step.stderr


def test_power_off_and_on_through_the_api_keeps_the_files_and_delete_removes_the_machine(
    fleet: Sandbox, base: Path
) -> None:
    client = po.connect(token=fleet.token, settings=Settings.from_environ(fleet.environ))
    droplet = client.droplets.by_name("m1")
    address = fleet.address("m1")
    run(fleet, "version: 1\ndroplets: [m1]\nsteps: [{run: {cmd: touch kept, creates: kept}}]\n")
    droplet.power_off()
    assert not fleet.is_on("m1")
    droplet.power_on()
    assert fleet.is_on("m1")
    again = run(fleet, "version: 1\ndroplets: [m1]\nsteps: [{run: {cmd: touch kept, creates: kept}}]\n")
    assert statuses(again) == {"m1": ["ok"]}
    etc_before = sorted(p.name for p in (base / "etc").iterdir())
    droplet.delete()
    assert not (fleet.root / "hosts" / address).exists()
    assert sorted(p.name for p in (base / "etc").iterdir()) == etc_before


# -- the command line ---------------------------------------------------------------------------


def test_apply_sandbox_machines_keeps_machines_for_the_playbook_until_reset(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from poseidon.cli import main

    path = tmp_path / "site.yaml"
    path.write_text("version: 1\nname: site\ndroplets: [box]\nsteps:\n  - apt: hello\n  - run: hello > said\n")
    try:
        assert main(["apply", str(path), "--sandbox=machines", "--json"]) == 0
        capsys.readouterr()
        # --sandbox alone is the kept sandbox's kind; another kind is refused, saying how to start afresh.
        assert main(["plan", str(path), "--sandbox", "--json"]) == 0
        capsys.readouterr()
        assert main(["apply", str(path), "--sandbox=light"]) == 2
        assert "has machines droplets, not light: 'poseidon sandbox reset --playbook" in capsys.readouterr().err
        assert main(["ps", "box", "--sandbox", str(path), "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        init = [row["CMD"] for row in rows if row["PID"] == 1]
        assert len(init) == 1 and "systemd" in init[0], rows
        assert not any("pytest" in row["CMD"] for row in rows)
    finally:
        assert main(["sandbox", "reset", "--playbook", str(path)]) == 0
    assert "removed the sandbox kept in" in capsys.readouterr().out
    assert not (tmp_path / ".poseidon" / "sandbox" / "site").exists()
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(tmp_path) in line]


def test_a_sandbox_kind_that_does_not_exist_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from poseidon.cli import main

    path = tmp_path / "site.yaml"
    path.write_text("version: 1\ndroplets: [box]\nsteps: [{run: echo}]\n")
    with pytest.raises(SystemExit) as exited:
        main(["apply", str(path), "--sandbox=heavy"])
    assert exited.value.code == 2
    assert "'heavy' is no sandbox: --sandbox (light) or --sandbox=machines" in capsys.readouterr().err
    monkeypatch.setenv("POSEIDON_SANDBOX", "vm")
    assert main(["apply", str(path), "--sandbox"]) == 2
    assert "POSEIDON_SANDBOX must be light or machines, not 'vm'" in capsys.readouterr().err


def test_a_reboot_through_the_api_mid_run_then_resume_finishes_the_run(fleet: Sandbox, tmp_path: Path) -> None:
    """The droplet reboots under a running step (its systemd shuts down and boots again); the
    run says so, and --resume starts again at that step once the droplet is back."""
    import threading

    from poseidon import runlog

    client = po.connect(token=fleet.token, settings=Settings.from_environ(fleet.environ))
    droplet = client.droplets.by_name("m2")
    assert isinstance(fleet.farm, machines.MachineFarm)
    machine = fleet.farm.machines[fleet.address("m2")]
    boots = machine.boots
    text = textwrap.dedent("""\
        version: 1
        droplets: [m2]
        steps:
          - run: {cmd: echo one > one, creates: one}
          - run: {cmd: "sleep 30; echo two > two", creates: two}
        report: {ps: false, top: false}
        """)
    path = tmp_path / "site.yaml"
    path.write_text(text)
    playbook = spec.load(path)
    runs = tmp_path / "runs"

    def reboot_at_the_second_step(name: str, step: StepResult) -> None:
        if step.index == 0:
            threading.Timer(1.0, droplet.reboot, kwargs={"wait": False}).start()

    settings = Settings.from_environ(fleet.environ)
    first = executor.apply(
        playbook,
        path=str(path),
        settings=settings,
        options=executor.RunOptions(run_log=runs),
        progress=reboot_at_the_second_step,
    )
    one, two = first.droplets[0].steps
    assert one.status == "changed"
    assert two.status == "failed" and "the connection was lost during a command (the droplet rebooted" in two.stderr
    deadline = time.monotonic() + BOOT_PATIENCE
    while machine.boots == boots and time.monotonic() < deadline:
        time.sleep(0.1)
    assert machine.boots == boots + 1, "the machine did not boot again"
    machine.wait_for_ssh(BOOT_PATIENCE)
    resumed = executor.apply(
        playbook,
        path=str(path),
        settings=settings,
        options=executor.RunOptions(run_log=runs, resume=runlog.resume_points(runs, playbook, str(path))),
    )
    assert [s.status for s in resumed.droplets[0].steps] == ["done-earlier", "changed"], resumed.droplets[0].error
    assert (fleet.home("m2") / "two").read_text() == "two\n"


def test_links_a_machine_plants_never_lead_its_next_start_to_write_on_this_machine(
    machine: Machine, keys: dict[str, Path], tmp_path: Path
) -> None:
    """Root in a machine may make any link in its files; the files poseidon writes into them at
    each start (its name, sshd's settings, root's key…) go into the machine, whatever they point at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "hostname").write_text("this machine's\n")
    with login(machine, keys) as ssh:
        ssh.wait(
            f"ln -sf {outside}/hostname /etc/hostname"  # a link at a file's name
            f" && rm -rf /etc/ssh/sshd_config.d && ln -s {outside} /etc/ssh/sshd_config.d"  # a link as a folder
            f" && mv ~/.ssh ~/ssh.away && ln -s {outside} ~/.ssh"
        )
    machine.cut()
    machine.start()
    machine.wait_for_ssh(BOOT_PATIENCE)
    assert sorted(p.name for p in outside.iterdir()) == ["hostname"]
    assert (outside / "hostname").read_text() == "this machine's\n"
    with login(machine, keys) as ssh:
        assert ssh.wait("hostname").strip() == "m1"
        assert ssh.run("test -L /etc/hostname || test -L /etc/ssh/sshd_config.d || test -L ~/.ssh").exited == 1
        assert ssh.wait("stat -c %a ~/.ssh").strip() == "700"


def test_a_path_out_of_the_machine_is_refused(tmp_path: Path) -> None:
    for inside in ("../escape", "etc/../../escape", ""):
        with pytest.raises(SandboxError, match="not a path inside a machine"):
            machines.write_inside(tmp_path, inside, b"x")
    assert not (tmp_path.parent / "escape").exists()


def test_the_demo_runs_on_machines_and_a_second_run_changes_nothing(
    base: Path, tmp_path: Path, offline_pip: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/site.yaml on machines, pip as the suite sets it (offline, from the wheels here)."""
    import shutil

    from poseidon.cli import main

    shutil.copytree(TESTS.parent / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns(".poseidon"))
    path = tmp_path / "examples" / "site.yaml"
    try:
        assert main(["apply", str(path), "--sandbox=machines", "--json"]) == 0, capsys.readouterr().err
        first = json.loads(capsys.readouterr().out)
        assert main(["apply", str(path), "--sandbox", "--json"]) == 0, capsys.readouterr().err
        second = json.loads(capsys.readouterr().out)
    finally:
        main(["sandbox", "reset", "--playbook", str(path)])
    assert [d["name"] for d in first["droplets"]] == ["web-1", "web-2"]
    # apt finds git, python3-venv and curl in the base; chdir and the smoke test only check.
    expected = ["ok", "changed", "ok", "changed", "changed", "ok"]
    assert [[s["status"] for s in d["steps"]] for d in first["droplets"]] == [expected, expected]
    assert {s["status"] for d in second["droplets"] for s in d["steps"]} == {"ok"}


def test_pip_settings_reach_machines_as_sessions_read_them(tmp_path: Path) -> None:
    lines, folders = machines.pip_environment(
        {
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": f"{tmp_path} https://example.com/wheels",
            "PIP_CACHE_DIR": "/mine",
            "PIP_INDEX_URL": 'https://x"\nPATH=/evil',
            "HOME": "/home/me",
        }
    )
    assert lines == f'PIP_FIND_LINKS="{tmp_path} https://example.com/wheels"\nPIP_NO_INDEX="1"\n'
    assert folders == [tmp_path]


def test_network_files_are_as_readable_inside_as_here(tmp_path: Path) -> None:
    """A pip.conf holding an index password is root's alone here: in the machine too."""
    secret, public = tmp_path / "pip.conf", tmp_path / "company.crt"
    secret.write_text("[global]\nindex-url = https://me:password@index.example/simple\n")
    secret.chmod(0o600)
    public.write_text("-----BEGIN CERTIFICATE-----\n")
    public.chmod(0o755)
    (tmp_path / "host").write_text("host key\n")
    machine = Machine(
        "m1",
        "127.211.0.1",
        2222,
        tmp_path / "m1",
        tmp_path,
        authorized_key="ssh-ed25519 AAAA client\n",
        host_key=tmp_path / "host",
        network_files={"/etc/pip.conf": secret, "/usr/local/share/company.crt": public},
    )
    machine.root.mkdir(parents=True)  # what the overlay would be, unmounted
    machine._configure()
    modes = {
        path: (machine.root / path).stat().st_mode & 0o777 for path in ("etc/pip.conf", "usr/local/share/company.crt")
    }
    assert modes == {"etc/pip.conf": 0o600, "usr/local/share/company.crt": 0o644}


def test_droplet_names_the_api_allows_make_machines_too(base: Path) -> None:
    """nspawn knows a machine by its address; the droplet's name (``a..b``, 70 characters) is its host name."""
    long = "n" * 70
    with Sandbox(["a..b", long], machines=True) as sandbox:
        settings = Settings.from_environ(sandbox.environ)
        client = po.connect(settings=settings)
        for name in ("a..b", long):
            with client.droplets.by_name(name).connect() as ssh:
                assert ssh.wait("echo up").strip() == "up"


def test_a_playbook_in_a_folder_of_any_name_gets_machines_and_reset_removes_them(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A comma, a colon and non-ASCII letters in the path: the mount takes them, and reset finds
    the mount (mountinfo's bytes, read as such) before it removes anything."""
    from poseidon.cli import main

    folder = tmp_path / "café, a:b"
    folder.mkdir()
    path = folder / "site.yaml"
    path.write_text("version: 1\nname: site\ndroplets: [box]\nsteps: [{run: {cmd: touch made, creates: made}}]\n")
    try:
        assert main(["apply", str(path), "--sandbox=machines", "--json"]) == 0, capsys.readouterr().err
    finally:
        assert main(["sandbox", "reset", "--playbook", str(path)]) == 0
    assert not (folder / ".poseidon" / "sandbox" / "site").exists()
    assert not [point for point in machines._mount_points() if point.startswith(str(folder))]


def test_a_poweroff_inside_a_machine_is_off_for_the_api_until_power_on(base: Path) -> None:
    with Sandbox(["alone"], machines=True) as sandbox:
        client = po.connect(settings=Settings.from_environ(sandbox.environ))
        droplet = client.droplets.by_name("alone")
        with droplet.connect() as ssh:
            ssh.run("systemctl poweroff")
        deadline = time.monotonic() + BOOT_PATIENCE
        while droplet.refresh().status != "off" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert droplet.status == "off" and not sandbox.is_on("alone")
        droplet.power_on()
        with droplet.connect() as ssh:
            assert ssh.wait("echo back").strip() == "back"
        assert droplet.refresh().status == "active"
