// The message compiler of the app's catalogue. Our messages are plain text with named placeholders ("{n} 户"),
// nothing else of vue-i18n's syntax (no plurals, links or literals; test/i18n.test.js holds every message to this
// and checks this compiler against vue-i18n's own). Written here so the entry script ships without vue-i18n's
// general compiler (~40 kB before compression, build flag __INTLIFY_DROP_MESSAGE_COMPILER__ in vite.config.js),
// which every page paid for before its first paint.

const PLACEHOLDER = /\{\s*(\w+)\s*\}/g;
const cache = new Map();

/** The text and placeholder parts of `message`: ["共 ", {name: "n"}, " 户"]. */
export function parseMessage(message) {
  const parts = [];
  let last = 0;
  for (const m of message.matchAll(PLACEHOLDER)) {
    if (m.index > last) parts.push(message.slice(last, m.index));
    parts.push({ name: m[1] });
    last = m.index + m[0].length;
  }
  if (last < message.length) parts.push(message.slice(last));
  return parts;
}

/** vue-i18n's `messageCompiler` option: a message function for a catalogue string. */
export function compileMessage(message) {
  if (typeof message !== "string") return () => "";
  let fn = cache.get(message);
  if (!fn) {
    const parts = parseMessage(message);
    fn = (ctx) => ctx.normalize(parts.map((p) => (typeof p === "string" ? p
      : ctx.interpolate(/^\d+$/.test(p.name) ? ctx.list(Number(p.name)) : ctx.named(p.name)))));
    cache.set(message, fn);
  }
  return fn;
}
