"""HTTP answers become their gRPC messages field by field: an image group stored but not
yet listed (HTTP's 202) keeps the ids a caller follows it by, instead of answering an
empty message."""

from __future__ import annotations

from services.gateway.files_pb.files.v1 import files_pb2 as pb
from services.gateway.grpc_api import _filters, _message


def test_an_image_group_stored_but_not_listed_answers_its_ids() -> None:
    accepted = {"job_id": "j-1", "file_id": "g-1", "folder_id": "f-1"}
    made = _message(pb.ImageGroupUploaded, accepted)
    assert (made.job_id, made.file_id, made.folder_id) == ("j-1", "g-1", "f-1")
    assert not made.HasField("file") and not made.HasField("folder")
    listed = _message(
        pb.ImageGroupUploaded,
        {"file": {"id": "g-1", "name": "scan"}, "folder": {"id": "f-1", "name": "scan"}},
    )
    assert (listed.file.id, listed.folder.id) == ("g-1", "f-1")


def test_a_listing_s_kind_and_kinds_are_http_s_repeated_kind() -> None:
    """`kind` stays one string (a client of the proto before sets it so); `kinds` adds
    more: over HTTP, all of them as the repeated `kind`."""
    assert _filters({"kind": "image", "kinds": ["text", "pdf"]})["kind"] == [
        "image",
        "text",
        "pdf",
    ]
    assert _filters({"kinds": ["text"]})["kind"] == ["text"]
    assert _filters({"kind": "image"})["kind"] == ["image"]
    assert not _filters({"kind": "", "kinds": []}).get("kind")


def test_an_upload_session_says_whether_its_parts_were_listed() -> None:
    """`parts_known: false` (the store did not list the parts in time) reaches a gRPC
    client, told from a gateway that does not say (the field unset)."""
    unknown = _message(pb.UploadSession, {"id": "s-1", "parts_known": False})
    assert unknown.HasField("parts_known") and unknown.parts_known is False
    known = _message(pb.UploadSession, {"id": "s-1", "parts_known": True})
    assert known.parts_known is True
    assert not pb.UploadSession(id="s-1").HasField("parts_known")
