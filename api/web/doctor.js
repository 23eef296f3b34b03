// The family doctor's screen: the signed elders by risk; an elder's vitals over 24 h / 7 d /
// 30 d (per-minute aggregates for a day, per-hour beyond), NEWS2 over time, findings and alerts;
// the elder's NEWS2 settings (the charts the doctor changed, the SpO2 scale), audited.
import { api, el, fmtTime, ageOf, t, toast } from "/app/static/app.js";
import { lineChart } from "/app/static/chart.js";
import { fill, form } from "/app/static/forms.js";

export const TITLE = "screen.doctor";
const TZ = "Asia/Shanghai";
const RANGES = { "24h": [24, "minute"], "7d": [24 * 7, "hour"], "30d": [24 * 30, "hour"] };

export async function mount(main) {
  main.classList.add("doctor");
  const list = el("ul", { id: "elders", class: "queue", "aria-label": t("doctor.elders") });
  const detail = el("section", { id: "elder", class: "detail", "aria-live": "polite" },
    el("p", { class: "muted" }, t("doctor.pick")));
  main.append(el("div", { class: "split" },
    el("aside", { class: "card queue-card" }, el("h2", {}, t("doctor.elders")), list), detail));
  let rows = [];
  try { rows = await api("/api/v1/risk/residents"); } catch (e) { toast(e.message, "bad"); }
  if (!rows.length) list.append(el("li", { class: "muted" }, t("doctor.none")));
  for (const r of rows) {
    const bits = [];
    if (r.open_alerts) bits.push(`${t("doctor.alerts")} ${r.open_alerts}`);
    if (r.news2 !== null) bits.push(`NEWS2 ${r.news2}`);
    const quiet = !r.last_vitals_at || Date.now() - new Date(r.last_vitals_at).getTime() > 6 * 3600e3;
    if (quiet) bits.push(t("doctor.quiet"));
    list.append(el("li", {}, el("button", {
        type: "button", class: `qitem ${r.worst_alert ? "sev-" + r.worst_alert : ""}`, "data-resident": r.resident_id,
        onclick: () => { location.hash = `resident=${r.resident_id}`; } },
      el("b", {}, r.name), el("span", { class: "small" }, `${ageOf(r.birth_date)} ${t("f.age")}`),
      el("span", { class: r.worst_alert ? "bad small" : "muted small" }, bits.join(" · ") || t("doctor.calm")))));
  }
  const show = () => {
    const params = new URLSearchParams(location.hash.slice(1));
    const rid = params.get("resident");
    if (rid) openElder(detail, rid, params.get("range") || "24h");
    for (const b of list.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.resident === rid));
  };
  window.addEventListener("hashchange", show);
  show();
}

