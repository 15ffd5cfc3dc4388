"""What the API answers and what the client sends, as typed models.

The answer models keep fields they do not know (the API grows additively), and
`tests/e2e/test_client_openapi.py` checks every field here against the gateway's
/openapi.json, route by route (`ROUTES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["admin", "editor", "user", "viewer"]


class Data(BaseModel):
    """An answer's plain data: unknown fields are kept, not refused."""

    model_config = ConfigDict(extra="allow", frozen=False, populate_by_name=True)


class Body(BaseModel):
    """A request body: exactly these fields, unset ones left out."""

    model_config = ConfigDict(extra="forbid")

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


# -- answers ---------------------------------------------------------------------------


class PathEntry(Data):
    id: str
    name: str


class DatasetRef(Data):
    id: str
    name: str


class Media(Data):
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    duration_s: float | None = None
    sample_rate: int | None = None  # an audio file's
    channels: int | None = None
    fps: float | None = None  # a video's
    codec: str | None = None  # a video's or an audio file's
    dims: list[int] | None = None  # a NIfTI volume's
    voxel_size: list[float] | None = None
    datatype: str | None = None


class Source(Data):
    type: str
    integration_id: str | None = None
    key: str | None = None


class DicomFacts(Data):
    study_uid: str | None = None
    series_uid: str | None = None
    patient_id: str | None = None
    modality: str | None = None
    instances: int | None = None
    renderable_3d: bool | None = None
    missing_3d_tags: list[str] = Field(default_factory=list)


class GroupFacts(Data):
    constituent_folder_id: str
    file_ids: list[str] = Field(default_factory=list)


class FolderData(Data):
    type: Literal["folder"] = "folder"
    id: str
    name: str
    description: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    parent_id: str | None = None
    path: list[PathEntry] = Field(default_factory=list)
    file_count: int = 0
    folder_count: int = 0
    created_at: datetime | None = None
    created_by: str | None = None
    my_role: str | None = None
    # Whether the caller may rename it (of a top-level folder: its creator, an org admin).
    may_rename: bool = False
    # It, or a folder above it, follows a bucket prefix: nothing is uploaded, made or
    # moved into it.
    cloud_synced: bool = False
    # A cloud-synced folder's, in the answer that made it: what it follows, its first sync.
    cloud_sync: dict[str, Any] | None = None
    sync_job_id: str | None = None


class FileData(Data):
    type: Literal["file"] = "file"
    id: str
    name: str
    description: str = ""
    kind: str
    folder_id: str
    size: int
    sha256: str
    mime_type: str
    media: Media = Field(default_factory=Media)
    source: Source | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    created_by: str | None = None
    datasets: list[DatasetRef] = Field(default_factory=list)
    dicom: DicomFacts | None = None
    group: GroupFacts | None = None
    my_role: str | None = None
    # How many other files the caller may see hold the same bytes (up to 10,000).
    duplicates: int | None = None
    # A cloud-synced file whose object left its bucket: its content answers 410 Gone.
    tombstone: bool = False
    # In search hits: the folder's path, from the first folder the caller may see.
    path: list[PathEntry] | None = None
    # One file's answer: the renditions made of it ("web": `re_encode`).
    renditions: list[str] | None = None


class DatasetData(Data):
    id: str
    name: str
    description: str = ""
    synced_folder_id: str | None = None
    synced: bool = False
    unsynced_from_folder_id: str | None = None
    file_count: int = 0
    created_at: datetime | None = None
    created_by: str | None = None
    my_role: str | None = None
    version: int = 0


class Progress(Data):
    done: int = 0
    total: int = 0
    bytes: dict[str, int] | None = None
    # An import's objects and entries skipped as already imported (`skip_duplicate_urls`).
    skipped: int = 0


class JobError(Data):
    name: str | None = None
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class JobData(Data):
    id: str
    status: str
    kind: str | None = None
    progress: Progress = Field(default_factory=Progress)
    errors: list[JobError] = Field(default_factory=list)
    # The files it made so far that the caller may see: all, or the first 1,000 (the
    # rest through `Job.all_files()`), as errors are.
    files: Sequence[FileData] = Field(default_factory=list)
    # How many files and errors it has; the cursors go on past `files` and `errors`
    # (None when they hold them all).
    file_count: int | None = None
    error_count: int | None = None
    next_files_cursor: str | None = None
    next_errors_cursor: str | None = None
    folder_id: str | None = None
    created_at: datetime | None = None
    created_by: str | None = None


class PartUrl(Data):
    part: int
    size: int
    # Where to PUT the part: shown to the session's opener only.
    url: str | None = None


class StoredPart(Data):
    part: int
    size: int
    etag: str | None = None


