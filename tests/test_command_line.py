"""The command line as people use it: into pipes and files, with typos, on a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from poseidon.sandbox import Sandbox
from support.sandboxes import PATIENCE

ROOT = Path(__file__).parent.parent


def poseidon(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The real command, its output into pipes (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "poseidon.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=PATIENCE * 2,
    )


def playbook(folder: Path, text: str) -> Path:
    path = folder / "site.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.mark.parametrize("args", [["schema"], ["--help"], ["validate", "examples/site.yaml"]])
def test_a_reader_that_goes_away_ends_the_command_quietly_with_its_own_status(args: list[str]) -> None:
    """``poseidon schema | head``: the reader closes the pipe before poseidon writes."""
    process = subprocess.Popen(
        [sys.executable, "-m", "poseidon.cli", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=PATIENCE) == 0
    assert stderr == b""


def test_a_failed_apply_into_a_closed_pipe_still_exits_1(tmp_path: Path, sandbox_env: Sandbox) -> None:
    path = playbook(
        tmp_path,
        """
        version: 1
        droplets: [test]
        steps:
          - run: exit 7
        """,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "poseidon.cli", "apply", str(path), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=PATIENCE) == 1, stderr
    assert "BrokenPipe" not in stderr and "unexpected" not in stderr


def test_version() -> None:
    from importlib.metadata import version

    shown = poseidon("--version")
    assert shown.returncode == 0
    assert shown.stdout == f"poseidon {version('poseidon')}\n"


@pytest.mark.parametrize("forks", ["0", "-1", "many"])
def test_forks_below_one_or_not_a_number_is_a_usage_error(forks: str) -> None:
    refused = poseidon("apply", "examples/site.yaml", "--forks", forks)
    assert refused.returncode == 2
    assert "argument --forks" in refused.stderr and refused.stdout == ""


def test_validate_counts_in_words_that_agree(tmp_path: Path) -> None:
    path = playbook(tmp_path, "version: 1\ndroplets: [web]\nsteps:\n  - run: 'true'\n")
    assert poseidon("validate", str(path)).stdout == f"{path}: valid (1 droplet entry, 1 step)\n"


def test_piped_output_is_never_cut_and_labels_read_as_the_step_runs(tmp_path: Path, sandbox_env: Sandbox) -> None:
    """Off a terminal nothing is cut or wrapped: progress, the summary, the JSON label."""
    long = "x" * 150
    path = playbook(
        tmp_path,
        f"""
        version: 1
        droplets: [test]
        vars:
          folder: work-{long}
        steps:
          - run: mkdir -p ${{folder}}
          - chdir: ${{folder}}
          - nohup: {{cmd: sleep 300, name: sleeper, grace: 0.1}}
        """,
    )
    shown = poseidon("apply", str(path), "--report", str(tmp_path / "report.json"))
    assert shown.returncode == 0, shown.stderr
    assert "…" not in shown.stdout
    assert f"chdir work-{long}" in shown.stdout, "the label with its variable substituted, whole"
    assert "nohup sleeper" in shown.stdout, "a nohup step's label says its kind"
    labels = [s["label"] for s in json.loads((tmp_path / "report.json").read_text())["droplets"][0]["steps"]]
    assert labels == [f"run mkdir -p work-{long}", f"chdir work-{long}", "nohup sleeper"]


def test_a_failure_shows_the_tail_of_stdout_and_of_stderr(tmp_path: Path, sandbox_env: Sandbox) -> None:
    path = playbook(
        tmp_path,
        """
        version: 1
        droplets: [test]
        steps:
          - run: 'echo "compiling the thing"; echo "error: it broke" >&2; exit 4'
        """,
    )
    shown = poseidon("apply", str(path))
    assert shown.returncode == 1
    summary = shown.stdout[shown.stdout.index("failed, exit 4:") :]
    assert summary.index("stdout:") < summary.index("compiling the thing") < summary.index("stderr:")
    assert summary.index("stderr:") < summary.index("error: it broke")


def test_top_shows_the_busiest_first_within_a_row_limit_and_json_has_every_row(sandbox_env: Sandbox) -> None:
    shown = poseidon("top", "test")
    assert shown.returncode == 0, shown.stderr
    title, header, *rows = shown.stdout.splitlines()
    assert title.startswith("test: top (20 of ") and title.endswith("rows by %CPU; --json has them all)")
    assert header.split() == ["%CPU", "%MEM", "USER", "COMMAND"]
    cpu = [float(row.split()[0]) for row in rows]
    assert len(cpu) == 20 and cpu == sorted(cpu, reverse=True)
    every = json.loads(poseidon("top", "test", "--json").stdout)
    assert len(every) > 20 and {"%CPU", "%MEM", "USER", "COMMAND"} == set(every[0])
    assert len(poseidon("top", "test", "--all").stdout.splitlines()) > 22


def test_ps_lines_are_whole_into_a_pipe(sandbox_env: Sandbox) -> None:
    shown = poseidon("ps", "test", "--all")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert "…" not in shown.stdout and not any(line.startswith(" " * 20) for line in shown.stdout.splitlines())


def test_droplets_into_a_pipe_keep_every_address_whole(sandbox_env: Sandbox) -> None:
    shown = poseidon("droplets")
    assert shown.returncode == 0, shown.stderr
    for name in ("test", "other"):
        assert sandbox_env.address(name) in shown.stdout
    assert "…" not in shown.stdout


@pytest.mark.sandbox
def test_ps_on_a_kept_sandbox_named_by_its_playbook(tmp_path: Path) -> None:
    path = playbook(tmp_path, "version: 1\ndroplets: [solo]\nsteps:\n  - run: 'true'\n")
    try:
        shown = poseidon("top", "solo", "--sandbox", str(path), "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)[0].keys() == {"%CPU", "%MEM", "USER", "COMMAND"}
        assert "sandbox: 1 droplet on " in shown.stderr
    finally:
        poseidon("sandbox", "reset", "--playbook", str(path))


@pytest.mark.sandbox
def test_quiet_prints_no_sandbox_banner(tmp_path: Path) -> None:
    path = playbook(tmp_path, "version: 1\ndroplets: [solo]\nsteps:\n  - run: 'true'\n")
    try:
        shown = poseidon("apply", str(path), "--sandbox", "--quiet")
        assert shown.returncode == 0, shown.stderr
        assert "sandbox:" not in shown.stdout + shown.stderr
        assert shown.stdout.rstrip().splitlines()[-1].endswith("all droplets succeeded")
        # A sandbox's runs are logged in its own folder, never beside real droplets' runs.
        assert len(list((tmp_path / ".poseidon" / "sandbox" / "site" / "runs").glob("*.jsonl"))) == 1
        assert not (tmp_path / ".poseidon" / "runs").exists()
    finally:
        poseidon("sandbox", "reset", "--playbook", str(path))


def test_plan_refuses_a_create_the_api_would_refuse_naming_each_field_and_the_choices(
    tmp_path: Path, sandbox_env: Sandbox
) -> None:
    path = playbook(
        tmp_path,
        """
        version: 1
        name: mistyped
        droplets:
          - name: web-1
            create: {region: nyc9, size: s-1vcpu-1g, image: ubuntu-24-04-x46, ssh_keys: [laptop]}
        steps:
          - run: 'true'
        """,
    )
    for command in ("plan", "apply"):
        shown = poseidon(command, str(path))
        assert shown.returncode == 2, shown.stderr
        assert shown.stderr.splitlines() == [
            f"{path}:5:22: droplets[0].create.region: 'nyc9' is not a region: did you mean 'nyc3' or 'nyc2' or 'nyc1'?",
            f"{path}:5:34: droplets[0].create.size: 's-1vcpu-1g' is not a droplet size:"
            " did you mean 's-1vcpu-1gb' or 's-1vcpu-2gb' or 's-8vcpu-16gb'?",
            f"{path}:5:53: droplets[0].create.image: 'ubuntu-24-04-x46' is not an image slug:"
            " did you mean 'ubuntu-24-04-x64' or 'ubuntu-22-04-x64'?",
            f"{path}:5:81: droplets[0].create.ssh_keys: no SSH key is named 'laptop'; give its id or fingerprint",
        ]
    assert "web-1" not in poseidon("droplets").stdout, "nothing was created"


def test_a_request_the_api_finds_invalid_is_exit_2(tmp_path: Path, sandbox_env: Sandbox) -> None:
    path = playbook(
        tmp_path,
        """
        version: 1
        name: refused-create
        droplets:
          - name: refused-1
            create: {region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}
        steps:
          - run: 'true'
        """,
    )
    sandbox_env.emulator.inject(422, method="POST", path="/v2/droplets")
    shown = poseidon("apply", str(path))
    assert shown.returncode == 2, shown.stderr
    assert "422" in shown.stderr


def test_a_plan_reads_as_a_plan_and_its_detailed_exit_code_says_whether_changes_are_pending(
    tmp_path: Path, sandbox_env: Sandbox
) -> None:
    checks_only = playbook(tmp_path, "version: 1\ndroplets: [test]\nsteps:\n  - run: {cmd: 'true', changes: false}\n")
    shown = poseidon("plan", str(checks_only), "--detailed-exitcode")
    assert shown.returncode == 0, shown.stderr
    assert "(plan)" in shown.stdout and "(check)" not in shown.stdout
    assert shown.stdout.rstrip().splitlines()[-1].startswith("plan for 1 droplet(s): nothing to change, 1 in place (")
    assert "busiest" not in shown.stdout and "succeeded" not in shown.stdout, "no snapshots, no run verdict"

    pending = playbook(
        tmp_path,
        """
        version: 1
        name: pending
        droplets:
          - test
          - name: planned-1
            create: {region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}
        steps:
          - run: {cmd: 'true', changes: false}
          - run: touch planned-only
        """,
    )
    shown = poseidon("plan", str(pending), "--detailed-exitcode", "--report", str(tmp_path / "plan.json"))
    assert shown.returncode == 2, shown.stderr
    last = shown.stdout.rstrip().splitlines()[-1]
    assert last.startswith("plan for 2 droplet(s): 1 droplet(s) to create, 3 step(s) to change, 1 in place (")
    row = next(line for line in shown.stdout.splitlines() if line.startswith("| 1 |"))
    assert [cell.strip() for cell in row.split("|")[3:5]] == ["ok", "would-change"], "no timings in a plan's cells"
    droplets = {d["name"]: d for d in json.loads((tmp_path / "plan.json").read_text())["droplets"]}
    assert droplets["planned-1"]["to_create"] and not droplets["planned-1"]["created"]
    assert not droplets["test"]["to_create"] and droplets["test"]["ps"] is None
    assert not (sandbox_env.home("test") / "planned-only").exists()
    assert poseidon("plan", str(pending)).returncode == 0, "without the flag, a plan that ran is 0"

    (tmp_path / "broken.yaml").write_text("version: 1\ndroplets: [test]\nsteps: [{chdri: x}]\n")
    assert poseidon("plan", str(tmp_path / "broken.yaml"), "--detailed-exitcode").returncode == 1


def test_make_stops_at_once_naming_the_debian_packages_to_install() -> None:
    """`make demo` and `make test` check the system first; not root, they say the one command to run."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp())  # beside pytest's own folders, which only root may enter
    folder.chmod(0o755)
    makefile = folder / "Makefile"
    shutil.copy(ROOT / "Makefile", makefile)
    makefile.chmod(0o644)
    command = ["make", "-s", "-f", str(makefile), "system", "DEBIAN_PACKAGES=git poseidon-no-such-package"]
    if os.geteuid() == 0:  # as root it would install: ask as an unprivileged user instead
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    try:
        shown = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=PATIENCE)
    finally:
        shutil.rmtree(folder)
    assert shown.returncode != 0
    assert shown.stderr.splitlines()[:2] == [
        "poseidon's sandbox needs: poseidon-no-such-package. Install them first:",
        "    sudo apt-get install -y poseidon-no-such-package",
    ]
    present = subprocess.run(
        ["make", "-s", "-f", str(ROOT / "Makefile"), "system", "DEBIAN_PACKAGES=git"], capture_output=True, text=True
    )
    assert present.returncode == 0 and present.stdout == present.stderr == "", "installed: nothing to do, nothing said"


