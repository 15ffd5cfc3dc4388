"""The Python client (files_client) against the running platform: the issue's example as
written, then every method, sync and async, with retries, idempotency keys, consistency
tokens and typed errors."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from files_client import (
    AsyncClient,
    Client,
    Conflict,
    File,
    FilesError,
    Folder,
    Forbidden,
    Invalid,
    NotFound,
    Retries,
    Unauthenticated,
    Unavailable,
    UnsupportedContent,
    UploadRefused,
)
from files_client.transfer import LocalFile, numbered, part_of
from PIL import Image

from shared.kit.embedded import free_port
from shared.kit.stack import Stack
from tests.cloud_fixtures import MotoS3, start_moto
from tests.conftest import ADMIN_KEY
from tests.dicom_fixtures import ct_series
from tests.e2e.support import ELF, png, unique

MiB = 1024 * 1024


@pytest.fixture
def client(platform: Stack) -> Iterator[Client]:
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        yield c


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def big_png(size: int) -> bytes:
    head = png(40, 30)
    return head + os.urandom(size - len(head))


def test_the_issue_example_works_as_written(
    platform: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.png", png(8, 6))
    write(tmp_path / "b.png", png(4, 4))
    KEY = ADMIN_KEY
    top = unique("scans")
    # --- the issue's lines, the URL and folder name aside ---
    from files_client import Client

    c = Client(platform.gateway_url, api_key=KEY)  # Client() reads FILES_URL and FILES_API_KEY
    f = c.create_folder(top, description="CT")
    sub = f.create_subfolder("day1")
    files = sub.upload(["a.png", "b.png"])  # list of File
    hits = c.search("a.png")  # Files and Folders, each with .path
    ds = c.create_dataset("train", synced_folder=f)
    # ---
    assert f.description == "CT" and sub.parent_id == f.id
    assert [type(x) for x in files] == [File, File]
    assert [(x.name, x.kind, x.media.width) for x in files] == [
        ("a.png", "image", 8),
        ("b.png", "image", 4),
    ]
    mine = [h for h in hits if h.full_path == f"{top}/day1/a.png"]
    assert len(mine) == 1 and [p.name for p in mine[0].path or []] == [top, "day1"]
    assert ds.synced_folder_id == f.id
    assert ds.refresh().file_count == 2
    assert {x.id for x in ds.files()} == {x.id for x in files}
    c.close()

    monkeypatch.setenv("FILES_URL", platform.gateway_url)
    monkeypatch.setenv("FILES_API_KEY", KEY)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "nothing-saved"))
    with Client() as from_env:
        assert from_env.get_folder(f.id).full_path == top


def test_a_local_directory_is_uploaded_as_a_tree_and_again_sends_nothing(
    client: Client, tmp_path: Path
) -> None:
    """`folder.upload_tree("shots")`, as a scripter writes it: before, only a plan of
    LocalFiles was taken, and a path failed with `KeyError: ''`."""
    write(tmp_path / "shots" / "a.png", png(3, 3))
    write(tmp_path / "shots" / "inner" / "b.png", png(4, 3))
    top = client.create_folder(unique("tree"))
    report = top.upload_tree(tmp_path / "shots")
    assert sorted(f.name for f in report.uploaded) == ["a.png", "b.png"]
    shots = client.get_folder_by_path(f"{top.name}/shots")
    assert [i.name for i in shots.items()] == ["inner", "a.png"]
    assert [f.name for f in client.get_folder_by_path(f"{top.name}/shots/inner").files()] == [
        "b.png"
    ]
    again = top.upload_tree(str(tmp_path / "shots"))
    assert again.uploaded == [] and sorted(f.name for f in again.skipped) == ["a.png", "b.png"]
    with pytest.raises(FilesError) as refused:
        top.upload_tree(tmp_path / "shots" / "a.png")
    assert refused.value.code == "not_a_directory"


def test_folders_by_id_and_path_items_filters_changes_moves_and_deletes(
    client: Client, tmp_path: Path
) -> None:
    top = client.create_folder(unique("tree"), metadata={"site": "A"})
    a = top.create_subfolder("a", description="first")
    b = top.create_subfolder("b")
    pics = [write(tmp_path / f"p{i}.png", png(3 + i, 2)) for i in range(5)]
    note = write(tmp_path / "n.txt", b"notes\n")
    sent = a.upload([*pics, note])

    assert client.get_folder(a.id).file_count == 6
    assert client.get_folder_by_path(f"{top.name}/a").id == a.id
    assert client.get_file_by_path(f"{top.name}/a/n.txt").id == sent[-1].id
    assert client.resolve(a.id).id == a.id and client.resolve(sent[0].id).id == sent[0].id
    with pytest.raises(NotFound) as missing:
        client.resolve(f"{top.name}/a/nope")
    assert f"{top.name}/a/nope" in missing.value.message
    assert {f.name for f in client.list_folders(top)} == {"a", "b"}
    assert any(f.id == top.id for f in client.list_folders())
    assert [f.name for f in top.subfolders()] == ["a", "b"]

    # Pages of 2 items: the cursor carries on through folders, then files.
    assert [i.name for i in top.items(page_size=1)] == ["a", "b"]
    names = [i.name for i in a.items(page_size=2)]
    assert names == ["n.txt", "p0.png", "p1.png", "p2.png", "p3.png", "p4.png"]
    assert [f.name for f in a.items(kind="text")] == ["n.txt"]
    assert len(list(a.files(kind="image"))) == 5

    summary = top.summary()
    assert (summary.files, summary.folders) == (6, 2)
    assert summary.by_kind["image"].files == 5

    renamed = a.rename("alpha").describe("renamed").set_metadata({"k": 1})
    assert (renamed.name, renamed.description, renamed.metadata) == ("alpha", "renamed", {"k": 1})
    assert top.refresh().metadata == {"site": "A"}

    impact = client.move([renamed], b, dry_run=True)
    assert impact.dry_run and impact.folders == 1 and impact.files == 6
    moved = renamed.move_to(b)
    assert moved.parent_id == b.id and moved.full_path == f"{top.name}/b/alpha"
    gone = client.delete([moved], dry_run=True)
    assert (gone.folders, gone.files) == (1, 6)
    b.delete()
    with pytest.raises(NotFound):
        client.get_folder(b.id)
    with pytest.raises(NotFound):
        client.get_file(sent[0].id)


def test_files_content_download_changes_moves_datasets_and_deletes(
    client: Client, tmp_path: Path
) -> None:
    top = client.create_folder(unique("files"))
    other = top.create_subfolder("other")
    data = png(20, 10) + b"tail" * 1000
    [f] = top.upload([write(tmp_path / "x.png", data)])
    got = client.get_file(f.id)
    assert (got.size, got.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert b"".join(got.content()) == data
    assert b"".join(got.content(offset=10)) == data[10:]
    (tmp_path / "out").mkdir()
    written = got.download(tmp_path / "out")
    assert written == tmp_path / "out" / "x.png" and written.read_bytes() == data
    named = got.download(tmp_path / "copy.png")
    assert named.read_bytes() == data
    # A directory not there yet, said with its slash: made, the file goes in it.
    into = got.download(f"{tmp_path}/new/")
    assert into == tmp_path / "new" / "x.png" and into.read_bytes() == data

    # A download that stopped half-way goes on from there.
    partial = tmp_path / "resumed.png"
    (tmp_path / "resumed.png.part").write_bytes(data[:1000])
    seen: list[int] = []
    assert got.download(partial, progress=seen.append).read_bytes() == data
    assert sum(seen) == len(data) and seen[0] == 1000

    ds = client.create_dataset(unique("ds"))
    assert ds.add([got]) == 1
    assert [d.id for d in got.linked_datasets()] == [ds.id]
    assert [d.id for d in got.refresh().datasets] == [ds.id]
    ds.remove(got)
    assert got.linked_datasets() == [] and list(ds.files()) == []
    assert ds.add([got]) == 1
    changed = got.rename("y.png").set_metadata({"label": "cat"})
    assert (changed.name, changed.metadata) == ("y.png", {"label": "cat"})
    moved = changed.move_to(other)
    assert moved.folder_id == other.id and moved.folder().id == other.id
    moved.delete()
    with pytest.raises(NotFound):
        client.get_file(f.id)
    assert ds.refresh().file_count == 0


def test_a_large_file_goes_in_parts_and_an_interrupted_session_resumes(
    client: Client, tmp_path: Path
) -> None:
    top = client.create_folder(unique("large"))
    data = big_png(11 * MiB + 7)
    path = write(tmp_path / "big.png", data)
    seen: list[int] = []
    whole = top.upload_file(path, part_size=5 * MiB, progress=seen.append)
    assert (whole.size, whole.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert sum(seen) == len(data)

    # Interrupted after its first part: resumed, only the missing parts are sent.
    session = top.open_upload_session("again.png", len(data), part_size=5 * MiB)
    first = session.parts[0]
    assert httpx.put(first.url, content=data[: first.size], timeout=60).status_code == 200
    assert client.get_upload_session(session.id).bytes_stored == first.size
    sent: list[int] = []
    resumed = top.upload_file(path, name="again.png", session_id=session.id, progress=sent.append)
    assert resumed.sha256 == hashlib.sha256(data).hexdigest() and resumed.name == "again.png"
    assert sent[0] == first.size and sum(sent) == len(data)
    assert client.get_job(session.job_id).status == "done"

    # Driven by hand, and aborted.
    dropped = top.open_upload_session("dropped.png", len(data), part_size=5 * MiB)
    client.abort_upload_session(dropped.id)
    assert client.get_upload_session(dropped.id).status == "aborted"
    with pytest.raises(Conflict) as ended:
        client.complete_upload_session(dropped.id)
    assert ended.value.code == "session_ended"


def test_image_groups_sequences_and_dicom_series_with_their_job(
    client: Client, tmp_path: Path
) -> None:
    top = client.create_folder(unique("media"))
    images = [write(tmp_path / f"{i}.png", png(6, 4)) for i in range(3)]
    group = top.upload_image_group(images, "cats")
    assert group.file.kind == "image_group" and group.folder.name == "cats (images)"
    assert group.file.group is not None and len(group.file.group.file_ids) == 3
    seq = top.upload_image_group(images, "walk", sequence=True)
    assert seq.file.kind == "image_sequence"
    with pytest.raises(UnsupportedContent) as refused:
        top.upload_image_group([write(tmp_path / "x.txt", b"not an image\n")], "bad")
    assert refused.value.code == "not_an_image"

    slices = [write(tmp_path / f"s{i}.dcm", b) for i, b in enumerate(ct_series(4, series=77))]
    job = top.upload_dicom(slices)
    moves: list[tuple[str, int, int]] = []
    done = job.wait(progress=lambda j: moves.append((j.status, j.progress.done, j.progress.total)))
    assert done.status == "done" and moves[-1] == ("done", 4, 4)
    [series] = done.files
    assert series.kind == "dicom_series" and series.dicom and series.dicom.instances == 4
    assert series.refresh().id == series.id  # a job's files are bound to the client too
    assert client.wait_for_job(job.id).status == "done"

    # Downloaded, a series is a directory of its instances as sent, named by their UIDs.
    sent = {pydicom.dcmread(p).SOPInstanceUID: p.read_bytes() for p in slices}
    written = series.download(f"{tmp_path}/dl/")
    assert written == tmp_path / "dl" / series.name and written.is_dir()
    assert {p.name: p.read_bytes() for p in written.iterdir()} == {
        f"{uid}.dcm": body for uid, body in sent.items()
    }
    # The series extended since it was read: what comes is not what it said, and that
    # is said rather than passed off as it.
    fifth = write(tmp_path / "s4.dcm", ct_series(5, series=77)[4])
    assert top.upload_dicom([fifth]).wait().status == "done"
    with pytest.raises(FilesError) as changed:
        series.download(f"{tmp_path}/stale/")
    assert changed.value.code == "checksum_mismatch"
    assert len(list(series.refresh().download(f"{tmp_path}/fresh/").glob("*.dcm"))) == 5


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    server = start_moto(tmp_path_factory.mktemp("client-bucket") / "moto.log")
    try:
        server.auth(False)
        s3 = server.minio()
        s3.make_bucket("client-e2e")
        import io

        for i in range(3):
            body = png(5, 5 + i)
            s3.put_object("client-e2e", f"cats/{i}.png", io.BytesIO(body), len(body))
        yield server
    finally:
        server.stop()


def test_a_file_downloaded_into_a_directory_never_writes_over_another(
    client: Client, tmp_path: Path
) -> None:
    """Before: `a:b.png`, then `a_b.png` (both `a_b.png` on a disk) downloaded into one
    directory: the second wrote over the first. Now numbered, as `files download`
    numbers a folder's."""
    top = client.create_folder(unique("clash"))
    colon, plain = top.upload(
        [
            write(tmp_path / "in" / "a:b.png", png(3, 3)),
            write(tmp_path / "in" / "a_b.png", png(4, 4)),
        ]
    )
    out = tmp_path / "out"
    out.mkdir()
    first, second = colon.download(out), plain.download(out)
    assert (first.name, second.name) == ("a_b.png", "a_b (2).png")
    assert first.read_bytes() == png(3, 3) and second.read_bytes() == png(4, 4)
    # Again: each is found where it is, neither written again nor copied.
    assert (colon.download(out), plain.download(out)) == (first, second)
    assert sorted(p.name for p in out.iterdir()) == ["a_b (2).png", "a_b.png"]
    # A file's path given is written over, as asked.
    assert plain.download(first) == first and first.read_bytes() == png(4, 4)


