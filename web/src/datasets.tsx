// The datasets the person may see (/datasets), and a dataset's page (what "View" opens
// from a file's "Linked to"): its files and the folder each is in, chosen as in the
// folder view; "Remove from dataset" for an Editor of it; "Manage access" (changed by an
// Admin of it, only seen by the others) and, for an Admin, "Delete dataset".
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { all, ApiError, del, get, post, type FileItem, type Folder } from "./api";
import { bytes, count, date, kindLabel, listed, num } from "./format";
import { fileUrl, folderUrl, navigate } from "./router";
import { useRowWindow } from "./rows";
import { useSelection } from "./selection";
import { changed, mayEdit, mayManage, open as openDialog, useVersion, useWatch } from "./store";
import { Confirm, ErrorText, LoadFailed, notify, Unavailable } from "./ui";

// The names of the folders synced datasets follow ("its folder" said nothing of which),
// and of those a dataset's files are in: one request a folder (there is no batch read of
// folders), for the first `FOLDERS_NAMED` of them; past that, the others are left unnamed.
const FOLDERS_NAMED = 50;
function useFolderNames(ids: (string | null | undefined)[]): Record<string, string> {
  const [names, setNames] = useState<Record<string, string>>({});
  const wanted = [...new Set(ids.filter((id): id is string => !!id))].slice(0, FOLDERS_NAMED).sort().join(",");
  useEffect(() => {
    if (!wanted) return;
    const stop = new AbortController();
    Promise.all(
      wanted.split(",").map((id) =>
        get<Folder>(`/v1/folders/${id}`, stop.signal)
          .then((f) => [id, f.name] as const)
          .catch(() => [id, null] as const),
      ),
    ).then((pairs) => {
      if (stop.signal.aborted) return;
      const found: Record<string, string> = {};
      for (const [id, name] of pairs) if (name) found[id] = name;
      setNames(found);
    });
    return () => stop.abort();
  }, [wanted]);
  return names;
}

// The datasets list's heading takes the focus when a deleted dataset's page leaves for it.
let focusListHeading = false;

function SyncedWith({ id, names }: { id: string; names: Record<string, string> }) {
  return (
    <a
      href={folderUrl(id)}
      onClick={(e) => {
        e.preventDefault();
        navigate(folderUrl(id));
      }}
    >
      {names[id] ?? "its folder"}
    </a>
  );
}

