"""The pydantic models of a playbook's parts: the report, the droplets (by name or by
tag, with what creates them and their DNS record), the steps, secret variables.

Each step is written as a one-key mapping, ``{kind: body}``: a scalar or list body
fills the step's ``primary`` field (the short form), a mapping body gives its options
(the long form). :func:`written_step` is the one place that tells the kinds apart: it
turns the written form into the models' shape (``{"kind": "apt", "packages": [...]}``),
for the step union and for the YAML loader alike, so pydantic's error locations read
``("steps", 3, "apt", "packages")``.

Imports :mod:`.fields`, :mod:`.locations` and :mod:`.references`; knows nothing of the
whole playbook (:mod:`.playbook`) or of YAML (:mod:`.source`).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from poseidon.errors import did_you_mean
from poseidon.spec.fields import (
    AptPackages,
    Command,
    DomainName,
    DropletName,
    DropletTag,
    EnvName,
    FileMode,
    GitRef,
    Host,
    HttpUrl,
    Identifier,
    Line,
    LocalPath,
    Owner,
    PathText,
    PipRequirements,
    PlainValue,
    Port,
    RecordName,
    Repository,
    ServiceName,
    Slug,
    Text,
    User,
    checked_text,
    fail,
    is_shorthand,
    process_name,
)
from poseidon.spec.locations import Source
from poseidon.spec.references import IDENT


class Model(BaseModel):
    # strict: YAML's `yes` is a boolean and must not become the string "True".
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


class Report(Model):
    """What poseidon reports about every droplet after the steps."""

    ps: bool = Field(default=True, description="Take a `ps -Af` snapshot of every droplet.")
    top: bool = Field(
        default=True,
        description="Take a `ps -Ao %cpu,%mem,user,comm` snapshot of every droplet.",
    )


class CreateDroplet(Model):
    """How to create the droplet when no droplet has its name yet."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"region": "nyc3", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64", "ssh_keys": ["laptop"]}]
        }
    )

    region: Slug = Field(description="Region slug, e.g. nyc3.")
    size: Slug = Field(description="Size slug, e.g. s-1vcpu-1gb.")
    image: Slug | int = Field(description="Image slug (e.g. ubuntu-24-04-x64) or image id.")
    ssh_keys: list[Line | int] = Field(
        default_factory=list, description="SSH keys to install: names, ids or fingerprints."
    )
    tags: list[DropletTag] = Field(default_factory=list, description="Tags the new droplet carries.")
    user_data: Text | None = Field(default=None, description="cloud-init user data for the first boot.")
    ipv6: bool = Field(default=False, description="Give it a public IPv6 address too.")
    monitoring: bool = Field(default=False, description="Install the monitoring agent.")
    backups: bool = Field(default=False, description="Enable weekly backups (billed).")
    _sources: dict[str, Source] = PrivateAttr(default_factory=dict)

    def source(self, field: str) -> Source | None:
        """Where ``field`` was written, when the playbook was read from YAML."""
        return self._sources.get(field)


