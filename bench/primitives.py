"""What replaces Redis: Tusk's PostgreSQL key-value store (`tusk.db.kv`) and pub/sub
(`tusk.db.pubsub`, LISTEN/NOTIFY) against Redis doing the same, on this machine, in one run.

    .venv/bin/python -m bench.primitives [--ops N] [--workers N]   (or BENCH_OPS=N)

Needs `redis-server` on PATH and the `redis` Python package (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    ExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bench.common import (
    REDIS_CLIENT_HINT,
    BenchError,
    Measured,
    MemorySampler,
    log_tail,
    machine_description,
    markdown_fields,
    markdown_table,
    mib,
    positive_int,
    postmaster_pid,
    ratio,
    redis_problems,
    scratch_dir,
    timed,
)
from tusk.db import kv, migrate, pubsub
from tusk.db.embedded import EmbeddedPostgres
from tusk.db.engine import create_engine
from tusk.runtime import EMBEDDED_SERVER_SETTINGS
from tusk.testing.processes import free_port

try:
    import redis
    from redis import asyncio as aioredis
except ImportError:  # the optional `bench` extra
    sys.exit(f"bench.primitives: {REDIS_CLIENT_HINT}")

DEFAULT_OPS = 2000
DEFAULT_WORKERS = 8
TTL_SECONDS = 3600  # long enough that nothing expires during a run
VALUE = {"account_id": "3f1c2a9e-8d47-4b6a-9c1e-5a0f7b2d4e61", "scopes": ["chat", "files"]}
TOPIC = "bench"
RECEIVE_TIMEOUT_SECONDS = 5.0
MEMORY_SAMPLE_SECONDS = 0.5  # rarely, so the sampling thread barely disturbs the event loop
DATABASE = "bench"
REDIS_VARIANTS = {
    "Redis, no persistence": ["--appendonly", "no"],
    "Redis, AOF fsync everysec": ["--appendonly", "yes", "--appendfsync", "everysec"],
}
BASELINE = "Redis, no persistence"


# --- clients: one interface over Tusk and Redis -----------------------------------------------


class Client(ABC):
    """One client with a connection of its own."""

    @abstractmethod
    async def put(self, key: str, value: Any, ttl: int) -> None: ...

    @abstractmethod
    async def get(self, key: str) -> Any: ...

    @abstractmethod
    async def incr(self, key: str, ttl: int) -> int: ...

    @abstractmethod
    async def close(self) -> None: ...


class PubSub(ABC):
    """A publisher and a subscriber of TOPIC, in this process."""

    @abstractmethod
    async def round_trip(self, data: Any) -> Any:
        """Publish `data`, then wait for the subscriber to receive it; return what it got."""

    @abstractmethod
    async def close(self) -> None: ...


class System(ABC):
    def __init__(self, name: str, prefix: str) -> None:
        self.name = name
        self.prefix = prefix  # keys of this system, apart from those of systems sharing a server

    @abstractmethod
    async def connect(self) -> Client: ...

    @abstractmethod
    async def open_pubsub(self) -> PubSub: ...


Transaction = Callable[[], AbstractAsyncContextManager[AsyncConnection]]


class TuskClient(Client):
    """Each operation in a transaction of its own, committed: how Tusk uses `tusk.db.kv`."""

    def __init__(self, transaction: Transaction, closing: Callable[[], Awaitable[None]]) -> None:
        self.transaction = transaction
        self._closing = closing

    async def put(self, key: str, value: Any, ttl: int) -> None:
        async with self.transaction() as conn:
            await kv.put(conn, key, value, ttl=ttl)

    async def get(self, key: str) -> Any:
        async with self.transaction() as conn:
            return await kv.get(conn, key)

    async def incr(self, key: str, ttl: int) -> int:
        async with self.transaction() as conn:
            return await kv.incr(conn, key, ttl=ttl)

    async def close(self) -> None:
        await self._closing()


def _held(conn: AsyncConnection) -> Transaction:
    """Transactions on one connection that this client keeps, committed one by one."""

    @asynccontextmanager
    async def transaction() -> AsyncIterator[AsyncConnection]:
        try:
            yield conn
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()

    return transaction


async def _nothing() -> None:
    return None


class TuskPubSub(PubSub):
    """Publishing with `client`'s transactions; subscribed through a `Broker` of its own."""

    def __init__(self, client: TuskClient, conninfo: str) -> None:
        self._client, self._broker = client, pubsub.Broker(conninfo)
        self._stack = AsyncExitStack()
        self._subscription: pubsub.Subscription | None = None

    async def start(self) -> None:
        await self._broker.start()
        self._subscription = await self._stack.enter_async_context(self._broker.subscribe(TOPIC))

    async def round_trip(self, data: Any) -> Any:
        assert self._subscription is not None
        async with self._client.transaction() as conn:
            await pubsub.publish(conn, TOPIC, data)
        return await self._subscription.get(timeout=RECEIVE_TIMEOUT_SECONDS)

    async def close(self) -> None:
        await self._stack.aclose()
        await self._broker.close()
        await self._client.close()


