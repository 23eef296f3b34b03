// A plan of the last known position drawn here in SVG: the device's fix with its accuracy
// circle, the registered home, a north arrow and a scale bar. Dispatch centres often have no
// internet, so no map tiles; distances use an equirectangular projection (exact enough within
// a few kilometres).
import { el, fmtTime, t } from "/app/static/app.js";

const NS = "http://www.w3.org/2000/svg";
const EARTH_M = 6371000;

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Metres east and north of (lat0, lon0). */
export function offsetM(lat0, lon0, lat, lon) {
  const rad = Math.PI / 180;
  return [(lon - lon0) * rad * EARTH_M * Math.cos(lat0 * rad), (lat - lat0) * rad * EARTH_M];
}

function niceScale(m) {
  for (const s of [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000]) if (s >= m) return s;
  return 100000;
}

export function drawPlan(position, homeAddress, tz) {
  if (!position) return el("p", { class: "muted" }, t("f.none"));
  const W = 320, H = 200, C = [W / 2, H / 2];
  const home = homeAddress && homeAddress.lat != null ? [homeAddress.lat, homeAddress.lon] : null;
  const pts = [{ kind: "device", lat: position.lat, lon: position.lon }];
  if (home && position.source !== "home") pts.push({ kind: "home", lat: home[0], lon: home[1] });
  const [lat0, lon0] = [position.lat, position.lon];
  const offsets = pts.map((p) => offsetM(lat0, lon0, p.lat, p.lon));
  const reach = Math.max(50, position.accuracy_m || 0, ...offsets.map(([x, y]) => Math.hypot(x, y)));
  const scale = (Math.min(W, H) / 2 - 24) / reach; // px per metre
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
                            "aria-label": t("plan.title"), class: "plan" });
  root.append(svg("rect", { x: 0, y: 0, width: W, height: H, class: "plan-bg" }));
  for (let r = 1; r <= 2; r += 1) root.append(svg("circle", { cx: C[0], cy: C[1], r: r * (Math.min(W, H) / 2 - 24) / 2, class: "plan-ring" }));
  root.append(svg("line", { x1: C[0], y1: 8, x2: C[0], y2: H - 8, class: "plan-axis" }),
              svg("line", { x1: 8, y1: C[1], x2: W - 8, y2: C[1], class: "plan-axis" }));
  // North arrow
  root.append(svg("path", { d: `M ${W - 22} 30 l 6 -16 l 6 16 l -6 -4 z`, class: "plan-north" }),
              svg("text", { x: W - 16, y: 44, "text-anchor": "middle", class: "plan-label" }, t("plan.north")));
  pts.forEach((p, i) => {
    const [dx, dy] = offsets[i];
    const x = C[0] + dx * scale, y = C[1] - dy * scale;
    if (p.kind === "device") {
      if (position.accuracy_m) root.append(svg("circle", { cx: x, cy: y, r: Math.max(4, position.accuracy_m * scale), class: "plan-accuracy" }));
      root.append(svg("circle", { cx: x, cy: y, r: 6, class: position.source === "home" ? "plan-home" : "plan-device" }));
      root.append(svg("text", { x: x + 9, y: y - 8, class: "plan-label" }, position.source === "home" ? t("plan.home") : t("plan.device")));
    } else {
      root.append(svg("rect", { x: x - 6, y: y - 6, width: 12, height: 12, class: "plan-home" }));
      root.append(svg("text", { x: x + 9, y: y + 14, class: "plan-label" }, t("plan.home")));
    }
  });
  const bar = niceScale(reach / 2);
  const px = bar * scale;
  root.append(svg("line", { x1: 12, y1: H - 14, x2: 12 + px, y2: H - 14, class: "plan-scale" }),
              svg("text", { x: 12, y: H - 20, class: "plan-label" }, bar >= 1000 ? `${bar / 1000} km` : `${bar} m`));
  const facts = [`${position.lat.toFixed(6)}, ${position.lon.toFixed(6)}`];
  if (position.accuracy_m) facts.push(`${t("f.accuracy")} ±${Math.round(position.accuracy_m)} m`);
  if (position.indoor) facts.push(position.indoor);
  if (position.at) facts.push(fmtTime(position.at, tz));
  if (position.source === "home") facts.push(t("f.home"));
  if (home && position.source !== "home") {
    const [hx, hy] = offsetM(lat0, lon0, home[0], home[1]);
    facts.push(`${t("plan.distance")} ${Math.round(Math.hypot(hx, hy))} m`);
  }
  return el("figure", { class: "plan-box" }, root, el("figcaption", { id: "position", class: "small" }, facts.join(" · ")));
}
