// The trash: what a delete keeps (FILES_TRASH_DAYS), with "Restore" and "Delete forever"
// for the items chosen, and "Empty trash" for all the caller could restore.
import { useEffect, useRef, useState } from "preact/hooks";
import { all, ApiError, call, del, get, post, type Folder } from "./api";
import { bytes, count, date, filesAndFolders, kindLabel, listed, num } from "./format";
import { changed, mayEdit, restored, useVersion } from "./store";
import { folderUrl, navigate } from "./router";
import { useRowWindow } from "./rows";
import { useSelection } from "./selection";
import { Confirm, ErrorText, LoadFailed, messageOf, notify, useFocusKept } from "./ui";

type TrashItem = {
  type: "file" | "folder";
  id: string;
  name: string;
  kind?: string;
  size?: number;
  files?: number;
  folder_id?: string; // a file's folder
  parent_id?: string | null; // a folder's parent (null: the top level)
  deleted_at: string;
  purge_at: string;
  my_role?: string | null;
  // A top-level folder comes back only by its creator's or an org admin's hand (a
  // platform before this field: undefined, and its refusal is said when asked).
  may_restore?: boolean;
};

const restorable = (i: TrashItem) => i.may_restore ?? mayEdit(i.my_role);
const ONLY_CREATOR = "Only its creator or an organisation admin may restore a top-level folder.";

// "Delete forever" asked: what the question is about, taken as it opens (the list read
// again meanwhile, or failing to be read, does not change what was asked), and after a
// failure what went before it and what is left.
type Purging = {
  asked: TrashItem[];
  left: TrashItem[];
  deleted: { files: number; folders: number };
  // The last attempt's failure; `unsure` until the trash is read again after it (a request
  // refused or lost midway may have deleted some of what is left).
  failure: unknown;
  unsure: boolean;
};

// A question names up to this many items; past that, how many.
const NAMED = 3;
// Ids of each kind a "Delete forever" request: 500 of each fill about 40 KB of its query.
const PURGED_AT_ONCE = 500;

