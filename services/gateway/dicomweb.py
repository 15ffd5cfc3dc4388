"""DICOMweb at the edge (the DICOM context serves it: services/dicom/dicomweb.py).

Searches and retrievals: the catalog says whether the caller may see the folder (its
path is signed in the caller's token: the DICOM context decides the role again), then
the DICOM context's answer is streamed through. STOW-RS: the editor role on the folder,
the body streamed to ingest as a DICOM upload, then the job waited for (at most
STORE_WAIT_S) and answered as PS3.18 says: 200 when every instance was stored, 202 when
some failed (or the job is still going: follow `Content-Location`), 409 when none was.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from fastapi.responses import Response, StreamingResponse
from python_multipart.multipart import parse_options_header
from starlette.background import BackgroundTask

from services.gateway import deadlines
from services.gateway.edge import Call, error_response

if TYPE_CHECKING:
    from services.gateway.compose import Compose

DICOM_JSON = "application/dicom+json"
STORE_WAIT_S = 60.0
# PS3.4 status codes for an instance not stored: the file cannot be read; it is DICOM
# but lacks what an image needs; any other refusal.
CANNOT_UNDERSTAND = 0xC000
NOT_AN_IMAGE = 0xA900
PROCESSING_FAILURE = 0x0110
_REASONS = {
    "not_dicom": CANNOT_UNDERSTAND,
    "malformed_dicom": CANNOT_UNDERSTAND,
    "truncated": CANNOT_UNDERSTAND,
    "unsupported_transfer_syntax": CANNOT_UNDERSTAND,
    "missing_tags": NOT_AN_IMAGE,
    "invalid_tags": NOT_AN_IMAGE,
}


def _media(text: str) -> tuple[str, dict[str, str]]:
    main, options = parse_options_header(text)
    return main.decode("latin-1").lower(), {
        k.decode("latin-1").lower(): v.decode("latin-1").lower() for k, v in options.items()
    }


def admits(accept: str, given: str) -> bool:
    """Whether an Accept header admits the media type of an answer (PS3.18 8.7: else
    406): type and subtype, with wildcards; `application/json` for DICOM JSON; for
    `multipart/related` also its `type` parameter, where `application/octet-stream`
    admits a frame's own bitstream type too (Cornerstone, so OHIF, asks every frame so,
    with `transfer-syntax=*`, and takes each part by its own type; no transcoding is
    done here either way); any image type admits the PNG a frame is rendered as (viewers
    ask `image/jpeg` for thumbnails and read what comes). Other parameters are not
    weighed. The most specific range that matches decides (RFC 9110 12.5.1), so a type
    refused by name (`q=0`) is refused whatever wildcard admits it."""
    if not accept.strip():
        return True
    answer, answer_options = _media(given)
    # (how specific, admitted) of each range that matches the answer.
    matches: list[tuple[int, bool]] = []
    for asked in accept.split(","):
        main, options = _media(asked)
        admitted = options.get("q", "1").strip("0.") != ""
        kind, _, sub = main.partition("/")
        if main == answer or (main == "application/json" and answer == DICOM_JSON):
            part = options.get("type")
            if answer != "multipart/related" or part in (None, "*/*", answer_options.get("type")):
                matches.append((4, admitted))
            elif part == "application/octet-stream" and admitted:
                matches.append((3, True))  # a frame's own bitstream type (OHIF)
        elif sub == "*" and answer.startswith(kind + "/"):
            matches.append((2, admitted))
        elif main in ("*/*", "*"):
            matches.append((1, admitted))
        elif kind == "image" and answer == "image/png" and admitted:
            matches.append((2, True))  # the PNG a frame is rendered as
    return bool(matches) and max(matches)[1]


async def retrieve(compose: Compose, call: Call) -> Response:
    gateway = compose.gateway
    folder = await compose.find_folder(call, call.values["folder_id"])
    if folder.status_code != 200:
        return gateway.relay(folder)
    gateway.take_transfer(call)
    answer = await gateway.call(
        "dicom",
        "GET",
        call.path,
        call.request,
        call.user,
        params=call.query(),
        stream=True,
        folder_path=compose.path_of(folder),
    )
    if answer.status_code != 200:
        await answer.aread()
        await answer.aclose()
        return gateway.relay(answer)
    accept = call.request.headers.get("accept", "")
    if not admits(accept, answer.headers["content-type"]):
        await answer.aclose()
        given, options = _media(answer.headers["content-type"])
        if "type" in options:
            given += f'; type="{options["type"]}"'
        return error_response(
            406,
            "not_acceptable",
            f"this resource is given as {given}; the Accept header admits none of it",
            accept=accept[:200],
        )
    headers = {
        k: v for k, v in answer.headers.items() if k.lower() in ("content-length", "warning")
    }
    headers["X-Content-Type-Options"] = "nosniff"
    return StreamingResponse(
        gateway.while_allowed(answer, call, compose.path_of(folder)),
        headers=headers,
        media_type=answer.headers["content-type"],
        background=BackgroundTask(answer.aclose),
    )


async def store(compose: Compose, call: Call) -> Response:
    gateway = compose.gateway
    folder = await compose.find_folder(call, call.values["folder_id"], "editor")
    if folder.status_code != 200:
        return gateway.relay(folder)
    # As for any DICOM upload: the DICOM context first catches up with the catalog.
    await gateway.catch_up(call.request, "dicom", "catalog")
    stored = await gateway.forward(call, stream_body=True, folder_path=compose.path_of(folder))
    if stored.status_code != 202:
        return gateway.relay(stored)
    job_id, instances = stored.json()["job_id"], int(stored.json()["instances"])
    # A wait with its own bound (STORE_WAIT_S), as a consistency wait is.
    with deadlines.paused(call.request):
        done = await _settled(compose, call, job_id, instances)
    if done:
        # Read-your-writes: the series files are in the catalog once this answers.
        await gateway.catch_up(call.request, "catalog", "dicom")
    found = (
        await gateway.call("dicom", "GET", f"/internal/jobs/{job_id}/settled", call.request)
    ).json()
    body = _answer(found["accepted"], found["rejected"])
    headers = {"Content-Location": f"/v1/jobs/{job_id}"}
    if not done:
        left = instances - len(found["accepted"]) - len(found["rejected"])
        headers["Warning"] = f'299 files "{left} of {instances} still storing: follow the job"'
        status = 202
    elif not found["rejected"]:
        status = 200
    else:
        status = 202 if found["accepted"] else 409
    return Response(orjson.dumps(body), status, headers=headers, media_type=DICOM_JSON)


async def _settled(compose: Compose, call: Call, job_id: str, instances: int) -> bool:
    """Whether every instance of the job was settled (or the job cancelled) in time."""
    deadline = time.monotonic() + STORE_WAIT_S
    pause = 0.02
    while True:
        try:
            job = await compose.gateway.call(
                "dicom", "GET", f"/internal/jobs/{job_id}", call.request
            )
            account = job.json() if job.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            account = {}
        if account.get("cancelled") or int(account.get("done", 0)) >= instances:
            return True
        if time.monotonic() + pause > deadline:
            return False
        await asyncio.sleep(pause)  # the DICOM context reads the instances meanwhile
        pause = min(pause * 2, 0.5)


def _answer(accepted: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> dict[str, Any]:
    """The Store Instances Response (PS3.18 10.5.3): the instances stored, those not."""
    body: dict[str, Any] = {}
    if accepted:
        body["00081199"] = {
            "vr": "SQ",
            "Value": [
                {
                    **(
                        {"00081150": {"vr": "UI", "Value": [a["sop_class_uid"]]}}
                        if a.get("sop_class_uid")
                        else {}
                    ),
                    "00081155": {"vr": "UI", "Value": [a["sop_uid"]]},
                    "0020000E": {"vr": "UI", "Value": [a["series_uid"]]},
                }
                for a in accepted
            ],
        }
    if rejected:
        body["00081198"] = {
            "vr": "SQ",
            "Value": [
                {"00081197": {"vr": "US", "Value": [_REASONS.get(r["code"], PROCESSING_FAILURE)]}}
                for r in rejected
            ],
        }
    return body
