// The dashboard page: renders dashboard-server's state document with in-place DOM updates.
// Protocol logic (snapshot/update/event, seq check, refresh, ping, reconnect/resume) lives in
// dashboard-protocol.js; this file only turns the state into tables.
//
// URL parameters: ws (WebSocket URL, default: same host /ws), token, format (json|msgpack),
// diff (changes|json-patch), interval_ms, symbol (initially selected book), symbols (a server-side
// symbol filter), backoff_max_ms, stale_ms. Charts are in charts.js; sorting, search and the flash
// budget in tables.js.

import { DashboardConnection, serverHealth } from "./dashboard-protocol.js";
import { DeskCharts } from "./charts.js";
import { FlashBudget, SymbolSearch, TableSort, tapeCounts } from "./tables.js";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

function defaultWsUrl() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host || "127.0.0.1:8080"}/ws`;
}

const TOKEN_KEY = "dashboard-server.token";
function storedToken() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
}

// A token typed in earlier (kept for this tab) is only sent to the page's own server, never to a
// WebSocket URL that came from a link (?ws=...); a ?token= given with the link is used as is.
const wsUrl = params.get("ws") || defaultWsUrl();
const sameOrigin = (() => {
  try { return new URL(wsUrl).host === location.host; } catch { return false; }
})();

const numParam = (name) => (params.has(name) && Number.isFinite(Number(params.get(name))) ? Number(params.get(name)) : undefined);
const connOptions = {
  url: wsUrl,
  type: "web",
  format: params.get("format") === "msgpack" ? "msgpack" : "json",
  diff: params.get("diff") === "json-patch" ? "json-patch" : "changes",
  token: params.get("token") || (sameOrigin ? storedToken() : null) || null,
  intervalMs: numParam("interval_ms") ?? null,
  symbols: params.get("symbols") ? params.get("symbols").split(",").map((x) => x.trim()).filter(Boolean) : null,
};
if (numParam("backoff_max_ms") !== undefined) connOptions.backoffMaxMs = numParam("backoff_max_ms");
if (numParam("stale_ms") !== undefined) connOptions.staleAfterMs = numParam("stale_ms");
const conn = new DashboardConnection(connOptions);

// --- number formatting ------------------------------------------------------------------------

const formatters = new Map();
function nf(dp) {
  let f = formatters.get(dp);
  if (!f) {
    f = new Intl.NumberFormat("en-US", { minimumFractionDigits: dp, maximumFractionDigits: dp });
    formatters.set(dp, f);
  }
  return f;
}
/** Decimal places needed to show `v` exactly (at most 8), ignoring binary noise past 12
 * significant digits (412.30000000000007 needs 1). */
function decimalsOf(v) {
  if (typeof v !== "number" || !Number.isFinite(v) || Number.isInteger(v)) return 0;
  let s = String(Number(Math.abs(v).toPrecision(12)));
  if (s.includes("e")) s = Math.abs(v).toFixed(10).replace(/0+$/, "");
  const dot = s.indexOf(".");
  return dot < 0 ? 0 : Math.min(8, s.length - dot - 1);
}
const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const fixed = (v, dp) => (isNum(v) ? nf(dp).format(v) : "–");
const signed = (v, dp) => (isNum(v) ? (v > 0 ? "+" : "") + nf(dp).format(v) : "–");
const money = (v) => fixed(v, 2);
const sgnClass = (v) => (!isNum(v) || v === 0 ? "flat" : v > 0 ? "up" : "down");
const text = (v) => (v === undefined || v === null ? "–" : String(v));
const timeOf = (iso) => (typeof iso === "string" && iso.length >= 19 && iso[10] === "T" ? iso.slice(11, 23).replace(/Z$/, "") : text(iso));

// Per-symbol decimals: the most seen so far, so that a column stays aligned and shows values exactly.
const priceDp = new Map();
const qtyDp = new Map();
function widen(map, sym, ...values) {
  let dp = map.get(sym) ?? (map === priceDp ? 2 : 0);
  for (const v of values) dp = Math.max(dp, decimalsOf(v));
  map.set(sym, dp);
  return dp;
}
const pxText = (v, sym) => fixed(v, widen(priceDp, sym, v));
const qtyText = (v, sym) => fixed(v, widen(qtyDp, sym, v));
const volText = (v) => (isNum(v) ? fixed(v, Math.abs(v) >= 1e5 ? 0 : 2) : "–");

// --- keyed tables updated in place -------------------------------------------------------------

const flashes = new FlashBudget();
const search = new SymbolSearch();

/**
 * A tbody whose rows are keyed by item id. `columns`: { k: field (dot path), fmt(v, item, id),
 * cls(v, item) -> class, flash: flash the cell when its number changes, l: left-aligned,
 * scale: data-scale attribute for values shown scaled (percentages) }.
 */
class KeyedTable {
  constructor(tbody, columns, { newestFirst = false, rowClass = null, onCreate = null, symbolOf = null } = {}) {
    this.symbolOf = symbolOf; // (id, item) -> symbol, for the symbol search
    this.tbody = tbody;
    // Rows scrolled out of view are not flashed: a highlight nobody sees would cost repaints.
    this.visible = new WeakSet();
    this.observer = typeof IntersectionObserver === "function"
      ? new IntersectionObserver((entries) => {
        for (const e of entries) { if (e.isIntersecting) this.visible.add(e.target); else this.visible.delete(e.target); }
      }, { root: tbody.closest(".scroll") })
      : null;
    this.columns = columns;
    this.newestFirst = newestFirst;
    this.rowClass = rowClass;
    this.onCreate = onCreate;
    this.rows = new Map();
  }

  get size() { return this.rows.size; }

  update(id, item) {
    if (item === undefined || item === null || typeof item !== "object") { this.remove(id); return; }
    let row = this.rows.get(id);
    if (!row) {
      const tr = document.createElement("tr");
      tr.dataset.id = id;
      const tds = this.columns.map((c) => {
        const td = document.createElement("td");
        td.dataset.k = c.k;
        if (c.scale) td.dataset.scale = c.scale;
        td.className = c.l ? "l" : "";
        tr.appendChild(td);
        return td;
      });
      row = { tr, tds, values: new Array(this.columns.length), texts: new Array(this.columns.length), classes: new Array(this.columns.length), rowCls: "" };
      this.rows.set(id, row);
      if (this.newestFirst) this.tbody.prepend(tr); else this.tbody.appendChild(tr);
      if (this.onCreate) this.onCreate(tr, id);
      if (this.observer) this.observer.observe(tr);
    }
    const fresh = row.texts[0] === undefined;
    const flash = !fresh && (!this.observer || this.visible.has(row.tr));
    this.columns.forEach((c, i) => {
      const v = pick(item, c.k);
      const t = c.fmt ? c.fmt(v, item, id) : text(v);
      const td = row.tds[i];
      if (t !== row.texts[i]) { td.textContent = t; row.texts[i] = t; }
      const cls = (c.l ? "l " : "") + (c.cls ? c.cls(v, item) : "");
      if (cls !== row.classes[i]) { td.className = cls; row.classes[i] = cls; }
      const prev = row.values[i];
      if (c.flash && flash && isNum(v) && isNum(prev) && v !== prev && flashes.allow(td)) {
        td.animate(
          [{ backgroundColor: v > prev ? "rgba(31,195,123,0.45)" : "rgba(240,80,110,0.45)" }, { backgroundColor: "transparent" }],
          { duration: 600, easing: "ease-out" },
        );
      }
      row.values[i] = v;
    });
    if (this.rowClass) {
      const rc = this.rowClass(item);
      if (rc !== row.rowCls) { row.tr.className = rc; row.rowCls = rc; }
    }
    if (this.symbolOf) {
      row.symbol = this.symbolOf(id, item);
      search.applyRow(row.tr, row.symbol);
    }
  }

  remove(id) {
    const row = this.rows.get(id);
    if (!row) return;
    if (this.observer) this.observer.unobserve(row.tr);
    row.tr.remove();
    this.rows.delete(id);
  }

  /** Make the rows match `items` (an object id -> item), keeping existing rows' elements. */
  reset(items, order) {
    items = items && typeof items === "object" ? items : {};
    for (const id of [...this.rows.keys()]) if (!Object.prototype.hasOwnProperty.call(items, id)) this.remove(id);
    const ids = order ? order(items) : Object.keys(items);
    for (const id of ids) this.update(id, items[id]);
    const frag = document.createDocumentFragment();
    for (const id of ids) frag.appendChild(this.rows.get(id).tr);
    this.tbody.appendChild(frag);
  }
}

function pick(obj, path) {
  // "a|b": the first that is there (a desk's own schema may name a field its way)
  if (path.includes("|")) {
    for (const alt of path.split("|")) { const v = pick(obj, alt); if (v !== undefined && v !== null) return v; }
    return undefined;
  }
  if (!path.includes(".")) return obj ? obj[path] : undefined;
  let v = obj;
  for (const k of path.split(".")) v = v && typeof v === "object" ? v[k] : undefined;
  return v;
}

// --- panels ------------------------------------------------------------------------------------

let selected = params.get("symbol");
let charts = null; // DeskCharts, below

const market = new KeyedTable($("t-market").tBodies[0], [
  { k: "symbol", l: true, fmt: (v, it, id) => text(v ?? id), cls: () => "sym" },
  { k: "last_price", flash: true, fmt: (v, it, id) => pxText(v, id), cls: (v, it) => sgnClass(it.change_24h) },
  { k: "change_24h", fmt: (v, it, id) => (isNum(v) ? (v > 0 ? "+" : "") + pxText(v, id) : "–"), cls: sgnClass },
  { k: "change_pct_24h", fmt: (v) => (isNum(v) ? signed(v, 2) + "%" : "–"), cls: sgnClass },
  { k: "bid|bid_price", flash: true, fmt: (v, it, id) => pxText(v, id) },
  { k: "ask|ask_price", flash: true, fmt: (v, it, id) => pxText(v, id) },
  { k: "bid_size", fmt: (v, it, id) => qtyText(v, id), cls: () => "muted" },
  { k: "ask_size", fmt: (v, it, id) => qtyText(v, id), cls: () => "muted" },
  { k: "high_24h", fmt: (v, it, id) => pxText(v, id) },
  { k: "low_24h", fmt: (v, it, id) => pxText(v, id) },
  { k: "volume_24h", flash: true, fmt: volText },
], {
  rowClass: (it) => (it.symbol === selected ? "selected" : ""),
  onCreate: (tr, id) => {
    tr.addEventListener("click", () => select(id));
    const spark = document.createElement("td");
    spark.className = "spark-cell";
    tr.appendChild(spark); // drawn by charts.js
  },
  symbolOf: (id, it) => it.symbol ?? id,
});

// Order states of the demo (status) and of the original system (state, upper case) alike.
const lower = (v) => (typeof v === "string" ? v.toLowerCase() : v);
const orderStatus = (it) => lower(it.status ?? it.state);
const WORKING = new Set(["new", "submitted", "partially_filled", "pending", "open", "accepted"]);
const DONE = new Set(["filled", "cancelled", "canceled", "rejected", "expired"]);
const orders = new KeyedTable($("t-orders").tBodies[0], [
  { k: "id|order_id", l: true, fmt: (v) => (typeof v === "string" && v.length > 12 ? v.slice(0, 8) + "…" : text(v)), cls: () => "muted" },
  { k: "created_at", l: true, fmt: timeOf, cls: () => "muted" },
  { k: "symbol", l: true, cls: () => "sym" },
  { k: "side", l: true, fmt: (v) => text(v).toUpperCase(), cls: (v) => (lower(v) === "buy" ? "buy" : "sell") },
  { k: "type", l: true },
  { k: "price", fmt: (v, it) => pxText(v, it.symbol) },
  { k: "quantity", fmt: (v, it) => qtyText(v, it.symbol) },
  { k: "filled_quantity", flash: true, fmt: (v, it) => qtyText(v, it.symbol) },
  { k: "avg_fill_price|average_price", fmt: (v, it) => (isNum(v) && v !== 0 ? pxText(v, it.symbol) : "") },
  { k: "status|state", l: true, fmt: (v) => (lower(v) === "partially_filled" ? "partial" : text(lower(v))), cls: (v) => "st-" + lower(v) },
  { k: "strategy|client_order_id", l: true, cls: () => "muted" },
], {
  newestFirst: true,
  rowClass: (it) => (DONE.has(orderStatus(it)) ? "done" : ""),
  symbolOf: (id, it) => it.symbol,
});
const orderOrder = (items) => Object.keys(items).sort((a, b) => {
  const ta = items[a].created_at || "", tb = items[b].created_at || "";
  return ta < tb ? 1 : ta > tb ? -1 : (Number(b) || 0) - (Number(a) || 0);
});

// A position's side from its sign when it has none, and its mark from market data when its own is
// missing or 0 (the original system's positions carry neither).
function positionSide(it) {
  if (typeof it.side === "string" && it.side) return it.side.toLowerCase();
  return isNum(it.quantity) ? (it.quantity > 0 ? "long" : it.quantity < 0 ? "short" : "flat") : undefined;
}
function positionMark(it, id) {
  const own = it.mark_price ?? (it.current_price || undefined);
  if (isNum(own)) return own;
  const md = (conn.state.data.market_data || {})[it.symbol ?? id];
  return md ? md.last_price : undefined;
}
const positions = new KeyedTable($("t-positions").tBodies[0], [
  { k: "symbol", l: true, fmt: (v, it, id) => text(v ?? id), cls: () => "sym" },
  { k: "side", l: true, fmt: (v, it) => text(positionSide(it)).toUpperCase(), cls: (v, it) => (positionSide(it) === "long" ? "buy" : "sell") },
  { k: "quantity", fmt: (v, it) => qtyText(v, it.symbol) },
  { k: "entry_price", fmt: (v, it) => pxText(v, it.symbol) },
  { k: "mark_price", flash: true, fmt: (v, it, id) => pxText(positionMark(it, id), it.symbol) },
  { k: "notional", fmt: (v, it, id) => money(isNum(v) ? v : isNum(it.quantity) && isNum(positionMark(it, id)) ? Math.abs(it.quantity) * positionMark(it, id) : undefined) },
  { k: "unrealized_pnl", flash: true, fmt: (v) => signed(v, 2), cls: sgnClass },
  { k: "realized_pnl", fmt: (v) => signed(v, 2), cls: sgnClass },
  { k: "margin|total_fees", fmt: money, cls: () => "muted" },
], { symbolOf: (id, it) => it.symbol ?? id });

const strategies = new KeyedTable($("t-strategies").tBodies[0], [
  { k: "name", l: true, cls: () => "sym" },
  { k: "status", l: true, cls: (v) => "st-" + v },
  { k: "pnl", flash: true, fmt: (v) => signed(v, 2), cls: sgnClass },
  { k: "realized_pnl", fmt: (v) => signed(v, 2), cls: sgnClass },
  { k: "unrealized_pnl", fmt: (v) => signed(v, 2), cls: sgnClass },
  { k: "open_orders" },
  { k: "fills" },
  { k: "volume", fmt: money },
  { k: "hit_rate", scale: "100", fmt: (v) => fixed(isNum(v) ? v * 100 : v, 1) },
  { k: "sharpe", fmt: (v) => fixed(v, 2), cls: sgnClass },
  { k: "signal", fmt: (v) => signed(v, 3), cls: sgnClass },
  { k: "latency_ms", fmt: (v) => fixed(v, 2), cls: () => "muted" },
]);

const balances = new KeyedTable($("t-balances").tBodies[0], [
  { k: "asset", l: true, fmt: (v, it, id) => id, cls: () => "sym" },
  { k: "total", fmt: (v) => fixed(v, Math.max(2, decimalsOf(v))) },
  { k: "locked", fmt: (v) => fixed(v, Math.max(2, decimalsOf(v))), cls: () => "muted" },
  { k: "free", fmt: (v) => fixed(v, Math.max(2, decimalsOf(v))) },
]);

// --- sections the page has no layout for ------------------------------------------------------
// Rendered from their items' fields (columns in first-seen order), so a desk's own schema shows
// its values, never a row of dashes; a section with a single item shows as field: value pairs.

const isScalar = (v) => v === null || ["string", "number", "boolean"].includes(typeof v);
function genericKeys(items, limit = 12) {
  const keys = [];
  for (const it of Object.values(items).slice(0, 50)) {
    if (!it || typeof it !== "object") continue;
    for (const [k, v] of Object.entries(it)) if (isScalar(v) && !keys.includes(k)) keys.push(k);
  }
  return keys.slice(0, limit);
}
function cellText(v) {
  if (isNum(v)) return fixed(v, Math.min(8, decimalsOf(v)));
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (Array.isArray(v)) return `[${v.length}]`;
  if (v && typeof v === "object") return "{…}";
  return text(v);
}

class GenericTable {
  constructor(table) {
    this.table = table;
    this.signature = null;
    this.rows = null;
    this.list = document.createElement("dl");
    this.list.className = "kv";
    this.list.hidden = true;
    table.after(this.list);
  }

  get size() { return this.rows ? this.rows.size : 0; }

  reset(items) {
    items = items && typeof items === "object" ? items : {};
    const ids = Object.keys(items);
    const single = ids.length === 1 && items[ids[0]] && typeof items[ids[0]] === "object";
    this.table.hidden = single;
    this.list.hidden = !single;
    if (single) { this.renderPairs(items[ids[0]]); return; }
    const keys = genericKeys(items);
    const signature = keys.join("\u0000");
    if (signature !== this.signature) {
      this.signature = signature;
      const head = this.table.tHead || this.table.createTHead();
      head.innerHTML = "";
      const tr = head.insertRow();
      for (const k of ["", ...keys]) { const th = document.createElement("th"); th.textContent = k; tr.appendChild(th); }
      const body = this.table.tBodies[0] || this.table.createTBody();
      body.innerHTML = "";
      const numeric = (k) => Object.values(items).slice(0, 50).every((it) => !it || !(k in it) || isNum(it[k]));
      this.rows = new KeyedTable(body, [
        { k: "\u0000id", l: true, fmt: (v, it, id) => id, cls: () => "sym" },
        ...keys.map((k) => ({ k, l: !numeric(k), flash: numeric(k), fmt: cellText })),
      ]);
    }
    this.rows.reset(items);
  }

  update(id, item, items) { this.reset(items); }

  renderPairs(item) {
    const entries = Object.entries(item).filter(([, v]) => isScalar(v) || (v && typeof v === "object" && !Array.isArray(v)));
    const flat = [];
    for (const [k, v] of entries) {
      if (isScalar(v)) flat.push([k, v]);
      else for (const [k2, v2] of Object.entries(v)) if (isScalar(v2)) flat.push([`${k}.${k2}`, v2]);
    }
    const wanted = flat.map(([k]) => k).join("\u0000");
    if (this.list.dataset.keys !== wanted) {
      this.list.dataset.keys = wanted;
      this.list.innerHTML = "";
      for (const [k] of flat) {
        const div = document.createElement("div");
        const dt = document.createElement("dt"); dt.textContent = k;
        const dd = document.createElement("dd"); dd.dataset.k = k;
        div.append(dt, dd);
        this.list.appendChild(div);
      }
    }
    const dds = this.list.querySelectorAll("dd");
    flat.forEach(([, v], i) => { setText(dds[i], cellText(v)); dds[i].className = isNum(v) ? "num" : ""; });
  }
}

// The strategies panel shows the demo's columns, or the fields of a desk's own strategies.
const STRATEGY_FIELDS = ["status", "pnl", "fills", "open_orders"];
const strategiesGeneric = new GenericTable((() => {
  const t = document.createElement("table");
  t.className = "data"; t.id = "t-strategies-fields"; t.hidden = true;
  $("t-strategies").after(t);
  return t;
})());
function renderStrategies() {
  const items = conn.state.data.strategies || {};
  const fits = Object.values(items).some((s) => s && typeof s === "object" && STRATEGY_FIELDS.some((k) => k in s));
  $("t-strategies").hidden = !fits && Object.keys(items).length > 0;
  if ($("t-strategies").hidden) {
    strategiesGeneric.table.hidden = false;
    strategiesGeneric.reset(items);
    return Object.keys(items).length;
  }
  strategiesGeneric.table.hidden = true;
  strategiesGeneric.list.hidden = true;
  return null;
}

// Sections without a panel of their own get one in the "more" row.
const OWN_PANELS = new Set(["market_data", "orderbook", "orders", "positions", "strategies", "account", "balances"]);
const extraPanels = new Map();
function extraPanel(section) {
  let panel = extraPanels.get(section);
  if (panel) return panel;
  const el = document.createElement("section");
  el.className = "panel p-extra";
  el.dataset.section = section;
  el.innerHTML = `<h2>${esc(section.replace(/_/g, " "))} <span class="count"></span></h2><div class="scroll"><table class="data"><thead></thead><tbody></tbody></table></div>`;
  $("more").appendChild(el);
  panel = { el, table: new GenericTable(el.querySelector("table")), count: el.querySelector(".count") };
  extraPanels.set(section, panel);
  $("more").hidden = false;
  document.body.classList.add("has-more");
  return panel;
}
function renderExtras() {
  const data = conn.state.data;
  const shown = new Set(OWN_PANELS);
  if (!data.account) shown.add("pnl"); // the account panel shows it
  for (const [section, items] of Object.entries(data)) {
    if (shown.has(section) || !items || typeof items !== "object") continue;
    if (!(dirtyAll || dirty.has(section)) && extraPanels.has(section)) continue;
    const panel = extraPanel(section);
    panel.table.reset(items);
    setText(panel.count, String(Object.keys(items).length));
  }
}

function select(symbol) {
  selected = symbol;
  for (const [id, row] of market.rows) row.tr.classList.toggle("selected", id === symbol);
  for (const row of market.rows.values()) row.rowCls = row.tr.className;
  renderBook();
  if (charts) charts.schedule();
}

// Order book: fixed rows per side, updated in place.
const BOOK_ROWS = 10;
function bookRows(tbody) {
  const rows = [];
  for (let i = 0; i < BOOK_ROWS; i++) {
    const tr = document.createElement("tr");
    const px = document.createElement("td"); px.className = "px"; px.dataset.k = "price";
    const qty = document.createElement("td"); qty.dataset.k = "qty";
    const tot = document.createElement("td"); tot.className = "bar muted"; tot.dataset.k = "total";
    tr.append(px, qty, tot);
    tbody.appendChild(tr);
    rows.push({ tr, px, qty, tot });
  }
  return rows;
}
const askRows = bookRows($("t-asks").tBodies[0]);
const bidRows = bookRows($("t-bids").tBodies[0]);

function setText(el, t) { if (el.textContent !== t) el.textContent = t; }

function renderBook() {
  const data = conn.state.data;
  const symbols = Object.keys(data.market_data || data.orderbook || {});
  if (!selected || !(data.orderbook || {})[selected]) {
    if (symbols.length && (!selected || !(data.market_data || {})[selected])) select(symbols[0]);
  }
  const book = (data.orderbook || {})[selected] || {};
  setText($("book-symbol"), selected || "–");
  setText($("book-seq"), isNum(book.sequence) ? `#${book.sequence}` : "");
  const bids = Array.isArray(book.bids) ? book.bids.slice(0, BOOK_ROWS) : [];
  const asks = Array.isArray(book.asks) ? book.asks.slice(0, BOOK_ROWS) : [];
  const cum = (levels) => { let s = 0; return levels.map((l) => (s += Number(l[1]) || 0)); };
  const bidTot = cum(bids), askTot = cum(asks);
  const maxTot = Math.max(bidTot[bidTot.length - 1] || 0, askTot[askTot.length - 1] || 0) || 1;
  const fill = (rows, levels, tots, reverse) => {
    rows.forEach((r, i) => {
      const idx = reverse ? BOOK_ROWS - 1 - i : i; // asks: best at the bottom, next to the spread
      const lvl = levels[idx];
      r.tr.dataset.level = lvl ? String(idx) : "";
      setText(r.px, lvl ? pxText(lvl[0], selected) : "");
      setText(r.qty, lvl ? qtyText(lvl[1], selected) : "");
      setText(r.tot, lvl ? fixed(tots[idx], qtyDp.get(selected) ?? 0) : "");
      r.tot.style.backgroundSize = lvl ? `${((tots[idx] / maxTot) * 100).toFixed(1)}% 100%` : "0% 100%";
    });
  };
  fill(askRows, asks, askTot, true);
  fill(bidRows, bids, bidTot, false);
  const spreadEl = $("book-spread");
  if (bids.length && asks.length) {
    const spread = asks[0][0] - bids[0][0];
    const mid = (asks[0][0] + bids[0][0]) / 2;
    const dp = widen(priceDp, selected, asks[0][0], bids[0][0]);
    spreadEl.innerHTML = `${fixed(mid, dp + 1)}<small>spread ${fixed(spread, dp)} · ${fixed((spread / mid) * 1e4, 1)} bp</small>`;
  } else {
    setText(spreadEl, "–");
  }
}

