// The web app's build: Vue 3 single-file components, Element Plus imported on demand, the service worker and web
// manifest of the phone command room (vite-plugin-pwa / Workbox), and the API reference assets (Swagger UI, ReDoc)
// copied from npm. Everything the browser loads comes from this build: nothing from a CDN at run time.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import vue from "@vitejs/plugin-vue";
import Components from "unplugin-vue-components/vite";
import { ElementPlusResolver } from "unplugin-vue-components/resolvers";
import { defineConfig } from "vite";
import { VitePWA } from "vite-plugin-pwa";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

// ReDoc's menu shows a logo it loads from its makers' CDN, unconditionally (no option turns it off): the copy we
// serve shows an empty image instead, so the page asks no other host. Checked, so a new version is noticed.
const REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg";
const EMPTY_IMAGE = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E";

function localOnly(name, source) {
  if (name !== "redoc.standalone.js") return source;
  const text = source.toString("utf8");
  if (!text.includes(REDOC_LOGO)) throw new Error(`${name}: the CDN logo to replace is gone; check the bundle for other hosts`);
  return text.replaceAll(REDOC_LOGO, EMPTY_IMAGE);
}

/** Swagger UI and ReDoc for /api/docs and /api/redoc, emitted under docs/ from their npm packages. */
function apiDocsAssets() {
  const files = [
    ["swagger-ui-dist/swagger-ui-bundle.js", "swagger-ui-bundle.js"],
    ["swagger-ui-dist/swagger-ui.css", "swagger-ui.css"],
    ["swagger-ui-dist/LICENSE", "swagger-ui.LICENSE.txt"],
    ["redoc/bundles/redoc.standalone.js", "redoc.standalone.js"],
    ["redoc/LICENSE", "redoc.LICENSE.txt"],
  ];
  return {
    name: "cityops-api-docs-assets",
    apply: "build",
    generateBundle() {
      for (const [source, name] of files) {
        this.emitFile({ type: "asset", fileName: `docs/${name}`, source: localOnly(name, readFileSync(require.resolve(source))) });
      }
    },
  };
}

export default defineConfig({
  root: here,
  base: "/",
  plugins: [
    vue(),
    Components({ resolvers: [ElementPlusResolver({ importStyle: "css" })], dts: false }),
    apiDocsAssets(),
    VitePWA({
      registerType: "autoUpdate",
      injectRegister: null, // registered by src/pwa.js once the page is up
      manifest: {
        name: "掌上指挥室 · 城市运行和治理中心",
        short_name: "掌上指挥室",
        description: "网格员、村（社区）干部的转移、上报与任务",
        lang: "zh-CN",
        start_url: "/phone",
        scope: "/",
        display: "standalone",
        background_color: "#0b1a2e",
        theme_color: "#0b1a2e",
        icons: [
          { src: "/icons/icon-192.png", sizes: "192x192", type: "image/png" },
          { src: "/icons/icon-512.png", sizes: "512x512", type: "image/png" },
          { src: "/icons/icon-512.png", sizes: "512x512", type: "image/png", purpose: "maskable" },
        ],
      },
      workbox: {
        // The app shell (pages, scripts, styles, the Latin label font) works offline; API calls always go to the
        // network (state changes made offline wait in the IndexedDB queue, src/offline/queue.js).
        globPatterns: ["**/*.{js,mjs,css,html,svg,png,woff2}"],
        globIgnores: ["docs/**"],
        maximumFileSizeToCacheInBytes: 4 * 1024 * 1024,
        navigateFallback: "/index.html",
        navigateFallbackDenylist: [/^\/(api|ogc|sta|open311|cap|metrics|docs|assets)(\/|$)/],
        cleanupOutdatedCaches: true,
      },
    }),
  ],
  build: {
    outDir: join(here, "..", "dist"),
    emptyOutDir: true,
    chunkSizeWarningLimit: 1500,
    sourcemap: false,
  },
  server: {
    // `npm run dev` against a running server: the API and tiles come from it.
    proxy: Object.fromEntries(["/api", "/ogc", "/sta", "/open311", "/cap", "/docs"].map((p) => [p, "http://127.0.0.1:8000"])),
    fs: { allow: [join(here, "..")] },
  },
  test: {
    environment: "node",
    include: ["test/**/*.test.js"],
  },
});
