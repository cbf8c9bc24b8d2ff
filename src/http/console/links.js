// The links section: a card per link, kept across polls (so a click is never lost to a
// redraw), with its counters, a rate chart from the samples taken on each poll, its
// recent states, and the pause, resume and disconnect buttons.

import * as api from "./api.js";
import { rates, draw, WINDOW_MS } from "./chart.js";
import { el, $, note, fact, ago, rate } from "./dom.js";


const linkViews = new Map();
const samples = new Map();

// Asks the console to read the API again (after an action).
let refresh = () => {};

function linkAction(id, action) {
  const path = `/links/${encodeURIComponent(id)}${action === "disconnect" ? "" : `/${action}`}`;
  const request = action === "disconnect"
    ? api.del(path, `disconnecting link ${id}`)
    : api.post(path, `${action === "pause" ? "pausing" : "resuming"} link ${id}`);
  return request.then(
    () => { note("#links-note", ""); refresh(); },
    (e) => note("#links-note", e.message),
  );
}

function linkView(id) {
  let view = linkViews.get(id);
  if (view) return view;
  const span = (cls) => el("span", { class: cls });
  view = {
    name: el("strong", { class: "link-name" }),
    status: span("badge link-status"),
    peer: span("mono wrap link-peer"),
    flow: span("link-flow"),
    countIn: span("num count-in"),
    rateIn: span("rate-in"),
    countOut: span("num count-out"),
    rateOut: span("rate-out"),
    lag: span("link-lag"),
    refused: span("link-refused"),
    error: span("link-error"),
    chart: el("div", { class: "chart-box" }),
    history: el("ol", { class: "history" }),
    pause: el("button", { type: "button", class: "admin pause" }),
    disconnect: el("button", { type: "button", class: "admin danger disconnect", text: "Disconnect" }),
  };
  view.pause.addEventListener("click", () =>
    linkAction(id, view.pause.dataset.action));
  // Two clicks: closing a link for good is not undone by a stray tap.
  view.disconnect.addEventListener("click", () => {
    if (view.disconnect.dataset.armed) return linkAction(id, "disconnect");
    view.disconnect.dataset.armed = "1";
    view.disconnect.textContent = "Click again to disconnect";
    setTimeout(() => {
      delete view.disconnect.dataset.armed;
      view.disconnect.textContent = "Disconnect";
    }, 4000);
  });
  view.card = el("article", { class: "link", "data-link-id": id },
    el("header", {}, view.name, " ", view.status),
    el("dl", { class: "facts" },
      fact("Peer", view.peer),
      fact("Direction", view.flow),
      fact("In", [view.countIn, " ", view.rateIn]),
      fact("Out", [view.countOut, " ", view.rateOut]),
      fact("Lag", view.lag),
      fact("Refused", view.refused),
      fact("Last error", view.error),
    ),
    view.chart,
    el("details", {}, el("summary", { text: "Recent states" }), view.history),
    el("div", { class: "actions" }, view.pause, view.disconnect),
  );
  linkViews.set(id, view);
  return view;
}

export function renderLinks(links, head, onChange) {
  refresh = onChange;
  const now = Date.now();
  $("#links-count").textContent = `(${links.length})`;
  const seen = new Set();
  for (const link of links) {
    seen.add(link.id);
    const v = linkView(link.id);
    const s = link.stats;
    const mine = samples.get(link.id) || [];
    mine.push({ t: now, sent: s.deltasSent, received: s.deltasReceived });
    while (mine.length && mine[0].t < now - WINDOW_MS) mine.shift();
    samples.set(link.id, mine);
    const points = rates(mine);
    const last = points[points.length - 1] || { in: 0, out: 0 };

    v.name.textContent = link.name;
    v.status.textContent = link.paused && link.status !== "paused" ? `${link.status}, paused` : link.status;
    v.status.dataset.status = link.status;
    const peer = link.peer
      ? `${link.peer.name}${link.peer.authenticated ? " (proven)" : ""}`
      : "";
    v.peer.textContent = [link.remoteSystemId || "not known yet", peer && `as ${peer}`, link.remoteUrl]
      .filter(Boolean).join(" · ");
    v.flow.textContent = `${link.direction}, ${link.config.mode}`;
    v.countIn.textContent = s.deltasReceived;
    v.rateIn.textContent = `received, ${rate(last.in)}/s`;
    v.countOut.textContent = s.deltasSent;
    v.rateOut.textContent = `sent, ${rate(last.out)}/s`;
    // What of our log this link has yet to send: meaningful where it sends.
    const sends = link.direction === "inbound" ? link.config.mode !== "push" : link.config.mode !== "pull";
    v.lag.textContent = sends
      ? `${Math.max(0, head - s.sentThrough)} deltas to send` +
        (s.peerAcked !== undefined ? `, ${Math.max(0, head - s.peerAcked)} not yet acknowledged` : "")
      : "receives only";
    v.refused.textContent = `${s.deltasRejected} rejected, ${s.deltasFiltered} filtered, ${s.deltasNacked} refused by the peer`;
    v.error.textContent = link.lastError || "none";
    v.error.classList.toggle("bad", Boolean(link.lastError));
    v.chart.replaceChildren(draw(points, now));
    v.history.replaceChildren(...link.history.slice().reverse().map((h) =>
      el("li", {}, el("span", { class: "badge", "data-status": h.status, text: h.status }),
        ` ${ago(h.at)}`, h.reason ? ` — ${h.reason}` : "")));
    v.pause.dataset.action = link.paused ? "resume" : "pause";
    v.pause.textContent = link.paused ? "Resume" : "Pause";
  }
  for (const [id, v] of linkViews) {
    if (!seen.has(id)) {
      v.card.remove();
      linkViews.delete(id);
      samples.delete(id);
    }
  }
  const list = $("#links-list");
  const cards = links.map((l) => linkViews.get(l.id).card);
  if (cards.length === 0) {
    list.replaceChildren(el("p", { class: "muted", text: "No links. Add one with `rhizome link add URL` or POST /links." }));
  } else if (cards.some((c, i) => list.children[i] !== c) || list.children.length !== cards.length) {
    list.replaceChildren(...cards);
  }
}