// The account panel: the demo's account section, or the original system's pnl and risk sections.
function accountView() {
  const data = conn.state.data;
  const accounts = data.account || {};
  const id = Object.keys(accounts)[0];
  if (id) return { id, acct: accounts[id], balances: data.balances || accounts[id].balances || {} };
  const pnls = data.pnl || {};
  const pid = Object.keys(pnls)[0];
  const risk = Object.values(data.risk || {})[0] || {};
  const p = (pid && pnls[pid]) || {};
  // the risk manager's margin_ratio is equity over margin (10 = ten times covered), not a share: not shown as one
  const acct = { ...p, equity: risk.total_equity, margin: { used: risk.total_margin_used }, fees_paid: p.total_fees, open_orders: risk.pending_orders };
  return { id: pid, acct, balances: data.balances || {} };
}
function renderAccount() {
  const view = accountView();
  const id = view.id;
  const acct = view.acct || {};
  setText($("acct-id"), id || "–");
  for (const dd of document.querySelectorAll("#acct-totals dd, #kpis dd")) {
    const k = dd.dataset.k;
    const v = pick(acct, k);
    let t;
    if (k === "margin.ratio") { t = isNum(v) ? fixed(v * 100, 2) + "%" : "–"; dd.dataset.scale = "100"; }
    else if (k === "open_orders") t = text(v);
    else if (k.endsWith("pnl")) t = signed(v, 2);
    else t = money(v);
    setText(dd, t);
    if (k.endsWith("pnl")) dd.className = sgnClass(v);
  }
  balances.reset(view.balances);
}

