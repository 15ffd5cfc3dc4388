// Decimal units (1 KB = 1,000 bytes), as the `files` command prints them: the same file
// has the same size in both.
export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "";
  if (n < 1000) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let v = n / 1000;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function date(iso: string | null | undefined): string {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export const KINDS: Record<string, string> = {
  folder: "Folder",
  image: "Image",
  video: "Video",
  image_group: "Image group",
  image_sequence: "Image sequence",
  dicom_series: "DICOM series",
  pdf: "PDF",
  audio: "Audio",
  text: "Text",
};
export const kindLabel = (kind: string) => KINDS[kind] ?? kind;

export function duration(s: number | undefined): string {
  if (s === undefined) return "";
  const m = Math.floor(s / 60);
  const sec = (s % 60).toFixed(1).padStart(4, "0");
  return `${m}:${sec}`;
}

// A page of an upload's files is, in a file's history, that file's upload (and a page of
// requested thumbnails, its thumbnails requested).
const AS_ONE_FILE: Record<string, string> = {
  "catalog.FilesUploaded": "catalog.FileUploaded",
  "thumbnails.ThumbnailsRequestedPage": "thumbnails.ThumbnailsRequested",
};

// "catalog.FileUploaded" -> "File uploaded"
export function eventLabel(type: string): string {
  const name = (AS_ONE_FILE[type] ?? type).split(".").pop() ?? type;
  const words = name.replace(/([a-z0-9])([A-Z])/g, "$1 $2").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

// A number grouped as the person's locale groups it ("5,001" in English, "5.001" in German).
export const num = (n: number) => n.toLocaleString();

// "1 file", "2 files", "5,001 files".
export const count = (n: number, one: string, many = `${one}s`) => `${num(n)} ${n === 1 ? one : many}`;

// How many files and folders, naming only those there are: "1 file", "2 folders",
// "3 files and 1 folder" (not "1 file and 0 folders").
export const filesAndFolders = (files: number, folders: number) =>
  files && folders
    ? `${count(files, "file")} and ${count(folders, "folder")}`
    : folders
      ? count(folders, "folder")
      : count(files, "file");

// Names in a sentence: "a", "a and b", "a, b and c".
export const listed = (names: string[]) =>
  names.length < 2 ? names.join("") : `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
