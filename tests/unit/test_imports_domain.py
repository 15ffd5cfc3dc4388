"""Imports by reference and integrations, pure: requests, manifests, the job's stream."""

from __future__ import annotations

import uuid

import pytest

from services.ingest.imports.domain import groups, integrations, requests
from services.ingest.imports.domain import jobs as domain
from shared.contracts import ingest as ev
from shared.contracts.catalog import Media
from shared.contracts.envelope import Cause, Change, Envelope, envelopes_of
from shared.kit.errors import Refused

BUCKET = "customer-data"
INTEGRATION = uuid.uuid4()


def body(**fields: object) -> dict[str, object]:
    return {"integration_id": str(INTEGRATION), **fields}


def refused(call: object, *args: object) -> Refused:
    with pytest.raises(Refused) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


# -- object URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("cats/1.png", "cats/1.png"),
        (f"s3://{BUCKET}/cats/a b.png", "cats/a b.png"),
        (f"https://{BUCKET}.s3.eu-west-1.amazonaws.com/cats/a%20b.png", "cats/a b.png"),
        (f"https://{BUCKET}.s3.amazonaws.com/x.png", "x.png"),
        (f"http://127.0.0.1:9000/{BUCKET}/deep/x.png", "deep/x.png"),
    ],
)
def test_an_object_url_names_a_key_of_the_bucket(url: str, key: str) -> None:
    assert requests.key_of(url, BUCKET) == key


@pytest.mark.parametrize(
    "url",
    [
        "s3://other-bucket/x.png",
        "https://other.s3.amazonaws.com/x.png",
        "http://127.0.0.1:9000/other/x.png",
        "ftp://host/x",
        f"s3://{BUCKET}/",
        "",
    ],
)
def test_an_object_url_outside_the_bucket_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        requests.key_of(url, BUCKET)


# -- requests and manifests --------------------------------------------------------------


def test_keys_prefix_and_manifest_together_each_key_once() -> None:
    request = requests.parse_request(
        body(
            keys=["a.png", "b.mp4", "a.png"],
            prefix="raw/",
            manifest={
                "images": [
                    {
                        "objectUrl": f"s3://{BUCKET}/c.png",
                        "title": "cat",
                        "clientMetadata": {"k": 1},
                    }
                ],
                "videos": [{"key": "b.mp4"}, {"key": "d.mp4"}],
                "skip_duplicate_urls": True,
            },
        ),
        BUCKET,
    )
    assert request.integration_id == INTEGRATION
    assert request.prefix == "raw/"
    assert [(o.key, o.kind) for o in request.objects] == [
        ("a.png", None),
        ("b.mp4", None),
        ("c.png", "image"),
        ("d.mp4", "video"),
    ]
    cat = request.objects[2]
    assert (cat.title, cat.metadata) == ("cat", {"k": 1})


def test_groups_sequences_and_dicom_series_in_encord_s_shape() -> None:
    request = requests.parse_request(
        body(
            manifest={
                "images": [{"key": "a.png"}],
                "image_groups": [
                    {
                        "title": "g",
                        "objectUrl_1": f"s3://{BUCKET}/g/2.png",
                        "objectUrl_0": f"s3://{BUCKET}/g/1.png",
                        "clientMetadata": {"site": "x"},
                    },
                    {"createVideo": True, "objectUrls": ["v/1.png", "v/2.png"]},
                ],
                "image_sequences": [{"title": "s", "keys": ["s/1.png"]}],
                "dicom_series": [{"objectUrl_0": f"s3://{BUCKET}/1.dcm"}],
            }
        ),
        BUCKET,
    )
    assert [o.key for o in request.objects] == ["a.png"]
    assert [(g.kind, g.name, g.entry, g.keys, g.metadata) for g in request.groups] == [
        ("image_group", "g", "manifest.image_groups[0]", ["g/1.png", "g/2.png"], {"site": "x"}),
        ("image_sequence", "v", "manifest.image_groups[1]", ["v/1.png", "v/2.png"], {}),
        ("image_sequence", "s", "manifest.image_sequences[0]", ["s/1.png"], {}),
        ("dicom_series", "1.dcm", "manifest.dicom_series[0]", ["1.dcm"], {}),
    ]
    changes = domain.start(uuid.uuid4(), uuid.uuid4(), request)
    assert changes[0].event.total == 5
    state = domain.fold(stream(changes))
    assert state is not None and not state.ended
    assert [g.keys for g in state.pending_groups()] == [g.keys for g in request.groups]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"title": "g"}, "names no frame"),
        ({"objectUrl_1": "a.png"}, "from 0 with no gap"),
        ({"objectUrl_0": "s3://other/a.png"}, "frame 0 names bucket 'other'"),
        ({"objectUrls": ["a.png", 3]}, "objectUrls"),
        ({"objectUrl_0": "a.png", "title": "a/b"}, "title"),
    ],
)
def test_a_group_entry_at_fault_refuses_the_manifest_naming_it(
    entry: dict[str, object], problem: str
) -> None:
    with pytest.raises(Refused) as refused:
        requests.parse_request(body(manifest={"image_groups": [{}, entry][1:]}), BUCKET)
    assert refused.value.code == "invalid_manifest"
    assert "manifest.image_groups[0]" in refused.value.message
    assert problem in refused.value.message


