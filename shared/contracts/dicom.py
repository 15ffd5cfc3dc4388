"""Events of the DICOM context: instances read, admitted and assembled into series.

One series is one file in the catalog: `SeriesAssembled` names the file id it gets,
`SeriesExtended` the same file when a later upload adds instances to it, `SeriesShrunk`
when instances leave it (gone from a synced bucket); `SeriesMoved`,
`SeriesTrashed`, `SeriesRestored` and `SeriesReleased` follow the file in the catalog
(moved, to the trash and back, deleted for good). Each instance
of a job ends accepted or rejected in an `InstancesSettled` of its batch (the job's
progress and errors; `InstanceAccepted` and `InstanceRejected` from before, one an
instance, are still read).
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from pydantic import BaseModel

from shared.contracts.envelope import Event


def series_stream(file_id: uuid.UUID) -> str:
    return f"dicom-series-{file_id}"


def job_stream(job_id: uuid.UUID) -> str:
    return f"dicom-job-{job_id}"


class SeriesFacts(Event):
    """What both series events carry: the series as it now is. The instances it gained
    follow it in SeriesInstancesAdded pages, in the same stream and transaction;
    events recorded before pages held every instance, in slice order, in `instances`."""

    series_uid: str
    folder_id: uuid.UUID
    file_id: uuid.UUID
    study_uid: str
    patient_id: str
    modality: str | None = None
    renderable_3d: bool
    missing_3d_tags: list[str] = []
    # Before pages: one object per instance, in slice order: sop_uid, name, blob_key,
    # sha256, size, facts.
    instances: list[dict[str, Any]] = []
    # How many instances the series has, and the blob of the first along the slice
    # direction (the file's content). None in events from before pages: see `instances`.
    instance_count: int | None = None
    first_blob_key: str | None = None
    # The slice a picture of the series shows: the middle one along the slice direction
    # (index instance_count // 2, the later of two). None in events from before pages.
    middle_blob_key: str | None = None
    middle_sha256: str | None = None
    size: int
    sha256: str  # of the instances' sha256s, in order: the series' content

    @property
    def count(self) -> int:
        return self.instance_count if self.instance_count is not None else len(self.instances)

    @property
    def content_key(self) -> str:
        return self.first_blob_key or str(self.instances[0]["blob_key"])


class SeriesAssembled(SeriesFacts):
    type: ClassVar[str] = "dicom.SeriesAssembled"
    # A series an import's DICOM series entry made (the only one its instances of the
    # batch made): the file's name (the entry's title, if it gave one) and metadata
    # (its `clientMetadata`). None: the name is made of the modality and the UID.
    name: str | None = None
    metadata: dict[str, Any] = {}


def entry_stream(entry_id: uuid.UUID) -> str:
    return f"dicom-import-entry-{entry_id}"


class ImportEntryDescribed(Event):
    """An import's DICOM series entry (ingest's ImportGroupRequested): what the series its
    instances make are named (its title; None: not given) and their metadata. Kept
    here, since the instances come later, each naming its entry only by id."""

    type: ClassVar[str] = "dicom.ImportEntryDescribed"
    entry_id: uuid.UUID
    name: str | None = None
    metadata: dict[str, Any] = {}


class SeriesExtended(SeriesFacts):
    type: ClassVar[str] = "dicom.SeriesExtended"


class SeriesInstancesAdded(Event):
    """A page of the instances the SeriesAssembled or SeriesExtended before it added: each
    sop_uid, name, blob_key, sha256, size, facts (shared/contracts/limits.py)."""

    type: ClassVar[str] = "dicom.SeriesInstancesAdded"
    series_uid: str
    file_id: uuid.UUID
    instances: list[dict[str, Any]]


class SeriesShrunk(SeriesFacts):
    """Instances left the series (their objects are gone from a cloud-synced bucket):
    the series as it now is, maybe with no instance left (`instance_count` 0: its file
    is then a tombstone, and an instance that comes back extends it again). The
    instances it lost follow in SeriesInstancesRemoved pages, in the same stream and
    transaction."""

    type: ClassVar[str] = "dicom.SeriesShrunk"


class SeriesInstancesRemoved(Event):
    """A page of the instances the SeriesShrunk before it lost: each sop_uid and
    blob_key (their blobs are no longer the series')."""

    type: ClassVar[str] = "dicom.SeriesInstancesRemoved"
    series_uid: str
    file_id: uuid.UUID
    instances: list[dict[str, Any]]


class SeriesReleased(Event):
    """The series' file left the catalog (deleted, or never registered because its folder
    was deleted): a later upload of the same series starts a new file."""

    type: ClassVar[str] = "dicom.SeriesReleased"
    series_uid: str
    folder_id: uuid.UUID
    file_id: uuid.UUID
    reason: str
    # False when the file stays in the catalog (moved beside another series of its
    # SeriesInstanceUID): its instances' blobs are still its content.
    file_gone: bool = True


class SeriesTrashed(Event):
    """The series' file went to the trash: its instances stay (a restored file shows its
    slices), but the folder no longer has the series: a later upload of it starts a new
    file."""

    type: ClassVar[str] = "dicom.SeriesTrashed"
    series_uid: str
    folder_id: uuid.UUID
    file_id: uuid.UUID


class SeriesRestored(Event):
    """The series' file came back from the trash, into a folder that has no other series
    of its SeriesInstanceUID: uploads extend it again. (Beside one uploaded since, the
    restored file stays whole but is not extended: no event.)"""

    type: ClassVar[str] = "dicom.SeriesRestored"
    series_uid: str
    folder_id: uuid.UUID
    file_id: uuid.UUID


class SeriesMoved(Event):
    """The series' file moved to another folder: uploads there extend it."""

    type: ClassVar[str] = "dicom.SeriesMoved"
    series_uid: str
    file_id: uuid.UUID
    from_folder_id: uuid.UUID
    to_folder_id: uuid.UUID


class InstanceAccepted(Event):
    type: ClassVar[str] = "dicom.InstanceAccepted"
    job_id: uuid.UUID
    folder_id: uuid.UUID
    name: str
    sop_uid: str
    series_uid: str
    file_id: uuid.UUID


class InstanceRejected(Event):
    type: ClassVar[str] = "dicom.InstanceRejected"
    job_id: uuid.UUID
    folder_id: uuid.UUID
    name: str
    code: str
    message: str
    details: dict[str, Any] = {}


class Accepted(BaseModel):
    name: str
    sop_uid: str
    series_uid: str
    file_id: uuid.UUID
    # The import entry the instance was named in (ingest.DicomInstanceStored.entry_id).
    entry_id: uuid.UUID | None = None
    # Its SOP Class UID (a STOW-RS answer's ReferencedSOPClassUID); None before it was kept.
    sop_class_uid: str | None = None


class Rejected(BaseModel):
    name: str
    code: str
    message: str
    details: dict[str, Any] = {}


class InstancesSettled(Event):
    """A batch's instances of one job, settled: each accepted into its series file, or
    rejected with why. One event a batch instead of an InstanceAccepted or
    InstanceRejected an instance (those, from before, are still read); pages of at most
    limits.PAGE_ITEMS instances and PAGE_BYTES."""

    type: ClassVar[str] = "dicom.InstancesSettled"
    job_id: uuid.UUID
    folder_id: uuid.UUID
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []


class JobCancelled(Event):
    """The job was cancelled (`POST /v1/jobs/{id}/cancel`): its instances not read yet
    are skipped; those settled stay."""

    type: ClassVar[str] = "dicom.JobCancelled"
    job_id: uuid.UUID


# Blob keys per InstanceBlobsLeft event.
LEFT_PER_EVENT = 5_000


class InstanceBlobsLeft(Event):
    """Stored instances of a batch that joined no series: rejected, refused, skipped
    (their job was cancelled) or already the series' (the same SOP instance sent
    again). One key per such instance, repeated when several were; at most
    LEFT_PER_EVENT an event. Each stored instance ends either in a SeriesInstancesAdded
    page or here: the blob collector then knows when no instance waits on a blob."""

    type: ClassVar[str] = "dicom.InstanceBlobsLeft"
    blob_keys: list[str]


EVENTS: tuple[type[Event], ...] = (
    SeriesAssembled,
    SeriesExtended,
    SeriesInstancesAdded,
    SeriesReleased,
    SeriesTrashed,
    SeriesRestored,
    SeriesMoved,
    InstanceAccepted,
    InstanceRejected,
    JobCancelled,
    InstanceBlobsLeft,
    InstancesSettled,
    ImportEntryDescribed,
    SeriesShrunk,
    SeriesInstancesRemoved,
)