class DNSRecord(Model):
    """An A record that follows the droplet's public IPv4: created when missing, updated when it moved."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"domain": "example.com", "name": "www", "ttl": 300}]})

    domain: DomainName = Field(description="The domain (created in the account when it has none of that name).")
    name: RecordName = Field(
        default="@", description="The record's name in the domain: www, or @ for the domain itself."
    )
    ttl: int = Field(default=1800, ge=30, description="Seconds resolvers may keep the answer.")

    @property
    def fqdn(self) -> str:
        """The name the record answers for: ``www.example.com``, or the domain itself for ``@``."""
        return self.domain if self.name == "@" else f"{self.name}.{self.domain}"


class NamedDroplet(Model):
    """One droplet, found by its name. A plain string entry is its name."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "web-2", "user": "root", "port": 22}]})

    name: DropletName = Field(description="The droplet's name, as the API lists it.")
    user: User = None
    port: Port = None
    create: CreateDroplet | None = Field(
        default=None, description="Create the droplet like this when no droplet has this name."
    )
    dns: DNSRecord | None = Field(default=None, description="Keep an A record pointing at the droplet's public IPv4.")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class TaggedDroplets(Model):
    """Every droplet that carries a tag."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"tag": "workers"}]})

    tag: DropletTag = Field(description="The tag; every droplet carrying it is selected.")
    user: User = None
    port: Port = None


def _droplet_member(value: Any) -> str | None:
    if isinstance(value, (str, NamedDroplet)):
        return "NamedDroplet"
    if isinstance(value, TaggedDroplets):
        return "TaggedDroplets"
    if isinstance(value, dict):
        if "name" in value:
            return "NamedDroplet"
        if "tag" in value:
            return "TaggedDroplets"
    return None


DROPLET_TAGS = ("NamedDroplet", "TaggedDroplets")


DropletRef = Annotated[
    Annotated[NamedDroplet, Tag("NamedDroplet")] | Annotated[TaggedDroplets, Tag("TaggedDroplets")],
    Discriminator(
        _droplet_member,
        custom_error_type="droplet",
        custom_error_message="a droplet entry is a name, or a mapping with name: or tag:",
    ),
]


class StepBase(Model):
    """Options every step takes."""

    primary: ClassVar[str]
    """The field a short form (``kind: value``) fills."""
    long_only: ClassVar[str] = ""
    """For a kind with no short form (one value cannot make it), how its mapping begins."""
    shell_fields: ClassVar[frozenset[str]] = frozenset()
    """The fields (dotted paths) that hold shell the user wrote: their references are bound, not pasted."""

    name: Line | None = Field(default=None, description="A label for the step, shown in reports.")
    sudo: bool = Field(default=False, description="Run the step with `sudo -n`.")
    env: dict[EnvName, Text] = Field(default_factory=dict, description="Environment variables for the step's commands.")
    timeout: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Seconds after which the step fails; default: no limit.",
    )

    _source: Source | None = PrivateAttr(default=None)

    @property
    def source(self) -> Source | None:
        """Where the step was written, when it was loaded from a file."""
        return self._source

    def __eq__(self, other: object) -> bool:
        # Two steps that do the same are equal wherever they were written.
        if not isinstance(other, StepBase):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # the fields hold lists and dicts


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class ChdirStep(StepBase):
    """Set the working directory of every later step; fails when it does not exist."""

    model_config = _examples({"kind": "chdir", "path": "hello_world"})
    primary: ClassVar[str] = "path"

    kind: Literal["chdir"] = Field(default="chdir", description="The step's kind.")
    path: PathText = Field(description="Directory, relative to the previous one; `~` at the start is home.")


class AptStep(StepBase):
    """Install Debian packages with apt-get, only those dpkg reports missing."""

    model_config = _examples(
        {"kind": "apt", "packages": ["git", "python3-venv"]},
        {"kind": "apt", "packages": ["nginx"], "update": True},
    )
    primary: ClassVar[str] = "packages"

    kind: Literal["apt"] = Field(default="apt", description="The step's kind.")
    packages: AptPackages = Field(min_length=1, description="Package names, with optional :arch and =version.")
    update: bool = Field(default=False, description="Refresh the package lists first.")


class GitStep(StepBase):
    """Clone a repository, or fetch and reset an existing clone, and check out a ref."""

    model_config = _examples(
        {"kind": "git", "repo": "changhiskhan/hello_world"},
        {"kind": "git", "repo": "https://github.com/org/app.git", "dest": "app", "ref": "main"},
    )
    primary: ClassVar[str] = "repo"

    kind: Literal["git"] = Field(default="git", description="The step's kind.")
    repo: Repository = Field(description="owner/name on GitHub, or a git URL (https, http, ssh, file, git@host:path).")
    dest: PathText | None = Field(default=None, description="Directory to clone into; default: the repository's name.")
    ref: GitRef | None = Field(
        default=None, description="Branch, tag or commit to check out; default: the remote's HEAD."
    )
    token_env: EnvName = Field(
        default="GITHUB_TOKEN",
        description="Environment variable, on the machine running poseidon, holding a token.",
    )

    def url(self) -> str:
        """The URL git clones: GitHub shorthand becomes ``https://github.com/owner/name.git``."""
        if is_shorthand(self.repo):
            name = self.repo if self.repo.endswith(".git") else f"{self.repo}.git"
            return f"https://github.com/{name}"
        return self.repo

    def target(self) -> str:
        """The directory the clone lands in: ``dest``, or the repository's last path component."""
        if self.dest:
            return self.dest
        tail = re.split(r"[/:]", self.repo.rstrip("/"))[-1]
        return tail.removesuffix(".git") or tail


