// The details panel: a folder's summary and "Manage access"; a file's facts, the
// datasets it is "Linked to" (each with View, and Remove for an Editor of the dataset),
// and anyone's history.
import { useEffect, useRef, useState } from "preact/hooks";
import { del, get, patch, type FileItem, type Folder, type Item } from "./api";
import { bytes, date, duration, eventLabel, kindLabel, num } from "./format";
import { navigate, fileUrl } from "./router";
import { changed, mayEdit, open, roleName, useVersion } from "./store";
import { Confirm, ErrorText, notify, TabPanel, Tabs, useFocusKept } from "./ui";
import { knowNames, whoIs } from "./app";
import { useSyncState, type SyncState } from "./sync";

// `onItsPage`: the panel beside a file's own page, whose toolbar downloads it: no
// "Download · Open" of its own there (the folder view's panel keeps them).
// `sync`: the folder's sync state as its page read it (the panel of the folder shown),
// rather than read again here; absent, the panel reads it.
export function Details({ item, onItsPage = false, sync }: { item: Item; onItsPage?: boolean; sync?: SyncState | null }) {
  const [tab, setTab] = useState("details");
  const base = `details-${item.id}`;
  const tabs =
    item.type === "folder"
      ? [
          { id: "details", label: "Details" },
          { id: "history", label: "History" },
        ]
      : [
          { id: "details", label: "Details" },
          { id: "linked", label: "Linked to" },
          { id: "history", label: "History" },
        ];
  return (
    <div class="details-inner">
      <h2 class="details-title">{item.name}</h2>
      <Tabs label="Details" tabs={tabs} active={tab} onChange={setTab} idBase={base} />
      <TabPanel idBase={base} id={tab}>
        {tab === "details" && (item.type === "folder" ? <FolderFacts folder={item} sync={sync} /> : <FileFacts id={item.id} links={!onItsPage} />)}
        {tab === "linked" && <LinkedTo id={item.id} name={item.name} />}
        {tab === "history" && <History subject={item.id} folderId={item.type === "folder" ? item.id : item.folder_id} />}
      </TabPanel>
    </div>
  );
}