async def test_same_named_files_downloaded_side_by_side_get_a_name_each(
    platform: Stack, tmp_path: Path
) -> None:
    """Before: two files named `a.png` downloaded at once into one directory both took
    `a.png` and wrote one `a.png.part`: one's bytes under the other's name, or both
    spliced. Now each is written through its own `.part` and takes a name free when it
    is done."""
    bodies = [big_png(3 * MiB), big_png(3 * MiB)]
    async with AsyncClient(platform.gateway_url, api_key=ADMIN_KEY) as c:
        top = await c.create_folder(unique("side"))
        files = []
        for n, body in enumerate(bodies):
            sub = await top.create_subfolder(f"f{n}")
            [f] = await sub.upload([write(tmp_path / f"in{n}" / "a.png", body)])
            files.append(f)
        out = tmp_path / "out"
        out.mkdir()
        paths = await asyncio.gather(*(f.download(out) for f in files))
        assert sorted(p.name for p in paths) == ["a (2).png", "a.png"]
        assert [p.read_bytes() == body for p, body in zip(paths, bodies, strict=True)] == [
            True,
            True,
        ]
        assert sorted(p.name for p in out.iterdir()) == ["a (2).png", "a.png"]
        # Again: each is found where it is.
        assert await asyncio.gather(*(f.download(out) for f in files)) == paths
        await top.delete()


