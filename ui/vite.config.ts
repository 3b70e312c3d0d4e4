// Vite config for the Hypedeck web UI. Root is this directory wherever Vite is started from;
// the build lands in ui/dist, which the desktop app embeds (src-tauri/tauri.conf.json).
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  clearScreen: false,
  build: { outDir: "dist", emptyOutDir: true, target: "es2022" },
  // `npm run tauri dev` (devUrl in tauri.conf.json) and `npm run dev:ui`.
  server: { host: "127.0.0.1", port: 1420, strictPort: true },
  preview: { host: "127.0.0.1", port: 4173, strictPort: true },
});
