"""Host keys: accept-new per droplet, changed keys refused, reused addresses told apart, keys pinned at birth."""

from __future__ import annotations

import base64
import email
import hashlib
import hmac
import re
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

import poseidon.api as po
from poseidon import hostkeys
from poseidon.droplet import Droplet
from poseidon.errors import HostKeyChangedError, UsageError
from poseidon.hostkeys import HostKey, address_name, alias
from poseidon.sandbox import Sandbox
from poseidon.settings import Settings
from poseidon.spec import CreateDroplet
from poseidon.ssh import SSHClient
from poseidon.targets import Target, create_missing
from support.sandboxes import pointed


def new_key() -> str:
    """A public key line no server here has: another droplet's, or an attacker's."""
    return hostkeys.pinned_user_data()[1]


def host_key(sandbox: Sandbox) -> str:
    """The public key every droplet of this sandbox presents (one sshd serves them all)."""
    return (sandbox.root / "etc" / "ssh_host_ed25519_key.pub").read_text().strip()


def fingerprint(line: str) -> str:
    return HostKey.parse(line).fingerprint


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.fixture
def known_hosts(tmp_path: Path) -> Path:
    return tmp_path / "ssh" / "known_hosts"


@pytest.fixture
def droplet(sandbox_env: Sandbox) -> Droplet:
    return po.connect().droplets.by_name("test")


def address_of(sandbox: Sandbox, name: str = "test") -> str:
    return address_name(sandbox.address(name), sandbox.ssh_port)


def connect(droplet: Droplet, known_hosts: Path, notices: list[str]) -> SSHClient:
    ssh = droplet.connect(known_hosts=str(known_hosts))
    ssh.on_notice = notices.append
    return ssh.open()


# -- over real OpenSSH -------------------------------------------------------------


def test_first_contact_records_the_key_under_the_address_and_the_droplet_id(
    sandbox_env: Sandbox, droplet: Droplet, known_hosts: Path
) -> None:
    notices: list[str] = []
    with connect(droplet, known_hosts, notices) as ssh:
        assert ssh.wait("echo hello") == "hello\n"
    address = address_of(sandbox_env)
    key = HostKey.parse(host_key(sandbox_env))
    assert lines(known_hosts) == [f"{address},poseidon-droplet-{droplet.id} {key}"]
    assert notices == [
        f"first contact with test (id {droplet.id}) at {address}: recorded its host key"
        f" ssh-ed25519 {key.fingerprint} in {known_hosts}"
    ]

    with connect(droplet, known_hosts, notices):
        pass
    assert len(notices) == 1, "a known key is no news"
    assert len(lines(known_hosts)) == 1


def test_a_changed_key_for_the_same_droplet_stops_it_and_says_what_changed(
    sandbox_env: Sandbox, droplet: Droplet, known_hosts: Path
) -> None:
    address = address_of(sandbox_env)
    was = new_key()
    hostkeys.record(known_hosts, [address, alias(droplet.id)], was)
    before = known_hosts.read_bytes()

    with pytest.raises(HostKeyChangedError) as caught:
        connect(droplet, known_hosts, [])

    assert str(caught.value) == (
        f"the host key of droplet test (id {droplet.id}) at {address} changed:"
        f" was ssh-ed25519 {fingerprint(was)}, now ssh-ed25519 {fingerprint(host_key(sandbox_env))};"
        f" if you rebuilt it, remove the lines for poseidon-droplet-{droplet.id} and {address} from {known_hosts}"
    )
    assert caught.value.names == (f"poseidon-droplet-{droplet.id}", address)
    assert known_hosts.read_bytes() == before, "a refused key is never recorded"


def test_a_changed_key_is_refused_even_when_only_the_droplet_id_knew_it(
    sandbox_env: Sandbox, droplet: Droplet, known_hosts: Path
) -> None:
    # The address has the presented key (another droplet's? a copied line?): the id's record decides.
    hostkeys.record(known_hosts, [alias(droplet.id)], new_key())
    hostkeys.record(known_hosts, [address_of(sandbox_env)], host_key(sandbox_env))
    with pytest.raises(HostKeyChangedError):
        connect(droplet, known_hosts, [])


