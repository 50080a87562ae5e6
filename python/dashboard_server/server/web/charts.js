// Charts of the page: price sparklines per market row, a price chart of the selected symbol, and
// the account's equity curve. A small hand-written SVG renderer (docs/web.md, "Charts"): a line
// per series, no library, no CDN. Each series is backfilled from /api/v1/history, then extended
// from the live updates (one point per history interval, the newest value winning).

const SVG = "http://www.w3.org/2000/svg";

/** A bounded time series [t, v], one point per `stepMs` bucket (the newest value of a bucket wins). */
export class Series {
  constructor(max = 1200, stepMs = 1000) {
    this.max = max;
    this.stepMs = stepMs;
    this.points = [];
    this.version = 0; // bumped on every change, for redraws
  }

  push(t, v) {
    if (!Number.isFinite(t) || !Number.isFinite(v)) return;
    const pts = this.points;
    const last = pts[pts.length - 1];
    const bucket = Math.floor(t / this.stepMs);
    if (last && Math.floor(last[0] / this.stepMs) === bucket) {
      if (last[1] === v) return;
      last[1] = v;
    } else if (last && t < last[0]) {
      return; // older than what we have: backfill() is the way in
    } else {
      pts.push([t, v]);
      if (pts.length > this.max) pts.splice(0, pts.length - this.max);
    }
    this.version++;
  }

  /** Put history points (oldest first) before the live ones; points already covered are skipped. */
  backfill(history) {
    const first = this.points.length ? this.points[0][0] : Infinity;
    const older = history.filter(([t, v]) => Number.isFinite(t) && Number.isFinite(v) && t < first);
    if (!older.length) return;
    this.points = older.concat(this.points);
    if (this.points.length > this.max) this.points.splice(0, this.points.length - this.max);
    this.version++;
  }

  get length() { return this.points.length; }
}

/** The SVG path of `points` in a w×h box (y grows downwards), with the ranges it used. */
export function linePath(points, w, h, pad = 1) {
  if (points.length === 0) return { d: "", lo: NaN, hi: NaN, t0: NaN, t1: NaN };
  let lo = Infinity, hi = -Infinity;
  for (const [, v] of points) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  const span = t1 - t0 || 1;
  const range = hi - lo || Math.abs(hi) * 1e-6 || 1;
  const base = hi === lo ? lo - range / 2 : lo; // a flat series is drawn across the middle
  const x = (t) => pad + ((t - t0) / span) * (w - 2 * pad);
  const y = (v) => pad + (1 - (v - base) / range) * (h - 2 * pad);
  let d = "";
  for (let i = 0; i < points.length; i++) {
    const [t, v] = points[i];
    const px = points.length === 1 ? w - pad : x(t);
    d += `${i ? "L" : "M"}${px.toFixed(1)},${y(v).toFixed(1)}`;
  }
  return { d, lo, hi, t0, t1 };
}