def test_another_files_part_is_never_resumed_into(client: Client, tmp_path: Path) -> None:
    """Before: X's download into a directory stopped (its `a.png.part` there), then Y, also
    `a.png`, went on from X's bytes: a checksum mismatch (and X's part deleted), or, for
    an image group (no sha256 of its content), a file spliced of both."""
    top = client.create_folder(unique("parts"))
    x_body, y_body = png(5, 5) + b"x" * 5000, png(6, 6) + b"y" * 5000
    [x] = top.create_subfolder("x").upload([write(tmp_path / "x" / "a.png", x_body)])
    [y] = top.create_subfolder("y").upload([write(tmp_path / "y" / "a.png", y_body)])
    out = tmp_path / "out"
    out.mkdir()
    # X's download stopped half-way: its own `.part` holds half its bytes.
    part_of(out, "a.png", x.id).write_bytes(x_body[:3000])
    assert y.download(out) == out / "a.png" and (out / "a.png").read_bytes() == y_body
    # X goes on from its own part (counted from there), under the next name.
    seen: list[int] = []
    assert x.download(out, progress=seen.append) == out / "a (2).png"
    assert (out / "a (2).png").read_bytes() == x_body and seen[0] == 3000
    assert not part_of(out, "a.png", x.id).exists()
    # A name being written through its `.part` (a download to that path: locked) is
    # taken too.
    (out / "b.png.part").write_bytes(x_body[:3000])
    [z] = top.create_subfolder("z").upload([write(tmp_path / "z" / "b.png", y_body)])
    with open(out / "b.png.part", "rb") as writing:
        fcntl.flock(writing, fcntl.LOCK_EX)
        assert z.download(out) == out / "b (2).png"
    assert (out / "b (2).png").read_bytes() == y_body
    assert (out / "b.png.part").read_bytes() == x_body[:3000]
    # An image group (not checked by a sha256) is not spliced from another's part.
    images = [write(tmp_path / "g" / f"{i}.png", png(4 + i, 4)) for i in range(2)]
    group = top.upload_image_group(images, "g").file
    (out / "g.png.part").write_bytes(x_body[:3000])
    with open(out / "g.png.part", "rb") as writing:
        fcntl.flock(writing, fcntl.LOCK_EX)
        got = group.download(out)
    assert got == out / "g (2).png" and got.read_bytes() == images[0].read_bytes()
    # A dead run's `.part` (nobody's lock) keeps no name: the next file of it takes it.
    [w] = top.create_subfolder("w").upload([write(tmp_path / "w" / "c.png", y_body)])
    (out / "c.png.part").write_bytes(x_body[:3000])
    assert w.download(out) == out / "c.png" and (out / "c.png").read_bytes() == y_body


