"""Upcasters: how an event recorded in an older shape reads in its contract's current one.

Stored events keep the version they were recorded with (`Envelope.schema_version`); on
read, before any handler or projection sees one, the upcasters registered for its type
take its data from that version to the contract's (`Event.version`), one step at a time.
A contract that changes shape raises its `version` and registers the step from the one
before: no event is rewritten, and no consumer keeps code for old shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Data = dict[str, Any]
Step = Callable[[Data], Data]

# (event type, the version it reads) -> the data at the next version.
STEPS: dict[tuple[str, int], Step] = {}


def upcaster(event_type: str, from_version: int) -> Callable[[Step], Step]:
    def register(step: Step) -> Step:
        key = (event_type, from_version)
        if key in STEPS:
            raise ValueError(f"two upcasters for {event_type} version {from_version}")
        STEPS[key] = step
        return step

    return register


class CannotUpcast(ValueError):
    """An event newer than its contract (a consumer older than its producer), or a gap
    in a contract's steps."""


def upcast(event_type: str, version: int, data: Data, to_version: int) -> Data:
    """`data` of an event of `event_type` recorded at `version`, at `to_version`."""
    if version > to_version:
        raise CannotUpcast(
            f"{event_type} version {version} is newer than this code's ({to_version})"
        )
    while version < to_version:
        step = STEPS.get((event_type, version))
        if step is None:
            raise CannotUpcast(f"no upcaster for {event_type} from version {version}")
        data = step(dict(data))
        version += 1
    return data
