"""Values are data: a ``${…}`` in shell the user wrote never becomes syntax, and arrives byte for byte.

Every source of values (a playbook variable, ``${env:…}``, the droplet's
name, tags and private address) goes into every field that takes shell
(``run``'s command and ``unless``, ``nohup``'s command and ``ready.cmd``),
unquoted, in double quotes, in here-documents and in ``$( )``, on a real
sandbox droplet (single quotes, where the shell could only paste a value,
are refused by ``validate``). A payload that ran would leave its marker file;
the value that arrived is compared with the one sent. A hostile API (a proxy
in front of the sandbox's) feeds its values through a whole ``apply``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import poseidon.api as po
from poseidon import shell, spec, steps
from poseidon.errors import SpecError
from poseidon.sandbox import Sandbox
from support.sandboxes import point_at

ROOT = Path(__file__).parent.parent

#: One value that would run three commands if it were pasted into shell, and keeps every quote.
PAYLOAD = "main$(touch {m}-1)`touch {m}-2`'; touch {m}-3; '\"; touch {m}-4; \"\n;touch {m}-5 # $HOME \\ *"

SOURCES = ["app", "env:BRANCH", "droplet.name", "droplet.tags", "droplet.private_ip_address"]

#: How the user wrote the reference, and what the shell prints for it (``{v}`` the value).
FORMS = {
    "unquoted": ("${REF}", "{v}"),
    "double quotes": ('"b=${REF}"', "b={v}"),
    "here-document": ('"$(cat <<EOF\nh=${REF}\nEOF\n)"', "h={v}"),
    "command in a here-document": ('"$(cat <<EOF\nc=$(printf %s ${REF})\nEOF\n)"', "c={v}"),
    "case pattern in $( )": ('"$(case x in x) printf %s ${REF};; esac)"', "{v}"),
    "shell default": ('"$${UNSET_HERE:-${REF}}"', "{v}"),
    "after ${#VAR}": ('"$${#HOME}" ${REF}', "{n}{v}"),
}

_counter = itertools.count()


def _values(markers: Path) -> dict[str, str]:
    """Every source's value: the payload, each with a marker of its own."""
    playbook = spec.loads("version: 1\ndroplets: [x]\nvars: {app: '${env:APP}'}\nsteps: [{run: 'true'}]\n", "site.yaml")
    payload = {source: PAYLOAD.format(m=markers / source.replace(":", "-").replace(".", "-")) for source in SOURCES}
    droplet = {
        "name": payload["droplet.name"],
        "tags": [payload["droplet.tags"]],
        "private_ip_address": payload["droplet.private_ip_address"],
    }
    environ = {"APP": payload["app"], "BRANCH": payload["env:BRANCH"]}
    return spec.substitutions(playbook, droplet=droplet, environ=environ)


def _printing(reference: str, form: str, out: str) -> str:
    """A command that writes what the shell made of the reference, as the user would write it, to ``out``."""
    written = FORMS[form][0].replace("REF", reference)
    return f"printf '%s' {written} > {out}"


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("field", ["run.cmd", "run.unless", "nohup.cmd", "nohup.ready.cmd"])
def test_no_value_from_any_source_runs_and_each_arrives_verbatim(field: str, form: str, sandbox_env: Sandbox) -> None:
    home = sandbox_env.home("other")
    markers = home / f"markers-{next(_counter)}"
    markers.mkdir()
    values = _values(markers)
    with po.connect().droplets.by_name("other").connect() as ssh:
        for source in SOURCES:
            out = f"arrived-{next(_counter)}"
            command = _printing(source, form, out)
            if field == "run.cmd":
                step = steps.build("run", cmd=command)
            elif field == "run.unless":
                step = steps.build("run", cmd="true", unless=f"{command}; false")
            elif field == "nohup.cmd":
                step = steps.build(
                    "nohup", cmd=f"{command}; exec sleep 30", name=out, ready={"cmd": f"test -s {out}", "timeout": 10}
                )
            else:
                step = steps.build("nohup", cmd="exec sleep 30", name=out, ready={"cmd": command, "timeout": 5})
            outcome = ssh.run_step(spec.expand(step, values), values=values)
            assert outcome.status == "changed", (source, outcome)
            expected = FORMS[form][1].format(v=values[source], n=len(str(sandbox_env.home("other"))))
            assert (home / out).read_bytes() == expected.encode(), (source, form)
            ssh.wait(f"kill $(cat .poseidon/{out}.pid) 2>/dev/null || true")
    assert list(markers.iterdir()) == [], "a value ran as a command"


