// What the app shares: who is signed in, and a version that every write bumps so the
// views showing data read it again.
import { useEffect, useState } from "preact/hooks";
import { ApiError, get, type User } from "./api";

let version = 0;
const listeners = new Set<(v: number) => void>();

export function changed() {
  version++;
  listeners.forEach((l) => l(version));
}

export function useVersion(): number {
  const [v, setV] = useState(version);
  useEffect(() => {
    listeners.add(setV);
    return () => void listeners.delete(setV);
  }, []);
  return v;
}

// What others change (another person, another tab, a synced folder or dataset, a change
// of access) shows without a reload: the views read again when the person comes back to
// the tab, and a page watches the one thing it shows (`useWatch`).
let returnedAt = 0;
function returned() {
  if (session.ended || document.visibilityState !== "visible" || Date.now() - returnedAt < 2_000) return;
  returnedAt = Date.now();
  changed();
}
// Not `focus` as well: it fires on coming back from the PDF viewer's frame or the
// developer tools too, and coming back to the tab is what visibilitychange tells.
if (typeof document !== "undefined") document.addEventListener("visibilitychange", returned);

// How often a shown page asks whether what it shows changed: one small read (not its
// list, which may be thousands of items) while the tab is visible.
export const WATCH_MS = 5_000;
// While what is watched keeps changing (an upload into the folder), the views read again
// at most this often, and once more when it holds still: a list slower to read than
// WATCH_MS is not cut off at every tick.
const BUSY_MS = 30_000;

// Every WATCH_MS, `path` is read and `key` taken of it: when the key changes (or the
// read is refused: the thing is gone, or no longer shared), every view reads again.
export function useWatch(path: string | null, key: (body: any) => string) {
  useEffect(() => {
    if (!path) return;
    let stopped = false;
    // The key as of the last answer (null before the first) and the version the views
    // had read at then; whether a change seen is not read by them yet: it is read at
    // once if the last read it made was BUSY_MS ago, else once the key holds still for
    // a tick (or BUSY_MS on, if it keeps changing: an upload into the folder), so that a
    // list slower to read than a tick is not cut off at every tick.
    let last: string | null = null;
    let seen = version;
    let pending = false;
    let readAt = 0;
    // A tick while a read is under way leaves it to answer; the views reading again ask
    // at once (`fresh`), not after it: a change made once their reads answered would be
    // taken for what they read. The reads asked so far number them: the answer to one
    // overtaken by a later read is dropped (it may predate a write made here).
    let busy = false;
    let asked = 0;
    const tick = async (fresh: boolean) => {
      if ((busy && !fresh) || stopped || session.ended || document.visibilityState !== "visible") return;
      const mine = ++asked;
      busy = true;
      const at = version;
      let now: string | undefined;
      try {
        now = key(await get(path));
      } catch (e) {
        // Gone or no longer shared is a change like another; a network failure, or the
        // session ended (its dialog is up), changes nothing here.
        if (e instanceof ApiError && (e.status === 403 || e.status === 404)) now = "\0refused";
      }
      if (stopped || mine !== asked) return;
      busy = false;
      let read = false;
      if (now !== undefined) {
        if (last === null || at !== seen) {
          // The first answer, or one asked for after the views began reading again (a
          // write made here, the tab come back to): what they read, not a change.
          pending = false;
        } else if (now !== last) {
          pending = true;
          read = Date.now() - readAt >= BUSY_MS;
        } else read = pending;
        last = now;
        seen = at;
      } else if (at !== seen) {
        // The views began reading again and this read failed: theirs may have too (the
        // network not back on waking from sleep), so the next answer is not taken as what
        // they read; they read once more when it comes.
        seen = at;
        pending = true;
      }
      if (read) {
        pending = false;
        readAt = Date.now();
        changed(); // which asks again at once (below), for the new baseline
      }
    };
    // The views read again (for whatever reason): asked again at once, so that what
    // they read is the baseline and a change after it is seen.
    const reread = () => void tick(true);
    listeners.add(reread);
    tick(true);
    const timer = setInterval(() => tick(false), WATCH_MS);
    return () => {
      stopped = true;
      listeners.delete(reread);
      clearInterval(timer);
    };
  }, [path]);
}

export const session: { me: User | null; ended: boolean } = { me: null, ended: false };

// Dialogs are opened from menus, toolbars and the tree: one place holds the open one.
export type DialogRequest =
  | { kind: "new-folder"; parentId: string | null }
  // `files`: dropped on the folder's page, listed in the dialog to be sent; `folderName`:
  // the folder they go to, named in the dialog.
  | { kind: "upload"; folderId: string | null; folderName?: string; tab?: string; files?: { file: File; path: string }[] }
  | { kind: "move"; fileIds: string[]; folderIds: string[]; from: string | null }
  | { kind: "delete"; fileIds: string[]; folderIds: string[]; name?: string }
  | { kind: "add-to-dataset"; fileIds: string[]; folderIds: string[]; folderId: string | null }
  // Who has access to a folder (its collaborators) or to a dataset (those it is shared with).
  | { kind: "access"; on: "folder" | "dataset"; id: string; name: string; role: string | null }
  | { kind: "rename"; item: { type: "file" | "folder"; id: string; name: string } };

let openDialog: (d: DialogRequest | null) => void = () => {};
// Whether one is open, and how many were opened: an action asked before something it
// waits on arrived (a key pressed before the folder's role) is dropped if one opened since.
let dialogShown = false;
let dialogsOpened = 0;
export const dialogState = () => ({ shown: dialogShown, opened: dialogsOpened });
export function setDialogOpener(f: (d: DialogRequest | null) => void) {
  openDialog = f;
}
export function open(d: DialogRequest) {
  dialogShown = true;
  dialogsOpened++;
  openDialog(d);
}
export function closeDialog() {
  dialogShown = false;
  openDialog(null);
}

// What a role on a folder allows (it holds for everything below): "user" looks, "editor"
// also uploads, makes folders, renames, moves and deletes, "admin" also manages access.
const RANK: Record<string, number> = { user: 1, viewer: 1, editor: 2, admin: 3 };
export const mayEdit = (role: string | null | undefined) => (RANK[role ?? ""] ?? 0) >= RANK.editor;
export const mayManage = (role: string | null | undefined) => role === "admin";
export const roleName = (role: string | null | undefined) =>
  role === "admin" ? "Admin" : role === "editor" ? "Editor" : role === "user" || role === "viewer" ? "User" : "none";

// What was just deleted, with the version it was deleted at: a list read before the delete
// hides it (and views stop asking for it, a 404 each) until a read begun after the delete
// answers. From then on the platform's word holds, so that an item restored since (from
// the Trash, the CLI, another tab or person) shows again without a reload.
const goneIds = new Map<string, number>();
export const gone = (id: string) => goneIds.has(id);
// Whether `id` was deleted at or after `version` (while a view begun then was showing it).
export const goneSince = (id: string, version: number) => (goneIds.get(id) ?? -1) >= version;
export function forget(ids: string[]) {
  ids.forEach((id) => goneIds.set(id, version));
}
// A read begun at version `since` has answered: it is newer than the deletes before it.
export function settled(since: number) {
  for (const [id, at] of goneIds) if (at < since) goneIds.delete(id);
}
export function restored(ids: string[]) {
  ids.forEach((id) => goneIds.delete(id));
}