// --- events list -------------------------------------------------------------------------------

const MAX_EVENTS = 200;
let pendingEvents = [];
const eventCounts = { fills: 0, alerts: 0, trades: 0 };
const showTrades = $("show-trades");

function eventItem(msg) {
  const d = msg.data || {};
  const li = document.createElement("li");
  li.dataset.channel = msg.channel;
  li.dataset.seq = msg.seq;
  if (msg.data && msg.data.symbol !== undefined) li.dataset.symbol = msg.data.symbol;
  search.applyRow(li, msg.data && msg.data.symbol !== undefined ? msg.data.symbol : "");
  let tag, cls, body;
  const extra = (...parts) => parts.filter((p) => p !== undefined && p !== null && p !== "").map((p) => " · " + esc(p)).join("");
  if (msg.channel === "fills") {
    tag = "FILL"; cls = "fill";
    const pnl = isNum(d.realized_pnl) && d.realized_pnl !== 0 ? ` · pnl ${signed(d.realized_pnl, 2)}` : "";
    const order = d.order_id ? "order " + d.order_id : undefined;
    body = `<span class="${lower(d.side) === "buy" ? "buy" : "sell"}">${esc(text(d.side).toUpperCase())}</span> ${esc(qtyText(d.quantity, d.symbol))} ${esc(d.symbol)} @ ${esc(pxText(d.price, d.symbol))}${extra(d.liquidity, d.strategy, order)}${pnl}`;
  } else if (msg.channel === "alerts") {
    // the demo's level, the risk manager's level (emergency), the account monitor's severity
    const level = lower(d.level ?? d.severity) === "emergency" ? "critical" : lower(d.level ?? d.severity);
    cls = ["info", "warning", "critical"].includes(level) ? level : "info";
    tag = cls === "warning" ? "WARN" : lower(d.level) === "emergency" ? "EMERG" : cls.toUpperCase();
    body = `${esc(d.message ?? d.reason ?? d.type)} <span class="muted">${esc(d.source ?? d.policy_name ?? d.triggered_by ?? d.type ?? "")}</span>`;
    li.className = cls;
  } else {
    tag = "TRADE"; cls = "trade";
    const side = d.side ?? (d.is_buyer_maker === undefined ? undefined : d.is_buyer_maker ? "sell" : "buy");
    body = `${esc(d.symbol)} <span class="${lower(side) === "buy" ? "buy" : "sell"}">${esc(text(side))}</span> ${esc(qtyText(d.quantity, d.symbol))} @ ${esc(pxText(d.price, d.symbol))}`;
  }
  li.innerHTML = `<span class="t">${esc(timeOf(d.timestamp || msg.timestamp))}</span><span class="tag ${cls}">${tag}</span><span class="msg">${body}</span>`;
  return li;
}
function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function renderEvents() {
  if (!pendingEvents.length) return;
  const list = $("events");
  const frag = document.createDocumentFragment();
  for (let i = pendingEvents.length - 1; i >= 0; i--) {
    const msg = pendingEvents[i];
    if (msg.channel === "trades" && !showTrades.checked) continue;
    frag.appendChild(eventItem(msg));
  }
  pendingEvents = [];
  list.prepend(frag);
  while (list.childElementCount > MAX_EVENTS) list.lastElementChild.remove();
  renderEventCounts();
}
// The header counts what the tape shows (after a reconnect the backlog refills it).
function renderEventCounts() {
  const c = tapeCounts($("events"));
  setText($("c-events"), `${c.fills} fills · ${c.alerts} alerts${showTrades.checked ? ` · ${c.trades} trades` : ""}`);
}

