"""The global search in the top bar; the viewers: image zoom, video through Range,
frame strips, DICOM slices, PDF and text."""

from __future__ import annotations

import re
import time

import httpx
from playwright.sync_api import Locator, Page, Route, expect

from tests.browser.conftest import make_folder, unique
from tests.e2e.support import PDF, png, text


def test_search_finds_a_file_anywhere_with_its_path(admin_page: Page, api: httpx.Client) -> None:
    page = admin_page
    word = unique("needle")
    top = make_folder(api, unique("hay"))
    deep = make_folder(api, "deep", top["id"])
    answer = api.post(f"/v1/folders/{deep['id']}/files", files=[("file", (f"{word}.txt", text()))])
    [found] = answer.json()["files"]
    page.goto("/")
    box = page.get_by_role("combobox", name="Search files")
    expect(box).to_have_attribute("aria-expanded", "false")
    box.fill(word)
    hits = page.get_by_role("listbox", name="Search results")
    hit = hits.get_by_role("option", name=f"{word}.txt")
    expect(hit).to_contain_text(f"{top['name']} / deep")
    # A screen reader is told the hits opened below the box, and which one is chosen.
    expect(box).to_have_attribute("aria-expanded", "true")
    expect(box).to_have_attribute("aria-controls", hits.get_attribute("id") or "")
    box.press("ArrowDown")
    expect(box).to_have_attribute("aria-activedescendant", hit.get_attribute("id") or "")
    expect(hit).to_have_attribute("aria-selected", "true")
    box.press("Escape")
    expect(hits).to_have_count(0)
    expect(box).to_have_attribute("aria-expanded", "false")
    expect(box).not_to_have_attribute("aria-activedescendant", re.compile(".*"))
    box.fill(word + " ")
    expect(box).to_have_attribute("aria-expanded", "true")
    hit.click()
    expect(page).to_have_url(f"/files/{found['id']}")
    expect(page.get_by_role("heading", name=f"{word}.txt", level=1)).to_be_visible()
    expect(page.get_by_label(f"Text of {word}.txt")).to_contain_text("hello, files")
    # Enter shows every hit on a page of its own.
    box.fill(word)
    box.press("Enter")
    expect(page).to_have_url(f"/search?q={word}")
    expect(page.get_by_role("link", name=f"{word}.txt")).to_be_visible()


SUGGESTIONS = re.compile(r"/v1/search\?.*limit=10(&|$)")


