// Copies the browser libraries the map page needs from node_modules into cityops/web/static/vendor/.
// Run with `npm ci && npm run vendor`. The page never loads anything from a CDN at run time.
import { copyFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const target = join(here, "..", "static", "vendor");

// [package, file inside the package, name in vendor/]
const FILES = [
  // MapLibre GL 6 ships ES modules only; the main module loads its worker from the same folder.
  ["maplibre-gl", "dist/maplibre-gl.mjs", "maplibre-gl.mjs"],
  ["maplibre-gl", "dist/maplibre-gl-worker.mjs", "maplibre-gl-worker.mjs"],
  ["maplibre-gl", "dist/maplibre-gl.css", "maplibre-gl.css"],
  ["maplibre-gl", "LICENSE.txt", "maplibre-gl.LICENSE.txt"],
  ["echarts", "dist/echarts.min.js", "echarts.min.js"],
  ["echarts", "LICENSE", "echarts.LICENSE.txt"],
];

mkdirSync(target, { recursive: true });
const versions = {};
for (const [pkg, file, name] of FILES) {
  const source = join(modules, pkg, file);
  if (!existsSync(source)) {
    console.error(`missing ${source}: run 'npm ci' in ${here} first`);
    process.exit(1);
  }
  copyFileSync(source, join(target, name));
  versions[pkg] = JSON.parse(readFileSync(join(modules, pkg, "package.json"), "utf8")).version;
  console.log(`vendor/${name} <- ${pkg}/${file}`);
}
console.log(`versions: ${Object.entries(versions).map(([k, v]) => `${k}@${v}`).join(", ")}`);
