// The global search: a combobox in the top bar (ARIA 1.2: the input says whether its
// hits are open below it, and which one the arrows chose), across every folder the
// person may see; each hit with its folder path; open a hit to go there.
import { useEffect, useId, useRef, useState } from "preact/hooks";
import { get, query, type Item } from "./api";
import { kindLabel } from "./format";
import { KindIcon } from "./icons";
import { fileUrl, folderUrl, navigate } from "./router";
import { ErrorText, LoadFailed } from "./ui";

const where = (hit: Item) => {
  const path = hit.path ?? [];
  const folders = hit.type === "folder" ? path.slice(0, -1) : path;
  return folders.length ? folders.map((p) => p.name).join(" / ") : "top level";
};
const go = (hit: Item) => navigate(hit.type === "folder" ? folderUrl(hit.id) : fileUrl(hit.id));

// `current` is the query of the page shown (the results page's), which the box follows
// (after a reload, Back and Forward); suggestions are only for what the person types.
export function SearchBox({ current }: { current: string }) {
  const [q, setQ] = useState(current);
  const [hits, setHits] = useState<Item[]>([]);
  const [open, setOpen] = useState(false);
  const [active, setActive] = useState(-1);
  const typing = useRef(false);
  const followed = useRef(current);
  const id = useId();
  useEffect(() => {
    // Only a change of address: what was typed before this first ran is kept.
    if (followed.current === current) return;
    followed.current = current;
    typing.current = false;
    setQ(current);
    setOpen(false);
  }, [current]);
  useEffect(() => {
    if (!q.trim() || !typing.current) {
      setHits([]);
      return;
    }
    const abort = new AbortController();
    const timer = setTimeout(() => {
      get(`/v1/search${query({ q: q.trim(), limit: 10 })}`, abort.signal)
        .then((r: any) => {
          // An answer that comes after Enter (or a pick) opens nothing over the page.
          if (!typing.current) return;
          setHits(r.items);
          setActive(-1);
          setOpen(true);
        })
        .catch(() => {});
    }, 200);
    return () => {
      clearTimeout(timer);
      abort.abort();
    };
  }, [q]);
  const pick = (hit: Item) => {
    typing.current = false;
    setOpen(false);
    setQ("");
    go(hit);
  };
  const expanded = open && !!q.trim();
  return (
    <form
      role="search"
      class="search"
      onSubmit={(e) => {
        e.preventDefault();
        if (expanded && active >= 0 && hits[active]) pick(hits[active]);
        else if (q.trim()) {
          typing.current = false;
          setOpen(false);
          navigate(`/search${query({ q: q.trim() })}`);
        }
      }}
    >
      <input
        type="text"
        enterKeyHint="search"
        aria-label="Search files"
        placeholder="Search all files"
        value={q}
        role="combobox"
        aria-autocomplete="list"
        aria-expanded={expanded}
        aria-controls={`${id}-hits`}
        aria-activedescendant={expanded && active >= 0 ? `${id}-${active}` : undefined}
        onInput={(e) => {
          typing.current = true;
          setQ((e.target as HTMLInputElement).value);
        }}
        onFocus={() => typing.current && hits.length && setOpen(true)}
        onBlur={() => setTimeout(() => setOpen(false), 150)}
        onKeyDown={(e) => {
          if (e.key === "ArrowDown") setActive(Math.min(active + 1, hits.length - 1));
          else if (e.key === "ArrowUp") setActive(Math.max(active - 1, -1));
          else if (e.key === "Escape") setOpen(false);
          else return;
          e.preventDefault();
        }}
      />
      {expanded && (
        <ul role="listbox" id={`${id}-hits`} aria-label="Search results" class="options hits">
          {hits.length === 0 && (
            <li role="option" aria-selected={false} aria-disabled="true" class="muted">
              No match
            </li>
          )}
          {hits.map((hit, i) => (
            <li
              role="option"
              id={`${id}-${i}`}
              key={hit.id}
              aria-selected={i === active}
              aria-label={hit.name}
              onMouseDown={(e) => e.preventDefault()}
              onClick={() => pick(hit)}
            >
              <KindIcon kind={hit.type === "folder" ? "folder" : hit.kind} size={16} />
              <span class="name">{hit.name}</span>
              <span class="path">{where(hit)}</span>
            </li>
          ))}
        </ul>
      )}
    </form>
  );
}

// Results by name (folders first), a page at a time: "Show more results" reads the next.
export const RESULTS_PAGE = 100;

export function SearchPage({ q }: { q: string }) {
  const [hits, setHits] = useState<Item[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const [more, setMore] = useState(false);
  const [error, setError] = useState<unknown>(null);
  // The first page could not be read: no "Nothing found", and "Try again" searches again.
  const [failed, setFailed] = useState<unknown>(null);
  const [attempt, setAttempt] = useState(0);
  useEffect(() => {
    setHits(null);
    setNext(null);
    setError(null);
    setFailed(null);
    if (!q) return setHits([]);
    const stop = new AbortController();
    get(`/v1/search${query({ q, order: "name", limit: RESULTS_PAGE })}`, stop.signal)
      .then((r: any) => {
        setHits(r.items);
        setNext(r.next_cursor);
      })
      .catch((e) => !stop.signal.aborted && setFailed(e));
    return () => stop.abort();
  }, [q, attempt]);
  const showMore = async () => {
    if (!next) return;
    setMore(true);
    setError(null);
    try {
      const r: any = await get(`/v1/search${query({ q, order: "name", limit: RESULTS_PAGE, cursor: next })}`);
      setHits([...(hits ?? []), ...r.items]);
      setNext(r.next_cursor);
    } catch (e) {
      setError(e);
    } finally {
      setMore(false);
    }
  };
  return (
    <section class="search-page" aria-label="Search results">
      <h1 class="title">Results for “{q}”</h1>
      <ErrorText error={error} />
      {failed ? (
        <LoadFailed what="The search results" error={failed} onRetry={() => setAttempt(attempt + 1)} />
      ) : hits === null ? (
        <p class="muted">Searching…</p>
      ) : hits.length === 0 ? (
        <p>Nothing found.</p>
      ) : (
        <>
        <p class="muted" aria-live="polite">
          {next ? `The first ${hits.length} results, by name` : hits.length === 1 ? "1 result" : `${hits.length} results`}
        </p>
        <ul class="hit-list">
          {hits.map((hit) => (
            <li key={hit.id}>
              <a
                href={hit.type === "folder" ? folderUrl(hit.id) : fileUrl(hit.id)}
                onClick={(e) => {
                  e.preventDefault();
                  go(hit);
                }}
              >
                <KindIcon kind={hit.type === "folder" ? "folder" : hit.kind} size={16} /> {hit.name}
              </a>
              <span class="muted"> {kindLabel(hit.type === "folder" ? "folder" : hit.kind)} in {where(hit)}</span>
            </li>
          ))}
        </ul>
        {next && (
          <button type="button" disabled={more} onClick={showMore}>
            Show more results
          </button>
        )}
        </>
      )}
    </section>
  );
}
