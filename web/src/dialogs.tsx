// The dialogs: "New folder", "Move to another folder", "Delete", "Add to dataset",
// "Manage access" ("Upload files" is in upload.tsx). One open at a time.
import { useEffect, useId, useRef, useState } from "preact/hooks";
import { all, ApiError, del, get, patch, post, query, type Folder } from "./api";
import { count, filesAndFolders, listed, num } from "./format";
import { SyncedRefusal, useSyncState } from "./sync";
import { Lock } from "./icons";
import { openMadeFolder } from "./router";
import { changed, closeDialog, forget, mayEdit, mayManage, roleName, session, setDialogOpener, type DialogRequest } from "./store";
import { Confirm, Dialog, ErrorText, notify, TabPanel, Tabs, useFocusKept } from "./ui";
import { UploadDialog } from "./upload";

export function DialogHost() {
  const [dialog, setDialog] = useState<DialogRequest | null>(null);
  useEffect(() => setDialogOpener(setDialog), []);
  if (!dialog) return null;
  const close = closeDialog;
  switch (dialog.kind) {
    case "new-folder":
      return <NewFolder parentId={dialog.parentId} onClose={close} />;
    case "upload":
      return <UploadDialog folderId={dialog.folderId} folderName={dialog.folderName} tab={dialog.tab} files={dialog.files} onClose={close} />;
    case "move":
      return <MoveDialog {...dialog} onClose={close} />;
    case "delete":
      return <DeleteDialog {...dialog} onClose={close} />;
    case "add-to-dataset":
      return <AddToDataset {...dialog} onClose={close} />;
    case "access":
      return <ManageAccess {...dialog} onClose={close} />;
    case "rename":
      return <Rename item={dialog.item} onClose={close} />;
  }
}

function Field(props: { label: string; value: string; onInput: (v: string) => void; multiline?: boolean; required?: boolean; autoFocus?: boolean }) {
  const id = useId();
  return (
    <div class="field">
      <label for={id}>{props.label}</label>
      {props.multiline ? (
        <textarea id={id} value={props.value} onInput={(e) => props.onInput((e.target as HTMLTextAreaElement).value)} rows={3} />
      ) : (
        <input
          id={id}
          value={props.value}
          required={props.required}
          autoFocus={props.autoFocus}
          onInput={(e) => props.onInput((e.target as HTMLInputElement).value)}
        />
      )}
    </div>
  );
}

function NewFolder({ parentId, onClose }: { parentId: string | null; onClose: () => void }) {
  const synced = !!useSyncState(parentId)?.cloud_synced;
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  useFocusKept(busy);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body: any = { name: name.trim(), description: description.trim() || undefined };
      if (parentId) body.parent_id = parentId;
      const created = await post<Folder>("/v1/folders", body);
      notify(`Folder ${created.name} created`);
      changed();
      onClose();
      if (!parentId) openMadeFolder(created.id);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog title="New folder" onClose={onClose}>
      <form onSubmit={submit}>
        <Field label="Name" value={name} onInput={setName} required autoFocus />
        <Field label="Description" value={description} onInput={setDescription} multiline />
        {synced && <SyncedRefusal what="no folder can be made in it" />}
        <ErrorText error={error} />
        <div class="actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy || !name.trim() || synced}>
            Create
          </button>
        </div>
      </form>
    </Dialog>
  );
}

// The dry run's answer: what a move or delete would touch, and the links datasets lose.
type Impact = { folders: number; files: number; trash_days?: number; datasets: { id: string; name: string; links_removed: number }[] };

function ImpactView({ impact, verb }: { impact: Impact | null; verb: string }) {
  const [synced, setSynced] = useState<Record<string, string>>({});
  useEffect(() => {
    if (!impact) return;
    Promise.all(
      impact.datasets.map((d) =>
        get(`/v1/datasets/${d.id}`)
          .then((full: any) => [d.id, full.synced_folder_id] as const)
          .catch(() => [d.id, null] as const),
      ),
    ).then((pairs) => {
      const found: Record<string, string> = {};
      for (const [id, folder] of pairs) if (folder) found[id] = folder;
      setSynced(found);
    });
  }, [impact]);
  if (!impact) return <p class="muted">Working out what this touches…</p>;
  return (
    <section class="impact" aria-label="Impact">
      <p>
        This {verb}s {filesAndFolders(impact.files, impact.folders)}.
      </p>
      {impact.datasets.length > 0 ? (
        <>
          <p>Datasets that lose links:</p>
          <ul>
            {impact.datasets.map((d) => (
              <li key={d.id}>
                {d.name}: {d.links_removed} {d.links_removed === 1 ? "link" : "links"} removed
                {synced[d.id] ? " (synced dataset)" : ""}
              </li>
            ))}
          </ul>
        </>
      ) : (
        <p>No dataset loses a link.</p>
      )}
    </section>
  );
}

