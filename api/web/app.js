// The screens of Anxin: one small application, no build step, no outside resources.
// Every screen reads and writes through the same HTTP API as any other client (/api/v1/...),
// signed in by the session cookie of POST /api/v1/session (api/sessions.py).
import { t, lang, setLang } from "/app/static/i18n.js";

export { t, lang };

const CLIENT_HEADER = { "X-Anxin-Client": "screens" };

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

/** Call the API; JSON in and out. Throws ApiError with the API's own detail. */
export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, cache: "no-store", credentials: "same-origin",
                 headers: { ...CLIENT_HEADER, ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const r = await fetch(path, init);
  if (r.status === 204) return null;
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) {
    if (r.status === 401 && !path.startsWith("/api/v1/session")) toLogin();
    throw new ApiError(r.status, data && data.detail !== undefined ? data.detail : data);
  }
  return data;
}

/** A date-time in 24-hour form in the elder's time zone ("2026-12-01 11:18:36"). */
export function fmtTime(iso, tz = "Asia/Shanghai", { date = true } = {}) {
  if (!iso) return "–";
  const d = new Date(iso);
  const parts = new Intl.DateTimeFormat("en-CA", {
    timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  }).formatToParts(d);
  const p = Object.fromEntries(parts.map((x) => [x.type, x.value]));
  const clock = `${p.hour}:${p.minute}:${p.second}`;
  return date ? `${p.year}-${p.month}-${p.day} ${clock}` : clock;
}

export function ageOf(birth, now = new Date()) {
  if (!birth) return null;
  const b = new Date(birth + "T00:00:00");
  let age = now.getFullYear() - b.getFullYear();
  const m = now.getMonth() - b.getMonth();
  if (m < 0 || (m === 0 && now.getDate() < b.getDate())) age -= 1;
  return age;
}

/** Build an element: el("p", {class: "x"}, "text", child). Text is never parsed as HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function toast(text, kind = "info") {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.className = "show " + kind;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.className = ""; }, 6000);
}

export function toLogin() {
  const back = location.pathname + location.search + location.hash;
  if (!location.pathname.startsWith("/app/login")) {
    location.assign("/app/login?next=" + encodeURIComponent(back));
  }
}

const SCREENS = {
  "/app/login": () => import("/app/static/login.js"),
  "/app/dispatch": () => import("/app/static/dispatch.js"),
  "/app/doctor": () => import("/app/static/doctor.js"),
  "/app/family": () => import("/app/static/family.js"),
  "/app/operator": () => import("/app/static/operator.js"),
};

async function start() {
  document.documentElement.lang = lang() === "zh" ? "zh-CN" : "en";
  const langButton = document.getElementById("lang");
  langButton.textContent = lang() === "zh" ? "English" : "中文";
  langButton.addEventListener("click", () => { setLang(lang() === "zh" ? "en" : "zh"); location.reload(); });
  const main = document.getElementById("main");
  main.replaceChildren();
  // A link with #token=... (as `anxin demo` prints) signs in and drops the token from the address.
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    const token = fragment.get("token");
    history.replaceState(null, "", location.pathname + location.search);
    try {
      await api("/api/v1/session", { method: "POST", headers: { Authorization: "Bearer " + token } });
    } catch (e) { toast(t("signin.failed") + " " + e.message, "bad"); }
  }
  const path = location.pathname.replace(/\/+$/, "") || "/app/login";
  const load = SCREENS[path];
  if (!load) { main.append(el("p", {}, t("app.unknown"))); return; }
  let session = null;
  if (path !== "/app/login") {
    try { session = await api("/api/v1/session"); } catch { toLogin(); return; }
    if (!session.screens.includes(path)) {
      main.append(el("p", { class: "bad", role: "alert" }, t("app.notyours")),
                  el("p", {}, el("a", { href: session.screens[0] }, t("app.home"))));
      return;
    }
    document.getElementById("who").textContent = `${session.name} · ${t("role." + session.role)}`;
    const nav = document.getElementById("screens");
    for (const s of session.screens.length > 1 ? session.screens : []) {
      nav.append(el("a", { href: s, "aria-current": s === path ? "page" : null }, t("screen." + (s.split("/").pop() || "console"))));
    }
    const out = document.getElementById("signout");
    out.hidden = false;
    out.textContent = t("signout");
    out.addEventListener("click", async () => {
      await api("/api/v1/session", { method: "DELETE" }).catch(() => null);
      location.assign("/app/login");
    });
  }
  const screen = await load();
  document.getElementById("screen-title").textContent = t(screen.TITLE);
  document.title = `安心 Anxin · ${t(screen.TITLE)}`;
  await screen.mount(main, session);
}

start();
