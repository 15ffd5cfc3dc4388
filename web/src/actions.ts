// What a right-click offers, for a folder and for a selection: only what the caller's
// role on it allows (a file takes its folder's role, a folder has its own).
import type { Folder, Item } from "./api";
import { fileUrl, folderUrl, navigate } from "./router";
import { mayEdit, open } from "./store";
import type { MenuItem } from "./ui";

export const ROLE_PENDING = "Your role on this folder is still being read.";

// Nothing is uploaded or made in a folder that follows a bucket (the platform refuses it).
export const SYNCED = "Nothing can be uploaded, made or moved into a cloud-synced folder.";
export const TOP_LEVEL_RENAME = "Only its creator or an organisation admin may rename a top-level folder.";

// A top-level folder's name is checked against its creator's other folders, which others
// need not see: only its creator or an org admin may rename it (the platform refuses
// anyone else, its editors and admins included). The platform says so on each folder
// (`may_rename`): a folder shared on its own shows no parent either, and is no top-level
// folder for that. Only an editor's refusal is said here; a viewer has no Rename at all.
export function renameRefused(item: Item): string | null {
  if (item.type !== "folder" || item.may_rename || !mayEdit(item.my_role)) return null;
  return TOP_LEVEL_RENAME;
}

export const roleOf = (item: Item, folderRole: string | null | undefined) =>
  item.type === "folder" ? item.my_role ?? folderRole : folderRole;

export function folderMenu(f: Folder): MenuItem[] {
  const editing: MenuItem[] = mayEdit(f.my_role)
    ? [
        { label: "Upload files", action: () => open({ kind: "upload", folderId: f.id, folderName: f.name }) },
        { label: "New folder", action: () => open({ kind: "new-folder", parentId: f.id }) },
      ].map((item) => (f.cloud_synced ? { ...item, disabled: true, why: SYNCED } : item))
    : [];
  return [{ label: "Open", action: () => navigate(folderUrl(f.id)) }, ...editing, ...selectionMenu([f], f.parent_id, f.my_role)];
}

// Rename, Move and Delete of some items, as the caller's role allows: none without the
// editor role; before the folder's role is read (a busy platform answers the folder's
// contents, or the file, first), shown disabled saying why, rather than missing or doing
// nothing. The folder's menu and a file's page draw them from here alike.
export function editingActions(
  items: Item[],
  folderId: string | null,
  folderRole: string | null | undefined,
  name?: string,
): MenuItem[] {
  const fileIds = items.filter((i) => i.type === "file").map((i) => i.id);
  const folderIds = items.filter((i) => i.type === "folder").map((i) => i.id);
  const single = items.length === 1 ? items[0] : null;
  const editable = items.length > 0 && items.every((i) => mayEdit(roleOf(i, folderRole)));
  const waiting = !editable && items.some((i) => roleOf(i, folderRole) === undefined);
  if (!editable && !waiting) return [];
  const refused = single && renameRefused(single);
  const rename: MenuItem[] = single
    ? [
        refused && !waiting
          ? { label: "Rename", action: () => {}, disabled: true, why: refused }
          : { label: "Rename", action: () => open({ kind: "rename", item: single }) },
      ]
    : [];
  return [
    ...rename,
    { label: "Move to another folder", action: () => open({ kind: "move", fileIds, folderIds, from: folderId }) },
    { label: "Delete", action: () => open({ kind: "delete", fileIds, folderIds, name }) },
  ].map((item) => (waiting ? { ...item, disabled: true, why: ROLE_PENDING } : item));
}

export function selectionMenu(items: Item[], folderId: string | null, folderRole: string | null | undefined): MenuItem[] {
  const fileIds = items.filter((i) => i.type === "file").map((i) => i.id);
  const folderIds = items.filter((i) => i.type === "folder").map((i) => i.id);
  const single = items.length === 1 ? items[0] : null;
  const opening: MenuItem[] =
    single && single.type === "file" ? [{ label: "Open", action: () => navigate(fileUrl(single.id)) }] : [];
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
    ...editingActions(items, folderId, folderRole),
  ];
}