class _PythonTarget(StepBase):
    """Where pip steps install: a virtualenv by default."""

    venv: PathText = Field(default=".venv", description="The virtualenv, relative to the working directory.")
    system: bool = Field(
        default=False,
        description=(
            "Install into the system Python instead of a virtualenv. This overrides PEP 668's"
            " protection of the distribution's own packages (pip --break-system-packages):"
            " only for droplets that run nothing else."
        ),
    )


class PipStep(_PythonTarget):
    """Install pip packages into a virtualenv, created when missing."""

    model_config = _examples(
        {"kind": "pip", "packages": ["flask", "gunicorn>=21"]},
        {"kind": "pip", "packages": ["pandas"], "venv": "/opt/app/venv"},
    )
    primary: ClassVar[str] = "packages"

    kind: Literal["pip"] = Field(default="pip", description="The step's kind.")
    packages: PipRequirements = Field(
        min_length=1, description="Requirements, one word each (flask, flask>=3, git+https://...)."
    )


class PipRStep(_PythonTarget):
    """Install a requirements file (a path on the droplet) into a virtualenv."""

    model_config = _examples({"kind": "pip_r", "requirements": "requirements.txt"})
    primary: ClassVar[str] = "requirements"

    kind: Literal["pip_r"] = Field(default="pip_r", description="The step's kind.")
    requirements: PathText = Field(description="The requirements file on the droplet.")