class TuskSystem(System):
    """Tusk's kv and pub/sub on `engine`: on a connection held by each client, or (`pooled`)
    through `engine.begin()` per operation, i.e. a pool checkout with its pre-ping each time."""

    def __init__(
        self, name: str, prefix: str, engine: AsyncEngine, conninfo: str, *, pooled: bool
    ) -> None:
        super().__init__(name, prefix)
        self.engine, self._conninfo, self._pooled = engine, conninfo, pooled

    async def connect(self) -> TuskClient:
        if self._pooled:
            return TuskClient(self.engine.begin, _nothing)
        conn = await self.engine.connect()
        return TuskClient(_held(conn), conn.close)

    async def open_pubsub(self) -> PubSub:
        channel = TuskPubSub(await self.connect(), self._conninfo)
        await channel.start()
        return channel


class RedisClient(Client):
    """The same operations as Redis users write them; values are JSON, as in Tusk."""

    def __init__(self, port: int) -> None:
        self.redis = aioredis.Redis(host="127.0.0.1", port=port, decode_responses=True)

    async def put(self, key: str, value: Any, ttl: int) -> None:
        await self.redis.set(key, json.dumps(value), ex=ttl)

    async def get(self, key: str) -> Any:
        raw = await self.redis.get(key)
        return None if raw is None else json.loads(raw)

    async def incr(self, key: str, ttl: int) -> int:
        # A rate-limit counter: INCR, and EXPIRE only on the first hit, atomically (MULTI/EXEC).
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, ttl, nx=True)
            count, _ = await pipe.execute()
        return int(count)

    async def close(self) -> None:
        await self.redis.aclose()


class RedisPubSub(PubSub):
    def __init__(self, port: int) -> None:
        self._publisher = RedisClient(port).redis
        self._subscriber = RedisClient(port).redis
        self._channel = self._subscriber.pubsub()
        self._received: asyncio.Queue[Any] = asyncio.Queue()
        self._subscribed = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._channel.subscribe(TOPIC)
        self._listener = asyncio.create_task(self._listen())
        await asyncio.wait_for(self._subscribed.wait(), RECEIVE_TIMEOUT_SECONDS)

    async def _listen(self) -> None:
        async for message in self._channel.listen():
            if message["type"] == "subscribe":
                self._subscribed.set()
            elif message["type"] == "message":
                self._received.put_nowait(json.loads(message["data"]))

    async def round_trip(self, data: Any) -> Any:
        await self._publisher.publish(TOPIC, json.dumps(data))
        return await asyncio.wait_for(self._received.get(), RECEIVE_TIMEOUT_SECONDS)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await self._channel.aclose()  # type: ignore[no-untyped-call]
        await self._subscriber.aclose()
        await self._publisher.aclose()


class RedisSystem(System):
    def __init__(self, name: str, prefix: str, port: int) -> None:
        super().__init__(name, prefix)
        self.port = port

    async def connect(self) -> RedisClient:
        client = RedisClient(self.port)
        await client.redis.ping()  # open the connection before any timing
        return client

    async def open_pubsub(self) -> PubSub:
        channel = RedisPubSub(self.port)
        await channel.start()
        return channel


# --- servers ----------------------------------------------------------------------------------


