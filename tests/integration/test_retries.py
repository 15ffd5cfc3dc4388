"""Failures in a consumer: transient ones wait and apply once, a poison event is
dead-lettered after a bounded number of tries while the rest flows, and `files dlq`
lists, shows and replays it once. On the real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from shared.contracts.envelope import Envelope
from shared.kit import bus
from shared.kit.inbox import Consumer
from shared.kit.retry import Policy
from tests.conftest import eventually
from tests.integration.conftest import World
from tests.integration.helpers import consuming

ROOT = Path(__file__).resolve().parents[2]
# Quick tries, so the test runs in seconds; three of them before a dead letter.
POLICY = Policy(first_s=0.01, cap_s=0.2, retry_for_s=60, poison_tries=3)


async def effects(pool: asyncpg.Pool, s: str) -> list[int]:
    return [r["n"] for r in await pool.fetch(f"SELECT n FROM {s}.effects ORDER BY n")]


def consumer_of(world: World, handle: object) -> Consumer:
    consumer: Consumer = world.consumer(handle, policy=POLICY)  # type: ignore[arg-type]
    return consumer


async def test_transient_failures_wait_and_the_event_applies_once(
    pool: asyncpg.Pool, kafka_bootstrap: str, world: World
) -> None:
    s = world.schema
    failures: list[str] = []
    failing = asyncio.Event()
    failing.set()

    async def apply(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        for e in events:
            if e.data["n"] == 2 and failing.is_set():
                kind = len(failures) % 3
                failures.append(["lost connection", "deadlock", "serialization"][kind])
                if kind == 0:  # the database ends our session, as a restart would
                    await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
                elif kind == 1:
                    raise asyncpg.DeadlockDetectedError("deadlock detected")
                else:
                    raise asyncpg.SerializationError("could not serialize access")
            await conn.execute(f"INSERT INTO {s}.effects (n) VALUES ($1)", e.data["n"])

    for n in (1, 2, 3):
        await world.send(n)
    consumer = consumer_of(world, apply)
    async with consuming(consumer):

        async def failed_a_while() -> bool:
            return len(failures) >= 3 * POLICY.poison_tries

        await eventually(failed_a_while, within=30, what="a run of transient failures")
        # Meanwhile nothing passes the failing event: not it, nor what follows it.
        assert 2 not in await effects(pool, s) and 3 not in await effects(pool, s)
        assert (await world.inbox.watermarks(pool)).get(s, 0) < 2
        failing.clear()

        async def all_applied() -> bool:
            return (await world.inbox.watermarks(pool)).get(s) == 3

        await eventually(all_applied, within=30, what="the events applied after the failures")
    assert await effects(pool, s) == [1, 2, 3]  # each once
    assert set(failures) == {"lost connection", "deadlock", "serialization"}
    assert await pool.fetchval(f"SELECT count(*) FROM {s}.dead_letters") == 0
    assert consumer.dead_lettered == 0 and consumer.retried >= len(failures)


async def files_cli(database_url: str, *args: str) -> tuple[int, str]:
    """The `files` command, as an operator runs it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.cli",
        *args,
        cwd=ROOT,
        env={**os.environ, "FILES_DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_a_poison_event_is_dead_lettered_after_its_tries_and_replayed_once(
    pool: asyncpg.Pool, kafka_bootstrap: str, database_url: str, world: World
) -> None:
    s = world.schema
    tries: list[float] = []
    poisoned = asyncio.Event()
    poisoned.set()

    async def apply(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        for e in events:
            if e.data["n"] == 2 and poisoned.is_set():
                tries.append(time.monotonic())
                raise ValueError("cannot digest 2")
            await conn.execute(f"INSERT INTO {s}.effects (n) VALUES ($1)", e.data["n"])

    for n in (1, 2, 3):
        await world.send(n)
    dlq = AIOKafkaConsumer(
        f"{world.topic}.dlq",
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=f"dlq-{s}",
    )
    await dlq.start()
    consumer = consumer_of(world, apply)
    try:
        async with consuming(consumer):

            async def passed_the_poison() -> bool:
                return (await world.inbox.watermarks(pool)).get(s) == 3

            await eventually(passed_the_poison, within=30, what="watermark past the poison")
            assert await effects(pool, s) == [1, 3]  # the rest flowed
            row = await pool.fetchrow(f"SELECT * FROM {s}.dead_letters")
            assert row["tries"] == POLICY.poison_tries
            assert row["status"] == "dead" and "cannot digest 2" in row["error"]
            assert row["first_failed_at"] < row["last_failed_at"]
            assert row["envelope"]["data"] == {"n": 2} and row["position"] == 2
            # Tried alone poison_tries times, after the batch it came in had failed.
            assert len(tries) in (POLICY.poison_tries, POLICY.poison_tries + 1)

            dead: list[Envelope] = []

            async def on_the_dlq_topic() -> bool:
                batch = await dlq.getmany(timeout_ms=200)
                dead.extend(bus.decode(m.value) for msgs in batch.values() for m in msgs)
                return bool(dead)

            await eventually(on_the_dlq_topic, within=20, what="event on the dead-letter topic")
            assert [e.data["n"] for e in dead] == [2]

            code, out = await files_cli(database_url, "dlq", "list", "--service", s)
            assert code == 0, out
            assert str(row["id"]) in out and "test.Happened" in out and "dead" in out
            code, out = await files_cli(database_url, "dlq", "show", str(row["id"]))
            assert code == 0, out
            shown = orjson.loads(out)
            assert shown["envelope"]["data"] == {"n": 2} and shown["tries"] == 3

            # The bug is fixed; the operator replays it: it applies, once.
            poisoned.clear()
            code, out = await files_cli(database_url, "dlq", "replay", str(row["id"]))
            assert code == 0, out
            assert "replayed" in out
            assert await effects(pool, s) == [1, 2, 3]
            code, out = await files_cli(database_url, "dlq", "replay", str(row["id"]))
            assert code == 0 and "replayed already" in out, out
            code, out = await files_cli(database_url, "dlq", "replay", "--all", "--service", s)
            assert code == 0, out
            assert await effects(pool, s) == [1, 2, 3]
            status = await pool.fetchval(f"SELECT status FROM {s}.dead_letters")
            assert status == "replayed"
    finally:
        await dlq.stop()


async def test_dlq_refuses_what_it_cannot_do(database_url: str) -> None:
    code, out = await files_cli(database_url, "dlq", "show", "not-a-uuid")
    assert code == 2 and "not a dead letter's id" in out
    code, out = await files_cli(database_url, "dlq", "show", "00000000-0000-0000-0000-000000000000")
    assert code == 1 and "no dead letter" in out
    code, out = await files_cli(database_url, "dlq", "replay")
    assert code == 2 and "either a dead letter's id or --all" in out


@pytest.mark.parametrize("error", [ConnectionResetError(), asyncpg.TooManyConnectionsError()])
def test_what_counts_as_transient(error: Exception) -> None:
    from shared.kit.retry import transient

    assert transient(error)
    wrapped = RuntimeError("while handling")
    wrapped.__cause__ = error
    assert transient(wrapped)
    assert not transient(ValueError("bad data"))
    assert not transient(asyncpg.UniqueViolationError("duplicate key"))
