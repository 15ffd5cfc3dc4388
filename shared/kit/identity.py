"""Who is calling a service: a short-lived token the gateway (or a service) signs.

A service answers only calls that carry a valid `X-Files-Identity` token; nothing
else about the caller (no `X-Files-Actor`, no `X-Files-Access`) is believed. The
gateway signs, per call, one for the user it authenticated: their id, their access
string (organisation role and folder grants, `shared/kit/access.py`) and the request's
correlation id. A call that acts for no user (the gateway's key lookups and
consistency waits, datasets asking the ACL context for users) carries a token naming
the calling service instead (`service:gateway`), with no access: a route that acts for
a user refuses it (`shared/kit/http.py`).

Token: `v1.<base64(JSON claims)>.<base64(HMAC-SHA256(key, "v1." + claims))>`, claims
`{sub, acc, cid, iat, exp, aud}`: `aud` names the one service the token is for (a token
seen on the wire cannot be replayed to another service within its minute; every signer
names it, and a service refuses a token naming another); for a call about one folder,
`fp`: the folder's path of ids as the gateway found it in the catalog
(`shared/kit/http.py` folder_path), signed with the rest so no holder of a token can
name another folder's path; for a call about the object of a customer's bucket a file
imported by reference is, `obj` (`<integration id>:<key>`, from the same answer of the
catalog as `fp`: ingest presigns that object and no other); for a user authenticated by
an API key (or a web session started with one), `kid`, the key's id (an upload session
is bound to the key that opened it).
Valid TTL_S seconds. HMAC rather than Ed25519:
every service signs too (service-to-service calls), so each would need a private key
of its own and every verifier the others' public keys, while the services already
share one database credential, so a service holding the key could do no more harm
than it already can; and a verification costs about a microsecond (stdlib, a one-shot
`hmac.digest` with the key derived once at start), against tens for Ed25519, on every
call. The key is FILES_SERVICE_KEY (a Kubernetes Secret; the embedded platform makes a
random one per start); one under 128 bits is refused at start.
"""

from __future__ import annotations

import binascii
import hmac
import math
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from pydantic import SecretStr

HEADER = "X-Files-Identity"
# A second token, for a call that also acts on the right of another user than its
# caller: an upload session's completion carries its opener's (the key that opened it,
# their access now, the session's folder path), beside the completer's own.
OPENER_HEADER = "X-Files-Opener"
_HEADER = HEADER.lower().encode()
# On a service's 401 for the call's token (not the user's credentials): the caller's
# own signature was refused (it expired while the call waited on a hung service, or the
# keys differ), so the gateway answers its client 503, never a 401 that blames them.
REFUSED_HEADER = "X-Files-Identity-Refused"
VERSION = b"v1"
# Long enough for any clock skew between pods and a slow hop; short enough that a
# token seen in transit is soon worth nothing.
TTL_S = 60
# How long an upload session's part URL is valid (`ServiceKey.upload_part_mac`).
PART_URL_LIFETIME_S = 6 * 3600
# A token issued by a clock this far ahead of ours is still accepted.
SKEW_S = 5
MIN_BITS = 128
SERVICE_PREFIX = "service:"
# Health is asked by the orchestrator and the launcher, which hold no key.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
# Routes that carry a signature of their own in the URL instead of an identity token:
# a thumbnail worker, which holds no key, reads an object of a customer's bucket
# through ingest by such a URL (one object, until it expires; see `object_read_mac`).
SIGNED_URL_PREFIXES = ("/internal/objects/",)

# Bits per character of the smallest usual alphabet a secret is written in.
_ALPHABETS = (
    (frozenset(string.digits), math.log2(10)),
    (frozenset(string.digits + "abcdef"), 4.0),
    (frozenset(string.digits + "ABCDEF"), 4.0),
    (frozenset(string.digits + string.ascii_lowercase), math.log2(36)),
    (frozenset(string.digits + string.ascii_letters), math.log2(62)),
    (frozenset(string.digits + string.ascii_letters + "-_"), 6.0),
)
_PRINTABLE = math.log2(95)


class WeakSecret(ValueError):
    """A secret too short or too simple to be used (or none)."""


def strength_bits(secret: str) -> float:
    """What a secret is worth at most, in bits: its length times the bits per character
    of the smallest usual alphabet it is written in (digits 3.3, hex 4, lowercase
    letters and digits 5.2, letters and digits 5.95, URL-safe base64 6, other 6.6).
    One character repeated is worth nothing."""
    chars = set(secret)
    if len(chars) <= 1:
        return 0.0
    per_char = next((bits for alphabet, bits in _ALPHABETS if chars <= alphabet), _PRINTABLE)
    return len(secret) * per_char


