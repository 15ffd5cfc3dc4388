// Each kind's icon: shown in the list, and in the grid until a thumbnail answers.
const PATHS: Record<string, string> = {
  folder: "M3 6a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v9a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2z",
  image: "M4 5h16v14H4z M7 15l3-4 3 3 2-2 3 3 M8.5 8.5a1 1 0 1 0 0 .1",
  video: "M4 6h12v12H4z M16 10l4-2v8l-4-2",
  image_group: "M6 3h14v14H6z M3 6v15h15",
  image_sequence: "M3 7h4v10H3z M10 7h4v10h-4z M17 7h4v10h-4z",
  dicom_series: "M12 3a8 8 0 1 0 0.1 0z M12 7v10 M7 12h10",
  pdf: "M6 3h9l4 4v14H6z M15 3v4h4 M9 13h6 M9 16h6",
  audio: "M9 18V6l10-2v12 M9 18a3 3 0 1 1-3-3 3 3 0 0 1 3 3z M19 16a3 3 0 1 1-3-3",
  text: "M6 3h12v18H6z M9 8h6 M9 12h6 M9 16h4",
  file: "M6 3h9l4 4v14H6z",
};

export function KindIcon({ kind, size = 20 }: { kind: string; size?: number }) {
  return (
    <svg class={`icon icon-${kind}`} width={size} height={size} viewBox="0 0 24 24" aria-hidden="true" focusable="false">
      <path d={PATHS[kind] ?? PATHS.file} fill="none" stroke="currentColor" stroke-width="1.6" stroke-linejoin="round" stroke-linecap="round" />
    </svg>
  );
}

export function Lock() {
  return (
    <svg width="14" height="14" viewBox="0 0 24 24" aria-hidden="true" focusable="false">
      <path d="M6 11h12v10H6z M8 11V7a4 4 0 0 1 8 0v4" fill="none" stroke="currentColor" stroke-width="2" />
    </svg>
  );
}