class UploadSession(Data):
    id: str
    job_id: str
    folder_id: str
    name: str
    size: int
    part_size: int
    status: str
    expires_at: datetime | None = None
    file_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    parts_stored: list[StoredPart] = Field(default_factory=list)
    bytes_stored: int = 0
    # False when the store did not list an open session's parts in time: none are shown
    # stored then, though some may be.
    parts_known: bool = True
    parts: list[PartUrl] = Field(default_factory=list)


class Collaborator(Data):
    user_id: str
    email: str | None = None
    name: str | None = None
    role: str
    inherited_from: str | None = None


class DatasetCollaborator(Data):
    user_id: str
    role: str
    email: str | None = None
    name: str | None = None


class IntegrationData(Data):
    id: str
    name: str
    provider: str
    bucket: str
    endpoint: str | None = None
    region: str | None = None
    created_at: datetime | None = None
    created_by: str | None = None
    # Who may use it besides the org admins: shown to org admins only.
    shared_with: list[str] | None = None
    # At registration and rotation only: the token its bucket's notifications carry.
    events_token: str | None = None


class WebhookData(Data):
    id: str
    url: str
    events: list[str]
    created_at: datetime | None = None
    created_by: str | None = None
    # When made or its secret rotated only: the signing secret (whsec_...), shown this once.
    secret: str | None = None
    # After a rotation: until when the secret before signs too.
    previous_secret_valid_until: datetime | None = None


class WebhookDelivery(Data):
    id: str
    event: str
    event_id: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None = None
    last_error: str | None = None
    created_at: datetime | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    retried_at: datetime | None = None


class User(Data):
    id: str
    email: str
    name: str
    org_role: str
    created_at: datetime | None = None


class NewUser(User):
    """A user just created: `api_key` is shown only here."""

    api_key: str


class ApiKey(Data):
    id: str
    created_at: datetime | None = None
    revoked: bool = False


class NewApiKey(Data):
    """A key just issued: `api_key` is shown only here."""

    id: str
    user_id: str
    api_key: str
    created_at: datetime | None = None


class DatasetImpact(Data):
    id: str
    name: str
    links_removed: int


class Impact(Data):
    """What a move or delete did (`moved`/`deleted`) or, as a dry run, would do."""

    dry_run: bool = False
    moved: int | None = None
    deleted: int | None = None
    folders: int | None = None
    files: int | None = None
    datasets: list[DatasetImpact] = Field(default_factory=list)
    # A delete's dry run: the trash keeps what it deletes this many days.
    trash_days: float | None = None


class TrashItem(Data):
    """A folder or file in the trash, where it was, and when the trash lets it go."""

    type: str
    id: str
    name: str
    parent_id: str | None = None
    folder_id: str | None = None
    files: int | None = None
    size: int | None = None
    kind: str | None = None
    deleted_at: datetime
    deleted_by: str
    purge_at: datetime
    my_role: str | None = None
    # Whether the caller may restore it (a top-level folder: its creator or an org admin
    # only); None from a platform that does not say.
    may_restore: bool | None = None


class Restored(Data):
    restored_folders: int
    restored_files: int


class Emptied(Data):
    purged_folders: int
    purged_files: int


class KindTotal(Data):
    files: int
    bytes: int


class Summary(Data):
    folder_id: str
    folders: int
    files: int
    bytes: int
    by_kind: dict[str, KindTotal] = Field(default_factory=dict)


class AuditEvent(Data):
    event_id: str
    type: str
    occurred_at: datetime
    actor_id: str | None = None
    subject_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    causation_id: str | None = None
    source: str | None = None


# -- request bodies ------------------------------------------------------------------


class NewFolderBody(Body):
    name: str
    description: str | None = None
    parent_id: str | None = None
    metadata: dict[str, Any] | None = None
    cloud_sync: dict[str, Any] | None = None


class FolderChangesBody(Body):
    name: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None


class FileChangesBody(Body):
    name: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None


class FileUpdateBody(Body):
    id: str
    name: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None


class FileUpdatesBody(Body):
    updates: list[FileUpdateBody]
    metadata_mode: Literal["merge", "replace"] = "merge"


class LookupBody(Body):
    ids: list[str]


class SchemaKeyBody(Body):
    type: Literal["number", "text", "boolean", "datetime", "uuid", "enum", "embedding"]
    values: list[str] | None = None
    dimension: int | None = None
    retired: bool | None = None


class MetadataSchemaBody(Body):
    keys: dict[str, SchemaKeyBody]


class MoveBody(Body):
    file_ids: list[str] = Field(default_factory=list)
    folder_ids: list[str] = Field(default_factory=list)
    target_folder_id: str
    dry_run: bool | None = None


class DeleteBody(Body):
    file_ids: list[str] = Field(default_factory=list)
    folder_ids: list[str] = Field(default_factory=list)
    dry_run: bool | None = None


