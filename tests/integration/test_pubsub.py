"""Publish/subscribe across processes with LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.processes import start_actor, wait_ready
from tusk.db import pubsub
from tusk.db.embedded import EmbeddedPostgres
from tusk.db.engine import engine_scope


async def test_messages_from_another_process_reach_only_their_topic(database: str) -> None:
    broker = pubsub.Broker(database)
    await broker.start()
    try:
        async with broker.subscribe("stop:1") as wanted, broker.subscribe("stop:2") as other:
            child = start_actor("publish", database, "stop:1", "3")
            wait_ready(child)
            assert child.wait(timeout=30) == 0
            received = [await wanted.get(timeout=5) for _ in range(3)]
            assert received == [{"i": 0}, {"i": 1}, {"i": 2}]
            with pytest.raises(TimeoutError):
                await other.get(timeout=0.3)
    finally:
        await broker.close()


async def test_a_message_is_sent_only_when_its_transaction_commits(
    engine: AsyncEngine, database: str
) -> None:
    broker = pubsub.Broker(database)
    await broker.start()
    try:
        async with broker.subscribe("t") as sub:
            async with engine.connect() as conn:
                await pubsub.publish(conn, "t", "rolled back")
                await conn.rollback()
                await pubsub.publish(conn, "t", "committed")
                await conn.commit()
            assert await sub.get(timeout=5) == "committed"
            with pytest.raises(TimeoutError):
                await sub.get(timeout=0.3)
    finally:
        await broker.close()


async def test_oversized_payloads_are_refused(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        with pytest.raises(pubsub.PayloadTooLarge):
            await pubsub.publish(conn, "t", "x" * 9000)


async def test_every_subscriber_of_a_topic_gets_each_message(
    engine: AsyncEngine, database: str
) -> None:
    broker = pubsub.Broker(database)
    await broker.start()
    try:
        async with broker.subscribe("fan") as a, broker.subscribe("fan") as b:
            async with engine.begin() as conn:
                await pubsub.publish(conn, "fan", 42)
            assert await asyncio.gather(a.get(timeout=5), b.get(timeout=5)) == [42, 42]
    finally:
        await broker.close()


async def test_the_listener_comes_back_after_a_database_restart(
    own_server: EmbeddedPostgres,
) -> None:
    conninfo = own_server.conninfo()
    broker = pubsub.Broker(conninfo, reconnect_delay=0.2)
    await broker.start()
    try:
        async with broker.subscribe("after-restart") as sub:
            await asyncio.to_thread(own_server.stop)
            await asyncio.to_thread(own_server.start)
            for _ in range(100):
                if broker.listening:
                    break
                await asyncio.sleep(0.1)
            async with engine_scope(conninfo) as engine, engine.begin() as conn:
                await pubsub.publish(conn, "after-restart", "hello")
            assert await sub.get(timeout=5) == "hello"
    finally:
        await broker.close()
