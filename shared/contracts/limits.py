"""How big an event may be, and how a collection that grows with user input is cut.

The rule (docs/events.md): no event grows with user input without a bound. A list a user
can make as long as they like (a group's images, a series' instances, the files a
deletion releases) travels in pages: events of their own, each at most PAGE_BYTES of
items, in the same stream and transaction as the event they complete, so consumers meet
them in order.

- MAX_MESSAGE_BYTES: the largest Kafka record the bus carries. The producer's
  `max_request_size`, each topic's `max.message.bytes` (shared/kit/bus.py) and the
  deployment's topics (deploy/) are all this number.
- MAX_EVENT_BYTES: the most an event's data and metadata may take as compact JSON; the
  event store refuses a bigger one at append (`EventTooLarge`). Half the message size:
  the relay sends the JSON PostgreSQL renders (a space after every ':' and ',', at most
  1.5 times the compact size), with the envelope's fields, the key and the headers.
- PAGE_BYTES, PAGE_ITEMS: what one page holds at most, leaving room for the rest of its
  event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import orjson

MAX_MESSAGE_BYTES = 1024 * 1024
MAX_EVENT_BYTES = MAX_MESSAGE_BYTES // 2
PAGE_BYTES = 128 * 1024
PAGE_ITEMS = 1000

T = TypeVar("T")


def json_size(value: object) -> int:
    """Bytes of `value` as compact JSON."""
    return len(orjson.dumps(value))


def pages(
    items: Iterable[T],
    size: Callable[[T], int],
    *,
    max_bytes: int = PAGE_BYTES,
    max_items: int = PAGE_ITEMS,
) -> Iterator[list[T]]:
    """The items in order, cut into pages of at most `max_items` items and `max_bytes`
    bytes (a single item bigger than that is a page of its own; the store then refuses
    it if it is bigger than an event may be)."""
    page: list[T] = []
    used = 0
    for item in items:
        cost = size(item) + 1  # and its comma
        if page and (used + cost > max_bytes or len(page) == max_items):
            yield page
            page, used = [], 0
        page.append(item)
        used += cost
    if page:
        yield page