def test_enter_shows_results_uncovered_and_the_box_follows_the_address(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    word, other = unique("cat"), unique("dog")
    folder = make_folder(api, unique("pets"))
    api.post(
        f"/v1/folders/{folder['id']}/files",
        files=[("file", (f"{word}.txt", text())), ("file", (f"{other}.txt", text()))],
    )
    page.goto("/")
    box = page.get_by_role("combobox", name="Search files")
    # Typed, then Enter: the suggestions asked for while typing answer only once the
    # results page is shown (held here), and must not open over it. (Enter before the
    # box's 200 ms pause asks for none, which a fast run did: so the ask is awaited.)
    held: list[Route] = []
    page.route(SUGGESTIONS, lambda route: held.append(route))
    with page.expect_request(SUGGESTIONS):
        box.fill(word)
    box.press("Enter")
    expect(page).to_have_url(f"/search?q={word}")
    result = page.get_by_role("link", name=f"{word}.txt")
    expect(result).to_be_visible()
    with page.expect_response(SUGGESTIONS):
        for route in held:
            route.continue_()
    page.unroute(SUGGESTIONS)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    expect(page.get_by_role("listbox", name="Search results")).to_have_count(0)

    # The box says what the page shows: after a reload, another search, Back.
    expect(box).to_have_value(word)
    page.reload()
    expect(result).to_be_visible()
    expect(box).to_have_value(word)
    box.fill(other)
    box.press("Enter")
    expect(page.get_by_role("link", name=f"{other}.txt")).to_be_visible()
    page.go_back()
    expect(page).to_have_url(f"/search?q={word}")
    expect(box).to_have_value(word)
    expect(page.get_by_role("listbox", name="Search results")).to_have_count(0)
    result.click()
    expect(page.get_by_role("heading", name=f"{word}.txt", level=1)).to_be_visible()


def test_image_zoom_pdf_and_a_frame_strip(admin_page: Page, api: httpx.Client) -> None:
    page = admin_page
    folder = make_folder(api, unique("view"))
    answer = api.post(
        f"/v1/folders/{folder['id']}/files",
        files=[("file", ("pic.png", png(40, 30))), ("file", ("doc.pdf", PDF))],
    )
    pic, doc = answer.json()["files"]
    group = api.post(
        f"/v1/folders/{folder['id']}/image-groups",
        data={"kind": "image_group", "name": "trio"},
        files=[("file", (f"{n}.png", png(10 + n, 10))) for n in range(3)],
    ).json()["file"]

    page.goto(f"/files/{pic['id']}")
    image = page.get_by_role("img", name="pic.png")
    expect(image).to_be_visible()
    drawn(page, image, 40)
    page.get_by_role("button", name="Zoom in").click()
    expect(page.get_by_label("Zoom level")).to_have_text("125% of fit")
    page.get_by_role("button", name="Fit").click()
    expect(page.get_by_label("Zoom level")).to_have_text("Fit")

    page.goto(f"/files/{doc['id']}")
    frame = page.locator("iframe[title='PDF doc.pdf']")
    expect(frame).to_have_attribute("src", lambda_blob())

    page.goto(f"/files/{group['id']}")
    strip = page.get_by_role("listbox", name="Frames")
    expect(strip.get_by_role("option")).to_have_count(3)
    strip.focus()
    page.keyboard.press("ArrowRight")
    expect(strip.get_by_role("option", name="Frame 2")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("img", name="Frame 2 of 3")).to_be_visible()
    drawn(page, page.get_by_role("img", name="Frame 2 of 3"), 11)


def drawn(page: Page, image: Locator, width: int) -> None:
    """The image shows its picture (loaded, `width` pixels wide): an image is visible as
    soon as it has a box, before its bytes arrive, so this waits, with a deadline."""
    page.wait_for_function(
        "([i, w]) => i.complete && i.naturalWidth === w",
        arg=[image.element_handle(), width],
        timeout=10_000,
    )


def lambda_blob():  # a src made from the bytes fetched with the session
    import re

    return re.compile(r"^blob:")


def webm(seconds: float = 3.0, rate: int = 10) -> bytes:
    """A small VP8 clip (PyAV), with its cues: seekable by range."""
    import io

    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, "w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for n in range(int(seconds * rate)):
            pixels = np.full((48, 64, 3), (n * 8) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def test_a_video_plays_and_seeks_by_range(admin_page: Page, api: httpx.Client) -> None:
    page = admin_page
    folder = make_folder(api, unique("video"))
    answer = api.post(f"/v1/folders/{folder['id']}/files", files=[("file", ("clip.webm", webm()))])
    assert answer.status_code == 201, answer.text
    [clip] = answer.json()["files"]
    assert clip["kind"] == "video"
    ranges: list[int] = []
    page.on(
        "response",
        lambda r: (
            ranges.append(r.status) if r.url.endswith(f"/v1/files/{clip['id']}/content") else None
        ),
    )
    page.goto(f"/files/{clip['id']}")
    video = page.get_by_label("Video clip.webm")
    video.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function(
        "id => document.querySelector('video').currentTime > 0.2", arg=clip["id"], timeout=15_000
    )
    video.evaluate(
        """v => new Promise(done => { v.pause(); v.addEventListener('seeked', done, {once: true});
                                       v.currentTime = 2.5; })"""
    )
    assert video.evaluate("v => v.currentTime") >= 2.4
    assert 206 in ranges, ranges


def test_a_dicom_series_scrolls_slice_by_slice(admin_page: Page, api: httpx.Client) -> None:
    from tests.dicom_fixtures import ct_series

    page = admin_page
    folder = make_folder(api, unique("ct"))
    started = api.post(
        f"/v1/folders/{folder['id']}/dicom",
        files=[("file", (f"{n}.dcm", data)) for n, data in enumerate(ct_series(5))],
    )
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    deadline = time.monotonic() + 30
    while True:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] == "done" and job["files"]:
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.1)  # poll again, within the deadline
    [series] = job["files"]
    drawn = api.get(f"/v1/files/{series['id']}/slices/4")
    assert drawn.status_code == 200 and drawn.headers["content-type"] == "image/png"
    assert drawn.content.startswith(b"\x89PNG")
    assert api.get(f"/v1/files/{series['id']}/slices/5").status_code == 404

    page.goto(f"/files/{series['id']}")
    expect(page.get_by_role("img", name="Slice 3 of 5")).to_be_visible()
    slider = page.get_by_role("slider", name="Slice")
    slider.focus()
    page.keyboard.press("ArrowRight")
    image = page.get_by_role("img", name="Slice 4 of 5")
    expect(image).to_be_visible()
    page.wait_for_function("() => document.querySelector('.dicom-viewer img').naturalWidth > 0")
    # An 8x8 series fills the stage, in proportion (object-fit), not a speck of 8 pixels.
    box = image.bounding_box()
    assert box is not None and box["width"] > 200 and box["height"] > 200, box
    fit = image.evaluate("i => getComputedStyle(i).objectFit")
    assert fit == "contain", fit
    details = page.get_by_role("complementary", name="Details")
    tags = details.get_by_role("region", name="DICOM tags")
    expect(tags).to_contain_text("Renderable in 3D")
    # What a radiologist looks for, from the first slice's header (DICOMweb).
    times = "\N{MULTIPLICATION SIGN}"
    for fact in (
        "ModalityCT",
        "Slices5",
        f"Rows {times} Columns8 {times} 8",
        f"Pixel spacing0.5 {times} 0.5 mm",
        "Slice thickness1.25 mm",
    ):
        expect(tags).to_contain_text(fact)