def test_a_group_s_frames_page_and_fold_back_and_a_refused_frame_refuses_it() -> None:
    keys = [f"frames/{'x' * 900}/{i}.png" for i in range(400)]
    request = requests.parse_request(
        body(manifest={"image_sequences": [{"title": "long", "objectUrls": keys}]}), BUCKET
    )
    job, folder = uuid.uuid4(), uuid.uuid4()
    changes = domain.start(job, folder, request)
    pages = [c.event for c in changes if isinstance(c.event, ev.ImportGroupRequested)]
    assert len(pages) > 1 and all(len(p.model_dump_json()) < 200_000 for p in pages)
    state = domain.fold(stream(changes))
    assert state is not None
    (group,) = state.pending_groups()
    assert group.keys == keys and group.frames == 400
    frames = groups.frames_of(group)
    found = [
        domain.Found(uuid.uuid4(), o, "image", "image/png", 1, "0" * 64, Media(width=2, height=2))
        for o in frames
    ]
    assert groups.refused(group, found) is None
    recorded = groups.stored(job, folder, INTEGRATION, state.version, group, found)
    last = recorded[-1].event
    assert isinstance(last, ev.ImageGroupStored) and last.images == 400
    assert last.kind == "image_sequence" and last.folder_id == folder
    image = recorded[0].event.files[0]  # type: ignore[attr-defined]
    assert image.source.type == "cloud" and image.source.key == keys[0]
    assert domain.is_reference(image.blob_key)
    after = domain.fold(stream(changes + recorded))
    assert after is not None and after.pending_groups() == []
    odd = [
        *found[:-1],
        domain.Found(
            uuid.uuid4(), frames[-1], "image", "image/png", 1, "0" * 64, Media(width=3, height=2)
        ),
    ]
    assert groups.refused(group, odd).code == "dimensions_differ"  # type: ignore[union-attr]
    missing = [*found[:-1], domain.rejection(frames[-1], "object_not_found", "gone")]
    refusal = groups.refused(group, missing)
    assert refusal is not None and refusal.code == "object_not_found"
    assert refusal.details["frames"] == [{"key": keys[-1], "code": "object_not_found"}]
    assert "key" not in refusal.details
    rejected = groups.rejected(job, state.version, refusal)
    settled = domain.fold(stream(changes + rejected))
    assert settled is not None and settled.pending_groups() == []


def test_an_entry_imported_before_is_matched_whole_and_settles_as_its_group() -> None:
    keys = ["g/0.png", "g/1.png", "g/2.png"]
    assert groups.frames_sha256("image_group", keys) != groups.frames_sha256(
        "image_group", list(reversed(keys))
    )
    assert groups.frames_sha256("image_group", keys) != groups.frames_sha256("image_sequence", keys)
    assert groups.frames_sha256("image_group", keys) != groups.frames_sha256(
        "image_group", keys[:2]
    )
    # A DICOM series' instances are a set: their headers order the slices.
    assert groups.frames_sha256("dicom_series", keys) == groups.frames_sha256(
        "dicom_series", list(reversed(keys))
    )
    manifest = {
        "image_groups": [{"title": "g", "keys": keys, "clientMetadata": {"v": 2}}],
        "dicom_series": [{"keys": ["ct/0.dcm"]}],
    }
    existing = [uuid.uuid4()]
    for flags, expected in [
        ({"skip_duplicate_urls": True}, ev.ImportObjectSkipped),
        ({"upsert_metadata": True}, ev.ImportedMetadataReplaced),
        ({"upsert_metadata": True, "skip_duplicate_urls": True}, ev.ImportedMetadataReplaced),
    ]:
        request = requests.parse_request(body(manifest={**manifest, **flags}), BUCKET)
        changes = domain.start(uuid.uuid4(), uuid.uuid4(), request)
        state = domain.fold(stream(changes))
        assert state is not None
        group, series = state.pending_groups()
        titled = {
            c.event.entry: c.event.titled
            for c in changes
            if isinstance(c.event, ev.ImportGroupRequested)
        }
        assert titled == {group.entry: True, series.entry: False}
        assert groups.matched(state, group, []) is None
        match = groups.matched(state, group, existing)
        assert isinstance(match, expected) and match.file_ids == existing
        assert match.group_file_id == group.group_file_id and match.entry == group.entry
        # An entry without metadata is only skipped.
        plain = groups.matched(state, series, existing)
        if state.skip_duplicate_urls:
            assert isinstance(plain, ev.ImportObjectSkipped)
        else:
            assert plain is None
        after = domain.fold(stream(changes + groups.settled(state, match)))
        assert after is not None and [g.group_file_id for g in after.pending_groups()] == [
            series.group_file_id
        ]
        assert after.settled == set()


