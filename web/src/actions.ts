// What a right-click offers, for a folder and for a selection: only what the caller's
// role on it allows (a file takes its folder's role, a folder has its own).
import type { Folder, Item } from "./api";
import { fileUrl, folderUrl, navigate } from "./router";
import { mayEdit, open } from "./store";
import type { MenuItem } from "./ui";

export const ROLE_PENDING = "Your role on this folder is still being read.";

export const roleOf = (item: Item, folderRole: string | null | undefined) =>
  item.type === "folder" ? item.my_role ?? folderRole : folderRole;

export function folderMenu(f: Folder): MenuItem[] {
  const editing: MenuItem[] = mayEdit(f.my_role)
    ? [
        { label: "Upload files", action: () => open({ kind: "upload", folderId: f.id }) },
        { label: "New folder", action: () => open({ kind: "new-folder", parentId: f.id }) },
      ]
    : [];
  return [{ label: "Open", action: () => navigate(folderUrl(f.id)) }, ...editing, ...selectionMenu([f], f.parent_id, f.my_role)];
}

export function selectionMenu(items: Item[], folderId: string | null, folderRole: string | null | undefined): MenuItem[] {
  const fileIds = items.filter((i) => i.type === "file").map((i) => i.id);
  const folderIds = items.filter((i) => i.type === "folder").map((i) => i.id);
  const single = items.length === 1 ? items[0] : null;
  const editable = items.length > 0 && items.every((i) => mayEdit(roleOf(i, folderRole)));
  // The folder's role not read yet (a busy platform answers its contents first): what it
  // may allow is shown disabled, saying why, rather than missing or doing nothing.
  const waiting = !editable && items.some((i) => roleOf(i, folderRole) === undefined);
  const opening: MenuItem[] =
    single && single.type === "file" ? [{ label: "Open", action: () => navigate(fileUrl(single.id)) }] : [];
  const editing: MenuItem[] = editable || waiting
    ? [
        ...(single ? [{ label: "Rename", action: () => open({ kind: "rename", item: single }) }] : []),
        { label: "Move to another folder", action: () => open({ kind: "move", fileIds, folderIds, from: folderId }) },
        { label: "Delete", action: () => open({ kind: "delete", fileIds, folderIds }) },
      ].map((item) => (waiting ? { ...item, disabled: true, why: ROLE_PENDING } : item))
    : [];
  return [
    ...opening,
    {
      label: "Add to dataset",
      action: () =>
        open({
          kind: "add-to-dataset",
          fileIds,
          folderIds,
          folderId: single && single.type === "folder" ? single.id : folderId,
        }),
    },
    ...editing,
  ];
}