class ReadyCheck(Model):
    """When a started process counts as ready: exactly one of ``port``, ``http`` or ``cmd``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"port": 5000}, {"http": "http://127.0.0.1:5000/health"}, {"cmd": "test -S app.sock"}]
        }
    )

    port: int | None = Field(default=None, ge=1, le=65535, description="Ready when this TCP port accepts a connection.")
    host: Host | None = Field(default=None, description="Where `port` is tried; default: the droplet's own address.")
    http: HttpUrl | None = Field(default=None, description="Ready when this URL answers with a 2xx status.")
    cmd: Command | None = Field(default=None, description="Ready when this shell command exits 0.")
    timeout: float = Field(
        default=30, gt=0, allow_inf_nan=False, description="Seconds to wait for readiness before the step fails."
    )

    @model_validator(mode="after")
    def _one_check(self) -> ReadyCheck:
        given = [name for name in ("port", "http", "cmd") if getattr(self, name) is not None]
        if len(given) != 1:
            fail(f"ready takes exactly one of port:, http: or cmd: (found {', '.join(given) or 'none'})")
        if self.host is not None and self.port is None:
            fail("ready: host: goes with port:")
        return self


def _restart_mode(value: Any) -> Any:
    # Before restart: took a mode, true meant "always" and false what is now "on-change".
    if value is True:
        return "always"
    if value is False:
        return "on-change"
    return value


class _Supervised(StepBase):
    """What ``nohup`` and ``service`` steps share: when the started process counts as started."""

    ready: ReadyCheck | None = Field(
        default=None,
        description=(
            "Wait until it is ready (a port, a URL, a command), or fail with the end of its output"
            " (a nohup's log, a service's journal)."
        ),
    )
    grace: float = Field(
        default=1.0,
        ge=0,
        allow_inf_nan=False,
        description="Without ready: seconds to wait after starting before checking it still runs.",
    )


class NohupStep(_Supervised):
    """Start a detached process that outlives the session, supervised: its own session and
    process group, an identity file, restarts when its inputs change, a readiness check."""

    model_config = _examples(
        {"kind": "nohup", "cmd": "python app.py"},
        {
            "kind": "nohup",
            "cmd": ".venv/bin/python app.py",
            "name": "web",
            "log": "web.log",
            "restart": "on-change",
            "ready": {"port": 5000},
        },
    )
    primary: ClassVar[str] = "cmd"
    shell_fields: ClassVar[frozenset[str]] = frozenset({"cmd", "ready.cmd"})

    kind: Literal["nohup"] = Field(default="nohup", description="The step's kind.")
    cmd: Command = Field(description="The shell command to start.")
    log: PathText | None = Field(default=None, description="Log file; default: <process name>.log.")
    restart: Annotated[
        Literal["on-change", "always", "never"],
        BeforeValidator(_restart_mode),
        WithJsonSchema({"anyOf": [{"enum": ["on-change", "always", "never"]}, {"type": "boolean"}]}),
    ] = Field(
        default="on-change",
        description=(
            "on-change: restart when the command, env, user or directory changed, or an earlier step on the"
            " droplet changed (a new commit, new requirements); always: on every apply; never: only start it"
            " when it is not running. (true and false are the older spellings of always and on-change.)"
        ),
    )

    @field_validator("name", mode="wrap")
    @classmethod
    def _process_name(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return checked_text(value, handler, process_name)

    def process_name(self) -> str:
        """``name``, or the command's program and a stable hash of it: ``python-1a2b3c4d``."""
        return self.name or derived_process_name(self.cmd)

    def log_path(self) -> str:
        """``log``, or ``<process_name>.log``."""
        return self.log or f"{self.process_name()}.log"


