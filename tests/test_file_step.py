"""The file step: content, a file copied byte for byte, a template, put in place atomically.

Validation runs here; the rest over real SSH on the light sandbox (what needs other
users, owners and systemd is in test_machines.py).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

import poseidon.api as po
from poseidon import executor, spec, steps
from poseidon.errors import SpecError
from poseidon.results import RunResult
from poseidon.sandbox import Sandbox
from poseidon.settings import Settings
from support.sandboxes import command_lines_seen


def problems(text: str, folder: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        spec.loads(textwrap.dedent(text), str(folder / "site.yaml"))
    return [str(problem) for problem in caught.value.problems]


def test_validate_names_each_unusable_file_and_each_template_problem_where_it_is(tmp_path: Path) -> None:
    (tmp_path / "app.tmpl").write_text("port = ${port}\nname = ${nope}\n  who = ${droplet.colour}\n")
    (tmp_path / "big.bin").write_bytes(b"x" * (spec.MAX_FILE_BYTES + 1))
    (tmp_path / "latin1.tmpl").write_bytes(b"caf\xe9\n")
    (tmp_path / "folder").mkdir()
    found = problems(
        """\
        version: 1
        droplets: [web]
        vars: {port: 5000}
        steps:
          - file: {path: a, template: app.tmpl, mode: 0644}
          - file: {path: b, src: missing.bin}
          - file: {path: c, src: big.bin}
          - file: {path: d, template: latin1.tmpl}
          - file: {path: e, src: folder}
          - file: {path: f, content: x, src: big.bin}
          - file: g
          - file: {path: h, content: x, mode: "999"}
        """,
        tmp_path,
    )
    yaml = str(tmp_path / "site.yaml")
    template = str(tmp_path / "app.tmpl")  # not below the current folder: shown whole
    assert any(p.startswith(f"{yaml}:5:") and "the mode is text, such as '0644'" in p for p in found)
    assert any(p.startswith(f"{yaml}:6:") and "missing.bin: No such file or directory" in p for p in found)
    assert any(p.startswith(f"{yaml}:7:") and "is over 1,048,576 bytes" in p for p in found)
    assert any(p.startswith(f"{yaml}:8:") and "is no UTF-8 text (byte 0xe9 on line 1)" in p for p in found)
    assert any(p.startswith(f"{yaml}:9:") and "folder" in p for p in found)
    assert any(p.startswith(f"{yaml}:10:") and "exactly one of content:, src: or template:" in p for p in found)
    assert any(p.startswith(f"{yaml}:11:") and "file takes a mapping of options" in p for p in found)
    assert any(p.startswith(f"{yaml}:12:") and "'999' is not a file mode" in p for p in found)
    # A template's problems are at their own line and column, in the template.
    assert f"{template}:2:8: steps[0].file.template: undefined variable 'nope'" in found
    assert any(p.startswith(f"{template}:3:9: ") and "unknown droplet attribute 'colour'" in p for p in found)
    assert any(p.startswith(f"{yaml}:10:") and "big.bin is over" in p for p in found)  # told at once, too
    assert len(found) == 11, found


def test_a_template_reads_the_environment_as_steps_do(tmp_path: Path) -> None:
    (tmp_path / "app.tmpl").write_text("token = ${env:APP_TOKEN}\n")
    playbook = spec.loads(
        "version: 1\ndroplets: [web]\nsteps: [{file: {path: a, template: app.tmpl}}]\n", str(tmp_path / "site.yaml")
    )
    assert playbook.env_names() == ["APP_TOKEN"]  # so a run that lacks it says so before it starts


# -- on a droplet ---------------------------------------------------------------------------


def apply(sandbox: Sandbox, folder: Path, text: str, *, mode: str = "apply") -> RunResult:
    (folder / "site.yaml").write_text(textwrap.dedent(text))
    playbook = spec.load(folder / "site.yaml")
    options = executor.RunOptions(mode="check" if mode == "check" else "apply")
    return executor.apply(playbook, settings=Settings.from_environ(sandbox.environ), options=options)


def outcomes(result: RunResult) -> list[tuple[str, str]]:
    return [(step.status, step.reason or step.stderr) for step in result.droplets[0].steps]


@pytest.mark.sandbox
def test_content_src_and_template_arrive_as_written_and_a_second_run_is_ok(
    shared_sandbox: Sandbox, tmp_path: Path
) -> None:
    home = shared_sandbox.home("other")
    hostile = "$(touch pwned) `touch pwned` 'q' \"d\" \\ ;"
    blob = bytes(range(256)) * 40 + b"\x00\r\n"
    (tmp_path / "blob.bin").write_bytes(blob)
    (tmp_path / "app.tmpl").write_text("greeting = ${greeting}\nhost = ${droplet.name}\nliteral = $${kept}\n")
    playbook = """\
        version: 1
        droplets: [other]
        vars: {greeting: "HOSTILE"}
        steps:
          - file: {path: files-test/conf/app.ini, template: app.tmpl, mode: "0600"}
          - file: {path: "files-test/a b/blob.bin", src: blob.bin}
          - file: {path: files-test/inline.txt, content: "g=${greeting}\\n"}
        report: {ps: false, top: false}
        """.replace("HOSTILE", hostile.replace("\\", "\\\\").replace('"', '\\"'))
    first = apply(shared_sandbox, tmp_path, playbook)
    assert [s for s, _ in outcomes(first)] == ["changed"] * 3, outcomes(first)
    folder = home / "files-test"
    assert (folder / "conf" / "app.ini").read_text() == f"greeting = {hostile}\nhost = other\nliteral = ${{kept}}\n"
    assert (folder / "conf" / "app.ini").stat().st_mode & 0o777 == 0o600
    assert (folder / "a b" / "blob.bin").read_bytes() == blob
    assert (folder / "a b" / "blob.bin").stat().st_mode & 0o777 == 0o644  # a new file's default
    assert (folder / "inline.txt").read_text() == f"g={hostile}\n"
    assert not list(home.rglob("pwned"))
    again = apply(shared_sandbox, tmp_path, playbook)
    assert [s for s, _ in outcomes(again)] == ["ok"] * 3, outcomes(again)
    # Nothing of ours is left beside the files.
    assert sorted(p.name for p in (folder / "conf").iterdir()) == ["app.ini"]


@pytest.mark.sandbox
def test_a_change_of_content_or_mode_is_planned_with_why_then_written(shared_sandbox: Sandbox, tmp_path: Path) -> None:
    target = shared_sandbox.home("other") / "files-change" / "app.ini"
    (tmp_path / "app.tmpl").write_text("v = 1\n")
    text = """\
        version: 1
        droplets: [other]
        steps:
          - file: {path: files-change/app.ini, template: app.tmpl, mode: "0640"}
        report: {ps: false, top: false}
        """
    assert outcomes(apply(shared_sandbox, tmp_path, text))[0][0] == "changed"
    (tmp_path / "app.tmpl").write_text("v = 2\n")
    assert outcomes(apply(shared_sandbox, tmp_path, text, mode="check")) == [("would-change", "its content differs")]
    assert target.read_text() == "v = 1\n"  # a plan changes nothing
    assert outcomes(apply(shared_sandbox, tmp_path, text))[0][0] == "changed"
    assert target.read_text() == "v = 2\n"
    target.chmod(0o666)
    assert outcomes(apply(shared_sandbox, tmp_path, text, mode="check")) == [
        ("would-change", "its mode is 666, not 640")
    ]
    assert outcomes(apply(shared_sandbox, tmp_path, text))[0][0] == "changed"
    assert target.stat().st_mode & 0o777 == 0o640


@pytest.mark.sandbox
def test_an_existing_file_keeps_its_mode_when_none_is_given(shared_sandbox: Sandbox) -> None:
    target = shared_sandbox.home("other") / "files-keep.sh"
    target.write_text("old\n")
    target.chmod(0o750)
    with po.connect(token=shared_sandbox.token, settings=Settings.from_environ(shared_sandbox.environ)) as client:
        with client.droplets.by_name("other").connect() as ssh:
            assert ssh.file("files-keep.sh", "new\n").status == "changed"
            assert ssh.file("files-keep.sh", "new\n").status == "ok"
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o750


@pytest.mark.sandbox
def test_a_link_planted_at_the_path_is_replaced_never_written_through(shared_sandbox: Sandbox, tmp_path: Path) -> None:
    home = shared_sandbox.home("other")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = home / "files-link.conf"
    link.unlink(missing_ok=True)
    link.symlink_to(victim)
    with po.connect(token=shared_sandbox.token, settings=Settings.from_environ(shared_sandbox.environ)) as client:
        with client.droplets.by_name("other").connect() as ssh:
            outcome = ssh.file("files-link.conf", "precious\n")  # even the same content: a link is no file
    assert (outcome.status, outcome.reason) == ("changed", "it is a symbolic link, to be replaced by the file")
    assert not link.is_symlink() and link.read_text() == "precious\n"
    assert victim.read_text() == "precious\n" and victim.stat().st_nlink == 1


@pytest.mark.sandbox
def test_a_directory_at_the_path_fails_the_step_saying_so(shared_sandbox: Sandbox) -> None:
    (shared_sandbox.home("other") / "files-dir").mkdir(exist_ok=True)
    with po.connect(token=shared_sandbox.token, settings=Settings.from_environ(shared_sandbox.environ)) as client:
        with client.droplets.by_name("other").connect() as ssh:
            outcome = ssh.file("files-dir", "x", raise_on_error=False)
    assert outcome.status == "failed"
    assert "poseidon: files-dir is a directory" in outcome.stderr


@pytest.mark.sandbox
def test_secret_content_never_shows_in_a_command_line_nor_in_the_report(
    shared_sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-" + os.urandom(8).hex()
    monkeypatch.setenv("APP_PASSWORD", secret)
    (tmp_path / "db.tmpl").write_text("password = ${password}\n" + "padding\n" * 20000)
    text = """\
        version: 1
        droplets: [other]
        vars: {password: {secret: true, env: APP_PASSWORD}}
        steps:
          - file: {path: files-secret/db.ini, template: db.tmpl, mode: "0600"}
          - file: {path: files-secret/inline.ini, content: "password = ${password}\\n"}
          - run: cat files-secret/inline.ini
        report: {ps: false, top: false}
        """
    with command_lines_seen() as seen:
        result = apply(shared_sandbox, tmp_path, text)
    assert [s.status for s in result.droplets[0].steps] == ["changed"] * 3
    assert (shared_sandbox.home("other") / "files-secret" / "inline.ini").read_text() == f"password = {secret}\n"
    assert b"sh\x00-s\x00" in seen, "the watcher never saw the session's shell: it watched no step"
    assert not [line for line in seen if secret.encode() in line]
    assert result.droplets[0].steps[2].stdout == "password = ***"


@pytest.mark.sandbox
def test_content_over_the_limit_once_substituted_fails_the_step_before_it_is_sent(
    shared_sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIG", "x" * 700_000)
    (tmp_path / "big.tmpl").write_text("${env:BIG}${env:BIG}")
    text = """\
        version: 1
        droplets: [other]
        steps:
          - file: {path: files-big.txt, template: big.tmpl}
        report: {ps: false, top: false}
        """
    step = apply(shared_sandbox, tmp_path, text).droplets[0].steps[0]
    assert step.status == "failed"
    assert "over 1,048,576" in step.stderr
    assert not (shared_sandbox.home("other") / "files-big.txt").exists()


def test_the_script_carries_the_content_only_as_data() -> None:
    step = steps.build("file", path="~/a b", content="$(reboot)")
    script = steps.file(step, steps.StepContext(), b"$(reboot)")  # type: ignore[arg-type]
    assert "reboot" not in script.apply + script.check  # base64, decoded on the droplet
    assert script.secret and not script.needs_root
    assert steps.file(steps.build("file", path="a", content="", owner="app"), steps.StepContext(), b"").needs_root  # type: ignore[arg-type]


def test_a_fifo_given_as_src_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    found = problems("version: 1\ndroplets: [web]\nsteps: [{file: {path: a, src: pipe}}]\n", tmp_path)
    assert len(found) == 1 and found[0].endswith("pipe is not a regular file"), found


@pytest.mark.sandbox
def test_the_library_says_what_a_template_lacks_in_one_line(shared_sandbox: Sandbox, tmp_path: Path) -> None:
    from poseidon.errors import UsageError

    (tmp_path / "t.tmpl").write_text("name = ${name}\n")
    with po.connect(token=shared_sandbox.token, settings=Settings.from_environ(shared_sandbox.environ)) as client:
        with client.droplets.by_name("other").connect() as ssh:
            with pytest.raises(UsageError, match=r"has no value in values="):
                ssh.file("files-lib.ini", template=str(tmp_path / "t.tmpl"))
            with pytest.raises(UsageError, match=r"no-such\.bin: No such file"):
                ssh.file("files-lib.bin", src=str(tmp_path / "no-such.bin"))
            assert (
                ssh.file("files-lib.ini", template=str(tmp_path / "t.tmpl"), values={"name": "x"}).status == "changed"
            )
    assert (shared_sandbox.home("other") / "files-lib.ini").read_text() == "name = x\n"


@pytest.mark.sandbox
def test_status_passes_over_file_steps_whatever_their_values(
    shared_sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from poseidon import status

    monkeypatch.setenv("BIG", "x" * 700_000)
    (tmp_path / "site.yaml").write_text(
        "version: 1\ndroplets: [other]\nsteps:\n"
        "  - file: {path: files-status.txt, content: '${env:BIG}${env:BIG}'}\n"
        "  - nohup: {cmd: sleep 5, name: files-status}\n"
    )
    (found,) = status.status(spec.load(tmp_path / "site.yaml"), settings=Settings.from_environ(shared_sandbox.environ))
    assert (found.name, found.state) == ("files-status", "dead")  # never started: no error about the file step


@pytest.mark.sandbox
def test_status_and_destroy_need_no_file_a_file_step_takes(
    sandbox_env: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from poseidon.cli import main

    path = tmp_path / "site.yaml"
    path.write_text("version: 1\nname: gone\ndroplets: [other]\nsteps: [{file: {path: a, src: gone.bin}}]\n")
    assert main(["validate", str(path)]) == 2
    assert "gone.bin: No such file or directory" in capsys.readouterr().err
    assert main(["status", str(path)]) == 0, capsys.readouterr().err
    assert main(["destroy", str(path), "--check"]) == 0, capsys.readouterr().err


@pytest.mark.sandbox
def test_nothing_of_the_working_directory_runs_as_the_writer(shared_sandbox: Sandbox, tmp_path: Path) -> None:
    """An app's own secrets.py (or one planted there) is never imported by what writes the file."""
    folder = shared_sandbox.home("other") / "files-app"
    folder.mkdir(exist_ok=True)
    marker = folder / "imported"
    (folder / "secrets.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ntoken_hex = None\n")
    (folder / "base64.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    text = """\
        version: 1
        droplets: [other]
        steps:
          - chdir: files-app
          - file: {path: app.ini, content: "k = v\\n", mode: "0640"}
        report: {ps: false, top: false}
        """
    assert [s for s, _ in outcomes(apply(shared_sandbox, tmp_path, text))] == ["ok", "changed"]
    assert (folder / "app.ini").read_text() == "k = v\n"
    assert not marker.exists()
    assert [s for s, _ in outcomes(apply(shared_sandbox, tmp_path, text))] == ["ok", "ok"]


@pytest.mark.sandbox
def test_a_fifo_a_deep_path_and_a_folder_path_each_fail_in_one_line(shared_sandbox: Sandbox, tmp_path: Path) -> None:
    home = shared_sandbox.home("other")
    (home / "files-fifo").unlink(missing_ok=True)
    os.mkfifo(home / "files-fifo")
    deep = "/".join(["d"] * 210)
    with po.connect(token=shared_sandbox.token, settings=Settings.from_environ(shared_sandbox.environ)) as client:
        with client.droplets.by_name("other").connect() as ssh:
            fifo = ssh.file("files-fifo", "x", raise_on_error=False)
            too_deep = ssh.file(f"files-deep/{deep}/x", "x", raise_on_error=False)
    assert (fifo.status, fifo.stderr.strip()) == ("failed", "poseidon: files-fifo is not a regular file")
    assert too_deep.status == "failed" and too_deep.stderr.strip().endswith("are over 200 deep")
    assert len(too_deep.stderr.splitlines()) == 1
    found = problems("version: 1\ndroplets: [web]\nsteps: [{file: {path: conf/, content: x}}]\n", tmp_path)
    assert len(found) == 1 and "names a folder, not a file" in found[0]
    found = problems(
        'version: 1\ndroplets: [web]\nsteps: [{file: {path: a, content: x, owner: "4294967295"}}]\n', tmp_path
    )
    assert len(found) == 1 and "is no user or group id" in found[0]


def test_a_login_user_that_is_no_user_name_never_reaches_a_service_unit() -> None:
    """POSEIDON_SSH_USER is the default user of a service: it is written in the unit, so only a name passes."""
    from poseidon.shell import BindError

    step = steps.build("service", name="web", cmd="sleep 1")
    with pytest.raises(BindError, match="is no user name a unit can run as"):
        steps.script_for(step, steps.StepContext(user="app\nExecStartPre=/bin/touch /pwned"))
    assert "User=deploy\n" in steps.service_unit(step, "deploy")  # type: ignore[arg-type]
    steps.script_for(step, steps.StepContext(user="deploy"))
