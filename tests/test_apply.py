"""`poseidon apply` end to end: the CLI, the executor, the API emulator and real OpenSSH droplets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from poseidon.cli import main
from poseidon.sandbox import Sandbox
from support.sandboxes import command_lines
from support.wheels import build_wheel

ROOT = Path(__file__).parent.parent


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The poseidon command in a subprocess, as a newcomer runs it."""
    return subprocess.run(
        [sys.executable, "-m", "poseidon.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if not k.startswith(("POSEIDON_", "DIGITALOCEAN_"))},
    )


@pytest.mark.sandbox
def test_the_demo_deploys_the_app_and_a_second_run_changes_nothing(tmp_path: Path, offline_pip: dict[str, str]) -> None:
    """What `make demo` runs, twice: the kept sandbox meets the first run's work. Flask comes from
    tests/.wheelhouse, through the pip settings a sandbox passes on to its droplets."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    first = cli("apply", "examples/site.yaml", "--sandbox", "--report", "first.json", cwd=tmp_path)
    try:
        assert first.returncode == 0, first.stdout + first.stderr
        assert "all droplets succeeded" in first.stdout
        for droplet in json.loads((tmp_path / "first.json").read_text())["droplets"]:
            statuses = [s["status"] for s in droplet["steps"]]
            # apt: present on this machine; chdir: never a change; the smoke test: ok once the app answers.
            assert statuses[:5] == ["ok", "changed", "ok", "changed", "changed"], statuses
            assert statuses[5] in ("ok", "changed")
        summary = first.stdout.splitlines()
        for name in ("web-1", "web-2"):
            # After the run: the processes it started (the app, in its wrapper) and the busiest few.
            at = summary.index(next(line for line in summary if line.startswith(f"{name}: started by this run (")))
            started = summary[at + 2 : at + 2 + int(summary[at].split("(")[1].split()[0])]
            assert any(".venv/bin/python app.py --host" in line for line in started), started
            # Its own app only: the other droplet's runs on this same machine too (a sandbox).
            other = "web-2" if name == "web-1" else "web-1"
            report = json.loads((tmp_path / "first.json").read_text())
            address = next(d["ip_address"] for d in report["droplets"] if d["name"] == other)
            assert not any(f"--host {address} " in line for line in started), started
            assert any(line.startswith(f"{name}: busiest (5 of ") for line in summary)
        assert not any(": ps -Af" in line for line in summary), "the whole ps is in --json only"
        second = cli("apply", "examples/site.yaml", "--sandbox", "--json", cwd=tmp_path)
        assert second.returncode == 0, second.stdout + second.stderr
        report = json.loads(second.stdout)
        for droplet in report["droplets"]:
            assert [s["status"] for s in droplet["steps"]] == ["ok"] * 6, droplet["steps"]
            served = [row for row in droplet["ps"] if f"app.py --host {droplet['ip_address']}" in row["CMD"]]
            assert served, "the app started by the first run still runs"
    finally:
        reset = cli("sandbox", "reset", "--playbook", "examples/site.yaml", cwd=tmp_path)
    assert reset.returncode == 0 and "removed the sandbox" in reset.stdout
    assert not (tmp_path / "examples" / ".poseidon" / "sandbox" / "site").exists()
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout
    assert leftover == ""


def test_apply_reports_json_with_every_step_and_the_snapshots(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        name: json-report
        droplets: [test, other]
        steps:
          - run: {cmd: "mkdir -p json-report", creates: json-report}
          - chdir: json-report
          - run: echo hello from ${droplet.name} at ${droplet.ip_address}
        """,
    )
    code = _apply_on(shared_sandbox, [str(playbook), "--json", "--report", str(tmp_path / "report.json")])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "report.json").read_text())
    by_name = {d["name"]: d for d in report["droplets"]}
    assert set(by_name) == {"test", "other"}
    assert by_name["test"]["steps"][2]["stdout_tail"] == f"hello from test at {shared_sandbox.address('test')}"
    assert by_name["other"]["steps"][2]["stdout_tail"] == f"hello from other at {shared_sandbox.address('other')}"
    assert by_name["test"]["ps"] and "CMD" in by_name["test"]["ps"][0]
    assert by_name["test"]["top"] and "%CPU" in by_name["test"]["top"][0]


