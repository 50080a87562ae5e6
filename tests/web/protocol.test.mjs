// Unit tests of dashboard-protocol.js and msgpack.js under node's test runner (no npm packages).
// Run: node --test tests/web/protocol.test.mjs   (tests/web/test_protocol_js.py runs it too)

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  DashboardConnection,
  DashboardState,
  Outcome,
  applyChanges,
  applyJsonPatch,
  buildUrl,
  formatPointer,
  parsePointer,
  serverHealth,
  touchedItems,
} from "../../python/dashboard_server/server/web/dashboard-protocol.js";
import { decodeMsgpack } from "../../python/dashboard_server/server/web/msgpack.js";

const snap = (seq, data, version = 10, epoch = "e1") => ({ type: "snapshot", seq, version, epoch, timestamp: "2026-11-27T10:30:00.100Z", data });
const upd = (seq, changes, removed, version = 11) => ({ type: "update", seq, version, timestamp: "2026-11-27T10:30:00.350Z", changes, ...(removed ? { removed } : {}) });
const ev = (seq, channel = "fills") => ({ type: "event", seq, timestamp: "2026-11-27T10:30:00.200Z", channel, data: { n: seq } });

test("pointers: escapes and errors", () => {
  assert.deepEqual(parsePointer(""), []);
  assert.deepEqual(parsePointer("/a~1b/c~0d/"), ["a/b", "c~d", ""]);
  assert.equal(formatPointer(["a/b", "c~d"]), "/a~1b/c~0d");
  assert.throws(() => parsePointer("a"), /invalid JSON pointer/);
  assert.throws(() => parsePointer("/a~2"), /invalid escape/);
});

test("changes: removals first, then changes; parents created", () => {
  const doc = { orders: { 1: { id: "1" }, 2: { id: "2" } }, market_data: { X: { last: 1 } } };
  const out = applyChanges(doc, {
    removed: ["/orders/1", "/orders/404"],
    changes: { "/orders/1": { id: "1", again: true }, "/market_data/X/last": 2.5, "/positions/Y/qty": 3, "/a~1b": 1 },
  });
  assert.deepEqual(out, {
    orders: { 1: { id: "1", again: true }, 2: { id: "2" } },
    market_data: { X: { last: 2.5 } },
    positions: { Y: { qty: 3 } },
    "a/b": 1,
  });
  assert.throws(() => applyChanges({ a: 1 }, { changes: { "/a/b": 2 } }), /not an object/);
});

test("json-patch: add/replace/remove strictly, arrays", () => {
  const doc = { book: { bids: [[1, 2]] }, o: { 1: {} } };
  applyJsonPatch(doc, [
    { op: "replace", path: "/book/bids", value: [[3, 4], [2, 1]] },
    { op: "add", path: "/o/2", value: { x: 1 } },
    { op: "remove", path: "/o/1" },
    { op: "add", path: "/book/bids/-", value: [1, 1] },
    { op: "add", path: "/book/bids/0", value: [9, 9] },
  ]);
  assert.deepEqual(doc, { book: { bids: [[9, 9], [3, 4], [2, 1], [1, 1]] }, o: { 2: { x: 1 } } });
  assert.throws(() => applyJsonPatch(doc, [{ op: "remove", path: "/o/1" }]), /missing/);
  assert.throws(() => applyJsonPatch(doc, [{ op: "replace", path: "/nope", value: 1 }]), /missing/);
  assert.throws(() => applyJsonPatch(doc, [{ op: "add", path: "/x/y", value: 1 }]), /not found/);
});

test("touchedItems names sections and ids", () => {
  assert.equal(touchedItems(snap(1, {})), null);
  const t = touchedItems(upd(2, { "/market_data/BTC/last": 1, "/orders/7": {}, "/account": {} }, ["/orders/8"]));
  assert.deepEqual([...t.get("market_data")], ["BTC"]);
  assert.deepEqual([...t.get("orders")].sort(), ["7", "8"]);
  assert.equal(t.get("account"), null);
  const p = touchedItems({ type: "update", seq: 3, patch: [{ op: "remove", path: "/positions/X" }] });
  assert.deepEqual([...p.get("positions")], ["X"]);
});

