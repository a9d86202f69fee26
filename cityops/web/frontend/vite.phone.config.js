// The phone command room's own build (run after vite.config.js's, into the same dist/): phone.html with its whole
// app inlined — one script and one stylesheet in the page, no other file before the first paint. On a poor
// connection ("Fast 3G": half a second per round trip, ~180 kB/s) a cold visit is then two round trips before the
// households show: the page, whose first lines ask for them (src/first-paint.js), and that answer; the script's
// transfer overlaps the answer's round trip instead of taking one of its own. The server sends phone.html for /phone
// (cityops/web/routes.py). Everything is in the one script (no lazily loaded chunk: a chunk would import the inlined
// entry again as a second copy of the app), so the page keeps out whatever it does not show: the desk pages and
// frame, the map, the charts. For a user with the session cookie the server also writes the households into the page
// (cityops/web/firstview.py, at the marker after <body>), before the app's styles and script at the end of the body:
// the list is painted from the page's first kilobytes, one round trip, while the rest of the page arrives.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import vue from "@vitejs/plugin-vue";
import Components from "unplugin-vue-components/vite";
import { ElementPlusResolver } from "unplugin-vue-components/resolvers";
import { defineConfig } from "vite";
import { DEFINE, earlyRequests, messageCatalogue, precompressed, withEarlyScript } from "./vite.config.js";

const here = dirname(fileURLToPath(import.meta.url));
/** Where the server writes the first view (cityops/web/firstview.py MARKER). */
const FIRST_VIEW_MARKER = "<!--cityops-first-view-->";

/** The entry's script and stylesheet written into phone.html, and removed as files. */
function inlineIntoPage() {
  return {
    name: "cityops-phone-inline",
    apply: "build",
    enforce: "post",
    generateBundle(_, bundle) {
      const page = bundle["phone.html"];
      let html = String(page.source);
      // The server writes the user's households here (cityops/web/firstview.py): before the inlined app, which
      // goes to the end of the body, so the list is painted from the page's first kilobytes while the rest arrives.
      if (!html.includes(FIRST_VIEW_MARKER)) throw new Error(`phone.html: the first view's marker ${FIRST_VIEW_MARKER} is gone`);
      let tail = "";
      for (const [name, file] of Object.entries(bundle)) {
        if (file.type === "chunk" && file.isEntry) {
          const tag = new RegExp(`<script type="module" crossorigin src="/${name.replace(/[.$]/g, "\\$&")}"></script>`);
          if (!tag.test(html)) throw new Error(`phone.html: no script tag for ${name}`);
          // A "</script" inside the code would end the element: written as "<\/script" (the same string in JS).
          html = html.replace(tag, "");
          // Vite fills its dynamic-import helper's placeholder only after this hook (with modulePreload off, as
          // `void 0`): left as it is, the inlined English catalogue's import() threw and the phone stayed in Chinese.
          const code = file.code.replaceAll("__VITE_PRELOAD__", "void 0");
          tail += `<script type="module">${code.replace(/<\/script/gi, "<\\/script")}</script>`;
          delete bundle[name];
        } else if (file.type === "chunk") {
          throw new Error(`phone.html: a second chunk (${name}) would load the inlined app again`);
        } else if (name.endsWith(".css")) {
          const tag = new RegExp(`<link rel="stylesheet" crossorigin href="/${name.replace(/[.$]/g, "\\$&")}">`);
          if (!tag.test(html)) throw new Error(`phone.html: no stylesheet link for ${name}`);
          html = html.replace(tag, "");
          tail = `<style>${String(file.source).replace(/<\/style/gi, "<\\/style")}</style>` + tail;
          delete bundle[name];
        }
      }
      if (!html.includes("</body>")) throw new Error("phone.html: no </body>");
      page.source = html.replace("</body>", () => `${tail}\n</body>`);
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
    { name: "cityops-phone-early-requests", apply: "build",
      transformIndexHtml: { order: "post", handler: (html) => withEarlyScript(html, earlyRequests()) } },
    inlineIntoPage(),
    precompressed(),
  ],
  define: DEFINE,
  build: {
    outDir: join(here, "..", "dist"),
    emptyOutDir: false, // beside the app's build
    sourcemap: false,
    chunkSizeWarningLimit: 1500,
    modulePreload: false,
    rollupOptions: {
      input: { phone: join(here, "phone.html") },
      output: { inlineDynamicImports: true },
    },
  },
});