// --- render loop -------------------------------------------------------------------------------

let dirtyAll = true;
const dirty = new Map(); // section -> Set of ids, or null for the whole section
let framePending = false;
let appliedSeq = null;

function markTouched(touched) {
  if (touched === null || touched.has("*")) dirtyAll = true;
  else {
    for (const [section, ids] of touched) {
      const cur = dirty.get(section);
      if (ids === null || cur === null) dirty.set(section, null);
      else if (!cur) dirty.set(section, new Set(ids));
      else for (const id of ids) cur.add(id);
    }
  }
  schedule();
}
function schedule() {
  if (!framePending) {
    framePending = true;
    requestAnimationFrame(render);
  }
}

// Sorted tables: re-ordered after a reset, on a click, and at most once a second otherwise.
const sorts = new Map();
let lastSortAt = 0;
function applySorts(force) {
  const now = performance.now();
  if (!force && now - lastSortAt < 1000) return;
  lastSortAt = now;
  for (const sort of sorts.values()) sort.apply();
}

function renderSection(table, section, order) {
  const items = conn.state.data[section] || {};
  if (dirtyAll || dirty.get(section) === null) {
    table.reset(items, order);
    if (sorts.has(table)) sorts.get(table).apply();
  } else {
    const ids = dirty.get(section);
    if (!ids) return false;
    for (const id of ids) table.update(id, items[id]);
  }
  return true;
}

