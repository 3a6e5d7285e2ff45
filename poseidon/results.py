"""Plain result data of a run: per droplet, per step, and the snapshots.

Data only: nothing here talks to a droplet or prints. Snapshots are pandas
DataFrames when the executor took them, typed loosely so that this module
needs nothing but the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DNSResult", "DropletRun", "ProcessStatus", "RunResult", "StepResult", "STATUSES"]

#: ``would-change`` is what ``plan`` reports where ``apply`` would report ``changed``.
STATUSES = ("ok", "changed", "would-change", "failed", "skipped", "done-earlier")


@dataclass
class StepResult:
    """One step on one droplet."""

    index: int
    kind: str
    label: str
    status: str
    duration: float = 0.0
    stdout: str = ""
    stderr: str = ""
    exited: int = 0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "label": self.label,
            "status": self.status,
            "duration": round(self.duration, 3),
            "exited": self.exited,
            "reason": self.reason,
            "stdout_tail": "\n".join(self.stdout.strip().splitlines()[-20:]),
            "stderr_tail": "\n".join(self.stderr.strip().splitlines()[-20:]),
        }


@dataclass
class DNSResult:
    """The A record a droplet's ``dns:`` keeps: ``ok``, ``changed``, ``would-change`` or ``failed``."""

    record: str
    address: str | None
    status: str
    #: What was done or would be ("created", "was 203.0.113.7"), or why it failed.
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record, "address": self.address, "status": self.status, "detail": self.detail}


@dataclass
class DropletRun:
    """Everything that happened on one droplet."""

    name: str
    id: int | None = None
    ip_address: str | None = None
    steps: list[StepResult] = field(default_factory=list)
    #: Why the droplet could not run at all (unreachable, host key changed…), or ``None``.
    error: str | None = None
    #: Whether ``error`` is about reaching the droplet (SSH refused, unreachable, host key).
    unreachable: bool = False
    #: Whether this run created the droplet (or, in a plan, would create it).
    created: bool = False
    ps: Any = None
    top: Any = None
    #: The rows of ``ps`` whose process was not running before the first step.
    started_processes: Any = None
    #: The A record the playbook keeps for it (``dns:``), or ``None``.
    dns: DNSResult | None = None
    #: What a droplet to be created costs, from the sizes API (USD); ``None`` for others.
    price_monthly: float | None = None
    price_hourly: float | None = None

    @property
    def failed(self) -> bool:
        dns_failed = self.dns is not None and self.dns.status == "failed"
        return self.error is not None or dns_failed or any(s.status == "failed" for s in self.steps)

    def count(self, status: str) -> int:
        return sum(1 for s in self.steps if s.status == status)

    def to_dict(self, planned: bool = False) -> dict[str, Any]:
        """As JSON; ``planned``: the run was a plan, so a droplet ``created`` is one to create."""
        return {
            "name": self.name,
            "id": self.id,
            "ip_address": self.ip_address,
            "error": self.error,
            "unreachable": self.unreachable,
            "created": self.created and not planned,
            "to_create": self.created and planned,
            "price_monthly": self.price_monthly,
            "price_hourly": self.price_hourly,
            "dns": self.dns.to_dict() if self.dns else None,
            "failed": self.failed,
            "steps": [s.to_dict() for s in self.steps],
            "ps": _records(self.ps),
            "started_processes": _records(self.started_processes),
            "top": _records(self.top),
        }


@dataclass
class RunResult:
    """A whole run of a playbook: one :class:`DropletRun` per droplet, in playbook order."""

    playbook: str
    name: str | None
    mode: str
    droplets: list[DropletRun] = field(default_factory=list)
    started: float = 0.0
    duration: float = 0.0
    #: Ctrl-C stopped the run: the droplets' results are as far as they got.
    interrupted: bool = False
    #: The run log (``.poseidon/runs/…jsonl``), and why it is incomplete when it is (a full disk).
    run_log: str | None = None
    run_log_error: str | None = None

    @property
    def failed(self) -> bool:
        return any(d.failed for d in self.droplets)

    @property
    def priced(self) -> list[DropletRun]:
        """The droplets created (or, in a plan, to be) whose price the sizes API gave."""
        return [d for d in self.droplets if d.created and d.price_monthly is not None]

    def prices(self) -> dict[str, Any]:
        """What the droplets created (or to be) cost together, in USD."""
        priced = self.priced
        return {
            "droplets": len(priced),
            "monthly": round(sum(d.price_monthly or 0.0 for d in priced), 2),
            "hourly": round(sum(d.price_hourly or 0.0 for d in priced), 5),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "playbook": self.playbook,
            "name": self.name,
            "mode": self.mode,
            "started": self.started,
            "duration": round(self.duration, 3),
            "interrupted": self.interrupted,
            "failed": self.failed,
            "prices": self.prices(),
            "droplets": [d.to_dict(planned=self.mode == "check") for d in self.droplets],
        }


def _records(frame: Any) -> list[dict[str, Any]] | None:
    if frame is None:
        return None
    return frame.to_dict(orient="records")  # type: ignore[no-any-return]


@dataclass
class ProcessStatus:
    """A process a ``nohup`` or ``service`` step manages, as ``poseidon status`` found it."""

    droplet: str
    name: str
    state: str  # alive | dead | unreachable (no SSH) | unknown (another error, in log_tail)
    pid: int | None = None
    uptime: str = ""
    log_tail: str = ""
    directory: str = ""
    #: Processes of a dead one that still run (it was killed alone): the next apply stops them.
    leftover: list[int] = field(default_factory=list)
    #: The step that manages it: ``nohup`` (its log's tail), or ``service`` (its journal's).
    kind: str = "nohup"

    def to_dict(self) -> dict[str, Any]:
        return {
            "droplet": self.droplet,
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "pid": self.pid,
            "leftover_pids": self.leftover,
            "uptime": self.uptime,
            "directory": self.directory,
            "log_tail": self.log_tail,
        }
