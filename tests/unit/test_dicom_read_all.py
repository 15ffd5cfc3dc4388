"""A batch's stored blobs read in groups: every result in its blob's place, a blob that
cannot be read rejected alone."""

from __future__ import annotations

from pathlib import Path

from services.dicom import handlers
from services.dicom.domain import Instance, Rejected
from shared.kit.blobs.local import LocalBlobStore
from tests.dicom_fixtures import ct_slice, uid


async def test_each_blob_gets_its_own_result_in_order(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    keys = []
    for n in range(2 * handlers.READ_TOGETHER + 3):
        key = f"blobs/{n:04d}"
        if n % 7 == 3:
            key = f"blobs/absent-{n}"  # never stored
        elif n % 7 == 5:
            await blobs.put(key, b"not dicom at all")
        else:
            await blobs.put(key, ct_slice(sop_uid=uid(5, n)))
        keys.append(key)
    keys.append("incoming/reserved")  # a key the store refuses (KeyError)

    found = await handlers.read_all(blobs, keys)

    assert len(found) == len(keys)
    for n, (key, result) in enumerate(zip(keys, found, strict=True)):
        if "absent" in key or key.startswith("incoming/"):
            assert isinstance(result, Rejected) and result.code == "unreadable", key
        elif n % 7 == 5:
            assert isinstance(result, Rejected) and result.code == "not_dicom", key
        else:
            assert isinstance(result, Instance) and result.sop_uid == uid(5, n), key


async def test_an_empty_and_a_one_blob_batch(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    await blobs.put("blobs/one", ct_slice(sop_uid=uid(6, 1)))
    assert await handlers.read_all(blobs, []) == []
    [found] = await handlers.read_all(blobs, ["blobs/one"])
    assert isinstance(found, Instance) and found.sop_uid == uid(6, 1)
