import { defineConfig } from "vite";

// The app is served by the gateway at `/`; its API is the public `/v1`.
export default defineConfig({
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: { target: "es2022", sourcemap: false, assetsInlineLimit: 0 },
  server: { proxy: { "/v1": "http://127.0.0.1:8080" } },
});
