// What a right-click offers, for a folder and for a selection.
import type { Folder, Item } from "./api";
import { fileUrl, folderUrl, navigate } from "./router";
import { open } from "./store";
import type { MenuItem } from "./ui";

export function folderMenu(f: Folder): MenuItem[] {
  return [
    { label: "Open", action: () => navigate(folderUrl(f.id)) },
    { label: "Upload files", action: () => open({ kind: "upload", folderId: f.id }) },
    { label: "New folder", action: () => open({ kind: "new-folder", parentId: f.id }) },
    ...selectionMenu([f], f.parent_id),
  ];
}

export function selectionMenu(items: Item[], folderId: string | null): MenuItem[] {
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
    { label: "Move to another folder", action: () => open({ kind: "move", fileIds, folderIds, from: folderId }) },
    { label: "Delete", action: () => open({ kind: "delete", fileIds, folderIds }) },
  ];
}
