"""``poseidon status``: the processes a playbook's ``nohup`` steps manage, on every droplet.

Changes nothing: ``chdir`` steps are followed (they only check), every other
step but ``nohup`` is passed over. Connects as a run does (:func:`poseidon.targets.connect`)
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
    """The processes the playbook's ``nohup`` steps manage, on every droplet: alive or dead, pid, uptime, log.

    Changes nothing: ``chdir`` steps are followed (they only check), every
    other step but ``nohup`` is passed over.
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
    nohups = [s for s in playbook.steps if isinstance(s, spec.NohupStep)]
    assert target.droplet is not None
    values = spec.substitutions(playbook, droplet=target.droplet, environ=environ)
    found: list[ProcessStatus] = []
    try:
        with connect(target, settings) as ssh:
            for raw in playbook.steps:
                step = spec.expand(raw, values)
                if isinstance(step, spec.ChdirStep):
                    if ssh.run_step(step, mode="check").status == "failed":
                        break  # later steps' directories do not exist yet
                elif isinstance(step, spec.NohupStep):
                    found.append(_process_status(ssh, target.name, step))
    except PoseidonError as exc:
        state = "unreachable" if isinstance(exc, SSHError) else "unknown"
        return [ProcessStatus(target.name, s.process_name(), state, log_tail=str(exc)) for s in nohups]
    seen = {p.name for p in found}
    found += [ProcessStatus(target.name, s.process_name(), "dead") for s in nohups if s.process_name() not in seen]
    return found


def _process_status(ssh: SSHClient, droplet: str, step: spec.NohupStep) -> ProcessStatus:
    result = ssh.run(steps.nohup_status(step), title=f"status {step.process_name()}")
    first, _, tail = result.stdout.partition("\n")
    state, pid, uptime, leftover = (first.split("\t") + ["", "", "", ""])[:4]
    return ProcessStatus(
        droplet,
        step.process_name(),
        state or "unknown",
        int(pid) if pid.isdecimal() and state == "alive" else None,
        "" if uptime == "-" else uptime,
        tail.rstrip("\n"),
        ssh.cwd or "~",
        [int(p) for p in leftover.split() if p.isdecimal()],
    )
