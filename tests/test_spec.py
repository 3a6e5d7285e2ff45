"""The playbook models, the located errors of load(), expand() and the JSON Schema."""

from __future__ import annotations

import json
import random
import re
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pydantic
import pytest
import yaml

from poseidon import spec
from poseidon.errors import SpecError, UsageError
from poseidon.spec import (
    AptStep,
    ChdirStep,
    GitStep,
    NamedDroplet,
    NohupStep,
    PipRStep,
    PipStep,
    Playbook,
    Report,
    RunStep,
    TaggedDroplets,
)

PLAYBOOKS = Path(__file__).parent / "playbooks"

HEAD = "version: 1\ndroplets: [web-1]\n"


def problems(text: str, filename: str = "site.yaml") -> list[str]:
    """The problems loads() reports for ``text``, as the user reads them."""
    with pytest.raises(SpecError) as caught:
        spec.loads(textwrap.dedent(text), filename)
    assert caught.value.problems, "a SpecError always carries at least one problem"
    return [str(problem) for problem in caught.value.problems]


def one_step(body: str) -> spec.StepBase:
    playbook = spec.loads(HEAD + "steps:\n  - " + body + "\n")
    assert len(playbook.steps) == 1
    return playbook.steps[0]


# --- the example and the forms ------------------------------------------------


def test_the_design_example_loads_into_the_right_models() -> None:
    playbook = spec.load(PLAYBOOKS / "site.yaml")

    assert playbook.version == 1
    assert playbook.name == "hello-flask"
    assert playbook.droplets == [
        NamedDroplet(name="web-1"),
        NamedDroplet(name="web-2", user="root", port=22),
        TaggedDroplets(tag="workers"),
    ]
    assert playbook.vars == {"app": "hello"}
    assert playbook.steps == [
        AptStep(packages=["git", "python3-venv"]),
        GitStep(repo="changhiskhan/hello_world", dest="${app}", ref="main"),
        ChdirStep(path="${app}"),
        PipRStep(requirements="requirements.txt"),
        NohupStep(cmd="python app.py"),
        RunStep(cmd="curl -fsS localhost:5000/"),
    ]
    assert playbook.report == Report(ps=True, top=False)


def test_defaults_fill_what_a_playbook_leaves_out() -> None:
    playbook = spec.loads(HEAD + "steps: [{run: ls}]\n")

    assert playbook.name is None
    assert playbook.vars == {}
    assert playbook.report == Report(ps=True, top=True)
    step = playbook.steps[0]
    assert (step.name, step.sudo, step.env, step.timeout) == (None, False, {}, None)


@pytest.mark.parametrize(
    ("short", "long", "expected"),
    [
        ("chdir: app", "chdir: {path: app, sudo: true}", ChdirStep(path="app", sudo=True)),
        (
            "apt: [git, curl]",
            "apt: {packages: [git, curl], update: true}",
            AptStep(packages=["git", "curl"], update=True),
        ),
        (
            "git: org/app",
            "git: {repo: org/app, dest: src, ref: v1.2, token_env: GH}",
            GitStep(repo="org/app", dest="src", ref="v1.2", token_env="GH"),
        ),
        (
            "pip: [flask, gunicorn>=21]",
            "pip: {packages: [flask, gunicorn>=21], venv: /opt/venv}",
            PipStep(packages=["flask", "gunicorn>=21"], venv="/opt/venv"),
        ),
        (
            "pip_r: requirements.txt",
            "pip_r: {requirements: requirements.txt, venv: env}",
            PipRStep(requirements="requirements.txt", venv="env"),
        ),
        (
            "nohup: python app.py",
            "nohup: {cmd: python app.py, name: web, log: web.log, restart: true, grace: 2}",
            NohupStep(cmd="python app.py", name="web", log="web.log", restart=True, grace=2.0),
        ),
        (
            "run: make",
            "run: {cmd: make, creates: build/app, unless: test -x app, env: {CC: clang}, timeout: 30}",
            RunStep(
                cmd="make",
                creates="build/app",
                unless="test -x app",
                env={"CC": "clang"},
                timeout=30.0,
            ),
        ),
    ],
)
def test_every_step_kind_has_a_short_and_a_long_form(short: str, long: str, expected: spec.StepBase) -> None:
    short_step = one_step(short)
    long_step = one_step(long)

    assert type(short_step) is type(expected)
    assert getattr(short_step, expected.primary) == getattr(expected, expected.primary)
    assert long_step == expected
    assert set(spec.STEP_KINDS) == set(spec.STEP_MODELS)


