// Precompress the built assets (the gateway sends `x.js.gz` to a browser that accepts
// gzip) and print the first load's size: what index.html pulls in, compressed.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const dir = new URL("../dist/assets/", import.meta.url);
const index = readFileSync(new URL("../dist/index.html", import.meta.url), "utf8");
let first = 0;
for (const name of readdirSync(dir)) {
  if (!/\.(js|css|svg|mjs)$/.test(name)) continue;
  const packed = gzipSync(readFileSync(new URL(name, dir)), { level: 9 });
  writeFileSync(new URL(name + ".gz", dir), packed);
  if (index.includes(`/assets/${name}`)) first += packed.length;
}
console.log(`first load (JS and CSS, gzip): ${(first / 1024).toFixed(1)} KiB`);
