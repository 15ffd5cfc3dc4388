"""`POST /v1/jobs/{id}/cancel` (issue 17): an import, an upload session or a DICOM job
stops; what it did stays, nothing more appears; again is no error; a finished job is a
409 naming why; the caller's right is checked."""

from __future__ import annotations

import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from files_client import Client, Conflict
from minio import Minio

from services.gateway.files_pb.files.v1 import files_pb2 as pb
from services.ingest.imports.runner import BATCH
from services.ingest.jobs.projections import jobs
from shared.contracts import ingest as ev
from shared.contracts.envelope import Cause, appended, envelopes_of
from shared.kit.eventstore import EventStore
from shared.kit.stack import Stack
from tests.cloud_fixtures import MotoS3
from tests.conftest import ADMIN_KEY, eventually
from tests.e2e import test_dicom as dicom
from tests.e2e import test_grpc
from tests.e2e.support import CONSISTENCY, error, folder, items, member, png, unique, upload
from tests.e2e.test_access import invite
from tests.e2e.test_cli import env, ok
from tests.e2e.test_imports import finished, integration, put, start_import

__all__ = ["env"]  # the command's environment, a fixture of test_cli's
grpc_client = test_grpc.client  # the gRPC client, a fixture of test_grpc's

# Four batches' worth (runner.BATCH): the first recorded, and more than the runner's
# reads in flight (32 runs of 8) still to read when the customer's bucket is paused
# (below), so the cancel finds the import midway: keys past the pause cost only their
# puts here, as nothing reads them before the cancel.
KEYS = 4 * BATCH


async def test_an_import_cancelled_midway_keeps_what_it_registered_and_stops(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, as_key: Any
) -> None:
    run = unique("cancel")
    data = png(2, 2)
    keys = [f"{run}/{n:05}.png" for n in range(KEYS)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: put(bucket, key, data), keys))
    integration_id = await integration(api, moto)
    top = await folder(api, unique("cancelled-import"))
    job_id = await start_import(api, top["id"], integration_id=integration_id, keys=keys)

    async def started() -> bool:
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        assert job["status"] == "running", job  # cancelled before it could finish
        return bool(job["progress"]["done"])

    await eventually(started, within=60, what="the import's first batch")
    # The bucket paused (SIGSTOP: its connections open, nothing answered): the reads
    # after the first batch wait, and the job is still running when the cancel comes.
    moto.process.send_signal(signal.SIGSTOP)
    try:
        # Someone who cannot see the folder does not find the job; a viewer may not stop it.
        stranger = await member(api, "cancel-stranger")
        viewer = await member(api, "cancel-viewer")
        await invite(api, top["id"], viewer["email"], "viewer")
        url = f"/v1/jobs/{job_id}/cancel"
        error(await as_key(stranger["api_key"]).post(url), 404, "not_found")
        refused = error(await as_key(viewer["api_key"]).post(url), 403)
        assert refused["details"].get("role_needed") == "editor", refused

        cancelled = await api.post(url)
    finally:
        moto.process.send_signal(signal.SIGCONT)
    assert cancelled.status_code == 200, cancelled.text
    job = cancelled.json()
    assert job["status"] == "cancelled"
    assert 0 < len(job["files"]) < KEYS
    assert job["progress"]["done"] < KEYS
    # Again: the same job, no error.
    again = await api.post(url)
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "cancelled"
    assert len(again.json()["files"]) == len(job["files"])

    # Another import that runs to its end after the cancel: by then the cancelled
    # one's run has had every chance to record more. It did not.
    later = await folder(api, unique("after-cancel"))
    second = await start_import(api, later["id"], integration_id=integration_id, keys=keys[:1])
    await finished(api, second, files=1)
    listed = await items(api, top["id"])
    assert len(listed) == len(job["files"])
    assert {f["id"] for f in listed} == {f["id"] for f in job["files"]}
    shown = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert shown["status"] == "cancelled"
    assert shown["progress"] == job["progress"]