class ReEncodeBody(Body):
    file_ids: list[str]


class RestoreBody(Body):
    file_ids: list[str] = Field(default_factory=list)
    folder_ids: list[str] = Field(default_factory=list)


class NewDatasetBody(Body):
    name: str
    description: str | None = None
    synced_folder_id: str | None = None
    create_backing_folder: bool | None = None


class DatasetChangesBody(Body):
    name: str | None = None
    description: str | None = None


class FileIdsBody(Body):
    file_ids: list[str]


class InvitationBody(Body):
    emails: list[str]
    role: str


class RoleChangeBody(Body):
    role: str


class NewUserBody(Body):
    email: str
    name: str
    org_role: Literal["admin", "member"] | None = None


class NewIntegrationBody(Body):
    name: str
    provider: Literal["s3", "gcs"] = "s3"
    bucket: str
    access_key: str
    secret_key: str
    session_token: str | None = None
    endpoint: str | None = None
    region: str | None = None


class NewWebhookBody(Body):
    url: str
    events: list[Literal["file.uploaded", "file.deleted", "job.completed", "folder.synced"]]
    secret: str | None = None


class WebhookSecretRotationBody(Body):
    secret: str | None = None
    keep_previous_for_s: float | None = None


class IntegrationChangeBody(Body):
    shared_with: list[str] | None = None
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    rotate_events_token: bool | None = None


class ImportBody(Body):
    integration_id: str
    keys: list[str] | None = None
    prefix: str | None = None
    manifest: dict[str, Any] | None = None


class NewSessionBody(Body):
    name: str
    size: int
    part_size: int | None = None
    expires_in_s: int | None = None


class UploadAnswer(Data):
    job_id: str
    files: list[FileData]


class ImageGroupAnswer(Data):
    file: FileData
    folder: FolderData


class JobStarted(Data):
    job_id: str


class Completed(Data):
    job_id: str
    file: FileData


class Added(Data):
    added: int


class Removed(Data):
    removed: int


class Page(Data):
    items: list[Any]
    next_cursor: str | None = None


class Updated(Data):
    updated: int
    items: list[FileData]


class MetadataSchema(Data):
    keys: dict[str, dict[str, Any]]
    version: int = 0


class LookedUp(Data):
    items: list[FileData]
    not_found: list[str]