test("seq rule: snapshot sets seq, updates and events must follow, gap waits for a snapshot", () => {
  const st = new DashboardState();
  assert.equal(st.apply(upd(5, { "/a": 1 })), Outcome.IGNORED); // before any snapshot
  assert.equal(st.apply(snap(6, { a: { v: 0 } })), Outcome.APPLIED);
  assert.equal(st.apply(upd(7, { "/a/v": 1 })), Outcome.APPLIED);
  assert.equal(st.apply(ev(8)), Outcome.EVENT);
  assert.equal(st.apply(upd(9, { "/a/v": 2 }, null, 12)), Outcome.APPLIED);
  assert.deepEqual(st.data, { a: { v: 2 } });
  assert.equal(st.version, 12);
  assert.equal(st.apply(upd(11, { "/a/v": 3 })), Outcome.GAP); // 10 is missing
  assert.equal(st.synced, false);
  assert.equal(st.apply(upd(12, { "/a/v": 4 })), Outcome.IGNORED);
  assert.deepEqual(st.data, { a: { v: 2 } });
  assert.equal(st.apply({ type: "pong", payload: 1 }), Outcome.CONTROL);
  assert.equal(st.apply(snap(40, { a: { v: 9 } }, 99, "e2")), Outcome.APPLIED);
  assert.deepEqual([st.seq, st.version, st.epoch, st.synced, st.gaps], [40, 99, "e2", true, 1]);
  // A new connection: its first group message sets seq (resume with a catch-up update).
  st.connectionReset();
  assert.equal(st.apply(upd(3, { "/a/v": 10 })), Outcome.APPLIED);
  assert.equal(st.apply(upd(4, { "/a/v": 11 })), Outcome.APPLIED);
  assert.deepEqual(st.data, { a: { v: 11 } });
  assert.equal(st.apply(ev(6)), Outcome.GAP);
  assert.equal(st.events.length, 2);
});

test("an update that does not apply is a gap, not an exception", () => {
  const st = new DashboardState();
  st.apply(snap(1, { a: 1 }));
  assert.equal(st.apply({ type: "update", seq: 2, version: 3, patch: [{ op: "remove", path: "/zz" }] }), Outcome.GAP);
  assert.match(st.lastProblem, /does not apply/);
});

test("msgpack decoder: every type the server writes", () => {
  // {"a": [1, -1, 300, -300, 70000, 2**40, -(2**40), 1.5, null, true, false, "é", {}], "": "x"*40}
  const hex =
    "82a1619d01ffcd012cd1fed4ce00011170cf0000010000000000d3ffffff0000000000cb3ff8000000000000c0c3c2a2c3a980a0d92878787878787878787878787878787878787878787878787878787878787878787878787878787878";
  const bytes = Uint8Array.from(hex.match(/../g).map((h) => parseInt(h, 16)));
  assert.deepEqual(decodeMsgpack(bytes), {
    a: [1, -1, 300, -300, 70000, 2 ** 40, -(2 ** 40), 1.5, null, true, false, "é", {}],
    "": "x".repeat(40),
  });
  assert.throws(() => decodeMsgpack(bytes.subarray(0, 10)), /truncated/);
  assert.throws(() => decodeMsgpack(Uint8Array.of(0xc1)), /invalid byte/);
});

// A `__proto__` key is data like any other: kept as an own, enumerable member (as JSON.parse
// keeps it), never used to set an object's prototype, and Object.prototype stays untouched.
const msgpackStr = (s) => { const b = new TextEncoder().encode(s); return [0xa0 | b.length, ...b]; };
const assertProtoIsData = (obj, value) => {
  assert.ok(Object.keys(obj).includes("__proto__"));
  assert.ok(Object.prototype.hasOwnProperty.call(obj, "__proto__"));
  assert.deepEqual(Object.getOwnPropertyDescriptor(obj, "__proto__").value, value);
  assert.equal(Object.getPrototypeOf(obj), Object.prototype);
  assert.equal({}.polluted, undefined);
  assert.equal(Object.prototype.polluted, undefined);
};

test("msgpack decoder keeps a __proto__ key as data", () => {
  // {"__proto__": {"polluted": 1}, "a": {"__proto__": 2}}
  const bytes = Uint8Array.of(
    0x82, ...msgpackStr("__proto__"), 0x81, ...msgpackStr("polluted"), 0x01,
    ...msgpackStr("a"), 0x81, ...msgpackStr("__proto__"), 0x02,
  );
  const out = decodeMsgpack(bytes);
  assert.deepEqual(Object.keys(out), ["__proto__", "a"]);
  assertProtoIsData(out, { polluted: 1 });
  assert.equal(out.polluted, undefined);
  assertProtoIsData(out.a, 2);
  // the same as JSON.parse of the same document
  assert.deepEqual(out, JSON.parse('{"__proto__": {"polluted": 1}, "a": {"__proto__": 2}}'));
});

