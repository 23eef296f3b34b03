// The 120 dispatcher's screen: the live queue (server-sent events), the emergency record of the
// selected alert, its timeline, the actions, and the caller-number lookup.
import { api, el, fmtTime, ageOf, t, toast } from "/app/static/app.js";
import { drawPlan } from "/app/static/plan.js";

export const TITLE = "screen.dispatch";

const state = { queue: [], selected: null, known: new Set(), first: true, audio: null, sound: true };
let queueArrived;
// Resolved by the stream's first queue: a lookup on opening waits for it (3 s at most).
const firstQueue = new Promise((resolve) => { queueArrived = resolve; });

function alertLabel(a) {
  return `${t("kind." + a.kind)} · ${t("state." + a.state)}`;
}

function beep() {
  if (!state.sound) return;
  try {
    state.audio = state.audio || new AudioContext();
    const ctx = state.audio;
    for (const [i, f] of [[0, 880], [1, 660], [2, 880]]) {
      const o = ctx.createOscillator();
      const g = ctx.createGain();
      o.frequency.value = f;
      g.gain.value = 0.2;
      o.connect(g).connect(ctx.destination);
      o.start(ctx.currentTime + i * 0.25);
      o.stop(ctx.currentTime + i * 0.25 + 0.2);
    }
  } catch { /* no audio device: the visual cue stays */ }
}

