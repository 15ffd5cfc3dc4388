"""The envelope every event travels in, in the event stores and on Kafka."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


class Event(BaseModel):
    """Base of every event payload.

    `type` is the stable name on the wire (`catalog.FileMoved`), never a Python
    import path, so modules can move without rewriting history.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: ClassVar[str]
    version: ClassVar[int] = 1
    # An event about many aggregates at once (a batch): the field of its data that lists
    # their ids, so that the audit finds it by any of them, not only by its stream's.
    about_each: ClassVar[str | None] = None


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
    # The event itself when this process made the envelope from it (`new_envelope`), or
    # parsed it once (`remember`): read models projected in the writing transaction, and
    # a batch applied again, then need not parse `data` back.
    _event: Event | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        # The same event, whether or not this process still holds its model.
        return isinstance(other, Envelope) and self.__dict__ == other.__dict__

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> Envelope:
        copied = super().model_copy(update=update, deep=deep)
        if update and {"type", "schema_version", "data"} & update.keys():
            object.__setattr__(copied, "__pydantic_private__", {"_event": None})
        return copied

    @property
    def made_from(self) -> Event | None:
        """The event this process made the envelope from, or read from its `data` (at
        the envelope's version), if it did."""
        return self.__pydantic_private__["_event"] if self.__pydantic_private__ else None

    def remember(self, event: Event) -> None:
        """Keep the event validated from this envelope's `data`: a batch's transaction
        tried again after a transient failure (a deadlock on the thumbnails' sources,
        say), or a reaction's `ahead` and then its handler, read it without validating
        a page of 100 files again."""
        if self.__pydantic_private__ is None:
            object.__setattr__(self, "__pydantic_private__", {"_event": event})
        else:
            self.__pydantic_private__["_event"] = event


# While a reaction runs with tracing on: for each traceparent of the events it handles,
# the one of the reaction's span, which the events it appends carry on (see `Cause.of`).
continuing: ContextVar[Mapping[str | None, str | None] | None] = ContextVar(
    "continuing", default=None
)


class Caused(Protocol):
    """What a cause is taken from: an envelope, or an event as a handler received it."""

    @property
    def event_id(self) -> uuid.UUID: ...
    @property
    def actor(self) -> str: ...
    @property
    def correlation_id(self) -> str: ...
    @property
    def traceparent(self) -> str | None: ...


class Cause(BaseModel):
    """Who asked, and why: carried from a request or a consumed event into new events."""

    model_config = ConfigDict(frozen=True)

    actor: str
    correlation_id: str
    causation_id: str | None = None
    traceparent: str | None = None

    @classmethod
    def of(cls, envelope: Caused) -> Cause:
        traceparent = envelope.traceparent
        continued = continuing.get()
        if continued:
            traceparent = continued.get(traceparent, traceparent)
        return cls(
            actor=envelope.actor,
            correlation_id=envelope.correlation_id,
            causation_id=str(envelope.event_id),
            traceparent=traceparent,
        )


@dataclass(frozen=True)
class Change:
    """What a decision returns: an event, the stream it goes to, the version it makes;
    `data`, the event's JSON form when the decision made it already (an upload's page,
    each file dumped to size the pages): its envelope takes it rather than dumping the
    event a second time. It must equal `event.model_dump(mode="json")`."""

    stream_id: str
    version: int
    event: Event
    data: dict[str, Any] | None = field(default=None, compare=False, repr=False)


def appended(stream_id: str, events: Iterable[Event], after: int = 0) -> list[Change]:
    """Events appended, in order, to a stream whose last version is `after` (0: a new
    stream): each change makes the next version."""
    return [Change(stream_id, after + n, e) for n, e in enumerate(events, start=1)]


def envelopes_of(
    changes: Sequence[Change], cause: Cause, at: datetime | None = None
) -> list[Envelope]:
    return [
        new_envelope(
            c.event,
            stream_id=c.stream_id,
            stream_version=c.version,
            cause=cause,
            at=at,
            event_id=event_id,
            data=c.data,
        )
        for c, event_id in zip(changes, random_ids(len(changes)), strict=True)
    ]