def require_strong(name: str, secret: str, *, prefix: str = "") -> None:
    """Refuse a secret worth under MIN_BITS (an optional `prefix` is not counted)."""
    body = secret.removeprefix(prefix) if prefix else secret
    bits = strength_bits(body)
    if bits < MIN_BITS:
        raise WeakSecret(
            f"{name} is too weak ({bits:.0f} bits, at least {MIN_BITS} needed): use at least"
            f" 22 random URL-safe characters{f' after {prefix!r}' if prefix else ''}"
            " (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )


def new_key() -> str:
    """A fresh service key (256 bits)."""
    return secrets.token_urlsafe(32)


def _b64(raw: bytes) -> bytes:
    # Standard base64 (header-safe, and binascii's C codec is the fastest at hand).
    return binascii.b2a_base64(raw, newline=False)


def _unb64(text: bytes) -> bytes:
    return binascii.a2b_base64(text, strict_mode=True)


class Unauthenticated(Exception):
    """A token that is missing, malformed, forged, signed with another key or expired."""


@dataclass(frozen=True, slots=True)
class Identity:
    """The verified caller of a service call."""

    actor: str
    # The caller's access string (`Access.encode`); None for a service acting for no user.
    access: str | None
    correlation_id: str | None
    issued_at: int
    expires_at: int
    # The folder's path of ids, root first, comma-separated, for a call about a folder.
    folder_path: str | None = None
    # `<integration id>:<key>`: the object of the file whose folder is `folder_path`.
    object_ref: str | None = None
    # The id of the API key the user was authenticated by.
    key_id: str | None = None
    # The service the token is for (None: signed by a version before audiences).
    audience: str | None = None

    @property
    def service(self) -> str | None:
        """The calling service's name, when the token is a service's own."""
        if self.access is None and self.actor.startswith(SERVICE_PREFIX):
            return self.actor.removeprefix(SERVICE_PREFIX)
        return None


class ServiceKey:
    """Signs and verifies identity tokens with the platform's service key."""

    def __init__(self, secret: str | SecretStr, name: str = "FILES_SERVICE_KEY") -> None:
        raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if not raw:
            raise WeakSecret(
                f"{name} is not set: services accept only calls signed with it"
                " (the embedded platform keeps one in <data dir>/service.key; a deployment"
                " takes it from its Secret)"
            )
        require_strong(name, raw)
        # Derived once: a verification is then one HMAC, no key derivation per call.
        self._mac_key = hmac.digest(raw.encode(), b"files service identity v1", "sha256")

    def __repr__(self) -> str:
        return "ServiceKey(***)"

    def _mac(self, signed: bytes) -> bytes:
        return hmac.digest(self._mac_key, signed, "sha256")

    def sign(
        self,
        actor: str,
        access: str | None = None,
        correlation_id: str | None = None,
        *,
        audience: str | None,
        folder_path: str | None = None,
        object_ref: str | None = None,
        key_id: str | None = None,
        now: float | None = None,
    ) -> str:
        """A token for `audience`, the service the call goes to (no default: every
        signer names it; None is for tests playing a signer of the version before)."""
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {"sub": actor, "acc": access, "cid": correlation_id}
        claims["iat"], claims["exp"] = issued, issued + TTL_S
        if audience is not None:
            claims["aud"] = audience
        if folder_path is not None:
            claims["fp"] = folder_path
        if object_ref is not None:
            claims["obj"] = object_ref
        if key_id is not None:
            claims["kid"] = key_id
        signed = VERSION + b"." + _b64(orjson.dumps(claims))
        return (signed + b"." + _b64(self._mac(signed))).decode()

    def object_read_mac(self, integration_id: str, key: str, expires: int) -> str:
        """The signature of a URL that reads one object of an integration's bucket until
        `expires` (unix seconds). Its own domain of the key: it can never pass for an
        identity token, nor one of these for another object."""
        message = b"\n".join(
            [b"files object read v1", integration_id.encode(), key.encode(), b"%d" % expires]
        )
        return _b64(self._mac(message)).decode()

    def object_read_allowed(
        self, integration_id: str, key: str, expires: int, signature: str, now: float | None = None
    ) -> bool:
        if expires < (time.time() if now is None else now):
            return False
        wanted = self.object_read_mac(integration_id, key, expires)
        return hmac.compare_digest(wanted.encode(), signature.encode())

    def upload_part_mac(self, session_id: str, number: int, expires: int, opener: str) -> str:
        """The signature of an upload session's part URL (the local store's): its right
        to send that part until `expires` (unix seconds), for the session `opener`
        opened. Of the service key, not of FILES_SECRET_KEY, so that the gateway, which
        holds only this one, refuses a forged or expired part before it takes a slot or
        calls ingest; and naming the opener, whose cap of transfers the part counts in."""
        message = b"\n".join(
            [
                b"files upload part v1",
                session_id.encode(),
                b"%d" % number,
                b"%d" % expires,
                opener.encode("utf-8", "surrogatepass"),
            ]
        )
        return _b64(self._mac(message)).decode()

    def upload_part_allowed(
        self,
        session_id: str,
        number: int,
        expires: int,
        opener: str,
        signature: str,
        now: float | None = None,
    ) -> bool:
        if expires < (time.time() if now is None else now):
            return False
        wanted = self.upload_part_mac(session_id, number, expires, opener)
        # Compared as bytes: a signature of any text is refused, never an error.
        return hmac.compare_digest(wanted.encode(), signature.encode("utf-8", "surrogatepass"))

    def for_service(
        self, service: str, correlation_id: str | None = None, *, audience: str | None
    ) -> str:
        """A token for a call that acts for no user, naming the calling service, to the
        service `audience`; the correlation id defaults to the one of the request or
        event being handled."""
        if correlation_id is None:
            correlation_id = structlog.contextvars.get_contextvars().get("correlation_id")
        return self.sign(SERVICE_PREFIX + service, None, correlation_id, audience=audience)

    def verify(
        self, token: str | bytes, now: float | None = None, *, audience: str | None = None
    ) -> Identity:
        """The token's caller, if the token is sound, and (given `audience`, the
        verifying service's name) not for another service. A token naming no service
        is accepted: signers of the version before audiences make them, for a minute
        each, while an upgrade rolls out (none of this version does); drop that in the
        version after."""
        raw = token.encode("latin-1") if isinstance(token, str) else token
        signed, dot, mac = raw.rpartition(b".")
        version, _, body = signed.partition(b".")
        if not dot or version != VERSION or not body:
            raise Unauthenticated("the identity token is malformed")
        try:
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            raise Unauthenticated("the identity token is malformed") from None
        if not hmac.compare_digest(given, self._mac(signed)):
            raise Unauthenticated("the identity token's signature does not match")
        claims: dict[str, Any] = orjson.loads(_unb64(body))
        moment = time.time() if now is None else now
        expires, issued = claims["exp"], claims["iat"]
        if moment >= expires:
            raise Unauthenticated("the identity token has expired")
        if issued > moment + SKEW_S:
            raise Unauthenticated("the identity token was issued in the future")
        if expires - issued > TTL_S:
            raise Unauthenticated(f"the identity token lives longer than {TTL_S} s")
        meant = claims.get("aud")
        if audience is not None and meant is not None and meant != audience:
            raise Unauthenticated(
                f"the identity token is for the {meant} service, not the {audience} service"
            )
        return Identity(
            claims["sub"],
            claims["acc"],
            claims["cid"],
            issued,
            expires,
            claims.get("fp"),
            claims.get("obj"),
            claims.get("kid"),
            meant,
        )


class Authenticated:
    """ASGI middleware: every HTTP request but health needs a valid identity token; the
    verified `Identity` is `request.state.identity`. A missing, malformed, forged,
    wrongly keyed or expired one, or one for another service than `audience`, is a 401
    `unauthenticated`, before any route runs."""

    def __init__(self, app: Any, key: ServiceKey, audience: str) -> None:
        self.app = app
        self.key = key
        self.audience = audience

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(SIGNED_URL_PREFIXES):
            await self.app(scope, receive, send)
            return
        token = next((v for k, v in scope["headers"] if k == _HEADER), None)
        try:
            if token is None:
                raise Unauthenticated(
                    f"no {HEADER}: services answer only calls signed by the gateway"
                )
            identity = self.key.verify(token, audience=self.audience)
        except Unauthenticated as refused:
            await _refuse(send, str(refused))
            return
        except Exception:  # anything a forged body could raise while being read
            await _refuse(send, "the identity token is malformed")
            return
        scope.setdefault("state", {})["identity"] = identity
        await self.app(scope, receive, send)


async def _refuse(send: Any, message: str) -> None:
    body = orjson.dumps({"error": {"code": "unauthenticated", "message": message, "details": {}}})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (REFUSED_HEADER.lower().encode(), b"1"),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})