export async function mount(main) {
  const lookupInput = el("input", { id: "caller", type: "tel", inputmode: "tel", autocomplete: "off",
                                    placeholder: t("dispatch.caller"), "aria-label": t("dispatch.caller") });
  const lookupForm = el("form", { id: "lookup", class: "lookup", role: "search" },
    lookupInput, el("button", { type: "submit" }, t("dispatch.lookup")));
  const soundBox = el("input", { type: "checkbox", id: "sound", checked: true });
  soundBox.addEventListener("change", () => { state.sound = soundBox.checked; if (state.sound) beepTest(); });
  const status = el("span", { id: "live-status", class: "muted" }, "…");
  const banner = el("div", { id: "banner", role: "alert", hidden: true });
  const queueList = el("ul", { id: "queue", class: "queue", "aria-label": t("dispatch.queue") });
  const detail = el("section", { id: "detail", class: "detail", "aria-live": "polite" },
    el("p", { class: "muted" }, t("dispatch.pick")));
  main.classList.add("dispatch");
  main.append(
    el("div", { class: "toolbar" }, lookupForm,
       el("label", { class: "inline" }, soundBox, " ", t("dispatch.sound")), status,
       el("span", { class: "muted keys" }, t("keys"))),
    banner,
    el("div", { class: "split" },
       el("aside", { class: "card queue-card" }, el("h2", {}, t("dispatch.queue")), queueList),
       detail));

  function beepTest() { beep(); }

  lookupForm.addEventListener("submit", (ev) => { ev.preventDefault(); lookup(lookupInput.value.trim()); });
  document.addEventListener("keydown", (ev) => {
    const typing = ["INPUT", "TEXTAREA"].includes(document.activeElement.tagName);
    if (ev.key === "/" && !typing) { ev.preventDefault(); lookupInput.focus(); lookupInput.select(); }
    if ((ev.key === "ArrowDown" || ev.key === "ArrowUp") && !typing && state.queue.length) {
      ev.preventDefault();
      const i = state.queue.findIndex((q) => q.alert.id === state.selected);
      const next = ev.key === "ArrowDown" ? Math.min(state.queue.length - 1, i + 1) : Math.max(0, i - 1);
      select(state.queue[next].alert.id, true);
    }
    if (ev.altKey && state.selected) {
      const key = ev.code && ev.code.startsWith("Key") ? ev.code.slice(3).toLowerCase() : ev.key.toLowerCase();
      const action = { a: "acknowledge", d: "dispatched", r: "resolve", f: "false-alarm" }[key];
      if (action) { ev.preventDefault(); act(action); }
    }
  });

  function renderQueue() {
    queueList.replaceChildren();
    if (!state.queue.length) {
      queueList.append(el("li", { class: "muted" }, t("dispatch.empty")));
      return;
    }
    for (const item of state.queue) {
      const a = item.alert;
      const fresh = !state.known.has(a.id) && !state.first;
      const button = el("button", {
          type: "button", class: `qitem sev-${a.severity} st-${a.state}${fresh ? " fresh" : ""}`,
          "aria-pressed": state.selected === a.id ? "true" : "false", "data-alert": a.id,
          onclick: () => select(a.id, false) },
        el("b", {}, item.resident_name || a.device_id || "?"),
        el("span", { class: "kind" }, alertLabel(a)),
        el("span", { class: "muted small" }, item.address || ""),
        el("span", { class: "muted small" }, `${t("f.since")} ${fmtTime(a.first_at, item.time_zone, { date: false })}`));
      queueList.append(el("li", {}, button));
    }
  }

  function onQueue(queue) {
    const fresh = queue.filter((q) => !state.known.has(q.alert.id) && q.alert.state !== "pending");
    state.queue = queue;
    renderQueue();
    if (!state.first && fresh.length) {
      beep();
      banner.hidden = false;
      banner.textContent = `${t("dispatch.new")}: ${fresh.map((q) => `${q.resident_name || q.alert.device_id} · ${t("kind." + q.alert.kind)}`).join(", ")}`;
      banner.classList.remove("flash"); void banner.offsetWidth; banner.classList.add("flash");
    }
    for (const q of queue) state.known.add(q.alert.id);
    state.first = false;
    queueArrived();
    const wanted = Number(new URLSearchParams(location.hash.slice(1)).get("alert"));
    if (state.selected === null && wanted && queue.some((q) => q.alert.id === wanted)) select(wanted, false);
    else if (state.selected === null && fresh.length) select(fresh[0].alert.id, false, true);
    else if (state.selected !== null && queue.some((q) => q.alert.id === state.selected)) refreshTimeline();
  }

  function connect() {
    const source = new EventSource("/api/v1/alerts/live/stream");
    source.addEventListener("open", () => { status.textContent = "● " + t("dispatch.live"); status.className = "ok"; });
    source.addEventListener("queue", (ev) => onQueue(JSON.parse(ev.data)));
    source.addEventListener("signed_out", () => { source.close(); location.assign("/app/login"); });
    source.addEventListener("error", () => { status.textContent = t("dispatch.offline"); status.className = "bad"; });
  }

  async function select(alertId, focus, auto = false) {
    state.selected = alertId;
    history.replaceState(null, "", `#alert=${alertId}`);
    if (!auto) banner.hidden = true; // a new alert's banner stays until someone picks one
    renderQueue();
    if (focus) queueList.querySelector(`[data-alert="${alertId}"]`)?.focus();
    detail.replaceChildren(el("p", { class: "muted" }, "…"));
    try {
      const [record, info] = await Promise.all([
        api(`/api/v1/alerts/${alertId}/record`), api(`/api/v1/alerts/${alertId}`)]);
      if (state.selected !== alertId) return;
      detail.replaceChildren(...renderRecord(record, info));
    } catch (e) {
      detail.replaceChildren(el("p", { class: "bad", role: "alert" }, e.message));
    }
  }

  async function refreshTimeline() {
    const id = state.selected;
    try {
      const info = await api(`/api/v1/alerts/${id}`);
      const box = document.getElementById("timeline");
      if (box && state.selected === id) {
        box.replaceWith(renderTimeline(info, currentTz()));
        document.getElementById("alert-state").textContent = t("state." + info.alert.state);
      }
    } catch { /* the next change tries again */ }
  }

  function currentTz() {
    return state.queue.find((q) => q.alert.id === state.selected)?.time_zone || "Asia/Shanghai";
  }

  async function act(action) {
    const note = document.getElementById("note");
    const body = note && note.value.trim() ? { note: note.value.trim() } : undefined;
    try {
      await api(`/api/v1/alerts/${state.selected}/${action}`, { method: "POST", body });
      toast(t("act.done"), "ok");
      if (note) note.value = "";
      await refreshTimeline();
    } catch (e) {
      toast(`${t("act.refused")} ${e.message}`, "bad");
    }
  }

  async function lookup(number) {
    if (!number) return;
    history.replaceState(null, "", `?caller=${encodeURIComponent(number)}`);
    detail.replaceChildren(el("p", { class: "muted" }, "…"));
    try {
      await Promise.race([firstQueue, new Promise((r) => setTimeout(r, 3000))]);
      const found = await api(`/api/v1/lookup/caller?number=${encodeURIComponent(number)}`);
      if (!found.matches.length) {
        detail.replaceChildren(el("p", { class: "warn", role: "alert" }, `${number}: ${t("dispatch.nomatch")}`));
        return;
      }
      // The live emergencies of the matched elders, from the queue this screen already has.
      const liveOf = (m) => state.queue.filter((q) => q.alert.resident_id === m.match.resident.id);
      if (found.matches.length === 1 && liveOf(found.matches[0]).length) {
        await select(liveOf(found.matches[0])[0].alert.id, false);
        detail.prepend(lookupHeader(found));
        return;
      }
      state.selected = null;
      renderQueue();
      const cards = [];
      for (const m of found.matches) {
        const contacts = await api(`/api/v1/residents/${m.match.resident.id}/contacts`).catch(() => []);
        cards.push(renderLookupMatch(m, contacts, liveOf(m)));
      }
      detail.replaceChildren(lookupHeader(found), ...cards);
    } catch (e) {
      detail.replaceChildren(el("p", { class: "bad", role: "alert" }, e.message));
    }
  }

  function lookupHeader(found) {
    return el("p", { class: "lookup-head" }, `${t("dispatch.caller")} ${found.national}`);
  }

  function renderLookupMatch(m, contacts, live) {
    const r = m.match.resident;
    const via = m.match.contact ? `${t("dispatch.via")} ${m.match.contact.name} (${t("contact." + m.match.contact.role)})` : "";
    const open = live.map((q) =>
      el("button", { type: "button", class: "primary", onclick: () => select(q.alert.id, false) },
         `${t("kind." + q.alert.kind)} · ${t("state." + q.alert.state)} #${q.alert.id}`));
    return el("article", { class: "card record", "data-resident": r.id },
      identity(r, "Asia/Shanghai", via), ...open,
      el("div", { class: "grid2" }, medical(m.profile), contactsBlock(contacts)));
  }

  connect();
  const caller = new URLSearchParams(location.search).get("caller");
  if (caller) { lookupInput.value = caller; lookup(caller); }
}

