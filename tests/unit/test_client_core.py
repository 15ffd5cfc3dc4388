"""files_client's pure parts: the routes it calls are the ones it declares (and checks
against /openapi.json), tokens merge, errors map to their types, names stay names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import files_client
import httpx
import pytest
from files_client import errors
from files_client._core import Consistency, Gather, Retries, Send, Sleep
from files_client.api import MAX_LOCAL_BYTES, local_name, safe_name, split_path
from files_client.cli import _kind_refused
from files_client.models import ROUTES, FileData
from files_client.transfer import (
    METADATA_BATCH_BYTES,
    METADATA_FIELD_LIMIT,
    NAME_BYTES,
    LocalFile,
    Refusal,
    _refused_in,
    batches,
    numbered,
    upload_in_parts,
)

from services.ingest.uploads import multipart
from shared.contracts import rules

SOURCES = Path(files_client.__file__).parent


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_route_the_client_calls_is_declared_in_routes() -> None:
    declared = {(m, _shape(p)) for m, p, _, _ in ROUTES}
    called: set[tuple[str, str]] = set()
    for source in ("api.py", "transfer.py"):
        text = (SOURCES / source).read_text()
        for method, path in re.findall(r'Call\(\s*"([A-Z]+)",\s*f?"(/v1/[^"]*)"', text):
            called.add((method, _shape(path.split("?")[0])))
        for path in re.findall(r'_(?:pages|after)\(\s*f?"(/v1/[^"]*)"', text):
            called.add(("GET", _shape(path)))
    assert called, "no calls found: the pattern no longer matches the sources"
    assert called - declared == set()
    # And nothing declared that the client never calls.
    assert declared - called == set()


def test_consistency_tokens_keep_the_newest_position_of_each_context() -> None:
    token = Consistency()
    assert token.header() == ""
    token.merge("catalog:5,acl:0,ingest:3")
    token.merge("catalog:4,datasets:9")
    token.merge(None)
    token.merge("garbage,:x,catalog:")
    assert token.header() == "catalog:5,datasets:9,ingest:3"


def test_retries_back_off_and_follow_retry_after() -> None:
    policy = Retries(attempts=5, first_delay_s=0.2, max_delay_s=1.0)
    assert 0.1 <= policy.delay(0) <= 0.2
    assert 0.5 <= policy.delay(10) <= 1.0
    asked = httpx.Response(503, headers={"Retry-After": "2"})
    assert policy.delay(0, asked) == 2.0


def test_errors_carry_the_api_code_message_and_details() -> None:
    request = httpx.Request("GET", "http://files/v1/folders/x")
    body = {"error": {"code": "name_taken", "message": "taken", "details": {"name": "a"}}}
    found = errors.error_from(httpx.Response(409, json=body, request=request))
    assert isinstance(found, errors.Conflict)
    assert (found.code, found.message, found.details, found.status) == (
        "name_taken",
        "taken",
        {"name": "a"},
        409,
    )
    kinds = {
        400: errors.Invalid,
        401: errors.Unauthenticated,
        403: errors.Forbidden,
        404: errors.NotFound,
        413: errors.TooLarge,
        415: errors.UnsupportedContent,
        422: errors.Invalid,
        503: errors.Unavailable,
        500: errors.ServerError,
    }
    for status, kind in kinds.items():
        assert type(errors.error_from(httpx.Response(status, json=body, request=request))) is kind
    bare = errors.error_from(httpx.Response(502, text="<html>bad gateway</html>", request=request))
    assert isinstance(bare, errors.Unavailable) and "HTTP 502" in bare.message


def test_paths_split_on_slashes_and_names_never_escape_a_directory() -> None:
    assert split_path("/scans//day1/a.png") == ["scans", "day1", "a.png"]
    assert [safe_name(n) for n in ("..", ".", "a\\b", "ok.png")] == ["__", "_", "a_b", "ok.png"]


def test_names_are_the_same_on_every_os_and_none_escapes_a_windows_directory(
    tmp_path: Path,
) -> None:
    """Before, `C:evil.exe` stayed as it was: on Windows, `out / "C:evil.exe"` is a path
    on drive C (outside `-o`); `CON` or `nul.txt` opened the device; a trailing dot was
    dropped by Windows (two names became one)."""
    named = {
        "C:evil.exe": "C_evil.exe",
        'a<b>c"d|e?f*g.txt': "a_b_c_d_e_f_g.txt",
        "bell\x07\ttab": "bell__tab",
        "a/b": "a_b",
        "CON": "_CON",
        "nul.txt": "_nul.txt",
        "Com1.tar.gz": "_Com1.tar.gz",
        "LPT9 .log": "_LPT9 .log",
        "conx.txt": "conx.txt",
        "COM10": "COM10",
        "notes. . ": "notes",
        "...": "_",
        "ok.png": "ok.png",
    }
    assert {n: safe_name(n) for n in named} == named
    # Within 255 bytes on disk while it downloads (`.part`) and numbered as a name taken
    # twice, cut at a character, the extension kept.
    long = safe_name("é" * 299 + ".png")
    assert len(long.encode()) <= MAX_LOCAL_BYTES and long.endswith("é.png"), long
    cut = safe_name("x" * 300 + ".png")
    assert len(cut.encode()) == MAX_LOCAL_BYTES
    for on_disk in (cut + ".part", cut.replace(".png", " (12345).png") + ".part"):
        (tmp_path / on_disk).write_bytes(b"")


def test_a_number_added_to_a_name_keeps_it_within_255_bytes(tmp_path: Path) -> None:
    """Before, ` (n)` went after whatever the name was: a name cut to its most, taken
    100,000 times (or one not cut by `safe_name`), ran past 255 bytes with its `.part`."""
    assert [numbered(n, 2) for n in ("a.png", "notes", ".bashrc", "a.b.tar")] == [
        "a (2).png",
        "notes (2)",
        ".bashrc (2)",
        "a.b (2).tar",
    ]
    # A series' directory, named by its UID, is numbered after its whole name.
    assert numbered("CT 1.2.840.94", 2, directory=True) == "CT 1.2.840.94 (2)"
    for name in (safe_name("é" * 299 + ".png"), "x" * 250, "é" * 125, "y" * 100 + "." + "z" * 150):
        for n in (2, 12345, 10**9):
            made = numbered(name, n)
            assert len(made.encode()) <= NAME_BYTES, (name, n)
            assert f" ({n})" in made and made.endswith(".png" if name.endswith(".png") else "")
            (tmp_path / (made + ".part")).write_bytes(b"")


def test_a_downloaded_group_takes_its_extension_within_a_names_length() -> None:
    def group(name: str) -> FileData:
        return FileData.model_construct(name=name, kind="image_group", mime_type="image/png")

    assert local_name(group("cats")) == "cats.png"
    # As the gateway names it (within the platform's 300 characters), then within the
    # disk's 255 bytes: before, 300 characters and `.png`, a name no disk takes.
    assert rules.MAX_NAME == 300
    got = local_name(group("x" * rules.MAX_NAME))
    assert got.endswith("x.png") and len(got.encode()) == MAX_LOCAL_BYTES, len(got)


def test_a_batchs_metadata_stays_below_ingests_limit(tmp_path: Path) -> None:
    """500 files with 15 KiB of metadata each (an embedding) were one request whose
    `metadata` field ingest refused (413, naming no file): the whole upload failed."""
    assert METADATA_FIELD_LIMIT == multipart.METADATA_FIELD_LIMIT
    embedding = {"embedding": [0.1234567] * 1500}
    files = [
        LocalFile(tmp_path / f"{n}.png", f"{n}.png", 100, {**embedding, "n": n}) for n in range(500)
    ]
    found = batches(files)
    assert len(found) > 1 and [f for b in found for f in b] == files
    for batch in found:
        field = json.dumps({f.name: f.metadata for f in batch}).encode()
        assert len(field) <= METADATA_BATCH_BYTES < METADATA_FIELD_LIMIT
    # A file whose metadata alone passes the bound goes alone (its refusal its own).
    huge = LocalFile(tmp_path / "h", "h", 1, {"blob": "x" * METADATA_FIELD_LIMIT})
    assert [len(b) for b in batches([files[0], huge, files[1]])] == [1, 1, 1]
    # Files without metadata are batched as before.
    plain = [LocalFile(tmp_path / f"{n}", f"{n}", 1) for n in range(1200)]
    assert [len(b) for b in batches(plain)] == [500, 500, 200]


def test_a_refusal_of_content_names_the_files_of_a_batch_to_set_aside(tmp_path: Path) -> None:
    batch = [LocalFile(tmp_path / d / n, n, 1) for d, n in (("a", "x"), ("b", "x"), ("b", "y"))]
    listed = errors.UnsupportedContent(
        "unsupported_content",
        "'x' is not a kind of file we accept: empty file",
        {"name": "x", "refused": [{"part": 2, "name": "x", "reason": "empty file"}]},
        415,
    )
    assert list(_refused_in(listed, batch)) == [1]  # the second x only, by its place
    said = _refused_in(listed, batch)[1]
    assert "'x' is not a kind of file we accept: empty file" in said.message
    # The API's details of this file's refusal are kept.
    assert said.details == {"part": 2, "name": "x", "reason": "empty file"}
    # A platform that names the first file only: each file of that name goes aside.
    named = errors.UnsupportedContent("unsupported_content", "'x' is ...", {"name": "x"}, 415)
    assert list(_refused_in(named, batch)) == [0, 1]
    # A name the platform refuses: each file of that name goes aside.
    bad_name = errors.Invalid("invalid_name", "the name 'y' is ...", {"name": "y"}, 422)
    assert list(_refused_in(bad_name, batch)) == [2]
    # A file's metadata refused: each file of that name goes aside.
    for code, status in (
        ("invalid_metadata", 422),
        ("metadata_type_mismatch", 422),
        ("metadata_too_large", 413),
    ):
        bad = errors.BY_STATUS[status](code, "file 'y': ...", {"name": "y"}, status)
        assert list(_refused_in(bad, batch)) == [2], code
    # The metadata field as a whole refused (no file named): the batch's failure.
    whole = errors.TooLarge("metadata_too_large", "the 'metadata' field is ...", {}, 413)
    assert _refused_in(whole, batch) == {}
    # Unless the batch is one file with metadata: then its metadata alone passes it.
    alone = LocalFile(tmp_path / "z", "z", 1, {"blob": "x"})
    assert [r.file for r in _refused_in(whole, [alone]).values()] == [alone]
    assert _refused_in(whole, [batch[0]]) == {}
    # Anything else is the batch's failure, not a file's.
    other = errors.TooLarge("too_many_files", "too many", {"name": "x"}, 413)
    assert _refused_in(other, batch) == {}
    stranger = errors.UnsupportedContent(
        "unsupported_content", "?", {"refused": [{"part": 9}]}, 415
    )
    assert _refused_in(stranger, batch) == {}


def test_every_file_whose_metadata_is_listed_goes_aside_in_one_round(tmp_path: Path) -> None:
    """Ingest lists every file whose metadata it refuses (`details.refused`); before,
    the client set aside the first named (`details.name`) and sent the rest again, one
    round a file."""
    batch = [LocalFile(tmp_path / n, n, 1) for n in ("a", "b", "c", "d")]
    entries = [
        {"name": n, "key": "score", "type": "number", "needs": "a number"} for n in ("b", "d")
    ]
    listed = errors.Invalid(
        "metadata_type_mismatch",
        "file 'b': metadata key 'score' must be a number (and 1 more file: details.refused)",
        {
            **entries[0],
            "refused": [
                {
                    **e,
                    "code": "metadata_type_mismatch",
                    "message": f"file {e['name']!r}: ...",
                    "status": 422,
                }
                for e in entries
            ],
        },
        422,
    )
    found = _refused_in(listed, batch)
    assert sorted(found) == [1, 3]
    assert [(r.file.name, r.code, r.status, r.message) for r in found.values()] == [
        ("b", "metadata_type_mismatch", 422, "file 'b': ..."),
        ("d", "metadata_type_mismatch", 422, "file 'd': ..."),
    ]
    assert [r.details for r in found.values()] == entries
    # Of mixed codes (too large, not storable): each with its own.
    mixed = errors.TooLarge(
        "metadata_too_large",
        "...",
        {
            "name": "a",
            "refused": [
                {"name": "a", "code": "metadata_too_large", "message": "big", "status": 413},
                {"name": "c", "code": "invalid_metadata", "message": "NUL", "status": 422},
            ],
        },
        413,
    )
    assert [(n, r.code, r.status) for n, r in _refused_in(mixed, batch).items()] == [
        (0, "metadata_too_large", 413),
        (2, "invalid_metadata", 422),
    ]


def test_an_upload_refused_keeps_the_apis_details(tmp_path: Path) -> None:
    """Before, `UploadRefused.details` was the client's own (`refused`, `uploaded`): the
    API's `key` and `needs`, a content refusal's `part` and `reason`, a large file's
    `upload_session_id` were lost."""
    a, b = LocalFile(tmp_path / "a", "a", 1), LocalFile(tmp_path / "b", "b", 1)
    first = Refusal(a, "metadata_type_mismatch", "file 'a': ...", 422, {"name": "a", "key": "k"})
    second = Refusal(b, "unsupported_content", "'b' is ...", 415, {"upload_session_id": "s1"})
    error = errors.upload_refused(["stored"], [first, second])
    assert isinstance(error, errors.Invalid) and error.code == "metadata_type_mismatch"
    assert error.details["key"] == "k" and error.details["name"] == "a"
    assert error.details["uploaded"] == 1
    assert [r["details"] for r in error.details["refused"]] == [
        {"name": "a", "key": "k"},
        {"upload_session_id": "s1"},
    ]
    assert [r["status"] for r in error.details["refused"]] == [422, 415]


def test_an_unknown_kind_is_said_from_the_platforms_answer_not_a_list_of_the_clients() -> None:
    # A kind the platform learnt after this client was written: suggested all the same.
    problem = "'point_clod' is not a kind; the kinds: folder, image, nifti, point_cloud"
    refused = errors.Invalid(
        "invalid_request",
        f"kind: {problem}",
        {
            "fields": [{"field": "kind", "problem": problem}],
            "parameter": "kind",
            "kind": "point_clod",
            "kinds": ["folder", "image", "nifti", "point_cloud"],
        },
    )
    assert _kind_refused(refused) == (
        "--kind 'point_clod' is not a kind (did you mean point_cloud?);"
        " the kinds: folder, image, nifti, point_cloud"
    )
    # Another refusal is not about a kind; one without the list is said as answered.
    assert (
        _kind_refused(errors.Invalid("invalid_request", "q: too long", {"parameter": "q"})) is None
    )
    bare = errors.Invalid("invalid_request", "kind: 'x' is not a kind", {"parameter": "kind"})
    assert _kind_refused(bare) == "--kind: kind: 'x' is not a kind"


def test_the_cli_refuses_in_names_the_characters_the_platform_refuses() -> None:
    """The CLI skips, naming it, a file whose name the platform would refuse, before it
    sends the batch it is in: the same characters, told by their Unicode properties."""
    from files_client.names import misleading as _misleading
    from files_client.names import name_problem as _name_problem

    from shared.contracts import rules
    from shared.contracts.rules import MISLEADING

    assert {chr(c) for c in range(0x110000) if _misleading(chr(c))} == set(MISLEADING)
    problem = _name_problem("invoice\u202efdp.exe")
    assert problem is not None and "U+202E" in problem
    assert _name_problem("family \U0001f468\u200d\U0001f469.png") is None  # a joiner stays
    # Invisible characters are refused by the same rule, the few text needs stay.
    problem = _name_problem("re\u200bport.pdf")
    assert problem is not None and "U+200B (zero width space)" in problem
    assert _name_problem("x\U000e0001") is not None and _name_problem("a\ufeff") is not None
    flag = "\U0001f3f4\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f"
    for kept in (f"wales {flag}.png", "\u2764\ufe0f.png", "\u0645\u06cc\u200c\u062e.txt"):
        assert _name_problem(kept) is None and rules.name_problem(kept) is None, kept
    for hidden in ("report\U000e0078.pdf", f"{flag}\U000e0061.png", "\U000e0067\U000e007f"):
        problem = _name_problem(hidden)
        assert problem is not None and "a tag character outside a flag emoji" in problem
        assert rules.name_problem(hidden) is not None
    # A joiner or variation selector is kept only where a script uses it: not first, nor
    # after ASCII (a keycap aside) or a Latin, Greek or Cyrillic letter (its marks aside).
    mongolian, keycap = "\u1828\u1823\u182e\u180e\u1820", "1\ufe0f\u20e3 #\ufe0f\u20e3"
    pride, half = "\U0001f3f3\ufe0f\u200d\U0001f308", "\u0915\u094d\u200d\u0937"
    for kept in (mongolian, keycap, pride, half, "\u845b\U000e0100", "\u00a9\ufe0f 2024"):
        assert _name_problem(kept) is None and rules.name_problem(kept) is None, kept
    for hidden in (
        "re\u200cport",
        "\u200dx",
        "cafe\u0301\u200c",
        "\u03b1\u200d",
        "pdf\ufe0e",
        "1\ufe0f",
    ):
        problem = _name_problem(hidden)
        assert problem is not None and "where no text needs it" in problem, hidden
        assert "where no text needs it" in (rules.name_problem(hidden) or ""), hidden


def _answer(call: Any, status: int, body: Any, token: str = "") -> httpx.Response:
    headers = {"Files-Consistency": token} if token else {}
    request = httpx.Request(call.method, call.url)
    return httpx.Response(status, json=body, headers=headers, request=request)


def test_an_image_group_answered_202_is_followed_until_listed_not_sent_again(
    tmp_path: Path,
) -> None:
    """Stored but not listed within the platform's wait (a large group on a busy
    platform): the client must not fail on the 202's body, nor send the group again
    (that would store a second one); it reads the group's file with the answer's token
    until the catalog has it, then its images' folder."""
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG")
    client = files_client.Client("http://files.test", api_key="key")
    top = client._folder({"id": "f-top", "name": "top"})
    ids = {"file_id": "g-1", "folder_id": "f-images", "job_id": "j-1"}
    group_file = {
        "id": "g-1",
        "name": "scan",
        "kind": "image_sequence",
        "folder_id": "f-top",
        "size": 4,
        "sha256": "0" * 64,
        "mime_type": "application/x-image-sequence",
    }
    op = type(top).upload_image_group.fn(top, [image], "scan", sequence=True)
    step: Any = next(op)
    sent: list[tuple[str, str, str]] = []
    result = None
    try:
        while True:
            if isinstance(step, Sleep):
                step = op.send(None)
                continue
            assert isinstance(step, Send)
            call = step.call
            sent.append((call.method, call.url, call.headers.get("Files-Consistency", "")))
            if call.method == "POST":
                reply = _answer(call, 202, ids, token="ingest:7")
            elif call.url.endswith("/v1/files/g-1"):
                gets = sum(1 for m, u, _ in sent if u.endswith("/v1/files/g-1"))
                reply = (
                    _answer(call, 200, group_file, token="catalog:3")
                    if gets >= 3
                    else _answer(call, 404, {"error": {"code": "not_found", "message": "no"}})
                )
            elif sum(1 for m, u, _ in sent if u.endswith("/v1/folders/f-images")) == 1:
                # The 202 may also mean the images' folder was not read yet: followed too.
                reply = _answer(call, 404, {"error": {"code": "not_found", "message": "no"}})
            else:
                reply = _answer(call, 200, {"id": "f-images", "name": "scan"})
            step = op.send(reply)
    except StopIteration as done:
        result = done.value
    assert result is not None
    assert (result.file.id, result.folder.id) == ("g-1", "f-images")
    assert [m for m, _, _ in sent].count("POST") == 1
    reads = [(u.removeprefix("http://files.test"), t) for m, u, t in sent if m == "GET"]
    assert reads == [
        ("/v1/files/g-1", "ingest:7"),
        ("/v1/files/g-1", "ingest:7"),
        ("/v1/files/g-1", "ingest:7"),
        ("/v1/folders/f-images", "catalog:3,ingest:7"),
        ("/v1/files/g-1", "catalog:3,ingest:7"),
        ("/v1/folders/f-images", "catalog:3,ingest:7"),
    ]


