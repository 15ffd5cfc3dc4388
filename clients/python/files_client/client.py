"""`Client` and `AsyncClient`: the same API (files_client.api), run at once or awaited."""

from __future__ import annotations

from types import TracebackType

import httpx

from files_client import config
from files_client._core import Async, Driver, Retries, Session, Sync
from files_client._drivers import AsyncDriver, SyncDriver
from files_client.api import Api

Traceback = TracebackType | None

DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=10.0, pool=None)
LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=32)


def _session(
    url: str | None, api_key: str | None, retries: Retries | None, read_your_writes: bool
) -> Session:
    base, key = config.resolve(url, api_key)
    return Session(base, key, retries or Retries(), read_your_writes=read_your_writes)


class Client(Api[Sync]):
    """The Files API, synchronously.

    `Client()` reads FILES_URL and FILES_API_KEY (else what `files login` saved).
    Writes are retried with backoff under one Idempotency-Key; every read carries the
    consistency token of this client's writes, so it sees them (`read_your_writes`).
    Thread-safe: one client may serve many threads.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        retries: Retries | None = None,
        read_your_writes: bool = True,
        http: httpx.Client | None = None,
    ) -> None:
        self._session = _session(url, api_key, retries, read_your_writes)
        self._http = http or httpx.Client(
            timeout=timeout if timeout is not None else DEFAULT_TIMEOUT, limits=LIMITS
        )
        self._runner = SyncDriver(self._http)

    @property
    def url(self) -> str:
        return self._session.base_url

    def _driver(self) -> Driver:
        return self._runner

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: Traceback
    ) -> None:
        self.close()


class AsyncClient(Api[Async]):
    """The Files API for asyncio: the same methods as `Client`, awaited; listings are
    async iterators (`async for f in folder.items()`)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        retries: Retries | None = None,
        read_your_writes: bool = True,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._session = _session(url, api_key, retries, read_your_writes)
        self._http = http or httpx.AsyncClient(
            timeout=timeout if timeout is not None else DEFAULT_TIMEOUT, limits=LIMITS
        )
        self._runner = AsyncDriver(self._http)

    @property
    def url(self) -> str:
        return self._session.base_url

    def _driver(self) -> Driver:
        return self._runner

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: Traceback
    ) -> None:
        await self.aclose()