export function TrashPage() {
  const version = useVersion();
  const [items, setItems] = useState<TrashItem[] | null>(null);
  // Restoring and deleting forever need the editor role where the item was: the rows one
  // may choose, by click or from the keyboard (the others are skipped).
  const mine = (items ?? []).filter((i) => mayEdit(i.my_role));
  const selection = useSelection(mine);
  const { selected: chosen, setSelected: setChosen, active } = selection;
  // Thousands of items: only the rows in view (and a few either side) are in the page, as
  // a dataset's files; the keyboard's row is brought into view, and so drawn.
  const activeItem = mine[active];
  const activeRow = activeItem ? (items ?? []).indexOf(activeItem) : -1;
  const rows = useRowWindow(items?.length ?? 0, activeRow);
  const { windowed } = rows;
  const [emptying, setEmptying] = useState(false);
  const [purging, setPurging] = useState<Purging | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  // The list itself could not be read (the platform unreachable, a 5xx): what was shown
  // before, if anything, is not passed off as the trash; "Try again" reads it again.
  const [failed, setFailed] = useState<unknown>(null);
  const [attempt, setAttempt] = useState(0);
  useEffect(() => {
    const stop = new AbortController();
    setFailed(null);
    all<TrashItem>("/v1/trash", {}, undefined, stop.signal)
      .then((found) => {
        setItems(found);
        setChosen((was) => new Set([...was].filter((id) => found.some((i) => i.id === id))));
        // What left the trash meanwhile (deleted by a request whose answer was lost,
        // restored elsewhere) is no longer asked about.
        const here = new Set(found.map((i) => i.id));
        setPurging((p) => p && { ...p, left: p.left.filter((i) => here.has(i.id)), unsure: false });
      })
      .catch((e) => {
        if (stop.signal.aborted) return;
        setItems(null);
        setFailed(e);
      });
    return () => stop.abort();
  }, [version, attempt]);

  // Where each item was (and goes back to on "Restore"): its folder's name.
  const [places, setPlaces] = useState<Record<string, string | null>>({});
  useEffect(() => {
    const wanted = [...new Set((items ?? []).map(placeOf).filter((id): id is string => !!id && !(id in places)))];
    if (!wanted.length) return;
    Promise.all(
      wanted.map((id) =>
        get<Folder>(`/v1/folders/${id}`)
          .then((f) => [id, f.path.map((p) => p.name).join(" / ")] as const)
          .catch(() => [id, null] as const),
      ),
    ).then((pairs) => setPlaces((was) => ({ ...was, ...Object.fromEntries(pairs) })));
  }, [items]);

  const picked = (items ?? []).filter((i) => chosen.has(i.id));
  const kept = picked.filter((i) => !restorable(i));
  const ids = (type: string) => picked.filter((i) => i.type === type).map((i) => i.id);
  // From the state as it is when the click lands, not as this render saw it: a list read
  // again (a change seen) re-renders between two clicks, and a choice is never undone by it.
  const toggle = (id: string) =>
    setChosen((was) => {
      const next = new Set(was);
      if (next.has(id)) next.delete(id);
      else next.add(id);
      return next;
    });
  // A row is chosen by a click on it, as in a folder: alone, or added or removed with
  // Ctrl/Cmd, or a range from the last one clicked with Shift (its checkbox adds or
  // removes it alone); the list takes a folder's keys too (arrows, Space, Ctrl/Cmd+A,
  // Escape; Delete asks to delete forever).
  const clickRow = (item: TrashItem, e: MouseEvent) => {
    // The checkbox and the "Was in" link do their own.
    if ((e.target as HTMLElement).closest("input, a, button")) return;
    const at = mine.indexOf(item);
    if (at >= 0) selection.click(at, e);
  };
  // Restore is disabled while it runs and stays so (nothing chosen after): the focus it
  // had goes to the heading, not the page, as after "Delete forever".
  const heading = useRef<HTMLHeadingElement>(null);
  useFocusKept(busy, heading);
  const act = async (work: () => Promise<string>) => {
    setBusy(true);
    setError(null);
    try {
      notify(await work());
      setChosen(new Set());
      changed();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const restore = () =>
    act(async () => {
      const done = await post("/v1/trash/restore", { file_ids: ids("file"), folder_ids: ids("folder") }).catch((e) => {
        // The API's "already exists here" does not say where "here" is, seen from the Trash.
        if (e instanceof ApiError && e.code === "name_taken")
          throw new Error(
            "Nothing was restored: a folder of the same name is already where it was (or two chosen folders share a name). Rename that folder, then restore again.",
          );
        throw e;
      });
      restored(picked.map((i) => i.id));
      return `Restored ${filesAndFolders(done.restored_files, done.restored_folders)}`;
    });
  const askPurge = () => {
    if (picked.length) setPurging({ asked: picked, left: picked, deleted: { files: 0, folders: 0 }, failure: null, unsure: false });
  };
  // The route takes the ids in its query, at most 1,000 of each kind (and a request's head
  // is bounded): more chosen (Ctrl/Cmd+A in a large trash) go in turns, and a refusal
  // after the first says what was deleted before it. Asked again after a failure, it
  // deletes what is left of what was asked.
  const purge = async () => {
    const left = purging?.left ?? [];
    const files = left.filter((i) => i.type === "file").map((i) => i.id);
    const folders = left.filter((i) => i.type === "folder").map((i) => i.id);
    const gone = { files: 0, folders: 0 };
    const sent = new Set<string>();
    for (let at = 0; at < Math.max(files.length, folders.length); at += PURGED_AT_ONCE) {
      const these = { files: files.slice(at, at + PURGED_AT_ONCE), folders: folders.slice(at, at + PURGED_AT_ONCE) };
      const q = new URLSearchParams({ file_ids: these.files.join(","), folder_ids: these.folders.join(",") });
      try {
        const done = await call("DELETE", `/v1/trash?${q}`);
        gone.files += done.purged_files;
        gone.folders += done.purged_folders;
        for (const id of [...these.files, ...these.folders]) sent.add(id);
      } catch (e) {
        // The question stays, on what is left of it (not on the selection, which a failed
        // read of the trash empties), saying what went before the failure.
        setPurging(
          (p) =>
            p && {
              ...p,
              left: p.left.filter((i) => !sent.has(i.id)),
              deleted: { files: p.deleted.files + gone.files, folders: p.deleted.folders + gone.folders },
              failure: e,
              unsure: true,
            },
        );
        // What the trash holds now is read again: a refused request may have deleted
        // some of its ids before the refusal (the platform deletes them in batches).
        changed();
        if (!at) throw e;
        throw new Error(`Deleted forever ${filesAndFolders(gone.files, gone.folders)}, then the rest was refused: ${messageOf(e)}`);
      }
    }
    // Asked again after a failure: what the first tries deleted counts too.
    const before = purging?.deleted ?? { files: 0, folders: 0 };
    return `Deleted forever ${filesAndFolders(before.files + gone.files, before.folders + gone.folders)}`;
  };
  // Nothing asked about is in the trash any more (read again after a request whose
  // answer was lost, or restored elsewhere meanwhile): no question about 0 items, it is
  // said what became of them.
  useEffect(() => {
    if (!purging || purging.left.length || busy) return;
    setPurging(null);
    const { asked, deleted, failure } = purging;
    const before = deleted.files || deleted.folders ? `Deleted forever ${filesAndFolders(deleted.files, deleted.folders)}. ` : "";
    // A refusal (4xx) is said as one: only a failure that may have deleted is "lost".
    const refused = failure instanceof ApiError && failure.status >= 400 && failure.status < 500;
    const lost = failure ? ` (the answer to “Delete forever” was ${refused ? "refused" : "lost"}: ${messageOf(failure)})` : "";
    notify(
      `${before}Nothing is left to delete forever: the trash no longer holds ${asked.length === 1 ? "the item" : `the ${count(asked.length, "item")}`} asked about${lost}.`,
    );
  }, [purging, busy]);
  const empty = async () => {
    const done = await del("/v1/trash");
    return `Trash emptied: ${filesAndFolders(done.purged_files, done.purged_folders)}`;
  };
  // Asked in the Confirm dialog: a refusal is said there (it stays open); what was done
  // is said in a notice as the dialog closes.
  // The toolbar's buttons wait for it (no second "Delete forever" of the same items).
  const finish = async (work: () => Promise<string>) => {
    setBusy(true);
    setError(null);
    try {
      notify(await work());
      setChosen(new Set());
      changed();
    } finally {
      setBusy(false);
    }
  };

  return (
    <section class="trash-page" aria-label="Trash" ref={rows.scroller}>
      <h1 class="title" id="trash-title" tabIndex={-1} ref={heading}>
        Trash
      </h1>
      <p class="muted">Deleted files and folders stay here for a while, then go for good.</p>
      {items && items.length > 0 && !mine.length && (
        <p class="muted">Only an Editor or Admin of their folders can restore these or delete them forever.</p>
      )}
      {!failed && (
        <div class="toolbar" role="toolbar" aria-label="Trash actions">
          <span>{num(picked.length)} selected</span>
          <button type="button" disabled={busy || !picked.length || kept.length > 0} aria-describedby="trash-kept" onClick={restore}>
            Restore
          </button>
          <button type="button" disabled={busy || !picked.length} onClick={askPurge}>
            Delete forever
          </button>
          <button type="button" disabled={busy || !mine.length} onClick={() => setEmptying(true)}>
            Empty trash
          </button>
        </div>
      )}
      {/* Kept while its work runs (a read of the trash meanwhile may find none left). */}
      {purging && (purging.left.length > 0 || busy) && (
        <Confirm
          title={`Delete ${count(purging.left.length || purging.asked.length, "item")} forever?`}
          action="Delete forever"
          onConfirm={() => finish(purge)}
          onClose={() => setPurging(null)}
          fallback={["trash-title"]}
        >
          <PurgeQuestion purging={purging} />
        </Confirm>
      )}
      {emptying && (
        <Confirm
          title="Empty the trash?"
          action="Empty trash"
          onConfirm={() => finish(empty)}
          onClose={() => setEmptying(false)}
          fallback={["trash-title"]}
        >
          <p>
            {`Everything in it you could restore (${count(mine.length, "item")}) will be deleted forever.`} This cannot be
            undone.
          </p>
        </Confirm>
      )}
      {kept.length > 0 && (
        <p class="muted" id="trash-kept">
          {`${listed(kept.slice(0, NAMED).map((i) => `“${i.name}”`))}${kept.length > NAMED ? ` and ${num(kept.length - NAMED)} more` : ""}: ${ONLY_CREATOR} Choose ${kept.length > 1 ? "them" : "it"} out to restore the rest.`}
        </p>
      )}
      <ErrorText error={error} />
      {failed ? <LoadFailed what="The trash" error={failed} onRetry={() => setAttempt(attempt + 1)} /> : null}
      {items === null && !failed && <p class="muted">Loading…</p>}
      {items && !items.length && <p class="muted">The trash is empty.</p>}
      {items && items.length > 0 && (
        <table
          class={`trash-items${windowed ? " windowed" : ""}`}
          role="grid"
          aria-label="Items in the trash"
          aria-multiselectable="true"
          aria-rowcount={items.length + 1}
          tabIndex={0}
          aria-activedescendant={activeItem && rows.runs.some((r) => activeRow >= r.from && activeRow < r.to) ? `trash-${activeItem.id}` : undefined}
          onKeyDown={(e) => {
            if ((e.target as HTMLElement) !== e.currentTarget) return; // a checkbox's or link's own keys
            let taken = selection.key(e);
            if (!taken && e.key === "Delete" && picked.length && !busy) {
              askPurge();
              taken = true;
            }
            if (!taken) return;
            e.preventDefault();
            rows.keyed();
          }}
        >
          <thead>
            <tr aria-rowindex={1}>
              <th scope="col">
                {/* Every item one may restore at once (a folder's files deleted one by one
                    are each a row). */}
                <input
                  type="checkbox"
                  aria-label="Choose all"
                  disabled={!mine.length}
                  checked={mine.length > 0 && mine.every((i) => chosen.has(i.id))}
                  ref={(el) => {
                    if (el) el.indeterminate = picked.length > 0 && !mine.every((i) => chosen.has(i.id));
                  }}
                  onChange={() => setChosen((was) => (mine.every((i) => was.has(i.id)) ? new Set() : new Set(mine.map((i) => i.id))))}
                />
              </th>
              <th scope="col">Name</th>
              <th scope="col">Kind</th>
              <th scope="col">Size</th>
              <th scope="col">Was in</th>
              <th scope="col">Deleted</th>
              <th scope="col">Goes for good</th>
            </tr>
          </thead>
          <tbody ref={rows.body}>
            {rows.runs.flatMap((run) => [
              run.gap > 0 && <tr aria-hidden="true" class="spacer" key={`gap-${run.from}`} style={{ height: `${run.gap}px` }} />,
              ...items.slice(run.from, run.to).map((i, k) => (
                <tr
                  key={i.id}
                  id={`trash-${i.id}`}
                  data-row={run.from + k}
                  aria-rowindex={run.from + k + 2}
                  aria-label={i.name}
                  aria-selected={chosen.has(i.id)}
                  class={`${chosen.has(i.id) ? "selected" : ""} ${mine[active] === i ? "active" : ""}`}
                  onMouseDown={(e) => e.shiftKey && e.preventDefault()}
                  onClick={(e) => clickRow(i, e)}
                >
                  <td>
                    <input
                      type="checkbox"
                      aria-label={`Choose ${i.name}`}
                      disabled={!mayEdit(i.my_role)}
                      title={mayEdit(i.my_role) ? undefined : "Only an Editor or Admin of its folder can restore it or delete it forever"}
                      checked={chosen.has(i.id)}
                      onChange={() => toggle(i.id)}
                    />
                  </td>
                  <td>
                    {i.name}
                    {mayEdit(i.my_role) && !restorable(i) && <div class="muted">{ONLY_CREATOR}</div>}
                  </td>
                  <td>{i.type === "folder" ? `Folder (${count(i.files ?? 0, "file")})` : kindLabel(i.kind ?? "")}</td>
                  <td>{bytes(i.size)}</td>
                  <td class="name-cell">
                    <Place id={placeOf(i)} name={places[placeOf(i) ?? ""]} trashed={trashedName(items, placeOf(i))} />
                  </td>
                  <td>{date(i.deleted_at)}</td>
                  <td>{date(i.purge_at)}</td>
                </tr>
              )),
            ])}
            {rows.after > 0 && <tr aria-hidden="true" class="spacer" style={{ height: `${rows.after}px` }} />}
          </tbody>
        </table>
      )}
    </section>
  );
}

// What "Delete forever" will do; after a failure, what it did and what is left of what
// was asked (asked again, it deletes that).
function PurgeQuestion({ purging }: { purging: Purging }) {
  const { left, deleted, failure, unsure } = purging;
  const what = left.length <= NAMED ? listed(left.map((i) => `“${i.name}”`)) : count(left.length, "item");
  if (!failure)
    return (
      <p>
        {left.length <= NAMED ? `${listed(left.map((i) => i.name))} will be gone for good.` : `These ${count(left.length, "item")} will be gone for good.`} This
        cannot be undone.
      </p>
    );
  const done = deleted.files || deleted.folders;
  return (
    <>
      <p>
        {done ? `Deleted forever so far: ${filesAndFolders(deleted.files, deleted.folders)}. ` : unsure ? "" : "Nothing was deleted. "}
        {/* Until the trash is read again, what the failed request may have deleted is not known. */}
        {unsure ? `Not known to be deleted: ${what}.` : `Not deleted: ${what}.`}
      </p>
      <p>“Delete forever” tries again on {left.length === 1 ? "it" : "them"}. This cannot be undone.</p>
    </>
  );
}

const placeOf = (i: TrashItem) => (i.type === "file" ? i.folder_id : i.parent_id) ?? null;

// The name of a folder that is an item of the trash itself: what was deleted on its own
// before its folder is an item of its own, and says which folder it waits in.
const trashedName = (items: TrashItem[], id: string | null) =>
  items.find((t) => t.type === "folder" && t.id === id)?.name;

function Place({ id, name, trashed }: { id: string | null; name: string | null | undefined; trashed?: string }) {
  if (!id) return <span>Top level</span>;
  // A folder that is itself deleted (or not shared) is not looked up again.
  if (name === null) return <span class="muted">{trashed ? `${trashed} (in the Trash)` : "A deleted folder"}</span>;
  if (name === undefined) return <span class="muted">…</span>;
  return (
    <a
      href={folderUrl(id)}
      onClick={(e) => {
        e.preventDefault();
        navigate(folderUrl(id));
      }}
    >
      {name}
    </a>
  );
}
