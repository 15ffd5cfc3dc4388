// A folder's page: toolbar, breadcrumbs, its items (a virtualised grid of thumbnails or
// a list with columns), selection by click, shift-click and ctrl/cmd-click, the
// keyboard, the right-click menu, and the details panel.
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { all, ApiError, get, type FileItem, type Folder, type Item } from "./api";
import { bytes, count, date, kindLabel, KINDS, num } from "./format";
import { KindIcon } from "./icons";
import { fileUrl, folderUrl, navigate } from "./router";
import { SyncPanel, useSyncState } from "./sync";
import { dialogState, gone, goneSince, mayEdit, open, settled, useVersion, useWatch } from "./store";
import { Menu, notify, Unavailable, type MenuItem } from "./ui";
import { renameRefused, roleOf, selectionMenu, SYNCED } from "./actions";
import { Details } from "./details";
import { useSelection } from "./selection";
import { draggingFiles, dropped, isDicom } from "./upload";

type Sort = { key: "name" | "kind" | "size" | "created_at"; dir: 1 | -1 };
const ROW = 40;
const TILE_W = 168;
const TILE_H = 176;

function kindOf(i: Item) {
  return i.type === "folder" ? "folder" : i.kind;
}

// The orders the catalog keeps (folders first, then files, each in that order, paged by
// cursor), so that the first page of a large folder is already the right one. Kind is not
// one of them: it is sorted here, over what is loaded.
const SERVER_ORDERS = new Set<Sort["key"]>(["name", "size", "created_at"]);
// The folder's own read refused for a moment (a 503 from a busy gateway, the network gone
// a moment) while its list came: read again by itself after these waits (ms), before the
// page says it could not be read. A refusal of the person (403, 404) is not asked again.
const FOLDER_RETRIES = [500, 1000, 2000, 4000];
const passing = (e: unknown) => e instanceof ApiError && [0, 502, 503, 504].includes(e.status);

function serverParams(sort: Sort, kind: string): Record<string, string | undefined> {
  const ordered = SERVER_ORDERS.has(sort.key);
  return {
    order: ordered ? sort.key : "name",
    desc: ordered && sort.dir === -1 ? "true" : undefined,
    kind: kind || undefined,
  };
}

function compare(a: Item, b: Item, sort: Sort): number {
  if (a.type !== b.type) return a.type === "folder" ? -1 : 1; // folders first, always
  let d = 0;
  if (sort.key === "name") d = a.name.localeCompare(b.name, undefined, { numeric: true, sensitivity: "base" });
  else if (sort.key === "kind") d = kindOf(a).localeCompare(kindOf(b));
  else if (sort.key === "size") d = (a.type === "file" ? a.size : 0) - (b.type === "file" ? b.size : 0);
  else d = a.created_at.localeCompare(b.created_at);
  if (d === 0) d = a.id.localeCompare(b.id);
  return d * sort.dir;
}

const prefs = {
  get view(): "grid" | "list" {
    return (localStorage.getItem("files.view") as "grid" | "list") ?? "grid";
  },
  set view(v) {
    localStorage.setItem("files.view", v);
  },
};

