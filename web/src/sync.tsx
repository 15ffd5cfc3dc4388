// A cloud-synced folder's page: what it follows of a bucket, its latest sync, "Sync now".
// Its files are the bucket's objects, so nothing is uploaded, made or moved into it here.
import { useEffect, useState } from "preact/hooks";
import { get, post } from "./api";
import { count, date } from "./format";
import { changed, mayEdit, useVersion } from "./store";
import { ErrorText, notify } from "./ui";

export type SyncState = {
  cloud_synced: boolean;
  synced_folder_id?: string;
  // integration_name: absent from a platform older than the field.
  cloud_sync?: { integration_id: string; integration_name?: string | null; prefix: string; sync_interval_s: number };
  paused?: boolean;
  objects?: number;
  last_sync?: { job_id: string; status: string; started_at: string } | null;
};

// What a folder follows (null until read, or when it cannot be read: the page then
// offers what the role allows, and the API refuses what it must).
export function useSyncState(folderId: string | null): SyncState | null {
  const version = useVersion();
  const [state, setState] = useState<SyncState | null>(null);
  useEffect(() => {
    if (!folderId) return setState(null);
    const abort = new AbortController();
    get<SyncState>(`/v1/folders/${folderId}/sync`, abort.signal)
      .then((s) => !abort.signal.aborted && setState(s))
      .catch(() => !abort.signal.aborted && setState(null));
    return () => abort.abort();
  }, [folderId, version]);
  // Another folder's state is not this one's while it is read.
  return state && folderId ? state : null;
}

export const SYNCED_WHY = "Its files are the bucket's objects: put objects in the bucket, then sync.";

// Said where something would be added to a synced folder (a dialog opened from a menu
// of the tree or the listing, which do not read each folder's sync state).
export function SyncedRefusal({ what }: { what: string }) {
  return (
    <p role="alert" class="error-text">
      This folder is cloud-synced: {what}. {SYNCED_WHY}
    </p>
  );
}

// Syncs started here (a synced folder made, "Sync now"): when one is read ended, the views
// read again, also when the folder's state was first read with it ended already (a quick
// sync): the job's answer comes once the catalog has caught up with it, so that read
// lists what it brought.
const started = new Set<string>();
export const startedHere = (jobId: string) => void started.add(jobId);

const interval = (s: number) => (s % 3600 === 0 ? count(s / 3600, "hour") : s % 60 === 0 ? count(s / 60, "minute") : count(s, "second"));

// A running sync is read again after 1 s, then each time later up to every 5 s, never
// while the tab is hidden (it is read again when it shows), and no longer after 10
// minutes of watching (a stuck job): the page then says so and offers to look again.
const FIRST_LOOK_MS = 1000;
const SLOWEST_LOOK_MS = 5000;
const WATCHED_MS = 10 * 60 * 1000;

export function SyncPanel({ folderId, state, role }: { folderId: string; state: SyncState; role: string | null | undefined }) {
  const [job, setJob] = useState<any>(null);
  const [error, setError] = useState<unknown>(null);
  const [asking, setAsking] = useState(false);
  const [unwatched, setUnwatched] = useState(false);
  const [round, setRound] = useState(0);
  const last = state.last_sync;
  // The latest sync in full (its counts, a failure's reason), and followed while it runs.
  useEffect(() => {
    setUnwatched(false);
    if (!last) return setJob(null);
    let stopped = false;
    let timer: number | undefined;
    let wait = FIRST_LOOK_MS;
    // Ten minutes of watching, not of the clock: time the tab spends hidden (from when it
    // hides, seen by its own listener) is given back.
    let until = Date.now() + WATCHED_MS;
    let hiddenAt = document.hidden ? Date.now() : 0;
    let behind = false; // a read is owed once the tab shows
    const visibility = () => {
      if (document.hidden) {
        hiddenAt = Date.now();
        return;
      }
      if (hiddenAt) until += Date.now() - hiddenAt;
      hiddenAt = 0;
      if (behind) {
        behind = false;
        read();
      }
    };
    document.addEventListener("visibilitychange", visibility);
    const later = () => {
      if (Date.now() + wait > until) return setUnwatched(true);
      timer = window.setTimeout(() => (document.hidden ? (behind = true) : read()), wait);
      wait = Math.min(wait * 2, SLOWEST_LOOK_MS);
    };
    const read = async () => {
      try {
        const found = await get(`/v1/jobs/${last.job_id}`);
        if (stopped) return;
        setJob(found);
        if (found.status === "running" || found.status === "pending") later();
        // Ended while shown, or started here: what it brought or took away is listed.
        else if (started.delete(last.job_id) || last.status === "running") changed();
      } catch {
        // Its job unreadable for now (a restart's 503): the state's own status is shown,
        // and the job is read again later, within the same bound.
        if (!stopped) later();
      }
    };
    read();
    return () => {
      stopped = true;
      clearTimeout(timer);
      document.removeEventListener("visibilitychange", visibility);
    };
  }, [last?.job_id, last?.status, round]);

  if (!state.cloud_sync)
    return (
      <section class="sync-panel" aria-label="Cloud sync">
        <p>This folder is part of a cloud-synced folder. {SYNCED_WHY}</p>
      </section>
    );
  const status = job?.status ?? last?.status;
  const failure = job?.errors?.find((e: any) => !e.name);
  const syncNow = async () => {
    setAsking(true);
    setError(null);
    try {
      startedHere((await post<{ job_id: string }>(`/v1/folders/${folderId}/sync`)).job_id);
      notify("Sync started");
      changed();
    } catch (e) {
      setError(e);
    } finally {
      setAsking(false);
    }
  };
  const running = status === "running" || status === "pending";
  return (
    <section class="sync-panel" aria-label="Cloud sync">
      <p>
        Synced with {state.cloud_sync.integration_name ? `the integration “${state.cloud_sync.integration_name}”, its` : "the"} bucket
        prefix <code>{state.cloud_sync.prefix || "(the whole bucket)"}</code>, every {interval(state.cloud_sync.sync_interval_s)}.{" "}
        {SYNCED_WHY}
      </p>
      <p role="status">
        {state.paused
          ? "Paused: the folder is in the Trash."
          : !last
            ? "Not synced yet."
            : running
              ? unwatched
                ? `Still syncing since ${date(last.started_at)}: this page stopped following it.`
                : `Syncing since ${date(last.started_at)}…`
              : status === "failed"
                ? `Last sync failed (${date(last.started_at)})${failure ? `: ${failure.message}` : ""}.`
                : status === "cancelled"
                  ? `Last sync cancelled (${date(last.started_at)}).`
                  : `Last synced ${date(last.started_at)}.`}{" "}
        {count(state.objects ?? 0, "object")} in the bucket prefix
        {job && !running && (job.file_count || job.error_count)
          ? `; the last sync brought ${count(job.file_count ?? 0, "new file")}${job.error_count ? ` and could not take ${count(job.error_count, "object")}` : ""}`
          : ""}
        .
      </p>
      {running && unwatched && (
        <button type="button" onClick={() => setRound((r) => r + 1)}>
          Check again
        </button>
      )}
      {mayEdit(role) && (
        <button type="button" disabled={asking || running || state.paused} onClick={syncNow}>
          Sync now
        </button>
      )}
      <p class="muted">To stop syncing, delete the folder and empty it from the Trash: the platform keeps a synced folder following its prefix until then.</p>
      <ErrorText error={error} />
    </section>
  );
}
