"""Events of the ingest context: upload jobs, stored content, cloud integrations and imports."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from shared.contracts.catalog import Media, Source
from shared.contracts.envelope import Event, trusted
from shared.contracts.upcasting import upcaster


def job_stream(job_id: uuid.UUID) -> str:
    return f"upload-job-{job_id}"


class UploadJobStarted(Event):
    type: ClassVar[str] = "ingest.UploadJobStarted"
    job_id: uuid.UUID
    folder_id: uuid.UUID
    total: int
    # "dicom": the DICOM context reads the parts; the job's progress is its account.
    kind: str = "upload"


class FileContentStored(Event):
    """Bytes are in the blob store, hashed and sniffed: catalog registers the file."""

    type: ClassVar[str] = "ingest.FileContentStored"
    job_id: uuid.UUID
    file_id: uuid.UUID
    folder_id: uuid.UUID
    name: str
    kind: str
    size: int
    sha256: str
    mime_type: str
    media: Media = Media()
    blob_key: str
    source: Source = Source()
    metadata: dict[str, Any] = {}
    # Imported by reference: the object's ETag as the import read it (its bytes of this
    # sha256), which every later read of the object names (`If-Match`). None: an upload,
    # or an import from before 2026-12-07.
    etag: str | None = None


class StoredContent(BaseModel):
    """One file of an upload in the blob store, hashed and sniffed, as FilesStored names it."""

    file_id: uuid.UUID
    name: str
    kind: str
    size: int
    sha256: str
    mime_type: str
    media: Media = Media()
    blob_key: str
    metadata: dict[str, Any] = {}


class FilesStored(Event):
    """A page of an upload's files in the blob store: catalog registers them. One event a
    page instead of a FileContentStored a file, which cost every hop (event store, relay,
    broker, each consumer's fetch, decode and inbox row) per file. FileContentStored is
    still read (history, and imports, syncs and upload sessions, which record it). Pages
    of at most limits.PAGE_ITEMS files and PAGE_BYTES (a file whose metadata alone is
    bigger is a page of its own)."""

    type: ClassVar[str] = "ingest.FilesStored"
    job_id: uuid.UUID
    folder_id: uuid.UUID
    files: list[StoredContent]

    def each(self) -> list[FileContentStored]:
        """The page as the per-file events it stands for (built, not validated: its
        fields were, as this event's)."""
        upload = Source(type="upload")
        page = {"job_id": self.job_id, "folder_id": self.folder_id, "source": upload}
        return [trusted(FileContentStored, {**f.__dict__, **page}) for f in self.files]


class FileContentRejected(Event):
    type: ClassVar[str] = "ingest.FileContentRejected"
    job_id: uuid.UUID
    name: str
    code: str
    message: str
    details: dict[str, Any] = {}


class DicomInstanceStored(Event):
    """One part of a DICOM upload is in the blob store (not yet read): the DICOM context
    reads its headers and assembles series."""

    type: ClassVar[str] = "ingest.DicomInstanceStored"
    job_id: uuid.UUID
    folder_id: uuid.UUID
    name: str
    blob_key: str
    sha256: str
    size: int
    # An import's DICOM series entry the instance was named in (its `group_file_id` in
    # the job): the series it joins take the entry's title and metadata (the DICOM
    # context's ImportEntryDescribed), and the entry its series (ImportedSeriesFiles).
    entry_id: uuid.UUID | None = None
    # An object of a cloud-synced folder (its id in ingest.synced_objects, the
    # `file_id` of its CloudObjectSynced): the DICOM context keeps it on the instance,
    # so that the object's CloudObjectGone takes the instance out of its series.
    object_id: uuid.UUID | None = None


class StoredPart(BaseModel):
    """One part of a DICOM upload in the blob store, as DicomInstancesStored names it."""

    name: str
    blob_key: str
    sha256: str
    size: int


class DicomInstancesStored(Event):
    """A page of a DICOM upload's parts in the blob store (not yet read): one event a
    page instead of a DicomInstanceStored a part, which cost every hop (event store,
    relay, broker, each consumer's fetch and the DICOM context's inbox) per instance.
    DicomInstanceStored is still read (history, and an import's instances, which name
    their entry). Pages of at most limits.PAGE_ITEMS parts and PAGE_BYTES."""

    type: ClassVar[str] = "ingest.DicomInstancesStored"
    job_id: uuid.UUID
    folder_id: uuid.UUID
    instances: list[StoredPart]

    def each(self) -> list[DicomInstanceStored]:
        """The page as the per-instance events it stands for (built, not validated: its
        fields were, as this event's). By `trusted`, not `model_construct`: the DICOM
        context makes them twice a batch (its headers read ahead, then its transaction),
        3 ms each time for a request of 200, 0.6 ms so."""
        page = {"job_id": self.job_id, "folder_id": self.folder_id, "entry_id": None}
        return [trusted(DicomInstanceStored, {**p.__dict__, **page}) for p in self.instances]


class ImageGroupImagesStored(Event):
    """A page of a group's images, in order (`first` is the index of its first image in
    the group). The pages come before the ImageGroupStored that completes the group, in
    the same stream and transaction (shared/contracts/limits.py)."""

    type: ClassVar[str] = "ingest.ImageGroupImagesStored"
    job_id: uuid.UUID
    group_file_id: uuid.UUID
    first: int
    files: list[FileContentStored]


class ImageGroupStored(Event):
    """The images of a group or sequence are stored (sniffed, all images): the catalog
    registers, at once, the constituent folder, the images in it (in order) and the
    group's file in the target folder. The images (`images` of them) are in the
    ImageGroupImagesStored pages before it; events recorded before pages held them in
    `files` instead, which is then the only way to tell them apart.

    Version 2: `images` is always the count (version 1 left it out before pages).
    """

    type: ClassVar[str] = "ingest.ImageGroupStored"
    version: ClassVar[int] = 2
    job_id: uuid.UUID
    group_file_id: uuid.UUID
    folder_id: uuid.UUID
    name: str
    kind: str  # "image_group" | "image_sequence"
    constituent_folder_id: uuid.UUID
    images: int
    files: list[FileContentStored] = []
    # A group imported by reference: its manifest entry's `clientMetadata`, the group
    # file's metadata (an uploaded group takes none).
    metadata: dict[str, Any] = {}
    # A group imported by reference: its integration, and the SHA-256 of its frames'
    # keys in order (imports/domain/groups.py `frames_sha256`), which a later import's
    # entry is matched against (`skip_duplicate_urls`, `upsert_metadata`). None before.
    integration_id: uuid.UUID | None = None
    frames_sha256: str | None = None


@upcaster(ImageGroupStored.type, 1)
def _image_group_counts_its_images(data: dict[str, Any]) -> dict[str, Any]:
    """A group recorded before pages named its images in `files` and had no count."""
    if data.get("images") is None:
        data["images"] = len(data.get("files", []))
    return data


class UploadJobFinished(Event):
    type: ClassVar[str] = "ingest.UploadJobFinished"
    job_id: uuid.UUID
    status: str  # "done" | "failed"


def integration_stream(integration_id: uuid.UUID) -> str:
    return f"integration-{integration_id}"


class IntegrationRegistered(Event):
    """A customer's bucket, checked reachable with these credentials. The credentials
    ({access_key, secret_key} as JSON) travel sealed only (shared/kit/secrets.py, bound to
    the integration's id); the audit drops the field."""

    type: ClassVar[str] = "ingest.IntegrationRegistered"
    integration_id: uuid.UUID
    name: str
    provider: str  # "s3"
    endpoint: str | None = None
    region: str | None = None
    bucket: str
    sealed_credentials: str


class IntegrationShared(Event):
    """Who may use the integration besides the organisation admins: the whole list (it
    replaces the one before; empty: admins only). At most 1,000 users."""

    type: ClassVar[str] = "ingest.IntegrationShared"
    integration_id: uuid.UUID
    shared_with: list[uuid.UUID]


class IntegrationRemoved(Event):
    type: ClassVar[str] = "ingest.IntegrationRemoved"
    integration_id: uuid.UUID


class ImportJobStarted(Event):
    """An import by reference: objects of an integration's bucket become files of the
    folder without their bytes being copied. `total` counts the objects named in the
    request; a prefix's objects add to it as they are listed (ImportObjectsListed)."""

    type: ClassVar[str] = "ingest.ImportJobStarted"
    job_id: uuid.UUID
    folder_id: uuid.UUID
    integration_id: uuid.UUID
    prefix: str | None = None
    total: int
    # The manifest's `skip_duplicate_urls` and `upsert_metadata` (imports/domain/jobs.py).
    skip_duplicate_urls: bool = False
    upsert_metadata: bool = False


class ImportDicomInstancesCopied(Event):
    """A manifest's DICOM series entry (`group_file_id`: the entry's id in the job; the
    series' files get theirs from the DICOM context): its `instances` objects copied into
    the blob store, each a DicomInstanceStored before this event in the same
    transaction, for the DICOM context to assemble as an upload's."""

    type: ClassVar[str] = "ingest.ImportDicomInstancesCopied"
    job_id: uuid.UUID
    group_file_id: uuid.UUID
    entry: str
    instances: int
    # The job's folder and integration, and the SHA-256 of the entry's keys as a set
    # (imports/domain/groups.py `frames_sha256`): what a later import's entry is matched
    # against (`skip_duplicate_urls`, `upsert_metadata`). None before.
    folder_id: uuid.UUID | None = None
    integration_id: uuid.UUID | None = None
    frames_sha256: str | None = None


class ImportedSeriesFiles(Event):
    """Instances an import's DICOM series entry (`group_file_id`) copied in joined these
    series files (a page of the DICOM context's InstancesSettled, so as bounded): the
    files a later import's same entry is matched to."""

    type: ClassVar[str] = "ingest.ImportedSeriesFiles"
    group_file_id: uuid.UUID
    file_ids: list[uuid.UUID]


class ImportObjectSkipped(Event):
    """An object already imported into the folder through the integration
    (`skip_duplicate_urls`): not read again; `file_ids` are the files it is. Or, with
    `group_file_id` (the entry's id in the job) and `entry`, a manifest's image group,
    sequence or DICOM series whose frames were all imported before as one entry: `key`
    is then its first frame's, and `file_ids` the group's file or the series' files."""

    type: ClassVar[str] = "ingest.ImportObjectSkipped"
    job_id: uuid.UUID
    key: str
    file_ids: list[uuid.UUID]
    group_file_id: uuid.UUID | None = None
    entry: str | None = None


class ImportedMetadataReplaced(Event):
    """An object already imported into the folder through the integration, named again
    with metadata (`upsert_metadata`): the files it is get this metadata, whole, instead
    of a new file being made (the catalog records `FileMetadataChanged`)."""

    type: ClassVar[str] = "ingest.ImportedMetadataReplaced"
    job_id: uuid.UUID
    key: str
    file_ids: list[uuid.UUID]
    metadata: dict[str, Any]
    # A group or DICOM series entry, as in ImportObjectSkipped.
    group_file_id: uuid.UUID | None = None
    entry: str | None = None


class ImportObject(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    title: str | None = None
    # What the manifest said it is ("image", "video"); None: whatever its bytes are.
    kind: str | None = None
    metadata: dict[str, Any] = {}


class ImportGroupRequested(Event):
    """A manifest's image group or sequence an import reads as one file: its frames'
    keys in pages (`first`: the index of the page's first key; `frames` counts them
    all), recorded with the job's start, so the job can resume from its stream."""

    type: ClassVar[str] = "ingest.ImportGroupRequested"
    job_id: uuid.UUID
    group_file_id: uuid.UUID
    kind: str  # "image_group" | "image_sequence" | "dicom_series"
    name: str
    # Where the manifest has it: `manifest.image_groups[2]`.
    entry: str
    metadata: dict[str, Any] = {}
    frames: int
    first: int = 0
    keys: list[str]
    # The manifest gave the entry its `title` (`name`; else `name` is made up): a DICOM
    # series entry's title names the series it makes only then.
    titled: bool = False


class ImportObjectsRequested(Event):
    """Objects an import was asked for by name (keys, manifest entries), in chunks of
    bounded size, so the job can resume from its stream."""

    type: ClassVar[str] = "ingest.ImportObjectsRequested"
    job_id: uuid.UUID
    objects: list[ImportObject]


class ImportObjectsListed(Event):
    """More objects found under the import's prefix: the job's total grows by `count`."""

    type: ClassVar[str] = "ingest.ImportObjectsListed"
    job_id: uuid.UUID
    count: int
    complete: bool = False


class ImportJobFailed(Event):
    """The import cannot go on (the bucket cannot be listed, the integration was removed);
    what it registered before stays."""

    type: ClassVar[str] = "ingest.ImportJobFailed"
    job_id: uuid.UUID
    code: str
    message: str


class UploadSessionOpened(Event):
    """A large file will come in parts, straight to the store (`store_key`, under the
    store's multipart upload `upload_id`); the session's job stream holds it."""

    type: ClassVar[str] = "ingest.UploadSessionOpened"
    session_id: uuid.UUID
    folder_id: uuid.UUID
    name: str
    size: int
    part_size: int
    parts: int
    store_key: str
    upload_id: str
    expires_at: datetime
    # The id of the API key the session was opened with: its part URLs and its
    # completion need that key still valid (None: opened before 2026-12-06).
    key_id: uuid.UUID | None = None
    # The file's metadata, given when the session opened (at most 64 KiB of JSON, as an
    # upload's): the file carries it from the event that stores it. Empty: none given,
    # or opened before 2026-12-06 (an older reader ignores it).
    metadata: dict[str, Any] = {}


class UploadSessionEnded(Event):
    """A session ended without a file: it expired, or its client aborted it. Its parts
    were deleted from the store."""

    type: ClassVar[str] = "ingest.UploadSessionEnded"
    session_id: uuid.UUID
    status: str  # "expired" | "aborted" | "rejected"


class UploadSessionMetadataRestored(Event):
    """An upload session opened with metadata was completed by a replica of a version
    before sessions took it (before 2026-12-06, late night), whose `FileContentStored`
    carries none: the file's metadata, for the catalog to give the file if it has none
    yet (a change made since is kept). Recorded by a newer replica's sweep."""

    type: ClassVar[str] = "ingest.UploadSessionMetadataRestored"
    session_id: uuid.UUID
    file_id: uuid.UUID
    metadata: dict[str, Any]


# Ids per BlobsReleased event: a deletion of 100,000 files releases them in pages.
RELEASED_PER_EVENT = 5_000


class BlobsReleased(Event):
    """Files of ours the catalog deleted (or never registered): their blobs lose them.
    A blob that no file refers to any more is the collector's. At most
    RELEASED_PER_EVENT files an event."""

    type: ClassVar[str] = "ingest.BlobsReleased"
    file_ids: list[uuid.UUID]


class BlobsReclaimed(Event):
    """The collector deleted these blobs' bytes: no file referred to them."""

    type: ClassVar[str] = "ingest.BlobsReclaimed"
    blob_keys: list[str]


def sync_stream(folder_id: uuid.UUID) -> str:
    """A cloud-synced folder's own stream: what it follows."""
    return f"cloud-sync-{folder_id}"


class FolderSyncConfigured(Event):
    """A folder follows a prefix of an integration's bucket (services/ingest/imports/sync)."""

    type: ClassVar[str] = "ingest.FolderSyncConfigured"
    folder_id: uuid.UUID
    integration_id: uuid.UUID
    prefix: str
    # Seconds between scheduled syncs; None: the settings' default.
    sync_interval_s: int | None = None
    # Whether the one who configured it (the envelope's actor) was an org admin: who may
    # use every integration. Scheduled syncs and notifications run while that one may
    # still use the integration. None: recorded before it was kept.
    by_org_admin: bool | None = None


class FolderSyncEnded(Event):
    """The synced folder was deleted for good (purged from the trash): it follows its
    prefix no more, and its integration is free of it."""

    type: ClassVar[str] = "ingest.FolderSyncEnded"
    folder_id: uuid.UUID


# The stream of the one listing of ingest's synced folders (CloudSyncedFoldersListed).
SYNCED_FOLDERS_LISTED_STREAM = "cloud-synced-folders-listed"


class SyncedFolderRef(BaseModel):
    """A folder a synced prefix keeps: the synced folder itself (`root_folder_id` its
    own id) or a subfolder its key paths made."""

    folder_id: uuid.UUID
    root_folder_id: uuid.UUID


class CloudSyncedFoldersListed(Event):
    """A page (at most limits.PAGE_ITEMS) of ingest's synced folders and their key
    paths' subfolders as they were at the first start of an ingest that knows this event,
    recorded once (SYNCED_FOLDERS_LISTED_STREAM; one empty page when there are none): a
    context that mirrors them from ingest's events but came after their configurations
    (the catalog's, since 2026-12-06) learns them from it."""

    type: ClassVar[str] = "ingest.CloudSyncedFoldersListed"
    folders: list[SyncedFolderRef]


class FolderSyncPaused(Event):
    """The synced folder went to the trash: no sync runs (scheduled or notified) until
    it is restored; it still holds its integration, as it may come back."""

    type: ClassVar[str] = "ingest.FolderSyncPaused"
    folder_id: uuid.UUID


class FolderSyncResumed(Event):
    """The synced folder came back from the trash: it follows its prefix again (the next
    sync catches up with what changed meanwhile)."""

    type: ClassVar[str] = "ingest.FolderSyncResumed"
    folder_id: uuid.UUID


class SyncFolderNeeded(Event):
    """A key path below a synced prefix: the catalog makes the subfolder (its id is
    derived from the synced folder's and the path, so a re-run names the same one)."""

    type: ClassVar[str] = "ingest.SyncFolderNeeded"
    job_id: uuid.UUID
    root_folder_id: uuid.UUID
    folder_id: uuid.UUID
    parent_id: uuid.UUID
    name: str


class CloudObjectSynced(Event):
    """An object of a synced prefix as listed (ETag, size, last-modified) and its file:
    the next sync compares its listing with these."""

    type: ClassVar[str] = "ingest.CloudObjectSynced"
    job_id: uuid.UUID
    root_folder_id: uuid.UUID
    key: str
    file_id: uuid.UUID
    etag: str
    size: int
    last_modified: str
    # A DICOM instance (copied in, `file_id` names the object, not a file: its
    # DicomInstanceStored's `object_id`), not a file of its own.
    dicom: bool = False


class CloudObjectGone(Event):
    """An object of a synced prefix is no longer listed: its file is a tombstone; a
    DICOM instance (`dicom`) leaves its series (the DICOM context's reaction)."""

    type: ClassVar[str] = "ingest.CloudObjectGone"
    job_id: uuid.UUID
    root_folder_id: uuid.UUID
    key: str
    file_id: uuid.UUID
    dicom: bool = False


class CloudObjectChanged(Event):
    """An object of a synced prefix whose bytes changed, or that came back after it was
    gone: read again, its facts as they now are."""

    type: ClassVar[str] = "ingest.CloudObjectChanged"
    job_id: uuid.UUID
    file_id: uuid.UUID
    folder_id: uuid.UUID
    key: str
    kind: str
    size: int
    sha256: str
    mime_type: str
    media: Media = Media()
    # The object's ETag as this read answered it (FileContentStored's `etag`), since
    # 2026-12-07.
    etag: str | None = None


class IntegrationCredentialsRotated(Event):
    """New credentials, checked against the bucket, sealed as at registration."""

    type: ClassVar[str] = "ingest.IntegrationCredentialsRotated"
    integration_id: uuid.UUID
    sealed_credentials: str


class IntegrationEventsTokenSet(Event):
    """The token bucket notifications must carry (POST /v1/integrations/{id}/events):
    its SHA-256 hex only (`token_hash`, redacted from the audit); the token was shown once."""

    type: ClassVar[str] = "ingest.IntegrationEventsTokenSet"
    integration_id: uuid.UUID
    token_hash: str


class SeriesBlobsHeld(Event):
    """A DICOM series' file now refers to these instance blobs (one page of the DICOM
    context's SeriesInstancesAdded; one key per instance). They go when the series is
    released (`BlobsReleased` of its file id)."""

    type: ClassVar[str] = "ingest.SeriesBlobsHeld"
    file_id: uuid.UUID
    blob_keys: list[str]


class SeriesBlobsDropped(Event):
    """Instances left a DICOM series' file (a page of the DICOM context's
    SeriesInstancesRemoved: their objects are gone from a synced bucket): the file no
    longer refers to these blobs."""

    type: ClassVar[str] = "ingest.SeriesBlobsDropped"
    file_id: uuid.UUID
    blob_keys: list[str]


class BlobsUnpinned(Event):
    """Stored DICOM instances that joined no series (dicom.InstanceBlobsLeft): their
    blobs no longer wait on the DICOM context, one key per instance."""

    type: ClassVar[str] = "ingest.BlobsUnpinned"
    blob_keys: list[str]


def webhook_stream(webhook_id: uuid.UUID) -> str:
    return f"webhook-{webhook_id}"


class WebhookRegistered(Event):
    """An org admin's webhook (services/ingest/webhooks): its secret is never in an event."""

    type: ClassVar[str] = "ingest.WebhookRegistered"
    webhook_id: uuid.UUID
    url: str
    events: list[str]


class WebhookRemoved(Event):
    type: ClassVar[str] = "ingest.WebhookRemoved"
    webhook_id: uuid.UUID


class WebhookSecretRotated(Event):
    """A webhook signs with a new secret (never in an event); the one before signs beside
    it until `previous_valid_until` (None: no longer)."""

    type: ClassVar[str] = "ingest.WebhookSecretRotated"
    webhook_id: uuid.UUID
    previous_valid_until: datetime | None = None


EVENTS: tuple[type[Event], ...] = (
    UploadJobStarted,
    FileContentStored,
    FilesStored,
    FileContentRejected,
    DicomInstanceStored,
    DicomInstancesStored,
    UploadJobFinished,
    ImageGroupImagesStored,
    ImageGroupStored,
    IntegrationRegistered,
    IntegrationShared,
    IntegrationRemoved,
    ImportJobStarted,
    ImportObjectsRequested,
    ImportGroupRequested,
    ImportObjectSkipped,
    ImportedMetadataReplaced,
    ImportDicomInstancesCopied,
    ImportedSeriesFiles,
    ImportObjectsListed,
    ImportJobFailed,
    UploadSessionOpened,
    UploadSessionEnded,
    UploadSessionMetadataRestored,
    BlobsReleased,
    BlobsReclaimed,
    FolderSyncConfigured,
    FolderSyncEnded,
    CloudSyncedFoldersListed,
    SyncFolderNeeded,
    CloudObjectSynced,
    CloudObjectGone,
    CloudObjectChanged,
    IntegrationCredentialsRotated,
    IntegrationEventsTokenSet,
    SeriesBlobsHeld,
    BlobsUnpinned,
    FolderSyncPaused,
    FolderSyncResumed,
    WebhookRegistered,
    WebhookRemoved,
    WebhookSecretRotated,
    SeriesBlobsDropped,
)