function el(name, attrs = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** A sparkline: one path, green if the last value is at or above the first, red otherwise. */
export class Sparkline {
  constructor(parent, w = 80, h = 18) {
    this.w = w; this.h = h;
    this.svg = el("svg", { class: "spark", width: w, height: h, viewBox: `0 0 ${w} ${h}`, "aria-hidden": "true" });
    this.path = el("path", { fill: "none", "stroke-width": "1.2" });
    this.svg.appendChild(this.path);
    parent.appendChild(this.svg);
    this.drawn = -1;
  }

  draw(series) {
    if (series.version === this.drawn) return;
    this.drawn = series.version;
    const { d } = linePath(series.points, this.w, this.h, 1.5);
    this.path.setAttribute("d", d);
    const pts = series.points;
    const up = pts.length < 2 || pts[pts.length - 1][1] >= pts[0][1];
    this.path.setAttribute("class", up ? "up" : "down");
    this.svg.dataset.points = String(pts.length);
  }
}

/** A chart with a frame, the range (high/low), the first and last instants and the last value. */
export class LineChart {
  constructor(container, { label = "", format = (v) => String(v) } = {}) {
    this.container = container;
    this.format = format;
    this.label = label;
    this.svg = el("svg", { class: "chart", preserveAspectRatio: "none" });
    this.grid = el("g", { class: "grid" });
    this.path = el("path", { class: "line", fill: "none" });
    this.area = el("path", { class: "area" });
    this.texts = {};
    this.svg.append(this.grid, this.area, this.path);
    for (const k of ["hi", "lo", "t0", "t1", "last", "title"]) {
      this.texts[k] = el("text", { class: `lbl lbl-${k}` });
      this.svg.appendChild(this.texts[k]);
    }
    container.appendChild(this.svg);
    this.drawn = "";
  }

  draw(series, title = this.label) {
    const rect = this.container.getBoundingClientRect();
    const w = Math.max(60, Math.floor(rect.width)), h = Math.max(40, Math.floor(rect.height));
    const key = `${series.version}:${w}x${h}:${title}`;
    if (key === this.drawn) return;
    this.drawn = key;
    this.svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    this.svg.setAttribute("width", w);
    this.svg.setAttribute("height", h);
    const left = 4, right = 64, top = 14, bottom = 14;
    const pw = w - left - right, ph = h - top - bottom;
    const pts = series.points;
    const { d, lo, hi, t0, t1 } = linePath(pts, pw, ph, 2);
    const g = `translate(${left},${top})`;
    this.path.setAttribute("d", d);
    this.path.setAttribute("transform", g);
    this.area.setAttribute("d", d ? `${d}L${(pw - 2).toFixed(1)},${ph}L2,${ph}Z` : "");
    this.area.setAttribute("transform", g);
    const up = pts.length < 2 || pts[pts.length - 1][1] >= pts[0][1];
    this.svg.setAttribute("class", `chart ${up ? "up" : "down"}`);
    this.grid.replaceChildren(
      el("rect", { x: left, y: top, width: pw, height: ph }),
      el("line", { x1: left, x2: left + pw, y1: top + ph / 2, y2: top + ph / 2 }),
    );
    const t = this.texts;
    const put = (node, x, y, s, anchor = "start") => {
      node.setAttribute("x", x); node.setAttribute("y", y); node.setAttribute("text-anchor", anchor);
      if (node.textContent !== s) node.textContent = s;
    };
    const clock = (ms) => (Number.isFinite(ms) ? new Date(ms).toISOString().slice(11, 19) : "");
    put(t.title, left + 2, 10, title);
    put(t.hi, w - 2, top + 8, pts.length ? this.format(hi) : "", "end");
    put(t.lo, w - 2, top + ph, pts.length ? this.format(lo) : "", "end");
    put(t.last, w - 2, top + ph / 2 + 4, pts.length ? this.format(pts[pts.length - 1][1]) : "no data", "end");
    put(t.t0, left, h - 2, clock(t0));
    put(t.t1, left + pw, h - 2, clock(t1), "end");
    this.svg.dataset.points = String(pts.length);
  }
}

/** The /api/v1/history URL next to a /ws URL (ws: -> http:, wss: -> https:). */
export function historyUrl(wsUrl, params) {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === "wss:" ? "https:" : "http:";
  u.pathname = "/api/v1/history";
  u.search = "";
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) u.searchParams.set(k, String(v));
  return u.toString();
}

/**
 * Every chart of the page, fed by a DashboardConnection. `hooks`: { selected() -> symbol,
 * sparkCell(symbol) -> element or null (the market row's cell), format(v, symbol) }.
 */
export class DeskCharts {
  constructor(conn, { priceBox, equityBox, hooks, fetchImpl = globalThis.fetch?.bind(globalThis) }) {
    this.conn = conn;
    this.hooks = hooks;
    this.fetch = fetchImpl;
    this.stepMs = 1000;
    this.prices = new Map(); // symbol -> Series
    this.sparks = new Map(); // symbol -> Sparkline
    this.equity = new Series(2400, this.stepMs);
    this.accountId = null;
    this.backfilled = new Set(); // "market_data:SYM", "account:main", "big:SYM"
    this.priceChart = new LineChart(priceBox, { format: (v) => hooks.format(v, hooks.selected()) });
    this.equityChart = new LineChart(equityBox, { label: "Equity", format: (v) => v.toLocaleString("en-US", { maximumFractionDigits: 0 }) });
    this.requests = 0;
    this.failures = 0;
    this._timer = null;
    conn.on("snapshot", ({ msg }) => this._take(msg, null));
    conn.on("update", ({ msg, touched }) => this._take(msg, touched));
    if (typeof ResizeObserver === "function") new ResizeObserver(() => this.schedule()).observe(priceBox);
  }

