"""Users, API keys and folder collaborators: the ACL context's part of the API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from shared.api.common import Page, Shape, Strict


class NewUser(Strict):
    email: str = Field(examples=["ada@example.org"])
    name: str
    org_role: Literal["admin", "member"] = "member"


class Invitation(Strict):
    emails: list[Annotated[str, Field(max_length=320)]] = Field(min_length=1, max_length=1000)
    role: str = Field(description="admin, editor or user (viewer is user)", examples=["user"])


class RoleChange(Strict):
    role: str = Field(examples=["editor"])


class User(Shape):
    id: str
    email: str
    name: str
    org_role: Literal["admin", "member"]
    created_at: str


class NewUserAnswer(User):
    api_key: str = Field(description="shown only here")


class Users(Page):
    items: list[User]


class IssuedKey(Shape):
    id: str
    user_id: str
    api_key: str = Field(description="shown only here")
    created_at: str


class Key(Shape):
    id: str
    created_at: str
    revoked: bool


class Keys(Page):
    items: list[Key]


class Collaborator(Shape):
    user_id: str
    email: str
    name: str
    role: str
    inherited_from: str | None = Field(description="the folder above that grants it, or null")


class Collaborators(Page):
    items: list[Collaborator]


class SignIn(Strict):
    api_key: str = Field(min_length=1, max_length=1000)


class Session(Shape):
    """A session of the web app; its token is only in the `files_session` cookie."""

    id: str
    expires_at: str
    user: User