def test_a_space_separated_string_lists_packages() -> None:
    assert one_step("apt: git  python3-venv") == AptStep(packages=["git", "python3-venv"])
    assert one_step("pip: {packages: flask requests}") == PipStep(packages=["flask", "requests"])


def test_a_droplet_given_as_a_string_is_a_named_droplet() -> None:
    playbook = spec.loads("version: 1\ndroplets: [web-1, {tag: workers, port: 2222}]\nsteps: [{run: ls}]\n")

    assert playbook.droplets == [
        NamedDroplet(name="web-1"),
        TaggedDroplets(tag="workers", port=2222),
    ]


def test_each_step_remembers_where_it_was_written() -> None:
    playbook = spec.load(PLAYBOOKS / "site.yaml")

    source = playbook.steps[1].source
    assert source == spec.Source(str(PLAYBOOKS / "site.yaml"), 17, 5, "steps[1].git")


def test_playbooks_built_in_python_are_validated_the_same_way() -> None:
    playbook = Playbook(
        version=1,
        droplets=[NamedDroplet(name="web-1")],
        vars={"app": "x"},
        steps=[ChdirStep(path="${app}")],
    )
    assert Playbook.model_validate(playbook.model_dump()) == playbook
    assert (
        Playbook.model_validate(
            {
                "version": 1,
                "droplets": ["web-1"],
                "vars": {"app": "x"},
                "steps": [{"chdir": "${app}"}],
            }
        )
        == playbook
    )

    with pytest.raises(pydantic.ValidationError, match=r"steps\[0\]\.run\.cmd: undefined variable 'nope'"):
        Playbook(version=1, droplets=[NamedDroplet(name="a")], steps=[RunStep(cmd="echo ${nope}")])


# --- located errors -------------------------------------------------------------


def test_a_wrong_type_is_reported_at_the_value() -> None:
    assert problems(
        """\
        version: 1
        droplets: [web-1]
        steps:
          - apt: {packages: [git], update: maybe}
          - nohup: {cmd: python app.py, grace: -1}
        """
    ) == [
        "site.yaml:4:36: steps[0].apt.update: Input should be a valid boolean",
        "site.yaml:5:40: steps[1].nohup.grace: Input should be greater than or equal to 0",
    ]


def test_yaml_booleans_are_not_strings() -> None:
    assert problems(HEAD + "steps:\n  - run: yes\n  - chdir: on\n  - apt: [git, no]\n") == [
        "site.yaml:4:10: steps[0].run.cmd: Input should be a valid string",
        "site.yaml:5:12: steps[1].chdir.path: Input should be a valid string",
        "site.yaml:6:16: steps[2].apt.packages[1]: Input should be a valid string",
    ]


def test_version_must_be_the_integer_1() -> None:
    for value in ("2", "'1'", "true", "1.0"):
        assert problems(f"version: {value}\ndroplets: [a]\nsteps: [{{run: ls}}]\n") == [
            "site.yaml:1:10: version: Input should be 1"
        ]


def test_an_unknown_step_kind_lists_the_known_kinds() -> None:
    known = "known kinds: chdir, apt, git, pip, pip_r, nohup, run, file, service"
    assert problems(HEAD + "steps:\n  - shell: ls\n  - {apt: git, update: true}\n  - 5\n") == [
        f"site.yaml:4:5: steps[0]: unknown step kind 'shell': did you mean 'run'? ({known})",
        f"site.yaml:5:5: steps[1]: a step is a mapping with exactly one key, its kind "
        f"(found: apt, update); put options under it; {known}",
        f"site.yaml:6:5: steps[2]: a step is a one-key mapping such as 'run: make'; {known}",
    ]


def test_an_extra_field_is_reported_at_its_key() -> None:
    assert problems(
        """\
        version: 1
        droplets:
          - name: web-1
            colour: blue
        steps:
          - git: {repo: org/app, branch: main}
        extra: 1
        """
    ) == [
        "site.yaml:4:5: droplets[0].colour: not a field here",
        "site.yaml:6:26: steps[0].git.branch: not a field of a git step: write 'ref'",
        "site.yaml:7:1: extra: not a field here",
    ]


def test_a_missing_field_is_reported_at_the_mapping_that_lacks_it() -> None:
    assert problems(
        """\
        droplets: [web-1]
        steps:
          - git:
              dest: app
        """
    ) == [
        "site.yaml:1:1: version: Field required",
        "site.yaml:4:7: steps[0].git.repo: Field required",
    ]


