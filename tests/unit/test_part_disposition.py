"""A part's Content-Disposition: the quick match for the plain form must read every
header exactly as python-multipart's general parse does, or fall through to it."""

import random

import pytest
from python_multipart.multipart import parse_options_header

from services.ingest.uploads.multipart import disposition

TRICKY = [
    b'form-data; name="file"; filename="scan.png"',
    b'form-data; name="file"; filename=""',
    b'form-data; name="file"',
    b'form-data; name="metadata"',
    b'form-data; name="file"; filename="C:\\\\Users\\\\me\\\\x.png"',
    b'form-data; name="file"; filename="a\\"b.png"',
    b'form-data; name="file"; filename="a;b.png"',
    b'form-data; name="file"; filename="caf\xc3\xa9 \xe2\x80\x8b.png"',
    b"form-data; name=file; filename=plain.png",
    b"form-data; name=\"file\"; filename*=UTF-8''%E2%82%AC.png",
    b'form-data; name="file"; filename="x.png"; filename="y.png"',
    b'FORM-DATA; NAME="file"; FILENAME="upper.png"',
    b'form-data;name="file";filename="tight.png"',
    b'form-data; name="file"; filename="../../etc/passwd"',
    b'form-data; name="file"; filename="x.png" ',
    b"",
]


def general(value: bytes) -> tuple[bytes, bytes | None]:
    _, options = parse_options_header(value)
    return options.get(b"name", b""), options.get(b"filename")


@pytest.mark.parametrize("value", TRICKY)
def test_a_tricky_disposition_reads_as_python_multipart_reads_it(value: bytes) -> None:
    assert disposition(value) == general(value)


def test_random_dispositions_read_as_python_multipart_reads_them() -> None:
    alphabet = b'ab.-_ /\\";=*%\xc3\xa9\x00'
    rng = random.Random(19)
    for _ in range(20_000):
        name = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        filename = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        value = b'form-data; name="' + name + b'"'
        if rng.random() < 0.8:
            value += b'; filename="' + filename + b'"'
        assert disposition(value) == general(value), value
