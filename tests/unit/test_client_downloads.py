"""Downloads to disk against fake answers: two downloads of one file at once, the
`.part` files a run leaves, how a series' directory and a folder's names are taken."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import files_client
import httpx
import pytest
from files_client import transfer
from files_client._core import NextChunk, Send
from files_client._drivers import SyncDriver
from files_client.api import Folder
from files_client.cli import _walk
from files_client.errors import FilesError

DATA = bytes(range(256)) * 2048  # 512 KiB, eight answers' chunks
CHUNK = 65536


def _file(data: bytes = DATA, n: int = 1) -> dict[str, Any]:
    return {
        "id": f"3f1c2a9e-0000-4000-8000-00000000000{n}",
        "name": "a.bin",
        "kind": "image",
        "folder_id": "f",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _session() -> Any:
    return files_client.Client("http://files.test", api_key="k")._session


def _stepped(op: Any, data: bytes, asked: list[int]) -> Iterator[None]:
    """An op run against answers serving `data` (from a Range's offset), pausing before
    each chunk so that two ops can be interleaved; its result (or error) is the
    generator's return value."""
    chunks: dict[int, list[bytes]] = {}
    try:
        step = next(op)
    except StopIteration as done:
        return done.value
    while True:
        try:
            if isinstance(step, Send):
                rng = step.call.headers.get("Range")
                off = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0  # type: ignore[union-attr]
                asked.append(off)
                answer = httpx.Response(
                    206 if off else 200, request=httpx.Request("GET", step.call.url)
                )
                chunks[id(answer)] = [data[i : i + CHUNK] for i in range(off, len(data), CHUNK)]
                step = op.send(answer)
            elif isinstance(step, NextChunk):
                left = chunks[id(step.response)]
                yield
                step = op.send(left.pop(0) if left else b"")
            else:
                step = op.send(None)
        except StopIteration as done:
            return done.value


def _run(op: Any, data: bytes = DATA, asked: list[int] | None = None) -> Any:
    steps = _stepped(op, data, [] if asked is None else asked)
    try:
        while True:
            next(steps)
    except StopIteration as done:
        return done.value


@pytest.mark.parametrize("explicit", [False, True], ids=["into_a_directory", "to_a_path"])
def test_a_second_download_of_a_file_being_downloaded_is_busy(
    tmp_path: Path, explicit: bool
) -> None:
    # The second began long after the first made its `.part`: it used to resume from
    # its size and append, and the first returned a file larger than the one asked for.
    file = _file()

    def op() -> Any:
        if explicit:
            return transfer.download(_session(), file, tmp_path / "a.bin")
        return transfer.download_into(_session(), file, tmp_path, "a.bin")

    first = _stepped(op(), DATA, [])
    for _ in range(3):
        next(first)
    with pytest.raises(FilesError) as busy:
        _run(op())
    assert busy.value.code == "download_busy"
    try:
        while True:
            next(first)
    except StopIteration as done:
        assert done.value == tmp_path / "a.bin"
    assert (tmp_path / "a.bin").read_bytes() == DATA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


@pytest.mark.parametrize("explicit", [False, True], ids=["into_a_directory", "to_a_path"])
def test_the_part_of_a_run_that_died_is_resumed(tmp_path: Path, explicit: bool) -> None:
    file = _file()
    if explicit:
        part = tmp_path / "a.bin.part"
        op = transfer.download(_session(), file, tmp_path / "a.bin")
    else:
        part = transfer.part_of(tmp_path, "a.bin", file["id"])
        op = transfer.download_into(_session(), file, tmp_path, "a.bin")
    part.write_bytes(DATA[:100_000])  # its lock died with it
    asked: list[int] = []
    assert _run(op, DATA, asked) == tmp_path / "a.bin"
    assert asked == [100_000]
    assert (tmp_path / "a.bin").read_bytes() == DATA
    assert not part.exists()


def test_a_stopped_runs_hidden_part_goes_when_the_name_holds_the_file(tmp_path: Path) -> None:
    file = _file()
    part = transfer.part_of(tmp_path, "a.bin", file["id"])
    part.write_bytes(DATA[:400])
    (tmp_path / "a.bin").write_bytes(DATA)  # got meanwhile, by another run
    asked: list[int] = []
    assert _run(transfer.download_into(_session(), file, tmp_path, "a.bin"), DATA, asked) == (
        tmp_path / "a.bin"
    )
    assert asked == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_hidden_part_being_written_is_left_to_its_download(tmp_path: Path) -> None:
    file = _file()
    part = transfer.part_of(tmp_path, "a.bin", file["id"])
    part.write_bytes(DATA[:400])
    (tmp_path / "a.bin").write_bytes(DATA)
    with open(part, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        _run(transfer.download_into(_session(), file, tmp_path, "a.bin"))
        assert part.exists()


def test_only_a_path_download_in_progress_keeps_its_name_from_a_directory_download(
    tmp_path: Path,
) -> None:
    # A dead `files download a.bin`'s `.part` used to send every later download of
    # another `a.bin` into that directory to `a (2).bin`, for ever.
    other = b"y" * 1000
    (tmp_path / "a.bin.part").write_bytes(b"zz")
    into = transfer.download_into(_session(), _file(other, 2), tmp_path, "a.bin")
    assert _run(into, other) == tmp_path / "a.bin"
    (tmp_path / "a.bin").unlink()
    # One being written (locked) still keeps it.
    with open(tmp_path / "a.bin.part", "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        into = transfer.download_into(_session(), _file(other, 2), tmp_path, "a.bin")
        assert _run(into, other) == tmp_path / "a (2).bin"


def test_a_series_directory_is_claimed_when_it_is_placed(tmp_path: Path) -> None:
    # Made at once (mkdir, which one run alone succeeds in): placing it used to leave it
    # unmade until the retrieve began, and a second series of that name took it too.
    series = {"id": "s", "kind": "dicom_series", "folder_id": "f"}
    series["dicom"] = {"study_uid": "1.2", "series_uid": "1.2.3"}
    place = transfer._series_place(_session(), series, tmp_path / "out", "CT 1.2.3")
    assert _run(place) == tmp_path / "out" / "CT 1.2.3"
    assert (tmp_path / "out" / "CT 1.2.3").is_dir()
    # A file of that name is numbered past.
    (tmp_path / "out" / "CT 2.5").write_bytes(b"x")
    place = transfer._series_place(_session(), series, tmp_path / "out", "CT 2.5")
    assert _run(place) == tmp_path / "out" / "CT 2.5 (2)"


def test_a_folders_series_and_subfolders_are_numbered_as_directories(tmp_path: Path) -> None:
    # `files download` numbered them as files: `1.2.840.113619.2.55.3 (2).94`.
    def item(name: str, kind: str) -> Any:
        return SimpleNamespace(name=name, kind=kind, mime_type=None)

    sub = mock.Mock(spec=Folder)
    sub.name = "v1.2"
    folder = mock.Mock(spec=Folder)
    folder.items.return_value = [
        item("1.2.840.113619.2.55.3.94", "dicom_series"),
        item("1.2.840.113619.2.55.3.94", "dicom_series"),
        item("v1.2", "document"),
        sub,
        item("a.png", "image"),
        item("a.png", "image"),
    ]
    sub.items.return_value = [item("x", "image")]
    got = [p.relative_to(tmp_path).as_posix() for _, p in _walk(folder, tmp_path)]
    assert got == [
        "1.2.840.113619.2.55.3.94",
        "1.2.840.113619.2.55.3.94 (2)",
        "v1.2",
        "v1.2 (2)/x",
        "a.png",
        "a (2).png",
    ]


async def test_a_download_cancelled_lets_go_of_its_part_at_once(tmp_path: Path) -> None:
    """A download cancelled mid-body (a `wait_for` that timed out) kept its `.part`
    locked until the operation was collected, which the error's traceback put off: the
    retry in its `except TimeoutError:` was `download_busy` with itself."""
    import asyncio

    from files_client._drivers import AsyncDriver

    file = _file()
    stalled = asyncio.Event()

    async def first_chunk_then_stall() -> Any:
        yield DATA[:CHUNK]
        stalled.set()
        await asyncio.Event().wait()  # the rest never comes

    def stalling(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=first_chunk_then_stall())

    def whole(request: httpx.Request) -> httpx.Response:
        rng = request.headers.get("Range")
        off = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0  # type: ignore[union-attr]
        return httpx.Response(206 if off else 200, content=DATA[off:])

    async with httpx.AsyncClient(transport=httpx.MockTransport(stalling)) as http:
        running = asyncio.ensure_future(
            AsyncDriver(http).run(transfer.download_into(_session(), file, tmp_path, "a.bin"))
        )
        await asyncio.wait_for(stalled.wait(), 10)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        held = running  # as an `except` block's traceback would keep it
    async with httpx.AsyncClient(transport=httpx.MockTransport(whole)) as http:
        again = await AsyncDriver(http).run(
            transfer.download_into(_session(), file, tmp_path, "a.bin")
        )
    assert again == tmp_path / "a.bin" and again.read_bytes() == DATA
    assert held.cancelled()


def test_an_image_groups_file_not_to_be_written_over_is_compared_once_downloaded(
    tmp_path: Path,
) -> None:
    """An image group's content (its first image) is not checked by the group's sha256:
    without `overwrite`, what came is compared with what is there. Other bytes there are
    left as they are ("differs", no `.part` left); the same bytes are no refusal ("kept")."""
    group = {**_file(), "kind": "image_group", "sha256": "0" * 64}
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"my own edit")
    told: list[tuple[Path, str]] = []

    def tell(path: Path, what: str) -> None:
        told.append((path, what))

    op = transfer.download(_session(), group, dest, told=tell, overwrite=False)
    assert _run(op) == dest
    assert told == [(dest, "differs")]
    assert dest.read_bytes() == b"my own edit"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]

    dest.write_bytes(DATA)
    told.clear()
    assert _run(transfer.download(_session(), group, dest, told=tell, overwrite=False)) == dest
    assert told == [(dest, "kept")] and dest.read_bytes() == DATA
    # A file checked by its sha256 is not even asked for.
    dest.write_bytes(b"my own edit")
    told.clear()
    asked: list[int] = []
    op = transfer.download(_session(), _file(), dest, told=tell, overwrite=False)
    assert _run(op, DATA, asked) == dest
    assert asked == [] and told == [(dest, "differs")]


@pytest.mark.parametrize(
    ("kind", "meanwhile", "heard"),
    [
        ("image", b"saved by the person meanwhile", "differs"),
        ("image", DATA, "kept"),
        ("image_group", b"saved by the person meanwhile", "differs"),
        ("image_group", DATA, "kept"),
    ],
)
def test_a_file_made_at_the_path_during_the_download_is_not_written_over(
    tmp_path: Path, kind: str, meanwhile: bytes, heard: str
) -> None:
    """Without `overwrite`, the name is taken only where none is there once the bytes
    are in (a link, never a replace): what was checked before the download no longer
    holds at its end."""
    dest = tmp_path / "a.bin"
    told: list[tuple[Path, str]] = []
    file = {**_file(), "kind": kind}
    op = transfer.download(
        _session(), file, dest, told=lambda p, w: told.append((p, w)), overwrite=False
    )
    steps = _stepped(op, DATA, [])
    next(steps)  # begun: nothing was there when it looked
    dest.write_bytes(meanwhile)
    made = dest.stat().st_ino
    try:
        while True:
            next(steps)
    except StopIteration as done:
        assert done.value == dest
    assert dest.read_bytes() == meanwhile and dest.stat().st_ino == made
    assert told == [(dest, heard)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_image_groups_file_with_the_same_bytes_is_kept_not_rewritten(
    tmp_path: Path, overwrite: bool
) -> None:
    # It was written again and counted downloaded (with `overwrite`, "replaced").
    group = {**_file(), "kind": "image_group", "sha256": "0" * 64}
    dest = tmp_path / "a.bin"
    dest.write_bytes(DATA)
    was = dest.stat().st_ino
    told: list[tuple[Path, str]] = []
    op = transfer.download(
        _session(), group, dest, told=lambda p, w: told.append((p, w)), overwrite=overwrite
    )
    assert _run(op) == dest
    assert told == [(dest, "kept")] and dest.stat().st_ino == was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


@pytest.mark.parametrize("kind", ["image", "image_group"])
def test_a_dangling_link_at_the_path_is_not_taken_for_nothing_there(
    tmp_path: Path, kind: str
) -> None:
    # `is_file()` follows it: an image group's download replaced it silently.
    dest = tmp_path / "a.bin"
    dest.symlink_to(tmp_path / "elsewhere.bin")
    told: list[tuple[Path, str]] = []
    op = transfer.download(
        _session(),
        {**_file(), "kind": kind},
        dest,
        told=lambda p, w: told.append((p, w)),
        overwrite=False,
    )
    assert _run(op) == dest
    assert dest.is_symlink() and told == [(dest, "differs")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


class _AsWindows:
    """`os` as transfer.py sees it on Windows (pathlib still this system's)."""

    name = "nt"

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def test_an_image_groups_part_is_closed_before_it_is_removed(tmp_path: Path) -> None:
    """On Windows an open file cannot be removed: the `.part` of an image group whose
    bytes differ from what is there was removed while open (PermissionError there)."""
    group = {**_file(), "kind": "image_group", "sha256": "0" * 64}
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"my own edit")
    part = tmp_path / "a.bin.part"
    unlink = Path.unlink

    def as_windows_does(self: Path, missing_ok: bool = False) -> None:
        if self == part:
            for fd in Path("/proc/self/fd").iterdir():
                try:
                    held = Path(os.readlink(fd))
                except OSError:  # closed since it was listed
                    continue
                if held == part:
                    raise PermissionError(f"{self} is open")
        unlink(self, missing_ok)

    told: list[tuple[Path, str]] = []
    with (
        mock.patch.object(transfer, "os", _AsWindows()),
        mock.patch.object(Path, "unlink", as_windows_does),
    ):
        op = transfer.download(
            _session(), group, dest, told=lambda p, w: told.append((p, w)), overwrite=False
        )
        assert _run(op) == dest
    assert told == [(dest, "differs")] and dest.read_bytes() == b"my own edit"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def _series(
    instances: dict[str, bytes],
    asked: list[str] | None = None,
    alone: dict[str, bytes] | None = None,
) -> tuple[dict[str, Any], httpx.MockTransport]:
    """A DICOM series of these instances (SOP Instance UID: bytes, in slice order) and
    its folder's DICOMweb: QIDO-RS lists them, WADO-RS retrieves them (the series, or
    one instance, with the bytes `alone` has for it, if any: damaged in transit);
    `asked` hears the retrieves' paths."""
    digests = "\n".join(hashlib.sha256(b).hexdigest() for b in instances.values())
    series = {
        "id": "s",
        "name": "series",
        "kind": "dicom_series",
        "folder_id": "f",
        "size": sum(len(b) for b in instances.values()),
        "sha256": hashlib.sha256(digests.encode()).hexdigest(),
        "dicom": {"study_uid": "1.2", "series_uid": "1.2.3"},
    }
    url = "/v1/folders/f/dicomweb/studies/1.2/series/1.2.3"

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"{url}/instances":
            listed = [{"00080018": {"Value": [uid]}} for uid in instances]
            return httpx.Response(200, json=listed)
        if asked is not None:
            asked.append(request.url.path)
        one = request.url.path.removeprefix(f"{url}/instances/")
        assert request.url.path == url or one in instances
        wanted = {one: (alone or {}).get(one, instances[one])} if one in instances else instances
        body = b"".join(
            b"--B\r\nContent-Type: application/dicom\r\nContent-Location: "
            + f"{url}/instances/{uid}".encode()
            + b"\r\n\r\n"
            + data
            + b"\r\n"
            for uid, data in wanted.items()
        )
        kind = 'multipart/related; type="application/dicom"; boundary=B'
        return httpx.Response(200, content=body + b"--B--\r\n", headers={"content-type": kind})

    return series, httpx.MockTransport(answer)


INSTANCES = {f"1.2.3.{n}": f"instance {n}, as the platform has it".encode() for n in (1, 2, 3)}


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_series_download_that_stopped_goes_on_when_run_again(
    tmp_path: Path, overwrite: bool
) -> None:
    """Some of the series' own instances there (a run that stopped half-way, or the
    series extended since) is no refusal: the rest is downloaded."""
    series, platform = _series(INSTANCES)
    dest = tmp_path / "series"
    dest.mkdir()
    (dest / "1.2.3.1.dcm").write_bytes(INSTANCES["1.2.3.1"])
    told: list[tuple[Path, str]] = []
    op = transfer.download(
        _session(), series, dest, told=lambda p, w: told.append((p, w)), overwrite=overwrite
    )
    with httpx.Client(base_url="http://files.test", transport=platform) as http:
        assert SyncDriver(http).run(op) == dest
    assert told == []
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == {
        f"{uid}.dcm": data for uid, data in INSTANCES.items()
    }


@pytest.mark.parametrize(
    ("there", "why"),
    [
        ({"9.9.dcm": b"another series' instance"}, "not one of the series' instances"),
        (
            {f"{uid}.dcm": data for uid, data in INSTANCES.items()} | {"1.2.3.2.dcm": b"edit"},
            "all there, one changed",
        ),
        ({"1.2.3.1.dcm": INSTANCES["1.2.3.1"], "1.2.3.2.dcm": b"edit"}, "some there, one changed"),
    ],
)
def test_a_series_directory_holding_other_bytes_is_left_as_it_is(
    tmp_path: Path, there: dict[str, bytes], why: str
) -> None:
    """Without `overwrite`: a `.dcm` of no instance of the series, or all of them there
    with one changed, is refused before the retrieve; one changed among some of them is
    found as the series comes, left as it is, the rest of the series downloaded."""
    series, platform = _series(INSTANCES)
    dest = tmp_path / "series"
    dest.mkdir()
    for name, data in there.items():
        (dest / name).write_bytes(data)
    told: list[tuple[Path, str]] = []
    op = transfer.download(
        _session(), series, dest, told=lambda p, w: told.append((p, w)), overwrite=False
    )
    with httpx.Client(base_url="http://files.test", transport=platform) as http:
        assert SyncDriver(http).run(op) == dest
    assert told == [(dest, "differs")], why
    for name, data in there.items():
        assert (dest / name).read_bytes() == data, why
    assert not [p.name for p in dest.iterdir() if p.name.endswith(".part")], why
    if "1.2.3.1.dcm" in there and len(there) < len(INSTANCES):
        assert (dest / "1.2.3.3.dcm").read_bytes() == INSTANCES["1.2.3.3"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_only_the_instances_not_there_are_retrieved(tmp_path: Path, overwrite: bool) -> None:
    """Half of the series or more there: each other instance is retrieved alone, and
    the whole checked by the series' sha256 from the files there."""
    asked: list[str] = []
    series, platform = _series(INSTANCES, asked)
    dest, progress, told, error = _rest_of_series(tmp_path, series, platform, overwrite)
    assert error is None
    assert asked == ["/v1/folders/f/dicomweb/studies/1.2/series/1.2.3/instances/1.2.3.2"]
    assert told == [] and sum(progress) == series["size"]
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == {
        f"{uid}.dcm": data for uid, data in INSTANCES.items()
    }


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_edited_instance_among_some_is_found_by_the_whole_series(
    tmp_path: Path, overwrite: bool
) -> None:
    """One changed among those there: once the missing ones came alone the whole does
    not match (which instance differs, nothing tells: the API has no instance's sha256),
    so the series is retrieved whole, and the edit written over, or without `overwrite`
    left as it is and said."""
    url = "/v1/folders/f/dicomweb/studies/1.2/series/1.2.3"
    asked: list[str] = []
    series, platform = _series(INSTANCES, asked)
    dest, progress, told, error = _rest_of_series(
        tmp_path, series, platform, overwrite, first=b"my own edit"
    )
    assert error is None
    assert sum(progress) == series["size"]
    assert (dest / "1.2.3.2.dcm").read_bytes() == INSTANCES["1.2.3.2"]
    if overwrite:
        assert asked == [f"{url}/instances/1.2.3.2", url] and told == []
        assert (dest / "1.2.3.1.dcm").read_bytes() == INSTANCES["1.2.3.1"]
    else:
        assert asked == [f"{url}/instances/1.2.3.2", url] and told == [(dest, "differs")]
        assert (dest / "1.2.3.1.dcm").read_bytes() == b"my own edit"
    assert not [p.name for p in dest.iterdir() if p.name.endswith(".part")]


def _rest_of_series(
    tmp_path: Path,
    series: dict[str, Any],
    platform: httpx.MockTransport,
    overwrite: bool,
    first: bytes = INSTANCES["1.2.3.1"],
) -> tuple[Path, list[int], list[tuple[Path, str]], FilesError | None]:
    """`series` downloaded into a directory holding its first instance (as `first`
    has it) and its third."""
    dest = tmp_path / "series"
    dest.mkdir()
    (dest / "1.2.3.1.dcm").write_bytes(first)
    (dest / "1.2.3.3.dcm").write_bytes(INSTANCES["1.2.3.3"])
    progress: list[int] = []
    told: list[tuple[Path, str]] = []
    op = transfer.download(
        _session(),
        series,
        dest,
        progress.append,
        told=lambda p, w: told.append((p, w)),
        overwrite=overwrite,
    )
    with httpx.Client(base_url="http://files.test", transport=platform) as http:
        try:
            SyncDriver(http).run(op)
        except FilesError as error:
            return dest, progress, told, error
    return dest, progress, told, None


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_instance_damaged_in_transit_comes_again_with_the_series(
    tmp_path: Path, overwrite: bool
) -> None:
    """The missing instance received damaged: the whole does not match, the damaged
    file goes (no local file is blamed, "differs") and the series is retrieved whole."""
    url = "/v1/folders/f/dicomweb/studies/1.2/series/1.2.3"
    asked: list[str] = []
    series, platform = _series(INSTANCES, asked, alone={"1.2.3.2": b"damaged in transit"})
    dest, progress, told, error = _rest_of_series(tmp_path, series, platform, overwrite)
    assert error is None and told == []
    assert asked == [f"{url}/instances/1.2.3.2", url]
    assert sum(progress) == series["size"]
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == {
        f"{uid}.dcm": data for uid, data in INSTANCES.items()
    }


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize(
    "served",
    [
        INSTANCES | {"1.2.3.2": b"damaged on the platform"},
        INSTANCES | {"1.2.3.4": b"instance 4, added since the listing"},
    ],
    ids=["damaged", "extended meanwhile"],
)
def test_a_series_not_matching_its_sha256_is_a_checksum_mismatch(
    tmp_path: Path, overwrite: bool, served: dict[str, bytes]
) -> None:
    """What the platform serves does not make the series' sha256 (damaged, or the
    series extended since the listing): `checksum_mismatch`, not a local file said to
    differ."""
    series, _ = _series(INSTANCES)
    _, platform = _series(served)
    dest, _, told, error = _rest_of_series(tmp_path, series, platform, overwrite)
    assert error is not None and error.code == "checksum_mismatch"
    assert told == []
    for uid in ("1.2.3.1", "1.2.3.3"):
        assert (dest / f"{uid}.dcm").read_bytes() == INSTANCES[uid]
