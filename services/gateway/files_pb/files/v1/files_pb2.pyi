import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PathEntry(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Folder(_message.Message):
    __slots__ = ("id", "name", "description", "metadata", "parent_id", "path", "file_count", "folder_count", "created_at", "created_by", "my_role", "cloud_sync", "sync_job_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FOLDER_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    MY_ROLE_FIELD_NUMBER: _ClassVar[int]
    CLOUD_SYNC_FIELD_NUMBER: _ClassVar[int]
    SYNC_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    metadata: _struct_pb2.Struct
    parent_id: str
    path: _containers.RepeatedCompositeFieldContainer[PathEntry]
    file_count: int
    folder_count: int
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    my_role: str
    cloud_sync: CloudSync
    sync_job_id: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., parent_id: _Optional[str] = ..., path: _Optional[_Iterable[_Union[PathEntry, _Mapping]]] = ..., file_count: _Optional[int] = ..., folder_count: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., my_role: _Optional[str] = ..., cloud_sync: _Optional[_Union[CloudSync, _Mapping]] = ..., sync_job_id: _Optional[str] = ...) -> None: ...

class CloudSync(_message.Message):
    __slots__ = ("integration_id", "prefix", "sync_interval_s", "integration_name")
    INTEGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    SYNC_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    INTEGRATION_NAME_FIELD_NUMBER: _ClassVar[int]
    integration_id: str
    prefix: str
    sync_interval_s: int
    integration_name: str
    def __init__(self, integration_id: _Optional[str] = ..., prefix: _Optional[str] = ..., sync_interval_s: _Optional[int] = ..., integration_name: _Optional[str] = ...) -> None: ...

class Media(_message.Message):
    __slots__ = ("width", "height", "frames", "duration_s", "sample_rate", "channels", "fps", "codec", "dims", "voxel_size", "datatype")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    VOXEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    frames: int
    duration_s: float
    sample_rate: int
    channels: int
    fps: float
    codec: str
    dims: _containers.RepeatedScalarFieldContainer[int]
    voxel_size: _containers.RepeatedScalarFieldContainer[float]
    datatype: str
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., frames: _Optional[int] = ..., duration_s: _Optional[float] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., fps: _Optional[float] = ..., codec: _Optional[str] = ..., dims: _Optional[_Iterable[int]] = ..., voxel_size: _Optional[_Iterable[float]] = ..., datatype: _Optional[str] = ...) -> None: ...

class Dicom(_message.Message):
    __slots__ = ("study_uid", "series_uid", "patient_id", "modality", "instances", "renderable_3d", "missing_3d_tags")
    STUDY_UID_FIELD_NUMBER: _ClassVar[int]
    SERIES_UID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    RENDERABLE_3D_FIELD_NUMBER: _ClassVar[int]
    MISSING_3D_TAGS_FIELD_NUMBER: _ClassVar[int]
    study_uid: str
    series_uid: str
    patient_id: str
    modality: str
    instances: int
    renderable_3d: bool
    missing_3d_tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, study_uid: _Optional[str] = ..., series_uid: _Optional[str] = ..., patient_id: _Optional[str] = ..., modality: _Optional[str] = ..., instances: _Optional[int] = ..., renderable_3d: _Optional[bool] = ..., missing_3d_tags: _Optional[_Iterable[str]] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("constituent_folder_id", "file_ids")
    CONSTITUENT_FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_IDS_FIELD_NUMBER: _ClassVar[int]
    constituent_folder_id: str
    file_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, constituent_folder_id: _Optional[str] = ..., file_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("type", "integration_id", "key")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    INTEGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    type: str
    integration_id: str
    key: str
    def __init__(self, type: _Optional[str] = ..., integration_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class DatasetRef(_message.Message):
    __slots__ = ("id", "name", "my_role")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MY_ROLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    my_role: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., my_role: _Optional[str] = ...) -> None: ...

