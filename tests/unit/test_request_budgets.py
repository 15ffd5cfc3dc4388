"""What a request's time budget leaves alone: a DICOMweb retrieve gets a write's (a
compressed instance is copied whole from the store first), a search a read's; and a
drawing cancelled at its caller's deadline keeps the render gate until its thread ends
(the gate bounds how many instances' pixels are in memory at once)."""

from __future__ import annotations

import asyncio
import threading
import types
from typing import Any

import pytest

from services.dicom import slices
from services.dicom.handlers import Dicom
from services.gateway.routes import ROUTES
from tests.conftest import eventually


def test_dicomweb_retrieves_get_the_longer_budget_and_searches_do_not() -> None:
    wado = [r for r in ROUTES if r.summary.startswith("WADO-RS")]
    qido = [r for r in ROUTES if r.summary.startswith("QIDO-RS")]
    assert len(wado) == 9 and len(qido) == 6
    assert all(r.long for r in wado)
    assert not any(r.long for r in qido)
    assert [r.template for r in ROUTES if r.long] == [r.template for r in wado]


async def test_a_cancelled_drawing_holds_the_render_gate_until_its_thread_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    began, release = threading.Event(), threading.Event()

    def drawn_by_range(*_: Any) -> bytes:
        began.set()
        release.wait(30)
        return b"png"

    monkeypatch.setattr(slices, "drawn_by_range", drawn_by_range)
    dicom: Any = types.SimpleNamespace(
        render_gate=asyncio.Semaphore(1), blobs=types.SimpleNamespace(read_at=print)
    )
    drawing = asyncio.ensure_future(Dicom.draw(dicom, "blob", 100))

    async def drawing_began() -> bool:
        return began.is_set()

    await eventually(drawing_began, within=10, what="the drawing begun")
    drawing.cancel()
    # Cancelled, it still waits for its thread, and the gate stays held meanwhile.
    done, _ = await asyncio.wait([drawing], timeout=0.5)
    assert not done
    assert dicom.render_gate.locked()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await drawing
    assert not dicom.render_gate.locked()
