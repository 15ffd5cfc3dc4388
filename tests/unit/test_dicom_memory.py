"""The DICOM process's budget of bytes held by WADO-RS frames answers: taken in the order
asked, given back when each answer ends, and a 503 for one that waits too long."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.dicom.api import Holding
from services.dicom.memory import ByteBudget
from shared.kit.errors import Refused


async def test_answers_hold_at_most_the_budget_and_wait_their_turn() -> None:
    budget = ByteBudget(100)
    assert await budget.take(60, 1) == 60
    assert await budget.take(30, 1) == 30
    # 50 does not fit (10 left); 10 would, but comes after it: not passed by.
    large = asyncio.create_task(budget.take(50, 10))
    small = asyncio.create_task(budget.take(10, 10))
    await asyncio.sleep(0)
    assert not large.done() and not small.done()
    budget.give(60)
    assert await large == 50 and await small == 10
    assert budget.left == 10
    # One larger than the whole budget is held alone.
    budget.give(30)
    budget.give(50)
    budget.give(10)
    assert await budget.take(500, 1) == 100
    assert budget.left == 0


async def test_an_answer_that_cannot_have_its_bytes_in_time_is_busy_and_holds_none() -> None:
    budget = ByteBudget(100)
    await budget.take(95, 1)
    large = asyncio.create_task(budget.take(50, 0.05))
    await asyncio.sleep(0)
    behind = asyncio.create_task(budget.take(5, 10))  # it fits, but comes after
    await asyncio.sleep(0)
    assert not behind.done()
    with pytest.raises(Refused) as busy:
        await large
    assert (busy.value.status, busy.value.code) == (503, "busy")
    # The one that gave up let the smaller one behind it through, and took nothing.
    assert await behind == 5
    assert budget.left == 0
    budget.give(95)
    budget.give(5)
    assert budget.left == 100


async def test_a_request_cancelled_while_waiting_takes_nothing() -> None:
    budget = ByteBudget(10)
    await budget.take(10, 1)
    waiting = asyncio.create_task(budget.take(5, 10))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    budget.give(10)
    assert budget.left == 10


async def test_a_frames_answer_gives_its_bytes_back_when_sent_or_cut_off() -> None:
    """Given back when the answer ends, however: a body never started (the client gone
    before its first byte) runs no `finally` of its own."""
    given: list[str] = []

    async def body() -> AsyncIterator[bytes]:
        yield b"frame"

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # no disconnect: the answer ends by itself
        return {}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
    await Holding(body(), lambda: given.append("sent"), "multipart/related")(scope, receive, send)
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}

    async def gone(message: dict[str, Any]) -> None:
        raise OSError("the client went away")

    with contextlib.suppress(Exception):
        await Holding(body(), lambda: given.append("cut off"), "multipart/related")(
            scope, receive, gone
        )
    assert given == ["sent", "cut off"]
