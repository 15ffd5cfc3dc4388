// A long table drawn windowed (a dataset's files, the Trash): from WINDOW_FROM rows on,
// each one line of ROW_H pixels (long names cut with "…"), and only those in view, with
// SPARE either side, are in the page; spacer rows stand for the others.
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";

export const WINDOW_FROM = 300;
export const ROW_H = 33;
const SPARE = 10;

// `count` rows in the table whose body is `body`, scrolled in `scroller`; `active` the
// row the keyboard is on; `ready` changes when the table first appears under a scroller
// that was there before it (a page that says "Loading…" first).
export function useRowWindow(count: number, active: number, ready: unknown = true) {
  const scroller = useRef<HTMLElement>(null);
  const body = useRef<HTMLTableSectionElement>(null);
  const windowed = count >= WINDOW_FROM;
  const [range, setRange] = useState({ from: 0, to: WINDOW_FROM });
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!windowed || !el) return;
    const measure = () => {
      const rowsTop = (body.current?.getBoundingClientRect().top ?? 0) - el.getBoundingClientRect().top + el.scrollTop;
      const from = Math.max(0, Math.floor((el.scrollTop - rowsTop) / ROW_H) - SPARE);
      const to = Math.min(count, Math.ceil((el.scrollTop + el.clientHeight - rowsTop) / ROW_H) + SPARE);
      setRange((old) => (old.from === from && old.to === to ? old : { from, to }));
    };
    measure();
    el.addEventListener("scroll", measure, { passive: true });
    window.addEventListener("resize", measure);
    return () => {
      el.removeEventListener("scroll", measure);
      window.removeEventListener("resize", measure);
    };
  }, [windowed, count, ready]);
  // The row the keyboard moved to is scrolled into view (and so drawn), and so is the
  // row a key acts on after the list was scrolled away from it with the wheel.
  const [keys, setKeys] = useState(0);
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!windowed || !el || active < 0 || !body.current) return;
    const rowsTop = body.current.getBoundingClientRect().top - el.getBoundingClientRect().top + el.scrollTop;
    const head = body.current.parentElement?.querySelector("thead")?.getBoundingClientRect().height ?? 0;
    const y = rowsTop + active * ROW_H;
    if (y - head < el.scrollTop) el.scrollTop = y - head;
    else if (y + ROW_H > el.scrollTop + el.clientHeight) el.scrollTop = y + ROW_H - el.clientHeight;
  }, [active, windowed, keys]);
  // The row holding the focus (its checkbox, a link in it: rows carry their index in
  // `data-row`) stays drawn when the wheel scrolls it out: removed, it would drop the
  // focus to the page.
  const [kept, setKept] = useState(-1);
  useEffect(() => {
    if (!windowed) return;
    const seen = (e: FocusEvent) => {
      const row = (e.target as Element | null)?.closest?.("tr[data-row]");
      setKept(row && body.current?.contains(row) ? Number(row.getAttribute("data-row")) : -1);
    };
    document.addEventListener("focusin", seen);
    return () => document.removeEventListener("focusin", seen);
  }, [windowed]);
  const from = windowed ? Math.min(range.from, count) : 0;
  const to = windowed ? Math.min(range.to, count) : count;
  // The rows drawn, in runs, each after a spacer `gap` pixels high standing for those not.
  const runs =
    kept >= 0 && kept < count && (kept < from || kept >= to)
      ? kept < from
        ? [
            { from: kept, to: kept + 1, gap: kept * ROW_H },
            { from, to, gap: (from - kept - 1) * ROW_H },
          ]
        : [
            { from, to, gap: from * ROW_H },
            { from: kept, to: kept + 1, gap: (kept - to) * ROW_H },
          ]
      : [{ from, to, gap: from * ROW_H }];
  const end = runs[runs.length - 1].to;
  return {
    scroller,
    body,
    windowed,
    runs,
    // A key taken: its row is brought into view even if the keyboard stayed on it.
    keyed: () => setKeys((k) => k + 1),
    // The spacer's height, in pixels, after the rows drawn.
    after: (count - end) * ROW_H,
  };
}
