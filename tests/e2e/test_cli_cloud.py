"""The `files` verbs for buckets, people and keys, run as a user runs them (the console
script in a process of its own): imports by reference and synced folders from a cloud
integration (moto's S3 server as the customer's bucket), integrations, collaborators
changed and removed, users and API keys."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import subprocess
import termios
import time
from pathlib import Path

import httpx
import pytest
from files_client import Client
from minio import Minio

from shared.kit.stack import Stack
from tests.cloud_fixtures import MotoS3
from tests.conftest import ADMIN_KEY
from tests.e2e.conftest import BUCKET
from tests.e2e.support import ELF, png, unique
from tests.e2e.test_cli import FILES, fails, files, json_lines, ok
from tests.e2e.test_imports import put


@pytest.fixture
def env(platform: Stack, tmp_path: Path) -> dict[str, str]:
    """An org admin's environment, with a home of their own and no AWS keys."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FILES_") and "AWS_" not in k}
    return {
        **base,
        "FILES_URL": platform.gateway_url,
        "FILES_API_KEY": ADMIN_KEY,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }


def names_in(env: dict[str, str], path: str) -> set[str]:
    return {item["name"] for item in json_lines(ok(env, "ls", path, "--json"))}


def lab(platform: Stack, moto: MotoS3) -> str:
    """A new integration of the bucket, registered through the client: its name."""
    name = unique("lab")
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        c.create_integration(
            name,
            bucket=BUCKET,
            access_key=moto.access_key,
            secret_key=moto.secret_key,
            endpoint=moto.endpoint,
            region="us-east-1",
        )
    return name


