"""DICOMweb's Accept at the gateway: what viewers send is admitted, what no answer of
ours can be is 406 (services/gateway/dicomweb.py `admits`)."""

from __future__ import annotations

import pytest

from services.gateway.dicomweb import admits

INSTANCES = 'multipart/related; type="application/dicom"; boundary=b1'
RAW_FRAMES = 'multipart/related; type="application/octet-stream"; boundary=b2'
JPEG_FRAMES = 'multipart/related; type="image/jpeg"; boundary=b3'
JSON = "application/dicom+json"
PNG = "image/png"
# What OHIF's image loader (Cornerstone) asks every frame with.
OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@pytest.mark.parametrize(
    ("accept", "given"),
    [
        ("", INSTANCES),
        ("*/*", JPEG_FRAMES),
        ('multipart/related; type="application/dicom"; transfer-syntax=*', INSTANCES),
        (OHIF_FRAMES, RAW_FRAMES),
        (OHIF_FRAMES, JPEG_FRAMES),
        ('multipart/related; type="image/jpeg"', JPEG_FRAMES),
        (JSON, JSON),
        ("application/json", JSON),
        ("image/jpeg", PNG),
        ("image/*", PNG),
        ("text/html, */*;q=0.1", JSON),
        ("*/*;q=0, image/png", PNG),
        ('multipart/related; type="image/jpeg"; q=0, */*', RAW_FRAMES),
        ("image/jpeg;q=0, */*", PNG),
        ("image/*;q=0, image/png", PNG),
    ],
)
def test_what_viewers_ask_is_admitted(accept: str, given: str) -> None:
    assert admits(accept, given)


@pytest.mark.parametrize(
    ("accept", "given"),
    [
        ("application/x-evil", INSTANCES),
        ("application/x-evil", JSON),
        ('multipart/related; type="image/jpeg"', RAW_FRAMES),
        ('multipart/related; type="application/dicom"', RAW_FRAMES),
        ("image/png;q=0", PNG),
        ("image/png;q=0, */*", PNG),
        ("image/*;q=0, */*", PNG),
        ("application/json;q=0, */*", JSON),
        ("image/jpeg, image/png;q=0", PNG),
        (f"{JSON};q=0.0, */*;q=0.5", JSON),
        ('multipart/related; type="image/jpeg"; q=0, */*', JPEG_FRAMES),
        ("text/html", PNG),
        ("application/json", INSTANCES),
    ],
)
def test_what_no_answer_of_ours_is_gets_a_406(accept: str, given: str) -> None:
    assert not admits(accept, given)
