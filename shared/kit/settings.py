"""Configuration from the environment, one prefix: FILES_."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FILES_", extra="ignore")

    data_dir: Path = Path(".data")
    database_url: str = ""
    kafka_bootstrap: str = ""
    # Apache Kafka supports the idempotent producer; the embedded broker does not.
    kafka_idempotence: bool = False
    topic_partitions: int = 3
    # A directory (path or file://...) or s3://bucket?endpoint=...&region=...&secure=...
    blob_url: str = ""
    # S3 credentials; when empty, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    s3_access_key: SecretStr = SecretStr("")
    s3_secret_key: SecretStr = SecretStr("")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # At the gateway, a request's headers must arrive within this of its start, and a
    # body may pause at most this long while it is read (shared/kit/http_server.py).
    http_headers_timeout_s: float = 30.0
    http_body_idle_s: float = 120.0
    # At the gateway, an answer its client reads nothing of for this long (the socket's
    # buffers full) is cut: its connection is dropped, and what it held let go.
    http_send_idle_s: float = Field(default=300.0, gt=0)
    # The gateway's streamed calls (uploads, parts, STOW; downloads, retrieves) open at
    # once to each service, at most; past it a transfer is refused 503 (Retry-After).
    gateway_transfers_per_service: int = Field(default=2000, ge=1)
    # The streamed calls one caller (a member, with their sessions' parts) may have
    # under way at once at a gateway; past it, 429 (services/gateway/transfers.py).
    gateway_transfers_per_caller: int = Field(default=32, ge=1)
    # How long the gateway waits in all for the services' answers to one read (its
    # caller's lookup, the folder's role, the service's call); past it, 503
    # (Retry-After). Not counted: streaming a body either way, and the consistency waits
    # (services/gateway/deadlines.py).
    gateway_request_budget_s: float = Field(default=15.0, gt=0)
    # The same for a write (and a DICOMweb retrieve): a bulk restore, move or delete of
    # 100,000 files takes seconds, and under load took 46 s.
    gateway_write_budget_s: float = Field(default=60.0, gt=0)
    # Until this moment the gateway passes on part URLs of the form before they named
    # their opener (which it cannot check), every such part as one caller: for a
    # rollout only (services/gateway/edge.py `part_caller`). Unset: refused at once.
    gateway_unsigned_parts_until: AwareDatetime | None = None
    bootstrap_admin_key: str = ""
    # Signs and verifies who calls a service (shared/kit/identity.py): the same on every
    # service and the gateway, at least 128 bits; part URLs are signed with it. Unset:
    # services refuse to start (the embedded platform makes one once, in
    # <data dir>/service.key, 0600).
    service_key: SecretStr = SecretStr("")
    # Where the gateway finds the services (set by the launcher or the deployment).
    catalog_url: str = "http://127.0.0.1:8081"
    ingest_url: str = "http://127.0.0.1:8082"
    acl_url: str = "http://127.0.0.1:8083"
    datasets_url: str = "http://127.0.0.1:8084"
    dicom_url: str = "http://127.0.0.1:8085"
    thumbnails_url: str = "http://127.0.0.1:8086"
    log_level: str = "info"
    # Finished spans as JSON lines in this file (tests); OTLP export takes the standard
    # OTEL_EXPORTER_OTLP_ENDPOINT instead (shared/kit/tracing.py).
    trace_file: str = ""
    consistency_timeout_s: float = 5.0
    max_metadata_bytes: int = 64 * 1024
    # Seals cloud integrations' credentials at rest (shared/kit/secrets.py). Unset: a key
    # made once in <data dir>/secret.key (0600). Set it in production, kept like a password.
    secret_key: str = ""
    # Cloud integrations' endpoints allowed although the address rule refuses them
    # (loopback, private, link-local, metadata, ...): hosts, host:port or CIDRs, comma
    # separated (services/ingest/imports/domain/endpoints.py). The local platform allows 127.0.0.1.
    allowed_endpoints: str = ""
    # What ingest reads of a bucket's answers: a response must arrive within this (plus
    # a second per 64 KiB of body); a listing stops past these pages or seconds waited;
    # one import reads at most this many objects (named and listed).
    cloud_response_timeout_s: float = 60.0
    cloud_listing_timeout_s: float = 3600.0
    cloud_listing_max_pages: int = 10_000
    import_max_keys: int = 1_000_000
    # Webhooks (services/ingest/webhooks): a failed delivery is tried again after this many
    # seconds, doubling at each attempt (at most an hour apart), for this long; a
    # receiver must answer within the timeout; the sender looks for due deliveries this often.
    webhook_retry_base_s: float = 5.0
    webhook_give_up_s: float = 24 * 3600.0
    webhook_timeout_s: float = 10.0
    webhook_poll_s: float = 1.0
    # Webhook URLs allowed although the address rule refuses them, written as
    # allowed_endpoints is. Not the integrations' list: that one lets in the local bucket
    # (127.0.0.1 under the local platform), and a webhook there could post to any of the
    # platform's own ports and read their answers back in its deliveries.
    webhook_allowed_endpoints: str = ""
    # A cloud-synced folder syncs this often unless it says otherwise (cloud_sync.sync_interval_s).
    sync_interval_s: int = 3600
    # Integrations by role (role_arn): this platform's web identity token (on EKS, the
    # service account's: $AWS_WEB_IDENTITY_TOKEN_FILE) and the STS endpoint that trades
    # it (default AWS's); without a token file such integrations are refused.
    cloud_web_identity_token_file: str = ""
    cloud_sts_endpoint: str = ""
    # Upload sessions (large files in parts): the part size offered, how long an
    # unfinished session lives, and how often expired ones are swept.
    upload_part_size: int = 64 * 1024 * 1024
    upload_session_ttl_s: float = 24 * 3600
    upload_sweep_every_s: float = 60.0
    # The launcher of `make run` (`files run`): it asks each service's and the gateway's
    # /healthz this often, giving each this long to answer, and a process that misses
    # this many in a row while using next to no CPU is killed (SIGKILL: it may be
    # stopped) and started again; one busy on the CPU, only once it has missed
    # `watchdog_busy_failures` in a row (an endless loop; a long computation answers
    # within that). One that has not answered since it started is judged only after
    # `watchdog_start_s` (doubled each time a start is killed so, until one answers); a
    # service answers 5 s into its start, its migrations or rebuild going on
    # (`service.SERVE_DURING_START_S`), judged from then as it runs. 0 s every: no such
    # check. Liveness only: a service whose database hangs still answers it (its
    # /readyz does not), and is left be.
    watchdog_every_s: float = Field(default=5.0, ge=0)
    watchdog_timeout_s: float = Field(default=5.0, gt=0)
    watchdog_failures: int = Field(default=3, ge=1)
    watchdog_busy_failures: int = Field(default=24, ge=1)
    watchdog_start_s: float = Field(default=60.0, ge=0)
    # A service's start (migrations, a projection's rebuild) that has moved on for this
    # long (no step begun, no progress told: `service.StartWatch`) fails, and its process
    # exits to be started again (a migration waiting for ever on a lock held elsewhere
    # would otherwise answer liveness for ever, `/readyz` saying `starting`). 0: never.
    start_timeout_s: float = Field(default=30 * 60.0, ge=0)
    # The blob collector: how often it sweeps, and how long an unreferenced blob is
    # kept (safety margin only; the claim protocol is what protects stores in flight).
    blob_gc_every_s: float = 60.0
    blob_gc_grace_s: float = 15 * 60
    # Deleted files and folders stay in the trash this long (restorable), then the
    # catalog purges them (checked every trash_purge_every_s) and their blobs may go.
    trash_days: float = 30.0
    trash_purge_every_s: float = 3600.0
    # What the catalog gets for a folder it has not seen made (a key path's subfolder
    # whose request another partition brings later) waits for it this long, then is
    # rejected as never made (looked for every folder_wait_every_s). Beyond a consumer's
    # retries (consumer_retry_for_s) and its restart, with room.
    folder_wait_s: float = 3600.0
    folder_wait_every_s: float = 60.0
    # A restore of at least this many files leaves its rows in the search indexes'
    # pending lists and merges them after it answers (services/catalog, restore).
    restore_defer_gin_from: int = 10_000
    # The gateway's gRPC API (proto/files/v1/files.proto) on this port, beside HTTP on
    # http_host; 0: no gRPC server.
    grpc_port: int = 0
    # Consumers (shared/kit/retry.py): transient failures are retried this long, never
    # dead-lettered; any other failure this many times, then dead-lettered.
    consumer_retry_for_s: float = 300.0
    consumer_poison_tries: int = 5
    # How long an Idempotency-Key and its answer are kept (at least a day: clients retry
    # across restarts of either side).
    idempotency_ttl_s: float = 24 * 3600
    # Tests only (tests/chaos/): where fault triggers are dropped (shared/kit/faults.py).
    faults_dir: str = ""
    # The most bytes one DICOMweb retrieve of frames answers (services/dicom): its frames
    # are held in memory, so a request for more is a 413 rather than that much held.
    dicomweb_frames_max_bytes: int = Field(default=256 * 1024**2, ge=1)
    # The most bytes of frames a DICOM process holds for all its answers at once (their
    # readers may be slow): a retrieve that cannot have its part in time is a 503.
    dicomweb_frames_memory_bytes: int = Field(default=1024**3, ge=1)
    # Thumbnails (services/thumbnails): worker processes drawing them (0: one per CPU this
    # process may use), the most time one file may take, and the pictures' format.
    thumbnail_workers: int = 0
    thumbnail_time_cap_s: float = 30.0
    thumbnail_format: Literal["webp", "jpeg"] = "webp"
    # How much lower the thumbnails service runs than the processes that start it (its
    # consumer, runners and records; `os.nice`, 0-19): pictures come moments after a
    # file is listed, so on a busy machine the uploads, listings and reads go first; on
    # an idle one it changes nothing. Its drawing workers run at 10 at least.
    thumbnail_nice: int = Field(default=5, ge=0, le=19)
    # Re-encoding (POST /v1/files/re-encode): worker processes making web renditions,
    # the most time one file may take, and the largest source accepted (seconds, pixels
    # a frame) and rendition stored (bytes).
    reencode_workers: int = 1
    reencode_time_cap_s: float = 600.0
    reencode_max_duration_s: float = 3 * 3600.0
    reencode_max_pixels: int = 3840 * 2160
    reencode_max_bytes: int = 4 * 1024**3
    # The most files one person may have waiting for a web rendition at once (a job asks
    # for at most 1,000); past it, 429. The workers take each person's files in turn.
    reencode_max_pending: int = Field(default=1000, ge=1)
    # A series drawn once is drawn again from its new middle slice only after it has had
    # no new slices for this long: an upload of 2,000 slices in 10 parts then costs two
    # drawings of it, not ten.
    thumbnail_series_settle_s: float = 2.0
    # How long a web app session (the cookie `POST /v1/sessions` sets) lasts.
    session_ttl_s: float = 12 * 3600
    # The web app's built files (index.html, assets/); empty: web/dist of the source tree.
    web_dir: str = ""

    @field_validator("gateway_unsigned_parts_until", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        # Cleared as deployments clear a variable (`value: ""`, `${X:-}`): unset, not a
        # failed start of every service.
        return None if value == "" else value

    def blob_root(self) -> Path:
        """The local blob directory (when blob_url is not an s3:// URL)."""
        url = self.blob_url or str(self.data_dir / "blobs")
        return Path(url.removeprefix("file://"))
