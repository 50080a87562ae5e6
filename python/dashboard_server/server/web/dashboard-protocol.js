// dashboard-protocol.js: the client side of dashboard-server's WebSocket protocol.
//
// A standalone ES module with no DOM dependency (it runs in browsers and in node >= 20):
//
//   DashboardState       the reconstructed state document: applies snapshot / update / event
//                        messages and checks the group sequence number (docs/protocol.md).
//   DashboardConnection  a WebSocket connection that feeds a DashboardState, sends `refresh` on a
//                        gap, measures round-trip latency with `ping`, detects staleness, and
//                        reconnects with exponential backoff and jitter, resuming with
//                        since=<version>&epoch=<epoch>. `serverStatus` is the server's last
//                        `status` message (its feed, sources and stale sections).
//   serverHealth         what a `status` message means for a page: demo, ok, degraded, down.
//   helpers              parsePointer, applyChanges, applyJsonPatch, setMember, touchedItems,
//                        buildUrl.
//
// docs/web.md documents the API; the dashboard page (app.js) is one user of it.

import { decodeMsgpack } from "./msgpack.js";

/** Message types that carry the group `seq`; `pong`, `error`, `events` and `status` do not. */
export const GROUP_TYPES = new Set(["snapshot", "update", "event"]);

/** HTTP statuses of a refused handshake that retrying cannot fix (found by probing, see below). */
export const FATAL_HTTP_STATUSES = new Set([400, 401, 403, 404]);

/**
 * Close codes after which the connection does not retry on its own (docs/protocol.md: 4002 "too
 * many bad messages" must not be retried blindly; 1008 is the WebSocket "policy violation").
 * Every other close (1001 going away, 1006 abnormal, 1011, 4001 lagging, ...) reconnects.
 */
export const FATAL_CLOSE_CODES = new Set([1008, 4002]);

/** Outcomes of DashboardState.apply(). */
export const Outcome = Object.freeze({
  APPLIED: "applied", // a snapshot or update was applied: the state is current
  EVENT: "event", // an event was recorded
  GAP: "gap", // a sequence gap or an update that does not apply: send `refresh`
  IGNORED: "ignored", // an update that arrived while waiting for a snapshot
  CONTROL: "control", // a message without seq (pong, error, unknown): state untouched
});

export class PatchError extends Error {}

// --- JSON Pointer and diff application -------------------------------------------------------

/** RFC 6901: "" -> [], "/a~1b/c~0" -> ["a/b", "c~"]. Throws PatchError when malformed. */
export function parsePointer(pointer) {
  if (pointer === "") return [];
  if (typeof pointer !== "string" || pointer[0] !== "/") {
    throw new PatchError(`invalid JSON pointer ${JSON.stringify(pointer)}`);
  }
  return pointer
    .slice(1)
    .split("/")
    .map((t) => {
      if (/~[^01]|~$/.test(t)) throw new PatchError(`invalid escape in ${JSON.stringify(pointer)}`);
      return t.replace(/~1/g, "/").replace(/~0/g, "~");
    });
}

