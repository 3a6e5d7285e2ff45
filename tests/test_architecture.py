"""The arrows of DESIGN.md, kept honest: who may import whom, at module level or inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import poseidon.api
import poseidon.ssh

PACKAGE = Path(__file__).parent.parent / "poseidon"


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def core_modules(*allowed: str) -> list[Path]:
    """The core modules (not the sandbox's), less the ones a rule allows."""
    return sorted(p for p in PACKAGE.glob("*.py") if p.name != "__init__.py" and p.name not in allowed)


@pytest.mark.parametrize("module", core_modules("cli.py"), ids=lambda p: p.name)
def test_no_core_module_but_the_cli_imports_the_sandbox(module: Path) -> None:
    assert not any(n.startswith("poseidon.sandbox") for n in imports_of(module))


@pytest.mark.parametrize("module", core_modules("report.py", "cli.py"), ids=lambda p: p.name)
def test_no_core_module_but_the_report_and_the_cli_imports_rich(module: Path) -> None:
    assert not any(n == "rich" or n.startswith("rich.") for n in imports_of(module))


@pytest.mark.parametrize("module", sorted((PACKAGE / "sandbox").glob("*.py")), ids=lambda p: p.name)
def test_the_sandbox_imports_nothing_from_the_core_but_its_errors_and_files(module: Path) -> None:
    """Only the leaves: the errors it raises, and files (written whole, 0600, never through a link)."""
    core = {n for n in imports_of(module) if n.startswith("poseidon") and not n.startswith("poseidon.sandbox")}
    assert core <= {"poseidon", "poseidon.files", "poseidon.errors", "poseidon.errors.SandboxError", "poseidon.errors.UsageError"}


def test_the_api_client_knows_nothing_of_ssh_or_playbooks() -> None:
    names = imports_of(PACKAGE / "api.py")
    assert not any(n.split(".")[0] in ("fabric", "paramiko") for n in names)
    assert not any(n.startswith(("poseidon.ssh", "poseidon.spec", "poseidon.steps", "poseidon.executor")) for n in names)


def test_the_public_names_of_the_original_api_stay() -> None:
    assert callable(poseidon.api.connect)
    for method in ("exec_command", "wait", "chdir", "nohup", "apt", "git", "pip", "pip_freeze", "pip_r", "ps", "top", "close"):
        assert callable(getattr(poseidon.ssh.SSHClient, method)), method


@pytest.mark.parametrize("command", [["--help"], ["validate", "examples/site.yaml"], ["schema"]])
def test_offline_commands_import_nothing_heavy(command: list[str]) -> None:
    """--help, validate and schema start without pandas, Fabric, paramiko, requests or rich (bench/README.md)."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from poseidon import cli\n"
        "try:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "heavy = ('pandas', 'numpy', 'fabric', 'invoke', 'paramiko', 'requests', 'rich')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)), file=sys.stderr)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe, *command], cwd=PACKAGE.parent, capture_output=True, text=True, check=True
    )
    assert run.stderr.strip().splitlines()[-1] == "[]", run.stderr


@pytest.mark.parametrize("name", ["dns.py", "teardown.py"])
def test_dns_and_teardown_talk_to_the_api_only(name: str) -> None:
    names = imports_of(PACKAGE / name)
    assert not any(n.split(".")[0] in ("fabric", "paramiko", "invoke") for n in names)
    assert not any(n.startswith(("poseidon.ssh", "poseidon.steps", "poseidon.executor", "poseidon.report")) for n in names)
