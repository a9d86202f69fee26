// The one API client of the web app: JSON in and out, the login token as a header (never in a URL), the
// server's error answers ({error, message, details, request_id}) as ApiError, and one function that turns any
// failure into a message in the user's language.
import { t, tOr } from "../i18n.js";

export class ApiError extends Error {
  constructor({ status, code, message, details = null, requestId = null }) {
    super(message || code);
    this.name = "ApiError";
    this.status = status; // 0: the request never got an answer (network)
    this.code = code;
    this.details = details;
    this.requestId = requestId;
  }
}

const hooks = { token: () => null, unauthorized: () => {} };

/** The session module tells the client where the token is and what to do when the server stops accepting it. */
export function configureClient({ token, onUnauthorized }) {
  if (token) hooks.token = token;
  if (onUnauthorized) hooks.unauthorized = onUnauthorized;
}

export function authHeaders() {
  const token = hooks.token();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export function buildUrl(path, params) {
  if (!params) return path;
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === "") continue;
    query.set(key, Array.isArray(value) ? value.join(",") : String(value));
  }
  const text = query.toString();
  return text ? `${path}${path.includes("?") ? "&" : "?"}${text}` : path;
}

/**
 * The answer to a GET that index.html started before the app's code arrived (src/first-paint.js), taken once: the
 * page's own first request for the same address uses it instead of asking again.
 */
export function takeEarly(url) {
  const early = typeof window !== "undefined" && window.cityopsEarly;
  if (!early || !early[url]) return null;
  const answer = early[url];
  delete early[url];
  return answer;
}

const STATUS_CODES = { 400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 409: "conflict",
  413: "payload_too_large", 422: "invalid_input", 429: "busy", 503: "busy" };

/**
 * One request. `json` is sent as JSON, `form` (FormData) as multipart; `raw: true` returns the Response (for
 * files). Answers 204 → null, JSON → the parsed body, anything else → its text.
 */
export async function request(method, path, { params, json, form, signal, raw = false, headers = {}, auth = true } = {}) {
  const init = { method, signal, headers: { Accept: "application/json", ...(auth ? authHeaders() : {}), ...headers } };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  let response;
  const url = buildUrl(path, params);
  try {
    const early = method === "GET" && auth && !signal && !raw ? takeEarly(url) : null;
    response = early ? await early.catch(() => fetch(url, init)) : await fetch(url, init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError({ status: 0, code: "network", message: String(err && err.message) });
  }
  if (response.ok && raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  let body = null;
  try {
    body = type.includes("json") ? await response.json() : await response.text();
  } catch {
    body = null;
  }
  if (response.ok) return body;
  const error = new ApiError({
    status: response.status,
    code: (body && body.error) || STATUS_CODES[response.status] || (response.status >= 500 ? "server" : "bad_request"),
    message: (body && body.message) || `HTTP ${response.status}`,
    details: body && body.details,
    requestId: (body && body.request_id) || response.headers.get("x-request-id"),
  });
  if (response.status === 401 && auth && hooks.token()) hooks.unauthorized(error);
  throw error;
}

export const api = {
  get: (path, options) => request("GET", path, options),
  post: (path, json, options) => request("POST", path, { ...options, json: json ?? {} }),
  put: (path, json, options) => request("PUT", path, { ...options, json }),
  patch: (path, json, options) => request("PATCH", path, { ...options, json }),
  delete: (path, options) => request("DELETE", path, options),
  form: (path, form, options) => request("POST", path, { ...options, form }),
};

/** Every page of a paged list ({total, items}), `pageSize` at a time, up to `max` items. */
export async function getAll(path, { params = {}, pageSize = 1000, max = 20000 } = {}) {
  const items = [];
  for (let offset = 0; offset < max;) {
    const body = await request("GET", path, { params: { ...params, limit: pageSize, offset } });
    items.push(...body.items);
    offset += body.items.length;
    if (!body.items.length || body.total == null || offset >= body.total) break;
  }
  return items;
}

/** Whether a failure is worth retrying later (no answer, or the server busy or failing), as opposed to a refusal. */
export function isTransient(error) {
  return !(error instanceof ApiError) || error.status === 0 || error.status === 408 || error.status === 429
    || error.status >= 500;
}

/** Any failure as a sentence in the user's language; never the server's English text alone. */
export function errorMessage(error) {
  if (!error) return "";
  if (error.name === "AbortError") return "";
  if (!(error instanceof ApiError)) return t("error.unexpected");
  if (error.status === 0) return t("error.network");
  const specific = tOr(`error.${error.code}`, null) && t(`error.${error.code}`, { status: error.status });
  if (specific) {
    const field = error.details && typeof error.details === "object" && !Array.isArray(error.details) && error.details.field;
    return field ? `${specific}（${tOr(`field.${field}`, field)}）` : specific;
  }
  if (error.status >= 500) return t("error.server", { status: error.status });
  return t("error.http", { status: error.status });
}
