// The app's one door to the platform: the public /v1 API, signed in by the session
// cookie. Writes carry the CSRF header the gateway asks of cookie-authenticated writes.

export const CSRF_HEADER = "X-Files-CSRF";
export const UNREACHABLE = "Files cannot be reached: check your connection, then try again.";
const CONSISTENCY = "Files-Consistency";

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public details: Record<string, any> = {},
  ) {
    super(inWords(code, message, details));
  }
}

const ROLE_WORDS: Record<string, string> = { admin: "Admin", editor: "Editor", user: "User", viewer: "User" };

// A refusal for lack of a role names folders and files by id: a person reads the role.
function inWords(code: string, message: string, details: Record<string, any>): string {
  // An image group's images name their group by name alone (the API adds its id).
  const cut = message.indexOf(" instead: ");
  if (code === "constituent_of_group" && Array.isArray(details.groups) && cut >= 0) {
    const names = details.groups.map((g: { name: string }) => `“${g.name}”`).join(", ");
    const said = message.slice(0, cut + " instead".length);
    return `${said[0].toUpperCase()}${said.slice(1)}: ${names}.`;
  }
  // "folder <id> does not exist": the id tells a person nothing, and for them it may
  // well exist, no longer shared with them.
  const missing = code === "not_found" && /^(folder|file|dataset) \S+ does not exist$/.exec(message);
  if (missing) return `This ${missing[1]} does not exist, or it is not shared with you.`;
  if (code !== "forbidden" || !details.role_needed) return message;
  // No role on a folder gives this one (a top-level folder renamed or restored by other
  // than its creator): the platform's words say who may.
  if (details.role_needed === "org_admin") return `${message[0].toUpperCase()}${message.slice(1)}.`;
  const needed = ROLE_WORDS[details.role_needed] ?? details.role_needed;
  const had = details.role ? ` (yours is ${ROLE_WORDS[details.role] ?? details.role})` : "";
  return `You cannot do this: it needs the ${needed} role on the folder${had}.`;
}

let unauthenticated: () => void = () => {};
export function onUnauthenticated(handler: () => void) {
  unauthenticated = handler;
}

// The last write's consistency token: reads for a few seconds after it send it back,
// so what the person just did (and its reactions in other contexts) shows at once.
let token: { value: string; until: number } | null = null;
export function consistencyHeaders(): Record<string, string> {
  return token && token.until > Date.now() ? { [CONSISTENCY]: token.value } : {};
}
export function remember(response: { headers: { get(name: string): string | null } }) {
  const value = response.headers.get(CONSISTENCY);
  if (value) token = { value, until: Date.now() + 10_000 };
}

export async function errorOf(response: Response): Promise<ApiError> {
  try {
    const body = await response.json();
    const e = body.error ?? {};
    return new ApiError(response.status, e.code ?? "error", e.message ?? response.statusText, e.details ?? {});
  } catch {
    return new ApiError(response.status, "error", `${response.status} ${response.statusText}`);
  }
}

export async function call<T = any>(
  method: string,
  path: string,
  body?: unknown,
  init: { signal?: AbortSignal; quiet401?: boolean } = {},
): Promise<T> {
  const headers: Record<string, string> = {};
  if (method === "GET") Object.assign(headers, consistencyHeaders());
  else headers[CSRF_HEADER] = "1";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal: init.signal,
    });
  } catch (e) {
    // The browser's own words ("Failed to fetch") tell a person nothing: the platform
    // could not be reached (offline, or the service is down). A cancel stays a cancel.
    if (init.signal?.aborted) throw e;
    throw new ApiError(0, "network_error", UNREACHABLE);
  }
  if (method !== "GET") remember(response);
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && !init.quiet401) unauthenticated();
    throw error;
  }
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

export const get = <T = any>(path: string, signal?: AbortSignal) => call<T>("GET", path, undefined, { signal });
export const post = <T = any>(path: string, body?: unknown) => call<T>("POST", path, body ?? {});
export const patch = <T = any>(path: string, body: unknown) => call<T>("PATCH", path, body);
export const del = <T = any>(path: string) => call<T>("DELETE", path);

export function query(params: Record<string, string | number | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}

// Every page of a list, `onPage` called as each arrives.
export async function all<T = any>(
  path: string,
  params: Record<string, string | number | undefined> = {},
  onPage?: (items: T[]) => void,
  signal?: AbortSignal,
): Promise<T[]> {
  const items: T[] = [];
  let cursor: string | undefined;
  do {
    const page = await get<{ items: T[]; next_cursor: string | null }>(
      path + query({ ...params, limit: 1000, cursor }),
      signal,
    );
    items.push(...page.items);
    onPage?.(page.items);
    cursor = page.next_cursor ?? undefined;
  } while (cursor);
  return items;
}

// A multipart upload with progress (fetch has no upload progress; XHR does).
export function send(
  path: string,
  form: FormData | Blob,
  onProgress: (loaded: number, total: number) => void,
  method = "POST",
  signal?: AbortSignal,
  csrf = true,
): Promise<any> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, path);
    if (csrf) xhr.setRequestHeader(CSRF_HEADER, "1");
    xhr.withCredentials = true;
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.total);
    xhr.onload = () => {
      const value = xhr.getResponseHeader(CONSISTENCY);
      if (value) token = { value, until: Date.now() + 10_000 };
      let body: any = null;
      try {
        body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        if (xhr.status === 401) unauthenticated();
        const e = body?.error ?? {};
        reject(new ApiError(xhr.status, e.code ?? "error", e.message ?? `${xhr.status} ${xhr.statusText}`, e.details ?? {}));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "network_error", UNREACHABLE));
    xhr.onabort = () => reject(new ApiError(0, "aborted", "cancelled"));
    signal?.addEventListener("abort", () => xhr.abort());
    xhr.send(form);
  });
}

export type Folder = {
  type: "folder";
  id: string;
  name: string;
  description: string | null;
  parent_id: string | null;
  path: { id: string; name: string }[];
  file_count: number;
  folder_count: number;
  created_at: string;
  created_by: string;
  my_role: string | null;
  // It, or a folder above it, follows a bucket prefix: nothing is uploaded, made or moved into it.
  may_rename?: boolean;
  cloud_synced?: boolean;
};

export type FileItem = {
  type: "file";
  id: string;
  name: string;
  kind: string;
  folder_id: string;
  size: number;
  sha256: string;
  mime_type: string;
  media: {
    width?: number;
    height?: number;
    frames?: number;
    duration_s?: number;
    sample_rate?: number;
    channels?: number;
  };
  dicom?: {
    study_uid: string;
    series_uid: string;
    patient_id: string;
    modality?: string;
    instances: number;
    renderable_3d: boolean;
    missing_3d_tags: string[];
  };
  group?: { constituent_folder_id: string; file_ids: string[]; images?: number };
  source: { type: string; integration_id?: string; key?: string };
  created_at: string;
  created_by: string;
  datasets: { id: string; name: string }[];
  path?: { id: string; name: string }[];
  // One file's answer: the renditions made ("web": a browser-playable MP4).
  renditions?: string[];
  // Its object left the bucket its cloud-synced folder follows.
  tombstone?: boolean;
};

export type Item = Folder | FileItem;

export type User = { id: string; email: string; name: string; org_role: string };