def test_a_value_in_arithmetic_must_be_a_number_and_one_in_a_quoted_here_document_is_refused(
    sandbox_env: Sandbox,
) -> None:
    with po.connect().droplets.by_name("other").connect() as ssh:
        number = ssh.run_step(steps.build("run", cmd="echo $(( ${n} + 1 ))"), values={"n": "41"})
        assert (number.status, number.stdout) == ("changed", "42")
        hostile = ssh.run_step(steps.build("run", cmd="echo $(( ${n} + 1 ))"), values={"n": "a[$(touch x)]"})
        assert hostile.status == "failed"
        assert "must be a whole number" in hostile.stderr
    problems = _problems("steps:\n  - run: |\n      cat <<'EOF'\n      ${app}\n      EOF\n")
    assert problems == [
        "site.yaml:6:10: steps[0].run.cmd: " + shell.check(["cat <<'EOF'\n", shell.Reference("app"), "\nEOF\n"])[0]
    ]


#: Where bash (``/bin/sh`` on Fedora, Rocky, AlmaLinux) evaluates a variable's value as arithmetic, in which
#: an index (``a[$(…)]``) runs a command; and what each prints for n=3.
BASH_ARITHMETIC = {
    "(( ${n} > 2 )) && echo yes": "yes",
    '[[ "${n}" -eq 3 ]] && echo yes': "yes",
    "[[ x == x && ${n} -gt 2 ]] && echo yes": "yes",
    "let m=${n}+1; echo $m": "4",
    'a=(p q r s); echo "$${a[${n}]}"': "s",
    's=abcdef; echo "$${s:${n}}"': "def",
    's=abcdef; echo "$${s:1:${n}}"': "bcd",
    "echo $[ ${n} + 1 ]": "4",
    "x=$( (( ${n} )) && echo in ); echo $x": "in",
}


@pytest.mark.parametrize("command", list(BASH_ARITHMETIC))
def test_a_value_where_bash_evaluates_arithmetic_must_be_a_number_and_others_stay_strings(
    command: str, tmp_path: Path
) -> None:
    def run(values: dict[str, str], text: str = command) -> str:
        bound = shell.bind(spec.parts(text), values)
        script = f"cd {shell.quote(str(tmp_path))}\n{bound.assignments()}{bound.text}"
        return subprocess.run(["bash", "--posix", "-c", script], capture_output=True, text=True, check=True).stdout

    hostile = "a[$(touch ran)]"
    assert run({"n": "3"}) == BASH_ARITHMETIC[command] + "\n"
    with pytest.raises(shell.BindError, match="evaluates arithmetic.*must be a whole number"):
        run({"n": hostile})
    # After the arithmetic, and in a [[ ]] that compares strings, the same value is text.
    assert run({"n": "3", "w": hostile}, f"{command}; [[ ${{w}} == a* ]] && printf '%s' ${{w}}").endswith(hostile)
    assert not (tmp_path / "ran").exists()