def test_one_file_downloaded_again_while_it_downloads_to_one_place_is_busy(
    platform: Stack, client: Client, tmp_path: Path
) -> None:
    """Before: a second download of a file, begun while the first was writing its `.part`,
    went on from the `.part`'s size and appended to it: a file larger than the one asked
    for returned as a success (its checksum taken of what it received, not of the disk),
    or the other download's `.part` gone under it. Now the second is `download_busy`,
    and the first's file is whole."""
    body = big_png(3 * MiB)
    [f] = client.create_folder(unique("twice")).upload([write(tmp_path / "in" / "a.png", body)])
    (tmp_path / "dir").mkdir()
    for into in (tmp_path / "dir", tmp_path / "path" / "a.png"):
        second: list[Path | FilesError] = []

        def meanwhile(_: int, into: Path = into, second: list[Path | FilesError] = second) -> None:
            # Once the first has bytes, the second, another client's (as another run's).
            if not second:
                with Client(platform.gateway_url, api_key=ADMIN_KEY) as other:
                    try:
                        second.append(other.get_file(f.id).download(into))
                    except FilesError as error:
                        second.append(error)

        path = f.download(into, progress=meanwhile)
        [busy] = second
        assert isinstance(busy, FilesError) and busy.code == "download_busy"
        assert path.name == "a.png" and path.read_bytes() == body
        assert [p.name for p in path.parent.iterdir()] == ["a.png"]


def test_a_series_takes_no_directory_holding_other_files(client: Client, tmp_path: Path) -> None:
    """Before: a DICOM series downloaded into a directory took any directory of its name
    as its own, another series' or a user's: its instances went in among theirs."""
    top = client.create_folder(unique("series"))
    slices = [write(tmp_path / f"s{i}.dcm", b) for i, b in enumerate(ct_series(2, series=94))]
    [series] = top.upload_dicom(slices).wait().files
    out = tmp_path / "out"
    write(out / series.name / "notes.txt", b"mine")
    written = series.download(out)
    assert written == out / numbered(series.name, 2, directory=True)
    assert sorted(p.name for p in (out / series.name).iterdir()) == ["notes.txt"]
    assert len(list(written.glob("*.dcm"))) == 2
    # Again: its own directory (only its instances) is kept; an empty one is taken.
    assert series.download(out) == written
    (out / series.name / "notes.txt").unlink()
    assert series.download(out) == out / series.name


