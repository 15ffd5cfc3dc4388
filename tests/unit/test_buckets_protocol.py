"""What S3 answers, parsed (services/ingest/imports/buckets/protocol.py), where a bucket is
addressed, what its errors mean (port.refused), and an object spooled as it streams
(content.py); plus the credentials an integration seals."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.imports.buckets import content, port, protocol
from services.ingest.imports.domain import integrations
from services.ingest.imports.domain.integrations import Credentials, Endpoint, parse_endpoint
from services.ingest.media import kinds as media
from shared.kit.errors import Refused
from tests.e2e.support import png

XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"


def listing(
    keys: list[str], token: str | None, *, truncated: bool | None = None, url: bool = False
) -> bytes:
    encoding = "<EncodingType>url</EncodingType>" if url else ""
    more = truncated if truncated is not None else token is not None
    following = f"<NextContinuationToken>{token}</NextContinuationToken>" if token else ""
    contents = "".join(f"<Contents><Key>{k}</Key><Size>1</Size></Contents>" for k in keys)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{XMLNS}">{encoding}'
        f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>{following}{contents}"
        "</ListBucketResult>"
    ).encode()


def test_a_page_gives_its_keys_without_folder_markers_and_the_next_token() -> None:
    page = protocol.parse_page(listing(["a.png", "dir/", "dir/b.png"], "next-1"))
    assert page == protocol.Page(["a.png", "dir/b.png"], "next-1")
    assert protocol.parse_page(listing(["z.png"], None)).following is None


def test_a_size_that_is_no_ascii_number_is_taken_as_unknown() -> None:
    # "²" and "١٢" pass str.isdigit, and int() refused the first: a bucket's listing
    # raised ValueError out of the parser.
    body = listing(["a.png", "b.png", "c.png"], None).replace(b"<Size>1</Size>", b"<Size>%b</Size>")
    page = protocol.parse_page(body % ("²".encode(), "١٢".encode(), b"7"))
    assert page.entries is not None and [e.size for e in page.entries] == [0, 0, 7]


def test_url_encoded_keys_are_decoded_only_when_the_page_says_so() -> None:
    encoded = listing(["deep/b+c%2Bd.png", "%C3%BCn%C3%AF.png"], None, url=True)
    assert protocol.parse_page(encoded).keys == ["deep/b c+d.png", "ünï.png"]
    assert protocol.parse_page(listing(["a+b.png"], None)).keys == ["a+b.png"]


def test_xml_special_characters_in_keys() -> None:
    page = protocol.parse_page(listing(["a&amp;b &lt;c&gt;.png"], None))
    assert page.keys == ["a&b <c>.png"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not xml at all", "not XML"),
        (b"", "not XML"),
        (listing(["a.png"], None, truncated=True), "without a continuation token"),
    ],
)
def test_an_answer_that_is_no_listing_is_named(body: bytes, problem: str) -> None:
    with pytest.raises(protocol.Unreadable, match=problem):
        protocol.parse_page(body)


def test_entities_are_not_expanded() -> None:
    """A billion laughs: ElementTree refuses (or does not expand) internal entities
    beyond its own; either way the page is never a gigabyte of keys."""
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b'<ListBucketResult xmlns="' + XMLNS.encode() + b'"><IsTruncated>false</IsTruncated>'
        b"<Contents><Key>&c;</Key></Contents></ListBucketResult>"
    )
    try:
        keys = protocol.parse_page(bomb).keys
    except protocol.Unreadable:
        return
    assert sum(len(k) for k in keys) <= 1000


@given(
    st.lists(st.text(min_size=1, max_size=40).filter(lambda k: not k.endswith("/")), max_size=20)
)
def test_any_key_survives_url_encoding(keys: list[str]) -> None:
    from urllib.parse import quote_plus

    clean = [k for k in keys if all(c.isprintable() for c in k)]
    body = listing([quote_plus(k) for k in clean], None, url=True)
    assert protocol.parse_page(body).keys == clean


def location(value: str) -> bytes:
    return f'<LocationConstraint xmlns="{XMLNS}">{value}</LocationConstraint>'.encode()


def test_a_location_is_a_region() -> None:
    aws, minio = parse_endpoint(None), parse_endpoint("https://minio.example.com")
    assert protocol.parse_location(location(""), aws) == "us-east-1"
    assert protocol.parse_location(location("eu-central-1"), minio) == "eu-central-1"
    assert protocol.parse_location(location("EU"), aws) == "eu-west-1"
    with pytest.raises(protocol.Unreadable, match="region"):
        protocol.parse_location(location("not a region!"), minio)
    with pytest.raises(protocol.Unreadable, match="not XML"):
        protocol.parse_location(b"<<", minio)


def test_an_error_code_comes_from_the_body_or_else_the_status() -> None:
    body = b"<Error><Code>SignatureDoesNotMatch</Code><Message>AKIA...</Message></Error>"
    assert protocol.error_code(403, body, None) == "SignatureDoesNotMatch"
    assert protocol.error_code(403, b"", None) == "AccessDenied"
    assert protocol.error_code(404, b"", "k") == "NoSuchKey"
    assert protocol.error_code(404, b"", None) == "NoSuchBucket"
    assert protocol.error_code(307, b"", "k") == "Redirect"
    assert protocol.error_code(418, b"", None) == "HTTP 418"


BUCKET = port.Bucket(
    parse_endpoint("http://minio:9000"), "us-east-1", "b", Credentials("AKIAKEY", "s3cr3t-value")
)


@pytest.mark.parametrize(
    ("code", "key", "expected"),
    [
        ("InvalidAccessKeyId", None, "invalid_credentials"),
        ("ExpiredToken", None, "invalid_credentials"),
        ("NoSuchBucket", None, "bucket_not_found"),
        ("NoSuchKey", "k", "object_not_found"),
        ("NoSuchKey", None, "bucket_error"),
        ("AccessDenied", "k", "access_denied"),
        ("PermanentRedirect", None, "bucket_error"),
        ("SlowDown", "k", "bucket_error"),
    ],
)
def test_what_an_error_code_means(code: str, key: str | None, expected: str) -> None:
    found = port.refused(code, BUCKET, key)
    assert found.code == expected
    assert "AKIAKEY" not in found.message and "s3cr3t-value" not in found.message


@pytest.mark.parametrize(
    ("endpoint", "bucket", "origin", "object_path"),
    [
        ("http://127.0.0.1:9000", "b-1", "http://127.0.0.1:9000", "/b-1/"),
        ("https://minio.example.com", "b-1", "https://minio.example.com", "/b-1/"),
        (None, "b-1", "https://b-1.s3.eu-west-1.amazonaws.com", "/"),
        (
            "https://s3.eu-west-1.amazonaws.com",
            "b-1",
            "https://b-1.s3.eu-west-1.amazonaws.com",
            "/",
        ),
        # A name with dots cannot be a TLS virtual host: path style on the regional host.
        (None, "my.bucket", "https://s3.eu-west-1.amazonaws.com", "/my.bucket/"),
    ],
)
def test_where_a_bucket_is_addressed(
    endpoint: str | None, bucket: str, origin: str, object_path: str
) -> None:
    found = protocol.addressing(parse_endpoint(endpoint), bucket, "eu-west-1")
    assert (found.origin, found.object_path) == (origin, object_path)
    assert found.object_url("a b/ü~.png") == f"{origin}{object_path}a%20b/%C3%BC~.png"


def test_an_object_is_hashed_and_spooled_as_it_streams(tmp_path: Path) -> None:
    import hashlib

    image = png(5, 4)
    whole = content.Content(tmp_path)
    whole.add(image)
    read = whole.facts()
    assert (read.size, read.sha256, read.facts.media.width) == (
        len(image),
        hashlib.sha256(image).hexdigest(),
        5,
    )
    pieces = content.Content(tmp_path)
    for i in range(0, len(image), 7):
        pieces.add(image[i : i + 7])
    assert pieces.facts() == read
    pieces.close()
    with pytest.raises(media.UnknownContent):
        content.Content(tmp_path).facts()


def test_a_session_token_is_sealed_with_the_keys_and_old_credentials_open() -> None:
    body = {
        "name": "temp",
        "provider": "s3",
        "bucket": "b-1",
        "access_key": "ASIAEXAMPLE",
        "secret_key": "secret",
        "session_token": "token",
    }
    registration = integrations.parse_registration(body)
    sealed = integrations.sealed_credentials(registration.credentials)
    assert sealed == {"access_key": "ASIAEXAMPLE", "secret_key": "secret", "session_token": "token"}
    assert integrations.opened_credentials(sealed) == registration.credentials
    old = integrations.opened_credentials({"access_key": "AKIA", "secret_key": "s"})
    assert old == Credentials("AKIA", "s", None)
    assert "secret" not in repr(registration) and "token" not in repr(old)
    with pytest.raises(Refused, match="session_token"):
        integrations.parse_registration({**body, "session_token": "x" * 10_000})
    with pytest.raises(Refused, match="session_token"):
        integrations.parse_registration({**body, "session_token": 5})


def test_a_role_instead_of_keys() -> None:
    body = {"name": "by role", "provider": "s3", "bucket": "b-1"}
    arn = "arn:aws:iam::123456789012:role/files-importer"
    registration = integrations.parse_registration({**body, "role_arn": arn})
    assert registration.credentials == integrations.WebIdentity(arn)
    sealed = integrations.sealed_credentials(registration.credentials)
    assert integrations.opened_credentials(sealed) == registration.credentials
    with pytest.raises(Refused, match="access_key: is not given with role_arn"):
        integrations.parse_registration({**body, "role_arn": arn, "access_key": "AKIA"})
    with pytest.raises(Refused, match="role_arn: is not a role"):
        integrations.parse_registration({**body, "role_arn": "arn:aws:iam::1:user/x"})
    with pytest.raises(Refused, match="access_key: is required"):
        integrations.parse_registration(body)


def test_endpoint_host_is_compared_as_written() -> None:
    assert protocol.is_aws(Endpoint("s3.amazonaws.com", True))
    assert not protocol.is_aws(Endpoint("s3.amazonaws.com.evil.example", True))
