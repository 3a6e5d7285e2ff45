"""poseidon against Ansible and pyinfra on one workload: ``make bench``.

A farm of sandbox droplets (one OpenSSH server on loopback) gets the same
workload from each tool (bench/workload/): a directory, an apt package that
is already there, a git clone, a virtualenv with ``pip install -r`` from a
local wheel folder, a background server, ``ps -Af`` and ``ps -Ao``.

Cases: *cold* (fresh droplets) and *warm* (the re-apply: everything already
in place), at N droplets, and warm again through a proxy that adds a round
trip (bench/delay.py); then poseidon alone, warm, at other farm sizes; with
``--sandbox machines``, poseidon cold and warm on N sandbox machines (Debian
booted by systemd-nspawn, as ``poseidon apply --sandbox=machines`` makes
them); then start-up times. Tools run alternately, several times each; the table shows
medians, the ratios poseidon/peer, and the peak memory of the controlling
side. Every run is checked afterwards (the package importable in the
virtualenv, the server answering on the droplet's address): a run that did
not do the work is an error, not a figure.

    python bench/run.py                     # the full benchmark (about 10 minutes here)
    python bench/run.py --quick             # one repetition, N=10 only
    python bench/run.py --sandbox machines  # and a column for poseidon on machines (root)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from poseidon.sandbox import Sandbox, machines  # noqa: E402
from poseidon.sandbox.machines import MachineFarm  # noqa: E402

# bench/wheels.py, found as the folder of a script run is on sys.path (the tests use it too).
from wheels import build_wheel  # noqa: E402

WORKLOAD = HERE / "workload"
STEPS = 9  # 7 steps and 2 snapshots, in every tool's version of the workload
PORT = 8000
RUN_TIMEOUT = 900


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the farm ------------------------------------------------------------------


@dataclass
class Farm:
    """N sandbox droplets, and what each tool needs to reach them (directly or through the delay)."""

    sandbox: Sandbox
    names: list[str]
    folder: Path
    rtt_ms: float = 0
    proxy: subprocess.Popen[bytes] | None = None
    proxy_ssh_port: int = 0
    proxy_api_port: int = 0

    @property
    def machines(self) -> MachineFarm | None:
        """The machines, when the droplets are machines (not homes on this machine)."""
        farm = self.sandbox.farm
        return farm if isinstance(farm, MachineFarm) else None

    @property
    def addresses(self) -> list[str]:
        return [self.sandbox.address(n) for n in self.names]

    def ssh_port(self, delayed: bool) -> int:
        return self.proxy_ssh_port if delayed else self.sandbox.ssh_port

    def api_url(self, delayed: bool) -> str:
        scheme = self.sandbox.api_url.split("://", 1)[0]  # the proxy forwards bytes: HTTPS stays HTTPS
        return f"{scheme}://127.0.0.1:{self.proxy_api_port}" if delayed else self.sandbox.api_url

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def app_source(folder: Path) -> Path:
    """The repository every tool clones: a requirements file that installs a local wheel, offline."""
    wheels = folder / "wheels"
    build_wheel(wheels, "benchpkg", "1.0")
    app = folder / "app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "requirements.txt").write_text(f"--no-index\n--find-links {wheels}\nbenchpkg==1.0\n")
    (app / "README").write_text("The benchmark's application.\n")
    return app


@contextmanager
def farm(n: int, folder: Path, rtt_ms: float, *, on_machines: bool = False) -> Iterator[Farm]:
    names = [f"bench-{i:02d}" for i in range(1, n + 1)]
    folder.mkdir(parents=True, exist_ok=True)
    app = app_source(folder)
    # Machines read the wheels at the path the requirements file gives, as light droplets do.
    with Sandbox(
        names, repos={"bench/app": app}, shared=[folder / "wheels"], machines=on_machines, progress=log
    ) as sandbox:
        f = Farm(sandbox, names, folder, rtt_ms)
        try:
            lines = Path(sandbox.known_hosts).read_text().splitlines()
            if rtt_ms:
                _start_proxy(f)
                key = lines[0].split(" ", 1)[1]
                lines += [f"[{a}]:{f.proxy_ssh_port} {key}" for a in f.addresses]
            f.known_hosts.write_text("\n".join(lines) + "\n")
            yield f
        finally:
            if f.proxy is not None:
                f.proxy.kill()
                f.proxy.wait()


def _start_proxy(f: Farm) -> None:
    f.proxy_ssh_port = _free_port(f.addresses[0])
    f.proxy_api_port = _free_port("127.0.0.1")
    api_port = int(f.sandbox.api_url.rsplit(":", 1)[1].split("/")[0])
    routes = [f"{a}:{f.proxy_ssh_port}:{f.sandbox.ssh_port}" for a in f.addresses]
    routes.append(f"127.0.0.1:{f.proxy_api_port}:{api_port}")
    f.proxy = subprocess.Popen(
        [sys.executable, str(HERE / "delay.py"), "--rtt-ms", str(f.rtt_ms), *routes],
        stdout=subprocess.PIPE,
    )
    assert f.proxy.stdout is not None
    if f.proxy.stdout.readline().strip() != b"ready":
        raise SystemExit("bench: the delay proxy did not start")


def _has_entry(entry: bytes, environ: bytes) -> bool:
    """Whether ``environ`` (a /proc/PID/environ) holds ``entry`` (``NAME=value``)."""
    return entry in environ.split(b"\0")


def reset(f: Farm) -> None:
    """Fresh droplets: end their processes, empty their homes (the sandbox's git redirect stays)."""
    if f.machines is not None:
        _reset_machines(f)
    else:
        _reset_homes(f)
    _nothing_listens(f)


def _reset_homes(f: Farm) -> None:
    for name in f.names:
        home = f.sandbox.home(name)
        _kill_where(functools.partial(_has_entry, f"HOME={home}".encode()))
        for child in home.iterdir():
            if child.name == ".gitconfig":
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


def _reset_machines(f: Farm) -> None:
    """Each machine powered off (its processes end, its files unmounted), root's home emptied
    in its own files, powered on, and booted to the end: a droplet as it is just made."""
    for name in f.names:
        f.sandbox.power_off(name)
        shutil.rmtree(f.sandbox.home(name), ignore_errors=True)  # the sandbox writes its files again at boot
        f.sandbox.power_on(name)
    for address in f.addresses:
        _booted(f, address)


def _booted(f: Farm, address: str) -> None:
    """Wait until the machine's systemd says the boot is over: its start-up is not the run's work."""
    s = f.sandbox
    argv = ["ssh", "-i", s.key_filename, "-p", str(s.ssh_port), "-o", f"UserKnownHostsFile={s.known_hosts}"]
    argv += ["-o", "BatchMode=yes", f"{s.user}@{address}", "systemctl is-system-running --wait"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    state = done.stdout.strip()
    if state not in ("running", "degraded"):
        raise SystemExit(f"bench: machine {address} did not finish booting: {state} {done.stderr.strip()}")


def _nothing_listens(f: Farm) -> None:
    for address in f.addresses:  # else a cold run could pass on the last tool's server
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex((address, PORT)) == 0:
                raise SystemExit(f"bench: something still listens on {address}:{PORT} after the reset")


def _kill_where(matches: Callable[[bytes], bool], what: str = "environ") -> None:
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        if pid == os.getpid():
            continue
        try:
            data = Path(f"/proc/{pid}/{what}").read_bytes()
        except OSError:
            continue
        if matches(data):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def verify(f: Farm) -> str | None:
    """What is missing on the droplets after a run, or None when the workload is in place."""
    for name, address in zip(f.names, f.addresses, strict=True):
        app = f.sandbox.home(name) / "site" / "app"
        if not list(app.glob(".venv/lib/python3*/site-packages/benchpkg/__init__.py")):
            return f"{name}: benchpkg is not installed in site/app/.venv"
        deadline = time.monotonic() + 5
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}:{PORT}/", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                return f"{name}: nothing answers on {address}:{PORT}"
            time.sleep(0.1)
    return None


# -- the tools -----------------------------------------------------------------


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str]
    cwd: Path


