"""Hostile strings in every step field: refused by validation, or delivered as one quoted argument.

Each case runs for real on a sandbox droplet; a payload that ran would leave
its marker file behind.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import poseidon.api as po
from poseidon import steps
from poseidon.errors import SpecError
from poseidon.sandbox import Sandbox
from poseidon.ssh import SSHClient
from support.wheels import build_wheel, offline_pip_env

PAYLOADS = [
    "; touch {m}",
    "$(touch {m})",
    "`touch {m}`",
    "'; touch {m}; '",
    '"; touch {m}; "',
    "x\ntouch {m}\n",
    "-o ProxyCommand=touch {m}",
    "a b && touch {m} #",
    "~/$(touch {m})",
    "}} ; touch {m} ; {{",
]

# (kind, the field under attack, the other fields the step needs, whether the field takes free text)
FIELDS = [
    ("chdir", "path", {}, True),
    ("apt", "packages", {}, False),
    ("git", "repo", {}, False),
    ("git", "dest", {"repo": "changhiskhan/test"}, True),
    ("git", "ref", {"repo": "changhiskhan/test", "dest": "hostile-ref"}, False),
    ("pip", "packages", {"venv": "hostile-venv"}, False),
    ("pip", "venv", {"packages": ["tinyfoo"]}, True),
    ("pip_r", "requirements", {"venv": "hostile-venv"}, True),
    ("pip_r", "venv", {"requirements": "hostile-requirements.txt"}, True),
    ("nohup", "log", {"cmd": "sleep 1", "grace": 0}, True),
    ("nohup", "name", {"cmd": "sleep 1", "grace": 0}, False),
    ("run", "creates", {"cmd": "true"}, True),
    ("run", "env", {"cmd": 'echo "$HOSTILE"'}, True),
    ("run", "env_name", {"cmd": "true"}, False),
    ("run", "name", {"cmd": "true"}, True),
    ("git", "token_env", {"repo": "changhiskhan/test", "dest": "hostile-token"}, False),
    ("file", "path", {"content": "arrived\n"}, True),
    ("file", "content", {"path": "hostile-content"}, True),
    ("file", "owner", {"path": "hostile-owner", "content": "x"}, False),
    ("file", "group", {"path": "hostile-group", "content": "x"}, False),
    ("file", "mode", {"path": "hostile-mode", "content": "x"}, False),
]

_counter = itertools.count()


def _step(kind: str, field: str, others: dict[str, object], value: str) -> object | None:
    fields = dict(others)
    if field == "env":
        fields["env"] = {"HOSTILE": value}
    elif field == "env_name":
        fields["env"] = {value: "x"}
    elif field == "packages":
        fields["packages"] = [value]
    else:
        fields[field] = value
    try:
        return steps.build(kind, **fields)
    except (ValidationError, SpecError):
        return None


def _on_droplet(home: Path, value: str) -> Path:
    """The file a path value names on the droplet: ``~/`` is the home, and so is the session's directory."""
    return home / value.removeprefix("~/")


def _prepare(kind: str, field: str, value: str, home: Path) -> None:
    """What the droplet holds before the step, so that a step whose value arrives intact succeeds."""
    target = _on_droplet(home, value)
    if (kind, field) == ("chdir", "path"):
        target.mkdir(parents=True, exist_ok=True)
    elif (kind, field) == ("pip_r", "requirements"):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("tinyfoo==1.0\n")
    elif (kind, field) == ("pip_r", "venv"):
        (home / "hostile-requirements.txt").write_text("tinyfoo==1.0\n")


