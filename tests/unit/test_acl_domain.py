"""ACL rules, given state, when a command, then events (no I/O)."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from services.acl import domain
from shared.contracts import acl as ev
from shared.kit.access import Access
from shared.kit.errors import Refused

ROOT, CHILD = uuid.uuid4(), uuid.uuid4()
PATH = [ROOT, CHILD]


def member(**grants: str) -> Access:
    """A member with roles on ROOT or CHILD (keyword root= / child=)."""
    folders = {"root": ROOT, "child": CHILD}
    return Access(str(uuid.uuid4()), False, {folders[k]: role for k, role in grants.items()})


ORG_ADMIN = Access(str(uuid.uuid4()), True)


def child(version: int = 0, **grants: str) -> domain.Folder:
    return domain.Folder(CHILD, version, {uuid.UUID(u): r for u, r in grants.items()})


def refused(call: object, *args: object) -> Refused:
    with pytest.raises(Refused) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


# -- inviting -----------------------------------------------------------------------


def test_a_folder_admin_invites_and_the_stream_continues() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    changes = domain.invite(member(child="admin"), PATH, child(version=3), [a, b, a], "editor")
    assert [c.version for c in changes] == [4, 5]
    assert {c.stream_id for c in changes} == {ev.folder_access_stream(CHILD)}
    assert [c.event for c in changes] == [
        ev.CollaboratorAdded(folder_id=CHILD, user_id=a, role="editor", reason="invited"),
        ev.CollaboratorAdded(folder_id=CHILD, user_id=b, role="editor", reason="invited"),
    ]


def test_an_admin_above_the_folder_may_invite_here() -> None:
    [added] = domain.invite(member(root="admin"), PATH, child(), [uuid.uuid4()], "user")
    assert isinstance(added.event, ev.CollaboratorAdded)


def test_viewer_is_accepted_as_user() -> None:
    [added] = domain.invite(ORG_ADMIN, PATH, child(), [uuid.uuid4()], "viewer")
    assert added.event.role == "user"  # type: ignore[attr-defined]


@pytest.mark.parametrize("role", ["owner", "", "Admin", "reader"])
def test_unknown_roles_are_refused_naming_the_allowed_ones(role: str) -> None:
    error = refused(domain.invite, ORG_ADMIN, PATH, child(), [uuid.uuid4()], role)
    assert (error.status, error.code) == (422, "invalid_role")
    assert all(r in error.message for r in ("admin", "editor", "user"))
    assert error.details["allowed_roles"] == ["user", "editor", "admin"]


@pytest.mark.parametrize("grants", [{"child": "editor"}, {"root": "editor"}, {"child": "user"}])
def test_less_than_admin_on_the_folder_is_403_naming_the_role(grants: dict[str, str]) -> None:
    error = refused(domain.invite, member(**grants), PATH, child(), [uuid.uuid4()], "user")
    assert (error.status, error.code) == (403, "forbidden")
    assert "admin" in error.message
    assert error.details["role_needed"] == "admin"


def test_no_role_on_the_folder_is_404() -> None:
    error = refused(domain.invite, member(), PATH, child(), [uuid.uuid4()], "user")
    assert error.status == 404


def test_permission_is_checked_before_unknown_emails() -> None:
    error = refused(
        domain.invite, member(child="editor"), PATH, child(), [], "user", ["x@example.com"]
    )
    assert error.status == 403


def test_unknown_emails_refuse_the_whole_invitation_naming_each() -> None:
    unknown = ["a@example.com", "b@example.com"]
    error = refused(domain.invite, ORG_ADMIN, PATH, child(), [uuid.uuid4()], "user", unknown)
    assert (error.status, error.code) == (422, "unknown_emails")
    assert error.details["unknown_emails"] == unknown


def test_inviting_a_collaborator_again_changes_their_role() -> None:
    user = uuid.uuid4()
    folder = child(version=2, **{str(user): "user"})
    [changed] = domain.invite(member(child="admin"), PATH, folder, [user], "editor")
    assert changed.version == 3
    assert changed.event == ev.CollaboratorRoleChanged(
        folder_id=CHILD, user_id=user, role="editor", previous_role="user"
    )


def test_inviting_with_the_same_role_records_nothing() -> None:
    user = uuid.uuid4()
    folder = child(**{str(user): "editor"})
    assert domain.invite(member(child="admin"), PATH, folder, [user], "editor") == []
    admin = uuid.uuid4()
    folder = child(**{str(admin): "admin"})
    assert domain.invite(member(child="admin"), PATH, folder, [admin], "admin") == []


def test_reinviting_a_folder_admin_with_another_role_is_409() -> None:
    admin = uuid.uuid4()
    folder = child(**{str(admin): "admin"})
    error = refused(domain.invite, member(child="admin"), PATH, folder, [admin], "user")
    assert (error.status, error.code) == (409, "admin_collaborator")


# -- changing roles and removing ----------------------------------------------------


def test_change_role_and_remove() -> None:
    user = uuid.uuid4()
    folder = child(version=5, **{str(user): "user"})
    caller = member(root="admin")
    assert domain.change_role(caller, PATH, folder, user, "viewer") == []  # the same role
    [changed] = domain.change_role(caller, PATH, folder, user, "admin")
    assert (changed.version, changed.event.role) == (6, "admin")  # type: ignore[attr-defined]
    [removed] = domain.remove(caller, PATH, folder, user)
    assert removed.event == ev.CollaboratorRemoved(
        folder_id=CHILD, user_id=user, previous_role="user", reason="removed"
    )


def test_a_grant_that_is_not_direct_is_404() -> None:
    user = uuid.uuid4()
    for call, args in (
        (domain.change_role, (user, "editor")),
        (domain.remove, (user,)),
    ):
        error = refused(call, ORG_ADMIN, PATH, child(), *args)
        assert error.status == 404


def test_a_folder_admin_cannot_be_removed_or_changed() -> None:
    admin = uuid.uuid4()
    folder = child(**{str(admin): "admin"})
    caller = member(child="admin")
    for error in (
        refused(domain.change_role, caller, PATH, folder, admin, "editor"),
        refused(domain.remove, caller, PATH, folder, admin),
    ):
        assert (error.status, error.code) == (409, "admin_collaborator")
        assert "admin" in error.message and "cannot" in error.message


def test_an_org_admin_transfers_a_folder() -> None:
    old, new = uuid.uuid4(), uuid.uuid4()
    folder = child(version=1, **{str(old): "admin"})
    [invited] = domain.invite(ORG_ADMIN, PATH, folder, [new], "admin")
    folder = child(version=2, **{str(old): "admin", str(new): "admin"})
    [demoted] = domain.change_role(ORG_ADMIN, PATH, folder, old, "editor")
    [removed] = domain.remove(ORG_ADMIN, PATH, folder, old)
    assert isinstance(invited.event, ev.CollaboratorAdded)
    assert demoted.event.previous_role == "admin"  # type: ignore[attr-defined]
    assert removed.event.previous_role == "admin"  # type: ignore[attr-defined]


def test_managing_needs_admin_but_seeing_needs_any_role() -> None:
    assert domain.may_see(member(root="user"), PATH) == "user"
    assert refused(domain.may_see, member(), PATH).status == 404
    user = uuid.uuid4()
    folder = child(**{str(user): "user"})
    error = refused(domain.remove, member(child="editor"), PATH, folder, user)
    assert error.status == 403


def test_the_path_must_end_at_the_folder() -> None:
    assert domain.valid_path(CHILD, PATH) == PATH
    for bad in ([], [CHILD, ROOT], [ROOT], [CHILD, CHILD]):
        assert refused(domain.valid_path, CHILD, bad).code == "invalid_folder_path"


# -- reactions to the catalog -------------------------------------------------------


def test_the_creator_of_a_top_level_folder_becomes_its_admin_once() -> None:
    creator = uuid.uuid4()
    [added] = domain.when_top_level_folder_created(child(), creator)
    assert (added.version, added.event) == (
        1,
        ev.CollaboratorAdded(
            folder_id=CHILD, user_id=creator, role="admin", reason="created the folder"
        ),
    )
    granted = child(version=1, **{str(creator): "admin"})
    assert domain.when_top_level_folder_created(granted, creator) == []


def test_a_deleted_folder_drops_every_grant() -> None:
    a, b = sorted([uuid.uuid4(), uuid.uuid4()])
    folder = child(version=4, **{str(a): "admin", str(b): "user"})
    changes = domain.when_folder_deleted(folder)
    assert [c.version for c in changes] == [5, 6]
    assert [c.event for c in changes] == [
        ev.CollaboratorRemoved(
            folder_id=CHILD, user_id=a, previous_role="admin", reason="folder_deleted"
        ),
        ev.CollaboratorRemoved(
            folder_id=CHILD, user_id=b, previous_role="user", reason="folder_deleted"
        ),
    ]
    assert domain.when_folder_deleted(child()) == []


# -- API keys -----------------------------------------------------------------------


def test_keys_are_managed_by_their_user_or_an_org_admin() -> None:
    me, other = uuid.uuid4(), uuid.uuid4()
    domain.may_manage_keys(domain.Caller(me, "member"), me)
    domain.may_manage_keys(domain.Caller(other, "admin"), me)
    error = refused(domain.may_manage_keys, domain.Caller(other, "member"), me)
    assert (error.status, error.details["role_needed"]) == (403, "admin")


def test_an_issued_key_is_recorded_by_its_hash_only() -> None:
    user, key_id = uuid.uuid4(), uuid.uuid4()
    key = domain.new_key()
    [issued] = domain.issue_key(user, 2, key_id, key)
    assert (issued.stream_id, issued.version) == (ev.user_stream(user), 3)
    assert key not in issued.event.model_dump_json()
    assert issued.event.key_hash == domain.key_hash(key)  # type: ignore[attr-defined]


def test_revoking_someone_elses_key_is_404_and_twice_records_nothing() -> None:
    owner, other = uuid.uuid4(), uuid.uuid4()
    key = domain.Key(uuid.uuid4(), owner, revoked=False)
    assert refused(domain.revoke_key, domain.Caller(other, "member"), key, 2).status == 404
    assert refused(domain.revoke_key, domain.Caller(owner, "member"), None, 0).status == 404
    [revoked] = domain.revoke_key(domain.Caller(owner, "member"), key, 2)
    assert revoked.version == 3
    [revoked] = domain.revoke_key(domain.Caller(other, "admin"), key, 2)
    assert revoked.event == ev.ApiKeyRevoked(key_id=key.id, user_id=owner)
    done = domain.Key(key.id, owner, revoked=True)
    assert domain.revoke_key(domain.Caller(owner, "member"), done, 3) == []


# -- web app sessions ---------------------------------------------------------------


def test_a_session_records_only_its_token_hash_and_expires() -> None:
    from datetime import UTC, datetime, timedelta

    user, key, session = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    token = domain.new_session_token()
    [change] = domain.start_session(user, 3, key, session, token, now, 3600)
    assert change.stream_id == ev.user_stream(user) and change.version == 4
    started = change.event
    assert isinstance(started, ev.SessionStarted)
    assert started.token_hash == domain.token_hash(token) != token
    assert token not in started.model_dump_json()
    assert started.expires_at == now + timedelta(hours=1)
    # A lifetime is kept within bounds.
    [short] = domain.start_session(user, 0, key, session, token, now, 0)
    assert short.event.expires_at == now + timedelta(seconds=domain.MIN_SESSION_S)  # type: ignore[attr-defined]


def test_signing_out_ends_an_open_session_once() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 1, 1, tzinfo=UTC)
    user = uuid.uuid4()
    open_ = domain.Session(uuid.uuid4(), user, False, now + timedelta(hours=1))
    [change] = domain.end_session(open_, 5, now)
    assert change.version == 6 and change.event.reason == "signed_out"  # type: ignore[attr-defined]
    assert domain.end_session(None, 5, now) == []
    assert domain.end_session(dataclasses.replace(open_, ended=True), 5, now) == []
    assert domain.end_session(open_, 5, now + timedelta(hours=2)) == []


def test_revoking_a_key_ends_its_open_sessions_in_the_same_stream() -> None:
    owner = uuid.uuid4()
    caller = domain.Caller(owner, "member")
    key = domain.Key(uuid.uuid4(), owner, False)
    sessions = [uuid.uuid4(), uuid.uuid4()]
    changes = domain.revoke_key(caller, key, 7, sessions)
    assert [c.version for c in changes] == [8, 9, 10]
    assert isinstance(changes[0].event, ev.ApiKeyRevoked)
    ended = [c.event for c in changes[1:]]
    assert [e.session_id for e in ended] == sessions  # type: ignore[attr-defined]
    assert all(e.reason == "key_revoked" for e in ended)  # type: ignore[attr-defined]
