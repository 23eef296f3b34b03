// The care operator's work on one elder: the care circle (add, edit, retire a contact), the
// devices bound to the elder (bind, unbind), the emergency profile (admins: the API lets
// operators write no health data), the behaviour settings, and a home visit to record. Every
// form sends what was typed and shows the API's own errors next to the fields (forms.js).
import { api, el, fmtTime, t, toast } from "/app/static/app.js";
import { fill, form } from "/app/static/forms.js";

const TZ = "Asia/Shanghai";
const OFFSET = "+08:00"; // Asia/Shanghai keeps no summer time
const ROLES = ["child", "spouse", "relative", "work_unit", "neighbour", "community_worker", "volunteer", "guardian", "other"];
const BLOOD = ["unknown", "A+", "A-", "B+", "B-", "AB+", "AB-", "O+", "O-"];

function table(head, rows) {
  if (!rows.length) return el("p", { class: "muted" }, t("f.none"));
  return el("table", { class: "small" }, el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))));
}

function localNow() {
  const p = Object.fromEntries(new Intl.DateTimeFormat("en-CA", { timeZone: TZ, hourCycle: "h23", year: "numeric",
    month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" }).formatToParts(new Date()).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}`;
}

/** The section: a picker of elders and, for the one picked, its records' forms. `changed` is
 * called after a visit is recorded (the overdue list changes). */
export function elderRecords(session, changed) {
  const picker = el("select", { id: "pick-elder" }, el("option", { value: "" }, t("rec.pick")));
  const body = el("div", { id: "records-body", class: "grid2" });
  const node = el("section", { class: "card", id: "records" },
    el("h2", {}, t("rec.title"), " ", el("label", { for: "pick-elder", class: "visually-hidden" }, t("rec.pick")), picker), body);
  const state = { rid: null };
  api("/api/v1/residents?limit=200").then((page) => {
    for (const r of page.items) picker.append(el("option", { value: r.id }, r.name));
    if (state.rid) picker.value = state.rid;
  }).catch((e) => toast(e.message, "bad"));
  picker.addEventListener("change", () => { if (picker.value) open(picker.value); });

  async function open(rid, focus) {
    state.rid = rid;
    picker.value = rid;
    body.replaceChildren(el("p", { class: "muted" }, "…"));
    try {
      const [contacts, devices, behaviour, visits] = await Promise.all([
        api(`/api/v1/residents/${rid}/contacts`),
        api(`/api/v1/residents/${rid}/devices`),
        api(`/api/v1/residents/${rid}/behaviour`),
        api(`/api/v1/residents/${rid}/visits`),
      ]);
      body.replaceChildren(
        contactsCard(rid, contacts, () => open(rid)),
        devicesCard(rid, devices.items, () => open(rid)),
        visitCard(rid, visits, () => { changed(); open(rid, "visit"); }),
        behaviourCard(rid, behaviour),
        await profileCard(rid, session));
      if (focus === "visit") document.getElementById("visit-visitor")?.focus();
    } catch (e) {
      body.replaceChildren(el("p", { class: "bad", role: "alert" }, e.message));
    }
  }
  return { node, open };
}

function contactsCard(rid, contacts, reload) {
  const fields = [
    { name: "name", label: t("op.name") },
    { name: "role", label: t("rec.role"), options: ROLES.map((r) => [r, t("crole." + r)]) },
    { name: "priority", label: t("rec.priority"), type: "number", value: contacts.length + 1 },
    { name: "phones", label: t("f.phones"), type: "texts" },
    { name: "channel.url", label: t("rec.channel"), placeholder: t("rec.channel_hint") },
  ];
  let editing = null;
  const title = el("h3", {}, t("rec.add_contact"));
  const cancel = el("button", { type: "button", hidden: true }, t("rec.cancel"));
  const save = (b) => (editing
    ? api(`/api/v1/contacts/${editing}`, { method: "PATCH", body: b })
    : api(`/api/v1/residents/${rid}/contacts`, { method: "POST", body: b }));
  const f = form("contact", null, fields, t("op.save"), save, { extra: [cancel] });
  f.prepend(title);
  f.addEventListener("saved", reload);
  const edit = (c) => {
    editing = c.id;
    title.textContent = `${t("rec.edit_contact")} ${c.name}`;
    cancel.hidden = false;
    // The channel is shown masked (it holds tokens): left empty, it stays as it is.
    fill(f, fields, { ...c, channel: { url: "" } });
    f.elements.name.focus();
  };
  cancel.addEventListener("click", () => { editing = null; f.reset(); title.textContent = t("rec.add_contact"); cancel.hidden = true; });
  const retire = async (c) => {
    try { await api(`/api/v1/contacts/${c.id}`, { method: "DELETE" }); toast(t("act.done"), "ok"); reload(); }
    catch (e) { toast(e.message, "bad"); }
  };
  const active = contacts.filter((c) => c.status === "active");
  return el("section", { class: "card", id: "contacts" }, el("h3", {}, t("f.contacts")),
    table([t("rec.priority"), t("op.name"), t("rec.role"), t("f.phones"), ""], active.map((c) => [
      String(c.priority), c.name, t("crole." + c.role), c.phones.join(" "),
      el("span", {}, el("button", { type: "button", class: "small", "data-edit": c.id, onclick: () => edit(c) }, t("rec.edit")), " ",
         el("button", { type: "button", class: "small", "data-retire": c.id, onclick: () => retire(c) }, t("rec.retire")))])),
    f);
}

function devicesCard(rid, devices, reload) {
  const unbind = async (d) => {
    try {
      await api(`/api/v1/devices/${encodeURIComponent(d.device_id)}/binding`, { method: "PUT", body: { resident_id: null } });
      toast(t("act.done"), "ok");
      reload();
    } catch (e) { toast(e.message, "bad"); }
  };
  const f = form("bind", t("rec.bind"), [
    { name: "device_id", label: t("f.device") },
    { name: "gateway_id", label: t("rec.gateway") },
  ], t("rec.bind_button"), (b) => {
    const id = (b.device_id || "").trim();
    if (!id) return Promise.reject(Object.assign(new Error(t("rec.need_device")), { detail: [{ loc: ["device_id"], msg: t("rec.need_device") }] }));
    return api(`/api/v1/devices/${encodeURIComponent(id)}/binding`, { method: "PUT", body: { resident_id: rid, gateway_id: b.gateway_id } });
  });
  f.addEventListener("saved", reload);
  return el("section", { class: "card", id: "bindings" }, el("h3", {}, t("rec.devices")),
    table([t("f.device"), t("op.kind"), t("rec.status"), t("rec.gateway"), ""], devices.map((d) => [
      d.device_id, d.kind, d.status, d.gateway_id || "–",
      el("button", { type: "button", class: "small", "data-unbind": d.device_id, onclick: () => unbind(d) }, t("rec.unbind"))])),
    f);
}

function visitCard(rid, visits, changed) {
  const f = form("visit", t("rec.visit"), [
    { name: "visited_at", label: t("rec.visited_at"), type: "datetime", tz: OFFSET, value: localNow() },
    { name: "visitor", label: t("rec.visitor") },
    { name: "visitor_role", label: t("rec.visitor_role"), options: ["community_worker", "doctor", "nurse", "volunteer", "other"].map((r) => [r, t("vrole." + r)]) },
    { name: "kind", label: t("op.kind"), options: ["home", "phone", "video", "clinic"].map((k) => [k, t("vkind." + k)]) },
    { name: "notes", label: t("rec.notes") },
    { name: "follow_up_on", label: t("rec.follow_up_on"), type: "date" },
    { name: "follow_up", label: t("rec.follow_up") },
  ], t("op.save"), (b) => api(`/api/v1/residents/${rid}/visits`, { method: "POST", body: b }));
  f.addEventListener("saved", changed);
  return el("section", { class: "card", id: "visits-of-elder" }, f,
    el("h3", {}, t("rec.last_visits")),
    table([t("rec.visited_at"), t("rec.visitor"), t("op.kind")], visits.slice(0, 5).map((v) => [
      fmtTime(v.visited_at, TZ), `${v.visitor} (${t("vrole." + v.visitor_role)})`, t("vkind." + v.kind)])));
}

function behaviourCard(rid, settings) {
  const fields = [
    { name: "lives_alone", label: t("beh.lives_alone"), options: [["", t("beh.by_flag")], ["true", t("beh.yes")], ["false", t("beh.no")]] },
    { name: "day_start", label: t("beh.day_start"), type: "time" },
    { name: "day_end", label: t("beh.day_end"), type: "time" },
    { name: "max_inactive_min", label: t("beh.max_inactive"), type: "number" },
    { name: "night_start", label: t("beh.night_start"), type: "time" },
    { name: "night_end", label: t("beh.night_end"), type: "time" },
    { name: "out_of_bed_min", label: t("beh.out_of_bed"), type: "number" },
    { name: "bed_empty_min", label: t("beh.bed_empty"), type: "number" },
  ];
  const f = form("behaviour", t("beh.title"), fields, t("op.save"),
    (b) => api(`/api/v1/residents/${rid}/behaviour`, { method: "PUT", body: { ...b, timezone: settings.timezone } }), { keep: true });
  const show = (s) => fill(f, fields, { ...s, lives_alone: s.lives_alone === null ? "" : String(s.lives_alone) });
  show(settings);
  f.addEventListener("saved", (ev) => show(ev.detail));
  return f;
}

async function profileCard(rid, session) {
  if (session.role !== "admin") {
    // Operators see no health data (docs/registry.md): the API would refuse and audit a read.
    return el("section", { class: "card", id: "profile" }, el("h3", {}, t("rec.profile")),
      el("p", { class: "muted small" }, t("rec.profile_not_yours")));
  }
  let profile = null;
  try { profile = await api(`/api/v1/residents/${rid}/profile?purpose=${encodeURIComponent("registry form")}`); }
  catch (e) { if (e.status !== 404) throw e; }
  const fields = [
    { name: "conditions", label: t("f.conditions"), type: "lines" },
    { name: "medications", label: t("f.medications"), type: "lines" },
    { name: "allergies", label: t("f.allergies"), type: "lines" },
    { name: "blood_type", label: t("f.blood"), options: BLOOD.map((b) => [b, b === "unknown" ? t("sex.unknown") : b]) },
    { name: "past_treatments", label: t("f.past"), type: "lines" },
    { name: "responder_notes.door_code", label: t("f.door_code") },
    { name: "responder_notes.mobility", label: t("f.mobility") },
    { name: "responder_notes.language", label: t("f.language") },
    { name: "responder_notes.hearing", label: t("f.hearing") },
    { name: "responder_notes.other", label: t("f.other") },
    { name: "verified", label: t("rec.verified"), type: "check" },
  ];
  const f = form("profile", `${t("rec.profile")}${profile ? ` · v${profile.version}` : ""}`, fields, t("op.save"), (b) => {
    const { verified, ...body } = b;
    body.responder_notes = body.responder_notes || {};
    body.extension = profile?.extension || {}; // the region's fields, kept (no form for them here)
    return api(`/api/v1/residents/${rid}/profile?verified=${verified ? "true" : "false"}`, { method: "PUT", body });
  }, { keep: true });
  if (profile) fill(f, fields, profile);
  f.addEventListener("saved", (ev) => { f.querySelector("h2").textContent = `${t("rec.profile")} · v${ev.detail.version}`; });
  return f;
}
