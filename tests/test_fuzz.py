"""Hostile input, generated: the loader never breaks, and no step field runs a command it was not meant to.

hypothesis generates the inputs. Nothing here is timed (deadline=None):
whether the loader stays bounded is shown by what it refuses (aliases,
deep nesting: tests/playbooks/invalid/), not by a clock.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import poseidon.api as po
from poseidon import cli, spec, steps
from poseidon.errors import SpecError
from poseidon.sandbox import Sandbox
from test_hostile_values import FIELDS, _step

#: Every refusal names the file, the line and the column: ``fuzz.yaml:3:5: …``.
LOCATED = re.compile(r"fuzz\.yaml:\d+:\d+: ")

FUZZ = settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])

KEYS = ["version", "name", "droplets", "steps", "vars", "report", "env", "secret", "tag", "create", "user", "port"]
KINDS = list(spec.STEP_MODELS)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS + KINDS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=25,
)
playbooks = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 2, "1", None]), "droplets": documents, "steps": st.lists(documents, max_size=4)},
    optional={"vars": documents, "report": documents, "name": scalars},
)


def _validate(text: str | bytes, tmp: Path) -> tuple[int, str, str, Path]:
    """``poseidon validate`` on a file holding ``text``: its exit status, what it printed (out, err), the file."""
    path = tmp / "fuzz.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["validate", str(path)])
    return code, out.getvalue(), err.getvalue(), path


@FUZZ
@given(documents | playbooks)
def test_any_yaml_document_is_a_playbook_or_a_located_refusal(document: object) -> None:
    text = yaml.safe_dump(document, allow_unicode=True)
    try:
        spec.loads(text, "fuzz.yaml")
    except SpecError as exc:
        assert all(LOCATED.match(line) for line in str(exc).splitlines() if line), str(exc)


@FUZZ
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_bytes_end_valid_or_in_exit_2_with_located_messages_and_never_a_traceback(
    data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    code, out, err, path = _validate(data, tmp_path_factory.mktemp("fuzz"))
    assert "Traceback" not in out + err
    if code == 0:
        assert re.fullmatch(rf"{re.escape(str(path))}: valid \(\d+ droplet entries, \d+ steps\)\n", out), out
        assert err == ""
        return
    assert code == 2, (code, out, err)
    # One refusal a line, each FILE:LINE:COLUMN: and something said; a line break inside one is escaped.
    refusals = err.removesuffix("\n").split("\n")
    located = re.compile(rf"{re.escape(str(path))}:[1-9]\d*:[1-9]\d*: \S.*")
    assert err.endswith("\n") and all(located.fullmatch(line) for line in refusals), err
    assert out == ""


@FUZZ
@given(st.text().filter(lambda t: "\x00" not in t))
def test_a_quoted_value_reaches_a_real_shell_as_one_unchanged_word(value: str) -> None:
    # NUL cannot be in an argument at all: the models refuse it (tests/playbooks/invalid/).
    for shell in ("sh", "bash"):
        for quoted, expected in ((steps.quote(value), value), (steps.quote_path("~/" + value), None)):
            run = subprocess.run(
                [shell, "-c", f"printf '%s\\n' {quoted}"],
                capture_output=True,
                env={"HOME": "/home/fuzz", "PATH": "/usr/bin:/bin"},
            )
            words = run.stdout.decode("utf-8", "surrogateescape")
            assert words == (expected if expected is not None else "/home/fuzz/" + value) + "\n", shell


_markers = itertools.count()
INJECTIONS = [
    "$(touch {m})",
    "`touch {m}`",
    "; touch {m}",
    "\ntouch {m}\n",
    "' ; touch {m} ; '",
    '" ; touch {m} ; "',
    "&& touch {m} #",
]


@pytest.mark.parametrize(("kind", "field", "others", "free_text"), FIELDS, ids=[f"{k}.{f}" for k, f, *_ in FIELDS])
def test_generated_values_with_an_injection_never_run_it(
    kind: str, field: str, others: dict[str, object], free_text: bool, sandbox_env: Sandbox
) -> None:
    home = sandbox_env.home("other")
    delivered = 0
    with po.connect().droplets.by_name("other").connect() as ssh:

        @settings(deadline=None, max_examples=15, suppress_health_check=list(HealthCheck))
        @given(
            st.text(max_size=12).filter(lambda t: "\x00" not in t),
            st.sampled_from(INJECTIONS),
            st.text(max_size=12).filter(lambda t: "\x00" not in t),
        )
        def check(prefix: str, injection: str, suffix: str) -> None:
            marker = home / f"fuzz-pwned-{next(_markers)}"
            step = _step(kind, field, others, prefix + injection.format(m=marker) + suffix)
            if step is None:
                return  # refused by validation, with a message (tests/test_invalid_playbooks.py)
            nonlocal delivered
            delivered += 1
            ssh.cwd = None
            ssh.run_step(step, mode="apply", secrets={})
            assert not marker.exists(), f"{kind}.{field} ran {injection!r}"

        check()
    assert not list(Path(home).glob("fuzz-pwned-*"))
    # Free-text fields take most injections to the droplet (quoted); the others refuse them all.
    assert (delivered > 0) == free_text, delivered


def test_control_characters_in_a_playbook_reach_the_terminal_escaped() -> None:
    # Found by the first test above: a key "\x1e" split the message's line; "\x1b[" would colour the terminal.
    text = 'version: 1\ndroplets: [web]\nsteps: [{run: "true"}]\n"\\e[31mred\\x1e": 1\n'
    with pytest.raises(SpecError) as caught:
        spec.loads(text, "fuzz.yaml")
    message = str(caught.value)
    assert "\x1b" not in message and "\x1e" not in message
    assert message == "fuzz.yaml:4:1: \\x1b[31mred\\x1e: not a field here"
