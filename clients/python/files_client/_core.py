"""The client's one implementation of requests and answers, free of I/O.

Every operation is a generator that yields instructions (send this request, sleep,
hand out this item, read the next chunk, run these operations side by side) and gets
their results back. Two drivers carry the instructions out: one with `httpx.Client`
and threads (`Client`), one with `httpx.AsyncClient` and tasks (`AsyncClient`). So
retries, idempotency keys, consistency tokens, error mapping, paging, uploads in parts
and job polling are written once and behave the same in both.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import AsyncIterator as AsyncIter
from collections.abc import Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

import httpx

from files_client.errors import Unavailable, error_from

CONSISTENCY = "Files-Consistency"
IDEMPOTENCY = "Idempotency-Key"


# -- instructions ------------------------------------------------------------------

T = TypeVar("T")


@dataclass
class Call:
    """One HTTP exchange, as data. Bodies that stream (`files`, `content`) are made by
    factories, so a retry sends them afresh from the start."""

    method: str
    url: str
    params: Any = None
    json: Any = None
    data: dict[str, str] | None = None
    files: Callable[[], list[tuple[str, Any]]] | None = None
    content: Callable[[], Any] | None = None
    # A body stream made afresh per attempt (a part of a file), for either client.
    stream_body: Callable[[], Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = False
    # Our API key goes to our gateway only, never to a presigned URL of a bucket.
    auth: bool = True


@dataclass
class Send:
    call: Call


@dataclass
class Sleep:
    seconds: float


@dataclass
class Emit(Generic[T]):
    """An item for the caller of an iterating operation."""

    item: T


@dataclass
class NextChunk:
    """The next piece of a streamed answer's body, b"" at its end (then it is closed)."""

    response: httpx.Response


@dataclass
class Close:
    response: httpx.Response


@dataclass
class Gather:
    """Run operations side by side, at most `limit` at a time; their results in order.
    The first failure is raised once the others have stopped."""

    ops: list[Op[Any]]
    limit: int


Instruction = Send | Sleep | NextChunk | Close | Gather
# An operation: instructions out, their results in, a result at the end.
Op = Generator[Instruction, Any, T]
# An operation that hands out items (`Emit`) and returns nothing.
Feed = Generator[Emit[T] | Instruction, Any, None]


# -- sync or async ------------------------------------------------------------------


class Sync:
    """Marks what `Client` binds: methods answer at once."""


class Async:
    """Marks what `AsyncClient` binds: methods answer awaitables."""


M = TypeVar("M", Sync, Async)
P = ParamSpec("P")
S = TypeVar("S")


class Bound(Generic[M]):
    """Anything whose methods run through a client's driver: the clients themselves and
    the models they answer (a Folder creates its subfolders with the client that got it)."""

    def _driver(self) -> Driver:
        raise NotImplementedError


class Driver:
    def run(self, op: Op[Any]) -> Any:
        raise NotImplementedError

    def iterate(self, feed: Feed[Any]) -> Any:
        raise NotImplementedError


class operation(Generic[S, P, T]):
    """A method written once as an operation, run by its object's driver: called on a
    `Client` (or a model it answered) it returns the result, on an `AsyncClient` an
    awaitable of it. `Class.method.fn` is the bare operation, to compose others."""

    def __init__(self, fn: Callable[Concatenate[S, P], Op[T]]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    @overload
    def __get__(self, obj: None, owner: Any) -> Self: ...
    @overload
    def __get__(self, obj: Bound[Sync], owner: Any) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: Bound[Async], owner: Any) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, obj: Any, owner: Any) -> Any:
        if obj is None:
            return self
        fn = self.fn

        def bound(*args: Any, **kwargs: Any) -> Any:
            return obj._driver().run(fn(obj, *args, **kwargs))

        bound.__doc__ = fn.__doc__
        bound.__name__ = fn.__name__
        return bound