def test_a_second_apply_changes_nothing(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    wheels = build_wheel(tmp_path / "wheels").parent
    build_wheel(wheels, name="tinybar")
    playbook = write(
        tmp_path / "site.yaml",
        f"""
        version: 1
        droplets: [test, other]
        vars:
          dir: idem
        steps:
          - apt: [git]
          - git: {{repo: changhiskhan/test, dest: "${{dir}}"}}
          - chdir: "${{dir}}"
          - run: {{cmd: "echo tinyfoo==1.0 > requirements.txt", creates: requirements.txt}}
          - pip_r:
              requirements: requirements.txt
              env: {{PIP_NO_INDEX: "1", PIP_FIND_LINKS: "{wheels}"}}
          - pip:
              packages: [tinybar]
              env: {{PIP_NO_INDEX: "1", PIP_FIND_LINKS: "{wheels}"}}
          - nohup: {{cmd: "python3 serve.py ${{droplet.ip_address}} 8200", name: idem-web, grace: 0.3}}
        report: {{ps: false, top: false}}
        """,
    )
    assert _apply_on(shared_sandbox, [str(playbook), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert _apply_on(shared_sandbox, [str(playbook), "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    for droplet in first["droplets"]:
        assert [s["status"] for s in droplet["steps"]][1:] == [
            "changed",
            "ok",
            "changed",
            "changed",
            "changed",
            "changed",
        ]
    for droplet in second["droplets"]:
        assert {s["status"] for s in droplet["steps"]} == {"ok"}, droplet["steps"]


def test_an_unknown_droplet_stops_the_run_before_any_ssh_connection(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        droplets: [test, nosuch]
        steps:
          - run: touch should-not-exist
        """,
    )
    assert _apply_on(shared_sandbox, [str(playbook)]) == 2
    err = capsys.readouterr().err
    assert "no droplet named 'nosuch'" in err
    assert not (shared_sandbox.home("test") / "should-not-exist").exists()


def test_an_invalid_playbook_exits_2_with_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = write(
        tmp_path / "bad.yaml",
        """
        version: 1
        droplets: [test]
        steps:
          - git: {dest: app}
        """,
    )
    assert main(["apply", str(playbook)]) == 2
    err = capsys.readouterr().err
    assert f"{playbook}:4:" in err
    assert "steps[0].git" in err
    assert "Traceback" not in err


def test_a_failing_step_fails_its_droplet_only_and_skips_the_rest(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        droplets: [test, other]
        steps:
          - run: '[ "${droplet.name}" = other ] || { echo broken on purpose >&2; exit 4; }'
          - run: echo after
        report: {ps: false, top: false}
        """,
    )
    assert _apply_on(shared_sandbox, [str(playbook), "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    runs = {d["name"]: d for d in report["droplets"]}
    assert [s["status"] for s in runs["test"]["steps"]] == ["failed", "skipped"]
    assert runs["test"]["steps"][0]["exited"] == 4
    assert "broken on purpose" in runs["test"]["steps"][0]["stderr_tail"]
    assert [s["status"] for s in runs["other"]["steps"]] == ["changed", "changed"]
    assert "broken on purpose" in captured.err  # the progress lines show the failure's tail


def test_plan_reports_what_would_change_and_changes_nothing(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        droplets: [test]
        steps:
          - run: {cmd: touch planned-file, creates: planned-file}
        report: {ps: false, top: false}
        """,
    )
    assert _apply_on(shared_sandbox, [str(playbook), "--json"], command="plan") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["droplets"][0]["steps"][0]["status"] == "would-change"
    assert not (shared_sandbox.home("test") / "planned-file").exists()


def test_validate_and_schema_need_no_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "examples" / "site.yaml")]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == json.loads((ROOT / "schemas" / "playbook.schema.json").read_text())


def _apply_on(sandbox: Sandbox, args: list[str], command: str = "apply") -> int:
    """Run the CLI against an already running sandbox, as `poseidon sandbox up` users do."""
    saved = dict(os.environ)
    os.environ.update(sandbox.environ)
    try:
        return main([command, *args])
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_a_step_that_hangs_is_stopped_at_its_timeout_with_its_processes(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        droplets: [test]
        steps:
          - run: {cmd: "sleep 3131 & sleep 3132", timeout: 1}
        report: {ps: true, top: false}
        """,
    )
    assert _apply_on(shared_sandbox, [str(playbook), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    step = report["droplets"][0]["steps"][0]
    assert step["status"] == "failed"
    assert step["exited"] == 124
    assert "timed out after 1 s" in step["stderr_tail"]
    # None of the droplet's processes is the step's (its own: a sandbox droplet's ps lists the whole machine).
    assert not [c for c in command_lines(shared_sandbox.pids("test")) if "sleep 313" in c]


def test_start_at_skips_earlier_steps_but_keeps_their_directory(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    (shared_sandbox.home("test") / "start-at").mkdir(exist_ok=True)
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        droplets: [test]
        steps:
          - chdir: start-at
          - run: {cmd: touch first, name: first}
          - run: {cmd: touch second, name: second}
        report: {ps: false, top: false}
        """,
    )
    assert _apply_on(shared_sandbox, [str(playbook), "--json", "--start-at", "second"]) == 0
    statuses = [s["status"] for s in json.loads(capsys.readouterr().out)["droplets"][0]["steps"]]
    assert statuses == ["ok", "skipped", "changed"]
    assert (shared_sandbox.home("test") / "start-at" / "second").exists()
    assert not (shared_sandbox.home("test") / "start-at" / "first").exists()
    assert _apply_on(shared_sandbox, [str(playbook), "--start-at", "nosuch"]) == 2
    assert "no step has that number, name or label (chdir start-at, first, second)" in capsys.readouterr().err
    # The label progress shows is accepted too.
    assert _apply_on(shared_sandbox, [str(playbook), "--json", "--start-at", "chdir start-at"]) == 0
    statuses = [s["status"] for s in json.loads(capsys.readouterr().out)["droplets"][0]["steps"]]
    assert statuses == ["ok", "changed", "changed"]


def test_an_unwritable_report_path_fails_before_any_change(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        droplets: [test]
        steps:
          - run: touch report-guarded
        """,
    )
    assert _apply_on(shared_sandbox, [str(playbook), "--report", str(tmp_path / "no" / "such" / "dir.json")]) == 2
    assert "--report" in capsys.readouterr().err
    assert not (shared_sandbox.home("test") / "report-guarded").exists()


def test_nohup_restart_replaces_the_running_process(shared_sandbox: Sandbox) -> None:
    import poseidon.api as po

    saved = dict(os.environ)
    os.environ.update(shared_sandbox.environ)
    try:
        # Ready once its sleep runs in its group: the step ends on that, not on some time passing.
        ready = {"cmd": "ps -o args= -g $(cat .poseidon/stubborn.pid) | grep -qx 'sleep 300'"}
        with po.connect().droplets.by_name("test").connect() as ssh:
            ssh.nohup("trap '' TERM; sleep 300", name="stubborn", ready=ready)
            first = ssh.wait("cat .poseidon/stubborn.pid").strip()
            again = ssh.nohup("trap '' TERM; sleep 300", name="stubborn", ready=ready, restart=True)
            second = ssh.wait("cat .poseidon/stubborn.pid").strip()
            assert again.changed
            assert first != second
            # No process of the first group is left (a zombie waiting for init to reap it does not count).
            assert ssh.wait(f"ps -o stat= -g {first} | grep -v '^Z' || true") == ""
            # The new group: the wrapper poseidon signals, and the command (which ignores TERM) under it.
            assert "sleep 300" in ssh.wait(f"ps -o args= -g {second}").splitlines()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_plan_after_changing_one_step_shows_exactly_that_step_on_every_droplet(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    text = """
        version: 1
        droplets: [test, other]
        steps:
          - git: {repo: changhiskhan/test, dest: plan-one}
          - chdir: plan-one
          - run: {cmd: touch built, creates: built}
          - nohup: {cmd: "sleep 401", name: plan-one, grace: 0.1}
        report: {ps: false, top: false}
        """
    playbook = write(tmp_path / "site.yaml", text)
    assert _apply_on(shared_sandbox, [str(playbook)]) == 0
    write(playbook, text.replace("sleep 401", "sleep 402"))
    capsys.readouterr()
    assert _apply_on(shared_sandbox, [str(playbook), "--json"], command="plan") == 0
    for droplet in json.loads(capsys.readouterr().out)["droplets"]:
        assert [s["status"] for s in droplet["steps"]] == ["ok", "ok", "ok", "would-change"]


def test_plan_on_fresh_droplets_predicts_the_steps_that_depend_on_earlier_changes(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        droplets: [test]
        steps:
          - git: {repo: changhiskhan/test, dest: plan-fresh}
          - chdir: plan-fresh
          - run: {cmd: touch built, creates: built}
        report: {ps: false, top: false}
        """,
    )
    assert _apply_on(shared_sandbox, [str(playbook), "--json"], command="plan") == 0
    steps = json.loads(capsys.readouterr().out)["droplets"][0]["steps"]
    assert [s["status"] for s in steps] == ["would-change"] * 3
    assert steps[1]["reason"] == steps[2]["reason"] == "after the changes above (not checked)"
    assert not (shared_sandbox.home("test") / "plan-fresh").exists()


def test_secret_values_are_masked_in_progress_reports_and_snapshots(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_PASSWORD", "hunter2-from-env")
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        droplets: [test]
        vars:
          password: {secret: true, env: APP_PASSWORD}
          api_key: {secret: true, value: written-in-the-playbook}
          plain: visible-value
        steps:
          - run: echo "pw=${password} key=${api_key} plain=${plain}"
          - nohup: {cmd: "sh -c 'sleep 600' \\"holds ${api_key}\\"", name: secret-sleeper, grace: 0.1}
          - run: test written-in-the-playbook  # the secret's value written as it is: its label is masked
          - run: echo "${password}" >&2; exit 3
          - run: echo written-in-the-playbook  # never runs: its label, skipped, masked too
        report: {ps: true, top: false}
        """,
    )
    report_file = tmp_path / "report.json"
    assert _apply_on(shared_sandbox, [str(playbook), "--report", str(report_file)]) == 1
    captured = capsys.readouterr()
    report = report_file.read_text()
    for text in (captured.out, captured.err, report):
        assert "hunter2-from-env" not in text
        assert "written-in-the-playbook" not in text
    steps = json.loads(report)["droplets"][0]["steps"]
    assert steps[0]["stdout_tail"] == "pw=*** key=*** plain=visible-value"
    assert steps[2]["label"] == "run test ***" and steps[4]["label"] == "run echo ***"
    assert steps[3]["stderr_tail"] == "***"
    # A command that puts a secret in an argv itself: the process list, masked too.
    assert "sh -c sleep 600 holds ***" in report


def test_an_unset_secret_variable_stops_the_run_before_it_starts(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = write(
        tmp_path / "site.yaml",
        """
        version: 1
        droplets: [test]
        vars:
          password: {secret: true, env: POSEIDON_TEST_UNSET_SECRET}
        steps:
          - run: touch never-made
        """,
    )
    assert _apply_on(shared_sandbox, [str(playbook)]) == 2
    assert "environment variables that are not set: POSEIDON_TEST_UNSET_SECRET" in capsys.readouterr().err
    assert not (shared_sandbox.home("test") / "never-made").exists()


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_a_plan_leaves_every_file_of_the_droplet_as_it_was(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    wheels = build_wheel(tmp_path / "wheels").parent
    text = f"""
        version: 1
        droplets: [other]
        steps:
          - git: {{repo: changhiskhan/test, dest: untouched}}
          - chdir: untouched
          - run: {{cmd: "echo tinyfoo > requirements.txt", creates: requirements.txt}}
          - pip_r: {{requirements: requirements.txt, env: {{PIP_NO_INDEX: "1", PIP_FIND_LINKS: "{wheels}"}}}}
          - nohup: {{cmd: "sleep 500", name: untouched, grace: 0.1}}
        report: {{ps: false, top: false}}
        """
    playbook = write(tmp_path / "site.yaml", text)
    assert _apply_on(shared_sandbox, [str(playbook)]) == 0
    write(playbook, text.replace("sleep 500", "sleep 501").replace("tinyfoo >", "tinyfoo==1.0 >"))
    home = shared_sandbox.home("other")
    before = _tree(home)
    capsys.readouterr()
    assert _apply_on(shared_sandbox, [str(playbook), "--json"], command="plan") == 0
    statuses = [s["status"] for s in json.loads(capsys.readouterr().out)["droplets"][0]["steps"]]
    assert statuses == ["ok", "ok", "ok", "ok", "would-change"]
    assert _tree(home) == before


def test_limit_runs_only_the_named_droplets(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = write(
        tmp_path / "site.yaml",
        "version: 1\ndroplets: [test, other]\nsteps: [{run: echo hi}]\nreport: {ps: false, top: false}\n",
    )
    assert _apply_on(shared_sandbox, [str(playbook), "--json", "--limit", "other"]) == 0
    assert [d["name"] for d in json.loads(capsys.readouterr().out)["droplets"]] == ["other"]
    assert _apply_on(shared_sandbox, [str(playbook), "--limit", "nosuch"]) == 2
    assert "--limit nosuch: no droplet of the playbook matches\n" in capsys.readouterr().err
    assert _apply_on(shared_sandbox, [str(playbook), "--limit", "othr"]) == 2
    assert "--limit othr: no droplet of the playbook matches: did you mean 'other'?" in capsys.readouterr().err
    # Shell-style patterns, as a shell would glob them.
    assert _apply_on(shared_sandbox, [str(playbook), "--json", "--limit", "o*"]) == 0
    assert [d["name"] for d in json.loads(capsys.readouterr().out)["droplets"]] == ["other"]
    assert _apply_on(shared_sandbox, [str(playbook), "--json", "--limit", "[ot]*,test"]) == 0
    assert [d["name"] for d in json.loads(capsys.readouterr().out)["droplets"]] == ["test", "other"]