function list(items) {
  if (!items || !items.length) return el("span", { class: "muted" }, t("f.none"));
  return el("ul", { class: "plain" }, items.map((x) => el("li", {}, x)));
}

function field(label, value, cls = "") {
  return el("div", { class: "field " + cls }, el("dt", {}, label), el("dd", {}, value));
}

function addressLine(addr) {
  if (!addr) return "–";
  return [addr.province, addr.city, addr.district, addr.street, addr.community, addr.text].filter(Boolean).join(" ");
}

function identity(r, tz, extra = "") {
  if (!r) return el("h2", {}, "?");
  const age = ageOf(r.birth_date);
  const phones = [r.landline, r.mobile].filter(Boolean).join(" · ");
  return el("header", { class: "who" },
    el("h2", { id: "elder-name" }, r.name),
    el("span", { class: "big" }, `${age ?? "?"} ${t("f.age")} · ${t("sex." + r.sex)}`),
    extra ? el("span", { class: "muted" }, extra) : null,
    el("dl", { class: "fields" },
      field(t("f.address"), el("span", { id: "elder-address" }, addressLine(r.address))),
      field(t("f.phones"), phones || "–")));
}

function medical(p) {
  if (!p) return el("section", { class: "card" }, el("p", { class: "warn" }, t("f.noprofile")));
  const notes = p.responder_notes || {};
  const noteItems = ["door_code", "mobility", "language", "hearing", "other"]
    .filter((k) => notes[k]).map((k) => field(t("f." + k), notes[k]));
  return el("section", { class: "card medical" },
    el("dl", { class: "fields" },
      field(t("f.allergies"), el("span", { id: "allergies", class: p.allergies.length ? "bad" : "" },
                                 p.allergies.length ? p.allergies.join("、") : t("f.none"))),
      field(t("f.blood"), p.blood_type),
      field(t("f.conditions"), list(p.conditions)),
      field(t("f.medications"), list(p.medications)),
      field(t("f.past"), list(p.past_treatments))),
    noteItems.length ? el("h3", {}, t("f.notes")) : null,
    noteItems.length ? el("dl", { class: "fields notes" }, noteItems) : null,
    el("p", { class: "muted small" }, `${t("f.profile_version")} ${p.version} · ${t("f.verified")} ${p.last_verified_at ? fmtTime(p.last_verified_at) : "–"}`));
}

function contactsBlock(contacts) {
  const sorted = [...(contacts || [])].sort((a, b) => a.priority - b.priority);
  return el("section", { class: "card" }, el("h3", {}, t("f.contacts")),
    el("ol", { id: "contacts", class: "contacts" }, sorted.map((c) =>
      el("li", {}, el("b", {}, c.name), ` (${t("contact." + c.role)}) `,
         el("span", { class: "phone" }, (c.phones || []).join(" · "))))));
}

