"""Kafka plumbing: topics, producers, and the wire form of an envelope."""

from __future__ import annotations

import struct
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.contracts import topics
from shared.contracts.envelope import Envelope, _trusted
from shared.contracts.limits import MAX_MESSAGE_BYTES

# What every topic this platform creates is configured with (the deployment's topics
# Job sets the same, from deploy/k8s/base/topics.yaml; a unit test holds them equal).
TOPIC_CONFIG = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
# The stand-in the relay publishes at the position of an event it had to set aside
# (shared/kit/outbox.py): consumers record it as a dead letter and move on.
PARKED = "relay.EventParked"
# The type header of a record with no value the relay writes to pad a partition that the
# broker lost (shared/kit/outbox.py): every consumer passes over records with no value.
FILLER = "relay.Filler"


def encode(envelope: Envelope) -> bytes:
    return orjson.dumps(envelope.model_dump(mode="json"))


# The other fields of an envelope read only as far as the watermark needs (`decode`):
# nothing reads them on an event passed over. Built as `new_envelope` builds ours
# (`_trusted`): pydantic's model_construct, a field left to its default_factory,
# inspected the factory's signature on every call (21 µs an event decoded; 5 now).
_PASSED: dict[str, Any] = {
    "schema_version": 1,
    "stream_id": "",
    "stream_version": 0,
    "occurred_at": datetime.min.replace(tzinfo=UTC),
    "actor": "",
    "correlation_id": "",
    "causation_id": None,
    "traceparent": None,
}


def decode(value: bytes, read_whole: frozenset[str] | None = None) -> Envelope:
    """The envelope on the wire. One whose type is not in `read_whole` (a consumer with
    no use for it) is read only as far as moving the consumer's watermark past it needs
    (id, type, source, position: each checked), not validated whole, for events most
    consumers never use (and an event of a shape this consumer does not know passes).
    Raises ValueError (or a validation error) for a message that is no envelope."""
    found = orjson.loads(value)
    if read_whole is None or found.get("type") in read_whole:
        return Envelope.model_validate(found)
    event_type, source, position = found.get("type"), found.get("source"), found.get("position")
    if not (
        isinstance(event_type, str)
        and isinstance(source, str)
        and source
        and type(position) is int
        and position > 0
    ):
        raise ValueError("not an envelope: no type, source or position")
    return _trusted(
        {
            **_PASSED,
            "event_id": uuid.UUID(found["event_id"]),
            "type": event_type,
            "source": source,
            "position": position,
            "data": {},
        }
    )


# Below this many keys of one length, one key at a time in plain Python: numpy's rounds
# cost ~50 µs whatever the count (some 70 array operations), the plain loop ~4 µs a key
# of a stream's length. The catalog draws a page's streams a key at a time
# (`_stream_in`: ~3 draws for each of a page's partitions) and a relay's batches are
# mostly a few events; in upload_small's profile numpy's rounds were 6.6% of the
# catalog's samples.
_FEW_KEYS = 12


def _murmur2(key: bytes) -> int:
    """Kafka's murmur2 of one key, positive (as `partitions_of`'s rounds, unvectorised)."""
    m = 0x5BD1E995
    length = len(key)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    whole = length - length % 4
    for (k,) in struct.iter_unpack("<I", key[:whole]):
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        h = ((h * m) & 0xFFFFFFFF) ^ ((k * m) & 0xFFFFFFFF)
    extra = length % 4
    if extra >= 3:
        h ^= key[whole + 2] << 16
    if extra >= 2:
        h ^= key[whole + 1] << 8
    if extra >= 1:
        h = ((h ^ key[whole]) * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h & 0x7FFFFFFF


def partitions_of(keys: Sequence[bytes], partitions: Sequence[int]) -> list[int]:
    """Each key's partition as Kafka's default partitioner chooses it (the Java client's
    murmur2, as aiokafka's `DefaultPartitioner`; `partitions` sorted), for a whole batch
    at once: the relay's 100,000 records spent more time in aiokafka's pure-Python hash
    than in anything else. Keys of one length go through the rounds together."""
    m = np.uint32(0x5BD1E995)
    chosen = np.empty(len(keys), dtype=np.int64)
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        by_length[len(key)].append(i)
    for length, at in by_length.items():
        if len(at) < _FEW_KEYS:
            for i in at:
                chosen[i] = _murmur2(keys[i]) % len(partitions)
            continue
        rows = np.frombuffer(b"".join(keys[i] for i in at), dtype=np.uint8).reshape(len(at), length)
        h = np.full(len(at), (0x9747B28C ^ length) & 0xFFFFFFFF, dtype=np.uint32)
        whole = length // 4
        words = np.ascontiguousarray(rows[:, : whole * 4]).view("<u4")
        for j in range(whole):
            k = words[:, j] * m
            k ^= k >> np.uint32(24)
            k *= m
            h *= m
            h ^= k
        tail = rows[:, whole * 4 :].astype(np.uint32)
        extra = length % 4
        if extra >= 3:
            h ^= tail[:, 2] << np.uint32(16)
        if extra >= 2:
            h ^= tail[:, 1] << np.uint32(8)
        if extra >= 1:
            h ^= tail[:, 0]
            h *= m
        h ^= h >> np.uint32(13)
        h *= m
        h ^= h >> np.uint32(15)
        chosen[at] = (h & np.uint32(0x7FFFFFFF)) % len(partitions)
    return [partitions[i] for i in chosen.tolist()]


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
