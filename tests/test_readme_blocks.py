"""Every code block of README.md runs as written, against the sandbox it describes.

Blocks are fenced with their kind: ``sh`` blocks run in bash (``set -e``) in a
copy of ``examples/``; the ``python`` blocks run, one after another in one
interpreter, in the sandbox of the ``sh`` block that starts one with
``poseidon sandbox up`` (after its ``poseidon apply``, before its ``down``);
``yaml`` blocks are playbooks, or parts of one that validate once the rest
of a playbook is around them; ``text`` blocks (a synopsis, a layout) are
read, not run. The README's first block is ``make demo`` and ``make test``:
``make test`` is this suite, and ``make demo`` runs the command the demo
test (``test_apply.py``) runs, which ``make -n`` shows here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from poseidon import spec

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
KINDS = {"sh", "python", "yaml", "text"}


@dataclass(frozen=True)
class Block:
    kind: str
    text: str
    line: int  # of its opening fence, 1-based

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.kind})"


def blocks() -> list[Block]:
    found: list[Block] = []
    lines = README.read_text().splitlines()
    opened: tuple[str, int] | None = None
    body: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.startswith("```"):
            if opened:
                body.append(line)
            continue
        if opened is None:
            opened, body = (line[3:].strip(), number), []
        else:
            found.append(Block(opened[0], "\n".join(body) + "\n", opened[1]))
            opened = None
    assert opened is None, f"README.md:{opened[1]}: a block is never closed"
    return found


def of_kind(kind: str) -> list[Block]:
    return [block for block in blocks() if block.kind == kind]


def test_every_block_says_its_kind() -> None:
    assert [str(b) for b in blocks() if b.kind not in KINDS] == []


def test_the_first_block_is_the_two_make_targets_and_make_demo_runs_the_demo() -> None:
    first = blocks()[0]
    assert first.kind == "sh" and first.line == 3
    commands = [line.split("#")[0].strip() for line in first.text.splitlines()]
    assert commands == ["make demo", "make test"]
    shown = subprocess.run(["make", "-n", "-s", "demo"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "poseidon apply examples/site.yaml --sandbox" in shown


#: What a part of a playbook needs around it to be one.
_AROUND: dict[str, Any] = {
    "version": 1,
    "name": "readme",
    "droplets": ["web-1"],
    "vars": {"port": 5000},
    "steps": [{"run": "true"}],
}


@pytest.mark.parametrize("block", of_kind("yaml"), ids=str)
def test_yaml_blocks_are_playbooks_or_parts_of_one(block: Block, tmp_path: Path) -> None:
    data = yaml.safe_load(block.text)
    if block.text.startswith("# .github/"):
        assert isinstance(data, dict)  # a CI workflow's part: YAML, not a playbook
        return
    if isinstance(data, list):  # steps
        data = {"steps": data}
    document = {**_AROUND, **data}
    for step in document["steps"]:  # the files a file: step takes from beside the playbook
        body = step.get("file") if isinstance(step, dict) else None
        for local in (body.get("src"), body.get("template")) if isinstance(body, dict) else ():
            if local:
                (tmp_path / local).write_text("port = 5000\n")
    spec.loads(yaml.safe_dump(document, sort_keys=False), f"README.md:{block.line}", folder=tmp_path)


def _environment(tmp_path: Path, wheels: Path) -> dict[str, str]:
    """A shell as a new user has one: no DigitalOcean or poseidon settings; pip served offline."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITALOCEAN_", "POSEIDON_"))}
    bin_dir = Path(sys.executable).parent
    environment.update(
        PATH=f"{bin_dir}{os.pathsep}{environment['PATH']}",
        XDG_STATE_HOME=str(tmp_path / "state"),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(wheels),
    )
    return environment


def _python_blocks_script(folder: Path) -> Path:
    script = folder / "readme_python.py"
    script.write_text("\n".join(block.text for block in of_kind("python")))
    return script


@pytest.mark.sandbox
@pytest.mark.parametrize("block", [b for b in of_kind("sh") if b.line != 3], ids=str)
def test_sh_blocks_run_as_written(block: Block, tmp_path: Path, demo_wheels: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns(".poseidon"))
    text = block.text
    if "poseidon sandbox up" in text:
        # The library's blocks run in this sandbox, after its apply and before its down.
        script = _python_blocks_script(tmp_path)
        down = re.search(r"^poseidon sandbox down.*$", text, re.MULTILINE)
        assert down is not None, f"{block}: the sandbox it starts is never stopped"
        text = f"{text[: down.start()]}{shlex_quote(sys.executable)} {script}\n{text[down.start() :]}"
    environment = _environment(tmp_path, demo_wheels)
    try:
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + text],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        for playbook in (tmp_path / "examples").glob("*.yaml"):
            subprocess.run(
                [sys.executable, "-m", "poseidon.cli", "sandbox", "reset", "--playbook", str(playbook)],
                cwd=tmp_path,
                env=environment,
                capture_output=True,
                timeout=120,
            )
    assert done.returncode == 0, f"{block} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stdout + done.stderr
    if "poseidon sandbox up" in block.text:  # the library's last block printed each droplet's statuses
        printed = [line for line in done.stdout.splitlines() if line.startswith(("web-1 [", "web-2 ["))]
        assert len(printed) == 2 and all("'failed'" not in line for line in printed), done.stdout


def shlex_quote(text: object) -> str:
    import shlex

    return shlex.quote(str(text))
