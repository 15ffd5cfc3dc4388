"""The `files` command's user verbs against the running platform, run as a user runs
them: each run a process of its own (forked from one that imported the command once,
tests/files_forks.py says why), FILES_URL and FILES_API_KEY or a saved login, exit codes
and one line on stderr; Ctrl-C and the progress bar under a pseudo-terminal in the
console script itself."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from files_client import Client
from files_client._core import Session
from files_client.cli import VERBS
from files_client.transfer import LocalFile, journal_key
from PIL import Image

from shared import cli as files_cli
from shared.kit import db
from shared.kit.stack import Stack
from tests.conftest import ADMIN_KEY
from tests.dicom_fixtures import ct_series
from tests.e2e.support import ELF, png, unique
from tests.files_forks import FORKS

FILES = str(Path(sys.executable).parent / "files")
MiB = 1024 * 1024


@pytest.fixture
def env(platform: Stack, tmp_path: Path) -> dict[str, str]:
    """The environment of a user of this platform, with a home of their own."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FILES_")}
    return {
        **base,
        "FILES_URL": platform.gateway_url,
        "FILES_API_KEY": ADMIN_KEY,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }


def files(
    env: dict[str, str], *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return FORKS.run(list(args), env, stdin=stdin, cwd=cwd)


def ok(env: dict[str, str], *args: str, **kw: Any) -> str:
    done = files(env, *args, **kw)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def fails(env: dict[str, str], *args: str, code: int = 1) -> str:
    """The command fails with one line on stderr; that line."""
    done = files(env, *args)
    assert done.returncode == code, (args, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in [
        *([verb, "--help"] for verb in VERBS),
        *(
            ["datasets", a, "--help"]
            for a in ("create", "ls", "add", "rm", "delete", "share", "unshare")
        ),
        *(["integrations", a, "--help"] for a in ("share", "unshare")),
        *(["jobs", a, "--help"] for a in ("watch", "show")),
        ["--help"],
        ["audit", "--help"],
    ]:
        with pytest.raises(SystemExit) as leaving:
            files_cli.main(argv)
        assert leaving.value.code == 0, argv
        assert "usage: files" in capsys.readouterr().out, argv


def test_login_saves_url_and_key_privately_and_is_used(
    env: dict[str, str], tmp_path: Path, platform: Stack
) -> None:
    bare = {k: v for k, v in env.items() if k not in ("FILES_URL", "FILES_API_KEY")}
    assert fails(bare, "whoami") == (
        "files whoami: no platform: set FILES_URL (and FILES_API_KEY) or run `files login`"
    )
    out = ok(bare, "login", "--url", platform.gateway_url, "--api-key-stdin", stdin=ADMIN_KEY)
    assert "admin@files.local" in out
    saved = tmp_path / "config" / "files" / "config.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == {"url": platform.gateway_url, "api_key": ADMIN_KEY}
    assert "admin@files.local" in ok(bare, "whoami")
    # The environment wins over the saved login.
    wrong = {**bare, "FILES_API_KEY": "files_wrong_key_0000000000000"}
    assert "valid API key" in fails(wrong, "whoami")
    elsewhere = {**bare, "XDG_CONFIG_HOME": str(tmp_path / "other")}
    done = files(
        elsewhere,
        "login",
        "--url",
        platform.gateway_url,
        "--api-key-stdin",
        stdin="files_wrong_key_0000000000000",
    )
    assert done.returncode == 1 and done.stderr.startswith("files login: send a valid API key")
    assert not (tmp_path / "other" / "files" / "config.json").exists()


def test_upload_a_tree_list_search_download_and_upload_again(
    env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "shots"
    (src / "left").mkdir(parents=True)
    (src / "right" / "deep").mkdir(parents=True)
    (src / "a.png").write_bytes(png(8, 6))
    (src / "left" / "b.png").write_bytes(png(4, 4))
    (src / "right" / "deep" / "notes.txt").write_bytes(b"hello\n")
    (tmp_path / "loose.png").write_bytes(png(2, 2))
    top = unique("cli")
    # Not a terminal: quiet.
    done = files(env, "upload", str(src), str(tmp_path / "loose.png"), "--to", f"{top}/x/y")
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done

    listed = json_lines(ok(env, "ls", f"{top}/x/y", "--json"))
    assert [(i["type"], i["name"]) for i in listed] == [("folder", "shots"), ("file", "loose.png")]
    table = ok(env, "ls", f"{top}/x/y/shots").splitlines()
    assert table[0].split() == ["ID", "KIND", "SIZE", "CREATED", "NAME"]
    assert [row.split()[-1] for row in table[1:]] == ["left/", "right/", "a.png"]
    assert ok(env, "ls", f"{top}/x/y/shots/right/deep/notes.txt").splitlines()[1].split()[1] == (
        "text"
    )
    assert top in ok(env, "ls")

    hits = ok(env, "search", "notes.txt", "--in", top).splitlines()
    assert hits[1].split()[-1] == f"{top}/x/y/shots/right/deep/notes.txt"
    assert json_lines(ok(env, "search", top, "--json"))[0]["name"] == top

    # Again: everything is there already, so nothing is sent twice.
    ok(env, "upload", str(src), "--to", f"{top}/x/y")
    assert len(json_lines(ok(env, "ls", f"{top}/x/y/shots", "--json"))) == 3
    # ...but metadata given now is stored on the file that is there (merged).
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"a.png": {"split": "val"}}))
    ok(env, "upload", str(src / "a.png"), "--to", f"{top}/x/y/shots", "--metadata", str(labels))
    [there] = json_lines(ok(env, "ls", f"{top}/x/y/shots", "--meta", "split=val", "--json"))
    assert (there["name"], there["metadata"]) == ("a.png", {"split": "val"})
    (src / "left" / "c.png").write_bytes(png(5, 5))
    sent = json_lines(ok(env, "upload", str(src), "--to", f"{top}/x/y", "--json"))
    assert [f["name"] for f in sent] == ["c.png"]

    out = tmp_path / "out"
    ok(env, "download", f"{top}/x/y/shots", "-o", str(out))
    assert tree(out / "shots") == tree(src)
    ok(env, "download", f"{top}/x/y/loose.png", "-o", str(out))
    assert (out / "loose.png").read_bytes() == (tmp_path / "loose.png").read_bytes()

    # A file's path is no place to upload to (no folder of its name is made beside it).
    assert fails(env, "upload", str(src / "a.png"), "--to", f"{top}/x/y/loose.png") == (
        f"files upload: {top}/x/y/loose.png: is a file, not a folder"
    )
    assert len(json_lines(ok(env, "ls", f"{top}/x/y", "--json"))) == 2


