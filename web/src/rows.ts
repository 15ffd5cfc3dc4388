// A long table drawn windowed (a dataset's files, the Trash): from WINDOW_FROM rows on,
// each one line of ROW_H pixels (long names cut with "…"), and only those in view, with
// SPARE either side, are in the page; spacer rows stand for the others.
import { useLayoutEffect, useRef, useState } from "preact/hooks";

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
  const from = windowed ? Math.min(range.from, count) : 0;
  const to = windowed ? Math.min(range.to, count) : count;
  return {
    scroller,
    body,
    windowed,
    from,
    to,
    // A key taken: its row is brought into view even if the keyboard stayed on it.
    keyed: () => setKeys((k) => k + 1),
    // The spacers' heights, in pixels, before and after the rows drawn.
    before: from * ROW_H,
    after: (count - to) * ROW_H,
  };
}
