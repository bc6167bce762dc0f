// Shared by both pages: the API client, token storage, an SSE reader over fetch, DOM helpers.
"use strict";

window.SQ = (() => {
  /** An error answer from the API, or a network failure (status 0). */
  class ApiError extends Error {
    constructor(status, code, message, details, retryAfter) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = Array.isArray(details) ? details : [];
      this.retryAfter = retryAfter;
    }
  }

  /** Retry-After in whole seconds (delta-seconds or an HTTP date), or null. */
  function parseRetryAfter(value) {
    if (!value) return null;
    if (/^\d+$/.test(value.trim())) return Number(value.trim());
    const when = Date.parse(value);
    return Number.isNaN(when) ? null : Math.max(0, Math.ceil((when - Date.now()) / 1000));
  }

  async function errorFrom(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      // Not our JSON error body (a proxy's page, say): the status line has to do.
    }
    const error = (body && body.error) || {};
    return new ApiError(
      response.status,
      error.code || `http_${response.status}`,
      error.message || response.statusText || `HTTP ${response.status}`,
      error.details,
      parseRetryAfter(response.headers.get("Retry-After")),
    );
  }

  function authHeaders(token) {
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  /**
   * A JSON call; resolves to {status, headers, body}, rejects with ApiError.
   * The token travels only in the Authorization header, never in the URL.
   */
  async function api(path, { method = "GET", token = null, body, headers = {}, signal } = {}) {
    const init = { method, headers: { ...authHeaders(token), ...headers }, cache: "no-store", signal };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "network", "Could not reach the server; check the connection.", [], null);
    }
    if (!response.ok && response.status !== 304) throw await errorFrom(response);
    const parsed = response.status === 204 || response.status === 304 ? null : await response.json();
    return { status: response.status, headers: response.headers, body: parsed };
  }

  /** A binary resource (the sprite PNG) with the Authorization header, as a Blob. */
  async function fetchBlob(path, token, signal) {
    let response;
    try {
      response = await fetch(path, { headers: authHeaders(token), signal });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "network", "Could not reach the server; check the connection.", [], null);
    }
    if (!response.ok) throw await errorFrom(response);
    return response.blob();
  }

  /** Split complete lines off an SSE buffer; a trailing CR may be half of a CRLF, so it waits. */
  function splitLines(buffer) {
    const lines = [];
    let start = 0;
    for (let i = 0; i < buffer.length; i += 1) {
      const char = buffer[i];
      if (char === "\n") {
        lines.push(buffer.slice(start, i));
        start = i + 1;
      } else if (char === "\r") {
        if (i + 1 === buffer.length) break;
        lines.push(buffer.slice(start, i));
        if (buffer[i + 1] === "\n") i += 1;
        start = i + 1;
      }
    }
    return { lines, rest: buffer.slice(start) };
  }

  /**
   * Read a text/event-stream body (the WHATWG event-stream format), calling onEvent with
   * {event, data, id} for each dispatched event; resolves when the server closes the stream.
   * fetch() is used instead of EventSource because EventSource cannot send headers.
   */
  async function readEventStream(response, onEvent) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let type = "";
    let data = [];
    let lastId = null;
    const handle = (line) => {
      if (line === "") {
        if (data.length) onEvent({ event: type || "message", data: data.join("\n"), id: lastId });
        type = "";
        data = [];
        return;
      }
      if (line.startsWith(":")) return; // a comment: the server's keep-alive ping
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "event") type = value;
      else if (name === "data") data.push(value);
      else if (name === "id" && !value.includes("\0")) lastId = value;
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const { lines, rest } = splitLines(buffer + value);
      buffer = rest;
      lines.forEach(handle);
    }
  }

  /** sessionStorage-backed value: gone when the tab closes, never shared with other tabs. */
  function sessionValue(key) {
    return {
      get: () => sessionStorage.getItem(key),
      set: (value) => sessionStorage.setItem(key, value),
      clear: () => sessionStorage.removeItem(key),
    };
  }

  /**
   * The sign-in form of both pages: the pasted token is tried on ``probePath`` before it is
   * kept, so a wrong one is refused at once with ``describe(error)``, not on a later call.
   */
  function bindSignIn({ form, input, error, token, probePath, describe, onSignedIn }) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) {
        error.textContent = "Paste a token first.";
        return;
      }
      try {
        await api(probePath, { token: value });
      } catch (problem) {
        error.textContent = describe(problem);
        return;
      }
      input.value = "";
      token.set(value);
      onSignedIn();
    });
  }

  /** Build an element: h("a", {class: "x", href: "/"}, "text", child). Text is never HTML. */
  function h(tag, props = {}, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") element.className = value;
      else if (name === "text") element.textContent = value;
      else if (name === "dataset") Object.assign(element.dataset, value);
      else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
      else element.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return element;
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      if (signal) signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }

  function formatSeconds(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
    if (seconds < 1) return "< 1 s";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  function formatAgo(epochSeconds) {
    if (!epochSeconds) return "";
    const ago = Date.now() / 1000 - epochSeconds;
    if (ago < 5) return "just now";
    if (ago < 3600 * 20) return `${formatSeconds(ago)} ago`;
    return new Date(epochSeconds * 1000).toLocaleString();
  }

  function formatTime(epochSeconds) {
    return epochSeconds ? new Date(epochSeconds * 1000).toLocaleString() : "";
  }

  let toastTimer = null;
  function toast(message, kind = "info") {
    const box = document.getElementById("toast");
    if (!box) return;
    box.textContent = message;
    box.dataset.kind = kind;
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 4000);
  }

  /** Keep the header's queue chip current (GET /v1/queue is public: no token needed). */
  function watchQueueChip(element, everyMs = 5000) {
    const tick = async () => {
      if (!document.hidden) {
        try {
          const { body } = await api("/v1/queue");
          element.dataset.state = body.state;
          element.textContent = `Queue ${body.state} · ${body.waiting} waiting · wait ${formatSeconds(body.estimated_wait_s)}`;
        } catch {
          element.dataset.state = "unknown";
          element.textContent = "Queue unavailable";
        }
      }
      setTimeout(tick, everyMs);
    };
    tick();
  }

  return {
    ApiError,
    api,
    fetchBlob,
    readEventStream,
    sessionValue,
    bindSignIn,
    h,
    sleep,
    formatSeconds,
    formatAgo,
    formatTime,
    toast,
    watchQueueChip,
  };
})();
