"""Kafka plumbing: topics, producers, and the wire form of an envelope."""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.contracts import topics
from shared.contracts.envelope import Envelope
from shared.contracts.limits import MAX_MESSAGE_BYTES

# What every topic this platform creates is configured with (the deployment's topics
# Job sets the same, from deploy/k8s/base/topics.yaml; a unit test holds them equal).
TOPIC_CONFIG = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
# The stand-in the relay publishes at the position of an event it had to set aside
# (shared/kit/outbox.py): consumers record it as a dead letter and move on.
PARKED = "relay.EventParked"


def encode(envelope: Envelope) -> bytes:
    return orjson.dumps(envelope.model_dump(mode="json"))


def decode(value: bytes) -> Envelope:
    return Envelope.model_validate(orjson.loads(value))


def wire_headers(
    event_type: str, correlation_id: str, traceparent: str | None
) -> list[tuple[str, bytes]]:
    found = [("type", event_type.encode()), ("correlation_id", correlation_id.encode())]
    if traceparent:
        found.append(("traceparent", traceparent.encode()))
    return found


async def ensure_topics(
    bootstrap: str, partitions: int, names: Iterable[str] = topics.ALL
) -> set[str]:
    """Create the topics that do not exist yet; returns the names it created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in names if n not in existing]
        wanted += [topics.dead_letters(n) for n in names if topics.dead_letters(n) not in existing]
        created: set[str] = set()
        for name in wanted:
            try:
                await admin.create_topics(
                    [NewTopic(name, partitions, 1, topic_configs=TOPIC_CONFIG)]
                )
                created.add(name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        await admin.close()


def producer(bootstrap: str, *, idempotence: bool) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=idempotence,
        acks="all",
        linger_ms=2,
        max_batch_size=256 * 1024,
        max_request_size=MAX_MESSAGE_BYTES,
    )
