// The web app's build: Vue 3 single-file components, Element Plus imported on demand, the service worker and web
// manifest of the phone command room (vite-plugin-pwa / Workbox), the API reference assets (Swagger UI, ReDoc)
// copied from npm, pre-compressed copies of every file, and the preloads of each page's first paint. Everything the browser loads comes from this build: nothing from a CDN at run time.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import vue from "@vitejs/plugin-vue";
import Components from "unplugin-vue-components/vite";
import { ElementPlusResolver } from "unplugin-vue-components/resolvers";
import { defineConfig } from "vite";
import { compression, defineAlgorithm } from "vite-plugin-compression2";
import { firstPaintRequests } from "./src/first-paint.js";
import { overviewRequest } from "./src/overview.js";
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

/**
 * The message catalogue (cityops/web/messages.json) one module per language, `virtual:cityops-messages/<code>`:
 * the entry script imports 简体中文 only; English is its own chunk, fetched when a user picks it (src/i18n.js).
 */
export function messageCatalogue() {
  const file = join(here, "..", "messages.json");
  const prefix = "virtual:cityops-messages/";
  return {
    name: "cityops-messages",
    resolveId(id) {
      return id.startsWith(prefix) ? `\0${id}` : null;
    },
    load(id) {
      if (!id.startsWith(`\0${prefix}`)) return null;
      this.addWatchFile(file);
      const code = id.slice(prefix.length + 1);
      const all = JSON.parse(readFileSync(file, "utf8"));
      if (!all[code]) this.error(`messages.json has no language ${code}`);
      return `export default ${JSON.stringify(all[code])};`;
    },
  };
}

// Which page each path opens (as src/router.js routes it), most specific first: index.html preloads that page's
// chunks, its styles and the files its first paint fetches (the MapLibre worker, the label font) in parallel
// with the entry script, instead of one round trip after another as the imports are discovered.
// The desk pages also need their frame (src/components/DeskLayout.vue, with Element Plus); the phone and the login
// page have none.
const DESK = "src/components/DeskLayout.vue";
const FIRST_PAINT_PAGES = [
  ["/phone", ["src/pages/Phone.vue"]],
  ["/cockpit", ["src/pages/Cockpit.vue", DESK]],
  ["/workbench/cases/", ["src/pages/CasePage.vue", DESK]],
  ["/workbench", ["src/pages/Workbench.vue", DESK]],
  ["/command", ["src/pages/Command.vue", DESK]],
  ["/login", ["src/pages/Login.vue"]],
  ["/", ["src/pages/OpsMap.vue", DESK]],
];
const FETCHED_ASSETS = /\.(mjs|woff2)$/; // fetched by the page's code (worker, font), not imported

/** The first paint's API requests, started at once with the stored session (src/first-paint.js). */
export function earlyRequests() {
  return `(function(){try{var f=${firstPaintRequests.toString()};var u=f(location,localStorage);`
    + "if(!u.length)return;var s=JSON.parse(localStorage.getItem('cityops.session'));"
    + "var h={Accept:'application/json',Authorization:'Bearer '+s.token};window.cityopsEarly={};var g=window.cityopsOverviewGate;"
    // After the map's drawing has begun to arrive (earlyOverview), like the scripts: not sharing the link with it.
    + "u.forEach(function(x){var r=g?g.then(function(){return fetch(x,{headers:h});}):fetch(x,{headers:h});"
    + "r.catch(function(){});window.cityopsEarly[x]=r;});}catch(e){}})();";
}

/**
 * The operations map's first view drawn by the server (src/overview.js), asked for before anything else and shown
 * as soon as it arrives. `window.cityopsOverviewGate` resolves when its answer has begun (or failed, or after 2.5 s):
 * the page's scripts (`window.cityopsGate`; when the entry is already in the browser's cache, once the drawing is
 * painted: those scripts then cost the main thread, not the link) and the live layers' first requests start then,
 * so that the drawing does not share the link with ~600 kB of them (a throttled link is shared evenly by the
 * requests in flight); their own round trip overlaps the drawing's transfer.
 */
export function earlyOverview(entry) {
  return `(function(){try{var f=${overviewRequest.toString()};var u=f(location,localStorage,innerWidth,innerHeight);`
    + "if(!u)return;var s=JSON.parse(localStorage.getItem('cityops.session'));"
    + "var done,shown=new Promise(function(ok){done=ok;});setTimeout(done,2500);"
    + "var r=fetch(u,{headers:{Authorization:'Bearer '+s.token}});"
    + "var o=new Promise(function(ok){r.then(ok,ok);setTimeout(ok,2500);});window.cityopsOverviewGate=o;"
    // Scripts already in the browser's cache take nothing from the link but the main thread: they start once the
    // drawing is painted. Scripts from the network start when its answer has begun.
    + `var c=fetch('/${entry}',{cache:'only-if-cached',mode:'same-origin'});`
    + "window.cityopsGate=new Promise(function(ok){c.then(function(x){(x.ok?shown:o).then(ok);},function(){o.then(ok);});});"
    + "r.then(function(x){if(!x.ok)throw 0;return x.text();}).then(function(t){function show(){"
    + "if(window.cityopsMapDrawn||location.pathname!=='/'){done();return;}var d=document.createElement('div');d.id='overview';"
    + "d.setAttribute('aria-hidden','true');d.style.cssText='position:fixed;left:0;right:0;bottom:0;top:52px;z-index:1;"
    + "pointer-events:none;overflow:hidden;background:#0d1d30';d.innerHTML=t;document.body.appendChild(d);"
    + "requestAnimationFrame(function(){setTimeout(done,0);});}"
    + "if(document.body)show();else document.addEventListener('DOMContentLoaded',show);}).catch(function(){done();});"
    + "}catch(e){}})();";
}

