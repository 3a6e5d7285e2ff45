"""Local bare git repositories that stand in for GitHub on sandbox droplets."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from poseidon.errors import SandboxError

__all__ = ["build_bare_repo", "github_redirect"]

_IDENTITY = {
    "GIT_AUTHOR_NAME": "poseidon sandbox",
    "GIT_AUTHOR_EMAIL": "sandbox@poseidon.invalid",
    "GIT_COMMITTER_NAME": "poseidon sandbox",
    "GIT_COMMITTER_EMAIL": "sandbox@poseidon.invalid",
    # Fixed dates give the same commit ids on every machine.
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
}


def _git(*args: str, cwd: Path | None = None) -> None:
    env = {**os.environ, **_IDENTITY, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise SandboxError("the sandbox's repositories need git (Debian: apt-get install git)") from None
    if result.returncode != 0:
        raise SandboxError(f"git {' '.join(args)} failed: {result.stderr.strip()}")


def build_bare_repo(source: Path, bare: Path) -> None:
    """Commit the files of ``source`` on branch ``main`` of a new bare repository."""
    if not source.is_dir():
        raise SandboxError(f"no folder {source} to build a sandbox repository from")
    # Built afresh at every start: fixed dates and identity give an unchanged
    # folder the same commit id, so only a real change looks like a new push.
    if bare.exists():
        shutil.rmtree(bare)
    bare.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="poseidon-repo-") as work:
        tree = Path(work) / "tree"
        shutil.copytree(source, tree, ignore=shutil.ignore_patterns("__pycache__", ".venv", "*.pyc"))
        _git("init", "-q", "-b", "main", str(tree))
        _git("add", "-A", cwd=tree)
        _git("commit", "-q", "--allow-empty", "-m", f"{source.name} for the poseidon sandbox", cwd=tree)
        _git("clone", "-q", "--bare", str(tree), str(bare))


def github_redirect(repos: Path) -> str:
    """A droplet's ~/.gitconfig that sends GitHub URLs to the local bare repositories."""
    base = repos.as_uri() + "/"
    return (
        f'[url "{base}"]\n'
        "\tinsteadOf = https://github.com/\n"
        "\tinsteadOf = git@github.com:\n"
        "[advice]\n\tdetachedHead = false\n"
    )
