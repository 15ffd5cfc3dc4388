// A file's page: its actions (those of the folder view's menu, by the same dialogs), its
// viewer (image with zoom, video and audio, a frame strip for image groups and sequences,
// DICOM slice by slice, PDF, text) beside its details.
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, get, type FileItem, type Folder } from "./api";
import { Breadcrumbs } from "./browse";
import { Details } from "./details";
import { num } from "./format";
import { folderUrl, navigate } from "./router";
import { dialogState, goneSince, open, useVersion, useWatch } from "./store";
import { editingActions, ROLE_PENDING } from "./actions";
import { ErrorText, Menu, notify, Unavailable } from "./ui";

const content = (id: string) => `/v1/files/${id}/content`;

export function FilePage({ id }: { id: string }) {
  const version = useVersion();
  const [file, setFile] = useState<FileItem | null>(null);
  const [folder, setFolder] = useState<Folder | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [attempt, setAttempt] = useState(0);
  // The version the page was opened at: a delete made since (its "Delete") sends the page
  // to the file's folder, where the Trash's notice is said.
  const opened = useRef(version);
  useEffect(() => {
    if (file && goneSince(id, opened.current)) return navigate(folderUrl(file.folder_id), true);
    setError(null);
    // A read begun later (a change seen while this one was under way) has the last word,
    // whichever answers first.
    const abort = new AbortController();
    get<FileItem>(`/v1/files/${id}`, abort.signal)
      .catch((e) => {
        // Gone, or no longer shared with the person: nothing of it stays on the page.
        if (!abort.signal.aborted && e instanceof ApiError && (e.status === 404 || e.status === 403)) setFile(null);
        throw e;
      })
      .then((f) => {
        if (abort.signal.aborted) return;
        setFile(f);
        return get<Folder>(`/v1/folders/${f.folder_id}`, abort.signal).then((d) => abort.signal.aborted || setFolder(d));
      })
      .catch((e) => abort.signal.aborted || setError(e));
    return () => abort.abort();
  }, [id, version, attempt]);
  // Renamed, moved, added to or removed from datasets elsewhere: shown unasked.
  useWatch(`/v1/files/${id}`, (f: FileItem) =>
    [f.name, f.folder_id, ...(f.datasets ?? []).map((d) => d.id).sort()].join("\n"),
  );
  if (error && !file) return <Unavailable what="file" error={error} onRetry={() => setAttempt(attempt + 1)} />;
  if (!file) return <p class="muted">Loading…</p>;
  // A folder read before the file moved elsewhere is not its folder (its path, its role).
  const own = folder?.id === file.folder_id ? folder : null;
  return (
    <div class="file-page">
      <section class="content" aria-label={file.name}>
        <Breadcrumbs path={own?.path ?? []} last={false} />
        <h1 class="title">{file.name}</h1>
        <FileActions file={file} folder={own} failed={!!error} />
        <ErrorText error={error} />
        <Viewer file={file} />
      </section>
      <aside class="details" aria-label="Details">
        <Details item={file} onItsPage />
      </aside>
    </div>
  );
}

