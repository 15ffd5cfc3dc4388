"""Events as handlers see them: registered by contract class, parsed into it.

A read model (`projections.Projection`) or a service's reactions (`Reactions`) name
each event they handle by its contract class, `@x.on(FileUploaded)`, with one named
handler per trigger. Before a handler sees an event, its stored data is upcast to the
contract's version (`shared.contracts.upcasting`) and parsed into the contract: the
handler gets `Received[FileUploaded]`, its `.event` typed, its envelope beside it.

Every registration is recorded in `REGISTRATIONS`, which a unit test holds against the
contracts: each names a contract type, and each published type is read by someone or
declared read by no one (`shared.contracts.READ_BY_NO_ONE`).
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import asyncpg

from shared.contracts import REGISTRY
from shared.contracts.envelope import Envelope, Event
from shared.contracts.upcasting import upcast
from shared.kit.db import Conn

E = TypeVar("E", bound=Event)
E_co = TypeVar("E_co", bound=Event, covariant=True)


class Received(Generic[E_co]):
    """An event as a handler gets it: parsed into its contract, in its envelope.

    `event` is parsed when first read if it was not at once (`parse(lazy=True)`): a
    replay of the service's own store hands handlers events that were valid when
    appended, and most handlers read only `data`."""

    __slots__ = ("_contract", "_event", "data", "envelope")

    def __init__(
        self,
        envelope: Envelope,
        event: E_co | None,
        data: dict[str, Any],
        contract: type[E_co] | None = None,
    ) -> None:
        self.envelope = envelope
        # The same event as JSON at the contract's version (upcast, unlike the stored
        # envelope's): for set-based SQL that sends rows to PostgreSQL as jsonb.
        self.data = data
        self._event = event
        self._contract = contract

    @property
    def event(self) -> E_co:
        if self._event is None:
            assert self._contract is not None
            self._event = self._contract.model_validate(self.data)
            if self.data is self.envelope.data:
                self.envelope.remember(self._event)
        return self._event

    # What handlers read of the envelope (and what `Cause.of` takes).
    @property
    def event_id(self) -> uuid.UUID:
        return self.envelope.event_id

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def actor(self) -> str:
        return self.envelope.actor

    @property
    def occurred_at(self) -> datetime:
        return self.envelope.occurred_at

    @property
    def stream_id(self) -> str:
        return self.envelope.stream_id

    @property
    def stream_version(self) -> int:
        return self.envelope.stream_version

    @property
    def correlation_id(self) -> str:
        return self.envelope.correlation_id

    @property
    def traceparent(self) -> str | None:
        return self.envelope.traceparent

    @property
    def source(self) -> str:
        return self.envelope.source

    @property
    def position(self) -> int:
        return self.envelope.position


def parse(envelope: Envelope, contract: type[E], *, lazy: bool = False) -> Received[E]:
    """The envelope's event in `contract`'s current shape (the stored envelope keeps its
    own version and data); `lazy`: parsed only if a handler reads `event`."""
    made = envelope.made_from
    if type(made) is contract:
        # Made in this process, at the current version: nothing to parse.
        return Received(envelope, made, envelope.data)
    data = envelope.data
    if envelope.schema_version != contract.version:
        data = upcast(envelope.type, envelope.schema_version, data, contract.version)
    if lazy:
        return Received(envelope, None, data, contract)
    event = contract.model_validate(data)
    if data is envelope.data:
        envelope.remember(event)
    return Received(envelope, event, data)


def received(
    envelopes: Sequence[Envelope], contract: type[E], *, lazy: bool = False
) -> list[Received[E]]:
    return [parse(e, contract, lazy=lazy) for e in envelopes]


Handle = Callable[[Conn, Sequence[Received[Any]]], Awaitable[None]]
Method = Callable[[Any, Conn, Sequence[Received[Any]]], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Awaitable[None]])


@dataclass(frozen=True)
class Registration:
    """One trigger: who handles which contract (for the contracts test)."""

    consumer: str  # "catalog.tree", "datasets.reactions", ...
    contract: type[Event]
    handler: str


REGISTRATIONS: list[Registration] = []


class Triggers:
    """Contract type name -> (contract, handler): one handler per trigger."""

    def __init__(self, consumer: str) -> None:
        self.consumer = consumer
        self.by_type: dict[str, tuple[type[Event], Callable[..., Awaitable[None]]]] = {}

    def register(self, contract: type[Event], handler: Callable[..., Awaitable[None]]) -> None:
        if not (isinstance(contract, type) and issubclass(contract, Event)):
            raise TypeError(f"{self.consumer}: {contract!r} is not an event contract")
        if REGISTRY.get(contract.type) is not contract:
            raise TypeError(f"{self.consumer}: {contract.__name__} is not a registered contract")
        if contract.type in self.by_type:
            raise ValueError(f"{self.consumer}: two handlers for {contract.type}")
        self.by_type[contract.type] = (contract, handler)
        REGISTRATIONS.append(Registration(self.consumer, contract, handler.__qualname__))

    @property
    def contracts(self) -> list[type[Event]]:
        return [contract for contract, _ in self.by_type.values()]


# What a reaction's `ahead` made of the batch's events before the batch's transaction
# opened, by event id (empty outside a consumer's batch: a dead letter's replay).
_AHEAD: ContextVar[Mapping[uuid.UUID, Any] | None] = ContextVar("ahead", default=None)


def ahead(event_id: uuid.UUID) -> Any | None:
    """What this batch's `ahead` made of the event, if it ran (None otherwise: the
    reaction does that work itself)."""
    made = _AHEAD.get()
    return made.get(event_id) if made is not None else None


@contextlib.contextmanager
def made_ahead(made: Mapping[uuid.UUID, Any]) -> Iterator[None]:
    token = _AHEAD.set(made)
    try:
        yield
    finally:
        _AHEAD.reset(token)


Ahead = Callable[[Any, Sequence[Received[Any]]], Awaitable[Mapping[uuid.UUID, Any]]]
FA = TypeVar("FA", bound=Ahead)


class Reactions:
    """A service's reactions to events it consumes, declared on its handlers class:

        class Datasets(Handlers):
            reactions = Reactions("datasets")

            @reactions.on(FileMoved)
            async def when_file_moved(self, conn, moved: Sequence[Received[FileMoved]]): ...

    `bound(handlers)` is what the runtime's consumer calls with each run of one type;
    events of a type no reaction names are passed over.

    `@reactions.ahead(FileUploaded, ...)` names work done before the batch's transaction
    opens (reading files: the transaction, and the locks its reaction takes, then last
    only as long as the writes): a method given the batch's events of those types, in
    one call, that returns what it made by event id, which the reaction reads with
    `ahead(event_id)`. It may run again for the same events (a batch retried), and for
    events the inbox then drops (seen already): it changes nothing. It runs while the
    batch before is still being applied (the consumer fetches a batch ahead), so it
    reads nothing that batch's reactions write.
    """

    def __init__(self, consumer: str) -> None:
        self.triggers = Triggers(f"{consumer}.reactions")
        self.before: dict[str, Ahead] = {}

    def ahead(self, *contracts: type[Event]) -> Callable[[FA], FA]:
        def register(method: FA) -> FA:
            for contract in contracts:
                if contract.type not in self.triggers.by_type:
                    raise ValueError(f"ahead of {contract.type}, which has no reaction")
                self.before[contract.type] = method
            return method

        return register

    def on(self, contract: type[E]) -> Callable[[F], F]:
        def register(method: F) -> F:
            self.triggers.register(contract, method)
            return method

        return register

    def bound(self, owner: object) -> Bound:
        return Bound(self.triggers, owner, self.before)


class Bound:
    """A service's reactions bound to its handlers: what its consumer calls with each run
    of one type, and the types it reacts to (`types`): the consumer passes over the
    others without recording them one by one (shared/kit/inbox.py). `Bound.joined` makes
    one consumer's reactions of more than one handlers class."""

    def __init__(
        self, triggers: Triggers, owner: object, before: Mapping[str, Ahead] | None = None
    ) -> None:
        self.by_type: dict[str, tuple[type[Event], Method, object]] = {
            name: (contract, method, owner) for name, (contract, method) in triggers.by_type.items()
        }
        self.types = frozenset(self.by_type)
        self.before: dict[str, tuple[Ahead, object]] = {
            name: (method, owner) for name, method in (before or {}).items()
        }

    @classmethod
    def joined(cls, *parts: Bound) -> Bound:
        joined = cls.__new__(cls)
        joined.by_type = {}
        for part in parts:
            if twice := joined.by_type.keys() & part.by_type.keys():
                raise ValueError(f"two reactions to {', '.join(sorted(twice))}")
            joined.by_type |= part.by_type
        joined.types = frozenset(joined.by_type)
        joined.before = {name: found for part in parts for name, found in part.before.items()}
        return joined

    async def prepare(self, envelopes: Sequence[Envelope]) -> Mapping[uuid.UUID, Any]:
        """What the `ahead` methods make of these events, before the batch's transaction:
        one call a method with all its events (of every type it is ahead of)."""
        runs: dict[int, tuple[Ahead, object, list[Received[Any]]]] = {}
        for envelope in envelopes:
            found = self.before.get(envelope.type)
            if found is not None:
                method, owner = found
                contract = self.by_type[envelope.type][0]
                runs.setdefault(id(method), (method, owner, []))[2].append(
                    parse(envelope, contract)
                )
        made: dict[uuid.UUID, Any] = {}
        for method, owner, run in runs.values():
            made.update(await method(owner, run))
        return made

    async def idle(self, pool: Conn | asyncpg.Pool) -> frozenset[str]:
        """Types among `types` that no reaction would act on now (none, here; a bound
        that knows better says which): the consumer passes them over like the types it
        has no reaction to, without decoding them whole or an inbox row each."""
        return frozenset()

    async def __call__(self, conn: Conn, envelopes: Sequence[Envelope]) -> None:
        for event_type, run in itertools.groupby(envelopes, key=lambda e: e.type):
            found = self.by_type.get(event_type)
            if found is not None:
                contract, method, owner = found
                await method(owner, conn, received(list(run), contract))
