import { api, el, t, toast } from "/app/static/app.js";

export const TITLE = "signin.title";

export async function mount(main) {
  const next = new URLSearchParams(location.search).get("next");
  const input = el("input", { id: "token", name: "token", type: "password", autocomplete: "off",
                              required: true, spellcheck: "false", "aria-describedby": "token-hint" });
  const error = el("p", { class: "bad", role: "alert", id: "signin-error" });
  const form = el("form", { class: "card narrow", id: "signin" },
    el("h2", {}, t("signin.title")),
    el("label", { for: "token" }, t("signin.token")), input,
    el("p", { class: "muted", id: "token-hint" }, t("signin.hint")),
    error,
    el("button", { type: "submit" }, t("signin.submit")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      const s = await api("/api/v1/session", {
        method: "POST", headers: { Authorization: "Bearer " + input.value.trim() } });
      const target = next && next.startsWith("/app/") && !next.startsWith("/app/login") ? next : s.screens[0];
      location.assign(target);
    } catch (e) {
      error.textContent = t("signin.failed") + " " + e.message;
    }
  });
  main.append(form);
  // Signed in already? Go on.
  try {
    const s = await api("/api/v1/session");
    if (s) toast(`${s.name}`);
  } catch { /* not signed in */ }
  input.focus();
}
