// Small SVG line charts drawn here (no chart library: a line per series, min/max band, axes with
// 24-hour times, a dot per point when there are few). Each chart is an <svg> with a title.
import { fmtTime } from "/app/static/app.js";

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * series: [{name, points: [[Date, value|null], ...], cls}], band: optional [[Date, lo, hi]].
 * opts: {title, unit, from: Date, to: Date, tz, lines: [{value, cls}] (reference lines)}.
 */
export function lineChart(series, opts) {
  const W = 560, H = 150, L = 40, R = 8, T = 18, B = 22;
  const from = opts.from.getTime(), to = opts.to.getTime();
  const values = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v !== null && v !== undefined);
  (opts.band || []).forEach((b) => values.push(b[1], b[2]));
  (opts.lines || []).forEach((l) => values.push(l.value));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": opts.title });
  root.append(svg("title", {}, opts.title));
  root.append(svg("text", { x: L, y: 12, class: "chart-title" }, `${opts.title}${opts.unit ? " (" + opts.unit + ")" : ""}`));
  if (!values.length) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" }, "–"));
    return root;
  }
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
  const x = (d) => L + ((d.getTime() - from) / (to - from)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  root.append(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "chart-bg" }));
  for (const v of [lo + pad, (lo + hi) / 2, hi - pad]) {
    root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "chart-grid" }),
                svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", class: "chart-tick" }, Math.round(v * 10) / 10));
  }
  for (let i = 0; i <= 4; i += 1) {
    const d = new Date(from + ((to - from) * i) / 4);
    const label = (to - from) > 2 * 86400e3 ? fmtTime(d.toISOString(), opts.tz).slice(5, 10) : fmtTime(d.toISOString(), opts.tz, { date: false }).slice(0, 5);
    root.append(svg("text", { x: x(d), y: H - 6, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle", class: "chart-tick" }, label));
  }
  for (const l of opts.lines || []) {
    root.append(svg("line", { x1: L, x2: W - R, y1: y(l.value), y2: y(l.value), class: "chart-ref " + (l.cls || "") }));
  }
  if (opts.band && opts.band.length) {
    const top = opts.band.map((b) => `${x(b[0])},${y(b[2])}`);
    const bottom = opts.band.slice().reverse().map((b) => `${x(b[0])},${y(b[1])}`);
    root.append(svg("polygon", { points: top.concat(bottom).join(" "), class: "chart-band" }));
  }
  for (const s of series) {
    let d = "", pen = false;
    for (const [at, v] of s.points) {
      if (v === null || v === undefined) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${x(at).toFixed(1)},${y(v).toFixed(1)} `;
      pen = true;
    }
    if (d) root.append(svg("path", { d, class: "chart-line " + (s.cls || ""), "data-series": s.name }));
    if (s.dots || s.points.length <= 40) {
      for (const [at, v] of s.points) if (v !== null && v !== undefined) {
        root.append(svg("circle", { cx: x(at), cy: y(v), r: 2.5, class: "chart-dot " + (s.cls || "") }));
      }
    }
  }
  return root;
}
