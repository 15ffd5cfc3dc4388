"""Every public route of the gateway, declared: one table, and its matcher.

A route is a method, a path template with typed parameters, the service that owns it,
the shapes of its body and answer (`shared/api/`), and, where the answer takes more
than forwarding, the name of the `Compose` method that makes it. The table is plain
data: the HTTP dispatcher (app.py), `/openapi.json` (openapi.py) and the tests read it,
and so can the gRPC API.

A request is matched on its raw path, before anything is decoded. A path holding a
percent-encoded byte, a dot segment, a backslash or a byte a URL cannot carry is
refused (400 `invalid_path`): no id or name of ours needs one, and each is a way to
make one path read as another. Each parameter is then parsed by its type: an id that
is not a UUID answers exactly as an unknown id does (404 `not_found`) and goes nowhere.
The service's URL is built from the template and the parsed parameters, never from
the client's path, so nothing a client writes can reach another route or `/internal`.

Adding a route is one entry in `ROUTES` (and, for a new path parameter, one in
`PARAMS`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from shared.api import acl, audit, catalog, datasets, dicomweb, ingest

Owner = Literal["acl", "catalog", "datasets", "dicom", "ingest", "thumbnails", "gateway"]


# -- parameters ----------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """A path parameter: its type, and the thing it names (for "folder x does not exist")."""

    name: str
    type: Literal["uuid", "int", "uid", "frames"]
    names: str
    minimum: int | None = None
    maximum: int | None = None

    def parse(self, segment: str) -> str | None:
        """The canonical text of a valid value, or None."""
        if self.type == "uuid":
            return segment.lower() if _UUID.fullmatch(segment) else None
        if self.type in ("uid", "frames"):
            pattern, longest = _PATTERNS[self.type]
            return segment if len(segment) <= longest and pattern.fullmatch(segment) else None
        if not _DIGITS.fullmatch(segment):
            return None
        value = int(segment)
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            return None
        return str(value)

    def schema(self) -> dict[str, Any]:
        if self.type == "uuid":
            return {"type": "string", "format": "uuid"}
        if self.type in ("uid", "frames"):
            pattern, longest = _PATTERNS[self.type]
            return {"type": "string", "pattern": f"^{pattern.pattern}$", "maxLength": longest}
        found: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            found["minimum"] = self.minimum
        if self.maximum is not None:
            found["maximum"] = self.maximum
        return found


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DIGITS = re.compile(r"[0-9]{1,9}")
# A DICOM UID (digits and dots, at most 64 characters), and a list of frame numbers.
_PATTERNS = {
    "uid": (re.compile(r"[0-9]+(\.[0-9]+)*"), 64),
    "frames": (re.compile(r"[1-9][0-9]{0,5}(,[1-9][0-9]{0,5}){0,99}"), 700),
}

PARAMS = {
    p.name: p
    for p in (
        Param("folder_id", "uuid", "folder"),
        Param("file_id", "uuid", "file"),
        Param("dataset_id", "uuid", "dataset"),
        Param("user_id", "uuid", "user"),
        Param("key_id", "uuid", "key"),
        Param("job_id", "uuid", "job"),
        Param("integration_id", "uuid", "integration"),
        Param("session_id", "uuid", "upload session"),
        Param("webhook_id", "uuid", "webhook"),
        Param("delivery_id", "uuid", "delivery"),
        Param("number", "int", "part", minimum=1, maximum=10_000),
        Param("index", "int", "slice", minimum=0, maximum=100_000),
        Param("study_uid", "uid", "study"),
        Param("series_uid", "uid", "series"),
        Param("sop_uid", "uid", "instance"),
        Param("frames", "frames", "frame"),
    )
}


@dataclass(frozen=True)
class Query:
    """A query parameter the route takes; only declared ones reach the service. (`where`
    "header": a request header it needs, for the document; headers are not forwarded
    by being declared.)"""

    name: str
    schema: dict[str, Any]
    description: str = ""
    required: bool = False
    many: bool = False
    where: Literal["query", "header"] = "query"
    # A family of parameters, each named by this prefix and a key of the caller's
    # (`metadata.<key>`): every such parameter goes on to the service.
    prefix: str | None = None

    def takes(self, name: str) -> bool:
        return name == self.name if self.prefix is None else name.startswith(self.prefix)

    @property
    def one_value(self) -> bool:
        """Whether it is given at most once (a family's keys are the caller's: each of
        them may be given again, as `metadata.<key>` matching either value)."""
        return not self.many and self.prefix is None


CURSOR = Query("cursor", {"type": "string"}, "from the previous page's `next_cursor`")
LIMIT = Query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})
PAGE = (CURSOR, LIMIT)
BOOLEAN = {"type": "string", "enum": ["true", "false"]}
# Filters and order of folder listings and search (services/catalog/listing.py).
FILTERS = (
    Query("q", {"type": "string", "minLength": 1, "maxLength": 300}, "part of the name"),
    Query("kind", {"type": "string", "pattern": "^([a-z][a-z0-9_]{0,39})?$"},
          "file kinds (and `folder`): any of them", many=True),
    Query("in_dataset", BOOLEAN, "files linked to a dataset (true) or to none (false);"
          " folders are left out"),
    Query("order", {"type": "string", "enum": ["name", "created_at", "size"], "default": "name"},
          "each section's order (folders have no size: by name then); ties by id"),
    Query("desc", BOOLEAN, "the order reversed"),
    Query("metadata.<key>", {"type": "string", "maxLength": 1000},
          "`metadata.<key>=<value>`: files and folders whose metadata has that value at that"
          " key (`5` matches the number or the text, `true` the boolean or the text);"
          " a key given twice matches either value. `metadata.<key>.gte=` / `.lte=`: a"
          " range, for keys the metadata schema types as number or datetime (files only)",
          prefix="metadata."),
)  # fmt: skip
CSRF = Query(
    "X-Files-CSRF",
    {"type": "string", "minLength": 1, "maxLength": 100},
    "any value: shows a cookie-signed write comes from our own pages",
    required=True,
    where="header",
)


# -- bodies --------------------------------------------------------------------------


@dataclass(frozen=True)
class Multipart:
    """A multipart/form-data body, streamed through (never read whole here)."""

    schema: dict[str, Any]


@dataclass(frozen=True)
class Raw:
    """Bytes, streamed through (of a JSON media type: `schema` says their shape)."""

    media_type: str = "application/octet-stream"
    schema: Mapping[str, Any] | None = None


Body = type[BaseModel] | Multipart | Raw | None
Answer = type[BaseModel] | Raw | None


# -- routes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: Literal["GET", "POST", "PATCH", "PUT", "DELETE"]
    template: str
    owner: Owner
    summary: str
    status: int = 200
    body: Body = None
    answer: Answer = None
    query: Sequence[Query] = ()
    # The `Compose` method that answers (services/gateway/compose.py); None: forwarded.
    compose: str | None = None
    # Answered without an API key: the route checks a right of its own (a signed URL).
    public: bool = False
    # A change of users, keys or grants: cached callers are forgotten once it is made.
    changes_access: bool = False
    # A read given a write's time budget (FILES_GATEWAY_WRITE_BUDGET_S): a DICOMweb
    # retrieve of a compressed instance copies it whole from the object store first.
    long: bool = False
    # Statuses beyond those every route may answer (documented in /openapi.json).
    errors: Sequence[int] = ()
    # Other successful answers, with what they mean.
    also: Mapping[int, str] = field(default_factory=dict)
    # Why the answer may differ from a plain forward, for the document.
    description: str = ""
    # A query parameter it does not declare is refused (400 `unknown_parameter`), not
    # dropped: a filter misspelt must not list everything.
    strict_query: bool = False
    # Ids its answer gives, as JSON pointers into the body: `{"folder_id": "/id"}`.
    # They become the document's links to every route taking such an id (what a
    # client, or the fuzzer, does next).
    gives: Mapping[str, str] = field(default_factory=dict)
    segments: tuple[str | Param, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = self.template.strip("/").split("/")
        segments = tuple(
            PARAMS[p[1:-1]] if p.startswith("{") and p.endswith("}") else p for p in parts
        )
        object.__setattr__(self, "segments", segments)

    @property
    def name(self) -> str:
        """A stable operation id: `get_folders_folder_id_items`."""
        words = [s.name if isinstance(s, Param) else s for s in self.segments[1:]]
        return "_".join([self.method.lower(), *words]).replace("-", "_")

    @property
    def params(self) -> tuple[Param, ...]:
        return tuple(s for s in self.segments if isinstance(s, Param))

    def path(self, values: dict[str, str]) -> str:
        """The service's path: the template, filled with parsed values only."""
        return self.template.format(**values)


