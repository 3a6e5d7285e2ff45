"""Plan files: what ``poseidon plan --out`` saw, so that ``apply plan.json`` acts on exactly that.

A plan records the playbook (its path relative to the plan file and a hash
of its text, and of each file its ``file:`` steps take), how every droplet name resolved (id and public IPv4), a salted
digest of each environment value the playbook reads (``${env:NAME}``) and
what each step was predicted to do. Applying a plan refuses when the
playbook or one of those files changed since, when a name now resolves differently (a droplet
renamed, recreated, added or duplicated between plan and apply), or when an
environment value differs from the one planned with.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poseidon import files
from poseidon.errors import UsageError
from poseidon.results import RunResult

__all__ = ["FORMAT", "Plan", "is_plan", "read", "write"]

FORMAT = 1


@dataclass(frozen=True)
class Plan:
    """A plan file's promises."""

    path: Path
    playbook: Path
    sha256: str
    #: name → (id, public IPv4) as resolved when planning.
    droplets: dict[str, tuple[int | None, str | None]]
    #: The salt of the environment digests, and per variable its digest (``None``: it was unset).
    salt: str = ""
    environment: dict[str, str | None] = field(default_factory=dict)
    #: Made on the playbook's kept sandbox (``plan --sandbox``): applied there too.
    sandbox: bool = False
    #: The SHA-256 of each file the playbook's ``file:`` steps take, by its path as written.
    files: dict[str, str] = field(default_factory=dict)

    def file_changes(self, now: Mapping[str, str]) -> list[str]:
        """The files (``src:``, ``template:``) whose digest ``now`` differs from the planned one, by path."""
        return [written for written, digest in sorted(self.files.items()) if now.get(written) != digest]

    def environment_changes(self, environ: Mapping[str, str]) -> list[str]:
        """The variables whose value in ``environ`` is not the one planned with, by name."""
        return [
            name
            for name, digest in sorted(self.environment.items())
            if _env_digest(self.salt, environ.get(name)) != digest
        ]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_plan(path: str) -> bool:
    """Whether ``path`` is a plan file rather than a playbook (plans are JSON)."""
    return path.endswith(".json")


def _env_digest(salt: str, value: str | None) -> str | None:
    """A value's digest, keyed by the plan's salt (no table of common values serves two plans)."""
    if value is None:
        return None
    return hmac.new(salt.encode(), value.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def write(
    out: str,
    result: RunResult,
    playbook: str,
    environ: Mapping[str, str | None] | None = None,
    *,
    sandbox: bool = False,
    attached: Mapping[str, str] | None = None,
) -> None:
    """Record ``result`` (a plan's) for ``apply``; the playbook path is kept relative to the plan file.

    ``environ`` holds the environment variables the playbook reads and their
    values then (``None``: unset): the plan keeps a salted digest of each.
    ``attached`` holds the digests of the files its ``file:`` steps take.
    """
    target = Path(out)
    salt = secrets.token_hex(16)
    document = {
        "poseidon_plan": FORMAT,
        "playbook": os.path.relpath(Path(playbook).resolve(), target.resolve().parent),
        "sha256": _digest(Path(playbook)),
        "droplets": {d.name: {"id": d.id, "ip_address": d.ip_address} for d in result.droplets},
        "sandbox": sandbox,
        "files": dict(attached or {}),
        "environment": {
            "salt": salt,
            "digests": {name: _env_digest(salt, value) for name, value in sorted((environ or {}).items())},
        },
        "predicted": result.to_dict(),
    }
    try:
        files.write(target, json.dumps(document, indent=2, default=str) + "\n")
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror}") from exc


def read(path: str) -> Plan:
    """Read a plan file; refuse one that is damaged or whose playbook changed since."""
    source = Path(path)
    try:
        document: Any = json.loads(source.read_text())
        if document.get("poseidon_plan") != FORMAT:
            raise ValueError(f"not a poseidon plan (format {FORMAT})")
        playbook = (source.resolve().parent / document["playbook"]).resolve()
        droplets = {
            str(name): (None if entry["id"] is None else int(entry["id"]), entry["ip_address"])
            for name, entry in document["droplets"].items()
        }
        recorded = str(document["sha256"])
        environment = document.get("environment") or {"salt": "", "digests": {}}
        salt = str(environment["salt"])
        digests = {str(name): (None if d is None else str(d)) for name, d in environment["digests"].items()}
        sandbox = document.get("sandbox", False)
        if not isinstance(sandbox, bool):
            raise ValueError("'sandbox' is true or false")
        attached = {str(name): str(digest) for name, digest in (document.get("files") or {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: cannot read this plan: {exc}") from exc
    if not playbook.is_file():
        raise UsageError(f"{path}: its playbook {playbook} is gone")
    if _digest(playbook) != recorded:
        raise UsageError(f"{path}: {playbook.name} changed since this plan was made: plan again")
    return Plan(source, playbook, recorded, droplets, salt, digests, sandbox, attached)
