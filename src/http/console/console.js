// The operator console: polls the node's JSON API, follows its event stream, and draws
// what it learns. Each section below owns its part of the page.

import * as api from "./api.js";
import { follow } from "./events.js";
import { renderLinks } from "./links.js";
import { el, $, note, fact, bytes, duration, time, ago } from "./dom.js";

const POLL_MS = 1500;
const MAX_EVENTS = 500;
const SHOWN_EVENTS = 200;

// ---- token ---------------------------------------------------------------------------

let events = null;

function showTokenState() {
  $("#token-state").textContent = api.token() ? "a token is in use (this tab only)" : "no token";
  $("#token").value = "";
}

$("#token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  api.setToken($("#token").value.trim());
  showTokenState();
  if (events) events.restart();
  poll();
});

$("#token-forget").addEventListener("click", () => {
  api.setToken("");
  showTokenState();
  if (events) events.restart();
  poll();
});

// ---- the banner: what stops the console from showing the node -------------------------

function banner(message) {
  const b = $("#banner");
  b.textContent = message || "";
  b.hidden = !message;
}

// ---- node ----------------------------------------------------------------------------

let info = null;

function renderNode(status, health) {
  const store = status.store;
  const storage = (health && health.storage) || store.storage;
  const name = (info && info.name) || status.systemId;
  $("#node-name").textContent = name;
  document.title = `${name} · rhizome console`;
  const facts = [
    fact("System id", status.systemId, "mono"),
    fact("Public key", status.publicKey || "none", "mono wrap"),
    fact("Version", `rhizome ${status.version}`),
    fact("Uptime", duration(status.uptimeSeconds)),
    fact("Listening", info ? `${info.listen || "?"}${info.tls ? " (TLS)" : ""}, federation at ${info.federationPath}` : "?"),
    fact("Store", `${store.head} deltas · head ${store.head} · ${bytes(store.diskBytes)}${store.temporary ? " · temporary" : ""}`),
    fact("Store path", store.path || "in memory", "mono wrap"),
    fact(
      "Storage",
      storage.writable
        ? `healthy (writable)${storage.lastError ? `; last error ${ago(storage.lastErrorAtMs)}: ${storage.lastError}` : ""}`
        : `NOT WRITABLE since ${time(storage.unwritableSinceMs)}: ${storage.lastError || "a write failed"}`,
      storage.writable ? "ok" : "bad",
    ),
    fact("Peers", `${status.peers.configured} configured${status.peers.allowAnonymous ? ", anonymous allowed" : ""}`),
    fact("Signatures", `${status.signatures.verified} verified, ${status.signatures.refused} refused${status.signatures.require ? ` (require: ${status.signatures.require})` : ""}`),
  ];
  $("#node-facts").replaceChildren(...facts.flat());
}

// ---- policies ------------------------------------------------------------------------

function shortPath(file, p) {
  for (const dir of [p.policiesDir, p.filtersDir]) {
    if (dir && file.startsWith(dir)) return file.slice(dir.length).replace(/^\/+/, "");
  }
  return file;
}

function where(e) {
  return [e.line && `line ${e.line}`, e.column && `column ${e.column}`].filter(Boolean).join(", ");
}

function renderPolicies(p) {
  $("#policies-summary").textContent =
    `${p.scripts.length} scripts · set ${p.hash} · ${p.reloads} reloads · ${p.evaluations} evaluations, ` +
    `${p.rejections} rejections, ${p.runtimeErrors} runtime errors, ${p.timeouts} over time` +
    ` · policies in ${p.policiesDir || "(none)"}, filters in ${p.filtersDir || "(none)"}`;
  const rows = [];
  for (const s of p.scripts) {
    rows.push(el("tr", { "data-file": s.file },
      el("td", { class: "mono", title: s.file, text: shortPath(s.file, p) }),
      el("td", { text: s.kind }),
      el("td", { text: s.link || "every link" }),
      el("td", {}, el("span", { class: "badge", "data-status": s.state, text: s.state })),
      el("td", { class: "num", text: s.evaluations ?? "" }),
      el("td", { class: "num", text: s.rejections }),
    ));
    if (s.error) {
      const e = s.error;
      const consequence = s.state === "stale"
        ? "its last good version runs until this is fixed"
        : "it rejects everything it judges until this is fixed";
      rows.push(el("tr", { class: "script-error" },
        el("td", { colspan: 6 },
          el("strong", { text: `${shortPath(e.file, p)}:${e.line ?? "?"}:${e.column ?? "?"}` }),
          ` (${where(e) || "position unknown"}): ${e.message} — ${consequence}.`)));
    }
  }
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No scripts: every delta is accepted." })));
  $("#policies-table tbody").replaceChildren(...rows);
}

