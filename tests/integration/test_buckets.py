"""The bucket adapter (services/ingest/imports/buckets/s3.py) against real servers: moto's S3
checking signatures (static keys and STS session tokens), and the tests' hostile
endpoint (redirects, endless bodies, trickles, looping listings), without a platform.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.ingest.imports.buckets.loop import BucketLoop, Threaded
from services.ingest.imports.buckets.port import (
    Bucket,
    CloudProblem,
    Credentials,
    Read,
    WebIdentity,
)
from services.ingest.imports.buckets.s3 import S3Reader, Sts
from services.ingest.imports.domain.endpoints import EndpointRule
from services.ingest.imports.domain.integrations import GCS, parse_endpoint, parse_registration
from services.ingest.imports.egress import Caps, Egress
from shared.kit.blobs import BlobWriter
from tests.cloud_fixtures import MotoS3, start_moto
from tests.conftest import eventually
from tests.e2e.support import png
from tests.hostile_s3 import GOOD_KEYS, HostileS3

BUCKET = "signed-bucket"
KEYS = ["a.png", "deep/b c+d.png", "deep/ünï.png", "folder/"]
CAPS = Caps(response_s=2.0, listing_s=3.0, listing_pages=40)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    server = start_moto(log=tmp_path_factory.mktemp("moto") / "moto.log")
    s3 = server.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for key in KEYS:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"" if key.endswith("/") else png(3, 2))
    server.auth(True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileS3]:
    server = HostileS3()
    yield server
    server.stop()


def loopback_allowed(port: int, resolver: Any = None) -> Egress:
    rule = EndpointRule.parse(f"127.0.0.1:{port}")
    return Egress(rule) if resolver is None else Egress(rule, resolver)


# The buckets' loop, as ingest reads through it (each test's reader is driven there).
BUCKETS = BucketLoop()


def reader(
    endpoint: str,
    name: str,
    credentials: Credentials,
    egress: Egress | None = None,
    region: str | None = "us-east-1",
) -> Threaded:
    parsed = parse_endpoint(endpoint)
    bucket = Bucket(parsed, region, name, credentials)
    return Threaded(S3Reader(bucket, egress or loopback_allowed(parsed.port), CAPS), BUCKETS)


async def problem_of(coroutine: Any) -> CloudProblem:
    with pytest.raises(CloudProblem) as raised:
        await coroutine
    return raised.value


def read_sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


async def all_keys(found: Threaded, prefix: str = "") -> list[str]:
    return [key async for page in found.pages(prefix) for key in page]


# -- signatures, against moto ----------------------------------------------------------


async def test_signed_requests_list_read_and_presign(moto: MotoS3, tmp_path: Path) -> None:
    # No region given: the bucket's location is asked first.
    found = reader(
        moto.endpoint, BUCKET, Credentials(moto.access_key, moto.secret_key), region=None
    )
    try:
        await found.check()
        assert found.inner.region == "us-east-1"  # type: ignore[attr-defined]
        assert await all_keys(found) == sorted(k for k in KEYS if not k.endswith("/"))
        assert await all_keys(found, "deep/") == ["deep/b c+d.png", "deep/ünï.png"]
        read = await found.read("deep/ünï.png", tmp_path)
        assert (read.size, read.facts.kind, read.facts.media.width) == (len(png(3, 2)), "image", 3)
        missing = await problem_of(found.read("nothing.png", tmp_path))
        assert missing.code == "object_not_found"
        # A run of objects comes back in one list, each read or what refused it.
        run = await found.read_run(["deep/b c+d.png", "nothing.png"], tmp_path)
        assert isinstance(run[0], Read) and run[0].sha256 == read_sha(png(3, 2))
        assert isinstance(run[1], CloudProblem) and run[1].code == "object_not_found"
        url = await found.presign("deep/b c+d.png", "b c.png", "image/png")
        assert "X-Amz-Signature=" in url and "X-Amz-Credential=" in url
    finally:
        await found.close()
    moto.auth(False)  # moto checks no presigned signature with auth on
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(url)
        assert answer.content == png(3, 2)
        assert answer.headers["Content-Type"] == "image/png"
        assert "b%20c.png" in answer.headers["Content-Disposition"]
    finally:
        moto.auth(True)


async def test_ranges_of_an_object_name_the_etag_its_read_answered(
    moto: MotoS3, tmp_path: Path
) -> None:
    """An import records the ETag of the object it read; a worker's ranges of it carry
    it (`If-Match`), and an object changed since is `content_changed`, not other bytes."""
    key = "changing.png"
    moto.client("s3").put_object(Bucket=BUCKET, Key=key, Body=png(3, 2))
    found = reader(moto.endpoint, BUCKET, Credentials(moto.access_key, moto.secret_key))
    try:
        read = await found.read(key, tmp_path)
        assert read.etag is not None and not read.etag.startswith('"')
        ranged = await found.read_range(key, 0, 7, read.etag)
        assert ranged.data == png(3, 2)[:8]
        moto.client("s3").put_object(Bucket=BUCKET, Key=key, Body=png(4, 2))
        changed = await problem_of(found.read_range(key, 0, 7, read.etag))
        assert changed.code == "content_changed"
        assert (await found.read_range(key, 0, 7)).data == png(4, 2)[:8]  # none named
        # What a 412 is checked by: the object hashed whole, with the ETag it has now.
        now = moto.client("s3").head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
        assert await found.hashed(key) == (hashlib.sha256(png(4, 2)).hexdigest(), now)
    finally:
        await found.close()


async def test_a_wrong_secret_or_bucket_is_named(moto: MotoS3) -> None:
    wrong = reader(moto.endpoint, BUCKET, Credentials(moto.access_key, "not-the-secret"))
    assert (await problem_of(wrong.check())).code == "invalid_credentials"
    await wrong.close()
    unknown = reader(moto.endpoint, BUCKET, Credentials("AKIAUNKNOWN000000000", "x"))
    assert (await problem_of(unknown.check())).code == "invalid_credentials"
    await unknown.close()
    elsewhere = reader(
        moto.endpoint, "no-such-bucket", Credentials(moto.access_key, moto.secret_key)
    )
    assert (await problem_of(elsewhere.check())).code == "bucket_not_found"
    await elsewhere.close()


def importer_role(moto: MotoS3) -> str:
    """A role that may read every bucket, made by an administrator (auth off): its ARN."""
    moto.auth(False)
    iam = moto.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    name = f"importer-{uuid.uuid4().hex[:8]}"
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName=name, PolicyName="s3", PolicyDocument=json.dumps(policy))
    moto.auth(True)
    return str(role["Role"]["Arn"])


async def test_temporary_credentials_sign_with_their_session_token(moto: MotoS3) -> None:
    """STS's temporary credentials (here AssumeRole's): the session token is signed in
    (X-Amz-Security-Token); the same keys without it are refused."""
    role_arn = importer_role(moto)
    moto.auth(False)
    sts = moto.client("sts")
    granted = sts.assume_role(RoleArn=role_arn, RoleSessionName="files")["Credentials"]
    moto.auth(True)
    temporary = Credentials(
        granted["AccessKeyId"], granted["SecretAccessKey"], granted["SessionToken"]
    )
    found = reader(moto.endpoint, BUCKET, temporary)
    try:
        await found.check()
        assert "a.png" in await all_keys(found)
    finally:
        await found.close()
    url_reader = reader(moto.endpoint, BUCKET, temporary)
    try:
        url = await url_reader.presign("a.png", "a.png", "image/png")
        assert "X-Amz-Security-Token=" in url
    finally:
        await url_reader.close()
    without = reader(moto.endpoint, BUCKET, Credentials(temporary.access_key, temporary.secret_key))
    assert (await problem_of(without.check())).code == "invalid_credentials"
    await without.close()


async def test_a_role_is_assumed_with_the_platforms_web_identity(
    moto: MotoS3, tmp_path: Path
) -> None:
    """AssumeRoleWithWebIdentity (moto's STS takes any token): no key of the
    customer's; without a token file the platform says it has no web identity."""
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.payload.signature")
    role = WebIdentity(importer_role(moto))
    bucket = Bucket(parse_endpoint(moto.endpoint), "us-east-1", BUCKET, role)
    egress = loopback_allowed(bucket.endpoint.port)
    found = S3Reader(bucket, egress, CAPS, Sts(str(token), moto.endpoint))
    try:
        # moto's auth wants an Authorization header even on STS's unsigned
        # AssumeRoleWithWebIdentity: the role is assumed (by the presign, which sends
        # nothing to S3) with auth off; every S3 request after it is checked.
        moto.auth(False)
        try:
            url = await found.presign("a.png", "a.png", "image/png")
        finally:
            moto.auth(True)
        assert "X-Amz-Security-Token=" in url
        await found.check()
        assert "a.png" in await all_keys(found)
    finally:
        await found.close()
    unavailable = S3Reader(bucket, egress, CAPS, Sts())
    assert (await problem_of(unavailable.check())).code == "web_identity_unavailable"
    await unavailable.close()


# -- the address rule and the caps, against the hostile endpoint ------------------------

HOSTILE_KEYS = Credentials("AKIAHOSTILE0EXAMPLE", "hostile-secret")


async def test_a_name_is_connected_to_as_resolved_and_judged(hostile: HostileS3) -> None:
    """A name only our resolver knows: the connection goes to the address it gave
    (allowed here), never to one resolved again elsewhere; the same name resolving to
    loopback where loopback is not allowed is refused, naming the address."""
    calls: list[str] = []

    def to_loopback(host: str, port: int) -> list[tuple[Any, ...]]:
        calls.append(host)
        return [(2, 1, 6, "", ("127.0.0.1", port))]

    allowed = loopback_allowed(hostile.port, to_loopback)
    found = reader(f"http://bucket.customer.invalid:{hostile.port}", "good", HOSTILE_KEYS, allowed)
    try:
        assert await all_keys(found) == list(GOOD_KEYS)
        assert calls and set(calls) == {"bucket.customer.invalid"}
    finally:
        await found.close()
    refused = reader(
        f"http://bucket.customer.invalid:{hostile.port}",
        "good",
        HOSTILE_KEYS,
        Egress(EndpointRule(), to_loopback),
    )
    problem = await problem_of(refused.check())
    assert problem.code == "endpoint_not_allowed"
    assert problem.details == {"address": "127.0.0.1", "reason": "127.0.0.1 is a loopback address"}
    await refused.close()


async def test_an_address_literal_is_judged_before_any_request(hostile: HostileS3) -> None:
    found = reader(hostile.endpoint, "good", HOSTILE_KEYS, Egress(EndpointRule()))
    assert (await problem_of(found.read("one.png", Path("/tmp")))).code == "endpoint_not_allowed"
    await found.close()


async def test_redirects_are_not_followed(hostile: HostileS3, tmp_path: Path) -> None:
    hostile.trap_visits = 0
    found = reader(hostile.endpoint, "redirect", HOSTILE_KEYS)
    try:
        problem = await problem_of(found.read("a.png", tmp_path))
    finally:
        await found.close()
    assert problem.code == "bucket_error" and "redirect" in problem.message
    assert hostile.trap_visits == 0


async def test_an_import_stopped_mid_listing_stops_the_listing_on_the_buckets_loop(
    hostile: HostileS3,
) -> None:
    found = reader(hostile.endpoint, "slow", HOSTILE_KEYS)
    pages = 0

    async def listing() -> None:
        nonlocal pages
        async for _ in found.pages(""):
            pages += 1

    async def listed() -> bool:
        return pages >= 1

    async def others_on_the_buckets_loop() -> int:
        return len(asyncio.all_tasks()) - 1

    async def nothing_left() -> bool:
        return await BUCKETS.run(others_on_the_buckets_loop()) == 0

    task = asyncio.create_task(listing())
    try:
        await eventually(listed, what="a first page")
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(nothing_left, within=5, what="the listing's end on the buckets' loop")
    await found.close()


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("endless", "listing_too_large"),
        ("looping", "listing_loop"),
        ("slow", "listing_timeout"),
        ("huge-listing-error", "response_too_large"),
    ],
)
async def test_listings_end_within_their_caps(hostile: HostileS3, name: str, code: str) -> None:
    hostile.sent = 0
    found = reader(hostile.endpoint, name, HOSTILE_KEYS)
    try:
        assert (await problem_of(all_keys(found))).code == code
    finally:
        await found.close()
    assert hostile.sent < 8 * 1024 * 1024


