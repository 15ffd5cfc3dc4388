// Choosing items in a list, as the folder view does it (and the dataset page with it):
// click chooses one, Shift-click a range from the last one clicked, Ctrl/Cmd-click adds or
// removes one; from the keyboard, arrows move (Shift extends, Ctrl/Cmd moves without
// choosing), Space adds or removes, Ctrl/Cmd+A chooses all, Escape chooses none.
import { useRef, useState } from "preact/hooks";

export type Selection = ReturnType<typeof useSelection>;

type Mark = { id: string | null; at: number };
const NONE: Mark = { id: null, at: -1 };

export function useSelection(shown: { id: string }[]) {
  const [selected, setSelected] = useState<Set<string>>(new Set());
  // The item the keyboard is on and the one a range starts from, by id, with the place
  // each was at: a list read again (a change seen) may put items before them, and the
  // keyboard goes on from what was deleted at the first item after it that is left.
  const [anchorAt, setAnchorAt] = useState<Mark>(NONE);
  const [activeAt, setActiveAt] = useState<Mark>(NONE);
  // The last list that had both, where "after it" is looked for: the place alone would
  // skip as many items as were deleted before it (a range chosen downward).
  const had = useRef(shown);
  const place = (m: Mark) => {
    if (!m.id) return -1;
    const i = m.at < shown.length && shown[m.at].id === m.id ? m.at : shown.findIndex((s) => s.id === m.id);
    if (i >= 0) return i;
    const before = had.current;
    const now = new Map(shown.map((s, k) => [s.id, k] as const));
    for (let k = before.findIndex((s) => s.id === m.id) + 1; k > 0 && k < before.length; k++) {
      const left = now.get(before[k].id);
      if (left !== undefined) return left;
    }
    return Math.min(m.at, shown.length - 1);
  };
  const anchor = place(anchorAt);
  const active = place(activeAt);
  const kept = (m: Mark, i: number) => !m.id || shown[i]?.id === m.id;
  if (kept(anchorAt, anchor) && kept(activeAt, active)) had.current = shown;
  const mark = (i: number): Mark => (shown[i] ? { id: shown[i].id, at: i } : NONE);
  const setAnchor = (i: number) => setAnchorAt(mark(i));
  const setActive = (i: number) => setActiveAt(mark(i));

  const selectOnly = (i: number) => {
    setSelected(new Set(shown[i] ? [shown[i].id] : []));
    setAnchor(i);
    setActive(i);
  };
  const selectRange = (from: number, to: number, add: boolean) => {
    const [lo, hi] = from < to ? [from, to] : [to, from];
    const next = add ? new Set(selected) : new Set<string>();
    for (let k = Math.max(lo, 0); k <= hi; k++) next.add(shown[k].id);
    setSelected(next);
    setActive(to);
  };
  const toggle = (i: number) => {
    const next = new Set(selected);
    const id = shown[i].id;
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setSelected(next);
    setAnchor(i);
    setActive(i);
  };
  const click = (i: number, e: MouseEvent) => {
    if (e.shiftKey && anchor >= 0) selectRange(anchor, i, e.ctrlKey || e.metaKey);
    else if (e.ctrlKey || e.metaKey) toggle(i);
    else selectOnly(i);
  };
  // The keys every list takes; `step` is how far up and down go (a grid's columns), and
  // `sideways` whether left and right move too. True if the key was taken.
  const key = (e: KeyboardEvent, step = 1, sideways = false): boolean => {
    const n = shown.length;
    if (!n) return false;
    const cur = active < 0 ? 0 : active;
    let to = -1;
    if (e.key === "ArrowDown") to = Math.min(cur + step, n - 1);
    else if (e.key === "ArrowUp") to = Math.max(cur - step, 0);
    else if (e.key === "ArrowRight" && sideways) to = Math.min(cur + 1, n - 1);
    else if (e.key === "ArrowLeft" && sideways) to = Math.max(cur - 1, 0);
    else if (e.key === "Home") to = 0;
    else if (e.key === "End") to = n - 1;
    else if (e.key === "PageDown") to = Math.min(cur + 10 * step, n - 1);
    else if (e.key === "PageUp") to = Math.max(cur - 10 * step, 0);
    if (to >= 0) {
      // Nothing chosen yet: the first key lands on the first item (End on the last),
      // not a row or a grid line past it.
      if (active < 0) selectOnly(e.key === "End" ? n - 1 : 0);
      else if (e.shiftKey) selectRange(anchor >= 0 ? anchor : cur, to, false);
      else if (e.ctrlKey || e.metaKey) setActive(to);
      else selectOnly(to);
      return true;
    }
    if (e.key === " " && active >= 0) {
      toggle(active);
      return true;
    }
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "a") {
      setSelected(new Set(shown.map((i) => i.id)));
      return true;
    }
    if (e.key === "Escape") {
      setSelected(new Set());
      return true;
    }
    return false;
  };
  return { selected, setSelected, active, click, selectOnly, key };
}