def test_a_malformed_manifest_is_refused_whole_naming_every_problem() -> None:
    error = refused(
        requests.parse_request,
        body(
            manifest={
                "images": [
                    {"title": "no url"},
                    "not an object",
                    {"objectUrl": "s3://elsewhere/x.png"},
                    {"key": "x.png", "title": "a/b"},
                    {"key": "y.png", "clientMetadata": []},
                ],
                "videos": {"key": "v.mp4"},
                "meshes": [],
            }
        ),
        BUCKET,
    )
    assert (error.status, error.code) == (422, "invalid_manifest")
    fields = [f["field"] for f in error.details["fields"]]
    assert sorted(fields) == [
        "manifest.images[0]",
        "manifest.images[1]",
        "manifest.images[2].objectUrl",
        "manifest.images[3].title",
        "manifest.images[4].clientMetadata",
        "manifest.meshes",
        "manifest.videos",
    ]
    assert "elsewhere" in error.message or "elsewhere" in str(error.details)


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({"integration_id": str(INTEGRATION)}, "body"),
        (body(keys="a.png"), "keys"),
        (body(keys=["", 3]), "keys[0]"),
        (body(prefix=7), "prefix"),
        (body(keys=["a"], extra=1), "extra"),
        (body(manifest=[]), "manifest"),
    ],
)
def test_a_malformed_request_names_its_field(request_body: dict[str, object], field: str) -> None:
    error = refused(requests.parse_request, request_body, BUCKET)
    assert error.status == 422
    assert field in [f["field"] for f in error.details["fields"]]


def test_the_integration_must_be_named() -> None:
    assert requests.integration_of(body()) == INTEGRATION
    bads: list[object] = [{}, {"integration_id": "x"}, [], {"integration_id": 3}]
    for bad in bads:
        assert refused(requests.integration_of, bad).status == 422


def test_at_most_so_many_objects_by_name() -> None:
    keys = [f"k{i}" for i in range(requests.MAX_OBJECTS + 1)]
    assert refused(requests.parse_request, body(keys=keys), BUCKET).code == "too_many_objects"


def test_names_kinds_and_folder_markers() -> None:
    assert domain.file_name(ev.ImportObject(key="a/b/c.png")) == "c.png"
    assert domain.file_name(ev.ImportObject(key="a/c.png", title="Cat")) == "Cat"
    assert domain.check_object(ev.ImportObject(key="a/c.png")) is None
    marker = domain.check_object(ev.ImportObject(key="a/"))
    assert marker is not None and marker.code == "invalid_name"
    control = domain.check_object(ev.ImportObject(key="a/\x01.png"))
    assert control is not None and control.details["key"] == "a/\x01.png"
    assert domain.check_kind(ev.ImportObject(key="x", kind="image"), "image") is None
    assert domain.check_kind(ev.ImportObject(key="x"), "video") is None
    mismatch = domain.check_kind(ev.ImportObject(key="x", kind="image"), "video")
    assert mismatch is not None and mismatch.code == "kind_mismatch"


