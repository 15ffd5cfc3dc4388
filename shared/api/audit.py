"""The audit: every context's events, merged in time order."""

from __future__ import annotations

from typing import Any

from shared.api.common import Page, Shape


class Event(Shape):
    event_id: str
    type: str
    occurred_at: str
    actor_id: str | None
    subject_id: str | None
    data: dict[str, Any]
    causation_id: str | None
    source: str


class Events(Page):
    items: list[Event]
