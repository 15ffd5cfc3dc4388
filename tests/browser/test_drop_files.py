"""Files dragged from the desktop: dropped on a folder's page, they go to "+ Upload
files" for that folder, listed to be sent (in the seed's words, "Drag and drop local
images and / or videos"); dropped where nothing takes them, the browser does not leave
the app to open them (an upload under way would go with it)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.sync_api import JSHandle, Page, Route, expect

from tests.browser.conftest import items, make_folder, sign_in, unique, uploading
from tests.browser.test_roles_and_rename import _member
from tests.dicom_fixtures import ct_series
from tests.e2e.support import text


def _files(page: Page, names: list[str], pad: int = 0) -> JSHandle:
    """A drag's data holding these text files, as a desktop's drag brings them (`pad`
    spaces more in each: from 132 bytes, a file's start is read to tell DICOM)."""
    return page.evaluate_handle(
        """([names, pad]) => {
            const dt = new DataTransfer();
            for (const n of names)
                dt.items.add(new File([n + "\\n" + " ".repeat(pad)], n, { type: "text/plain" }));
            return dt;
        }""",
        [names, pad],
    )


def _hold_reads(page: Page) -> None:
    """Reads of the files' bytes wait for `_release(page)`: the page as it is while a
    drop of many files, or large ones, is read."""
    page.evaluate(
        """() => {
            const original = Blob.prototype.arrayBuffer;
            let release;
            const held = new Promise((r) => (release = r));
            window.__release = (error) => {
                Blob.prototype.arrayBuffer = original;
                release(error);
            };
            Blob.prototype.arrayBuffer = function () {
                return held.then((error) =>
                    error ? Promise.reject(new Error(error)) : original.call(this));
            };
        }"""
    )


def _release(page: Page, error: str | None = None) -> None:
    """The held reads go on, or fail with `error`."""
    page.evaluate("(error) => window.__release(error)", error)


def _drop(page: Page, region: str, dragged: JSHandle) -> None:
    content = page.get_by_role("region", name=region)
    content.dispatch_event("dragover", {"dataTransfer": dragged})
    content.dispatch_event("drop", {"dataTransfer": dragged})


def test_files_dropped_on_a_folders_page_are_uploaded_into_it(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
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
    admin_page: Page, api: httpx.Client
) -> None:
    """While files are sent, its corner's "Close" did nothing when pressed: it is shown
    disabled, as its other "Close" is, titled with why."""
    page = admin_page
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
    admin_page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    """A DICOM file chosen in "Upload" was sent and refused in the API's words (its
    route, `POST /v1/folders/{id}/dicom`): it is set aside in the app's, and offered to
    the "DICOM" tab, where its series is made. DICOM files alone, dropped on a folder's
    page, open that tab."""
    page = admin_page
    folder = make_folder(api, unique("scans"))
    [instance] = ct_series(1, series=11)
    (tmp_path / "slice.dcm").write_bytes(instance)
    (tmp_path / "notes.txt").write_bytes(text("a scan\n"))
    dialog, rows = uploading(page, folder["id"], [tmp_path / "slice.dcm", tmp_path / "notes.txt"])
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


def test_files_dropped_go_nowhere_once_another_folder_is_shown(
    admin_page: Page, api: httpx.Client
) -> None:
    """The files are read before "Upload files" opens (said on the page); another
    folder opened meanwhile, they are not added (the dialog was opened over it, sending
    them to the first, named nowhere), and the notices say so."""
    page = admin_page
    first, other = make_folder(api, unique("dropped-on")), make_folder(api, unique("opened"))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"/folders/{first['id']}")
    content = page.get_by_role("region", name=first["name"])
    expect(content.get_by_text("This folder is empty.")).to_be_visible()
    _hold_reads(page)
    _drop(page, first["name"], _files(page, ["late.txt"], pad=200))
    expect(content.get_by_role("status")).to_have_text("Reading 1 file…")
    page.evaluate(
        """(to) => {
            history.pushState(null, "", to);
            dispatchEvent(new PopStateEvent("popstate"));
        }""",
        f"/folders/{other['id']}",
    )
    expect(page.get_by_role("heading", name=other["name"], level=1)).to_be_visible()
    _release(page)
    expect(page.locator(".notices").get_by_role("alert")).to_contain_text(
        f"The files dropped on “{first['name']}” were not added: another page was opened"
    )
    expect(page.get_by_role("dialog", name="Upload files")).to_have_count(0)
    assert errors == []


def test_a_drop_while_one_is_read_is_refused_in_words_and_the_dialog_names_the_folder(
    admin_page: Page, api: httpx.Client
) -> None:
    """A second drop while the first is read was lost without a word; a read that
    fails was an error in the console only."""
    page = admin_page
    folder = make_folder(api, unique("twice"))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"/folders/{folder['id']}")
    content = page.get_by_role("region", name=folder["name"])
    expect(content.get_by_text("This folder is empty.")).to_be_visible()
    _hold_reads(page)
    _drop(page, folder["name"], _files(page, ["first.txt"], pad=200))
    _drop(page, folder["name"], _files(page, ["second.txt"], pad=200))
    alert = page.locator(".notices").get_by_role("alert")
    expect(alert).to_contain_text("These files were not added: the files dropped before")
    _release(page)
    dialog = page.get_by_role("dialog", name="Upload files")
    expect(dialog).to_contain_text(f"Into folder {folder['name']}")
    listed = dialog.get_by_role("list", name="Files to upload")
    expect(listed.get_by_role("listitem")).to_have_count(1)
    expect(listed.get_by_role("listitem", name="first.txt")).to_be_visible()
    expect(content.get_by_role("status")).to_have_count(0)
    dialog.get_by_role("button", name="Close").last.click()
    expect(dialog).to_be_hidden()

    _hold_reads(page)
    _drop(page, folder["name"], _files(page, ["unreadable.txt"], pad=200))
    _release(page, "the file went away")
    expect(alert).to_contain_text("The dropped files could not be read: the file went away")
    expect(dialog).to_have_count(0)
    expect(content.get_by_role("status")).to_have_count(0)
    assert errors == []
