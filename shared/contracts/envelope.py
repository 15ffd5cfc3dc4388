"""The envelope every event travels in, in the event stores and on Kafka."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class Event(BaseModel):
    """Base of every event payload.

    `type` is the stable name on the wire (`catalog.FileMoved`), never a Python
    import path, so modules can move without rewriting history.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: ClassVar[str]
    version: ClassVar[int] = 1


class Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: uuid.UUID
    type: str
    schema_version: int = 1
    stream_id: str
    stream_version: int
    occurred_at: datetime
    actor: str
    correlation_id: str
    causation_id: str | None = None
    traceparent: str | None = None
    # Set by the store on append: the store that recorded it and its dense
    # position there. Consumers use them for consistency watermarks.
    source: str = ""
    position: int = 0
    data: dict[str, Any] = Field(default_factory=dict)


class Cause(BaseModel):
    """Who asked, and why: carried from a request or a consumed event into new events."""

    model_config = ConfigDict(frozen=True)

    actor: str
    correlation_id: str
    causation_id: str | None = None
    traceparent: str | None = None

    @classmethod
    def of(cls, envelope: Envelope) -> Cause:
        return cls(
            actor=envelope.actor,
            correlation_id=envelope.correlation_id,
            causation_id=str(envelope.event_id),
            traceparent=envelope.traceparent,
        )


@dataclass(frozen=True)
class Change:
    """What a decision returns: an event, the stream it goes to, the version it makes."""

    stream_id: str
    version: int
    event: Event


def envelopes_of(
    changes: Sequence[Change], cause: Cause, at: datetime | None = None
) -> list[Envelope]:
    return [
        new_envelope(c.event, stream_id=c.stream_id, stream_version=c.version, cause=cause, at=at)
        for c in changes
    ]


def now() -> datetime:
    return datetime.now(UTC)


def new_envelope(
    event: Event, *, stream_id: str, stream_version: int, cause: Cause, at: datetime | None = None
) -> Envelope:
    # Built from a validated event and our own fields: constructing skips validating
    # them again, a third of the cost of a bulk write (100,000 envelopes per cascade).
    return Envelope.model_construct(
        event_id=uuid.uuid4(),
        type=event.type,
        schema_version=event.version,
        stream_id=stream_id,
        stream_version=stream_version,
        occurred_at=at or now(),
        actor=cause.actor,
        correlation_id=cause.correlation_id,
        causation_id=cause.causation_id,
        traceparent=cause.traceparent,
        source="",
        position=0,
        data=event.model_dump(mode="json"),
    )