function FolderFacts({ folder, sync: given }: { folder: Folder; sync?: SyncState | null }) {
  const version = useVersion();
  const [summary, setSummary] = useState<any>(null);
  const [error, setError] = useState<unknown>(null);
  // What a cloud-synced folder follows: its integration by name (its prefix from a
  // platform that does not say the name); a key path's subfolder, that it is in one.
  const read = useSyncState(given === undefined ? folder.id : null);
  const sync = given === undefined ? read : given;
  const follows = sync?.cloud_sync
    ? sync.cloud_sync.integration_name ?? `Bucket prefix ${sync.cloud_sync.prefix || "(the whole bucket)"}`
    : sync?.cloud_synced
      ? "Part of a cloud-synced folder"
      : null;
  useEffect(() => {
    // A read refused once (the session had ended, say) leaves no error once one answers.
    get(`/v1/folders/${folder.id}/summary`)
      .then((s) => (setSummary(s), setError(null)))
      .catch(setError);
  }, [folder.id, version]);
  return (
    <div>
      <Description folder={folder} />
      <dl class="facts">
        <dt>Kind</dt>
        <dd>Folder</dd>
        {follows && (
          <>
            <dt>Cloud sync</dt>
            <dd>{follows}</dd>
          </>
        )}
        {summary && (
          <>
            <dt>Files</dt>
            <dd>{num(summary.files)}</dd>
            <dt>Folders</dt>
            <dd>{num(summary.folders)}</dd>
            <dt>Size</dt>
            <dd>{bytes(summary.bytes)}</dd>
          </>
        )}
        <dt>Created</dt>
        <dd>{date(folder.created_at)}</dd>
        <dt>Your role</dt>
        <dd>{roleName(folder.my_role)}</dd>
      </dl>
      {summary && Object.keys(summary.by_kind).length > 0 && (
        <table class="by-kind">
          <caption>By kind</caption>
          <thead>
            <tr>
              <th scope="col">Kind</th>
              <th scope="col">Files</th>
              <th scope="col">Size</th>
            </tr>
          </thead>
          <tbody>
            {Object.entries(summary.by_kind).map(([k, v]: [string, any]) => (
              <tr key={k}>
                <td>{kindLabel(k)}</td>
                <td>{num(v.files)}</td>
                <td>{bytes(v.bytes)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <ErrorText error={error} />
      <button type="button" onClick={() => open({ kind: "access", on: "folder", id: folder.id, name: folder.name, role: folder.my_role })}>
        Manage access
      </button>
    </div>
  );
}

// A folder's description, edited in place by whoever may edit the folder.
function Description({ folder }: { folder: Folder }) {
  const [editing, setEditing] = useState(false);
  const [text, setText] = useState(folder.description ?? "");
  const [shown, setShown] = useState(folder.description ?? "");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  // The form opens with the focus in its field; as it closes (saved, or cancelled) the
  // focus goes to "Edit description", which stands where it was, not to the page. A
  // refusal keeps the form, with the focus back on Save.
  const field = useRef<HTMLTextAreaElement>(null);
  const edit = useRef<HTMLButtonElement>(null);
  const wasEditing = useRef(editing);
  useFocusKept(busy, edit);
  useEffect(() => {
    if (editing === wasEditing.current) return;
    wasEditing.current = editing;
    const lost = !document.activeElement || document.activeElement === document.body;
    if (editing) field.current?.focus();
    else if (lost) edit.current?.focus();
  }, [editing]);
  // Changed elsewhere (another person, another tab): shown, unless being edited here;
  // Cancel then shows it.
  useEffect(() => {
    if (!editing) setShown(folder.description ?? "");
  }, [folder.description]);
  const save = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const saved = await patch<Folder>(`/v1/folders/${folder.id}`, { description: text.trim() });
      setShown(saved.description ?? "");
      setEditing(false);
      notify("Description saved");
      changed();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  if (editing)
    return (
      <form class="description-form" onSubmit={save}>
        <label for={`description-${folder.id}`}>Description</label>
        <textarea ref={field} id={`description-${folder.id}`} rows={3} value={text} onInput={(e) => setText((e.target as HTMLTextAreaElement).value)} />
        <ErrorText error={error} />
        <div class="actions">
          <button type="button" onClick={() => (setEditing(false), setShown(folder.description ?? ""), setError(null))}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy}>
            Save
          </button>
        </div>
      </form>
    );
  return (
    <div class="description">
      {shown ? <p>{shown}</p> : mayEdit(folder.my_role) ? <p class="muted">No description.</p> : null}
      {mayEdit(folder.my_role) && (
        <button type="button" class="link" ref={edit} onClick={() => (setText(shown), setEditing(true))}>
          Edit description
        </button>
      )}
    </div>
  );
}

// What a radiologist looks for that the file's answer does not carry: the first slice's
// Rows × Columns, PixelSpacing and SliceThickness, read from its header (DICOMweb's
// QIDO-RS for the first instance, then WADO-RS for its metadata). Null until read, or
// when the header does not say.
type SeriesHeader = { rows?: number; columns?: number; spacing?: number[]; thickness?: number };
function useSeriesHeader(file: FileItem | null): SeriesHeader | null {
  const [header, setHeader] = useState<SeriesHeader | null>(null);
  const d = file?.dicom;
  const series = d && file ? `/v1/folders/${file.folder_id}/dicomweb/studies/${d.study_uid}/series/${d.series_uid}` : null;
  useEffect(() => {
    setHeader(null);
    if (!series) return;
    const abort = new AbortController();
    const value = (attrs: any, tag: string) => attrs?.[tag]?.Value;
    (async () => {
      const [first] = await get<any[]>(`${series}/instances?limit=1`, abort.signal);
      const sop = value(first, "00080018")?.[0];
      const [meta] = sop ? await get<any[]>(`${series}/instances/${sop}/metadata`, abort.signal) : [undefined];
      if (abort.signal.aborted) return;
      setHeader({
        rows: value(first, "00280010")?.[0],
        columns: value(first, "00280011")?.[0],
        spacing: value(meta, "00280030")?.map(Number),
        thickness: value(meta, "00180050")?.map(Number)?.[0],
      });
    })().catch(() => {});
    return () => abort.abort();
  }, [series]);
  return header;
}

export function FileFacts({ id, links = true }: { id: string; links?: boolean }) {
  const version = useVersion();
  const [file, setFile] = useState<FileItem | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    get<FileItem>(`/v1/files/${id}`)
      .then((f) => (setFile(f), setError(null)))
      .catch(setError);
  }, [id, version]);
  const header = useSeriesHeader(file);
  if (error) return <ErrorText error={error} />;
  if (!file) return <p class="muted">Loading…</p>;
  const m = file.media ?? {};
  return (
    <div>
      <dl class="facts">
        <dt>Kind</dt>
        <dd>{kindLabel(file.kind)}</dd>
        <dt>Size</dt>
        <dd>{bytes(file.size)}</dd>
        <dt>Type</dt>
        <dd>{file.mime_type}</dd>
        {m.width !== undefined && (
          <>
            <dt>Dimensions</dt>
            <dd>
              {m.width} × {m.height}
            </dd>
          </>
        )}
        {m.frames !== undefined && (
          <>
            <dt>Frames</dt>
            <dd>{m.frames}</dd>
          </>
        )}
        {m.duration_s !== undefined && (
          <>
            <dt>Duration</dt>
            <dd>{duration(m.duration_s)}</dd>
          </>
        )}
        {m.sample_rate !== undefined && (
          <>
            <dt>Sample rate</dt>
            <dd>{m.sample_rate.toLocaleString()} Hz</dd>
          </>
        )}
        {m.channels !== undefined && (
          <>
            <dt>Channels</dt>
            <dd>{m.channels}</dd>
          </>
        )}
        {file.group && (
          <>
            <dt>Images</dt>
            <dd>{file.group.images ?? file.group.file_ids.length}</dd>
          </>
        )}
        <dt>Created</dt>
        <dd>{date(file.created_at)}</dd>
        <dt>Source</dt>
        <dd>{file.source?.type === "cloud" ? `Cloud: ${file.source.key}` : "Upload"}</dd>
        <dt>SHA-256</dt>
        <dd class="mono" title={file.sha256}>
          {file.sha256?.slice(0, 16)}…
        </dd>
      </dl>
      {file.dicom && (
        <section aria-label="DICOM tags" class="dicom-tags">
          <h3>DICOM</h3>
          <dl class="facts">
            <dt>Modality</dt>
            <dd>{file.dicom.modality ?? "—"}</dd>
            <dt>Slices</dt>
            <dd>{num(file.dicom.instances)}</dd>
            {header?.rows !== undefined && header.columns !== undefined && (
              <>
                <dt>Rows × Columns</dt>
                <dd>
                  {num(header.rows)} × {num(header.columns)}
                </dd>
              </>
            )}
            {header?.spacing && header.spacing.length === 2 && (
              <>
                <dt>Pixel spacing</dt>
                <dd>
                  {header.spacing[0]} × {header.spacing[1]} mm
                </dd>
              </>
            )}
            {header?.thickness !== undefined && (
              <>
                <dt>Slice thickness</dt>
                <dd>{header.thickness} mm</dd>
              </>
            )}
            <dt>PatientID</dt>
            <dd>{file.dicom.patient_id}</dd>
            <dt>StudyInstanceUID</dt>
            <dd class="mono">{file.dicom.study_uid}</dd>
            <dt>SeriesInstanceUID</dt>
            <dd class="mono">{file.dicom.series_uid}</dd>
            <dt>3D</dt>
            <dd>
              {file.dicom.renderable_3d
                ? "Renderable in 3D"
                : `Not renderable in 3D: missing ${file.dicom.missing_3d_tags.join(", ")}`}
            </dd>
          </dl>
        </section>
      )}
      {links && (
        <p>
          <a href={`/v1/files/${file.id}/content`} download={file.name}>
            Download
          </a>
          {" · "}
          <a
            href={fileUrl(file.id)}
            onClick={(e) => {
              e.preventDefault();
              navigate(fileUrl(file.id));
            }}
          >
            Open
          </a>
        </p>
      )}
    </div>
  );
}

function LinkedTo({ id, name }: { id: string; name: string }) {
  const version = useVersion();
  const [datasets, setDatasets] = useState<
    { id: string; name: string; my_role?: string | null }[] | null
  >(null);
  const [error, setError] = useState<unknown>(null);
  // The dataset whose link "Remove" asks about (nothing goes before the person says so).
  const [removing, setRemoving] = useState<{ id: string; name: string } | null>(null);
  // "Remove" changes the dataset: offered to its Editors and admins only (a User of it
  // would be refused, 403), as the links answer the caller's role on each.
  const load = () =>
    get(`/v1/files/${id}/datasets`).then((r: any) => (setDatasets(r.items ?? r), setError(null)));
  useEffect(() => {
    load().catch(setError);
  }, [id, version]);
  const remove = async (d: { id: string; name: string }) => {
    await del(`/v1/datasets/${d.id}/files/${id}`);
    // The list as it is now, before the question closes (its row, and "Remove", gone).
    await load().catch(setError);
    notify(`Removed ${name} from ${d.name}`);
    changed();
  };
  if (!datasets) return error ? <ErrorText error={error} /> : <p class="muted">Loading…</p>;
  return (
    <div>
      {datasets.length === 0 ? (
        <p class="muted">Not linked to any dataset.</p>
      ) : (
        <ul class="linked" aria-label="Datasets">
          {datasets.map((d) => (
            <li key={d.id} aria-label={d.name}>
              <span>{d.name}</span>
              <button type="button" onClick={() => navigate(`/datasets/${d.id}`)} aria-label="View">
                View
              </button>
              {mayEdit(d.my_role) && (
                <button type="button" onClick={() => setRemoving(d)} aria-label="Remove">
                  Remove
                </button>
              )}
            </li>
          ))}
        </ul>
      )}
      <ErrorText error={error} />
      {removing && (
        <Confirm
          title={`Remove ${name} from dataset ${removing.name}?`}
          action="Remove from dataset"
          onConfirm={() => remove(removing)}
          onClose={() => setRemoving(null)}
        >
          <p>The file stays in its folder and in any other dataset it is in: only this link goes.</p>
        </Confirm>
      )}
    </div>
  );
}

export function History({ subject, folderId }: { subject: string; folderId?: string }) {
  const version = useVersion();
  const [events, setEvents] = useState<any[] | null>(null);
  const [who, setWho] = useState<Record<string, string>>({});
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    get(`/v1/audit?subject_id=${subject}&limit=200`)
      .then(async (r: any) => {
        setEvents(r.items);
        setError(null);
        const actors = [...new Set<string>(r.items.map((e: any) => e.actor_id))];
        // Who has access here is who acted here, mostly: their names, for anyone.
        if (folderId)
          await get(`/v1/folders/${folderId}/collaborators`)
            .then((c: any) => knowNames(c.items))
            .catch(() => {});
        const named: Record<string, string> = {};
        for (const a of actors) named[a] = await whoIs(a);
        setWho(named);
      })
      .catch(setError);
  }, [subject, version]);
  if (error) return <ErrorText error={error} />;
  if (!events) return <p class="muted">Loading…</p>;
  if (events.length === 0) return <p class="muted">No history.</p>;
  return (
    <ol class="history" aria-label="History">
      {[...events].reverse().map((e) => (
        <li key={e.event_id}>
          <span class="what">{eventLabel(e.type)}</span>
          <span class="who">{who[e.actor_id] ?? "…"}</span>
          <time dateTime={e.occurred_at}>{date(e.occurred_at)}</time>
        </li>
      ))}
    </ol>
  );
}