def test_import_by_prefix_keys_and_manifest_into_a_folder_path(
    env: dict[str, str], platform: Stack, moto: MotoS3, bucket: Minio, tmp_path: Path
) -> None:
    prefix = unique("cats")
    put(bucket, f"{prefix}/a.png", png(3, 3))
    put(bucket, f"{prefix}/b.png", png(4, 3))
    put(bucket, f"{prefix}/more/c.png", png(5, 3))
    put(bucket, f"{prefix}-other/x.png", png(2, 2))
    put(bucket, f"{prefix}-other/tool", ELF)
    source = lab(platform, moto)
    top = unique("imported")

    # By prefix, into a path made as `files upload --to` makes it; --wait follows the job.
    done = files(env, "import", "--from", source, "--to", f"{top}/cats", "--prefix", f"{prefix}/")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[1].rstrip(":")
    watched = ok(env, "jobs", "watch", job_id)
    assert f"job {job_id}: done, 3/3, 3 file(s)" in watched
    assert {"a.png", "b.png"} <= names_in(env, f"{top}/cats")
    waited = ok(env, "import", "--from", source, "--to", f"{top}/one", "--prefix", f"{prefix}/a")
    assert waited.startswith("job ")  # started, not followed

    # By keys, on the command line and from a file; objects refused are named, the rest
    # imported, and the exit code says so (3, as `files upload` says it).
    listed = tmp_path / "keys.txt"
    listed.write_text(f"{prefix}-other/tool\n\n{prefix}-other/missing.png\n")
    refused = files(
        env,
        "import",
        f"{prefix}-other/x.png",
        "--keys-from",
        str(listed),
        "--from",
        source,
        "--to",
        f"{top}/keyed",
        "--wait",
    )
    assert refused.returncode == 3, (refused.stdout, refused.stderr)
    assert ", 1 file(s)" in refused.stdout
    said = refused.stderr.splitlines()
    assert any("unsupported_content" in line and f"{prefix}-other/tool" in line for line in said)
    assert any("object_not_found" in line and "missing.png" in line for line in said)
    assert said[-1] == f"files import: 1 file imported to {top}/keyed; 2 refused"
    assert names_in(env, f"{top}/keyed") == {"x.png"}

    # By Encord's manifest: the title names the file.
    manifest = tmp_path / "manifest.json"
    entry = {"objectUrl": f"s3://{BUCKET}/{prefix}/b.png", "title": "cat b.png"}
    manifest.write_text(json.dumps({"images": [entry]}))
    job = json_lines(
        ok(
            env,
            "import",
            "--manifest",
            str(manifest),
            "--from",
            source,
            "--to",
            top,
            "--wait",
            "--json",
        )
    )[0]
    assert job["status"] == "done" and [f["name"] for f in job["files"]] == ["cat b.png"]
    assert "cat b.png" in names_in(env, top)

    # Misuse and refusals, each in one line naming what was typed.
    assert "name what to import" in fails(env, "import", "--from", source, "--to", top, code=2)
    nowhere = unique("nowhere")
    assert fails(env, "import", "k", "--from", nowhere, "--to", top) == (
        f"files import: integration {nowhere}: no such integration (that you may use)"
    )
    manifest.write_text("{not json")
    assert fails(
        env, "import", "--manifest", str(manifest), "--from", source, "--to", top
    ).startswith(f"files import: {manifest}: not JSON")
    # A user who may use the integration but not write into the folder: told with its path.
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        dana = c.create_user(f"{unique('dana')}@example.com", "Dana")
        integration = next(i for i in c.list_integrations() if i.name == source)
    shared = httpx.patch(
        f"{platform.gateway_url}/v1/integrations/{integration.id}",
        json={"shared_with": [dana.id]},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert shared.status_code == 200, shared.text
    ok(env, "share", top, dana.email, "--role", "user")
    danas = {**env, "FILES_API_KEY": dana.api_key}
    assert fails(danas, "import", "k.png", "--from", source, "--to", f"{top}/keyed") == (
        f"files import: {top}/keyed: this needs the editor role on the folder (you have user)"
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert "no keys in it" in fails(
        env, "import", "--keys-from", str(empty), "--from", source, "--to", top, code=2
    )


def test_a_synced_folder_made_with_the_integration_named_and_synced_again(
    env: dict[str, str], platform: Stack, moto: MotoS3, bucket: Minio
) -> None:
    prefix = f"{unique('synced')}/"
    put(bucket, f"{prefix}one.png", png(4, 4))
    source = lab(platform, moto)
    top = unique("cloud")
    path = f"{top}/mirror"
    made = ok(env, "sync", path, "--integration", source, "--prefix", prefix)
    assert f"following {prefix}" in made and "1 new file(s)" in made
    assert names_in(env, path) == {"one.png"}
    put(bucket, f"{prefix}two.png", png(3, 3))
    assert "1 new file(s)" in ok(env, "sync", path)
    assert names_in(env, path) == {"one.png", "two.png"}
    # --prefix without --integration would be dropped silently: a misuse.
    assert "--prefix and --interval go with --integration" in fails(
        env, "sync", path, "--prefix", "x/", code=2
    )


def test_integrations_added_from_the_environment_or_stdin_never_print_a_secret(
    env: dict[str, str], platform: Stack, moto: MotoS3, bucket: Minio
) -> None:
    name = unique("lab")
    where = ["--bucket", BUCKET, "--endpoint", moto.endpoint, "--region", "us-east-1"]
    # Not on the command line: no option takes them, and without them it is a misuse.
    missing = fails(env, "integrations", "add", name, *where, code=2)
    assert "AWS_ACCESS_KEY_ID" in missing and "--keys-stdin" in missing
    assert files(env, "integrations", "add", name, *where, "--secret-key", "x").returncode == 2
    keyed = {**env, "AWS_ACCESS_KEY_ID": moto.access_key, "AWS_SECRET_ACCESS_KEY": moto.secret_key}
    outputs: list[str] = []
    moto.auth(True)  # the bucket checks the keys: those of the environment were sent
    try:
        wrong = files(
            {**keyed, "AWS_SECRET_ACCESS_KEY": "not-the-secret"},
            "integrations",
            "add",
            name,
            *where,
        )
        assert wrong.returncode == 1 and "secret key" in wrong.stderr, wrong
        outputs += [wrong.stdout, wrong.stderr]
        added = files(keyed, "integrations", "add", name, *where)
        assert added.returncode == 0, added.stderr
        outputs += [added.stdout, added.stderr]
        assert added.stdout.startswith("integration ") and f"{name}, s3 {BUCKET}" in added.stdout
        assert "events token (shown once)" in added.stdout
        other = unique("lab")
        piped = files(
            env,
            "integrations",
            "add",
            other,
            *where,
            "--keys-stdin",
            "--json",
            stdin=f"{moto.access_key}\n{moto.secret_key}\n",
        )
        assert piped.returncode == 0, piped.stderr
        outputs += [piped.stdout, piped.stderr]
        assert json.loads(piped.stdout)["name"] == other
    finally:
        moto.auth(False)
    table = ok(env, "integrations", "ls")
    assert name in table and other in table
    listed = json_lines(ok(env, "integrations", "ls", "--json"))
    outputs += [table, json.dumps(listed)]
    assert {name, other} <= {i["name"] for i in listed}
    assert not any(moto.secret_key in text for text in outputs)

    # A member may not add one, and sees none that is not shared with them.
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        member = c.create_user(f"{unique('dana')}@example.com", "Dana")
        erin = c.create_user(f"{unique('erin')}@example.com", "Erin")
    theirs = {**keyed, "FILES_API_KEY": member.api_key}
    assert fails(theirs, "integrations", "add", unique("lab"), *where).startswith(
        "files integrations: "
    )
    nothing = files(theirs, "integrations", "ls")
    assert (nothing.returncode, nothing.stdout) == (0, "")
    assert nothing.stderr == "no integrations (that you may use)\n"

    # Shared with her by email, she may use it; taken back, she may not, and the others
    # it was shared with keep it (the API's list replaces: the command adds and removes).
    shared = ok(env, "integrations", "share", name, member.email, erin.email).split()
    assert shared == ["USER", member.email, erin.email]
    assert name in ok(theirs, "integrations", "ls")
    assert fails(theirs, "integrations", "share", name, erin.email) == (
        f"files integrations: integration {name}: seeing or changing who may use it needs"
        " the organisation admin role"
    )
    assert fails(env, "integrations", "share", name, "nobody@example.com") == (
        "files integrations: no user has these emails: nobody@example.com"
    )
    assert ok(env, "integrations", "unshare", name, member.email) == (
        f"removed {member.email} from {name}\n"
    )
    assert fails(env, "integrations", "unshare", name, member.email) == (
        f"files integrations: integration {name}: not shared with {member.email}"
    )
    assert files(theirs, "integrations", "ls").stdout == ""
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        [kept] = [i for i in c.list_integrations() if i.name == name]
        assert kept.shared_with == [erin.id]

    # Removed by name (or id: `delete` too).
    assert f"deleted integration {name}" in ok(env, "integrations", "rm", name)
    assert "deleted integration" in ok(env, "integrations", "delete", other)
    after = {i["name"] for i in json_lines(ok(env, "integrations", "ls", "--json"))}
    assert not {name, other} & after
    assert fails(env, "integrations", "rm", name) == (
        f"files integrations: integration {name}: no such integration (that you may use)"
    )


def test_keys_asked_for_on_a_terminal_are_not_echoed(
    env: dict[str, str], moto: MotoS3, bucket: Minio
) -> None:
    name = unique("lab")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [
            FILES,
            "integrations",
            "add",
            name,
            "--bucket",
            BUCKET,
            "--endpoint",
            moto.endpoint,
            "--keys-stdin",
        ],
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
        # The terminal is the process's own, as a shell's is: getpass asks on it.
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(follower)
    shown = b""
    answers = [
        (b"access key: ", moto.access_key),
        (b"secret key: ", moto.secret_key),
        (b"(Enter for none): ", ""),
    ]
    deadline = time.monotonic() + 60
    moto.auth(True)  # the keys typed are those checked against the bucket
    try:
        while time.monotonic() < deadline:
            if answers and shown.endswith(answers[0][0]):
                os.write(leader, answers.pop(0)[1].encode() + b"\n")
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the terminal closed with the process
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(30) == 0, shown
    finally:
        moto.auth(False)
        if proc.poll() is None:  # failed waiting: not left behind
            proc.kill()
        os.close(leader)
    text = shown.decode(errors="replace")
    assert f"{name}, s3 {BUCKET}" in text, text
    assert moto.access_key in text and moto.secret_key not in text, text
    assert name in ok(env, "integrations", "ls")


def test_a_role_changed_and_a_collaborator_removed(
    env: dict[str, str], platform: Stack, tmp_path: Path
) -> None:
    (tmp_path / "a.png").write_bytes(png(3, 3))
    top = unique("team")
    ok(env, "upload", str(tmp_path / "a.png"), "--to", f"{top}/sub")
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        bob = c.create_user(f"{unique('bob')}@example.com", "Bob")
        carol = c.create_user(f"{unique('carol')}@example.com", "Carol")

    def role_of(email: str, path: str = top) -> list[tuple[str, str]]:
        rows = [line.split() for line in ok(env, "share", path).splitlines()[1:]]
        return [(r[1], r[2]) for r in rows if r[0] == email]

    ok(env, "share", top, bob.email, "--role", "editor")
    assert role_of(bob.email) == [("editor", "here")]
    # The same verb on someone who has a role changes it.
    ok(env, "share", top, bob.email, "--role", "viewer")
    assert role_of(bob.email) == [("user", "here")]
    bobs = {**env, "FILES_API_KEY": bob.api_key}
    assert "this needs the editor role" in fails(
        bobs, "upload", str(tmp_path / "a.png"), "--to", top
    )

    assert ok(env, "unshare", top, bob.email) == f"removed {bob.email} (user) from {top}\n"
    assert role_of(bob.email) == []
    assert "no such folder" in fails(bobs, "ls", top)
    assert fails(env, "unshare", top, bob.email) == (
        f"files unshare: {top}: {bob.email} has no role on it"
    )
    # A role from the folder above is removed there, said with its path.
    ok(env, "share", top, carol.email, "--role", "editor")
    assert role_of(carol.email, f"{top}/sub") == [("editor", "inherited")]
    assert fails(env, "unshare", f"{top}/sub", carol.email) == (
        f"files unshare: {top}/sub: {carol.email}'s role is granted above it (editor on {top}):"
        " unshare it there"
    )
    assert role_of(carol.email) == [("editor", "here")]
    # A folder's admin is kept unless an org admin acts: said with the path and email.
    ok(env, "share", top, bob.email, carol.email, "--role", "admin")
    carols = {**env, "FILES_API_KEY": carol.api_key}
    kept = fails(carols, "unshare", top, bob.email)
    assert kept.startswith(f"files unshare: {top}: {bob.email} is an admin of it"), kept
    changed = fails(carols, "share", top, bob.email, "--role", "user")
    assert changed.startswith(f"files share: {top}: {bob.email} is an admin of it"), changed
    assert role_of(bob.email) == [("admin", "here")]
    assert "give --role" in fails(env, "share", top, bob.email, code=2)
    # One who may not manage them is told so, with the path.
    ok(env, "share", top, carol.email, "--role", "editor")
    assert fails(carols, "unshare", top, bob.email) == (
        f"files unshare: {top}: managing this folder's collaborators: this needs the admin"
        " role on the folder (you have editor)"
    )
    assert fails(carols, "share", top, carol.email, "--role", "admin").startswith(
        f"files share: {top}: managing this folder's collaborators: this needs the admin role"
    )


def test_users_and_api_keys_for_org_admins(env: dict[str, str]) -> None:
    email = f"{unique('erin')}@example.com"
    added = ok(env, "users", "add", email, "--name", "Erin")
    assert f"{email} (Erin, member)" in added
    first = added.splitlines()[-1].removeprefix("API key (shown once): ")
    erins = {**env, "FILES_API_KEY": first}
    assert ok(erins, "whoami").startswith(f"{email} (Erin, member)")
    assert email in ok(env, "users", "ls")
    assert email in {u["email"] for u in json_lines(ok(env, "users", "ls", "--json"))}
    # A member may not list or add users.
    assert files(erins, "users", "add", f"{unique('x')}@example.com", "--name", "X").returncode == 1

    # A new key, alone on stdout (for KEY=$(files keys new ...)); it works, then is revoked.
    issued = files(env, "keys", "new", email)
    assert issued.returncode == 0 and issued.stderr == ""
    second = issued.stdout.strip()
    assert issued.stdout == second + "\n" and second != first
    assert ok({**env, "FILES_API_KEY": second}, "whoami").startswith(email)
    keys = json_lines(ok(env, "keys", "ls", email, "--json"))
    assert len(keys) == 2 and not any(k["revoked"] for k in keys)
    assert not any(first in json.dumps(k) or second in json.dumps(k) for k in keys)
    table = ok(env, "keys", "ls", email)
    assert second not in table and all(k["id"] in table for k in keys)
    # Your own without an email: a member rotates theirs.
    own = json.loads(ok(erins, "keys", "new", "--json"))
    mine = {k["id"] for k in json_lines(ok(erins, "keys", "ls", "--json"))}
    assert len(mine) == 3 and own["id"] in mine
    owns = {**env, "FILES_API_KEY": own["api_key"]}
    assert ok(owns, "keys", "revoke", *(mine - {own["id"]})).count("revoked key") == 2
    assert files(erins, "whoami").returncode == 1
    assert ok(owns, "whoami").startswith(email)
    states = {k["id"]: k["revoked"] for k in json_lines(ok(env, "keys", "ls", email, "--json"))}
    assert states == {k: k != own["id"] for k in mine}
    assert "not a key id" in fails(env, "keys", "revoke", "abc", code=2)
    assert fails(env, "keys", "ls", "nobody@example.com") == (
        "files keys: nobody@example.com: no such user"
    )
