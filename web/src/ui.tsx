// Small accessible building blocks: modal dialogs, tabs, menus, notices.
import type { ComponentChildren } from "preact";
import { useEffect, useId, useLayoutEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "./api";
import { navigate } from "./router";

// The dialogs open, the topmost last.
const shown: HTMLDialogElement[] = [];

export function Dialog(props: {
  title: string;
  onClose: () => void;
  children: ComponentChildren;
  class?: string;
  // "alertdialog" for a question that must be answered (a confirmation), described by
  // the element with the id `describedBy`.
  role?: "alertdialog";
  describedBy?: string;
  // Where the focus goes if what opened the dialog went with what it did (removed, or
  // disabled now that nothing is chosen): the first of these ids still in the page.
  fallback?: string[];
  // false: no "Close" and Escape does nothing (the dialog's own buttons are the ways out).
  closable?: boolean;
  // Set while the dialog may not be left (its work under way): its "Close" is shown
  // disabled, titled with this, rather than doing nothing when pressed.
  closeBlocked?: string;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const id = useId();
  const latest = useRef(props);
  latest.current = props;
  useEffect(() => {
    const dialog = ref.current!;
    // Escape taken at its keydown, anywhere in the page (the focus may have gone to the
    // body with a button disabled as the work began): Chromium closes a modal dialog on
    // a second Escape even when its cancel was refused (no user activation between),
    // which left a dialog gone whose work was still under way. Only the topmost dialog
    // answers; a key a control inside handled (prevented) is left alone.
    shown.push(dialog);
    const escape = (e: KeyboardEvent) => {
      if (e.key !== "Escape" || e.defaultPrevented || e.isComposing || shown[shown.length - 1] !== dialog) return;
      e.preventDefault();
      if (latest.current.closable !== false && !latest.current.closeBlocked) latest.current.onClose();
    };
    document.addEventListener("keydown", escape);
    // What had the focus (the button, or the grid a menu was opened from) gets it back
    // when the dialog closes: a keyboard user goes on from where they were.
    const opener = document.activeElement as HTMLElement | null;
    const tab = tabOf(opener);
    if (!dialog.open) dialog.showModal();
    return () => {
      document.removeEventListener("keydown", escape);
      shown.splice(shown.indexOf(dialog), 1);
      if (dialog.open) dialog.close();
      giveBack(opener, dialog, [...(tab ? [tab] : []), ...(props.fallback ?? [])]);
    };
  }, []);
  return (
    <dialog
      ref={ref}
      class={`dialog ${props.class ?? ""}`}
      role={props.role}
      aria-labelledby={id}
      aria-describedby={props.describedBy}
      onCancel={(e) => {
        e.preventDefault();
        if (props.closable !== false && !props.closeBlocked) props.onClose();
      }}
    >
      <header class="dialog-head">
        <h2 id={id}>{props.title}</h2>
        {props.closable !== false && (
          <button
            type="button"
            class="icon-button"
            aria-label="Close"
            disabled={!!props.closeBlocked}
            title={props.closeBlocked}
            onClick={props.onClose}
          >
            ×
          </button>
        )}
      </header>
      <div class="dialog-body">{props.children}</div>
    </dialog>
  );
}

// Focus back to `opener` as `closing` (a dialog, a menu) goes, unless the person has
// already put it elsewhere (a click on another control). An opener that went with what
// the dialog did (the "Remove" of a row removed), or that is disabled now, hands it to
// the first of `fallback` in the page: the tab of the panel it was in, say.
function giveBack(opener: HTMLElement | null, closing: HTMLElement, fallback: string[] = []) {
  const now = document.activeElement;
  const lost = !now || now === document.body || closing.contains(now);
  if (!lost || !opener || opener === document.body) return;
  if (opener.isConnected && !opener.matches(":disabled")) return opener.focus();
  for (const id of fallback) {
    const el = document.getElementById(id);
    if (el) return el.focus();
  }
}

// A button pressed is disabled while its request runs (`busy`): the focus it had falls
// to the page, and the keyboard would start again from the top. Once done, the focus
// goes back to it, or to `fallback` where it stays disabled (nothing left to send),
// unless the person has put it elsewhere meanwhile.
export function useFocusKept(busy: boolean, fallback?: { current: HTMLElement | null }) {
  const pressed = useRef<HTMLElement | null>(null);
  const wasBusy = useRef(false);
  // Taken as the page draws "busy", before the button is disabled.
  if (busy && !wasBusy.current) pressed.current = document.activeElement as HTMLElement | null;
  useEffect(() => {
    const lost = !document.activeElement || document.activeElement === document.body;
    if (wasBusy.current && !busy && lost) {
      const el = pressed.current;
      if (el && el !== document.body && el.isConnected && !el.matches(":disabled")) el.focus();
      else fallback?.current?.focus();
    }
    wasBusy.current = busy;
  }, [busy]);
}

// The id of the tab whose panel holds `el`, if any.
function tabOf(el: Element | null): string | null {
  return el?.closest('[role="tabpanel"]')?.getAttribute("aria-labelledby") ?? null;
}

// Why a Confirm may not be closed while its work is under way.
const UNDER_WAY = "Under way: this closes once it is done.";

// A question before an action that cannot be taken back from here (a removal): its
// title names what goes and from where, `children` what follows from it. "Cancel" has
// the focus first; Escape cancels; the destructive button says what it does. A refusal
// is shown in the dialog, which stays open.
export function Confirm(props: {
  title: string;
  action: string;
  onConfirm: () => Promise<unknown>;
  onClose: () => void;
  children?: ComponentChildren;
  fallback?: string[];
}) {
  const [busy, setBusy] = useState(false);
  useFocusKept(busy);
  const [error, setError] = useState<unknown>(null);
  const described = useId();
  const go = async () => {
    setBusy(true);
    setError(null);
    try {
      await props.onConfirm();
      props.onClose();
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };
  return (
    // Not closed while the work is under way (Cancel, Escape, "Close"): it may take several
    // requests ("Delete forever" of thousands), and a refusal after it closed would be lost.
    <Dialog
      title={props.title}
      onClose={props.onClose}
      role="alertdialog"
      describedBy={described}
      class="confirm-dialog"
      fallback={props.fallback}
      closeBlocked={busy ? UNDER_WAY : undefined}
    >
      <div id={described}>{props.children}</div>
      <ErrorText error={error} />
      <div class="actions">
        <button type="button" autoFocus disabled={busy} title={busy ? UNDER_WAY : undefined} onClick={props.onClose}>
          Cancel
        </button>
        <button type="button" class="danger" disabled={busy} onClick={go}>
          {props.action}
        </button>
      </div>
    </Dialog>
  );
}

export type Tab = { id: string; label: string };

export function Tabs(props: {
  label: string;
  tabs: Tab[];
  active: string;
  onChange: (id: string) => void;
  idBase: string;
}) {
  const refs = useRef<Record<string, HTMLButtonElement | null>>({});
  const move = (e: KeyboardEvent) => {
    const i = props.tabs.findIndex((t) => t.id === props.active);
    let next = -1;
    if (e.key === "ArrowRight") next = (i + 1) % props.tabs.length;
    else if (e.key === "ArrowLeft") next = (i - 1 + props.tabs.length) % props.tabs.length;
    else if (e.key === "Home") next = 0;
    else if (e.key === "End") next = props.tabs.length - 1;
    if (next >= 0) {
      e.preventDefault();
      props.onChange(props.tabs[next].id);
      refs.current[props.tabs[next].id]?.focus();
    }
  };
  return (
    <div role="tablist" aria-label={props.label} class="tabs" onKeyDown={move}>
      {props.tabs.map((t) => (
        <button
          type="button"
          role="tab"
          key={t.id}
          ref={(el) => {
            refs.current[t.id] = el;
          }}
          id={`${props.idBase}-tab-${t.id}`}
          aria-controls={`${props.idBase}-panel-${t.id}`}
          aria-selected={t.id === props.active}
          tabIndex={t.id === props.active ? 0 : -1}
          onClick={() => props.onChange(t.id)}
        >
          {t.label}
        </button>
      ))}
    </div>
  );
}

export function TabPanel(props: { idBase: string; id: string; children: ComponentChildren }) {
  return (
    <div
      role="tabpanel"
      id={`${props.idBase}-panel-${props.id}`}
      aria-labelledby={`${props.idBase}-tab-${props.id}`}
      class="tab-panel"
    >
      {props.children}
    </div>
  );
}

// `why`: a disabled item's reason, as its title and its description.
export type MenuItem = { label: string; action: () => void; disabled?: boolean; why?: string };

export function Menu(props: { x: number; y: number; label: string; items: MenuItem[]; onClose: () => void }) {
  const ref = useRef<HTMLDivElement>(null);
  const [pos, setPos] = useState({ x: props.x, y: props.y });
  useLayoutEffect(() => {
    const el = ref.current!;
    const opener = document.activeElement as HTMLElement | null;
    const r = el.getBoundingClientRect();
    setPos({
      x: Math.max(4, Math.min(props.x, window.innerWidth - r.width - 4)),
      y: Math.max(4, Math.min(props.y, window.innerHeight - r.height - 4)),
    });
    el.querySelector<HTMLElement>('[role="menuitem"]:not([aria-disabled="true"])')?.focus();
    const away = (e: MouseEvent) => {
      if (!el.contains(e.target as Node)) props.onClose();
    };
    const blur = () => props.onClose();
    document.addEventListener("mousedown", away, true);
    window.addEventListener("blur", blur);
    window.addEventListener("resize", blur);
    return () => {
      document.removeEventListener("mousedown", away, true);
      window.removeEventListener("blur", blur);
      window.removeEventListener("resize", blur);
      giveBack(opener, el);
    };
  }, []);
  const keys = (e: KeyboardEvent) => {
    const items = Array.from(ref.current!.querySelectorAll<HTMLElement>('[role="menuitem"]'));
    const i = items.indexOf(document.activeElement as HTMLElement);
    if (e.key === "ArrowDown") items[(i + 1) % items.length]?.focus();
    else if (e.key === "ArrowUp") items[(i - 1 + items.length) % items.length]?.focus();
    else if (e.key === "Home") items[0]?.focus();
    else if (e.key === "End") items[items.length - 1]?.focus();
    else if (e.key === "Escape" || e.key === "Tab") props.onClose();
    else return;
    e.preventDefault();
    e.stopPropagation();
  };
  return (
    <div
      ref={ref}
      role="menu"
      aria-label={props.label}
      class="menu"
      style={{ left: `${pos.x}px`, top: `${pos.y}px` }}
      onKeyDown={keys}
    >
      {props.items.map((item) => (
        <button
          type="button"
          role="menuitem"
          key={item.label}
          tabIndex={-1}
          aria-disabled={item.disabled ? "true" : undefined}
          title={item.disabled ? item.why : undefined}
          onClick={() => {
            if (item.disabled) return;
            props.onClose();
            item.action();
          }}
        >
          {item.label}
        </button>
      ))}
    </div>
  );
}

// Notices for what happened (role status) and what failed (role alert).
type Notice = { id: number; text: string; error: boolean };
let push: (n: Notice) => void = () => {};
let next = 1;
export function notify(text: string, error = false) {
  push({ id: next++, text, error });
}

export function Notices() {
  const [items, setItems] = useState<Notice[]>([]);
  useEffect(() => {
    push = (n) => {
      setItems((all) => [...all.slice(-3), n]);
      setTimeout(() => setItems((all) => all.filter((x) => x.id !== n.id)), n.error ? 10_000 : 5_000);
    };
  }, []);
  return (
    <div class="notices">
      <div role="status" aria-live="polite">
        {items.filter((n) => !n.error).map((n) => (
          <p key={n.id} class="notice">{n.text}</p>
        ))}
      </div>
      <div role="alert">
        {items.filter((n) => n.error).map((n) => (
          <p key={n.id} class="notice error">{n.text}</p>
        ))}
      </div>
    </div>
  );
}

export function ErrorText({ error }: { error: unknown }) {
  if (!error) return null;
  const message = error instanceof Error ? error.message : String(error);
  return (
    <p role="alert" class="error-text">
      {message}
    </p>
  );
}

// A folder, file or dataset page whose subject could not be read: said in words, with a
// heading of its own (never another page's), "Try again" when it may come back (the
// platform unreachable), and the way to the top level.
const MISSING: Record<string, string> = {
  folder: "This folder does not exist, or it is not shared with you. If it was deleted, it may be in the Trash.",
  file: "This file does not exist, or it is not shared with you. If it was deleted, it may be in the Trash.",
  dataset: "This dataset does not exist, or you may not see it.",
};

export function Unavailable({ what, error, onRetry }: { what: "folder" | "file" | "dataset"; error: unknown; onRetry: () => void }) {
  const missing = error instanceof ApiError && error.status === 404;
  const Name = what[0].toUpperCase() + what.slice(1);
  return (
    <section class="unavailable" aria-label={`${Name} unavailable`}>
      <h1 class="title">{missing ? `${Name} not found` : `This ${what} could not be shown`}</h1>
      <p role="alert" class="error-text">
        {missing ? MISSING[what] : messageOf(error)}
      </p>
      <p class="actions-inline">
        {!missing && (
          <button type="button" onClick={onRetry}>
            Try again
          </button>
        )}
        <AllFoldersLink />
      </p>
    </section>
  );
}

// A list page (the Trash, the Datasets, search results) whose list could not be read:
// said in words under the page's own heading, "Try again" to read it again, and the way
// to the top level. Never an empty state ("The trash is empty") in its place.
export function LoadFailed({ what, error, onRetry }: { what: string; error: unknown; onRetry: () => void }) {
  return (
    <div class="load-failed">
      <p role="alert" class="error-text">
        {what} could not be loaded. {messageOf(error)}
      </p>
      <p class="actions-inline">
        <button type="button" onClick={onRetry}>
          Try again
        </button>
        <AllFoldersLink />
      </p>
    </div>
  );
}

// The API's messages start in lower case ("the catalog service did not answer…"): shown
// as a sentence of their own (a page that could not be shown, a list not loaded), they
// start with a capital.
export function messageOf(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// The way back to the top level from a page that shows nothing else.
export function AllFoldersLink() {
  return (
    <a
      href="/"
      onClick={(e) => {
        e.preventDefault();
        navigate("/");
      }}
    >
      Go to all folders
    </a>
  );
}