#: More places bash evaluates as arithmetic: after if, while, for, !, {, a case pattern; an array's index
#: in an assignment, in its words, given to -v, unset, read, printf -v; declare -i; \let.
BASH_ARITHMETIC_TOO = [
    "for((i=0;i<${n};i++)); do :; done",
    "if((${n}>1)); then :; fi",
    "while((${n}>5)); do break; done",
    "! (( ${n} ))",
    "true && (( ${n} ))",
    "{ (( ${n} )); }",
    "time (( ${n} ))",
    "case a in a) (( ${n} ));; esac",
    "a[${n}]=1",
    "a=([${n}]=1)",
    "declare -i c=${n}",
    "f() { local -i c=${n}; }; f",
    "[[ -v a[${n}] ]]",
    '[ -v "a[${n}]" ]',
    'printf -v "a[${n}]" %s x',
    "unset a[${n}]",
    "read a[${n}] < /dev/null",
    "\\let c=${n}",
    "X=1 let y=${n}",
    'builtin let "x=${n}"',
    "command let x=${n}",
    "declare -i c; c=${n}",
    "f() { local -i c; c+=${n}; }; f",
    "declare -a arr=([${n}]=x)",
    'declare -A seen; printf -v "seen[${n}]" %s 1',
    "declare -g \\\n  -i count=${n}",
    # After a comment, a here-document, a closing parenthesis: a command starts on the next line.
    "cd /tmp   # the app\nif (( ${n} > 1 )); then :; fi",
    "cat <<EOF # c\nx\nEOF\n(( ${n} ))",
    "true # c1\n# c2\nlet x=${n}",
    "(cd /tmp)\na[${n}]=1",
    # A quoted parenthesis inside the arithmetic does not make it two parentheses.
    "echo $(( ${n} + $(printf ')' | wc -c) ))",
    "(( ${n} > $(grep -c ')' /etc/hostname) ))",
    "coproc ((${n})); wait",
    # Variables declared integer, however they are assigned; and an array's keys, associative or not.
    "declare -i c; export c=${n}",
    "declare -i c; c[1]=${n}",
    "declare -i c; c=(${n})",
    "declare -i c; for c in ${n}; do :; done",
    'declare "-i" c=${n}',
    "declare -A m; unset m; m[${n}]=1",
    "( declare -A m ); m[${n}]=1",
    # Command words spelt with quotes or a backslash.
    "'let' x=${n}",
    '"let" "x=${n}"',
    "l\\et x=${n}",
]

#: Where bash reads the value as a variable's name, in which an index is evaluated: it must be a name.
BASH_NAMES = [
    "[[ -v ${n} ]]",
    'test -v "${n}"',
    'printf -v "${n}" %s x',
    "read -r ${n} <<< 1",
    'declare "${n}=1"',
    'declare -n r="${n}"; echo "$r"',
    "unset ${n}",
]

#: Texts that look like those but where bash reads the value as a string: kept.
BASH_STRINGS = [
    "echo let ${x}",
    'printf "%s\\n" let ${x}',
    "[[ ${x} == a* && ${n} -gt 0 ]]",
    "[[ -n ${x} && 1 -gt 0 ]]",
    'declare -A m=([a]=1); k=${x}; m[$k]=2; echo "$${m[$k]}"',  # a key through a variable, as the error says
    "((cd / && true) 2>&1; echo ${x}) | cat",
    "declare y=${x}; echo $y",
    'export GIT_SSH_COMMAND="ssh -i ~/.ssh/deploy_key" APP_DIR=${x}',
    'readonly CONF=${x} DOCKER_FLAGS="--rm -i"',
    'logger -t deploy "app[${x}] deployed"; echo "release[${x}] done"',
    "for f in conf[${x}]*; do :; done",
    'grep -v "${x}" /etc/hostname || true',  # -v of grep, docker, command, curl is no variable's name
    "command -v ${x} >/dev/null || true",
    "read -rp ${x} answer < /dev/null || true",
    "unset -f ${x}",
    "((cd / && true) > /dev/null 2>&1); out=$((cd / && pwd) 2>&1); echo ${x}",
    'read -r a b <<< "${x}"; echo "${x}"',
    'read -p "${x}" v < /dev/null || true',
    "case ${x} in a) echo a ;; *) echo other   # fallback\nesac\nprintf '<%s>\\n' ${x}",
]


@pytest.mark.parametrize("command", BASH_ARITHMETIC_TOO)
def test_a_hostile_value_is_refused_wherever_bash_evaluates_arithmetic(command: str, tmp_path: Path) -> None:
    with pytest.raises(shell.BindError, match="evaluates arithmetic"):
        shell.bind(spec.parts(command), {"n": "a[$(touch ran)]"})
    bound = shell.bind(spec.parts(command), {"n": "3"})  # a number is fine
    script = f"cd {shell.quote(str(tmp_path))}\n{bound.assignments()}{bound.text}"
    assert subprocess.run(["bash", "--posix", "-c", script], capture_output=True).returncode in (0, 1)


