"""Uploads, jobs, upload sessions, integrations and imports: ingest's part of the API.

Ingest validates these bodies in its capabilities' domains
(`services/ingest/*/domain`), an import's with the bucket's name in its context, and
names every fault at once; the models here describe them for the document.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import Field

from shared.api.catalog import File, Folder
from shared.api.common import Page, Shape, Strict


class NewIntegration(Strict):
    name: str
    provider: Literal["s3", "gcs"] = Field(
        "s3",
        description="s3 (AWS or any S3 API), or gcs: Google Cloud Storage's XML API with an"
        " HMAC key (endpoint https://storage.googleapis.com, region auto)",
    )
    endpoint: str | None = Field(
        None, description="https://host[:port]; absent: AWS's (s3) or Google's (gcs)"
    )
    region: str | None = None
    bucket: str
    access_key: str | None = Field(
        None, description="sealed at rest, never returned; with secret_key, unless role_arn"
    )
    secret_key: str | None = Field(None, description="sealed at rest, never returned")
    session_token: str | None = Field(
        None, description="with temporary keys (STS); sealed at rest, never returned"
    )
    role_arn: str | None = Field(
        None, description="instead of keys: a role this platform assumes with its web identity"
    )


class Integration(Shape):
    id: str
    name: str
    provider: str
    bucket: str
    endpoint: str | None
    region: str | None
    created_at: str
    created_by: str
    shared_with: list[str] | None = Field(
        None, description="who may use it besides the org admins (shown to org admins only)"
    )
    events_token: str | None = Field(
        None,
        description="at registration and rotation only: the token bucket notifications"
        " carry (Authorization: Bearer); only its hash is kept",
    )


class IntegrationSharing(Strict):
    """Any of: whom it is shared with (the list replaces the one before; `[]`: only the
    org admins), new keys (checked against the bucket before they are kept), a new
    events token (answered once, as `events_token`)."""

    shared_with: list[uuid.UUID] | None = Field(None, max_length=1000, description="user ids")
    access_key: str | None = Field(None, description="new keys: sealed, never returned")
    secret_key: str | None = None
    session_token: str | None = None
    rotate_events_token: bool = False


class IntegrationEvents(Shape):
    records: int
    job_ids: list[str] = Field(description="the sync jobs the notified keys started")


class Integrations(Page):
    items: list[Integration]


class ImportRequest(Strict):
    integration_id: uuid.UUID
    keys: list[str] | None = None
    prefix: str | None = None
    manifest: dict[str, Any] | None = Field(
        None,
        description="Encord's cloud import JSON: sections `images`, `videos`, `audio`,"
        " `pdfs`, `text`, `nifti` (one file an entry), `image_groups`, `image_sequences`"
        " and `dicom_series` (one group or series an entry, its objects as `objectUrl_0`,"
        " `objectUrl_1`, ... or a list `objectUrls`), and `skip_duplicate_urls`,"
        " `upsert_metadata`. Each entry's `title` names its file (a DICOM entry's, its"
        " series file when it makes exactly one), its `metadata` (or `clientMetadata`),"
        " checked against the metadata schema, is the file's (a DICOM entry's, its series"
        " files'). `skip_duplicate_urls` skips an entry already imported into the folder"
        " through the integration, and `upsert_metadata` gives it the entry's metadata"
        " instead: an object by its key; a group, sequence or DICOM series whole (the same"
        " kind and the same keys; a partly overlapping entry is imported as new)",
        examples=[
            {
                "images": [{"objectUrl": "s3://lab-data/cats/1.png", "title": "cat 1"}],
                "image_groups": [
                    {
                        "title": "g",
                        "objectUrl_0": "s3://lab-data/g/0.png",
                        "objectUrl_1": "s3://lab-data/g/1.png",
                    }
                ],
                "dicom_series": [{"title": "CT", "objectUrls": ["s3://lab-data/ct/1.dcm"]}],
                "skip_duplicate_urls": True,
            }
        ],
    )


class NewUploadSession(Strict):
    name: str
    size: int = Field(ge=0, description="bytes, up to 5 TiB")
    part_size: int | None = Field(None, description="5 MiB to 5 GiB; default 64 MiB")
    expires_in_s: int | None = None
    metadata: dict[str, Any] | None = Field(
        None,
        description="the file's metadata (a JSON object of at most 64 KiB), checked against"
        " the metadata schema when the session opens (422 naming the key and the type it"
        " needs: nothing is opened) and again when it completes (a 422 then leaves the"
        " session open); the file is stored with it",
    )


class PartUrl(Shape):
    part: int
    size: int
    url: str | None = Field(
        None, description="where to PUT the part: shown to the session's opener only"
    )


class UploadSession(Shape):
    id: str
    job_id: str
    folder_id: str
    name: str
    size: int
    part_size: int
    status: Literal["open", "completed", "aborted", "expired", "rejected"]
    expires_at: str
    file_id: str | None
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="the file's metadata, as given when it opened"
    )
    parts_known: bool = Field(
        default=True,
        description="false when the store did not list the open session's parts in time:"
        " none shown stored, a URL for each part; ask again rather than send them all",
    )
    parts_stored: list[dict[str, Any]]
    bytes_stored: int
    parts: list[PartUrl]


class StoredPart(Shape):
    part: int
    etag: str


class Uploaded(Shape):
    job_id: str
    files: list[File]


class Completed(Shape):
    job_id: str
    file: File


class ImageGroup(Shape):
    file: File = Field(description="the group's file")
    folder: Folder = Field(description="the folder that holds its images")


class JobStarted(Shape):
    job_id: str


class LastSync(Shape):
    job_id: str = Field(description="`GET /v1/jobs/{id}` tells its progress, files and errors")
    status: str = Field(examples=["running", "done", "failed"])
    started_at: str


class SyncState(Shape):
    cloud_synced: bool = Field(
        description="the folder follows a bucket prefix, or is a subfolder its key paths"
        " made; nothing can be uploaded, made or moved into it"
    )
    synced_folder_id: str | None = Field(
        None,
        description="the folder that follows the prefix (this one, or the one above whose"
        " key paths made it, named only to a caller with a role on it)",
    )
    cloud_sync: dict[str, Any] | None = Field(
        None,
        description="the synced folder's own: `{integration_id, integration_name, prefix,"
        " sync_interval_s}` (the integration's name to anyone with a role on the folder;"
        " sent back in a new folder's `cloud_sync`, it is ignored)",
    )
    paused: bool | None = Field(None, description="in the trash: no syncs until restored")
    objects: int | None = Field(
        None, description="the objects the folder holds as last listed (not those gone)"
    )
    last_sync: LastSync | None = None


class ReEncodeFiles(Strict):
    file_ids: list[uuid.UUID] = Field(
        min_length=1,
        max_length=1000,
        description="videos and image sequences, each in a folder the caller edits",
    )


class JobError(Shape):
    name: str
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class Progress(Shape):
    done: int
    total: int
    skipped: int | None = Field(
        None,
        description="an import's objects and entries (groups, sequences, DICOM series)"
        " skipped as already imported into the folder (`skip_duplicate_urls`); counted in"
        " `done` too; absent when none",
    )


class Job(Shape):
    id: str
    kind: str = Field(examples=["upload", "dicom", "import", "session", "re_encode"])
    folder_id: str | None = Field(description="none for a re-encode job (files anywhere)")
    status: str = Field(examples=["pending", "running", "done", "failed", "expired", "cancelled"])
    progress: Progress
    files: list[File] = Field(
        description="its files, in order: all of them, or the first 1,000 (`file_count`"
        " says how many; `GET /v1/jobs/{id}/files` pages them all)"
    )
    errors: list[JobError] = Field(
        description="its errors, in order: all of them, or the first 1,000 (`error_count`"
        " says how many; `GET /v1/jobs/{id}/errors` pages them all)"
    )
    file_count: int = Field(description="how many files it has made so far")
    error_count: int = Field(description="how many errors it has so far")
    next_files_cursor: str | None = Field(
        description="null when `files` holds them all; else `cursor` for"
        " `GET /v1/jobs/{id}/files`, after those in `files`"
    )
    next_errors_cursor: str | None = Field(
        description="null when `errors` holds them all; else `cursor` for"
        " `GET /v1/jobs/{id}/errors`, after those in `errors`"
    )
    created_at: str
    created_by: str


class JobFiles(Page):
    items: list[File]


class JobErrors(Page):
    items: list[JobError]


UPLOAD: dict[str, Any] = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "one part per file; the kind comes from the bytes",
        }
    },
}
UPLOAD_FILES = {
    **UPLOAD,
    "properties": {
        **UPLOAD["properties"],
        "metadata": {
            "type": "string",
            "description": "a JSON object from a file part's name to that file's metadata"
            " (each a JSON object of at most 64 KiB; the field at most 4 MiB), checked"
            " against the metadata schema (422 naming the file, the key and the type it"
            " needs: nothing is then stored)",
        },
    },
}
IMAGE_GROUP = {
    "type": "object",
    "required": ["kind", "name", "file"],
    "properties": {
        "kind": {"type": "string", "enum": ["image_group", "image_sequence"]},
        "name": {"type": "string"},
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
    },
}


WebhookEvent = Literal["file.uploaded", "file.deleted", "job.completed", "folder.synced"]


class NewWebhook(Strict):
    url: str = Field(
        description="http(s) address events are posted to; the address rule of integrations"
        " applies (no loopback, private or metadata address unless allowed)",
        max_length=2048,
    )
    events: list[WebhookEvent] = Field(min_length=1, max_length=4)
    secret: str | None = Field(
        None,
        description="whsec_<base64 of 24 to 64 bytes>; absent: one is made. Shown once, in"
        " this answer",
    )


class WebhookSecretRotation(Strict):
    secret: str | None = Field(
        None,
        description="whsec_<base64 of 24 to 64 bytes>; absent: one is made. Shown once, in"
        " this answer",
    )
    keep_previous_for_s: float | None = Field(
        None,
        ge=0,
        le=7 * 24 * 3600,
        description="seconds the secret before still signs beside the new one (24 h when"
        " absent; 0: at once no longer)",
    )


class Webhook(Shape):
    id: str
    url: str
    events: list[str]
    created_at: str
    created_by: str
    secret: str | None = Field(
        None,
        description="when made or its secret rotated only: the signing secret (Standard Webhooks)",
    )
    previous_secret_valid_until: str | None = Field(
        None, description="after a rotation: until when the secret before signs too"
    )


class Webhooks(Shape):
    items: list[Webhook]


class WebhookDelivery(Shape):
    id: str = Field(description="the message id (`webhook-id` is msg_<id without dashes>)")
    event: str
    event_id: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None = Field(description="the receiver's last HTTP status")
    last_error: str | None
    created_at: str
    next_attempt_at: str | None
    delivered_at: str | None
    retried_at: str | None = Field(None, description="when an admin last sent it again")


class WebhookDeliveries(Shape):
    items: list[WebhookDelivery]
