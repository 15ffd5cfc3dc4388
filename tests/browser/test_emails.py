"""The "Emails" of "Manage access" makes a person to add only of an email address: one typed
("dog" stays typed, marked, and named), or a pasted list split at commas, semicolons,
spaces and line ends; an address listed already is not listed twice, and nothing is
sent while what is typed is not an address."""

from __future__ import annotations

from typing import Any

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


def _manage_access(page: Page, folder: dict[str, Any]) -> tuple[Locator, Locator, Locator]:
    """The folder's "Manage access" opened from its details: the dialog, its "Emails" and
    its list of people to add."""
    page.goto(f"/folders/{folder['id']}")
    details = page.get_by_role("complementary", name="Details")
    details.get_by_role("button", name="Manage access").click()
    dialog = page.get_by_role("dialog", name=f"Manage access: {folder['name']}")
    return dialog, dialog.get_by_label("Emails"), dialog.get_by_role("list", name="People to add")


def test_emails_takes_only_addresses_and_names_what_is_not_one(
    signed_in: Page, api: httpx.Client
) -> None:
    page = signed_in
    folder = make_folder(api, unique("emails"))
    ann, bob, carol = (_user(api, n) for n in ("ann", "bob", "carol"))
    dialog, emails, to_add = _manage_access(page, folder)
    chips = to_add.get_by_role("listitem")

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
    # Typing takes the message away; the click brings it back: it has been handled.
    emails.fill("cat, not-one@")
    expect(dialog.get_by_role("alert")).to_have_count(0)
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


def test_a_mails_to_line_gives_its_addresses_not_its_names(
    signed_in: Page, api: httpx.Client
) -> None:
    """Pasted from a mail: "Ann Lee <ann@…>, "Lee, Bob" <bob@…>" gives Ann's and Bob's
    addresses (they were "<ann@…>" chips, the platform refusing them, and the names left
    typed as not addresses); quotes and a link's "mailto:" are not part of an address; a
    paste into a half-typed address completes it; a suggestion is not an address listed
    already in another case."""
    page = signed_in
    folder = make_folder(api, unique("to-line"))
    ann, bob, carol, dan = (_user(api, n) for n in ("ann", "bob", "carol", "dan"))
    dialog, emails, to_add = _manage_access(page, folder)
    chips = to_add.get_by_role("listitem")

    _paste(emails, f'Ann Lee <{ann["email"]}>, "Lee, Bob" <{bob["email"]}>')
    expect(chips).to_have_count(2)
    for person in (ann, bob):
        expect(dialog.get_by_role("button", name=f"Do not add {person['email']}")).to_be_visible()
    expect(emails).to_have_value("")
    expect(emails).to_have_attribute("aria-invalid", "false")

    _paste(emails, f"mailto:{carol['email']}; '{ann['email']}'")
    expect(chips).to_have_count(3)
    expect(dialog.get_by_role("button", name=f"Do not add {carol['email']}")).to_be_visible()
    expect(emails).to_have_value("")

    # Half typed, then the rest pasted with another address: two addresses, not three parts.
    at = dan["email"].index("@")
    emails.fill(dan["email"][: at + 1])
    _paste(emails, f"{dan['email'][at + 1 :]}, {bob['email']}")
    expect(chips).to_have_count(4)
    expect(dialog.get_by_role("button", name=f"Do not add {dan['email']}")).to_be_visible()
    expect(emails).to_have_value("")

    # Listed in capitals: its suggestion is not offered again.
    for person in (ann, bob, carol, dan):
        dialog.get_by_role("button", name=f"Do not add {person['email']}").click()
    expect(chips).to_have_count(0)
    emails.fill(ann["email"].upper())
    emails.press("Enter")
    expect(chips).to_have_count(1)
    users = dialog.get_by_role("listbox", name="Users")
    emails.fill(bob["email"].split("@")[0])
    expect(users.get_by_role("option")).to_have_count(1)
    emails.fill(ann["email"].split("@")[0])
    expect(users).to_have_count(0)

    emails.fill("")
    dialog.get_by_role("button", name="Add", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Added 1 person as User")
    listed = api.get(f"/v1/folders/{folder['id']}/collaborators").json()["items"]
    assert ann["email"] in {c["email"] for c in listed}


# Pasted lists and what they give: (pasted, people to add, left typed as not addresses).
PASTED = [
    # An unbalanced quote does not take the rest of the list into a name.
    ('"Smith, Ann <ann@x.org>, bo@y.org, cy@z.org', ["ann@x.org", "bo@y.org", "cy@z.org"], ""),
    ('"Ann <ann@x.org>\nbo@y.org', ["ann@x.org", "bo@y.org"], ""),
    # Outlook's To: line (its names unquoted, "Last, First"), and the same with commas.
    ("Smith, Ann <ann@x.org>; Lee, Bo <bo@y.org>", ["ann@x.org", "bo@y.org"], ""),
    ("Smith, Ann <ann@x.org>, Lee, Bo <bo@y.org>", ["ann@x.org", "bo@y.org"], ""),
    # Curly quotes quote a name as straight ones do.
    ("“Ann” <ann@x.org>, “Lee, Bo” <bo@y.org>", ["ann@x.org", "bo@y.org"], ""),
    ('"Lee, Bo" bo@y.org, "ann@x.org"', ["bo@y.org", "ann@x.org"], ""),
    # What holds , ; < > or " is not an address: left typed, named.
    (
        'a"b@x.org, <ann@x.org, bo@y.org>, cy@z.org',
        ["cy@z.org"],
        'a"b@x.org, <ann@x.org, bo@y.org>',
    ),
    ("a@x.org;b@x.org>,c@x.org", ["a@x.org", "c@x.org"], "b@x.org>"),
    # A mistyped address before an Outlook entry is no name of it: named, not dropped.
    ("annx.org, Bo Lee <bo@y.org>", ["bo@y.org"], "annx.org"),
]


def test_pasted_lists_quotes_outlook_and_what_no_address_holds(
    signed_in: Page, api: httpx.Client
) -> None:
    page = signed_in
    folder = make_folder(api, unique("pasted-lists"))
    dialog, emails, to_add = _manage_access(page, folder)
    chips = to_add.get_by_role("button")

    for pasted, people, typed in PASTED:
        emails.fill("")
        while chips.count():
            chips.first.click()
        _paste(emails, pasted)
        expect(emails).to_have_value(typed)
        expect(chips).to_have_count(len(people))
        added = chips.evaluate_all("els => els.map(e => e.getAttribute('aria-label'))")
        assert added == [f"Do not add {p}" for p in people], (pasted, added)
        alert = dialog.get_by_role("alert")
        if typed:
            expect(emails).to_have_attribute("aria-invalid", "true")
            for part in typed.split(", "):
                expect(alert).to_contain_text(f"“{part}”")
        else:
            expect(emails).to_have_attribute("aria-invalid", "false")
            expect(alert).to_have_count(0)
