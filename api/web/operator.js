// The care operator's screen: devices that need a visit or a charge, profiles not verified for
// N months, open alerts past their first escalation, and the registry's forms (a new elder, a
// new device) with the API's own validation errors shown next to each field.
import { api, el, fmtTime, t, toast } from "/app/static/app.js";

export const TITLE = "screen.operator";
const TZ = "Asia/Shanghai";

export async function mount(main) {
  main.classList.add("operator");
  const devices = el("section", { class: "card", id: "devices" }, el("h2", {}, t("op.devices")));
  const months = el("input", { id: "months", type: "number", min: 0, max: 240, value: 12, class: "short" });
  const profiles = el("section", { class: "card", id: "profiles" },
    el("h2", {}, t("op.profiles"), " ", el("label", { for: "months", class: "small" }, t("op.months")), months));
  const overdue = el("section", { class: "card", id: "overdue" }, el("h2", {}, t("op.overdue")));
  main.append(el("div", { class: "grid3" }, devices, profiles, overdue),
              el("div", { class: "grid2" }, residentForm(), deviceForm()));
  months.addEventListener("change", () => loadProfiles(profiles, months.value));
  await Promise.all([loadDevices(devices), loadProfiles(profiles, months.value), loadOverdue(overdue)]);
}

function table(head, rows) {
  if (!rows.length) return el("p", { class: "muted" }, t("f.none"));
  return el("table", { class: "small" }, el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))));
}

async function loadDevices(box) {
  const rows = await api("/api/v1/operations/devices").catch((e) => { toast(e.message, "bad"); return []; });
  box.querySelector("table, p")?.remove();
  box.append(table([t("f.device"), t("op.elder"), t("op.why"), t("op.seen"), t("op.battery")],
    rows.map((d) => [d.device_id, d.resident_name || "–", d.reasons.map((r) => t("op." + r)).join("、"),
                     d.last_seen ? fmtTime(d.last_seen, TZ) : t("op.never"),
                     d.battery_pct === null ? "–" : `${Math.round(d.battery_pct)}%`])));
}

async function loadProfiles(box, months) {
  const rows = await api(`/api/v1/profiles/unverified?months=${encodeURIComponent(months)}`)
    .catch((e) => { toast(e.message, "bad"); return []; });
  box.querySelector("table, p")?.remove();
  box.append(table([t("op.elder"), t("f.profile_version"), t("f.verified")],
    rows.map((p) => [p.name, p.version ?? t("op.noprofile"), p.last_verified_at ? fmtTime(p.last_verified_at, TZ) : t("op.never")])));
}

async function loadOverdue(box) {
  const queue = await api("/api/v1/alerts/live").catch((e) => { toast(e.message, "bad"); return []; });
  const rows = queue.filter((q) => q.alert.state === "open" && q.alert.tier > 0);
  box.append(table([t("op.elder"), t("op.kind"), t("f.since"), t("op.tier")],
    rows.map((q) => [q.resident_name || q.alert.device_id, t("kind." + q.alert.kind), fmtTime(q.alert.first_at, TZ), String(q.alert.tier)])));
}

/** A form whose fields are named by the API's body keys (dots for nested ones). */
function form(id, title, fields, submit, onSubmit) {
  const node = el("form", { id, class: "card form", novalidate: true }, el("h2", {}, title));
  for (const f of fields) {
    const input = f.options
      ? el("select", { id: `${id}-${f.name}`, name: f.name }, f.options.map(([v, label]) => el("option", { value: v }, label)))
      : el("input", { id: `${id}-${f.name}`, name: f.name, type: f.type || "text", autocomplete: "off" });
    node.append(el("div", { class: "row" },
      el("label", { for: `${id}-${f.name}` }, f.label), input,
      el("span", { class: "field-error bad small", id: `${id}-${f.name}-error`, "data-field": f.name, role: "alert" })));
  }
  const general = el("p", { class: "bad small form-error", role: "alert" });
  node.append(general, el("button", { type: "submit", class: "primary" }, submit));
  node.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    node.querySelectorAll(".field-error").forEach((e) => { e.textContent = ""; });
    node.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
    general.textContent = "";
    const values = {};
    for (const f of fields) {
      const v = node.elements[f.name].value.trim();
      if (v === "") continue;
      const path = f.name.split(".");
      let at = values;
      for (const p of path.slice(0, -1)) at = at[p] = at[p] || {};
      at[path[path.length - 1]] = f.type === "number" ? Number(v) : v;
    }
    try {
      await onSubmit(values);
      toast(t("act.done"), "ok");
      node.reset();
    } catch (e) {
      showErrors(node, id, e, general);
    }
  });
  return node;
}

/** FastAPI's 422: [{loc: ["body", "address", "lat"], msg}, ...] lands next to its field. */
function showErrors(node, id, error, general) {
  const detail = Array.isArray(error.detail) ? error.detail : [{ loc: [], msg: error.message }];
  for (const d of detail) {
    const loc = (d.loc || []).filter((p) => p !== "body");
    let target = null;
    for (let n = loc.length; n > 0 && !target; n -= 1) {
      const key = loc.slice(0, n).join(".");
      // The field itself, else the first field inside it (an error of the whole address).
      target = node.querySelector(`.field-error[data-field="${key}"]`)
        || node.querySelector(`.field-error[data-field^="${key}."]`);
    }
    if (target) {
      target.textContent = (target.textContent ? target.textContent + " " : "") + d.msg;
      document.getElementById(target.id.replace(/-error$/, ""))?.setAttribute("aria-invalid", "true");
    } else {
      general.textContent += (general.textContent ? " " : "") + `${loc.join(".")}${loc.length ? ": " : ""}${d.msg}`;
    }
  }
  node.querySelector("[aria-invalid]")?.focus();
}

function residentForm() {
  return form("new-elder", t("op.new_elder"), [
    { name: "name", label: t("op.name") },
    { name: "sex", label: t("op.sex"), options: ["female", "male", "other", "unknown"].map((s) => [s, t("sex." + s)]) },
    { name: "birth_date", label: t("op.birth"), type: "date" },
    { name: "mobile", label: t("op.mobile"), type: "tel" },
    { name: "landline", label: t("op.landline"), type: "tel" },
    { name: "address.text", label: t("f.address") },
    { name: "address.lat", label: t("op.lat"), type: "number" },
    { name: "address.lon", label: t("op.lon"), type: "number" },
  ], t("op.save"), (body) => api("/api/v1/residents", { method: "POST", body }));
}

function deviceForm() {
  return form("new-device", t("op.new_device"), [
    { name: "device_id", label: t("f.device") },
    { name: "kind", label: t("op.kind"), options: ["wristband", "pendant", "watch", "belt_clip", "bed_sensor", "hub", "sos_button"].map((k) => [k, k]) },
    { name: "resident_id", label: t("op.resident_id") },
    { name: "expected_interval_s", label: t("op.interval"), type: "number" },
  ], t("op.save"), (body) => api("/api/v1/devices", { method: "POST", body }));
}
