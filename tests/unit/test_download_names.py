"""The name a file's content is downloaded as, and its Content-Disposition (RFC 6266)."""

from services.gateway.compose import content_disposition, download_name
from shared.contracts import rules


def test_a_group_or_series_takes_the_extension_an_os_opens_it_by() -> None:
    def named(name: str, kind: str, mime_type: str) -> str:
        return download_name({"name": name, "kind": kind, "mime_type": mime_type})

    assert named("cats", "image_group", "image/png") == "cats.png"
    assert named("walk.v2", "image_sequence", "image/jpeg") == "walk.v2.jpg"
    assert named("shot.JPEG", "image_group", "image/jpeg") == "shot.JPEG"
    assert named("CT series 1.2.5", "dicom_series", "application/dicom") == "CT series 1.2.5.dcm"
    assert named("notes", "text", "text/plain") == "notes"
    assert named("cats", "image_group", "image/x-unknown") == "cats"
    # Within a name's length (ingest's presign takes at most that): a long name gives way.
    long = named("x" * rules.MAX_NAME, "image_group", "image/png")
    assert len(long) == rules.MAX_NAME and long.endswith("x.png")


def test_a_hostile_name_cannot_break_the_header() -> None:
    said = content_disposition('q"uo\\te;\r\nSet-Cookie: x=1 é.png')
    assert "\r" not in said and "\n" not in said
    assert said == (
        'attachment; filename="q_uo_te;__Set-Cookie: x=1 _.png";'
        " filename*=UTF-8''q%22uo%5Cte%3B%0D%0ASet-Cookie%3A%20x%3D1%20%C3%A9.png"
    )
