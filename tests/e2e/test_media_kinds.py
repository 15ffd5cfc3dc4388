"""NIfTI volumes, audio and video facts through the platform (issue 17): kind `nifti`
with its shape, voxel size and data type; a video's fps and codec; an audio file's
sample rate, channels and codec; hostile content a clear 415, or a file whose facts are
unknown, never a 500."""

from __future__ import annotations

import gzip

import httpx

from tests.e2e.support import error, folder, unique, upload, wav
from tests.unit.test_media import mp4
from tests.unit.test_nifti import nifti


async def test_nifti_audio_and_video_facts_at_upload(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("kinds"))
    volume = nifti((4, 5, 6), (1.0, 1.5, 2.0))
    made = await upload(
        api,
        top["id"],
        ("brain.nii", volume),
        ("brain.nii.gz", gzip.compress(volume)),
        ("clip.mp4", mp4()),
        ("tone.wav", wav(0.5, 8000)),
    )
    files = {f["name"]: f for f in made["files"]}
    facts = {"dims": [4, 5, 6], "voxel_size": [1.0, 1.5, 2.0], "datatype": "int16"}
    assert files["brain.nii"]["kind"] == "nifti"
    assert files["brain.nii"]["media"] == facts
    assert files["brain.nii.gz"]["kind"] == "nifti"
    assert files["brain.nii.gz"]["media"] == facts
    assert files["brain.nii.gz"]["mime_type"] == "application/gzip"
    assert files["clip.mp4"]["media"]["fps"] == 10.0
    assert files["clip.mp4"]["media"]["codec"] == "mpeg4"
    assert files["tone.wav"]["media"] == {
        "duration_s": 0.5,
        "sample_rate": 8000,
        "channels": 1,
        "codec": "pcm_s16le",
    }
    # Listed by kind; its bytes back as they came.
    listed = await api.get(f"/v1/folders/{top['id']}/items", params={"kind": "nifti"})
    assert sorted(i["name"] for i in listed.json()["items"]) == ["brain.nii", "brain.nii.gz"]
    content = await api.get(f"/v1/files/{files['brain.nii.gz']['id']}/content")
    assert content.status_code == 200
    assert gzip.decompress(content.content) == volume


async def test_hostile_volumes_are_refused_or_lose_their_facts(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("hostile-kinds"))
    url = f"/v1/folders/{top['id']}/files"
    # Gzip that is not a volume, and a header cut short: not a kind we take.
    for name, data in (
        ("notes.gz", gzip.compress(b"hello " * 1000)),
        ("cut.nii", nifti()[:300]),
    ):
        answer = await api.post(url, files=[("file", (name, data, "application/octet-stream"))])
        refused = error(answer, 415, "unsupported_content")
        assert "nifti" in refused["details"]["accepted"]
    # A volume whose header lies: taken, its facts unknown.
    raw = bytearray(nifti())
    raw[40:56] = (7).to_bytes(2, "little") + b"\xff\xff" * 7
    made = await upload(api, top["id"], ("liar.nii", bytes(raw)))
    assert made["files"][0]["kind"] == "nifti"
    assert "dims" not in made["files"][0]["media"]


async def test_a_refusal_of_content_lists_every_file_refused(api: httpx.AsyncClient) -> None:
    """The request is all or nothing; its 415 names each refused part (by its place
    among the files), so a client sends the rest again once, not once per refusal."""
    top = await folder(api, unique("refused-parts"))
    sent = [
        ("a.txt", b"fine\n"),
        ("x.txt", gzip.compress(b"not a volume " * 100)),
        # Large enough that what follows comes in later reads of the body.
        ("b.txt", b"fine too\n" * 300_000),
        ("x.txt", b"\x7fELF" + bytes(60)),
        ("c.txt", b""),
    ]
    answer = await api.post(
        f"/v1/folders/{top['id']}/files",
        files=[("file", (n, d, "application/octet-stream")) for n, d in sent],
    )
    refused = error(answer, 415, "unsupported_content")["details"]
    assert (refused["name"], refused["part"]) == ("x.txt", 2)
    assert [(r["part"], r["name"]) for r in refused["refused"]] == [
        (2, "x.txt"),
        (4, "x.txt"),
        (5, "c.txt"),
    ]
    assert all(r["reason"] for r in refused["refused"])
    listed = await api.get(f"/v1/folders/{top['id']}/items")
    assert listed.json()["items"] == []  # nothing of it taken
    again = await upload(api, top["id"], sent[0], sent[2])
    assert [f["name"] for f in again["files"]] == ["a.txt", "b.txt"]