export function FolderPage({ folderId }: { folderId: string | null }) {
  const version = useVersion();
  const [folder, setFolder] = useState<Folder | null>(null);
  const [items, setItems] = useState<Item[] | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<Error | null>(null);
  // The folder's own read failed (not its list's): a drop held for its role is refused.
  const [folderFailed, setFolderFailed] = useState(false);
  // "Try again" after a failed read (the platform unreachable, say) reads everything again.
  const [attempt, setAttempt] = useState(0);
  const [view, setView] = useState(prefs.view);
  const [sort, setSort] = useState<Sort>({ key: "name", dir: 1 });
  const [kind, setKind] = useState("");
  // What was right-clicked, and where: its actions are drawn from the role as it is now,
  // so a menu opened before the folder's role arrived gains "Delete" once it does.
  const [menu, setMenu] = useState<{ x: number; y: number; targets: Item[] } | null>(null);

  // The version this folder was opened at: only a delete made while it is shown sends
  // the page to its parent; one made before is for the read to confirm (it may be back).
  const opened = useRef({ folderId, version });
  if (opened.current.folderId !== folderId) opened.current = { folderId, version };

  // What others change here (uploads, a role changed, access removed) shows unasked.
  useWatch(folderId ? `/v1/folders/${folderId}` : null, (f: Folder) =>
    [f.name, f.description, f.my_role, f.file_count, f.folder_count].join("\n"),
  );
  // What the list was read for: the same list read again (a write, a change seen) keeps
  // what it shows, and its selection, until the new read is whole.
  const listOf = `${folderId}|${folderId && SERVER_ORDERS.has(sort.key) ? `${sort.key}${sort.dir}` : ""}|${folderId ? kind : ""}`;
  const shownList = useRef<string | null>(null);
  useEffect(() => {
    // This folder was deleted (from the tree, say): its parent is shown instead.
    if (folderId && goneSince(folderId, opened.current.version)) return navigate(folderUrl(folder?.parent_id ?? null), true);
    const since = version;
    const again = shownList.current === listOf;
    const abort = new AbortController();
    setError(null);
    setFolderFailed(false);
    if (!again) setLoading(true);
    // Gone, or no longer shared with the person: nothing of it stays on the page.
    const lost = (e: unknown) => e instanceof ApiError && (e.status === 404 || e.status === 403);
    const failed = (e: unknown) => {
      if (abort.signal.aborted) return;
      setPendingKey(null);
      if (lost(e)) {
        // The folder went with its list: the page says it cannot be read (a drop held
        // for its role is refused), not "Loading folder…".
        if (folderId) setFolderFailed(true);
        setFolder(null);
        setItems(null);
        shownList.current = null;
      }
      setError(e as Error);
      setLoading(false);
    };
    const readFolder = (tried: number): void => {
      get<Folder>(`/v1/folders/${folderId}`, abort.signal)
        .then(setFolder)
        .catch((e) => {
          if (abort.signal.aborted) return;
          if (passing(e) && tried < FOLDER_RETRIES.length) {
            const wait = setTimeout(() => readFolder(tried + 1), FOLDER_RETRIES[tried]);
            abort.signal.addEventListener("abort", () => clearTimeout(wait));
            return;
          }
          setFolderFailed(true);
          failed(e);
        });
    };
    if (folderId) readFolder(0);
    else setFolder(null);
    const loaded: Item[] = [];
    const path = folderId ? `/v1/folders/${folderId}/items` : "/v1/folders";
    all<Item>(
      path,
      folderId ? serverParams(sort, kind) : {},
      (page) => {
        if (abort.signal.aborted) return;
        loaded.push(...page);
        if (again) return;
        // This read began after the deletes before it: what it lists is there again.
        settled(since);
        setItems([...loaded]);
      },
      abort.signal,
    )
      .then(() => {
        if (abort.signal.aborted) return;
        // Read again, the old list stays until the new one replaces it: only then may
        // what was deleted before this read show (had it been restored), not at its
        // first page, under the old list that still has it.
        settled(since);
        setItems([...loaded]);
        setLoading(false);
        shownList.current = listOf;
      })
      .catch(failed);
    return () => abort.abort();
  }, [folderId, version, attempt, listOf]);

  const shown = useMemo(() => {
    // A file whose object left the bucket stays in the catalog (the same file comes back
    // with it) but has no content to show: it is not listed.
    const list = (items ?? []).filter((i) => (!kind || kindOf(i) === kind) && !gone(i.id) && !(i.type === "file" && i.tombstone));
    // A folder's items come in the order asked for; only kind (and the top level,
    // which has no orders) are sorted here.
    if (folderId && SERVER_ORDERS.has(sort.key)) return list;
    return list.sort((a, b) => compare(a, b, sort));
  }, [items, kind, sort, folderId, version]);

  const selection = useSelection(shown);
  const { selected, setSelected, active, selectOnly } = selection;
  const chosen = shown.filter((i) => selected.has(i.id));
  // The caller's role here (at the top level, each folder has its own).
  const role = folderId ? folder?.my_role : null;
  const editable = (targets: Item[]) => targets.length > 0 && targets.every((i) => mayEdit(roleOf(i, role)));
  // At the top level anyone may make a folder; in a folder, an editor, unless it follows
  // a bucket (the platform refuses uploads and folders made there).
  const sync = useSyncState(folderId);
  const synced = !!sync?.cloud_synced;
  const mayAdd = folderId ? mayEdit(role) && !synced : true;
  const [dropping, setDropping] = useState(false);
  // Files dropped being read (their number once known), before "Upload files" opens:
  // said on the page, and a drop meanwhile refused (the ref: two drops in one frame).
  const [reading, setReading] = useState<number | null>(null);
  const readingNow = useRef(false);
  // Whether this page is still shown: files dropped on it go nowhere once another is
  // (each folder's page is a page of its own, and the dialog would not name this one).
  const onScreen = useRef(true);
  // Files dropped before the folder (and the person's role on it) is read wait for it:
  // what the page knows as it is now, and the drops waiting for the read to end.
  const latest = useRef({ folder, mayAdd, synced, folderFailed });
  latest.current = { folder, mayAdd, synced, folderFailed };
  const waiting = useRef<(() => void)[]>([]);
  const wake = () => {
    for (const go of waiting.current.splice(0)) go();
  };
  // On the folder's read alone: its list may fail while the folder is read.
  useEffect(() => {
    if (folder || folderFailed) wake();
  }, [folder, folderFailed]);
  const roleRead = () =>
    !folderId || latest.current.folder || latest.current.folderFailed || !onScreen.current
      ? Promise.resolve()
      : new Promise<void>((resolve) => waiting.current.push(resolve));
  useEffect(
    () => () => {
      onScreen.current = false;
      wake();
    },
    [],
  );

  // What was selected and is gone (deleted, moved) is no longer selected.
  useEffect(() => {
    if (!items) return;
    const ids = new Set(items.map((i) => i.id));
    setSelected((old) => new Set([...old].filter((id) => ids.has(id))));
  }, [items]);

  // F2 and Delete pressed before the folder's role was read: done once it is, or told,
  // unless the person went on meanwhile (another selection, Escape, a dialog opened, the
  // folder unreadable): a key acted on late must not replace what they do now.
  const [pendingKey, setPendingKey] = useState<{ key: string; targets: Item[]; dialogs: number; selection: number } | null>(null);
  const roleKnown = (targets: Item[]) => targets.every((i) => roleOf(i, role) !== undefined);
  const keyAction = ({ key, targets }: { key: string; targets: Item[] }) => {
    if (!editable(targets)) {
      notify(folder && !mayEdit(role) ? "You can view this folder, not change it." : "You cannot change these items.");
      return;
    }
    const refused = key === "F2" && renameRefused(targets[0]);
    if (refused) notify(refused);
    else if (key === "F2") open({ kind: "rename", item: targets[0] });
    else
      open({
        kind: "delete",
        fileIds: targets.filter((i) => i.type === "file").map((i) => i.id),
        folderIds: targets.filter((i) => i.type === "folder").map((i) => i.id),
      });
  };
  // Each other selection counted as the page draws it (not in an effect, which runs a
  // frame later: after a key pressed at once on what was just chosen).
  const chosenIds = chosen.map((i) => i.id).sort().join(",");
  const choices = useRef({ ids: chosenIds, made: 0 });
  if (choices.current.ids !== chosenIds) choices.current = { ids: chosenIds, made: choices.current.made + 1 };
  useEffect(() => {
    if (!pendingKey || !roleKnown(pendingKey.targets)) return;
    setPendingKey(null);
    const dialogs = dialogState();
    if (dialogs.shown || dialogs.opened !== pendingKey.dialogs || choices.current.made !== pendingKey.selection) return;
    keyAction(pendingKey);
  }, [pendingKey, role]);
  // Another folder opened meanwhile: what was asked here is dropped.
  useEffect(() => setPendingKey(null), [folderId]);

  const openItem = (item: Item) => navigate(item.type === "folder" ? folderUrl(item.id) : fileUrl(item.id));
  const contextMenu = (i: number, x: number, y: number) => {
    let targets = chosen;
    if (!selected.has(shown[i].id)) {
      selectOnly(i);
      targets = [shown[i]];
    }
    setMenu({ x, y, targets });
  };
  const actionsFor = (targets: Item[]): { label: string; items: MenuItem[] } => {
    const label = targets.length === 1 ? `Actions for ${targets[0].name}` : `Actions for ${count(targets.length, "item")}`;
    const extra: MenuItem[] =
      targets.length === 1 && targets[0].type === "folder"
        ? [
            { label: "Open", action: () => openItem(targets[0]) },
            ...(mayEdit(roleOf(targets[0], role))
              ? [
                  synced || targets[0].cloud_synced
                    ? { label: "Upload files", action: () => {}, disabled: true, why: SYNCED }
                    : { label: "Upload files", action: () => open({ kind: "upload", folderId: targets[0].id, folderName: targets[0].name }) },
                ]
              : []),
          ]
        : [];
    return { label, items: [...extra, ...selectionMenu(targets, folderId, role)] };
  };
  const shownMenu = menu && { ...menu, ...actionsFor(menu.targets) };

  const toolbar = (
    <div class="toolbar" role="toolbar" aria-label="Folder actions">
      {mayAdd && (
        <>
          <button type="button" class="primary" onClick={() => open({ kind: "new-folder", parentId: folderId })}>
            + New folder
          </button>
          <button type="button" class="primary" onClick={() => open({ kind: "upload", folderId, folderName: folder?.name })}>
            + Upload files
          </button>
        </>
      )}
      {folder && !mayAdd && !synced && <span class="muted">You can view this folder, not change it.</span>}
      {folder && synced && <span class="muted">{SYNCED}</span>}
      <span class="spacer" />
      <label class="inline" for="kind-filter">
        Kind
      </label>
      <select id="kind-filter" value={kind} onChange={(e) => setKind((e.target as HTMLSelectElement).value)}>
          <option value="">All kinds</option>
          {Object.entries(KINDS).map(([k, label]) => (
            <option value={k} key={k}>
              {label}
            </option>
          ))}
      </select>
      <label class="inline" for="sort-by">
        Sort by
      </label>
      <select id="sort-by" value={sort.key} onChange={(e) => setSort({ ...sort, key: (e.target as HTMLSelectElement).value as Sort["key"] })}>
          <option value="name">Name</option>
          <option value="kind">Kind</option>
          <option value="size">Size</option>
          <option value="created_at">Created</option>
      </select>
      <button
        type="button"
        aria-label={sort.dir === 1 ? "Ascending" : "Descending"}
        title="Sort direction"
        onClick={() => setSort({ ...sort, dir: sort.dir === 1 ? -1 : 1 })}
      >
        {sort.dir === 1 ? "↑" : "↓"}
      </button>
      <div role="group" aria-label="View" class="segmented">
        <button
          type="button"
          aria-pressed={view === "grid"}
          onClick={() => {
            prefs.view = "grid";
            setView("grid");
          }}
        >
          Grid
        </button>
        <button
          type="button"
          aria-pressed={view === "list"}
          onClick={() => {
            prefs.view = "list";
            setView("list");
          }}
        >
          List
        </button>
      </div>
    </div>
  );

  const retry = (
    <button type="button" onClick={() => setAttempt(attempt + 1)}>
      Try again
    </button>
  );
  // The folder itself could not be read: nothing on the page may pass for it (not the
  // top level's title, not "0 items").
  if (folderId && !folder && folderFailed && error)
    return (
      <div class="folder-page">
        <Unavailable what="folder" error={error} onRetry={() => setAttempt(attempt + 1)} />
      </div>
    );
  const details = chosen.length === 1 ? chosen[0] : chosen.length === 0 ? folder : null;
  // Files dropped on the page go to "+ Upload files" for this folder (at the top level,
  // the dialog asks for a folder first), or are refused in words where none may go.
  const refusal = () => (!folderId || latest.current.mayAdd ? null : latest.current.synced ? SYNCED : "You can view this folder, not change it.");
  const drop = async (e: DragEvent) => {
    if (!draggingFiles(e)) return;
    e.preventDefault();
    setDropping(false);
    const refused = folder && refusal();
    if (refused) {
      notify(refused);
      return;
    }
    if (readingNow.current) {
      notify("These files were not added: the files dropped before are still being read. Drop them again in a moment.", true);
      return;
    }
    readingNow.current = true;
    setReading(0);
    try {
      const files = await dropped(e.dataTransfer!);
      if (onScreen.current) setReading(files.length);
      // DICOM files alone (a scan's folder): to the tab that makes their series.
      const dicom = files.length > 0 && (await Promise.all(files.map((f) => isDicom(f.file)))).every(Boolean);
      // Dropped before the folder's role was read: held (still "Reading") until it is.
      await roleRead();
      const now = latest.current.folder;
      const into = now ? `“${now.name}”` : folderId ? "the folder" : "the top level";
      const why = refusal();
      if (!onScreen.current) notify(`The files dropped on ${into} were not added: another page was opened meanwhile.`, true);
      else if (folderId && !now) notify(`The files dropped on ${into} were not added: it could not be read.`, true);
      else if (why) notify(`The files dropped on ${into} were not added. ${why}`, true);
      else if (dialogState().shown) notify(`The files dropped on ${into} were not added: a dialog was opened meanwhile.`, true);
      else if (files.length) open({ kind: "upload", folderId, folderName: now?.name, files, tab: dicom ? "dicom" : undefined });
    } catch (err) {
      notify(`The dropped files could not be read: ${err instanceof Error ? err.message : String(err)}`, true);
    } finally {
      readingNow.current = false;
      if (onScreen.current) setReading(null);
    }
  };
  return (
    <div class="folder-page">
      <section
        class={`content${dropping ? " dropping" : ""}`}
        aria-label={folder ? folder.name : folderId ? "Folder" : "All folders"}
        onDragOver={(e) => {
          if (!draggingFiles(e) || dialogState().shown) return;
          e.preventDefault();
          e.dataTransfer!.dropEffect = "copy";
          setDropping(true);
        }}
        onDragLeave={(e) => {
          if (!(e.currentTarget as HTMLElement).contains(e.relatedTarget as Node | null)) setDropping(false);
        }}
        onDrop={(e) => {
          if (!dialogState().shown) drop(e);
        }}
      >
        <Breadcrumbs path={folder?.path ?? []} />
        {/* Until a folder is read, its page does not pass for the top level. */}
        <h1 class="title" id="folder-title" tabIndex={-1}>
          {folder ? folder.name : folderId ? "Loading folder…" : "All folders"}
        </h1>
        {toolbar}
        {reading !== null && (
          <p role="status" class="muted">
            {reading ? `Reading ${count(reading, "file")}…` : "Reading the dropped files…"}
          </p>
        )}
        {folderId && sync?.cloud_synced && <SyncPanel folderId={folderId} state={sync} role={role} />}
        {error && (
          <p role="alert" class="error-text">
            {error.message} {retry}
          </p>
        )}
        {!items && error ? null : items && shown.length === 0 && !loading ? (
          <p class="empty">{items.every((i) => gone(i.id)) ? (folderId ? "This folder is empty." : "No folders yet: create one with + New folder.") : "Nothing of this kind here."}</p>
        ) : (
          <Listing
            items={shown}
            view={view}
            sort={sort}
            onSort={(key) => setSort({ key, dir: sort.key === key ? (sort.dir === 1 ? -1 : 1) : 1 })}
            selected={selected}
            active={active}
            onClick={selection.click}
            onOpen={openItem}
            onContext={contextMenu}
            onKey={(e, cols) => {
              if (!shown.length) return false;
              if (e.key === "Escape") setPendingKey(null);
              if (selection.key(e, view === "grid" ? cols : 1, view === "grid")) return true;
              if (e.key === "Enter" && active >= 0) {
                openItem(shown[active]);
                return true;
              }
              if (chosen.length > 0 && ((e.key === "F2" && chosen.length === 1) || e.key === "Delete")) {
                const asked = { key: e.key, targets: chosen, dialogs: dialogState().opened, selection: choices.current.made };
                // Before the folder's role is read, the key waits for it (said in words).
                if (!roleKnown(chosen)) {
                  setPendingKey(asked);
                  notify(`${e.key === "F2" ? "Rename" : "Delete"} waits for your role on this folder, still being read.`);
                } else keyAction(asked);
                return true;
              }
              if (e.key === "Backspace" && folder) {
                navigate(folderUrl(folder.parent_id));
                return true;
              }
              return false;
            }}
            onMenuKey={(rect) => {
              // After Ctrl+A nothing is active: the menu is the selection's, by the list.
              if (active >= 0) contextMenu(active, rect.left + 24, rect.bottom);
              else if (chosen.length) setMenu({ x: rect.left + 24, y: rect.top + 24, targets: chosen });
            }}
          />
        )}
        {!(error && !items) && (
          <p class="count" aria-live="polite">
            {loading ? `Loading… ${count(items?.length ?? 0, "item")}` : count(shown.length, "item")}
            {chosen.length > 0 && `, ${num(chosen.length)} selected`}
          </p>
        )}
      </section>
      <aside class="details" aria-label="Details">
        {details ? (
          // The folder shown: its sync state as the page read it (not read twice).
          <Details key={details.id} item={details} sync={details === folder ? sync : undefined} />
        ) : chosen.length > 1 ? (
          <p>{count(chosen.length, "item")} selected</p>
        ) : (
          <p class="muted">Select a folder or file to see its details.</p>
        )}
      </aside>
      {shownMenu && (
        <Menu x={shownMenu.x} y={shownMenu.y} label={shownMenu.label} items={shownMenu.items} onClose={() => setMenu(null)} />
      )}
    </div>
  );
}

