"""The whole platform on one machine: PostgreSQL, the broker, every service, the gateway.

Each piece runs as a child process with its log under `<data dir>/logs/`.
Pieces given by the environment (FILES_DATABASE_URL, FILES_KAFKA_BOOTSTRAP)
are used instead of starting embedded ones.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pydantic import SecretStr

from shared.kit import identity
from shared.kit.embedded import Child, _die_with_parent, free_port, start_broker, start_postgres
from shared.kit.settings import Settings

SERVICES = ("acl", "catalog", "ingest", "datasets", "dicom", "thumbnails")


def admin_key(settings: Settings, data_dir: Path) -> tuple[str, bool]:
    """The first admin's key: from the environment, the data dir, or made now (True)."""
    if settings.bootstrap_admin_key:
        return settings.bootstrap_admin_key, False
    path = data_dir / "admin.key"
    if path.exists():
        return path.read_text().strip(), False
    key = "files_" + secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key, True


def _ready(url: str) -> bool:
    with contextlib.suppress(Exception), urllib.request.urlopen(f"{url}/readyz", timeout=1) as r:
        return bool(r.status == 200)
    return False


def _env_value(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


class Stack:
    def __init__(self, settings: Settings, *, durable: bool = True) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.durable = durable
        self.children: list[Child] = []
        self.env: dict[str, str] = {}
        self.gateway_url = ""
        # The gateway's gRPC API (host:port), on FILES_GRPC_PORT or a free port.
        self.grpc_target = ""
        self.admin_key = ""
        self.admin_key_is_new = False
        self.service_key = ""

    def start(self, timeout: float = 90) -> None:
        s = self.settings
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            self.admin_key, self.admin_key_is_new = admin_key(s, self.data_dir)
            named = "FILES_BOOTSTRAP_ADMIN_KEY"
            if not s.bootstrap_admin_key:
                named = f"the admin key in {self.data_dir / 'admin.key'}"
            identity.require_strong(named, self.admin_key, prefix="files_")
            # Services answer only calls signed with it; a fresh one each start, kept nowhere.
            self.service_key = s.service_key.get_secret_value() or identity.new_key()
            identity.ServiceKey(self.service_key)
        except identity.WeakSecret as weak:
            raise RuntimeError(str(weak)) from None
        database_url, bootstrap = s.database_url, s.kafka_bootstrap
        if not database_url:
            pg = start_postgres(
                self.data_dir / "pg", durable=self.durable, log=logs / "postgres.log"
            )
            self.children.append(pg)
            database_url = pg.url
        if not bootstrap:
            broker = start_broker(log=logs / "broker.log")
            self.children.append(broker)
            bootstrap = broker.url
        ports = {name: free_port() for name in SERVICES}
        grpc_port = s.grpc_port or free_port()
        self.env = {
            # A bucket on this machine (MinIO, moto) may be an integration's.
            "FILES_ALLOWED_ENDPOINTS": "127.0.0.1",
            **os.environ,
            # What the caller set reaches the services (S3 keys, sweep intervals, ...).
            **{
                f"FILES_{name.upper()}": _env_value(getattr(s, name)) for name in s.model_fields_set
            },
            "FILES_DATA_DIR": str(self.data_dir),
            "FILES_DATABASE_URL": database_url,
            "FILES_KAFKA_BOOTSTRAP": bootstrap,
            "FILES_BLOB_URL": s.blob_url or str(self.data_dir / "blobs"),
            "FILES_BOOTSTRAP_ADMIN_KEY": self.admin_key,
            "FILES_SERVICE_KEY": self.service_key,
            "FILES_HTTP_PORT": str(s.http_port),
            "FILES_GRPC_PORT": str(grpc_port),
            **{f"FILES_{n.upper()}_URL": f"http://127.0.0.1:{p}" for n, p in ports.items()},
        }
        for name, port in ports.items():
            self._spawn(name, ["--port", str(port)], logs)
        deadline = time.monotonic() + timeout
        self._wait([f"http://127.0.0.1:{p}" for p in ports.values()], deadline)
        self._spawn("gateway", [], logs)
        self.gateway_url = f"http://{s.http_host}:{s.http_port}"
        self.grpc_target = f"{s.http_host}:{grpc_port}"
        self._wait([self.gateway_url], deadline)
        # For `files rebuild` and `files audit`; the URL holds the database's password.
        found = self.data_dir / "stack.env"
        found.touch(mode=0o600)
        found.chmod(0o600)
        found.write_text(f"FILES_DATABASE_URL={database_url}\nFILES_KAFKA_BOOTSTRAP={bootstrap}\n")

    def add_gateway(self, timeout: float = 30) -> str:
        """Start one more gateway replica in front of the same services; its URL."""
        # HTTP only: the gRPC port is the first gateway's.
        url, _ = self.add_replica("gateway", timeout, {"FILES_GRPC_PORT": "0"})
        return url

    def add_replica(
        self, name: str, timeout: float = 30, env: dict[str, str] | None = None
    ) -> tuple[str, Child]:
        """Start one more process of a service (its consumer joins the same group, its
        relay competes for the same lock); its URL and process, once it is ready."""
        port = free_port()
        child = self._spawn(name, ["--port", str(port)], self.data_dir / "logs", env)
        url = f"http://127.0.0.1:{port}"
        self._wait([url], time.monotonic() + timeout)
        return url, child

    def remove(self, child: Child, sig: int = signal.SIGTERM) -> None:
        """Stop one process (SIGKILL: as if its machine died) and forget it."""
        self.children.remove(child)
        child.stop(sig)

    def _spawn(
        self, name: str, args: list[str], logs: Path, env: dict[str, str] | None = None
    ) -> Child:
        out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        if name != "gateway":
            # Only the gateway listens on FILES_HTTP_HOST; the services, on loopback only.
            args = ["--host", "127.0.0.1", *args]
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}", *args],
            env={**self.env, **(env or {})},
            stdout=out,
            stderr=out,
            preexec_fn=_die_with_parent,
        )
        child = Child(name, proc, "")
        self.children.append(child)
        return child

    def _wait(self, urls: list[str], deadline: float) -> None:
        pending = list(urls)
        while pending:
            self.check_alive()
            pending = [u for u in pending if not _ready(u)]
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"not ready in time: {', '.join(pending)}")
            time.sleep(0.1)

    def check_alive(self) -> None:
        for child in self.children:
            if child.proc.poll() is not None:
                raise RuntimeError(
                    f"{child.name} exited with status {child.proc.returncode};"
                    f" see {self.data_dir / 'logs' / (child.name + '.log')}"
                )

    def stop(self) -> None:
        # Services first, so nothing talks to a database or broker that is gone.
        for child in reversed(self.children):
            if child.name == "postgres":
                child.stop(signal.SIGINT)  # fast shutdown: roll back, checkpoint, exit
            else:
                child.stop()
        self.children.clear()
