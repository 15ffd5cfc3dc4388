import { useEffect, useId, useRef, useState } from "preact/hooks";
import { ApiError, call, del, get, onUnauthenticated, type User } from "./api";
import { FolderTree } from "./tree";
import { FolderPage } from "./browse";
import { FilePage } from "./viewer";
import { DatasetList, DatasetPage } from "./datasets";
import { SearchBox, SearchPage } from "./search";
import { TrashPage } from "./trash";
import { DialogHost } from "./dialogs";
import { navigate, useRoute } from "./router";
import { changed, session } from "./store";
import { AllFoldersLink, Dialog, ErrorText, Notices } from "./ui";

export function App() {
  const [me, setMe] = useState<User | null | undefined>(undefined);
  // The session ended while the app was in use (signed out in another tab, expired, its
  // key revoked): the page stays as it is under a sign-in dialog, so what the person
  // was doing (an upload's list of what was sent and what was not) is not thrown away.
  const [ended, setEnded] = useState(false);
  useEffect(() => {
    onUnauthenticated(() => {
      if (session.me) {
        session.ended = true;
        setEnded(true);
      } else setMe(null);
    });
    call<User>("GET", "/v1/users/me", undefined, { quiet401: true })
      .then((u) => {
        session.me = u;
        setMe(u);
      })
      .catch(() => setMe(null));
  }, []);
  if (me === undefined) return <p class="loading">Loading…</p>;
  if (me === null)
    return (
      <SignIn
        onSignedIn={(u) => {
          session.me = u;
          setMe(u);
        }}
      />
    );
  const signedOut = () => {
    session.me = null;
    session.ended = false;
    setEnded(false);
    setMe(null);
  };
  return (
    <>
      <Shell me={me} onSignedOut={signedOut} />
      {ended && (
        <SessionEnded
          onSignedIn={(u) => {
            // Someone else: nothing of the page before is theirs to see.
            if (u.id !== me.id) return location.assign("/");
            session.ended = false;
            setEnded(false);
            // What was refused while it was ended (its errors shown), and what changed
            // meanwhile, is read again.
            changed();
          }}
          onLeave={() => {
            signedOut();
            navigate("/", true);
          }}
        />
      )}
    </>
  );
}

function SignIn({ onSignedIn }: { onSignedIn: (u: User) => void }) {
  return (
    <main class="signin">
      <KeyForm onSignedIn={onSignedIn} titled />
    </main>
  );
}

function SessionEnded({ onSignedIn, onLeave }: { onSignedIn: (u: User) => void; onLeave: () => void }) {
  return (
    <Dialog title="Your session has ended" onClose={onLeave} closable={false} class="session-ended">
      <p>Sign in again to carry on: this page stays as it was, with what was not done yet (files not uploaded are listed in the upload).</p>
      <KeyForm onSignedIn={onSignedIn} />
      <div class="actions">
        <button type="button" onClick={onLeave}>
          Leave
        </button>
      </div>
    </Dialog>
  );
}

function KeyForm({ onSignedIn, titled = false }: { onSignedIn: (u: User) => void; titled?: boolean }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const id = useId();
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const started = await call<{ user: User }>("POST", "/v1/sessions", { api_key: key.trim() }, { quiet401: true });
      setKey("");
      onSignedIn(started.user);
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401 ? new Error("That API key is unknown or revoked.") : err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form onSubmit={submit} aria-labelledby={titled ? "signin-title" : undefined}>
      {titled && (
        <>
          <h1 id="signin-title">Files</h1>
          <p>Sign in with your API key. It is exchanged for a session and not kept by the browser.</p>
        </>
      )}
      <label for={`${id}-key`}>API key</label>
      <input
        id={`${id}-key`}
        type="password"
        autoComplete="off"
        spellcheck={false}
        autoFocus={!titled}
        value={key}
        onInput={(e) => setKey((e.target as HTMLInputElement).value)}
        required
      />
      <button type="submit" class="primary" disabled={busy || !key.trim()}>
        Sign in
      </button>
      <ErrorText error={error} />
    </form>
  );
}

