// A family member signed in: their relative's live alerts (and nobody else's: the API's scope),
// each with "I'm on my way" (acknowledges, with that note). "I can't come" is on the page of the
// acknowledge link in their message (api/routes/ack.py), which also works without signing in.
import { api, el, fmtTime, t, toast } from "/app/static/app.js";

export const TITLE = "screen.family";

export async function mount(main) {
  main.classList.add("family");
  const box = el("div", { id: "family-alerts" });
  main.append(box);
  const source = new EventSource("/api/v1/alerts/live/stream");
  source.addEventListener("queue", (ev) => render(box, JSON.parse(ev.data)));
  source.addEventListener("signed_out", () => { source.close(); location.assign("/app/login"); });
}

function render(box, queue) {
  box.replaceChildren();
  if (!queue.length) { box.append(el("p", { class: "card muted" }, t("family.none"))); return; }
  for (const item of queue) {
    const a = item.alert;
    const answer = async () => {
      try {
        await api(`/api/v1/alerts/${a.id}/acknowledge`, { method: "POST", body: { note: "on my way" } });
        toast(t("act.done"), "ok");
      } catch (e) { toast(`${t("act.refused")} ${e.message}`, "bad"); }
    };
    box.append(el("article", { class: "card family-alert", "data-alert": a.id },
      el("h2", {}, `${item.resident_name || ""} · ${t("kind." + a.kind)}`),
      el("p", {}, el("b", {}, t("state." + a.state))),
      el("dl", { class: "fields" },
        el("div", { class: "field" }, el("dt", {}, t("family.when")), el("dd", {}, fmtTime(a.first_at, item.time_zone))),
        el("div", { class: "field" }, el("dt", {}, t("family.where")), el("dd", {}, item.address || "–"))),
      el("button", { type: "button", class: "primary", onclick: answer }, t("family.coming"))));
  }
}