test("a change or patch at a __proto__ pointer is stored as data", () => {
  const doc = applyChanges({ orders: {} }, {
    changes: { "/orders/__proto__": { polluted: 1 }, "/x/__proto__/y": 2, "/positions/__proto__": 3 },
  });
  assertProtoIsData(doc.orders, { polluted: 1 });
  assert.equal(doc.orders.polluted, undefined);
  assertProtoIsData(doc.x, { y: 2 });
  assertProtoIsData(doc.positions, 3);
  // a later change replaces the member; a removal deletes it
  applyChanges(doc, { changes: { "/orders/__proto__": { polluted: 4 } } });
  assertProtoIsData(doc.orders, { polluted: 4 });
  applyChanges(doc, { removed: ["/orders/__proto__"], changes: {} });
  assert.deepEqual(Object.keys(doc.orders), []);

  const patched = applyJsonPatch({ o: {} }, [
    { op: "add", path: "/o/__proto__", value: { polluted: 1 } },
    { op: "add", path: "/o/__proto__/k", value: 5 },
    { op: "copy", from: "/o/__proto__", path: "/p" },
  ]);
  assertProtoIsData(patched.o, { polluted: 1, k: 5 });
  applyJsonPatch(patched, [{ op: "replace", path: "/o/__proto__", value: 6 }]);
  assertProtoIsData(patched.o, 6);
  applyJsonPatch(patched, [{ op: "remove", path: "/o/__proto__" }]);
  assert.deepEqual(Object.keys(patched.o), []);

  const st = new DashboardState();
  st.apply(snap(1, { orders: {} }));
  assert.equal(st.apply(upd(2, { "/orders/__proto__": { id: "p" } })), Outcome.APPLIED);
  assertProtoIsData(st.data.orders, { id: "p" });
});

test("buildUrl merges and drops parameters", () => {
  const u = buildUrl("ws://h:1/ws?x=1&since=4", { type: "web", since: null, token: "a b" });
  assert.equal(u, "ws://h:1/ws?x=1&type=web&token=a+b");
});

// --- DashboardConnection with a fake WebSocket ---------------------------------------------------

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(data) { this.sent.push(JSON.parse(data)); }
  close(code = 1000) { this.readyState = 3; this.onclose?.({ code, reason: "" }); }
  // test side
  open() { this.readyState = 1; this.onopen?.(); }
  receive(msg) { this.onmessage?.({ data: JSON.stringify(msg) }); }
  drop(code = 1006) { this.readyState = 3; this.onclose?.({ code, reason: "" }); }
}

const tick = (ms) => new Promise((r) => setTimeout(r, ms));

test("connection: refresh on gap, ping/pong RTT, reconnect and resume", async (t) => {
  FakeSocket.all = [];
  let now = 1000;
  const conn = new DashboardConnection({
    url: "ws://127.0.0.1:9/ws", WebSocket: FakeSocket, fetch: null, now: () => now,
    backoffInitialMs: 5, backoffMaxMs: 20, random: () => 1, token: "t0k",
  });
  const statuses = [];
  conn.on("status", (s) => { if (statuses.at(-1) !== s.status) statuses.push(s.status); });
  t.after(() => conn.stop());
  conn.start();
  const ws = FakeSocket.all[0];
  assert.match(ws.url, /type=web&format=json&diff=changes&token=t0k$/);
  ws.open();
  assert.equal(conn.status, "open");
  assert.equal(ws.sent[0].type, "ping");
  now += 7;
  ws.receive({ type: "pong", payload: ws.sent[0].payload, timestamp: "x" });
  assert.equal(conn.stats.rttMs, 7);
  ws.receive(snap(1, { a: { v: 1 } }, 50, "ep"));
  ws.receive(upd(3, { "/a/v": 2 }));
  assert.deepEqual(ws.sent.at(-1), { type: "refresh" });
  assert.equal(conn.stats.gaps, 1);
  ws.receive(snap(4, { a: { v: 3 } }, 60, "ep"));
  assert.equal(conn.stale, false);
  ws.drop();
  assert.equal(conn.status, "reconnecting");
  assert.equal(conn.stale, true);
  await tick(150); // the retry delay is at least 100 ms
  const ws2 = FakeSocket.all[1];
  assert.ok(ws2, "reconnected");
  assert.match(ws2.url, /since=60&epoch=ep/);
  ws2.open();
  ws2.receive(upd(17, { "/a/v": 4 }, null, 61)); // catch-up update sets seq on a new connection
  assert.deepEqual(conn.state.data, { a: { v: 4 } });
  assert.equal(conn.stats.reconnects, 1);
  ws2.close(4002); // too many bad messages: no blind retry
  assert.equal(conn.status, "refused");
  conn.stop();
  assert.deepEqual(statuses.slice(0, 3), ["connecting", "open", "reconnecting"]);
});

