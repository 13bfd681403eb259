"""Connection-hold check (issue 9, defects 5 and 6), run by hand against a server subprocess.

    .venv/bin/python bench/slowloris.py [--conns 300] [--watch 40]

Starts ``homeserver serve --dev --port 0`` on a temporary data dir, then:

1. **slowloris**: ``--conns`` connections each send a request line, then one
   header byte a second. Prints how many the server still holds every 5 s
   (a connection counts as held until the server closes or resets it).
2. **EOF release**: ``--conns`` connections each make one keep-alive request,
   wait until idle, then close. Prints the server's open socket count
   (``/proc/PID/fd``) before, and 1 s after, they closed.

Not part of the test suite; importing it has no side effects.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

LISTENING = re.compile(rb"homeserver listening on http://127\.0\.0\.1:(\d+)")


def sockets_of(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


async def slow_client(port: int, held: list[int], index: int, seconds: float) -> None:
    """Dribble a request head; ``held[index]`` is 1 until the server closes on us."""
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return
    held[index] = 1
    with trio.move_on_after(seconds):
        try:
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    try:
                        while await stream.receive_some(4096):
                            pass
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                while True:
                    await stream.send_all(b"X")
                    await trio.sleep(1)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        held[index] = 0  # the server closed (EOF, reset or a refused write)
    await trio.aclose_forcefully(stream)


async def slowloris(port: int, conns: int, watch: float) -> None:
    held = [0] * conns
    async with trio.open_nursery() as nursery:
        for i in range(conns):
            nursery.start_soon(slow_client, port, held, i, watch)
        start = trio.current_time()
        while trio.current_time() - start < watch:
            await trio.sleep(4)
            print(f"  t={trio.current_time() - start:4.0f} s: {sum(held)} of {conns} held")


async def keepalive_then_close(port: int, conns: int, pid: int) -> None:
    streams = []
    for _ in range(conns):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"healthy" not in data:
            data += await stream.receive_some(4096)
        streams.append(stream)
    await trio.sleep(0.5)  # idle keep-alive on the server
    print(f"  server sockets with {conns} idle keep-alive connections: {sockets_of(pid)}")
    for stream in streams:
        await stream.aclose()
    await trio.sleep(1.0)
    print(f"  server sockets 1 s after the clients closed: {sockets_of(pid)}")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
            [
                sys.executable,
                "-m",
                "homeserver.cli",
                "serve",
                "--dev",
                "--port",
                "0",
                "--data-dir",
                tmp,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = LISTENING.search(line)
            assert match, line
            port = int(match.group(1))
            print(f"slowloris: {args.conns} connections, one header byte a second")
            await slowloris(port, args.conns, args.watch)
            print(f"EOF release: {args.conns} connections")
            await keepalive_then_close(port, args.conns, proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--conns", type=int, default=300)
    parser.add_argument("--watch", type=float, default=40.0)
    trio.run(main, parser.parse_args())
