// The care operator's screen: devices that need a visit or a charge, profiles not verified for
// N months, open alerts past their first escalation, home visits overdue, the monthly report,
// an elder's records (care circle, devices, profile, behaviour settings, a visit to record:
// operator_elder.js) and the registry's forms for a new elder and a new device, with the API's
// own validation errors shown next to each field.
import { api, el, fmtTime, t, toast } from "/app/static/app.js";
import { form } from "/app/static/forms.js";
import { elderRecords } from "/app/static/operator_elder.js";

export const TITLE = "screen.operator";
const TZ = "Asia/Shanghai";

export async function mount(main, session) {
  main.classList.add("operator");
  const devices = el("section", { class: "card", id: "devices" }, el("h2", {}, t("op.devices")));
  const months = el("input", { id: "months", type: "number", min: 0, max: 240, value: 12, class: "short" });
  const profiles = el("section", { class: "card", id: "profiles" },
    el("h2", {}, t("op.profiles"), " ", el("label", { for: "months", class: "small" }, t("op.months")), months));
  const overdue = el("section", { class: "card", id: "overdue" }, el("h2", {}, t("op.overdue")));
  const visits = el("section", { class: "card", id: "due-visits" }, el("h2", {}, t("op.due_visits")));
  const records = elderRecords(session, () => loadVisits(visits, records));
  main.append(el("div", { class: "grid3" }, devices, profiles, overdue),
              el("div", { class: "grid2" }, visits, el("div", {}, await reportCard(), await rulesCard())),
              records.node,
              el("div", { class: "grid2" }, residentForm(), deviceForm()));
  months.addEventListener("change", () => loadProfiles(profiles, months.value));
  await Promise.all([loadDevices(devices), loadProfiles(profiles, months.value), loadOverdue(overdue),
                     loadVisits(visits, records)]);
}

/** Home visits due today or overdue (the plan of docs/care.md), most overdue first; "record"
 * opens the elder's visit form. */
async function loadVisits(box, records) {
  const today = fmtTime(new Date().toISOString(), TZ).slice(0, 10);
  const rows = (await api("/api/v1/visits/due?overdue_only=false").catch((e) => { toast(e.message, "bad"); return []; }))
    .filter((d) => d.due_on <= today);
  box.querySelector("table, p")?.remove();
  box.append(table([t("op.elder"), t("op.due_on"), t("op.overdue_days"), t("op.last_visit"), ""],
    rows.map((d) => [d.name, d.due_on, String(d.overdue_days), d.last_visit ? fmtTime(d.last_visit, TZ) : t("op.never"),
      el("button", { type: "button", class: "small", "data-visit": d.resident_id,
                     onclick: () => { records.open(d.resident_id, "visit"); records.node.scrollIntoView(); } }, t("op.record_visit"))])));
}

/** The monthly figures of a community as the printable page of the API (docs/care.md). */
async function reportCard() {
  const page = await api("/api/v1/communities?limit=200").catch(() => ({ items: [] }));
  const community = el("select", { id: "report-community" }, page.items.map((c) => el("option", { value: c.id }, c.name)));
  const now = new Date();
  const last = new Date(now.getFullYear(), now.getMonth() - 1, 1);
  const month = el("input", { id: "report-month", type: "month", value: `${last.getFullYear()}-${String(last.getMonth() + 1).padStart(2, "0")}` });
  const link = el("a", { id: "report-link", target: "_blank", rel: "noopener" }, t("op.report_open"));
  const csv = el("a", { id: "report-csv", download: "" }, "CSV");
  const update = () => {
    const q = `/api/v1/reports/monthly?community=${encodeURIComponent(community.value)}&month=${encodeURIComponent(month.value)}`;
    link.href = `${q}&format=html`;
    csv.href = `${q}&format=csv`;
  };
  for (const input of [community, month]) {
    input.addEventListener("change", update);
    input.addEventListener("input", update);
  }
  update();
  return el("section", { class: "card", id: "report" }, el("h2", {}, t("op.report")),
    el("div", { class: "form" },
      el("div", { class: "row" }, el("label", { for: "report-community" }, t("f.community")), community),
      el("div", { class: "row" }, el("label", { for: "report-month" }, t("op.month")), month)),
    el("p", {}, link, " · ", csv));
}

const FLAGS = ["empty_nest", "living_alone", "disabled", "semi_disabled", "dementia", "very_old", "extremely_poor",
               "low_income", "veteran", "bereaved_parent", "chronic_disease", "home_care_bed"];

/** How often each special population is visited (PUT /api/v1/visit-rules): monthly for the
 * plans' populations unless a rule says otherwise, everywhere or in one community. */
async function rulesCard() {
  const [rules, communities] = await Promise.all([
    api("/api/v1/visit-rules").catch(() => []),
    api("/api/v1/communities?limit=200").catch(() => ({ items: [] })),
  ]);
  const names = Object.fromEntries(communities.items.map((c) => [c.id, c.name]));
  const list = el("div", { id: "rules-list" });
  const show = (rows) => list.replaceChildren(table([t("op.flag"), t("op.every"), t("f.community")],
    rows.map((r) => [t("flag." + r.flag), String(r.every_months), r.community_id ? names[r.community_id] || r.community_id : t("op.everywhere")])));
  show(rules);
  const f = form("rule", null, [
    { name: "flag", label: t("op.flag"), options: FLAGS.map((x) => [x, t("flag." + x)]) },
    { name: "every_months", label: t("op.every"), type: "number", value: 1 },
    { name: "community_id", label: t("f.community"), options: [["", t("op.everywhere")], ...communities.items.map((c) => [c.id, c.name])] },
  ], t("op.save"), (b) => api("/api/v1/visit-rules", { method: "PUT", body: b }), { keep: true });
  f.addEventListener("saved", (ev) => show(ev.detail));
  return el("section", { class: "card", id: "rules" }, el("h2", {}, t("op.rules")), list, f);
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
