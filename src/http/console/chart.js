// A small chart of a link's deltas per second in and out over the last minutes, drawn
// as SVG from the samples the console takes on each poll.

const SVG = "http://www.w3.org/2000/svg";
export const WINDOW_MS = 5 * 60 * 1000;

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

// Rates between consecutive samples `{t, sent, received}`: `[{t, in, out}]`.
export function rates(samples) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    const dt = (b.t - a.t) / 1000;
    if (dt <= 0) continue;
    out.push({
      t: b.t,
      in: Math.max(0, b.received - a.received) / dt,
      out: Math.max(0, b.sent - a.sent) / dt,
    });
  }
  return out;
}

export function draw(points, now = Date.now()) {
  const w = 300, h = 60;
  const root = svg("svg", { viewBox: `0 0 ${w} ${h}`, class: "chart", role: "img" });
  const max = Math.max(1, ...points.map((p) => Math.max(p.in, p.out)));
  const x = (t) => (w * (t - (now - WINDOW_MS))) / WINDOW_MS;
  const y = (v) => h - 2 - ((h - 6) * v) / max;
  root.append(svg("line", { x1: 0, y1: h - 1, x2: w, y2: h - 1, class: "axis" }));
  for (const key of ["in", "out"]) {
    if (!points.length) continue;
    const path = points.map((p) => `${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
    root.append(svg("polyline", { points: path, class: `series ${key}` }));
  }
  const label = svg("text", { x: w - 4, y: 12, class: "scale", "text-anchor": "end" });
  label.textContent = `${max >= 10 ? max.toFixed(0) : max.toFixed(1)}/s`;
  root.append(label);
  const title = svg("title", {});
  title.textContent = "deltas per second over the last 5 minutes: in (received) and out (sent)";
  root.prepend(title);
  return root;
}