function render() {
  framePending = false;
  const t0 = performance.now();
  if (renderSection(market, "market_data")) setText($("c-market"), String(market.size));
  if (renderSection(orders, "orders", orderOrder)) setText($("c-orders"), `${orders.size} (${countOpen()} working)`);
  if (renderSection(positions, "positions")) setText($("c-positions"), String(positions.size));
  if (renderSection(strategies, "strategies")) setText($("c-strategies"), String(strategies.size));
  if (dirtyAll || dirty.has("strategies")) {
    const n = renderStrategies();
    if (n !== null) setText($("c-strategies"), String(n));
  }
  if (dirtyAll || dirty.has("account") || dirty.has("pnl") || dirty.has("risk") || dirty.has("balances")) renderAccount();
  renderExtras();
  const bookDirty = dirty.get("orderbook");
  if (dirtyAll || bookDirty === null || (bookDirty && bookDirty.has(selected)) || dirty.has("market_data")) renderBook();
  renderEvents();
  applySorts(false);
  dirtyAll = false;
  dirty.clear();
  ui.renderedSeq = appliedSeq;
  ui.renders++;
  ui.lastRenderMs = performance.now() - t0;
}
function countOpen() {
  let n = 0;
  for (const o of Object.values(conn.state.data.orders || {})) if (WORKING.has(orderStatus(o))) n++;
  return n;
}

