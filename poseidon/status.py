"""``poseidon status``: the processes a playbook's ``nohup`` and ``service`` steps manage, on every droplet.

Changes nothing: ``chdir`` steps are followed (they only check), every other
step but ``nohup`` and ``service`` is passed over. Connects as a run does (:func:`poseidon.targets.connect`)
and masks what a run masks (:mod:`poseidon.variables`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from poseidon import api, spec, steps, variables
from poseidon.errors import PoseidonError, SSHError
from poseidon.results import ProcessStatus
from poseidon.settings import Settings
from poseidon.ssh import SSHClient
from poseidon.targets import Target, connect, resolve

__all__ = ["status"]


def status(
    playbook: spec.Playbook,
    *,
    settings: Settings | None = None,
    client: api.Client | None = None,
    forks: int = 20,
) -> list[ProcessStatus]:
    """The processes the playbook's ``nohup`` and ``service`` steps manage, on every droplet: alive
    or dead, pid, uptime, the end of the log (a service's journal).

    Changes nothing: ``chdir`` steps are followed (they only check), every
    other step but ``nohup`` and ``service`` is passed over.
    """
    settings = (settings if settings is not None else Settings.from_environ()).check_login()
    environ = variables.environment(playbook)
    client = client or api.connect(settings=settings)
    masker = variables.masker(playbook, environ, variables.git_tokens(playbook), settings, client)
    targets = [t for t in resolve(playbook, client) if t.droplet is not None]
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(targets)))) as pool:
        found = list(pool.map(lambda t: _droplet_status(t, playbook, environ, settings), targets))
    entries = [entry for entries in found for entry in entries]
    for entry in entries:
        entry.log_tail = masker.text(entry.log_tail)
    return entries


def _droplet_status(
    target: Target, playbook: spec.Playbook, environ: dict[str, str], settings: Settings
) -> list[ProcessStatus]:
    managed = [s for s in playbook.steps if isinstance(s, (spec.NohupStep, spec.ServiceStep))]
    assert target.droplet is not None
    values = spec.substitutions(playbook, droplet=target.droplet, environ=environ)
    found: list[ProcessStatus] = []
    try:
        with connect(target, settings) as ssh:
            for raw in playbook.steps:
                if not isinstance(raw, (spec.ChdirStep, spec.NohupStep, spec.ServiceStep)):
                    continue  # passed over: never substituted, so its values cannot fail the status
                step = spec.expand(raw, values)
                if isinstance(step, spec.ChdirStep):
                    if ssh.run_step(step, mode="check").status == "failed":
                        break  # later steps' directories do not exist yet
                elif isinstance(step, (spec.NohupStep, spec.ServiceStep)):
                    found.append(_process_status(ssh, target.name, step))
    except PoseidonError as exc:
        state = "unreachable" if isinstance(exc, SSHError) else "unknown"
        return [ProcessStatus(target.name, _name(s), state, log_tail=str(exc), kind=s.kind) for s in managed]
    seen = {(p.kind, p.name) for p in found}
    found += [
        ProcessStatus(target.name, _name(s), "dead", kind=s.kind) for s in managed if (s.kind, _name(s)) not in seen
    ]
    return found


def _name(step: spec.NohupStep | spec.ServiceStep) -> str:
    return step.name if isinstance(step, spec.ServiceStep) else step.process_name()


def _process_status(ssh: SSHClient, droplet: str, step: spec.NohupStep | spec.ServiceStep) -> ProcessStatus:
    command = steps.service_status(step) if isinstance(step, spec.ServiceStep) else steps.nohup_status(step)
    result = ssh.run(command, title=f"status {_name(step)}")
    first, _, tail = result.stdout.partition("\n")
    state, pid, uptime, leftover = (first.split("\t") + ["", "", "", ""])[:4]
    return ProcessStatus(
        droplet,
        _name(step),
        state or "unknown",
        int(pid) if pid.isdecimal() and state == "alive" else None,
        "" if uptime == "-" else uptime,
        tail.rstrip("\n"),
        ssh.cwd or "~",
        [int(p) for p in leftover.split() if p.isdecimal()],
        step.kind,
    )