class File(_message.Message):
    __slots__ = ("id", "name", "kind", "folder_id", "size", "sha256", "mime_type", "media", "dicom", "group", "source", "metadata", "created_at", "created_by", "datasets", "my_role", "path", "description", "duplicates", "renditions", "tombstone")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    DICOM_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    MY_ROLE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    RENDITIONS_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    kind: str
    folder_id: str
    size: int
    sha256: str
    mime_type: str
    media: Media
    dicom: Dicom
    group: Group
    source: Source
    metadata: _struct_pb2.Struct
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetRef]
    my_role: str
    path: _containers.RepeatedCompositeFieldContainer[PathEntry]
    description: str
    duplicates: int
    renditions: _containers.RepeatedScalarFieldContainer[str]
    tombstone: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[str] = ..., folder_id: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., mime_type: _Optional[str] = ..., media: _Optional[_Union[Media, _Mapping]] = ..., dicom: _Optional[_Union[Dicom, _Mapping]] = ..., group: _Optional[_Union[Group, _Mapping]] = ..., source: _Optional[_Union[Source, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., datasets: _Optional[_Iterable[_Union[DatasetRef, _Mapping]]] = ..., my_role: _Optional[str] = ..., path: _Optional[_Iterable[_Union[PathEntry, _Mapping]]] = ..., description: _Optional[str] = ..., duplicates: _Optional[int] = ..., renditions: _Optional[_Iterable[str]] = ..., tombstone: _Optional[bool] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("folder", "file")
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    folder: Folder
    file: File
    def __init__(self, folder: _Optional[_Union[Folder, _Mapping]] = ..., file: _Optional[_Union[File, _Mapping]] = ...) -> None: ...

class ItemPage(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class FolderPage(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Folder]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[Folder, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class FilePage(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[File]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[File, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KindTotal(_message.Message):
    __slots__ = ("files", "bytes")
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    files: int
    bytes: int
    def __init__(self, files: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class FolderSummary(_message.Message):
    __slots__ = ("folder_id", "folders", "files", "bytes", "by_kind")
    class ByKindEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: KindTotal
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[KindTotal, _Mapping]] = ...) -> None: ...
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    FOLDERS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    BY_KIND_FIELD_NUMBER: _ClassVar[int]
    folder_id: str
    folders: int
    files: int
    bytes: int
    by_kind: _containers.MessageMap[str, KindTotal]
    def __init__(self, folder_id: _Optional[str] = ..., folders: _Optional[int] = ..., files: _Optional[int] = ..., bytes: _Optional[int] = ..., by_kind: _Optional[_Mapping[str, KindTotal]] = ...) -> None: ...

class CreateFolderRequest(_message.Message):
    __slots__ = ("name", "description", "parent_id", "metadata", "cloud_sync")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CLOUD_SYNC_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parent_id: str
    metadata: _struct_pb2.Struct
    cloud_sync: CloudSync
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parent_id: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., cloud_sync: _Optional[_Union[CloudSync, _Mapping]] = ...) -> None: ...

class GetFolderRequest(_message.Message):
    __slots__ = ("folder_id",)
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    folder_id: str
    def __init__(self, folder_id: _Optional[str] = ...) -> None: ...

class ListFoldersRequest(_message.Message):
    __slots__ = ("parent_id", "cursor", "limit")
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    parent_id: str
    cursor: str
    limit: int
    def __init__(self, parent_id: _Optional[str] = ..., cursor: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListItemsRequest(_message.Message):
    __slots__ = ("folder_id", "kind", "cursor", "limit", "q", "order", "desc", "in_dataset", "dataset_synced", "metadata", "kinds")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    Q_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    DESC_FIELD_NUMBER: _ClassVar[int]
    IN_DATASET_FIELD_NUMBER: _ClassVar[int]
    DATASET_SYNCED_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    folder_id: str
    kind: str
    cursor: str
    limit: int
    q: str
    order: str
    desc: bool
    in_dataset: bool
    dataset_synced: bool
    metadata: _containers.ScalarMap[str, str]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, folder_id: _Optional[str] = ..., kind: _Optional[str] = ..., cursor: _Optional[str] = ..., limit: _Optional[int] = ..., q: _Optional[str] = ..., order: _Optional[str] = ..., desc: _Optional[bool] = ..., in_dataset: _Optional[bool] = ..., dataset_synced: _Optional[bool] = ..., metadata: _Optional[_Mapping[str, str]] = ..., kinds: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateFolderRequest(_message.Message):
    __slots__ = ("folder_id", "name", "description", "metadata")
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    folder_id: str
    name: str
    description: str
    metadata: _struct_pb2.Struct
    def __init__(self, folder_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class DeleteFolderRequest(_message.Message):
    __slots__ = ("folder_id",)
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    folder_id: str
    def __init__(self, folder_id: _Optional[str] = ...) -> None: ...

class ReEncodeRequest(_message.Message):
    __slots__ = ("file_ids",)
    FILE_IDS_FIELD_NUMBER: _ClassVar[int]
    file_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, file_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateFileRequest(_message.Message):
    __slots__ = ("file_id", "name", "metadata", "description")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    name: str
    metadata: _struct_pb2.Struct
    description: str
    def __init__(self, file_id: _Optional[str] = ..., name: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., description: _Optional[str] = ...) -> None: ...

class LookupFilesRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class FileLookup(_message.Message):
    __slots__ = ("items", "not_found")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[File]
    not_found: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[File, _Mapping]]] = ..., not_found: _Optional[_Iterable[str]] = ...) -> None: ...

class FileUpdate(_message.Message):
    __slots__ = ("id", "name", "description", "metadata")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    metadata: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpdateFilesRequest(_message.Message):
    __slots__ = ("updates", "metadata_mode")
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    METADATA_MODE_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[FileUpdate]
    metadata_mode: str
    def __init__(self, updates: _Optional[_Iterable[_Union[FileUpdate, _Mapping]]] = ..., metadata_mode: _Optional[str] = ...) -> None: ...

class UpdatedFiles(_message.Message):
    __slots__ = ("updated", "items")
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    updated: int
    items: _containers.RepeatedCompositeFieldContainer[File]
    def __init__(self, updated: _Optional[int] = ..., items: _Optional[_Iterable[_Union[File, _Mapping]]] = ...) -> None: ...

class SchemaKey(_message.Message):
    __slots__ = ("type", "values", "dimension", "retired")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    type: str
    values: _containers.RepeatedScalarFieldContainer[str]
    dimension: int
    retired: bool
    def __init__(self, type: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ..., dimension: _Optional[int] = ..., retired: _Optional[bool] = ...) -> None: ...

class MetadataSchema(_message.Message):
    __slots__ = ("keys", "version")
    class KeysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SchemaKey
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SchemaKey, _Mapping]] = ...) -> None: ...
    KEYS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.MessageMap[str, SchemaKey]
    version: int
    def __init__(self, keys: _Optional[_Mapping[str, SchemaKey]] = ..., version: _Optional[int] = ...) -> None: ...