// What the folder view's menu offers for one file, by its dialogs: a User (viewer) of the
// folder gets Download and Add to dataset, and is told why there is no more; until the
// folder's role is read, Rename, Move and Delete show disabled, saying why. On a narrow
// screen an Editor's Rename, Move and Delete are behind "More" (a menu), so that the
// actions keep to one row.
function FileActions({ file, folder, failed }: { file: FileItem; folder: Folder | null; failed: boolean }) {
  // The folder's read that failed brings no role: nothing waits for it.
  const role = folder ? folder.my_role : failed ? null : undefined;
  const [more, setMore] = useState<{ x: number; y: number } | null>(null);
  const editing = editingActions([file], file.folder_id, role, file.name);
  const waiting = editing.length > 0 && editing.every((a) => a.disabled);
  // F2 renames and Delete deletes, as in a folder, pressed on the page (not in a field, a
  // player, a menu or a dialog); before the folder's role is read the key waits for it,
  // said in words, unless a dialog opened or Escape was pressed meanwhile.
  const now = useRef({ editing, known: !!folder });
  now.current = { editing, known: !!folder };
  const [pending, setPending] = useState<{ label: string; dialogs: number } | null>(null);
  const act = (label: string) => {
    const action = now.current.editing.find((a) => a.label === label);
    if (!action) notify("You can view this file, not change it.");
    else if (action.disabled) notify(action.why ?? "");
    else action.action();
  };
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape") setPending(null);
      if ((e.key !== "F2" && e.key !== "Delete") || e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
      const at = e.target as HTMLElement | null;
      if (at?.closest?.("input, textarea, select, [contenteditable], video, audio, dialog, [role=menu]") || dialogState().shown) return;
      e.preventDefault();
      const label = e.key === "F2" ? "Rename" : "Delete";
      if (now.current.known) return act(label);
      setPending({ label, dialogs: dialogState().opened });
      notify(`${label} waits for your role on this folder, still being read.`);
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, []);
  useEffect(() => {
    if (!pending || role === undefined) return;
    setPending(null);
    const dialogs = dialogState();
    if (!dialogs.shown && dialogs.opened === pending.dialogs) act(pending.label);
  }, [pending, role]);
  return (
    <div class="toolbar file-actions" role="toolbar" aria-label="File actions">
      <a class="button" href={content(file.id)} download={file.name}>
        Download
      </a>
      <button
        type="button"
        onClick={() => open({ kind: "add-to-dataset", fileIds: [file.id], folderIds: [], folderId: file.folder_id })}
      >
        Add to dataset
      </button>
      {editing.length > 0 && (
        <>
          {editing.map((a) => (
            <button type="button" class="wide-only" key={a.label} disabled={a.disabled} title={a.why} onClick={a.action}>
              {a.label}
            </button>
          ))}
          <button
            type="button"
            class="narrow-only"
            aria-haspopup="menu"
            aria-expanded={!!more}
            disabled={waiting}
            title={waiting ? ROLE_PENDING : undefined}
            onClick={(e) => {
              const r = (e.currentTarget as HTMLElement).getBoundingClientRect();
              setMore(more ? null : { x: r.left, y: r.bottom + 4 });
            }}
          >
            More
          </button>
        </>
      )}
      {folder && editing.length === 0 && <span class="muted">You can view this file, not change it.</span>}
      {more && <Menu x={more.x} y={more.y} label={`More actions for ${file.name}`} items={editing} onClose={() => setMore(null)} />}
    </div>
  );
}

function Viewer({ file }: { file: FileItem }) {
  switch (file.kind) {
    case "image":
      return <ImageViewer src={content(file.id)} name={file.name} />;
    case "video":
      return (
        <video
          class="video"
          controls
          preload="metadata"
          src={(file.renditions ?? []).includes("web") ? `${content(file.id)}?rendition=web` : content(file.id)}
          aria-label={`Video ${file.name}`}
        />
      );
    case "audio":
      return <audio controls preload="metadata" src={content(file.id)} aria-label={`Audio ${file.name}`} />;
    case "image_group":
    case "image_sequence":
      return <FrameStrip file={file} />;
    case "dicom_series":
      return <DicomViewer file={file} />;
    case "pdf":
      return <PdfViewer file={file} />;
    case "text":
      return <TextViewer file={file} />;
    default:
      return <p>No viewer for this kind of file.</p>;
  }
}

function ImageViewer({ src, name }: { src: string; name: string }) {
  const [zoom, setZoom] = useState(1);
  const clamp = (z: number) => Math.min(16, Math.max(0.1, z));
  return (
    <div class="image-viewer">
      <div class="toolbar" role="toolbar" aria-label="Zoom">
        <button type="button" onClick={() => setZoom(clamp(zoom / 1.25))}>
          Zoom out
        </button>
        {/* 1 is the picture fitted to the stage, not its own pixels: "Fit", and other
            zooms relative to it. */}
        <output aria-label="Zoom level">{zoom === 1 ? "Fit" : `${Math.round(zoom * 100)}% of fit`}</output>
        <button type="button" onClick={() => setZoom(clamp(zoom * 1.25))}>
          Zoom in
        </button>
        <button type="button" onClick={() => setZoom(1)}>
          Fit
        </button>
      </div>
      <div
        class="stage"
        onWheel={(e) => {
          if (!e.ctrlKey) return;
          e.preventDefault();
          setZoom(clamp(zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1)));
        }}
      >
        <img src={src} alt={name} style={{ transform: `scale(${zoom})` }} />
      </div>
    </div>
  );
}