def test_requested_objects_come_in_chunks_of_bounded_size() -> None:
    objects = [ev.ImportObject(key=f"{i:04d}-" + "k" * 900) for i in range(1000)]
    chunks = domain.chunks(objects)
    assert len(chunks) > 1
    assert [o for c in chunks for o in c] == objects
    for c in chunks:
        assert len(ev.ImportObjectsRequested(job_id=uuid.uuid4(), objects=c).model_dump_json()) < (
            domain.MAX_CHUNK_BYTES * 1.2
        )


# -- the job's stream --------------------------------------------------------------------


def stream(changes: list[Change]) -> list[tuple[str, dict[str, object]]]:
    return [(c.event.type, c.event.model_dump(mode="json")) for c in changes]


def test_a_job_resumes_from_its_stream_where_its_last_batch_ended() -> None:
    job, folder = uuid.uuid4(), uuid.uuid4()
    request = requests.parse_request(
        body(
            keys=["a.png", "b.png", "c.png"],
            prefix="raw/",
            manifest={"image_groups": [{"title": "g", "keys": ["g/1.png"]}]},
        ),
        BUCKET,
    )
    started = domain.start(job, folder, request)
    assert [c.version for c in started] == [1, 2, 3]
    assert isinstance(started[0].event, ev.ImportJobStarted) and started[0].event.total == 4
    found = domain.Found(
        uuid.uuid4(),
        request.objects[0],
        "image",
        "image/png",
        10,
        "0" * 64,
        Media(width=2, height=3),
    )
    missing = domain.rejection(request.objects[1], "object_not_found", "gone")
    first = domain.batch(job, folder, INTEGRATION, 3, [found], [missing], listed=1000)
    assert [c.version for c in first] == [4, 5, 6]
    stored = first[1].event
    assert isinstance(stored, ev.FileContentStored)
    assert stored.source.type == "cloud" and stored.source.key == "a.png"
    assert stored.source.integration_id == INTEGRATION
    assert domain.is_reference(stored.blob_key)
    assert stored.name == "a.png" and stored.media.width == 2
    state = domain.fold(stream(started + first))
    assert state is not None and not state.ended
    assert (state.version, state.listed, state.prefix) == (6, 1000, "raw/")
    assert [o.key for o in state.pending()] == ["c.png"]
    ended = domain.finish(job, 6)
    final = domain.fold(stream(started + first + ended))
    assert final is not None and final.ended
    assert domain.fold([("ingest.UploadJobStarted", {})]) is None


def test_a_batch_s_envelopes_built_directly_are_those_of_its_validated_events() -> None:
    job, folder = uuid.uuid4(), uuid.uuid4()
    named = ev.ImportObject(key="cats/1.png", title="Cat", metadata={"camera": {"side": "l"}})
    listed = ev.ImportObject.model_construct(key="raw/2.mp4")
    found = [
        domain.Found(uuid.uuid4(), named, "image", "image/png", 10, "0" * 64, Media(width=2)),
        domain.Found(
            uuid.uuid4(),
            listed,
            "video",
            "video/mp4",
            99,
            "1" * 64,
            Media(width=4, height=3, frames=25, duration_s=1.5),
        ),
        domain.Found(
            uuid.uuid4(),
            listed,
            "audio",
            "audio/mpeg",
            50,
            "2" * 64,
            Media(duration_s=2.0, sample_rate=44_100, channels=2),
        ),
    ]
    refused = [domain.rejection(named, "object_not_found", "gone")]
    cause = Cause(actor="user-1", correlation_id="c-1", causation_id="e-1", traceparent="t")
    for listed_count, complete in ((0, False), (1000, True)):
        fast = domain.batch_envelopes(
            job, folder, INTEGRATION, 7, found, refused, cause, listed_count, complete
        )
        slow = envelopes_of(
            domain.batch(job, folder, INTEGRATION, 7, found, refused, listed_count, complete),
            cause,
        )
        assert len(fast) == len(slow) == len(found) + len(refused) + (1 if listed_count else 0)
        for quick, validated in zip(fast, slow, strict=True):
            same = {"event_id", "occurred_at"}
            assert quick.model_dump(exclude=same) == validated.model_dump(exclude=same)
            assert Envelope.model_validate(quick.model_dump()) == quick
        stored = fast[-2].data
        assert stored == ev.FileContentStored.model_validate(stored).model_dump(mode="json")


def test_a_manifest_naming_nothing_finishes_at_once() -> None:
    request = requests.parse_request(body(manifest={"images": []}), BUCKET)
    changes = domain.start(uuid.uuid4(), uuid.uuid4(), request)
    assert [c.event.type for c in changes] == [
        "ingest.ImportJobStarted",
        "ingest.UploadJobFinished",
    ]