// `last` says whether the last crumb is the page shown (a folder's page), or a way up from
// it (a file's page, whose folder is not "the current page").
export function Breadcrumbs({ path, last = true }: { path: { id: string; name: string }[]; last?: boolean }) {
  return (
    <nav aria-label="Breadcrumb" class="breadcrumbs">
      <ol>
        <li>
          <a
            href="/"
            aria-current={path.length === 0 && last ? "page" : undefined}
            onClick={(e) => {
              e.preventDefault();
              navigate("/");
            }}
          >
            Files
          </a>
        </li>
        {path.map((p, i) => (
          <li key={p.id}>
            <a
              href={folderUrl(p.id)}
              title={p.name}
              aria-current={i === path.length - 1 && last ? "page" : undefined}
              onClick={(e) => {
                e.preventDefault();
                navigate(folderUrl(p.id));
              }}
            >
              {p.name}
            </a>
          </li>
        ))}
      </ol>
    </nav>
  );
}

// Thumbnails come from GET /v1/files/{id}/thumbnail when it answers 200; until then,
// and for a file without one, the kind's icon. The picture is only made invisible while it
// loads (a lazy image that is display:none is never fetched). "Not ready yet" is asked
// again a few times; "this file has none" is remembered, not retried.
const noThumbnail = new Set<string>();
const THUMBNAILED = new Set(["image", "video", "image_group", "image_sequence", "dicom_series", "pdf"]);
const RETRIES = 5;

