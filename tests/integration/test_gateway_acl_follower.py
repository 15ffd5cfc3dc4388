"""The gateway's ACL follower: an access change made elsewhere (another replica, the
ACL context's own reactions) drops this replica's cached callers, without the follower
asking the broker ten times a second while nothing changes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from services.gateway import edge
from services.gateway.edge import AUTH_TTL_S, Gateway
from shared.contracts import topics
from shared.kit import bus, identity
from shared.kit.inbox import FETCH_MAX_WAIT_MS
from shared.kit.settings import Settings


async def test_an_access_change_made_elsewhere_drops_the_cached_callers(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[dict[str, Any]] = []

    def consumer(*args: Any, **kwargs: Any) -> AIOKafkaConsumer:
        made.append(kwargs)
        return AIOKafkaConsumer(*args, **kwargs)

    monkeypatch.setattr(edge, "AIOKafkaConsumer", consumer)
    await bus.ensure_topics(kafka_bootstrap, 3, [topics.ACL])
    gateway = Gateway(Settings(kafka_bootstrap=kafka_bootstrap, service_key=identity.new_key()))
    await gateway.start()
    producer = bus.producer(kafka_bootstrap, idempotence=False)
    await producer.start()
    try:
        # At rest the follower's fetch is held longer than a consumer's (the broker's
        # CPU goes by the fetches asked), and the drop still comes inside the cache's
        # own bound (tansu looks again at doubling intervals: about half the wait).
        wait_ms = made[0]["fetch_max_wait_ms"]
        assert FETCH_MAX_WAIT_MS < wait_ms <= AUTH_TTL_S * 1000 / 2
        dropped = asyncio.Event()
        forget = gateway.forget_callers

        def forget_and_tell() -> None:
            forget()
            dropped.set()

        monkeypatch.setattr(gateway, "forget_callers", forget_and_tell)
        # The follower reads from the topic's end once it has joined: a change is sent
        # again until one is seen (the first may come before it joined).
        deadline = time.monotonic() + 20
        while True:
            gateway.remember_caller(
                "digest", time.monotonic(), {"id": "someone"}, gateway.access_changes
            )
            await producer.send_and_wait(topics.ACL, b'{"type": "acl.GrantRemoved"}', key=b"k")
            try:
                await asyncio.wait_for(dropped.wait(), timeout=2 * wait_ms / 1000)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "the follower never dropped the callers"
        assert gateway._keys == {}
    finally:
        await producer.stop()
        await gateway.stop()
