"""The DICOM context's read model: each folder's series and their instances.

Fed inline by the series events this context records, so the next batch sees the series
the previous one assembled; `files rebuild dicom.series` replays it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from services.dicom import domain
from shared.contracts import dicom as dicom_events
from shared.kit.db import Conn
from shared.kit.projections import Projection
from shared.kit.reactions import Received

series = Projection(
    name="dicom.series",
    # 2: the series' sha256; 3: series in the trash; 4: import entries' titles, metadata;
    # 5: instances' slice keys
    version=5,
    tables=(
        "dicom.series",
        "dicom.detached_series",
        "dicom.instances",
        "dicom.jobs",
        "dicom.job_files",
        "dicom.job_errors",
        "dicom.import_entries",
    ),
    ddl="""
    CREATE TABLE IF NOT EXISTS dicom.series (
        folder_id uuid NOT NULL,
        series_uid text NOT NULL,
        file_id uuid NOT NULL UNIQUE,
        study_uid text NOT NULL,
        patient_id text NOT NULL,
        modality text,
        version integer NOT NULL,
        -- The series' content (SeriesFacts.sha256): what the handler's memory of
        -- series it assembled is checked against.
        sha256 text,
        PRIMARY KEY (folder_id, series_uid)
    );
    ALTER TABLE dicom.series ADD COLUMN IF NOT EXISTS sha256 text;
    -- The series' slice direction (domain.slice_normal's), so that an extension reads
    -- this row, not every slice of the series, to know whether its keys stay: the
    -- lowest SOP Instance UID, and the normal of that slice's orientation when every
    -- slice has a position and an orientation (null: by InstanceNumber, or no slices).
    -- True as of the series' version `slice_version`: a row whose `version` is another
    -- (written by a replica of the version before, which does not keep them; or whose
    -- slices were removed, or were in the trash) is read again from its slices once.
    ALTER TABLE dicom.series ADD COLUMN IF NOT EXISTS slice_lowest_uid text;
    ALTER TABLE dicom.series ADD COLUMN IF NOT EXISTS slice_normal float8[];
    ALTER TABLE dicom.series ADD COLUMN IF NOT EXISTS slice_version integer;
    -- Series whose file is in the trash, or was restored beside a series of the same UID
    -- uploaded since: their instances (slices) stay; uploads do not extend them.
    CREATE TABLE IF NOT EXISTS dicom.detached_series (
        file_id uuid PRIMARY KEY,
        folder_id uuid NOT NULL,
        series_uid text NOT NULL,
        study_uid text NOT NULL,
        patient_id text NOT NULL,
        modality text,
        version integer NOT NULL,
        sha256 text
    );
    -- slice_key: the slice order (domain.slice_key; the slices route and DICOMweb read
    -- it), a key of the instance's own, which stays while its series' direction does.
    CREATE TABLE IF NOT EXISTS dicom.instances (
        file_id uuid NOT NULL,
        slice_key bytea NOT NULL,
        sop_uid text NOT NULL,
        name text NOT NULL,
        blob_key text NOT NULL,
        sha256 text NOT NULL,
        size bigint NOT NULL,
        facts jsonb NOT NULL,
        PRIMARY KEY (file_id, sop_uid)
    );
    -- Tables from before (2026-12-06) ranked slices 0..n-1 in `ordinal`, which every
    -- extension rewrote from its first new slice on, facts and all. Kept, null, while a
    -- replica of the version before may still write it (its rows get a key when their
    -- series is next extended); version 5's rebuild gives every row its key.
    ALTER TABLE dicom.instances ADD COLUMN IF NOT EXISTS slice_key bytea;
    DO $$ BEGIN
        ALTER TABLE dicom.instances ALTER COLUMN ordinal DROP NOT NULL;
    EXCEPTION WHEN undefined_column THEN NULL;
    END $$;
    -- Each job's account: how many of its instances are settled, the series files they
    -- joined, the errors of those rejected. Ingest knows the job's total.
    CREATE TABLE IF NOT EXISTS dicom.jobs (
        job_id uuid PRIMARY KEY,
        version integer NOT NULL,
        done integer NOT NULL,
        files jsonb NOT NULL,
        errors jsonb NOT NULL
    );
    -- Cancelled: its instances not read yet are skipped.
    ALTER TABLE dicom.jobs ADD COLUMN IF NOT EXISTS cancelled boolean NOT NULL DEFAULT false;
    -- The errors of a job's instances rejected, in order from 1 (`errors` stays []):
    -- appended a batch at a time, where a jsonb array was rewritten whole at each batch.
    CREATE TABLE IF NOT EXISTS dicom.job_errors (
        job_id uuid NOT NULL,
        position integer NOT NULL,
        error jsonb NOT NULL,
        PRIMARY KEY (job_id, position)
    );
    -- Rows from before (2026-12-06) kept them on the job's row: moved once, in order.
    -- After the rows the job has: a replica of the version before, during an upgrade,
    -- appends to the array from [] after the move (at positions the rows hold).
    INSERT INTO dicom.job_errors (job_id, position, error)
    SELECT j.job_id,
           coalesce((SELECT max(x.position) FROM dicom.job_errors x
                     WHERE x.job_id = j.job_id), 0) + e.i,
           e.error
    FROM dicom.jobs j, jsonb_array_elements(j.errors) WITH ORDINALITY AS e(error, i)
    WHERE j.errors <> '[]'
    ON CONFLICT DO NOTHING;
    UPDATE dicom.jobs SET errors = '[]' WHERE errors <> '[]';
    -- The series files a job's instances joined, each once (`files` stays []): a batch
    -- adds its own, where a jsonb array of them all was made again at each batch. Listed
    -- by id, as that array's DISTINCT ordered them, so pages read the same as before;
    -- `file_count` is kept with them, so a poll does not count a large job's rows.
    CREATE TABLE IF NOT EXISTS dicom.job_files (
        job_id uuid NOT NULL,
        file_id uuid NOT NULL,
        PRIMARY KEY (job_id, file_id)
    );
    ALTER TABLE dicom.jobs ADD COLUMN IF NOT EXISTS file_count integer NOT NULL DEFAULT 0;
    -- Rows from before (2026-12-06) kept them on the job's row: moved once. The count
    -- is of the rows, not the array: an array written again by a replica of the version
    -- before, during an upgrade, may hold files already moved.
    INSERT INTO dicom.job_files (job_id, file_id)
    SELECT j.job_id, f::uuid
    FROM dicom.jobs j, jsonb_array_elements_text(j.files) AS f
    WHERE j.files <> '[]'
    ON CONFLICT DO NOTHING;
    UPDATE dicom.jobs j
    SET files = '[]',
        file_count = (SELECT count(*) FROM dicom.job_files f WHERE f.job_id = j.job_id)
    WHERE j.files <> '[]';
    -- Each file's place in its job, from 1 without gaps, in the order the job listed
    -- them (a page read while the job runs is never read again, nor a new file missed
    -- for sorting before it, as when they were listed by id). Set by the trigger, so
    -- a replica of the version before, during an upgrade, numbers what it adds too.
    ALTER TABLE dicom.job_files ADD COLUMN IF NOT EXISTS position integer;
    CREATE OR REPLACE FUNCTION dicom.job_file_position() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.position IS NULL THEN
            -- Sees the rows an INSERT added before this one (a BEFORE row trigger).
            NEW.position := coalesce(
                (SELECT max(position) FROM dicom.job_files WHERE job_id = NEW.job_id), 0) + 1;
        END IF;
        RETURN NEW;
    END $$;
    CREATE OR REPLACE TRIGGER job_file_position BEFORE INSERT ON dicom.job_files
        FOR EACH ROW EXECUTE FUNCTION dicom.job_file_position();
    -- Rows from before the places: numbered by id, the order pages were read in then,
    -- after any the job has placed. The partial index finds them (none, past the first
    -- start) without reading the table at each start.
    CREATE INDEX IF NOT EXISTS job_files_unplaced ON dicom.job_files (job_id)
        WHERE position IS NULL;
    WITH unplaced AS (SELECT DISTINCT job_id FROM dicom.job_files WHERE position IS NULL),
         placed AS (SELECT f.job_id, max(f.position) AS top
                    FROM dicom.job_files f JOIN unplaced u USING (job_id)
                    GROUP BY f.job_id),
         numbered AS (SELECT y.job_id, y.file_id,
                             coalesce(p.top, 0) + row_number() OVER (
                                 PARTITION BY y.job_id ORDER BY y.file_id) AS position
                      FROM dicom.job_files y LEFT JOIN placed p USING (job_id)
                      WHERE y.position IS NULL)
    UPDATE dicom.job_files f SET position = n.position
    FROM numbered n
    WHERE f.job_id = n.job_id AND f.file_id = n.file_id;
    CREATE UNIQUE INDEX IF NOT EXISTS job_files_place ON dicom.job_files (job_id, position);
    -- An instance of a cloud-synced folder's object: the object (ingest's id for it)
    -- and the position in ingest's store of the event that stored it (its object's
    -- CloudObjectGone takes it out if recorded after). Null in other instances, and in
    -- those synced before it was kept.
    ALTER TABLE dicom.instances ADD COLUMN IF NOT EXISTS object_id uuid;
    ALTER TABLE dicom.instances ADD COLUMN IF NOT EXISTS object_position bigint;
    CREATE INDEX IF NOT EXISTS instances_object ON dicom.instances (object_id)
        WHERE object_id IS NOT NULL;
    -- Synced DICOM objects gone, at their last CloudObjectGone's position: a copy
    -- stored before it (of another job's stream, so maybe handled after it) is refused
    -- when it comes. The handler's, not a read model's: not in `tables`, so a rebuild
    -- keeps it.
    CREATE TABLE IF NOT EXISTS dicom.objects_gone_first (
        object_id uuid PRIMARY KEY,
        position bigint NOT NULL
    );
    -- Synced DICOM objects, at the newest position of a copy of theirs this context
    -- read (accepted or refused): a copy older than it is stale, whether or not an
    -- instance of the newest is here (refused, or its series purged). The handler's,
    -- as the table above.
    CREATE TABLE IF NOT EXISTS dicom.objects_newest_copy (
        object_id uuid PRIMARY KEY,
        position bigint NOT NULL
    );
    -- Rows of both past which no copy can come any more go, oldest first
    -- (handlers.forget_passed_objects).
    CREATE INDEX IF NOT EXISTS objects_gone_first_position
        ON dicom.objects_gone_first (position);
    CREATE INDEX IF NOT EXISTS objects_newest_copy_position
        ON dicom.objects_newest_copy (position);
    -- An import's DICOM series entries that name or describe the series they make.
    CREATE TABLE IF NOT EXISTS dicom.import_entries (
        entry_id uuid PRIMARY KEY,
        name text,
        metadata jsonb NOT NULL
    );
    """,
)


async def _series(
    conn: Conn,
    events: Sequence[Received[dicom_events.SeriesAssembled | dicom_events.SeriesExtended]],
) -> None:
    last = {e.data["file_id"]: e for e in events}
    # The event does not change the series' slices (its pages do): a direction true as of
    # the version before is true as of this one.
    await conn.execute(
        """INSERT INTO dicom.series AS s
           (folder_id, series_uid, file_id, study_uid, patient_id, modality, version, sha256)
           SELECT folder_id, series_uid, file_id, study_uid, patient_id, modality, version,
                  sha256
           FROM jsonb_to_recordset($1::jsonb) AS x(
               folder_id uuid, series_uid text, file_id uuid, study_uid text,
               patient_id text, modality text, version integer, sha256 text)
           ON CONFLICT (folder_id, series_uid) DO UPDATE
           SET modality = excluded.modality, version = excluded.version,
               sha256 = excluded.sha256,
               slice_version = CASE WHEN s.slice_version = s.version
                                    THEN excluded.version END""",
        [
            {k: v for k, v in e.data.items() if k != "instances"} | {"version": e.stream_version}
            for e in last.values()
        ],
    )
    # Events from before pages hold every instance of the series, in slice order.
    whole = {file_id: e for file_id, e in last.items() if e.data.get("instances")}
    if whole:
        await conn.execute(
            """WITH gone AS (DELETE FROM dicom.instances WHERE file_id = ANY($1::uuid[]))
               UPDATE dicom.series SET slice_version = NULL WHERE file_id = ANY($1::uuid[])""",
            list(whole),
        )
        await _insert(
            conn,
            [(file_id, i) for file_id, e in whole.items() for i in e.data["instances"]],
            {file_id: e.stream_version for file_id, e in whole.items()},
        )


def instance_of(facts: dict[str, Any]) -> domain.Instance:
    def tupled(key: str) -> Any:
        value = facts.get(key)
        return tuple(value) if value is not None else None

    return domain.Instance(
        **{
            **facts,
            "position": tupled("position"),
            "orientation": tupled("orientation"),
            "pixel_spacing": tupled("pixel_spacing"),
        }
    )


async def _insert(
    conn: Conn, instances: list[tuple[Any, dict[str, Any]]], versions: dict[Any, int]
) -> None:
    """Instances their series does not have yet (by SOPInstanceUID; the first of a UID
    given twice), each with its slice key, and each series' row at its new version
    (`versions`, by file id) with its slice direction. Keys depend on the series' slice
    direction, which only a new lowest UID of another orientation, or a slice without a
    position, changes: then the series' other keys are written again; otherwise only the
    new rows are written (ranks moved every slice after the first new one, at each
    extension)."""
    # By the id's text as PostgreSQL writes it (events carry it as text, read or made).
    stamped = {_text(f): v for f, v in versions.items()}
    files = list({_text(file_id) for file_id, _ in instances} | set(stamped))
    # The direction as the series' row keeps it; read from the slices only where the row
    # does not vouch for it. (Each extension read every slice's UID and orientation:
    # O(n) a batch, ~2 ms of a page's 7-11 at 2,000 slices, loaded, for a direction that
    # almost always stays.)
    before: dict[str, _Direction] = {
        r["file_id"]: _Direction.of_row(r)
        for r in await conn.fetch(
            """SELECT file_id::text AS file_id, slice_lowest_uid, slice_normal
               FROM dicom.series
               WHERE file_id = ANY($1::uuid[]) AND slice_version = version""",
            files,
        )
    }
    had: dict[str, set[str]] = {f: set() for f in files}
    unknown = [f for f in files if f not in before]
    if unknown:
        for r in await conn.fetch(
            """SELECT file_id::text AS file_id, array_agg(sop_uid) AS uids,
                      array_agg(facts->>'orientation') AS orientations,
                      bool_and(jsonb_typeof(facts->'position') = 'array'
                               AND jsonb_typeof(facts->'orientation') = 'array') AS placed,
                      bool_or(slice_key IS NULL) AS unkeyed
               FROM dicom.instances WHERE file_id = ANY($1::uuid[]) GROUP BY file_id""",
            unknown,
        ):
            before[r["file_id"]] = _Direction.of_slices(r)
            had[r["file_id"]] = set(r["uids"])
    kept = set(files).difference(unknown)
    if kept:
        # Which of the given UIDs the series has: by its key, the given ones only.
        given = [(f, i["sop_uid"]) for f, i in instances if _text(f) in kept]
        for r in await conn.fetch(
            """SELECT i.file_id::text AS file_id, i.sop_uid
               FROM dicom.instances i JOIN unnest($1::uuid[], $2::text[]) AS x(f, u)
                    ON i.file_id = x.f AND i.sop_uid = x.u""",
            [f for f, _ in given],
            [u for _, u in given],
        ):
            had[r["file_id"]].add(r["sop_uid"])
    new: dict[str, dict[str, tuple[_Placed, dict[str, Any]]]] = {f: {} for f in files}
    for given_id, i in instances:
        file_id = _text(given_id)
        if i["sop_uid"] not in had[file_id] and i["sop_uid"] not in new[file_id]:
            new[file_id][i["sop_uid"]] = (_Placed.of_facts(i["sop_uid"], i["facts"]), i)
    after = {f: before.get(f, _EMPTY).joined([p for p, _ in new[f].values()]) for f in files}
    again = [
        f
        for f in files
        if f in before
        and before[f].lowest is not None
        and (before[f].unkeyed or before[f].normal != after[f].normal)
    ]
    placed_again: dict[str, dict[str, tuple[_Placed, bytes | None]]] = {f: {} for f in again}
    if again:
        for r in await conn.fetch(
            """SELECT file_id::text AS file_id, sop_uid, slice_key,
                      facts->'position' AS position, facts->'orientation' AS orientation,
                      (facts->>'instance_number')::bigint AS instance_number
               FROM dicom.instances WHERE file_id = ANY($1::uuid[])""",
            again,
        ):
            placed_again[r["file_id"]][r["sop_uid"]] = (_Placed.of(r), r["slice_key"])
    rekeyed: list[tuple[str, str, bytes]] = []
    added: list[tuple[str, bytes, dict[str, Any]]] = []
    for file_id in files:
        old = placed_again.get(file_id, {})
        news = [p for p, _ in new[file_id].values()]
        if old:
            # The whole series read: its direction as `order` takes it, not as kept.
            after[file_id] = _Direction.of_placed([p for p, _ in old.values()] + news)
        normal = after[file_id].normal
        for sop_uid, (p, key) in old.items():
            if (now := domain.slice_key(p, normal)) != key:
                rekeyed.append((file_id, sop_uid, now))
        added += [(file_id, domain.slice_key(p, normal), i) for p, i in new[file_id].values()]
    await _rekey(conn, rekeyed)
    if added:
        # Arrays a column each: the rows as one jsonb document were parsed whole, then
        # each one's facts written out and parsed again.
        await conn.execute(
            """INSERT INTO dicom.instances
               (file_id, slice_key, sop_uid, name, blob_key, sha256, size, facts, object_id,
                object_position)
               SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::text[], $4::text[],
                                    $5::text[], $6::text[], $7::bigint[], $8::jsonb[],
                                    $9::uuid[], $10::bigint[])
               ON CONFLICT (file_id, sop_uid) DO NOTHING""",
            [f for f, _, _ in added],
            [k for _, k, _ in added],
            *(
                [i[c] for _, _, i in added]
                for c in ("sop_uid", "name", "blob_key", "sha256", "size", "facts")
            ),
            [i.get("object_id") for _, _, i in added],
            [i.get("object_position") for _, _, i in added],
        )
    rows = [(f, stamped[f], after[f]) for f in files if f in stamped]
    await conn.execute(
        """UPDATE dicom.series s
           SET version = x.version, slice_version = x.version, slice_lowest_uid = x.lowest,
               slice_normal = CASE WHEN x.nx IS NOT NULL THEN ARRAY[x.nx, x.ny, x.nz] END
           FROM unnest($1::uuid[], $2::int[], $3::text[], $4::float8[], $5::float8[],
                       $6::float8[]) AS x(file_id, version, lowest, nx, ny, nz)
           WHERE s.file_id = x.file_id""",
        [f for f, _, _ in rows],
        [v for _, v, _ in rows],
        [d.lowest for _, _, d in rows],
        *([d.normal[n] if d.normal else None for _, _, d in rows] for n in range(3)),
    )


def _text(file_id: Any) -> str:
    return str(uuid.UUID(str(file_id)))


@dataclass(frozen=True, slots=True)
class _Direction:
    """A series' slice direction (`domain.slice_normal`'s) and what a new slice would
    change it by: its lowest UID (None: no slices), and that slice's normal when every
    slice is placed (None: by InstanceNumber). `unkeyed`: a row of it has no key yet."""

    lowest: str | None
    normal: tuple[float, float, float] | None
    unkeyed: bool = False

    @staticmethod
    def of_row(row: Any) -> _Direction:
        normal = row["slice_normal"]
        return _Direction(row["slice_lowest_uid"], tuple(normal) if normal else None)

    @staticmethod
    def of_slices(row: Any) -> _Direction:
        """Of the aggregate of a series' rows: their UIDs, orientations, whether all are
        placed and all keyed."""
        uids = row["uids"]
        lowest = min(uids, key=domain.uid_order)
        orientation = row["orientations"][uids.index(lowest)]
        normal = domain.normal_of(orjson.loads(orientation)) if row["placed"] else None
        return _Direction(lowest, normal, row["unkeyed"])

    @staticmethod
    def of_placed(members: Sequence[domain.Placed]) -> _Direction:
        lowest = min(members, key=lambda p: domain.uid_order(p.sop_uid)) if members else None
        return _Direction(lowest.sop_uid if lowest else None, domain.slice_normal(members))

    def joined(self, news: Sequence[domain.Placed]) -> _Direction:
        """With these new slices (UIDs it does not have), as `domain.slice_normal` of all
        its slices would give it (ties between UIDs equal as numbers keep the first)."""
        if not news:
            return self
        if self.lowest is None:
            return _Direction.of_placed(news)
        lowest = min(news, key=lambda p: domain.uid_order(p.sop_uid))
        lower = domain.uid_order(lowest.sop_uid) < domain.uid_order(self.lowest)
        normal = self.normal
        if normal is not None:
            if not all(p.position is not None and p.orientation is not None for p in news):
                normal = None
            elif lower:
                assert lowest.orientation is not None
                normal = domain.normal_of(lowest.orientation)
        return _Direction(lowest.sop_uid if lower else self.lowest, normal, self.unkeyed)


_EMPTY = _Direction(None, None)


@series.on(dicom_events.ImportEntryDescribed)
async def import_entry_described(
    conn: Conn, events: Sequence[Received[dicom_events.ImportEntryDescribed]]
) -> None:
    await conn.executemany(
        """INSERT INTO dicom.import_entries (entry_id, name, metadata) VALUES ($1, $2, $3)
           ON CONFLICT (entry_id) DO NOTHING""",
        [(e.event.entry_id, e.event.name, e.event.metadata) for e in events],
    )


series.on(dicom_events.SeriesAssembled)(_series)
series.on(dicom_events.SeriesExtended)(_series)


@dataclass(frozen=True, slots=True)
class _Placed:
    sop_uid: str
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    instance_number: int | None

    @staticmethod
    def of(row: Any) -> _Placed:
        position, orientation = row["position"], row["orientation"]
        return _Placed(
            row["sop_uid"],
            tuple(position) if position is not None else None,
            tuple(orientation) if orientation is not None else None,
            row["instance_number"],
        )

    @staticmethod
    def of_facts(sop_uid: str, facts: dict[str, Any]) -> _Placed:
        return _Placed.of(
            {
                "sop_uid": sop_uid,
                "position": facts.get("position"),
                "orientation": facts.get("orientation"),
                "instance_number": facts.get("instance_number"),
            }
        )


@series.on(dicom_events.SeriesInstancesAdded)
async def instances_added(
    conn: Conn, events: Sequence[Received[dicom_events.SeriesInstancesAdded]]
) -> None:
    # The series' version follows its last page (the next write's check).
    await _insert(
        conn,
        [(e.data["file_id"], i) for e in events for i in e.data["instances"]],
        {e.data["file_id"]: e.stream_version for e in events},
    )


@series.on(dicom_events.SeriesShrunk)
async def series_shrunk(conn: Conn, events: Sequence[Received[dicom_events.SeriesShrunk]]) -> None:
    """The series as it now is, wherever its row is (a series in the trash loses them
    too); its instances go with the pages that follow."""
    rows = [(e.event.file_id, e.stream_version, e.event.sha256) for e in events]
    for table in ("dicom.series", "dicom.detached_series"):
        await conn.executemany(
            f"UPDATE {table} SET version = $2, sha256 = $3 WHERE file_id = $1", rows
        )


@series.on(dicom_events.SeriesInstancesRemoved)
async def instances_removed(
    conn: Conn, events: Sequence[Received[dicom_events.SeriesInstancesRemoved]]
) -> None:
    removed = [(e.event.file_id, i["sop_uid"]) for e in events for i in e.event.instances]
    await conn.execute(
        """DELETE FROM dicom.instances i USING unnest($1::uuid[], $2::text[]) AS x(f, u)
           WHERE i.file_id = x.f AND i.sop_uid = x.u""",
        [f for f, _ in removed],
        [u for _, u in removed],
    )
    last = {e.event.file_id: e.stream_version for e in events}
    for table in ("dicom.series", "dicom.detached_series"):
        await conn.execute(
            f"""UPDATE {table} s SET version = x.version
                FROM unnest($1::uuid[], $2::int[]) AS x(file_id, version)
                WHERE s.file_id = x.file_id""",
            list(last),
            list(last.values()),
        )
    await _keyed_again(conn, list(last))


async def _keyed_again(conn: Conn, files: list[uuid.UUID]) -> None:
    """The slice keys of these series' rows as their direction now is: instances that
    left may have been the ones it was taken from (the lowest UID)."""
    placed: dict[uuid.UUID, list[tuple[_Placed, bytes | None]]] = {}
    for r in await conn.fetch(
        """SELECT file_id, sop_uid, slice_key,
                  facts->'position' AS position, facts->'orientation' AS orientation,
                  (facts->>'instance_number')::bigint AS instance_number
           FROM dicom.instances WHERE file_id = ANY($1::uuid[])""",
        files,
    ):
        placed.setdefault(r["file_id"], []).append((_Placed.of(r), r["slice_key"]))
    rekeyed: list[tuple[uuid.UUID, str, bytes]] = []
    for file_id, rows in placed.items():
        normal = domain.slice_normal([p for p, _ in rows])
        rekeyed += [
            (file_id, p.sop_uid, now)
            for p, key in rows
            if (now := domain.slice_key(p, normal)) != key
        ]
    await _rekey(conn, rekeyed)


async def _rekey(conn: Conn, rekeyed: list[tuple[Any, str, bytes]]) -> None:
    """New slice keys (file id, SOP Instance UID, key) for rows already there."""
    if rekeyed:
        await conn.execute(
            """UPDATE dicom.instances i SET slice_key = x.slice_key
               FROM unnest($1::uuid[], $2::text[], $3::bytea[]) AS x(file_id, sop_uid, slice_key)
               WHERE i.file_id = x.file_id AND i.sop_uid = x.sop_uid""",
            [m[0] for m in rekeyed],
            [m[1] for m in rekeyed],
            [m[2] for m in rekeyed],
        )


@series.on(dicom_events.SeriesReleased)
async def series_released(
    conn: Conn, events: Sequence[Received[dicom_events.SeriesReleased]]
) -> None:
    files = [e.event.file_id for e in events]
    await conn.execute("DELETE FROM dicom.series WHERE file_id = ANY($1::uuid[])", files)
    await conn.execute("DELETE FROM dicom.detached_series WHERE file_id = ANY($1::uuid[])", files)
    await conn.execute("DELETE FROM dicom.instances WHERE file_id = ANY($1::uuid[])", files)


_SERIES_COLUMNS = "file_id, folder_id, series_uid, study_uid, patient_id, modality, version, sha256"


async def _move_series(
    conn: Conn,
    events: Sequence[Received[dicom_events.SeriesTrashed | dicom_events.SeriesRestored]],
    source: str,
    target: str,
) -> None:
    """The events' series rows from one table to the other, at the events' versions."""
    last = {e.event.file_id: e.stream_version for e in events}
    await conn.execute(
        f"""WITH moved AS (DELETE FROM {source} WHERE file_id = ANY($1::uuid[])
                           RETURNING {_SERIES_COLUMNS})
            INSERT INTO {target} ({_SERIES_COLUMNS})
            SELECT file_id, folder_id, series_uid, study_uid, patient_id, modality,
                   x.version, sha256
            FROM moved JOIN unnest($1::uuid[], $2::int[]) AS x(f, version) ON x.f = moved.file_id
            ON CONFLICT DO NOTHING""",
        list(last),
        list(last.values()),
    )


@series.on(dicom_events.SeriesTrashed)
async def series_trashed(
    conn: Conn, events: Sequence[Received[dicom_events.SeriesTrashed]]
) -> None:
    await _move_series(conn, events, "dicom.series", "dicom.detached_series")


@series.on(dicom_events.SeriesRestored)
async def series_restored(
    conn: Conn, events: Sequence[Received[dicom_events.SeriesRestored]]
) -> None:
    await _move_series(conn, events, "dicom.detached_series", "dicom.series")


@series.on(dicom_events.SeriesMoved)
async def series_moved(conn: Conn, events: Sequence[Received[dicom_events.SeriesMoved]]) -> None:
    await conn.executemany(
        """UPDATE dicom.series
           SET folder_id = $2, version = $3::int,
               slice_version = CASE WHEN slice_version = version THEN $3::int END
           WHERE file_id = $1""",
        [(e.data["file_id"], e.data["to_folder_id"], e.stream_version) for e in events],
    )


async def _accepted(conn: Conn, rows: list[dict[str, Any]]) -> None:
    """Rows {job_id, version, file_id}: one an accepted instance."""
    if not rows:
        return
    # The job counts only the files this batch listed first (a series' later instances,
    # in this batch or another, join a file already listed).
    await conn.execute(
        """WITH r AS (
               SELECT job_id, version, file_id, n
               FROM jsonb_to_recordset($1::jsonb) AS x(
                   n integer, job_id uuid, version integer, file_id uuid)),
           listed AS (
               -- In the order the batch names them: the trigger numbers them so.
               INSERT INTO dicom.job_files (job_id, file_id)
               SELECT job_id, file_id FROM r GROUP BY job_id, file_id ORDER BY min(n)
               ON CONFLICT DO NOTHING
               RETURNING job_id)
           INSERT INTO dicom.jobs AS j (job_id, version, done, files, errors, file_count)
           SELECT job_id, max(version), count(*), '[]', '[]',
                  (SELECT count(*) FROM listed WHERE listed.job_id = r.job_id)
           FROM r GROUP BY job_id
           ON CONFLICT (job_id) DO UPDATE
           SET version = greatest(j.version, excluded.version), done = j.done + excluded.done,
               file_count = j.file_count + excluded.file_count""",
        [{**r, "n": n} for n, r in enumerate(rows)],
    )


async def _rejected(conn: Conn, rows: list[dict[str, Any]]) -> None:
    """Rows {job_id, version, name, code, message, details}: one a rejected instance, in
    the order they were settled."""
    if not rows:
        return
    await conn.execute(
        """WITH r AS (
               SELECT job_id, version,
                      jsonb_build_object('name', name, 'code', code, 'message', message,
                                         'details', details) AS error,
                      row_number() OVER (PARTITION BY job_id ORDER BY n) AS k
               FROM jsonb_to_recordset($1::jsonb) AS x(
                   n integer, job_id uuid, version integer, name text, code text,
                   message text, details jsonb)),
           appended AS (
               INSERT INTO dicom.job_errors (job_id, position, error)
               SELECT r.job_id,
                      coalesce((SELECT max(e.position) FROM dicom.job_errors e
                                WHERE e.job_id = r.job_id), 0) + r.k,
                      r.error
               FROM r)
           INSERT INTO dicom.jobs AS j (job_id, version, done, files, errors)
           SELECT job_id, max(version), count(*), '[]', '[]' FROM r GROUP BY job_id
           ON CONFLICT (job_id) DO UPDATE
           SET version = greatest(j.version, excluded.version), done = j.done + excluded.done""",
        [{**r, "n": n} for n, r in enumerate(rows)],
    )


def _rejection(job_id: Any, version: int, rejected: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "version": version,
        **{k: rejected[k] for k in ("name", "code", "message")},
        "details": rejected.get("details") or {},
    }


@series.on(dicom_events.InstancesSettled)
async def instances_settled(
    conn: Conn, events: Sequence[Received[dicom_events.InstancesSettled]]
) -> None:
    await _accepted(
        conn,
        [
            {"job_id": e.data["job_id"], "version": e.stream_version, "file_id": a["file_id"]}
            for e in events
            for a in e.data["accepted"]
        ],
    )
    await _rejected(
        conn,
        [
            _rejection(e.data["job_id"], e.stream_version, r)
            for e in events
            for r in e.data["rejected"]
        ],
    )


@series.on(dicom_events.InstanceAccepted)
async def instances_accepted(
    conn: Conn, events: Sequence[Received[dicom_events.InstanceAccepted]]
) -> None:
    await _accepted(
        conn,
        [
            {"job_id": e.data["job_id"], "version": e.stream_version, "file_id": e.data["file_id"]}
            for e in events
        ],
    )


@series.on(dicom_events.InstanceRejected)
async def instances_rejected(
    conn: Conn, events: Sequence[Received[dicom_events.InstanceRejected]]
) -> None:
    await _rejected(conn, [_rejection(e.data["job_id"], e.stream_version, e.data) for e in events])


@series.on(dicom_events.JobCancelled)
async def job_cancelled(conn: Conn, events: Sequence[Received[dicom_events.JobCancelled]]) -> None:
    await conn.executemany(
        """INSERT INTO dicom.jobs AS j (job_id, version, done, files, errors, cancelled)
           VALUES ($1, $2, 0, '[]', '[]', true)
           ON CONFLICT (job_id) DO UPDATE
           SET version = greatest(j.version, excluded.version), cancelled = true""",
        [(e.event.job_id, e.stream_version) for e in events],
    )