function vitalsBlock(record, tz) {
  const v = record.vitals || { values: {}, measured_at: {} };
  const rows = Object.entries(v.values).map(([k, val]) =>
    field(t("v." + k), `${val} · ${fmtTime(v.measured_at[k], tz, { date: false })}`));
  if (record.news2) {
    rows.push(field(t("v.news2"), el("span", { class: record.news2.score >= 7 ? "bad" : record.news2.score >= 5 ? "warn" : "" },
      `${record.news2.score} (${record.news2.severity}) · ${fmtTime(record.news2.at, tz, { date: false })}`)));
  }
  return el("section", { class: "card" }, el("h3", {}, t("f.vitals")),
    rows.length ? el("dl", { class: "fields" }, rows) : el("p", { class: "muted" }, t("f.none")));
}

function circleBlock(circle) {
  const team = circle.doctor_team;
  const hospital = circle.hospital;
  return el("section", { class: "card" },
    el("h3", {}, t("f.doctor")),
    team ? el("div", {}, el("b", {}, team.name), ` ${team.institution || ""}`,
              list(team.members.map((m) => `${m.name} ${m.phone || ""}`))) : el("span", { class: "muted" }, t("f.none")),
    el("h3", {}, t("f.hospital")),
    hospital ? el("div", { id: "hospital" }, el("b", {}, hospital.name), ` ${hospital.address || ""} · ${hospital.green_channel_phone || ""}`)
             : el("span", { class: "muted" }, t("f.none")),
    circle.community ? el("p", { class: "muted" }, `${t("f.community")}: ${circle.community.name} ${circle.community.phone || ""}`) : null);
}

function renderTimeline(info, tz) {
  const events = info.timeline.map((e) => el("li", {},
    el("time", { datetime: e.at }, fmtTime(e.at, tz, { date: false })), " ",
    el("b", {}, e.to_state ? t("state." + e.to_state) : t("tl." + e.event)), " · ",
    `${e.actor}${e.channel ? " · " + e.channel : ""}`,
    e.note ? el("span", { class: "note" }, ` “${e.note}”`) : null));
  const deliveries = info.deliveries.map((d) => el("li", {},
    `${d.recipient_name || d.recipient_kind} · ${d.channel} · ${d.status}`,
    d.delivered_at ? ` · ${fmtTime(d.delivered_at, tz, { date: false })}` : ""));
  return el("section", { class: "card", id: "timeline" }, el("h3", {}, t("f.timeline")),
    el("ol", { class: "timeline" }, events),
    el("h3", {}, t("f.deliveries")), el("ul", { class: "plain small" }, deliveries));
}

function actions() {
  const b = (action, key, cls) => el("button", { type: "button", class: cls, "data-action": action,
                                                 "aria-keyshortcuts": `Alt+${key}`,
                                                 onclick: () => document.dispatchEvent(new KeyboardEvent("keydown", { key, altKey: true })) },
                                     t("act." + action.replace("-", "_")));
  return el("section", { class: "actions" },
    el("label", { for: "note", class: "visually-hidden" }, t("act.note")),
    el("input", { id: "note", type: "text", maxlength: 1000, placeholder: t("act.note") }),
    b("acknowledge", "a", "primary"), b("dispatched", "d", "primary"),
    b("resolve", "r", ""), b("false-alarm", "f", "ghost"));
}

function renderRecord(record, info) {
  const tz = record.time_zone || "Asia/Shanghai";
  const a = info.alert;
  const head = el("div", { class: "alert-head sev-" + a.severity },
    el("b", {}, t("kind." + a.kind)), " · ", el("span", { id: "alert-state" }, t("state." + a.state)),
    ` · ${t("f.since")} ${fmtTime(a.first_at, tz)} · #${a.id}`,
    a.device_id ? ` · ${t("f.device")} ${a.device_id}` : "");
  const plan = el("section", { class: "card" }, el("h3", {}, t("f.position")),
    drawPlan(record.position, record.resident?.address, tz));
  return [
    head,
    actions(),
    el("article", { class: "record" },
      identity(record.resident, tz),
      el("div", { class: "grid3" },
        medical(record.profile),
        el("div", {}, contactsBlock(record.care_circle.contacts), circleBlock(record.care_circle)),
        el("div", {}, vitalsBlock(record, tz), plan)),
      renderTimeline(info, tz)),
  ];
}
