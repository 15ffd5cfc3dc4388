"""Product-wide limits on names and client metadata, checked by every context that takes them."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

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
    if any(unicodedata.category(c) == "Cc" for c in name):
        return f"the {what} {name!r} contains control characters"
    if found := next((c for c in name if c in MISLEADING), None):
        return (
            f"the {what} {name!r} contains U+{ord(found):04X} ({MISLEADING[found]}): it makes"
            " the name show as another"
        )
    return None


# Characters that make a name read as another where it is shown: bidirectional
# controls ("invoice\u202efdp.exe" shows as "invoiceexe.pdf", Trojan Source), and line
# and paragraph separators (a name over two lines in a listing or a log). Joiners and
# variation selectors stay: emoji need them.
MISLEADING = {
    "\u061c": "a bidirectional mark",
    "\u200e": "a bidirectional mark",
    "\u200f": "a bidirectional mark",
    **{chr(c): "a bidirectional control" for c in range(0x202A, 0x202F)},
    **{chr(c): "a bidirectional control" for c in range(0x2066, 0x206A)},
    "\u2028": "a line separator",
    "\u2029": "a paragraph separator",
}


def metadata_size(metadata: dict[str, Any]) -> int:
    """Its size as compact JSON; ValueError for NaN or Infinity, which JSON cannot carry."""
    return len(
        json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    )