@pytest.mark.parametrize("command", BASH_NAMES)
def test_a_value_where_bash_reads_a_variable_s_name_must_be_a_name(command: str) -> None:
    with pytest.raises(shell.BindError, match="reads a variable's name"):
        shell.bind(spec.parts(command), {"n": "a[$(touch ran)]"})
    assert "_poseidon_1" in shell.bind(spec.parts(command), {"n": "plain_name"}).text


@pytest.mark.parametrize("command", BASH_STRINGS)
def test_a_value_bash_reads_as_a_string_is_kept_next_to_arithmetic_look_alikes(command: str, tmp_path: Path) -> None:
    hostile = "a[$(touch ran)] prod"
    bound = shell.bind(spec.parts(command), {"x": hostile, "n": "3"})
    script = f"cd {shell.quote(str(tmp_path))}\n{bound.assignments()}{bound.text}"
    done = subprocess.run(["bash", "--posix", "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr  # bash ran the text as it is meant, the value as a string
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("echo 's=${app}'", "is inside single quotes"),
        ("sh -c 'cd ${app} && make'", "is inside single quotes"),
        ("echo \"$(echo '${app}')\"", "is inside single quotes"),
        ("echo a\\${app}", "follows a backslash"),
        ("cat <<'EOF'\n${app}\nEOF", "quoted here-document"),
    ],
)
def test_a_reference_where_the_shell_could_only_paste_it_is_refused_by_validate(command: str, why: str) -> None:
    problems = _problems(f"steps:\n  - run: {json.dumps(command)}\n")
    assert len(problems) == 1 and why in problems[0], problems