def derived_process_name(cmd: str) -> str:
    try:
        words = shlex.split(cmd)
    except ValueError:
        words = cmd.split()
    # Leading VAR=value assignments say nothing about what runs.
    words = [w for w in words if not re.fullmatch(rf"{IDENT}=.*", w, re.DOTALL)]
    program = posixpath.basename(words[0].rstrip("/")) if words else ""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", program).strip("-.")[:32] or "process"
    digest = hashlib.sha256(cmd.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{slug}-{digest}"


class RunStep(StepBase):
    """Run a shell command; ``creates`` and ``unless`` make it skip, as in Ansible; ``changes: false``
    makes it a check."""

    model_config = _examples(
        {"kind": "run", "cmd": "curl -fsS localhost:5000/", "changes": False},
        {"kind": "run", "cmd": "make install", "creates": "/usr/local/bin/app"},
    )
    primary: ClassVar[str] = "cmd"
    shell_fields: ClassVar[frozenset[str]] = frozenset({"cmd", "unless"})

    kind: Literal["run"] = Field(default="run", description="The step's kind.")
    cmd: Command = Field(description="The shell command.")
    creates: Text | None = Field(default=None, description="Skip the step when this path exists.")
    unless: Text | None = Field(default=None, description="Skip the step when this shell command exits 0.")
    changes: bool = Field(
        default=True,
        description=(
            "false: the command only checks (a smoke test): ok when it exits 0, failed otherwise, never"
            " changed; plan runs it too."
        ),
    )

    @model_validator(mode="after")
    def _a_check_is_never_skipped(self) -> RunStep:
        guards = [name for name in ("creates", "unless") if getattr(self, name) is not None]
        if not self.changes and guards:
            fail(
                f"changes: false makes the step a check, which runs every time: {' and '.join(guards)}"
                " would skip it (put the condition in the check's command instead)"
            )
        return self


class FileStep(StepBase):
    """Put content at a path on the droplet: written whole, atomically, with its mode and owner;
    ok when content, mode and owner already match."""

    model_config = _examples(
        {"kind": "file", "path": "app.ini", "content": "name = ${droplet.name}\n", "mode": "0640"},
        {"kind": "file", "path": "/etc/nginx/sites-enabled/app", "template": "nginx.conf", "owner": "root"},
        {"kind": "file", "path": "static/logo.png", "src": "files/logo.png"},
    )
    primary: ClassVar[str] = "path"
    long_only: ClassVar[str] = "file: {path: ..., content: ...}"

    kind: Literal["file"] = Field(default="file", description="The step's kind.")
    path: PathText = Field(description="The file on the droplet, relative to the working directory; `~` is home.")
    content: Text | None = Field(default=None, description="The file's text, with ${...} substituted.")
    src: LocalPath | None = Field(
        default=None, description="A file beside the playbook, copied byte for byte (binary files too)."
    )
    template: LocalPath | None = Field(
        default=None, description="A text file beside the playbook whose ${...} are substituted as in steps."
    )
    mode: FileMode | None = Field(
        default=None, description="Octal mode, quoted ('0644'); default: 0644 for a new file, kept for an existing one."
    )
    owner: Owner | None = Field(default=None, description="Owner (name or number); default: kept, or the login user.")
    group: Owner | None = Field(
        default=None,
        description="Group (name or number); default: kept, or the writing user's (the login user's at home).",
    )

    @field_validator("path")
    @classmethod
    def _names_a_file(cls, value: str) -> str:
        if value in (".", "..", "~", "~/") or value.endswith(("/", "/.", "/..")):
            fail(f"{value!r} names a folder, not a file: end it with the file's name")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> FileStep:
        given = [name for name in ("content", "src", "template") if getattr(self, name) is not None]
        if not given:
            fail("file needs what to write besides its path: content:, src: or template:")
        if len(given) > 1:
            fail(f"file takes exactly one of content:, src: or template: (found {', '.join(given)})")
        return self

    def needs_root(self) -> bool:
        """Whether writing it takes root: an owner or group is set (only root gives files away)."""
        return self.owner is not None or self.group is not None


class ServiceStep(_Supervised):
    """Run a command as a systemd service poseidon writes, enables at boot and starts: a
    ``nohup`` that survives reboots. Restarts and readiness as for ``nohup``."""

    model_config = _examples(
        {"kind": "service", "name": "web", "cmd": ".venv/bin/python app.py", "ready": {"port": 5000}},
        {"kind": "service", "name": "worker", "cmd": "./worker --queue jobs", "user": "app", "restart": "always"},
    )
    primary: ClassVar[str] = "cmd"
    long_only: ClassVar[str] = "service: {name: ..., cmd: ...}"
    shell_fields: ClassVar[frozenset[str]] = frozenset({"cmd", "ready.cmd"})

    kind: Literal["service"] = Field(default="service", description="The step's kind.")
    name: ServiceName = Field(  # required here, where other steps make it optional
        max_length=64, description="The service's name: its unit is poseidon-<name>.service."
    )
    cmd: Command = Field(description="The shell command the service runs, in the working directory of the step.")
    user: User = Field(default=None, description="The user the service runs as; default: the user poseidon logs in as.")
    restart: Annotated[
        Literal["on-change", "always", "never"],
        WithJsonSchema({"enum": ["on-change", "always", "never"]}),
    ] = Field(
        default="on-change",
        description=(
            "on-change: restart when its command, env, user or directory changed, or an earlier step on the"
            " droplet changed; always: on every apply; never: only start it when it is not running."
        ),
    )

    def unit(self) -> str:
        """The systemd unit's name: ``poseidon-<name>.service``."""
        return f"poseidon-{self.name}.service"


STEP_MODELS: dict[str, type[StepBase]] = {
    "chdir": ChdirStep,
    "apt": AptStep,
    "git": GitStep,
    "pip": PipStep,
    "pip_r": PipRStep,
    "nohup": NohupStep,
    "run": RunStep,
    "file": FileStep,
    "service": ServiceStep,
}
STEP_KINDS: tuple[str, ...] = tuple(STEP_MODELS)


#: Step kinds people write from habit (Ansible, pyinfra, shell), and poseidon's word for them.
_KIND_HABITS = {
    "shell": "run",
    "command": "run",
    "cmd": "run",
    "exec": "run",
    "cd": "chdir",
    "apt_get": "apt",
    "package": "apt",
    "copy": "file",
    "template": "file",
    "systemd": "service",
}


def written_step(value: object) -> tuple[dict[str, Any] | None, str | None]:
    """A step as written, ``{kind: body}``, in the models' shape ``{"kind": kind, ...}``; and why
    it is no step, when it is not. The one place that tells the kinds apart.

    The shape is there whenever the body can be read, even with a problem
    (``{run: {kind: x, cmd: ...}}``), so that the checks across fields still read its values.
    """
    known = ", ".join(STEP_KINDS)
    if isinstance(value, dict) and len(value) == 1:
        ((kind, body),) = value.items()
        model = STEP_MODELS.get(kind) if isinstance(kind, str) else None
        if model is None:
            hint = ""
            if isinstance(kind, str):
                hint = (
                    f": did you mean {_KIND_HABITS[kind]!r}?"
                    if kind in _KIND_HABITS
                    else did_you_mean(kind, STEP_KINDS)
                )
            return None, f"unknown step kind {kind!r}{hint} (known kinds: {known})"
        if body is None:
            hint = ' (write "~" in quotes for the home directory)' if kind == "chdir" else ""
            return None, f"{kind} needs a value{hint}"
        if not isinstance(body, dict):
            if model.long_only:
                return None, f"{kind} takes a mapping of options: {model.long_only}"
            return {"kind": kind, model.primary: body}, None
        fields = {"kind": kind, **{key: item for key, item in body.items() if key != "kind"}}
        if "kind" in body:
            return fields, f"{kind}: 'kind' is not an option: the step's key is its kind"
        return fields, None
    if isinstance(value, dict):
        keys = ", ".join(str(key) for key in value) or "none"
        return None, (
            f"a step is a mapping with exactly one key, its kind (found: {keys}); "
            f"put options under it; known kinds: {known}"
        )
    return None, f"a step is a one-key mapping such as 'run: make'; known kinds: {known}"


def _step_form(value: Any) -> Any:
    """What the step union validates: a step model, or the models' own shape (as
    ``model_dump()`` writes it), as they are; the written form in the models' shape."""
    if isinstance(value, StepBase):
        return value
    if isinstance(value, dict) and len(value) != 1 and value.get("kind") in STEP_MODELS:
        return value
    fields, problem = written_step(value)
    if problem is not None:
        fail(problem)
    return fields


Step = Annotated[
    ChdirStep | AptStep | GitStep | PipStep | PipRStep | NohupStep | RunStep | FileStep | ServiceStep,
    Field(discriminator="kind"),
    BeforeValidator(_step_form),
]


class SecretVar(Model):
    """A value masked as *** in every output: written here, or read from this machine's environment."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"secret": True, "env": "DB_PASSWORD"}, {"secret": True, "value": "s3cr3t"}]}
    )

    secret: Literal[True] = Field(description="Always true: the value is masked as *** in all output.")
    value: Text | None = Field(default=None, description="The value itself (prefer env: for real secrets).")
    env: Identifier | None = Field(
        default=None, description="Read the value from this environment variable of the machine running poseidon."
    )

    @model_validator(mode="after")
    def _one_source(self) -> SecretVar:
        if (self.value is None) == (self.env is None):
            raise ValueError("a secret takes exactly one of value: or env:")
        return self


def _plain_or_secret(value: Any) -> str:
    return "secret" if isinstance(value, dict) else "plain"


VarValue = Annotated[
    Annotated[PlainValue, Tag("plain")] | Annotated[SecretVar, Tag("secret")],
    Discriminator(_plain_or_secret),
]