def test_a_download_run_again_keeps_the_files_it_has_and_fetches_the_rest(
    env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "shots"
    src.mkdir()
    for i in range(4):
        (src / f"{i}.png").write_bytes(png(4 + i, 4))
    top = unique("redownload")
    ok(env, "upload", str(src), "--to", top)
    out = tmp_path / "out"
    ok(env, "download", f"{top}/shots", "-o", str(out))
    got = out / "shots"
    assert tree(got) == tree(src)
    # As if that run had stopped: 0.png whole, 1.png not yet, 2.png half written, and
    # 3.png is something else now.
    long_ago = 1_000_000_000
    os.utime(got / "0.png", (long_ago, long_ago))
    (got / "1.png").unlink()
    half = (got / "2.png").read_bytes()[:20]
    (got / "2.png").unlink()
    (got / "2.png.part").write_bytes(half)
    (got / "3.png").write_bytes(b"not the bytes of 3.png")
    # 3.png is not written over unasked (a local edit is not lost): named, the rest
    # fetched, exit 1.
    code, text = on_terminal(env, "download", f"{top}/shots", "-o", str(out))
    assert code == 1, text
    said = [line for line in text.splitlines() if line.strip()]
    assert (
        f"files download: {got / '3.png'}: there already, with other bytes than the"
        " platform's: left as it is (--overwrite writes over it)"
    ) in said, text
    assert said[-1].startswith("files download: downloaded 2 file(s) (") and said[-1].endswith(
        "; 1 already there; 1 left as they were: other bytes there"
    ), said
    assert (got / "3.png").read_bytes() == b"not the bytes of 3.png"
    assert {n: b for n, b in tree(got).items() if n != "3.png"} == {
        n: b for n, b in tree(src).items() if n != "3.png"
    }
    code, text = on_terminal(env, "download", f"{top}/shots", "-o", str(out), "--overwrite")
    assert code == 0, text
    said = [line for line in text.splitlines() if line.strip()]
    assert said[-1].startswith("downloaded 1 file(s) (") and said[-1].endswith(
        "(1 differed from the copy there: downloaded again); 3 already there"
    ), said
    assert tree(got) == tree(src)
    assert (got / "0.png").stat().st_mtime == long_ago  # not downloaded again


def test_a_single_file_downloaded_over_other_bytes_is_refused_unless_overwrite(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`files download` of one file onto a local file of that name holding other bytes
    (a local edit) refuses, naming it, exit 1, and leaves it as it is; `--overwrite`
    writes over it. Before, it was written over silently."""
    (tmp_path / "a.png").write_bytes(png(5, 5))
    top = unique("single")
    ok(env, "upload", str(tmp_path / "a.png"), "--to", top)
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "a.png"
    mine.write_bytes(b"my own edit")
    line = fails(env, "download", f"{top}/a.png", "-o", str(out))
    assert line == (
        f"files download: {mine}: there already, with other bytes than the platform's:"
        " left as it is (--overwrite writes over it)"
    ), line
    assert mine.read_bytes() == b"my own edit"
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # no .part left either
    ok(env, "download", f"{top}/a.png", "-o", str(out), "--overwrite")
    assert mine.read_bytes() == (tmp_path / "a.png").read_bytes()
    # The same bytes there: nothing to refuse.
    ok(env, "download", f"{top}/a.png", "-o", str(out))


def test_files_the_platform_refuses_are_named_and_the_rest_uploaded(
    env: dict[str, str], tmp_path: Path, platform: Stack
) -> None:
    src = tmp_path / "mixed"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    for n in range(20):
        for sub in ("a", "b"):
            (src / sub / f"f{n}.txt").write_text(f"{sub} {n}\n")
    (src / "b" / "f7.txt").write_bytes(ELF + os.urandom(200))
    (src / "b" / "f13.txt").write_bytes(ELF)
    # Large enough to go as an upload session, refused when it is completed.
    (src / "big.bin").write_bytes(ELF + os.urandom(6 * MiB))
    top = unique("refused")
    journal = tmp_path / "state" / "files" / "uploads.json"

    def sessions_of_big() -> int:
        async def count() -> int:
            pool = await db.connect_pool(platform.env["FILES_DATABASE_URL"], min_size=1)
            try:
                found: int = await pool.fetchval(
                    "SELECT count(*) FROM ingest.sessions WHERE name = 'big.bin'"
                )
                return found
            finally:
                await pool.close()

        return asyncio.run(count())

    before = sessions_of_big()
    for run, extra in enumerate([[], [], ["--retry-refused"]]):
        done = files(
            env, "upload", str(src), "--to", top, "--parts-from", str(5 * MiB), "--json", *extra
        )
        assert done.returncode == 3, done
        sent = json_lines(done.stdout)
        # The first run sends every file the platform takes; the next ones none again.
        assert len(sent) == (38 if run == 0 else 0), done.stdout
        lines = done.stderr.strip().splitlines()
        said = dict(line.partition(": refused: ")[::2] for line in lines[:-1])
        assert sorted(said) == [
            f"files upload: {src / 'b' / 'f13.txt'}",
            f"files upload: {src / 'b' / 'f7.txt'}",
            f"files upload: {src / 'big.bin'}",
        ], done.stderr
        assert all("not a kind of file" in reason for reason in said.values()), done.stderr
        # The large file, refused once and unchanged, is not sent again (its bytes
        # would be refused again), unless asked.
        earlier = "refused by an earlier run" in said[f"files upload: {src / 'big.bin'}"]
        assert earlier == (run == 1), done.stderr
        assert sessions_of_big() == before + (1 if run < 2 else 2)
        assert lines[-1].startswith(f"files upload: {len(sent)} files sent"), done.stderr
        assert lines[-1].endswith("; 3 refused"), done.stderr
        [remembered] = json.loads(journal.read_text()).values()
        assert remembered["refused"]["code"] == "unsupported_content"
    assert lines[-1].endswith("; 38 already there; 3 refused"), lines
    # Changed since, it is sent again.
    with (src / "big.bin").open("ab") as grown:
        grown.write(b"more")
    done = files(env, "upload", str(src), "--to", top, "--parts-from", str(5 * MiB))
    assert done.returncode == 3 and "earlier" not in done.stderr, done.stderr
    assert sessions_of_big() == before + 3
    for sub, count in (("a", 20), ("b", 18)):
        listed = json_lines(ok(env, "ls", f"{top}/mixed/{sub}", "--json"))
        assert len(listed) == count, listed
    assert ok(env, "download", f"{top}/mixed/a/f7.txt", "-o", str(tmp_path / "out")) == ""
    assert (tmp_path / "out" / "f7.txt").read_text() == "a 7\n"


def test_names_the_platform_refuses_are_named_and_the_rest_uploaded(
    env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "names"
    (src / "tab\tdir").mkdir(parents=True)
    (src / "ok.txt").write_text("ok\n")
    (src / "bell\x07.txt").write_text("bell\n")
    (src / os.fsdecode(b"caf\xe9.txt")).write_text("latin-1 name\n")
    (src / "tab\tdir" / "inside.txt").write_text("inside\n")
    (src / "invoice\u202efdp.exe").write_text("shows as invoiceexe.pdf\n")
    top = unique("names")

    done = files(env, "upload", str(src), "--to", top, "--json")
    assert done.returncode == 3, done
    assert [f["name"] for f in json_lines(done.stdout)] == ["ok.txt"]
    lines = done.stderr.strip().splitlines()
    assert sorted(lines[:-1]) == [
        f"files upload: {src}/bell\\x07.txt: refused: invalid_name: the name 'bell\\x07.txt'"
        " contains control characters",
        f"files upload: {src}/caf\\udce9.txt: refused: invalid_name: the name 'caf\\udce9.txt'"
        " is not UTF-8",
        f"files upload: {src}/invoice\\u202efdp.exe: refused: invalid_name: the name"
        " 'invoice\\u202efdp.exe' contains U+202E (right-to-left override): it makes the name"
        " show as another",
        f"files upload: {src}/tab\\tdir/inside.txt: refused: invalid_name: the folder name"
        " 'tab\\tdir' contains control characters",
    ], done.stderr
    assert lines[-1].endswith("; 4 refused"), done.stderr
    assert [f["name"] for f in json_lines(ok(env, "ls", f"{top}/names", "--json"))] == ["ok.txt"]
    # A group (or a DICOM series) is one request for all: the name fails it, before it goes.
    for mode in (["--group", "g"], ["--dicom"]):
        said = fails(env, "upload", str(src / os.fsdecode(b"caf\xe9.txt")), "--to", top, *mode)
        assert said.endswith("caf\\udce9.txt: the name 'caf\\udce9.txt' is not UTF-8"), said


def test_a_batch_with_many_refused_names_is_sent_once(
    env: dict[str, str], platform: Stack, tmp_path: Path
) -> None:
    """300 files, 100 named what the platform refuses: the 200 stored in one request
    (the command refuses the names itself: none of them is sent, so no batch is sent
    again for them), the 100 named by their paths."""
    src = tmp_path / "many"
    src.mkdir()
    names = [f"bad\u202e{n}.png" if n % 3 == 1 else f"{n}.png" for n in range(300)]
    for name in names:
        (src / name).write_bytes(png(2, 2))
    top = unique("many-names")
    done = files(env, "upload", *(str(src / n) for n in names), "--to", top, "--json")
    assert done.returncode == 3, done
    assert sorted(f["name"] for f in json_lines(done.stdout)) == sorted(
        n for n in names if "\u202e" not in n
    )
    lines = done.stderr.strip().splitlines()
    refused = [line for line in lines if ": refused: invalid_name: " in line]
    assert sorted(line.split(": refused:")[0] for line in refused) == sorted(
        f"files upload: {src}/bad\\u202e{n}.png" for n in range(1, 300, 3)
    )
    assert lines[-1].endswith("; 100 refused"), lines[-1]
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        folder_id = c.get_folder_by_path(top).id
        started = [
            e
            for e in c.audit(actor=c.me().id, type="ingest.UploadJobStarted")
            if e.data.get("folder_id") == folder_id
        ]
    assert [e.data["total"] for e in started] == [200]


def test_files_named_on_the_command_line_each_have_their_own_outcome(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`files upload bad good --metadata`: a file whose metadata the platform refuses
    failed the whole request before (exit 1, nothing stored); now it is named with the
    API's code and reason, the others stored, exit 3."""
    paths = [tmp_path / "elf.bin", tmp_path / "a.png", tmp_path / "nul.png", tmp_path / "b.png"]
    paths[0].write_bytes(ELF)
    for n, path in enumerate(paths[1:]):
        path.write_bytes(png(3 + n, 3))
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"nul.png": {"note": "a\x00b"}, "b.png": {"split": "train"}}))
    top = unique("each")
    done = files(env, "upload", *map(str, paths), "--to", top, "--metadata", str(labels), "--json")
    assert done.returncode == 3, done
    assert [(f["name"], f["metadata"]) for f in json_lines(done.stdout)] == [
        ("a.png", {}),
        ("b.png", {"split": "train"}),
    ]
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith(
        f"files upload: {paths[0]}: refused: unsupported_content: 'elf.bin' is not a kind"
    ), lines
    assert lines[1].startswith(
        f"files upload: {paths[2]}: refused: invalid_metadata: file 'nul.png': "
    ), lines
    assert lines[2].startswith("files upload: 2 files sent") and lines[2].endswith("; 2 refused")
    listed = json_lines(ok(env, "ls", top, "--json"))
    assert [f["name"] for f in listed] == ["a.png", "b.png"]


