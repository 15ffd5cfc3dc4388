// The folder tree (ARIA tree): top-level folders, children loaded when expanded, the
// open folder's path expanded. Right-click a folder for its menu.
import { useEffect, useRef, useState } from "preact/hooks";
import { all, get, type Folder } from "./api";
import { folderUrl, navigate } from "./router";
import { useVersion } from "./store";
import { KindIcon } from "./icons";
import { Menu } from "./ui";
import { folderMenu } from "./actions";

type Node = { folder: Folder; children: Node[] | null };

export function FolderTree({ current }: { current: string | null }) {
  const version = useVersion();
  const [roots, setRoots] = useState<Node[] | null>(null);
  const [expanded, setExpanded] = useState<Set<string>>(new Set());
  const [children, setChildren] = useState<Record<string, Folder[]>>({});
  const [focus, setFocus] = useState<string | null>(null);
  const [menu, setMenu] = useState<{ x: number; y: number; folder: Folder } | null>(null);
  const tree = useRef<HTMLUListElement>(null);

  // A failed read keeps what was shown; with nothing shown yet it says so (never "No
  // folders yet.", which would tell a person their folders are gone).
  const [failed, setFailed] = useState(false);
  const [attempt, setAttempt] = useState(0);
  useEffect(() => {
    all<Folder>("/v1/folders")
      .then((fs) => {
        setRoots(fs.map((f) => ({ folder: f, children: null })));
        setFailed(false);
      })
      .catch(() => setFailed(true));
  }, [version, attempt]);

  // The open folder's ancestors are expanded, and the folder itself when it is opened (its
  // subfolders show; collapsed by hand, it stays so until opened again).
  const opened = useRef<string | null>(null);
  useEffect(() => {
    if (!current) return;
    get<Folder>(`/v1/folders/${current}`)
      .then((f) => {
        const itself = opened.current !== current;
        opened.current = current;
        setExpanded((old) => {
          const next = new Set(old);
          f.path.slice(0, -1).forEach((p) => next.add(p.id));
          if (itself && f.folder_count > 0) next.add(f.id);
          return next;
        });
      })
      .catch(() => {});
  }, [current, version]);

  useEffect(() => {
    for (const id of expanded) {
      all<Folder>("/v1/folders", { parent_id: id })
        .then((fs) => setChildren((old) => ({ ...old, [id]: fs })))
        .catch(() => {});
    }
  }, [expanded, version]);

  const toggle = (id: string) =>
    setExpanded((old) => {
      const next = new Set(old);
      if (next.has(id)) next.delete(id);
      else next.add(id);
      return next;
    });

  // The visible items, in order, for the keyboard.
  const visible: { folder: Folder; level: number; parent: string | null }[] = [];
  const walk = (fs: Folder[], level: number, parent: string | null) => {
    for (const f of fs) {
      visible.push({ folder: f, level, parent });
      if (expanded.has(f.id) && children[f.id]) walk(children[f.id], level + 1, f.id);
    }
  };
  if (roots) walk(roots.map((r) => r.folder), 1, null);
  const focused = focus ?? current ?? visible[0]?.folder.id ?? null;

  const keys = (e: KeyboardEvent) => {
    const i = visible.findIndex((v) => v.folder.id === focused);
    if (i < 0) return;
    const here = visible[i];
    let to: string | null = null;
    if (e.key === "ArrowDown") to = visible[Math.min(i + 1, visible.length - 1)].folder.id;
    else if (e.key === "ArrowUp") to = visible[Math.max(i - 1, 0)].folder.id;
    else if (e.key === "Home") to = visible[0].folder.id;
    else if (e.key === "End") to = visible[visible.length - 1].folder.id;
    else if (e.key === "ArrowRight") {
      if (!expanded.has(here.folder.id) && here.folder.folder_count > 0) toggle(here.folder.id);
      else if (expanded.has(here.folder.id) && visible[i + 1]?.parent === here.folder.id) to = visible[i + 1].folder.id;
    } else if (e.key === "ArrowLeft") {
      if (expanded.has(here.folder.id)) toggle(here.folder.id);
      else to = here.parent;
    } else if (e.key === "Enter" || e.key === " ") navigate(folderUrl(here.folder.id));
    else if (e.key === "ContextMenu" || (e.shiftKey && e.key === "F10")) {
      const r = tree.current?.querySelector(`[data-id="${here.folder.id}"]`)?.getBoundingClientRect();
      setMenu({ x: r?.left ?? 0, y: r?.bottom ?? 0, folder: here.folder });
    } else return;
    e.preventDefault();
    if (to) {
      setFocus(to);
      (tree.current?.querySelector(`[data-id="${to}"]`) as HTMLElement | null)?.focus();
    }
  };

  const item = (f: Folder, level: number) => {
    const open = expanded.has(f.id);
    const kids = children[f.id];
    return (
      <li
        role="treeitem"
        key={f.id}
        aria-level={level}
        aria-expanded={f.folder_count > 0 ? open : undefined}
        aria-selected={f.id === current}
        aria-label={f.name}
      >
        <div
          class={`tree-row ${f.id === current ? "current" : ""}`}
          style={{ paddingLeft: `${(level - 1) * 14 + 4}px` }}
          data-id={f.id}
          tabIndex={f.id === focused ? 0 : -1}
          onClick={() => {
            setFocus(f.id);
            navigate(folderUrl(f.id));
          }}
          onContextMenu={(e) => {
            e.preventDefault();
            setMenu({ x: e.clientX, y: e.clientY, folder: f });
          }}
        >
          <span
            class="twisty"
            aria-hidden="true"
            onClick={(e) => {
              e.stopPropagation();
              toggle(f.id);
            }}
          >
            {f.folder_count > 0 ? (open ? "▾" : "▸") : ""}
          </span>
          <KindIcon kind="folder" size={16} />
          <span class="tree-name">{f.name}</span>
        </div>
        {open && kids && kids.length > 0 && (
          <ul role="group">{kids.map((k) => item(k, level + 1))}</ul>
        )}
      </li>
    );
  };

  return (
    <>
      <a
        href="/"
        class={`tree-home ${current === null ? "current" : ""}`}
        onClick={(e) => {
          e.preventDefault();
          navigate("/");
        }}
      >
        All folders
      </a>
      {roots === null && failed ? (
        <p class="muted">
          The folders could not be loaded.{" "}
          <button type="button" class="link" onClick={() => setAttempt(attempt + 1)}>
            Try again
          </button>
        </p>
      ) : roots === null ? (
        <p class="muted">Loading…</p>
      ) : roots.length === 0 ? (
        <p class="muted">No folders yet.</p>
      ) : (
        <ul role="tree" aria-label="Folder tree" ref={tree} onKeyDown={keys}>
          {roots.map((r) => item(r.folder, 1))}
        </ul>
      )}
      {menu && (
        <Menu
          x={menu.x}
          y={menu.y}
          label={`Actions for ${menu.folder.name}`}
          items={folderMenu(menu.folder)}
          onClose={() => setMenu(null)}
        />
      )}
    </>
  );
}
