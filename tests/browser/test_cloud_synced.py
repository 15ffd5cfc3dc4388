"""A folder that stays synced with a bucket prefix, made from "Import from private
cloud": its sync state, "Sync now" bringing an added object and taking a removed one
away, and a page that offers no upload nor new folder there and says why."""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from minio import Minio
from playwright.sync_api import Page, Request, Route, expect

from tests.browser.conftest import items, make_folder, sign_in, unique, upload
from tests.browser.test_dataset_page import until
from tests.browser.test_roles_and_rename import _member
from tests.cloud_fixtures import MotoS3, start_moto
from tests.e2e.support import png, text

BUCKET = "synced-browser"


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MotoS3, Minio]]:
    server = start_moto(tmp_path_factory.mktemp("synced") / "moto.log")
    try:
        s3 = server.minio()
        s3.make_bucket(BUCKET)
        yield server, s3
    finally:
        server.stop()


def put(s3: Minio, key: str, data: bytes) -> None:
    s3.put_object(BUCKET, key, io.BytesIO(data), len(data))


def register(api: httpx.Client, moto: MotoS3, bucket: str, name: str | None = None) -> str:
    answer = api.post(
        "/v1/integrations",
        json={
            "name": name or unique("lab"),
            "provider": "s3",
            "endpoint": moto.endpoint,
            "region": "us-east-1",
            "bucket": bucket,
            "access_key": moto.access_key,
            "secret_key": moto.secret_key,
        },
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def test_a_folder_synced_with_a_prefix_follows_it_from_the_app(
    signed_in: Page, api: httpx.Client, bucket: tuple[MotoS3, Minio]
) -> None:
    moto, s3 = bucket
    prefix = f"{unique('scans')}/"
    for n in range(2):
        put(s3, f"{prefix}{n}.png", png(6 + n, 6))
    integration_id = register(api, moto, BUCKET)
    page = signed_in
    name = unique("synced")
    page.get_by_role("button", name="Upload files").click()
    dialog = page.get_by_role("dialog", name="Upload files")
    dialog.get_by_role("tab", name="Import from private cloud").click()
    dialog.get_by_label("Integration").select_option(integration_id)
    dialog.get_by_label("Prefix").fill(prefix)
    dialog.get_by_role("switch", name="Keep a folder synced with the bucket").check()
    dialog.get_by_label("Synced folder name").fill(name)
    dialog.get_by_role("button", name="Create synced folder").click()

    heading = page.get_by_role("heading", name=name, level=1)
    expect(heading).to_be_visible()
    # The dialog closed with the page it made: the keyboard goes on from its heading.
    expect(heading).to_be_focused()
    folder_id = page.url.rsplit("/", 1)[1]
    panel = page.get_by_role("region", name="Cloud sync")
    expect(panel).to_contain_text(prefix)
    state = panel.get_by_role("status")
    expect(state).to_contain_text("Last synced", timeout=30_000)
    expect(state).to_contain_text("2 objects in the bucket prefix")
    listing = page.get_by_role("grid")
    for n in range(2):
        expect(listing.get_by_text(f"{n}.png", exact=True)).to_be_visible()
    # What the platform refuses in it is not offered, and the page says why.
    toolbar = page.get_by_role("toolbar", name="Folder actions")
    expect(toolbar.get_by_role("button", name="Upload files")).to_have_count(0)
    expect(toolbar.get_by_role("button", name="New folder")).to_have_count(0)
    expect(toolbar).to_contain_text(
        "Nothing can be uploaded, made or moved into a cloud-synced folder"
    )
    expect(panel).to_contain_text("put objects in the bucket, then sync")
    # The tree's menu shows its "Upload files" and "New folder" disabled, saying why
    # (each folder's answer says it is cloud-synced): they open nothing.
    tree_row = page.get_by_role("tree").get_by_role("treeitem", name=name).locator(".tree-row")
    tree_row.click(button="right")
    menu = page.get_by_role("menu", name=f"Actions for {name}")
    for item in ("Upload files", "New folder"):
        offered = menu.get_by_role("menuitem", name=item)
        expect(offered).to_have_attribute("aria-disabled", "true")
        expect(offered).to_have_attribute(
            "title", "Nothing can be uploaded, made or moved into a cloud-synced folder."
        )
        offered.click(force=True)
        expect(page.get_by_role("dialog")).to_have_count(0)
    page.keyboard.press("Escape")
    expect(menu).to_have_count(0)

    # An object added to the bucket comes with "Sync now"; a removed one goes.
    put(s3, f"{prefix}2.png", png(9, 6))
    s3.remove_object(BUCKET, f"{prefix}0.png")
    panel.get_by_role("button", name="Sync now").click()
    expect(listing.get_by_text("2.png", exact=True)).to_be_visible(timeout=30_000)
    expect(listing.get_by_text("0.png", exact=True)).to_have_count(0, timeout=30_000)
    expect(state).to_contain_text("Last synced")
    expect(state).to_contain_text("2 objects in the bucket prefix")
    listed = {i["name"]: i for i in items(api, folder_id)}
    assert listed["0.png"].get("tombstone") is True
    assert "tombstone" not in listed["2.png"]


def test_a_failed_sync_says_why(
    admin_page: Page, api: httpx.Client, bucket: tuple[MotoS3, Minio]
) -> None:
    moto, s3 = bucket
    gone = unique("gone")
    s3.make_bucket(gone)
    s3.put_object(gone, "p/a.txt", io.BytesIO(b"x\n"), 2)
    made = api.post(
        "/v1/folders",
        json={
            "name": unique("failing"),
            "cloud_sync": {"integration_id": register(api, moto, gone), "prefix": "p/"},
        },
    )
    assert made.status_code == 201, made.text
    folder = made.json()
    page = admin_page
    page.goto(f"/folders/{folder['id']}")
    panel = page.get_by_role("region", name="Cloud sync")
    state = panel.get_by_role("status")
    expect(state).to_contain_text("Last synced", timeout=30_000)
    expect(state).to_contain_text("1 object in the bucket prefix")
    # The bucket goes: the next listing fails, and the page says so with the job's reason.
    s3.remove_object(gone, "p/a.txt")
    s3.remove_bucket(gone)
    panel.get_by_role("button", name="Sync now").click()
    expect(state).to_contain_text("Last sync failed", timeout=30_000)
    expect(state).to_contain_text("could not be listed")
    # Nothing was marked gone: the file is listed still.
    expect(page.get_by_role("grid").get_by_text("a.txt", exact=True)).to_be_visible()


def test_a_cancelled_sync_says_cancelled(
    admin_page: Page, api: httpx.Client, bucket: tuple[MotoS3, Minio]
) -> None:
    moto, s3 = bucket
    prefix = f"{unique('many')}/"
    # Enough objects that the first sync is still listing and reading them when it is
    # cancelled, just after the folder is made: 600 take it about 5 s (Dec 7), the
    # cancel comes within a few tenths (3,000 took 8 s to put into the bucket alone).
    data = png(2, 2)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: put(s3, f"{prefix}{n:05}.png", data), range(600)))
    made = api.post(
        "/v1/folders",
        json={
            "name": unique("cancelled"),
            "cloud_sync": {"integration_id": register(api, moto, BUCKET), "prefix": prefix},
        },
    )
    assert made.status_code == 201, made.text
    folder = made.json()
    cancelled = api.post(f"/v1/jobs/{folder['sync_job_id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    page = admin_page
    page.goto(f"/folders/{folder['id']}")
    state = page.get_by_role("region", name="Cloud sync").get_by_role("status")
    expect(state).to_contain_text("Last sync cancelled", timeout=30_000)
    expect(state).not_to_contain_text("Last synced")


def test_a_set_up_that_fails_says_where_the_folder_went(
    signed_in: Page, api: httpx.Client, bucket: tuple[MotoS3, Minio]
) -> None:
    """The gateway sends a synced folder it made to the Trash when its set-up fails
    after (the grant late, ingest refusing the sync): the dialog says what the person
    will find there. The failure is the gateway's own answer, after it did just that."""
    moto, _ = bucket
    integration_id = register(api, moto, BUCKET)
    name = unique("unkept")
    page = signed_in

    def made_then_unmade(route: Route) -> None:
        if route.request.method != "POST":
            return route.fallback()
        made = route.fetch()
        assert made.status == 201, made.text()
        gone = api.delete(f"/v1/folders/{made.json()['id']}")
        assert gone.status_code == 204, gone.text
        route.fulfill(
            status=503,
            headers={"Retry-After": "1"},
            json={
                "error": {
                    "code": "unavailable",
                    "message": "the access service did not make you the new folder's admin"
                    " in time, so the folder was not kept (it went to the Trash);"
                    " try again shortly",
                    "details": {"service": "acl", "retry": True},
                }
            },
        )

    page.route("**/v1/folders", made_then_unmade)
    page.get_by_role("button", name="Upload files").click()
    dialog = page.get_by_role("dialog", name="Upload files")
    dialog.get_by_role("tab", name="Import from private cloud").click()
    dialog.get_by_label("Integration").select_option(integration_id)
    dialog.get_by_role("switch", name="Keep a folder synced with the bucket").check()
    dialog.get_by_label("Synced folder name").fill(name)
    dialog.get_by_role("button", name="Create synced folder").click()
    alert = dialog.get_by_role("alert")
    expect(alert).to_contain_text("try again shortly")
    expect(alert).to_contain_text(
        f"If a folder named “{name}” appears in the Trash, it is this attempt's: it was not kept."
    )
    page.unroute("**/v1/folders")
    # The Trash, read again, lists it.
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    page.goto("/trash")
    expect(page.get_by_text(name, exact=True)).to_be_visible()


def test_a_sync_whose_job_could_not_be_read_once_is_still_followed(
    admin_page: Page, api: httpx.Client, bucket: tuple[MotoS3, Minio]
) -> None:
    """A running sync's job read answered 503 once (a restart): the page reads it again
    later, within its bound, and shows the sync's end. Before, one failed read stopped
    the following for good: "Syncing since …" stayed, with no "Check again"."""
    moto, s3 = bucket
    prefix = f"{unique('hiccup')}/"
    put(s3, f"{prefix}0.png", png(5, 5))
    made = api.post(
        "/v1/folders",
        json={
            "name": unique("hiccup"),
            "cloud_sync": {"integration_id": register(api, moto, BUCKET), "prefix": prefix},
        },
    )
    assert made.status_code == 201, made.text
    folder = made.json()
    job_id = folder["sync_job_id"]
    page = admin_page

    def running(route: Route) -> None:
        # The folder's state as it was while its first sync ran.
        state = route.fetch().json()
        state["last_sync"] = {**state["last_sync"], "status": "running"}
        route.fulfill(json=state)

    reads: list[str] = []

    def hiccup(route: Route) -> None:
        reads.append(route.request.url)
        if len(reads) == 1:
            route.fulfill(
                status=503,
                headers={"Retry-After": "1"},
                json={"error": {"code": "unavailable", "message": "restarting", "details": {}}},
            )
        else:
            route.fallback()

    page.route(f"**/v1/folders/{folder['id']}/sync", running)
    page.route(f"**/v1/jobs/{job_id}", hiccup)
    page.goto(f"/folders/{folder['id']}")
    state = page.get_by_role("region", name="Cloud sync").get_by_role("status")
    expect(state).to_contain_text("Last synced", timeout=30_000)
    assert len(reads) >= 2, reads
    # The page goes on watching its folder: no handler of ours may run as it closes (its
    # error would surface in the next test's browser).
    page.unroute_all(behavior="ignoreErrors")


def _synced(
    api: httpx.Client, moto: MotoS3, s3: Minio, name: str, *keys: str, integration: str = ""
) -> dict:
    """A folder synced with a new prefix holding `keys`, once its first sync is over."""
    prefix = f"{unique('p')}/"
    for key in keys:
        put(s3, f"{prefix}{key}", png(4, 4))
    made = api.post(
        "/v1/folders",
        json={
            "name": name,
            "cloud_sync": {
                "integration_id": register(api, moto, BUCKET, integration or None),
                "prefix": prefix,
            },
        },
    )
    assert made.status_code == 201, made.text
    folder = dict(made.json())
    job = f"/v1/jobs/{folder['sync_job_id']}"
    until(lambda: api.get(job).json()["status"] == "done", "the first sync did not end")
    return folder


def test_the_move_dialog_offers_no_cloud_synced_folder_nor_one_of_its_subfolders(
    admin_page: Page, api: httpx.Client, bucket: tuple[MotoS3, Minio]
) -> None:
    """A synced folder's files follow its bucket: a move into it (or into a subfolder its
    key paths made) is refused, so the dialog does not offer it, and says why. Before,
    it was offered and the dry run refused it."""
    moto, s3 = bucket
    tag = unique("dest")
    synced = _synced(api, moto, s3, f"{tag}-synced", f"{tag}-inner/0.png")
    plain = make_folder(api, f"{tag}-plain")
    source = make_folder(api, unique("source"))
    upload(api, source["id"], ("moving.txt", text("moving\n")))
    # All three found by search (the catalog's index follows the writes).
    until(
        lambda: (
            len(api.get("/v1/search", params={"q": tag, "kind": "folder"}).json()["items"]) == 3
        ),
        "search did not find the folders",
    )
    page = admin_page
    page.goto(f"/folders/{source['id']}")
    page.get_by_role("button", name="List").click()
    page.get_by_role("row", name="moving.txt").click(button="right")
    page.get_by_role("menu").get_by_role("menuitem", name="Move to another folder").click()
    dialog = page.get_by_role("dialog", name="Move to another folder")
    # The hits say which are cloud-synced: no sync state is read per hit.
    reads: list[str] = []

    def sync_read(request: Request) -> None:
        if request.url.endswith("/sync") and source["id"] not in request.url:
            reads.append(request.url)

    page.on("request", sync_read)
    dialog.get_by_label("Target folder").fill(tag)
    options = dialog.get_by_role("listbox", name="Folders").get_by_role("option")
    expect(options).to_have_count(1)
    expect(options.first).to_have_accessible_name(plain["name"])
    said = dialog.get_by_text("Not offered:")
    expect(said).to_contain_text(
        "Nothing can be uploaded, made or moved into a cloud-synced folder."
    )
    for name in (synced["name"], f"{tag}-inner"):
        expect(said).to_contain_text(f"“{name}”")
    options.first.click()
    dialog.get_by_role("button", name="Move").click()
    expect(dialog).to_have_count(0)
    assert [i["name"] for i in items(api, plain["id"])] == ["moving.txt"]
    page.remove_listener("request", sync_read)
    assert reads == []


def test_a_synced_folder_names_its_integration_to_a_user_of_the_folder(
    page: Page, api: httpx.Client, bucket: tuple[MotoS3, Minio]
) -> None:
    """The Cloud sync region says which integration the folder follows, by its name,
    also to a member who may not use (nor list) the integration: a role on the folder
    is what its sync state asks. Before, only the prefix was shown."""
    moto, s3 = bucket
    integration = unique("Lab bucket")
    folder = _synced(api, moto, s3, unique("named"), "a.png", integration=integration)
    member = _member(api, folder["id"], "user")
    state = api.get(f"/v1/folders/{folder['id']}/sync").json()
    assert state["cloud_sync"]["integration_name"] == integration
    sign_in(page, member["api_key"])
    reads: list[str] = []
    state_path = f"/v1/folders/{folder['id']}/sync"
    page.on("request", lambda r: reads.append(r.url) if r.url.endswith(state_path) else None)
    page.goto(f"/folders/{folder['id']}")
    panel = page.get_by_role("region", name="Cloud sync")
    expect(panel).to_contain_text(f"Synced with the integration “{integration}”, its bucket prefix")
    expect(panel).to_contain_text(folder["cloud_sync"]["prefix"])
    # Where the folder is described too.
    details = page.get_by_role("complementary", name="Details")
    expect(details.locator("dt", has_text="Cloud sync").locator("+ dd")).to_have_text(integration)
    # Read once, by the page, for the region and the panel both (each read it before).
    assert len(reads) == 1, reads