def test_a_group_downloads_as_its_first_image_named_with_its_extension(
    client: Client, platform: Stack, tmp_path: Path
) -> None:
    """A group's content is its first image: before, it came as `cats` (the group's
    name), which no OS opens as an image."""
    top = client.create_folder(unique("named"))
    images = [write(tmp_path / "in" / f"{i}.png", png(6, 4) + bytes([i])) for i in range(3)]
    jpeg = tmp_path / "in" / "j.jpg"
    Image.new("RGB", (5, 4)).save(jpeg, "JPEG")
    made = {
        "cats": top.upload_image_group(images, "cats").file,
        "walk.v2": top.upload_image_group(images, "walk.v2", sequence=True).file,
        "shot.JPEG": top.upload_image_group([jpeg], "shot.JPEG").file,
    }
    expected = {"cats": "cats.png", "walk.v2": "walk.v2.png", "shot.JPEG": "shot.JPEG"}
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for name, file in made.items():
        got = file.download(f"{tmp_path / 'out'}/")
        assert got.name == expected[name], got
        first = jpeg if name == "shot.JPEG" else images[0]
        assert got.read_bytes() == first.read_bytes()
        answer = httpx.get(f"{platform.gateway_url}/v1/files/{file.id}/content", headers=headers)
        assert answer.status_code == 200 and answer.content == first.read_bytes()
        assert answer.headers["content-type"] == file.mime_type
        assert answer.headers["content-disposition"] == (
            f"attachment; filename=\"{expected[name]}\"; filename*=UTF-8''{expected[name]}"
        )
    # A DICOM series' content is one of its instances; its name ends with its UID's last
    # number (an extension to the OS): it is downloaded as `.dcm`.
    slices = [write(tmp_path / f"s{i}.dcm", b) for i, b in enumerate(ct_series(2, series=93))]
    [series] = top.upload_dicom(slices).wait().files
    answer = httpx.get(f"{platform.gateway_url}/v1/files/{series.id}/content", headers=headers)
    assert answer.headers["content-type"] == "application/dicom"
    assert answer.headers["content-disposition"].endswith(
        f"filename*=UTF-8''{urllib.parse.quote(series.name, safe='')}.dcm"
    ), answer.headers
    # A name of quotes, a semicolon, a backslash and non-ASCII letters: the plain
    # `filename` keeps ASCII only (the rest `_`), `filename*` the whole name, encoded.
    [odd] = top.upload([write(tmp_path / 'q"uo\\te; é.png', png(3, 3))])
    answer = httpx.get(f"{platform.gateway_url}/v1/files/{odd.id}/content", headers=headers)
    assert answer.headers["content-disposition"] == (
        "attachment; filename=\"q_uo_te; _.png\"; filename*=UTF-8''q%22uo%5Cte%3B%20%C3%A9.png"
    )


def test_cloud_integrations_and_imports(client: Client, moto: MotoS3) -> None:
    lab = client.create_integration(
        unique("lab"),
        bucket="client-e2e",
        access_key=moto.access_key,
        secret_key=moto.secret_key,
        endpoint=moto.endpoint,
        region="us-east-1",
    )
    assert lab.bucket == "client-e2e" and "secret_key" not in lab.model_dump()
    assert client.get_integration(lab.id).name == lab.name
    assert lab.id in {i.id for i in client.list_integrations()}
    # Shared with a member, who may then use it; the list replaces the one before.
    ann = client.create_user(f"{unique('ann')}@example.com", "Ann")
    assert lab.share_with([ann]).shared_with == [ann.id]
    with Client(client.url, api_key=ann.api_key) as as_ann:
        assert lab.id in {i.id for i in as_ann.list_integrations()}
        assert client.share_integration(lab, []).shared_with == []
        assert lab.id not in {i.id for i in as_ann.list_integrations()}
    top = client.create_folder(unique("imported"))
    job = top.import_objects(lab, prefix="cats/").wait(timeout=60)
    assert job.status == "done" and sorted(f.name for f in job.files) == ["0.png", "1.png", "2.png"]
    assert all(f.source and f.source.type == "cloud" for f in job.files)
    keyed = top.import_objects(lab, keys=["cats/1.png"]).wait(timeout=60)
    assert [f.source.key for f in keyed.files if f.source] == ["cats/1.png"]
    # Kept while files imported through it are left (409, naming them).
    with pytest.raises(Conflict) as kept:
        lab.delete()
    assert kept.value.code == "integration_in_use"
    assert client.get_integration(lab.id).id == lab.id


def test_datasets_collaborators_users_keys_and_audit(client: Client, platform: Stack) -> None:
    email = f"{unique('ann')}@example.com"
    ann = client.create_user(email, "Ann")
    assert ann.api_key and ann.org_role == "member"
    assert email in {u.email for u in client.list_users()}
    assert client.me().org_role == "admin"

    top = client.create_folder(unique("shared"))
    listed = top.add_collaborators([email], "user")
    assert {(c.email, c.role) for c in listed} >= {(email, "user")}
    with Client(platform.gateway_url, api_key=ann.api_key) as as_ann:
        seen = as_ann.get_folder(top.id)
        assert seen.my_role == "user"
        with pytest.raises(Forbidden) as refused:
            seen.rename("mine")
        assert refused.value.details.get("role_needed") == "editor"
    changed = top.change_role(ann.id, "editor")
    assert changed.role == "editor"
    assert {c.email: c.role for c in top.collaborators()}[email] == "editor"
    top.remove_collaborator(ann.id)
    assert email not in {c.email for c in top.collaborators()}

    ds = client.create_dataset(unique("train"), description="first")
    assert ds.update(name="train2", description="second").description == "second"
    assert ds.id in {d.id for d in client.list_datasets()}
    shared = ds.share([email], "user")
    assert (ann.id, email, "Ann", "user") in {(c.user_id, c.email, c.name, c.role) for c in shared}
    assert ann.id in {c.user_id for c in ds.collaborators()}
    ds.unshare(ann.id)
    assert ann.id not in {c.user_id for c in ds.collaborators()}

    key = client.issue_key(ann)
    assert key.user_id == ann.id and key.api_key
    assert key.id in {k.id for k in client.list_keys(ann)}
    client.revoke_key(key.id)
    assert [k.revoked for k in client.list_keys(ann) if k.id == key.id] == [True]
    with (
        Client(platform.gateway_url, api_key=key.api_key) as revoked,
        pytest.raises(Unauthenticated),
    ):
        revoked.me()

    events = list(client.audit(subject=ds))
    assert events[0].type == "datasets.DatasetCreated" and events[0].subject_id == ds.id
    assert "datasets.DatasetRenamed" in {e.type for e in events} or len(events) > 1
    assert all(e.subject_id == ds.id for e in client.audit(subject=ds.id, type=events[0].type))
    ds.delete()
    with pytest.raises(NotFound):
        client.get_dataset(ds.id)


