"""Sandbox droplets that are real machines: Debian booted with ``systemd-nspawn``.

One base system is made once with ``debootstrap`` (:func:`build_base`, cached
in the user's cache folder); each droplet is a copy-on-write overlay of it
(:class:`Machine`), booted with ``systemd-nspawn --boot``. Inside, ``apt-get``
installs, ``ps`` shows the droplet's own processes, users and ``sudo`` are
real, and a reboot is systemd's. A machine shares this machine's network: its
sshd listens on the droplet's loopback address, on the sandbox's port.

Power, as the emulator asks for it: :meth:`Machine.stop` shuts it down (its
files stay), :meth:`Machine.start` boots it, :meth:`Machine.reboot` reboots
it (nspawn ends with 133 and is started again), :meth:`Machine.cut` kills
every process of it at once (its cgroup), :meth:`Machine.remove` stops it,
unmounts it and only then removes its files: the base is never touched.

Needs root, Debian's ``debootstrap`` and ``systemd-container`` and overlayfs;
:func:`unavailable` says, in one line, why machines cannot run here.
Imports :mod:`poseidon.errors` and the light droplets' key and port helpers
(:mod:`poseidon.sandbox.sshd`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from poseidon import files
from poseidon.errors import SandboxError, UsageError
from poseidon.sandbox.sshd import free_port, keygen

__all__ = ["BASE_PACKAGES", "Machine", "MachineFarm", "build_base", "cache_folder", "unavailable", "unmount_under"]

#: The release the base system is made of.
SUITE = "bookworm"
#: What the base system holds besides debootstrap's minimal base.
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "sudo",
    "python3",
    "python3-venv",
    "procps",
    "ca-certificates",
    "curl",
    "git",
)
#: Seconds a machine may take to shut down before its processes are killed.
STOP_PATIENCE = 30.0


def cache_folder() -> Path:
    """Where the base system is kept between sandboxes: the user's cache folder."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "poseidon" / "machines"


def unavailable() -> str | None:
    """Why machines cannot run here, in one line; ``None`` when they can."""
    if os.geteuid() != 0:
        return "machines need root (systemd-nspawn and overlay mounts): run as root, or use --sandbox (light)"
    missing = [tool for tool in ("debootstrap", "systemd-nspawn") if shutil.which(tool) is None]
    if missing:
        packages = {"debootstrap": "debootstrap", "systemd-nspawn": "systemd-container"}
        names = " ".join(packages[tool] for tool in missing)
        return f"machines need {', '.join(missing)}: apt-get install -y {names}"
    try:
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "machines need overlayfs, which this kernel does not offer"
    except OSError as exc:
        return f"cannot tell whether this kernel offers overlayfs: {exc.strerror}"
    return None


# -- the base system ------------------------------------------------------------------------


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses (its sources), else deb.debian.org."""
    for path in sorted(sources.glob("sources.list.d/*.sources")):
        fields = _deb822_first(path.read_text(errors="replace"))
        if "deb" in fields.get("types", "").split() and "main" in fields.get("components", "").split():
            uri = fields.get("uris", "").split()
            if uri and "security" not in uri[0]:
                return uri[0]
    for path in [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split("#", 1)[0].split()
            if len(words) >= 3 and words[0] == "deb" and "security" not in words[1] and not words[1].startswith("["):
                return words[1]
    return "http://deb.debian.org/debian"


def _deb822_first(text: str) -> dict[str, str]:
    """The first stanza of a deb822 file, its field names in lower case."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line.startswith("#") or line[:1].isspace():
            continue
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields


def build_base(cache: Path, *, mirror: str | None = None, progress: Callable[[str], None] | None = None) -> Path:
    """The base system, made once by debootstrap into ``cache`` and reused after; its path.

    Built beside its final name and renamed into place when complete, under a
    lock: a build cut short, or two at once, never leave half a base in use.
    """
    mirror = mirror or debian_mirror()
    key = hashlib.sha256(f"{SUITE} {mirror} {' '.join(BASE_PACKAGES)}".encode()).hexdigest()[:12]
    base = cache / f"{SUITE}-{key}"
    if (base / "etc" / "os-release").exists():
        return base
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f"{base.name}.lock"):
        if (base / "etc" / "os-release").exists():
            return base
        building = cache / f"{base.name}.building"
        _discard(building)  # a build cut short: what debootstrap mounted in it goes first
        _debootstrap(building, mirror, progress)
        _settle_base(building)
        building.rename(base)
    return base


