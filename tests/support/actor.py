"""Small programs the multi-process tests run in a child process: `python -m tests.support.actor
<command> <conninfo> [args...]`. Each prints `ready` once it holds what the test waits for."""

from __future__ import annotations

import asyncio
import sys

from tusk.db import kv, pubsub
from tusk.db.engine import engine_scope
from tusk.db.locks import advisory_lock
from tusk.queue import build_app, enqueue


def ready() -> None:
    print("ready", flush=True)


async def wait_for_stdin_to_close() -> None:
    await asyncio.to_thread(sys.stdin.read)


async def incr(conninfo: str, key: str, times: str) -> None:
    async with engine_scope(conninfo) as engine:
        ready()
        for _ in range(int(times)):
            async with engine.begin() as conn:
                await kv.incr(conn, key)


async def hold_lock(conninfo: str, name: str) -> None:
    async with engine_scope(conninfo) as engine, advisory_lock(engine, name):
        ready()
        await wait_for_stdin_to_close()


async def publish(conninfo: str, topic: str, count: str) -> None:
    async with engine_scope(conninfo) as engine:
        for i in range(int(count)):
            async with engine.begin() as conn:
                await pubsub.publish(conn, topic, {"i": i})
        ready()


async def write_then_hang(conninfo: str, key: str) -> None:
    """Write a row and enqueue its job in one transaction, then wait to be killed before COMMIT."""
    app = build_app(["tests.support.jobs:blueprint"])
    async with engine_scope(conninfo) as engine, engine.connect() as conn:
        await kv.put(conn, key, "row")
        await enqueue(conn, app, "tests.support.jobs:record", key=key)
        ready()
        await asyncio.sleep(3600)


COMMANDS = {
    "incr": incr,
    "hold_lock": hold_lock,
    "publish": publish,
    "write_then_hang": write_then_hang,
}

if __name__ == "__main__":
    asyncio.run(COMMANDS[sys.argv[1]](*sys.argv[2:]))