def test_errors_are_typed_with_the_api_code_message_and_details(
    client: Client, tmp_path: Path
) -> None:
    with pytest.raises(NotFound) as missing:
        client.get_folder(str(uuid.uuid4()))
    assert missing.value.code == "not_found" and missing.value.status == 404
    # A path that names nothing: the same error, though the client found it out.
    with pytest.raises(NotFound) as no_path:
        client.get_folder_by_path(f"{unique('nowhere')}/x")
    assert no_path.value.code == "not_found" and no_path.value.status == 404
    top = client.create_folder(unique("errors"))
    top.create_subfolder("x")
    with pytest.raises(Conflict) as taken:
        top.create_subfolder("X")
    assert taken.value.code == "name_taken" and taken.value.message
    with pytest.raises(Invalid) as bad:
        top.create_subfolder("a/b")
    assert bad.value.code == "invalid_name"
    with pytest.raises(UnsupportedContent) as refused:
        top.upload([write(tmp_path / "elf.bin", ELF)])
    assert refused.value.code == "unsupported_content"
    with pytest.raises(Unauthenticated):
        Client(client.url, api_key="files_wrong_key_000000000000000").me()
    nowhere = Client(f"http://127.0.0.1:{free_port()}", api_key="k", retries=Retries(3, 0.01, 0.02))
    with pytest.raises(Unavailable) as down:
        nowhere.me()
    assert down.value.code == "unreachable" and down.value.details["attempts"] == 3


def test_an_upload_stores_the_files_taken_and_names_each_refused_with_its_reason(
    client: Client, tmp_path: Path
) -> None:
    """`folder.upload([bad, good])`: before, the platform refused the whole request for
    the bad one and the client raised, so the good one was not stored either."""
    top = client.create_folder(unique("mixed"))
    paths = [
        write(tmp_path / "elf.bin", ELF),
        write(tmp_path / "a.png", png(3, 3)),
        write(tmp_path / "nul.png", png(4, 4)),
        write(tmp_path / "b.png", png(5, 5)),
    ]
    with pytest.raises(UploadRefused) as refused:
        top.upload(paths, metadata={"nul.png": {"note": "a\x00b"}, "b.png": {"split": "train"}})
    error = refused.value
    # The first refusal's own type and code: an `except UnsupportedContent` still holds.
    assert isinstance(error, UnsupportedContent) and error.code == "unsupported_content"
    assert [(f.name, f.metadata) for f in error.uploaded] == [
        ("a.png", {}),
        ("b.png", {"split": "train"}),
    ]
    assert [(r.file.name, r.code, r.status) for r in error.refused] == [
        ("elf.bin", "unsupported_content", 415),
        ("nul.png", "invalid_metadata", 422),
    ]
    assert "not a kind of file we accept" in error.refused[0].message
    assert "'nul.png'" in error.refused[1].message
    assert "2 of 4 files refused" in error.message, error.message
    assert [f.name for f in top.files()] == ["a.png", "b.png"]
    # All refused: nothing stored, the same error.
    with pytest.raises(UploadRefused) as all_refused:
        top.upload([paths[0]])
    assert all_refused.value.uploaded == [] and len(all_refused.value.refused) == 1
    # `upload_tree` without keep_going raises the same, after storing the others.
    other = client.create_folder(unique("mixed-tree"))
    with pytest.raises(UploadRefused) as in_tree:
        other.upload_tree(
            {
                (): [LocalFile.at(paths[0]), LocalFile.at(paths[1])],
                ("sub",): [LocalFile.at(p) for p in paths[2:]],
            }
        )
    assert sorted(f.name for f in in_tree.value.uploaded) == ["a.png", "b.png", "nul.png"]
    assert [r.file.name for r in in_tree.value.refused] == ["elf.bin"]


class Counted(httpx.HTTPTransport):
    """The real transport, counting the multipart uploads sent."""

    def __init__(self) -> None:
        super().__init__()
        self.uploads = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/files"):
            self.uploads += 1
        return super().handle_request(request)


