// The datasets the person may see (/datasets), and a dataset's page: what "View" opens
// from a file's "Linked to".
import { useEffect, useState } from "preact/hooks";
import { all, get, type Folder } from "./api";
import { bytes, count, date, kindLabel } from "./format";
import { fileUrl, folderUrl, navigate } from "./router";
import { useVersion } from "./store";
import { ErrorText, LoadFailed, Unavailable } from "./ui";

// The names of the folders synced datasets follow ("its folder" said nothing of which).
function useFolderNames(ids: (string | null | undefined)[]): Record<string, string> {
  const [names, setNames] = useState<Record<string, string>>({});
  const wanted = [...new Set(ids.filter((id): id is string => !!id))].sort().join(",");
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
  const go = (e: Event, to: string) => {
    e.preventDefault();
    navigate(to);
  };
  return (
    <section class="dataset-page" aria-label="Datasets">
      <h1 class="title">Datasets</h1>
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
  const [files, setFiles] = useState<any[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [attempt, setAttempt] = useState(0);
  const folderNames = useFolderNames([dataset?.synced_folder_id]);
  useEffect(() => {
    setError(null);
    get(`/v1/datasets/${id}`).then(setDataset).catch(setError);
    all(`/v1/datasets/${id}/files`).then(setFiles).catch(setError);
  }, [id, version, attempt]);
  if (error && !dataset) return <Unavailable what="dataset" error={error} onRetry={() => setAttempt(attempt + 1)} />;
  if (!dataset) return <p class="muted">Loading…</p>;
  return (
    <section class="dataset-page" aria-label={`Dataset ${dataset.name}`}>
      <h1 class="title">Dataset {dataset.name}</h1>
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
      {files && (
        <table class="dataset-files">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Kind</th>
              <th scope="col">Size</th>
            </tr>
          </thead>
          <tbody>
            {files.map((f) => (
              <tr key={f.id}>
                <td>
                  <a
                    href={fileUrl(f.id)}
                    onClick={(e) => {
                      e.preventDefault();
                      navigate(fileUrl(f.id));
                    }}
                  >
                    {f.name}
                  </a>
                </td>
                <td>{kindLabel(f.kind)}</td>
                <td>{bytes(f.size)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
