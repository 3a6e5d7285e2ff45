"""`poseidon sandbox up` / `down`: a sandbox that outlives one command, reached through its exports."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).parent.parent


def poseidon(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poseidon.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def exports(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        words = shlex.split(line)
        assert words[0] == "export", line
        key, _, value = words[1].partition("=")
        found[key] = value
    return found


def test_sandbox_up_prints_exports_that_reach_it_and_down_stops_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSEIDON_", "DIGITALOCEAN_"))}
    env["XDG_STATE_HOME"] = str(tmp_path)
    # The operator's real token, in the shell that starts the sandbox: its daemon must not hold it.
    up = poseidon(
        "sandbox",
        "up",
        "--droplet",
        "alpha",
        "--droplet",
        "beta",
        env={**env, "DIGITALOCEAN_TOKEN": "dop_v1_real-4711"},
    )
    assert up.returncode == 0, up.stderr
    variables = exports(up.stdout)
    assert set(variables) == {
        "POSEIDON_API_URL",
        "DIGITALOCEAN_TOKEN",
        "POSEIDON_SSH_USER",
        "POSEIDON_SSH_PORT",
        "POSEIDON_SSH_KEY",
        "POSEIDON_KNOWN_HOSTS",
        "POSEIDON_PIN_HOST_KEYS",
        # Its HTTPS, trusted: the sandbox's authority alone, and with this machine's.
        "POSEIDON_SANDBOX_CA",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "POSEIDON_SANDBOX_HTTP_URL",
    }
    assert variables["POSEIDON_API_URL"].startswith("https://127.0.0.1:")
    assert variables["POSEIDON_SANDBOX_HTTP_URL"].startswith("http://127.0.0.1:")
    state = json.loads((tmp_path / "poseidon" / "sandbox" / "state.json").read_text())
    assert b"dop_v1_real-4711" not in Path(f"/proc/{state['pid']}/environ").read_bytes()
    try:
        again = poseidon("sandbox", "up", env=env)
        assert again.returncode == 2  # the environment is not as the command needs
        assert "already up" in again.stderr

        reached = {**env, **variables}
        listed = poseidon("droplets", "--json", env=reached)
        assert listed.returncode == 0, listed.stderr
        assert sorted(d["name"] for d in json.loads(listed.stdout)) == ["alpha", "beta"]
        table = poseidon("droplets", env=reached)
        assert table.returncode == 0, table.stderr
        rows = {
            line.split("|")[1].strip(): line
            for line in table.stdout.splitlines()
            if "| alpha" in line or "| beta" in line
        }
        assert set(rows) == {"alpha", "beta"}
        assert ".2 " in rows["alpha"] and "s-1vcpu-1gb" in rows["alpha"] and "active" in rows["alpha"]
        ps = poseidon("ps", "beta", env=reached)
        assert ps.returncode == 0, ps.stderr
        title, header = ps.stdout.splitlines()[:2]
        assert title.startswith("beta: ps -Af (") and header.split() == [
            "UID",
            "PID",
            "PPID",
            "C",
            "STIME",
            "TTY",
            "TIME",
            "CMD",
        ]
    finally:
        down = poseidon("sandbox", "down", env=env)
    assert down.returncode == 0
    assert "sandbox stopped" in down.stdout
    with pytest.raises(ProcessLookupError):
        os.kill(int(state["pid"]), 0)
    assert not Path(state["root"]).exists()
    assert "no sandbox is up" in poseidon("sandbox", "down", env=env).stdout


def test_down_never_signals_a_process_that_is_not_the_sandbox_s_and_the_state_is_private(tmp_path: Path) -> None:
    import stat

    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSEIDON_", "DIGITALOCEAN_"))}
    env["XDG_STATE_HOME"] = str(tmp_path)
    up = poseidon("sandbox", "up", "--droplet", "alpha", env=env)
    assert up.returncode == 0, up.stderr
    folder = tmp_path / "poseidon" / "sandbox"
    try:
        assert stat.S_IMODE((folder / "state.json").stat().st_mode) == 0o600  # it holds the sandbox's token
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    finally:
        assert poseidon("sandbox", "down", env=env).returncode == 0
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        # A state left behind, whose pid is now a stranger's (a reboot reused it).
        (folder / "state.json").write_text(json.dumps({"pid": stranger.pid, "environ": {}, "root": str(tmp_path)}))
        down = poseidon("sandbox", "down", env=env)
        assert down.returncode == 0 and "no sandbox is up" in down.stdout
        assert stranger.poll() is None, "down signalled a process that was not the sandbox's"
    finally:
        stranger.kill()
        stranger.wait()


def _servers_of(kept: Path) -> list[int]:
    """Processes started with the kept sandbox's configuration (its sshds)."""
    config = str(kept / "etc").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if config in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("sig", ["TERM", "KILL"])