@contextmanager
def embedded_postgres(pgdata: Path) -> Iterator[tuple[EmbeddedPostgres, str]]:
    """The bundled PostgreSQL with Tusk's production settings (full durability), migrated."""
    server = EmbeddedPostgres(pgdata, dict(EMBEDDED_SERVER_SETTINGS))
    server.start()
    try:
        server.create_database(DATABASE)
        conninfo = server.conninfo(DATABASE)
        migrate.upgrade(conninfo)
        yield server, conninfo
    finally:
        server.stop()


@contextmanager
def redis_server(workdir: Path, options: list[str]) -> Iterator[tuple[int, int]]:
    """A redis-server on 127.0.0.1 and a free port, with no RDB snapshots: (port, pid)."""
    workdir.mkdir()
    port, log = free_port(), workdir / "redis.log"
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--dir", str(workdir), "--logfile", str(log), *options]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        _wait_redis(port, proc, log)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def _wait_redis(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"redis-server exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            with redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1) as client:
                client.ping()
        except redis.ConnectionError:
            time.sleep(0.05)
        else:
            return
    raise BenchError(f"redis-server did not answer on port {port}:\n{log_tail(log)}")


# --- measuring --------------------------------------------------------------------------------


Op = Callable[[System, Client], Callable[[int], Awaitable[object]]]


def _put(system: System, client: Client) -> Callable[[int], Awaitable[object]]:
    return lambda i: client.put(f"{system.prefix}:k:{i}", VALUE, TTL_SECONDS)


def _get(system: System, client: Client) -> Callable[[int], Awaitable[object]]:
    async def get_hit(i: int) -> object:
        value = await client.get(f"{system.prefix}:k:{i}")
        if value != VALUE:
            raise BenchError(f"{system.name}: get of key {i} returned {value!r}")
        return value

    return get_hit


def _incr(system: System, client: Client) -> Callable[[int], Awaitable[object]]:
    return lambda i: client.incr(f"{system.prefix}:rate", TTL_SECONDS)


OPERATIONS: dict[str, Op] = {
    "put (set with TTL)": _put,
    "get (hit)": _get,
    "incr (counter with TTL)": _incr,
}
PUBSUB = "pub/sub round trip"


async def _round_trips(system: System, ops: int, warmup: int) -> Measured:
    channel = await system.open_pubsub()
    try:

        async def round_trip(i: int) -> object:
            got = await channel.round_trip({"seq": i, "text": "x" * 100})
            if not isinstance(got, dict) or got.get("seq") != i:
                raise BenchError(f"{system.name}: pub/sub sent message {i}, received {got!r}")
            return got

        return await timed(round_trip, ops, warmup)
    finally:
        await channel.close()


