"""Compressed DICOM transfer syntaxes: stored, their headers read, their slices drawn.
Only the DICOM context's decoding is under test, so this runs on one blob store."""

from __future__ import annotations

import httpx

from shared.kit.stack import Stack
from tests.dicom_fixtures import ct_dataset, uid
from tests.e2e.support import decoding_workers, folder, holds_no_secret, unique
from tests.e2e.test_dicom import finished, fresh_study, send


def compressed_series(syntax: str) -> list[tuple[str, bytes]]:
    """Three CT slices of one new series in a compressed transfer syntax: slice k is
    uniformly k * 1000 (JPEG baseline, 8 bits: k * 64), windowed so that slice 1 shows as
    grey 64."""
    import io

    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

    study = fresh_study()
    out = []
    for k, position in enumerate([(0.0, 0.0, z * 1.25) for z in range(3)]):
        ds = ct_dataset(
            sop_uid=uid(study, 1, k + 1),
            series_uid=uid(study, 1),
            study_uid=uid(study),
            position=position,
            instance_number=k + 1,
            rows=32,
            columns=32,
            pixel_data=np.full((32, 32), k * 1000, np.uint16).tobytes(),
            overrides={"WindowCenter": "2000", "WindowWidth": "4000"},
        )
        if syntax == "rle":
            ds.compress(RLELossless)
        else:
            frame = io.BytesIO()
            if syntax == "jpeg":
                ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
                ds.WindowCenter, ds.WindowWidth = "128", "256"
                Image.fromarray(np.full((32, 32), k * 64, np.uint8)).save(frame, "JPEG")
                ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
            else:
                picture = Image.fromarray(np.full((32, 32), k * 1000, np.uint16))
                picture.save(frame, "JPEG2000", irreversible=False, no_jp2=True)
                ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
            ds.PixelData = encapsulate([frame.getvalue()])
            ds["PixelData"].VR = "OB"
        data = io.BytesIO()
        pydicom.dcmwrite(data, ds, enforce_file_format=True)
        out.append((f"{syntax}-{k}.dcm", data.getvalue()))
    return out


async def test_compressed_transfer_syntaxes_are_stored_read_and_rendered(
    api: httpx.AsyncClient, platform: Stack
) -> None:
    """RLE lossless, JPEG baseline and JPEG 2000 lossless: each series is accepted whole
    and its slices render (pydicom's RLE decoder, Pillow's JPEG and OpenJPEG)."""
    import io

    import numpy as np
    from PIL import Image

    top = await folder(api, unique("compressed"))
    for syntax in ("rle", "jpeg", "j2k"):
        job = await finished(api, await send(api, top["id"], *compressed_series(syntax)))
        assert job["errors"] == [], (syntax, job["errors"])
        [series] = job["files"]
        assert series["dicom"]["instances"] == 3, series
        shown = await api.get(f"/v1/files/{series['id']}/slices/1")
        assert shown.status_code == 200, (syntax, shown.text)
        grey = float(np.asarray(Image.open(io.BytesIO(shown.content)).convert("L")).mean())
        assert abs(grey - 64) < 12, (syntax, grey)
    # Decoded in a worker holding none of the platform's secrets.
    renderers = decoding_workers(platform, "dicom", "services.dicom.renderer")
    assert renderers and all(holds_no_secret(platform, env) for env in renderers), renderers