$("#policies-reload").addEventListener("click", () =>
  api.post("/policies/reload", "reloading the policies").then(
    (p) => { note("#policies-note", `Reloaded: set ${p.hash}, ${p.errors.length} errors.`); renderPolicies(p); },
    (e) => note("#policies-note", e.message),
  ));

// ---- quarantine ----------------------------------------------------------------------

function renderQuarantine(q) {
  $("#quarantine-count").textContent = `(${q.total})`;
  const rows = q.entries.map((e) => el("tr", { "data-delta-id": e.delta.id },
    el("td", {}, el("a", { href: "#deltas", class: "mono", text: e.delta.id, onclick: () => showDelta(e.delta) })),
    el("td", { text: e.link.name || e.link.id || "local" }),
    el("td", { class: "mono", text: e.peer || "" }),
    el("td", { class: "mono", text: e.policy }),
    el("td", { class: "reason", text: e.reason }),
    el("td", { text: time(e.at) }),
  ));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "Nothing refused." })));
  if (q.total > q.entries.length) {
    rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted", text: `and ${q.total - q.entries.length} more` })));
  }
  $("#quarantine-table tbody").replaceChildren(...rows);
}

$("#quarantine-replay").addEventListener("click", () =>
  api.post("/quarantine/replay", "replaying the quarantine").then(
    (r) => {
      note("#quarantine-result",
        `Replayed: ${r.admitted} admitted, ${r.stillRejected} still refused${r.unreadable ? `, ${r.unreadable} unreadable` : ""}.`);
      poll();
    },
    (e) => note("#quarantine-result", e.message),
  ));

// ---- events --------------------------------------------------------------------------

const eventLog = [];
const eventTypes = new Set();

function eventMatches(ev) {
  const type = $("#events-type").value;
  const text = $("#events-text").value.trim().toLowerCase();
  return (!type || ev.type === type) && (!text || ev.line.toLowerCase().includes(text));
}

function eventItem(ev) {
  const { type: _t, time: _at, ...rest } = ev.data;
  const detail = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
  return el("li", { "data-type": ev.type },
    el("time", { text: new Date(ev.data.time || Date.now()).toLocaleTimeString(undefined, { hour12: false }) }),
    el("span", { class: "badge", "data-status": ev.type.split(":")[0], text: ev.type }),
    el("span", { class: "mono wrap", text: detail }));
}

function renderEvents() {
  const shown = [];
  for (let i = eventLog.length - 1; i >= 0 && shown.length < SHOWN_EVENTS; i--) {
    if (eventMatches(eventLog[i])) shown.push(eventItem(eventLog[i]));
  }
  $("#events-list").replaceChildren(...shown);
}

// Events that change what the sections show: read the API at once rather than at the
// next tick, so a saved script's error or a link's new state shows within a moment.
const REFRESHING = /^(link|policy|sync):|^delta:rejected$/;

function onEvent(type, data) {
  if (REFRESHING.test(type)) poll();
  const ev = { type, data, line: `${type} ${JSON.stringify(data)}` };
  eventLog.push(ev);
  if (eventLog.length > MAX_EVENTS) eventLog.shift();
  if (!eventTypes.has(type)) {
    eventTypes.add(type);
    const select = $("#events-type");
    const options = [...eventTypes].sort().map((t) => el("option", { value: t, text: t }));
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "", text: "all" }), ...options);
    select.value = chosen;
  }
  if ($("#events-pause").checked || !eventMatches(ev)) return;
  const list = $("#events-list");
  list.prepend(eventItem(ev));
  while (list.children.length > SHOWN_EVENTS) list.lastChild.remove();
}