def random_ids(n: int) -> list[uuid.UUID]:
    """n random (version 4) ids from one read of the OS's randomness: `uuid4()` reads it
    once an id, a system call that costs about 16 µs on our VMs, five times the rest."""
    raw = os.urandom(16 * n)
    return [uuid.UUID(bytes=raw[i : i + 16], version=4) for i in range(0, 16 * n, 16)]


def now() -> datetime:
    return datetime.now(UTC)


def new_envelope(
    event: Event,
    *,
    stream_id: str,
    stream_version: int,
    cause: Cause,
    at: datetime | None = None,
    event_id: uuid.UUID | None = None,
    data: dict[str, Any] | None = None,
) -> Envelope:
    """`data`: the event already in its JSON form (see `Change.data`)."""
    return _trusted(
        {
            "event_id": event_id or uuid.uuid4(),
            "type": event.type,
            "schema_version": event.version,
            "stream_id": stream_id,
            "stream_version": stream_version,
            "occurred_at": at or now(),
            "actor": cause.actor,
            "correlation_id": cause.correlation_id,
            "causation_id": cause.causation_id,
            "traceparent": cause.traceparent,
            "source": "",
            "position": 0,
            "data": event.model_dump(mode="json") if data is None else data,
        },
        event,
    )


_ENVELOPE_FIELDS = frozenset(Envelope.model_fields)


def _trusted(fields: dict[str, Any], event: Event | None = None) -> Envelope:
    """An envelope of values already of the right types (a validated event, our own
    ids and times), without validating them again. It is what `model_construct` does,
    minus its per-field bookkeeping: a tenth of the cost, which matters when one
    folder deletion writes 100,000 envelopes. A unit test holds it equal to a
    validated envelope."""
    envelope = Envelope.__new__(Envelope)
    object.__setattr__(envelope, "__dict__", fields)
    object.__setattr__(envelope, "__pydantic_fields_set__", set(_ENVELOPE_FIELDS))
    object.__setattr__(envelope, "__pydantic_extra__", None)
    object.__setattr__(envelope, "__pydantic_private__", {"_event": event})
    return envelope


M = TypeVar("M", bound=BaseModel)


def trusted(cls: type[M], values: Mapping[str, Any]) -> M:
    """A `cls` of values already of its fields' types (taken from a validated event, as
    a page's file from the page it comes from), not validated again: what
    `model_construct` makes (defaults filled in, other names ignored), minus its
    per-field alias bookkeeping, a fifth of its cost; a page of 100 files built this
    way cost the catalog more than the page's envelope. A field without a default
    must be given (KeyError), where `model_construct` would leave it out."""
    names, of = _fields_of(cls)
    fields: dict[str, Any]
    if values.keys() == names:
        # In the fields' order, not the values': the JSON is written in `__dict__`'s.
        fields = {name: values[name] for name, _ in of}
    else:
        fields = {}
        for name, field in of:
            if name in values:
                fields[name] = values[name]
            elif field is None:
                raise KeyError(f"{cls.__name__}.{name}")
            else:
                fields[name] = field.get_default(call_default_factory=True, validated_data=fields)
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", fields)
    object.__setattr__(model, "__pydantic_fields_set__", set(fields))
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


@functools.cache
def _fields_of(cls: type[BaseModel]) -> tuple[frozenset[str], tuple[tuple[str, Any], ...]]:
    """The fields' names; and each one's, with its FieldInfo if it has a default (None:
    required)."""
    if cls.__private_attributes__ or cls.model_config.get("extra") == "allow":
        raise TypeError(f"{cls.__name__}: `trusted` builds models of plain fields only")
    fields = cls.model_fields
    return frozenset(fields), tuple(
        (name, None if field.is_required() else field) for name, field in fields.items()
    )