async function openElder(detail, rid, range) {
  detail.replaceChildren(el("p", { class: "muted" }, "…"));
  const [hours, resolution] = RANGES[range] || RANGES["24h"];
  try {
    const [resident, vitals, news2, findings, alerts, settings] = await Promise.all([
      api(`/api/v1/residents/${rid}`),
      api(`/api/v1/residents/${rid}/vitals?resolution=${resolution}&hours=${hours}`),
      api(`/api/v1/residents/${rid}/news2?hours=${hours}`),
      api(`/api/v1/residents/${rid}/findings?hours=${hours}&limit=50`),
      api(`/api/v1/alerts?resident_id=${rid}&limit=20`),
      api(`/api/v1/residents/${rid}/news2/settings`),
    ]);
    const to = new Date(), from = new Date(to.getTime() - hours * 3600e3);
    const at = vitals.map((b) => new Date(b.bucket));
    const pts = (k) => vitals.map((b, i) => [at[i], b[k]]);
    const opts = (title, unit, lines = []) => ({ title, unit, from, to, tz: TZ, lines });
    const ranges = el("div", { class: "ranges", role: "group", "aria-label": t("doctor.range") },
      Object.keys(RANGES).map((k) => el("button", { type: "button", class: k === range ? "primary" : "",
        "aria-pressed": String(k === range), "data-range": k,
        onclick: () => { location.hash = `resident=${rid}&range=${k}`; } }, t("doctor.r" + k))));
    const charts = el("div", { class: "charts", id: "charts" },
      lineChart([{ name: "heart_rate", points: pts("heart_rate") }],
        { ...opts(t("v.heart_rate"), "/min", [{ value: 50 }, { value: 110, cls: "hi" }]),
          band: vitals.filter((b) => b.heart_rate_min !== null).map((b) => [new Date(b.bucket), b.heart_rate_min, b.heart_rate_max]) }),
      lineChart([{ name: "spo2", points: pts("spo2") }], opts(t("v.spo2"), "%", [{ value: 92, cls: "hi" }])),
      lineChart([{ name: "resp_rate", points: pts("resp_rate") }], opts(t("v.resp_rate"), "/min", [{ value: 21, cls: "hi" }])),
      lineChart([{ name: "temperature", points: pts("temperature") }], opts(t("v.temperature"), "°C", [{ value: 38.0, cls: "hi" }])),
      lineChart([{ name: "systolic", points: pts("systolic") }, { name: "diastolic", points: pts("diastolic"), cls: "second" }],
        opts(`${t("v.systolic")} / ${t("v.diastolic")}`, "mmHg", [{ value: 90, cls: "hi" }])),
      lineChart([{ name: "news2", points: news2.map((p) => [new Date(p.at), p.score]), dots: true }],
        opts("NEWS2", "", [{ value: 5 }, { value: 7, cls: "hi" }])));
    detail.replaceChildren(
      el("header", { class: "who" }, el("h2", { id: "elder-name" }, resident.name),
         el("span", { class: "big" }, `${ageOf(resident.birth_date)} ${t("f.age")} · ${t("sex." + resident.sex)}`),
         el("span", { class: "muted small" }, `${t("doctor.source")} ${resolution === "minute" ? t("doctor.per_minute") : t("doctor.per_hour")} · ${vitals.length}`),
         el("a", { id: "fhir-link", class: "small", href: `/api/v1/residents/${rid}/fhir`, target: "_blank", rel: "noopener" }, t("doctor.fhir"))),
      ranges, charts,
      el("div", { class: "grid2" },
        el("section", { class: "card" }, el("h3", {}, t("doctor.findings")),
          findings.length ? el("ul", { class: "plain small", id: "findings" }, findings.map((f) =>
            el("li", {}, `${fmtTime(f.ts, TZ)} · ${f.kind} · ${f.severity}${f.evidence.score !== undefined ? " · " + f.evidence.score : ""}`)))
          : el("p", { class: "muted" }, t("f.none"))),
        el("section", { class: "card" }, el("h3", {}, t("doctor.alerts")),
          alerts.length ? el("ul", { class: "plain small", id: "alerts" }, alerts.map((a) =>
            el("li", {}, `${fmtTime(a.first_at, TZ)} · ${t("kind." + a.kind)} · ${t("state." + a.state)}`)))
          : el("p", { class: "muted" }, t("f.none")))),
      news2Form(rid, settings));
  } catch (e) {
    detail.replaceChildren(el("p", { class: "bad", role: "alert", id: "refused" }, e.message));
  }
}

const CHARTS = ["respiration_rate", "spo2_scale1", "spo2_scale2_air", "spo2_scale2_oxygen", "systolic_bp", "pulse", "temperature"];

/** The elder's NEWS2 settings: per chart its band starts and scores (the RCP chart until the
 * doctor changes it), the SpO2 scale, a note. Saved with PUT .../news2/settings (audited). */
function news2Form(rid, settings) {
  // Two columns: the scale and the note, then each chart on a line of its own.
  const fields = [
    { name: "spo2_scale", label: t("news2.scale"), options: [["1", t("news2.scale1")], ["2", t("news2.scale2")]] },
    { name: "note", label: t("news2.note") },
    ...CHARTS.flatMap((c) => [
      { name: `${c}.starts`, label: `${t("news2." + c)} · ${t("news2.starts")}`, type: "list" },
      { name: `${c}.scores`, label: `${t("news2." + c)} · ${t("news2.scores")}`, type: "list" },
    ]),
  ];
  const status = el("p", { class: "muted small", id: "news2-status" });
  const show = (s) => {
    status.textContent = s.stored
      ? `${t("news2.changed")} ${s.changed.map((c) => t("news2." + c)).join("、") || t("news2.none")} · ${s.updated_by} · ${fmtTime(s.updated_at, TZ)}`
      : t("news2.rcp");
  };
  const put = (body) => api(`/api/v1/residents/${rid}/news2/settings`, { method: "PUT", body: { ...body, spo2_scale: Number(body.spo2_scale) } });
  const reset = el("button", { type: "button", id: "news2-reset" }, t("news2.reset"));
  const node = form("news2", t("news2.title"), fields, t("op.save"), put, { keep: true, extra: [reset] });
  node.insertBefore(status, node.children[1]);
  node.classList.add("wide");
  fill(node, fields, { ...settings, spo2_scale: String(settings.spo2_scale) });
  show(settings);
  node.addEventListener("saved", (ev) => { fill(node, fields, { ...ev.detail, spo2_scale: String(ev.detail.spo2_scale) }); show(ev.detail); });
  reset.addEventListener("click", async () => {
    try {
      const s = await put({ spo2_scale: 1, note: node.elements.note.value.trim() });
      fill(node, fields, { ...s, spo2_scale: "1" });
      show(s);
      toast(t("act.done"), "ok");
    } catch (e) { toast(e.message, "bad"); }
  });
  return node;
}
