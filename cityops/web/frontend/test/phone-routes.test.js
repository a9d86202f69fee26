import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const read = (path) => readFileSync(new URL(`../src/${path}`, import.meta.url), "utf8");

describe("the phone's own page (phone-main.js)", () => {
  it("names every app page its components link to by name, or the link would fail to render", () => {
    const main = read("phone-main.js");
    const known = new Set(["phone", ...[...main.matchAll(/elsewhere\("[^"]+", "([^"]+)"\)/g)].map((m) => m[1])]);
    // The components of the phone's page that link by route name (router-link :to / router.push/replace).
    const files = ["pages/Phone.vue", "phone/HouseholdsTab.vue", "phone/ReportTab.vue", "phone/TasksTab.vue",
      "notify/InboxBell.vue", "notify/InboxSheet.vue", "frame.js", "access.js"];
    const linked = new Set(files.flatMap((f) => [...read(f).matchAll(/(?:to="\{|push\(\{|replace\(\{|return \{)\s*name:\s*["']([a-z-]+)["']/g)].map((m) => m[1])));
    expect(linked.size).toBeGreaterThan(2);
    expect([...linked].filter((n) => !known.has(n))).toEqual([]);
  });
});