async def test_huge_and_trickling_objects_end_within_their_caps(
    hostile: HostileS3, tmp_path: Path
) -> None:
    hostile.sent = 0
    huge = reader(hostile.endpoint, "huge-error", HOSTILE_KEYS)
    try:
        assert (await problem_of(huge.read("a.png", tmp_path))).code == "response_too_large"
    finally:
        await huge.close()
    assert hostile.sent < 8 * 1024 * 1024
    trickle = reader(hostile.endpoint, "trickle", HOSTILE_KEYS)
    try:
        assert (await problem_of(trickle.read("a.png", tmp_path))).code == "response_timeout"
    finally:
        await trickle.close()


async def test_a_gcs_integration_signs_for_region_auto_by_path_and_copies(
    moto: MotoS3, tmp_path: Path
) -> None:
    """Google Cloud Storage is reached through its XML API as any S3 API is: path style,
    SigV4 with an HMAC key, region "auto" (never asked). moto stands in for Google here;
    the real service is not reached by the tests."""
    registration = parse_registration(
        {
            "name": "gcs",
            "provider": "gcs",
            "bucket": "lab_data.v2",
            "access_key": "GOOG1EXAMPLE",
            "secret_key": "s3cr3t",
        }
    )
    assert registration.endpoint == GCS and registration.region == "auto"
    assert registration.endpoint_given == "https://storage.googleapis.com"
    google = S3Reader(
        Bucket(registration.endpoint, registration.region, "lab_data.v2", registration.credentials),
        loopback_allowed(443),
        CAPS,
    )
    url = await google.presign("a/b.png", "b.png", "image/png")
    assert url.startswith("https://storage.googleapis.com/lab_data.v2/a/b.png?")
    assert "%2Fauto%2Fs3%2Faws4_request" in url
    await google.close()

    # The same plumbing against an S3 API that answers: region "auto", path style.
    found = reader(
        moto.endpoint, BUCKET, Credentials(moto.access_key, moto.secret_key), region="auto"
    )
    try:
        assert await all_keys(found, "deep/") == ["deep/b c+d.png", "deep/ünï.png"]
        copied = await found.copy("a.png", lambda: BlobWriter(tmp_path))
        assert (copied.size, copied.sha256) == (len(png(3, 2)), read_sha(png(3, 2)))
        assert copied.path.read_bytes() == png(3, 2)
        copied.abort()
        missing = await problem_of(found.copy("nothing.png", lambda: BlobWriter(tmp_path)))
        assert missing.code == "object_not_found"
    finally:
        await found.close()
