"""One shell session per connection: commands run one after another in it, over real OpenSSH."""

from __future__ import annotations

import threading
import time

import pytest

import poseidon.api as po
from poseidon.errors import SSHError
from poseidon.sandbox import Sandbox
from poseidon.ssh import SSHClient
from support.sandboxes import PATIENCE, command_lines_seen, end_once_seen


@pytest.fixture
def ssh(sandbox_env: Sandbox) -> SSHClient:
    client = po.connect().droplets.by_name("test").connect()
    yield client
    client.close()


def test_each_command_gets_its_own_exit_status_stdout_and_stderr(ssh: SSHClient) -> None:
    shell = ssh.wait("echo $$")
    first = ssh.run("echo out; echo err >&2; exit 3")
    second = ssh.run("printf 'no newline'")
    third = ssh.run("printf 'two\\n\\n'")
    assert (first.exited, first.stdout, first.stderr) == (3, "out\n", "err\n")
    assert (second.exited, second.stdout, second.stderr) == (0, "no newline", "")
    assert third.stdout == "two\n\n"
    assert ssh.wait("echo $$") == shell  # one shell served all three


def test_exit_cd_and_a_syntax_error_leave_the_session_as_it_was(ssh: SSHClient) -> None:
    home = ssh.wait("pwd")
    assert ssh.run("cd /; exit 7").exited == 7
    broken = ssh.run("if then fi (")
    assert broken.exited != 0 and "syntax" in broken.stderr.lower()
    assert ssh.wait("pwd") == home
    assert ssh.run("X=1; export Y=2").exited == 0
    assert ssh.wait('echo "${X-unset} ${Y-unset}"') == "unset unset\n"


def test_a_command_cannot_read_the_sessions_input(ssh: SSHClient) -> None:
    # stdin is /dev/null: cat ends at once instead of swallowing the next commands.
    assert ssh.run("cat").stdout == ""
    assert ssh.wait("echo after") == "after\n"


def test_stdin_reaches_the_command_and_no_process_list_or_file(ssh: SSHClient, sandbox_env: Sandbox) -> None:
    secret = "s3cret-" + "x" * 20
    results = []
    with command_lines_seen() as seen:
        # It runs until the watcher has seen it running: then its sleep is ended.
        command = "read -r value; sleep 60.4711; printf '%s' \"$value\" | wc -c"
        runner = threading.Thread(target=lambda: results.append(ssh.run(command, stdin=secret + "\n")))
        runner.start()
        end_once_seen(sandbox_env, "test", seen, b"sleep\x0060.4711\x00")
        runner.join(PATIENCE)
    assert results[0].stdout.strip() == str(len(secret))
    assert not any(secret.encode() in argv for argv in seen)
    found = ssh.run(f"grep -rl {secret} . 2>/dev/null").stdout
    assert found == ""


def test_binary_and_large_output_arrive_whole(ssh: SSHClient) -> None:
    big = ssh.run("head -c 3000000 /dev/zero | tr '\\0' a; echo; head -c 200000 /dev/zero | tr '\\0' b >&2")
    assert big.stdout == "a" * 3_000_000 + "\n"
    assert big.stderr == "b" * 200_000
    assert ssh.run("printf '\\377\\376'").stdout == "\ufffd\ufffd"


def test_a_shell_killed_on_the_droplet_is_replaced_and_a_lost_connection_is_an_ssh_error(ssh: SSHClient) -> None:
    assert ssh.wait("echo one") == "one\n"
    # In a subshell $$ is still the session's shell.
    with pytest.raises(SSHError, match="the session's shell ended"):
        ssh.run("kill -9 $$; sleep 5")
    assert ssh.wait("echo two") == "two\n"  # a new session on the same connection
    ssh.connection.client.get_transport().close()
    with pytest.raises(SSHError, match="connection"):
        ssh.run("echo three")


def test_the_lock_ends_with_the_connection_even_when_a_command_left_a_process_running(sandbox_env: Sandbox) -> None:
    droplet = po.connect().droplets.by_name("test")
    first = droplet.connect()
    assert first.lock("first").held
    first.run("sleep 30 >/dev/null 2>&1 &")
    second = droplet.connect()
    try:
        busy = second.lock("second")
        assert (busy.state, busy.detail) == ("busy", "first")
        first.close()
        # The droplet's shell ends a moment after the connection: try again for a while, not
        # for the 30 s the left process runs (a lock it had inherited would outlive them all).
        deadline = time.monotonic() + 10
        while True:
            third = droplet.connect()
            held = third.lock("third").held
            third.close()
            if held or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert held
    finally:
        second.close()
        first.close()


def test_commands_sent_together_come_back_in_order(ssh: SSHClient) -> None:
    results = ssh.run_pipelined(["echo one; echo e1 >&2", "exit 4", "printf three"])
    assert [(r.exited, r.stdout, r.stderr) for r in results] == [(0, "one\n", "e1\n"), (4, "", ""), (0, "three", "")]
    frames = ssh.snapshots("-Af", "-Ao pid,comm")
    assert list(frames[0].columns)[-1] == "CMD" and list(frames[1].columns) == ["PID", "COMMAND"]