def test_a_duplicate_key_is_reported_at_the_duplicate() -> None:
    assert problems(HEAD + "steps:\n  - run: {cmd: ls, cmd: pwd}\n") == [
        "site.yaml:4:20: steps[0].run.cmd: duplicate key 'cmd' (first at line 4)"
    ]
    assert problems(HEAD + "steps: [{run: ls}]\nversion: 1\n") == [
        "site.yaml:4:1: version: duplicate key 'version' (first at line 1)"
    ]


def test_an_undefined_variable_is_reported_at_its_string() -> None:
    assert problems(
        """\
        version: 1
        droplets: [web-1]
        vars: {app: hello}
        steps:
          - chdir: ${ap}
          - run:
              cmd: echo ${droplet.colour} ${env:HOME} $${literal}
          - git: {repo: org/app, dest: "${app}/${sub}"}
          - run: echo ${not closed
        """
    ) == [
        "site.yaml:5:12: steps[0].chdir.path: undefined variable 'ap'",
        "site.yaml:7:12: steps[1].run.cmd: unknown droplet attribute 'colour' "
        "(known: name, id, ip_address, private_ip_address, region, tags)",
        "site.yaml:8:32: steps[2].git.dest: undefined variable 'sub'",
        "site.yaml:9:10: steps[3].run.cmd: malformed reference '${': "
        "use ${name}, ${env:NAME} or ${droplet.attribute}, and $${ for a literal ${",
    ]


def test_a_bad_package_name_is_reported_with_its_index() -> None:
    debian = "is not a Debian package name (lowercase letters, digits, + . -; then optional :arch and =version)"
    assert problems(HEAD + "steps:\n  - apt: [git, Python3, 'curl=7.88.1-10+deb12u5', 'libc6:amd64']\n") == [
        f"site.yaml:4:16: steps[0].apt.packages[1]: 'Python3' {debian}"
    ]


def test_bad_variable_names_and_values_are_reported() -> None:
    assert problems(HEAD + "steps: [{run: ls}]\nvars: {ok: 1, bad-name: 2, when: 2024-01-01, list: [1]}\n") == [
        "site.yaml:4:15: vars.bad-name: 'bad-name' is not a name: letters, digits and _, not starting with a digit",
        "site.yaml:4:34: vars.when: a variable's value is a string, a number or a boolean",
        "site.yaml:4:52: vars.list: a variable's value is a string, a number or a boolean",
    ]


def test_every_problem_is_reported_at_once() -> None:
    path = PLAYBOOKS / "broken.yaml"
    with pytest.raises(SpecError) as caught:
        spec.load(path)

    assert [str(p).replace(str(path), "broken.yaml") for p in caught.value.problems] == [
        "broken.yaml:5:5: droplets[1].colour: not a field here",
        "broken.yaml:9:16: steps[0].apt.packages[1]: 'Python3' is not a Debian package name "
        "(lowercase letters, digits, + . -; then optional :arch and =version)",
        "broken.yaml:11:7: steps[1].git.repo: Field required",
        "broken.yaml:12:5: steps[2]: unknown step kind 'shell': did you mean 'run'? "
        "(known kinds: chdir, apt, git, pip, pip_r, nohup, run, file, service)",
        "broken.yaml:13:12: steps[3].chdir.path: undefined variable 'missing'",
        "broken.yaml:14:10: steps[4].run.cmd: Input should be a valid string",
    ]
    assert str(caught.value).count("\n") == 5


# --- hostile values ----------------------------------------------------------------

HOSTILE = {
    "a semicolon": "'git;rm'",
    "a command substitution": "'$(touch x)'",
    "a newline": '"a\\nb"',
    "a leading dash": "'-x'",
}


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("apt: [{v}]", "steps[0].apt.packages[0]"),
        ("pip: [{v}]", "steps[0].pip.packages[0]"),
        ("git: {{repo: {v}}}", "steps[0].git.repo"),
        ("git: {{repo: org/app, ref: {v}}}", "steps[0].git.ref"),
        ("run: {{cmd: ls, env: {{{v}: x}}}}", "steps[0].run.env.{key}"),
        ("nohup: {{cmd: ls, name: {v}}}", "steps[0].nohup.name"),
    ],
)
def test_hostile_values_are_rejected_where_the_field_forbids_them(template: str, path: str, value: str) -> None:
    found = problems(HEAD + "steps:\n  - " + template.format(v=value) + "\n")

    key = yaml.safe_load(value)
    assert len(found) == 1
    # A key's control characters are shown escaped (errors.Problem): they must not reach the terminal raw.
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in str(key))
    assert f": {path.format(key=shown)}: " in found[0]