// --- status, header, banner -------------------------------------------------------------------

const STATE_LABEL = { live: "LIVE", stale: "STALE", resync: "RESYNC", connecting: "CONNECTING", disconnected: "DISCONNECTED", refused: "REFUSED", closed: "CLOSED", degraded: "DEGRADED", down: "FEED DOWN" };
function viewState() {
  switch (conn.status) {
    case "open": {
      if (conn.state.awaitingSnapshot) return "resync";
      if (conn.stale) return "stale";
      // the connection is fine: what the server says about its own feed decides
      const health = serverHealth(conn.serverStatus);
      if (health.state === "down") return "down";
      if (health.state === "degraded" || health.stale.length) return "degraded";
      return "live";
    }
    case "idle": case "connecting": return "connecting";
    case "reconnecting": return "disconnected";
    case "refused": return "refused";
    default: return "closed";
  }
}

function kb(n) { return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(0)} kB`; }
let lastBytes = 0, lastBytesAt = performance.now();

// The panel that shows each section (dimmed, and tagged STALE, while the server says the section
// has had no update for longer than its staleness limit).
const PANELS = { market_data: "p-market", orderbook: "p-book", account: "p-account", orders: "p-orders", positions: "p-positions", strategies: "p-strategies" };

function renderFeed(health, st) {
  const demo = $("demo-badge");
  if (demo.hidden === health.demo) demo.hidden = !health.demo;
  const stale = new Set(st === "live" || st === "degraded" ? health.stale : []);
  for (const [section, cls] of Object.entries(PANELS)) {
    const panel = document.querySelector(`.${cls}`);
    if (panel && panel.classList.contains("stale-data") !== stale.has(section)) panel.classList.toggle("stale-data", stale.has(section));
  }
  for (const [section, { el }] of extraPanels) {
    if (el.classList.contains("stale-data") !== stale.has(section)) el.classList.toggle("stale-data", stale.has(section));
  }
}

function renderStatus() {
  const st = viewState();
  const health = serverHealth(conn.serverStatus);
  const pill = $("status");
  pill.dataset.state = st;
  pill.className = `status status-${st === "live" ? "open" : st}`;
  setText($("status-text"), STATE_LABEL[st]);
  // degraded: only the stale panels are dimmed; anything worse dims them all
  document.body.classList.toggle("stale", st !== "live" && st !== "degraded");
  document.title = `${health.demo ? "DEMO · " : ""}${st === "live" ? "" : "⚠ "}Trading desk · ${STATE_LABEL[st]}`;
  renderFeed(health, st);

  const s = conn.stats;
  const now = Date.now();
  const banner = $("banner");
  const tokenForm = $("token-form");
  let msg = null, warn = false, showToken = false;
  const asOf = conn.state.timestamp ? ` · showing data as of ${timeOf(conn.state.timestamp)} UTC` : "";
  if (st === "connecting") { msg = `CONNECTING to ${conn.options.url} …`; warn = true; }
  else if (st === "disconnected") {
    const wait = s.nextRetryAt ? Math.max(0, (s.nextRetryAt - now) / 1000).toFixed(1) : "0.0";
    const code = s.lastClose ? ` (code ${s.lastClose.code}${s.lastClose.reason ? `: ${s.lastClose.reason}` : ""})` : "";
    msg = `DISCONNECTED${code} — reconnecting in ${wait} s, attempt ${s.attempts}${asOf}`;
  } else if (st === "stale") {
    msg = `STALE — nothing heard from the server for ${((now - s.lastHeardAt) / 1000).toFixed(1)} s${asOf}`;
    warn = true;
  } else if (st === "resync") {
    msg = `RESYNCING — ${conn.state.lastProblem || "sequence gap"}; waiting for a fresh snapshot`;
    warn = true;
  } else if (st === "refused") {
    const r = s.refusal || {};
    msg = `REFUSED — ${r.status ? `HTTP ${r.status}: ` : r.code ? `close ${r.code}: ` : ""}${r.message || s.lastError || "the server refused the connection"}`;
    showToken = r.status === 401 || r.status === 403 || r.code === 1008;
  } else if (st === "closed") { msg = "CLOSED"; }
  else if (st === "down") {
    msg = `FEED DOWN — ${health.problems.join("; ") || "the server has no live source"} · the numbers below are not being updated${asOf}`;
  } else if (st === "degraded") {
    const sources = health.problems.filter((p) => !p.startsWith("stale: "));
    msg = sources.length
      ? `DEGRADED — ${health.problems.join("; ")}`
      : `STALE — no recent update for ${health.stale.join(", ")}; those panels are dimmed`;
    warn = true;
  }
  banner.hidden = msg === null;
  banner.classList.toggle("warn", warn);
  if (msg !== null) setText($("banner-text"), msg);
  if (tokenForm.hidden === showToken) tokenForm.hidden = !showToken;
  $("retry-now").hidden = !(st === "disconnected" || st === "refused" && !showToken);

  setText($("m-epoch"), conn.state.epoch ? conn.state.epoch.slice(0, 8) : "–");
  setText($("m-seq"), text(conn.state.seq));
  setText($("m-version"), text(conn.state.version));
  setText($("m-rate"), st === "disconnected" ? "–" : s.updateRate.toFixed(1));
  setText($("m-msgrate"), st === "disconnected" ? "–" : s.messageRate.toFixed(1));
  setText($("m-rtt"), s.rttMs === null || conn.status !== "open" ? "–" : `${s.rttMs.toFixed(0)} ms`);
  const t = performance.now();
  if (t - lastBytesAt >= 1000) {
    setText($("m-rx"), `${kb(((s.bytes - lastBytes) * 1000) / (t - lastBytesAt))}/s`);
    lastBytes = s.bytes; lastBytesAt = t;
  }
  setText($("m-age"), s.lastMessageAt ? `${((now - s.lastMessageAt) / 1000).toFixed(1)} s` : "–");
}

// --- wiring ------------------------------------------------------------------------------------

conn.on("snapshot", ({ msg }) => { appliedSeq = msg.seq; markTouched(null); });
conn.on("update", ({ msg, touched }) => { appliedSeq = msg.seq; markTouched(touched); });
conn.on("event", (msg) => {
  if (msg.channel in eventCounts) eventCounts[msg.channel]++;
  pendingEvents.push(msg);
  if (pendingEvents.length > MAX_EVENTS * 4) pendingEvents.splice(0, pendingEvents.length - MAX_EVENTS);
  schedule();
});
conn.on("recent-events", (list) => {
  // the backlog after a snapshot replaces what the list shows (it holds the latest events)
  $("events").replaceChildren();
  pendingEvents = list.slice(-MAX_EVENTS);
  renderEventCounts();
  schedule();
});
showTrades.addEventListener("change", renderEventCounts);

// --- desk: sorting, symbol search, charts -------------------------------------------------------

for (const [table, id] of [[market, "t-market"], [orders, "t-orders"], [positions, "t-positions"], [strategies, "t-strategies"]]) {
  sorts.set(table, new TableSort(table, $(id).tHead, { onChange: () => sortNow(table) }));
}
function sortNow(table) {
  const sort = sorts.get(table);
  if (sort.active) sort.apply();
  else if (table === orders) table.reset(conn.state.data.orders || {}, orderOrder);
  else table.reset(conn.state.data[table === market ? "market_data" : table === positions ? "positions" : "strategies"] || {});
}

const searchBox = $("search");
function applySearch() {
  search.set(searchBox.value);
  for (const table of [market, orders, positions]) {
    for (const row of table.rows.values()) search.applyRow(row.tr, row.symbol);
  }
  for (const li of $("events").children) search.applyRow(li, li.dataset.symbol ?? "");
}
searchBox.addEventListener("input", applySearch);
searchBox.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") { searchBox.value = ""; applySearch(); }
  if (ev.key === "Enter") {
    const want = searchBox.value.trim().toUpperCase();
    const md = conn.state.data.market_data || {};
    const hit = Object.keys(md).find((s) => s.toUpperCase() === want)
      || [...market.rows.entries()].find(([, r]) => !r.tr.hidden)?.[0];
    if (hit) select(hit);
  }
});

charts = new DeskCharts(conn, {
  priceBox: $("chart-price"),
  equityBox: $("chart-equity"),
  hooks: {
    selected: () => selected,
    sparkCell: (symbol) => market.rows.get(symbol)?.tr.lastElementChild ?? null,
    format: (v, symbol) => pxText(v, symbol),
  },
});
conn.on("status", renderStatus);
conn.on("server-status", renderStatus);
conn.on("tick", renderStatus);
conn.on("error", (msg) => console.warn("dashboard-server error:", msg.code, msg.message));

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $("token-input").value.trim();
  try { sessionStorage.setItem(TOKEN_KEY, token); } catch { /* private mode */ }
  conn.options.token = token || null;
  conn.restart();
});
$("retry-now").addEventListener("click", () => conn.restart());

// Test and console hook: window.dashboard.
const ui = {
  conn,
  renderedSeq: null,
  renders: 0,
  lastRenderMs: 0,
  get appliedSeq() { return appliedSeq; },
  get serverStatus() { return conn.serverStatus; },
  get view() { return viewState(); },
  get selected() { return selected; },
  select,
  charts,
  flashes,
  sorts,
  search: (textValue) => { searchBox.value = textValue; applySearch(); },
  /** {seq, appliedSeq, version, epoch, data} as plain JSON (a copy). */
  snapshot() {
    return JSON.parse(JSON.stringify({ seq: conn.state.seq, appliedSeq, version: conn.state.version, epoch: conn.state.epoch, data: conn.state.data }));
  },
};
window.dashboard = ui;

renderStatus();
conn.start();
