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
  if (document.visibilityState !== "visible" || Date.now() - returnedAt < 2_000) return;
  returnedAt = Date.now();
  changed();
}
if (typeof document !== "undefined") {
  document.addEventListener("visibilitychange", returned);
  window.addEventListener("focus", returned);
}

// How often a shown page asks whether what it shows changed: one small read (not its
// list, which may be thousands of items) while the tab is visible.
export const WATCH_MS = 5_000;

// Every WATCH_MS, `path` is read and `key` taken of it: when the key changes (or the
// read is refused: the thing is gone, or no longer shared), every view reads again.
export function useWatch(path: string | null, key: (body: any) => string) {
  useEffect(() => {
    if (!path) return;
    let last: string | null = null;
    let busy = false;
    const tick = async () => {
      if (busy || document.visibilityState !== "visible") return;
      busy = true;
      try {
        const now = key(await get(path));
        if (last !== null && now !== last) changed();
        last = now;
      } catch (e) {
        // Gone or no longer shared: said once (the views' own reads show it); a network
        // failure changes nothing here.
        if (e instanceof ApiError && (e.status === 403 || e.status === 404) && last !== "refused") {
          last = "refused";
          changed();
        }
      } finally {
        busy = false;
      }
    };
    tick();
    const timer = setInterval(tick, WATCH_MS);
    return () => clearInterval(timer);
  }, [path]);
}

export const session: { me: User | null } = { me: null };

// Dialogs are opened from menus, toolbars and the tree: one place holds the open one.
export type DialogRequest =
  | { kind: "new-folder"; parentId: string | null }
  | { kind: "upload"; folderId: string | null; tab?: string }
  | { kind: "move"; fileIds: string[]; folderIds: string[]; from: string | null }
  | { kind: "delete"; fileIds: string[]; folderIds: string[]; name?: string }
  | { kind: "add-to-dataset"; fileIds: string[]; folderIds: string[]; folderId: string | null }
  // Who has access to a folder (its collaborators) or to a dataset (those it is shared with).
  | { kind: "access"; on: "folder" | "dataset"; id: string; name: string; role: string | null }
  | { kind: "rename"; item: { type: "file" | "folder"; id: string; name: string } };

let openDialog: (d: DialogRequest | null) => void = () => {};
export function setDialogOpener(f: (d: DialogRequest | null) => void) {
  openDialog = f;
}
export function open(d: DialogRequest) {
  openDialog(d);
}
export function closeDialog() {
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