F, FI, DS = "{folder_id}", "{file_id}", "{dataset_id}"
# DICOMweb's root on a folder, and its study, series and instance paths below it.
DICOMWEB = f"/v1/folders/{F}/dicomweb"
STUDY = "/studies/{study_uid}"
SERIES = f"{STUDY}/series/{{series_uid}}"
INSTANCE = f"{SERIES}/instances/{{sop_uid}}"
# The DICOM JSON model (PS3.18 F.2): datasets, each attribute by its tag.
DICOM_JSON = Raw(
    "application/dicom+json",
    {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {"vr": {"type": "string"}, "Value": {"type": "array"}},
                "required": ["vr"],
            },
        },
    },
)
MULTIPART_DICOM = Raw('multipart/related; type="application/dicom"')
# The Store Instances Response (PS3.18 10.5.3): instances stored, and those not.
STORED = Raw("application/dicom+json", {"type": "object"})
QIDO = (
    *(Query(keyword, {"type": "string", "maxLength": 1000}, f"matched (tag {tag})")
      for keyword, tag in dicomweb.MATCHED.items()),
    *(Query(keyword, {"type": "string", "maxLength": 64}, "taken, not matched (a `Warning`"
            " says so)")
      for keyword in dicomweb.UNMATCHED),
    Query("limit", {"type": "integer", "minimum": 1, "maximum": dicomweb.MAX_LIMIT}),
    Query("offset", {"type": "integer", "minimum": 0}),
    Query("includefield", {"type": "string", "maxLength": 64},
          "taken: every kept attribute is answered", many=True),
    Query("fuzzymatching", BOOLEAN, "taken: names and descriptions always match"
          " regardless of case"),
)  # fmt: skip
QIDO_NOTE = (
    "UIDs may be lists (comma-separated); texts take the wildcards `*` and `?` (names and"
    " descriptions regardless of case); dates a day `YYYYMMDD` or a range `A-B`, `A-`,"
    " `-B`. Answers the attributes the DICOM context keeps: UIDs, PatientID, PatientName,"
    " PatientBirthDate, StudyDate, StudyTime, StudyDescription, StudyID, AccessionNumber,"
    " ReferringPhysicianName, Modality, SeriesNumber, SeriesDescription, SOPClassUID,"
    " InstanceNumber, Rows, Columns and counts."
)
WRITE_ERRORS = (400, 403, 409, 422)