async def sequential(systems: list[System], ops: int) -> dict[str, dict[str, Measured]]:
    """One client per system, one operation at a time; systems alternate for each operation."""
    warmup = max(ops // 10, 10)
    results: dict[str, dict[str, Measured]] = {}
    clients = [await system.connect() for system in systems]
    try:
        for name, op in OPERATIONS.items():
            results[name] = {}
            for system, client in zip(systems, clients, strict=True):
                results[name][system.name] = await timed(op(system, client), ops, warmup)
            _progress(name, results[name])
    finally:
        for client in clients:
            await client.close()
    results[PUBSUB] = {s.name: await _round_trips(s, ops, warmup) for s in systems}
    _progress(PUBSUB, results[PUBSUB])
    return results


@dataclass(frozen=True)
class Contended:
    measured: Measured
    expected: int
    final: int


async def contended_incr(system: System, ops: int, workers: int) -> Contended:
    """`workers` clients, each on its own connection, incrementing one key together."""
    clients = [await system.connect() for _ in range(workers)]
    key, each = f"{system.prefix}:shared", max(ops // workers, 1)
    latencies: list[float] = []

    async def hammer(client: Client) -> None:
        for _ in range(each):
            before = time.perf_counter()
            await client.incr(key, TTL_SECONDS)
            latencies.append(time.perf_counter() - before)

    try:
        for client in clients:
            await client.incr(f"{system.prefix}:warm", TTL_SECONDS)
        started = time.perf_counter()
        await asyncio.gather(*(hammer(client) for client in clients))
        seconds = time.perf_counter() - started
        final = await clients[0].get(key)
    finally:
        for client in clients:
            await client.close()
    return Contended(Measured(latencies, seconds), each * workers, int(final or 0))


def _progress(name: str, row: dict[str, Measured]) -> None:
    done = ", ".join(f"{system} {m.stats.p50 * 1e6:.0f} µs" for system, m in row.items())
    print(f"primitives {name}: p50 {done}", file=sys.stderr, flush=True)


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Results:
    sequential: dict[str, dict[str, Measured]]
    contended: dict[str, Contended]
    versions: dict[str, str]
    memory: dict[str, tuple[int, int | None]] = field(default_factory=dict)


async def _versions(conninfo: str, port: int) -> dict[str, str]:
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        row = await (await conn.execute("SHOW server_version")).fetchone()
    client = RedisClient(port)
    info = await client.redis.info("server")
    await client.close()
    return {"PostgreSQL": str(row[0] if row else "?"), "Redis": str(info["redis_version"])}


def _systems(conninfo: str, ports: dict[str, int], workers: int) -> list[System]:
    """The Redis baselines and three ways of using Tusk's kv, each with engines of its own."""
    async_commit = psycopg.conninfo.make_conninfo(conninfo, options="-c synchronous_commit=off")
    size = {"pool_size": workers, "max_overflow": 2}
    systems: list[System] = [
        RedisSystem(name, f"r{i}", port) for i, (name, port) in enumerate(ports.items())
    ]
    tusk = [
        ("Tusk (PostgreSQL, default durability)", "t-sync", conninfo, False),
        ("Tusk, synchronous_commit=off per session", "t-async", async_commit, False),
        ("Tusk, `engine.begin()` per op (pool checkout + pre-ping)", "t-pool", conninfo, True),
    ]
    systems += [
        TuskSystem(name, prefix, create_engine(url, **size), conninfo, pooled=pooled)
        for name, prefix, url, pooled in tusk
    ]
    return systems


async def _measure(conninfo: str, ports: dict[str, int], ops: int, workers: int) -> Results:
    systems = _systems(conninfo, ports, workers)
    try:
        versions = await _versions(conninfo, next(iter(ports.values())))
        seq = await sequential(systems, ops)
        contended = {s.name: await contended_incr(s, ops, workers) for s in systems}
    finally:
        for system in systems:
            if isinstance(system, TuskSystem):
                await system.engine.dispose()
    return Results(seq, contended, versions)


def measure(ops: int, workers: int) -> Results:
    with scratch_dir() as root, ExitStack() as stack:
        server, conninfo = stack.enter_context(embedded_postgres(root / "pg"))
        samplers = {"PostgreSQL (postmaster + backends)": _sampler(server)}
        ports: dict[str, int] = {}
        for i, (name, options) in enumerate(REDIS_VARIANTS.items()):
            port, pid = stack.enter_context(redis_server(root / f"r{i}", options))
            ports[name] = port
            samplers[f"redis-server ({name})"] = MemorySampler(_fixed([pid]), MEMORY_SAMPLE_SECONDS)
        for sampler in samplers.values():
            stack.enter_context(sampler)
        results = asyncio.run(_measure(conninfo, ports, ops, workers))
    results.memory = {name: (s.peak_rss, s.peak_pss) for name, s in samplers.items()}
    return results


def _sampler(server: EmbeddedPostgres) -> MemorySampler:
    return MemorySampler(lambda: postmaster_pid(server.pgdata), MEMORY_SAMPLE_SECONDS)


def _fixed(pids: list[int]) -> Callable[[], list[int]]:
    return lambda: pids


# --- the report -------------------------------------------------------------------------------


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def _sequential_table(results: dict[str, dict[str, Measured]]) -> str:
    headers = ["operation", "system", "p50 (µs)", "p99 (µs)", "ops/s", "p50 ÷ Redis p50"]
    rows = []
    for operation, by_system in results.items():
        base = by_system[BASELINE].stats.p50
        for system, m in by_system.items():
            stats = m.stats
            cells = [_us(stats.p50), _us(stats.p99), f"{m.ops_per_second:,.0f}"]
            rows.append([operation, system, *cells, ratio(stats.p50, base)])
    return markdown_table(headers, rows, left=2)


def _contended_table(results: dict[str, Contended]) -> tuple[str, list[str]]:
    headers = ["system", "increments", "wall (s)", "ops/s", "p50 (µs)", "p99 (µs)"]
    headers += ["final counter", "ops/s ÷ Redis ops/s"]
    base = results[BASELINE].measured.ops_per_second
    rows, failures = [], []
    for system, c in results.items():
        stats, ok = c.measured.stats, c.final == c.expected
        final = f"{c.final:,}" if ok else f"**{c.final:,} (expected {c.expected:,})**"
        if not ok:
            failures.append(f"{system}: the counter ended at {c.final}, not {c.expected}")
        rate = c.measured.ops_per_second
        timing = [f"{c.measured.seconds:.2f}", f"{rate:,.0f}", _us(stats.p50), _us(stats.p99)]
        rows.append([system, f"{c.expected:,}", *timing, final, ratio(rate, base)])
    return markdown_table(headers, rows), failures


def report(results: Results, ops: int, workers: int) -> tuple[str, list[str]]:
    contended, failures = _contended_table(results.contended)
    memory = [[name, mib(rss), mib(pss)] for name, (rss, pss) in results.memory.items()]
    versions = ", ".join(f"{name} {version}" for name, version in results.versions.items())
    parts = [
        "## What replaces Redis: Tusk's key-value store and pub/sub vs Redis",
        f"{versions}; both on this machine (PostgreSQL over its Unix socket, Redis over "
        "loopback TCP), driven from one Python process with asyncio (SQLAlchemy + psycopg 3 "
        "for Tusk, `redis.asyncio` for Redis). PostgreSQL runs with Tusk's settings and its "
        "default durability (fsync on, `synchronous_commit=on`) unless a row says otherwise. "
        "Every Tusk operation is a transaction of its own, committed before the next starts.",
        f"### Single client, sequential: {ops:,} operations each after a warm-up of "
        f"{max(ops // 10, 10):,}",
        "Values are a ~100-byte JSON object; `put` writes a new key each time; `get` reads keys "
        "that exist; `incr` bumps one counter (Redis: `MULTI INCR EXPIRE NX EXEC`). Pub/sub: "
        "from the publish call until the subscriber in the same process has the message "
        "(Tusk: `pg_notify` committed, received by the `Broker`'s LISTEN connection; Redis: "
        "PUBLISH on one connection, SUBSCRIBE on another). The last column divides each row's "
        f"p50 by that of {BASELINE}: above 1 is slower.",
        _sequential_table(results.sequential),
        f"### `incr` under contention: {workers} concurrent clients, one key",
        "Each client has its own connection and increments the same counter; the final value "
        f"must equal the number of increments. The last column divides each row's throughput by "
        f"that of {BASELINE}: below 1 is less throughput.",
        contended,
        "### Memory of the servers",
        "Peak over the whole benchmark. RSS counts PostgreSQL's shared memory once per process "
        "that touched it; PSS shares it out, so PSS is the footprint to compare.",
        markdown_table(["process tree", "peak RSS (MiB)", "peak PSS (MiB)"], memory),
    ]
    parts += [f"**FAILURE**: {failure}" for failure in failures]
    return "\n\n".join(parts), failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.primitives", description=__doc__)
    parser.add_argument(
        "--ops",
        type=positive_int,
        default=int(os.environ.get("BENCH_OPS", DEFAULT_OPS)),
        help=f"operations per measurement (default: $BENCH_OPS or {DEFAULT_OPS})",
    )
    parser.add_argument("--workers", type=positive_int, default=DEFAULT_WORKERS)
    args = parser.parse_args(argv)
    problems = redis_problems()
    if problems:
        print("\n".join(f"bench.primitives: {p}" for p in problems), file=sys.stderr)
        return 2
    try:
        text, failures = report(measure(args.ops, args.workers), args.ops, args.workers)
    except BenchError as exc:
        print(f"bench.primitives: {exc}", file=sys.stderr)
        return 1
    print(f"{text}\n\n## Machine\n\n{markdown_fields(machine_description())}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