# Every route the client calls: (method, path template, request body, answer).
# Multipart bodies are named by their form fields.
ROUTES: list[tuple[str, str, type[BaseModel] | tuple[str, ...] | None, type[BaseModel] | None]] = [
    ("POST", "/v1/folders", NewFolderBody, FolderData),
    ("GET", "/v1/folders", None, Page),
    ("GET", "/v1/folders/{folder_id}", None, FolderData),
    ("PATCH", "/v1/folders/{folder_id}", FolderChangesBody, FolderData),
    ("DELETE", "/v1/folders/{folder_id}", None, None),
    ("GET", "/v1/folders/{folder_id}/summary", None, Summary),
    ("GET", "/v1/folders/{folder_id}/items", None, Page),
    ("POST", "/v1/folders/{folder_id}/files", ("file",), UploadAnswer),
    ("POST", "/v1/folders/{folder_id}/image-groups", ("kind", "name", "file"), ImageGroupAnswer),
    ("POST", "/v1/folders/{folder_id}/dicom", ("file",), JobStarted),
    ("POST", "/v1/folders/{folder_id}/imports", ImportBody, JobStarted),
    ("POST", "/v1/folders/{folder_id}/uploads", NewSessionBody, UploadSession),
    ("GET", "/v1/uploads/{session_id}", None, UploadSession),
    ("POST", "/v1/uploads/{session_id}/complete", None, Completed),
    ("DELETE", "/v1/uploads/{session_id}", None, None),
    ("GET", "/v1/folders/{folder_id}/collaborators", None, Page),
    ("POST", "/v1/folders/{folder_id}/collaborators", InvitationBody, Page),
    ("PATCH", "/v1/folders/{folder_id}/collaborators/{user_id}", RoleChangeBody, Collaborator),
    ("DELETE", "/v1/folders/{folder_id}/collaborators/{user_id}", None, None),
    ("GET", "/v1/files/{file_id}", None, FileData),
    ("PATCH", "/v1/files/{file_id}", FileChangesBody, FileData),
    ("PATCH", "/v1/files", FileUpdatesBody, Updated),
    ("POST", "/v1/files/lookup", LookupBody, LookedUp),
    ("GET", "/v1/metadata-schema", None, MetadataSchema),
    ("PUT", "/v1/metadata-schema", MetadataSchemaBody, MetadataSchema),
    ("DELETE", "/v1/files/{file_id}", None, None),
    ("GET", "/v1/files/{file_id}/content", None, None),
    ("GET", "/v1/files/{file_id}/datasets", None, Page),
    ("POST", "/v1/move", MoveBody, Impact),
    ("POST", "/v1/delete", DeleteBody, Impact),
    ("GET", "/v1/files/{file_id}/duplicates", None, Page),
    ("GET", "/v1/trash", None, Page),
    ("POST", "/v1/trash/restore", RestoreBody, Restored),
    ("DELETE", "/v1/trash", None, Emptied),
    ("POST", "/v1/files/re-encode", ReEncodeBody, JobStarted),
    ("GET", "/v1/search", None, Page),
    ("POST", "/v1/datasets", NewDatasetBody, DatasetData),
    ("GET", "/v1/datasets", None, Page),
    ("GET", "/v1/datasets/{dataset_id}", None, DatasetData),
    ("PATCH", "/v1/datasets/{dataset_id}", DatasetChangesBody, DatasetData),
    ("DELETE", "/v1/datasets/{dataset_id}", None, None),
    ("POST", "/v1/datasets/{dataset_id}/files", FileIdsBody, Added),
    ("POST", "/v1/datasets/{dataset_id}/files/remove", FileIdsBody, Removed),
    ("DELETE", "/v1/datasets/{dataset_id}/files/{file_id}", None, None),
    ("GET", "/v1/datasets/{dataset_id}/files", None, Page),
    ("GET", "/v1/datasets/{dataset_id}/collaborators", None, Page),
    ("POST", "/v1/datasets/{dataset_id}/collaborators", InvitationBody, Page),
    ("DELETE", "/v1/datasets/{dataset_id}/collaborators/{user_id}", None, None),
    ("GET", "/v1/jobs/{job_id}", None, JobData),
    ("POST", "/v1/jobs/{job_id}/cancel", None, JobData),
    ("GET", "/v1/jobs/{job_id}/files", None, Page),
    ("GET", "/v1/jobs/{job_id}/errors", None, Page),
    ("POST", "/v1/integrations", NewIntegrationBody, IntegrationData),
    ("GET", "/v1/integrations", None, Page),
    ("GET", "/v1/integrations/{integration_id}", None, IntegrationData),
    ("PATCH", "/v1/integrations/{integration_id}", IntegrationChangeBody, IntegrationData),
    ("DELETE", "/v1/integrations/{integration_id}", None, None),
    ("POST", "/v1/folders/{folder_id}/sync", None, JobStarted),
    ("POST", "/v1/webhooks", NewWebhookBody, WebhookData),
    ("GET", "/v1/webhooks", None, Page),
    ("DELETE", "/v1/webhooks/{webhook_id}", None, None),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries", None, Page),
    ("POST", "/v1/webhooks/{webhook_id}/secret", WebhookSecretRotationBody, WebhookData),
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", None, WebhookDelivery),
    ("GET", "/v1/audit", None, Page),
    ("POST", "/v1/users", NewUserBody, NewUser),
    ("GET", "/v1/users", None, Page),
    ("GET", "/v1/users/me", None, User),
    ("POST", "/v1/users/{user_id}/keys", None, NewApiKey),
    ("GET", "/v1/users/{user_id}/keys", None, Page),
    ("DELETE", "/v1/keys/{key_id}", None, None),
]

# The item model of each listing route, for the check against /openapi.json.
PAGE_ITEMS: dict[tuple[str, str], type[BaseModel]] = {
    ("GET", "/v1/folders"): FolderData,
    ("GET", "/v1/folders/{folder_id}/items"): FileData,
    ("GET", "/v1/folders/{folder_id}/collaborators"): Collaborator,
    ("POST", "/v1/folders/{folder_id}/collaborators"): Collaborator,
    ("GET", "/v1/files/{file_id}/datasets"): DatasetRef,
    ("GET", "/v1/search"): FileData,
    ("GET", "/v1/files/{file_id}/duplicates"): FileData,
    ("GET", "/v1/trash"): TrashItem,
    ("GET", "/v1/datasets"): DatasetData,
    ("GET", "/v1/datasets/{dataset_id}/files"): FileData,
    ("GET", "/v1/jobs/{job_id}/files"): FileData,
    ("GET", "/v1/jobs/{job_id}/errors"): JobError,
    ("GET", "/v1/datasets/{dataset_id}/collaborators"): DatasetCollaborator,
    ("POST", "/v1/datasets/{dataset_id}/collaborators"): DatasetCollaborator,
    ("GET", "/v1/integrations"): IntegrationData,
    ("GET", "/v1/webhooks"): WebhookData,
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): WebhookDelivery,
    ("GET", "/v1/audit"): AuditEvent,
    ("GET", "/v1/users"): User,
    ("GET", "/v1/users/{user_id}/keys"): ApiKey,
}
