// What the app shares: who is signed in, and a version that every write bumps so the
// views showing data read it again.
import { useEffect, useState } from "preact/hooks";
import type { User } from "./api";

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

export const session: { me: User | null } = { me: null };

// Dialogs are opened from menus, toolbars and the tree: one place holds the open one.
export type DialogRequest =
  | { kind: "new-folder"; parentId: string | null }
  | { kind: "upload"; folderId: string | null; tab?: string }
  | { kind: "move"; fileIds: string[]; folderIds: string[]; from: string | null }
  | { kind: "delete"; fileIds: string[]; folderIds: string[] }
  | { kind: "add-to-dataset"; fileIds: string[]; folderIds: string[]; folderId: string | null }
  | { kind: "access"; folderId: string; folderName: string };

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
