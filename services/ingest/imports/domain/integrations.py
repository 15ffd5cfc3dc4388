"""Cloud integrations, pure: what a registration must say, and what it records.

An integration is a customer's bucket with the credentials to read it. The
credentials are sealed by the caller (they never appear in an event in clear);
the checks here are of form only: whether the bucket answers is the adapter's to
find out (services/ingest/imports/buckets) before anything is recorded.
"""

from __future__ import annotations

import contextlib
import re
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationError, ValidationInfo, field_validator

from services.ingest.imports.domain.problems import named, refusal
from shared.api.common import Strict
from shared.contracts import ingest as ev
from shared.contracts import rules
from shared.contracts.envelope import Change
from shared.kit.access import Access
from shared.kit.errors import Refused, not_found

# "gcs": Google Cloud Storage through its S3-compatible XML API, with HMAC keys.
PROVIDERS = ("s3", "gcs")
# S3's bucket naming rules (lower case, digits, dots and hyphens, 3 to 63 characters);
# Google's take underscores too.
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
REGION = re.compile(r"^[a-z0-9-]{1,64}$")
ROLE_ARN = re.compile(r"^arn:aws[a-z-]{0,20}:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")
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
# Google Cloud Storage's XML API: path-style requests, SigV4 with HMAC keys, region "auto".
GCS = Endpoint("storage.googleapis.com", secure=True)
GCS_REGION = "auto"


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


def endpoint_problem(value: str) -> str | None:
    """What is wrong with an endpoint URL (`https://host[:port]`, no path, no
    credentials), or None."""
    parsed = urllib.parse.urlsplit(value.strip())
    if parsed.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parsed.hostname:
        return "names no host"
    if parsed.username or parsed.password:
        return "must not carry credentials: give access_key and secret_key"
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        return "must be the service's address only, without a path or query"
    try:
        parsed.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return "has a malformed port"
    return None


def parse_endpoint(value: str | None) -> Endpoint:
    """An endpoint URL or, for None or "", AWS's."""
    if value is None or value == "":
        return AWS
    problem = endpoint_problem(value)
    if problem:
        raise refusal([{"field": "endpoint", "problem": problem}])
    parsed = urllib.parse.urlsplit(value.strip())
    return Endpoint(parsed.netloc.lower(), secure=parsed.scheme == "https")


# The longest access key, secret key and session token taken (AWS's session tokens are
# up to a few KiB, longer with many session tags).
KEY_LENGTHS = {"access_key": 256, "secret_key": 1024, "session_token": 8192}
REGION_PROBLEM = "is not a region name (such as eu-west-1)"
ROLE_ARN_PROBLEM = "is not a role's ARN (arn:aws:iam::<account>:role/<name>)"


def _checked(problem: str | None, value: str) -> str:
    if problem:
        raise ValueError(problem)
    return value


class NewIntegration(Strict):
    """`POST /v1/integrations`: the bucket, and keys (an access key, its secret, and a
    session token for temporary ones) or a role to assume with the platform's web
    identity, one or the other. `role_arn` comes first: the keys' checks see it."""

    name: str
    provider: str
    bucket: str
    region: str | None = None
    endpoint: str | None = None
    role_arn: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None

    @field_validator("name")
    @classmethod
    def _named(cls, name: str) -> str:
        return _checked(rules.name_problem(name, "integration name"), name)

    @field_validator("provider")
    @classmethod
    def _known(cls, provider: str) -> str:
        known = provider in PROVIDERS
        return _checked(None if known else f"must be one of {', '.join(PROVIDERS)}", provider)

    @field_validator("bucket")
    @classmethod
    def _a_bucket(cls, bucket: str, info: ValidationInfo) -> str:
        rule = GCS_BUCKET if info.data.get("provider") == "gcs" else BUCKET
        named = rule.match(bucket) and ".." not in bucket
        problem = "is not a bucket name (3 to 63 of a-z, 0-9, '.', '-')"
        return _checked(None if named else problem, bucket)

    @field_validator("region")
    @classmethod
    def _a_region(cls, region: str | None) -> str | None:
        if not region:
            return None
        return _checked(None if REGION.match(region) else REGION_PROBLEM, region)

    @field_validator("endpoint")
    @classmethod
    def _an_endpoint(cls, endpoint: str | None) -> str | None:
        return _checked(endpoint_problem(endpoint), endpoint) if endpoint else None

    @field_validator("role_arn")
    @classmethod
    def _a_role(cls, role_arn: str | None, info: ValidationInfo) -> str | None:
        if role_arn is None:
            return None
        if info.data.get("provider") == "gcs":
            raise ValueError("is AWS's: a gcs integration takes an HMAC key")
        return _checked(None if ROLE_ARN.match(role_arn) else ROLE_ARN_PROBLEM, role_arn)

    @field_validator("access_key", "secret_key", "session_token")
    @classmethod
    def _a_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.data.get("role_arn") is not None:
            raise ValueError("is not given with role_arn: give keys or a role, not both")
        if info.field_name == "session_token" and info.data.get("provider") == "gcs":
            raise ValueError("is not taken for gcs: give the HMAC key's access and secret")
        most = KEY_LENGTHS[str(info.field_name)]
        if info.field_name == "session_token":
            if len(value) > most:
                raise ValueError(f"must be at most {most} characters")
            return value or None
        if not 1 <= len(value) <= most:
            raise ValueError(f"must be 1 to {most} characters")
        return value