class Tool:
    name = ""

    def command(self, f: Farm, run_dir: Path, delayed: bool) -> Command:
        raise NotImplementedError


class Poseidon(Tool):
    name = "poseidon"

    def __init__(self, executable: str) -> None:
        self.executable = executable

    def command(self, f: Farm, run_dir: Path, delayed: bool) -> Command:
        names = "[" + ", ".join(f.names) + "]"
        playbook = f.folder / "poseidon.yaml"
        playbook.write_text((WORKLOAD / "poseidon.yaml").read_text().replace("__DROPLETS__", names))
        env = {
            **f.sandbox.environ,
            "POSEIDON_API_URL": f.api_url(delayed),
            "POSEIDON_SSH_PORT": str(f.ssh_port(delayed)),
            "POSEIDON_KNOWN_HOSTS": str(f.known_hosts),
        }
        return Command([self.executable, "apply", str(playbook), "--forks", str(len(f.names))], env, f.folder)


class Ansible(Tool):
    name = "ansible"

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir

    def command(self, f: Farm, run_dir: Path, delayed: bool) -> Command:
        s = f.sandbox
        inventory = run_dir / "inventory.ini"
        hosts = [
            f"{n} ansible_host={a} ansible_port={f.ssh_port(delayed)} ansible_user={s.user}"
            f" ansible_ssh_private_key_file={s.key_filename} ansible_python_interpreter=/usr/bin/python3"
            for n, a in zip(f.names, f.addresses, strict=True)
        ]
        inventory.write_text("[droplets]\n" + "\n".join(hosts) + "\n")
        config = run_dir / "ansible.cfg"
        config.write_text(
            "[defaults]\n"
            f"forks = {len(f.names)}\n"
            "host_key_checking = True\n"
            "interpreter_python = /usr/bin/python3\n"
            "[ssh_connection]\n"
            "pipelining = True\n"
            f"control_path_dir = {run_dir / 'cp'}\n"
            "ssh_args = -o ControlMaster=auto -o ControlPersist=60s"
            f" -o StrictHostKeyChecking=yes -o UserKnownHostsFile={f.known_hosts}\n"
        )
        env = {
            **_base_env(),
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_HOME": str(run_dir / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(run_dir / "ansible-tmp"),
        }
        playbook = WORKLOAD / "ansible.yml"
        return Command([str(self.bin_dir / "ansible-playbook"), "-i", str(inventory), str(playbook)], env, run_dir)


