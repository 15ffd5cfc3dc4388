"""Adding data: "New folder", and "Upload files" with its tabs Upload (files and whole
folders, per-file and total progress, each refused file with the API's message, large
files through upload sessions resumed after a dropped connection), "Batch images as",
"DICOM" (the job's progress, missing tags named) and "Import from private cloud"."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import items, make_folder, unique, upload_dialog, uploading
from tests.cloud_fixtures import MotoS3, start_moto
from tests.dicom_fixtures import ct_series
from tests.e2e.support import ELF, png, text


def test_new_folder_at_the_top_and_inside_and_no_file_at_the_top(
    signed_in: Page, api: httpx.Client
) -> None:
    page = signed_in
    name = unique("made")
    page.get_by_role("button", name="New folder").click()
    dialog = page.get_by_role("dialog", name="New folder")
    dialog.get_by_label("Name").fill(name)
    dialog.get_by_label("Description").fill("made in the browser")
    dialog.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()
    [made] = [
        f
        for f in api.get("/v1/folders", params={"limit": 1000}).json()["items"]
        if f["name"] == name
    ]
    assert made["description"] == "made in the browser" and made["parent_id"] is None
    expect(page).to_have_url(f"/folders/{made['id']}")

    # A subfolder from the tree's right-click menu.
    page.get_by_role("tree").get_by_role("treeitem", name=name).locator(".tree-row").click(
        button="right"
    )
    page.get_by_role("menu").get_by_role("menuitem", name="New folder").click()
    page.get_by_role("dialog", name="New folder").get_by_label("Name").fill("inner")
    page.get_by_role("dialog", name="New folder").get_by_role("button", name="Create").click()
    expect(page.get_by_role("row", name="inner")).to_be_visible()
    assert [i["name"] for i in items(api, made["id"])] == ["inner"]

    # At the top level, "Upload files" asks for a folder: nothing goes to the root.
    page.goto("/")
    page.get_by_role("button", name="Upload files").click()
    dialog = page.get_by_role("dialog", name="Upload files")
    expect(dialog.get_by_role("button", name="Upload", exact=True)).to_be_disabled()
    expect(dialog.get_by_label("Upload to folder")).to_have_value("")


def test_upload_files_and_a_folder_with_progress_and_refusals(
    admin_page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    page = admin_page
    folder = make_folder(api, unique("up"))
    (tmp_path / "cat.png").write_bytes(png(20, 10))
    (tmp_path / "virus.exe").write_bytes(ELF)
    tree = tmp_path / "batch"
    (tree / "inner").mkdir(parents=True)
    (tree / "a.txt").write_bytes(text("a\n"))
    (tree / "inner" / "b.txt").write_bytes(text("b\n"))

    dialog = upload_dialog(page, folder["id"])
    expect(dialog.get_by_role("tab", name="Upload")).to_have_attribute("aria-selected", "true")
    for tab in ("Batch images as", "DICOM", "Import from private cloud"):
        expect(dialog.get_by_role("tab", name=tab)).to_be_visible()
    dialog.get_by_label("Files", exact=True).set_input_files(
        [tmp_path / "cat.png", tmp_path / "virus.exe"]
    )
    dialog.get_by_label("Whole folder").set_input_files(tree)
    listed = dialog.get_by_role("list", name="Files to upload")
    expect(listed.get_by_role("listitem")).to_have_count(4)
    dialog.get_by_role("button", name="Upload", exact=True).click()
    expect(listed.get_by_role("listitem", name="cat.png")).to_contain_text("Uploaded")
    expect(listed.get_by_role("listitem", name="batch/inner/b.txt")).to_contain_text("Uploaded")
    refused = listed.get_by_role("listitem", name="virus.exe")
    expect(refused).to_contain_text("virus.exe")
    expect(refused).not_to_contain_text("Uploaded")
    expect(dialog.get_by_role("progressbar", name="Progress of cat.png")).to_have_attribute(
        "value", str(len(png(20, 10)))
    )
    expect(dialog.get_by_role("progressbar", name="Total progress")).to_be_visible()

    top = {i["name"]: i for i in items(api, folder["id"])}
    assert set(top) == {"cat.png", "batch"}
    assert top["cat.png"]["kind"] == "image"
    batch = {i["name"]: i for i in items(api, top["batch"]["id"])}
    assert set(batch) == {"a.txt", "inner"}
    assert [i["name"] for i in items(api, batch["inner"]["id"])] == ["b.txt"]
    dialog.get_by_role("button", name="Close").first.click()
    expect(page.get_by_role("row", name="cat.png")).to_be_visible()


def test_a_large_file_goes_in_parts_and_resumes_after_a_dropped_connection(
    admin_page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    page = admin_page
    folder = make_folder(api, unique("large"))
    size = 12 * 1024 * 1024  # two parts, of 8 MiB and 4 MiB
    big = tmp_path / "big.bin.txt"
    big.write_bytes(b"x" * size)
    dropped: list[str] = []

    def drop_the_first_try(route: Route) -> None:
        if route.request.method == "PUT" and not dropped:
            dropped.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/v1/uploads/*/parts/*", drop_the_first_try)
    dialog, _ = uploading(page, folder["id"], big)
    expect(dialog.get_by_role("listitem", name="big.bin.txt")).to_contain_text(
        "Uploaded", timeout=30_000
    )
    assert dropped, "the first part's connection was dropped"
    [stored] = items(api, folder["id"])
    assert stored["name"] == "big.bin.txt" and stored["size"] == size
    assert stored["kind"] == "text"
    content = api.get(f"/v1/files/{stored['id']}/content")
    assert content.content == b"x" * size


def test_batch_images_as_an_image_sequence(
    admin_page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    page = admin_page
    folder = make_folder(api, unique("batch"))
    frames = []
    for n in range(3):
        path = tmp_path / f"frame{n}.png"
        path.write_bytes(png(12, 8))
        frames.append(path)
    dialog = upload_dialog(page, folder["id"], tab="Batch images as")
    dialog.get_by_label("Image sequence").check()
    dialog.get_by_label("Name").fill("walk")
    dialog.get_by_label("Files", exact=True).set_input_files(frames)
    dialog.get_by_role("button", name="Upload and batch images").click()
    expect(page.get_by_role("status")).to_contain_text("Image sequence walk created")
    listed = {i["name"]: i for i in items(api, folder["id"])}
    assert listed["walk"]["kind"] == "image_sequence"
    assert len(listed["walk"]["group"]["file_ids"]) == 3
    assert "walk (images)" in listed


def test_dicom_upload_shows_the_job_and_names_missing_tags(
    admin_page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    page = admin_page
    folder = make_folder(api, unique("dicom"))
    paths = []
    for n, data in enumerate(ct_series(3)):
        path = tmp_path / f"slice{n}.dcm"
        path.write_bytes(data)
        paths.append(path)
    [broken] = ct_series(1, series=7, omit=("PatientID",))
    (tmp_path / "nopatient.dcm").write_bytes(broken)
    paths.append(tmp_path / "nopatient.dcm")
    dialog, rows = uploading(page, folder["id"], paths, tab="DICOM")
    job = dialog.get_by_role("region", name="DICOM progress")
    expect(job).to_contain_text("4 of 4 done", timeout=30_000)
    expect(job.get_by_role("list", name="Refused")).to_contain_text("nopatient.dcm")
    expect(job.get_by_role("list", name="Refused")).to_contain_text("PatientID")
    # Each file's row says what became of it, the refusal once, beside its bar (not on it).
    refused = rows.get_by_role("listitem", name="nopatient.dcm")
    expect(refused).not_to_contain_text("Uploaded")
    expect(refused).to_contain_text("PatientID")
    assert refused.inner_text().count("PatientID") == 1
    expect(rows.get_by_role("listitem", name="slice0.dcm")).to_contain_text("Uploaded")
    bar = refused.get_by_role("progressbar").bounding_box()
    status = refused.locator(".status").bounding_box()
    assert bar and status and bar["x"] + bar["width"] <= status["x"]
    [series] = items(api, folder["id"])
    assert series["kind"] == "dicom_series" and series["dicom"]["instances"] == 3


def test_a_dicom_refusal_marks_only_the_rows_of_its_name_and_says_when_it_cannot_tell(
    admin_page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    """The job names a refused file by its own name, not its folder: of two files named
    alike in two subfolders, it cannot say which; rows of other names are not marked."""
    page = admin_page
    folder = make_folder(api, unique("dicom-tree"))
    tree = tmp_path / "scans"
    for sub in ("good", "bad"):
        (tree / sub).mkdir(parents=True)
    first, second = ct_series(2)
    (tree / "good" / "slice.dcm").write_bytes(first)
    (tree / "bad" / "other.dcm").write_bytes(second)
    [broken] = ct_series(1, series=7, omit=("PatientID",))
    (tree / "bad" / "slice.dcm").write_bytes(broken)
    dialog = upload_dialog(page, folder["id"], tab="DICOM")
    dialog.get_by_label("Whole folder").set_input_files(tree)
    rows = dialog.get_by_role("list", name="Files to upload")
    expect(rows.get_by_role("listitem")).to_have_count(3)
    dialog.get_by_role("button", name="Upload", exact=True).click()
    expect(dialog.get_by_role("region", name="DICOM progress")).to_contain_text(
        "3 of 3 done", timeout=30_000
    )
    unsure = "1 of the 2 files named slice.dcm was refused, which is not known"
    for path in ("scans/good/slice.dcm", "scans/bad/slice.dcm"):
        row = rows.get_by_role("listitem", name=path)
        expect(row).to_contain_text(unsure)
        expect(row).to_contain_text("PatientID")
    expect(rows.get_by_role("listitem", name="scans/bad/other.dcm")).to_contain_text("Uploaded")
    [series] = items(api, folder["id"])
    assert series["dicom"]["instances"] == 2


BUCKET = "customer-browser"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    server = start_moto(tmp_path_factory.mktemp("customer") / "moto.log")
    try:
        s3 = server.minio()
        s3.make_bucket(BUCKET)
        for n in range(3):
            data = png(5 + n, 5)
            s3.put_object(BUCKET, f"cats/{n}.png", io.BytesIO(data), len(data))
        yield server
    finally:
        server.stop()


def test_import_from_private_cloud_by_prefix(
    admin_page: Page, api: httpx.Client, moto: MotoS3
) -> None:
    page = admin_page
    integration = api.post(
        "/v1/integrations",
        json={
            "name": unique("lab"),
            "provider": "s3",
            "endpoint": moto.endpoint,
            "region": "us-east-1",
            "bucket": BUCKET,
            "access_key": moto.access_key,
            "secret_key": moto.secret_key,
        },
    )
    assert integration.status_code == 201, integration.text
    folder = make_folder(api, unique("imported"))
    dialog = upload_dialog(page, folder["id"], tab="Import from private cloud")
    dialog.get_by_label("Integration").select_option(integration.json()["id"])
    dialog.get_by_label("Prefix").fill("cats/")
    dialog.get_by_role("button", name="Import").click()
    job = dialog.get_by_role("region", name="Import progress")
    expect(job).to_contain_text("status done", timeout=30_000)
    expect(job).to_contain_text("3 files")
    found = items(api, folder["id"])
    assert sorted(i["name"] for i in found) == ["0.png", "1.png", "2.png"]
    assert all(i["source"]["type"] == "cloud" for i in found)
    # Imported pictures show in the grid as uploaded ones do (read from the bucket).
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Grid").click()
    page.wait_for_function(
        """ids => ids.every(id => {
            const img = document.querySelector(`[id="item-${id}"] img`);
            return img && img.complete && img.naturalWidth > 0;
        })""",
        arg=[i["id"] for i in found],
        timeout=60_000,
    )
