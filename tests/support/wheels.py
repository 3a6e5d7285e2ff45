"""Tiny pure-Python wheels, so pip tests need no package index.

The builder is the benchmark's (``bench/wheels.py``), loaded from its file:
one copy, and nothing outside ``tests/`` imports from it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_BUILDER = Path(__file__).resolve().parents[2] / "bench" / "wheels.py"
_spec = importlib.util.spec_from_file_location("poseidon_bench_wheels", _BUILDER)
assert _spec is not None and _spec.loader is not None, f"no wheel builder at {_BUILDER}"
_builder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_builder)

build_wheel = _builder.build_wheel


def offline_pip_env(folder: Path) -> dict[str, str]:
    """Step ``env`` that makes pip install from ``folder`` only."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(folder)}
