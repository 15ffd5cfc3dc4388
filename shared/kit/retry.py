"""Which failures pass by themselves, and how long to wait before trying again.

A transient failure (a lost connection, a database or broker restarting, a deadlock, a
serialization failure, too many connections, a timeout, another writer first) says
nothing about the event being handled: it is retried, with exponential backoff and full
jitter, for as long as the policy allows, and never dead-lettered. Anything else is
presumed to repeat (the event or the code is at fault) and is given a bounded number of
tries. The inbox consumer (shared/kit/inbox.py) is the one user; the policy comes from
the settings (`FILES_CONSUMER_RETRY_FOR_S`, `FILES_CONSUMER_POISON_TRIES`).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import asyncpg
import httpx
import urllib3.exceptions
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from shared.kit.eventstore import ConcurrencyConflict

TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError, TimeoutError (asyncio's too), socket errors
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # a connection closed under us, a pool closing
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    KafkaConnectionError,
    KafkaTimeoutError,
    httpx.TransportError,
    urllib3.exceptions.HTTPError,  # the S3 client's connection and protocol errors
    ConcurrencyConflict,
)
# SQLSTATE classes and codes that pass: connection exceptions, transaction rollbacks
# (serialization, deadlock), insufficient resources, operator intervention (shutdown,
# restart, statement timeout), system errors, lock timeouts, session timeouts.
TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")
TRANSIENT_SQLSTATES = ("55P03", "25P03", "25P04")


def transient(error: BaseException) -> bool:
    """Whether the error, or one it was raised from, is a transient failure."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TRANSIENT_TYPES):
            return True
        if isinstance(current, KafkaError) and current.retriable:
            return True
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and (
            state[:2] in TRANSIENT_SQLSTATE_CLASSES or state in TRANSIENT_SQLSTATES
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


@dataclass(frozen=True)
class Policy:
    """first_s doubles up to cap_s between tries (full jitter); transient failures are
    retried for retry_for_s, others tried poison_tries times."""

    first_s: float = 0.05
    cap_s: float = 5.0
    retry_for_s: float = 300.0
    poison_tries: int = 5


@dataclass
class Backoff:
    """The waits of one run of tries, under a policy."""

    policy: Policy
    started: float = field(default_factory=time.monotonic)
    tries: int = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def expired(self) -> bool:
        return self.elapsed >= self.policy.retry_for_s

    async def wait(self) -> None:
        """Sleep before the next try: uniform in [0, min(cap, first * 2^tries)]."""
        ceiling = min(self.policy.cap_s, self.policy.first_s * 2**self.tries)
        self.tries += 1
        # A schedule between tries, not a wait for a reaction.
        await asyncio.sleep(random.uniform(ceiling / 2, ceiling))