def test_a_batch_of_small_files_reaches_the_socket_whole_in_a_few_large_writes(
    tmp_path: Path,
) -> None:
    """A batch's body is every file's bytes, as long as its Content-Length says, handed to
    the socket in pieces of at least 256 KiB rather than three a file (httpx's own
    pieces: 300 for these 100 files, most of a client's CPU on small files)."""
    from files_client._core import Call
    from files_client._drivers import COALESCE, _request
    from files_client.transfer import multipart

    files = []
    for i in range(100):
        path = tmp_path / f"scan_{i:03d}.png"
        path.write_bytes(bytes([i]) * 4096)
        files.append(LocalFile.at(path))
    with httpx.Client(base_url="http://files.test") as http:
        request = _request(http, Call("POST", "/v1/folders/f/files", files=multipart(files, None)))
    pieces = list(request.stream)  # type: ignore[union-attr]
    body = b"".join(pieces)
    assert len(body) == int(request.headers["Content-Length"])
    assert all(bytes([i]) * 4096 in body for i in range(100))
    assert all(len(p) >= COALESCE for p in pieces[:-1])
    assert len(pieces) <= len(body) // COALESCE + 1


def _session_run(tmp_path: Path, metadata: Any, resumed: dict[str, Any]) -> list[Any]:
    """The calls a large file's upload makes, given a session to resume (no parts
    missing): the session answers as `resumed` says, a new one as opened."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 10)
    client = files_client.Client("http://files.test", api_key="key")
    session = client._session
    f = LocalFile.at(big).described(metadata)
    op = upload_in_parts(session, "f-top", f, None, session_id="s-old")
    opened = {"id": "s-new", "status": "open", "size": 10, "part_size": 10, "parts": []}
    stored = {"job_id": "j", "file": {"id": "file-1", "name": "big.bin"}}
    sent: list[Any] = []
    step: Any = next(op)
    try:
        while True:
            if isinstance(step, Gather):
                step = op.send([])
                continue
            assert isinstance(step, Send)
            call = step.call
            sent.append(call)
            path = call.url.removeprefix("http://files.test")
            if call.method == "GET":
                reply = _answer(call, 200, {"id": "s-old", "size": 10, "part_size": 10, **resumed})
            elif path.endswith("/complete"):
                reply = _answer(call, 201, stored)
            else:
                reply = _answer(call, 201, {**opened, "metadata": call.json.get("metadata", {})})
            step = op.send(reply)
    except StopIteration:
        pass
    return sent


def test_a_large_files_metadata_goes_with_its_session_never_a_patch_after(
    tmp_path: Path,
) -> None:
    """Opened with the file's metadata: stored with it by the completion, so no PATCH.
    A session to resume that was opened with other metadata would store the file with
    that: a new one is opened instead."""
    given = {"site": "paris"}
    other = _session_run(tmp_path, given, {"status": "open", "parts": [], "metadata": {}})
    assert [(c.method, c.url.removeprefix("http://files.test")) for c in other] == [
        ("GET", "/v1/uploads/s-old"),
        ("POST", "/v1/folders/f-top/uploads"),
        ("POST", "/v1/uploads/s-new/complete"),
    ]
    assert other[1].json == {"name": "big.bin", "size": 10, "metadata": given}
    same = _session_run(tmp_path, given, {"status": "open", "parts": [], "metadata": given})
    assert [(c.method, c.url.removeprefix("http://files.test")) for c in same] == [
        ("GET", "/v1/uploads/s-old"),
        ("POST", "/v1/uploads/s-old/complete"),
    ]
    # Without metadata, a session opened before it was taken (none in its answer) resumes.
    bare = _session_run(tmp_path, None, {"status": "open", "parts": []})
    assert [c.method for c in bare] == ["GET", "POST"]


def test_a_session_opened_by_another_is_not_resumed(tmp_path: Path) -> None:
    """Found by review43: its missing parts come without URLs (shown to its opener
    only), and resuming it (by its id, or the journal, the OS user's and not the key's)
    was a KeyError; a new session is opened instead. Its own parts, with URLs, resume."""
    theirs = {"status": "open", "parts": [{"part": 1, "size": 10}]}
    sent = _session_run(tmp_path, None, theirs)
    assert [(c.method, c.url.removeprefix("http://files.test")) for c in sent] == [
        ("GET", "/v1/uploads/s-old"),
        ("POST", "/v1/folders/f-top/uploads"),
        ("POST", "/v1/uploads/s-new/complete"),
    ]
    mine = {"status": "open", "parts": [{"part": 1, "size": 10, "url": "http://files.test/p/1"}]}
    assert [c.method for c in _session_run(tmp_path, None, mine)] == ["GET", "POST"]


def test_a_session_read_by_another_editor_parses_without_part_urls() -> None:
    """Found by review43: `PartUrl.url` was required, so `get_upload_session` raised a
    ValidationError for any editor but the session's opener."""
    from files_client.models import UploadSession

    found = UploadSession.model_validate(
        {
            "id": "s1",
            "job_id": "s1",
            "folder_id": "f",
            "name": "big.bin",
            "size": 10,
            "part_size": 10,
            "status": "open",
            "expires_at": "2026-12-08T00:00:00+00:00",
            "parts": [{"part": 1, "size": 10}],
        }
    )
    assert found.parts[0].url is None


