"""A request body's problems, named: pydantic's errors in our words, as one 422.

Each problem names its field as a person writes it (`manifest.images[3].title`,
`shared_with[1]`) and says what is wrong in plain words; pydantic's own names (of its
types and of our classes) never reach the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from shared.kit.errors import FAULTS_NAMED, Refused, clipped

# A value of the wrong type, in our words.
TYPE_PROBLEMS = {
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "missing": "is required",
}


def where(loc: tuple[int | str, ...]) -> str:
    """`manifest.images[3].title` from pydantic's ("manifest", "images", 3, "title")."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "body"


def named(error: ValidationError, unknown: Callable[[str], str]) -> list[dict[str, str]]:
    """Every problem of the body, `unknown(field)` saying what a field we do not take is."""
    return [_named(e, unknown) for e in error.errors()]


def _named(error: Any, unknown: Callable[[str], str]) -> dict[str, str]:
    field = where(tuple(error["loc"]))
    kind = error["type"]
    if kind in TYPE_PROBLEMS:
        problem = TYPE_PROBLEMS[kind]
    elif kind == "extra_forbidden":
        problem = unknown(field)
    elif kind in ("value_error", "assertion_error"):
        problem = str(error["ctx"]["error"])
    else:
        problem = str(error["msg"])
    return {"field": field, "problem": problem}


def refusal(problems: list[dict[str, str]], code: str = "invalid_request") -> Refused:
    """One 422 naming the first problems, each clipped (as every service's validation
    errors: shared/kit/http.py), and counting them all."""
    shown = [
        {"field": clipped(p["field"]), "problem": clipped(p["problem"])}
        for p in problems[:FAULTS_NAMED]
    ]
    message = "; ".join(f"{p['field']}: {p['problem']}" for p in shown)
    if len(problems) > FAULTS_NAMED:
        message += f"; and {len(problems) - FAULTS_NAMED} more"
    return Refused(422, code, message, {"fields": shown, "faults": len(problems)})
