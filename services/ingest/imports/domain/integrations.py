"""Cloud integrations, pure: what a registration must say, and what it records.

An integration is a customer's bucket with the credentials to read it. The
credentials are sealed by the caller (they never appear in an event in clear);
the checks here are of form only: whether the bucket answers is the adapter's to
find out (services/ingest/imports/buckets) before anything is recorded.
"""

from __future__ import annotations

import re
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

from shared.contracts import ingest as ev
from shared.contracts import rules
from shared.contracts.envelope import Change
from shared.kit.access import Access
from shared.kit.errors import Refused, not_found

PROVIDERS = ("s3",)
# S3's bucket naming rules (lower case, digits, dots and hyphens, 3 to 63 characters).
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
REGION = re.compile(r"^[a-z0-9-]{1,64}$")
MAX_KEY_LENGTH = 1024
ROLE_ARN = re.compile(r"^arn:aws[a-z-]{0,20}:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")
# AWS's session tokens are up to a few KiB (longer with many session tags).
MAX_SESSION_TOKEN = 8192
# Users an integration is shared with, at most: the event that lists them stays small.
MAX_SHARED = 1000


@dataclass(frozen=True)
class Endpoint:
    """Where the bucket's S3 API answers: host[:port], and whether over TLS."""

    host: str
    secure: bool

    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}"

    @property
    def hostname(self) -> str:
        """The host alone (an IPv6 address without its brackets)."""
        return urllib.parse.urlsplit(f"//{self.host}").hostname or ""

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(f"//{self.host}").port or (443 if self.secure else 80)


AWS = Endpoint("s3.amazonaws.com", secure=True)


@dataclass(frozen=True)
class Credentials:
    """An access key and its secret, and the STS session token of temporary ones
    (AssumeRole, GetSessionToken, an IAM role's): out of every repr."""

    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class WebIdentity:
    """A role of the customer's that trusts this platform's web identity (on EKS, the
    cluster's OIDC provider): ingest assumes it with its own token
    (AssumeRoleWithWebIdentity) and refreshes what STS gives before it expires. No
    secret of the customer's is kept."""

    role_arn: str


BucketCredentials = Credentials | WebIdentity


def sealed_credentials(credentials: BucketCredentials) -> dict[str, str]:
    """What is sealed (shared/kit/secrets.py) into the integration's event."""
    if isinstance(credentials, WebIdentity):
        return {"role_arn": credentials.role_arn}
    found = {"access_key": credentials.access_key, "secret_key": credentials.secret_key}
    if credentials.session_token:
        found["session_token"] = credentials.session_token
    return found


def opened_credentials(opened: dict[str, Any]) -> BucketCredentials:
    """Credentials as sealed, by this version or an earlier one (keys only)."""
    if opened.get("role_arn"):
        return WebIdentity(str(opened["role_arn"]))
    return Credentials(
        str(opened["access_key"]),
        str(opened["secret_key"]),
        opened.get("session_token") or None,
    )


@dataclass(frozen=True)
class Registration:
    name: str
    provider: str
    endpoint: Endpoint
    # Given by the caller, or None (then the endpoint is asked where the bucket is).
    region: str | None
    bucket: str
    credentials: BucketCredentials
    # What the caller wrote as the endpoint, normalised (None for AWS's default).
    endpoint_given: str | None


def parse_endpoint(value: str | None) -> Endpoint:
    """An endpoint URL (`https://host[:port]`, no path, no credentials) or AWS's."""
    if value is None or value == "":
        return AWS
    parsed = urllib.parse.urlsplit(value.strip())
    problem = None
    if parsed.scheme not in ("http", "https"):
        problem = "must start with http:// or https://"
    elif not parsed.hostname:
        problem = "names no host"
    elif parsed.username or parsed.password:
        problem = "must not carry credentials: give access_key and secret_key"
    elif parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        problem = "must be the service's address only, without a path or query"
    else:
        try:
            parsed.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            problem = "has a malformed port"
    if problem:
        raise _invalid("endpoint", problem)
    return Endpoint(parsed.netloc.lower(), secure=parsed.scheme == "https")


def _invalid(field: str, problem: str) -> Refused:
    return Refused(
        422,
        "invalid_request",
        f"{field}: {problem}",
        {"fields": [{"field": field, "problem": problem}]},
    )


def _text(body: dict[str, object], field: str, *, required: bool = True) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise _invalid(field, "is required")
        return None
    if not isinstance(value, str):
        raise _invalid(field, "must be a string")
    return value


