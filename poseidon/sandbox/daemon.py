"""A sandbox that outlives one command: ``poseidon sandbox up`` / ``env`` / ``down``.

``up`` starts ``python -m poseidon.sandbox.daemon`` in a session of its own;
that process runs a :class:`~poseidon.sandbox.Sandbox` until it receives
SIGTERM, and writes its environment to ``state.json`` in its folder: a
playbook's kept sandbox (``.poseidon/sandbox/<playbook>/`` beside it, the one
``apply --sandbox`` uses), else the user's state folder
(``$XDG_STATE_HOME/poseidon/sandbox``, else ``~/.local/state/poseidon/sandbox``)
for a sandbox of droplets named on the command line. Each folder has at
most one running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from poseidon import files
from poseidon.errors import SandboxError, UsageError

__all__ = ["down", "running", "state_dir", "up"]

_START_TIMEOUT = 30.0
_MACHINES_START_TIMEOUT = 600.0


def state_dir() -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "poseidon" / "sandbox"


def running(folder: Path) -> dict[str, str] | None:
    """The environment that reaches the sandbox up in ``folder``, or ``None`` when none is."""
    state = _read_state(folder)
    return None if state is None else dict(state["environ"])


def _read_state(folder: Path) -> dict[str, Any] | None:
    """The running daemon's state, or ``None``: the pid it names must be that daemon's, not a reused pid."""
    path = folder / "state.json"
    try:
        state: dict[str, Any] = json.loads(path.read_text())
        pid = int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _is_daemon(pid):
        path.unlink(missing_ok=True)
        return None
    return state


def _is_daemon(pid: int) -> bool:
    """Whether ``pid`` runs this module as the sandbox's daemon, as this user (never signal anything else)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return False
    return pid > 1 and owner == os.getuid() and b"poseidon.sandbox.daemon" in words[:4]


def up(
    droplets: list[dict[str, Any]], repos: dict[str, Path], folder: Path, *, kept: bool = False, machines: bool = False
) -> dict[str, str]:
    """Start a background sandbox in ``folder`` (``kept``: a playbook's kept sandbox, whose
    droplets and files outlive it; ``machines``: its droplets are machines); return the
    environment that reaches it."""
    if _read_state(folder) is not None:
        # The environment is not as the command needs (exit 2), nothing failed to start.
        raise UsageError(
            f"a sandbox is already up in {folder}:"
            " 'poseidon sandbox env' (with the same --playbook) prints its variables again"
        )
    # A playbook's folder may be a shared checkout: whole files, for this user only, never through a link.
    files.folder(folder)
    request = folder / "request.json"
    document = {
        "droplets": droplets,
        "repos": {k: str(v) for k, v in repos.items()},
        "root": str(folder),
        "kept": kept,
        "machines": machines,
    }
    files.write(request, json.dumps(document))
    (folder / "daemon.log").unlink(missing_ok=True)
    log = os.fdopen(files.create_new(folder / "daemon.log"), "wb")
    # The daemon serves the sandbox's own token: the operator's real ones stay out of its environment.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DIGITALOCEAN_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "poseidon.sandbox.daemon", str(request)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        env=environment,
    )
    log.close()
    # Machines build their base system at the first start: a minute or two, once.
    patience = _MACHINES_START_TIMEOUT if machines else _START_TIMEOUT
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        state = _read_state(folder)
        if state is not None:
            return dict(state["environ"])
        if process.poll() is not None:
            text = (folder / "daemon.log").read_text(errors="replace").strip()
            raise SandboxError(f"the sandbox did not start: {text.splitlines()[-1] if text else process.returncode}")
        time.sleep(0.1)
    process.terminate()
    raise SandboxError(f"the sandbox did not start within {patience:.0f} s")


def down(folder: Path) -> str:
    """Stop the background sandbox up in ``folder``, if one is; say what happened."""
    state = _read_state(folder)
    if state is None:
        return f"no sandbox is up in {folder}"
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.1)
    (folder / "state.json").unlink(missing_ok=True)
    return f"sandbox stopped (pid {pid})"


def _serve(request_path: str) -> None:
    from poseidon.sandbox import Sandbox

    request = json.loads(Path(request_path).read_text())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    folder = Path(request["root"])
    root = folder if request.get("kept") else None
    with Sandbox(
        request["droplets"],
        repos=request["repos"],
        root=root,
        keep=bool(request.get("kept")),
        machines=bool(request.get("machines")),
        progress=lambda text: print(text, flush=True),
    ) as sandbox:
        state = {"pid": os.getpid(), "environ": sandbox.environ, "root": str(sandbox.root)}
        path = folder / "state.json"
        # It holds the sandbox's token: for this user only, written whole, never through a link.
        descriptor, partial = tempfile.mkstemp(dir=path.parent, prefix=".state.", suffix=".tmp")
        with os.fdopen(descriptor, "w") as stream:
            stream.write(json.dumps(state))
        os.replace(partial, path)
        while not stop.wait(1.0):
            pass


if __name__ == "__main__":
    _serve(sys.argv[1])
