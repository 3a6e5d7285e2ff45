"""A TCP proxy that adds a network round trip: ``python bench/delay.py``.

This machine's kernel has no netem, so the benchmark adds latency here. Each
route ``ADDRESS:LISTEN:TO`` listens on ADDRESS:LISTEN and forwards to
ADDRESS:TO. Every chunk read in either direction is held for half the round
trip before it is written on, and chunks keep their order, so the delay is a
latency, not a bandwidth limit. sshd still sees the address the client
connected to, which is how a sandbox droplet is told apart.

    python bench/delay.py --rtt-ms 40 127.9.9.2:2222:40123 127.9.9.3:2222:40123

It prints ``ready`` once every address listens, and runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it arrived."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((time.monotonic() + delay, chunk))
        except (ConnectionError, OSError):
            pass  # a reset ends this direction like an EOF
        finally:
            queue.put_nowait((time.monotonic() + delay, b""))

    receiving = asyncio.create_task(receive())
    try:
        while True:
            due, chunk = await queue.get()
            pause = due - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        receiving.cancel()
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except (ConnectionError, OSError):
                pass


async def _serve(address: str, listen: int, to: int, delay: float) -> asyncio.Server:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        # A TCP connection costs one round trip before the client's first byte
        # leaves: the local accept took none, so the server hears of it one later.
        await asyncio.sleep(2 * delay)
        try:
            server_reader, server_writer = await asyncio.open_connection(address, to)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                _pipe(client_reader, server_writer, delay),
                _pipe(server_reader, client_writer, delay),
            )
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (client_writer, server_writer):
                writer.close()

    return await asyncio.start_server(handle, address, listen, backlog=256)


async def _main(routes: list[tuple[str, int, int]], rtt_ms: float) -> None:
    servers = [await _serve(address, listen, to, rtt_ms / 2000) for address, listen, to in routes]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def _route(text: str) -> tuple[str, int, int]:
    address, listen, to = text.rsplit(":", 2)
    return address, int(listen), int(to)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt-ms", type=float, required=True, help="the round trip to add, in milliseconds")
    parser.add_argument("routes", nargs="+", type=_route, metavar="ADDRESS:LISTEN:TO")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_main(args.routes, args.rtt_ms))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
