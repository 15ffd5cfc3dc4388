from __future__ import annotations

import uuid
from typing import ClassVar

from shared.contracts.envelope import Cause, Envelope, Event, new_envelope


class Happened(Event):
    type: ClassVar[str] = "test.Happened"
    n: int


CAUSE = Cause(actor="test", correlation_id="test")


def envelope(stream_id: str, version: int, n: int = 0) -> Envelope:
    return new_envelope(Happened(n=n), stream_id=stream_id, stream_version=version, cause=CAUSE)


def schema() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"