test("connection: stale after silence", async (t) => {
  FakeSocket.all = [];
  let now = 0;
  const conn = new DashboardConnection({ url: "ws://x/ws", WebSocket: FakeSocket, fetch: null, now: () => now, staleAfterMs: 100, pingIntervalMs: 20 });
  t.after(() => conn.stop());
  conn.start();
  FakeSocket.all[0].open();
  FakeSocket.all[0].receive(snap(1, {}));
  assert.equal(conn.stale, false);
  now = 500;
  await tick(40);
  assert.equal(conn.stale, true);
  FakeSocket.all[0].receive(ev(2));
  assert.equal(conn.stale, false);
  conn.stop();
});

test("recent-events backlog: replaces the kept events, outside the seq rule", () => {
  const st = new DashboardState({ maxEvents: 2 });
  assert.equal(st.apply(snap(5, { orders: {} })), Outcome.APPLIED);
  const backlog = { type: "events", timestamp: "2026-11-27T10:30:00.250Z", events: [
    { channel: "fills", timestamp: "t1", data: { n: 1 } },
    { channel: "alerts", timestamp: "t2", data: { n: 2 } },
    { channel: "trades", timestamp: "t3", data: { n: 3 } },
  ] };
  assert.equal(st.apply(backlog), Outcome.CONTROL);
  const kept = st.recentEvents(backlog);
  assert.deepEqual(kept.map((e) => [e.type, e.channel, e.data.n]), [["event", "alerts", 2], ["event", "trades", 3]]);
  assert.equal(st.seq, 5);
  assert.equal(st.apply(ev(6)), Outcome.EVENT);
});

test("symbols: in the URL, setSymbols sends subscribe/unsubscribe, no resume until the snapshot", async (t) => {
  FakeSocket.all = [];
  const conn = new DashboardConnection({
    url: "ws://127.0.0.1:9/ws", WebSocket: FakeSocket, fetch: null,
    backoffInitialMs: 5, backoffMaxMs: 20, random: () => 1, symbols: ["BTCUSDT"],
    pingIntervalMs: 1e9,
  });
  t.after(() => conn.stop());
  conn.start();
  const ws = FakeSocket.all[0];
  assert.match(ws.url, /symbols=BTCUSDT/);
  ws.open();
  ws.receive(snap(1, { market_data: { BTCUSDT: { v: 1 } } }, 50, "ep"));
  conn.setSymbols(["ETHUSDT", "SOLUSDT"]);
  const sent = ws.sent.filter((m) => m.type !== "ping");
  assert.deepEqual(sent.slice(-2), [
    { type: "subscribe", symbols: ["ETHUSDT", "SOLUSDT"] },
    { type: "unsubscribe", symbols: ["BTCUSDT"] },
  ]);
  assert.match(conn.connectUrl(), /symbols=ETHUSDT%2CSOLUSDT/);
  assert.doesNotMatch(conn.connectUrl(), /since=/); // the state is of the old filter
  ws.receive(snap(2, { market_data: { ETHUSDT: { v: 1 } } }, 51, "ep"));
  assert.match(conn.connectUrl(), /since=51&epoch=ep/);
  assert.throws(() => conn.setSymbols([]));
});

test("status: kept, emitted, seq untouched; serverHealth says what it means", async (t) => {
  FakeSocket.all = [];
  const conn = new DashboardConnection({ url: "ws://x/ws", WebSocket: FakeSocket, fetch: null });
  t.after(() => conn.stop());
  const heard = [];
  conn.on("server-status", (s) => heard.push(s.state));
  conn.start();
  const ws = FakeSocket.all[0];
  ws.open();
  assert.equal(conn.serverStatus, null);
  assert.deepEqual(serverHealth(null), { demo: false, state: "unknown", stale: [], problems: [] });
  ws.receive(snap(5, { a: {} }));
  const demo = { type: "status", timestamp: "t", feed: "demo", state: "ok", sources: [{ name: "demo", state: "ok", error: null }], stale: [] };
  ws.receive(demo);
  assert.deepEqual(serverHealth(conn.serverStatus), { demo: true, state: "ok", stale: [], problems: [] });
  const down = { type: "status", timestamp: "t", feed: "redis", state: "down", sources: [{ name: "redis", state: "down", error: "refused" }], stale: ["orders"] };
  ws.receive(down);
  assert.deepEqual(serverHealth(conn.serverStatus), { demo: false, state: "down", stale: ["orders"], problems: ["redis down: refused", "stale: orders"] });
  ws.receive(upd(6, { "/a/b": 1 })); // the status took no seq
  assert.equal(conn.stats.gaps, 0);
  assert.deepEqual(conn.state.data, { a: { b: 1 } });
  assert.deepEqual(heard, ["ok", "down"]);
  conn.stop();
});
