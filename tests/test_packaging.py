"""The wheel holds the ``poseidon`` package and its metadata, nothing else of the repository.

Built as an installer builds it, by pip with the build backend of
``pyproject.toml`` (hatchling, from the test extras: no network needed).
Without hatchling the test is skipped, except when ``CI`` is ``true``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    if importlib.util.find_spec("hatchling") is None:
        reason = "hatchling, the build backend, is not installed: run `make install-test`"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must build the wheel: {reason}", pytrace=False)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
            "--wheel-dir", str(folder), str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = folder.glob("poseidon-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_holds_the_poseidon_package_and_its_metadata_only(wheel: zipfile.ZipFile) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    info = f"{project['name']}-{project['version']}.dist-info/"
    names = wheel.namelist()

    assert [name for name in names if not name.startswith(("poseidon/", info))] == []
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "poseidon").rglob("*.py")}
    assert {name for name in names if name.endswith(".py")} == modules
    assert {"poseidon/sandbox/__init__.py", "poseidon/sandbox/emulator.py", "poseidon/py.typed"} <= set(names)
    assert "poseidon = poseidon.cli:main" in wheel.read(info + "entry_points.txt").decode()