function Shell({ me, onSignedOut }: { me: User; onSignedOut: () => void }) {
  const route = useRoute();
  const [treeOpen, setTreeOpen] = useState(false);
  const toggle = useRef<HTMLButtonElement>(null);
  const nav = useRef<HTMLElement>(null);
  useEffect(() => {
    // A folder opened from the drawer: the focus, in the drawer about to be hidden, goes
    // to "Folders" (not to the page's body, from where Tab starts over).
    if (treeOpen && nav.current?.contains(document.activeElement)) toggle.current?.focus();
    setTreeOpen(false);
  }, [route]);
  // At a phone's width the tree is a drawer over the page: opened, it has the focus (its
  // current folder); Escape closes it and gives the focus back to "Folders".
  useEffect(() => {
    const el = nav.current;
    if (treeOpen && el) (el.querySelector<HTMLElement>('[role="tree"] [tabindex="0"]') ?? el.querySelector("a"))?.focus();
  }, [treeOpen]);
  // Files dropped where nothing takes them (beside a dialog's drop zone, on a page that
  // has none) would have the browser open them in place of the app, an upload under
  // way with it: such a drop is refused.
  useEffect(() => {
    const refuse = (e: DragEvent) => {
      if (e.defaultPrevented || !e.dataTransfer?.types.includes("Files")) return;
      // A file field (the import's manifest) takes a file dropped on it itself.
      if ((e.target as HTMLElement | null)?.closest?.('input[type="file"]')) return;
      e.preventDefault();
      if (e.type === "dragover") e.dataTransfer.dropEffect = "none";
    };
    window.addEventListener("dragover", refuse);
    window.addEventListener("drop", refuse);
    return () => {
      window.removeEventListener("dragover", refuse);
      window.removeEventListener("drop", refuse);
    };
  }, []);
  const signOut = async () => {
    try {
      await del("/v1/sessions");
    } finally {
      onSignedOut();
      navigate("/", true);
    }
  };
  let page;
  if (route.page === "folder") page = <FolderPage key={route.id} folderId={route.id} />;
  else if (route.page === "file") page = <FilePage key={route.id} id={route.id} />;
  else if (route.page === "dataset") page = <DatasetPage key={route.id} id={route.id} />;
  else if (route.page === "search") page = <SearchPage q={route.q} />;
  else if (route.page === "trash") page = <TrashPage />;
  else if (route.page === "datasets") page = <DatasetList />;
  else if (route.page === "not-found") page = <NotFound />;
  else page = <FolderPage key="home" folderId={null} />;
  const folderId = route.page === "folder" ? route.id : null;
  return (
    <div class="shell">
      <header class="topbar">
        <button
          type="button"
          class="tree-toggle"
          ref={toggle}
          aria-expanded={treeOpen}
          aria-controls="folder-tree"
          onClick={() => setTreeOpen(!treeOpen)}
        >
          Folders
        </button>
        <a
          href="/"
          class="brand"
          onClick={(e) => {
            e.preventDefault();
            navigate("/");
          }}
        >
          Files
        </a>
        <SearchBox current={route.page === "search" ? route.q : ""} />
        <a
          href="/datasets"
          class="nav-link"
          aria-current={route.page === "datasets" ? "page" : undefined}
          onClick={(e) => {
            e.preventDefault();
            navigate("/datasets");
          }}
        >
          Datasets
        </a>
        <a
          href="/trash"
          class="nav-link"
          aria-current={route.page === "trash" ? "page" : undefined}
          onClick={(e) => {
            e.preventDefault();
            navigate("/trash");
          }}
        >
          Trash
        </a>
        <span class="me" title={me.email}>
          {me.name}
        </span>
        <button type="button" onClick={signOut}>
          Sign out
        </button>
      </header>
      <div class="body">
        <nav
          id="folder-tree"
          aria-label="Folders"
          class={`sidebar ${treeOpen ? "open" : ""}`}
          ref={nav}
          onKeyDown={(e) => {
            // A folder's menu in the tree takes its own Escape first.
            if (!treeOpen || e.key !== "Escape" || e.defaultPrevented) return;
            e.preventDefault();
            setTreeOpen(false);
            toggle.current?.focus();
          }}
          // Tabbing out of the open drawer closes it: what the focus goes to is under it.
          onFocusOut={(e) => {
            const to = e.relatedTarget as Node | null;
            if (treeOpen && to && !nav.current?.contains(to) && to !== toggle.current) setTreeOpen(false);
          }}
        >
          <FolderTree current={folderId} />
        </nav>
        <main class="main">{page}</main>
      </div>
      <DialogHost />
      <Notices />
    </div>
  );
}

function NotFound() {
  return (
    <section class="not-found" aria-label="Not found">
      <h1 class="title">Page not found</h1>
      <p>There is no page at {location.pathname}: the link may be mistyped, or what it showed was deleted.</p>
      <p>
        <AllFoldersLink />
      </p>
    </section>
  );
}

// The platform's own actors ("system:<part>"), in words.
const SYSTEM: Record<string, string> = {
  trash: "The platform (emptying the trash)",
  "blob-collector": "The platform (storage clean-up)",
  "upload-sessions": "The platform (expired uploads)",
  "sync-schedule": "The platform (scheduled sync)",
  "integration-events": "The platform (cloud bucket events)",
  thumbnails: "The platform (thumbnails)",
  renditions: "The platform (video renditions)",
};

export async function whoIs(id: string): Promise<string> {
  if (session.me && id === session.me.id) return `${session.me.name} (you)`;
  if (id === "system" || id.startsWith("system:")) return SYSTEM[id.split(":")[1]] ?? "The platform";
  return names.get(id) ?? (await lookupNames(), names.get(id) ?? "Someone else");
}

// Names the app has seen (a folder's collaborators, for one who may not list users).
export function knowNames(people: { user_id: string; name: string; email: string }[]) {
  for (const p of people) if (!names.has(p.user_id)) names.set(p.user_id, `${p.name} <${p.email}>`);
}

const names = new Map<string, string>();
let looked = false;
async function lookupNames() {
  if (looked || session.me?.org_role !== "admin") return;
  looked = true;
  try {
    let cursor: string | null = null;
    do {
      const page: any = await get(`/v1/users?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      for (const u of page.items) names.set(u.id, `${u.name} <${u.email}>`);
      cursor = page.next_cursor;
    } while (cursor);
  } catch {
    /* names stay ids */
  }
}
