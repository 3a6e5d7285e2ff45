"""A stand-in for sshd that is slow to take SIGHUP, as a real one is on a loaded machine.

It does what sshd does around a reload, in the same order: listen on the
config's ``ListenAddress`` lines, set up (here: sleep as many seconds as the
file named by ``SLOW_SSHD_DELAY_FILE`` says, read at each start), catch
SIGHUP, then write its ``PidFile``. On SIGHUP it closes its sockets, removes
the pid file and re-executes itself with SIGHUP ignored, so a second SIGHUP
sent before it has set up again is lost, as with sshd. A first
start has SIGHUP's default action: an early SIGHUP ends it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from typing import Any


def main() -> None:
    config = sys.argv[sys.argv.index("-f") + 1]
    listen: list[tuple[str, int]] = []
    pid_file = ""
    with open(config) as lines:
        for line in lines:
            words = line.split(None, 1)
            if words and words[0] == "ListenAddress":
                host, port = words[1].strip().rsplit(":", 1)
                listen.append((host, int(port)))
            elif words and words[0] == "PidFile":
                pid_file = words[1].strip().strip('"')
    sockets = []
    for address in listen:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(address)
        server.listen(64)
        sockets.append(server)
    with open(os.environ["SLOW_SSHD_DELAY_FILE"]) as delay:
        time.sleep(float(delay.read()))

    def restart(signum: int, frame: Any) -> None:
        for server in sockets:
            server.close()
        if pid_file and os.path.exists(pid_file):
            os.unlink(pid_file)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until set up again, as sshd
        os.execv(sys.executable, [sys.executable, *sys.argv])

    signal.signal(signal.SIGHUP, restart)
    if pid_file:
        with open(pid_file, "w") as file:
            file.write(f"{os.getpid()}\n")
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