# -- integrations ------------------------------------------------------------------------


def registration(**fields: object) -> dict[str, object]:
    return {
        "name": "lab bucket",
        "provider": "s3",
        "bucket": BUCKET,
        "access_key": "AKIA",
        "secret_key": "s3cr3t",
        **fields,
    }


def test_a_gcs_registration_defaults_to_google_s_endpoint_and_region_auto() -> None:
    parsed = integrations.parse_registration(
        registration(provider="gcs", bucket="under_scored.bucket")
    )
    assert (parsed.provider, parsed.endpoint, parsed.region) == ("gcs", integrations.GCS, "auto")
    assert parsed.endpoint_given == "https://storage.googleapis.com"
    (change,) = integrations.register(uuid.uuid4(), parsed, "v1.sealed")
    assert change.event.endpoint == "https://storage.googleapis.com"  # type: ignore[attr-defined]
    assert requests.key_of("gs://under_scored.bucket/a/b.png", "under_scored.bucket") == "a/b.png"
    assert (
        requests.key_of(
            "https://storage.cloud.google.com/under_scored.bucket/a/b.png", "under_scored.bucket"
        )
        == "a/b.png"
    )


def test_a_registration_is_read_and_recorded_with_sealed_credentials_only() -> None:
    parsed = integrations.parse_registration(registration(endpoint="http://127.0.0.1:9000/"))
    assert parsed.endpoint == integrations.Endpoint("127.0.0.1:9000", secure=False)
    assert parsed.endpoint_given == "http://127.0.0.1:9000"
    assert integrations.parse_registration(registration()).endpoint == integrations.AWS
    ident = uuid.uuid4()
    (change,) = integrations.register(ident, parsed, "v1.sealed")
    data = change.event.model_dump_json()
    assert "s3cr3t" not in data and "AKIA" not in data and "v1.sealed" in data
    assert change.stream_id == f"integration-{ident}"
    (removed,) = integrations.remove(ident, 1)
    assert removed.version == 2


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"provider": "azure"}, "provider"),
        ({"bucket": "not_a_bucket"}, "bucket"),
        ({"provider": "gcs", "bucket": "Not_A_Bucket"}, "bucket"),
        ({"provider": "gcs", "session_token": "t"}, "session_token"),
        ({"provider": "gcs", "role_arn": "arn:aws:iam::123456789012:role/r"}, "role_arn"),
        ({"name": ""}, "name"),
        ({"endpoint": "ftp://x"}, "endpoint"),
        ({"endpoint": "http://u:p@host"}, "endpoint"),
        ({"endpoint": "https://host/path"}, "endpoint"),
        ({"region": "EU WEST"}, "region"),
        ({"secret_key": ""}, "secret_key"),
        ({"access_key": 5}, "access_key"),
    ],
)
def test_a_registration_names_the_field_at_fault(fields: dict[str, object], field: str) -> None:
    error = refused(integrations.parse_registration, registration(**fields))
    assert error.status == 422
    assert error.details["fields"][0]["field"] == field
    assert "s3cr3t" not in error.message


@pytest.mark.parametrize(
    ("path", "method", "service"),
    [
        ("/v1/integrations", "POST", "ingest"),
        ("/v1/integrations", "GET", "ingest"),
        (f"/v1/integrations/{INTEGRATION}", "DELETE", "ingest"),
        (f"/v1/folders/{INTEGRATION}/imports", "POST", "ingest"),
    ],
)
def test_the_gateway_sends_integrations_and_imports_to_ingest(
    path: str, method: str, service: str
) -> None:
    from services.gateway.routes import TABLE

    found = TABLE.match(method, path.encode())
    assert found is not None
    assert found.route.owner == service


def test_a_refusal_names_a_few_faults_clipped_and_counts_them_all() -> None:
    # 5,000 unknown keys of 1 KB came back, the first 100 twice (10 in the message).
    many = body(keys=["a"], **{f"{i:05d}" + "k" * 995: 1 for i in range(5_000)})
    error = refused(requests.parse_request, many, BUCKET)
    assert (error.status, error.code, error.details["faults"]) == (422, "invalid_request", 5_000)
    assert len(error.details["fields"]) == 20
    assert all(len(f["field"]) <= 201 for f in error.details["fields"])
    assert len(error.message) < 20 * 500 and error.message.endswith("and 4980 more")
