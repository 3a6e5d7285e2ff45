"""The git step over real SSH: refs of every kind, updates, and a private repository's token."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

import poseidon.api as po
from poseidon import steps
from poseidon.cli import main
from poseidon.sandbox import Sandbox
from poseidon.sandbox.repos import build_bare_repo
from support.gitserver import private_git_server
from support.sandboxes import command_lines_seen

pytestmark = pytest.mark.sandbox

IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, **IDENTITY}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A repository: commit A tagged v1 (annotated), commit B on main, branch feature/main at A."""
    work = tmp_path_factory.mktemp("history")
    git("init", "-q", "-b", "main", cwd=work)
    (work / "version").write_text("A\n")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "A", cwd=work)
    first = git("rev-parse", "HEAD", cwd=work)
    git("tag", "-a", "v1", "-m", "release 1", cwd=work)
    git("branch", "feature/main", cwd=work)
    (work / "version").write_text("B\n")
    git("commit", "-qam", "B", cwd=work)
    second = git("rev-parse", "HEAD", cwd=work)
    bare = work.parent / "history.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=work.parent)
    return {"url": bare.as_uri(), "A": first, "B": second}


def run_git(ssh: object, **fields: object) -> str:
    outcome = ssh.run_step(steps.build("git", **fields), secrets={})  # type: ignore[attr-defined]
    assert outcome.status != "failed", outcome.stderr
    return str(outcome.status)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [("v1", "A"), ("main", "B"), ("feature/main", "A"), (None, "B"), ("short-A", "A")],
)
def test_a_ref_is_cloned_then_left_alone(
    ref: str | None, expected: str, history: dict[str, str], sandbox_env: Sandbox
) -> None:
    if ref == "short-A":
        ref = history["A"][:10]
    dest = f"refs-{(ref or 'head').replace('/', '-')}"
    with po.connect().droplets.by_name("other").connect() as ssh:
        assert run_git(ssh, repo=history["url"], dest=dest, ref=ref) == "changed"
        assert run_git(ssh, repo=history["url"], dest=dest, ref=ref) == "ok"
        assert ssh.wait(f"git -C {dest} rev-parse HEAD").strip() == history[expected]


def test_an_existing_clone_moves_to_a_new_ref_and_drops_local_edits(
    history: dict[str, str], sandbox_env: Sandbox
) -> None:
    with po.connect().droplets.by_name("other").connect() as ssh:
        assert run_git(ssh, repo=history["url"], dest="moving", ref="v1") == "changed"
        assert run_git(ssh, repo=history["url"], dest="moving", ref="main") == "changed"
        assert ssh.wait("git -C moving rev-parse HEAD").strip() == history["B"]
        assert ssh.wait("git -C moving rev-parse --abbrev-ref HEAD").strip() == "main"
        ssh.wait("echo edited > moving/version")
        assert run_git(ssh, repo=history["url"], dest="moving", ref="main") == "changed"
        assert ssh.wait("cat moving/version") == "B\n"
        assert run_git(ssh, repo=history["url"], dest="moving", ref=history["A"][:12]) == "changed"
        assert ssh.wait("git -C moving rev-parse HEAD").strip() == history["A"]


def test_an_unreachable_remote_fails_the_check_instead_of_passing_it(
    history: dict[str, str], sandbox_env: Sandbox, tmp_path: Path
) -> None:
    bare = tmp_path / "gone.git"
    subprocess.run(["git", "clone", "-q", "--bare", history["url"], str(bare)], check=True)
    with po.connect().droplets.by_name("other").connect() as ssh:
        assert run_git(ssh, repo=bare.as_uri(), dest="gone") == "changed"
        subprocess.run(["rm", "-rf", str(bare)], check=True)
        outcome = ssh.run_step(steps.build("git", repo=bare.as_uri(), dest="gone"), secrets={})
    assert outcome.status == "failed"
    assert "the check failed" in outcome.stderr


def _served(tmp_path: Path) -> Path:
    """A folder holding private.git, the tiny app's repository, for private_git_server."""
    served = tmp_path / "served"
    build_bare_repo(Path(__file__).parent / "apps" / "tiny", served / "private.git")
    return served