ROUTES: tuple[Route, ...] = (
    # -- users and keys (acl) --
    Route("POST", "/v1/users", "acl", "Create a user (org admins)", 201, acl.NewUser,
          acl.NewUserAnswer, changes_access=True, errors=WRITE_ERRORS,
          gives={"user_id": "/id"}),
    Route("GET", "/v1/users", "acl", "List users (org admins)", answer=acl.Users, query=PAGE,
          errors=(403, 422)),
    Route("GET", "/v1/users/me", "acl", "The caller", answer=acl.User),
    Route("POST", "/v1/users/{user_id}/keys", "acl", "Issue an API key", 201,
          answer=acl.IssuedKey, changes_access=True, errors=(403,), gives={"key_id": "/id"}),
    Route("GET", "/v1/users/{user_id}/keys", "acl", "List a user's keys", answer=acl.Keys,
          errors=(403,)),
    Route("DELETE", "/v1/keys/{key_id}", "acl", "Revoke a key", 204, changes_access=True,
          errors=(403,)),
    # -- the web app's sessions (acl): the cookie, not an API key, signs them in --
    Route("POST", "/v1/sessions", "acl", "Sign in: an API key for a session cookie", 201,
          acl.SignIn, acl.Session, compose="sign_in", public=True, query=(CSRF,),
          errors=(401, 403, 413, 422),
          description="Sets `files_session` (HttpOnly, SameSite=Strict; over TLS Secure and"
                      " named `__Host-files_session`). A"
                      " request without `Authorization` is then signed in by it; its writes"
                      " need the `X-Files-CSRF` header, and an `Origin`, if sent, of ours."),
    Route("DELETE", "/v1/sessions", "acl", "Sign out: the session ends, the cookie is cleared",
          204, compose="sign_out", public=True, query=(CSRF,), errors=(403,)),
    # -- folders (catalog) --
    Route("POST", "/v1/folders", "catalog", "Create a folder", 201, catalog.NewFolder,
          catalog.Folder, compose="create_folder", errors=WRITE_ERRORS,
          gives={"folder_id": "/id"},
          description="With `cloud_sync`, the folder follows a bucket prefix: the answer"
                      " adds `cloud_sync` and `sync_job_id`. Ingest configures it only for"
                      " an editor of the new folder (a top-level folder's maker is its admin"
                      " once the access service has granted it, which the gateway waits for);"
                      " if that grant is late, 503 with `Retry-After` and the folder deleted (to"
                      " the trash). A `parent_id` in a cloud-synced folder (or a subfolder"
                      " its key paths made): 409 `folder_cloud_synced`."),
    Route("GET", "/v1/folders", "catalog", "Top-level folders, or a folder's children",
          answer=catalog.Folders, errors=(422,), query=(
              Query("parent_id", {"type": "string", "format": "uuid"}, "absent: the top level"),
              *PAGE)),
    Route("GET", f"/v1/folders/{F}", "catalog", "A folder", answer=catalog.Folder),
    Route("PATCH", f"/v1/folders/{F}", "catalog", "Rename or describe a folder",
          body=catalog.FolderChanges, answer=catalog.Folder, errors=WRITE_ERRORS),
    Route("DELETE", f"/v1/folders/{F}", "catalog", "Delete a folder and all below it", 204,
          errors=(403, 409)),
    Route("GET", f"/v1/folders/{F}/summary", "catalog", "Counts and bytes below a folder",
          answer=catalog.Summary),
    Route("GET", f"/v1/folders/{F}/items", "catalog", "Subfolders, then files",
          answer=catalog.Items, errors=(422,), strict_query=True, query=(
              *FILTERS,
              Query("dataset_synced", BOOLEAN, "subfolders synced with a dataset (true) or"
                    " with none (false); files are left out"),
              Query("as_of", {"type": "string", "format": "date-time"},
                    "RFC 3339: the folder as it was then, from the history (with cursor and"
                    " limit only; 422 `invalid_as_of`)"),
              *PAGE),
          description="Filters narrow both sections; a cursor is for the order it was made"
                      " in (another order: 400 `cursor_order_mismatch`)."),
    # -- files (catalog) --
    Route("GET", f"/v1/files/{FI}", "catalog", "A file, with the datasets it is linked to",
          answer=catalog.File, compose="file_with_datasets"),
    Route("PATCH", f"/v1/files/{FI}", "catalog", "Rename a file or change its metadata",
          body=catalog.FileChanges, answer=catalog.File, compose="file_with_datasets",
          errors=WRITE_ERRORS),
    Route("DELETE", f"/v1/files/{FI}", "catalog", "Delete a file", 204, errors=(403, 409)),
    Route("GET", f"/v1/files/{FI}/duplicates", "catalog",
          "Other files one may see that hold the same bytes (sha256), by id",
          answer=catalog.Duplicates, errors=(422,), query=PAGE),
    Route("GET", f"/v1/files/{FI}/content", "catalog", "The file's bytes (Range works)",
          answer=Raw(), compose="content", errors=(409, 416), query=(
              Query("rendition", {"type": "string", "enum": ["web"]},
                    "`web`: its browser-playable H.264/AAC MP4 (`POST /v1/files/re-encode`);"
                    " 404 `rendition_not_found` while there is none"),),
          also={206: "the range asked for",
                307: "imported by reference: a short-lived presigned URL to follow"}),
    Route("GET", f"/v1/files/{FI}/thumbnail", "thumbnails", "The file's picture",
          answer=Raw("image/*"), compose="thumbnail", errors=(422,), query=(
              Query("size", {"type": "integer", "minimum": 1, "maximum": 4096, "default": 128},
                    "px on the long side: the smallest picture made that covers it"),),
          also={304: "not modified since the `If-None-Match` ETag"},
          description="404 `thumbnail_not_ready` (with `Retry-After`) while it is drawn;"
                      " 404 `thumbnail_unavailable` for a file that will have none."),
    Route("GET", f"/v1/files/{FI}/slices/{{index}}", "dicom",
          "A DICOM series' slice (0 first, in slice order) as a PNG", answer=Raw("image/png"),
          compose="slice_image", errors=(422,)),
    # -- DICOMweb on a folder's series (dicom; services/dicom/dicomweb.py) --
    *(Route("GET", f"{DICOMWEB}{path}", "dicom", f"QIDO-RS: {what}", answer=DICOM_JSON,
            compose="dicomweb", query=QIDO, errors=(400,), description=QIDO_NOTE)
      for path, what in (
          ("/studies", "the folder's studies"),
          ("/series", "the folder's series"),
          ("/instances", "the folder's instances"),
          (f"{STUDY}/series", "a study's series"),
          (f"{STUDY}/instances", "a study's instances"),
          (f"{SERIES}/instances", "a series' instances"))),
    Route("POST", f"{DICOMWEB}/studies", "ingest", "STOW-RS: store instances in the folder",
          body=MULTIPART_DICOM, answer=STORED, compose="store_instances",
          errors=(*WRITE_ERRORS, 415, 507), also={202: "some not stored (FailedSOPSequence), or"
          " still storing after a minute: follow `Content-Location` (the job)"},
          description="The body is multipart/related; type=\"application/dicom\", an"
                      " instance a part, stored as a DICOM upload is (a job). 409: none"
                      " was stored."),
    *(Route("GET", f"{DICOMWEB}{path}", "dicom", f"WADO-RS: {what}", answer=answer,
            compose="dicomweb", long=True,
            errors=(400, 413, 422) if path.endswith("{frames}") else (400, 422))
      for path, what, answer in (
          (STUDY, "a study's instances as stored", MULTIPART_DICOM),
          (SERIES, "a series' instances as stored", MULTIPART_DICOM),
          (INSTANCE, "an instance as stored", MULTIPART_DICOM),
          (f"{STUDY}/metadata", "a study's instance headers", DICOM_JSON),
          (f"{SERIES}/metadata", "a series' instance headers", DICOM_JSON),
          (f"{INSTANCE}/metadata", "an instance's header", DICOM_JSON),
          (f"{INSTANCE}/frames/{{frames}}", "frames (1 first) as stored, uncompressed or"
           " in the instance's own compression", Raw("multipart/related")),
          (f"{INSTANCE}/rendered", "the instance's first frame drawn", Raw("image/png")),
          (f"{INSTANCE}/frames/{{frames}}/rendered", "a frame drawn", Raw("image/png")))),
    Route("POST", "/v1/move", "catalog", "Move files and folders (all or nothing)",
          body=catalog.Move, answer=catalog.MoveAnswer, compose="with_dataset_impact",
          errors=WRITE_ERRORS, description="`dry_run: true` answers the Impact instead."
          " A target in a cloud-synced folder: 409 `folder_cloud_synced`, nothing moved."),
    Route("POST", "/v1/delete", "catalog", "Delete files and folders (all or nothing)",
          body=catalog.Delete, answer=catalog.DeleteAnswer, compose="with_dataset_impact",
          errors=WRITE_ERRORS, description="`dry_run: true` answers the Impact instead."),
    # -- the trash (catalog) --
    Route("GET", "/v1/trash", "catalog", "Deleted files and folders one may see, newest first",
          answer=catalog.Trash, errors=(422,), query=PAGE,
          description="What was deleted itself: a folder's contents come back with it."),
    Route("POST", "/v1/trash/restore", "catalog", "Put files and folders back where they were",
          body=catalog.Restore, answer=catalog.Restored, errors=WRITE_ERRORS,
          description="Needs the editor role where each was; trashed folders above come"
                      " back too. Dataset links follow (synced datasets by their sync)."),
    Route("DELETE", "/v1/trash", "catalog", "Empty the trash: what one could restore goes",
          answer=catalog.Emptied, errors=(403, 422), query=(
              Query("file_ids", {"type": "string"}, "\"Delete forever\": only these files"
                    " (repeated or comma-separated, at most 1,000)", many=True),
              Query("folder_ids", {"type": "string"}, "only these folders, with what was"
                    " trashed inside them", many=True)),
          description="Purges what the caller has the editor role on where it was; what"
                      " they only see stays (chosen or not). Blobs are then reclaimed."),
    Route("GET", "/v1/search", "catalog", "Files and folders by name, everywhere one may see",
          answer=catalog.Found, errors=(422,), strict_query=True, query=(
              *FILTERS, Query("folder_id", {"type": "string", "format": "uuid"}), *PAGE),
          description="Without `order`, each section is in a stable order of its own (by"
                      " id), the fastest for a large catalog; a cursor is for the order it"
                      " was made in."),
    Route("PATCH", "/v1/files", "catalog", "Change up to 1,000 files (all or nothing)",
          body=catalog.FileUpdates, answer=catalog.Updated, errors=WRITE_ERRORS,
          description="An unknown id, or one the caller may not see, is 404 naming it"
                      " (`details.missing_files`), and nothing changes."),
    Route("GET", "/v1/metadata-schema", "catalog", "The organisation's metadata schema",
          answer=catalog.MetadataSchema),
    Route("PUT", "/v1/metadata-schema", "catalog", "Set the metadata schema (org admins)",
          body=catalog.MetadataSchemaChanges, answer=catalog.MetadataSchema,
          errors=(403, 413, 422),
          description="The whole schema, replacing the last: typed keys (number, text,"
                      " boolean, datetime, uuid, enum with `values`, embedding with"
                      " `dimension`); `retired: true` keeps a key but stops checking it,"
                      " false restores it. File metadata written afterwards is checked"
                      " (422 `metadata_type_mismatch` naming the key and the type)."),
    Route("POST", "/v1/files/re-encode", "thumbnails",
          "Make browser-playable renditions of up to 1,000 videos and image sequences", 202,
          ingest.ReEncodeFiles, ingest.JobStarted, compose="re_encode",
          errors=(403, 422), gives={"job_id": "/job_id"},
          description="Needs the editor role on each file's folder; an unknown id, or one"
                      " the caller may not see, is 404 naming it (`details.missing_files`);"
                      " other kinds are 422 (`details.not_re_encoded`). The job"
                      " (`GET /v1/jobs/{id}`) settles each file; the rendition is then"
                      " `GET /v1/files/{id}/content?rendition=web`."),
    Route("POST", "/v1/files/lookup", "catalog", "Up to 1,000 files by id",
          body=catalog.FileLookup, answer=catalog.LookedUp, errors=(422,),
          description="Ids of no file, and of files the caller may not see, are listed in"
                      " `not_found` alike."),
    # -- collaborators (acl, the folder checked in the catalog) --
    Route("GET", f"/v1/folders/{F}/collaborators", "acl", "A folder's collaborators",
          answer=acl.Collaborators, compose="collaborators"),
    Route("POST", f"/v1/folders/{F}/collaborators", "acl", "Invite collaborators by email",
          body=acl.Invitation, answer=acl.Collaborators, compose="collaborators",
          changes_access=True, errors=WRITE_ERRORS),
    Route("PATCH", f"/v1/folders/{F}/collaborators/{{user_id}}", "acl", "Change a role",
          body=acl.RoleChange, answer=acl.Collaborator, compose="collaborators",
          changes_access=True, errors=WRITE_ERRORS),
    Route("DELETE", f"/v1/folders/{F}/collaborators/{{user_id}}", "acl", "Remove a collaborator",
          204, compose="collaborators", changes_access=True, errors=(403, 409)),
    # -- uploads, jobs, sessions (ingest, the folder checked in the catalog) --
    Route("POST", f"/v1/folders/{F}/files", "ingest", "Upload files (multipart)", 201,
          Multipart(ingest.UPLOAD_FILES), ingest.Uploaded, compose="upload",
          errors=(400, 403, 409, 413, 415, 422, 507),
          gives={"file_id": "/files/0/id", "job_id": "/job_id"}),
    Route("POST", f"/v1/folders/{F}/image-groups", "ingest", "Upload an image group", 201,
          Multipart(ingest.IMAGE_GROUP), ingest.ImageGroup, compose="upload_image_group",
          errors=(400, 403, 409, 413, 415, 422, 507), gives={"file_id": "/file/id"},
          also={202: "stored, but not yet listed in time: `{job_id, file_id, folder_id}`;"
                     " its job follows it"}),
    Route("POST", f"/v1/folders/{F}/dicom", "ingest", "Upload DICOM instances", 202,
          Multipart(ingest.UPLOAD), ingest.JobStarted, compose="upload_dicom",
          errors=(400, 403, 413, 415, 422, 507), gives={"job_id": "/job_id"}),
    Route("GET", "/v1/jobs/{job_id}", "ingest",
          "A job: progress, files, errors (the first 1,000 of each, their counts and cursors)",
          answer=ingest.Job, compose="job_with_files"),
    Route("GET", "/v1/jobs/{job_id}/files", "ingest", "A job's files, in order, page by page",
          answer=ingest.JobFiles, compose="job_files", query=PAGE, errors=(400,)),
    Route("GET", "/v1/jobs/{job_id}/errors", "ingest", "A job's errors, in order, page by page",
          answer=ingest.JobErrors, compose="job_errors", query=PAGE, errors=(400,)),
    Route("POST", "/v1/jobs/{job_id}/cancel", "ingest",
          "Cancel a job (upload session, import, DICOM): what it did stays, the rest stops",
          answer=ingest.Job, compose="cancel_job", errors=(403, 409)),
    Route("POST", f"/v1/folders/{F}/uploads", "ingest", "Open an upload session (large files)",
          201, ingest.NewUploadSession, ingest.UploadSession, compose="open_upload_session",
          errors=WRITE_ERRORS, gives={"session_id": "/id", "job_id": "/job_id"}),
    Route("GET", "/v1/uploads/{session_id}", "ingest", "An upload session, to resume it",
          answer=ingest.UploadSession, compose="upload_session"),
    Route("POST", "/v1/uploads/{session_id}/complete", "ingest", "Complete an upload session",
          201, answer=ingest.Completed, compose="upload_session", errors=(403, 409, 415, 507),
          also={202: "completed, but not yet listed in time: `{job_id, file_id}`; read the"
                     " file with the answer's consistency token"}),
    Route("DELETE", "/v1/uploads/{session_id}", "ingest", "Abort an upload session", 204,
          compose="upload_session", errors=(403, 409)),
    Route("PUT", "/v1/uploads/{session_id}/parts/{number}", "ingest",
          "Send one part (the URL's signature is the right)", body=Raw(),
          answer=ingest.StoredPart, compose="upload_part", public=True,
          errors=(400, 403, 409, 413, 422, 507), query=(
              Query("expires", {"type": "integer"}, required=True),
              Query("signature", {"type": "string", "maxLength": 64}, required=True),
              Query("opener", {"type": "string", "maxLength": 256},
                    "The session's opener, signed with the rest (URLs of the version"
                    " before name none)"))),
    # -- integrations and imports (ingest) --
    Route("POST", "/v1/integrations", "ingest", "Register a cloud integration (org admins)",
          201, ingest.NewIntegration, ingest.Integration, errors=WRITE_ERRORS),
    Route("GET", "/v1/integrations", "ingest", "Integrations one may use",
          answer=ingest.Integrations, query=PAGE, errors=(422,)),
    Route("GET", "/v1/integrations/{integration_id}", "ingest", "An integration",
          answer=ingest.Integration),
    Route("PATCH", "/v1/integrations/{integration_id}", "ingest",
          "Share an integration, rotate its keys or events token (org admins)",
          body=ingest.IntegrationSharing, answer=ingest.Integration, errors=WRITE_ERRORS),
    Route("DELETE", "/v1/integrations/{integration_id}", "ingest", "Remove an integration",
          204, errors=(403, 409),
          description="409 `integration_in_use` naming the cloud-synced folders that follow it"
                      " and the files imported through it (in the trash too)"),
    Route("POST", "/v1/integrations/{integration_id}/events", "ingest",
          "A bucket's event notification (S3 via SNS/SQS, MinIO webhook)", 202,
          answer=ingest.IntegrationEvents, compose="integration_events", public=True,
          errors=(401, 403, 413, 422),
          description="Authenticated by the integration's events token (`Authorization:"
                      " Bearer <token>`, MinIO's `auth_token` as is, or HTTP Basic with the"
                      " token as password), not an API key. The keys named are synced at once."),
    # -- webhooks (ingest) --
    Route("POST", "/v1/webhooks", "ingest", "Register a webhook (org admins)", 201,
          ingest.NewWebhook, ingest.Webhook, errors=(403, 422),
          description="Events are posted signed as Standard Webhooks says (webhook-id,"
                      " webhook-timestamp, webhook-signature); the secret is answered once."
                      " 422 `endpoint_not_allowed` names why an address is refused.",
          gives={"webhook_id": "/id"}),
    Route("GET", "/v1/webhooks", "ingest", "Webhooks (org admins)", answer=ingest.Webhooks,
          errors=(403,)),
    Route("DELETE", "/v1/webhooks/{webhook_id}", "ingest", "Remove a webhook (org admins)",
          204, errors=(403,)),
    Route("POST", "/v1/webhooks/{webhook_id}/secret", "ingest",
          "Rotate a webhook's signing secret (org admins)", 200,
          ingest.WebhookSecretRotation, ingest.Webhook, errors=(403, 404, 422),
          description="The new secret is answered once. The one before signs beside it"
                      " (a second `v1,` signature in webhook-signature) for"
                      " `keep_previous_for_s` (24 h by default, 0 to 7 days)."),
    Route("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", "ingest",
          "Send a delivery again now (org admins)", 200, answer=ingest.WebhookDelivery,
          errors=(403, 404, 409),
          description="Failed, delivered or pending: sent again under its message id, its"
                      " attempts counted from now. 409 `delivery_in_flight` while one runs."),
    Route("GET", "/v1/webhooks/{webhook_id}/deliveries", "ingest",
          "A webhook's deliveries, newest first (org admins)", answer=ingest.WebhookDeliveries,
          errors=(403, 422), query=(
              LIMIT, Query("status", {"type": "string",
                                      "enum": ["pending", "delivered", "failed"]}))),
    Route("POST", f"/v1/folders/{F}/sync", "ingest", "Sync a cloud-synced folder now", 202,
          answer=ingest.JobStarted, compose="sync_folder", errors=(403, 409),
          gives={"job_id": "/job_id"}),
    Route("GET", f"/v1/folders/{F}/sync", "ingest",
          "What a folder follows of a bucket, and its latest sync",
          answer=ingest.SyncState, compose="sync_state"),
    Route("POST", f"/v1/folders/{F}/imports", "ingest", "Import objects by reference", 202,
          ingest.ImportRequest, ingest.JobStarted, compose="import_objects",
          errors=(400, 403, 413, 422)),
    # -- datasets (datasets, caught up with the catalog before a write) --
    Route("POST", "/v1/datasets", "datasets", "Create a dataset", 201, datasets.NewDataset,
          datasets.Dataset, compose="create_dataset", errors=WRITE_ERRORS,
          description="`create_backing_folder: true` makes a top-level folder of its name"
                      " (409 `name_taken` if the caller has one) and syncs the dataset with"
                      " it.",
          gives={"dataset_id": "/id"}),
    Route("GET", "/v1/datasets", "datasets", "Datasets one may see", answer=datasets.Datasets,
          query=PAGE, errors=(422,)),
    Route("GET", f"/v1/datasets/{DS}", "datasets", "A dataset", answer=datasets.Dataset),
    Route("PATCH", f"/v1/datasets/{DS}", "datasets", "Rename or describe a dataset",
          body=datasets.DatasetChanges, answer=datasets.Dataset, compose="after_catalog",
          errors=WRITE_ERRORS),
    Route("DELETE", f"/v1/datasets/{DS}", "datasets", "Delete a dataset", 204,
          compose="after_catalog", errors=(403,)),
    Route("POST", f"/v1/datasets/{DS}/files", "datasets", "Add files to a dataset",
          body=datasets.FileIds, answer=datasets.Added, compose="after_catalog",
          errors=WRITE_ERRORS),
    Route("GET", f"/v1/datasets/{DS}/files", "datasets", "A dataset's files one may see",
          answer=datasets.DatasetFiles, query=PAGE, compose="dataset_files", errors=(422,)),
    Route("POST", f"/v1/datasets/{DS}/files/remove", "datasets",
          "Remove files from a dataset, all or none", body=datasets.FileIds,
          answer=datasets.Removed, compose="after_catalog", errors=WRITE_ERRORS),
    Route("DELETE", f"/v1/datasets/{DS}/files/{FI}", "datasets", "Remove a file from a dataset",
          204, compose="after_catalog", errors=(403,)),
    Route("GET", f"/v1/files/{FI}/datasets", "datasets", "The datasets a file is linked to",
          answer=datasets.Linked, compose="linked_datasets"),
    Route("GET", f"/v1/datasets/{DS}/collaborators", "datasets", "Who may use a dataset",
          answer=datasets.Shares),
    Route("POST", f"/v1/datasets/{DS}/collaborators", "datasets", "Share a dataset by email",
          body=datasets.Sharing, answer=datasets.Shares, compose="after_catalog",
          errors=WRITE_ERRORS),
    Route("DELETE", f"/v1/datasets/{DS}/collaborators/{{user_id}}", "datasets",
          "Stop sharing a dataset with a user", 204, compose="after_catalog", errors=(403,)),
    # -- the audit (the gateway merges every store's) --
    Route("GET", "/v1/audit", "gateway", "Events, in time order, that one may see",
          answer=audit.Events, compose="audit", errors=(403, 422), query=(
              Query("subject_id", {"type": "string", "format": "uuid"}, many=True),
              Query("actor_id", {"type": "string", "minLength": 1, "maxLength": 200}),
              Query("type", {"type": "string"}, "an event type, e.g. catalog.FileMoved",
                    many=True),
              Query("since", {"type": "string", "format": "date-time"}, "inclusive"),
              Query("until", {"type": "string", "format": "date-time"}, "exclusive"),
              *PAGE)),
)  # fmt: skip


