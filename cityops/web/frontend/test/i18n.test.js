// The one message catalogue: both languages have the same keys, every message is valid vue-i18n syntax with
// the same placeholders in both, and every key the code names exists.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { compile, createMessageContext } from "@intlify/core-base";
import { describe, expect, it } from "vitest";
import messages from "../../messages.json";
import { compileMessage } from "../src/i18n-compile.js";

const SRC = new URL("../src/", import.meta.url).pathname;
const files = (dir) => readdirSync(dir).flatMap((n) => {
  const p = join(dir, n);
  return statSync(p).isDirectory() ? files(p) : /\.(js|vue)$/.test(n) ? [p] : [];
});
const placeholders = (text) => [...text.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

describe("message catalogue", () => {
  const zh = messages["zh-CN"];
  const en = messages.en;

  it("has 简体中文 and English with the same keys and no empty message", () => {
    expect(Object.keys(messages).sort()).toEqual(["en", "zh-CN"]);
    expect(Object.keys(en).sort()).toEqual(Object.keys(zh).sort());
    for (const table of [zh, en]) for (const [k, v] of Object.entries(table)) expect(v, k).toMatch(/\S/);
  });

  it("compiles every message and uses the same placeholders in both languages", () => {
    for (const key of Object.keys(zh)) {
      for (const text of [zh[key], en[key]]) {
        const errors = [];
        compile(text, { onError: (e) => errors.push(e.message), warnHtmlMessage: false });
        expect(errors, `${key}: ${text}`).toEqual([]);
      }
      expect(placeholders(en[key]), key).toEqual(placeholders(zh[key]));
    }
  });

  it("holds only text and named placeholders, which the app's own compiler renders as vue-i18n's would", () => {
    for (const key of Object.keys(zh)) {
      for (const text of [zh[key], en[key]]) {
        // Nothing of the syntax our compiler leaves out (src/i18n-compile.js): plurals, links, literals, modifiers.
        expect(text.replace(/\{\s*\w+\s*\}/g, ""), `${key}: ${text}`).not.toMatch(/[{}|@$%]/);
        const named = Object.fromEntries(placeholders(text).map((p, i) => [p, `<${p}:${i}>`]));
        const theirs = compile(text, { warnHtmlMessage: false, onError: () => {} })(createMessageContext({ named }));
        expect(compileMessage(text)(createMessageContext({ named })), key).toBe(theirs);
      }
    }
    expect(compileMessage("共 {n} 户，{ name }")(createMessageContext({ named: { n: 3, name: "老沟湾" } }))).toBe("共 3 户，老沟湾");
  });

  it("has every key the code names", () => {
    const missing = [];
    for (const file of files(SRC)) {
      const text = readFileSync(file, "utf8");
      for (const m of text.matchAll(/\b(?:t|tOr|te)\(\s*["']([A-Za-z0-9_.-]+)["']/g)) if (!(m[1] in zh)) missing.push(`${m[1]} (${file})`);
      for (const m of text.matchAll(/titleKey:\s*["']([A-Za-z0-9_.]+)["']/g)) if (!(m[1] in zh)) missing.push(m[1]);
    }
    expect(missing).toEqual([]);
  });

  it("names every state, queue, action and level the screens show", () => {
    const families = {
      "tasks.state": ["to_move", "refused", "not_home", "moved", "with_relatives", "in_shelter", "returned"],
      "events.queue": ["to_accept", "to_file", "to_dispatch", "to_handle", "to_approve", "to_verify", "backlog", "closed", "void"],
      "events.action": ["accept", "file", "dispatch", "start", "close", "report"],
      "warning.level": ["red", "orange", "yellow", "blue", "none"],
      "layer": ["incidents", "risk_points", "alarms", "sensors", "cases", "shelters"],
      "base": ["relief", "contours", "water", "roads", "labels", "buildings", "grids"],
      "phone.tab": ["households", "report", "tasks"],
    };
    for (const [prefix, codes] of Object.entries(families)) for (const c of codes) expect(zh, `${prefix}.${c}`).toHaveProperty([`${prefix}.${c}`]);
  });

  it("keeps Chinese text Chinese: no Latin words inside the 简体中文 messages but names and units", () => {
    const allowed = /^(CSV|Excel|CAP|Open311|GNSS|API|HTTP|WebGL|JavaScript|km|m|A|B|C|D|I{1,3}|IV|mm)$/;
    const words = (v) => v.replace(/\{\w+\}/g, "").match(/[A-Za-z0-9]*[A-Za-z]{2,}[A-Za-z0-9]*/g) || [];
    const offenders = Object.entries(zh).filter(([, v]) => words(v).some((w) => !allowed.test(w)));
    expect(offenders).toEqual([]);
  });
});