def _private_playbook(tmp_path: Path, url: str, dest: str) -> Path:
    """A playbook cloning ``url``/private.git into ``dest`` with the token in DEPLOY_TOKEN."""
    playbook = tmp_path / "private.yaml"
    playbook.write_text(
        textwrap.dedent(f"""
        version: 1
        droplets: [test]
        steps:
          - git: {{repo: "{url}/private.git", dest: {dest}, token_env: DEPLOY_TOKEN}}
        report: {{ps: false, top: false}}
    """)
    )
    return playbook


def test_a_private_repository_is_cloned_with_a_token_that_leaves_no_trace(
    tmp_path: Path, sandbox_env: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "ghp_" + "s3cr3t" * 6
    with private_git_server(_served(tmp_path), token) as (url, seen):
        playbook = _private_playbook(tmp_path, url, "private")
        report = tmp_path / "report.json"
        without = main(["apply", str(playbook), "--json"])
        assert without == 1  # no token: refused by the server, and git did not wait for a prompt
        capsys.readouterr()
        monkeypatch.setenv("DEPLOY_TOKEN", token)
        assert main(["apply", str(playbook), "--json", "--report", str(report)]) == 0
        first = capsys.readouterr()
        assert main(["apply", str(playbook), "--json"]) == 0
        second = capsys.readouterr()
    assert [d["steps"][0]["status"] for d in json.loads(first.out)["droplets"]] == ["changed"]
    assert [d["steps"][0]["status"] for d in json.loads(second.out)["droplets"]] == ["ok"]
    assert any(h.startswith("Basic ") for h in seen)
    home = sandbox_env.home("test")
    assert (home / "private" / "index.html").read_text() == "hello from tiny\n"
    for text in (first.out, first.err, second.out, second.err, report.read_text()):
        assert token not in text
    for path in home.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    # The askpass helper is a mktemp file of the droplet's (its TMPDIR, a folder of its own),
    # removed when the step ends.
    tmp = sandbox_env.tmpdir("test")
    with po.connect().droplets.by_name("test").connect() as ssh:
        made = Path(ssh.wait("mktemp").strip())
    assert made.parent == tmp
    made.unlink()
    leftovers = [p for p in tmp.rglob("*") if p.is_file() and b"POSEIDON_GIT_TOKEN" in p.read_bytes()]
    assert leftovers == []


def test_a_refused_token_fails_the_step_with_git_s_reason_and_the_token_in_no_record(
    tmp_path: Path, sandbox_env: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "ghp_" + "wr0ng" * 7
    with private_git_server(_served(tmp_path), "ghp_" + "r1ght" * 7) as (url, seen):
        playbook = _private_playbook(tmp_path, url, "refused")
        monkeypatch.setenv("DEPLOY_TOKEN", wrong)
        report = tmp_path / "report.json"
        assert main(["apply", str(playbook), "--json", "--report", str(report)]) == 1
        out, err = capsys.readouterr()
    assert any(h.startswith("Basic ") for h in seen)  # the wrong token was offered, and refused
    step = json.loads(out)["droplets"][0]["steps"][0]
    assert step["status"] == "failed" and "Authentication failed" in step["stderr_tail"]
    run_log = next((tmp_path / ".poseidon" / "runs").glob("*.jsonl")).read_text()
    for text in (out, err, report.read_text(), run_log):
        assert wrong not in text
    assert not (sandbox_env.home("test") / "refused").exists()


def test_the_token_is_in_no_command_line_on_the_droplet_while_the_clone_runs(
    tmp_path: Path, sandbox_env: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "ghp_" + "w4tch3d" * 5
    with private_git_server(_served(tmp_path), token, delay=0.2) as (url, _):
        playbook = _private_playbook(tmp_path, url, "slow")
        monkeypatch.setenv("DEPLOY_TOKEN", token)
        with command_lines_seen() as seen_commands:
            assert main(["apply", str(playbook)]) == 0
    capsys.readouterr()
    assert any(f"{url}/private.git".encode() in c for c in seen_commands)  # the clone was seen running
    assert not [c for c in seen_commands if token.encode() in c]
