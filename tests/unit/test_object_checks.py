"""Ingest's check of an imported object whose ETag changed (imports/objects.py): a whole
object's hash may take minutes, longer than a drawing waits, so the read is answered 503
(drawn again later) while the hash goes on, and reads meeting it meanwhile join it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from services.ingest.imports import objects
from shared.kit.errors import Refused


async def test_a_long_hash_answers_503_goes_on_and_is_joined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def same_bytes(*args: Any) -> str | None:
        started.append(args[-1])
        await release.wait()
        return "new-etag"

    monkeypatch.setattr(objects, "_same_bytes", same_bytes)
    monkeypatch.setattr(objects, "HASH_WAIT_S", 0.05)
    integration, file_id = uuid.uuid4(), uuid.uuid4()

    def check() -> Any:
        return objects._checked(None, integration, "k", file_id, "sha", "old")  # type: ignore[arg-type]

    with pytest.raises(Refused) as refused:
        await check()
    assert refused.value.status == 503
    assert refused.value.code == "object_being_checked"
    # Asked again while it runs: the same hash, not a second whole read.
    with pytest.raises(Refused):
        await check()
    assert started == ["old"]
    release.set()
    # Joined, not started again; done, it is let go (its callback runs before ours).
    assert await check() == "new-etag"
    assert started == ["old"]
    assert not objects._CHECKS
