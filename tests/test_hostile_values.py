"""Hostile strings in every step field: refused by validation, or delivered as one quoted argument.

Each case runs for real on a sandbox droplet; a payload that ran would leave
its marker file behind.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from pydantic import ValidationError

import poseidon.api as po
from poseidon import steps
from poseidon.errors import SpecError
from poseidon.sandbox import Sandbox

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
    ("pip_r", "venv", {"requirements": "no-such-requirements.txt"}, True),
    ("nohup", "log", {"cmd": "sleep 1", "grace": 0}, True),
    ("nohup", "name", {"cmd": "sleep 1", "grace": 0}, False),
    ("run", "creates", {"cmd": "true"}, True),
    ("run", "env", {"cmd": "echo \"$HOSTILE\""}, True),
    ("run", "env_name", {"cmd": "true"}, False),
    ("run", "name", {"cmd": "true"}, True),
    ("git", "token_env", {"repo": "changhiskhan/test", "dest": "hostile-token"}, False),
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


@pytest.mark.parametrize(("kind", "field", "others", "free_text"), FIELDS, ids=[f"{k}.{f}" for k, f, *_ in FIELDS])
def test_no_hostile_value_runs_a_command(
    kind: str, field: str, others: dict[str, object], free_text: bool, sandbox_env: Sandbox
) -> None:
    home = sandbox_env.home("other")
    refused = delivered = 0
    with po.connect().droplets.by_name("other").connect() as ssh:
        for payload in PAYLOADS:
            marker = home / f"pwned-{next(_counter)}"
            step = _step(kind, field, others, payload.format(m=marker))
            if step is None:
                refused += 1
                continue
            ssh.cwd = None
            ssh.run_step(step, mode="apply", secrets={})
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
