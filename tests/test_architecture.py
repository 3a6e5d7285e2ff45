"""The arrows of DESIGN.md, kept honest: who may import whom, at module level or inside functions.

Every module of the package counts, in subpackages too (``poseidon/spec/``,
``poseidon/sandbox/``); a module is named as Python names it (``poseidon.spec.models``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import poseidon.api
import poseidon.ssh

PACKAGE = Path(__file__).parent.parent / "poseidon"
ROOT = PACKAGE.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


#: Every module of the package, by name.
MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def poseidon_imports(name: str) -> set[str]:
    """The package's modules that module ``name`` imports (``from poseidon import x`` is ``poseidon.x``).
    A module's own packages (``poseidon.spec`` for ``poseidon.spec.checks``) are not counted: Python
    loads them first whatever the module imports."""
    return {n for n in imports_of(MODULES[name]) if n in MODULES and n != name and not name.startswith(n + ".")}


def core_modules(*allowed: str) -> list[str]:
    """The core's modules (the sandbox's are not), less the ones a rule allows (``cli``, ``spec``…)."""
    return sorted(
        name
        for name in MODULES
        if name != "poseidon"
        and not name.startswith("poseidon.sandbox")
        and not any(name == f"poseidon.{a}" or name.startswith(f"poseidon.{a}.") for a in allowed)
    )


def test_the_map_finds_the_subpackages() -> None:
    """A rule that walks no module checks nothing: the spec's and the sandbox's modules are seen."""
    assert sum(name.startswith("poseidon.spec.") for name in core_modules()) >= 5
    assert sum(name.startswith("poseidon.sandbox.") for name in MODULES) >= 4


def test_no_two_modules_import_each_other_even_for_types() -> None:
    """Dependencies point one way: no cycle, however long, TYPE_CHECKING imports included."""
    graph = {name: poseidon_imports(name) for name in MODULES}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                cycle = [*path[path.index(other) :], other] if other in path else [name, other]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if other not in state:
                visit(other, [*path, other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("module", core_modules("cli"))
def test_no_core_module_but_the_cli_imports_the_sandbox(module: str) -> None:
    assert not any(n.startswith("poseidon.sandbox") for n in imports_of(MODULES[module]))


@pytest.mark.parametrize("module", core_modules("report", "cli"))
def test_no_core_module_but_the_report_and_the_cli_imports_rich(module: str) -> None:
    assert not any(n == "rich" or n.startswith("rich.") for n in imports_of(MODULES[module]))


@pytest.mark.parametrize("module", [n for n in MODULES if n.startswith("poseidon.sandbox")])
def test_the_sandbox_imports_nothing_from_the_core_but_its_errors_and_files(module: str) -> None:
    """Only the leaves: the errors it raises, and files (written whole, 0600, never through a link)."""
    core = {n for n in imports_of(MODULES[module]) if n.startswith("poseidon") and not n.startswith("poseidon.sandbox")}
    assert core <= {
        "poseidon",
        "poseidon.files",
        "poseidon.errors",
        "poseidon.errors.SandboxError",
        "poseidon.errors.UsageError",
    }


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("poseidon.errors", set()),
        ("poseidon.settings", {"poseidon.errors"}),
        ("poseidon.cloudinit", {"poseidon.errors"}),
        ("poseidon.session", {"poseidon.shell"}),
        ("poseidon.droplet", {"poseidon.errors", "poseidon.settings", "poseidon.ssh"}),
    ],
)
def test_the_leaves_import_only_what_the_map_gives_them(module: str, allowed: set[str]) -> None:
    assert poseidon_imports(module) <= allowed


def test_the_api_client_knows_nothing_of_ssh_or_playbooks() -> None:
    names = imports_of(MODULES["poseidon.api"])
    assert not any(n.split(".")[0] in ("fabric", "paramiko") for n in names)
    assert not any(
        n.startswith(("poseidon.ssh", "poseidon.spec", "poseidon.steps", "poseidon.executor")) for n in names
    )


def test_the_run_and_status_are_siblings() -> None:
    """cli → executor / status → targets, session, ssh, steps: neither of the two imports the other."""
    assert not any(n.startswith("poseidon.status") for n in imports_of(MODULES["poseidon.executor"]))
    assert not any(n.startswith("poseidon.executor") for n in imports_of(MODULES["poseidon.status"]))


@pytest.mark.parametrize("module", core_modules("cli", "executor", "status", "teardown", "report", "planfile"))
def test_below_the_commands_nothing_imports_a_command(module: str) -> None:
    commands = ("poseidon.cli", "poseidon.executor", "poseidon.status", "poseidon.teardown")
    assert not any(n.startswith(commands) for n in imports_of(MODULES[module]))


def _environment_reads(path: Path) -> list[str]:
    """The names of variables a module looks up in an environment: ``os.environ.get("X")``,
    ``os.environ["X"]``, ``os.getenv("X")``, ``env.get("X")`` for a literal ``X``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        key: ast.expr | None = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            if node.func.attr in ("get", "getenv", "pop", "setdefault"):
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            found.append(key.value)
    return found


