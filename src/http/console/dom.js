// Building and formatting the page's elements. Text is always set as text (never parsed
// as HTML), so nothing a delta or a peer sends can run in the page.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

// A `<dt>`/`<dd>` pair of a facts list.
export function fact(name, value, cls) {
  return [el("dt", { text: name }), el("dd", { class: cls }, value)];
}

export function $(selector) {
  return document.querySelector(selector);
}

// Shows `message` in a section's note line, or hides it when there is none.
export function note(selector, message) {
  const n = $(selector);
  n.textContent = message || "";
  n.hidden = !message;
}

export function bytes(n) {
  if (n === undefined || n === null) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function duration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24;
  const m = Math.floor(seconds / 60) % 60, s = Math.floor(seconds % 60);
  if (d) return `${d}d ${h}h ${m}m`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

export function time(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  return d.toLocaleString(undefined, { hour12: false });
}

export function ago(ms) {
  if (!ms) return "";
  return `${duration(Math.max(0, (Date.now() - ms) / 1000))} ago`;
}

export function rate(n) {
  return n >= 10 ? n.toFixed(0) : n.toFixed(1);
}