def test_large_metadata_goes_in_requests_ingest_takes_and_refusals_in_one_round(
    platform: Stack, tmp_path: Path
) -> None:
    """Before: 90 files with 50 KB of metadata each (an embedding) were one request whose
    `metadata` field (4.5 MB) ingest refused naming no file, so the upload raised
    `TooLarge` and stored nothing; and each file whose metadata ingest refused took a
    round of its own, the whole batch sent again each time."""
    counted = Counted()
    http = httpx.Client(transport=counted, timeout=120)
    with Client(platform.gateway_url, api_key=ADMIN_KEY, http=http) as c:
        top = c.create_folder(unique("embedded"))
        image = png(3, 3)
        paths = [write(tmp_path / "e" / f"{n}.png", image) for n in range(90)]
        vector = f"vec{uuid.uuid4().hex[:8]}"  # a key no schema types
        embedding = [round(0.1 + n / 7919, 6) for n in range(5000)]
        sent = top.upload(paths, metadata={p.name: {vector: embedding} for p in paths})
        assert [f.name for f in sent] == [p.name for p in paths]
        assert sent[-1].metadata == {vector: embedding}
        assert counted.uploads == 2
        assert len(list(top.files())) == 90

        other = c.create_folder(unique("refused-at-once"))
        names = ["a.png", "b.png", "c.png", "d.png", "e.png"]
        paths = [write(tmp_path / "r" / n, png(3, 3)) for n in names]
        counted.uploads = 0
        bad = {"note": "a\x00b"}
        with pytest.raises(UploadRefused) as refused:
            other.upload(paths, metadata={"b.png": bad, "c.png": bad, "e.png": bad})
        # One request refused, naming all three; one more with the others.
        assert counted.uploads == 2
        error = refused.value
        assert [f.name for f in error.uploaded] == ["a.png", "d.png"]
        assert [(r.file.name, r.code, r.status) for r in error.refused] == [
            (n, "invalid_metadata", 422) for n in ("b.png", "c.png", "e.png")
        ]
        assert error.refused[1].message.startswith("file 'c.png': ")
        # The API's details, each refusal's own and the first's at the top as before.
        assert [r.details["name"] for r in error.refused] == ["b.png", "c.png", "e.png"]
        assert error.details["name"] == "b.png"
        assert [r["details"]["name"] for r in error.details["refused"]] == [
            "b.png",
            "c.png",
            "e.png",
        ]
        # A file whose metadata alone passes the field's 4 MiB (refused naming no file):
        # before, the upload raised `TooLarge`; now that file is refused, the others kept.
        third = c.create_folder(unique("too-large-alone"))
        with pytest.raises(UploadRefused) as alone:
            third.upload(paths[:3], metadata={"b.png": {"blob": "x" * (5 * MiB)}})
        assert [f.name for f in alone.value.uploaded] == ["a.png", "c.png"]
        assert [(r.file.name, r.code, r.status) for r in alone.value.refused] == [
            ("b.png", "metadata_too_large", 413)
        ]


def test_files_refused_by_name_are_named_in_one_answer_by_the_callers_places(
    platform: Stack, tmp_path: Path
) -> None:
    """Before: a refused name named one file, so a batch of 300 with 100 bad names was
    sent 101 times; and a refusal's `part` counted the files of the batch sent again,
    not the caller's. Now the client refuses those names itself (the platform's rule),
    so the rest go in one request; ingest names them all in one answer too
    (tests/e2e/test_files.py)."""
    counted = Counted()
    http = httpx.Client(transport=counted, timeout=120)
    with Client(platform.gateway_url, api_key=ADMIN_KEY, http=http) as c:
        top = c.create_folder(unique("bad-names"))
        image = png(2, 2)
        # A right-to-left override: a disk takes it, the platform does not.
        names = [f"bad\u202e{n}.png" if n % 3 == 1 else f"{n}.png" for n in range(300)]
        paths = [write(tmp_path / "n" / name, image) for name in names]
        with pytest.raises(UploadRefused) as refused:
            top.upload(paths)
        assert counted.uploads == 1
        error = refused.value
        assert [f.name for f in error.uploaded] == [n for n in names if "\u202e" not in n]
        bad = [(n, name) for n, name in enumerate(names) if "\u202e" in name]
        assert [(r.index, r.file.name, r.code) for r in error.refused] == [
            (n, name, "invalid_name") for n, name in bad
        ]
        assert {r.status for r in error.refused} == {None}  # refused by the client
        assert [(r["index"], r["path"]) for r in error.details["refused"]] == [
            (n, str(tmp_path / "n" / name)) for n, name in bad
        ]
        assert len(list(top.files())) == 200

        # A name refused, then content in the batch sent again: the content's refusal
        # names the caller's file, its place in the list given (not in the batch re-sent).
        other = c.create_folder(unique("bad-name-then-content"))
        mixed = [
            write(tmp_path / "m" / "a\u202e.png", image),
            write(tmp_path / "m" / "b.png", image),
            write(tmp_path / "m" / "elf.bin", ELF),
            write(tmp_path / "m" / "c.png", image),
        ]
        counted.uploads = 0
        with pytest.raises(UploadRefused) as both:
            other.upload(mixed)
        assert counted.uploads == 2
        assert [f.name for f in both.value.uploaded] == ["b.png", "c.png"]
        assert [(r.index, r.file.path, r.code) for r in both.value.refused] == [
            (0, mixed[0], "invalid_name"),
            (2, mixed[2], "unsupported_content"),
        ]
        assert both.value.refused[1].details["part"] == 3