function MoveDialog(props: { fileIds: string[]; folderIds: string[]; from: string | null; onClose: () => void }) {
  const [text, setText] = useState("");
  // The search's hits the caller may move to, in its order (cloud-synced ones are left
  // out below).
  const [found, setFound] = useState<Folder[]>([]);
  const [target, setTarget] = useState<Folder | null>(null);
  const [impact, setImpact] = useState<Impact | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  useFocusKept(busy);
  // The hit the keyboard is on, by id: hits shown as their states arrive do not move it.
  const [activeId, setActiveId] = useState<string | null>(null);
  // The text whose answer is shown: when nothing matched, the dialog says so.
  const [searched, setSearched] = useState<string | null>(null);
  const listId = useId();
  // A cloud-synced folder (or one in it) is not offered: its files follow the bucket, so
  // the move would be refused. Each hit says so (a catalog of before, which does not,
  // has its hits offered, and the dry run says what the platform says).
  const hits = found.filter((f) => !f.cloud_synced);
  const leftOut = found.filter((f) => f.cloud_synced).map((f) => f.name);
  const activeHit = Math.max(0, hits.findIndex((f) => f.id === activeId));
  const setActiveHit = (i: number) => setActiveId(hits[i]?.id ?? null);
  useEffect(() => {
    setSearched(null);
    if (!text.trim() || (target && text === target.name)) {
      setFound([]);
      return;
    }
    const abort = new AbortController();
    const timer = setTimeout(() => {
      get(`/v1/search${query({ q: text.trim(), kind: "folder", limit: 20 })}`, abort.signal)
        .then((r: any) => {
          // Only folders the caller may add to (the editor role), never one being moved,
          // nor the one the selection is already in.
          const may: Folder[] = r.items.filter(
            (f: Folder) => !props.folderIds.includes(f.id) && f.id !== props.from && mayEdit(f.my_role),
          );
          setFound(may);
          setActiveId(null);
          setSearched(text.trim());
        })
        // A search that failed says so: else the dialog shows nothing, as if still looking.
        .catch((e) => abort.signal.aborted || setError(e));
    }, 150);
    return () => {
      clearTimeout(timer);
      abort.abort();
    };
  }, [text]);
  const body = { file_ids: props.fileIds, folder_ids: props.folderIds };
  useEffect(() => {
    if (!target) return;
    setImpact(null);
    setError(null);
    post<Impact>("/v1/move", { ...body, target_folder_id: target.id, dry_run: true }).then(setImpact).catch(setError);
  }, [target]);
  const choose = (f: Folder) => {
    setTarget(f);
    setText(f.name);
    setFound([]);
  };
  const move = async () => {
    if (!target) return;
    setBusy(true);
    try {
      const r = await post<{ moved: number }>("/v1/move", { ...body, target_folder_id: target.id });
      notify(`Moved ${count(r.moved, "item")} to ${target.name}`);
      changed();
      props.onClose();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog title="Move to another folder" onClose={props.onClose}>
      <div class="field combo">
        <label for={`${listId}-input`}>Target folder</label>
        <input
          id={`${listId}-input`}
          role="combobox"
          aria-expanded={hits.length > 0}
          aria-controls={listId}
          aria-autocomplete="list"
          aria-activedescendant={hits[activeHit] ? `${listId}-${hits[activeHit].id}` : undefined}
          autoComplete="off"
          autoFocus
          value={text}
          placeholder="Start typing a folder's name"
          onInput={(e) => {
            setText((e.target as HTMLInputElement).value);
            setTarget(null);
            setImpact(null);
            setError(null);
          }}
          onKeyDown={(e) => {
            if (e.key === "ArrowDown") setActiveHit(Math.min(activeHit + 1, hits.length - 1));
            else if (e.key === "ArrowUp") setActiveHit(Math.max(activeHit - 1, 0));
            else if (e.key === "Enter" && hits[activeHit]) choose(hits[activeHit]);
            else return;
            e.preventDefault();
          }}
        />
        {hits.length > 0 && (
          <ul role="listbox" id={listId} aria-label="Folders" class="options">
            {hits.map((f, i) => (
              <li
                role="option"
                id={`${listId}-${f.id}`}
                key={f.id}
                aria-selected={i === activeHit}
                aria-label={f.name}
                onMouseDown={(e) => e.preventDefault()}
                onClick={() => choose(f)}
              >
                <span>{f.name}</span>
                <span class="path">{f.path.map((p) => p.name).join(" / ")}</span>
              </li>
            ))}
          </ul>
        )}
      </div>
      {!target && searched && hits.length === 0 && (
        <p class="muted" role="status">
          No folder you can move this to matches “{searched}”.
        </p>
      )}
      {!target && searched && leftOut.length > 0 && (
        <p class="muted">
          Not offered: {leftOut.map((n) => `“${n}”`).join(", ")}. Nothing can be uploaded, made or moved into a cloud-synced folder.
        </p>
      )}
      {target && !error && <ImpactView impact={impact} verb="move" />}
      <ErrorText error={error} />
      <div class="actions">
        <button type="button" onClick={props.onClose}>
          Cancel
        </button>
        <button type="button" class="primary" disabled={!target || !impact || busy} onClick={move}>
          Move
        </button>
      </div>
    </Dialog>
  );
}

const days = (n: number) => {
  const d = Math.round(n * 10) / 10;
  return d === 1 ? "1 day" : `${d} days`;
};

// "Rename": a file's or a folder's name (unique among its siblings).
function Rename({ item, onClose }: { item: { type: "file" | "folder"; id: string; name: string }; onClose: () => void }) {
  const [name, setName] = useState(item.name);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  useFocusKept(busy);
  const submit = async (e: Event) => {
    e.preventDefault();
    const to = name.trim();
    if (to === item.name) return onClose();
    setBusy(true);
    setError(null);
    try {
      await patch(`/v1/${item.type === "file" ? "files" : "folders"}/${item.id}`, { name: to });
      notify(`Renamed to ${to}`);
      changed();
      onClose();
    } catch (err) {
      setError(
        // Other 409s (concurrent_change: nothing was written) keep the API's own words.
        err instanceof ApiError && err.code === "name_taken"
          ? new Error(`There is already a file or folder named ${to} here: choose another name.`)
          : err,
      );
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog title={`Rename ${item.type}`} onClose={onClose}>
      <form onSubmit={submit}>
        <Field label="Name" value={name} onInput={setName} required autoFocus />
        <ErrorText error={error} />
        <div class="actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy || !name.trim()}>
            Rename
          </button>
        </div>
      </form>
    </Dialog>
  );
}

// `name`: the one item deleted, named in the notice (the file page's "Delete").
function DeleteDialog(props: { fileIds: string[]; folderIds: string[]; name?: string; onClose: () => void }) {
  const [impact, setImpact] = useState<Impact | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  useFocusKept(busy);
  const body = { file_ids: props.fileIds, folder_ids: props.folderIds };
  useEffect(() => {
    post<Impact>("/v1/delete", { ...body, dry_run: true }).then(setImpact).catch(setError);
  }, []);
  const remove = async () => {
    setBusy(true);
    try {
      const r = await post<{ deleted: number }>("/v1/delete", body);
      forget([...props.fileIds, ...props.folderIds]);
      notify(
        props.name && r.deleted === 1
          ? `Deleted ${props.name}: it is in the Trash`
          : `Deleted ${count(r.deleted, "item")}`,
      );
      changed();
      props.onClose();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog title="Delete" onClose={props.onClose}>
      <p>
        Deleting a file removes it from all datasets it was added to. What you delete goes to the Trash
        {impact?.trash_days !== undefined ? `, where it stays ${days(impact.trash_days)}` : ""}: until then you can
        restore it from there.
      </p>
      {!error && <ImpactView impact={impact} verb="delete" />}
      <ErrorText error={error} />
      <div class="actions">
        <button type="button" onClick={props.onClose}>
          Cancel
        </button>
        <button type="button" class="danger" disabled={!impact || busy} onClick={remove}>
          Delete
        </button>
      </div>
    </Dialog>
  );
}

// The files a selection stands for: its files, and every file below its folders.
async function filesOf(fileIds: string[], folderIds: string[]): Promise<string[]> {
  const ids = [...fileIds];
  const queue = [...folderIds];
  while (queue.length) {
    const id = queue.shift()!;
    for (const item of await all<any>(`/v1/folders/${id}/items`)) {
      if (item.type === "file") ids.push(item.id);
      else queue.push(item.id);
    }
  }
  return [...new Set(ids)];
}

function AddToDataset(props: { fileIds: string[]; folderIds: string[]; folderId: string | null; onClose: () => void }) {
  const [tab, setTab] = useState("existing");
  const [datasets, setDatasets] = useState<any[] | null>(null);
  const [added, setAdded] = useState<Set<string>>(new Set());
  const [error, setError] = useState<unknown>(null);
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [sync, setSync] = useState(false);
  const [busy, setBusy] = useState(false);
  useFocusKept(busy);
  const base = useId();
  // The folder a new dataset may follow, by name, and how many files it brings.
  const [folder, setFolder] = useState<{ name: string; files: number } | null>(null);
  useEffect(() => {
    all("/v1/datasets").then(setDatasets).catch(setError);
    if (props.folderId)
      Promise.all([get<Folder>(`/v1/folders/${props.folderId}`), get<{ files: number }>(`/v1/folders/${props.folderId}/summary`)])
        .then(([f, summary]) => setFolder({ name: f.name, files: summary.files }))
        .catch(() => {});
  }, []);
  const add = async (d: { id: string; name: string }) => {
    setBusy(true);
    setError(null);
    try {
      const ids = await filesOf(props.fileIds, props.folderIds);
      const r = await post<{ added: number }>(`/v1/datasets/${d.id}/files`, { file_ids: ids });
      setAdded(new Set([...added, d.id]));
      // The counts shown are the datasets' as they are now.
      all("/v1/datasets").then(setDatasets).catch(() => {});
      notify(`Added ${count(ids.length, "file")} to ${d.name}${r.added < ids.length ? ` (${num(ids.length - r.added)} already there)` : ""}`);
      changed();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const create = async (e: Event) => {
    e.preventDefault();
    // Two datasets of one name cannot be told apart here, in the Datasets list or by
    // `files datasets NAME`; and "Add to new dataset" clicked again after a failure
    // would make a second one.
    const taken = (datasets ?? []).find((d) => d.name === name.trim());
    if (taken) {
      setError(new Error(`A dataset named ${taken.name} exists already: add to it in the Datasets tab, or give another name.`));
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const body: any = { name: name.trim(), description: description.trim() || undefined };
      if (sync && props.folderId) body.synced_folder_id = props.folderId;
      const d = await post<any>("/v1/datasets", body);
      // A synced dataset starts with its folder's files; others get the selection.
      const ids = await filesOf(props.fileIds, sync ? props.folderIds.filter((f) => f !== props.folderId) : props.folderIds);
      if (ids.length) await post(`/v1/datasets/${d.id}/files`, { file_ids: ids });
      notify(`Dataset ${d.name} created`);
      changed();
      props.onClose();
    } catch (err) {
      setError(err);
      // The dataset may have been made before the failure: it is known by its name now.
      all("/v1/datasets").then(setDatasets).catch(() => {});
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog title="Add to dataset" onClose={props.onClose}>
      <Tabs
        label="Add to dataset"
        idBase={base}
        active={tab}
        onChange={setTab}
        tabs={[
          { id: "existing", label: "Datasets" },
          { id: "new", label: "+New dataset" },
        ]}
      />
      <TabPanel idBase={base} id={tab}>
        {tab === "existing" ? (
          datasets === null ? (
            <p class="muted">Loading…</p>
          ) : datasets.length === 0 ? (
            <p class="muted">No datasets yet: create one in +New dataset.</p>
          ) : (
            <ul class="dataset-list" aria-label="Datasets">
              {datasets.map((d) => (
                <li key={d.id} aria-label={d.name}>
                  <span class="name">{d.name}</span>
                  <span class="muted">{count(d.file_count, "file")}</span>
                  <button type="button" disabled={busy} onClick={() => add(d)}>
                    {added.has(d.id) ? "Added" : "Add"}
                  </button>
                </li>
              ))}
            </ul>
          )
        ) : (
          <form onSubmit={create}>
            <Field label="Name" value={name} onInput={setName} required />
            <Field label="Description" value={description} onInput={setDescription} multiline />
            <div class="field switch-field">
              <button
                type="button"
                role="switch"
                aria-checked={sync}
                disabled={!props.folderId}
                aria-labelledby={`${base}-sync`}
                class="switch"
                onClick={() => setSync(!sync)}
              >
                <span />
              </button>
              <span id={`${base}-sync`}>Sync with folder{folder ? ` ${folder.name}` : ""}</span>
            </div>
            {sync && folder && (
              // Not only what was chosen: the whole folder, now and from now on.
              <p class="muted" role="note">
                The dataset takes every file in {folder.name} and its subfolders ({count(folder.files, "file")} now), not
                only those chosen, and follows it: files uploaded or moved into it join, files moved out or deleted leave.
              </p>
            )}
            <div class="actions">
              <button type="submit" class="primary" disabled={busy || !name.trim()}>
                Add to new dataset
              </button>
            </div>
          </form>
        )}
      </TabPanel>
      <ErrorText error={error} />
    </Dialog>
  );
}

// An email address as people type one: one "@", a dot in the part after it, no spaces
// and none of what separates or wraps addresses in a list (`,;<>"`: anything with them is
// left typed and named, not sent). The platform says which it knows. A list is split at
// commas, semicolons, spaces and line ends; a mail's To: line (`Ann Lee <ann@x.com>,
// "Lee, Bob" <bob@x.org>`, Outlook's `Lee, Bob <bob@x.org>; Kim, Al <al@x.org>`) gives its
// addresses, not its names: the platform knows "ann@x.com", not "<ann@x.com>".
const ADDRESS = /^[^@\s,;<>"]+@[^@\s.,;<>"]+(\.[^@\s.,;<>"]+)+$/;
const isAddress = (p: string) => ADDRESS.test(p);
// Quotes around an address, and a link's "mailto:", are not part of it.
const bare = (p: string) => p.replace(/^["'“”‘’]+|["'“”‘’]+$/g, "").replace(/^mailto:/i, "");
const words = (s: string) => s.split(/\s+/).map(bare).filter(Boolean);
// Where the quoted name opened at `at` closes: a quote with no closing one before the
// next "<", ">" or line end opens none (else `"Smith, Ann <ann@x.org>, bo@y.org` would
// take the rest of the list into one name); -1 then.
function closing(text: string, at: number): number {
  for (let i = at + 1; i < text.length; i++) {
    if (text[i] === '"') return i;
    if ("<>\n\r".includes(text[i])) return -1;
  }
  return -1;
}
const NAME_WORDS = /^\s*"?[\p{L}\p{M}'’ -]*\p{L}[\p{L}\p{M}'’ -]*"?\s*$/u;
function addresses(pasted: string): { valid: string[]; invalid: string[] } {
  // Curly quotes (a word processor's, a phone's) quote a name as straight ones do.
  const text = pasted.replace(/[“”„]/g, '"');
  // Split at commas, semicolons and line ends outside quotes (a quoted name may hold one).
  const pieces: { text: string; comma: boolean }[] = [];
  let piece = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    const end = c === '"' ? closing(text, i) : -1;
    if (end > 0) {
      piece += text.slice(i, end + 1);
      i = end;
    } else if (c === "," || c === ";" || c === "\n" || c === "\r") {
      pieces.push({ text: piece, comma: c === "," });
      piece = "";
    } else piece += c;
  }
  pieces.push({ text: piece, comma: false });
  // "Smith, Ann <ann@x.org>" unquoted (Outlook's way): a comma after a name's words (letters,
  // spaces, hyphens, apostrophes only: a mistyped address such as "annx.org" stays an entry
  // of its own, named as no address), before a `<address>`, is inside that address's name.
  const entries: string[] = [];
  pieces.forEach((p, i) => {
    const next = pieces[i + 1];
    if (p.comma && next && NAME_WORDS.test(p.text) && /<[^<>]*>/.test(next.text)) next.text = `${p.text},${next.text}`;
    else entries.push(p.text);
  });
  const parts = entries.flatMap((e) => {
    const angled = [...e.matchAll(/<([^<>]*)>/g)].map((m) => bare(m[1].trim()));
    // What is outside angle brackets and quotes: a name, unless it is an address itself.
    const outside = words(e.replace(/<[^<>]*>/g, " ").replace(/"[^"]*"/g, " "));
    if (angled.length) return [...angled, ...outside.filter(isAddress)].filter(Boolean);
    // `"Lee, Bob" bob@x.org`: the quoted name dropped; `"bob@x.org"` alone: the address.
    return outside.some(isAddress) ? outside : words(e);
  });
  return { valid: parts.filter(isAddress), invalid: [...new Set(parts.filter((p) => !isAddress(p)))] };
}

// `more` after `emails`, but those listed already (in any case).
const merged = (emails: string[], more: string[]) => {
  const next = [...emails];
  for (const e of more) if (!next.some((x) => x.toLowerCase() === e.toLowerCase())) next.push(e);
  return next;
};

const ROLES = [
  { id: "admin", label: "Admin" },
  { id: "editor", label: "Editor" },
  { id: "user", label: "User" },
];

// A folder's collaborators (roles granted on a folder above show, and stay, here) or the
// people a dataset is shared with (its creator is its Admin). The ACL changes a folder's
// role in place; a dataset's changes by sharing it again with the new role.
function ManageAccess(props: { on: "folder" | "dataset"; id: string; name: string; role: string | null; onClose: () => void }) {
  // Only an admin of it changes who has access; anyone else sees who has it.
  const manager = mayManage(props.role);
  const path = `/v1/${props.on === "folder" ? "folders" : "datasets"}/${props.id}/collaborators`;
  const [tab, setTab] = useState(manager ? "invite" : "manage");
  const [people, setPeople] = useState<any[] | null>(null);
  const [role, setRole] = useState("user");
  const [emails, setEmails] = useState<string[]>([]);
  const [typed, setTyped] = useState("");
  const [known, setKnown] = useState<{ email: string; name: string }[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const base = useId();
  const input = useRef<HTMLInputElement>(null);
  // Once added, "Add" is disabled (no email left): the focus goes to Emails, for more.
  useFocusKept(busy, input);
  const load = () =>
    get(path)
      .then((r: any) => setPeople(r.items))
      .catch(setError);
  useEffect(() => {
    load();
    if (session.me?.org_role === "admin") all<any>("/v1/users").then(setKnown).catch(() => {});
  }, []);
  // What "Emails" holds that is not an address: left in it, marked, and named.
  const [bad, setBad] = useState<string[]>([]);
  // The addresses in `text` become people to add (each once); what is not an address
  // stays typed.
  const addTyped = (text = typed) => {
    const { valid, invalid } = addresses(text);
    setEmails(merged(emails, valid));
    setTyped(invalid.join(", "));
    setBad(invalid);
  };
  // Addresses typed and not yet made people to add go with them (and stay typed if the
  // platform refuses one); anything else typed holds "Add" back, named.
  const invite = async () => {
    const { valid, invalid } = addresses(typed);
    if (invalid.length) {
      setBad(invalid);
      input.current?.focus();
      return;
    }
    const wanted = merged(emails, valid);
    if (!wanted.length) return;
    setBusy(true);
    setError(null);
    try {
      const r: any = await post(path, { emails: wanted, role });
      setPeople(r.items);
      setEmails([]);
      setTyped("");
      notify(`Added ${wanted.length} ${wanted.length === 1 ? "person" : "people"} as ${roleName(role)}`);
      changed();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const change = async (userId: string, email: string, to: string) => {
    setError(null);
    try {
      if (props.on === "folder") await patch(`${path}/${userId}`, { role: to });
      else await post(path, { emails: [email], role: to });
      await load();
      notify(`${email} is now ${roleName(to)}`);
      changed();
    } catch (e) {
      setError(e);
      await load();
    }
  };
  // The person "Remove" asks about: nobody loses access before the admin says so.
  const [removing, setRemoving] = useState<{ user_id: string; email: string } | null>(null);
  const remove = async (userId: string, email: string) => {
    setError(null);
    await del(`${path}/${userId}`);
    await load();
    notify(`Removed ${email} from ${props.name}`);
    changed();
  };
  // A grant on a folder above stays when this one goes: the question says so.
  const kept = removing && people?.find((p) => p.user_id === removing.user_id && p.inherited_from != null);
  // Escape closed the suggestions (what was typed stays); typing opens them again.
  const [dismissed, setDismissed] = useState(false);
  const suggestions = typed.length > 0 && !dismissed ? known.filter((u) => u.email.toLowerCase().includes(typed.toLowerCase()) && !emails.some((e) => e.toLowerCase() === u.email.toLowerCase())).slice(0, 8) : [];
  // The suggestion the arrow keys chose (-1: none; Enter then takes what was typed).
  const [pick, setPick] = useState(-1);
  const choose = (email: string) => {
    setEmails(merged(emails, [email]));
    setTyped("");
    setBad([]);
    setPick(-1);
    input.current?.focus();
  };
  return (
    <Dialog title={`Manage access: ${props.name}`} onClose={props.onClose} class="wide">
      <Tabs
        label="Manage access"
        idBase={base}
        active={tab}
        // What one tab's action was refused is not the other's to show.
        onChange={(to) => {
          setTab(to);
          setError(null);
        }}
        tabs={
          manager
            ? [
                { id: "invite", label: "Invite" },
                { id: "manage", label: "Manage" },
              ]
            : [{ id: "manage", label: "People" }]
        }
      />
      {!manager && <p class="muted">Your role here is {roleName(props.role)}: only an Admin of this {props.on} changes who has access.</p>}
      <TabPanel idBase={base} id={tab}>
        {tab === "invite" && manager ? (
          <div>
            <div class="field">
              <label for={`${base}-role`}>Role</label>
              <select id={`${base}-role`} value={role} onChange={(e) => setRole((e.target as HTMLSelectElement).value)}>
                {ROLES.map((r) => (
                  <option value={r.id} key={r.id}>
                    {r.label}
                  </option>
                ))}
              </select>
            </div>
            <div class="field">
              <label for={`${base}-emails`}>Emails</label>
              {emails.length > 0 && (
                <ul class="chips" aria-label="People to add">
                  {emails.map((e) => (
                    <li key={e}>
                      {e}
                      <button type="button" class="icon-button" aria-label={`Do not add ${e}`} onClick={() => setEmails(emails.filter((x) => x !== e))}>
                        ×
                      </button>
                    </li>
                  ))}
                </ul>
              )}
              <input
                id={`${base}-emails`}
                ref={input}
                type="text"
                role="combobox"
                autocomplete="off"
                aria-autocomplete="list"
                aria-expanded={suggestions.length > 0}
                aria-controls={suggestions.length > 0 ? `${base}-users` : undefined}
                aria-activedescendant={suggestions[pick] ? `${base}-user-${pick}` : undefined}
                placeholder="Type email addresses"
                value={typed}
                aria-invalid={bad.length > 0}
                aria-describedby={bad.length > 0 ? `${base}-emails-bad` : undefined}
                onInput={(e) => {
                  setTyped((e.target as HTMLInputElement).value);
                  setBad([]);
                  setPick(-1);
                  setDismissed(false);
                }}
                // A pasted list (a column of a sheet, a mail's To: line) becomes its people
                // at once: a text input would join its lines.
                onPaste={(e) => {
                  const text = e.clipboardData?.getData("text") ?? "";
                  if (!/[\s,;]/.test(text.trim())) return;
                  e.preventDefault();
                  const el = e.currentTarget as HTMLInputElement;
                  addTyped(el.value.slice(0, el.selectionStart ?? el.value.length) + text + el.value.slice(el.selectionEnd ?? el.value.length));
                }}
                onKeyDown={(e) => {
                  // The suggestions by keyboard, as the search box's hits.
                  if ((e.key === "ArrowDown" || e.key === "ArrowUp") && suggestions.length) {
                    e.preventDefault();
                    const n = suggestions.length;
                    setPick(e.key === "ArrowDown" ? (pick + 1) % n : (pick - 1 + n) % n);
                  } else if (e.key === "Escape" && suggestions.length) {
                    // Closes the suggestions, not the dialog.
                    e.preventDefault();
                    e.stopPropagation();
                    setDismissed(true);
                    setPick(-1);
                  } else if (e.key === "Enter" && suggestions[pick]) {
                    e.preventDefault();
                    choose(suggestions[pick].email);
                  } else if (e.key === "Enter" || e.key === "," || e.key === ";") {
                    e.preventDefault();
                    addTyped();
                  }
                }}
              />
              {bad.length > 0 && (
                <p id={`${base}-emails-bad`} class="error-text" role="alert">
                  {bad.length === 1 ? `Not an email address: “${bad[0]}”.` : `Not email addresses: ${listed(bad.map((b) => `“${b}”`))}.`} Correct{" "}
                  {bad.length === 1 ? "it" : "them"} or remove {bad.length === 1 ? "it" : "them"} to add the others.
                </p>
              )}
              {suggestions.length > 0 && (
                <ul class="options" role="listbox" id={`${base}-users`} aria-label="Users">
                  {suggestions.map((u, i) => (
                    <li
                      role="option"
                      id={`${base}-user-${i}`}
                      aria-selected={i === pick}
                      key={u.email}
                      onMouseDown={(e) => e.preventDefault()}
                      onClick={() => choose(u.email)}
                    >
                      {u.name} &lt;{u.email}&gt;
                    </li>
                  ))}
                </ul>
              )}
            </div>
            <div class="actions">
              <button type="button" class="primary" disabled={busy || (!emails.length && !typed.trim())} onClick={invite}>
                Add
              </button>
            </div>
          </div>
        ) : people === null ? (
          <p class="muted">Loading…</p>
        ) : (
          <table class="people">
            <caption class="visually-hidden">Collaborators</caption>
            <thead>
              <tr>
                <th scope="col">Person</th>
                <th scope="col">Role</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {people.map((p) => {
                // A dataset's grants come from nowhere else (no inherited_from).
                const inherited = p.inherited_from != null;
                const locked = p.role === "admin";
                // A dataset's role is changed by email: without one (the users could
                // not be looked up) the row is shown, not changed.
                const fixed = locked || inherited || !manager || (props.on === "dataset" && !p.email);
                const who = p.email ?? p.user_id;
                return (
                  <tr key={`${p.user_id}-${p.inherited_from}`} aria-label={who}>
                    <td>
                      <span>{p.name}</span> <span class="muted">{p.email}</span>
                      {inherited && <span class="muted"> (from a folder above)</span>}
                    </td>
                    <td>
                      {fixed ? (
                        <>
                          <span class="locked">
                            {locked && <Lock />} {ROLES.find((r) => r.id === p.role)?.label ?? p.role}
                          </span>
                          {/* The seed's rule, in words a screen reader reads (not a tooltip). */}
                          {locked && <span class="lock-why">Locked: an Admin cannot be removed, and their role cannot be changed.</span>}
                        </>
                      ) : (
                        <select
                          aria-label={`Role of ${p.email}`}
                          value={p.role}
                          onChange={(e) => change(p.user_id, p.email, (e.target as HTMLSelectElement).value)}
                        >
                          {ROLES.map((r) => (
                            <option value={r.id} key={r.id}>
                              {r.label}
                            </option>
                          ))}
                        </select>
                      )}
                    </td>
                    <td>
                      {!locked && !inherited && manager && (
                        <button type="button" aria-label={`Remove ${who}`} onClick={() => setRemoving({ user_id: p.user_id, email: who })}>
                          Remove
                        </button>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        )}
      </TabPanel>
      <ErrorText error={error} />
      {removing && (
        <Confirm
          title={`Remove ${removing.email} from ${props.on} ${props.name}?`}
          action="Remove access"
          onConfirm={() => remove(removing.user_id, removing.email)}
          onClose={() => setRemoving(null)}
        >
          <p>
            {props.on === "dataset"
              ? "They will lose access to it. Its files stay in their folders, for whoever may see them there."
              : kept
                ? `They keep the ${roleName(kept.role)} role they have from a folder above, and with it access to this folder.`
                : "They will lose access to it and everything in it."}
          </p>
        </Confirm>
      )}
    </Dialog>
  );
}

export { closeDialog };
