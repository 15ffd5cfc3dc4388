import { defineConfig } from "vite";

// The app is served by the gateway at `/`; its API is the public `/v1`.
export default defineConfig({
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    target: "es2022",
    sourcemap: false,
    assetsInlineLimit: 0,
    // The API's reference (/docs) is a page of its own: Swagger UI is in no page of the app's.
    rollupOptions: { input: { index: "index.html", docs: "docs.html" } },
    // A hint's polyfill, which two pages would share as a chunk of its own: the browsers
    // es2022 targets preload modules without it (and load them all the same if not).
    modulePreload: { polyfill: false },
  },
  server: { proxy: { "/v1": "http://127.0.0.1:8080" } },
});