class Pyinfra(Tool):
    name = "pyinfra"

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir

    def command(self, f: Farm, run_dir: Path, delayed: bool) -> Command:
        s = f.sandbox
        data = {
            "ssh_port": f.ssh_port(delayed),
            "ssh_user": s.user,
            "ssh_key": s.key_filename,
            "ssh_known_hosts_file": str(f.known_hosts),
            "ssh_strict_host_key_checking": "yes",
        }
        inventory = run_dir / "inventory.py"
        inventory.write_text(f"droplets = [(a, {data!r}) for a in {f.addresses!r}]\n")
        argv = [
            str(self.bin_dir / "pyinfra"),
            str(inventory),
            str(WORKLOAD / "pyinfra_deploy.py"),
            "--yes",
            "--parallel",
            str(len(f.names)),
        ]
        return Command(argv, _base_env(), run_dir)


def _base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME")
    return {k: v for k, v in os.environ.items() if k in keep}


# -- measuring one run ---------------------------------------------------------


@dataclass
class Sample:
    wall: float
    cpu: float
    rss_largest: int  # bytes: the largest single process of the controlling side (getrusage)
    rss_tree: int  # bytes: all the controlling side's processes together, sampled
    droplets_cpu: float = 0.0  # seconds: what the droplets' sessions used (sshd's reaped children)


