"""Product-wide limits on names and client metadata, checked by every context that takes them."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import orjson

MAX_NAME = 300
MAX_METADATA_BYTES = 64 * 1024


def name_problem(name: str, what: str = "name") -> str | None:
    """What is wrong with a folder or file name, or None."""
    if not name or not name.strip():
        return f"the {what} is empty"
    if len(name) > MAX_NAME:
        return f"the {what} is {len(name)} characters long; at most {MAX_NAME} are allowed"
    if "/" in name:
        return f"the {what} {name!r} contains '/'"
    if name in (".", ".."):
        # They stand for folders in every path a person or a script writes (`files
        # upload --to ../x` would make a folder named '..').
        return f"the {what} {name!r} is not allowed: '.' and '..' are parts of paths"
    if name.isascii() and name.isprintable():
        # No control character (those are not printable), and every character checked
        # below is outside ASCII: a plain name, most of them, is done here (a per-file
        # cost of every small upload: the walks below took ~18 µs for a name of 20
        # characters, this 0.2).
        return None
    if any(unicodedata.category(c) == "Cc" for c in name):
        return f"the {what} {name!r} contains control characters"
    if found := next((c for c in name if c in MISLEADING), None):
        return (
            f"the {what} {name!r} contains U+{ord(found):04X} ({MISLEADING[found]}): it makes"
            " the name show as another"
        )
    if found := next((c for c in FLAG_TAGS.sub("", name) if c in TAGS), None):
        return (
            f"the {what} {name!r} contains U+{ord(found):04X} (a tag character outside a flag"
            " emoji, invisible): it makes the name show as another"
        )
    if found := stray_invisible(name):
        return (
            f"the {what} {name!r} contains U+{ord(found):04X} ({_invisible(found)}) where no"
            " text needs it: it makes the name show as another"
        )
    return None


# Letters of scripts that join or vary no character with the invisible ones kept below:
# "re\u200cport.pdf" shows as "report.pdf". Their marks aside ("cafe\u0301\u200c").
_NO_JOINERS = ("LATIN ", "GREEK ", "CYRILLIC ")
# A keycap emoji ("1\ufe0f\u20e3"): the one use of a variation selector after ASCII.
_KEYCAP = re.compile("[0-9#*][\ufe0e\ufe0f]\u20e3")


def stray_invisible(name: str) -> str | None:
    """The first of the invisible characters text needs (`KEPT_INVISIBLE`, tags aside)
    found where none is needed: first in the name, or after an ASCII character or a
    Latin, Greek or Cyrillic letter. The CLI holds the same (files_client/cli.py)."""
    base = None
    for c in _KEYCAP.sub("\u20e3", name):
        if c in KEPT_INVISIBLE and c not in TAGS:
            if base is None or base < "\x80" or unicodedata.name(base, "").startswith(_NO_JOINERS):
                return c
        elif not unicodedata.category(c).startswith("M"):
            base = c
    return None


# Characters that make a name read as another where it is shown: bidirectional
# controls ("invoice\u202efdp.exe" shows as "invoiceexe.pdf", Trojan Source), line and
# paragraph separators (a name over two lines in a listing or a log), and characters
# that show as nothing ("re\u200bport.pdf" beside "report.pdf"): Unicode's
# Default_Ignorable_Code_Point, unassigned ones too (a later Unicode may give them a
# use that still shows nothing). Some of those stay, as text needs them: the joiners
# (ZWJ in emoji sequences, ZWNJ in Persian and Indic scripts) and the variation
# selectors (emoji or text presentation, Mongolian forms, with its vowel separator),
# only where a script uses them (`stray_invisible`); tag characters stay only within a
# flag emoji (`FLAG_TAGS`). The CLI holds the same set (files_client/cli.py
# `_misleading`, held to this by a unit test).
_BIDI = {
    "\u061c": "a bidirectional mark",
    "\u200e": "a bidirectional mark",
    "\u200f": "a bidirectional mark",
    **{chr(c): "a bidirectional control" for c in range(0x202A, 0x202F)},
    **{chr(c): "a bidirectional control" for c in range(0x2066, 0x206A)},
}
DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
TAGS = frozenset(chr(c) for c in range(0xE0020, 0xE0080))
KEPT_INVISIBLE = frozenset(
    {"\u200c", "\u200d", *map(chr, range(0x180B, 0x1810))}
    | {chr(c) for c in range(0xFE00, 0xFE10)}
    | {chr(c) for c in range(0xE0100, 0xE01F0)}
    | TAGS
)
# A subdivision flag (England: U+1F3F4, the tags "gbeng", U+E007F CANCEL TAG).
FLAG_TAGS = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")


def _invisible(c: str) -> str:
    name = unicodedata.name(c, "")
    return f"{name.lower()}, invisible" if name else "an unassigned invisible character"


MISLEADING = {
    **{
        chr(c): _invisible(chr(c))
        for low, high in DEFAULT_IGNORABLE
        for c in range(low, high + 1)
        if chr(c) not in KEPT_INVISIBLE
    },
    **_BIDI,
    "\u2028": "a line separator",
    "\u2029": "a paragraph separator",
}


def unstorable_metadata(metadata: dict[str, Any]) -> str | None:
    """Why the stores cannot hold this JSON object, if they cannot: integers beyond 64
    bits and nesting past 255 levels (orjson, which writes the events, refuses them),
    NaN or Infinity (JSON has none), a NUL character in a string or key (PostgreSQL's
    text and jsonb have none)."""
    try:
        metadata_size(metadata)
        orjson.dumps(metadata)
    except (ValueError, TypeError, RecursionError) as error:
        return f"metadata cannot be stored: {error}"
    # A loop, not recursion: 64 KiB of JSON can nest deeper than Python's stack allows.
    stack: list[Any] = [metadata]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "metadata strings may not contain the NUL character (\\u0000)"
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def metadata_size(metadata: dict[str, Any]) -> int:
    """Its size as compact JSON; ValueError for NaN or Infinity, which JSON cannot carry."""
    return len(
        json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    )