@pytest.mark.parametrize(
    "template",
    [
        "chdir: {v}",
        "pip_r: {v}",
        "git: {{repo: a/b, dest: {v}}}",
        "pip: {{packages: x, venv: {v}}}",
    ],
)
def test_paths_refuse_newlines_and_a_leading_dash(template: str) -> None:
    for value in (HOSTILE["a newline"], HOSTILE["a leading dash"], '"a\\0b"'):
        assert len(problems(HEAD + "steps:\n  - " + template.format(v=value) + "\n")) == 1
    # Shell syntax in a path is harmless: steps.py quotes every value.
    assert one_step(template.format(v="'my app;$(touch x)'")) is not None


def test_commands_take_any_text_but_nul() -> None:
    step = one_step('run: {cmd: "echo $(date); ls\\n-rf", unless: \'test -e "$HOME/x"\'}')
    assert isinstance(step, RunStep)
    assert step.cmd == "echo $(date); ls\n-rf"
    assert problems(HEAD + 'steps:\n  - run: "a\\0b"\n') == [
        "site.yaml:4:10: steps[0].run.cmd: must not contain a NUL character"
    ]


@pytest.mark.parametrize(
    "repo",
    [
        "org/app",
        "org/app.git",
        "https://github.com/org/app.git",
        "http://git.local/app",
        "ssh://git@host:2222/srv/app.git",
        "git@github.com:org/app.git",
        "file:///srv/git/app.git",
    ],
)
def test_git_accepts_shorthand_and_urls(repo: str) -> None:
    assert one_step(f"git: '{repo}'") == GitStep(repo=repo)


@pytest.mark.parametrize(
    "repo",
    [
        "app",
        "../etc",
        "ftp://host/app",
        "git@-oProxyCommand=x:app",
        "ssh://-oProxyCommand=x/app",
        "org/app;ls",
        "https://h/$(touch x)",
    ],
)
def test_git_rejects_anything_else(repo: str) -> None:
    assert len(problems(HEAD + f"steps:\n  - git: '{repo}'\n")) == 1


# --- YAML and files ------------------------------------------------------------------


def test_aliases_are_refused() -> None:
    assert problems("version: 1\ndroplets: &d [web-1]\nsteps: [{run: ls}]\nx: *d\n") == [
        "site.yaml:4:4: aliases (*name) are not supported: repeat the value"
    ]


def test_yaml_syntax_errors_are_located() -> None:
    assert problems("version: 1\ndroplets: [web-1\nsteps: []\n") == [
        "site.yaml:3:6: while parsing a flow sequence, expected ',' or ']', but got ':'"
    ]
    assert problems("version: 1\n\tdroplets: x\n") == [
        "site.yaml:2:1: while scanning for the next token, found character '\\t' that cannot start any token"
    ]


def test_unsupported_yaml_features_are_problems() -> None:
    assert problems(HEAD + "steps: [{run: !!python/object:os.system ls}]\n") == [
        "site.yaml:3:15: steps[0].run: unsupported tag !!python/object:os.system"
    ]
    assert problems(HEAD + "steps:\n  - <<: {run: ls}\n") == [
        "site.yaml:4:5: steps[0]: merge keys (<<) are not supported"
    ]


def test_a_document_that_is_not_a_playbook_is_one_problem() -> None:
    assert problems("") == ["site.yaml:1:1: the playbook is empty: it needs version, droplets and steps"]
    assert problems("# only a comment\n") == [
        "site.yaml:1:1: the playbook is empty: it needs version, droplets and steps"
    ]
    assert problems("- a\n- b\n") == ["site.yaml:1:1: a playbook is a mapping with version, droplets and steps"]
    assert problems(HEAD + "steps: [{run: ls}]\n---\nb: 1\n") == [
        "site.yaml:4:1: expected a single document in the stream, but found another document"
    ]


def test_unreadable_files_are_problems(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"version: 1\nname: caf\xe9\n")

    for path, expected in [
        (tmp_path / "missing.yaml", "cannot read the playbook: No such file or directory"),
        (tmp_path, "cannot read the playbook: Is a directory"),
        (latin1, "not UTF-8: byte 0xe9 cannot be decoded"),
    ]:
        with pytest.raises(SpecError) as caught:
            spec.load(path)
        (problem,) = caught.value.problems
        assert (problem.file, problem.message) == (str(path), expected)
    assert str(caught.value) == f"{latin1}:2:10: not UTF-8: byte 0xe9 cannot be decoded"


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + (HEAD + "steps: [{run: ls}]\n").encode())

    assert spec.load(path).steps == [RunStep(cmd="ls")]


