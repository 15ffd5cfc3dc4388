"""The DICOM context's memory of series it assembled: only the content the row names is
given back, and it holds a bounded number of instances."""

from __future__ import annotations

import uuid

from services.dicom.domain import Instance, assemble
from services.dicom.handlers import Part
from services.dicom.reader import read_instance
from services.dicom.recent import Recent, Remembered
from tests.dicom_fixtures import ct_series


def remembered(count: int, sha256: str, series: int = 1) -> Remembered:
    instances = [read_instance(data) for data in ct_series(count, series=series, rows=2, columns=2)]
    assert all(isinstance(i, Instance) for i in instances)
    (made,) = assemble(i for i in instances if isinstance(i, Instance))
    parts = {
        i.sop_uid: Part(f"{i.sop_uid}.dcm", f"sha256/{i.sop_uid}", "0" * 64, 1)
        for i in made.instances
    }
    return Remembered(sha256, made, parts)


def test_a_series_is_given_back_only_for_the_content_its_row_names() -> None:
    recent = Recent()
    file_id = uuid.uuid4()
    series = remembered(3, "a" * 64)
    recent.put(file_id, series)
    assert recent.get(file_id, "a" * 64) is series
    # Another process (or a transaction that did not commit here) changed it: read again.
    assert recent.get(file_id, "b" * 64) is None
    assert recent.get(file_id, None) is None  # a row from before the column
    assert recent.get(uuid.uuid4(), "a" * 64) is None


def test_it_forgets_the_least_recently_used_beyond_its_bound() -> None:
    recent = Recent(max_instances=10)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    recent.put(first, remembered(4, "1" * 64, series=1))
    recent.put(second, remembered(4, "2" * 64, series=2))
    assert recent.get(first, "1" * 64) is not None  # now the most recent
    recent.put(third, remembered(4, "3" * 64, series=3))
    assert recent.get(second, "2" * 64) is None
    assert recent.get(first, "1" * 64) is not None and recent.get(third, "3" * 64) is not None
    assert recent.held == 8
    recent.put(uuid.uuid4(), remembered(11, "4" * 64, series=4))  # larger than the bound
    assert recent.held == 8
