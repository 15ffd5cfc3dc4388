"""HTTP answers become their gRPC messages field by field: an image group stored but not
yet listed (HTTP's 202) keeps the ids a caller follows it by, instead of answering an
empty message."""

from __future__ import annotations

from services.gateway.files_pb.files.v1 import files_pb2 as pb
from services.gateway.grpc_api import _message


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


def test_a_kind_sent_by_a_client_of_the_single_kind_proto_is_read_as_one_kind() -> None:
    """`kind` became repeated (2026-12-06): a request built from the proto before, its
    one `kind` as field 2, reads as a list of that kind, and one kind given now is the
    same bytes a client of the proto before reads as its single kind."""
    for message in (pb.SearchRequest, pb.ListItemsRequest):
        before = b"\x12\x05image"  # field 2, length-delimited, "image"
        assert list(message.FromString(before).kind) == ["image"]
        assert message(kind=["image"]).SerializeToString() == before
