"""The floor under any SSE writer in this process model: one trio task woken per delta
and one ``send_all`` of a ~230-byte chunk to its own TCP socket, nothing else.

No HTTP, no model, no storage: N connected loopback TCP sockets; a driver wakes every
writer task once per round (one trio.Event each, like Generation's wake-up); each writer
sends one chunk. The peers are read by nobody during a round (the kernel buffers them)
and drained between rounds, outside the timed part. Prints CPU microseconds per write.

    taskset -c 0 .venv/bin/python bench/sse_floor.py --streams 500 --rounds 40
"""

from __future__ import annotations

import argparse
import json
import os
import time

import trio
import trio.testing

CHUNK = (
    b'data: {"id":"msg_0123456789abcdef0123","object":"chat.completion.chunk",'
    b'"created":1764600000,"model":"dev/echo","choices":[{"index":0,"delta":'
    b'{"content":" word"},"finish_reason":null}]}\n\n'
)


async def main(streams: int, rounds: int) -> dict[str, float]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    clients, servers = [], []
    for _ in range(streams):
        clients.append(await trio.open_tcp_stream("127.0.0.1", port))
        servers.append(await listener.accept())
    wakes = [trio.Event() for _ in range(streams)]
    state = {"left": 0}
    done = trio.Event()
    cpu = 0.0

    async def writer(i: int) -> None:
        while True:
            await wakes[i].wait()
            wakes[i] = trio.Event()
            await servers[i].send_all(CHUNK)
            state["left"] -= 1
            if not state["left"]:
                done.set()

    async with trio.open_nursery() as nursery:
        for i in range(streams):
            nursery.start_soon(writer, i)
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(rounds):
            state["left"], done = streams, trio.Event()
            t0 = time.process_time()
            for event in wakes:
                event.set()
            await done.wait()
            cpu += time.process_time() - t0
            for c in clients:  # drain, untimed
                await c.receive_some(1 << 16)
        nursery.cancel_scope.cancel()
    return {
        "streams": streams,
        "writes": streams * rounds,
        "cpu_us_per_write": cpu / (streams * rounds) * 1e6,
        "load_average": os.getloadavg()[0],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    print(json.dumps(trio.run(main, args.streams, args.rounds)))
