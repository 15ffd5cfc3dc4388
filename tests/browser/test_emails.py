"""The "Emails" of "Manage access" makes a person to add only of an email address: one typed
("dog" stays typed, marked, and named), or a pasted list split at commas, semicolons,
spaces and line ends; an address listed already is not listed twice, and nothing is
sent while what is typed is not an address."""

from __future__ import annotations

import httpx
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import make_folder, unique
from tests.browser.test_details import _user


def _paste(field: Locator, text: str) -> None:
    field.evaluate(
        """(el, text) => {
            el.focus();
            el.setSelectionRange(el.value.length, el.value.length);
            const data = new DataTransfer();
            data.setData("text/plain", text);
            const init = { clipboardData: data, bubbles: true, cancelable: true };
            el.dispatchEvent(new ClipboardEvent("paste", init));
        }""",
        text,
    )


def test_emails_takes_only_addresses_and_names_what_is_not_one(
    signed_in: Page, api: httpx.Client
) -> None:
    page = signed_in
    folder = make_folder(api, unique("emails"))
    ann, bob, carol = (_user(api, n) for n in ("ann", "bob", "carol"))
    page.goto(f"/folders/{folder['id']}")
    details = page.get_by_role("complementary", name="Details")
    details.get_by_role("button", name="Manage access").click()
    dialog = page.get_by_role("dialog", name=f"Manage access: {folder['name']}")
    emails = dialog.get_by_label("Emails")
    chips = dialog.get_by_role("list", name="People to add").get_by_role("listitem")

    # Not an address: it stays typed, marked, and the message names it.
    emails.fill("dog")
    emails.press("Enter")
    expect(emails).to_have_value("dog")
    expect(emails).to_have_attribute("aria-invalid", "true")
    expect(dialog.get_by_role("alert")).to_contain_text("Not an email address: “dog”.")
    expect(chips).to_have_count(0)
    for bad in ("ann@example", "ann@.com", "a@b@example.com"):
        emails.fill(bad)
        emails.press("Enter")
        expect(chips).to_have_count(0)
        expect(emails).to_have_attribute("aria-invalid", "true")

    # Typing again takes the mark away; an address is a chip, once (in any case).
    emails.fill(ann["email"])
    expect(emails).to_have_attribute("aria-invalid", "false")
    expect(dialog.get_by_role("alert")).to_have_count(0)
    emails.press("Enter")
    expect(chips).to_have_count(1)
    expect(emails).to_have_value("")
    emails.fill(ann["email"].upper())
    emails.press("Enter")
    expect(chips).to_have_count(1)

    # A pasted list: each address its chip, once; the rest left typed and named.
    emails.fill("")
    pasted = f"{bob['email']}; {ann['email']}\ncat,\n{carol['email']} {bob['email']}\tnot-one@"
    _paste(emails, pasted)
    expect(chips).to_have_count(3)
    for person in (ann, bob, carol):
        expect(dialog.get_by_role("button", name=f"Do not add {person['email']}")).to_be_visible()
    expect(emails).to_have_value("cat, not-one@")
    expect(dialog.get_by_role("alert")).to_contain_text(
        "Not email addresses: “cat” and “not-one@”."
    )

    # "Add" sends nothing while something typed is not an address.
    sent: list[str] = []
    page.on(
        "request",
        lambda r: r.method == "POST" and "/collaborators" in r.url and sent.append(r.url),
    )
    dialog.get_by_role("button", name="Add", exact=True).click()
    expect(emails).to_be_focused()
    expect(dialog.get_by_role("alert")).to_contain_text("“cat”")
    assert sent == []

    emails.fill("")
    dialog.get_by_role("button", name="Add", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Added 3 people as User")
    assert len(sent) == 1
    listed = api.get(f"/v1/folders/{folder['id']}/collaborators").json()["items"]
    assert {ann["email"], bob["email"], carol["email"]} <= {c["email"] for c in listed}