def _random_structure(rng: random.Random, depth: int = 0) -> Any:
    atoms: list[Any] = [
        None,
        True,
        0,
        -1,
        70000,
        1.5,
        float("nan"),
        "",
        "x",
        "web-1",
        "${x}",
        "$${",
        "${droplet.id}",
        "-rf",
        "a\nb",
        "a\x00b",
        "\ud800",
        "apt",
        "run",
        "kind",
        "org/app",
        "yes",
    ]
    keys: list[Any] = [
        "version",
        "droplets",
        "steps",
        "vars",
        "report",
        "name",
        "tag",
        "port",
        "kind",
        "cmd",
        "packages",
        "repo",
        "env",
        "timeout",
        *spec.STEP_KINDS,
        1,
        None,
    ]
    roll = rng.random()
    if depth > 4 or roll < 0.45:
        return rng.choice(atoms)
    if roll < 0.7:
        return [_random_structure(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(keys): _random_structure(rng, depth + 1) for _ in range(rng.randrange(5))}


def test_garbage_input_never_raises_anything_but_spec_error(tmp_path: Path) -> None:
    rng = random.Random(20240601)
    valid = (PLAYBOOKS / "site.yaml").read_bytes()
    inputs: list[bytes] = []
    for _ in range(200):
        inputs.append(bytes(rng.randrange(256) for _ in range(rng.randrange(120))))
        cut = rng.randrange(len(valid))
        inputs.append(valid[:cut] + bytes(rng.randrange(256) for _ in range(3)) + valid[cut + rng.randrange(4) :])
        structure = _random_structure(rng)
        playbook_like = {
            "version": 1,
            "droplets": [_random_structure(rng, 3)],
            "steps": [{rng.choice(spec.STEP_KINDS): _random_structure(rng, 3)}],
        }
        for data in (structure, playbook_like):
            inputs.append(yaml.dump(data, allow_unicode=True).encode("utf-8", "surrogatepass"))
    inputs += [
        b"[" * 5000,
        b"a: " + b"{" * 5000,
        b"x: " + b"9" * 5000,
        b"\xff\xfe\x00",
        b"- " * 3000,
    ]

    path = tmp_path / "garbage.yaml"
    outcomes = {"playbook": 0, "problems": 0}
    for data in inputs:
        path.write_bytes(data)
        try:
            spec.load(path)
            outcomes["playbook"] += 1
        except SpecError as error:
            assert error.problems and all(p.line >= 1 and p.column >= 1 for p in error.problems)
            outcomes["problems"] += 1
    assert outcomes["problems"] > 0 and sum(outcomes.values()) == len(inputs)


# --- references and expand() ---------------------------------------------------------


def test_references_lists_the_names_in_order() -> None:
    text = "${app} ${env:HOME} $${not_me} ${droplet.name} ${app} $HOME"
    assert spec.references(text) == ["app", "env:HOME", "droplet.name"]
    with pytest.raises(ValueError, match="malformed reference"):
        spec.references("${a b}")


def test_expand_substitutes_vars_environment_and_droplet_attributes_but_leaves_shell_to_the_binding() -> None:
    step = RunStep(
        cmd="cd ${app} && echo ${env:HOME} ${droplet.name} $${literal} $HOME",
        env={"ADDR": "${droplet.ip_address}"},
        creates="${app}/done",
    )
    values = {
        "app": "hello",
        "env:HOME": "/root",
        "droplet.name": "web-1",
        "droplet.ip_address": "127.0.0.2",
    }

    expanded = spec.expand(step, values)

    # The command is shell the user wrote: steps.py binds its references as variables.
    assert expanded.cmd == step.cmd
    assert expanded.env == {"ADDR": "127.0.0.2"}
    assert expanded.creates == "hello/done"
    assert step.cmd.startswith("cd ${app}"), "the original step is left as it was"


def test_expand_names_a_missing_key() -> None:
    with pytest.raises(KeyError, match="env:TOKEN"):
        spec.expand(RunStep(cmd="true", creates="${env:TOKEN}"), {})


def test_expand_splits_a_variable_that_lists_packages() -> None:
    playbook = spec.loads(HEAD + "vars: {pkgs: git curl}\nsteps: [{apt: '${pkgs}'}, {apt: [vim, '${pkgs}']}]\n")
    values = playbook.var_values()

    assert spec.expand(playbook.steps[0], values) == AptStep(packages=["git", "curl"])
    assert spec.expand(playbook.steps[1], values) == AptStep(packages=["vim", "git", "curl"])


def test_expand_checks_the_substituted_values_again() -> None:
    playbook = spec.loads(HEAD + "vars: {pkg: 'git;rm'}\nsteps:\n  - apt: ['${pkg}']\n", "site.yaml")

    with pytest.raises(SpecError) as caught:
        spec.expand(playbook.steps[0], playbook.var_values())

    assert [str(p) for p in caught.value.problems] == [
        "site.yaml:5:5: steps[0].apt.packages[0]: 'git;rm' is not a Debian package name "
        "(lowercase letters, digits, + . -; then optional :arch and =version) (after substitution)"
    ]


def test_var_values_are_text_with_lowercase_booleans() -> None:
    playbook = spec.loads(HEAD + "vars: {a: true, b: false, n: 3, f: 1.5, s: x}\nsteps: [{run: ls}]\n")

    assert playbook.var_values() == {"a": "true", "b": "false", "n": "3", "f": "1.5", "s": "x"}


def test_substitutions_gather_vars_environment_and_the_droplet() -> None:
    playbook = spec.loads(HEAD + "vars: {app: hello}\nsteps: [{run: 'echo ${env:HOME} ${env:USER}'}]\n")
    droplet = {
        "name": "web-1",
        "id": 42,
        "ip_address": "127.0.0.2",
        "region": "nyc3",
        "tags": ["a", "b"],
    }

    values = spec.substitutions(playbook, droplet=droplet, environ={"HOME": "/root"})

    assert values == {
        "app": "hello",
        "env:HOME": "/root",
        "droplet.name": "web-1",
        "droplet.id": "42",
        "droplet.ip_address": "127.0.0.2",
        "droplet.private_ip_address": "",
        "droplet.region": "nyc3",
        "droplet.tags": "a,b",
    }
    assert playbook.env_names() == ["HOME", "USER"]


# --- step helpers -------------------------------------------------------------------------


def test_git_steps_know_their_url_and_target() -> None:
    assert GitStep(repo="org/app").url() == "https://github.com/org/app.git"
    assert GitStep(repo="org/app.git").url() == "https://github.com/org/app.git"
    assert GitStep(repo="git@github.com:org/app.git").url() == "git@github.com:org/app.git"
    assert GitStep(repo="org/app").target() == "app"
    assert GitStep(repo="https://host/x/app.git/").target() == "app"
    assert GitStep(repo="git@host:app.git").target() == "app"
    assert GitStep(repo="org/app", dest="src").target() == "src"


def test_nohup_steps_name_their_process_and_log() -> None:
    step = NohupStep(cmd="PORT=80 /usr/bin/python3 app.py")
    name = step.process_name()

    assert name.startswith("python3-") and len(name) == len("python3-") + 8
    assert name == NohupStep(cmd="PORT=80 /usr/bin/python3 app.py").process_name(), "stable"
    assert name != NohupStep(cmd="python3 other.py").process_name()
    assert step.log_path() == f"{name}.log"
    assert NohupStep(cmd="'unbalanced", name="web").process_name() == "web"
    assert NohupStep(cmd="$(weird) thing").process_name().startswith("weird-")
    assert NohupStep(cmd="x", log="/var/log/x.log").log_path() == "/var/log/x.log"


# --- JSON Schema ---------------------------------------------------------------------------


def test_json_schema_accepts_the_example_and_rejects_a_bad_one(tmp_path: Path) -> None:
    schema = spec.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    example = yaml.safe_load((PLAYBOOKS / "site.yaml").read_text())
    entries = schema["properties"]["steps"]["items"]["oneOf"]
    documented = [example for entry in entries for example in entry["examples"]]

    assert list(validator.iter_errors(example)) == []
    assert len(documented) >= len(spec.STEP_KINDS)
    assert list(validator.iter_errors({**example, "steps": documented})) == []
    for step in documented:  # the files the file: examples take from beside the playbook
        body = step.get("file") or {}
        for local in (body.get("src"), body.get("template")):
            if local:
                (tmp_path / local).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / local).write_text("server_name ${droplet.name};\n")
    loaded = spec.loads(yaml.safe_dump({**example, "steps": documented}), folder=tmp_path)
    assert len(loaded.steps) == len(documented)
    for bad in (
        {**example, "steps": [{"shell": "ls"}]},
        {**example, "steps": [{"apt": "git", "run": "ls"}]},
        {**example, "steps": [{"git": {"repo": "a/b", "branch": "x"}}]},
        {**example, "droplets": [{"name": "a", "tag": "b"}]},
        {**example, "vars": {"bad-name": 1}},
        {**example, "version": 2},
    ):
        assert list(validator.iter_errors(bad)), bad


