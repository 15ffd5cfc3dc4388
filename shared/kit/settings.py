"""Configuration from the environment, one prefix: FILES_."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FILES_", extra="ignore")

    data_dir: Path = Path(".data")
    database_url: str = ""
    kafka_bootstrap: str = ""
    # Apache Kafka supports the idempotent producer; the embedded broker does not.
    kafka_idempotence: bool = False
    topic_partitions: int = 3
    blob_url: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    bootstrap_admin_key: str = ""
    # Where the gateway finds the services (set by the launcher or the deployment).
    catalog_url: str = "http://127.0.0.1:8081"
    ingest_url: str = "http://127.0.0.1:8082"
    acl_url: str = "http://127.0.0.1:8083"
    datasets_url: str = "http://127.0.0.1:8084"
    dicom_url: str = "http://127.0.0.1:8085"
    log_level: str = "info"
    consistency_timeout_s: float = 5.0
    max_metadata_bytes: int = 64 * 1024

    def blob_root(self) -> Path:
        url = self.blob_url or str(self.data_dir / "blobs")
        return Path(url.removeprefix("file://"))