async def test_a_session_is_cancelled_and_a_finished_job_is_a_conflict(
    api: httpx.AsyncClient, platform: Stack, env: dict[str, str]
) -> None:
    top = await folder(api, unique("cancel-session"))
    opened = await api.post(
        f"/v1/folders/{top['id']}/uploads", json={"name": "big.bin", "size": 10 * 1024 * 1024}
    )
    assert opened.status_code == 201, opened.text
    session = opened.json()
    out = ok(env, "jobs", "cancel", session["job_id"])
    assert "cancelled" in out
    shown = (await api.get(f"/v1/uploads/{session['id']}")).json()
    assert shown["status"] == "cancelled"
    error(await api.post(f"/v1/uploads/{session['id']}/complete"), 409, "session_ended")
    assert (await api.post(f"/v1/jobs/{session['job_id']}/cancel")).status_code == 200

    made = await upload(api, top["id"], ("a.png", png()))
    done = error(await api.post(f"/v1/jobs/{made['job_id']}/cancel"), 409, "job_finished")
    assert done["details"]["status"] == "done"
    assert "done" in done["message"]
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        try:
            c.cancel_job(made["job_id"])
        except Conflict as conflict:
            assert conflict.code == "job_finished"
        else:
            raise AssertionError("a finished job was cancelled")
    error(await api.post("/v1/jobs/00000000-0000-4000-8000-000000000000/cancel"), 404)


async def test_a_cancelled_dicom_job_skips_the_instances_not_read_yet(
    api: httpx.AsyncClient, pool: Any, grpc_client: test_grpc.Client
) -> None:
    """The job is started (as an upload records it) and cancelled before the DICOM
    context reads its instances: when they come, they are skipped, neither accepted nor
    rejected (their blobs are not even there: reading one would reject it)."""
    top = await folder(api, unique("cancel-dicom"))
    me = (await api.get("/v1/users/me")).json()["id"]
    job_id = uuid.uuid4()
    cause = Cause(actor=me, correlation_id="cancel-dicom-test")
    folder_id = uuid.UUID(top["id"])
    started = appended(
        ev.job_stream(job_id),
        [ev.UploadJobStarted(job_id=job_id, folder_id=folder_id, total=2, kind="dicom")],
    )
    await _record(pool, envelopes_of(started, cause))
    # Over gRPC, as over HTTP.
    job = await grpc_client.jobs.CancelJob(
        pb.GetJobRequest(job_id=str(job_id)), metadata=test_grpc.ADMIN
    )
    assert job.status == "cancelled"
    assert (job.progress.done, job.progress.total) == (0, 2)
    instances = appended(
        ev.job_stream(job_id),
        [
            ev.DicomInstanceStored(
                job_id=job_id,
                folder_id=folder_id,
                name=f"{n}.dcm",
                blob_key=f"nowhere-{uuid.uuid4().hex}",
                sha256="0" * 64,
                size=1,
            )
            for n in range(2)
        ],
        after=2,
    )
    position = await _record(pool, envelopes_of(instances, cause))
    # Read once every service has applied them (the DICOM context among them).
    shown = await api.get(f"/v1/jobs/{job_id}", headers={CONSISTENCY: f"ingest:{position}"})
    assert shown.status_code == 200, shown.text
    assert shown.json()["status"] == "cancelled"
    assert shown.json()["progress"] == {"done": 0, "total": 2}
    assert shown.json()["errors"] == []


async def test_a_dicom_job_done_is_a_conflict(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("cancel-dicom-done"))
    job_id = await dicom.send(api, top["id"], *dicom.slices(dicom.fresh_study(), 1, 3))
    await dicom.finished(api, job_id)
    done = error(await api.post(f"/v1/jobs/{job_id}/cancel"), 409, "job_finished")
    assert done["details"] == {"id": job_id, "status": "done"}
    assert (await api.get(f"/v1/jobs/{job_id}")).json()["status"] == "done"


async def _record(pool: Any, envelopes: list[Any]) -> int:
    async with pool.acquire() as conn, conn.transaction():
        await jobs.apply(conn, envelopes)
        return await EventStore("ingest").append(conn, envelopes)