def _assert_arrived(kind: str, field: str, value: str, step: Any, ssh: SSHClient, home: Path) -> None:
    """Run ``step`` (its ``field`` holds ``value``) and check that it did its work with the value as written."""
    target = _on_droplet(home, value)
    if (kind, field) == ("run", "creates"):
        assert ssh.run_step(step, secrets={}).status == "changed"  # the path does not exist yet
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    outcome = ssh.run_step(step, mode="apply", secrets={})
    expected = {("chdir", "path"): "ok", ("run", "creates"): "ok"}.get((kind, field), "changed")
    assert outcome.status == expected, (outcome.status, outcome.stderr)
    if (kind, field) == ("chdir", "path"):
        assert ssh.cwd is not None and Path(ssh.cwd).resolve() == target.resolve()
    elif (kind, field) == ("git", "dest"):
        assert (target / "index.html").read_text() == "hello from tiny\n"
    elif (kind, field) in (("pip", "venv"), ("pip_r", "venv")):
        assert list(target.glob("lib/python*/site-packages/tinyfoo"))
    elif (kind, field) == ("pip_r", "requirements"):
        # Written only once pip read this very file: its name is the stamp's.
        stamp = home / "hostile-venv" / f".poseidon-pip_r-{hashlib.sha256(value.encode()).hexdigest()[:16]}"
        assert stamp.is_file()
    elif (kind, field) == ("nohup", "log"):
        assert target.is_file()
    elif (kind, field) == ("run", "creates"):
        assert outcome.reason == f"{value} exists"  # skipped for the file made there, run before it was
    elif (kind, field) == ("run", "env"):
        assert outcome.stdout == value.rstrip("\n")  # echo's newline and the value's own end the output
    elif (kind, field) == ("file", "path"):
        assert target.read_text() == "arrived\n"
    elif (kind, field) == ("file", "content"):
        assert (home / "hostile-content").read_text() == value
    elif (kind, field) == ("run", "name"):
        assert steps.describe(step) == value  # a label, shown as written: it reaches no command
    else:
        raise AssertionError(f"no check of {kind}.{field} arriving")


@pytest.mark.parametrize(("kind", "field", "others", "free_text"), FIELDS, ids=[f"{k}.{f}" for k, f, *_ in FIELDS])
def test_no_hostile_value_runs_a_command_and_a_delivered_one_arrives_intact(
    kind: str, field: str, others: dict[str, object], free_text: bool, sandbox_env: Sandbox
) -> None:
    home = sandbox_env.home("other")
    if kind in ("pip", "pip_r"):  # tinyfoo from a folder of wheels, not an index
        others = {**others, "env": offline_pip_env(build_wheel(home / "hostile-wheels").parent)}
    refused = delivered = 0
    with po.connect().droplets.by_name("other").connect() as ssh:
        for payload in PAYLOADS:
            marker = home / f"pwned-{next(_counter)}"
            value = payload.format(m=marker)
            step = _step(kind, field, others, value)
            if step is None:
                refused += 1
                continue
            ssh.cwd = None
            _prepare(kind, field, value, home)
            _assert_arrived(kind, field, value, step, ssh, home)
            delivered += 1
            assert not marker.exists(), f"{kind}.{field} ran {payload!r}"
    # Free-text fields deliver most payloads to the shell (quoted); the others refuse them all.
    assert (delivered > 0) == free_text, (refused, delivered)
    assert not list(Path(home).glob("pwned-*"))


def test_an_environment_value_reaches_the_command_verbatim(sandbox_env: Sandbox) -> None:
    value = "$(touch x) `y` 'z' \"w\"\nsecond line"
    step = steps.build("run", cmd='printf %s "$HOSTILE"', env={"HOSTILE": value})
    with po.connect().droplets.by_name("other").connect() as ssh:
        outcome = ssh.run_step(step, secrets={})
    assert outcome.status == "changed"
    assert outcome.stdout == value


def test_quote_path_keeps_the_tilde_outside_the_quotes() -> None:
    assert steps.quote_path("~") == "~"
    assert steps.quote_path("~/my app") == "~/'my app'"
    assert steps.quote_path("~/$(x)") == "~/'$(x)'"
    assert steps.quote_path("~user") == "'~user'"
    assert steps.quote_path("-rf") == "-rf"