def test_an_environment_value_in_a_run_command_prints_verbatim_through_the_command(
    tmp_path: Path, shared_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's first case, as a user runs it: a branch name that would have run `touch`."""
    marker = shared_sandbox.home("test") / "branch-ran"
    playbook = tmp_path / "site.yaml"
    playbook.write_text(
        'version: 1\ndroplets: [test]\nsteps:\n  - run: echo "deploying branch ${env:BRANCH}"\n'
        "report: {ps: false, top: false}\n"
    )
    branch = f"main$(touch {marker})`touch {marker}`"
    point_at(shared_sandbox, monkeypatch)
    done = subprocess.run(
        [sys.executable, "-m", "poseidon.cli", "apply", str(playbook), "--json"],
        env={**os.environ, "BRANCH": branch},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert f'"stdout_tail": "deploying branch {branch}"' in done.stdout
    assert not marker.exists()


# -- variables that use variables ------------------------------------------------------

HEAD = "version: 1\nname: site\ndroplets: [test]\n"


def _problems(body: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        spec.loads(HEAD + "vars: {app: a}\n" + body, "site.yaml")
    return [str(p) for p in caught.value.problems]


def test_variables_resolve_through_each_other_in_any_order() -> None:
    playbook = spec.loads(
        HEAD
        + "vars:\n  url: 'http://${droplet.ip_address}:${port}${path}'\n  port: 5100\n"
        + "  path: '/${env:PREFIX}/x'\nsteps: [{run: 'echo ${url}'}]\n"
    )
    values = spec.substitutions(playbook, droplet={"ip_address": "10.1.2.3"}, environ={"PREFIX": "api"})
    assert values["url"] == "http://10.1.2.3:5100/api/x"
    assert playbook.env_names() == ["PREFIX"]


def test_a_cycle_an_unknown_name_and_a_bad_reference_in_vars_are_refused_where_written() -> None:
    with pytest.raises(SpecError) as caught:
        spec.loads(
            HEAD + "vars:\n  a: '${b}'\n  b: 'x${c}'\n  c: '${a}'\n  d: '${nope}'\n  e: '${droplet.nope}'\n"
            "steps: [{run: 'true'}]\n",
            "site.yaml",
        )
    assert [str(p) for p in caught.value.problems] == [
        "site.yaml:5:6: vars.a: the variables refer to each other in a cycle: ${a} -> ${b} -> ${c} -> ${a}",
        "site.yaml:8:6: vars.d: undefined variable 'nope'",
        "site.yaml:9:6: vars.e: unknown droplet attribute 'nope' (known: name, id, ip_address, "
        "private_ip_address, region, tags)",
    ]


def test_every_missing_environment_variable_is_listed_at_once(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    from poseidon.cli import main

    playbook = tmp_path / "site.yaml"
    playbook.write_text(
        HEAD + "vars: {url: 'http://${env:HOST_A}/', token: {secret: true, env: TOKEN_B}}\n"
        "steps: [{run: 'echo ${url} ${env:PLAIN_C}'}]\n"
    )
    saved = dict(os.environ)
    os.environ.update(shared_sandbox.environ)
    try:
        assert main(["apply", str(playbook)]) == 2
    finally:
        os.environ.clear()
        os.environ.update(saved)
    err = capsys.readouterr().err
    assert "PLAIN_C, HOST_A, TOKEN_B" in err


def test_two_nohup_steps_with_one_process_name_are_refused() -> None:
    assert _problems(
        "steps:\n  - nohup: {cmd: 'sleep 1', name: web}\n  - run: 'true'\n  - nohup: {cmd: 'sleep 2', name: web}\n"
        "  - nohup: 'sleep 3'\n  - nohup: 'sleep 3'\n"
    ) == [
        "site.yaml:8:5: steps[2]: process 'web' is already started by steps[0]: two nohup steps would fight"
        " over it; give one another name:",
        "site.yaml:10:5: steps[4]: process 'sleep-"
        + spec.NohupStep(cmd="sleep 3").process_name()[6:]
        + "' is already started by steps[3]: two nohup steps would fight over it; give one another name:",
    ]


def test_the_library_keeps_plain_shell_when_no_values_are_given(sandbox_env: Sandbox) -> None:
    """The seed API's commands are shell as written: ``${HOME}`` is the shell's own."""
    with po.connect().droplets.by_name("other").connect() as ssh:
        outcome = ssh.run_step(steps.build("run", cmd="echo ${HOME}"))
        assert outcome.stdout == str(sandbox_env.home("other"))


def test_a_droplet_found_by_tag_with_a_name_poseidon_would_refuse_stops_the_run_before_any_connection() -> None:
    """A hostile API (or a console typo) names a tagged droplet as no playbook may: refused, escaped."""
    from poseidon import targets
    from poseidon.droplet import Droplet
    from poseidon.errors import ResolveError

    class Droplets:
        def find_many(self, names: object) -> dict[str, list[Droplet]]:
            return {}

        def list(self, tag: str | None = None) -> list[Droplet]:
            return [Droplet({"id": 7, "name": "web-1"}), Droplet({"id": 8, "name": "web-$(touch x)\n\x1b[2J"})]

    class Client:
        droplets = Droplets()

    playbook = spec.loads("version: 1\ndroplets: [{tag: web}]\nsteps: [{run: 'true'}]\n")
    with pytest.raises(ResolveError) as caught:
        targets.resolve(playbook, Client())  # type: ignore[arg-type]
    assert str(caught.value) == (
        "'web-$(touch x)\\n\\x1b[2J' is not a droplet name (letters, digits, . and -) (droplet 8, tag 'web')"
    )


def test_code_for_another_shell_gets_a_value_through_env_as_the_readme_says(sandbox_env: Sandbox) -> None:
    home = sandbox_env.home("other")
    values = _values(home / "env-markers")
    (home / "env-markers").mkdir(exist_ok=True)
    step = steps.build("run", cmd="""sh -c 'printf %s "$DIR"' > via-env""", env={"DIR": "${app}"})
    with po.connect().droplets.by_name("other").connect() as ssh:
        assert ssh.run_step(spec.expand(step, values), values=values).status == "changed"
    assert (home / "via-env").read_text() == values["app"]
    assert list((home / "env-markers").iterdir()) == []


def test_two_nohup_steps_whose_names_become_one_on_a_droplet_stop_it_before_any_step(
    tmp_path: Path, shared_sandbox: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from poseidon.cli import main

    point_at(shared_sandbox, monkeypatch)
    playbook = tmp_path / "site.yaml"
    playbook.write_text(
        "version: 1\ndroplets: [test]\nvars: {a: web, b: '${env:OTHER}'}\nsteps:\n"
        "  - run: touch must-not-run\n"
        "  - nohup: {cmd: sleep 1, name: '${a}'}\n  - nohup: {cmd: sleep 2, name: '${b}'}\n"
        "report: {ps: false, top: false}\n"
    )
    monkeypatch.setenv("OTHER", "web")
    assert main(["apply", str(playbook), "--json"]) == 1
    droplet = json.loads(capsys.readouterr().out)["droplets"][0]
    assert droplet["error"] == (
        "steps[2]: process 'web' is already started by steps[1]: two nohup steps would fight over it;"
        " give one another name:"
    )
    assert not (shared_sandbox.home("test") / "must-not-run").exists()


@pytest.mark.sandbox
def test_hostile_values_a_hostile_api_gives_run_nothing_in_an_apply_and_arrive_verbatim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API itself turned hostile: a proxy in front of the sandbox's gives the droplet found by its tag
    a hostile tag and a private address holding a newline; then adds a tagged droplet with a hostile name."""
    import http.server

    import requests

    from support.sandboxes import pointed
    from support.stubhttp import send_json, serving

    markers = tmp_path / "markers"
    markers.mkdir()
    hostile = {key: PAYLOAD.format(m=markers / key) for key in ("tag", "ip", "name")}
    extra: list[dict[str, object]] = []

    def tampered(droplet: dict[str, object]) -> dict[str, object]:
        if droplet.get("name") == "tagged":
            droplet["tags"] = ["web", hostile["tag"]]
            networks = droplet["networks"]
            assert isinstance(networks, dict)
            networks["v4"].append({"ip_address": hostile["ip"], "netmask": "255.255.240.0", "type": "private"})
        return droplet

    with pointed([{"name": "tagged", "tags": ["web"]}], monkeypatch) as sandbox:
        upstream = sandbox.environ["POSEIDON_SANDBOX_HTTP_URL"]

        class HostileAPI(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                answer = requests.get(upstream + self.path, headers={"Authorization": self.headers["Authorization"]})
                body = answer.json()
                if "droplets" in body:
                    body["droplets"] = [tampered(d) for d in body["droplets"]] + [
                        d for d in extra if "tag_name=web" in self.path
                    ]
                elif "droplet" in body:
                    body["droplet"] = tampered(body["droplet"])
                send_json(self, answer.status_code, body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        with serving(HostileAPI) as url:
            monkeypatch.setenv("POSEIDON_API_URL", url)
            playbook = tmp_path / "site.yaml"
            playbook.write_text(
                "version: 1\ndroplets: [{tag: web}]\nsteps:\n"
                "  - run: \"printf '%s' ${droplet.tags} > tags-run; printf '%s' \\\"${droplet.private_ip_address}\\\""
                ' > ip-run"\n'
                "  - run: {cmd: 'true', unless: \"printf '%s' ${droplet.tags} > tags-unless; false\"}\n"
                "  - nohup: {cmd: \"printf '%s' ${droplet.private_ip_address} > ip-nohup; exec sleep 30\","
                ' name: hostile, ready: {cmd: "printf \'%s\' \\"${droplet.tags}\\" > tags-ready"}}\n'
                "report: {ps: false, top: false}\n"
            )

            def apply() -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [sys.executable, "-m", "poseidon.cli", "apply", str(playbook), "--json"],
                    capture_output=True,
                    text=True,
                    cwd=tmp_path,
                )

            done = apply()
            assert done.returncode == 0, done.stdout + done.stderr
            home = sandbox.home("tagged")
            tags = "web," + hostile["tag"]
            assert (home / "tags-run").read_text() == tags
            assert (home / "tags-unless").read_text() == tags
            assert (home / "tags-ready").read_text() == tags
            assert (home / "ip-run").read_text() == hostile["ip"]
            assert (home / "ip-nohup").read_text() == hostile["ip"]
            (home / "tags-run").unlink()

            document = dict(sandbox.emulator.droplets()[0], id=99999, name=hostile["name"])
            extra.append(document)
            done = apply()
            assert done.returncode != 0
            assert "is not a droplet name (letters, digits, . and -) (droplet 99999, tag 'web')" in done.stderr
            assert not (home / "tags-run").exists(), "a step ran although a droplet of the tag was refused"
    assert list(markers.iterdir()) == [], "a value from the API ran as a command"