/** The pointer of a token list (inverse of parsePointer). */
export function formatPointer(tokens) {
  return tokens.map((t) => "/" + String(t).replace(/~/g, "~0").replace(/\//g, "~1")).join("");
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const own = (o, k) => Object.prototype.hasOwnProperty.call(o, k);

/**
 * `obj[key] = value` as an own, enumerable member, `__proto__` included: a plain assignment of
 * `__proto__` would set the object's prototype (or do nothing) instead of storing the data.
 */
export function setMember(obj, key, value) {
  if (key === "__proto__") {
    Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  } else {
    obj[key] = value;
  }
}

/**
 * Apply an update in the `changes` form to `root` (mutated in place): first every pointer of
 * `removed` is deleted (if present), then every `changes` entry sets the subtree at its pointer,
 * creating missing parent objects. Returns the new root (a change at "" replaces it).
 */
export function applyChanges(root, msg) {
  for (const pointer of msg.removed || []) {
    const tokens = parsePointer(pointer);
    if (tokens.length === 0) continue;
    let node = root;
    for (let i = 0; i < tokens.length - 1 && isObject(node); i++) node = own(node, tokens[i]) ? node[tokens[i]] : undefined;
    if (isObject(node)) delete node[tokens[tokens.length - 1]];
  }
  const changes = msg.changes || {};
  for (const pointer of Object.keys(changes)) {
    const value = changes[pointer];
    const tokens = parsePointer(pointer);
    if (tokens.length === 0) {
      if (!isObject(value)) throw new PatchError("a change at the root must be an object");
      root = value;
      continue;
    }
    let node = root;
    for (let i = 0; i < tokens.length - 1; i++) {
      const t = tokens[i];
      if (!own(node, t)) setMember(node, t, {});
      else if (!isObject(node[t])) throw new PatchError(`${pointer}: ${JSON.stringify(t)} is not an object`);
      node = node[t];
    }
    setMember(node, tokens[tokens.length - 1], value);
  }
  return root;
}

function arrayIndex(token, size, allowEnd, pointer) {
  if (allowEnd && token === "-") return size;
  if (!/^(0|[1-9][0-9]*)$/.test(token)) throw new PatchError(`${pointer}: bad array index ${JSON.stringify(token)}`);
  const i = Number(token);
  if (i > size || (!allowEnd && i === size)) throw new PatchError(`${pointer}: index ${i} out of range`);
  return i;
}

/**
 * Apply an RFC 6902 patch strictly (add, replace, remove, test, move, copy) to `doc` (mutated in
 * place where possible). Returns the new document. Throws PatchError when an op does not apply.
 */
export function applyJsonPatch(doc, patch) {
  const resolve = (tokens, pointer) => {
    let node = doc;
    for (const t of tokens.slice(0, -1)) {
      if (Array.isArray(node)) node = node[arrayIndex(t, node.length, false, pointer)];
      else if (isObject(node) && own(node, t)) node = node[t];
      else throw new PatchError(`${pointer}: path not found`);
    }
    if (!isObject(node) && !Array.isArray(node)) throw new PatchError(`${pointer}: parent is not a container`);
    return node;
  };
  const get = (pointer) => {
    const tokens = parsePointer(pointer);
    if (tokens.length === 0) return doc;
    const parent = resolve(tokens, pointer);
    const last = tokens[tokens.length - 1];
    if (Array.isArray(parent)) return parent[arrayIndex(last, parent.length, false, pointer)];
    if (!own(parent, last)) throw new PatchError(`${pointer}: path not found`);
    return parent[last];
  };
  const put = (pointer, value, op) => {
    const tokens = parsePointer(pointer);
    if (tokens.length === 0) { doc = value; return; }
    const parent = resolve(tokens, pointer);
    const last = tokens[tokens.length - 1];
    if (Array.isArray(parent)) {
      if (op === "add") parent.splice(arrayIndex(last, parent.length, true, pointer), 0, value);
      else parent[arrayIndex(last, parent.length, false, pointer)] = value;
    } else {
      if (op === "replace" && !own(parent, last)) throw new PatchError(`${pointer}: replace of a missing member`);
      setMember(parent, last, value);
    }
  };
  const del = (pointer) => {
    const tokens = parsePointer(pointer);
    if (tokens.length === 0) throw new PatchError("cannot remove the root");
    const parent = resolve(tokens, pointer);
    const last = tokens[tokens.length - 1];
    if (Array.isArray(parent)) parent.splice(arrayIndex(last, parent.length, false, pointer), 1);
    else if (own(parent, last)) delete parent[last];
    else throw new PatchError(`${pointer}: remove of a missing member`);
  };
  for (const op of patch) {
    switch (op.op) {
      case "add": case "replace": put(op.path, op.value, op.op); break;
      case "remove": del(op.path); break;
      case "test":
        if (JSON.stringify(get(op.path)) !== JSON.stringify(op.value)) throw new PatchError(`${op.path}: test failed`);
        break;
      case "move": { const v = get(op.from); del(op.from); put(op.path, v, "add"); break; }
      case "copy": put(op.path, structuredClone(get(op.from)), "add"); break;
      default: throw new PatchError(`${op.path}: unsupported operation ${JSON.stringify(op.op)}`);
    }
  }
  return doc;
}

/**
 * Which items a snapshot/update touched, for incremental rendering:
 * `null` for a snapshot (everything), else a Map section -> Set of item ids, or -> null when the
 * whole section was set or removed.
 */
export function touchedItems(msg) {
  if (msg.type === "snapshot") return null;
  const out = new Map();
  const mark = (pointer) => {
    const tokens = parsePointer(pointer);
    if (tokens.length === 0) { out.clear(); out.set("*", null); return; }
    const [section, id] = tokens;
    if (id === undefined) { out.set(section, null); return; }
    let ids = out.get(section);
    if (ids === null) return;
    if (ids === undefined) out.set(section, (ids = new Set()));
    ids.add(id);
  };
  if (Array.isArray(msg.patch)) for (const op of msg.patch) mark(op.path);
  for (const p of msg.removed || []) mark(p);
  for (const p of Object.keys(msg.changes || {})) mark(p);
  return out;
}

/** `base` (ws:// or wss:// URL) with `params` merged into its query (undefined/null skipped). */
export function buildUrl(base, params) {
  const url = new URL(base);
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") url.searchParams.delete(k);
    else url.searchParams.set(k, String(v));
  }
  return url.toString();
}

/** Decode one frame: JSON text, or MessagePack in a binary frame (ArrayBuffer/Uint8Array). */
export function decodeFrame(data) {
  if (typeof data === "string") return JSON.parse(data);
  return decodeMsgpack(data);
}

// --- DashboardState ---------------------------------------------------------------------------

/**
 * The reconstructed state document of one client. I/O-free. Call connectionReset() whenever a
 * new connection starts: its first group message sets `seq` instead of being checked against it.
 * Every snapshot replaces data and seq; every later snapshot/update/event must carry seq+1,
 * otherwise apply() returns Outcome.GAP and updates are ignored until the next snapshot.
 */
export class DashboardState {
  constructor({ maxEvents = 500 } = {}) {
    this.data = {};
    this.seq = null;
    this.version = null;
    this.epoch = null;
    this.timestamp = null; // of the last snapshot/update applied
    this.awaitingSnapshot = true;
    this.maxEvents = maxEvents;
    this.events = []; // newest last, at most maxEvents
    this.gaps = 0;
    this.snapshots = 0;
    this.updates = 0;
    this.eventsReceived = 0;
    this.ignored = 0;
    this.lastProblem = null;
    /** The server's last `status` message, or null (see serverHealth()). */
    this.status = null;
    this._fresh = true;
  }

  get synced() { return !this.awaitingSnapshot; }

  // The recent-events backlog the server sends right after a snapshot ({"type":"events"}, no
  // seq): it replaces the kept events, since it already holds the latest ones. Returns them as
  // "event" messages, oldest first.
  recentEvents(msg) {
    const list = (Array.isArray(msg.events) ? msg.events : []).map((e) => ({ type: "event", ...e }));
    this.events = list.slice(-this.maxEvents);
    return this.events;
  }

  connectionReset() { this._fresh = true; }

  // The server's `status` message (no seq; sent after every snapshot and whenever it changes):
  // kept as it is, the newest one wins.
  serverStatus(msg) {
    this.status = msg;
    return msg;
  }

  apply(msg) {
    const kind = msg && msg.type;
    if (!GROUP_TYPES.has(kind)) return Outcome.CONTROL;
    const seq = msg.seq;
    if (!Number.isInteger(seq)) return this._gap(`${kind} without an integer seq`);
    if (kind === "snapshot") return this._snapshot(msg, seq);
    const expected = this._fresh || this.seq === null ? null : this.seq + 1;
    this._fresh = false;
    if (kind === "event") {
      this.events.push(msg);
      if (this.events.length > this.maxEvents) this.events.splice(0, this.events.length - this.maxEvents);
      this.eventsReceived++;
      const wasSynced = !this.awaitingSnapshot;
      this.seq = seq;
      if (expected !== null && seq !== expected && wasSynced) return this._gap(`event seq ${seq}, expected ${expected}`);
      return Outcome.EVENT;
    }
    if (this.awaitingSnapshot) {
      this.ignored++;
      this.seq = seq;
      return Outcome.IGNORED;
    }
    this.seq = seq;
    if (expected !== null && seq !== expected) return this._gap(`update seq ${seq}, expected ${expected}`);
    try {
      if (Array.isArray(msg.patch)) {
        const root = applyJsonPatch(this.data, msg.patch);
        if (!isObject(root)) throw new PatchError("the patch made the document root a non-object");
        this.data = root;
      } else {
        this.data = applyChanges(this.data, msg);
      }
    } catch (err) {
      if (err instanceof PatchError || err instanceof TypeError) return this._gap(`update seq ${seq} does not apply: ${err.message}`);
      throw err;
    }
    if (Number.isInteger(msg.version)) this.version = msg.version;
    if (msg.timestamp) this.timestamp = msg.timestamp;
    this.updates++;
    return Outcome.APPLIED;
  }

  _snapshot(msg, seq) {
    if (!isObject(msg.data)) return this._gap("snapshot without a data object");
    this.data = msg.data;
    this.seq = seq;
    this.version = Number.isInteger(msg.version) ? msg.version : null;
    this.epoch = typeof msg.epoch === "string" ? msg.epoch : null;
    this.timestamp = msg.timestamp || null;
    this.awaitingSnapshot = false;
    this._fresh = false;
    this.snapshots++;
    return Outcome.APPLIED;
  }

  _gap(problem) {
    this.gaps++;
    this.lastProblem = problem;
    this.awaitingSnapshot = true;
    return Outcome.GAP;
  }
}

// --- server status ----------------------------------------------------------------------------

/**
 * What a `status` message (docs/protocol.md) means for a display:
 *   { demo, state: "ok" | "degraded" | "down" | "unknown", stale: [sections], problems: [text] }
 * `problems` names each source that is not ok (with its error) and the stale sections.
 */
export function serverHealth(status) {
  if (!status || typeof status !== "object") return { demo: false, state: "unknown", stale: [], problems: [] };
  const stale = Array.isArray(status.stale) ? status.stale.filter((s) => typeof s === "string") : [];
  const problems = [];
  for (const src of Array.isArray(status.sources) ? status.sources : []) {
    if (src && src.state !== "ok") problems.push(`${src.name} ${src.state}${src.error ? `: ${src.error}` : ""}`);
  }
  if (stale.length) problems.push(`stale: ${stale.join(", ")}`);
  const state = ["ok", "degraded", "down"].includes(status.state) ? status.state : "unknown";
  return { demo: status.feed === "demo", state, stale, problems };
}

// --- DashboardConnection ----------------------------------------------------------------------

/**
 * A live connection to dashboard-server's /ws (see docs/web.md for every option and event).
 *
 *   const conn = new DashboardConnection({ url: "ws://127.0.0.1:8080/ws", format: "json" });
 *   conn.on("update", ({ msg, touched }) => render(conn.state.data, touched));
 *   conn.on("status", (s) => show(s.status, s.stale));
 *   conn.start();
 */
export class DashboardConnection {
  constructor(options = {}) {
    const o = {
      url: "ws://127.0.0.1:8080/ws",
      type: "web",
      format: "json",
      diff: "changes",
      channels: null,
      symbols: null,
      intervalMs: null,
      token: null,
      resume: true,
      pingIntervalMs: 2000,
      staleAfterMs: 5000,
      backoffInitialMs: 500,
      backoffMaxMs: 8000,
      maxEvents: 500,
      WebSocket: globalThis.WebSocket,
      fetch: globalThis.fetch ? globalThis.fetch.bind(globalThis) : null,
      now: () => Date.now(),
      random: Math.random,
      ...options,
    };
    if (!o.WebSocket) throw new Error("no WebSocket implementation (pass options.WebSocket)");
    this.options = o;
    this.state = new DashboardState({ maxEvents: o.maxEvents });
    this.status = "idle"; // idle | connecting | open | reconnecting | refused | closed
    this.stale = false;
    this.stats = {
      messages: 0, bytes: 0, snapshots: 0, updates: 0, events: 0, gaps: 0, refreshesSent: 0,
      reconnects: 0, attempts: 0, rttMs: null, updateRate: 0, messageRate: 0,
      lastMessageAt: null, lastHeardAt: null, connectedAt: null, nextRetryAt: null,
      lastClose: null, lastError: null, refusal: null,
    };
    this._listeners = new Map();
    this._ws = null;
    this._timer = null;
    this._retry = null;
    this._delay = o.backoffInitialMs;
    this._pingId = 0;
    this._pings = new Map();
    this._recent = []; // [time, isUpdate] of recent group messages, for the rates
    this._stopped = true;
    this._everOpened = false;
    this._lastPing = 0;
    // a subscription change waits for its snapshot: until then the state is of the old
    // subscription, and a reconnection must not resume from it
    this._resubscribing = false;
  }

  /** The server's last `status` message (null before the first). */
  get serverStatus() { return this.state.status; }

  /** Subscribe to an event; returns an unsubscribe function. */
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this._listeners.get(name).delete(fn);
  }

  _emit(name, arg) {
    for (const fn of this._listeners.get(name) || []) {
      try { fn(arg); } catch (err) { console.error(`dashboard-protocol: ${name} listener failed`, err); }
    }
  }

  /** The URL of the next connection attempt (with resume parameters when possible). */
  connectUrl() {
    const o = this.options;
    const st = this.state;
    const resume = o.resume && !this._resubscribing && st.synced && st.version !== null
      && st.epoch !== null;
    return buildUrl(o.url, {
      type: o.type, format: o.format, diff: o.diff,
      channels: o.channels ? o.channels.join(",") : null,
      symbols: o.symbols ? o.symbols.join(",") : null,
      interval_ms: o.intervalMs, token: o.token,
      since: resume ? st.version : null, epoch: resume ? st.epoch : null,
    });
  }

  /** Connect (and keep reconnecting until stop()). */
  start() {
    this._stopped = false;
    if (!this._timer) this._timer = setInterval(() => this._tick(), Math.min(500, this.options.pingIntervalMs));
    this._open();
  }

  /** Close for good (code 1000). */
  stop() {
    this._stopped = true;
    clearTimeout(this._retry);
    clearInterval(this._timer);
    this._retry = this._timer = null;
    if (this._ws) { try { this._ws.close(1000, "client stopped"); } catch { /* already closed */ } }
    this._ws = null;
    this._setStatus("closed");
  }

  /** Drop the connection and connect again now (e.g. after a token change). */
  restart() {
    this.stop();
    this._delay = this.options.backoffInitialMs;
    this.stats.refusal = null;
    this.start();
  }

  /** Send a client message (JSON text frame); false when not connected. */
  send(msg) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  refresh() { this.stats.refreshesSent++; return this.send({ type: "refresh" }); }
  subscribe(channels) { return this.send({ type: "subscribe", channels }); }
  unsubscribe(channels) { return this.send({ type: "unsubscribe", channels }); }

  /**
   * Change the symbol filter (docs/protocol.md, "Symbols"): an array of symbols, or null for
   * every symbol. Sends `subscribe`/`unsubscribe` with `symbols` when connected (going back to
   * every symbol needs a new connection: it reconnects); the next connections use the new filter.
   */
  setSymbols(symbols) {
    const o = this.options;
    const next = symbols === null ? null : [...new Set(symbols)];
    if (next !== null && !next.length) throw new Error("setSymbols: empty (null: every symbol)");
    const current = o.symbols;
    o.symbols = next;
    this._resubscribing = true;
    if (next === null) {
      if (current !== null) this.restart();
      else this._resubscribing = false;
      return;
    }
    const added = current === null ? next : next.filter((s) => !current.includes(s));
    const removed = current === null ? [] : current.filter((s) => !next.includes(s));
    if (added.length) this.send({ type: "subscribe", symbols: added });
    if (removed.length) this.send({ type: "unsubscribe", symbols: removed });
    if (!added.length && !removed.length) this._resubscribing = false;
  }

  ping() {
    const id = ++this._pingId;
    this._pings.set(id, this.options.now());
    if (this._pings.size > 20) this._pings.delete(this._pings.keys().next().value);
    return this.send({ type: "ping", payload: { id } });
  }

  _open() {
    if (this._stopped) return;
    const o = this.options;
    this.stats.attempts++;
    this._setStatus(this._everOpened ? "reconnecting" : "connecting");
    let ws;
    const url = this.connectUrl();
    try {
      ws = new o.WebSocket(url);
    } catch (err) {
      this.stats.lastError = String(err && err.message || err);
      this._setStatus("refused");
      this._emit("refused", { status: null, message: this.stats.lastError });
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      opened = true;
      if (this._everOpened) this.stats.reconnects++;
      this._everOpened = true;
      this.stats.connectedAt = o.now();
      this.stats.lastHeardAt = o.now();
      this.stats.nextRetryAt = null;
      this.stats.refusal = null;
      this._delay = o.backoffInitialMs;
      this.state.connectionReset();
      this._setStatus("open");
      this._lastPing = o.now();
      this.ping();
    };
    ws.onmessage = (ev) => { if (this._ws === ws) this._onFrame(ev.data); };
    ws.onerror = () => { /* onclose follows and says more */ };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this.stats.lastClose = { code: ev.code, reason: ev.reason || "", at: o.now(), opened };
      this._emit("close", this.stats.lastClose);
      if (this._stopped) return;
      if (FATAL_CLOSE_CODES.has(ev.code)) {
        this.stats.refusal = { status: null, code: ev.code, message: ev.reason || `closed with ${ev.code}` };
        this._setStatus("refused");
        this._emit("refused", this.stats.refusal);
        return;
      }
      if (!opened) this._probe(url);
      this._scheduleRetry();
    };
  }

  // A browser does not expose why a handshake failed; a plain GET of the same URL does (the
  // server checks the query and the token before the upgrade). Same-origin only in practice.
  async _probe(wsUrl) {
    const f = this.options.fetch;
    if (!f) return;
    try {
      const res = await f(wsUrl.replace(/^ws/, "http"), { cache: "no-store" });
      if (!FATAL_HTTP_STATUSES.has(res.status) || this._stopped || this.status === "open") return;
      let message = `HTTP ${res.status}`;
      try { const body = await res.json(); message = body.message || body.error || message; } catch { /* not JSON */ }
      clearTimeout(this._retry);
      this._retry = null;
      this.stats.nextRetryAt = null;
      this.stats.refusal = { status: res.status, code: null, message };
      this._setStatus("refused");
      this._emit("refused", this.stats.refusal);
    } catch { /* server down, or cross-origin: keep retrying */ }
  }

  _scheduleRetry() {
    const o = this.options;
    const delay = Math.max(100, o.random() * this._delay);
    this._delay = Math.min(o.backoffMaxMs, this._delay * 2);
    this.stats.nextRetryAt = o.now() + delay;
    this._setStatus("reconnecting");
    clearTimeout(this._retry);
    this._retry = setTimeout(() => { this._retry = null; this._open(); }, delay);
  }

  _onFrame(data) {
    const o = this.options;
    const now = o.now();
    this.stats.messages++;
    this.stats.bytes += typeof data === "string" ? data.length : data.byteLength;
    this.stats.lastHeardAt = now;
    let msg;
    try {
      msg = decodeFrame(data);
    } catch (err) {
      this.state.lastProblem = `undecodable message: ${err.message}`;
      this._emit("problem", this.state.lastProblem);
      return;
    }
    const outcome = this.state.apply(msg);
    if (GROUP_TYPES.has(msg.type)) {
      this.stats.lastMessageAt = now;
      this._recent.push([now, msg.type !== "event"]);
    }
    if (outcome === Outcome.GAP) {
      this.stats.gaps++;
      this.refresh();
      this._emit("gap", { msg, problem: this.state.lastProblem });
    } else if (msg.type === "snapshot" && outcome === Outcome.APPLIED) {
      this._resubscribing = false;
      this.stats.snapshots++;
      this._emit("snapshot", { msg, touched: null });
    } else if (msg.type === "update" && outcome === Outcome.APPLIED) {
      this.stats.updates++;
      this._emit("update", { msg, touched: touchedItems(msg) });
    } else if (outcome === Outcome.EVENT) {
      this.stats.events++;
      this._emit("event", msg);
    } else if (msg.type === "events") {
      this._emit("recent-events", this.state.recentEvents(msg));
    } else if (msg.type === "status") {
      this._emit("server-status", this.state.serverStatus(msg));
    } else if (msg.type === "pong") {
      const id = msg.payload && msg.payload.id;
      const sent = this._pings.get(id);
      if (sent !== undefined) {
        this._pings.delete(id);
        this.stats.rttMs = now - sent;
        this._emit("pong", this.stats.rttMs);
      }
    } else if (msg.type === "error") {
      this.stats.lastError = `${msg.code}: ${msg.message}`;
      this._emit("error", msg);
    }
    this._emit("message", { msg, outcome });
    this._updateStale();
  }

  _tick() {
    const o = this.options;
    const now = o.now();
    while (this._recent.length && this._recent[0][0] < now - 5000) this._recent.shift();
    const span = Math.min(5000, Math.max(1000, now - (this.stats.connectedAt || now)));
    this.stats.messageRate = this._recent.length / (span / 1000);
    this.stats.updateRate = this._recent.filter((r) => r[1]).length / (span / 1000);
    if (this.status === "open" && now - this._lastPing >= o.pingIntervalMs) {
      this._lastPing = now;
      this.ping();
    }
    this._updateStale();
    this._emit("tick", this.stats);
  }

  _computeStale() {
    const now = this.options.now();
    return this.status !== "open" || this.state.awaitingSnapshot
      || (this.stats.lastHeardAt !== null && now - this.stats.lastHeardAt > this.options.staleAfterMs);
  }

  _updateStale() {
    const stale = this._computeStale();
    if (stale !== this.stale) {
      this.stale = stale;
      this._emitStatus();
    }
  }

  _setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.stale = this._computeStale();
    this._emitStatus();
  }

  _emitStatus() {
    this._emit("status", { status: this.status, stale: this.stale, stats: this.stats });
  }
}
