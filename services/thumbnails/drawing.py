"""The pool of worker processes that draw thumbnails, each file under a time cap.

A worker that overruns the cap is killed and replaced (pebble), as is one that dies
(a decoder's crash, its address-space limit): the file is recorded as failed, the pool
goes on with the next one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable
from typing import Any

import pebble
from pydantic import SecretStr

from services.thumbnails import domain, render
from shared.kit.logs import log
from shared.kit.settings import Settings

Failure = tuple[str, str]  # (code, reason)
# Beyond twice the time cap, a drawing's wait also allows for a worker's (re)start.
SPAWN_ALLOWANCE_S = 60.0

# A worker decodes hostile files, so a decoder's flaw hands an attacker whatever the
# worker holds. It reads the one blob it draws and nothing else: a local store's file in
# place, an S3 store's object by a presigned URL of that object alone (render.Job.url),
# never with the store's keys; it is spawned from an environment without the platform's
# secrets (a spawned process inherits the environment, and /proc/self/environ keeps what
# it started with), and the service is not dumpable (shared/kit/private.py).
SECRET_ENV = frozenset(
    {
        "FILES_SERVICE_KEY",
        "FILES_DATABASE_URL",
        "FILES_SECRET_KEY",
        "FILES_BOOTSTRAP_ADMIN_KEY",
        "FILES_S3_ACCESS_KEY",
        "FILES_S3_SECRET_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    }
)


def keep_secrets_from_workers() -> None:
    """Drop the platform's secrets from this process's environment, which the workers
    spawned later inherit; call it once the settings are read and the blob store made
    (it may take its keys from AWS_* variables)."""
    for name in [n for n in os.environ if n.upper() in SECRET_ENV]:
        del os.environ[name]


def worker_settings(settings: Settings) -> Settings:
    """The settings a worker gets: no database, broker or keys, the blob store's URL (a
    local store's directory) without its keys."""
    return settings.model_copy(
        update={
            "database_url": "",
            "kafka_bootstrap": "",
            "service_key": SecretStr(""),
            "secret_key": "",
            "bootstrap_admin_key": "",
            "s3_access_key": SecretStr(""),
            "s3_secret_key": SecretStr(""),
        }
    )


class Drawing:
    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self._pool: pebble.ProcessPool | None = None

    def _workers(self) -> pebble.ProcessPool:
        if self._pool is not None and not self._pool.active:
            # Broken with nothing in flight (a worker killed while idle): no file saw it.
            self.stop()
        if self._pool is None:
            # Spawned, not forked: a worker starts clean, without this process's threads
            # and connections. Recycled now and then, so no decoder's leak grows for ever
            # (the address-space limit bounds one meanwhile): every 5,000 files, since a
            # start costs ~0.4 CPU-s (imports), which at 500 was ~1 ms a small file.
            self._pool = pebble.ProcessPool(
                max_workers=self.workers,
                max_tasks=5000,
                initializer=render.start_worker,
                initargs=(worker_settings(self.settings),),
                context=multiprocessing.get_context("spawn"),
            )
        return self._pool

    async def warm(self) -> None:
        """The workers started now, not by the first file: a start is ~0.4 CPU-s of
        imports, which the first picture someone waits for would otherwise pay."""
        pool = self._workers()
        future = pool.schedule(render.ready, timeout=SPAWN_ALLOWANCE_S)
        # The pool's timeout counts from a worker's start: a pool that never starts one
        # is given up on here, and made again by the first file.
        waiting = asyncio.wrap_future(future)
        done, _ = await asyncio.wait([waiting], timeout=SPAWN_ALLOWANCE_S)
        if not done:
            future.cancel()  # type: ignore[no-untyped-call]
            if self._pool is pool:
                self.stop()
        elif waiting.exception() is not None:
            log.warning("thumbnails.workers_not_started", error=repr(waiting.exception()))

    async def draw_together(
        self, jobs: list[render.Job], time_cap: float
    ) -> list[list[render.Picture] | Failure | ConnectionError | None] | None:
        """Each small file's pictures or why it has none (a ConnectionError: the store
        did not answer; None: it raised, to be drawn alone), drawn one after another in
        one task under one time cap; or None when the task did not finish (over the cap,
        its worker died, the pool broke): then each is to be drawn alone, under its own
        cap, to find which file it was."""
        ran = await self._run(render.drawn_together, jobs, time_cap)
        if ran is None:
            return None
        pool, waiting = ran
        try:
            made = waiting.result()
        except concurrent.futures.BrokenExecutor:
            self._stop(pool)
            return None
        except (concurrent.futures.TimeoutError, pebble.ProcessExpired):
            return None
        return [
            ConnectionError(f"the blob store did not answer: {m}")
            if isinstance(m, render.SourceUnavailable)
            else (m[0], domain.short_reason(m[1]))
            if isinstance(m, tuple)
            else m
            for m in made
        ]

    async def draw(self, job: render.Job, time_cap: float) -> list[render.Picture] | Failure | None:
        """The pictures; or why the file cannot have them; or None when the pool broke
        (try again later). A store that did not answer is a ConnectionError (transient:
        not the file's fault)."""
        ran = await self._run(render.drawn, job, time_cap)
        if ran is None:
            return None
        pool, waiting = ran
        try:
            made: list[render.Picture] | Failure = waiting.result()
        except render.SourceUnavailable as error:
            raise ConnectionError(f"the blob store did not answer: {error}") from error
        except concurrent.futures.TimeoutError:
            return "timed_out", f"drawing it took more than {time_cap:g} s"
        except pebble.ProcessExpired as error:
            return "crashed", f"the worker drawing it died (exit {error.exitcode})"
        except concurrent.futures.BrokenExecutor:
            # The pool itself broke: a new one for the next files; this one is tried again.
            # (Every file in flight on it ends here: only the first stops it, not the new
            # pool a runner may have made since.)
            self._stop(pool)
            return None
        if isinstance(made, tuple):
            return made[0], domain.short_reason(made[1])
        return made

    async def _run(
        self, fn: Callable[[Any], Any], arg: Any, time_cap: float
    ) -> tuple[pebble.ProcessPool, asyncio.Future[Any]] | None:
        """`fn(arg)` in a worker, capped by the pool; its pool and settled future, or
        None when the future never settled (one queued when the pool broke would hold
        its batch and a slot for ever): that pool is stopped, for a new one."""
        pool = self._workers()
        future = pool.schedule(fn, args=(arg,), timeout=time_cap)
        waiting = asyncio.wrap_future(future)
        done, _ = await asyncio.wait([waiting], timeout=time_cap * 2 + SPAWN_ALLOWANCE_S)
        if not done:
            future.cancel()  # type: ignore[no-untyped-call]
            self._stop(pool)
            return None
        return pool, waiting

    def _stop(self, pool: pebble.ProcessPool) -> None:
        """Stop `pool` if it is still the one in use (not the new one a runner may have
        made since)."""
        if self._pool is pool:
            self.stop()

    def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()  # type: ignore[no-untyped-call]