export function Thumb({ file, size = 256 }: { file: FileItem; size?: number }) {
  const [ok, setOk] = useState(false);
  const [failed, setFailed] = useState(noThumbnail.has(file.id));
  // A picture that came on asking again (not the lazy image's own load).
  const [fetched, setFetched] = useState<string | null>(null);
  const src = `/v1/files/${file.id}/thumbnail?size=${size}`;
  useEffect(() => {
    if (!failed || noThumbnail.has(file.id)) return;
    // Why the picture failed: only a thumbnail not made yet is worth asking again.
    const stop = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let tries = 0;
    const ask = () =>
      fetch(src, { credentials: "same-origin", signal: stop.signal })
        .then(async (r) => {
          if (r.ok) {
            setFetched(URL.createObjectURL(await r.blob()));
            setFailed(false);
            return;
          }
          const code = (await r.json().catch(() => ({})))?.error?.code;
          if (code === "thumbnail_not_ready" && tries < RETRIES) timer = setTimeout(ask, 1000 * 2 ** tries++);
          else noThumbnail.add(file.id);
        })
        .catch(() => {});
    ask();
    return () => (stop.abort(), clearTimeout(timer));
  }, [failed]);
  useEffect(() => () => void (fetched && URL.revokeObjectURL(fetched)), [fetched]);
  const tryIt = THUMBNAILED.has(file.kind) && !failed;
  return (
    <div class={`thumb ${ok ? "loaded" : ""}`}>
      {!ok && <KindIcon kind={file.kind} size={48} />}
      {tryIt && (
        <img
          key={fetched ?? src}
          src={fetched ?? src}
          alt=""
          loading="lazy"
          decoding="async"
          class={ok ? undefined : "loading"}
          onLoad={() => setOk(true)}
          onError={() => {
            if (fetched) noThumbnail.add(file.id); // what was fetched is no picture
            setFailed(true);
          }}
        />
      )}
    </div>
  );
}