def test_json_schema_is_deterministic_and_titled() -> None:
    schema = spec.json_schema()

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "poseidon playbook"
    assert json.dumps(schema, indent=2) == json.dumps(spec.json_schema(), indent=2)
    assert list(schema["$defs"]) == sorted(schema["$defs"])
    entries = schema["properties"]["steps"]["items"]["oneOf"]
    assert [entry["required"] for entry in entries] == [[kind] for kind in spec.STEP_KINDS]


def test_the_public_names_are_pinned() -> None:
    assert sorted(spec.__all__) == sorted(
        [
            "DROPLET_ATTRIBUTES",
            "MAX_PLAYBOOK_BYTES",
            "MAX_VALUE_CHARS",
            "STEP_KINDS",
            "STEP_MODELS",
            "MAX_FILE_BYTES",
            "AptStep",
            "AttachmentError",
            "Attachments",
            "ChdirStep",
            "CreateDroplet",
            "DropletRef",
            "FileStep",
            "GitStep",
            "NamedDroplet",
            "NohupStep",
            "PipRStep",
            "PipStep",
            "Playbook",
            "ReadyCheck",
            "Report",
            "RunStep",
            "SecretVar",
            "ServiceStep",
            "Source",
            "Step",
            "StepBase",
            "TaggedDroplets",
            "droplet_name_problem",
            "USER_NAME_RE",
            "expand",
            "file_content",
            "json_schema",
            "load",
            "loads",
            "parts",
            "process_conflicts",
            "references",
            "substitutions",
        ]
    )