@pytest.mark.parametrize("module", core_modules("settings", "cli"))
def test_only_the_settings_read_poseidons_variables(module: str) -> None:
    """POSEIDON_* and the token variables are read once (poseidon.settings) and passed down."""
    own = [n for n in _environment_reads(MODULES[module]) if n.startswith(("POSEIDON_", "DIGITALOCEAN_"))]
    assert own == []


def test_the_cli_reads_poseidons_variables_only_from_a_sandboxs_own() -> None:
    """The cli reads a sandbox's variables (``Sandbox.environ``, a daemon's file), never this process's."""
    source = MODULES["poseidon.cli"].read_text()
    assert 'os.environ.get("POSEIDON_' not in source and 'os.environ["POSEIDON_' not in source
    assert "os.getenv(" not in source


def test_the_environment_check_finds_a_read(tmp_path: Path) -> None:
    """The check above is not blind: it sees every form of a read it looks for."""
    probe = tmp_path / "probe.py"
    probe.write_text('import os\nos.environ.get("POSEIDON_A")\nos.environ["POSEIDON_B"]\nos.getenv("POSEIDON_C")\n')
    assert _environment_reads(probe) == ["POSEIDON_A", "POSEIDON_B", "POSEIDON_C"]


@pytest.mark.parametrize("folder", ["poseidon", "bench"])
def test_nothing_outside_the_tests_imports_from_them(folder: str) -> None:
    for path in sorted((ROOT / folder).rglob("*.py")):
        assert not any(n == "tests" or n.startswith("tests.") for n in imports_of(path)), path


def test_the_public_names_of_the_original_api_stay() -> None:
    assert callable(poseidon.api.connect)
    for method in (
        "exec_command",
        "wait",
        "chdir",
        "nohup",
        "apt",
        "git",
        "pip",
        "pip_freeze",
        "pip_r",
        "ps",
        "top",
        "close",
    ):
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
    run = subprocess.run([sys.executable, "-c", probe, *command], cwd=ROOT, capture_output=True, text=True, check=True)
    assert run.stderr.strip().splitlines()[-1] == "[]", run.stderr


@pytest.mark.parametrize("name", ["poseidon.dns", "poseidon.teardown"])
def test_dns_and_teardown_talk_to_the_api_only(name: str) -> None:
    names = imports_of(MODULES[name])
    assert not any(n.split(".")[0] in ("fabric", "paramiko", "invoke") for n in names)
    assert not any(
        n.startswith(("poseidon.ssh", "poseidon.steps", "poseidon.executor", "poseidon.report")) for n in names
    )


def test_the_readmes_layout_names_every_module_and_subpackage() -> None:
    """README.md's map stays the map: a module added or renamed shows there."""
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :].split("```")[1]
    names = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    names += [f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]
    assert [n for n in sorted(names) if n not in layout] == []