def test_brackets_in_labels_and_names_are_shown_as_they_are(tmp_path: Path, sandbox_env: Sandbox) -> None:
    """rich reads [bold] or [/] in a plain string as markup: a value in a label must not restyle or crash the report."""
    path = playbook(
        tmp_path,
        """
        version: 1
        droplets: [test]
        vars:
          dir: "/srv/[/]app [bold]x[/bold]"
          fake: "x\\n1 droplet(s), 9 ok in 0.1s: all droplets succeeded"
        steps:
          - run: {cmd: "echo ${dir}", changes: false}
          - run: {cmd: "echo ${fake}", changes: false}
        """,
    )
    shown = poseidon("apply", str(path))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("run echo /srv/[/]app [bold]x[/bold]") >= 2, shown.stdout  # progress and table
    assert "unexpected" not in shown.stderr
    verdicts = [line for line in shown.stdout.splitlines() if line.startswith("1 droplet(s),")]
    assert verdicts == ["1 droplet(s), 2 ok in " + verdicts[-1].split(" ok in ")[1]], "a value cannot fake a line"


def test_a_usage_error_with_detailed_exitcode_is_1_and_an_empty_limit_is_refused(tmp_path: Path) -> None:
    """2 means 'changes pending' with --detailed-exitcode; an empty --limit (an unset variable) is no fleet-wide run."""
    assert poseidon("plan", "examples/site.yaml", "--detailed-exitcode", "--forks", "0").returncode == 1
    empty = poseidon("apply", "examples/site.yaml", "--limit", "")
    assert empty.returncode == 2 and "--limit names no droplet" in empty.stderr


