// Follows `GET /events` (Server-Sent Events) with fetch and a streaming reader rather
// than EventSource, which cannot send the token in a header. Reconnects after a pause
// when the stream ends or fails, and says why in `onState`.

import { headers, explain } from "./api.js";

const RETRY_MS = 2000;

export function follow({ onEvent, onState }) {
  let stopped = false;
  let controller = null;
  // Set while the stream is cut on purpose (a new token): reconnect at once, quietly.
  let restarting = false;

  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const response = await fetch("/events", {
          headers: headers({ Accept: "text/event-stream" }),
          signal: controller.signal,
          cache: "no-store",
          credentials: "omit",
        });
        if (!response.ok) {
          let body = null;
          try { body = await response.json(); } catch { body = null; }
          onState(explain(response.status, body, "the event stream"), true);
        } else {
          onState("live", false);
          await read(response.body, onEvent);
          if (!stopped) onState("the stream ended; reconnecting", true);
        }
      } catch (e) {
        if (stopped) return;
        if (!restarting) onState(`the event stream is cut (${e.message || e}); reconnecting`, true);
      }
      if (restarting) {
        restarting = false;
        onState("reconnecting", false);
        continue;
      }
      await new Promise((r) => setTimeout(r, RETRY_MS));
    }
  }

  run();
  return {
    // Reconnects now (after a new token, say).
    restart() {
      restarting = true;
      if (controller) controller.abort();
    },
  };
}

// Parses the `event:` / `data:` blocks of an SSE body as they arrive.
async function read(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(buffer.slice(end).match(/^\r?\n\r?\n/)[0].length + end);
      let type = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") type = value;
        else if (field === "data") data.push(value);
      }
      if (!data.length) continue;
      let parsed;
      try { parsed = JSON.parse(data.join("\n")); } catch { parsed = { raw: data.join("\n") }; }
      onEvent(type, parsed);
    }
  }
}
