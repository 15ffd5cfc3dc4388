"""`files audit` over every context's store, and `files rebuild --all` while the platform
serves.

The platform (the `api` fixture) records real history; the command runs in-process
(in a thread: it runs its own event loop) and reads the stores directly.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from shared.cli import main
from shared.contracts.envelope import Envelope
from shared.kit.eventstore import EventStore
from shared.kit.replay import Selection, replay
from tests.conftest import eventually
from tests.e2e.test_smoke import png
from tests.integration.helpers import schema
from tests.integration.test_audit import T0
from tests.integration.test_audit import event as stored_event


@pytest.fixture
def files_cli(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    """`files <argv>` in-process: (exit code, stdout, stderr)."""
    monkeypatch.setenv("FILES_DATABASE_URL", database_url)

    async def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = await asyncio.to_thread(main, list(argv))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


async def json_lines(files_cli: Any, *argv: str) -> list[dict[str, Any]]:
    code, out, err = await files_cli("audit", *argv, "--json")
    assert code == 0, err
    return [orjson.loads(line) for line in out.splitlines()]


def key(event: dict[str, Any]) -> tuple[str, str, int]:
    return (event["occurred_at"], event["source"], event["position"])


@dataclass
class History:
    admin: str
    member: dict[str, Any]
    member_key: str
    top: str
    sub: str
    mine: str  # a folder the member created, below top
    file: str  # in sub, linked to the dataset
    dataset: str


async def ok(answer: httpx.Response) -> Any:
    assert answer.status_code < 300, answer.text
    return answer.json() if answer.content else None


@pytest.fixture
async def history(api: httpx.AsyncClient, pool: asyncpg.Pool) -> History:
    """A folder with a subfolder and files, a file in a dataset, a collaborator (who
    adds a folder of their own and gets an API key), then the folder deleted and purged.
    Its creator (the folder's admin, `History.admin`) deletes it and empties their trash:
    what they could restore goes, not the rest of the shared platform's trash."""
    tag = uuid.uuid4().hex[:8]
    owner = await ok(
        await api.post(
            "/v1/users",
            json={"email": f"oli-{tag}@example.com", "name": "Oli", "org_role": "member"},
        )
    )
    admin = owner["id"]
    as_owner = {"Authorization": f"Bearer {owner['api_key']}"}
    member = await ok(
        await api.post(
            "/v1/users",
            json={"email": f"ann-{tag}@example.com", "name": "Ann", "org_role": "member"},
        )
    )
    top = await ok(await api.post("/v1/folders", json={"name": f"replay-{tag}"}, headers=as_owner))
    sub = await ok(
        await api.post(
            "/v1/folders", json={"name": "sub", "parent_id": top["id"]}, headers=as_owner
        )
    )
    uploaded = await ok(
        await api.post(
            f"/v1/folders/{sub['id']}/files",
            files=[("file", (f"img{i}.png", png(8, 8 + i), "image/png")) for i in range(2)],
            headers=as_owner,
        )
    )
    file_id = uploaded["files"][0]["id"]
    dataset = await ok(await api.post("/v1/datasets", json={"name": f"replay-{tag}"}))
    await ok(await api.post(f"/v1/datasets/{dataset['id']}/files", json={"file_ids": [file_id]}))
    await ok(
        await api.post(
            f"/v1/folders/{top['id']}/collaborators",
            json={"emails": [member["email"]], "role": "editor"},
            headers=as_owner,
        )
    )
    mine = await ok(
        await api.post(
            "/v1/folders",
            json={"name": "ann's", "parent_id": top["id"]},
            headers={"Authorization": f"Bearer {member['api_key']}"},
        )
    )
    issued = await ok(await api.post(f"/v1/users/{member['id']}/keys"))
    deleted = await api.delete(f"/v1/folders/{top['id']}", headers=as_owner)
    assert deleted.status_code == 204, deleted.text
    # The trash keeps it: emptied, the grants and the blobs go too.
    emptied = await api.delete("/v1/trash", headers=as_owner)
    assert emptied.status_code == 200, emptied.text
    assert emptied.json() == {"purged_folders": 3, "purged_files": 2}

    file_ids = {f["id"] for f in uploaded["files"]}

    async def reactions_recorded() -> bool:
        """Every reaction to the deletion: the table and JSON runs must see the same."""
        async with pool.acquire() as conn:
            effects = [
                e
                async for e in replay(
                    conn,
                    # The blobs are released by the files' purge (the trash emptied).
                    Selection(subject_ids=[uuid.UUID(i) for i in (top["id"], *file_ids)]),
                    follow_effects=True,
                )
            ]
        types = {e["type"] for e in effects}
        released = {
            f for e in effects if e["type"] == "ingest.BlobsReleased" for f in e["data"]["file_ids"]
        }
        return {
            "acl.CollaboratorRemoved",
            "datasets.FilesUnlinked",
        } <= types and released >= file_ids

    await eventually(reactions_recorded, within=20, what="the deletion's reactions")
    return History(
        admin=admin,
        member=member,
        member_key=issued["api_key"],
        top=top["id"],
        sub=sub["id"],
        mine=mine["id"],
        file=file_id,
        dataset=dataset["id"],
    )


def one(events: list[dict[str, Any]], type_: str, subject: str) -> dict[str, Any]:
    [found] = [e for e in events if e["type"] == type_ and e["subject_id"] == subject]
    return found


async def test_a_folder_deletion_and_its_effects_across_contexts(
    history: History, files_cli: Any
) -> None:
    h = history
    events = await json_lines(files_cli, "--subject", h.top, "--follow-effects")
    assert events == sorted(events, key=key)
    assert len({e["event_id"] for e in events}) == len(events)
    shown = {e["event_id"]: i for i, e in enumerate(events)}

    top_deleted = one(events, "catalog.FolderDeleted", h.top)
    sub_deleted = one(events, "catalog.FolderDeleted", h.sub)
    file_deleted = one(events, "catalog.FileDeleted", h.file)
    [unlinked] = [
        e for e in events if e["type"] == "datasets.FilesUnlinked" and e["subject_id"] == h.dataset
    ]
    removed = one(
        [e for e in events if e["data"].get("user_id") == h.member["id"]],
        "acl.CollaboratorRemoved",
        h.top,
    )
    top_purged = one(events, "catalog.FolderPurged", h.top)
    # The chain: the request -> the folder -> its subfolder -> the file; the datasets
    # context unlinks (at the folder, or at the file); the ACL drops the grant when the
    # trash lets the folder go.
    assert top_deleted["causation_id"] is None or top_deleted["causation_id"] not in shown
    assert sub_deleted["causation_id"] == top_deleted["event_id"]
    assert file_deleted["causation_id"] == sub_deleted["event_id"]
    assert unlinked["causation_id"] in (top_deleted["event_id"], file_deleted["event_id"])
    assert unlinked["data"]["file_ids"] == [h.file]
    assert unlinked["data"]["reason"] == "file_deleted"
    assert removed["causation_id"] == top_purged["event_id"]
    assert removed["data"]["reason"] == "folder_deleted"
    order = [shown[e["event_id"]] for e in (top_deleted, sub_deleted, file_deleted)]
    assert order == sorted(order)
    for effect in (unlinked, removed):
        assert shown[effect["causation_id"]] < shown[effect["event_id"]]
    for event in (top_deleted, sub_deleted, file_deleted, unlinked, removed):
        assert event["actor_id"] == h.admin
    for event in (top_deleted, sub_deleted, file_deleted, unlinked):
        assert event["correlation_id"] == top_deleted["correlation_id"]
    assert removed["correlation_id"] == top_purged["correlation_id"]
    assert [e["source"] for e in (top_deleted, file_deleted, unlinked, removed)] == [
        "catalog",
        "catalog",
        "datasets",
        "acl",
    ]
    # Every followed event was caused by one shown before it.
    selected = {e["event_id"] for e in events if e["subject_id"] == h.top}
    for event in events:
        if event["event_id"] not in selected:
            assert shown[event["causation_id"]] < shown[event["event_id"]]

    # Without following, the folder's own streams only: catalog and acl.
    own = await json_lines(files_cli, "--subject", h.top)
    assert {e["subject_id"] for e in own} == {h.top}
    assert {e["source"] for e in own} == {"catalog", "acl"}
    assert own[0]["type"] == "catalog.FolderCreated"
    assert own == [e for e in events if e["subject_id"] == h.top]

    # The table shows the same events, each naming its cause.
    code, out, err = await files_cli("audit", "--subject", h.top, "--follow-effects")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["TIME", "CONTEXT", "TYPE", "SUBJECT"]
    assert len(lines) == len(events) + 1
    for line, event in zip(lines[1:], events, strict=True):
        assert event["type"] in line
        assert event["source"] in line
        assert event["event_id"][:8] in line
        assert (event["subject_id"] or event["stream_id"]) in line
    sub_line = lines[1 + shown[sub_deleted["event_id"]]]
    assert f"catalog.FolderDeleted {top_deleted['event_id'][:8]}" in sub_line
    assert "`- catalog.FolderDeleted" in sub_line  # indented under its cause

    # A whole request's consequences, by its correlation id.
    request = await json_lines(files_cli, "--correlation", top_deleted["correlation_id"])
    assert {e["event_id"] for e in request} >= {
        top_deleted["event_id"],
        sub_deleted["event_id"],
        file_deleted["event_id"],
        unlinked["event_id"],
    }
    assert {e["correlation_id"] for e in request} == {top_deleted["correlation_id"]}

    limited = await json_lines(files_cli, "--subject", h.top, "--follow-effects", "--limit", "3")
    assert limited == events[:3]


async def test_follow_causes_goes_up_the_chain(history: History, files_cli: Any) -> None:
    h = history
    events = await json_lines(
        files_cli, "--subject", h.file, "--type", "catalog.FileDeleted", "--follow-causes"
    )
    assert [(e["type"], e["subject_id"]) for e in events] == [
        ("catalog.FolderDeleted", h.top),
        ("catalog.FolderDeleted", h.sub),
        ("catalog.FileDeleted", h.file),
    ]
    # Up from the datasets context into the catalog's.
    unlinked = await json_lines(
        files_cli, "--subject", h.dataset, "--type", "datasets.FilesUnlinked", "--follow-causes"
    )
    assert unlinked[-1]["type"] == "datasets.FilesUnlinked"
    assert {e["source"] for e in unlinked[:-1]} == {"catalog"}
    assert unlinked[-2]["event_id"] == unlinked[-1]["causation_id"]


async def test_a_files_history_shows_its_upload_and_the_page_that_stored_it(
    history: History, files_cli: Any
) -> None:
    h = history
    own = await json_lines(files_cli, "--subject", h.file)
    # The catalog's page of the upload (in a stream of its own) names it.
    assert own[0]["type"] == "catalog.FilesUploaded"
    assert own[0]["subject_id"] != h.file
    [entered] = [f for f in own[0]["data"]["files"] if f["file_id"] == h.file]
    assert entered["name"] == "img0.png"
    assert h.file in own[0]["data"]["file_ids"]
    # Its cause: the upload request's one page of stored files, which names both.
    events = await json_lines(
        files_cli, "--subject", h.file, "--type", "catalog.FilesUploaded", "--follow-causes"
    )
    # (At the same moment: the file is created at the time of the event that stored it.)
    [page] = [e for e in events if e["type"] == "ingest.FilesStored"]
    [uploaded] = [e for e in events if e["type"] == "catalog.FilesUploaded"]
    assert len(events) == 2
    assert page["occurred_at"] == uploaded["occurred_at"]
    assert uploaded["causation_id"] == page["event_id"]
    assert [f["name"] for f in page["data"]["files"]] == ["img0.png", "img1.png"]
    assert page["data"]["files"][0]["file_id"] == h.file
    assert page["data"]["folder_id"] == h.sub


async def test_since_until_and_actor(history: History, files_cli: Any) -> None:
    h = history
    everything = await json_lines(files_cli, "--subject", h.top)
    deleted = one(everything, "catalog.FolderDeleted", h.top)
    at = datetime.fromisoformat(deleted["occurred_at"])
    after = await json_lines(files_cli, "--subject", h.top, "--since", deleted["occurred_at"])
    assert after[0] == deleted
    assert after == [e for e in everything if e["occurred_at"] >= deleted["occurred_at"]]
    before = await json_lines(files_cli, "--subject", h.top, "--until", deleted["occurred_at"])
    assert before == [e for e in everything if e["occurred_at"] < deleted["occurred_at"]]
    assert before[0]["type"] == "catalog.FolderCreated"
    assert before + after == everything
    # An offset is the same instant; a window of one event.
    east = (at + timedelta(hours=2)).isoformat().replace("+00:00", "+02:00")
    window = await json_lines(
        files_cli,
        "--subject",
        h.top,
        "--since",
        east,
        "--until",
        (at + timedelta(microseconds=1)).isoformat(),
    )
    assert window == [deleted]

    # The member's own actions, in every context.
    theirs = await json_lines(files_cli, "--actor", h.member["id"])
    assert theirs and {e["actor_id"] for e in theirs} == {h.member["id"]}
    assert ("catalog.FolderCreated", h.mine) in [(e["type"], e["subject_id"]) for e in theirs]
    # ... and the admin's on the member's folder: its deletion and purge only.
    admins = await json_lines(files_cli, "--subject", h.mine, "--actor", h.admin)
    assert [e["type"] for e in admins] == ["catalog.FolderDeleted", "catalog.FolderPurged"]
    assert [e["type"] for e in await json_lines(files_cli, "--subject", h.mine)] == [
        "catalog.FolderCreated",
        "catalog.FolderDeleted",
        "catalog.FolderPurged",
    ]


async def test_secrets_never_show(history: History, files_cli: Any, pool: asyncpg.Pool) -> None:
    h = history
    stored = await pool.fetch(
        "SELECT data FROM acl.events WHERE type = 'acl.ApiKeyIssued' AND right(stream_id, 36) = $1",
        h.member["id"],
    )
    assert len(stored) == 2 and all("key_hash" in r["data"] for r in stored)
    hashes = [r["data"]["key_hash"] for r in stored]
    issued = await json_lines(files_cli, "--subject", h.member["id"], "--type", "acl.ApiKeyIssued")
    assert len(issued) == 2
    for event in issued:
        assert set(event["data"]) == {"key_id", "user_id"}
    for argv in (("--subject", h.member["id"], "--json"), ("--subject", h.member["id"])):
        code, out, err = await files_cli("audit", *argv)
        assert code == 0, err
        assert "acl.ApiKeyIssued" in out
        for secret in (*hashes, h.member_key, h.member["api_key"], "key_hash"):
            assert secret not in out


async def test_nothing_found_and_bad_input(files_cli: Any) -> None:
    code, out, err = await files_cli("audit", "--subject", str(uuid.uuid4()))
    assert (code, out) == (0, "")
    assert "no events match" in err
    code, out, err = await files_cli("audit", "--subject", "folder-1")
    assert code == 2 and "'folder-1' is not a UUID" in err
    code, out, err = await files_cli("audit", "--since", "yesterday")
    assert code == 2 and "'yesterday' is not an ISO 8601 time" in err
    code, out, err = await files_cli(
        "audit", "--since", "2024-05-02T00:00:00Z", "--until", "2024-05-01"
    )
    assert code == 2 and "--until must be later than --since" in err
    code, out, err = await files_cli("audit", "--limit", "0")
    assert code == 2 and "positive" in err


# -- the merge on synthetic stores -----------------------------------------------------


async def test_stores_merge_in_time_order_page_by_page(pool: asyncpg.Pool) -> None:
    """Two stores whose events interleave in time, read two rows per round trip."""
    a, b = EventStore(schema()), EventStore(schema())
    subject = uuid.uuid4()
    events: dict[str, list[Envelope]] = {a.schema: [], b.schema: []}
    for minute in range(10):
        store = a if minute % 3 else b
        envelope = stored_event(f"thing-{subject}", minute + 1, "test.Happened", "alice", minute)
        events[store.schema].append(envelope)
    # Same instant in both stores: the context's name breaks the tie.
    tie = [
        stored_event(f"tie-{subject}", 1, "test.Tied", "bob", 20),
        stored_event(f"tie-{subject}", 2, "x", "b", 20),
    ]
    events[a.schema].append(tie[0])
    events[b.schema].append(tie[1])
    async with pool.acquire() as conn:
        for store in (a, b):
            await store.setup(conn)
            async with conn.transaction():
                await store.append(conn, events[store.schema])
        got = [
            e
            async for e in replay(
                conn, Selection(subject_ids=[subject]), contexts=[b.schema, a.schema], page=2
            )
        ]
        assert [e["occurred_at"] for e in got] == sorted(e["occurred_at"] for e in got)
        assert len(got) == 12
        assert [e["occurred_at"][11:16] for e in got[:10]] == [f"12:0{m}" for m in range(10)]
        assert [e["source"] for e in got[:4]] == [b.schema, a.schema, a.schema, b.schema]
        assert [e["source"] for e in got[10:]] == sorted([a.schema, b.schema])
        limited = [
            e
            async for e in replay(
                conn,
                Selection(since=T0 + timedelta(minutes=2)),
                contexts=[a.schema, b.schema],
                limit=3,
                page=2,
            )
        ]
        assert [e["occurred_at"][11:16] for e in limited] == ["12:02", "12:03", "12:04"]
        assert [e async for e in replay(conn, Selection(types=[]), contexts=[a.schema])] == []


# -- rebuilding while the platform serves ----------------------------------------------

# Read models the uploads below do not touch: equal before and after, row for row.
UNTOUCHED = (
    "acl.users",
    "acl.api_keys",
    "acl.collaborators",
    "datasets.datasets",
    "datasets.members",
    "datasets.shares",
    "dicom.series",
    "dicom.instances",
    "dicom.jobs",
    "ingest.integrations",
)


async def snapshot(pool: asyncpg.Pool, table: str, where: str = "true") -> list[dict[str, Any]]:
    rows = await pool.fetch(f"SELECT * FROM {table} AS r WHERE {where} ORDER BY r::text")
    return [dict(r) for r in rows]


async def test_rebuild_all_while_uploads_go_on(
    api: httpx.AsyncClient, pool: asyncpg.Pool, files_cli: Any
) -> None:
    tag = uuid.uuid4().hex[:8]
    quiet = await ok(await api.post("/v1/folders", json={"name": f"quiet-{tag}"}))
    inner = await ok(await api.post("/v1/folders", json={"name": "in", "parent_id": quiet["id"]}))
    await ok(
        await api.post(
            f"/v1/folders/{inner['id']}/files",
            files=[("file", (f"q{i}.png", png(9, 9 + i), "image/png")) for i in range(3)],
        )
    )
    await ok(await api.patch(f"/v1/folders/{inner['id']}", json={"description": "still"}))
    busy = await ok(await api.post("/v1/folders", json={"name": f"busy-{tag}"}))
    not_busy = f"r.id <> '{busy['id']}'"
    before = {
        "catalog.folders": await snapshot(pool, "catalog.folders", not_busy),
        "catalog.files": await snapshot(pool, "catalog.files"),
        "ingest.jobs": await snapshot(pool, "ingest.jobs"),
        **{t: await snapshot(pool, t) for t in UNTOUCHED},
    }

    uploaded: list[str] = []
    rebuilt = asyncio.Event()

    async def upload_until_rebuilt(worker: int) -> None:
        """Uploads before, during and after the rebuilds (two after them, to be sure)."""
        after = 0
        while after < 2:
            after += rebuilt.is_set()
            name = f"w{worker}-{len(uploaded)}.png"
            answer = await api.post(
                f"/v1/folders/{busy['id']}/files",
                files=[("file", (name, png(10 + worker, 10 + len(uploaded)), "image/png"))],
            )
            assert answer.status_code == 201, answer.text
            uploaded.extend(f["id"] for f in answer.json()["files"])

    uploads = asyncio.gather(*(upload_until_rebuilt(w) for w in range(3)))

    async def uploading() -> bool:
        return bool(uploaded)

    try:
        await eventually(uploading, what="a first upload")
        # Twice, so that more of the rebuild overlaps the uploads.
        code, out, err = await files_cli("rebuild", "--all")
        if code == 0:
            code, out, err = await files_cli("rebuild", "--all")
        rebuilt.set()
        await uploads
    finally:
        if not uploads.done():
            uploads.cancel()
            await asyncio.gather(uploads, return_exceptions=True)
    assert code == 0, err
    assert {line.split(":")[0] for line in out.splitlines()} == {
        "acl.collaborators",
        "acl.users",
        "catalog.tree",
        "datasets.membership",
        "dicom.series",
        "ingest.blobs",
        "ingest.integrations",
        "ingest.jobs",
        "ingest.sessions",
        "thumbnails.files",
        "thumbnails.renditions",
    }

    new = set(uploaded)
    assert len(new) >= 3
    after_files = await snapshot(pool, "catalog.files")
    assert [f for f in after_files if str(f["id"]) not in new] == before["catalog.files"]
    assert {str(f["id"]) for f in after_files} >= new
    assert await snapshot(pool, "catalog.folders", not_busy) == before["catalog.folders"]
    jobs = await snapshot(pool, "ingest.jobs")
    old_jobs = {j["id"] for j in before["ingest.jobs"]}
    assert [j for j in jobs if j["id"] in old_jobs] == before["ingest.jobs"]
    for table in UNTOUCHED:
        assert await snapshot(pool, table) == before[table], table
    items = await ok(await api.get(f"/v1/folders/{busy['id']}/items", params={"limit": 1000}))
    assert {i["id"] for i in items["items"]} == new
