"""The droplets a run acts on: resolved by name or tag, created when missing, limited, sharded.

:func:`resolve` turns the playbook's droplet entries into :class:`Target` s
through the API, reporting every missing droplet at once;
:func:`check_creates` refuses a ``create:`` the API would refuse, before
anything is made; :func:`create_missing` makes the rest and waits until they
are active. :func:`limit`, :func:`shard` and :func:`check_expected` narrow
and check the list as ``--limit``, ``--shard`` and a plan file ask.
:func:`connect` logs in to a target as its playbook entry and the settings
say, waiting for a droplet still booting.

Imports the playbook's models, the API client, host keys (to pin a created
droplet's key), settings and errors; the SSH client comes through the
droplet, when a target is connected.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from poseidon import api, errors, hostkeys, spec
from poseidon.droplet import Droplet
from poseidon.errors import (
    APIConnectionError,
    APIError,
    NotFoundError,
    PartlyCreatedError,
    Problem,
    ResolveError,
    SpecError,
    SSHConnectError,
    UsageError,
)
from poseidon.settings import Settings

if TYPE_CHECKING:
    from poseidon.ssh import SSHClient

__all__ = [
    "Notice",
    "Target",
    "check_creates",
    "check_expected",
    "connect",
    "create_missing",
    "limit",
    "prices",
    "resolve",
    "shard",
]

#: Called with what a droplet waits for: ``(droplet_name, text)``.
Notice = Callable[[str, str], None]


@dataclass(frozen=True)
class Target:
    """A resolved droplet with the login options its playbook entry gave.

    ``droplet`` is ``None`` for a droplet that does not exist yet and that
    ``create`` says how to make.
    """

    name: str
    droplet: Droplet | None
    user: str | None = None
    port: int | None = None
    create: spec.CreateDroplet | None = None
    #: The A record the playbook keeps pointing at it.
    dns: spec.DNSRecord | None = None

    @property
    def identity(self) -> tuple[int | None, str | None]:
        return (self.droplet.id, self.droplet.ip_address) if self.droplet else (None, None)


def resolve(playbook: spec.Playbook, client: api.Client) -> list[Target]:
    """Every droplet the playbook names, in order, once each; every missing one reported at once.

    A named droplet that does not exist but has ``create:`` becomes a target
    without a droplet: :func:`create_missing` makes it.
    """
    targets: dict[int | str, Target] = {}
    problems: list[str] = []
    found_by_name = client.droplets.find_many(
        ref.name for ref in playbook.droplets if isinstance(ref, spec.NamedDroplet)
    )
    for ref in playbook.droplets:
        try:
            if isinstance(ref, spec.TaggedDroplets):
                found = client.droplets.list(tag=ref.tag)
                if not found:
                    raise ResolveError(f"no droplet carries the tag {ref.tag!r}")
                refused = [
                    f"{problem} (droplet {d.id}, tag {ref.tag!r})"
                    for d in found
                    if (problem := spec.droplet_name_problem(d.name))
                ]
                if refused:
                    raise ResolveError("; ".join(refused))
            else:
                found = found_by_name[ref.name]
                if len(found) != 1 and not (not found and ref.create):
                    client.droplets.by_name(ref.name)  # raises the detailed "none" or "several" error
                if not found:
                    targets.setdefault(ref.name, Target(ref.name, None, ref.user, ref.port, ref.create, ref.dns))
        except ResolveError as exc:
            problems.append(str(exc))
            continue
        record = ref.dns if isinstance(ref, spec.NamedDroplet) else None
        for droplet in found:
            targets.setdefault(droplet.id, Target(droplet.name, droplet, ref.user, ref.port, dns=record))
    names = [t.name for t in targets.values()]
    twins = sorted({n for n in names if names.count(n) > 1})
    if twins:
        problems.append(f"several droplets are named {', '.join(map(repr, twins))}: give them unique names")
    if problems:
        raise ResolveError("; ".join(problems))
    return list(targets.values())


def check_creates(targets: list[Target], client: api.Client) -> list[dict[str, Any]]:
    """Refuse, before anything is created, a ``create:`` the API would refuse: a region, size,
    image or SSH key it does not have, or a size the region does not offer. Raises
    :class:`SpecError` locating each field, with the API's valid choices nearest to it.

    Returns the sizes the API listed (their prices are the report's); none when nothing is to be created.
    """
    creates = [(t.name, t.create) for t in targets if t.droplet is None and t.create is not None]
    if not creates:
        return []
    regions = {str(r["slug"]): r for r in client.regions.list()}
    listed = client.sizes.list()
    sizes = {str(s["slug"]): s for s in listed}
    images: dict[str | int, str] = {}  # per image asked for, why it cannot be used ("" if it can)
    problems: list[Problem] = []

    def refuse(name: str, create: spec.CreateDroplet, field: str, message: str) -> None:
        where = create.source(field) or spec.Source("<playbook>", 0, 0, f"{name}.create.{field}")
        problems.append(Problem(where.file, where.line, where.column, where.path, message))

    for name, create in creates:
        if create.region not in regions:
            refuse(
                name,
                create,
                "region",
                f"{create.region!r} is not a region{errors.did_you_mean(create.region, regions)}",
            )
        elif not regions[create.region].get("available", True):
            refuse(name, create, "region", f"{create.region!r} takes no new droplets now")
        if create.size not in sizes:
            refuse(
                name, create, "size", f"{create.size!r} is not a droplet size{errors.did_you_mean(create.size, sizes)}"
            )
        elif create.region in regions and create.region not in sizes[create.size].get("regions", [create.region]):
            offered = ", ".join(sorted(sizes[create.size].get("regions", [])))
            refuse(name, create, "size", f"{create.size!r} is not offered in {create.region} (it is in: {offered})")
        if create.image not in images:
            images[create.image] = _image_problem(client, create.image)
        if images[create.image]:
            refuse(name, create, "image", images[create.image])
        try:
            client.keys._identifiers(create.ssh_keys)
        except ResolveError as exc:
            refuse(name, create, "ssh_keys", str(exc))
    if problems:
        raise SpecError(problems)
    return listed


def _image_problem(client: api.Client, image: str | int) -> str:
    """Why ``image`` cannot make a droplet (it does not exist), or ``""``."""
    try:
        client.images.get(image)
        return ""
    except NotFoundError:
        pass
    if isinstance(image, int):
        return f"no image has the id {image}"
    slugs = [str(i["slug"]) for i in client.images.list(type="distribution") if i.get("slug")]
    return f"{image!r} is not an image slug{errors.did_you_mean(image, slugs)}"


def create_missing(
    targets: list[Target],
    client: api.Client,
    *,
    pin_host_keys: bool = True,
    known_hosts: str | None = None,
    timeout: float = 300.0,
    owner_tag: str | None = None,
    notice: Notice | None = None,
) -> list[Target]:
    """Create the droplets that do not exist yet, all at once, and wait until they are active.

    Each carries ``owner_tag`` too (the playbook's, :meth:`spec.Playbook.owner_tag`):
    ``destroy`` deletes only droplets that carry it.

    With ``pin_host_keys``, each new droplet gets a host key generated here,
    handed over in its cloud-init user data and recorded under the droplet's
    id before it boots, so even the first connection is verified. The user
    data (it holds the private key) is never logged or reported.
    """
    missing = [t for t in targets if t.droplet is None and t.create is not None]
    requests: dict[str, tuple[dict[str, Any], str | None]] = {}
    for target in missing:  # every user data is checked before anything is created
        assert target.create is not None
        options = target.create.model_dump()
        if owner_tag and owner_tag not in options["tags"]:
            options["tags"] = [*options["tags"], owner_tag]
        public = None
        if pin_host_keys:
            options["user_data"], public = hostkeys.pinned_user_data(options.pop("user_data", None))
        requests[target.name] = (options, public)
    made: dict[str, Droplet] = {}
    started = time.monotonic()

    def say(name: str, text: str) -> None:
        if notice is not None:
            notice(name, text)

    try:
        for name, (options, public) in requests.items():
            say(name, f"creating it ({options['region']}, {options['size']}, {options['image']})")
            made[name] = client.droplets.create(name, wait=False, **options)
            if public:
                # No address yet: the first connection adds it beside the alias.
                hostkeys.record(hostkeys.known_hosts_path(known_hosts), [hostkeys.alias(made[name].id)], public)
        if made:
            for name in made:
                say(name, f"waiting until it is active (at most {timeout:.0f} s)")

            def active(droplet: Droplet) -> None:
                say(
                    droplet.name,
                    f"active: id {droplet.id}, {droplet.ip_address}, after {time.monotonic() - started:.0f} s",
                )

            listed = client.droplets.wait(list(made.values()), timeout=timeout, on_ready=active)
            ready = {d.id: d for d in listed}
            made = {name: ready[d.id] for name, d in made.items()}
    except (APIError, APIConnectionError) as exc:
        if not made:
            raise
        # Droplets now exist that no report will show: the error names them.
        raise PartlyCreatedError(exc, [(name, d.id) for name, d in made.items()]) from exc
    return [
        Target(t.name, made[t.name], t.user, t.port, t.create, t.dns) if t.name in made and t.droplet is None else t
        for t in targets
    ]


def check_expected(targets: list[Target], expect: Mapping[str, tuple[int | None, str | None]]) -> None:
    """Refuse when names resolve otherwise than a plan saw (renamed, recreated, added, duplicated)."""
    now = {t.name: t.identity for t in targets}
    problems = []
    for name in sorted(set(expect) | set(now)):
        was, found = expect.get(name), now.get(name)
        if was == found:
            continue
        before = _identity_text(was)
        after = _identity_text(found)
        problems.append(f"{name} was {before} when planned, is {after} now")
    if problems:
        raise ResolveError("the droplets changed since the plan: " + "; ".join(problems) + "; plan again")


def _identity_text(identity: tuple[int | None, str | None] | None) -> str:
    if identity is None:
        return "not in the playbook"
    droplet_id, address = identity
    return f"{droplet_id} at {address or 'no address'}" if droplet_id else "still to be created"


def limit(targets: list[Target], patterns: Iterable[str] | None) -> list[Target]:
    """``--limit``: droplet names or shell-style patterns (``web-*``, ``db-[12]``); each must match one."""
    if patterns is None:
        return targets
    names = [t.name for t in targets]
    wanted: set[str] = set()
    for pattern in patterns:
        matched = fnmatch.filter(names, pattern)
        if not matched:
            raise UsageError(
                f"--limit {pattern}: no droplet of the playbook matches{errors.did_you_mean(pattern, names)}"
            )
        wanted.update(matched)
    return [t for t in targets if t.name in wanted]


def prices(targets: list[Target], listed: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Per droplet created (or to be), its size's monthly and hourly price, from the sizes
    :func:`check_creates` listed (no second request)."""
    sizes = {t.name: t.create.size for t in targets if t.create is not None}
    if not sizes:
        return {}
    try:
        known = {str(s["slug"]): (float(s["price_monthly"]), float(s["price_hourly"])) for s in listed}
    except (KeyError, TypeError, ValueError):
        return {}  # the prices are information: the run does not fail for nonsense in them
    return {name: known[size] for name, size in sizes.items() if size in known}


def shard(targets: list[Target], shard: tuple[int, int] | None) -> list[Target]:
    """The I-th of N slices, by name: every droplet in exactly one shard, sizes within one."""
    if shard is None:
        return targets
    index, count = shard
    if not 1 <= index <= count:
        raise UsageError(f"--shard {index}/{count}: I must be between 1 and N")
    ordered = sorted(targets, key=lambda t: t.name)
    chosen = {t.name for t in ordered[index - 1 :: count]}
    return [t for t in targets if t.name in chosen]


def connect(
    target: Target,
    settings: Settings,
    *,
    connect_timeout: float = 15.0,
    ready_timeout: float = 60.0,
    notice: Notice | None = None,
    stop: threading.Event | None = None,
) -> SSHClient:
    """Connect to ``target``, retrying with backoff while its SSH port does not answer (a droplet
    still booting) for ``ready_timeout`` seconds, or until ``stop`` is set.

    The playbook's ``user``/``port`` win over the settings', unless the settings' login is
    pinned (a sandbox has one user and one port)."""
    pinned = settings.login_pinned
    deadline = time.monotonic() + ready_timeout
    delay = 1.0
    assert target.droplet is not None
    while True:
        ssh = target.droplet.connect(
            user=settings.ssh_user if pinned else target.user or settings.ssh_user,
            port=settings.ssh_port if pinned else target.port or settings.ssh_port,
            key_filename=settings.ssh_key,
            known_hosts=settings.known_hosts,
            connect_timeout=connect_timeout,
            keepalive=settings.ssh_keepalive,
        )
        if notice:  # first contact, or a new droplet on a reused address
            ssh.on_notice = lambda text, name=target.name: notice(name, text)
        try:
            return ssh.open()
        except SSHConnectError as exc:
            if time.monotonic() + delay > deadline or (stop is not None and stop.is_set()):
                raise
            if notice:
                notice(target.droplet.name, f"waiting for SSH ({exc}); again in {delay:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