def test_every_field_of_the_json_schema_has_a_description() -> None:
    missing: list[str] = []

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                if isinstance(sub, dict) and "description" not in sub and "$ref" not in sub:
                    missing.append(f"{where}.{name}")
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")

    walk(spec.json_schema(), "$")
    assert missing == []


def test_every_example_playbook_validates_against_the_json_schema() -> None:
    import jsonschema
    import yaml

    schema = spec.json_schema()
    examples = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
        spec.load(path)


def test_owner_tags_are_the_name_when_a_tag_can_spell_it_and_never_shared_by_two_names() -> None:
    def tag(name: str) -> str:
        return spec.loads(f"version: 1\nname: {json.dumps(name)}\ndroplets: [a]\nsteps: [{{run: 'true'}}]\n").owner_tag(
            "site.yaml"
        )

    assert tag("hello-demo") == "poseidon:hello-demo"
    names = ["web app", "web/app!", "web-app", "web  app", "wëb app"]
    tags = [tag(name) for name in names]
    assert len(set(tags)) == len(names), tags
    assert all(re.fullmatch(r"poseidon:[A-Za-z0-9_:-]{1,246}", t) for t in tags), tags
    assert tag("web app").startswith("poseidon:web-app-")


def test_a_playbook_over_the_size_bound_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("version: 1\n# " + "x" * spec.MAX_PLAYBOOK_BYTES + "\n")
    with pytest.raises(SpecError) as caught:
        spec.load(big)
    assert [str(p) for p in caught.value.problems] == [
        f"{big}:1:1: the playbook is over 1,048,576 bytes, the most poseidon reads"
    ]
    with pytest.raises(SpecError) as caught:
        spec.loads(big.read_text(), "big.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "big.yaml:1:1: the playbook is over 1,048,576 bytes, the most poseidon reads"
    ]


def test_substitution_never_builds_a_value_past_its_bound() -> None:
    playbook = spec.loads(
        "version: 1\ndroplets: [a]\nvars: {v: " + json.dumps("y" * 10_000) + "}\n"
        "steps: [{run: {cmd: 'true', creates: '" + "${v}" * 200 + "'}}]\n",
        "site.yaml",
    )
    with pytest.raises(SpecError, match="over 1,048,576 characters"):
        spec.expand(playbook.steps[0], spec.substitutions(playbook, environ={}))
    # Variables that double each other: 2**40 characters, refused at once instead of built.
    doubling = {f"v{i}": f"${{v{i + 1}}}${{v{i + 1}}}" for i in range(40)} | {"v40": "y"}
    chain = spec.loads(
        "version: 1\ndroplets: [a]\nvars: " + json.dumps(doubling) + "\nsteps: [{run: 'echo ${v0}'}]\n", "site.yaml"
    )
    with pytest.raises(UsageError, match=r"vars\.v\d+: once its references are substituted it is over"):
        spec.substitutions(chain, environ={})