$("#events-type").addEventListener("change", renderEvents);
$("#events-text").addEventListener("input", renderEvents);
$("#events-pause").addEventListener("change", renderEvents);
$("#events-filter").addEventListener("submit", (e) => e.preventDefault());

// ---- deltas --------------------------------------------------------------------------

let deltaQuery = null;

function showDelta(delta) {
  $("#delta-json").textContent = JSON.stringify(delta, null, 2);
}

function pointersText(d) {
  return (d.pointers || []).map((p) => {
    const t = p.target;
    const value = t && typeof t === "object" && "id" in t ? `→${t.id}${t.context ? `.${t.context}` : ""}` : JSON.stringify(t);
    return `${p.role}: ${value}`;
  }).join(", ");
}

async function searchDeltas(after) {
  const form = new FormData($("#deltas-query"));
  const params = new URLSearchParams();
  for (const [k, v] of form) {
    const value = String(v).trim();
    if (!value) continue;
    if (k === "since" || k === "until") {
      const ms = new Date(value).getTime();
      if (Number.isNaN(ms)) return note("#deltas-note", `The ${k === "since" ? "From" : "To"} time is not a date.`);
      params.set(k, String(ms));
    } else {
      params.set(k, value);
    }
  }
  if (after) params.set("after", String(after));
  try {
    const page = await api.get(`/deltas?${params}`, "the delta query");
    note("#deltas-note", "");
    const result = $("#deltas-result");
    result.textContent = `${page.count} ${after ? "more " : ""}delta${page.count === 1 ? "" : "s"}${page.next ? "; more follow" : ""}.`;
    result.hidden = false;
    const rows = page.deltas.map((d) => el("tr", { "data-delta-id": d.id, tabindex: 0, onclick: () => showDelta(d), onkeydown: (e) => e.key === "Enter" && showDelta(d) },
      el("td", { class: "mono", text: d.id }),
      el("td", { text: d.author }),
      el("td", { text: time(d.timestamp) }),
      el("td", { class: "wrap", text: pointersText(d) })));
    const body = $("#deltas-table tbody");
    if (after) body.append(...rows);
    else body.replaceChildren(...rows);
    deltaQuery = page.next;
    $("#deltas-more").hidden = !page.next;
  } catch (e) {
    note("#deltas-note", e.message);
  }
}

$("#deltas-query").addEventListener("submit", (e) => { e.preventDefault(); searchDeltas(); });
$("#deltas-more").addEventListener("click", () => searchDeltas(deltaQuery));

// ---- polling -------------------------------------------------------------------------

let polling = false;
let pollAgain = false;

async function poll() {
  if (polling) {
    pollAgain = true;
    return;
  }
  polling = true;
  try {
    if (!info) info = await api.get("/", "the node's info document");
    const [status, health] = await Promise.all([
      api.get("/status", "the node's status"),
      api.get("/health", "the health check").catch((e) => (e.status === 503 ? null : Promise.reject(e))),
    ]);
    banner("");
    renderNode(status, health);
    renderLinks(status.links, status.store.head, poll);
    renderPolicies(status.policies);
    try {
      renderQuarantine(await api.get("/quarantine?limit=100", "the quarantine"));
      note("#quarantine-note", "");
    } catch (e) {
      $("#quarantine-count").textContent = `(${status.quarantine.deltas})`;
      note("#quarantine-note", e.message);
    }
  } catch (e) {
    banner(e.message);
  } finally {
    polling = false;
    if (pollAgain) {
      pollAgain = false;
      poll();
    }
  }
}

showTokenState();
events = follow({
  onEvent,
  onState: (message, bad) => {
    const s = $("#events-state");
    s.textContent = message;
    s.classList.toggle("bad", bad);
  },
});
poll();
setInterval(poll, POLL_MS);