def parse_registration(body: object) -> Registration:
    """The registration a request body asks for, or 422 naming every field at fault."""
    try:
        given = NewIntegration.model_validate(body)
    except ValidationError as error:
        raise refusal(named(error, lambda _: "is not a field of an integration")) from None
    credentials: BucketCredentials
    if given.role_arn is not None:
        credentials = WebIdentity(given.role_arn)
    else:
        missing = [f for f in ("access_key", "secret_key") if getattr(given, f) is None]
        if missing:
            raise refusal([{"field": f, "problem": "is required"} for f in missing])
        assert given.access_key is not None and given.secret_key is not None
        credentials = Credentials(given.access_key, given.secret_key, given.session_token)
    endpoint = parse_endpoint(given.endpoint)
    region = given.region
    if given.provider == "gcs":
        # Kept as given (Google's by default), so the integration's row names it.
        endpoint = parse_endpoint(given.endpoint or GCS.url())
        region = region or GCS_REGION
    return Registration(
        name=given.name,
        provider=given.provider,
        endpoint=endpoint,
        region=region,
        bucket=given.bucket,
        credentials=credentials,
        endpoint_given=endpoint.url() if given.endpoint or given.provider == "gcs" else None,
    )


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


def configurer_may_use(
    created_by: str, by_org_admin: bool | None, shared_with: list[str] | None
) -> bool:
    """May the one who configured a synced folder still use its integration (its
    scheduled syncs and notifications run for them)? An org admin at the time stays one
    (org roles do not change); a member, while it is shared with them. A folder
    configured before `by_org_admin` was recorded (None) counts as a member's. An
    integration removed (None) is the sync's to report (`integration_removed`)."""
    return shared_with is None or by_org_admin is True or created_by in shared_with


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


def _user_id(value: object) -> uuid.UUID:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return uuid.UUID(value)
    raise ValueError("is not a user id")


class Sharing(Strict):
    """`PATCH /v1/integrations/{id}`: the users it is shared with, all of them (the list
    replaces the one before)."""

    shared_with: list[Annotated[uuid.UUID, BeforeValidator(_user_id)]]

    @field_validator("shared_with")
    @classmethod
    def _bounded(cls, users: list[uuid.UUID]) -> list[uuid.UUID]:
        if len(users) > MAX_SHARED:
            raise ValueError(f"names at most {MAX_SHARED} users")
        return list(dict.fromkeys(users))


def parse_sharing(body: object) -> list[uuid.UUID]:
    """The users a `PATCH /v1/integrations/{id}` shares it with, each once, in the order
    given; or 422 naming every problem."""
    try:
        return Sharing.model_validate(body).shared_with
    except ValidationError as error:
        unknown = "is not a field of an integration that can be changed"
        raise refusal(named(error, lambda _: unknown)) from None


class IntegrationChange(Strict):
    """`PATCH /v1/integrations/{id}`: any of the users it is shared with (all of them:
    the list replaces the one before), new keys (access_key and secret_key, with a
    session_token for temporary ones), a new events token."""

    shared_with: list[Annotated[uuid.UUID, BeforeValidator(_user_id)]] | None = None
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    rotate_events_token: bool = False

    @field_validator("shared_with")
    @classmethod
    def _bounded(cls, users: list[uuid.UUID] | None) -> list[uuid.UUID] | None:
        if users is not None and len(users) > MAX_SHARED:
            raise ValueError(f"names at most {MAX_SHARED} users")
        return None if users is None else list(dict.fromkeys(users))

    @field_validator("access_key", "secret_key", "session_token")
    @classmethod
    def _a_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        most = KEY_LENGTHS[str(info.field_name)]
        if not 1 <= len(value) <= most:
            raise ValueError(f"must be 1 to {most} characters")
        return value


@dataclass(frozen=True)
class Changed:
    shared_with: list[uuid.UUID] | None
    credentials: Credentials | None
    rotate_events_token: bool


def parse_change(body: object) -> Changed:
    """What a `PATCH /v1/integrations/{id}` asks, or 422 naming every problem."""
    try:
        given = IntegrationChange.model_validate(body)
    except ValidationError as error:
        unknown = "is not a field of an integration that can be changed"
        raise refusal(named(error, lambda _: unknown)) from None
    credentials = None
    if given.access_key is not None or given.secret_key is not None:
        missing = [f for f in ("access_key", "secret_key") if getattr(given, f) is None]
        if missing:
            raise refusal([{"field": f, "problem": "is required with new keys"} for f in missing])
        assert given.access_key is not None and given.secret_key is not None
        credentials = Credentials(given.access_key, given.secret_key, given.session_token)
    elif given.session_token is not None:
        raise refusal(
            [{"field": "session_token", "problem": "goes with access_key and secret_key"}]
        )
    if given.shared_with is None and credentials is None and not given.rotate_events_token:
        raise refusal(
            [
                {
                    "field": "body",
                    "problem": "names nothing to change: shared_with, keys or rotate_events_token",
                }
            ]
        )
    return Changed(given.shared_with, credentials, given.rotate_events_token)


def rotate(integration_id: uuid.UUID, version: int, sealed: str) -> list[Change]:
    return [
        Change(
            ev.integration_stream(integration_id),
            version + 1,
            ev.IntegrationCredentialsRotated(
                integration_id=integration_id, sealed_credentials=sealed
            ),
        )
    ]


def events_token(integration_id: uuid.UUID, version: int, digest: str) -> list[Change]:
    return [
        Change(
            ev.integration_stream(integration_id),
            version + 1,
            ev.IntegrationEventsTokenSet(integration_id=integration_id, token_hash=digest),
        )
    ]


def share(integration_id: uuid.UUID, version: int, user_ids: list[uuid.UUID]) -> list[Change]:
    return [
        Change(
            ev.integration_stream(integration_id),
            version + 1,
            ev.IntegrationShared(integration_id=integration_id, shared_with=user_ids),
        )
    ]
