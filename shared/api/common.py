"""What every part of the API shares: the error, lists, ids."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """A request body: a field we do not know is refused (422), not ignored."""

    model_config = ConfigDict(extra="forbid")


class Shape(BaseModel):
    """An answer: the fields listed are there; later versions may add more."""

    model_config = ConfigDict(extra="allow")


class Problem(Shape):
    code: str = Field(description="snake_case, for programs", examples=["not_found"])
    message: str = Field(description="for a person", examples=["folder 3f0c… does not exist"])
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="more about it: `fields` (validation), `role_needed` (403), `request_id` (500)",
    )


class Error(Shape):
    """Every refusal: 400, 401, 403, 404, 405, 409, 413, 415, 416, 422, 500, 503."""

    error: Problem


class Page(Shape):
    next_cursor: str | None = Field(
        description="send as `cursor` for the next page; null on the last one"
    )


class IdName(Shape):
    id: str
    name: str
