// "Upload files": tabs Upload, Batch images as, DICOM and Import from private cloud.
// Files (or whole folders) come from a drop zone or the pickers; each file goes in a
// request of its own, so each refused file shows the API's message; large files go
// through upload sessions, part by part, resumed after a dropped connection, and after
// the person's sign-in ended and they signed in again.
import { useEffect, useId, useRef, useState } from "preact/hooks";
import { ApiError, all, get, post, send, type Folder } from "./api";
import { bytes, count, num } from "./format";
import { openMadeFolder } from "./router";
import { startedHere, SyncedRefusal, useSyncState } from "./sync";
import { changed, mayEdit } from "./store";
import { Dialog, ErrorText, notify, TabPanel, Tabs, useFocusKept } from "./ui";

// Files from this size go through upload sessions, in parts of PART bytes.
export const SESSION_AT = 8 * 1024 * 1024;
const PART = 8 * 1024 * 1024;
const PARALLEL = 3;

type Entry = {
  file: File;
  path: string; // relative path, "a/b/c.png" for a folder's file
  // "checking": sent, and the platform has still to take or refuse it (a DICOM job).
  // "unsure": a DICOM job refused a file of this name, and more than one row has it.
  status: "waiting" | "uploading" | "checking" | "done" | "refused" | "failed" | "unsure";
  loaded: number;
  message?: string;
  // The upload session opened for a large file: "Upload" again goes on with it.
  session?: string;
  // Said of a large file sent anew because that session had gone.
  note?: string;
  // A DICOM instance chosen in "Upload": not sent there (the platform would refuse it,
  // naming its API route), but offered to the "DICOM" tab.
  dicom?: boolean;
};

// A DICOM file: "DICM" after its 128-byte preamble, as the platform tells one.
export async function isDicom(file: File): Promise<boolean> {
  if (file.size < 132) return false;
  const magic = new Uint8Array(await file.slice(128, 132).arrayBuffer());
  return String.fromCharCode(...magic) === "DICM";
}
const DICOM_ELSEWHERE = "A DICOM file: not sent here. Its series is made in the “DICOM” tab.";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function pool<T>(items: T[], width: number, work: (item: T) => Promise<void>) {
  let next = 0;
  const errors: unknown[] = [];
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) {
        const item = items[next++];
        try {
          await work(item);
        } catch (e) {
          errors.push(e);
        }
      }
    }),
  );
  if (errors.length) throw errors[0];
}

// What was dropped: its files, and every file of a dropped folder with its path.
// Its entries are read as the drop is handled, before any await (they are gone after).
export function dropped(dt: DataTransfer): Promise<{ file: File; path: string }[]> {
  const roots = Array.from(dt.items ?? [])
    .map((i) => (i as any).webkitGetAsEntry?.())
    .filter(Boolean);
  if (roots.length) return entriesOf(roots);
  return Promise.resolve(Array.from(dt.files).map((f) => ({ file: f, path: f.name })));
}

// Files being dragged (not text or a link): what a drop zone takes.
export const draggingFiles = (e: DragEvent) => !!e.dataTransfer?.types.includes("Files");

