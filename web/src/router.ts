// Deep links: one address per folder, file, dataset and search; history-based.
import { useEffect, useState } from "preact/hooks";

export type Route =
  | { page: "home" }
  | { page: "folder"; id: string }
  | { page: "file"; id: string }
  | { page: "dataset"; id: string }
  | { page: "search"; q: string }
  | { page: "trash" }
  | { page: "datasets" }
  | { page: "not-found" };

const UUID = "[0-9a-fA-F-]{36}";

export function parse(location: Location): Route {
  const path = location.pathname;
  let m = path.match(new RegExp(`^/folders/(${UUID})/?$`));
  if (m) return { page: "folder", id: m[1] };
  m = path.match(new RegExp(`^/files/(${UUID})/?$`));
  if (m) return { page: "file", id: m[1] };
  m = path.match(new RegExp(`^/datasets/(${UUID})/?$`));
  if (m) return { page: "dataset", id: m[1] };
  if (path === "/trash") return { page: "trash" };
  if (path === "/datasets") return { page: "datasets" };
  if (path === "/search") return { page: "search", q: new URLSearchParams(location.search).get("q") ?? "" };
  if (path === "/") return { page: "home" };
  return { page: "not-found" };
}

const listeners = new Set<() => void>();
export function navigate(to: string, replace = false) {
  if (to === location.pathname + location.search) return;
  if (replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  listeners.forEach((l) => l());
}
window.addEventListener("popstate", () => listeners.forEach((l) => l()));

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parse(location));
  useEffect(() => {
    const update = () => setRoute(parse(location));
    listeners.add(update);
    return () => void listeners.delete(update);
  }, []);
  return route;
}

export const folderUrl = (id: string | null) => (id ? `/folders/${id}` : "/");
export const fileUrl = (id: string) => `/files/${id}`;

// A folder a dialog just made, shown: the button that opened the dialog is not on the
// new folder's page, so the keyboard goes on from its heading.
export function openMadeFolder(id: string) {
  navigate(folderUrl(id));
  requestAnimationFrame(() => document.getElementById("folder-title")?.focus());
}