def _debootstrap(target: Path, mirror: str, progress: Callable[[str], None] | None) -> None:
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        SUITE,
        str(target),
        mirror,
    ]
    say = progress or (lambda line: None)
    say(f"building the machines' base system ({SUITE}, about a minute, once): {' '.join(command)}")
    # A session of its own: a Ctrl-C or a kill of poseidon ends it here (finally), never halfway alone.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    assert process.stdout is not None
    tail: list[str] = []
    try:
        for line in process.stdout:
            tail = [*tail[-9:], line.rstrip()]
            if line.startswith("I: ") and any(w in line for w in ("Retrieving", "Installing", "Configuring", "Base")):
                say(line[3:].rstrip())
        code = process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if code != 0:
        why = _log_tail(target / "debootstrap" / "debootstrap.log") or " / ".join(tail[-3:])
        _discard(target)
        raise SandboxError(f"debootstrap failed (exit {code}): {why}")


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " / ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


def _discard(folder: Path) -> None:
    """Remove ``folder``, once nothing is mounted in it (debootstrap mounts /proc and /sys in
    its target); refused, naming the mounts, when something stays."""
    if folder.exists():
        unmount_under(folder)
        shutil.rmtree(folder, ignore_errors=True)


def _settle_base(root: Path) -> None:
    """What every machine shares: no host keys of its own (each gets the sandbox's), no cache."""
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    shutil.rmtree(root / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    (root / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    # A terminal login on the console is nobody's: machines are reached over SSH.
    for getty in (root / "etc" / "systemd" / "system" / "getty.target.wants").glob("*"):
        getty.unlink()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


# -- one machine ---------------------------------------------------------------------------


class Machine:
    """One droplet: an overlay of ``base`` in ``folder``, booted by systemd-nspawn.

    ``folder`` holds ``upper`` (the droplet's own files), ``work`` (overlayfs's)
    and ``root`` (where the overlay is mounted while the machine runs).
    """

    def __init__(
        self,
        name: str,
        address: str,
        port: int,
        folder: Path,
        base: Path,
        *,
        authorized_key: str,
        host_key: Path,
        network_files: dict[str, Path] | None = None,
        binds: list[Path] | None = None,
        files: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.address = address
        self.port = port
        self.folder = folder
        self.base = base
        self.authorized_key = authorized_key
        self.host_key = host_key
        #: Files of this machine copied in at each start: path inside → path here (CA certificates, pip's settings).
        self.network_files = network_files or {}
        #: Folders of this machine it sees at the same path, read-only.
        self.binds = binds or []
        #: Files written into it at each start: path inside → text (root's .gitconfig).
        self.files = files or {}
        self.root = folder / "root"
        #: Its cgroups (one per hierarchy nspawn needs here): all its processes, for a power cut.
        self.cgroups = _cgroup_folders(f"poseidon-{address}")
        #: The name systemd-nspawn knows it by: a host name whatever the droplet's name (which
        #: the API lets be longer, or have ``..``); the droplet's own is in its /etc/hostname.
        self.machine_name = "poseidon-" + address.replace(".", "-").replace(":", "-")
        self._lock = threading.RLock()

    # -- power ----------------------------------------------------------------------------
    #
    # A launcher (sh, in a session of its own) joins the machine's cgroups and runs nspawn,
    # again after each reboot (exit 133), until nspawn ends otherwise. It outlives the
    # command that started it, as a droplet outlives an apply: the next command finds the
    # machine running (its cgroups hold processes) and takes it as it is.

    @property
    def boots(self) -> int:
        """Boots so far of this machine's current power-on (a reboot counts one more)."""
        try:
            return len((self.folder / "boots").read_text().splitlines())
        except OSError:
            return 0

    @property
    def running(self) -> bool:
        """Whether any process of the machine runs (its launcher, nspawn, or what they started)."""
        return bool(_cgroup_pids(self.cgroups))

    def start(self) -> None:
        """Mount its files and boot it, unless it runs already; return at once (:meth:`wait_for_ssh` waits)."""
        with self._lock:
            if self.running:
                return
            self._mount()
            self._configure()
            self._launch()

    def stop(self, patience: float = STOP_PATIENCE) -> None:
        """Shut it down as ``poweroff`` would (SIGTERM to nspawn), its files kept; cut it past ``patience``."""
        with self._lock:
            launcher = self._launcher_pid()
            if launcher is not None:
                try:
                    os.kill(launcher, signal.SIGTERM)
                except OSError:
                    pass
            deadline = time.monotonic() + patience
            while self.running and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.running:
                _kill_cgroups(self.cgroups)
            self._settle()

    def cut(self) -> None:
        """Cut the power: every process of the machine killed at once; its files stay."""
        with self._lock:
            _kill_cgroups(self.cgroups)
            self._settle()

    def reboot(self) -> None:
        """Reboot it as ``reboot`` would: SIGINT to its init; nspawn ends with 133 and boots it again."""
        init = self.init_pid()
        if init is None:
            raise SandboxError(f"machine {self.name} is not running: nothing to reboot")
        os.kill(init, signal.SIGINT)

    def remove(self) -> None:
        """Stop it, unmount it, and only then remove its own files."""
        self.cut()
        if _mounted(self.root):
            raise SandboxError(f"{self.root} is still mounted: its files are left where they are")
        files.remove_tree(self.folder)
        _remove_cgroups(self.cgroups)

    def _settle(self, patience: float = STOP_PATIENCE) -> None:
        """Once every process is gone: unmount the files."""
        deadline = time.monotonic() + patience
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.running:
            raise SandboxError(f"the processes of machine {self.name} did not end")
        self._unmount()
        _remove_cgroups(self.cgroups)

    def _launcher_pid(self) -> int | None:
        try:
            text = (self.folder / "launcher.pid").read_text().strip()
        except OSError:
            return None
        pid = int(text) if text.isdecimal() else None
        return pid if pid is not None and pid in _cgroup_pids(self.cgroups) else None

    def init_pid(self) -> int | None:
        """The pid, here, of the machine's init (systemd), once it runs."""
        for cgroup in self.cgroups:
            scope = cgroup / "payload" / "init.scope" / "cgroup.procs"
            try:
                pids = scope.read_text().split()
            except OSError:
                continue
            if pids:
                return int(pids[0])
        return None

    def wait_for_ssh(self, timeout: float = 60.0) -> None:
        """Wait until its sshd accepts connections; :class:`SandboxError` with nspawn's last words if not."""
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.address, self.port), timeout=1):
                    return
            except OSError:
                if not self.running:
                    break
                time.sleep(0.1)
        raise SandboxError(f"machine {self.name} did not answer on {self.address}:{self.port}: {self.log_tail()}")

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = (self.folder / "nspawn.log").read_text(errors="replace")
        except OSError:
            return "no log"
        return " / ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip()) or "no log"

    # -- inside ---------------------------------------------------------------------------

    def _mount(self) -> None:
        upper, work = self.folder / "upper", self.folder / "work"
        for folder in (upper, work, self.root):
            folder.mkdir(parents=True, exist_ok=True)
        if _mounted(self.root):
            return
        # Every path of the options relative to the machine's folder (the base through a link
        # there): a comma or a colon in a path would split the options otherwise.
        lower = self.folder / "lower"
        if lower.is_symlink() or lower.exists():
            lower.unlink()
        lower.symlink_to(self.base)
        done = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", "lowerdir=lower,upperdir=upper,workdir=work", "root"],
            cwd=self.folder,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            why = " ".join(done.stderr.split())
            raise SandboxError(f"cannot mount machine {self.name}'s files: {why}")

    def _unmount(self) -> None:
        if _mounted(self.root):
            done = subprocess.run(["umount", str(self.root)], capture_output=True, text=True)
            if done.returncode != 0:
                raise SandboxError(f"cannot unmount machine {self.name}'s files: {done.stderr.strip()}")

    def _configure(self) -> None:
        """What makes it this droplet: its name, its sshd's address and key, root's key, this
        network's settings, the files the sandbox gives it. Written into the machine's tree
        without following any link in it: what the machine made of its files is its own, and
        a link it planted (``/etc/hostname -> /etc/shadow``, ``/root -> /``) must never lead
        a write out of it onto this machine."""
        files: dict[str, tuple[str, int]] = {
            "etc/hostname": (f"{self.name}\n", 0o644),
            # Its name resolves, as on a droplet (sudo looks it up).
            "etc/hosts": (f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n{self.address}\t{self.name}\n", 0o644),
            "etc/ssh/sshd_config.d/poseidon.conf": (
                f"ListenAddress {self.address}:{self.port}\n"
                "HostKey /etc/ssh/ssh_host_ed25519_key\n"
                "PasswordAuthentication no\n"
                "PermitRootLogin prohibit-password\n",
                0o644,
            ),
            "etc/ssh/ssh_host_ed25519_key": (self.host_key.read_text(), 0o600),
            "root/.ssh/authorized_keys": (self.authorized_key.rstrip("\n") + "\n", 0o600),
        }
        for inside, here in self.network_files.items():
            # As readable as here: a pip.conf with an index password in it is root's alone in the machine too.
            files[inside.lstrip("/")] = (here.read_text(errors="replace"), stat.S_IMODE(here.stat().st_mode) & 0o644)
        if any(inside.startswith("/usr/local/share/ca-certificates/") for inside in self.network_files):
            # update-ca-certificates's result, made here: the bundle with this machine's authorities in it.
            bundle = Path("/etc/ssl/certs/ca-certificates.crt")
            if bundle.exists():
                files["etc/ssl/certs/ca-certificates.crt"] = (bundle.read_text(errors="replace"), 0o644)
        for inside, text in self.files.items():
            files[inside.lstrip("/")] = (text, 0o644)
        for inside, (text, mode) in files.items():
            write_inside(
                self.root, inside, text.encode(), mode, folder_mode=0o700 if "/.ssh/" in f"/{inside}" else 0o755
            )

    def _launch(self) -> None:
        for cgroup in self.cgroups:
            cgroup.mkdir(parents=True, exist_ok=True)
        command = [
            "systemd-nspawn",
            "--quiet",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--console=passive",
            "--link-journal=no",
            "--resolv-conf=copy-host",
            "--timezone=copy",
            f"--machine={self.machine_name}",
            f"--directory={self.root}",
            *(f"--bind-ro={folder}" for folder in self.binds if folder.is_dir()),
        ]
        (self.folder / "boots").write_text("")
        (self.folder / "cgroup").write_text(self.cgroups[0].name if self.cgroups else "")
        joins = [str(cgroup / "cgroup.procs") for cgroup in self.cgroups]
        (self.folder / "launcher.pid").unlink(missing_ok=True)
        log = open(self.folder / "nspawn.log", "ab")
        try:
            launcher = subprocess.Popen(
                ["sh", "-c", _LAUNCHER.format(nspawn=shlex.join(command)), "sh", str(self.folder), *joins],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C to poseidon is no signal to the machine
            )
        finally:
            log.close()
        # Running means "its cgroups hold processes": wait until the launcher has joined them.
        deadline = time.monotonic() + 10
        while self._launcher_pid() != launcher.pid:
            if launcher.poll() is not None or time.monotonic() > deadline:
                raise SandboxError(f"machine {self.name} did not start (exit {launcher.poll()}): {self.log_tail()}")
            time.sleep(0.01)


#: The launcher: ``sh -c LAUNCHER sh FOLDER CGROUP_PROCS...``. It joins the machine's cgroups, notes
#: its pid and each boot in FOLDER, and runs nspawn again after a reboot (exit 133). A TERM (power
#: off) goes on to nspawn, which shuts the machine down; the launcher ends with it.
_LAUNCHER = """folder=$1; shift
for procs in "$@"; do echo $$ > "$procs" || exit 125; done
echo $$ > "$folder/launcher.pid"
child=
trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null; stopping=1' TERM
stopping=
while :; do
  echo boot >> "$folder/boots"
  {nspawn} &
  child=$!
  wait "$child"; rc=$?
  while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
  [ -z "$stopping" ] && [ "$rc" -eq 133 ] || exit "$rc"
done
"""


def write_inside(root: Path, inside: str, data: bytes, mode: int = 0o644, *, folder_mode: int = 0o755) -> None:
    """Write ``data`` at ``inside`` (a path relative to ``root``), following no link on the way.

    Each folder is opened from the one above it with ``O_NOFOLLOW``: a link or a file where
    a folder belongs is removed and a folder made (``folder_mode`` for the last one); what is
    at the file's own name (a link, a folder) is removed, and the file created anew with
    ``O_EXCL``. Nothing outside ``root`` is ever written, whatever links are inside it.
    """
    parts = [part for part in inside.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        raise SandboxError(f"not a path inside a machine: {inside!r}")
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for index, name in enumerate(parts[:-1]):
            last = index == len(parts) - 2
            inner = _folder_at(folder, name, folder_mode if last else 0o755)
            os.close(folder)
            folder = inner
        if folder_mode != 0o755:
            os.fchmod(folder, folder_mode)
        name = parts[-1]
        _remove_at(folder, name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        descriptor = os.open(name, flags, mode, dir_fd=folder)
        with os.fdopen(descriptor, "wb") as stream:
            os.fchmod(stream.fileno(), mode)
            stream.write(data)
    finally:
        os.close(folder)


def _folder_at(parent: int, name: str, mode: int) -> int:
    """A descriptor on the folder ``name`` in ``parent``, made when missing; a link or a file there is replaced."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError:  # ELOOP (a link) or ENOTDIR (a file): not a folder of this machine's tree
        _remove_at(parent, name)
    os.mkdir(name, mode, dir_fd=parent)
    return os.open(name, flags, dir_fd=parent)


def _remove_at(parent: int, name: str) -> None:
    """Remove whatever ``name`` is in ``parent``: a link (never followed), a file, a folder and all in it."""
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(name, dir_fd=parent)
    else:
        os.unlink(name, dir_fd=parent)


def _mounted(path: Path) -> bool:
    """Whether something is mounted at ``path`` (/proc/self/mountinfo)."""
    return str(path.resolve()) in _mount_points()


def _cgroup_folders(name: str) -> list[Path]:
    """The cgroups a machine takes: under the ``systemd`` and ``unified`` hierarchies of a
    hybrid layout (PID 1 is not systemd here), or under the one cgroup2 tree."""
    root = Path("/sys/fs/cgroup")
    hybrid = [root / hierarchy for hierarchy in ("systemd", "unified") if (root / hierarchy / "cgroup.procs").exists()]
    trees = hybrid or ([root] if (root / "cgroup.procs").exists() else [])
    return [tree / "poseidon" / name for tree in trees]


def _kill_cgroups(cgroups: list[Path]) -> None:
    """SIGKILL every process in ``cgroups`` and their children, as a power cut would."""
    for cgroup in cgroups:
        kill = cgroup / "cgroup.kill"
        if kill.exists():
            try:
                kill.write_text("1")
                continue
            except OSError:
                pass
        for folder, _, _ in os.walk(cgroup):
            try:
                pids = (Path(folder) / "cgroup.procs").read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass


def _cgroup_name(folder: Path) -> str:
    """The cgroups' name of the machine whose files are in ``folder`` (as its launch wrote it)."""
    try:
        name = (folder / "cgroup").read_text().strip()
    except OSError:
        name = ""
    return name if name.startswith("poseidon-") and "/" not in name else f"poseidon-{folder.name}"


def _cgroup_pids(cgroups: list[Path]) -> set[int]:
    """Every process in ``cgroups`` and their children."""
    found: set[int] = set()
    for cgroup in cgroups:
        for folder, _, _ in os.walk(cgroup):
            try:
                found.update(int(pid) for pid in (Path(folder) / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                continue
    return found


def _remove_cgroups(cgroups: list[Path]) -> None:
    """Remove the (empty) cgroups, the deepest first."""
    for cgroup in cgroups:
        for folder, _, _ in os.walk(cgroup, topdown=False):
            try:
                os.rmdir(folder)
            except OSError:
                pass


# -- the sandbox's droplets -------------------------------------------------------------------

#: This machine's files that machines carry, so that they reach the network as it does: the
#: certificate authorities it added (a TLS-inspecting proxy's among them) and pip's settings.
_NETWORK_FILES = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "/etc/xdg/pip/constraints.txt")


def network_files() -> dict[str, Path]:
    """Inside path → path here, of each file :data:`_NETWORK_FILES` names that exists here, and the
    certificate authorities in /usr/local/share/ca-certificates."""
    found = {path: Path(path) for path in _NETWORK_FILES if Path(path).is_file()}
    for authority in sorted(Path("/usr/local/share/ca-certificates").glob("*.crt")):
        found[str(authority)] = authority
    return found


def pip_environment(environ: Mapping[str, str]) -> tuple[str, list[Path]]:
    """The ``PIP_*`` settings of ``environ`` as ``/etc/environment`` lines (which SSH sessions
    read, through pam_env), and the local folders they name (``PIP_FIND_LINKS``), to be seen
    at the same path inside: pip in a machine as pip where the sandbox started. A value
    pam_env could not carry (a quote, a line break) is left out."""
    own = ("PIP_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK")
    lines, folders = [], []
    for name in sorted(environ):
        value = environ[name]
        if not re.fullmatch(r"PIP_[A-Z0-9_]+", name) or name in own or any(c in value for c in '"\n\r\\'):
            continue
        lines.append(f'{name}="{value}"\n')
        if name == "PIP_FIND_LINKS":
            folders += [Path(word) for word in value.split() if word.startswith("/") and Path(word).is_dir()]
    return "".join(lines), folders


class MachineFarm:
    """The sandbox's droplets as machines: what :class:`~poseidon.sandbox.sshd.SSHFarm` is to light ones.

    Each address has a machine in ``hosts/<address>``; its sshd listens on that
    address and :attr:`port`, logs in ``root`` with the sandbox's key and shows
    the sandbox's host key. ``binds`` are folders of this machine each machine
    sees at the same path, read-only (the local git repositories).
    """

    user = "root"

    def __init__(
        self, root: Path, cache: Path, *, binds: list[Path] | None = None, environ: Mapping[str, str] | None = None
    ) -> None:
        self.root = root
        self.cache = cache
        self.etc = root / "etc"
        self.hosts = root / "hosts"
        self.system = root / "system"
        self._pip_lines, pip_folders = pip_environment(environ or {})
        self.binds = [*(binds or []), *pip_folders]
        self.port = 0
        self.addresses: list[str] = []
        #: Addresses whose machine is powered off.
        self.off: set[str] = set()
        self.key_filename = self.etc / "id_ed25519"
        self.known_hosts = self.etc / "known_hosts"
        self.machines: dict[str, Machine] = {}
        self.running = False
        self.base: Path | None = None
        self._host_key_line = ""
        self._client_key = ""
        #: Told of the base's making (the first start only).
        self.progress: Callable[[str], None] | None = None

    @property
    def pids(self) -> list[int]:
        """No process here listens for the droplets: each machine's sshd is its own."""
        return []

    def home(self, address: str) -> Path:
        """Root's home in the droplet's own files (what it changed of the base)."""
        return self.hosts / address / "upper" / "root"

    def forget_host(self, address: str) -> None:
        """The droplet at ``address`` was deleted: its machine stops and its files go, unmounted first."""
        self.remove_host(address)

    def prepare(self, pip_cache: Path) -> None:
        reason = unavailable()
        if reason:
            raise UsageError(f"--sandbox=machines: {reason}")
        for folder in (self.etc, self.hosts):
            folder.mkdir(parents=True, exist_ok=True)
        self._host_key_line = keygen(self.etc / "ssh_host_ed25519_key", "poseidon-sandbox-host")
        self._client_key = keygen(self.key_filename, "poseidon-sandbox-client")
        self.base = build_base(self.cache, progress=self.progress)

    def add_host(self, address: str, files: dict[str, str] | None = None) -> Path:
        """Give the droplet at ``address`` a machine (not started), with ``files`` (path inside →
        text) written at each start; return root's home in its own files (to read, never to
        write: a link in it is the machine's)."""
        assert self.base is not None
        machine = Machine(
            address,
            address,
            self.port,
            self.hosts / address,
            self.base,
            authorized_key=self._client_key,
            host_key=self.etc / "ssh_host_ed25519_key",
            network_files=network_files(),
            binds=self.binds,
            files={**({"/etc/environment": self._pip_lines} if self._pip_lines else {}), **(files or {})},
        )
        self.machines[address] = machine
        self.addresses.append(address)
        return self.home(address)

    def name(self, address: str, name: str) -> None:
        """The machine at ``address`` is the droplet ``name`` (its host name)."""
        self.machines[address].name = name

    def remove_host(self, address: str) -> None:
        """Stop the machine at ``address`` and remove its files, once they are unmounted."""
        self.addresses.remove(address)
        self.off.discard(address)
        machine = self.machines.pop(address, None)
        if machine is not None:
            machine.remove()

    def start(self) -> None:
        saved = self.etc / "port"
        if not self.port and saved.exists() and saved.read_text().strip().isdecimal():
            # Kept machines still running listen where they did.
            self.port = int(saved.read_text().strip())
        if not self.port:
            self.port = free_port(self.addresses[0] if self.addresses else "127.0.0.1")
            for machine in self.machines.values():
                machine.port = self.port
            saved.write_text(f"{self.port}\n")
        self.running = True
        self.reload()

    def reload(self) -> None:
        """Power the machines as the droplets now are: on, unless off; wait until those on answer."""
        if not self.running:
            raise SandboxError("the machines are not running")
        started = []
        for address, machine in self.machines.items():
            machine.port = self.port
            if address in self.off and machine.running:
                machine.cut()
            elif address not in self.off and not machine.running:
                machine.start()
                started.append(machine)
        for machine in started:
            machine.wait_for_ssh()
        self._write_known_hosts()

    def went_off(self) -> list[str]:
        """The addresses of machines that are meant on but run no more (a ``poweroff`` inside)."""
        if not self.running:
            return []
        return [
            address for address, machine in self.machines.items() if address not in self.off and not machine.running
        ]

    def reboot(self, address: str) -> None:
        """Reboot the machine at ``address`` from inside (systemd's reboot); boot it when it is off."""
        machine = self.machines[address]
        if machine.init_pid() is None:
            self.off.discard(address)
            machine.start()
        else:
            machine.reboot()

    def _write_known_hosts(self) -> None:
        lines = [f"[{address}]:{self.port} {self._host_key_line}" for address in self.addresses]
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def stop(self, *, leave_running: bool = False) -> None:
        """Cut every machine and unmount it, its files kept; or, ``leave_running`` (a kept sandbox),
        leave them running as droplets go on between two applies."""
        self.running = False
        if not leave_running:
            for machine in self.machines.values():
                machine.cut()


def unmount_under(folder: Path) -> None:
    """Cut the machines whose files are mounted under ``folder`` and unmount them: what a
    sandbox killed before it could stop leaves. :class:`SandboxError` when one stays mounted,
    so that nobody removes a folder with a machine's files mounted in it."""
    prefix = str(folder.resolve()) + "/"
    for point in sorted(_mount_points(), key=len, reverse=True):  # the deepest first
        if not point.startswith(prefix):
            continue
        cgroups = _cgroup_folders(_cgroup_name(Path(point).parent))
        _kill_cgroups(cgroups)
        deadline = time.monotonic() + STOP_PATIENCE
        while _cgroup_pids(cgroups) and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run(["umount", point], capture_output=True)
        _remove_cgroups(cgroups)
    left = [point for point in _mount_points() if point.startswith(prefix)]
    if left:
        raise SandboxError(f"machines' files are still mounted at {', '.join(left)}: nothing removed")


#: How mountinfo writes a space, a tab, a line break or a backslash in a path: ``\040``.
_OCTAL = re.compile(rb"\\([0-7]{3})")


def _mount_points() -> list[str]:
    """Every mount point of this mount namespace, as Python names paths (``os.fsdecode``): the
    fifth field of mountinfo, its bytes as they are but for the octal escapes (a path may be
    any bytes: ``café``, a space)."""
    try:
        lines = Path("/proc/self/mountinfo").read_bytes().splitlines()
    except OSError:
        return []
    points = []
    for line in lines:
        fields = line.split(b" ")
        if len(fields) > 4:
            points.append(os.fsdecode(_OCTAL.sub(lambda found: bytes([int(found.group(1), 8)]), fields[4])))
    return points