def test_a_sandbox_apply_stopped_by_a_signal_leaves_no_server_behind_after_reset(sig: str, tmp_path: Path) -> None:
    import signal
    import time

    playbook = tmp_path / "site.yaml"
    playbook.write_text(
        "version: 1\ndroplets: [web]\nsteps:\n  - run: touch started; sleep 30\nreport: {ps: false, top: false}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSEIDON_", "DIGITALOCEAN_"))}
    kept = tmp_path / ".poseidon" / "sandbox" / "site"
    run = subprocess.Popen(
        [sys.executable, "-m", "poseidon.cli", "apply", str(playbook), "--sandbox"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(kept.glob("hosts/*/started")):
            assert time.monotonic() < deadline and run.poll() is None, "the step never started"
            time.sleep(0.05)
        assert _servers_of(kept), "no sshd serves the sandbox while it runs"
        run.send_signal(getattr(signal, f"SIG{sig}"))
        run.communicate(timeout=60)
    finally:
        run.kill()
        run.wait()
    if sig == "TERM":
        # Ended as Ctrl-C ends it: the running step ends, the sandbox's servers stop on the way out.
        assert run.returncode == 130
        assert _servers_of(kept) == []
    reset = poseidon("sandbox", "reset", "--playbook", str(playbook), env=env)
    assert reset.returncode == 0, reset.stderr
    assert _servers_of(kept) == [], "reset left a server of the sandbox listening"


def test_each_playbook_has_its_own_sandbox_up_with_env_to_print_its_variables_again(tmp_path: Path) -> None:
    """Two projects, two sandboxes up at once; `sandbox env` prints one's variables again; `apply
    --sandbox` uses the one up; `down` stops only its own; a stale POSEIDON_API_URL gets a hint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSEIDON_", "DIGITALOCEAN_"))}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    books = {}
    for project in ("one", "two"):
        (tmp_path / project).mkdir()
        books[project] = tmp_path / project / "site.yaml"
        books[project].write_text(f"version: 1\ndroplets: [{project}-web]\nsteps:\n  - run: touch applied\n")
    try:
        ups = {p: poseidon("sandbox", "up", "--playbook", str(b), env=env) for p, b in books.items()}
        assert all(up.returncode == 0 for up in ups.values()), {p: u.stderr for p, u in ups.items()}
        variables = {p: exports(up.stdout) for p, up in ups.items()}
        assert variables["one"]["POSEIDON_API_URL"] != variables["two"]["POSEIDON_API_URL"]
        again = poseidon("sandbox", "env", "--playbook", str(books["one"]), env=env)
        assert again.returncode == 0 and exports(again.stdout) == variables["one"]

        applied = poseidon("apply", str(books["two"]), "--sandbox", env=env)
        assert applied.returncode == 0, applied.stderr
        assert "the one 'poseidon sandbox up' serves" in applied.stdout
        home = tmp_path / "two" / ".poseidon" / "sandbox" / "site" / "hosts"
        assert len(list(home.glob("*/applied"))) == 1, "applied on the sandbox that is up"
        listed = poseidon("droplets", "--json", env={**env, **variables["two"]})
        assert [d["name"] for d in json.loads(listed.stdout)] == ["two-web"]

        assert "sandbox stopped" in poseidon("sandbox", "down", "--playbook", str(books["one"]), env=env).stdout
        # Down, its droplets stay for the next up or apply --sandbox.
        kept = json.loads((tmp_path / "one" / ".poseidon" / "sandbox" / "site" / "droplets.json").read_text())
        assert [d["name"] for d in kept] == ["one-web"]
        stale = poseidon("droplets", env={**env, **variables["one"]})
        assert stale.returncode == 3
        assert "connection refused" in stale.stderr and "is its sandbox up? 'poseidon sandbox up'" in stale.stderr
        assert "Max retries" not in stale.stderr
        assert poseidon("droplets", env={**env, **variables["two"]}).returncode == 0, "the other is still up"
        missing = poseidon("sandbox", "env", "--playbook", str(books["one"]), env=env)
        assert missing.returncode == 2 and "no sandbox is up in" in missing.stderr
    finally:
        for book in books.values():
            poseidon("sandbox", "reset", "--playbook", str(book), env=env)
    assert not (tmp_path / "two" / ".poseidon" / "sandbox" / "site").exists()


def test_sandbox_up_in_a_playbook_folder_follows_no_planted_link(tmp_path: Path) -> None:
    """The background sandbox's files beside a playbook (a shared checkout, maybe) are written
    whole and 0600, never through a link someone planted at their names."""
    import stat

    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSEIDON_", "DIGITALOCEAN_"))}
    book = tmp_path / "site.yaml"
    book.write_text("version: 1\ndroplets: [linked]\nsteps:\n  - run: 'true'\n")
    folder = tmp_path / ".poseidon" / "sandbox" / "site"
    folder.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    for name in ("request.json", "daemon.log"):
        (folder / name).symlink_to(victim)
    try:
        up = poseidon("sandbox", "up", "--playbook", str(book), env=env)
        assert up.returncode == 0, up.stderr
        assert victim.read_text() == "untouched\n"
        for name in ("request.json", "daemon.log", "state.json"):
            assert not (folder / name).is_symlink() and stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    finally:
        poseidon("sandbox", "reset", "--playbook", str(book), env=env)