def test_a_mistyped_kind_or_field_gets_the_one_meant() -> None:
    assert problems(
        """\
        version: 1
        name: mistyped
        droplets: [{name: web, create: {region: nyc3, size: s-1vcpu-1gb, image: x, tgas: [a]}}]
        steps:
          - chdri: app
          - nohup: {cmd: x, nmae: web}
          - run: {cmd: x, chnages: false}
          - git: {repo: org/app, tag: v1}
        report: {pss: true}
        """
    ) == [
        "site.yaml:3:76: droplets[0].create.tgas: not a field here: did you mean 'tags'?",
        "site.yaml:5:5: steps[0]: unknown step kind 'chdri': did you mean 'chdir'? "
        "(known kinds: chdir, apt, git, pip, pip_r, nohup, run, file, service)",
        "site.yaml:6:21: steps[1].nohup.nmae: not a field here: did you mean 'name'?",
        "site.yaml:7:19: steps[2].run.chnages: not a field here: did you mean 'changes'?",
        "site.yaml:8:26: steps[3].git.tag: not a field of a git step: write 'ref'",
        "site.yaml:9:10: report.pss: not a field here: did you mean 'ps'?",
    ]


def test_a_playbook_that_creates_droplets_needs_a_name() -> None:
    """destroy deletes by the tag made of the playbook's name; one made of a file name could be another's."""
    assert problems(
        """\
        version: 1
        droplets:
          - web-0
          - {name: web-1, create: {region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}}
        steps: [{run: ls}]
        """
    ) == [
        "site.yaml:3:3: droplets: web-1 would be created: give the playbook a name: (it tags what it creates,"
        " and 'poseidon destroy' deletes only droplets carrying that tag)"
    ]


@pytest.mark.parametrize(
    ("droplet", "path"),
    [
        ("{name: 'web-${n}'}", "droplets[0].name"),
        ("{name: web, user: '${u}'}", "droplets[0].user"),
        ("{tag: '${t}'}", "droplets[0].tag"),
        ("{name: web, dns: {domain: '${d}.com'}}", "droplets[0].dns.domain"),
        ("{name: web, dns: {domain: example.com, name: '${n}'}}", "droplets[0].dns.name"),
        ("{name: web, create: {region: '${r}', size: s, image: i}}", "droplets[0].create.region"),
        ("{name: web, create: {region: r, size: s, image: i, tags: ['${t}']}}", "droplets[0].create.tags[0]"),
    ],
)
def test_a_reference_where_nothing_is_substituted_is_refused_at_its_place(droplet: str, path: str) -> None:
    """The droplets' fields go to the API and to SSH as written: a ``${…}`` there would stay one."""
    text = (
        f"version: 1\nname: site\nvars: {{n: a, u: b, t: c, d: e, r: f}}\ndroplets: [{droplet}]\nsteps: [run: make]\n"
    )
    found = problems(text)
    assert len(found) == 1, found
    assert f": {path}: ${{…}} is substituted in the values of steps only: write the value itself here" in found[0]


def test_an_env_name_is_what_it_is_written_and_a_value_under_the_name_kind_is_checked() -> None:
    """``env:`` names are never substituted; a value is a value whatever its name (``kind`` too)."""
    found = problems("version: 1\ndroplets: [web]\nsteps:\n  - run: {cmd: make, env: {'${zz}': x, kind: '${yy}'}}\n")
    assert found == [
        "site.yaml:4:28: steps[0].run.env.${zz}: ${…} is substituted in the values of steps only:"
        " write the value itself here",
        "site.yaml:4:46: steps[0].run.env.kind: undefined variable 'yy'",
    ]
    playbook = spec.loads("version: 1\ndroplets: [web]\nsteps:\n  - run: {cmd: make, env: {kind: '${env:HOME}'}}\n")
    assert playbook.env_names() == ["HOME"]


def test_a_value_of_the_wrong_type_in_a_union_is_placed_at_its_field() -> None:
    """``image:`` takes a slug or an id: the error names the field, not pydantic's union members."""
    found = problems(
        "version: 1\nname: x\ndroplets: [{name: a, create: {region: r, size: s, image: 1.5}}]\nsteps: [run: make]\n"
    )
    assert found == [
        "site.yaml:3:58: droplets[0].create.image: Input should be a valid integer",
        "site.yaml:3:58: droplets[0].create.image: Input should be a valid string",
    ]
