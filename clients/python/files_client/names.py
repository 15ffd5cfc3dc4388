"""The names the platform refuses, told on this side (shared/contracts/rules.py's rule,
which this package cannot import): `files upload` skips such a file, the client's
uploads refuse it, before anything is sent."""

from __future__ import annotations

import re
import unicodedata


def name_problem(name: str, what: str = "name") -> str | None:
    """What the platform would refuse in a name found on the disk, if anything: what a
    file system allows and the platform does not (shared/contracts/rules.py). The
    client's uploads and `files upload` refuse such a name before sending it: a control
    character would be sent as `%XX` (HTML's form encoding) and could not be told from
    the name."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"the {what} {name!r} is not UTF-8"
    if not name.strip():
        return f"the {what} {name!r} is only spaces"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return f"the {what} {name!r} contains control characters"
    if found := next((c for c in name if misleading(c)), None):
        return (
            f"the {what} {name!r} contains U+{ord(found):04X}"
            f" ({unicodedata.name(found, 'unassigned').lower()}): it makes the name show as"
            " another"
        )
    if found := next((c for c in _FLAG_TAGS.sub("", name) if is_tag(c)), None):
        return (
            f"the {what} {name!r} contains U+{ord(found):04X} (a tag character outside a flag"
            " emoji): it makes the name show as another"
        )
    if found := _stray_invisible(name):
        return (
            f"the {what} {name!r} contains U+{ord(found):04X}"
            f" ({unicodedata.name(found, 'unassigned').lower()}) where no text needs it: it"
            " makes the name show as another"
        )
    return None


# shared/contracts/rules.py `stray_invisible`: a joiner or variation selector first in a
# name, or after an ASCII character or a Latin, Greek or Cyrillic letter (marks aside),
# shows as nothing; a keycap emoji ("1\ufe0f\u20e3") is the one use after ASCII.
_KEYCAP = re.compile("[0-9#*][\ufe0e\ufe0f]\u20e3")


def _stray_invisible(name: str) -> str | None:
    base = None
    for c in _KEYCAP.sub("\u20e3", name):
        code = ord(c)
        if code in _KEPT or 0xE0100 <= code <= 0xE01EF:
            if base is None or base < "\x80":
                return c
            if unicodedata.name(base, "").startswith(("LATIN ", "GREEK ", "CYRILLIC ")):
                return c
        elif not unicodedata.category(c).startswith("M"):
            base = c
    return None


# The characters the platform refuses in names because they make a name show as another
# (shared/contracts/rules.py `MISLEADING`, which this package cannot import): the
# bidirectional controls and marks, the line and paragraph separators (told by their
# Unicode properties), and the characters that show as nothing, Unicode's
# Default_Ignorable_Code_Point (`_IGNORABLE`), but for the joiners and variation
# selectors text and emoji need, and tag characters, which stay within a flag emoji. A
# unit test holds the two to the same characters.
_BIDI_WORDS = ("LEFT-TO-RIGHT", "RIGHT-TO-LEFT", "DIRECTIONAL", "ISOLATE", "ARABIC LETTER MARK")
_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
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
_KEPT = {0x200C, 0x200D, *range(0x180B, 0x1810), *range(0xFE00, 0xFE10)}
_FLAG_TAGS = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")


def is_tag(c: str) -> bool:
    return 0xE0020 <= ord(c) <= 0xE007F


def misleading(c: str) -> bool:
    category, code = unicodedata.category(c), ord(c)
    if category in ("Zl", "Zp"):
        return True
    if category == "Cf" and any(w in unicodedata.name(c, "") for w in _BIDI_WORDS):
        return True
    if code in _KEPT or is_tag(c) or 0xE0100 <= code <= 0xE01EF:
        return False
    return any(low <= code <= high for low, high in _IGNORABLE)
