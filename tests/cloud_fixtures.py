"""A customer's bucket for the tests and benchmarks: moto's S3 server, as a process.

It starts without authentication (so the test can make an IAM user, its keys and
its bucket), then `auth(True)` makes it check every request's signature against
those keys, as a real S3 does: a wrong secret is then `SignatureDoesNotMatch`.
(moto does not check presigned URLs' signatures; with auth on it fails them, so a
test that follows a presigned URL turns auth off first.)
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.kit.embedded import Child, start_s3_server

POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


@dataclass
class MotoS3:
    server: Child
    endpoint: str
    access_key: str = ""
    secret_key: str = field(default="", repr=False)

    def auth(self, enabled: bool) -> None:
        """Check signatures from now on (True), or take any request (False)."""
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=b"0" if enabled else b"inf",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200

    def client(self, service: str = "s3") -> Any:
        """A boto3 client of this server (s3, iam, sts) with the test user's keys."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def minio(self) -> Any:
        """A Minio client of this server with the test user's keys (what the platform
        itself speaks to a bucket)."""
        from minio import Minio

        return Minio(
            self.endpoint.removeprefix("http://"),
            self.access_key,
            self.secret_key,
            secure=False,
            region="us-east-1",
        )

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.server.proc

    def stop(self) -> None:
        self.server.stop()


def start_moto(log: Path | None = None, timeout: float = 30.0) -> MotoS3:
    server = start_s3_server(log, timeout)
    endpoint = server.url
    moto = MotoS3(server, endpoint)
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    iam.create_user(UserName="files-importer")
    iam.put_user_policy(
        UserName="files-importer", PolicyName="s3", PolicyDocument=json.dumps(POLICY)
    )
    key = iam.create_access_key(UserName="files-importer")["AccessKey"]
    moto.access_key, moto.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
    return moto