def _driven(op: Any, reply: Any, sent: list[Any]) -> Any:
    """An operation run against `reply` (a Send's call to its answer), side by side
    ones in turn; each call sent kept in `sent`."""
    step: Any = next(op)
    try:
        while True:
            if isinstance(step, Gather):
                step = op.send([_driven(o, reply, sent) for o in step.ops])
            elif isinstance(step, Send):
                sent.append(step.call)
                step = op.send(reply(step.call))
            else:
                step = op.send(None)
    except StopIteration as done:
        return done.value


def _stored(name: str, n: int) -> dict[str, Any]:
    return {
        "id": f"file-{n}",
        "name": name,
        "kind": "image",
        "folder_id": "f-top",
        "size": 4,
        "sha256": "0" * 64,
        "mime_type": "image/png",
    }


def test_a_name_with_a_control_character_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    """Before: `bad\\x01.png` went as `bad%01.png` (httpx writes a control character in
    a form's filename as %XX), and ingest stored that name: not the file's. The client
    now refuses it as `files upload` does, with the same rule, sending nothing of it."""
    bad, good = tmp_path / "bad\x01.png", tmp_path / "good.png"
    bad.write_bytes(b"\x89PNG")
    good.write_bytes(b"\x89PNG")
    client = files_client.Client("http://files.test", api_key="key")
    top = client._folder({"id": "f-top", "name": "top"})
    sent: list[Any] = []
    calls = 0

    def reply(call: Any) -> httpx.Response:
        nonlocal calls
        calls += 1
        return _answer(call, 201, {"files": [_stored("good.png", calls)]})

    with pytest.raises(errors.UploadRefused) as refused:
        _driven(type(top).upload.fn(top, [bad, good]), reply, sent)
    assert [f.name for f in refused.value.uploaded] == ["good.png"]
    [refusal] = refused.value.refused
    assert (refusal.code, refusal.status, refusal.index) == ("invalid_name", None, 0)
    assert "control characters" in refusal.message
    assert len(sent) == 1  # good.png's batch alone
    # An image group's (or DICOM upload's) names too: nothing sent.
    sent.clear()
    with pytest.raises(errors.Invalid) as invalid:
        _driven(type(top).upload_image_group.fn(top, [good, bad], "g"), reply, sent)
    assert invalid.value.code == "invalid_name" and sent == []


def test_the_same_file_twice_in_one_upload_has_an_outcome_for_each_place(
    tmp_path: Path,
) -> None:
    """Before: outcomes were kept by LocalFile (equal by path, name and size), so the
    same file given twice took one outcome, the last, in both places."""
    path = tmp_path / "a.png"
    path.write_bytes(b"\x89PNG")
    client = files_client.Client("http://files.test", api_key="key")
    top = client._folder({"id": "f-top", "name": "top"})

    def reply(call: Any) -> httpx.Response:
        return _answer(call, 201, {"files": [_stored("a.png", 1), _stored("a.png", 2)]})

    found = _driven(type(top).upload.fn(top, [path, path]), reply, [])
    assert [f.id for f in found] == ["file-1", "file-2"]