def _sessions_ended(f: Farm, timeout: float = 10.0) -> None:
    """Wait until sshd has reaped every session, so their CPU is counted for the run that made them."""
    assert f.sandbox.farm is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_descendants(pid) == [pid] for pid in f.sandbox.farm.pids):
            return
        time.sleep(0.05)


def droplets_cpu(f: Farm) -> float:
    """CPU seconds of every session sshd has reaped so far (each sums its own reaped children);
    on machines, of everything each machine ran since it booted (its cgroup's count)."""
    if f.machines is not None:
        return sum(_cgroup_cpu(cgroup) for m in f.machines.machines.values() for cgroup in m.cgroups)
    total = 0
    assert f.sandbox.farm is not None
    for pid in f.sandbox.farm.pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def _cgroup_cpu(cgroup: Path) -> float:
    """CPU seconds of a cgroup v2 and its descendants (0 for one of another hierarchy)."""
    try:
        for line in (cgroup / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            if key == "usage_usec":
                return int(value) / 1e6
    except OSError:
        pass
    return 0.0


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except OSError:
                continue
            todo.extend(int(c) for c in children)
    return found


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _detached(marker: bytes) -> list[int]:
    """Processes a tool left behind, detached from it (Ansible's ControlPersist masters): named by its run folder."""
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def measure(command: Command, output: Path, run_dir: Path) -> Sample:
    """Run the tool; its wall time, its CPU and memory, with what it left running on its behalf."""
    marker = str(run_dir).encode()
    with open(output, "wb") as out:
        start = time.perf_counter()
        process = subprocess.Popen(
            command.argv,
            env=command.env,
            cwd=command.cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.1):
                pids = set(_descendants(process.pid)) | set(_detached(marker))
                peak = max(peak, sum(_rss(p) for p in pids))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        timer = threading.Timer(RUN_TIMEOUT, os.killpg, (process.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
            done.set()
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        sampler.join()
    if process.returncode != 0:
        tail = output.read_text(errors="replace")[-3000:]
        raise SystemExit(f"bench: {command.argv[0]} exited {process.returncode}; its output ends:\n{tail}")
    left = sum(_cpu(pid) for pid in _detached(marker))
    return Sample(wall, usage.ru_utime + usage.ru_stime + left, usage.ru_maxrss * 1024, peak)


# -- the cases -----------------------------------------------------------------


@dataclass
class Results:
    samples: dict[tuple[str, str, int, float], list[Sample]] = field(default_factory=dict)
    startup: dict[str, float] = field(default_factory=dict)

    def add(self, tool: str, case: str, n: int, rtt: float, sample: Sample) -> None:
        self.samples.setdefault((tool, case, n, rtt), []).append(sample)

    def median(self, tool: str, case: str, n: int, rtt: float, what: str = "wall") -> float | None:
        runs = self.samples.get((tool, case, n, rtt))
        return statistics.median(getattr(s, what) for s in runs) if runs else None


def column(tool: Tool, f: Farm) -> str:
    """The table's column for ``tool`` on the farm ``f``: the tool's name, and the kind of droplets if not light."""
    return f"{tool.name} (machines)" if f.machines is not None else tool.name


def run_once(tool: Tool, f: Farm, case: str, delayed: bool, results: Results, work: Path) -> None:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{tool.name}-", dir=work))
    rtt = f.rtt_ms if delayed else 0
    label = f"{column(tool, f):8} {case:4} N={len(f.names):<3} rtt={rtt:g} ms"
    before = droplets_cpu(f)
    try:
        sample = measure(tool.command(f, run_dir, delayed), run_dir / "output.txt", run_dir)
    finally:
        # Ansible's ControlPersist masters outlive it: end them, so no run inherits another's connections.
        _kill_where(lambda cmdline: str(run_dir).encode() in cmdline, "cmdline")
    _sessions_ended(f)
    sample.droplets_cpu = droplets_cpu(f) - before
    missing = verify(f)
    if missing:
        raise SystemExit(f"bench: after {label}: {missing} (output: {run_dir / 'output.txt'})")
    log(
        f"  {label}  {sample.wall:7.2f} s  cpu {sample.cpu:6.2f} s  droplets' cpu {sample.droplets_cpu:6.2f} s"
        f"  rss {sample.rss_tree / 2**20:6.0f} MB"
    )
    results.add(column(tool, f), case, len(f.names), rtt, sample)


def compare(tools: Sequence[Tool], n: int, repeat: int, rtt_ms: float, work: Path, results: Results) -> None:
    """Every tool, alternately: cold, warm, and warm through the delay proxy."""
    log(f"farm of {n} droplets, {len(tools)} tool(s), {repeat} repetition(s)")
    with farm(n, work / f"farm-{n}", rtt_ms) as f:
        for rep in range(repeat):
            order = list(tools[rep % len(tools) :]) + list(tools[: rep % len(tools)])
            for tool in order:
                reset(f)
                run_once(tool, f, "cold", False, results, work)
                run_once(tool, f, "warm", False, results, work)
                if rtt_ms:
                    run_once(tool, f, "warm", True, results, work)


def scale(tool: Tool, sizes: Sequence[int], repeat: int, rtt_ms: float, work: Path, results: Results) -> None:
    """One tool, warm, at other farm sizes: directly, and through the delay proxy."""
    for n in sizes:
        log(f"farm of {n} droplets, {tool.name} alone")
        with farm(n, work / f"farm-{n}", rtt_ms) as f:
            reset(f)
            run_once(tool, f, "cold", False, results, work)
            for _ in range(repeat):
                run_once(tool, f, "warm", False, results, work)
                if rtt_ms:
                    run_once(tool, f, "warm", True, results, work)


def on_machines(tool: Tool, n: int, repeat: int, work: Path, results: Results) -> None:
    """One tool, cold and warm, on N sandbox machines (no delay: the light farm measures that)."""
    log(f"farm of {n} machines, {tool.name} alone")
    with farm(n, work / f"machines-{n}", 0, on_machines=True) as f:
        for _ in range(repeat):
            reset(f)
            run_once(tool, f, "cold", False, results, work)
            run_once(tool, f, "warm", False, results, work)


def startup(poseidon: str, results: Results, runs: int = 21) -> None:
    """``python -c pass``, ``poseidon --help`` and ``poseidon validate``, interleaved."""
    python = str(Path(poseidon).with_name("python"))
    commands = {
        "python -c pass": [python, "-c", "pass"],
        "poseidon --help": [poseidon, "--help"],
        "poseidon validate examples/site.yaml": [poseidon, "validate", str(ROOT / "examples" / "site.yaml")],
    }
    times: dict[str, list[float]] = {k: [] for k in commands}
    env = _base_env()  # without PYTHONDONTWRITEBYTECODE, say: Python as users run it
    for argv in commands.values():  # once untimed: byte-code compiled and in the page cache
        subprocess.run(argv, stdout=subprocess.DEVNULL, env=env, check=True)
    for _ in range(runs):
        for name, argv in commands.items():
            start = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, env=env, check=True)
            times[name].append(time.perf_counter() - start)
    results.startup = {k: statistics.median(v) for k, v in times.items()}


# -- the table -----------------------------------------------------------------


def _fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "–"
    return f"{value:.2f} {unit}" if unit == "s" else f"{value:.0f} {unit}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "–"


def table(results: Results, tools: Sequence[str], args: argparse.Namespace) -> str:
    peers = [t for t in tools if not t.startswith("poseidon")] if "poseidon" in tools else []
    head = ["case", "N", "RTT"] + list(tools) + [f"poseidon/{p}" for p in peers]
    head += [f"peak RSS {t}" for t in tools]
    rows = []
    cases = sorted({k[1:] for k in results.samples}, key=lambda c: (c[1] != args.n, c[1], c[0] != "cold", c[2]))
    for case, n, rtt in cases:
        walls = {t: results.median(t, case, n, rtt) for t in tools}
        row = [case, str(n), f"{rtt:g} ms"] + [_fmt(walls[t]) for t in tools]
        row += [_ratio(walls["poseidon"], walls[p]) for p in peers]
        row += [_fmt(_mb(results.median(t, case, n, rtt, "rss_tree")), "MB") for t in tools]
        rows.append(row)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    if results.startup:
        base = results.startup["python -c pass"]
        lines.append("| start-up | median | × python -c pass |")
        lines.append("|---|---|---|")
        for name, value in results.startup.items():
            lines.append(f"| `{name}` | {value * 1000:.0f} ms | {value / base:.1f} |")
        lines.append("")
    lines.append("| CPU (s): controlling side / droplets | N | RTT | " + " | ".join(tools) + " |")
    lines.append("|---|---|---|" + "---|" * len(tools))
    for case, n, rtt in cases:
        cells = []
        for t in tools:
            mine, theirs = results.median(t, case, n, rtt, "cpu"), results.median(t, case, n, rtt, "droplets_cpu")
            cells.append("–" if mine is None or theirs is None else f"{mine:.2f} / {theirs:.2f}")
        lines.append(f"| {case} | {n} | {rtt:g} ms | " + " | ".join(cells) + " |")
    lines.append("")
    for case, n, rtt in cases:
        cpu = results.median("poseidon", case, n, rtt, "cpu")
        if cpu is not None and rtt == 0:
            per = cpu / (n * STEPS) * 1000
            lines.append(f"poseidon CPU, {case}, N={n}: {cpu:.2f} s in all, {per:.1f} ms per step per droplet")
    return "\n".join(lines)


def _mb(value: float | None) -> float | None:
    return None if value is None else value / 2**20


def targets(results: Results, args: argparse.Namespace) -> list[str]:
    """The issue's targets, each with its figure and whether it is met."""
    n, rtt = args.n, args.rtt_ms
    m = results.median
    checks: list[tuple[str, float | None, float]] = [
        ("warm: poseidon/ansible <= 0.10", _div(m("poseidon", "warm", n, 0), m("ansible", "warm", n, 0)), 0.10),
        ("warm: poseidon/pyinfra <= 0.50", _div(m("poseidon", "warm", n, 0), m("pyinfra", "warm", n, 0)), 0.50),
        ("cold: poseidon/ansible <= 0.50", _div(m("poseidon", "cold", n, 0), m("ansible", "cold", n, 0)), 0.50),
        ("cold: poseidon/pyinfra <= 1.00", _div(m("poseidon", "cold", n, 0), m("pyinfra", "cold", n, 0)), 1.00),
    ]
    if rtt:
        checks += [
            (
                f"warm, {rtt:g} ms: poseidon/ansible <= 0.10",
                _div(m("poseidon", "warm", n, rtt), m("ansible", "warm", n, rtt)),
                0.10,
            ),
            (
                f"warm, {rtt:g} ms: poseidon/pyinfra <= 0.50",
                _div(m("poseidon", "warm", n, rtt), m("pyinfra", "warm", n, rtt)),
                0.50,
            ),
        ]
    if 50 in args.scale and 1 in args.scale:
        checks.append(("warm: N=50 / N=1 <= 3", _div(m("poseidon", "warm", 50, 0), m("poseidon", "warm", 1, 0)), 3.0))
        if rtt:
            checks.append(
                (
                    f"warm, {rtt:g} ms: N=50 / N=1 <= 3",
                    _div(m("poseidon", "warm", 50, rtt), m("poseidon", "warm", 1, rtt)),
                    3.0,
                )
            )
    if results.startup:
        s = results.startup
        checks.append(
            ("validate / python -c pass <= 4", s["poseidon validate examples/site.yaml"] / s["python -c pass"], 4.0)
        )
    lines = []
    for name, value, limit in checks:
        if value is None:
            continue
        lines.append(f"{'met    ' if value <= limit else 'NOT MET'}  {name}: {value:.2f}")
    return lines


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# -- main ----------------------------------------------------------------------


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python {platform.python_version()}, {ssh}"


def _versions(bin_dir: Path) -> str:
    out = []
    for tool, argv in (("ansible-core", ["ansible-playbook", "--version"]), ("pyinfra", ["pyinfra", "--version"])):
        try:
            text = subprocess.run([str(bin_dir / argv[0]), *argv[1:]], capture_output=True, text=True).stdout
        except FileNotFoundError:
            continue
        out.append(f"{tool} {text.split()[2 if tool == 'ansible-core' else -1].strip('[]')}")
    return ", ".join(out)


def _sizes(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="poseidon against Ansible and pyinfra on one workload.")
    parser.add_argument("--n", type=int, default=10, help="droplets in the side-by-side cases (default 10)")
    parser.add_argument(
        "--scale", type=_sizes, default=[1, 50], help="poseidon alone, warm, at these sizes (default 1,50)"
    )
    parser.add_argument(
        "--rtt-ms", type=float, default=40, help="added round trip for the delayed case (0: none; default 40)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool per case (default 3)")
    parser.add_argument("--tools", default="poseidon,ansible,pyinfra")
    parser.add_argument(
        "--peers", type=Path, default=ROOT / ".venv-bench" / "bin", help="where ansible-playbook and pyinfra are"
    )
    parser.add_argument("--poseidon", default=str(ROOT / ".venv" / "bin" / "poseidon"))
    parser.add_argument("--quick", action="store_true", help="one repetition, no other sizes")
    parser.add_argument("--startup-runs", type=int, default=21, help="runs of each start-up command (default 21)")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument(
        "--sandbox",
        choices=("light", "machines"),
        default="light",
        help="machines: also poseidon cold and warm on N sandbox machines (needs root; default light only)",
    )
    args = parser.parse_args(argv)
    if args.sandbox == "machines":
        if "poseidon" not in args.tools.split(","):
            parser.error("--sandbox machines measures poseidon: --tools must name it")
        reason = machines.unavailable()
        if reason:
            parser.error(f"--sandbox machines: {reason}")
    if args.quick:
        args.repeat, args.scale = 1, []
    # The tools run in folders of their own: a relative path (make passes one) must not move with them.
    args.peers = args.peers.resolve()
    names = [t for t in args.tools.split(",") if t]
    available: dict[str, Callable[[], Tool]] = {
        "poseidon": lambda: Poseidon(args.poseidon),
        "ansible": lambda: Ansible(args.peers),
        "pyinfra": lambda: Pyinfra(args.peers),
    }
    tools = [available[t]() for t in names]
    results = Results()
    with tempfile.TemporaryDirectory(prefix="poseidon-bench-") as tmp:
        work = Path(tmp)
        compare(tools, args.n, args.repeat, args.rtt_ms, work, results)
        if "poseidon" in names and args.scale:
            scale(tools[names.index("poseidon")], args.scale, args.repeat, args.rtt_ms, work, results)
        if args.sandbox == "machines":
            on_machines(tools[names.index("poseidon")], args.n, args.repeat, work, results)
            names.append("poseidon (machines)")
    if "poseidon" in names:
        startup(args.poseidon, results, args.startup_runs)
    print(f"\nmachine: {_machine()}")
    print(f"peers: {_versions(args.peers)}")
    print(
        f"medians of {args.repeat} run(s); the {args.rtt_ms:g} ms round trip is added by bench/delay.py,"
        " a TCP proxy (no netem here)"
    )
    print("peak RSS: all processes of the controlling side together, sampled every 100 ms\n")
    print(table(results, names, args))
    print()
    print("\n".join(targets(results, args)))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "runs": {
                        f"{t}/{c}/N={n}/rtt={r:g}": [s.__dict__ for s in v]
                        for (t, c, n, r), v in results.samples.items()
                    },
                    "startup": results.startup,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