class SetMetadataSchemaRequest(_message.Message):
    __slots__ = ("keys",)
    class KeysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SchemaKey
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SchemaKey, _Mapping]] = ...) -> None: ...
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.MessageMap[str, SchemaKey]
    def __init__(self, keys: _Optional[_Mapping[str, SchemaKey]] = ...) -> None: ...

class MoveRequest(_message.Message):
    __slots__ = ("file_ids", "folder_ids", "target_folder_id", "dry_run")
    FILE_IDS_FIELD_NUMBER: _ClassVar[int]
    FOLDER_IDS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    file_ids: _containers.RepeatedScalarFieldContainer[str]
    folder_ids: _containers.RepeatedScalarFieldContainer[str]
    target_folder_id: str
    dry_run: bool
    def __init__(self, file_ids: _Optional[_Iterable[str]] = ..., folder_ids: _Optional[_Iterable[str]] = ..., target_folder_id: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class DatasetImpact(_message.Message):
    __slots__ = ("id", "name", "links_removed")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LINKS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    links_removed: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., links_removed: _Optional[int] = ...) -> None: ...

class MoveResponse(_message.Message):
    __slots__ = ("moved", "dry_run", "folders", "files", "datasets")
    MOVED_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    FOLDERS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    moved: int
    dry_run: bool
    folders: int
    files: int
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetImpact]
    def __init__(self, moved: _Optional[int] = ..., dry_run: _Optional[bool] = ..., folders: _Optional[int] = ..., files: _Optional[int] = ..., datasets: _Optional[_Iterable[_Union[DatasetImpact, _Mapping]]] = ...) -> None: ...