def parse_registration(body: object) -> Registration:
    """The registration a request body asks for, or 422 naming the field at fault."""
    if not isinstance(body, dict):
        raise Refused(422, "invalid_request", "the body must be a JSON object")
    name = _text(body, "name") or ""
    problem = rules.name_problem(name, "integration name")
    if problem:
        raise _invalid("name", problem)
    provider = _text(body, "provider") or ""
    if provider not in PROVIDERS:
        raise _invalid("provider", f"must be one of {', '.join(PROVIDERS)}")
    bucket = _text(body, "bucket") or ""
    if not BUCKET.match(bucket) or ".." in bucket:
        raise _invalid("bucket", "is not a bucket name (3 to 63 of a-z, 0-9, '.', '-')")
    region = _text(body, "region", required=False) or None
    if region is not None and not REGION.match(region):
        raise _invalid("region", "is not a region name (such as eu-west-1)")
    endpoint_text = _text(body, "endpoint", required=False) or None
    endpoint = parse_endpoint(endpoint_text)
    credentials = _credentials(body)
    return Registration(
        name=name,
        provider=provider,
        endpoint=endpoint,
        region=region,
        bucket=bucket,
        credentials=credentials,
        endpoint_given=endpoint.url() if endpoint_text else None,
    )


def _credentials(body: dict[str, object]) -> BucketCredentials:
    """Keys (an access key, its secret, and a session token for temporary ones), or a
    role to assume with the platform's web identity: one or the other."""
    role_arn = _text(body, "role_arn", required=False)
    if role_arn is not None:
        given = [
            f for f in ("access_key", "secret_key", "session_token") if body.get(f) is not None
        ]
        if given:
            raise _invalid(given[0], "is not given with role_arn: give keys or a role, not both")
        if not ROLE_ARN.match(role_arn):
            raise _invalid("role_arn", "is not a role's ARN (arn:aws:iam::<account>:role/<name>)")
        return WebIdentity(role_arn)
    access_key = _text(body, "access_key") or ""
    secret_key = _text(body, "secret_key") or ""
    if not access_key or len(access_key) > 256:
        raise _invalid("access_key", "must be 1 to 256 characters")
    if not secret_key or len(secret_key) > 1024:
        raise _invalid("secret_key", "must be 1 to 1024 characters")
    session_token = _text(body, "session_token", required=False) or None
    if session_token is not None and len(session_token) > MAX_SESSION_TOKEN:
        raise _invalid("session_token", f"must be at most {MAX_SESSION_TOKEN} characters")
    return Credentials(access_key, secret_key, session_token)


def register(
    integration_id: uuid.UUID, registration: Registration, sealed_credentials: str
) -> list[Change]:
    """The integration's stream begins; the credentials go in sealed, never in clear."""
    return [
        Change(
            ev.integration_stream(integration_id),
            1,
            ev.IntegrationRegistered(
                integration_id=integration_id,
                name=registration.name,
                provider=registration.provider,
                endpoint=registration.endpoint_given,
                region=registration.region,
                bucket=registration.bucket,
                sealed_credentials=sealed_credentials,
            ),
        )
    ]


def remove(integration_id: uuid.UUID, version: int) -> list[Change]:
    return [
        Change(
            ev.integration_stream(integration_id),
            version + 1,
            ev.IntegrationRemoved(integration_id=integration_id),
        )
    ]


def may_use(access: Access, shared_with: list[str]) -> bool:
    """Org admins use every integration; a member, those shared with them."""
    return access.org_admin or access.user_id in shared_with


def require_use(access: Access, integration_id: uuid.UUID, shared_with: list[str] | None) -> None:
    """The integration exists (`shared_with` is not None) and the caller may use it;
    else 404, as for an integration that does not exist (no existence leak)."""
    if shared_with is None or not may_use(access, shared_with):
        raise not_found("integration", integration_id)


def require_admin(access: Access, integration_id: uuid.UUID, shared_with: list[str] | None) -> None:
    """Only an org admin changes or removes an integration: a member it is shared with
    is told so (403), anyone else finds nothing (404)."""
    require_use(access, integration_id, shared_with)
    if not access.org_admin:
        raise Refused(
            403,
            "forbidden",
            f"integration {integration_id}: changing or removing it needs the organisation"
            " admin role",
            {"role_needed": "org admin"},
        )


def parse_sharing(body: object) -> list[uuid.UUID]:
    """The users a `PATCH /v1/integrations/{id}` shares it with (all of them: the list
    replaces the one before), each once, in the order given; or 422."""
    if not isinstance(body, dict):
        raise Refused(422, "invalid_request", "the body must be a JSON object")
    unknown = sorted(set(body) - {"shared_with"})
    if unknown:
        raise _invalid(unknown[0], "is not a field of an integration that can be changed")
    given = body.get("shared_with")
    if not isinstance(given, list):
        raise _invalid("shared_with", "must be a list of user ids")
    if len(given) > MAX_SHARED:
        raise _invalid("shared_with", f"names at most {MAX_SHARED} users")
    users: dict[uuid.UUID, None] = {}
    for i, value in enumerate(given):
        try:
            users[uuid.UUID(value)] = None
        except (TypeError, ValueError, AttributeError):
            raise _invalid(f"shared_with[{i}]", "is not a user id") from None
    return list(users)


def share(integration_id: uuid.UUID, version: int, user_ids: list[uuid.UUID]) -> list[Change]:
    return [
        Change(
            ev.integration_stream(integration_id),
            version + 1,
            ev.IntegrationShared(integration_id=integration_id, shared_with=user_ids),
        )
    ]