export function DatasetList() {
  const version = useVersion();
  const [datasets, setDatasets] = useState<any[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [attempt, setAttempt] = useState(0);
  useEffect(() => {
    const stop = new AbortController();
    setError(null);
    all("/v1/datasets", {}, undefined, stop.signal)
      .then(setDatasets)
      .catch((e) => {
        if (stop.signal.aborted) return;
        // What was listed before is not passed off as the datasets (nor "No datasets").
        setDatasets(null);
        setError(e);
      });
    return () => stop.abort();
  }, [version, attempt]);
  const folderNames = useFolderNames((datasets ?? []).map((d) => d.synced_folder_id));
  useEffect(() => {
    const lost = !document.activeElement || document.activeElement === document.body;
    if (focusListHeading && lost) document.getElementById("datasets-title")?.focus();
    focusListHeading = false;
  }, []);
  const go = (e: Event, to: string) => {
    e.preventDefault();
    navigate(to);
  };
  return (
    <section class="dataset-page" aria-label="Datasets">
      <h1 class="title" id="datasets-title" tabIndex={-1}>
        Datasets
      </h1>
      {error ? (
        <LoadFailed what="The datasets" error={error} onRetry={() => setAttempt(attempt + 1)} />
      ) : datasets === null ? (
        <p class="muted">Loading…</p>
      ) : datasets.length === 0 ? (
        <p class="muted">No datasets yet: choose files in a folder, then "Add to dataset".</p>
      ) : (
        <table class="dataset-files">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Files</th>
              <th scope="col">Synced with</th>
              <th scope="col">Created</th>
            </tr>
          </thead>
          <tbody>
            {datasets.map((d) => (
              <tr key={d.id} aria-label={d.name}>
                <td class="name-cell">
                  <a href={`/datasets/${d.id}`} title={d.name} onClick={(e) => go(e, `/datasets/${d.id}`)}>
                    {d.name}
                  </a>
                  {d.description && <span class="muted"> {d.description}</span>}
                </td>
                <td>{count(d.file_count, "file")}</td>
                <td>{d.synced_folder_id ? <SyncedWith id={d.synced_folder_id} names={folderNames} /> : "—"}</td>
                <td>{date(d.created_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

export function DatasetPage({ id }: { id: string }) {
  const version = useVersion();
  const [dataset, setDataset] = useState<any>(null);
  const [files, setFiles] = useState<FileItem[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [attempt, setAttempt] = useState(0);
  const [removing, setRemoving] = useState<FileItem[] | null>(null);
  const [deleting, setDeleting] = useState(false);
  const folderNames = useFolderNames([dataset?.synced_folder_id, ...(files ?? []).map((f) => f.folder_id)]);
  // Files joining or leaving it (a synced folder's uploads and moves, another person's
  // changes) show unasked; so does its deletion, or access to it removed.
  // `version` changes at every change of the dataset the person may see: a file moved out
  // and another moved in between two looks leave the count as it was, not it.
  useWatch(`/v1/datasets/${id}`, (d) => [d.version, d.my_role, d.file_count].join("\n"));
  useEffect(() => {
    setError(null);
    // A read begun later (a change seen while this one was under way) has the last word,
    // whichever answers first.
    const abort = new AbortController();
    const failed = (e: unknown) => {
      if (abort.signal.aborted) return;
      // Gone, or no longer shared with the person: nothing of it stays on the page.
      if (e instanceof ApiError && (e.status === 404 || e.status === 403)) {
        setDataset(null);
        setFiles(null);
      }
      setError(e);
    };
    get(`/v1/datasets/${id}`, abort.signal)
      .then((d) => abort.signal.aborted || setDataset(d))
      .catch(failed);
    all<FileItem>(`/v1/datasets/${id}/files`, {}, undefined, abort.signal)
      .then((f) => abort.signal.aborted || setFiles(f))
      .catch(failed);
    return () => abort.abort();
  }, [id, version, attempt]);
  // By name (the API lists them by id), as a folder is by default.
  const shown = useMemo(
    () => [...(files ?? [])].sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true, sensitivity: "base" }) || a.id.localeCompare(b.id)),
    [files],
  );
  const selection = useSelection(shown);
  const { selected, setSelected, active } = selection;
  // What was chosen and is no longer in the dataset is no longer chosen.
  const had = useRef(0);
  useEffect(() => {
    const ids = new Set(shown.map((f) => f.id));
    setSelected((old) => new Set([...old].filter((f) => ids.has(f))));
    // The last files removed: the list goes, and the focus it had with it (to the page).
    const lost = !document.activeElement || document.activeElement === document.body;
    if (files && files.length === 0 && had.current > 0 && lost) document.getElementById("dataset-title")?.focus();
    had.current = files?.length ?? 0;
  }, [files]);
  // Thousands of files: only the rows in view (and a few either side) are in the page.
  const rows = useRowWindow(shown.length, active, dataset !== null);
  const { windowed } = rows;
  if (error && !dataset) return <Unavailable what="dataset" error={error} onRetry={() => setAttempt(attempt + 1)} />;
  if (!dataset) return <p class="muted">Loading…</p>;
  const chosen = shown.filter((f) => selected.has(f.id));
  // Removing files needs the Editor role on the dataset (its creator is its Admin).
  const editable = mayEdit(dataset.my_role);
  const synced = dataset.synced_folder_id ? (folderNames[dataset.synced_folder_id] ?? "its folder") : null;
  const ask = () => editable && chosen.length > 0 && setRemoving(chosen);
  const open = (f: FileItem) => navigate(fileUrl(f.id));
  // The dataset's Admins (its creator, those shared with as Admin, org admins).
  const admin = mayManage(dataset.my_role);
  return (
    <section class="dataset-page" aria-label={`Dataset ${dataset.name}`} ref={rows.scroller}>
      <h1 class="title" id="dataset-title" tabIndex={-1}>
        Dataset {dataset.name}
      </h1>
      <ErrorText error={error} />
      {dataset.description && <p>{dataset.description}</p>}
      <p>
        {count(dataset.file_count, "file")}
        {dataset.synced_folder_id && (
          <>
            {", synced with the folder "}
            <SyncedWith id={dataset.synced_folder_id} names={folderNames} />
          </>
        )}
      </p>
      <div class="toolbar">
        <button
          type="button"
          onClick={() => openDialog({ kind: "access", on: "dataset", id: dataset.id, name: dataset.name, role: dataset.my_role })}
        >
          Manage access
        </button>
        {admin && (
          <button type="button" class="danger" onClick={() => setDeleting(true)}>
            Delete dataset
          </button>
        )}
      </div>
      {files && files.length > 0 && (
        <div class="toolbar" role="toolbar" aria-label="Dataset actions">
          <span aria-live="polite">{num(chosen.length)} selected</span>
          {editable ? (
            <button type="button" disabled={!chosen.length} onClick={ask}>
              Remove from dataset
            </button>
          ) : (
            <span class="muted">You can view this dataset, not change it.</span>
          )}
        </div>
      )}
      {files === null && !error && <p class="muted">Loading files…</p>}
      {files && files.length === 0 && (
        <p class="muted">
          {synced ? `No files yet: files uploaded or moved into ${synced} join it.` : 'No files yet: choose files in a folder, then "Add to dataset".'}
        </p>
      )}
      {files && files.length > 0 && (
        <table
          id="dataset-files"
          class={`dataset-files${windowed ? " windowed" : ""}`}
          role="grid"
          aria-label="Files in the dataset"
          aria-multiselectable="true"
          aria-rowcount={shown.length + 1}
          tabIndex={0}
          aria-activedescendant={shown[active] && rows.runs.some((r) => active >= r.from && active < r.to) ? `member-${shown[active].id}` : undefined}
          onKeyDown={(e) => {
            let taken = selection.key(e);
            if (!taken && e.key === "Enter" && shown[active]) {
              open(shown[active]);
              taken = true;
            } else if (!taken && e.key === "Delete" && editable && chosen.length) {
              ask();
              taken = true;
            }
            if (!taken) return;
            e.preventDefault();
            rows.keyed();
          }}
        >
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Folder</th>
              <th scope="col">Kind</th>
              <th scope="col">Size</th>
            </tr>
          </thead>
          <tbody ref={rows.body}>
            {rows.runs.flatMap((run) => [
              run.gap > 0 && <tr aria-hidden="true" class="spacer" key={`gap-${run.from}`} style={{ height: `${run.gap}px` }} />,
              ...shown.slice(run.from, run.to).map((f, k) => {
                const i = run.from + k;
                return (
                  <tr
                    key={f.id}
                    id={`member-${f.id}`}
                    data-row={i}
                    aria-rowindex={i + 2}
                    aria-label={f.name}
                    aria-selected={selected.has(f.id)}
                    class={`${selected.has(f.id) ? "selected" : ""} ${i === active ? "active" : ""}`}
                    onMouseDown={(e) => e.shiftKey && e.preventDefault()}
                    onClick={(e) => selection.click(i, e)}
                    onDblClick={() => open(f)}
                  >
                    <td class="name-cell">
                      <a
                        href={fileUrl(f.id)}
                        onClick={(e) => {
                          // Shift- and Ctrl-clicks choose, here as on the rest of the row.
                          e.preventDefault();
                          if (e.shiftKey || e.ctrlKey || e.metaKey) return;
                          e.stopPropagation();
                          open(f);
                        }}
                      >
                        {f.name}
                      </a>
                    </td>
                    <td class="name-cell">
                      <a
                        href={folderUrl(f.folder_id)}
                        onClick={(e) => {
                          e.preventDefault();
                          if (e.shiftKey || e.ctrlKey || e.metaKey) return;
                          e.stopPropagation();
                          navigate(folderUrl(f.folder_id));
                        }}
                      >
                        {folderNames[f.folder_id] ?? "Open folder"}
                      </a>
                    </td>
                    <td>{kindLabel(f.kind)}</td>
                    <td>{bytes(f.size)}</td>
                  </tr>
                );
              }),
            ])}
            {rows.after > 0 && <tr aria-hidden="true" class="spacer" style={{ height: `${rows.after}px` }} />}
          </tbody>
        </table>
      )}
      {removing && (
        <Confirm
          title={
            removing.length === 1
              ? `Remove ${removing[0].name} from dataset ${dataset.name}?`
              : `Remove ${count(removing.length, "file")} from dataset ${dataset.name}?`
          }
          action="Remove from dataset"
          onConfirm={async () => {
            await removeFiles(dataset, removing);
            setSelected(new Set());
          }}
          onClose={() => setRemoving(null)}
          fallback={["dataset-files", "dataset-title"]}
        >
          {removing.length > 1 && removing.length <= NAMED && <p>{listed(removing.map((f) => f.name))}.</p>}
          <p>
            {removing.length === 1 ? "The file stays in its folder" : "The files stay in their folders"} and in any
            other dataset: only {removing.length === 1 ? "this link goes" : "these links go"}.
          </p>
          {synced && (
            <p>
              This dataset is synced with the folder {synced}: a file removed by hand stays out of it, unless it leaves
              that folder and comes back (moved, or restored from the Trash). Files uploaded or moved into it later still
              join.
            </p>
          )}
        </Confirm>
      )}
      {deleting && (
        <Confirm
          title={`Delete dataset ${dataset.name}?`}
          action="Delete dataset"
          onConfirm={async () => {
            await del(`/v1/datasets/${dataset.id}`);
            notify(`Deleted dataset ${dataset.name}`);
            focusListHeading = true;
            navigate("/datasets");
            changed();
          }}
          onClose={() => setDeleting(false)}
        >
          <p>
            {dataset.file_count === 1 ? "Its file stays in its folder" : "Its files stay in their folders"} and in any other
            dataset: only this dataset and its links go. Whoever it is shared with loses access to it.
          </p>
        </Confirm>
      )}
    </section>
  );
}

// A question names up to this many files; past that, how many.
const NAMED = 3;

// One request for them all (the API removes all or none). Files gone from the dataset
// meanwhile (another tab, a move out of its synced folder) are named by the refusal:
// left out, the rest are asked again.
async function removeFiles(dataset: { id: string; name: string }, files: FileItem[]) {
  const path = `/v1/datasets/${dataset.id}/files/remove`;
  const ids = files.map((f) => f.id);
  let removed = ids.length;
  try {
    await post(path, { file_ids: ids });
  } catch (e) {
    const gone: string[] | undefined =
      e instanceof ApiError && e.code === "files_not_in_dataset" ? e.details.missing_file_ids : undefined;
    if (!gone || gone.length >= 1000) throw e; // past 1,000 the refusal names only some
    const left = ids.filter((id) => !gone.includes(id));
    if (left.length) await post(path, { file_ids: left });
    removed = left.length;
  }
  changed();
  notify(
    files.length === 1 ? `Removed ${files[0].name} from ${dataset.name}` : `Removed ${count(removed, "file")} from ${dataset.name}`,
  );
}
