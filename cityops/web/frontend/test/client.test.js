// Every failure the user sees is a sentence in their language.
import { describe, expect, it } from "vitest";
import { api, ApiError, buildUrl, errorMessage, isTransient } from "../src/api/client.js";
import { i18n, setLanguage } from "../src/i18n.js";

describe("error messages", () => {
  it("says what went wrong in 简体中文 and in English", async () => {
    i18n.global.locale.value = "zh-CN";
    expect(errorMessage(new ApiError({ status: 0, code: "network" }))).toBe("无法连接服务器，请检查网络后重试");
    expect(errorMessage(new ApiError({ status: 401, code: "unauthenticated" }))).toContain("用户名或密码错误");
    expect(errorMessage(new ApiError({ status: 500, code: "server" }))).toBe("服务器暂时无法处理（500），请稍后重试");
    expect(errorMessage(new ApiError({ status: 502, code: "bad_gateway" }))).toContain("502");
    expect(errorMessage(new ApiError({ status: 409, code: "conflict" }))).toBe("状态已变化，请刷新后重试");
    expect(errorMessage(new ApiError({ status: 422, code: "invalid_input", details: { field: "lon" } }))).toContain("提交的内容有误");
    expect(errorMessage(new TypeError("x"))).toBe("页面出现意外错误，请刷新后重试");
    await setLanguage("en"); // its messages are a module of their own, loaded when chosen
    expect(errorMessage(new ApiError({ status: 503, code: "busy" }))).toBe("The system is busy; please try again shortly");
    expect(errorMessage(new ApiError({ status: 500, code: "server" }))).toMatch(/^The server could not handle this \(500\)/);
    i18n.global.locale.value = "zh-CN";
  });

  it("tells a failure to retry from a refusal", () => {
    expect(isTransient(new ApiError({ status: 0, code: "network" }))).toBe(true);
    expect(isTransient(new ApiError({ status: 503, code: "busy" }))).toBe(true);
    expect(isTransient(new ApiError({ status: 409, code: "conflict" }))).toBe(false);
    expect(isTransient(new ApiError({ status: 403, code: "forbidden" }))).toBe(false);
  });

  it("builds query strings without empty parameters", () => {
    expect(buildUrl("/api/x", { a: 1, b: "", c: null, d: ["p", "q"] })).toBe("/api/x?a=1&d=p%2Cq");
    expect(buildUrl("/api/x?z=1", { a: 2 })).toBe("/api/x?z=1&a=2");
  });
});

describe("answers started by index.html", () => {
  it("are taken once by the page's first request for the same address, then the network again", async () => {
    const calls = [];
    const json = (body) => new Response(JSON.stringify(body), { headers: { "content-type": "application/json" } });
    globalThis.window = { cityopsEarly: { "/api/incidents?status=active": Promise.resolve(json([{ id: 1 }])) } };
    const realFetch = globalThis.fetch;
    globalThis.fetch = async (url) => { calls.push(url); return json([{ id: 2 }]); };
    try {
      expect(await api.get("/api/incidents", { params: { status: "active" } })).toEqual([{ id: 1 }]);
      expect(calls).toEqual([]);
      expect(await api.get("/api/incidents", { params: { status: "active" } })).toEqual([{ id: 2 }]);
      expect(calls).toEqual(["/api/incidents?status=active"]);
      // An early request that failed is asked again.
      window.cityopsEarly["/api/shelters"] = Promise.reject(new TypeError("offline"));
      expect(await api.get("/api/shelters")).toEqual([{ id: 2 }]);
    } finally {
      globalThis.fetch = realFetch;
      delete globalThis.window;
    }
  });
});
