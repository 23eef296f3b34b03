// Forms of the screens: fields named by the API's body keys (dots for nested ones), filled
// from the API, sent as JSON, and each of the API's validation errors (FastAPI's 422
// `detail`, by its `loc`) shown next to its field.
import { el, t, toast } from "/app/static/app.js";

/**
 * A form. Each field: {name, label, type ("text", "number", "date", "tel", "time", "list"
 * (comma-separated numbers), "texts" (comma-separated texts), "lines" (one text per line),
 * "time" (24-hour "HH:MM"), "datetime" (24-hour "YYYY-MM-DD HH:MM", local, sent with the
 * offset `tz`, "+08:00"), "check"), options ([[value, label]]), value (initial)}. Times are
 * typed as text: the browser's own time inputs follow its locale (AM/PM), the screens do not. onSubmit(body) calls the API; `keep` leaves the values after saving
 * (an edit form) instead of clearing them (a new record).
 */
export function form(id, title, fields, submit, onSubmit, { keep = false, extra = [] } = {}) {
  const node = el("form", { id, class: "card form", novalidate: true }, title ? el("h2", {}, title) : null);
  for (const f of fields) {
    const fid = `${id}-${f.name.replace(/\./g, "-")}`;
    let input;
    if (f.options) {
      input = el("select", { id: fid, name: f.name }, f.options.map(([v, label]) => el("option", { value: v }, label)));
    } else if (f.type === "lines") {
      input = el("textarea", { id: fid, name: f.name, rows: 2 });
    } else if (f.type === "check") {
      input = el("input", { id: fid, name: f.name, type: "checkbox" });
    } else {
      const type = { list: "text", texts: "text", time: "text", datetime: "text" }[f.type] || f.type || "text";
      const hint = { time: "HH:MM", datetime: "YYYY-MM-DD HH:MM" }[f.type];
      input = el("input", { id: fid, name: f.name, type, autocomplete: "off", step: f.type === "number" ? "any" : null,
                            placeholder: f.placeholder || hint || null, inputmode: hint ? "numeric" : null });
    }
    node.append(el("div", { class: "row" },
      el("label", { for: fid }, f.label), input,
      el("span", { class: "field-error bad small", id: `${fid}-error`, "data-field": f.name, role: "alert" })));
  }
  const general = el("p", { class: "bad small form-error", role: "alert" });
  node.append(general, el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, submit), extra));
  fill(node, fields, Object.fromEntries(fields.filter((f) => f.value !== undefined).map((f) => [f.name, f.value])));
  node.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(node);
    try {
      const saved = await onSubmit(values(node, fields));
      toast(t("act.done"), "ok");
      if (!keep) node.reset();
      node.dispatchEvent(new CustomEvent("saved", { detail: saved }));
    } catch (e) {
      showErrors(node, e);
    }
  });
  return node;
}

/** Put `data` (keys as the field names, dotted) into the form's fields. */
export function fill(node, fields, data) {
  for (const f of fields) {
    const v = f.name.split(".").reduce((o, k) => (o == null ? undefined : o[k]), data);
    const input = node.elements[f.name];
    if (!input || v === undefined) continue;
    if (f.type === "check") input.checked = Boolean(v);
    else if (f.type === "list" || f.type === "texts") input.value = (v || []).join(", ");
    else if (f.type === "lines") input.value = (v || []).join("\n");
    else if (f.type === "datetime") input.value = v ? String(v).slice(0, 16).replace("T", " ") : "";
    else if (f.type === "time") input.value = v ? String(v).slice(0, 5) : "";
    else input.value = v === null ? "" : String(v);
  }
}

/** What was typed, as the API's body. A list that is not all numbers is sent as typed, so the
 * API's own error names it. Empty fields are left out. */
export function values(node, fields) {
  const body = {};
  for (const f of fields) {
    const input = node.elements[f.name];
    let v;
    if (f.type === "check") v = input.checked;
    else {
      const raw = input.value.trim();
      if (raw === "") continue;
      if (f.type === "number") v = Number(raw);
      else if (f.type === "list") v = raw.split(/[,，\s]+/).filter(Boolean).map((x) => (Number.isFinite(Number(x)) ? Number(x) : x));
      else if (f.type === "texts") v = raw.split(/[,，]+/).map((x) => x.trim()).filter(Boolean);
      else if (f.type === "lines") v = raw.split("\n").map((x) => x.trim()).filter(Boolean);
      else if (f.type === "datetime") v = `${raw.replace(" ", "T")}${raw.length === 16 ? ":00" : ""}${f.tz || ""}`;
      else v = raw;
    }
    const path = f.name.split(".");
    let at = body;
    for (const p of path.slice(0, -1)) at = at[p] = at[p] || {};
    at[path[path.length - 1]] = v;
  }
  return body;
}

export function clearErrors(node) {
  node.querySelectorAll(".field-error").forEach((e) => { e.textContent = ""; });
  node.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
  node.querySelector(".form-error").textContent = "";
}

/** FastAPI's 422: [{loc: ["body", "address", "lat"], msg}, ...] lands next to its field; an
 * error of a whole group (an address, a chart) goes to its first field. */
export function showErrors(node, error) {
  const general = node.querySelector(".form-error");
  const detail = Array.isArray(error.detail) ? error.detail : [{ loc: [], msg: error.message }];
  for (const d of detail) {
    const loc = (d.loc || []).filter((p) => p !== "body");
    let target = null;
    for (let n = loc.length; n > 0 && !target; n -= 1) {
      const key = loc.slice(0, n).join(".");
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