function Listing(props: {
  items: Item[];
  view: "grid" | "list";
  sort: Sort;
  onSort: (key: Sort["key"]) => void;
  selected: Set<string>;
  active: number;
  onClick: (i: number, e: MouseEvent) => void;
  onOpen: (item: Item) => void;
  onContext: (i: number, x: number, y: number) => void;
  onKey: (e: KeyboardEvent, cols: number) => boolean;
  onMenuKey: (rect: DOMRect) => void;
}) {
  const scroller = useRef<HTMLDivElement>(null);
  const [top, setTop] = useState(0);
  const [size, setSize] = useState({ w: 800, h: 600 });
  useLayoutEffect(() => {
    const el = scroller.current!;
    const measure = () => setSize({ w: el.clientWidth, h: el.clientHeight });
    measure();
    const observer = new ResizeObserver(measure);
    observer.observe(el);
    return () => observer.disconnect();
  }, []);
  const grid = props.view === "grid";
  const cols = grid ? Math.max(1, Math.floor(size.w / TILE_W)) : 1;
  const rowH = grid ? TILE_H : ROW;
  const rows = Math.ceil(props.items.length / cols);
  const first = Math.max(0, Math.floor(top / rowH) - 3);
  const last = Math.min(rows, Math.ceil((top + size.h) / rowH) + 3);

  // Keep the active item in view (the keyboard moves it).
  useEffect(() => {
    if (props.active < 0) return;
    const el = scroller.current!;
    const rowTop = Math.floor(props.active / cols) * rowH;
    if (rowTop < el.scrollTop) el.scrollTop = rowTop;
    else if (rowTop + rowH > el.scrollTop + el.clientHeight) el.scrollTop = rowTop + rowH - el.clientHeight;
  }, [props.active, cols, rowH]);

  const visible: { item: Item; i: number }[] = [];
  for (let r = first; r < last; r++)
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      if (i < props.items.length) visible.push({ item: props.items[i], i });
    }
  const activeItem = props.items[props.active];
  const header = (key: Sort["key"], label: string) => (
    <div
      role="columnheader"
      class={`col col-${key}`}
      aria-sort={props.sort.key === key ? (props.sort.dir === 1 ? "ascending" : "descending") : "none"}
    >
      <button type="button" class="link sort" onClick={() => props.onSort(key)}>
        {label}
        {props.sort.key === key ? (props.sort.dir === 1 ? " ▲" : " ▼") : ""}
      </button>
    </div>
  );
  return (
    <div
      class={`listing ${grid ? "grid-view" : "list-view"}`}
      role="grid"
      aria-label="Folder contents"
      aria-multiselectable="true"
      aria-rowcount={props.items.length + (grid ? 0 : 1)}
      aria-colcount={grid ? 1 : 4}
      tabIndex={0}
      aria-activedescendant={activeItem ? `item-${activeItem.id}` : undefined}
      onKeyDown={(e) => {
        if (e.key === "ContextMenu" || (e.shiftKey && e.key === "F10")) {
          const row = activeItem && document.getElementById(`item-${activeItem.id}`);
          props.onMenuKey((row || e.currentTarget).getBoundingClientRect());
          e.preventDefault();
          return;
        }
        if (props.onKey(e, cols)) e.preventDefault();
      }}
    >
      {!grid && (
        <div role="rowgroup" class="list-head">
          <div role="row" aria-rowindex={1} class="row head">
            {header("name", "Name")}
            {header("kind", "Kind")}
            {header("size", "Size")}
            {header("created_at", "Created")}
          </div>
        </div>
      )}
      <div class="scroller" ref={scroller} onScroll={(e) => setTop((e.target as HTMLElement).scrollTop)}>
        <div role="rowgroup" class="canvas" style={{ height: `${rows * rowH}px` }}>
          {visible.map(({ item, i }) => {
            const r = Math.floor(i / cols);
            const c = i % cols;
            const style = grid
              ? { top: `${r * rowH}px`, left: `${c * TILE_W}px`, width: `${TILE_W - 8}px`, height: `${TILE_H - 8}px` }
              : { top: `${r * rowH}px`, height: `${ROW}px` };
            return (
              <div
                role="row"
                id={`item-${item.id}`}
                key={item.id}
                aria-label={item.name}
                aria-rowindex={i + (grid ? 1 : 2)}
                aria-selected={props.selected.has(item.id)}
                class={`row item ${props.selected.has(item.id) ? "selected" : ""} ${i === props.active ? "active" : ""}`}
                style={style}
                onMouseDown={(e) => e.shiftKey && e.preventDefault()}
                onClick={(e) => props.onClick(i, e)}
                onDblClick={() => props.onOpen(item)}
                onContextMenu={(e) => {
                  e.preventDefault();
                  props.onContext(i, e.clientX, e.clientY);
                }}
              >
                {grid ? (
                  <div role="gridcell" class="tile">
                    {item.type === "file" ? <Thumb file={item} /> : <div class="thumb"><KindIcon kind="folder" size={56} /></div>}
                    <span class="tile-name" title={item.name}>
                      {item.name}
                    </span>
                  </div>
                ) : (
                  <>
                    <div role="gridcell" class="col col-name">
                      <KindIcon kind={kindOf(item)} size={18} />
                      <span class="name" title={item.name}>
                        {item.name}
                      </span>
                    </div>
                    <div role="gridcell" class="col col-kind">
                      {kindLabel(kindOf(item))}
                    </div>
                    <div role="gridcell" class="col col-size">
                      {item.type === "file" ? bytes(item.size) : count(item.file_count, "file")}
                    </div>
                    <div role="gridcell" class="col col-created_at">
                      {date(item.created_at)}
                    </div>
                  </>
                )}
              </div>
            );
          })}
        </div>
      </div>
    </div>
  );
}
