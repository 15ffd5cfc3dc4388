"""Files dragged from the desktop: dropped on a folder's page, they go to "+ Upload
files" for that folder, listed to be sent (in the seed's words, "Drag and drop local
images and / or videos"); dropped where nothing takes them, the browser does not leave
the app to open them (an upload under way would go with it)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.sync_api import JSHandle, Page, Route, expect

from tests.browser.conftest import items, make_folder, sign_in, unique
from tests.browser.test_roles_and_rename import _member
from tests.dicom_fixtures import ct_series
from tests.e2e.support import text


def _files(page: Page, names: list[str]) -> JSHandle:
    """A drag's data holding these text files, as a desktop's drag brings them."""
    return page.evaluate_handle(
        """(names) => {
            const dt = new DataTransfer();
            for (const n of names) dt.items.add(new File([n + "\\n"], n, { type: "text/plain" }));
            return dt;
        }""",
        names,
    )


def test_files_dropped_on_a_folders_page_are_uploaded_into_it(
    signed_in: Page, api: httpx.Client
) -> None:
    page = signed_in
    folder = make_folder(api, unique("dropped-on"))
    names = ["one.txt", "two.txt"]
    page.goto(f"/folders/{folder['id']}")
    content = page.get_by_role("region", name=folder["name"])
    expect(content.get_by_text("This folder is empty.")).to_be_visible()
    dragged = _files(page, names)
    content.dispatch_event("dragover", {"dataTransfer": dragged})
    content.dispatch_event("drop", {"dataTransfer": dragged})
    dialog = page.get_by_role("dialog", name="Upload files")
    listed = dialog.get_by_role("list", name="Files to upload")
    expect(listed.get_by_role("listitem")).to_have_count(2)
    dialog.get_by_role("button", name="Upload", exact=True).click()
    for n in names:
        expect(listed.get_by_role("listitem", name=n)).to_contain_text("Uploaded")
    assert sorted(i["name"] for i in items(api, folder["id"])) == names

    # Beside the dialog's drop zone (the page under it), a drop is taken by nothing:
    # refused, not the browser's to open.
    left_alone = page.evaluate(
        """(dt) => {
            const init = { dataTransfer: dt, bubbles: true, cancelable: true };
            const drop = new DragEvent("drop", init);
            document.querySelector("h1").dispatchEvent(drop);
            return drop.defaultPrevented;
        }""",
        dragged,
    )
    assert left_alone is True
    # A file field takes a file dropped on it itself (the import's manifest): not refused.
    field_takes_it = page.evaluate(
        """(dt) => {
            const field = document.createElement("input");
            field.type = "file";
            document.querySelector("dialog").append(field);
            const init = { dataTransfer: dt, bubbles: true, cancelable: true };
            const over = new DragEvent("dragover", init);
            field.dispatchEvent(over);
            field.remove();
            return !over.defaultPrevented;
        }""",
        dragged,
    )
    assert field_takes_it is True


def test_files_dropped_where_one_may_not_upload_are_refused_in_words(
    page: Page, api: httpx.Client
) -> None:
    folder = make_folder(api, unique("looked-at"))
    viewer = _member(api, folder["id"], "user")
    sign_in(page, viewer["api_key"])
    page.goto(f"/folders/{folder['id']}")
    content = page.get_by_role("region", name=folder["name"])
    expect(content.get_by_text("You can view this folder, not change it.")).to_be_visible()
    dragged = _files(page, ["nope.txt"])
    content.dispatch_event("dragover", {"dataTransfer": dragged})
    content.dispatch_event("drop", {"dataTransfer": dragged})
    notice = page.locator(".notices").get_by_role("status")
    expect(notice).to_contain_text("You can view this folder, not change it.")
    expect(page.get_by_role("dialog", name="Upload files")).to_have_count(0)
    assert items(api, folder["id"]) == []


def test_the_upload_dialogs_close_says_why_it_waits_while_files_are_sent(
    signed_in: Page, api: httpx.Client
) -> None:
    """While files are sent, its corner's "Close" did nothing when pressed: it is shown
    disabled, as its other "Close" is, titled with why."""
    page = signed_in
    folder = make_folder(api, unique("held-up"))
    held: list[Route] = []

    def hold(route: Route) -> None:  # a function: Playwright takes no bound built-in
        held.append(route)

    page.route(f"**/v1/folders/{folder['id']}/files", hold)
    page.goto(f"/folders/{folder['id']}")
    content = page.get_by_role("region", name=folder["name"])
    expect(content.get_by_text("This folder is empty.")).to_be_visible()
    dragged = _files(page, ["slow.txt"])
    content.dispatch_event("dragover", {"dataTransfer": dragged})
    content.dispatch_event("drop", {"dataTransfer": dragged})
    dialog = page.get_by_role("dialog", name="Upload files")
    dialog.get_by_role("button", name="Upload", exact=True).click()
    for close in dialog.get_by_role("button", name="Close").all():
        expect(close).to_be_disabled()
        expect(close).to_have_attribute("title", re.compile("Sending the files"))
    assert held, "the upload was not sent"
    for route in held:
        route.continue_()
    listed = dialog.get_by_role("list", name="Files to upload")
    expect(listed.get_by_role("listitem", name="slow.txt")).to_contain_text("Uploaded")
    dialog.get_by_role("button", name="Close").last.click()
    expect(dialog).to_be_hidden()
    page.unroute_all()


def test_dicom_files_in_upload_are_offered_to_the_dicom_tab(
    signed_in: Page, api: httpx.Client, tmp_path: Path
) -> None:
    """A DICOM file chosen in "Upload" was sent and refused in the API's words (its
    route, `POST /v1/folders/{id}/dicom`): it is set aside in the app's, and offered to
    the "DICOM" tab, where its series is made. DICOM files alone, dropped on a folder's
    page, open that tab."""
    page = signed_in
    folder = make_folder(api, unique("scans"))
    [instance] = ct_series(1, series=11)
    (tmp_path / "slice.dcm").write_bytes(instance)
    (tmp_path / "notes.txt").write_bytes(text("a scan\n"))
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="Upload files").click()
    dialog = page.get_by_role("dialog", name="Upload files")
    dialog.get_by_label("Files", exact=True).set_input_files(
        [tmp_path / "slice.dcm", tmp_path / "notes.txt"]
    )
    dialog.get_by_role("button", name="Upload", exact=True).click()
    rows = dialog.get_by_role("list", name="Files to upload")
    expect(rows.get_by_role("listitem", name="notes.txt")).to_contain_text("Uploaded")
    set_aside = rows.get_by_role("listitem", name="slice.dcm")
    expect(set_aside).to_contain_text("Its series is made in the “DICOM” tab.")
    expect(set_aside).not_to_contain_text("/v1/")
    dialog.get_by_role("button", name="Upload the DICOM file in the DICOM tab").click()
    expect(dialog.get_by_role("tab", name="DICOM")).to_have_attribute("aria-selected", "true")
    expect(rows.get_by_role("listitem")).to_have_count(1)
    dialog.get_by_role("button", name="Upload", exact=True).click()
    job = dialog.get_by_role("region", name="DICOM progress")
    expect(job).to_contain_text("1 of 1 done", timeout=30_000)
    kinds = sorted(i["kind"] for i in items(api, folder["id"]))
    assert kinds == ["dicom_series", "text"]
    dialog.get_by_role("button", name="Close").last.click()
    expect(dialog).to_be_hidden()

    dragged = page.evaluate_handle(
        """(bytes) => {
            const dt = new DataTransfer();
            const data = new Uint8Array(bytes);
            dt.items.add(new File([data], "again.dcm", { type: "application/dicom" }));
            return dt;
        }""",
        list(instance),
    )
    content = page.get_by_role("region", name=folder["name"])
    content.dispatch_event("dragover", {"dataTransfer": dragged})
    content.dispatch_event("drop", {"dataTransfer": dragged})
    expect(dialog.get_by_role("tab", name="DICOM")).to_have_attribute("aria-selected", "true")
    expect(rows.get_by_role("listitem", name="again.dcm")).to_be_visible()