function FrameStrip({ file }: { file: FileItem }) {
  const ids = file.group?.file_ids ?? [];
  const [at, setAt] = useState(0);
  const strip = useRef<HTMLUListElement>(null);
  const go = (i: number) => {
    const to = Math.max(0, Math.min(ids.length - 1, i));
    setAt(to);
    strip.current?.querySelectorAll<HTMLElement>('[role="option"]')[to]?.scrollIntoView({ block: "nearest", inline: "nearest" });
  };
  return (
    <div class="frames">
      <div class="stage">
        {ids[at] && <img src={content(ids[at])} alt={`Frame ${at + 1} of ${ids.length}`} />}
      </div>
      <p aria-live="polite">
        Frame {num(at + 1)} of {num(ids.length)}
      </p>
      <ul
        role="listbox"
        aria-label="Frames"
        class="strip"
        tabIndex={0}
        ref={strip}
        aria-activedescendant={`frame-${at}`}
        onKeyDown={(e) => {
          if (e.key === "ArrowRight" || e.key === "ArrowDown") go(at + 1);
          else if (e.key === "ArrowLeft" || e.key === "ArrowUp") go(at - 1);
          else if (e.key === "Home") go(0);
          else if (e.key === "End") go(ids.length - 1);
          else return;
          e.preventDefault();
        }}
      >
        {ids.map((id, i) => (
          <li role="option" id={`frame-${i}`} key={id} aria-selected={i === at} aria-label={`Frame ${i + 1}`} onClick={() => go(i)}>
            <img src={content(id)} alt="" loading="lazy" />
          </li>
        ))}
      </ul>
    </div>
  );
}

function DicomViewer({ file }: { file: FileItem }) {
  const count = file.dicom?.instances ?? 1;
  const [slice, setSlice] = useState(Math.floor(count / 2));
  const [failed, setFailed] = useState(false);
  const go = (i: number) => setSlice(Math.max(0, Math.min(count - 1, i)));
  return (
    <div class="dicom-viewer">
      <div
        class="stage dark"
        onWheel={(e) => {
          e.preventDefault();
          go(slice + (e.deltaY > 0 ? 1 : -1));
        }}
      >
        {failed ? (
          <p>This slice could not be rendered.</p>
        ) : (
          <img
            src={`/v1/files/${file.id}/slices/${slice}`}
            alt={`Slice ${slice + 1} of ${count}`}
            onError={() => setFailed(true)}
            onLoad={() => setFailed(false)}
          />
        )}
      </div>
      <label class="slider">
        Slice
        <input
          type="range"
          min={0}
          max={count - 1}
          value={slice}
          aria-valuetext={`Slice ${slice + 1} of ${count}`}
          onInput={(e) => {
            setFailed(false);
            go(Number((e.target as HTMLInputElement).value));
          }}
        />
        <span>
          {slice + 1} / {count}
        </span>
      </label>
    </div>
  );
}

function PdfViewer({ file }: { file: FileItem }) {
  const [url, setUrl] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    let made: string | null = null;
    fetch(content(file.id), { credentials: "same-origin" })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(`the PDF could not be read (${r.status})`))))
      .then((b) => {
        made = URL.createObjectURL(new Blob([b], { type: "application/pdf" }));
        setUrl(made);
      })
      .catch(setError);
    return () => made && URL.revokeObjectURL(made);
  }, [file.id]);
  if (error) return <ErrorText error={error} />;
  return url ? <iframe class="pdf" src={url} title={`PDF ${file.name}`} /> : <p class="muted">Loading…</p>;
}

const TEXT_SHOWN = 256 * 1024;

function TextViewer({ file }: { file: FileItem }) {
  const [text, setText] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    fetch(content(file.id), { credentials: "same-origin", headers: { Range: `bytes=0-${TEXT_SHOWN - 1}` } })
      .then((r) => (r.ok ? r.text() : Promise.reject(new Error(`the text could not be read (${r.status})`))))
      .then(setText)
      .catch(setError);
  }, [file.id]);
  if (error) return <ErrorText error={error} />;
  return (
    <>
      <pre class="text" aria-label={`Text of ${file.name}`} tabIndex={0}>
        {text ?? "Loading…"}
      </pre>
      {file.size > TEXT_SHOWN && <p class="muted">The first 256 KB of {file.name} are shown.</p>}
    </>
  );
}
