// moonbus web console (SPEC §11): hand-written, no build step, no external file.
//
// Why it is shaped like this:
// - The token comes from the URL fragment (#token=..., never sent to the server,
//   removed from the address bar at once) or from the login form, and is kept in
//   sessionStorage: one tab, gone when the tab closes.
// - The live streams are Server-Sent Events read with fetch(), because
//   EventSource cannot send the Authorization header. The reader reconnects
//   with Last-Event-ID, so the server resumes from its event log with no gap.
// - Everything from the server is shown with textContent, never as HTML: event
//   data, log lines and shared values are written by scripts.
// - One "session" object per login owns every timer and fetch (one
//   AbortController); logging out or a 401 closes it and nothing keeps running.
(function () {
  "use strict";

  const TOKEN_KEY = "moonbus.token";
  const POLL_MS = 1000;          // /api/scripts (and shared values) refresh
  const RENDER_MS = 100;         // feed/log DOM batch interval (1,000 events/s stay cheap)
  const FEED_SHOWN = 200;        // feed rows in the DOM
  const FEED_KEPT = 2000;        // events kept for re-filtering
  const LOG_KEPT = 500;          // log lines kept
  const LOG_TAIL = 200;          // lines of history asked for at login
  const LATENCY_KEPT = 100000;   // receipt-latency samples kept (ring)
  const CHART_SECONDS = 60;
  const RECONNECT_MIN_MS = 250;
  const RECONNECT_MAX_MS = 8000;
  const ACTIVE = ["starting", "running", "stopping"];
  const LEVELS = { debug: 10, info: 20, warn: 30, warning: 30, error: 40 };

  const $ = (id) => document.getElementById(id);

  class AuthError extends Error {}
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // ---- latency probe (read by the browser tests and the latency benchmark) ----
  const latency = { samples: new Float64Array(LATENCY_KEPT), count: 0 };
  function nowMs() {
    return performance.timeOrigin + performance.now();
  }
  function recordLatency(ts) {
    if (typeof ts !== "number") return;
    latency.samples[latency.count % LATENCY_KEPT] = nowMs() - ts;
    latency.count += 1;
  }
  window.moonbusConsole = Object.freeze({
    // Receipt time minus the event's ts (ms), oldest first, at most LATENCY_KEPT.
    latencies() {
      const n = Math.min(latency.count, LATENCY_KEPT);
      const out = new Array(n);
      const start = latency.count - n;
      for (let i = 0; i < n; i += 1) out[i] = latency.samples[(start + i) % LATENCY_KEPT];
      return out;
    },
    resetLatencies() {
      latency.count = 0;
    },
    received() {
      return session ? session.received : 0;
    },
  });

  // ---- token ----
  function tokenFromFragment() {
    const hash = window.location.hash.replace(/^#/, "");
    if (!hash) return null;
    const params = new URLSearchParams(hash);
    const token = params.get("token");
    if (token === null) return null;
    // Out of the address bar (and the history entry) before anything else runs.
    history.replaceState(null, "", window.location.pathname + window.location.search);
    return token;
  }

  // ---- session: everything that runs while logged in ----
  let session = null;

  function newSession(token) {
    return {
      token,
      abort: new AbortController(),
      timers: new Set(),  // pending setTimeout ids (cleared at close)
      closed: false,
      received: 0,
      feed: [],           // kept events, oldest first
      feedPending: 0,     // events kept but not rendered yet
      pausedSince: 0,     // events that arrived while paused
      logs: [],
      logsDirty: false,
      perSecond: new Map(),
      streams: { events: "connecting", logs: "connecting" },
      selected: null,
    };
  }

  function closeSession() {
    if (!session) return;
    session.closed = true;
    session.abort.abort();
    for (const timer of session.timers) clearTimeout(timer);
    session = null;
  }

  function later(s, fn, ms) {
    if (s.closed) return;
    const timer = setTimeout(() => {
      s.timers.delete(timer);
      fn();
    }, ms);
    s.timers.add(timer);
  }

  function sleep(s, ms) {
    return new Promise((resolve) => later(s, resolve, ms));
  }

  async function api(s, path, options) {
    const init = Object.assign({ cache: "no-store", signal: s.abort.signal }, options || {});
    init.headers = Object.assign(
      { Authorization: "Bearer " + s.token, Accept: "application/json" },
      (options && options.headers) || {},
    );
    const resp = await fetch(path, init);
    const text = await resp.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_err) {
      body = null;
    }
    const message = body && typeof body.error === "string" ? body.error : `HTTP ${resp.status}`;
    if (resp.status === 401) throw new AuthError(message);
    if (!resp.ok) throw new ApiError(resp.status, message);
    return body;
  }

  // ---- login / logout ----
  function showLogin(error) {
    $("console").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    const box = $("login-error");
    box.textContent = error || "";
    box.hidden = !error;
    setConn("offline");
    $("token-input").focus();
  }

  function describeLoginError(err) {
    if (err instanceof AuthError) return `The server refused this token: ${err.message}`;
    if (err instanceof ApiError && err.status === 429) {
      return `Too many wrong tokens from this address; wait and try again (${err.message})`;
    }
    if (err instanceof ApiError) return `The server answered ${err.status}: ${err.message}`;
    return `Cannot reach the server: ${err.message}`;
  }

  async function login(token) {
    closeSession();
    const s = newSession(token);
    session = s;
    setConn("connecting");
    let body;
    try {
      body = await api(s, "api/scripts");
    } catch (err) {
      if (s.closed) return;
      closeSession();
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(describeLoginError(err));
      return;
    }
    if (s.closed) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login").hidden = true;
    $("login-error").hidden = true;
    $("console").hidden = false;
    $("logout").hidden = false;
    resetPanels();
    renderScripts(s, body.scripts || []);
    later(s, () => pollLoop(s), POLL_MS);
    streamLoop(s, "events", () => "api/stream/events", (msg) => onEventMessage(s, msg));
    // The log stream starts with the last lines the server kept; a reconnect
    // asks for none (the tail is already shown).
    streamLoop(s, "logs", (first) => `api/stream/logs?tail=${first ? LOG_TAIL : 0}`,
      (msg) => onLogMessage(s, msg));
    renderLoop(s);
    chartLoop(s);
    refreshShared(s);
  }

  function lostAuth(s, err) {
    if (s.closed) return;
    closeSession();
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(`The server no longer accepts this token: ${err.message}`);
  }

  function resetPanels() {
    $("scripts-body").textContent = "";
    $("feed").textContent = "";
    $("log-tail").textContent = "";
    $("shared-values").tBodies[0].textContent = "";
    $("shared-script").textContent = "(select a script)";
    $("action-message").textContent = "";
    $("feed-count").textContent = "0 received";
    setPaused(false);
  }

  // ---- connection indicator ----
  function setConn(state) {
    const el = $("conn-status");
    el.dataset.state = state;
    el.textContent = state;
  }

  function setStreamState(s, name, state) {
    if (s.closed) return;
    s.streams[name] = state;
    const states = Object.values(s.streams);
    if (states.every((v) => v === "live")) setConn("live");
    else if (states.some((v) => v === "reconnecting")) setConn("reconnecting");
    else setConn("connecting");
  }

  // ---- SSE over fetch ----
  async function streamLoop(s, name, pathFor, onMessage) {
    let lastId = null;
    let first = true;
    let backoff = RECONNECT_MIN_MS;
    while (!s.closed) {
      const headers = { Authorization: "Bearer " + s.token, Accept: "text/event-stream" };
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      try {
        const resp = await fetch(pathFor(first), { headers, cache: "no-store", signal: s.abort.signal });
        if (resp.status === 401) {
          let message = "HTTP 401";
          try {
            message = (await resp.json()).error || message;
          } catch (_err) {
            // keep the status line
          }
          lostAuth(s, new AuthError(message));
          return;
        }
        if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
        setStreamState(s, name, "live");
        first = false;
        backoff = RECONNECT_MIN_MS;
        lastId = await readEvents(s, resp.body, lastId, onMessage);
      } catch (err) {
        if (s.closed) return;
        if (err && err.lastId !== undefined) lastId = err.lastId;
      }
      setStreamState(s, name, "reconnecting");
      await sleep(s, backoff);
      backoff = Math.min(backoff * 2, RECONNECT_MAX_MS);
    }
  }

  // Reads one stream's body with the SSE parser (sse.js) and returns the
  // last event id seen when the stream ends.
  async function readEvents(s, body, lastId, onMessage) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    const parser = new window.MoonbusSse.SseParser(lastId);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || s.closed) break;
        for (const msg of parser.push(decoder.decode(value, { stream: true }))) onMessage(msg);
      }
    } catch (err) {
      err.lastId = parser.lastId;
      throw err;
    } finally {
      reader.releaseLock();
    }
    return parser.lastId;
  }

  // ---- event feed ----
  function onEventMessage(s, msg) {
    if (msg.event === "dropped") {
      let reason = msg.data;
      try {
        reason = JSON.parse(msg.data).reason || reason;
      } catch (_err) {
        // show the raw text
      }
      showFeedNote(`the server dropped this feed (${reason}); resuming from the event log`);
      return;
    }
    if (msg.event !== "event") return;
    let ev;
    try {
      ev = JSON.parse(msg.data);
    } catch (_err) {
      return;
    }
    recordLatency(ev.ts);
    s.received += 1;
    const second = Math.floor(Date.now() / 1000);
    s.perSecond.set(second, (s.perSecond.get(second) || 0) + 1);
    s.feed.push(ev);
    if (s.feed.length > FEED_KEPT) s.feed.splice(0, s.feed.length - FEED_KEPT);
    if (feedState.paused) s.pausedSince += 1;
    else s.feedPending += 1;
  }

  const feedState = { paused: false, pattern: "*" };

  function showFeedNote(text) {
    const note = $("feed-paused-note");
    note.textContent = text;
    note.hidden = false;
  }

  function checkPattern(pattern) {
    // The bus's rules (moonbus.bus.patterns): "*", "prefix*" or an exact type.
    if (pattern === "*") return null;
    const name = pattern.endsWith("*") ? pattern.slice(0, -1) : pattern;
    if (!name || name.length > 128) return "a type is 1..128 characters";
    if (name.includes("*")) return "'*' only at the end";
    if (/\s/.test(name)) return "no spaces in a type";
    return null;
  }

  function matches(pattern, type) {
    if (pattern === "*") return true;
    if (pattern.endsWith("*")) return type.startsWith(pattern.slice(0, -1));
    return pattern === type;
  }

  function feedItem(ev) {
    const li = document.createElement("li");
    li.dataset.type = ev.type;
    li.dataset.seq = String(ev.seq);
    const head = document.createElement("span");
    head.className = "ev-head";
    head.textContent = `#${ev.seq} tick ${ev.tick === null ? "-" : ev.tick} `;
    const type = document.createElement("span");
    type.className = "ev-type";
    type.textContent = ev.type;
    const data = document.createElement("span");
    data.className = "ev-data";
    let text = JSON.stringify(ev.data);
    if (text && text.length > 240) text = text.slice(0, 240) + "…";
    data.textContent = " " + (text || "");
    li.append(head, type, data);
    return li;
  }

  function renderFeed(s, full) {
    const list = $("feed");
    const pattern = feedState.pattern;
    const fresh = full ? s.feed : s.feed.slice(Math.max(0, s.feed.length - s.feedPending));
    s.feedPending = 0;
    const shown = [];
    for (let i = fresh.length - 1; i >= 0 && shown.length < FEED_SHOWN; i -= 1) {
      if (matches(pattern, fresh[i].type)) shown.push(feedItem(fresh[i]));
    }
    if (full) list.textContent = "";
    if (shown.length > 0) list.prepend(...shown);
    while (list.childElementCount > FEED_SHOWN) list.lastElementChild.remove();
    $("feed-count").textContent = `${s.received} received`;
  }

  function setPaused(paused) {
    feedState.paused = paused;
    const button = $("feed-pause");
    button.textContent = paused ? "Resume" : "Pause";
    button.setAttribute("aria-pressed", paused ? "true" : "false");
    $("console").classList.toggle("paused", paused);
    const note = $("feed-paused-note");
    note.hidden = !paused;
    note.textContent = paused ? "paused: 0 new" : "";
    if (!paused && session) {
      session.pausedSince = 0;
      renderFeed(session, true);
    }
  }

  function applyFilter() {
    const input = $("feed-filter");
    const pattern = input.value.trim() || "*";
    const problem = checkPattern(pattern);
    const box = $("feed-filter-error");
    box.hidden = problem === null;
    box.textContent = problem === null ? "" : `not a type pattern: ${problem}`;
    input.setAttribute("aria-invalid", problem === null ? "false" : "true");
    if (problem !== null || pattern === feedState.pattern) return;
    feedState.pattern = pattern;
    $("feed").dataset.filter = pattern;
    if (session && !feedState.paused) renderFeed(session, true);
  }

  // ---- log tail ----
  function onLogMessage(s, msg) {
    if (msg.event !== "log") return;
    let line;
    try {
      line = JSON.parse(msg.data);
    } catch (_err) {
      return;
    }
    s.logs.push(line);
    if (s.logs.length > LOG_KEPT) s.logs.splice(0, s.logs.length - LOG_KEPT);
    s.logsDirty = true;
  }

  function renderLogs(s) {
    s.logsDirty = false;
    const min = LEVELS[$("log-level").value] || 0;
    const list = $("log-tail");
    const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    const items = [];
    for (const line of s.logs) {
      if ((LEVELS[line.level] || 0) < min) continue;
      const li = document.createElement("li");
      li.dataset.level = String(line.level);
      li.dataset.script = String(line.script);
      li.textContent =
        `[${line.tick === null || line.tick === undefined ? "-" : line.tick}] ` +
        `${line.level} ${line.script}/${line.engine}: ${line.msg}`;
      items.push(li);
    }
    list.replaceChildren(...items);
    if (stick) list.scrollTop = list.scrollHeight;
  }

  function renderLoop(s) {
    if (s.closed) return;
    if (s.feedPending > 0 && !feedState.paused) renderFeed(s, false);
    if (feedState.paused) {
      $("feed-paused-note").textContent = `paused: ${s.pausedSince} new`;
      $("feed-count").textContent = `${s.received} received`;
    }
    if (s.logsDirty) renderLogs(s);
    later(s, () => renderLoop(s), RENDER_MS);
  }

  // ---- events-per-second chart (canvas, drawn by hand) ----
  function chartLoop(s) {
    if (s.closed) return;
    drawChart(s);
    later(s, () => chartLoop(s), 1000 - (Date.now() % 1000) + 5);
  }

  function drawChart(s) {
    const canvas = $("rate-chart");
    const ctx = canvas.getContext("2d");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(width * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const now = Math.floor(Date.now() / 1000);
    for (const key of s.perSecond.keys()) if (key < now - CHART_SECONDS) s.perSecond.delete(key);
    const counts = [];
    for (let t = now - CHART_SECONDS; t < now; t += 1) counts.push(s.perSecond.get(t) || 0);
    const last = counts[counts.length - 1];
    $("rate-now").textContent = `${last}/s`;
    canvas.dataset.last = String(last);
    const style = getComputedStyle(canvas);
    const top = Math.max(1, ...counts);
    ctx.clearRect(0, 0, width, height);
    const barWidth = width / CHART_SECONDS;
    ctx.fillStyle = style.color;
    counts.forEach((n, i) => {
      const h = Math.round((n / top) * (height - 14));
      ctx.fillRect(i * barWidth + 0.5, height - h, Math.max(1, barWidth - 1), h);
    });
    ctx.fillStyle = style.getPropertyValue("--chart-label") || "#888";
    ctx.font = "11px sans-serif";
    ctx.textBaseline = "top";
    ctx.fillText(`max ${top}/s`, 2, 0);
  }

  // ---- scripts table and shared values ----
  async function pollLoop(s) {
    if (s.closed) return;
    try {
      const body = await api(s, "api/scripts");
      if (!s.closed) renderScripts(s, body.scripts || []);
      await refreshShared(s);
    } catch (err) {
      if (err instanceof AuthError) {
        lostAuth(s, err);
        return;
      }
      if (!s.closed) $("action-message").textContent = `scripts: ${err.message}`;
    }
    later(s, () => pollLoop(s), POLL_MS);
  }

  function cell(row, name) {
    return row.querySelector(`td[data-test="${name}"]`);
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function newScriptRow(s, name) {
    const row = document.createElement("tr");
    row.dataset.script = name;
    for (const key of ["name", "status", "uptime", "polls", "handler-errors", "stats", "errors"]) {
      const td = document.createElement("td");
      td.dataset.test = key;
      row.append(td);
    }
    const actions = document.createElement("td");
    actions.dataset.test = "actions";
    for (const action of ["start", "stop", "reload"]) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.action = action;
      button.textContent = action;
      button.addEventListener("click", (e) => {
        e.stopPropagation();
        runAction(s, name, action, row);
      });
      actions.append(button);
    }
    row.append(actions);
    row.addEventListener("click", () => select(s, name));
    return row;
  }

  function formatStats(stats) {
    return Object.keys(stats || {})
      .sort()
      .map((k) => `${k}: ${typeof stats[k] === "string" ? stats[k] : JSON.stringify(stats[k])}`)
      .join("\n");
  }

  function renderScripts(s, scripts) {
    const body = $("scripts-body");
    const seen = new Set();
    for (const info of scripts) {
      seen.add(info.name);
      let row = body.querySelector(`tr[data-script="${CSS.escape(info.name)}"]`);
      if (!row) row = newScriptRow(s, info.name);
      body.append(row); // keeps load order
      row.dataset.status = info.status;
      setText(cell(row, "name"), info.name);
      setText(cell(row, "status"), info.status);
      cell(row, "status").dataset.status = info.status;
      setText(cell(row, "uptime"), `${Number(info.uptime || 0).toFixed(1)} s`);
      setText(cell(row, "polls"), String(info.polls));
      setText(cell(row, "handler-errors"), String(info.handler_errors));
      setText(cell(row, "stats"), formatStats(info.stats));
      const errors = info.errors || [];
      setText(cell(row, "errors"), errors.length ? errors[errors.length - 1] : "");
      if (!row.dataset.busy) {
        const active = ACTIVE.includes(info.status);
        row.querySelector('button[data-action="start"]').disabled = active;
        row.querySelector('button[data-action="stop"]').disabled =
          !(info.status === "starting" || info.status === "running");
        row.querySelector('button[data-action="reload"]').disabled = false;
      }
      row.classList.toggle("selected", s.selected === info.name);
    }
    for (const row of Array.from(body.rows)) if (!seen.has(row.dataset.script)) row.remove();
    if (s.selected === null && scripts.length > 0) select(s, scripts[0].name);
  }

  async function runAction(s, name, action, row) {
    row.dataset.busy = "1";
    for (const b of row.querySelectorAll("button")) b.disabled = true;
    const out = $("action-message");
    try {
      const body = await api(s, `api/scripts/${encodeURIComponent(name)}/${action}`, { method: "POST" });
      out.dataset.outcome = "ok";
      out.textContent = `${name}: ${body.message || body.status}`;
    } catch (err) {
      if (err instanceof AuthError) {
        lostAuth(s, err);
        return;
      }
      out.dataset.outcome = "error";
      out.textContent = `${name} ${action}: ${err.message}`;
    }
    delete row.dataset.busy;
    try {
      const body = await api(s, "api/scripts");
      renderScripts(s, body.scripts || []);
    } catch (_err) {
      // the poll loop reports and retries
    }
  }

  function select(s, name) {
    s.selected = name;
    setText($("shared-script"), name);
    for (const row of $("scripts-body").rows) row.classList.toggle("selected", row.dataset.script === name);
    refreshShared(s);
  }

  async function refreshShared(s) {
    const name = s.selected;
    if (name === null || s.closed) return;
    const box = $("shared-error");
    let body;
    try {
      body = await api(s, `api/scripts/${encodeURIComponent(name)}/shared`);
    } catch (err) {
      if (err instanceof AuthError) {
        lostAuth(s, err);
        return;
      }
      if (s.closed || s.selected !== name) return;
      box.hidden = false;
      box.textContent = `shared values: ${err.message}`;
      return;
    }
    if (s.closed || s.selected !== name) return;
    box.hidden = true;
    const shared = body.shared || {};
    const rows = Object.keys(shared)
      .sort()
      .map((key) => {
        const tr = document.createElement("tr");
        tr.dataset.key = key;
        const k = document.createElement("th");
        k.textContent = key;
        const v = document.createElement("td");
        const value = shared[key];
        v.textContent = typeof value === "string" ? value : JSON.stringify(value);
        tr.append(k, v);
        return tr;
      });
    const tbody = $("shared-values").tBodies[0];
    const before = Array.from(tbody.rows, (r) => r.textContent).join("\n");
    const after = rows.map((r) => r.textContent).join("\n");
    if (before !== after) tbody.replaceChildren(...rows);
    $("shared-values").dataset.script = name;
  }

  // ---- wiring ----
  function start() {
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const token = $("token-input").value.trim();
      $("token-input").value = "";
      if (token) login(token);
    });
    $("logout").addEventListener("click", () => {
      closeSession();
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(null);
    });
    $("feed-pause").addEventListener("click", () => setPaused(!feedState.paused));
    $("feed-filter").addEventListener("input", applyFilter);
    $("log-level").addEventListener("change", () => {
      if (session) renderLogs(session);
    });
    window.addEventListener("hashchange", () => {
      const token = tokenFromFragment();
      if (token) login(token);
    });
    const token = tokenFromFragment() || sessionStorage.getItem(TOKEN_KEY);
    if (token) login(token);
    else showLogin(null);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