/** `script` right after the page's charset, before any stylesheet: a script after a stylesheet waits until it has loaded. */
export function withEarlyScript(html, script) {
  const charset = '<meta charset="utf-8">';
  if (!html.includes(charset)) throw new Error(`first-paint preload: the page lost its ${charset}`);
  return html.replace(charset, `${charset}\n  <script>${script}</script>`);
}

/** Brotli and gzip copies of every compressible file, made once at the highest levels: the server sends the one the
 * browser accepts (cityops/web/routes.py, BuildFiles) and compresses nothing per request. */
export function precompressed() {
  return compression({
    algorithms: [defineAlgorithm("brotliCompress"), defineAlgorithm("gzip", { level: 9 })],
    include: /\.(html|css|js|mjs|json|svg|webmanifest|txt)$/,
    threshold: 1024,
    logLevel: "silent",
  });
}

// The catalogue's messages are compiled by src/i18n-compile.js: vue-i18n's general compiler stays out of the build
// (not in tests, where test/i18n.test.js checks our compiler against it).
export const DEFINE = process.env.VITEST ? {} : { __INTLIFY_DROP_MESSAGE_COMPILER__: "true" };

/**
 * The preload table of FIRST_PAINT_PAGES and a few lines in index.html that apply it for the path opened, after
 * starting the first paint's API requests (src/first-paint.js).
 */
function firstPaintPreload() {
  return {
    name: "cityops-first-paint-preload",
    apply: "build",
    transformIndexHtml: {
      order: "post",
      handler(html, { bundle }) {
        const chunks = Object.values(bundle).filter((c) => c.type === "chunk");
        const entry = chunks.find((c) => c.isEntry);
        const loaded = new Set([entry.fileName, ...entry.imports]); // Vite preloads these itself
        const table = FIRST_PAINT_PAGES.map(([prefix, modules]) => {
          const files = [];
          const seen = new Set();
          const visit = (c) => {
            if (seen.has(c.fileName) || loaded.has(c.fileName)) return;
            seen.add(c.fileName);
            files.push(c.fileName);
            for (const css of c.viteMetadata.importedCss) if (!files.includes(css)) files.push(css);
            for (const asset of c.viteMetadata.importedAssets) if (FETCHED_ASSETS.test(asset)) files.push(asset);
            for (const name of c.imports) visit(bundle[name]);
          };
          for (const page of modules) {
            const chunk = chunks.find((c) => c.facadeModuleId && c.facadeModuleId.endsWith(page));
            if (!chunk) throw new Error(`first-paint preload: no chunk for ${page}; keep FIRST_PAINT_PAGES in step with src/router.js`);
            visit(chunk);
          }
          return [prefix, files];
        });
        // The entry script is started by the lines below (after the map's drawing has begun to arrive, see
        // earlyOverview), not by its tag.
        const tag = new RegExp(`<script type="module" crossorigin src="/${entry.fileName.replace(/[.]/g, "[.]")}"></script>\\s*`);
        if (!tag.test(html)) throw new Error("first-paint preload: the entry's script tag is not where it was");
        html = html.replace(tag, "");
        const script = `(function(){function go(){var t=${JSON.stringify(table)},p=location.pathname;for(var i=0;i<t.length;i++){`
          + "var x=t[i][0];if(x==='/'?p!=='/':p.indexOf(x)!==0)continue;t[i][1].forEach(function(f){"
          + "var l=document.createElement('link'),e=f.slice(f.lastIndexOf('.')+1);l.href='/'+f;"
          + "if(e==='js'){l.rel='modulepreload';}else{l.rel='preload';l.crossOrigin='anonymous';"
          + "l.as=e==='css'?'style':'fetch';}document.head.appendChild(l);});break;}"
          + `var k=document.createElement('link');k.rel='modulepreload';k.href='/${entry.fileName}';document.head.appendChild(k);`
          + `var m=document.createElement('script');m.type='module';m.crossOrigin='';m.src='/${entry.fileName}';`
          + "function run(){document.head.appendChild(m);}"
          + "if(document.readyState==='loading')document.addEventListener('DOMContentLoaded',run);else run();}"
          + "if(window.cityopsGate)window.cityopsGate.then(go);else go();})();";
        return withEarlyScript(html, earlyOverview(entry.fileName) + earlyRequests() + script);
      },
    },
  };
}

export default defineConfig({
  root: here,
  base: "/",
  plugins: [
    messageCatalogue(),
    vue(),
    Components({ resolvers: [ElementPlusResolver({ importStyle: "css" })], dts: false }),
    apiDocsAssets(),
    firstPaintPreload(),
    precompressed(),
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
        // Web Push: the push and notificationclick handlers (public/push-sw.js).
        importScripts: ["/push-sw.js"],
      },
    }),
  ],
  define: DEFINE,
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