def test_a_new_droplet_on_a_reused_address_is_accepted_with_a_notice_and_replaces_the_old_line(
    sandbox_env: Sandbox, droplet: Droplet, known_hosts: Path
) -> None:
    address = address_of(sandbox_env)
    old = HostKey.parse(new_key())
    known_hosts.parent.mkdir()
    known_hosts.write_text(f"# kept as it is\n{address},poseidon-droplet-41 {old}\n")
    notices: list[str] = []

    with connect(droplet, known_hosts, notices) as ssh:
        assert ssh.wait("echo reached") == "reached\n"

    now = HostKey.parse(host_key(sandbox_env))
    assert lines(known_hosts) == [
        "# kept as it is",
        f"poseidon-droplet-41 {old}",
        f"{address},poseidon-droplet-{droplet.id} {now}",
    ]
    assert notices == [
        f"test (id {droplet.id}) is a new droplet at {address}, which had droplet 41's host key"
        f" (ssh-ed25519 {old.fingerprint}): DigitalOcean reuses addresses;"
        f" recorded ssh-ed25519 {now.fingerprint} in its place in {known_hosts}"
    ]


def boot_with_the_keys_it_was_sent(sandbox: Sandbox, name: str) -> dict[str, str]:
    """Cloud-init's part, which the sandbox does not play: the droplet ``name`` (the sandbox's only one,
    so its sshd is the droplet's alone) is booted with the host key of the user data it was created with.
    Returns that user data's ``ssh_keys``."""
    droplet_id = po.connect().droplets.by_name(name).id
    user_data = sandbox.emulator.user_data(droplet_id)
    assert user_data is not None, "the droplet was created without user data"
    keys: dict[str, str] = cloud_config(user_data)["ssh_keys"]
    sandbox.power_off(name)  # its sshd stops: the next one reads the key
    private = sandbox.root / "etc" / "ssh_host_ed25519_key"
    private.write_text(keys["ed25519_private"])
    private.chmod(0o600)
    private.with_suffix(".pub").write_text(keys["ed25519_public"] + "\n")
    sandbox.power_on(name)
    return keys