  series(symbol) {
    let s = this.prices.get(symbol);
    if (!s) { s = new Series(1200, this.stepMs); this.prices.set(symbol, s); }
    return s;
  }

  _take(msg, touched) {
    const t = Date.parse(msg.timestamp) || Date.now();
    const data = this.conn.state.data;
    const md = data.market_data || {};
    const ids = touched === null ? Object.keys(md) : touched.has("market_data") ? touched.get("market_data") : [];
    for (const id of ids === null ? Object.keys(md) : ids) {
      const item = md[id];
      if (item && Number.isFinite(item.last_price)) this.series(id).push(t, item.last_price);
    }
    const accounts = data.account || {};
    const acct = Object.keys(accounts)[0];
    if (acct && (touched === null || touched.has("account"))) {
      this.accountId = acct;
      this.equity.push(t, accounts[acct].equity);
    }
    this._backfillNew();
    this.schedule();
  }

  /** Fetch history for series never backfilled yet (20 symbols a request). */
  _backfillNew() {
    if (!this.fetch) return;
    const missing = [...this.prices.keys()].filter((s) => !this.backfilled.has(`market_data:${s}`));
    for (let i = 0; i < missing.length; i += 20) {
      const batch = missing.slice(i, i + 20);
      for (const s of batch) this.backfilled.add(`market_data:${s}`);
      this._load("market_data", batch, "last_price", 300, (sym) => this.series(sym));
    }
    const sel = this.hooks.selected();
    if (sel && !this.backfilled.has(`big:${sel}`) && this.backfilled.has(`market_data:${sel}`)) {
      this.backfilled.add(`big:${sel}`);
      this._load("market_data", [sel], "last_price", 1200, (sym) => this.series(sym));
    }
    if (this.accountId && !this.backfilled.has(`account:${this.accountId}`)) {
      this.backfilled.add(`account:${this.accountId}`);
      this._load("account", [this.accountId], "equity", 2400, () => this.equity);
    }
  }

  async _load(type, symbols, field, limit, target) {
    const o = this.conn.options;
    const url = historyUrl(o.url, { type, symbol: symbols.join(","), fields: field, limit, token: o.token });
    this.requests++;
    try {
      const res = await this.fetch(url);
      if (!res.ok) {
        // 404: a symbol has no history yet (a new one): ask for the others alone next time
        if (res.status === 404 && symbols.length > 1) {
          const body = await res.json().catch(() => ({}));
          const rest = symbols.filter((s) => s !== body.symbol);
          if (rest.length) this._load(type, rest, field, limit, target);
        }
        return;
      }
      const body = await res.json();
      if (Number.isFinite(body.interval_ms)) this.stepMs = body.interval_ms;
      for (const s of body.series || []) {
        target(s.symbol).backfill((s.points || []).map((p) => [p.t, p[field]]));
      }
      this.schedule();
    } catch {
      this.failures++;
    }
  }

  /** Forget what was backfilled (after a reconnect to a new server, say): fetched again. */
  refetch() { this.backfilled.clear(); this._backfillNew(); }

  schedule() {
    if (this._timer) return;
    this._timer = setTimeout(() => { this._timer = null; requestAnimationFrame(() => this.draw()); }, 250);
  }

  draw() {
    for (const [symbol, series] of this.prices) {
      let spark = this.sparks.get(symbol);
      const cell = this.hooks.sparkCell(symbol);
      if (!cell) continue;
      if (!spark || spark.svg.parentNode !== cell) { spark = new Sparkline(cell); this.sparks.set(symbol, spark); }
      spark.draw(series);
    }
    const sel = this.hooks.selected();
    if (sel && !this.backfilled.has(`big:${sel}`)) this._backfillNew();
    this.priceChart.draw(sel ? this.series(sel) : new Series(), sel ? `${sel} · last price` : "");
    this.equityChart.draw(this.equity, this.accountId ? `Equity · ${this.accountId}` : "Equity");
  }

  /** For tests and the console: how many points a series holds. */
  length(kind, symbol) {
    if (kind === "account") return this.equity.length;
    return this.prices.has(symbol) ? this.prices.get(symbol).length : 0;
  }
}