async function entriesOf(roots: any[]): Promise<{ file: File; path: string }[]> {
  const found: { file: File; path: string }[] = [];
  const walk = async (entry: any, prefix: string): Promise<void> => {
    if (entry.isFile) {
      const file: File = await new Promise((ok, fail) => entry.file(ok, fail));
      found.push({ file, path: prefix + file.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch: any[] = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  };
  for (const root of roots) await walk(root, "");
  return found;
}

// An upload session as read: one read while the store did not list its parts in time
// (`parts_known: false`) shows none stored and every part to send, so it is read again
// 1, 2, then 4 s later before that answer is taken. Sending again a part the store has
// is harmless (it keeps the last sent, the same bytes): it costs the bytes only.
async function readSession(id: string): Promise<any> {
  let session = await get(`/v1/uploads/${id}`);
  for (let wait = 1000; session.parts_known === false && wait <= 4000; wait *= 2) {
    await sleep(wait);
    session = await get(`/v1/uploads/${id}`);
  }
  return session;
}

// The session a large file goes on with: `resume.id`, opened on an earlier "Upload"
// (cut off by a sign-in that ended), while it is open; else a new one, and if that one
// had gone (expired, aborted, or not the person's to see: 404), `resume.anew` says so.
// A session completed after all (its answer lost) is the file stored: nothing is sent.
// One opened by another (who signed in on this browser before) shows its missing parts
// without URLs, its opener's alone: not taken up, a new one is opened.
type Resume = { id?: string; opened: (id: string) => void; anew: () => void };

async function sessionFor(folderId: string, file: File, name: string, resume?: Resume): Promise<any> {
  if (resume?.id) {
    try {
      const found = await readSession(resume.id);
      // Only this file's, into this folder: the person may have chosen another folder
      // since, or the list's rows moved under a session remembered for another.
      const same = found.folder_id === folderId && found.name === name && found.size === file.size;
      const mine = (found.parts as any[]).every((p) => p.url);
      if (same && ((found.status === "open" && mine) || found.status === "completed")) return found;
    } catch (e) {
      // Unreachable, or signed out again: "Upload" asks once more, sending nothing twice.
      if (!(e instanceof ApiError && e.status === 404)) throw e;
    }
    resume.anew();
  }
  const session = await post(`/v1/folders/${folderId}/uploads`, {
    name,
    size: file.size,
    part_size: file.size < 512 * 1024 * 1024 ? PART : undefined,
  });
  resume?.opened(session.id);
  return session;
}

// The session went while its parts were sent: ended (a part 404, a completion 409), or
// its opener's key revoked or editor role lost before ingest ended it.
const sessionGone = (e: unknown) =>
  e instanceof ApiError && (e.status === 404 || ["session_ended", "session_key_revoked", "upload_right_lost"].includes(e.code));

// A large file through an upload session: parts straight to the part URLs, and after a
// dropped connection the session says which parts are missing (with fresh URLs).
export async function uploadInParts(folderId: string, file: File, onProgress: (loaded: number) => void, name = file.name, resume?: Resume) {
  const session = await sessionFor(folderId, file, name, resume);
  if (session.status === "completed") return session;
  try {
    return await sendParts(session, file, onProgress);
  } catch (e) {
    // The session taken up again was found gone only as its parts went (its key was
    // revoked while signed out, and ingest had not ended it yet): the file goes anew.
    if (!(resume && session.id === resume.id && sessionGone(e))) throw e;
    resume.anew();
    return sendParts(await sessionFor(folderId, file, name, { ...resume, id: undefined }), file, onProgress);
  }
}

async function sendParts(session: any, file: File, onProgress: (loaded: number) => void) {
  const partSize: number = session.part_size;
  const loaded = new Map<number, number>();
  for (const p of session.parts_stored ?? []) loaded.set(p.part, p.size);
  const report = () => onProgress([...loaded.values()].reduce((a, b) => a + b, 0));
  for (let attempt = 0; ; attempt++) {
    const stored = new Set<number>((session.parts_stored ?? []).map((p: any) => p.part));
    const todo = (session.parts as any[]).filter((p) => !stored.has(p.part));
    try {
      await pool(todo, PARALLEL, async (p) => {
        const start = (p.part - 1) * partSize;
        const blob = file.slice(start, Math.min(start + partSize, file.size));
        await send(p.url, blob, (l) => (loaded.set(p.part, l), report()), "PUT", undefined, false);
        loaded.set(p.part, blob.size);
        report();
      });
      break;
    } catch (e) {
      // A 403 is mostly a part URL whose signature expired: the session gives fresh ones.
      const retriable = e instanceof ApiError && (e.status === 0 || e.status >= 500 || e.status === 403) && !sessionGone(e);
      if (!retriable || attempt >= 8) throw e;
      await sleep(Math.min(500 * 2 ** attempt, 8000));
      for (;;) {
        try {
          session = await readSession(session.id);
          break;
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 0) || attempt++ >= 8) throw err;
          await sleep(1000);
        }
      }
      // Someone else signed in on this browser meanwhile (in another tab): the session's
      // part URLs are its opener's alone, and the file was not theirs to send.
      if ((session.parts as any[]).some((p) => !p.url))
        throw new ApiError(409, "signed_in_as_another", "Not sent: someone else signed in on this browser since it was chosen");
      loaded.clear();
      for (const p of session.parts_stored ?? []) loaded.set(p.part, p.size);
      report();
    }
  }
  return post(`/v1/uploads/${session.id}/complete`);
}

// The folders of a folder upload, made as needed ("a/b" under the target).
function folderMaker(root: string) {
  const made = new Map<string, Promise<string>>([["", Promise.resolve(root)]]);
  const ensure = (path: string): Promise<string> => {
    if (made.has(path)) return made.get(path)!;
    const cut = path.lastIndexOf("/");
    const parentPath = cut < 0 ? "" : path.slice(0, cut);
    const name = path.slice(cut + 1);
    const promise = ensure(parentPath).then(async (parent) => {
      try {
        const f = await post<Folder>("/v1/folders", { name, parent_id: parent });
        return f.id;
      } catch (e) {
        if (e instanceof ApiError && e.code === "name_taken") {
          const siblings = await all<Folder>("/v1/folders", { parent_id: parent });
          const same = siblings.find((s) => s.name.toLowerCase() === name.toLowerCase());
          if (same) return same.id;
        }
        throw e;
      }
    });
    made.set(path, promise);
    return promise;
  };
  return ensure;
}

function Picker(props: { onFiles: (files: { file: File; path: string }[]) => void; accept?: string; folders?: boolean; label: string }) {
  const files = useRef<HTMLInputElement>(null);
  const dirs = useRef<HTMLInputElement>(null);
  const [over, setOver] = useState(false);
  const pick = (list: FileList | null) =>
    list && props.onFiles(Array.from(list).map((f) => ({ file: f, path: (f as any).webkitRelativePath || f.name })));
  return (
    <div
      class={`dropzone ${over ? "over" : ""}`}
      role="group"
      aria-label={props.label}
      onDragOver={(e) => {
        e.preventDefault();
        setOver(true);
      }}
      onDragLeave={() => setOver(false)}
      onDrop={async (e) => {
        e.preventDefault();
        setOver(false);
        props.onFiles(await dropped(e.dataTransfer!));
      }}
    >
      <p>Drag and drop files{props.folders ? " or folders" : ""} here, or</p>
      <button type="button" onClick={() => files.current?.click()}>
        Choose files
      </button>
      {props.folders && (
        <button type="button" onClick={() => dirs.current?.click()}>
          Choose a folder
        </button>
      )}
      <input
        ref={files}
        type="file"
        multiple
        accept={props.accept}
        aria-label="Files"
        class="visually-hidden"
        tabIndex={-1}
        onChange={(e) => {
          pick((e.target as HTMLInputElement).files);
          (e.target as HTMLInputElement).value = "";
        }}
      />
      {props.folders && (
        <input
          ref={dirs}
          type="file"
          multiple
          {...({ webkitdirectory: true } as any)}
          aria-label="Whole folder"
          class="visually-hidden"
          tabIndex={-1}
          onChange={(e) => {
            pick((e.target as HTMLInputElement).files);
            (e.target as HTMLInputElement).value = "";
          }}
        />
      )}
    </div>
  );
}

function FileList({ entries, onRemove, busy }: { entries: Entry[]; onRemove: (i: number) => void; busy: boolean }) {
  if (!entries.length) return null;
  const total = entries.reduce((a, e) => a + e.file.size, 0);
  const loaded = entries.reduce((a, e) => a + e.loaded, 0);
  return (
    <div class="upload-list">
      <div class="total">
        <label>
          Total
          <progress aria-label="Total progress" max={Math.max(total, 1)} value={loaded} />
        </label>
        <span>
          {num(entries.filter((e) => e.status === "done").length)} of {count(entries.length, "file")}, {bytes(loaded)} of {bytes(total)}
        </span>
      </div>
      <ul aria-label="Files to upload">
        {entries.map((e, i) => (
          <li key={`${e.path}-${i}`} aria-label={e.path} class={`upload-${e.status}`}>
            <span class="name">{e.path}</span>
            <span class="size">{bytes(e.file.size)}</span>
            <progress aria-label={`Progress of ${e.path}`} max={Math.max(e.file.size, 1)} value={e.loaded} />
            <span class="status">
              {e.note && `${e.note} `}
              {e.status === "done"
                ? "Uploaded"
                : e.status === "refused" || e.status === "failed" || e.status === "unsure"
                  ? e.message
                  : e.status === "uploading"
                    ? "Uploading…"
                    : e.status === "checking"
                      ? "Checking…"
                      : ""}
            </span>
            {!busy && e.status !== "done" && (
              <button type="button" class="icon-button" aria-label={`Remove ${e.path}`} onClick={() => onRemove(i)}>
                ×
              </button>
            )}
          </li>
        ))}
      </ul>
    </div>
  );
}

function JobProgress({ job, label }: { job: any; label: string }) {
  if (!job) return null;
  const p = job.progress ?? { done: 0, total: 0 };
  // A job's answer holds its first 1,000 files and errors, and how many there are.
  const files = job.file_count ?? job.files?.length ?? 0;
  const more = (job.error_count ?? 0) - (job.errors?.length ?? 0);
  return (
    <section class="job" aria-label={label}>
      <label>
        {label}
        <progress aria-label={label} max={Math.max(p.total, 1)} value={p.done} />
      </label>
      <p>
        {num(p.done)} of {num(p.total)} done, status {job.status}
        {files ? `, ${count(files, "file")}` : ""}
      </p>
      {job.errors?.length > 0 && (
        <ul class="job-errors" aria-label="Refused">
          {job.errors.map((e: any, i: number) => (
            <li key={i}>
              <strong>{e.name}</strong>: {refusal(e)}
            </li>
          ))}
          {more > 0 && <li>and {more} more refused</li>}
        </ul>
      )}
    </section>
  );
}

// A job's refusal; the missing tags only when its message does not already name them.
function refusal(e: { message?: string; details?: { missing_tags?: string[] } }): string {
  const message = e.message ?? "refused";
  const missing = (e.details?.missing_tags ?? []).filter((t) => !message.includes(t));
  return missing.length ? `${message} (missing tags: ${missing.join(", ")})` : message;
}

// Every error of a job: its answer's first page, then the rest, page by page.
async function allErrors(job: any): Promise<any[]> {
  const found = [...(job.errors ?? [])];
  for (let cursor = job.next_errors_cursor; cursor; ) {
    const page = await get(`/v1/jobs/${job.id}/errors?limit=1000&cursor=${encodeURIComponent(cursor)}`);
    found.push(...page.items);
    cursor = page.next_cursor;
  }
  return found;
}

async function follow(jobId: string, onJob: (job: any) => void) {
  for (;;) {
    const job = await get(`/v1/jobs/${jobId}`);
    onJob(job);
    if (job.status === "done" || job.status === "failed" || job.status === "expired") return job;
    await sleep(400);
  }
}

const UNDER_WAY = "Sending the files: it may be closed once each has its answer.";

export function UploadDialog(props: {
  folderId: string | null;
  folderName?: string;
  tab?: string;
  files?: { file: File; path: string }[];
  onClose: () => void;
}) {
  const base = useId();
  const [tab, setTab] = useState(props.tab ?? "upload");
  const [folderId, setFolderId] = useState(props.folderId);
  const [folders, setFolders] = useState<Folder[]>([]);
  const [entries, setEntries] = useState<Entry[]>(() => (props.files ?? []).map((f) => ({ ...f, status: "waiting" as const, loaded: 0 })));
  const [busy, setBusy] = useState(false);
  // "Upload" stays disabled once all is sent: the focus then goes to Close.
  const closing = useRef<HTMLButtonElement>(null);
  useFocusKept(busy, closing);
  const [error, setError] = useState<unknown>(null);
  const [job, setJob] = useState<any>(null);
  const [batchKind, setBatchKind] = useState("image_group");
  const [batchName, setBatchName] = useState("");
  const [integrations, setIntegrations] = useState<any[] | null>(null);
  const [integration, setIntegration] = useState("");
  const [prefix, setPrefix] = useState("");
  const [keys, setKeys] = useState("");
  const [manifest, setManifest] = useState<File | null>(null);
  // "Keep synced": a new folder follows the prefix, rather than a one-time import.
  const [keepSynced, setKeepSynced] = useState(false);
  const [syncedName, setSyncedName] = useState("");
  const synced = !!useSyncState(folderId)?.cloud_synced;
  const live = useRef(entries);
  live.current = entries;
  // "+ New folder" at the top level: the name being typed (null: not making one).
  const [naming, setNaming] = useState<string | null>(null);
  const [namingError, setNamingError] = useState<unknown>(null);
  const makeFolder = async (e: Event) => {
    e.preventDefault();
    if (!naming?.trim()) return;
    setNamingError(null);
    try {
      const made = await post<Folder>("/v1/folders", { name: naming.trim() });
      setFolders([...folders, made].sort((a, b) => a.name.localeCompare(b.name)));
      setFolderId(made.id);
      setNaming(null);
      notify(`Folder ${made.name} created`);
      changed();
    } catch (err) {
      setNamingError(err);
    }
  };

  useEffect(() => {
    // Files go only where the caller may add them (the editor role).
    if (!props.folderId) all<Folder>("/v1/folders").then((fs) => setFolders(fs.filter((f) => mayEdit(f.my_role)))).catch(() => {});
  }, []);
  useEffect(() => {
    if (tab === "import" && integrations === null)
      all("/v1/integrations")
        .then((found) => {
          setIntegrations(found);
          if (found[0]) setIntegration(found[0].id);
        })
        .catch(() => setIntegrations([]));
  }, [tab]);
  const switchTab = (t: string, keep: Entry[] = []) => {
    if (busy) return;
    setTab(t);
    live.current = keep;
    setEntries(keep);
    setJob(null);
    setError(null);
  };
  const dicomSetAside = entries.filter((e) => e.dicom);
  const add = (files: { file: File; path: string }[]) =>
    setEntries([...live.current.filter((e) => e.status !== "done"), ...files.map((f) => ({ ...f, status: "waiting" as const, loaded: 0 }))]);
  const update = (i: number, change: Partial<Entry>) => {
    const next = [...live.current];
    next[i] = { ...next[i], ...change };
    live.current = next;
    setEntries(next);
  };

  const upload = async () => {
    if (!folderId) return;
    setBusy(true);
    setError(null);
    const ensure = folderMaker(folderId);
    const todo = live.current.map((e, i) => ({ e, i })).filter(({ e }) => e.status !== "done");
    await pool(todo, PARALLEL, async ({ e, i }) => {
      if (e.dicom || (await isDicom(e.file))) {
        update(i, { status: "refused", loaded: 0, message: DICOM_ELSEWHERE, dicom: true });
        return;
      }
      update(i, { status: "uploading", loaded: 0, message: undefined, note: undefined });
      try {
        const dir = e.path.includes("/") ? e.path.slice(0, e.path.lastIndexOf("/")) : "";
        const target = await ensure(dir);
        if (e.file.size >= SESSION_AT)
          await uploadInParts(target, e.file, (l) => update(i, { loaded: l }), e.file.name, {
            id: e.session,
            opened: (session) => update(i, { session }),
            anew: () => update(i, { note: "Its earlier upload had ended: sent again from the start." }),
          });
        else {
          const form = new FormData();
          form.append("file", e.file, e.file.name);
          await send(`/v1/folders/${target}/files`, form, (l, t) => update(i, { loaded: Math.min(e.file.size, (l / Math.max(t, 1)) * e.file.size) }));
        }
        update(i, { status: "done", loaded: e.file.size });
      } catch (err) {
        // A session that ended is no refusal of the file: once signed in again,
        // "Upload" sends it.
        const ended = err instanceof ApiError && err.status === 401;
        const refused = err instanceof ApiError && err.status >= 400 && err.status < 500 && !ended;
        const message = ended ? "Not sent: the session ended" : err instanceof Error ? err.message : String(err);
        update(i, { status: refused ? "refused" : "failed", message, loaded: 0 });
      }
    }).catch(() => {});
    setBusy(false);
    changed();
    const done = live.current.filter((e) => e.status === "done").length;
    // Refused: the platform said no (its reason is on the file's row). Not sent: it could
    // not be reached, or failed; "Upload" sends those again.
    const refused = live.current.filter((e) => e.status === "refused").length;
    const unsent = live.current.length - done - refused;
    notify(
      `${count(done, "file")} uploaded${refused ? `, ${num(refused)} refused` : ""}${unsent ? `, ${num(unsent)} not sent: try again` : ""}`,
      refused + unsent > 0,
    );
  };

  const batch = async () => {
    if (!folderId || !batchName.trim()) return;
    setBusy(true);
    setError(null);
    const form = new FormData();
    form.append("kind", batchKind);
    form.append("name", batchName.trim());
    for (const e of live.current) form.append("file", e.file, e.file.name);
    const total = live.current.reduce((a, e) => a + e.file.size, 0);
    try {
      live.current.forEach((_, i) => update(i, { status: "uploading" }));
      const made = await send(`/v1/folders/${folderId}/image-groups`, form, (l, t) => {
        let left = (l / Math.max(t, 1)) * total;
        setEntries(live.current.map((e) => {
          const mine = Math.min(left, e.file.size);
          left -= mine;
          return { ...e, loaded: mine };
        }));
      });
      live.current.forEach((e, i) => update(i, { status: "done", loaded: e.file.size }));
      // 202: stored, but not yet listed when the platform answered (a large group on a
      // busy platform); it appears in the folder shortly, and sending it again would
      // make a second one.
      const what = `${batchKind === "image_group" ? "Image group" : "Image sequence"} ${batchName.trim()}`;
      notify(made?.file ? `${what} created` : `${what} stored: it will be listed in a moment`);
      changed();
    } catch (err) {
      live.current.forEach((_, i) => update(i, { status: "refused", loaded: 0, message: "" }));
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const dicom = async () => {
    if (!folderId) return;
    setBusy(true);
    setError(null);
    setJob(null);
    const form = new FormData();
    for (const e of live.current) form.append("file", e.file, e.file.name);
    const total = live.current.reduce((a, e) => a + e.file.size, 0);
    try {
      const started = await send(`/v1/folders/${folderId}/dicom`, form, (l, t) => {
        let left = (l / Math.max(t, 1)) * total;
        setEntries(live.current.map((e) => {
          const mine = Math.min(left, e.file.size);
          left -= mine;
          return { ...e, loaded: mine, status: "uploading" };
        }));
      });
      setEntries(live.current.map((e) => ({ ...e, loaded: e.file.size, status: "checking" })));
      const finished = await follow(started.job_id, setJob);
      // Taken, unless the job refused it. The job names a refusal only by the name the
      // file was sent under, its own name without its folder: when rows of several
      // subfolders share that name, it does not say which of them, and those rows say so.
      const refusals = new Map<string, any[]>();
      for (const x of await allErrors(finished)) refusals.set(x.name, [...(refusals.get(x.name) ?? []), x]);
      const named = new Map<string, number>();
      for (const e of live.current) named.set(e.file.name, (named.get(e.file.name) ?? 0) + 1);
      setEntries(
        live.current.map((e): Entry => {
          const why = refusals.get(e.file.name) ?? [];
          const rows = named.get(e.file.name) ?? 1;
          const words = [...new Set(why.map(refusal))].join("; ");
          if (why.length >= rows) return { ...e, status: "refused", message: words };
          if (why.length)
            return {
              ...e,
              status: "unsure",
              message: `${why.length} of the ${rows} files named ${e.file.name} ${why.length === 1 ? "was" : "were"} refused, which is not known: ${words}`,
            };
          return { ...e, status: finished.status === "failed" ? "failed" : "done", message: finished.status === "failed" ? "not taken" : undefined };
        }),
      );
      changed();
      const refused = finished.error_count ?? finished.errors?.length ?? 0;
      notify(`DICOM: ${finished.file_count ?? finished.files?.length ?? 0} series, ${refused} refused`, refused > 0);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const importObjects = async () => {
    if (!folderId || !integration) return;
    setBusy(true);
    setError(null);
    setJob(null);
    try {
      const body: any = { integration_id: integration };
      if (prefix.trim()) body.prefix = prefix.trim();
      const named = keys.split("\n").map((k) => k.trim()).filter(Boolean);
      if (named.length) body.keys = named;
      if (manifest) body.manifest = JSON.parse(await manifest.text());
      const started = await post(`/v1/folders/${folderId}/imports`, body);
      const finished = await follow(started.job_id, setJob);
      changed();
      notify(`Import ${finished.status}: ${count(finished.file_count ?? finished.files?.length ?? 0, "file")}`, finished.status === "failed");
    } catch (err) {
      setError(err instanceof SyntaxError ? new Error(`The manifest is not JSON: ${err.message}`) : err);
    } finally {
      setBusy(false);
    }
  };

  const makeSynced = async () => {
    if (!integration || !syncedName.trim()) return;
    setBusy(true);
    setError(null);
    try {
      const body: any = { name: syncedName.trim(), cloud_sync: { integration_id: integration, prefix: prefix.trim() } };
      if (folderId) body.parent_id = folderId;
      const made = await post<Folder & { sync_job_id: string }>("/v1/folders", body);
      startedHere(made.sync_job_id);
      notify(`Folder ${made.name} created: it stays synced with the bucket prefix`);
      changed();
      props.onClose();
      openMadeFolder(made.id);
    } catch (err) {
      // A set-up refused once the folder was made (its grant late, the sync refused)
      // sends the folder to the Trash: what the person finds there is said, and the
      // views read again. A name taken made nothing.
      if (err instanceof ApiError && err.code === "name_taken") setError(err);
      else {
        const said = err instanceof Error ? err.message : String(err);
        setError(new Error(`${said} If a folder named “${syncedName.trim()}” appears in the Trash, it is this attempt's: it was not kept.`));
        changed();
      }
    } finally {
      setBusy(false);
    }
  };

  const tabs = [
    { id: "upload", label: "Upload" },
    { id: "batch", label: "Batch images as" },
    { id: "dicom", label: "DICOM" },
    { id: "import", label: "Import from private cloud" },
  ];
  const nothing = entries.filter((e) => e.status !== "done").length === 0;
  return (
    <Dialog title="Upload files" onClose={props.onClose} closeBlocked={busy ? UNDER_WAY : undefined} class="wide">
      {props.folderId && props.folderName && (
        <p class="muted">
          Into folder <strong>{props.folderName}</strong>
        </p>
      )}
      {!props.folderId && (
        <div class="field">
          <label for={`${base}-folder`}>Upload to folder</label>
          <div class="actions-inline">
            <select id={`${base}-folder`} value={folderId ?? ""} disabled={busy} onChange={(e) => setFolderId((e.target as HTMLSelectElement).value || null)}>
              <option value="">Choose a folder (files cannot be added at the top level)</option>
              {folders.map((f) => (
                <option key={f.id} value={f.id}>
                  {f.name}
                </option>
              ))}
            </select>
            {naming === null && (
              <button type="button" disabled={busy} onClick={() => (setNaming(""), setNamingError(null))}>
                + New folder
              </button>
            )}
          </div>
          {naming !== null && (
            // The seed's "You can click +New folder": a folder made here, and chosen.
            <form class="inline-form" onSubmit={makeFolder}>
              <label for={`${base}-new-folder`}>New folder name</label>
              <input id={`${base}-new-folder`} autoFocus value={naming} onInput={(e) => setNaming((e.target as HTMLInputElement).value)} />
              <button type="submit" class="primary" disabled={!naming.trim()}>
                Create
              </button>
              <button type="button" onClick={() => (setNaming(null), setNamingError(null))}>
                Cancel
              </button>
              <ErrorText error={namingError} />
            </form>
          )}
        </div>
      )}
      {synced && <SyncedRefusal what="nothing can be uploaded or imported into it" />}
      {!synced && <Tabs label="What to add" tabs={tabs} active={tab} onChange={switchTab} idBase={base} />}
      {!synced && <TabPanel idBase={base} id={tab}>
        {tab === "upload" && (
          <>
            <Picker label="Drop zone" folders onFiles={add} />
            <FileList entries={entries} busy={busy} onRemove={(i) => setEntries(entries.filter((_, k) => k !== i))} />
            <div class="actions">
              {!busy && dicomSetAside.length > 0 && (
                <button
                  type="button"
                  onClick={() =>
                    switchTab(
                      "dicom",
                      dicomSetAside.map((e) => ({ file: e.file, path: e.path, status: "waiting" as const, loaded: 0 })),
                    )
                  }
                >
                  {`Upload ${dicomSetAside.length === 1 ? "the DICOM file" : `the ${num(dicomSetAside.length)} DICOM files`} in the DICOM tab`}
                </button>
              )}
              <button type="button" class="primary" disabled={busy || !folderId || nothing} onClick={upload}>
                Upload
              </button>
            </div>
          </>
        )}
        {tab === "batch" && (
          <>
            <fieldset class="field">
              <legend>Batch images as</legend>
              <label class="inline">
                <input type="radio" name={`${base}-batch`} checked={batchKind === "image_group"} onChange={() => setBatchKind("image_group")} />
                Image group
              </label>
              <label class="inline">
                <input type="radio" name={`${base}-batch`} checked={batchKind === "image_sequence"} onChange={() => setBatchKind("image_sequence")} />
                Image sequence
              </label>
            </fieldset>
            <div class="field">
              <label for={`${base}-name`}>Name</label>
              <input id={`${base}-name`} value={batchName} onInput={(e) => setBatchName((e.target as HTMLInputElement).value)} />
            </div>
            <Picker label="Drop zone" accept="image/*" onFiles={add} />
            <FileList entries={entries} busy={busy} onRemove={(i) => setEntries(entries.filter((_, k) => k !== i))} />
            <div class="actions">
              <button type="button" class="primary" disabled={busy || !folderId || nothing || !batchName.trim()} onClick={batch}>
                Upload and batch images
              </button>
            </div>
          </>
        )}
        {tab === "dicom" && (
          <>
            <p class="muted">
              Each DICOM file needs the tags Rows, Columns, StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID and PatientID;
              ImagePositionPatient, ImageOrientationPatient, SliceThickness and PixelSpacing make a series renderable in 3D.
            </p>
            <Picker label="Drop zone" folders onFiles={add} />
            <FileList entries={entries} busy={busy} onRemove={(i) => setEntries(entries.filter((_, k) => k !== i))} />
            <JobProgress job={job} label="DICOM progress" />
            <div class="actions">
              <button type="button" class="primary" disabled={busy || !folderId || nothing} onClick={dicom}>
                Upload
              </button>
            </div>
          </>
        )}
        {tab === "import" && (
          <>
            {integrations !== null && integrations.length === 0 ? (
              <div class="field">
                <label for={`${base}-integration-id`}>Integration ID</label>
                <input id={`${base}-integration-id`} value={integration} onInput={(e) => setIntegration((e.target as HTMLInputElement).value.trim())} />
                <p class="muted">No integration is listed for you: an organisation admin registers them (POST /v1/integrations).</p>
              </div>
            ) : (
              <div class="field">
                <label for={`${base}-integration`}>Integration</label>
                <select id={`${base}-integration`} value={integration} onChange={(e) => setIntegration((e.target as HTMLSelectElement).value)}>
                  {(integrations ?? []).map((i) => (
                    <option key={i.id} value={i.id}>
                      {i.name} ({i.bucket})
                    </option>
                  ))}
                </select>
              </div>
            )}
            <div class="field">
              <label for={`${base}-prefix`}>Prefix</label>
              <input id={`${base}-prefix`} value={prefix} onInput={(e) => setPrefix((e.target as HTMLInputElement).value)} />
            </div>
            <div class="field">
              <label class="inline">
                <input type="checkbox" role="switch" checked={keepSynced} disabled={busy} onChange={(e) => setKeepSynced((e.target as HTMLInputElement).checked)} />
                Keep a folder synced with the bucket
              </label>
              <p class="muted" id={`${base}-synced-hint`}>
                {keepSynced
                  ? `A new folder${folderId ? " in this one" : " at the top level"} follows the prefix: new objects become files, changed ones are read again and removed ones leave it, at each sync (on a schedule, or "Sync now" on its page). Nothing can be uploaded into it by hand.`
                  : "Off: the objects are imported once."}
              </p>
            </div>
            {keepSynced ? (
              <>
                <div class="field">
                  <label for={`${base}-synced-name`}>Synced folder name</label>
                  <input
                    id={`${base}-synced-name`}
                    aria-describedby={`${base}-synced-hint`}
                    value={syncedName}
                    onInput={(e) => setSyncedName((e.target as HTMLInputElement).value)}
                  />
                </div>
                <div class="actions">
                  <button type="button" class="primary" disabled={busy || !integration || !syncedName.trim()} onClick={makeSynced}>
                    Create synced folder
                  </button>
                </div>
              </>
            ) : (
              <>
                <div class="field">
                  <label for={`${base}-keys`}>Keys (one a line)</label>
                  <textarea id={`${base}-keys`} rows={3} value={keys} onInput={(e) => setKeys((e.target as HTMLTextAreaElement).value)} />
                </div>
                <div class="field">
                  <label for={`${base}-manifest`}>Manifest (JSON)</label>
                  <input id={`${base}-manifest`} type="file" accept="application/json,.json" onChange={(e) => setManifest((e.target as HTMLInputElement).files?.[0] ?? null)} />
                </div>
                <JobProgress job={job} label="Import progress" />
                <div class="actions">
                  <button type="button" class="primary" disabled={busy || !folderId || !integration || (!prefix.trim() && !keys.trim() && !manifest)} onClick={importObjects}>
                    Import
                  </button>
                </div>
              </>
            )}
          </>
        )}
      </TabPanel>}
      <ErrorText error={error} />
      <div class="actions">
        <button type="button" ref={closing} disabled={busy} title={busy ? UNDER_WAY : undefined} onClick={props.onClose}>
          Close
        </button>
      </div>
    </Dialog>
  );
}