# -- matching ------------------------------------------------------------------------


class Refusal(Exception):
    """The path is refused (status, code, message, details); `route`, when its shape
    was matched and only a parameter is wrong."""

    def __init__(
        self, status: int, code: str, message: str, route: Route | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.route = route


@dataclass(frozen=True)
class Match:
    route: Route
    values: dict[str, str]


# Printable ASCII, less what no path of ours holds and what makes one path read as another.
_UNSAFE = re.compile(rb"[^\x21-\x7e]|[%\\]")


def _problem(raw: bytes) -> str | None:
    """What makes a raw path one we refuse outright, or None."""
    bad = _UNSAFE.search(raw)
    if bad is not None:
        if bad.group() == b"%":
            return "a percent-encoded byte (ids and names in paths are never encoded)"
        if bad.group() == b"\\":
            return "a backslash"
        return f"a byte a path may not hold (0x{bad.group()[0]:02x})"
    if any(segment in (b".", b"..") for segment in raw.split(b"/")):
        return "a dot segment"
    return None


class Table:
    """The routes, indexed by their number of segments."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        seen: set[tuple[str, tuple[object, ...]]] = set()
        self._by_length: dict[int, list[Route]] = {}
        for route in self.routes:
            shape = tuple("{}" if isinstance(s, Param) else s for s in route.segments)
            if (route.method, shape) in seen:
                raise ValueError(f"two routes for {route.method} {route.template}")
            seen.add((route.method, shape))
            self._by_length.setdefault(len(route.segments), []).append(route)
        for candidates in self._by_length.values():
            # A literal segment wins over a parameter (`/users/me` before `/users/{id}`).
            candidates.sort(key=lambda r: [isinstance(s, Param) for s in r.segments])

    def match(self, method: str, raw_path: bytes) -> Match | None:
        """The route and its parsed parameters; None when no route has this path.

        Raises Refusal: 400 for a path we refuse outright, 405 for a path whose routes
        take other methods, 404 for a parameter that does not parse (as an unknown id).
        """
        problem = _problem(raw_path)
        if problem is not None:
            raise Refusal(400, "invalid_path", f"the path holds {problem}")
        text = raw_path.decode("ascii")
        if text.endswith("/") and len(text) > 1:
            text = text[:-1]  # a trailing slash is served, not redirected
        segments = text.split("/")[1:]
        shaped = [
            route
            for route in self._by_length.get(len(segments), ())
            if all(
                isinstance(s, Param) or s == segment
                for s, segment in zip(route.segments, segments, strict=True)
            )
        ]
        if not shaped:
            return None
        # A path a literal segment matches is that route's: `/v1/files/lookup` is not a
        # file id, whatever the method.
        most = max(_literals(r) for r in shaped)
        shaped = [r for r in shaped if _literals(r) == most]
        same = [r for r in shaped if r.method == method]
        if not same:
            allowed = sorted({r.method for r in shaped})
            raise Refusal(
                405,
                "method_not_allowed",
                f"{method} is not a method of {text}; it takes {', '.join(allowed)}",
                allowed=allowed,
            )
        route = same[0]
        values = {}
        for s, segment in zip(route.segments, segments, strict=True):
            if isinstance(s, Param):
                value = s.parse(segment)
                if value is None:
                    # As an id that is not there: nothing tells a malformed id apart.
                    raise Refusal(404, "not_found", f"{s.names} {segment} does not exist", route)
                values[s.name] = value
        return Match(route, values)


def _literals(route: Route) -> int:
    return sum(not isinstance(s, Param) for s in route.segments)


TABLE = Table(ROUTES)