@pytest.mark.parametrize("start_at", ["²", ""])
def test_start_at_a_unicode_digit_or_nothing_is_a_usage_error(start_at: str) -> None:
    refused = poseidon("apply", "examples/site.yaml", "--start-at", start_at)
    assert refused.returncode == 2 and "--start-at" in refused.stderr and "unexpected" not in refused.stderr


def test_a_digit_that_is_not_a_decimal_is_no_number_anywhere(sandbox_env: Sandbox) -> None:
    """'²' passes str.isdigit() but int() refuses it: as a shard, a key or a droplet's output, it is text."""
    import poseidon.api as po
    from poseidon.errors import ResolveError

    refused = poseidon("apply", "examples/site.yaml", "--shard", "²/3")
    assert refused.returncode == 2 and "--shard" in refused.stderr and "unexpected" not in refused.stderr
    with pytest.raises(ResolveError, match="no SSH key is named '²'"):
        po.connect().droplets.create(
            "never", region="nyc3", size="s-1vcpu-1gb", image="ubuntu-24-04-x64", ssh_keys=["²"]
        )


def test_report_ps_and_top_false_takes_no_snapshot(tmp_path: Path, sandbox_env: Sandbox) -> None:
    path = playbook(
        tmp_path, "version: 1\ndroplets: [test]\nsteps:\n  - run: 'true'\nreport: {ps: false, top: false}\n"
    )
    shown = poseidon("apply", str(path), "--json")
    assert shown.returncode == 0, shown.stderr
    (droplet,) = json.loads(shown.stdout)["droplets"]
    assert droplet["ps"] is None and droplet["top"] is None and droplet["started_processes"] is None