def test_output_a_left_process_writes_later_is_not_the_next_commands(ssh: SSHClient, sandbox_env: Sandbox) -> None:
    home = sandbox_env.home("test")
    for name in ("go", "done"):
        (home / name).unlink(missing_ok=True)
    # The left process writes when told, between two commands, and says when it has.
    ssh.run("(while [ ! -e go ]; do sleep 0.02; done; echo stray; echo stray-err >&2; touch done) &")
    (home / "go").touch()
    deadline = time.monotonic() + 10
    while not (home / "done").exists():
        assert time.monotonic() < deadline, "the left process never wrote"
        time.sleep(0.02)
    later = ssh.run("echo next; echo next-err >&2")
    assert (later.stdout, later.stderr) == ("next\n", "next-err\n")


def test_a_lock_file_that_cannot_be_opened_is_told_and_the_session_lives_on(
    ssh: SSHClient, sandbox_env: Sandbox
) -> None:
    lock = sandbox_env.home("test") / ".poseidon" / "apply.lock"
    lock.parent.mkdir(exist_ok=True)
    lock.unlink(missing_ok=True)
    lock.mkdir()
    try:
        answer = ssh.lock("me")
        assert (answer.state, answer.detail) == ("none", "cannot open ~/.poseidon/apply.lock")
        assert ssh.wait("echo alive") == "alive\n"
    finally:
        lock.rmdir()


def test_when_the_shell_holding_the_lock_dies_no_command_runs_unlocked(ssh: SSHClient) -> None:
    assert ssh.lock("me").held
    with pytest.raises(SSHError, match="the session's shell ended"):
        ssh.run("kill -9 $$")
    with pytest.raises(SSHError, match="apply lock"):
        ssh.run("echo unlocked")


@pytest.mark.parametrize("chunk", [1, 7, 4096, 65536, 1 << 20])
def test_a_framed_output_keeps_at_most_its_head_and_tail_whatever_the_chunk_that_ends_it(chunk: int) -> None:
    """However the stream is cut into packets (the last may carry the end marker), the kept output is bounded."""
    from poseidon.session import _Framed

    keep = 1000
    body = b"H" * keep + b"m" * 50_000 + b"T" * keep
    stream = b"noise" + b"tok<\n" + body + b"\ntok 0\nnext command"
    buffer = bytearray()
    framed = _Framed(buffer, b"tok<\n", b"\ntok ")
    for at in range(0, len(stream), chunk):
        buffer += stream[at : at + chunk]
        framed.done()
        framed.trim(keep)
    assert framed.done()
    output = framed.output()
    note = f"\n[poseidon: {len(body) - 2 * keep:,} bytes of output not kept here]\n".encode()
    assert output == b"H" * keep + note + b"T" * keep
    assert buffer[framed.end :].startswith(b"\ntok 0\nnext command")


def test_a_step_printing_megabytes_keeps_its_head_and_tail_and_says_what_it_dropped(sandbox_env: Sandbox) -> None:
    """20 MB of output: the step's memory is its kept head and tail, the run log's its tail."""
    import poseidon.api as po
    from poseidon import steps
    from poseidon.ssh import STEP_OUTPUT_KEPT

    command = "echo first-line; head -c 20000000 /dev/zero | tr '\\0' x; echo; echo last-line >&2; echo last-line"
    with po.connect().droplets.by_name("test").connect() as ssh:
        outcome = ssh.run_step(steps.build("run", cmd=command))
        assert outcome.status == "changed"
        assert outcome.stdout.startswith("first-line\n") and outcome.stdout.endswith("last-line")
        assert len(outcome.stdout) < 3 * STEP_OUTPUT_KEPT
        dropped = 20_000_000 + 1 + len("first-line\nlast-line\n") - len(outcome.stdout.encode())
        assert "[poseidon: " in outcome.stdout and "bytes of output not kept here]" in outcome.stdout
        assert abs(int(outcome.stdout.split("[poseidon: ")[1].split(" ")[0].replace(",", "")) - dropped) < 200
        assert outcome.stderr.strip() == "last-line"
        assert ssh.wait("echo after") == "after\n", "the session goes on after a trimmed output"


class _Channel:
    """A channel that takes ``per_send`` bytes of each send, each taking ``seconds`` of a fake clock;
    ``per_send`` 0: none, as a window that stays shut (the timeout set passes)."""

    def __init__(self, clock: list[float], per_send: int, seconds: float) -> None:
        self.clock, self.per_send, self.seconds = clock, per_send, seconds
        self.taken = 0

    def settimeout(self, timeout: float | None) -> None:
        pass

    def send(self, data: memoryview) -> int:
        # Half the time in a wait for the window that times out, half in the send that follows.
        self.clock[0] += self.seconds / 2
        self.waited = not getattr(self, "waited", False)
        if self.waited or not self.per_send:
            raise TimeoutError
        self.taken += min(len(data), self.per_send)
        return min(len(data), self.per_send)


def test_a_slow_upload_that_goes_on_is_no_timeout_and_one_that_stalls_is(monkeypatch: pytest.MonkeyPatch) -> None:
    from poseidon import session

    clock = [0.0]
    monkeypatch.setattr(session.time, "monotonic", lambda: clock[0])
    shell = session.Session.__new__(session.Session)
    # 200 kB, 32 kB each 1.5 s: 10.5 s in all, against a 3 s timeout, but never 3 s without progress.
    shell.channel = slow = _Channel(clock, 32768, 1.5)
    shell.send("x" * 200_000, session._Watch(None, None, 3.0))
    assert slow.taken == 200_000
    shell.channel = _Channel(clock, 0, 1.0)
    with pytest.raises(session.Unanswered, match="past its timeout"):
        shell.send("x", session._Watch(None, None, 3.0))
