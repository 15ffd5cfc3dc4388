"""The `files` command's user verbs, on the Python client.

Paths are folder names joined with `/` from the top level (a file's path ends with its
name); a bare id names a folder or file too. The platform is FILES_URL and
FILES_API_KEY, else what `files login` saved. Exit 0 on success; otherwise non-zero
with one line on stderr naming the problem (2: the command used wrongly). `files upload`
exits REFUSED (3) when the platform refused some files (a line on stderr for each, by its
local path, then a summary): the others were uploaded, and a run again sends none twice.
`files import --wait` exits REFUSED when objects were refused, the others imported.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import getpass
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from files_client import config
from files_client._core import Sync
from files_client.api import (
    Dataset,
    File,
    Folder,
    Integration,
    Job,
    local_name,
    safe_name,
    split_path,
)
from files_client.client import Client
from files_client.errors import Conflict, FilesError, Forbidden, Invalid, NotFound
from files_client.models import AuditEvent, Collaborator, DatasetCollaborator, TrashItem, User
from files_client.names import is_tag, misleading, name_problem
from files_client.transfer import (
    PARTS_FROM,
    Journal,
    LocalFile,
    Refusal,
    local_tree,
    numbered,
    sha256_of,
)

SyncFolder = Folder[Sync]
SyncFile = File[Sync]

VERBS = (
    "login",
    "whoami",
    "upload",
    "ls",
    "search",
    "mv",
    "rm",
    "duplicates",
    "trash",
    "reencode",
    "download",
    "datasets",
    "share",
    "jobs",
    "history",
    "import",
    "sync",
    "integrations",
    "unshare",
    "users",
    "keys",
    "webhooks",
)


class Usage(Exception):
    """A command used wrongly: exit 2."""


# Some files were refused (no kind the platform accepts), the others uploaded.
REFUSED = 3


# -- output -------------------------------------------------------------------------------


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


def _table(rows: list[list[str]], header: list[str]) -> None:
    if not rows:
        return
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        print("  ".join(cells).rstrip())


def _json_line(model: Any) -> None:
    data = model.model_dump(mode="json") if hasattr(model, "model_dump") else model
    print(json.dumps(data, ensure_ascii=False))


def _path_of(item: SyncFolder | SyncFile) -> str:
    if isinstance(item, Folder):
        return item.full_path
    return item.full_path or item.name


class Bar:
    """A progress bar in bytes (rate and ETA) on a terminal; nothing otherwise."""

    def __init__(self, total: int, label: str, *, unit: str = "B") -> None:
        self.bar: Any = None
        self.lock = threading.Lock()
        if sys.stderr.isatty():
            from tqdm import tqdm

            try:
                width = os.get_terminal_size(sys.stderr.fileno()).columns
            except OSError:
                width = 0
            self.bar = tqdm(
                total=total,
                desc=label,
                unit=unit,
                unit_scale=unit == "B",
                # Decimal, as every size the command prints (318MB here is 317.8 MB there).
                unit_divisor=1000,
                file=sys.stderr,
                ncols=min(width or 80, 120),
                bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                + ("{n_fmt}B/{total_fmt}B" if unit == "B" else "{n_fmt}/{total_fmt}")
                + " {rate_fmt} ETA {remaining}",
                mininterval=0.2,
            )

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            with self.lock:  # called from the threads that send in parallel
                self.bar.update(n)

    def set(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _note(text: str) -> None:
    """A line for a person at a terminal; scripts get none."""
    if sys.stderr.isatty():
        print(text, file=sys.stderr)


def _nothing(text: str) -> None:
    """An empty answer said (on stderr: stdout stays a table or JSON lines, empty)."""
    print(text, file=sys.stderr)


# -- helpers --------------------------------------------------------------------------------


# The folders and files met in this run, by id, with the paths the user knows them by:
# the paths typed, else the paths the platform answered (from the first folder the user
# may see). A refusal that names one by its id names it by its path instead.
_KNOWN: dict[str, str] = {}
_UUID = re.compile(
    r"(?:\b(?:folder|file) )?\b([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b"
)


class _Client(Client):
    """The client, remembering the paths of what it is answered."""

    def _folder(self, data: Any) -> SyncFolder:
        found = super()._folder(data)
        _KNOWN.setdefault(found.id, found.full_path)
        return found

    def _file(self, data: Any) -> SyncFile:
        found = super()._file(data)
        if found.full_path:
            _KNOWN.setdefault(found.id, found.full_path)
        return found


def _client() -> Client:
    return _Client()


def _typed(found: SyncFolder | SyncFile, path: str) -> None:
    """`path`, as the user typed it, names `found` from now on."""
    if split_path(path) != [found.id]:
        _KNOWN[found.id] = "/".join(split_path(path))


def _resolve(c: Client, path: str, *, making: bool = False) -> SyncFolder | SyncFile:
    try:
        found = c.resolve(path)
    except NotFound as error:
        names = split_path(path)
        if error.details.get("missing") == (names[0] if names else None):
            through = _through_shared(c, names, making=making)
            if through:
                raise Usage(through) from None
        raise
    _typed(found, path)
    return found


def _through_shared(c: Client, names: list[str], *, making: bool) -> str | None:
    """A path whose first folder the user does not see, through a folder shared with
    them (`data/proj/sub`, `data/proj` shared): what to type instead. A folder shared
    with a member shows at their top level, and the names above it are not theirs, so
    the platform cannot tell whether that `data` is the one above `proj`: said rather
    than guessed, or a new top-level `data` made. None when no later name is a folder
    shared with them (an org admin sees every top-level folder: none is hidden)."""
    if len(names) < 2 or _looks_like_id(names[0]):
        return None
    me = c.me()
    if me.org_role == "admin":
        return None
    shared: dict[str, list[SyncFolder]] = {}
    for f in c.list_folders():
        if f.created_by != me.id:
            shared.setdefault(f.name.casefold(), []).append(f)
    for depth, name in enumerate(names[1:], 1):
        found = shared.get(name.casefold())
        if not found:
            continue
        rest = "/".join(names[depth + 1 :])
        typed = "/".join(names[depth:])
        by_id = " or ".join(f"{f.id}/{rest}" if rest else f.id for f in found)
        said = (
            f"{'/'.join(names)}: no top-level folder {names[0]} that you can see; {name} is"
            f" shared with you and is at your top level (the folders above it are not yours"
            f" to see): type {typed} (or {by_id})"
        )
        if making:
            said += f"; a top-level folder {names[0]} of your own: make it first (--to {names[0]})"
        return said
    return None


def _folder(c: Client, path: str, *, making: bool = False) -> SyncFolder:
    found = _resolve(c, path, making=making)
    if not isinstance(found, Folder):
        raise Invalid("not_a_folder", f"{path}: is a file, not a folder", {"path": path})
    return found


def _ambiguous(error: Conflict) -> str:
    """A path whose folder is one of several of that name the user may see (their own
    top-level `proj` and one shared with them, say): each by its id and whose it is."""
    ids = [str(i) for i in error.details.get("ids") or []]
    makers = list(error.details.get("created_by") or [])
    path = str(error.details.get("path") or "")
    if not ids:
        return error.message
    owners: dict[str, str] = {}
    try:
        with _client() as c:
            me = c.me().id
            for folder_id, maker in zip(ids, makers, strict=False):
                if maker == me:
                    owners[folder_id] = "yours"
                    continue
                for x in c.get_folder(folder_id).collaborators():
                    if x.user_id == maker and x.email:
                        owners[folder_id] = f"{x.email}'s"
    except FilesError:
        pass  # the ids alone, then
    named = ", ".join(f"{i} ({owners[i]})" if i in owners else i for i in ids)
    return (
        f"{path}: {len(ids)} folders you can see have that name: {named};"
        f" name the one you mean by its id (as in {ids[0]}/...)"
    )


def _said(error: FilesError) -> str:
    """The platform's message, with the folders and files it names by id named by their
    paths where this run knows them, and the role it needs when it says one."""
    message = _UUID.sub(lambda m: _KNOWN.get(m.group(1), m.group(0)), error.message)
    needed = error.details.get("role_needed")
    if isinstance(needed, str) and needed not in message:
        message += f" (this needs the {needed} role)"
    return message


def _walk(folder: SyncFolder, into: Path) -> Iterator[tuple[SyncFile, Path]]:
    """Every file below a folder, with where it goes under `into` (the tree mirrored,
    names made safe for the disk, clashes numbered)."""
    taken: set[str] = set()
    for item in folder.items():
        # A folder or a series is a directory: no extension to number before.
        directory = isinstance(item, Folder) or item.kind == "dicom_series"
        name = _unique(
            safe_name(item.name) if isinstance(item, Folder) else local_name(item),
            taken,
            directory=directory,
        )
        if isinstance(item, Folder):
            yield from _walk(item, into / name)
        else:
            yield item, into / name


def _unique(name: str, taken: set[str], *, directory: bool = False) -> str:
    candidate, n = name, 1
    while candidate.casefold() in taken:
        n += 1
        candidate = numbered(name, n, directory=directory)
    taken.add(candidate.casefold())
    return candidate


def _local_files(paths: list[str]) -> list[tuple[list[str], LocalFile]]:
    """Each local file with the subfolders it goes to: a directory becomes a folder of its
    name, recursively (sorted; only regular files)."""
    out: list[tuple[list[str], LocalFile]] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            out += local_tree(p)
        elif p.is_file():
            out.append(([], LocalFile.at(p)))
        elif p.exists():
            raise Invalid("not_a_file", f"{given}: not a regular file or directory")
        else:
            raise NotFound("no_such_file", f"{given}: no such file or directory")
    return out


# -- the verbs --------------------------------------------------------------------------


def login(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("FILES_URL") or ""
    if not url:
        if not sys.stdin.isatty():
            raise Usage("give --url (or FILES_URL)")
        url = input("Files URL (e.g. http://127.0.0.1:8080): ").strip()
    if args.api_key_stdin:
        key = sys.stdin.readline().strip()
    elif os.environ.get("FILES_API_KEY"):
        key = os.environ["FILES_API_KEY"]
    elif sys.stdin.isatty():
        key = getpass.getpass("API key: ").strip()
    else:
        key = sys.stdin.readline().strip()
    if not key:
        raise Usage("no API key given")
    with Client(url, api_key=key) as c:
        me = c.me()
    path = config.save(url.rstrip("/"), key)
    print(f"logged in to {url.rstrip('/')} as {me.email}; saved in {path}")
    return 0


def whoami(args: argparse.Namespace) -> int:
    with _client() as c:
        me = c.me()
        print(f"{me.email} ({me.name}, {me.org_role}) at {c.url}")
    return 0


def upload(args: argparse.Namespace) -> int:
    started = time.monotonic()
    local = _local_files(args.paths)
    if not local:
        raise Invalid("nothing_to_upload", "no files to upload in " + " ".join(args.paths))
    total = sum(f.size for _, f in local)
    if args.group or args.sequence or args.dicom:
        # One request or series for them all: a name it cannot take fails it, so here.
        for _, f in local:
            problem = name_problem(f.name)
            if problem:
                raise Invalid("invalid_name", f"{_shown(str(f.path))}: {problem}")
    with _client() as c:
        target = _target(c, args.to)
        if args.metadata and (args.group or args.sequence or args.dicom):
            raise Invalid(
                "metadata_not_taken", "--metadata is for files, not groups or DICOM series"
            )
        if args.group or args.sequence:
            name = args.group or args.sequence
            kind = "image_sequence" if args.sequence else "image_group"
            there = None if args.duplicates else _group_there(c, target, name, kind, local)
            if there is not None:
                # A run again (after an interruption, say): made already, not made twice.
                _note(
                    f"{kind} {name} in {target.full_path}: already there with these"
                    f" {_count(len(local), 'image')}; not sent again"
                )
                return 0
            bar = Bar(total, "upload")
            try:
                made = target.upload_image_group(
                    [f.path for _, f in local], name, sequence=bool(args.sequence), progress=bar
                )
            finally:
                bar.close()
            if args.json:
                _json_line(made.file)
            _note(f"{made.file.kind} {made.file.name} in {target.full_path}: {len(local)} images")
            return 0
        if args.dicom:
            return _upload_dicom(c, target, [f for _, f in local], total, args)
        given = _upload_metadata(args.metadata, [f.name for _, f in local])
        plan: dict[tuple[str, ...], list[LocalFile]] = {}
        # Refused here, not by the platform: a name it refuses fails the whole request
        # it is in, and one that is not UTF-8 cannot even be sent.
        unnamed: list[Refusal] = []
        for sub, f in local:
            problem = next(
                filter(
                    None, [*(name_problem(s, "folder name") for s in sub), name_problem(f.name)]
                ),
                None,
            )
            if problem:
                unnamed.append(Refusal(f, "invalid_name", problem))
            else:
                plan.setdefault(tuple(sub), []).append(f.described(given.get(f.name)))
        bar = Bar(sum(f.size for files in plan.values() for f in files), "upload")
        try:
            report = target.upload_tree(
                plan,
                progress=bar,
                parts_from=args.parts_from,
                skip_existing=not args.duplicates,
                journal=Journal(
                    config.state_dir() / "uploads.json", retry_refused=args.retry_refused
                ),
                parallel=args.parallel,
                keep_going=True,
            )
        finally:
            bar.close()
    report.refused[:0] = unnamed
    if args.json:
        for sent in report.uploaded:
            _json_line(sent)
    for refusal in report.refused:
        print(
            f"files upload: {_shown(str(refusal.file.path))}: refused: {refusal.code}:"
            f" {refusal.message}",
            file=sys.stderr,
        )
    seconds = time.monotonic() - started
    # What this run sent: the files already there (skipped) and the parts an earlier
    # run had sent of a file it finished are said apart.
    earlier = (
        f"; {_size(report.earlier_bytes)} more sent by an earlier run"
        if report.earlier_bytes
        else ""
    )
    skipped = f"; {len(report.skipped)} already there" if report.skipped else ""
    refused = f"; {len(report.refused)} refused" if report.refused else ""
    summary = (
        f"{_count(len(report.uploaded), 'file')} sent ({_size(report.bytes)}{earlier})"
        f" to {target.full_path} in {seconds:.1f} s{skipped}{refused}"
    )
    if report.refused:
        print(f"files upload: {summary}", file=sys.stderr)
        return REFUSED
    _note(summary)
    return 0


def _target(c: Client, path: str) -> SyncFolder:
    """The folder at `path`, made with those missing along it."""
    try:
        # A file's path is refused: a folder of its name would be made beside it.
        return _folder(c, path, making=True)
    except NotFound:
        pass
    # The top-level folder is one the user can see (theirs, or shared with them: the web
    # app's "All folders"); one is made only when none has that name.
    top = split_path(path)[0]
    new_top = not _looks_like_id(top) and not any(
        f.name.casefold() == top.casefold() for f in c.list_folders()
    )
    try:
        target = c.make_folders(path)
    except Forbidden as error:
        error.message = f"{path}: not there, and not made: {error.message}"
        raise
    _typed(target, path)
    if new_top:  # said, as it may be a typo
        _note(f"made the top-level folder {top} (none you can see has that name)")
    return target


GROUP_KINDS = ("image_group", "image_sequence")


def _group_there(
    c: Client,
    target: SyncFolder,
    name: str,
    kind: str,
    local: list[tuple[list[str], LocalFile]],
) -> SyncFile | None:
    """The image group (or sequence) `name` in `target` that holds these images (same
    names, sizes and sha256; a sequence's in this order), as a run again of the same
    upload finds it; None when the folder has none of that name. One of that name with
    other images, or of the other kind, is refused: the same name for other images is
    most likely a mistake (`--duplicates` makes a second one)."""
    named = [
        f for f in target.items(kind=list(GROUP_KINDS)) if isinstance(f, File) and f.name == name
    ]
    if not named:
        return None
    files = [f for _, f in local]
    digests: dict[Path, str] = {}
    for found in named:
        if found.kind == kind and _holds_images(c, found, files, digests):
            return found
    other = next((f.kind for f in named if f.kind == kind), named[0].kind)
    what = ", with other images" if other == kind else f" (not an {kind})"
    raise Conflict(
        "name_taken",
        f"{target.full_path}/{name}: an {other} of that name is there already{what};"
        " give another name, or --duplicates to make one more",
        {"name": name, "folder_id": target.id, "ids": [f.id for f in named]},
    )


def _holds_images(
    c: Client, group: SyncFile, files: list[LocalFile], digests: dict[Path, str]
) -> bool:
    facts = group.group or c.get_file(group.id).group
    if facts is None:
        return False
    count = getattr(facts, "images", None) or len(facts.file_ids)
    if count != len(files):
        return False
    if len(facts.file_ids) == count:
        images, missing = c.lookup_files(facts.file_ids)  # in the group's order
        if missing:
            return False
    else:  # a group too large for its ids to be listed: the folder of its images
        images = list(c.get_folder(facts.constituent_folder_id).files())
    if sorted((i.name, i.size) for i in images) != sorted((f.name, f.size) for f in files):
        return False
    ordered = group.kind == "image_sequence" and len(facts.file_ids) == count
    if ordered and [i.name for i in images] != [f.name for f in files]:
        return False
    for f in files:
        if f.path not in digests:
            digests[f.path] = sha256_of(f.path)
    there = sorted((i.name, i.sha256) for i in images)
    return there == sorted((f.name, digests[f.path]) for f in files)


# A local path's control characters as escapes: a file name may hold a terminal's
# escape sequences, or characters that make it show as another (`misleading`).
_ESCAPED = {c: repr(chr(c))[1:-1] for c in (*range(0x20), *range(0x7F, 0xA0))}


def _shown(path: str) -> str:
    escaped = path.translate(_ESCAPED)
    if any(misleading(c) or is_tag(c) for c in escaped):
        escaped = "".join(_escape(c) if misleading(c) or is_tag(c) else c for c in escaped)
    return escaped


def _escape(c: str) -> str:
    return f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"


def _upload_metadata(path: str | None, names: list[str]) -> dict[str, dict[str, Any]]:
    """--metadata's file: a JSON object from a file name (of those uploaded) to its
    metadata object."""
    if path is None:
        return {}
    try:
        given = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise Invalid("invalid_metadata", f"{path}: {error}", {"path": path}) from None
    if not isinstance(given, dict) or not all(isinstance(v, dict) for v in given.values()):
        raise Invalid(
            "invalid_metadata",
            f"{path}: must be a JSON object from a file name to its metadata object",
            {"path": path},
        )
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise Invalid(
            "unknown_file_name",
            f"{path} names files not uploaded: {', '.join(unknown[:20])}",
            {"names": unknown[:20]},
        )
    return given


def _upload_dicom(
    c: Client, target: SyncFolder, files: list[LocalFile], total: int, args: argparse.Namespace
) -> int:
    jobs: list[Job[Sync]] = []
    bar = Bar(total, "upload")
    try:
        for start in range(0, len(files), 10_000):
            batch = files[start : start + 10_000]
            jobs.append(target.upload_dicom([f.path for f in batch], progress=bar))
    finally:
        bar.close()
    failed = 0
    for job in jobs:
        done = _whole(_watch(job, "series"))
        for f in done.files:
            if args.json:
                _json_line(f)
            else:
                _note(f"{f.name}: {f.dicom.instances if f.dicom else '?'} instances")
        for e in done.errors:
            failed += 1
            print(f"files upload: {e.name}: {e.code}: {e.message}", file=sys.stderr)
    return REFUSED if failed else 0


def _watch(job: Job[Sync], label: str) -> Job[Sync]:
    bar = Bar(max(job.progress.total, 1), label, unit="item")

    def moved(j: Job[Sync]) -> None:
        if j.progress.bytes:
            bar.set(j.progress.bytes.get("done", 0), max(j.progress.bytes.get("total", 0), 1))
        else:
            bar.set(j.progress.done, max(j.progress.total, 1))

    try:
        return job.wait(progress=moved)
    finally:
        bar.close()


def _whole(job: Job[Sync], *, files: bool = True) -> Job[Sync]:
    """The job with every one of its errors (and, with `files`, its files): its answer
    holds the first 1,000 of each, the rest are paged (a script reading --json, or the
    refused objects named on stderr, expects them all)."""
    update: dict[str, Any] = {}
    if job.next_errors_cursor:
        update |= {"errors": list(job.all_errors()), "next_errors_cursor": None}
    if files and job.next_files_cursor:
        update |= {"files": list(job.all_files()), "next_files_cursor": None}
    return job.model_copy(update=update) if update else job


def _file_count(job: Job[Sync]) -> int:
    return job.file_count if job.file_count is not None else len(job.files)


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    """`--kind`, `--name`, `--meta KEY=VALUE`, `--in-dataset`/`--no-dataset`, `--order`,
    `--desc` as a listing's or search's keywords."""
    metadata: dict[str, list[str]] = {}
    for pair in args.meta or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Usage(f"--meta takes KEY=VALUE, not {pair!r}")
        metadata.setdefault(key, []).append(value)
    found: dict[str, Any] = {
        "kind": args.kind or None,
        "metadata": metadata or None,
        "in_dataset": args.in_dataset,
        "order": args.order,
        "desc": args.desc,
    }
    if getattr(args, "name", None):
        found["q"] = args.name
    return found


def _kind_refused(error: Invalid) -> str | None:
    """A `--kind` the platform does not know, said as a misuse: the kind, the closest of
    the platform's kinds and the list (the platform's answer holds them; the command keeps
    no list of its own to fall behind it). None for any other refusal."""
    if error.details.get("parameter") != "kind":
        return None
    given = error.details.get("kind")
    kinds = error.details.get("kinds")
    if not isinstance(given, str) or not isinstance(kinds, list):
        return f"--kind: {error.message}"  # a platform that answers no list
    names = [str(k) for k in kinds]
    close = difflib.get_close_matches(given, names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"--kind {given!r} is not a kind{hint}; the kinds: {', '.join(names)}"


def ls(args: argparse.Namespace) -> int:
    filters = _filters(args)
    with _client() as c:
        if not args.path or args.path.strip("/") == "":
            if args.meta or args.in_dataset is not None:
                raise Usage("--meta and --in-dataset filter files: name a folder to list")
            if args.kind:
                # The top level is not listed by kind, so the platform is asked about the
                # kinds apart (one page of a search by them): a typo is refused, as in a
                # folder, rather than shown as an empty top level.
                next(iter(c.search(kind=args.kind)), None)
            # The top level holds folders only: a kind or a name filters them here.
            listed: Iterator[SyncFolder | SyncFile] = (
                f
                for f in c.list_folders()
                if (not args.kind or "folder" in args.kind)
                and (not args.name or args.name.casefold() in f.name.casefold())
            )
        else:
            found = _resolve(c, args.path)
            listed = iter(found.items(**filters)) if isinstance(found, Folder) else iter([found])
        filtered = bool(args.kind or args.meta or args.name or args.in_dataset is not None)
        rows = []
        shown = 0
        for item in listed:
            shown += 1
            if args.json:
                _json_line(item)
                continue
            if isinstance(item, Folder):
                count = _count(item.folder_count + item.file_count, "item")
                rows.append([item.id, "folder", count, _when(item.created_at), item.name + "/"])
            else:
                rows.append(
                    [item.id, item.kind, _size(item.size), _when(item.created_at), item.name]
                )
        if not args.json:
            _table(rows, ["ID", "KIND", "SIZE", "CREATED", "NAME"])
        if not shown:
            where = args.path or "the top level"
            _nothing(f"nothing in {where} matches" if filtered else f"{where}: empty")
    return 0


def search(args: argparse.Namespace) -> int:
    filters = _filters(args)
    with _client() as c:
        within = _folder(c, args.within) if args.within else None
        rows = []
        shown = 0
        for n, hit in enumerate(c.search(args.text, folder=within, **filters)):
            if args.limit and n >= args.limit:
                break
            shown += 1
            if args.json:
                _json_line(hit)
                continue
            if isinstance(hit, Folder):
                rows.append([hit.id, "folder", "-", hit.full_path + "/"])
            else:
                rows.append([hit.id, hit.kind, _size(hit.size), _path_of(hit)])
        if not args.json:
            _table(rows, ["ID", "KIND", "SIZE", "PATH"])
        if not shown:
            _nothing(f"nothing matches {args.text!r}" if args.text else "nothing matches")
    return 0


def mv(args: argparse.Namespace) -> int:
    with _client() as c:
        sources = [_resolve(c, p) for p in args.sources]
        try:
            dest = _resolve(c, args.dest)
        except NotFound:
            dest = None
        if isinstance(dest, Folder):
            impact = c.move(sources, dest, dry_run=args.dry_run)
            verb = "would move" if args.dry_run else "moved"
            print(f"{verb} {len(sources)} item(s) into {dest.full_path}")
            _print_datasets(impact.datasets, args.dry_run)
            return 0
        if dest is not None:
            raise Conflict("not_a_folder", f"{args.dest}: is a file; name a folder to move into")
        # `mv a/x b/y`, y new: move into b, named y.
        if len(sources) != 1:
            raise NotFound("not_found", f"{args.dest}: no such folder")
        names = split_path(args.dest)
        item = sources[0]
        if len(names) == 1 and isinstance(item, Folder) and item.parent_id is None:
            # A top-level folder renamed: it stays at the top level.
            if not args.dry_run:
                item = item.rename(names[0])
            print(f"{'would rename' if args.dry_run else 'renamed'} to {names[0]}")
            return 0
        if len(names) < 2:
            raise NotFound("not_found", f"{args.dest}: no such folder")
        parent = _folder(c, "/".join(names[:-1]))
        if args.dry_run:
            print(f"would move {_path_of(item)} to {parent.full_path}/{names[-1]}")
            return 0
        current = item.folder_id if isinstance(item, File) else item.parent_id
        if current != parent.id:
            item = item.move_to(parent)
        if item.name != names[-1]:
            item = item.rename(names[-1])
        print(f"moved to {parent.full_path}/{item.name}")
    return 0


def _print_datasets(datasets: list[Any], dry_run: bool) -> None:
    for d in datasets:
        verb = "would lose" if dry_run else "loses"
        print(f"  dataset {d.name}: {verb} {d.links_removed} link(s)")


def rm(args: argparse.Namespace) -> int:
    with _client() as c:
        items = [_resolve(c, p) for p in args.paths]
        impact = c.delete(items, dry_run=True)
        verb = "would delete" if args.dry_run else "deleting"
        print(f"{verb} {impact.folders or 0} folder(s) and {impact.files or 0} file(s)")
        _print_datasets(impact.datasets, args.dry_run)
        if not args.dry_run:
            done = c.delete(items)
            print(f"deleted {done.deleted if done.deleted is not None else len(items)} item(s)")
    return 0


def duplicates(args: argparse.Namespace) -> int:
    with _client() as c:
        found = _resolve(c, args.path)
        if not isinstance(found, File):
            raise Usage(f"{args.path} is a folder: name a file")
        rows = []
        for other in c.duplicates_of(found):
            if args.json:
                _json_line(other)
            else:
                rows.append([other.id, _size(other.size), other.folder_id, other.name])
        if not args.json:
            _table(rows, ["ID", "SIZE", "FOLDER", "NAME"])
            if not rows:
                _nothing(f"no other file you may see holds the bytes of {args.path}")
    return 0


def trash(args: argparse.Namespace) -> int:
    with _client() as c:
        if args.action == "empty":
            done = c.empty_trash()
            print(f"purged {done.purged_folders} folder(s) and {done.purged_files} file(s)")
            return 0
        listed = list(c.trash())
        if args.action in ("purge", "restore"):
            if not args.ids:
                raise Usage("name the items: their ids or the paths they had (files trash)")
            chosen = [_in_trash(c, listed, ref) for ref in args.ids]
            files = [i.id for i in chosen if i.type == "file"]
            folders = [i.id for i in chosen if i.type == "folder"]
            if args.action == "purge":
                gone = c.purge(files=files, folders=folders)
                print(f"purged {gone.purged_folders} folder(s) and {gone.purged_files} file(s)")
            else:
                back = c.restore(files=files, folders=folders)
                print(
                    f"restored {back.restored_folders} folder(s) and {back.restored_files} file(s)"
                )
            return 0
        if not listed:
            _nothing("the trash is empty")
            return 0
        if args.json:
            for item in listed:
                print(item.model_dump_json())
            return 0
        rows = [
            [
                i.type,
                i.id,
                i.name,
                _size(i.size),
                f"{i.deleted_at:%Y-%m-%d %H:%M}",
                f"{i.purge_at:%Y-%m-%d}",
            ]
            for i in listed
        ]
        _table(rows, ["TYPE", "ID", "NAME", "SIZE", "DELETED", "PURGED ON"])
    return 0


def _in_trash(c: Client, listed: list[TrashItem], ref: str) -> TrashItem:
    """A trash item by its id, or by the path it had: a person deletes `proj/a.png` and
    restores `proj/a.png`, not an id they never saw."""
    for item in listed:
        if item.id == ref:
            return item
    names = split_path(ref)
    if not names:
        raise Usage(f"{ref}: not in the trash")
    parent_id: str | None = None
    if len(names) > 1:
        try:
            parent_id = _folder(c, "/".join(names[:-1])).id
        except NotFound:
            # Its folder is not where the path says (in the trash itself, say): what is
            # in the trash is that folder, with the item inside.
            raise Usage(f"{ref}: not in the trash (is a folder above it there?)") from None
    found = [
        i
        for i in listed
        if i.name == names[-1] and (i.folder_id if i.type == "file" else i.parent_id) == parent_id
    ]
    if not found:
        raise Usage(f"{ref}: not in the trash")
    if len(found) > 1:
        ids = ", ".join(f"{i.id} (deleted {i.deleted_at:%Y-%m-%d %H:%M})" for i in found)
        raise Usage(f"{ref}: {len(found)} items in the trash had that path: {ids}; give its id")
    return found[0]


def download(args: argparse.Namespace) -> int:
    out = Path(args.output)
    with _client() as c:
        found = _resolve(c, args.path)
        if isinstance(found, File):
            files = [(found, out / local_name(found))]
        else:
            files = list(_walk(found, out / safe_name(found.name)))
        total = sum(f.size for f, _ in files)
        bar = Bar(total, "download")
        met: dict[Path, str] = {}
        try:
            written = c.download_many(
                files,
                progress=bar,
                parallel=args.parallel,
                told=lambda path, what: met.__setitem__(path, what),
                overwrite=args.overwrite,
            )
        finally:
            bar.close()
    # What is there with other bytes (a local edit, an older copy) is not lost silently:
    # left as it is, each named, unless --overwrite.
    differ = [p for p, what in met.items() if what == "differs"]
    for path in sorted(differ):
        print(
            f"files download: {path}: there already, with other bytes than the platform's:"
            " left as it is (--overwrite writes over it)",
            file=sys.stderr,
        )
    if isinstance(found, File) and differ:
        return 1
    for path in written:
        if args.verbose and path not in differ:
            print(path)
    # As `files upload` says it: what this run fetched, apart from what was there already
    # (a run again after an interruption), and what it wrote over because it differed.
    kept = {p for p, what in met.items() if what in ("kept", "differs")}
    replaced = sum(1 for what in met.values() if what == "replaced")
    fetched = sum(f.size for f, dest in files if Path(dest) not in kept)
    summary = f"downloaded {len(written) - len(kept)} file(s) ({_size(fetched)}) into {out}"
    if replaced:
        summary += f" ({replaced} differed from the copy there: downloaded again)"
    if len(kept) > len(differ):
        summary += f"; {len(kept) - len(differ)} already there"
    if differ:
        summary += f"; {len(differ)} left as they were: other bytes there"
        print(f"files download: {summary}", file=sys.stderr)
        return 1
    _note(summary)
    return 0


def _dataset(c: Client, ref: str) -> Dataset[Sync]:
    try:
        found = c.get_dataset(ref) if _looks_like_id(ref) else _dataset_named(c, ref)
    except NotFound:
        raise NotFound("not_found", f"dataset {ref}: no such dataset") from None
    # A refusal says "dataset <id>": said with its name.
    _KNOWN.setdefault(found.id, found.name)
    return found


def _dataset_named(c: Client, name: str) -> Dataset[Sync]:
    found = [d for d in c.list_datasets() if d.name == name]
    if not found:
        raise NotFound("not_found", f"dataset {name}: no such dataset")
    if len(found) > 1:
        # Which one is meant is for the user to say (exit 2), and they need the ids to.
        made = ", ".join(
            f"{d.id} ({d.file_count} files, made {d.created_at:%Y-%m-%d %H:%M})"
            if d.created_at
            else d.id
            for d in found
        )
        raise Usage(f"dataset {name}: {len(found)} datasets have that name: {made}; give its id")
    return found[0]


def _looks_like_id(text: str) -> bool:
    import uuid

    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


def _files_below(c: Client, paths: list[str]) -> list[SyncFile]:
    out: list[SyncFile] = []
    for p in paths:
        found = _resolve(c, p)
        if isinstance(found, File):
            out.append(found)
        else:
            out += [f for f, _ in _walk(found, Path("."))]
    return out


def datasets(args: argparse.Namespace) -> int:
    with _client() as c:
        if args.action == "create":
            # A second dataset of a name makes every later `datasets ... NAME` ambiguous,
            # and a script run again would make one each run.
            taken = [d for d in c.list_datasets() if d.name == args.name]
            if taken and not args.duplicates:
                raise Conflict(
                    "name_taken",
                    f"dataset {args.name} exists already ({taken[0].id});"
                    " --duplicates makes another of that name",
                )
            synced = _folder(c, args.synced_to) if args.synced_to else None
            made = c.create_dataset(
                args.name,
                description=args.description,
                synced_folder=synced,
                backing_folder=args.with_folder,
            )
            if args.json:
                _json_line(made)
            else:
                print(f"created dataset {made.name} ({made.id}), {made.file_count} file(s)")
        elif args.action == "ls":
            if args.dataset:
                d = _dataset(c, args.dataset)
                rows, shown = [], 0
                for f in d.files():
                    shown += 1
                    if args.json:
                        _json_line(f)
                    else:
                        rows.append([f.id, f.kind, _size(f.size), f.name])
                _table(rows, ["ID", "KIND", "SIZE", "NAME"])
                if not shown:
                    _nothing(f"{d.name}: no files (that you may see)")
            else:
                rows, shown = [], 0
                for d in c.list_datasets():
                    shown += 1
                    if args.json:
                        _json_line(d)
                        continue
                    sync = "synced" if d.synced else "-"
                    rows.append([d.id, str(d.file_count), sync, _when(d.created_at), d.name])
                _table(rows, ["ID", "FILES", "SYNC", "CREATED", "NAME"])
                if not shown:
                    _nothing("no datasets (that you may see)")
        elif args.action == "add":
            d = _dataset(c, args.dataset)
            files = _files_below(c, args.paths)
            added = d.add(files) if files else 0
            print(f"added {added} file(s) to {d.name}")
        elif args.action == "rm":
            d = _dataset(c, args.dataset)
            linked = {f.id for f in d.files()}
            files = []
            for p in args.paths:
                found = _resolve(c, p)
                if isinstance(found, Folder):
                    # Those below it that are in the dataset (a folder holds others too).
                    files += [f for f, _ in _walk(found, Path(".")) if f.id in linked]
                elif found.id in linked:
                    files.append(found)
                else:
                    raise NotFound("not_in_dataset", f"{p}: not in dataset {d.name}")
            removed = d.remove_files(files)
            print(f"removed {removed} file(s) from {d.name}")
        elif args.action == "delete":
            d = _dataset(c, args.dataset)
            d.delete()
            print(f"deleted dataset {d.name}")
        elif args.action == "share":
            _share_dataset(c, args)
        elif args.action == "unshare":
            _unshare_dataset(c, args)
    return 0


def _who(x: DatasetCollaborator) -> str:
    return x.email or x.user_id


def _share_dataset(c: Client, args: argparse.Namespace) -> None:
    d = _dataset(c, args.dataset)
    if not args.emails:
        listed = d.collaborators()
    elif not args.role:
        raise Usage("give --role (admin, editor or user)")
    else:
        before = {x.user_id: x.role for x in d.collaborators()}
        listed = d.share(args.emails, args.role)
        wanted = {e.casefold() for e in args.emails}
        for x in listed:
            old = before.get(x.user_id)
            if (x.email or "").casefold() in wanted and old not in (None, x.role):
                _note(f"{x.email}: {old} -> {x.role} on {args.dataset}")
    for x in listed:
        _KNOWN.setdefault(x.user_id, _who(x))
    rows = [[_who(x), x.role, "creator" if x.user_id == d.created_by else "shared"] for x in listed]
    _table(rows, ["USER", "ROLE", "AS"])


def _unshare_dataset(c: Client, args: argparse.Namespace) -> None:
    d = _dataset(c, args.dataset)
    listed = d.collaborators()
    for x in listed:
        _KNOWN.setdefault(x.user_id, _who(x))
    gone: list[DatasetCollaborator] = []
    for who in dict.fromkeys(args.emails):
        # A user id too: where the platform could not name them, the listing shows ids.
        found = next(
            (x for x in listed if who.casefold() in ((x.email or "").casefold(), x.user_id)),
            None,
        )
        if found is None:
            raise NotFound("not_found", f"dataset {args.dataset}: {who} has no role on it")
        if found.user_id == d.created_by:
            # Refused here, before the others named are removed: all or none.
            raise Conflict(
                "creator_stays_admin",
                f"dataset {args.dataset}: {who} created it and stays its admin",
            )
        gone.append(found)
    for x in gone:
        d.unshare(x)
        print(f"removed {_who(x)} ({x.role}) from {d.name}")


def _collaborator_rows(listed: list[Collaborator]) -> list[list[str]]:
    return [
        [x.email or x.user_id, x.role, "inherited" if x.inherited_from else "here"] for x in listed
    ]


def _admin_kept(error: Conflict, path: str, people: dict[str, str]) -> Conflict:
    """A folder admin's grant refused: said with the folder's path and the person's
    email rather than their ids."""
    if error.code == "admin_collaborator":
        who = people.get(str(error.details.get("user_id")), "that user")
        error.message = (
            f"{path}: {who} is an admin of it: an admin of a folder cannot be removed and"
            " their role cannot be changed (an organisation admin can, to transfer it)"
        )
    return error


@contextlib.contextmanager
def _on(path: str) -> Iterator[None]:
    """A refusal about the folder at `path` that does not name it ("managing this
    folder's collaborators: this needs the admin role"), said with the path."""
    try:
        yield
    except Forbidden as error:
        if path not in _said(error):
            error.message = f"{path}: {error.message}"
        raise


def share(args: argparse.Namespace) -> int:
    with _client() as c:
        folder = _folder(c, args.path)
        if args.emails:
            if not args.role:
                raise Usage("give --role (admin, editor or user)")
            before = folder.collaborators()
            people = {x.user_id: x.email or x.user_id for x in before}
            try:
                with _on(args.path):
                    # Someone with a role here already has it changed to this one.
                    listed = folder.add_collaborators(args.emails, args.role)
            except Conflict as error:
                raise _admin_kept(error, args.path, people) from None
            had = {(x.user_id, x.role) for x in before if not x.inherited_from}
            wanted = {e.casefold() for e in args.emails}
            for x in listed:
                if x.inherited_from or (x.email or "").casefold() not in wanted:
                    continue
                old = next((r for u, r in had if u == x.user_id and r != x.role), None)
                if old is not None:
                    _note(f"{x.email}: {old} -> {x.role} on {args.path}")
        else:
            listed = folder.collaborators()
        _table(_collaborator_rows(listed), ["USER", "ROLE", "GRANTED"])
    return 0


def unshare(args: argparse.Namespace) -> int:
    with _client() as c:
        folder = _folder(c, args.path)
        listed = folder.collaborators()
        people = {x.user_id: x.email or x.user_id for x in listed}
        gone: list[Collaborator] = []
        for email in dict.fromkeys(args.emails):
            theirs = [x for x in listed if (x.email or "").casefold() == email.casefold()]
            here = next((x for x in theirs if not x.inherited_from), None)
            if here is not None:
                gone.append(here)
                continue
            if not theirs:
                raise NotFound("not_found", f"{args.path}: {email} has no role on it")
            above = ", ".join(
                f"{x.role} on {_KNOWN.get(x.inherited_from or '', x.inherited_from)}"
                for x in theirs
            )
            raise Invalid(
                "inherited_role",
                f"{args.path}: {email}'s role is granted above it ({above}): unshare it there",
            )
        for x in gone:
            try:
                with _on(args.path):
                    folder.remove_collaborator(x)
            except Conflict as error:
                raise _admin_kept(error, args.path, people) from None
            print(f"removed {x.email} ({x.role}) from {args.path}")
    return 0


def jobs(args: argparse.Namespace) -> int:
    with _client() as c:
        fetch = c.cancel_job if args.action == "cancel" else c.get_job
        job = fetch(args.job_id)
        done = _watch(job, job.kind or "job") if args.action == "watch" else job
        done = _whole(done, files=args.json)
        if args.json:
            _json_line(done)
        else:
            print(_job_line(done))
        for e in done.errors:
            print(f"files jobs: {e.name}: {e.code}: {e.message}", file=sys.stderr)
        return 0 if done.status == ("cancelled" if args.action == "cancel" else "done") else 1


def reencode(args: argparse.Namespace) -> int:
    with _client() as c:
        files = []
        for ref in args.paths:
            found = c.get_file(ref) if _looks_like_id(ref) else _resolve(c, ref)
            if not isinstance(found, File):
                raise Usage(f"{ref} is a folder: name videos or image sequences")
            files.append(found)
        job = c.re_encode(files)
        done = _whole(_watch(job, "re-encode") if args.wait else job, files=args.json)
        if args.json:
            _json_line(done)
        else:
            p = done.progress
            print(f"job {done.id}: {done.status}, {p.done}/{p.total}")
        for e in done.errors:
            print(f"files reencode: {e.name}: {e.code}: {e.message}", file=sys.stderr)
        return 0 if done.status in ("done", "running") and not done.errors else 1


def _integration(c: Client, ref: str) -> Integration[Sync]:
    """An integration the caller may use, by id or name."""
    if _looks_like_id(ref):
        try:
            return c.get_integration(ref)
        except NotFound:
            raise NotFound(
                "not_found", f"integration {ref}: no such integration (that you may use)"
            ) from None
    found = [i for i in c.list_integrations() if i.name == ref]
    if not found:
        raise NotFound("not_found", f"integration {ref}: no such integration (that you may use)")
    if len(found) > 1:
        ids = ", ".join(i.id for i in found)
        raise Usage(
            f"integration {ref}: {len(found)} integrations have that name: {ids}; give its id"
        )
    return found[0]


def _keys_from(path: str) -> list[str]:
    """Object keys, one a line (`-`: stdin); blank lines skipped."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise OSError(error.errno, error.strerror, path) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _manifest(path: str) -> dict[str, Any]:
    try:
        given = json.loads(Path(path).read_text())
    except ValueError as error:
        raise Invalid("invalid_manifest", f"{path}: not JSON: {error}", {"path": path}) from None
    if not isinstance(given, dict):
        raise Invalid("invalid_manifest", f"{path}: must be a JSON object", {"path": path})
    return given


def _job_line(job: Job[Sync]) -> str:
    p = job.progress
    return f"job {job.id}: {job.status}, {p.done}/{p.total}, {_file_count(job)} file(s)"


def import_(args: argparse.Namespace) -> int:
    keys = list(args.keys)
    if args.keys_from:
        keys += _keys_from(args.keys_from)
    if args.keys_from and not keys:
        raise Usage(f"--keys-from {args.keys_from}: no keys in it")
    if not (keys or args.prefix is not None or args.manifest):
        raise Usage("name what to import: KEY..., --keys-from FILE, --prefix or --manifest")
    manifest = _manifest(args.manifest) if args.manifest else None
    with _client() as c:
        source = _integration(c, args.integration)
        target = _target(c, args.to)
        job = target.import_objects(
            source, keys=keys or None, prefix=args.prefix, manifest=manifest
        )
        done = _whole(_watch(job, "import") if args.wait else job, files=args.json)
    if args.json:
        _json_line(done)
    else:
        print(_job_line(done))
    for e in done.errors:
        print(f"files import: {e.name or '-'}: {e.code}: {e.message}", file=sys.stderr)
    if done.status in ("failed", "cancelled"):
        return 1
    if done.errors:
        print(
            f"files import: {_count(_file_count(done), 'file')} imported to {target.full_path};"
            f" {len(done.errors)} refused",
            file=sys.stderr,
        )
        return REFUSED
    if args.wait:
        _note(f"{_count(_file_count(done), 'file')} imported to {target.full_path}")
    return 0


def sync(args: argparse.Namespace) -> int:
    with _client() as c:
        if args.integration:
            source = _integration(c, args.integration)
            parent, _, name = args.path.rstrip("/").rpartition("/")
            made = c.create_synced_folder(
                name,
                integration=source,
                prefix=args.prefix or "",
                parent=_target(c, parent) if parent else None,
                sync_interval_s=args.interval,
            )
            print(f"created {made.name} ({made.id}) following {args.prefix or '(the bucket)'}")
            job = c.get_job(made.sync_job_id or "")
        else:
            if args.prefix is not None or args.interval is not None:
                raise Usage("--prefix and --interval go with --integration (a new synced folder)")
            job = c.sync_folder(_folder(c, args.path))
        done = _whole(_watch(job, "sync") if not args.no_wait else job, files=False)
        print(f"job {done.id}: {done.status}, {_file_count(done)} new file(s)")
        for e in done.errors:
            print(f"files sync: {e.name}: {e.code}: {e.message}", file=sys.stderr)
        return 0 if done.status in ("done", "running") else 1


# Where `files integrations add` takes a bucket's keys from: the variables the AWS tools
# read, never the command line (any user of the machine may read another's argv).
KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def _bucket_keys(from_stdin: bool) -> tuple[str, str, str | None]:
    if from_stdin and sys.stdin.isatty():
        # Asked, the secrets unechoed (as `files login` asks for the API key).
        access = input("access key: ").strip()
        secret = getpass.getpass("secret key: ").strip()
        token = getpass.getpass("session token (Enter for none): ").strip()
        if not access or not secret:
            raise Usage("--keys-stdin: an access key and a secret key are needed")
        return access, secret, token or None
    if from_stdin:
        lines = [sys.stdin.readline().strip() for _ in range(3)]
        access, secret, token = lines
        if not access or not secret:
            raise Usage(
                "--keys-stdin: give the access key, then the secret key (then a session"
                " token, if any), one a line"
            )
        return access, secret, token or None
    access, secret, token = (os.environ.get(v, "").strip() for v in KEY_VARIABLES)
    if not access or not secret:
        raise Usage(
            "give the bucket's keys in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and"
            " AWS_SESSION_TOKEN for temporary ones), or --keys-stdin"
        )
    return access, secret, token or None


def integrations(args: argparse.Namespace) -> int:
    with _client() as c:
        if args.action == "ls":
            shown = 0
            rows = []
            for i in c.list_integrations():
                shown += 1
                if args.json:
                    _json_line(i)
                else:
                    rows.append([i.id, i.provider, i.bucket, i.endpoint or "-", i.name])
            _table(rows, ["ID", "PROVIDER", "BUCKET", "ENDPOINT", "NAME"])
            if not shown:
                _nothing("no integrations (that you may use)")
        elif args.action == "add":
            access, secret, token = _bucket_keys(args.keys_stdin)
            made = c.create_integration(
                args.name,
                bucket=args.bucket,
                access_key=access,
                secret_key=secret,
                session_token=token,
                endpoint=args.endpoint,
                region=args.region,
                provider=args.provider,
            )
            if args.json:
                _json_line(made)
            else:
                where = f" at {made.endpoint}" if made.endpoint else ""
                print(f"integration {made.id}: {made.name}, {made.provider} {made.bucket}{where}")
                if made.events_token:
                    print(f"events token (shown once): {made.events_token}")
        elif args.action == "rotate":
            new_secret = sys.stdin.readline().strip() if args.secret_key_stdin else None
            found = c.rotate_integration(
                _integration(c, args.integration),
                access_key=args.access_key,
                secret_key=new_secret,
                events_token=args.events_token,
            )
            print(f"integration {found.id}: rotated")
            if found.events_token:
                print(f"events token (shown once): {found.events_token}")
        elif args.action in ("delete", "rm"):
            found = _integration(c, args.integration)
            found.delete()
            print(f"deleted integration {found.name} ({found.id})")
        elif args.action in ("share", "unshare"):
            _share_integration(c, args)
    return 0


def _share_integration(c: Client, args: argparse.Namespace) -> None:
    """Who may use an integration, added to or taken from. The API's PATCH replaces the
    whole list (and takes no version), so it is read, changed and written back."""
    found = _integration(c, args.integration)
    if found.shared_with is None:  # shown to org admins only
        doing = "seeing or changing who may use it"
        raise Forbidden(
            "forbidden",
            f"integration {args.integration}: {doing} needs the organisation admin role",
        )
    users = {u.id: u for u in c.list_users()}
    by_email = {u.email.casefold(): u for u in users.values()}
    unknown = [e for e in args.emails if e.casefold() not in by_email]
    if unknown:
        raise Invalid(
            "unknown_emails",
            f"no user has these emails: {', '.join(unknown)}",
            {"unknown_emails": unknown},
        )
    named = [by_email[e.casefold()] for e in dict.fromkeys(args.emails)]
    before = list(found.shared_with or [])
    if args.action == "share":
        after = before + [u.id for u in named if u.id not in before]
    else:
        absent = [u.email for u in named if u.id not in before]
        if absent:
            raise NotFound(
                "not_found",
                f"integration {args.integration}: not shared with {', '.join(absent)}",
            )
        after = [u for u in before if u not in {x.id for x in named}]
    if after != before:
        found = found.share_with(after)
    if args.action == "unshare":
        for u in named:
            print(f"removed {u.email} from {found.name}")
        return
    rows = [[users[u].email if u in users else u] for u in found.shared_with or []]
    _table(rows, ["USER"])
    if not rows:
        _nothing(f"{found.name}: shared with nobody (organisation admins may use it)")


def _user(c: Client, ref: str | None) -> User:
    """A user by email or id (org admins); the caller without one."""
    if ref is None or ref == "me":
        return c.me()
    key = ref.casefold()
    for u in c.list_users():
        if u.id == ref or u.email.casefold() == key:
            return u
    raise NotFound("not_found", f"{ref}: no such user")


def users(args: argparse.Namespace) -> int:
    with _client() as c:
        if args.action == "ls":
            rows = []
            for u in c.list_users():
                if args.json:
                    _json_line(u)
                else:
                    rows.append([u.id, u.org_role, _when(u.created_at), u.email, u.name])
            _table(rows, ["ID", "ROLE", "CREATED", "EMAIL", "NAME"])
        elif args.action == "add":
            made = c.create_user(
                args.email, args.name, org_role="admin" if args.admin else "member"
            )
            if args.json:
                _json_line(made)
            else:
                print(f"user {made.id}: {made.email} ({made.name}, {made.org_role})")
                print(f"API key (shown once): {made.api_key}")
    return 0


def keys(args: argparse.Namespace) -> int:
    with _client() as c:
        if args.action == "ls":
            owner = _user(c, args.user)
            rows = []
            for k in c.list_keys(owner.id):
                if args.json:
                    _json_line(k)
                else:
                    rows.append([k.id, _when(k.created_at), "revoked" if k.revoked else "active"])
            _table(rows, ["ID", "CREATED", "STATE"])
        elif args.action == "new":
            owner = _user(c, args.user)
            made = c.issue_key(owner.id)
            if args.json:
                _json_line(made)
            else:
                # The key alone on stdout, for `KEY=$(files keys new bob@example.com)`.
                print(made.api_key)
                _note(f"API key {made.id} for {owner.email}: shown this once")
        elif args.action == "revoke":
            for key_id in args.key_ids:
                if not _looks_like_id(key_id):
                    raise Usage(f"{key_id}: not a key id (files keys ls lists them)")
                c.revoke_key(key_id)
                print(f"revoked key {key_id}")
    return 0


def webhooks(args: argparse.Namespace) -> int:
    with _client() as c:
        if args.action == "add":
            secret = sys.stdin.readline().strip() if args.secret_stdin else None
            made = c.create_webhook(args.url, args.event, secret=secret)
            print(f"webhook {made.id}: {made.url} ({', '.join(made.events)})")
            if made.secret and not args.secret_stdin:
                print(f"signing secret (shown once): {made.secret}")
        elif args.action == "ls":
            rows = [[w.id, ",".join(w.events), w.url] for w in c.list_webhooks()]
            _table(rows, ["ID", "EVENTS", "URL"])
        elif args.action == "deliveries":
            rows = [
                [d.id, d.event, d.status, str(d.attempts), (d.last_error or "")[:60]]
                for d in c.webhook_deliveries(args.webhook)
            ]
            _table(rows, ["ID", "EVENT", "STATUS", "ATTEMPTS", "LAST ERROR"])
        elif args.action == "rotate":
            secret = sys.stdin.readline().strip() if args.secret_stdin else None
            rotated = c.rotate_webhook_secret(
                args.webhook, secret=secret, keep_previous_for_s=args.keep_previous
            )
            until = rotated.previous_secret_valid_until
            print(
                f"webhook {rotated.id}: a new signing secret; the one before signs too until"
                f" {until.isoformat()}"
                if until
                else f"webhook {rotated.id}: a new signing secret; the one before no longer signs"
            )
            if rotated.secret and not args.secret_stdin:
                print(f"signing secret (shown once): {rotated.secret}")
        elif args.action == "retry":
            again = c.retry_webhook_delivery(args.webhook, args.delivery)
            print(f"delivery {again.id} ({again.event}): sent again")
        elif args.action == "delete":
            c.delete_webhook(args.webhook)
            print(f"deleted webhook {args.webhook}")
    return 0


# Events whose `name` is their subject's (in others it may be a part's or a file's).
NAMING_EVENTS = frozenset(
    {
        "catalog.FolderCreated",
        "catalog.FolderRenamed",
        "catalog.FileUploaded",
        "catalog.FileRenamed",
        "datasets.DatasetCreated",
        "datasets.DatasetUpdated",
        "acl.UserCreated",
        "ingest.IntegrationRegistered",
    }
)


def _about(event: AuditEvent, asked: list[str]) -> str | None:
    """The subject a row is about: an event of a batch (an upload's page, a restore)
    is in a stream of its own; where it lists a subject asked about, it is that one's."""
    listed = event.data.get("file_ids")
    if isinstance(listed, list):
        for subject in asked:
            if subject in listed:
                return subject
    return event.subject_id


def _moment(text: str | None, option: str) -> datetime | None:
    """A time given on the command line: ISO 8601, a date alone its midnight; in UTC
    unless it says its offset (as the times the command prints are)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Usage(
            f"{option} {text}: not a time (ISO 8601: 2026-12-05, 2026-12-05T14:30Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def history(args: argparse.Namespace) -> int:
    with _client() as c:
        subjects: list[str] = []
        # Names, where they come for free: the paths given, the events' own `name`,
        # the caller, and the users an org admin may list (one call).
        names: dict[str, str] = {}
        for ref in args.subjects:
            if _looks_like_id(ref):
                subjects.append(ref)
            else:
                subjects.append(_resolve(c, ref).id)
                names[subjects[-1]] = ref
        me = c.me()
        actor = me.id if args.actor in ("me", me.email) else args.actor
        if actor and "@" in actor:
            found = (
                [u.id for u in c.list_users() if u.email == actor] if me.org_role == "admin" else []
            )
            if not found:
                raise Usage(f"--actor {actor}: name a user by id (or me)")
            actor = found[0]
        events = c.audit(
            subject=subjects or None,
            actor=actor,
            type=args.type,
            since=_moment(args.since, "--since"),
            until=_moment(args.until, "--until"),
        )
        listed, shown = [], 0
        for n, e in enumerate(events):
            if args.limit and n >= args.limit:
                break
            shown += 1
            if args.json:
                _json_line(e)
            else:
                listed.append(e)
        if not shown:
            _nothing("no events match")
        if args.json:
            return 0
        given = dict(names)
        for e in listed:  # in order: a renamed subject shows its last name
            named = e.data.get("name")
            if e.subject_id and e.type in NAMING_EVENTS and isinstance(named, str):
                names[e.subject_id] = named
            elif e.type == "catalog.FilesUploaded":  # a page names the files it uploaded
                for f in e.data.get("files") or []:
                    if isinstance(f, dict) and isinstance(f.get("name"), str):
                        names[str(f.get("file_id"))] = f["name"]
        names.update(given)
        people = {me.id: me.email}
        if me.org_role == "admin" and any(e.actor_id not in people for e in listed):
            people.update((u.id, u.email) for u in c.list_users())
        rows = [
            [
                e.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
                e.type,
                names.get(subject, subject) if (subject := _about(e, subjects)) else "-",
                people.get(e.actor_id, e.actor_id) if e.actor_id else "-",
            ]
            for e in listed
        ]
        _table(rows, ["TIME", "EVENT", "SUBJECT", "ACTOR"])
    return 0


# -- the parser ---------------------------------------------------------------------------

HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "login": login,
    "whoami": whoami,
    "upload": upload,
    "ls": ls,
    "search": search,
    "mv": mv,
    "rm": rm,
    "duplicates": duplicates,
    "trash": trash,
    "reencode": reencode,
    "download": download,
    "datasets": datasets,
    "share": share,
    "jobs": jobs,
    "history": history,
    "import": import_,
    "sync": sync,
    "integrations": integrations,
    "unshare": unshare,
    "users": users,
    "keys": keys,
    "webhooks": webhooks,
}

PATHS = "folder names joined with '/' from the top level; a file's path ends with its name"


def _filter_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kind",
        action="append",
        metavar="KIND",
        help="only this kind (repeatable): folder, or a file kind (image, video, pdf, ...;"
        " a word that is not one is answered with the list)",
    )
    p.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata has VALUE at KEY")
    linked = p.add_mutually_exclusive_group()
    linked.add_argument(
        "--in-dataset",
        dest="in_dataset",
        action="store_const",
        const=True,
        default=None,
        help="only files linked to a dataset",
    )
    linked.add_argument(
        "--no-dataset",
        dest="in_dataset",
        action="store_const",
        const=False,
        help="only files linked to none",
    )
    p.add_argument("--order", choices=["name", "created_at", "size"])
    p.add_argument("--desc", action="store_true", help="the order reversed")


def register(commands: Any) -> None:
    """Add the user verbs to the `files` command's subparsers."""

    def verb(
        name: str, help: str, description: str | None = None, *, paths: bool = True
    ) -> argparse.ArgumentParser:
        """A verb; `paths`: it takes folder or file paths, which its help then explains."""
        parser: argparse.ArgumentParser = commands.add_parser(
            name,
            help=help,
            description=description or help,
            epilog=f"PATH: {PATHS}." if paths else None,
        )
        parser.set_defaults(user_command=name)
        return parser

    p = verb(
        "login",
        "save the platform's URL and your API key (config file, mode 0600)",
        "Save the URL and API key in $XDG_CONFIG_HOME/files/config.json (or"
        " ~/.config/files/config.json), mode 0600, after checking them. FILES_URL and"
        " FILES_API_KEY, when set, take precedence over the saved login.",
        paths=False,
    )
    p.add_argument("--url", help="the platform, e.g. http://127.0.0.1:8080")
    p.add_argument("--api-key-stdin", action="store_true", help="read the key from stdin")

    verb("whoami", "who the saved login or FILES_API_KEY is", paths=False)

    p = verb(
        "upload",
        "upload files and directories into a folder",
        "Upload files into FOLDER/PATH, creating the folders missing along it. A"
        " directory uploads recursively, each subdirectory a subfolder of its name."
        " Parallel; resumable: run it again after an interruption and it skips the files"
        " already there (same name, size and sha256) and sends only the missing parts of"
        " large files; a --group or --sequence the folder has already (same name and"
        " images) is not made again. A progress bar on a terminal, quiet otherwise. A"
        " file the platform refuses (no kind it accepts, its name, its --metadata) is"
        " named on stderr by its path, with the platform's code and reason, and the"
        " others are uploaded; then the exit code is 3. A large file refused for its"
        " content is not sent again while it is unchanged (--retry-refused sends it).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
    p.add_argument("--to", required=True, metavar="FOLDER/PATH", help="where they go")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--dicom", action="store_true", help="DICOM instances, assembled as series")
    kind.add_argument("--group", metavar="NAME", help="the images as one image group")
    kind.add_argument("--sequence", metavar="NAME", help="the images as one image sequence")
    p.add_argument(
        "--duplicates",
        action="store_true",
        help="upload even files already there (no skipping); with --group/--sequence, make"
        " one more of a name the folder has",
    )
    p.add_argument(
        "--retry-refused",
        action="store_true",
        help="send again the large files the platform refused before, though unchanged",
    )
    p.add_argument(
        "--parallel", type=int, default=4, metavar="N", help="requests in flight (default 4)"
    )
    p.add_argument(
        "--parts-from",
        type=int,
        default=PARTS_FROM,
        metavar="BYTES",
        help="files this large or larger go as resumable upload sessions (default 64 MiB)",
    )
    p.add_argument(
        "--metadata",
        metavar="FILE.json",
        help="a JSON object from a file's name to its metadata, stored with it",
    )
    p.add_argument("--json", action="store_true", help="print the uploaded files as JSON lines")

    p = verb("ls", "list a folder (the top level without PATH)")
    p.add_argument("path", nargs="?", metavar="PATH")
    p.add_argument("--name", metavar="TEXT", help="only names containing TEXT")
    _filter_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = verb("search", "find files and folders by name, with their paths")
    p.add_argument("text", nargs="?", help="part of the name (or give a filter)")
    _filter_options(p)
    p.add_argument("--in", dest="within", metavar="PATH", help="only below this folder")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="at most N hits")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = verb(
        "mv",
        "move files and folders into a folder (or rename one)",
        "Move SRC... into the folder DEST, all or nothing. With one SRC and a DEST that"
        " does not exist, SRC moves to DEST's parent under DEST's name.",
    )
    p.add_argument("sources", nargs="+", metavar="SRC")
    p.add_argument("dest", metavar="DEST")
    p.add_argument("--dry-run", action="store_true", help="say what would move, change nothing")

    p = verb(
        "rm",
        "delete files and folders (with all they hold)",
        "Delete files and folders, all or nothing, and print the impact: how many folders"
        " and files, and the links each dataset loses.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--dry-run", action="store_true", help="print the impact, delete nothing")

    p = verb("duplicates", "the other files that hold the same bytes as a file (sha256)")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = verb(
        "trash",
        "list the trash, restore from it, empty it",
        "What rm deleted stays in the trash (FILES_TRASH_DAYS, 30 by default). `files"
        " trash` lists it; `files trash restore ID...` puts items back where they were,"
        " with their dataset links (an item is its id or the path it had);"
        " `files trash purge ID...` deletes those forever;"
        " `files trash empty` purges all you could restore.",
    )
    p.add_argument("action", nargs="?", default="ls", choices=["ls", "restore", "purge", "empty"])
    p.add_argument(
        "ids",
        nargs="*",
        metavar="ID|PATH",
        help="restore, purge: the trash's item ids, or the paths they had",
    )
    p.add_argument("--json", action="store_true", help="ls: one JSON object per line")

    p = verb(
        "reencode",
        "make browser-playable (H.264/AAC MP4) renditions of videos and image sequences",
        "Start a job making each file's web rendition beside it (the editor role on its"
        " folder); with --wait, follow it to its end. `GET /v1/files/{id}/content"
        "?rendition=web` serves one.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="file paths or ids")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends")
    p.add_argument("--json", action="store_true", help="the job as one JSON object")

    p = verb(
        "download",
        "download a file, or a folder with everything below it",
        "Download into DIR: a file under its name, a folder as a directory tree. An image"
        " group or sequence is its first image, named with its extension (NAME.png; its"
        " images are in the folder beside it); a DICOM series a directory of its"
        " instances. Parallel; an interrupted download resumes where it stopped (run it"
        " again: the files already there, same sha256, are not fetched again); checksums"
        " are verified. A local file of that name holding other bytes is not written over"
        " (it is named, the rest downloaded, exit 1) unless --overwrite.",
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("-o", "--output", default=".", metavar="DIR", help="where (default: here)")
    p.add_argument(
        "--parallel", type=int, default=4, metavar="N", help="downloads in flight (default 4)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print each file written")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write over local files that hold other bytes (else they are left as they are,"
        " named, and the exit code is 1)",
    )

    p = verb("datasets", "create, list, fill, empty and share datasets", paths=False)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser(
        "create", help="a new dataset", description="Create a dataset.", epilog=f"PATH: {PATHS}."
    )
    a.add_argument("name")
    a.add_argument("--description", help="what it holds, for people")
    a.add_argument("--synced-to", metavar="PATH", help="a folder the dataset follows")
    a.add_argument(
        "--with-folder", action="store_true", help="make a top-level folder of its name to follow"
    )
    a.add_argument(
        "--duplicates",
        action="store_true",
        help="make it even when a dataset you can see has that name",
    )
    a.add_argument("--json", action="store_true")
    a = actions.add_parser(
        "ls", help="the datasets, or one dataset's files", description="List datasets or files."
    )
    a.add_argument("dataset", nargs="?", metavar="DATASET", help="a name or id")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser(
        "add",
        help="link files (a folder: every file below it)",
        description="Add files to a dataset (a folder: every file below it).",
        epilog=f"PATH: {PATHS}.",
    )
    a.add_argument("dataset", metavar="DATASET")
    a.add_argument("paths", nargs="+", metavar="PATH")
    a = actions.add_parser(
        "rm",
        help="unlink files from a dataset",
        description="Remove files from a dataset.",
        epilog=f"PATH: {PATHS}.",
    )
    a.add_argument("dataset", metavar="DATASET")
    a.add_argument("paths", nargs="+", metavar="PATH")
    a = actions.add_parser("delete", help="delete a dataset", description="Delete a dataset.")
    a.add_argument("dataset", metavar="DATASET")
    a = actions.add_parser(
        "share",
        help="give users a role on a dataset (or list who has one)",
        description="Give users (by email) a role on a dataset: admin, editor or user"
        " (viewer is user); someone with a role on it has theirs changed. Without EMAIL,"
        " list who has a role: its creator (its admin), then those it is shared with."
        " Sharing is for the dataset's admins.",
    )
    a.add_argument("dataset", metavar="DATASET", help="a name or id")
    a.add_argument("emails", nargs="*", metavar="EMAIL")
    a.add_argument(
        "--role", choices=["admin", "editor", "user", "viewer"], help="the role (with EMAIL)"
    )
    a = actions.add_parser(
        "unshare",
        help="take users' role on a dataset away",
        description="Stop sharing a dataset with users (by email, or user id), all or"
        " none: someone without a role on it refuses the whole call. Its creator stays"
        " its admin.",
    )
    a.add_argument("dataset", metavar="DATASET", help="a name or id")
    a.add_argument("emails", nargs="+", metavar="EMAIL")

    p = verb(
        "share",
        "give users a role on a folder (or list who has one)",
        "Give users (by email) a role on a folder: admin, editor or user (viewer is"
        " user); someone with a role on it has theirs changed. Without EMAIL, list the"
        " folder's collaborators.",
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("emails", nargs="*", metavar="EMAIL")
    p.add_argument(
        "--role", choices=["admin", "editor", "user", "viewer"], help="the role (with EMAIL)"
    )

    p = verb(
        "unshare",
        "take users' role on a folder away",
        "Remove users (by email) from a folder's collaborators. A role granted on a folder"
        " above it is not taken here: the command says where, and it is unshared there. A"
        " folder's admin is removed only by an organisation admin.",
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("emails", nargs="+", metavar="EMAIL")

    p = verb("jobs", "follow a job (upload, DICOM, import)", paths=False)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("watch", "wait for the job, with progress"),
        ("show", "the job now"),
        ("cancel", "stop the job: what it did stays, the rest stops"),
    ):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("job_id", metavar="ID")
        a.add_argument("--json", action="store_true")

    p = verb(
        "import",
        "import objects of a cloud integration's bucket into a folder, by reference",
        "Register objects of a bucket as files of FOLDER/PATH (made with the folders"
        " missing along it), by reference: the bytes stay in the bucket. Name them by"
        " KEY, --keys-from FILE (one a line; - for stdin), --prefix, or --manifest"
        " FILE (Encord's cloud import JSON), or a mix. With --wait, follow the job to"
        " its end; objects refused are named on stderr (the others are imported) and"
        " the exit code is 3; a job that failed exits 1.",
    )
    p.add_argument("keys", nargs="*", metavar="KEY", help="object keys")
    p.add_argument("--to", required=True, metavar="FOLDER/PATH", help="where they go")
    p.add_argument(
        "--from",
        dest="integration",
        required=True,
        metavar="INTEGRATION",
        help="the integration, by name or id",
    )
    p.add_argument("--prefix", help="every object whose key starts with it")
    p.add_argument("--keys-from", metavar="FILE", help="object keys, one a line (-: stdin)")
    p.add_argument("--manifest", metavar="FILE.json", help="Encord's cloud import JSON")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends")
    p.add_argument("--json", action="store_true", help="the job as one JSON object")

    p = verb(
        "sync",
        "sync a cloud-synced folder with its bucket now (or make one)",
        "Sync FOLDER/PATH with the bucket prefix it follows, and wait. With --integration,"
        " make FOLDER/PATH a new folder that follows --prefix of that integration's bucket"
        " (the folders missing above it are made).",
    )
    p.add_argument("path", metavar="FOLDER/PATH")
    p.add_argument(
        "--integration", metavar="INTEGRATION", help="make a new synced folder (name or id)"
    )
    p.add_argument("--prefix", help="with --integration: the keys it follows")
    p.add_argument("--interval", type=int, metavar="S", help="seconds between scheduled syncs")
    p.add_argument("--no-wait", action="store_true", help="start it, do not wait")

    p = verb(
        "integrations",
        "list, add, rotate, share or remove cloud integrations (buckets)",
        "The buckets files may be imported from and folders synced with. Adding, rotating,"
        " sharing and removing one is for organisation admins. Its keys are never printed; `add`"
        " reads them from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN),"
        " or from stdin with --keys-stdin (one a line), never from the command line,"
        " which other users of the machine may see.",
        paths=False,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("ls", help="the integrations you may use")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    a = actions.add_parser(
        "add",
        help="register a bucket (org admins)",
        description="Register a bucket as the integration NAME (org admins). The keys come"
        " from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or from"
        " stdin with --keys-stdin; they are checked against the bucket and never printed."
        " The events token for the bucket's notifications is printed once.",
    )
    a.add_argument("name", metavar="NAME")
    a.add_argument("--bucket", required=True)
    a.add_argument("--provider", choices=["s3", "gcs"], default="s3")
    a.add_argument("--endpoint", metavar="URL", help="an S3-compatible endpoint (else AWS)")
    a.add_argument("--region")
    a.add_argument(
        "--keys-stdin",
        action="store_true",
        help="read the access key, the secret key (and a session token) from stdin, one a"
        " line (asked for, unechoed, on a terminal)",
    )
    a.add_argument("--json", action="store_true", help="the integration as one JSON object")
    a = actions.add_parser("rotate", help="new keys and/or a new events token (org admins)")
    a.add_argument("integration", metavar="INTEGRATION", help="a name or id")
    a.add_argument("--access-key")
    a.add_argument("--secret-key-stdin", action="store_true", help="read the secret from stdin")
    a.add_argument("--events-token", action="store_true", help="a new notification token")
    a = actions.add_parser(
        "rm", aliases=["delete"], help="remove (refused while files or a synced folder use it)"
    )
    a.add_argument("integration", metavar="INTEGRATION", help="a name or id")
    sharing = (
        " Org admins only. The platform keeps one list of users per integration and each"
        " change replaces it: the list is read, changed and written back, so a change"
        " another admin makes at the same moment may be lost (run `share INTEGRATION`"
        " after, to see who may use it)."
    )
    a = actions.add_parser(
        "share",
        help="let users use an integration (or list who may), org admins",
        description="Let users (by email) import from the integration and sync folders"
        " with it, besides the organisation admins, who always may. Without EMAIL, list"
        " who may." + sharing,
    )
    a.add_argument("integration", metavar="INTEGRATION", help="a name or id")
    a.add_argument("emails", nargs="*", metavar="EMAIL")
    a = actions.add_parser(
        "unshare",
        help="stop users using an integration, org admins",
        description="Stop users (by email) using the integration, all or none: someone it"
        " is not shared with refuses the whole call. Their new imports are refused at"
        " once; an import already running goes on." + sharing,
    )
    a.add_argument("integration", metavar="INTEGRATION", help="a name or id")
    a.add_argument("emails", nargs="+", metavar="EMAIL")

    p = verb("users", "list or add the organisation's users (org admins)", paths=False)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("ls", help="the users")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    a = actions.add_parser("add", help="a new user; their first API key is printed once")
    a.add_argument("email", metavar="EMAIL")
    a.add_argument("--name", required=True)
    a.add_argument("--admin", action="store_true", help="an organisation admin")
    a.add_argument("--json", action="store_true", help="the user and key as one JSON object")

    p = verb(
        "keys",
        "list, issue or revoke API keys (yours; anyone's for org admins)",
        "A new key is printed once, alone on stdout; rotate by issuing one, then revoking the old.",
        paths=False,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("ls", help="a user's keys (never the keys themselves)")
    a.add_argument("user", nargs="?", metavar="EMAIL", help="whose (default: yours)")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    a = actions.add_parser("new", help="issue a key, printed once")
    a.add_argument("user", nargs="?", metavar="EMAIL", help="whose (default: yours)")
    a.add_argument("--json", action="store_true", help="the key as one JSON object")
    a = actions.add_parser("revoke", help="revoke keys by id")
    a.add_argument("key_ids", nargs="+", metavar="ID")

    p = verb(
        "webhooks",
        "add, list, rotate or delete webhooks; see their deliveries and send one again"
        " (org admins)",
        paths=False,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("add", help="post events to URL, signed (Standard Webhooks)")
    a.add_argument("url", metavar="URL")
    a.add_argument(
        "--event",
        action="append",
        required=True,
        choices=["file.uploaded", "file.deleted", "job.completed", "folder.synced"],
        help="an event to send (repeatable)",
    )
    a.add_argument("--secret-stdin", action="store_true", help="read the whsec_ secret from stdin")
    actions.add_parser("ls", help="the webhooks (never their secrets)")
    a = actions.add_parser("deliveries", help="a webhook's deliveries, newest first")
    a.add_argument("webhook", metavar="ID")
    a = actions.add_parser(
        "rotate", help="a new signing secret; the one before signs beside it for a while"
    )
    a.add_argument("webhook", metavar="ID")
    a.add_argument("--secret-stdin", action="store_true", help="read the whsec_ secret from stdin")
    a.add_argument(
        "--keep-previous",
        type=float,
        metavar="SECONDS",
        help="how long the secret before still signs (default 86400, 0 to 604800)",
    )
    a = actions.add_parser("retry", help="send a delivery again now (files webhooks deliveries)")
    a.add_argument("webhook", metavar="ID")
    a.add_argument("delivery", metavar="DELIVERY_ID")
    a = actions.add_parser("delete", help="remove a webhook and its deliveries")
    a.add_argument("webhook", metavar="ID")

    p = verb(
        "history",
        "the audit trail of files, folders, datasets or users, through the API",
        "Events in time order from GET /v1/audit, for what you may see (a member names a"
        " subject, or --actor me). The operator's `files audit` reads the stores directly.",
    )
    p.add_argument("subjects", nargs="*", metavar="PATH|ID", help="what it is about")
    p.add_argument("--actor", metavar="ID|me", help="who did it (an email: org admins)")
    p.add_argument("--type", action="append", help="an event type (repeatable)")
    p.add_argument("--since", metavar="TIME", help="from (ISO 8601; UTC unless it says)")
    p.add_argument("--until", metavar="TIME", help="before (ISO 8601; UTC unless it says)")
    p.add_argument("--limit", type=int, default=0, metavar="N")
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def run(args: argparse.Namespace) -> int:
    """Run a parsed user verb: 0, or 1 with one line on stderr (2 for misuse)."""
    name: str = args.user_command
    try:
        return HANDLERS[name](args)
    except Usage as problem:
        print(f"files {name}: {problem}", file=sys.stderr)
        return 2
    except Invalid as error:
        refused = _kind_refused(error)
        if refused is None:
            print(f"files {name}: {_said(error)}", file=sys.stderr)
            return 1
        print(f"files {name}: {refused}", file=sys.stderr)
        return 2
    except Conflict as error:
        if error.code != "ambiguous_path":
            print(f"files {name}: {_said(error)}", file=sys.stderr)
            return 1
        # Which folder the path means is for the user to say: a misuse, not a failure.
        print(f"files {name}: {_ambiguous(error)}", file=sys.stderr)
        return 2
    except FilesError as error:
        print(f"files {name}: {_said(error)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `files ls | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"files {name}: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Requests in flight in other threads are dropped, not awaited: what was sent is
        # recorded whole or not at all, and the next `files upload` picks up from there.
        print(f"files {name}: interrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)


def main(argv: list[str] | None = None) -> int:
    """`python -m files_client ...`: the user verbs alone (the wheel's own entry)."""
    parser = argparse.ArgumentParser(prog="files", description="Files, from the command line.")
    register(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))