def test_a_large_file_resumes_from_the_session_an_interrupted_upload_left(
    env: dict[str, str], tmp_path: Path, platform: Stack
) -> None:
    data = png(40, 30)
    data += os.urandom(11 * MiB - len(data))
    big = tmp_path / "big.png"
    big.write_bytes(data)
    top = unique("resume")
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        folder = c.make_folders(top)
        # As if `files upload` had stopped after the first part.
        session = folder.open_upload_session("big.png", len(data), part_size=5 * MiB)
        first = session.parts[0]
        assert httpx.put(first.url, content=data[: first.size], timeout=60).status_code == 200
        key = journal_key(Session(platform.gateway_url, ADMIN_KEY), folder.id, LocalFile.at(big))
        journal = tmp_path / "state" / "files" / "uploads.json"
        journal.parent.mkdir(parents=True)
        journal.write_text(json.dumps({key: session.id}))
        [sent] = json_lines(
            ok(env, "upload", str(big), "--to", top, "--parts-from", str(5 * MiB), "--json")
        )
        finished = c.get_upload_session(session.id)
        assert finished.status == "completed" and finished.file_id == sent["id"]
        assert sent["size"] == len(data)
        assert json.loads(journal.read_text()) == {}


def test_ctrl_c_stops_an_upload_at_once_and_a_run_again_finishes_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "scans"
    src.mkdir()
    # One at a time, each an upload session: the Ctrl-C comes as the first opens, so
    # any second one sent means the run went on; 4 are as many as 12 were for that,
    # and the run again sends 40 MiB less.
    count = 4
    for i in range(count):
        (src / f"{i:02}.png").write_bytes(png(6, 4) + os.urandom(5 * MiB))
    top = unique("ctrlc")
    upload = ["upload", str(src), "--to", top, "--parts-from", str(5 * MiB), "--parallel", "1"]
    proc = subprocess.Popen(
        [FILES, *upload],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal delivers it: a suite started in the background (a shell's
        # `&`) has SIGINT ignored, which its children would inherit, and Python then
        # installs no KeyboardInterrupt for it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # The first upload session is remembered as it opens: then Ctrl-C, with 3 to go.
    journal = tmp_path / "state" / "files" / "uploads.json"
    deadline = time.monotonic() + 60
    while not (journal.exists() and journal.read_text().strip("{} \n")):
        assert time.monotonic() < deadline, "no upload session opened"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.01)  # and it has not finished yet
        assert proc.returncode is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err == "files upload: interrupted\n", (out, err)

    # The rest was not sent after the Ctrl-C: a run again sends it, and nothing twice.
    sent = json_lines(ok(env, *upload, "--json"))
    # All but the first at most (it may have ended as the Ctrl-C came): none went on.
    assert count - 1 <= len(sent) <= count, sent
    listed = json_lines(ok(env, "ls", f"{top}/scans", "--json"))
    assert sorted(f["name"] for f in listed) == [f"{i:02}.png" for i in range(count)]


def test_image_groups_sequences_and_dicom_from_the_command_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        (imgs / f"{i}.png").write_bytes(png(6, 4))
    top = unique("groups")
    ok(env, "upload", str(imgs), "--to", top, "--group", "cats")
    ok(env, "upload", str(imgs), "--to", top, "--sequence", "walk")
    kinds = {i["name"]: i.get("kind", "folder") for i in json_lines(ok(env, "ls", top, "--json"))}
    assert kinds["cats"] == "image_group" and kinds["walk"] == "image_sequence"
    # Downloaded, a group is its first image, named with its extension (before: `cats`,
    # which no OS opens), its images in the folder beside it.
    ok(env, "download", top, "-o", str(tmp_path / "groups"))
    got = tree(tmp_path / "groups" / top)
    assert got["cats.png"] == got["walk.png"] == (imgs / "0.png").read_bytes(), sorted(got)
    assert sorted(n for n in got if n.startswith("cats (images)/")) == [
        f"cats (images)/{i}.png" for i in range(3)
    ]
    ok(env, "download", f"{top}/cats", "-o", str(tmp_path / "one"))
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["cats.png"]

    scans = tmp_path / "scans"
    scans.mkdir()
    for i, body in enumerate(ct_series(3, series=31)):
        (scans / f"{i}.dcm").write_bytes(body)
    series = json_lines(ok(env, "upload", str(scans), "--to", f"{top}/ct", "--dicom", "--json"))
    assert [s["kind"] for s in series] == ["dicom_series"] and series[0]["dicom"]["instances"] == 3
    # Downloaded, a series is a directory of its instances, byte for byte, each named
    # by its SOP Instance UID; a run again writes the same.
    sent = {pydicom.dcmread(f).SOPInstanceUID: f.read_bytes() for f in scans.glob("*.dcm")}
    for _ in range(2):
        got = files(env, "download", f"{top}/ct", "-o", str(tmp_path / "out"))
        assert got.returncode == 0 and "series only" not in got.stderr, got
        [written] = (tmp_path / "out" / "ct").iterdir()
        assert written.name == series[0]["name"] and written.is_dir()
        assert {f.name: f.read_bytes() for f in written.iterdir()} == {
            f"{uid}.dcm": body for uid, body in sent.items()
        }
    (scans / "bad.dcm").write_bytes(b"not dicom at all")
    line = fails(env, "upload", str(scans / "bad.dcm"), "--to", f"{top}/ct", "--dicom", code=3)
    assert "bad.dcm" in line


def test_a_dicom_series_downloaded_again_is_kept_when_there_and_fetched_when_it_differs(
    env: dict[str, str], tmp_path: Path, platform: Stack
) -> None:
    slices = ct_series(5, series=32)
    scans = tmp_path / "scans"
    scans.mkdir()
    for i, body in enumerate(slices[:3]):
        (scans / f"{i}.dcm").write_bytes(body)
    top = unique("reseries")
    [series] = json_lines(ok(env, "upload", str(scans), "--to", top, "--dicom", "--json"))
    out = tmp_path / "out"

    def download(*more: str) -> str:
        code, text = on_terminal(env, "download", top, "-o", str(out), *more)
        assert code == 0, text
        return [line for line in text.splitlines() if line.strip()][-1]  # after the bar

    def on_disk() -> dict[str, bytes]:
        got = out / top / series["name"]
        return {f.name: f.read_bytes() for f in got.iterdir()}

    def uid_of(body: bytes) -> str:
        return str(pydicom.dcmread(BytesIO(body)).SOPInstanceUID)

    first = download()
    assert first.startswith(f"downloaded 1 file(s) ({series['size'] / 1e3:.1f} KB) into"), first
    written = out / top / series["name"]
    assert on_disk() == {f"{uid_of(b)}.dcm": b for b in slices[:3]}
    # Run again: the series is there, each instance byte for byte: not fetched again.
    long_ago = 1_000_000_000
    for f in written.iterdir():
        os.utime(f, (long_ago, long_ago))
    again = download()
    assert again.startswith("downloaded 0 file(s) (0 B) into") and again.endswith(
        "; 1 already there"
    ), again
    assert all(f.stat().st_mtime == long_ago for f in written.iterdir())
    # An instance of the same name with other bytes is not the series: left as it is,
    # said, unless --overwrite, which fetches it again.
    changed = written / f"{uid_of(slices[1])}.dcm"
    changed.write_bytes(slices[1][:-4] + b"\0\0\0\0")
    code, text = on_terminal(env, "download", top, "-o", str(out))
    assert code == 1 and f"files download: {written}: there already" in text, text
    assert changed.read_bytes() == slices[1][:-4] + b"\0\0\0\0"
    said = download("--overwrite")
    assert said.startswith("downloaded 1 file(s)") and "differed" in said, said
    assert on_disk() == {f"{uid_of(b)}.dcm": b for b in slices[:3]}
    # As if a run had stopped half-way (one instance not written yet): run again, it
    # goes on, no --overwrite needed. It used to be refused as other bytes.
    (written / f"{uid_of(slices[2])}.dcm").unlink()
    said = download()
    assert said.startswith("downloaded 1 file(s)") and "differed" not in said, said
    assert on_disk() == {f"{uid_of(b)}.dcm": b for b in slices[:3]}

    # The series extended on the platform (two slices more): downloaded again, whole.
    more = tmp_path / "more"
    more.mkdir()
    for i, body in enumerate(slices[3:]):
        (more / f"{i}.dcm").write_bytes(body)
    ok(env, "upload", str(more), "--to", top, "--dicom")
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        deadline = time.monotonic() + 60
        while (extended := c.get_file(series["id"])).sha256 == series["sha256"]:
            assert time.monotonic() < deadline, "the series was not extended"
            time.sleep(0.2)  # poll again, within the deadline above
        assert extended.dicom is not None and extended.dicom.instances == 5
    # Its instances there are some of the series': the rest is downloaded (unasked).
    said = download()
    assert said.startswith(f"downloaded 1 file(s) ({extended.size / 1e3:.1f} KB) into"), said
    assert "differed" not in said, said
    assert on_disk() == {f"{uid_of(b)}.dcm": b for b in slices}
    # And File.download, run again, leaves it as it is.
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        for f in written.iterdir():
            os.utime(f, (long_ago, long_ago))
        assert c.get_file(series["id"]).download(out / top) == written
    assert all(f.stat().st_mtime == long_ago for f in written.iterdir())


def test_move_rename_remove_with_its_impact_and_missing_paths(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "a.png").write_bytes(png(3, 3))
    top = unique("mv")
    ok(env, "upload", str(tmp_path / "a.png"), "--to", f"{top}/src")
    ok(env, "upload", str(tmp_path / "a.png"), "--to", f"{top}/dst")
    ok(env, "datasets", "create", f"{top}-ds", "--synced-to", f"{top}/src")
    assert "moved 1 item(s) into" in ok(env, "mv", f"{top}/src/a.png", f"{top}/dst")
    ok(env, "mv", f"{top}/dst", f"{top}/src/inner")
    names = [i["name"] for i in json_lines(ok(env, "ls", f"{top}/src", "--json"))]
    assert names == ["inner"]
    impact = ok(env, "rm", "--dry-run", f"{top}/src/inner")
    assert "would delete 1 folder(s) and 2 file(s)" in impact
    assert f"dataset {top}-ds: would lose 2 link(s)" in impact
    ok(env, "ls", f"{top}/src/inner")  # still there
    assert "deleted" in ok(env, "rm", f"{top}/src/inner")
    line = fails(env, "ls", f"{top}/src/inner")
    assert line == f"files ls: {top}/src/inner: no such folder or file"
    # An empty folder says so, on stderr: stdout stays an empty table (or no JSON lines).
    for args, said in (
        ([f"{top}/src"], f"{top}/src: empty"),
        ([f"{top}/src", "--json"], f"{top}/src: empty"),
        ([top, "--kind", "video"], f"nothing in {top} matches"),
    ):
        done = files(env, "ls", *args)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", said + "\n"), done
    assert f"{top}/nope" in fails(env, "rm", f"{top}/nope")
    assert f"{top}/nope" in fails(env, "download", f"{top}/nope/x.png")
    assert "usage:" in files(env, "mv", "only-one").stderr
    assert f"renamed to {top}-2" in ok(env, "mv", top, f"{top}-2")
    assert [i["name"] for i in json_lines(ok(env, "ls", f"{top}-2", "--json"))] == ["src"]


def test_datasets_sharing_jobs_and_history(
    env: dict[str, str], tmp_path: Path, platform: Stack
) -> None:
    (tmp_path / "a.png").write_bytes(png(3, 3))
    (tmp_path / "b.png").write_bytes(png(4, 3))
    top = unique("ds")
    [a, b] = json_lines(
        ok(
            env,
            "upload",
            str(tmp_path / "a.png"),
            str(tmp_path / "b.png"),
            "--to",
            top,
            "--json",
        )
    )
    name = unique("train")
    made = json_lines(ok(env, "datasets", "create", name, "--json"))[0]
    assert f"added 2 file(s) to {name}" in ok(env, "datasets", "add", name, top)
    listed = ok(env, "datasets", "ls", name)
    assert a["id"] in listed and b["id"] in listed
    assert name in ok(env, "datasets", "ls")
    ok(env, "datasets", "rm", made["id"], f"{top}/a.png")
    assert a["id"] not in ok(env, "datasets", "ls", name)
    # A file named that is not in it: said by its path, and nothing is removed.
    assert fails(env, "datasets", "rm", name, f"{top}/b.png", f"{top}/a.png") == (
        f"files datasets: {top}/a.png: not in dataset {name}"
    )
    assert b["id"] in ok(env, "datasets", "ls", name)
    # A folder: the files below it that are in the dataset (b.png; a.png is no more).
    assert f"removed 1 file(s) from {name}" in ok(env, "datasets", "rm", name, top)
    assert json_lines(ok(env, "datasets", "ls", name, "--json")) == []
    # Empty, said on stderr (stdout stays a table or JSON lines).
    emptied = files(env, "datasets", "ls", name)
    assert (emptied.returncode, emptied.stdout) == (0, "")
    assert emptied.stderr == f"{name}: no files (that you may see)\n"
    assert "no such dataset" in fails(env, "datasets", "ls", unique("x"))
    ok(env, "datasets", "delete", name)
    assert "no such dataset" in fails(env, "datasets", "ls", name)

    email = f"{unique('bob')}@example.com"
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        bob = c.create_user(email, "Bob")
    # A new user's trash: empty, and said so.
    emptied = files({**env, "FILES_API_KEY": bob.api_key}, "trash")
    assert (emptied.returncode, emptied.stdout, emptied.stderr) == (0, "", "the trash is empty\n")
    shared = ok(env, "share", top, email, "--role", "editor")
    assert email in shared and "editor" in shared
    assert email in ok(env, "share", top)
    assert "no user" in fails(env, "share", top, "nobody@example.com", "--role", "user")

    scans = []
    for i, body in enumerate(ct_series(2, series=52)):
        scans.append(tmp_path / f"{i}.dcm")
        scans[-1].write_bytes(body)
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        job = c.get_folder_by_path(top).upload_dicom(scans)
    watched = ok(env, "jobs", "watch", job.id)
    assert f"job {job.id}: done, 2/2, 1 file(s)" in watched
    assert json_lines(ok(env, "jobs", "show", job.id, "--json"))[0]["status"] == "done"
    history = ok(env, "history", top).splitlines()
    assert history[0].split() == ["TIME", "EVENT", "SUBJECT", "ACTOR"]
    assert any("catalog.FolderCreated" in row for row in history[1:])
    # Names, not ids, where they are known: the path given, the caller's email.
    created = next(row for row in history[1:] if "catalog.FolderCreated" in row).split()
    assert created[-2:] == [top, "admin@files.local"], created
    uploaded = ok(env, "history", f"{top}/b.png").splitlines()[1:]
    assert uploaded and all(row.split()[-2] == f"{top}/b.png" for row in uploaded), uploaded
    assert json_lines(ok(env, "history", "--actor", "me", "--limit", "2", "--json"))
    # Times as a person writes them: a date alone, no offset (UTC, as the table shows).
    assert json_lines(ok(env, "history", top, "--since", "2000-01-01", "--json"))
    assert ok(env, "history", top, "--until", "2000-01-01T12:00", "--json") == ""
    none = files(env, "history", top, "--until", "2000-01-01T12:00")
    assert (none.returncode, none.stdout, none.stderr) == (0, "", "no events match\n")
    assert "--since yesterday: not a time" in fails(env, "history", "--since", "yesterday", code=2)
    # A user by email, as the table shows them.
    by_email = json_lines(ok(env, "history", top, "--actor", "admin@files.local", "--json"))
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        assert by_email and {e["actor_id"] for e in by_email} == {c.me().id}


def test_a_member_shares_a_dataset_by_email_and_takes_it_back(
    env: dict[str, str], platform: Stack
) -> None:
    bob, as_bob, carol, as_carol = two_users(platform, env)
    name = unique("shared-ds")
    with Client(platform.gateway_url, api_key=bob.api_key) as c:
        c.create_dataset(name)

    shared = ok(as_bob, "datasets", "share", name, carol.email, "--role", "editor").splitlines()
    assert [r.split() for r in shared] == [
        ["USER", "ROLE", "AS"],
        [bob.email, "admin", "creator"],
        [carol.email, "editor", "shared"],
    ]
    # Carol sees it now, and who has a role, by email (a member cannot list users).
    assert ok(as_carol, "datasets", "share", name).splitlines()[1:] == shared[1:]
    # She may not share it on (an editor), said with its name and the role needed.
    assert fails(as_carol, "datasets", "unshare", name, carol.email) == (
        f"files datasets: dataset {name}: this needs the admin role on the dataset"
        " (you have editor)"
    )
    assert fails(as_bob, "datasets", "share", name, "nobody@example.com", "--role", "user") == (
        "files datasets: no user has these emails: nobody@example.com"
    )
    assert fails(as_bob, "datasets", "unshare", name, carol.email, bob.email) == (
        f"files datasets: dataset {name}: {bob.email} created it and stays its admin"
    )
    assert ok(as_bob, "datasets", "unshare", name, carol.email) == (
        f"removed {carol.email} (editor) from {name}\n"
    )
    assert fails(as_carol, "datasets", "ls", name) == (
        f"files datasets: dataset {name}: no such dataset"
    )


def test_the_progress_bar_shows_on_a_terminal(env: dict[str, str], tmp_path: Path) -> None:
    data = png(40, 30)
    big = tmp_path / "big.png"
    big.write_bytes(data + os.urandom(24 * MiB))
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [FILES, "upload", str(big), "--to", unique("tty"), "--parts-from", str(8 * MiB)],
        env={**env, "COLUMNS": "120"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
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
    assert proc.wait(30) == 0
    os.close(leader)
    text = shown.decode(errors="replace")
    assert "upload: 100%" in text, text
    assert "B/s" in text and "ETA" in text, text
    # One unit system: the bar's 25.2MB is the summary's 25.2 MB (decimal, not MiB).
    size = f"{len(big.read_bytes()) / 1e6:.1f}"
    assert f"{size}MB/{size}MB" in text, text
    assert f"1 file sent ({size} MB)" in text, text


def test_an_unknown_kind_is_refused_naming_it_and_the_kinds(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "a.png").write_bytes(png(3, 3))
    top = unique("kinds")
    ok(env, "upload", str(tmp_path / "a.png"), "--to", top)
    kinds = "folder, image, video, image_group, image_sequence, dicom_series, pdf, audio, text"
    for args in (
        ["ls", top, "--kind", "imag"],
        ["search", "a.png", "--kind", "imag"],
        ["ls", "--kind", "imag"],  # the top level, which is not listed by kind
    ):
        # Not an empty answer (the API takes any word as a kind): the typo, named.
        line = fails(env, *args, code=2)
        assert line == (
            f"files {args[0]}: --kind 'imag' is not a kind (did you mean image?);"
            f" the kinds: {kinds}, nifti"
        ), line
    assert "imag" in fails(env, "ls", top, "--kind", "image", "--kind", "imag", code=2)
    [found] = json_lines(ok(env, "ls", top, "--kind", "image", "--json"))
    assert found["name"] == "a.png"
    [hit] = json_lines(ok(env, "search", "a.png", "--kind", "image", "--in", top, "--json"))
    assert hit["id"] == found["id"]
    # The top level holds folders: a file kind finds none there, a name filters them.
    assert json_lines(ok(env, "ls", "--kind", "image", "--json")) == []
    named = json_lines(ok(env, "ls", "--kind", "folder", "--name", top.upper(), "--json"))
    assert [f["name"] for f in named] == [top]
    assert "name a folder" in fails(env, "ls", "--meta", "a=b", code=2)


UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def two_users(
    platform: Stack, env: dict[str, str]
) -> tuple[Any, dict[str, str], Any, dict[str, str]]:
    """Two members (not organisation admins), each with the environment of their own key."""
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        bob = c.create_user(f"{unique('bob')}@example.com", "Bob")
        carol = c.create_user(f"{unique('carol')}@example.com", "Carol")
    return (
        bob,
        {**env, "FILES_API_KEY": bob.api_key},
        carol,
        {**env, "FILES_API_KEY": carol.api_key},
    )


def test_refusals_name_the_folders_by_the_paths_typed_and_the_role_needed(
    env: dict[str, str], tmp_path: Path, platform: Stack
) -> None:
    (tmp_path / "a.png").write_bytes(png(3, 3))
    (tmp_path / "b.png").write_bytes(png(4, 3))
    _, as_bob, carol, as_carol = two_users(platform, env)
    top = unique("perm")
    ok(as_bob, "upload", str(tmp_path / "a.png"), "--to", f"{top}/x")
    ok(as_bob, "share", top, carol.email, "--role", "user")
    said = [
        fails(as_carol, "upload", str(tmp_path / "b.png"), "--to", f"{top}/x"),
        fails(as_carol, "upload", str(tmp_path / "b.png"), "--to", f"{top}/x/new"),
        fails(as_carol, "rm", f"{top}/x/a.png"),
        fails(as_carol, "mv", f"{top}/x", f"{top}/y"),
    ]
    assert (
        said[0]
        == f"files upload: {top}/x: this needs the editor role on the folder (you have user)"
    )
    assert said[1] == (
        f"files upload: {top}/x/new: not there, and not made:"
        f" {top}/x: this needs the editor role on the folder (you have user)"
    )
    assert said[2] == f"files rm: these files need the editor role on their folder: {top}/x/a.png"
    assert said[3] == f"files mv: {top}/x: this needs the editor role on the folder (you have user)"
    for line in said:
        assert not UUID_TEXT.search(line), line
    # Nothing was made.
    assert [i["name"] for i in json_lines(ok(as_bob, "ls", f"{top}/x", "--json"))] == ["a.png"]


def test_a_path_starts_at_a_top_level_folder_shared_with_the_user_and_two_are_ambiguous(
    env: dict[str, str], tmp_path: Path, platform: Stack
) -> None:
    (tmp_path / "a.png").write_bytes(png(3, 3))
    (tmp_path / "b.png").write_bytes(png(4, 3))
    bob, as_bob, carol, as_carol = two_users(platform, env)
    top = unique("proj")
    ok(as_bob, "upload", str(tmp_path / "a.png"), "--to", top)
    ok(as_bob, "share", top, carol.email, "--role", "editor")
    [theirs] = json_lines(ok(as_carol, "ls", "--json"))
    assert theirs["name"] == top
    # Into Bob's folder, as "All folders" shows it to Carol: no top-level folder of her own.
    code, text = on_terminal(as_carol, "upload", str(tmp_path / "a.png"), "--to", f"{top}/sub")
    assert code == 0 and "made the top-level folder" not in text, text
    assert [f["id"] for f in json_lines(ok(as_carol, "ls", "--json"))] == [theirs["id"]]
    assert [f["name"] for f in json_lines(ok(as_bob, "ls", f"{top}/sub", "--json"))] == ["a.png"]

    # Her own folder of that name beside it: which one is meant is hers to say.
    with Client(platform.gateway_url, api_key=carol.api_key) as c:
        own = c.create_folder(top)
    ids = sorted([theirs["id"], own.id])
    owners = {theirs["id"]: f"{bob.email}'s", own.id: "yours"}
    named = ", ".join(f"{i} ({owners[i]})" for i in ids)
    for args in (["upload", str(tmp_path / "b.png"), "--to", f"{top}/sub"], ["ls", top]):
        assert fails(as_carol, *args, code=2) == (
            f"files {args[0]}: {top}: 2 folders you can see have that name: {named};"
            f" name the one you mean by its id (as in {ids[0]}/...)"
        )
    ok(as_carol, "upload", str(tmp_path / "b.png"), "--to", f"{theirs['id']}/sub")
    listed = json_lines(ok(as_bob, "ls", f"{top}/sub", "--json"))
    assert [f["name"] for f in listed] == ["a.png", "b.png"]
    assert json_lines(ok(as_carol, "ls", own.id, "--json")) == []
    # A name none she can see has: a top-level folder of her own is made, and said.
    mine = unique("mine")
    code, text = on_terminal(as_carol, "upload", str(tmp_path / "a.png"), "--to", f"{mine}/x")
    assert code == 0, text
    assert f"made the top-level folder {mine} (none you can see has that name)" in text, text


def test_a_path_through_a_folder_shared_deep_is_said_not_made_a_new_top_level_folder(
    env: dict[str, str], tmp_path: Path, platform: Stack
) -> None:
    (tmp_path / "a.png").write_bytes(png(3, 3))
    (tmp_path / "b.png").write_bytes(png(4, 3))
    _, as_bob, carol, as_carol = two_users(platform, env)
    data, proj = unique("data"), unique("proj")
    ok(as_bob, "upload", str(tmp_path / "a.png"), "--to", f"{data}/{proj}")
    ok(as_bob, "share", f"{data}/{proj}", carol.email, "--role", "editor")
    [shared] = json_lines(ok(as_carol, "ls", "--json"))
    assert shared["name"] == proj  # at her top level: data is not hers to see
    # Bob's path for it, typed by Carol: the platform cannot tell whether his data is the
    # one she means, so she is told what to type; no top-level data of her own is made.
    said = (
        f"{data}/{proj}/sub: no top-level folder {data} that you can see; {proj} is shared"
        f" with you and is at your top level (the folders above it are not yours to see):"
        f" type {proj}/sub (or {shared['id']}/sub)"
    )
    assert fails(
        as_carol, "upload", str(tmp_path / "b.png"), "--to", f"{data}/{proj}/sub", code=2
    ) == (
        f"files upload: {said}; a top-level folder {data} of your own: make it first (--to {data})"
    )
    assert fails(as_carol, "ls", f"{data}/{proj}/sub", code=2) == f"files ls: {said}"
    assert [f["id"] for f in json_lines(ok(as_carol, "ls", "--json"))] == [shared["id"]]
    assert [i["name"] for i in json_lines(ok(as_bob, "ls", f"{data}/{proj}", "--json"))] == [
        "a.png"
    ]
    # As told: into Bob's folder.
    ok(as_carol, "upload", str(tmp_path / "b.png"), "--to", f"{proj}/sub")
    assert [i["name"] for i in json_lines(ok(as_bob, "ls", f"{data}/{proj}/sub", "--json"))] == [
        "b.png"
    ]
    # A genuinely new top-level folder of hers is made as before; made first, her own
    # data takes the path Bob's folder's name is in.
    code, text = on_terminal(as_carol, "upload", str(tmp_path / "a.png"), "--to", data)
    assert code == 0 and f"made the top-level folder {data}" in text, text
    ok(as_carol, "upload", str(tmp_path / "b.png"), "--to", f"{data}/{proj}/sub")
    mine = json_lines(ok(as_carol, "ls", f"{data}/{proj}/sub", "--json"))
    assert [i["name"] for i in mine] == ["b.png"]
    assert mine[0]["folder_id"] != shared["id"]
    # An org admin sees every top-level folder: a name none has is new, whatever follows.
    fresh = unique("fresh")
    code, text = on_terminal(env, "upload", str(tmp_path / "a.png"), "--to", f"{fresh}/{proj}")
    assert code == 0 and f"made the top-level folder {fresh}" in text, text


def on_terminal(env: dict[str, str], *args: str) -> tuple[int, str]:
    """The command run with its stderr on a terminal, as a person runs it: its exit code
    and what it wrote there (the progress bar's redraws as lines of their own). Forked
    as `files` above (the console script's own start is the progress bar's test's)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    shown = bytearray()
    ended = threading.Event()

    def read() -> None:
        # As it comes: a run that wrote more than the terminal holds would wait on it.
        while True:
            ready, _, _ = select.select([leader], [], [], 0.05)
            if not ready:
                if ended.is_set():
                    return
                continue
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        done = FORKS.run(
            list(args), {**env, "COLUMNS": "100"}, terminal=os.ttyname(follower), timeout=120
        )
    finally:
        ended.set()
        reader.join(30)
        os.close(follower)
        os.close(leader)
    return done.returncode, bytes(shown).decode(errors="replace").replace("\r", "\n")


def test_the_summary_counts_what_this_run_sent_and_what_was_there(
    env: dict[str, str], tmp_path: Path, platform: Stack
) -> None:
    small = []
    for i in range(3):
        small.append(tmp_path / f"s{i}.png")
        small[-1].write_bytes(png(3 + i, 3))
    data = png(40, 30)
    data += os.urandom(11 * MiB - len(data))
    big = tmp_path / "big.png"
    big.write_bytes(data)
    top = unique("summary")
    ok(env, "upload", *map(str, small), "--to", top)
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        folder = c.get_folder_by_path(top)
        # As if an earlier `files upload` had stopped after the first part of big.png.
        session = folder.open_upload_session("big.png", len(data), part_size=5 * MiB)
        first = session.parts[0]
        assert httpx.put(first.url, content=data[: first.size], timeout=60).status_code == 200
        key = journal_key(Session(platform.gateway_url, ADMIN_KEY), folder.id, LocalFile.at(big))
    journal = tmp_path / "state" / "files" / "uploads.json"
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text(json.dumps({key: session.id}))
    upload = ["upload", *map(str, small), str(big), "--to", top, "--parts-from", str(5 * MiB)]

    def summary() -> str:
        code, text = on_terminal(env, *upload)
        assert code == 0, text
        return [line for line in text.splitlines() if line.strip()][-1]  # after the bar

    # This run sent the rest of big.png, not the part stored before, nor the files there.
    rest = f"{(len(data) - first.size) / 1e6:.1f} MB"
    before = f"{first.size / 1e6:.1f} MB"
    said = summary()
    assert said.startswith(f"1 file sent ({rest}; {before} more sent by an earlier run) to {top}")
    assert said.endswith("; 3 already there"), said
    # Again: nothing is sent, and the summary says so.
    said = summary()
    assert said.startswith(f"0 files sent (0 B) to {top} in ") and said.endswith(
        " s; 4 already there"
    ), said


def test_a_group_or_sequence_uploaded_again_is_not_made_twice(
    env: dict[str, str], tmp_path: Path
) -> None:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.new("RGB", (6, 4), (40 * i, 90, 200)).save(imgs / f"{i}.png")
    top = unique("regroup")

    def groups() -> list[tuple[str, str]]:
        listed = json_lines(
            ok(env, "ls", top, "--kind", "image_group", "--kind", "image_sequence", "--json")
        )
        return [(g["name"], g["kind"]) for g in listed]

    for mode in (["--group", "cats"], ["--sequence", "walk"]):
        ok(env, "upload", str(imgs), "--to", top, *mode)
        # Run again (after an interruption, say): there already, said, and not made again.
        code, text = on_terminal(env, "upload", str(imgs), "--to", top, *mode)
        kind = "image_group" if mode[0] == "--group" else "image_sequence"
        assert code == 0, text
        assert f"{kind} {mode[1]} in {top}: already there with these 3 images; not sent again" in (
            text
        ), text
        assert ok(env, "upload", str(imgs), "--to", top, *mode, "--json") == ""
    assert sorted(groups()) == [("cats", "image_group"), ("walk", "image_sequence")]
    folders = [f["name"] for f in json_lines(ok(env, "ls", top, "--kind", "folder", "--json"))]
    assert sorted(folders) == ["cats (images)", "walk (images)"]

    # The same name for other images, or for the other kind: refused, nothing made.
    assert fails(env, "upload", str(imgs / "0.png"), "--to", top, "--group", "cats") == (
        f"files upload: {top}/cats: an image_group of that name is there already, with other"
        " images; give another name, or --duplicates to make one more"
    )
    assert fails(env, "upload", str(imgs), "--to", top, "--group", "walk") == (
        f"files upload: {top}/walk: an image_sequence of that name is there already (not an"
        " image_group); give another name, or --duplicates to make one more"
    )
    Image.new("RGB", (6, 4), (1, 2, 3)).save(imgs / "2.png")  # same name, other bytes
    assert "with other images" in fails(env, "upload", str(imgs), "--to", top, "--group", "cats")
    assert sorted(groups()) == [("cats", "image_group"), ("walk", "image_sequence")]
    # Asked for: one more.
    ok(env, "upload", str(imgs), "--to", top, "--group", "cats", "--duplicates")
    assert sorted(groups()) == [("cats", "image_group")] * 2 + [("walk", "image_sequence")]


def test_the_trash_takes_the_paths_items_had(env: dict[str, str], tmp_path: Path) -> None:
    """A person deletes `top/src/a.png` and restores `top/src/a.png`: the trash's ids are
    not what they typed (before, a path was "not in the trash", which it was)."""
    (tmp_path / "a.png").write_bytes(png(3, 3))
    (tmp_path / "b.png").write_bytes(png(4, 3))
    top = unique("bin")
    ok(env, "upload", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--to", f"{top}/src")
    ok(env, "rm", f"{top}/src/a.png", f"{top}/src/b.png")
    assert "restored 0 folder(s) and 1 file(s)" in ok(env, "trash", "restore", f"{top}/src/a.png")
    assert [i["name"] for i in json_lines(ok(env, "ls", f"{top}/src", "--json"))] == ["a.png"]
    assert "purged 0 folder(s) and 1 file(s)" in ok(env, "trash", "purge", f"{top}/src/b.png")
    # A folder, by its path; a top-level one by its name.
    ok(env, "rm", f"{top}/src")
    assert ok(env, "trash", "restore", f"{top}/src") == "restored 1 folder(s) and 1 file(s)\n"
    ok(env, "rm", top)
    assert ok(env, "trash", "restore", top) == "restored 2 folder(s) and 1 file(s)\n"
    assert [i["name"] for i in json_lines(ok(env, "ls", f"{top}/src", "--json"))] == ["a.png"]
    [row] = ok(env, "ls", top).splitlines()[1:]
    assert row.split()[1:4] == ["folder", "1", "item"], row  # not "1 items"
    # Two deleted from one path: which one is for the user to say, by the ids given.
    ok(env, "upload", str(tmp_path / "b.png"), "--to", f"{top}/src")
    ok(env, "rm", f"{top}/src/b.png")
    ok(env, "upload", str(tmp_path / "b.png"), "--to", f"{top}/src", "--duplicates")
    ok(env, "rm", f"{top}/src/b.png")
    line = fails(env, "trash", "restore", f"{top}/src/b.png", code=2)
    ids = [i["id"] for i in json_lines(ok(env, "trash", "--json")) if i["name"] == "b.png"]
    assert line.startswith(f"files trash: {top}/src/b.png: 2 items in the trash had that path")
    assert all(i in line for i in ids), (line, ids)
    assert fails(env, "trash", "restore", f"{top}/src/c.png", code=2) == (
        f"files trash: {top}/src/c.png: not in the trash"
    )


def test_a_dataset_name_is_made_once_and_two_of_a_name_are_named_by_id(
    env: dict[str, str], platform: Stack
) -> None:
    """`files datasets create NAME` run again (a script run twice) made a second dataset
    of that name, after which every `files datasets ... NAME` failed, naming no id."""
    name = unique("twice")
    first = json_lines(ok(env, "datasets", "create", name, "--json"))[0]
    assert fails(env, "datasets", "create", name) == (
        f"files datasets: dataset {name} exists already ({first['id']});"
        " --duplicates makes another of that name"
    )
    assert [d["name"] for d in json_lines(ok(env, "datasets", "ls", "--json"))].count(name) == 1
    second = json_lines(ok(env, "datasets", "create", name, "--duplicates", "--json"))[0]
    line = fails(env, "datasets", "ls", name, code=2)
    assert line.startswith(f"files datasets: dataset {name}: 2 datasets have that name: ")
    assert first["id"] in line and second["id"] in line and line.endswith("give its id")
    assert ok(env, "datasets", "ls", second["id"]) == ""