class Flaky(httpx.HTTPTransport):
    """The real transport, with the first attempt of each write failing before it is
    sent, and every request's headers kept."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[httpx.Request] = []
        self.failed: set[str] = set()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        key = request.headers.get("idempotency-key")
        if key and key not in self.failed:
            self.failed.add(key)
            raise httpx.ConnectError("refused, once", request=request)
        return super().handle_request(request)


def test_writes_are_retried_under_one_idempotency_key_and_reads_carry_the_token(
    platform: Stack,
) -> None:
    flaky = Flaky()
    with Client(
        platform.gateway_url,
        api_key=ADMIN_KEY,
        retries=Retries(4, 0.01, 0.05),
        http=httpx.Client(transport=flaky, timeout=60),
    ) as c:
        top = c.create_folder(unique("retried"))
        posts = [r for r in flaky.seen if r.method == "POST"]
        assert len(posts) == 2
        assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
        read = c.get_folder(top.id)
        assert read.id == top.id
        token = flaky.seen[-1].headers["files-consistency"]
        assert "catalog:" in token
        top.rename("renamed-" + top.name)
        after = c.get_folder(top.id)
        assert after.name.startswith("renamed-")
        newer = flaky.seen[-1].headers["files-consistency"]
        catalog = {s: int(p) for s, p in (x.split(":") for x in newer.split(","))}["catalog"]
        assert catalog > {s: int(p) for s, p in (x.split(":") for x in token.split(","))}["catalog"]
    # Without read-your-writes, reads send no token.
    plain = httpx.Client(transport=Flaky(), timeout=60)
    with Client(platform.gateway_url, api_key=ADMIN_KEY, read_your_writes=False, http=plain) as c:
        c.get_folder(top.id)
        assert "files-consistency" not in plain._transport.seen[-1].headers  # type: ignore[attr-defined]


async def test_the_async_client_does_the_same(platform: Stack, tmp_path: Path) -> None:
    pics = [write(tmp_path / f"{i}.png", png(2 + i, 2)) for i in range(3)]
    async with AsyncClient(platform.gateway_url, api_key=ADMIN_KEY) as c:
        top = await c.create_folder(unique("async"))
        sub = await top.create_subfolder("day1")
        sent = await sub.upload(pics)
        assert [f.name for f in sent] == ["0.png", "1.png", "2.png"]
        assert isinstance(await c.resolve(f"{top.name}/day1"), Folder)
        assert [i.name async for i in sub.items(page_size=2)] == ["0.png", "1.png", "2.png"]
        hits = [h async for h in c.search(top.name)]
        assert [h.id for h in hits] == [top.id]
        chunks = [c async for c in sent[0].content()]
        assert b"".join(chunks) == pics[0].read_bytes()
        path = await sent[1].download(tmp_path / "one.png")
        assert path.read_bytes() == pics[1].read_bytes()
        big = write(tmp_path / "big.png", big_png(6 * MiB))
        parted = await sub.upload_file(big, part_size=5 * MiB)
        assert parted.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
        ds = await c.create_dataset(unique("ads"), synced_folder=top)
        assert (await ds.refresh()).file_count == 4
        with pytest.raises(NotFound):
            await c.get_file(str(uuid.uuid4()))
        other = await top.create_subfolder("day2")
        with pytest.raises(UploadRefused) as refused:
            await other.upload(
                [write(tmp_path / "elf.bin", ELF), write(tmp_path / "ok.png", png())]
            )
        assert [f.name for f in refused.value.uploaded] == ["ok.png"]
        assert [r.code for r in refused.value.refused] == ["unsupported_content"]
        await top.delete()


class Unlisted(httpx.HTTPTransport):
    """The platform, except that a session's first `unknown_for` reads answer as when the
    store did not list its parts in time: `parts_known: false`, none stored, a URL for
    every part (those it was opened with). Counts the parts PUT."""

    def __init__(self, opened: dict[str, object], unknown_for: int) -> None:
        super().__init__()
        self.opened, self.unknown_for = opened, unknown_for
        self.reads = self.puts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "PUT":
            self.puts += 1
        if request.method != "GET" or request.url.path != f"/v1/uploads/{self.opened['id']}":
            return response
        self.reads += 1
        if self.reads > self.unknown_for:
            return response
        response.read()
        unknown = response.json() | {"parts_known": False, "parts_stored": [], "bytes_stored": 0}
        return httpx.Response(200, json=unknown | {"parts": self.opened["parts"]})


@pytest.mark.parametrize("unknown_for", [2, 100])
def test_a_session_resumed_while_its_parts_are_unknown_is_read_again_before_sending(
    client: Client,
    platform: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    unknown_for: int,
) -> None:
    """Read again after a short wait, only the parts missing are sent once the store
    lists them; while it never does (past the reads), every part is sent again, and the
    file is stored whole all the same (a part sent again replaces the same bytes)."""
    from files_client import transfer

    monkeypatch.setattr(transfer, "UNKNOWN_PARTS_WAIT_S", 0.05)
    top = client.create_folder(unique("unlisted"))
    data = big_png(11 * MiB + 7)
    path = write(tmp_path / "big.png", data)
    session = top.open_upload_session("big.png", len(data), part_size=5 * MiB)
    first = session.parts[0]
    assert httpx.put(first.url, content=data[: first.size], timeout=60).status_code == 200
    opened = {"id": session.id, "parts": [p.model_dump() for p in session.parts]}
    unlisted = Unlisted(opened, unknown_for)
    http = httpx.Client(transport=unlisted, timeout=60)
    with Client(platform.gateway_url, api_key=ADMIN_KEY, http=http) as c:
        sent: list[int] = []
        stored = c.get_folder(top.id).upload_file(path, session_id=session.id, progress=sent.append)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    if unknown_for == 2:
        assert (unlisted.reads, unlisted.puts) == (3, 2)
        assert sent[0] == first.size and sum(sent) == len(data)
    else:
        assert (unlisted.reads, unlisted.puts) == (1 + transfer.UNKNOWN_PARTS_READS, 3)
        assert sum(sent) == len(data)