class listing(Generic[S, P, T]):
    """A method that hands out items page by page: an iterator on a `Client`, an async
    iterator on an `AsyncClient`. The function is a feed that `Emit`s each item."""

    def __init__(self, fn: Callable[Concatenate[S, P], Feed[T]]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    @overload
    def __get__(self, obj: None, owner: Any) -> Self: ...
    @overload
    def __get__(self, obj: Bound[Sync], owner: Any) -> Callable[P, Iterator[T]]: ...
    @overload
    def __get__(self, obj: Bound[Async], owner: Any) -> Callable[P, AsyncIter[T]]: ...
    def __get__(self, obj: Any, owner: Any) -> Any:
        if obj is None:
            return self
        fn = self.fn

        def bound(*args: Any, **kwargs: Any) -> Any:
            return obj._driver().iterate(fn(obj, *args, **kwargs))

        bound.__doc__ = fn.__doc__
        bound.__name__ = fn.__name__
        return bound


# -- consistency tokens --------------------------------------------------------------


class Consistency:
    """The newest position of each context this client has written to. Sent back on
    reads, which then wait until those writes (and their reactions) are visible."""

    def __init__(self) -> None:
        self._positions: dict[str, int] = {}
        self._lock = threading.Lock()

    def merge(self, header: str | None) -> None:
        if not header:
            return
        with self._lock:
            for part in header.split(","):
                source, _, position = part.strip().rpartition(":")
                if source and position.isdigit():
                    self._positions[source] = max(self._positions.get(source, 0), int(position))

    def header(self) -> str:
        with self._lock:
            return ",".join(f"{s}:{p}" for s, p in sorted(self._positions.items()) if p)


# -- retries ----------------------------------------------------------------------


RETRIED_STATUS = (429, 502, 503, 504)


@dataclass
class Retries:
    """Backoff for failures that leave nothing half-done: the connection failed, the
    platform answered 429/502/503/504, or `409 concurrent_change`. Writes carry one
    `Idempotency-Key` across their attempts, so the platform applies them once."""

    attempts: int = 5
    first_delay_s: float = 0.2
    max_delay_s: float = 5.0

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        if response is not None:
            after = str(response.headers.get("retry-after", ""))
            if after.replace(".", "", 1).isdigit():
                return min(float(after), self.max_delay_s * 4.0)
        base = min(self.first_delay_s * 2.0**attempt, self.max_delay_s)
        return base / 2 + random.random() * base / 2


def _retryable(response: httpx.Response) -> bool:
    if response.status_code in RETRIED_STATUS:
        return True
    if response.status_code == 409:
        try:
            return bool(response.json()["error"]["code"] == "concurrent_change")
        except Exception:
            return False
    return False


@dataclass
class Session:
    """What one client carries into every request: where, who, and what it wrote."""

    base_url: str
    api_key: str
    retries: Retries = field(default_factory=Retries)
    consistency: Consistency = field(default_factory=Consistency)
    read_your_writes: bool = True
    user_agent: str = "files-client"

    def url(self, path: str) -> str:
        return path if "://" in path else self.base_url.rstrip("/") + path


def exchange(session: Session, call: Call) -> Op[httpx.Response]:
    """Send a call, retried with backoff; the answer (2xx/3xx) or a typed error."""
    headers = {"User-Agent": session.user_agent, **call.headers}
    if call.auth:
        headers["Authorization"] = f"Bearer {session.api_key}"
        if call.method == "GET":
            token = session.consistency.header() if session.read_your_writes else ""
            if token:
                headers[CONSISTENCY] = token
        else:
            headers[IDEMPOTENCY] = str(uuid.uuid4())
    sent = Call(**{**call.__dict__, "headers": headers, "url": session.url(call.url)})
    attempt = 0
    while True:
        try:
            response: httpx.Response = yield Send(sent)
        except httpx.TransportError as error:
            if attempt + 1 >= session.retries.attempts:
                raise Unavailable(
                    "unreachable",
                    f"{call.method} {call.url}: {type(error).__name__}: {error}".rstrip(": "),
                    {"attempts": attempt + 1},
                ) from error
            yield Sleep(session.retries.delay(attempt))
            attempt += 1
            continue
        if call.auth:
            session.consistency.merge(response.headers.get(CONSISTENCY))
        if response.status_code < 400:
            return response
        if _retryable(response) and attempt + 1 < session.retries.attempts:
            if call.stream:
                yield Close(response)
            yield Sleep(session.retries.delay(attempt, response))
            attempt += 1
            continue
        if call.stream:
            body = b""
            while chunk := (yield NextChunk(response)):
                body += chunk[: 65536 - len(body)]
            response = httpx.Response(
                response.status_code,
                headers=response.headers,
                content=body,
                request=response.request,
            )
        raise error_from(response)


def collect(feed: Feed[T]) -> Op[list[T]]:
    """The items of a feed, as one operation's result."""
    out: list[T] = []
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = feed.throw(error) if error is not None else feed.send(value)
        except StopIteration:
            return out
        value, error = None, None
        if isinstance(step, Emit):
            out.append(step.item)
            continue
        try:
            value = yield step
        except Exception as failure:
            error = failure


def json_of(session: Session, call: Call) -> Op[Any]:
    response = yield from exchange(session, call)
    return response.json() if response.content else None