@pytest.mark.sandbox
def test_a_key_pinned_at_birth_is_verified_on_the_first_connection(
    known_hosts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pointed([], monkeypatch) as sandbox:
        create = CreateDroplet(region="nyc3", size="s-1vcpu-1gb", image="ubuntu-24-04-x64")
        (born,) = create_missing([Target("born", None, create=create)], po.connect(), known_hosts=str(known_hosts))
        assert born.droplet is not None
        droplet = born.droplet
        sent = HostKey.parse(boot_with_the_keys_it_was_sent(sandbox, "born")["ed25519_public"])
        # Recorded before the droplet was ever reached: the key sent in its user data, under its id.
        assert lines(known_hosts) == [f"poseidon-droplet-{droplet.id} {sent}"]

        notices: list[str] = []
        with connect(droplet, known_hosts, notices) as ssh:
            assert ssh.wait("echo pinned") == "pinned\n"
        address = address_of(sandbox, "born")
    assert notices == [], "no first contact: the key was known before"
    assert lines(known_hosts) == [f"poseidon-droplet-{droplet.id} {sent}", f"{address} {sent}"]  # and its address
    assert hostkeys.decide(hostkeys.load(known_hosts), sent, address=address).verdict == "known"


def test_a_wrong_pinned_key_is_refused_on_the_first_connection(
    sandbox_env: Sandbox, droplet: Droplet, known_hosts: Path
) -> None:
    user_data, public = hostkeys.pinned_user_data()  # the droplet never got this user data
    hostkeys.record(known_hosts, [alias(droplet.id)], public)
    with pytest.raises(HostKeyChangedError, match=re.escape(f"was ssh-ed25519 {fingerprint(public)}")):
        connect(droplet, known_hosts, [])
    assert lines(known_hosts) == [f"poseidon-droplet-{droplet.id} {HostKey.parse(public)}"]


def test_without_a_droplet_id_another_key_at_the_address_is_a_change(sandbox_env: Sandbox, known_hosts: Path) -> None:
    address = address_of(sandbox_env)
    hostkeys.record(known_hosts, [address], new_key())
    ssh = SSHClient(
        sandbox_env.address("test"),
        user=sandbox_env.user,
        port=sandbox_env.ssh_port,
        key_filename=sandbox_env.key_filename,
        known_hosts=str(known_hosts),
    )
    with pytest.raises(HostKeyChangedError, match=r"^the host key of \[.*changed: .* remove the lines for \["):
        ssh.open()


def test_the_sandbox_s_own_known_hosts_gains_the_droplet_ids(sandbox_env: Sandbox, droplet: Droplet) -> None:
    with droplet.connect() as ssh:
        ssh.wait("true")
    key = HostKey.parse(host_key(sandbox_env))
    assert key in [e.key for e in hostkeys.load(sandbox_env.known_hosts) if e.matches(alias(droplet.id))]


@pytest.mark.sandbox
def test_a_droplet_that_comes_back_with_a_new_host_key_is_stopped(tmp_path: Path) -> None:
    # A kept sandbox keeps its droplets' ids; removing its host key makes its sshd come back with another,
    # as a rebuilt droplet would (on another port, so only the droplet's id can tell).
    root, known_hosts = tmp_path / "sandbox", tmp_path / "known_hosts"
    try:
        with Sandbox(["web"], root=root, keep=True) as first:
            droplet = po.connect(settings=Settings.from_environ(first.environ)).droplets.by_name("web")
            with droplet.connect(
                known_hosts=str(known_hosts), port=first.ssh_port, user=first.user, key_filename=first.key_filename
            ) as ssh:
                ssh.wait("true")
        for key in (root / "etc").glob("ssh_host_ed25519_key*"):
            key.unlink()
        with Sandbox(["web"], root=root, keep=True) as second:
            again = po.connect(settings=Settings.from_environ(second.environ)).droplets.by_name("web")
            assert again.id == droplet.id
            ssh = again.connect(
                known_hosts=str(known_hosts), port=second.ssh_port, user=second.user, key_filename=second.key_filename
            )
            with pytest.raises(HostKeyChangedError, match=f"droplet web \\(id {droplet.id}\\)"):
                ssh.open()
    finally:
        Sandbox.wipe(root)


# -- the decision, on its own --------------------------------------------------------

A, B, C = HostKey.parse(new_key()), HostKey.parse(new_key()), HostKey.parse(new_key())
ADDRESS = "203.0.113.7"


@pytest.mark.parametrize(
    ("file", "droplet_id", "presented", "verdict", "record"),
    [
        pytest.param([], 7, A, "new", (ADDRESS, "poseidon-droplet-7"), id="nothing known: first contact"),
        pytest.param([], None, A, "new", (ADDRESS,), id="nothing known, no id"),
        pytest.param(
            [f"{ADDRESS},poseidon-droplet-7 {A}"],
            7,
            A,
            "known",
            (ADDRESS, "poseidon-droplet-7"),
            id="the droplet's key",
        ),
        pytest.param([f"{ADDRESS},poseidon-droplet-7 {A}"], 7, B, "changed", (), id="another key for the droplet"),
        pytest.param(
            [f"poseidon-droplet-7 {A}", f"{ADDRESS} {B}"], 7, B, "changed", (), id="the id decides over the address"
        ),
        pytest.param(
            [f"poseidon-droplet-7 {A}", f"{ADDRESS} {B}"],
            7,
            A,
            "known",
            (ADDRESS, "poseidon-droplet-7"),
            id="the droplet's key, the address another's",
        ),
        pytest.param([f"{ADDRESS} {A}"], 7, A, "known", ("poseidon-droplet-7",), id="the address's key, id unknown"),
        pytest.param(
            [f"{ADDRESS},poseidon-droplet-3 {A}"],
            7,
            B,
            "reused",
            (ADDRESS, "poseidon-droplet-7"),
            id="a new droplet on an old address",
        ),
        pytest.param([f"{ADDRESS} {A}"], 7, B, "changed", (), id="another key at the address, known only to OpenSSH"),
        pytest.param(
            [f"{ADDRESS} {A}", f"poseidon-droplet-3 {C}"],
            7,
            B,
            "changed",
            (),
            id="another droplet's key elsewhere does not make the address reused",
        ),
        pytest.param([f"{ADDRESS} {A}"], None, B, "changed", (), id="another key at the address, no id"),
        pytest.param([f"{ADDRESS} {A}"], None, A, "known", (), id="the address's key, no id"),
        pytest.param(
            [f"[{ADDRESS}]:2222 {A}"], 7, B, "new", (ADDRESS, "poseidon-droplet-7"), id="another port is another name"
        ),
        pytest.param(
            [f"@revoked {ADDRESS} {A}"],
            7,
            A,
            "new",
            (ADDRESS, "poseidon-droplet-7"),
            id="marked lines are not host keys",
        ),
    ],
)
def test_decide(
    file: list[str], droplet_id: int | None, presented: HostKey, verdict: str, record: tuple[str, ...]
) -> None:
    decision = hostkeys.decide(hostkeys.parse("\n".join(file)), presented, address=ADDRESS, droplet_id=droplet_id)
    assert (decision.verdict, decision.record) == (verdict, record)


def test_a_reused_address_names_its_previous_tenants() -> None:
    text = f"{ADDRESS},poseidon-droplet-3 {A}\nposeidon-droplet-5,{ADDRESS} {A}\n"
    decision = hostkeys.decide(hostkeys.parse(text), B, address=ADDRESS, droplet_id=9)
    assert decision.previous == (3, 5)
    assert decision.was_key == A


def hashed(name: str, salt: bytes = b"0123456789abcdefghij") -> str:
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def test_hashed_names_are_read_like_clear_ones() -> None:
    entries = hostkeys.parse(f"{hashed(ADDRESS)} {A}\n")
    assert hostkeys.decide(entries, A, address=ADDRESS, droplet_id=7).verdict == "known"
    assert hostkeys.decide(entries, B, address=ADDRESS, droplet_id=7).verdict == "changed"
    assert hostkeys.decide(entries, A, address="203.0.113.8", droplet_id=7).verdict == "new"


def test_a_replacement_keeps_every_line_it_does_not_concern(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    other = HostKey.parse(new_key())
    kept = [
        "# my servers",
        f"example.org,198.51.100.1 {other} laptop",
        f"@cert-authority *.example.org {other}",
        f"{hashed('198.51.100.2')} {other}",
        "a damaged line",
    ]
    path.write_text("\n".join([*kept, f"{hashed(ADDRESS)} {A}", f"{ADDRESS},poseidon-droplet-3 {A} old"]) + "\n")
    notices: list[str] = []
    decision = hostkeys.verify(path, B, address=ADDRESS, droplet_id=9, on_notice=notices.append)
    assert decision.verdict == "reused"
    # OpenSSH's own (hashed) line for the address stays: poseidon rewrites only lines it wrote.
    assert lines(path) == [
        *kept,
        f"{hashed(ADDRESS)} {A}",
        f"poseidon-droplet-3 {A} old",
        f"{ADDRESS},poseidon-droplet-9 {B}",
    ]
    assert len(notices) == 1


def test_a_symlinked_known_hosts_stays_a_link(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "known_hosts"
    real.parent.mkdir()
    real.write_text(f"{ADDRESS},poseidon-droplet-3 {A}\n")
    link = tmp_path / "known_hosts"
    link.symlink_to(real)
    hostkeys.verify(link, B, address=ADDRESS, droplet_id=9, on_notice=lambda text: None)
    assert link.is_symlink()
    assert lines(real) == [f"poseidon-droplet-3 {A}", f"{ADDRESS},poseidon-droplet-9 {B}"]


def test_a_missing_newline_at_the_end_is_not_glued_to_the_new_line(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"198.51.100.1 {A}")
    hostkeys.record(path, ["poseidon-droplet-1"], str(B))
    assert lines(path) == [f"198.51.100.1 {A}", f"poseidon-droplet-1 {B}"]


def test_workers_in_threads_record_every_droplet(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    # Every address was another droplet's, as poseidon recorded it.
    path.write_text("".join(f"10.0.0.{i},poseidon-droplet-{1000 + i} {A}\n" for i in range(40)))

    def connect(i: int) -> None:
        hostkeys.verify(path, B, address=f"10.0.0.{i}", droplet_id=i, on_notice=lambda text: None)

    threads = [threading.Thread(target=connect, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = hostkeys.load(path)
    assert all(hostkeys.decide(entries, B, address=f"10.0.0.{i}", droplet_id=i).verdict == "known" for i in range(40))
    assert all(e.key == B for e in entries if any(n.startswith("10.0.0.") for n in e.names))


def test_forget_removes_a_droplet_s_names_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"{ADDRESS},poseidon-droplet-3 {A}\n198.51.100.1 {B}\n")
    assert hostkeys.forget(path, [ADDRESS, "poseidon-droplet-3"]) == 1
    assert lines(path) == [f"198.51.100.1 {B}"]
    assert hostkeys.forget(path, ["poseidon-droplet-3"]) == 0


def test_the_types_asked_for_first_are_the_recorded_ones() -> None:
    ecdsa = (
        "ecdsa-sha2-nistp256 "
        + base64.b64encode(b"\0\0\0\x13ecdsa-sha2-nistp256\0\0\0\x08nistp256\0\0\0\x01\x04").decode()
    )
    entries = hostkeys.parse(f"{ADDRESS} {ecdsa}\nposeidon-droplet-7 {A}\n")
    assert hostkeys.preferred_types(entries, address=ADDRESS) == ["ecdsa-sha2-nistp256"]
    assert hostkeys.preferred_types(entries, address=ADDRESS, droplet_id=7) == ["ssh-ed25519"]
    assert hostkeys.preferred_types(entries, address=ADDRESS, droplet_id=8) == ["ecdsa-sha2-nistp256"]
    assert hostkeys.preferred_types([], address=ADDRESS, droplet_id=8) == []


@pytest.mark.parametrize(
    ("recorded", "first"),
    [(["ecdsa-sha2-nistp256"], ["ecdsa-sha2-nistp256"]), (["ssh-rsa"], ["rsa-sha2-512", "rsa-sha2-256"])],
)
def test_the_connection_asks_for_the_recorded_key_types_first(recorded: list[str], first: list[str]) -> None:
    from poseidon.ssh import _preferring

    ours, theirs = socket.socketpair()
    transport = _preferring(recorded)(ours)
    try:
        offered = list(transport.get_security_options().key_types)
        assert offered[: len(first)] == first
        assert "ssh-ed25519" in offered, "the other types are still offered, after"
    finally:
        transport.close()
        theirs.close()


def test_fingerprints_read_as_openssh_prints_them(tmp_path: Path) -> None:
    public = tmp_path / "key.pub"
    public.write_text(new_key() + "\n")
    printed = subprocess.run(["ssh-keygen", "-lf", str(public)], capture_output=True, text=True, check=True).stdout
    assert printed.split()[1] == HostKey.parse(public.read_text()).fingerprint


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("", r"not a public key line: ''"),
        ("ssh-ed25519", r"not a public key line: 'ssh-ed25519'"),
        ("ssh-ed25519 not-base64!", r"not a public key line \(bad base64\)"),
        (f"ssh-rsa {A.base64}", r"not a public key line \(the key is not ssh-rsa\)"),
    ],
    ids=["empty", "no-key", "bad-base64", "type-mismatch"],
)
def test_record_refuses_what_is_not_a_public_key_line(tmp_path: Path, line: str, why: str) -> None:
    known_hosts = tmp_path / "known_hosts"
    with pytest.raises(ValueError, match=why):
        hostkeys.record(known_hosts, ["poseidon-droplet-1"], line)
    assert not known_hosts.exists()  # nothing was recorded


# -- pinning at birth -------------------------------------------------------------------


def cloud_config(text: str) -> dict:  # type: ignore[type-arg]
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    assert isinstance(config, dict)
    return config


def assert_pins(config: dict, public: str) -> None:  # type: ignore[type-arg]
    from cryptography.hazmat.primitives import serialization

    keys = config["ssh_keys"]
    assert keys["ed25519_public"] == public
    private = serialization.load_ssh_private_key(keys["ed25519_private"].encode(), password=None)
    derived = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert derived.decode() == public, "the droplet gets the private half of the pinned key"


def test_pinned_user_data_is_cloud_config_that_installs_the_key_it_returns() -> None:
    user_data, public = hostkeys.pinned_user_data()
    config = cloud_config(user_data)
    assert_pins(config, public)
    assert config["ssh_deletekeys"] is True and config["ssh_genkeytypes"] == []
    assert HostKey.parse(public).type == "ssh-ed25519"
    assert hostkeys.pinned_user_data()[1] != public, "every droplet gets a key of its own"


def test_the_playbook_s_cloud_config_is_merged_and_its_own_choices_win() -> None:
    theirs = "#cloud-config\npackages: [nginx]\nssh_genkeytypes: [rsa]\nruncmd:\n  - touch /made\n"
    user_data, public = hostkeys.pinned_user_data(theirs)
    config = cloud_config(user_data)
    assert_pins(config, public)
    assert config["packages"] == ["nginx"] and config["runcmd"] == ["touch /made"]
    assert config["ssh_genkeytypes"] == ["rsa"]


def test_a_script_becomes_the_second_part_of_a_multipart_message() -> None:
    script = "#!/bin/sh\necho hello > /made\n"
    user_data, public = hostkeys.pinned_user_data(script)
    parts = [p for p in email.message_from_string(user_data).walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/cloud-config", "text/x-shellscript"]
    assert_pins(cloud_config(str(parts[0].get_payload(decode=True), "utf-8")), public)
    assert parts[1].get_payload(decode=True) == script.encode()


def test_a_multipart_message_gets_poseidon_s_part_in_front() -> None:
    theirs, _ = hostkeys.pinned_user_data("#!/bin/sh\ntrue\n")
    theirs = theirs.replace("ssh_keys", "ssh_nothing")  # stands for a multipart message a user wrote
    user_data, public = hostkeys.pinned_user_data(theirs)
    parts = [p for p in email.message_from_string(user_data).walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/cloud-config", "text/cloud-config", "text/x-shellscript"]
    assert_pins(cloud_config(str(parts[0].get_payload(decode=True), "utf-8")), public)


@pytest.mark.parametrize(
    ("user_data", "message"),
    [
        ("#cloud-config\nssh_keys: {ed25519_public: x}\n", "sets ssh_keys"),
        ("#cloud-config\n- a list\n", "must be a mapping"),
        ("#cloud-config\nkey: [unclosed\n", "not valid cloud-config YAML"),
        ("echo hello\n", "no format cloud-init knows"),
    ],
)
def test_user_data_that_cannot_carry_a_pinned_key_is_refused(user_data: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        hostkeys.pinned_user_data(user_data)


def test_making_a_pinned_key_writes_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    hostkeys.pinned_user_data("#!/bin/sh\ntrue\n")
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.parametrize("written", ["clear", "hashed"])
def test_another_key_that_only_openssh_knew_for_the_address_is_refused_and_its_line_kept(
    written: str, sandbox_env: Sandbox, droplet: Droplet, known_hosts: Path
) -> None:
    address = address_of(sandbox_env)
    old = HostKey.parse(new_key())
    known_hosts.parent.mkdir()
    name = address if written == "clear" else hashed(address)
    known_hosts.write_text(f"{name} {old}\n")
    before = known_hosts.read_bytes()
    with pytest.raises(HostKeyChangedError) as caught, connect(droplet, known_hosts, []) as ssh:
        ssh.wait("echo never")
    now = HostKey.parse(host_key(sandbox_env))
    message = str(caught.value)
    assert f"was ssh-ed25519 {old.fingerprint}, now ssh-ed25519 {now.fingerprint}" in message
    assert "not written by poseidon for another droplet" in message
    assert known_hosts.read_bytes() == before, "a line OpenSSH wrote was changed"