class BulkDeleteRequest(_message.Message):
    __slots__ = ("file_ids", "folder_ids", "dry_run")
    FILE_IDS_FIELD_NUMBER: _ClassVar[int]
    FOLDER_IDS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    file_ids: _containers.RepeatedScalarFieldContainer[str]
    folder_ids: _containers.RepeatedScalarFieldContainer[str]
    dry_run: bool
    def __init__(self, file_ids: _Optional[_Iterable[str]] = ..., folder_ids: _Optional[_Iterable[str]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class BulkDeleteResponse(_message.Message):
    __slots__ = ("deleted", "dry_run", "folders", "files", "datasets")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    FOLDERS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    dry_run: bool
    folders: int
    files: int
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetImpact]
    def __init__(self, deleted: _Optional[int] = ..., dry_run: _Optional[bool] = ..., folders: _Optional[int] = ..., files: _Optional[int] = ..., datasets: _Optional[_Iterable[_Union[DatasetImpact, _Mapping]]] = ...) -> None: ...

class DatasetRefPage(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[DatasetRef]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[DatasetRef, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class GetThumbnailRequest(_message.Message):
    __slots__ = ("file_id", "size")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    size: int
    def __init__(self, file_id: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class GetSliceRequest(_message.Message):
    __slots__ = ("file_id", "index")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    index: int
    def __init__(self, file_id: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class PictureHeader(_message.Message):
    __slots__ = ("mime_type", "length", "etag")
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    mime_type: str
    length: int
    etag: str
    def __init__(self, mime_type: _Optional[str] = ..., length: _Optional[int] = ..., etag: _Optional[str] = ...) -> None: ...

class Picture(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: PictureHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[PictureHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ImageGroupHeader(_message.Message):
    __slots__ = ("folder_id", "kind", "name")
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    folder_id: str
    kind: str
    name: str
    def __init__(self, folder_id: _Optional[str] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class UploadImageGroupRequest(_message.Message):
    __slots__ = ("group", "file_name", "chunk")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    group: ImageGroupHeader
    file_name: str
    chunk: bytes
    def __init__(self, group: _Optional[_Union[ImageGroupHeader, _Mapping]] = ..., file_name: _Optional[str] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ImageGroupUploaded(_message.Message):
    __slots__ = ("file", "folder", "job_id", "file_id", "folder_id")
    FILE_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    file: File
    folder: Folder
    job_id: str
    file_id: str
    folder_id: str
    def __init__(self, file: _Optional[_Union[File, _Mapping]] = ..., folder: _Optional[_Union[Folder, _Mapping]] = ..., job_id: _Optional[str] = ..., file_id: _Optional[str] = ..., folder_id: _Optional[str] = ...) -> None: ...

class JobRef(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("folder_id", "name", "metadata")
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    folder_id: str
    name: str
    metadata: _struct_pb2.Struct
    def __init__(self, folder_id: _Optional[str] = ..., name: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadResponse(_message.Message):
    __slots__ = ("job_id", "files")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    files: _containers.RepeatedCompositeFieldContainer[File]
    def __init__(self, job_id: _Optional[str] = ..., files: _Optional[_Iterable[_Union[File, _Mapping]]] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("file_id", "offset", "length", "rendition")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    RENDITION_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    offset: int
    length: int
    rendition: str
    def __init__(self, file_id: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., rendition: _Optional[str] = ...) -> None: ...

class DownloadHeader(_message.Message):
    __slots__ = ("name", "mime_type", "size", "offset", "length", "redirect_url")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_URL_FIELD_NUMBER: _ClassVar[int]
    name: str
    mime_type: str
    size: int
    offset: int
    length: int
    redirect_url: str
    def __init__(self, name: _Optional[str] = ..., mime_type: _Optional[str] = ..., size: _Optional[int] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., redirect_url: _Optional[str] = ...) -> None: ...

class DownloadResponse(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: DownloadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[DownloadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class GetFileRequest(_message.Message):
    __slots__ = ("file_id",)
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    def __init__(self, file_id: _Optional[str] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("q", "kind", "folder_id", "cursor", "limit", "order", "desc", "in_dataset", "metadata", "kinds")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    Q_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    DESC_FIELD_NUMBER: _ClassVar[int]
    IN_DATASET_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    q: str
    kind: str
    folder_id: str
    cursor: str
    limit: int
    order: str
    desc: bool
    in_dataset: bool
    metadata: _containers.ScalarMap[str, str]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, q: _Optional[str] = ..., kind: _Optional[str] = ..., folder_id: _Optional[str] = ..., cursor: _Optional[str] = ..., limit: _Optional[int] = ..., order: _Optional[str] = ..., desc: _Optional[bool] = ..., in_dataset: _Optional[bool] = ..., metadata: _Optional[_Mapping[str, str]] = ..., kinds: _Optional[_Iterable[str]] = ...) -> None: ...

class ShareDatasetRequest(_message.Message):
    __slots__ = ("dataset_id", "emails", "role")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    EMAILS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    emails: _containers.RepeatedScalarFieldContainer[str]
    role: str
    def __init__(self, dataset_id: _Optional[str] = ..., emails: _Optional[_Iterable[str]] = ..., role: _Optional[str] = ...) -> None: ...

class UnshareDatasetRequest(_message.Message):
    __slots__ = ("dataset_id", "user_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    user_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("id", "name", "description", "synced_folder_id", "synced", "unsynced_from_folder_id", "file_count", "created_at", "created_by", "my_role", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    UNSYNCED_FROM_FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    MY_ROLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    synced_folder_id: str
    synced: bool
    unsynced_from_folder_id: str
    file_count: int
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    my_role: str
    version: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., synced_folder_id: _Optional[str] = ..., synced: _Optional[bool] = ..., unsynced_from_folder_id: _Optional[str] = ..., file_count: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., my_role: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DatasetPage(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Dataset]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class CreateDatasetRequest(_message.Message):
    __slots__ = ("name", "description", "synced_folder_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    synced_folder_id: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., synced_folder_id: _Optional[str] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ("cursor", "limit")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    limit: int
    def __init__(self, cursor: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class UpdateDatasetRequest(_message.Message):
    __slots__ = ("dataset_id", "name", "description")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    name: str
    description: str
    def __init__(self, dataset_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class DeleteDatasetRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class AddFilesRequest(_message.Message):
    __slots__ = ("dataset_id", "file_ids")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_IDS_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    file_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dataset_id: _Optional[str] = ..., file_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AddFilesResponse(_message.Message):
    __slots__ = ("added",)
    ADDED_FIELD_NUMBER: _ClassVar[int]
    added: int
    def __init__(self, added: _Optional[int] = ...) -> None: ...

class RemoveFileRequest(_message.Message):
    __slots__ = ("dataset_id", "file_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    file_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., file_id: _Optional[str] = ...) -> None: ...

class RemoveFilesRequest(_message.Message):
    __slots__ = ("dataset_id", "file_ids")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_IDS_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    file_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dataset_id: _Optional[str] = ..., file_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveFilesResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class ListDatasetFilesRequest(_message.Message):
    __slots__ = ("dataset_id", "cursor", "limit")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    cursor: str
    limit: int
    def __init__(self, dataset_id: _Optional[str] = ..., cursor: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class Collaborator(_message.Message):
    __slots__ = ("user_id", "email", "name", "role", "inherited_from")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    INHERITED_FROM_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    email: str
    name: str
    role: str
    inherited_from: str
    def __init__(self, user_id: _Optional[str] = ..., email: _Optional[str] = ..., name: _Optional[str] = ..., role: _Optional[str] = ..., inherited_from: _Optional[str] = ...) -> None: ...

class CollaboratorPage(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Collaborator]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[Collaborator, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class ListCollaboratorsRequest(_message.Message):
    __slots__ = ("folder_id",)
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    folder_id: str
    def __init__(self, folder_id: _Optional[str] = ...) -> None: ...

class InviteCollaboratorsRequest(_message.Message):
    __slots__ = ("folder_id", "emails", "role")
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    EMAILS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    folder_id: str
    emails: _containers.RepeatedScalarFieldContainer[str]
    role: str
    def __init__(self, folder_id: _Optional[str] = ..., emails: _Optional[_Iterable[str]] = ..., role: _Optional[str] = ...) -> None: ...

class ChangeRoleRequest(_message.Message):
    __slots__ = ("folder_id", "user_id", "role")
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    folder_id: str
    user_id: str
    role: str
    def __init__(self, folder_id: _Optional[str] = ..., user_id: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class RemoveCollaboratorRequest(_message.Message):
    __slots__ = ("folder_id", "user_id")
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    folder_id: str
    user_id: str
    def __init__(self, folder_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ListJobItemsRequest(_message.Message):
    __slots__ = ("job_id", "cursor", "limit")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    cursor: str
    limit: int
    def __init__(self, job_id: _Optional[str] = ..., cursor: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class JobErrorPage(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[JobError]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[JobError, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("done", "total", "bytes", "skipped")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    bytes: Progress
    skipped: int
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ..., bytes: _Optional[_Union[Progress, _Mapping]] = ..., skipped: _Optional[int] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("name", "code", "message", "details")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    name: str
    code: str
    message: str
    details: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "kind", "folder_id", "status", "progress", "files", "errors", "created_at", "created_by", "file_count", "error_count", "next_files_cursor", "next_errors_cursor")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    NEXT_FILES_CURSOR_FIELD_NUMBER: _ClassVar[int]
    NEXT_ERRORS_CURSOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    folder_id: str
    status: str
    progress: Progress
    files: _containers.RepeatedCompositeFieldContainer[File]
    errors: _containers.RepeatedCompositeFieldContainer[JobError]
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    file_count: int
    error_count: int
    next_files_cursor: str
    next_errors_cursor: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., folder_id: _Optional[str] = ..., status: _Optional[str] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., files: _Optional[_Iterable[_Union[File, _Mapping]]] = ..., errors: _Optional[_Iterable[_Union[JobError, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., file_count: _Optional[int] = ..., error_count: _Optional[int] = ..., next_files_cursor: _Optional[str] = ..., next_errors_cursor: _Optional[str] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("id", "email", "name", "org_role", "created_at", "api_key")
    ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ORG_ROLE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    email: str
    name: str
    org_role: str
    created_at: _timestamp_pb2.Timestamp
    api_key: str
    def __init__(self, id: _Optional[str] = ..., email: _Optional[str] = ..., name: _Optional[str] = ..., org_role: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., api_key: _Optional[str] = ...) -> None: ...

class UserPage(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[User]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[User, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("email", "name", "org_role")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ORG_ROLE_FIELD_NUMBER: _ClassVar[int]
    email: str
    name: str
    org_role: str
    def __init__(self, email: _Optional[str] = ..., name: _Optional[str] = ..., org_role: _Optional[str] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("cursor", "limit")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    limit: int
    def __init__(self, cursor: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class UserKeysRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "user_id", "api_key", "created_at", "revoked")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_id: str
    api_key: str
    created_at: _timestamp_pb2.Timestamp
    revoked: bool
    def __init__(self, id: _Optional[str] = ..., user_id: _Optional[str] = ..., api_key: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked: _Optional[bool] = ...) -> None: ...

class ApiKeyPage(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ApiKey]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class Integration(_message.Message):
    __slots__ = ("id", "name", "provider", "bucket", "endpoint", "region", "created_at", "created_by", "shared_with", "events_token")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    SHARED_WITH_FIELD_NUMBER: _ClassVar[int]
    EVENTS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    provider: str
    bucket: str
    endpoint: str
    region: str
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    shared_with: _containers.RepeatedScalarFieldContainer[str]
    events_token: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., provider: _Optional[str] = ..., bucket: _Optional[str] = ..., endpoint: _Optional[str] = ..., region: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., shared_with: _Optional[_Iterable[str]] = ..., events_token: _Optional[str] = ...) -> None: ...

class RotateIntegrationRequest(_message.Message):
    __slots__ = ("integration_id", "access_key", "secret_key", "session_token", "rotate_events_token")
    INTEGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_KEY_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ROTATE_EVENTS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    integration_id: str
    access_key: str
    secret_key: str
    session_token: str
    rotate_events_token: bool
    def __init__(self, integration_id: _Optional[str] = ..., access_key: _Optional[str] = ..., secret_key: _Optional[str] = ..., session_token: _Optional[str] = ..., rotate_events_token: _Optional[bool] = ...) -> None: ...

class SyncFolderRequest(_message.Message):
    __slots__ = ("folder_id",)
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    folder_id: str
    def __init__(self, folder_id: _Optional[str] = ...) -> None: ...

class LastSync(_message.Message):
    __slots__ = ("job_id", "status", "started_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: str
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FolderSync(_message.Message):
    __slots__ = ("cloud_synced", "synced_folder_id", "cloud_sync", "paused", "objects", "last_sync")
    CLOUD_SYNCED_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    CLOUD_SYNC_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_FIELD_NUMBER: _ClassVar[int]
    cloud_synced: bool
    synced_folder_id: str
    cloud_sync: CloudSync
    paused: bool
    objects: int
    last_sync: LastSync
    def __init__(self, cloud_synced: _Optional[bool] = ..., synced_folder_id: _Optional[str] = ..., cloud_sync: _Optional[_Union[CloudSync, _Mapping]] = ..., paused: _Optional[bool] = ..., objects: _Optional[int] = ..., last_sync: _Optional[_Union[LastSync, _Mapping]] = ...) -> None: ...

class IntegrationPage(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Integration]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[Integration, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class CreateIntegrationRequest(_message.Message):
    __slots__ = ("name", "provider", "endpoint", "region", "bucket", "access_key", "secret_key", "session_token", "role_arn")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_KEY_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ROLE_ARN_FIELD_NUMBER: _ClassVar[int]
    name: str
    provider: str
    endpoint: str
    region: str
    bucket: str
    access_key: str
    secret_key: str
    session_token: str
    role_arn: str
    def __init__(self, name: _Optional[str] = ..., provider: _Optional[str] = ..., endpoint: _Optional[str] = ..., region: _Optional[str] = ..., bucket: _Optional[str] = ..., access_key: _Optional[str] = ..., secret_key: _Optional[str] = ..., session_token: _Optional[str] = ..., role_arn: _Optional[str] = ...) -> None: ...

class ListIntegrationsRequest(_message.Message):
    __slots__ = ("cursor", "limit")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    limit: int
    def __init__(self, cursor: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class GetIntegrationRequest(_message.Message):
    __slots__ = ("integration_id",)
    INTEGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    integration_id: str
    def __init__(self, integration_id: _Optional[str] = ...) -> None: ...

class ShareIntegrationRequest(_message.Message):
    __slots__ = ("integration_id", "shared_with")
    INTEGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    SHARED_WITH_FIELD_NUMBER: _ClassVar[int]
    integration_id: str
    shared_with: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, integration_id: _Optional[str] = ..., shared_with: _Optional[_Iterable[str]] = ...) -> None: ...

class ImportObjectsRequest(_message.Message):
    __slots__ = ("folder_id", "integration_id", "keys", "prefix", "manifest")
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    INTEGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    folder_id: str
    integration_id: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    prefix: str
    manifest: _struct_pb2.Struct
    def __init__(self, folder_id: _Optional[str] = ..., integration_id: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ..., prefix: _Optional[str] = ..., manifest: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class OpenUploadSessionRequest(_message.Message):
    __slots__ = ("folder_id", "name", "size", "part_size", "expires_in_s", "metadata")
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PART_SIZE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    folder_id: str
    name: str
    size: int
    part_size: int
    expires_in_s: int
    metadata: _struct_pb2.Struct
    def __init__(self, folder_id: _Optional[str] = ..., name: _Optional[str] = ..., size: _Optional[int] = ..., part_size: _Optional[int] = ..., expires_in_s: _Optional[int] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UploadSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class PartUrl(_message.Message):
    __slots__ = ("part", "size", "url")
    PART_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    part: int
    size: int
    url: str
    def __init__(self, part: _Optional[int] = ..., size: _Optional[int] = ..., url: _Optional[str] = ...) -> None: ...

class StoredPart(_message.Message):
    __slots__ = ("part", "size", "etag")
    PART_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    part: int
    size: int
    etag: str
    def __init__(self, part: _Optional[int] = ..., size: _Optional[int] = ..., etag: _Optional[str] = ...) -> None: ...

class UploadSession(_message.Message):
    __slots__ = ("id", "job_id", "folder_id", "name", "size", "part_size", "status", "expires_at", "file_id", "parts_stored", "bytes_stored", "parts", "metadata", "parts_known")
    ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PART_SIZE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    PARTS_STORED_FIELD_NUMBER: _ClassVar[int]
    BYTES_STORED_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PARTS_KNOWN_FIELD_NUMBER: _ClassVar[int]
    id: str
    job_id: str
    folder_id: str
    name: str
    size: int
    part_size: int
    status: str
    expires_at: _timestamp_pb2.Timestamp
    file_id: str
    parts_stored: _containers.RepeatedCompositeFieldContainer[StoredPart]
    bytes_stored: int
    parts: _containers.RepeatedCompositeFieldContainer[PartUrl]
    metadata: _struct_pb2.Struct
    parts_known: bool
    def __init__(self, id: _Optional[str] = ..., job_id: _Optional[str] = ..., folder_id: _Optional[str] = ..., name: _Optional[str] = ..., size: _Optional[int] = ..., part_size: _Optional[int] = ..., status: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., file_id: _Optional[str] = ..., parts_stored: _Optional[_Iterable[_Union[StoredPart, _Mapping]]] = ..., bytes_stored: _Optional[int] = ..., parts: _Optional[_Iterable[_Union[PartUrl, _Mapping]]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., parts_known: _Optional[bool] = ...) -> None: ...

class PutPartHeader(_message.Message):
    __slots__ = ("url",)
    URL_FIELD_NUMBER: _ClassVar[int]
    url: str
    def __init__(self, url: _Optional[str] = ...) -> None: ...

class PutPartRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: PutPartHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[PutPartHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadCompleted(_message.Message):
    __slots__ = ("job_id", "file", "file_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    file: File
    file_id: str
    def __init__(self, job_id: _Optional[str] = ..., file: _Optional[_Union[File, _Mapping]] = ..., file_id: _Optional[str] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("subject_id", "actor_id", "type", "since", "until", "cursor", "limit")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    subject_id: _containers.RepeatedScalarFieldContainer[str]
    actor_id: str
    type: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    cursor: str
    limit: int
    def __init__(self, subject_id: _Optional[_Iterable[str]] = ..., actor_id: _Optional[str] = ..., type: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cursor: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "type", "occurred_at", "actor_id", "subject_id", "data", "causation_id", "source")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CAUSATION_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: str
    occurred_at: _timestamp_pb2.Timestamp
    actor_id: str
    subject_id: str
    data: _struct_pb2.Struct
    causation_id: str
    source: str
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., causation_id: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class EventPage(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Event]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class ListDuplicatesRequest(_message.Message):
    __slots__ = ("file_id", "cursor", "limit")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    cursor: str
    limit: int
    def __init__(self, file_id: _Optional[str] = ..., cursor: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class PurgeFromTrashRequest(_message.Message):
    __slots__ = ("file_ids", "folder_ids")
    FILE_IDS_FIELD_NUMBER: _ClassVar[int]
    FOLDER_IDS_FIELD_NUMBER: _ClassVar[int]
    file_ids: _containers.RepeatedScalarFieldContainer[str]
    folder_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, file_ids: _Optional[_Iterable[str]] = ..., folder_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListTrashRequest(_message.Message):
    __slots__ = ("cursor", "limit")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    limit: int
    def __init__(self, cursor: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class TrashItem(_message.Message):
    __slots__ = ("type", "id", "name", "parent_id", "folder_id", "files", "size", "kind", "deleted_at", "deleted_by", "purge_at", "my_role")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DELETED_AT_FIELD_NUMBER: _ClassVar[int]
    DELETED_BY_FIELD_NUMBER: _ClassVar[int]
    PURGE_AT_FIELD_NUMBER: _ClassVar[int]
    MY_ROLE_FIELD_NUMBER: _ClassVar[int]
    type: str
    id: str
    name: str
    parent_id: str
    folder_id: str
    files: int
    size: int
    kind: str
    deleted_at: _timestamp_pb2.Timestamp
    deleted_by: str
    purge_at: _timestamp_pb2.Timestamp
    my_role: str
    def __init__(self, type: _Optional[str] = ..., id: _Optional[str] = ..., name: _Optional[str] = ..., parent_id: _Optional[str] = ..., folder_id: _Optional[str] = ..., files: _Optional[int] = ..., size: _Optional[int] = ..., kind: _Optional[str] = ..., deleted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deleted_by: _Optional[str] = ..., purge_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., my_role: _Optional[str] = ...) -> None: ...

class TrashPage(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[TrashItem]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[TrashItem, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class RestoreFromTrashRequest(_message.Message):
    __slots__ = ("file_ids", "folder_ids")
    FILE_IDS_FIELD_NUMBER: _ClassVar[int]
    FOLDER_IDS_FIELD_NUMBER: _ClassVar[int]
    file_ids: _containers.RepeatedScalarFieldContainer[str]
    folder_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, file_ids: _Optional[_Iterable[str]] = ..., folder_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Restored(_message.Message):
    __slots__ = ("restored_folders", "restored_files")
    RESTORED_FOLDERS_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FILES_FIELD_NUMBER: _ClassVar[int]
    restored_folders: int
    restored_files: int
    def __init__(self, restored_folders: _Optional[int] = ..., restored_files: _Optional[int] = ...) -> None: ...

class Emptied(_message.Message):
    __slots__ = ("purged_folders", "purged_files")
    PURGED_FOLDERS_FIELD_NUMBER: _ClassVar[int]
    PURGED_FILES_FIELD_NUMBER: _ClassVar[int]
    purged_folders: int
    purged_files: int
    def __init__(self, purged_folders: _Optional[int] = ..., purged_files: _Optional[int] = ...) -> None: ...

class CreateWebhookRequest(_message.Message):
    __slots__ = ("url", "events", "secret")
    URL_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    url: str
    events: _containers.RepeatedScalarFieldContainer[str]
    secret: str
    def __init__(self, url: _Optional[str] = ..., events: _Optional[_Iterable[str]] = ..., secret: _Optional[str] = ...) -> None: ...

class Webhook(_message.Message):
    __slots__ = ("id", "url", "events", "created_at", "created_by", "secret", "previous_secret_valid_until")
    ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SECRET_VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    id: str
    url: str
    events: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    secret: str
    previous_secret_valid_until: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., url: _Optional[str] = ..., events: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., secret: _Optional[str] = ..., previous_secret_valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RotateWebhookSecretRequest(_message.Message):
    __slots__ = ("webhook_id", "secret", "keep_previous_for_s")
    WEBHOOK_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    KEEP_PREVIOUS_FOR_S_FIELD_NUMBER: _ClassVar[int]
    webhook_id: str
    secret: str
    keep_previous_for_s: float
    def __init__(self, webhook_id: _Optional[str] = ..., secret: _Optional[str] = ..., keep_previous_for_s: _Optional[float] = ...) -> None: ...

class WebhookDeliveryRef(_message.Message):
    __slots__ = ("webhook_id", "delivery_id")
    WEBHOOK_ID_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    webhook_id: str
    delivery_id: str
    def __init__(self, webhook_id: _Optional[str] = ..., delivery_id: _Optional[str] = ...) -> None: ...

class WebhookList(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Webhook]
    def __init__(self, items: _Optional[_Iterable[_Union[Webhook, _Mapping]]] = ...) -> None: ...

class WebhookRef(_message.Message):
    __slots__ = ("webhook_id",)
    WEBHOOK_ID_FIELD_NUMBER: _ClassVar[int]
    webhook_id: str
    def __init__(self, webhook_id: _Optional[str] = ...) -> None: ...

class ListWebhookDeliveriesRequest(_message.Message):
    __slots__ = ("webhook_id", "limit", "status")
    WEBHOOK_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    webhook_id: str
    limit: int
    status: str
    def __init__(self, webhook_id: _Optional[str] = ..., limit: _Optional[int] = ..., status: _Optional[str] = ...) -> None: ...

class WebhookDelivery(_message.Message):
    __slots__ = ("id", "event", "event_id", "status", "attempts", "last_status", "last_error", "created_at", "next_attempt_at", "delivered_at", "retried_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_AT_FIELD_NUMBER: _ClassVar[int]
    RETRIED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    event: str
    event_id: str
    status: str
    attempts: int
    last_status: int
    last_error: str
    created_at: _timestamp_pb2.Timestamp
    next_attempt_at: _timestamp_pb2.Timestamp
    delivered_at: _timestamp_pb2.Timestamp
    retried_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., event: _Optional[str] = ..., event_id: _Optional[str] = ..., status: _Optional[str] = ..., attempts: _Optional[int] = ..., last_status: _Optional[int] = ..., last_error: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delivered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retried_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WebhookDeliveryList(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[WebhookDelivery]
    def __init__(self, items: _Optional[_Iterable[_Union[WebhookDelivery, _Mapping]]] = ...) -> None: ...
