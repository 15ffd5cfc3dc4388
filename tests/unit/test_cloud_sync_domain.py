"""Cloud-synced folders, the pure rules: what `cloud_sync` takes, the subfolder ids key
paths make, and the keys an S3 event notification names in each shape we take."""

from __future__ import annotations

import json
import uuid

import pytest

from services.ingest.imports.domain import sync
from services.ingest.imports.domain.integrations import parse_change
from shared.kit.errors import Refused

RECORD = {"s3": {"bucket": {"name": "lab"}, "object": {"key": "cats/a+b%2B.png"}}}


def test_s3_sns_and_minio_notifications_name_their_keys_decoded() -> None:
    plain = {"Records": [RECORD]}
    assert sync.notified_keys(plain) == [("lab", "cats/a b+.png")]
    sns = {"Type": "Notification", "Message": json.dumps(plain)}
    assert sync.notified_keys(sns) == [("lab", "cats/a b+.png")]
    minio = {"EventName": "s3:ObjectCreated:Put", "Key": "lab/cats/a.png", **plain}
    assert sync.notified_keys(minio) == [("lab", "cats/a b+.png")]
    assert sync.notified_keys({"Event": "s3:TestEvent"}) == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"nothing": 1}, 422),
        ({"Records": [{"s3": {}}]}, 422),
        ({"Type": "Notification", "Message": "not json"}, 422),
        ({"Type": "SubscriptionConfirmation", "SubscribeURL": "https://x"}, 422),
        ({"Records": [RECORD] * (sync.MAX_RECORDS + 1)}, 413),
        ([RECORD], 422),
        # Any part of a record of another type than S3's (a 500 before).
        ({"Records": [{"s3": "x"}]}, 422),
        ({"Records": [{"s3": {"bucket": "lab", "object": {"key": "a"}}}]}, 422),
        ({"Records": [{"s3": {"bucket": {"name": "lab"}, "object": ["a"]}}]}, 422),
        ({"Type": "Notification", "Message": json.dumps({"Records": [{"s3": [1]}]})}, 422),
    ],
)
def test_a_notification_of_another_shape_is_refused_naming_why(body: object, status: int) -> None:
    with pytest.raises(Refused) as refused:
        sync.notified_keys(body)
    assert refused.value.status == status and refused.value.message


def test_cloud_sync_is_checked_field_by_field() -> None:
    ident = uuid.uuid4()
    assert sync.parse_cloud_sync({"integration_id": str(ident), "prefix": "a/"}) == (
        ident,
        "a/",
        None,
    )
    # A folder's sync state sent back as it is: its integration's name is ignored.
    echoed = {"integration_id": str(ident), "integration_name": "Lab", "prefix": "a/"}
    assert sync.parse_cloud_sync(echoed) == (ident, "a/", None)
    with pytest.raises(Refused) as refused:
        sync.parse_cloud_sync(
            {"integration_id": "x", "prefix": "p" * 2000, "sync_interval_s": 5, "other": 1}
        )
    fields = {p["field"] for p in refused.value.details["problems"]}
    assert fields == {
        "cloud_sync.integration_id",
        "cloud_sync.prefix",
        "cloud_sync.sync_interval_s",
        "cloud_sync.other",
    }


def test_subfolders_have_the_same_id_on_every_run_and_key_parts_come_below_the_prefix() -> None:
    root = uuid.uuid4()
    assert sync.subfolder_id(root, "a/b") == sync.subfolder_id(root, "a/b")
    assert sync.subfolder_id(root, "a/b") != sync.subfolder_id(uuid.uuid4(), "a/b")
    assert sync.relative("data/", "data/a//b/c.png") == ["a", "b", "c.png"]
    token, digest = sync.new_token()
    assert sync.token_sha256(token) == digest and token not in digest


def test_a_rotation_takes_both_keys_or_none() -> None:
    assert parse_change({"rotate_events_token": True}).credentials is None
    changed = parse_change({"access_key": "a", "secret_key": "s", "session_token": "t"})
    assert changed.credentials is not None and changed.credentials.session_token == "t"
    for body in ({"access_key": "a"}, {"session_token": "t"}, {}, {"secret": 1}):
        with pytest.raises(Refused):
            parse_change(body)
