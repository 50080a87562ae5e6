// Desk helpers for the page's tables (docs/web.md, "Sorting, search, flashes"): sorting by a
// column, a symbol search that hides rows, and a flash budget so that colour still means something
// at high update rates. They work on app.js's KeyedTable (rows: Map id -> {tr, values}).

/**
 * Flashes allowed: at most one per cell per `cellMs`, and at most `perSecond` in all (a token
 * bucket of `burst`). At a high update rate most changes do not flash; the ones that do are
 * spread over the table instead of lighting it all up.
 */
export class FlashBudget {
  constructor({ cellMs = 1000, perSecond = 30, burst = 30, now = () => performance.now() } = {}) {
    this.cellMs = cellMs;
    this.perSecond = perSecond;
    this.burst = burst;
    this.now = now;
    this.tokens = burst;
    this.at = now();
    this.last = new WeakMap();
    this.allowed = 0;
    this.denied = 0;
  }

  allow(cell) {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.perSecond);
    this.at = now;
    const last = this.last.get(cell);
    if (this.tokens < 1 || (last !== undefined && now - last < this.cellMs)) {
      this.denied++;
      return false;
    }
    this.tokens -= 1;
    this.last.set(cell, now);
    this.allowed++;
    return true;
  }
}

/** Compare two cell values: numbers numerically, then anything else as text; blanks last. */
export function compareValues(a, b) {
  const blankA = a === undefined || a === null || a === "", blankB = b === undefined || b === null || b === "";
  if (blankA || blankB) return blankA === blankB ? 0 : blankA ? 1 : -1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), "en", { numeric: true });
}

/**
 * Click a header to sort by its column (ascending, descending, then back to the table's own
 * order). Rows are re-ordered when asked (`apply()`), which app.js does at most once a second
 * while a sort is on, so a busy table does not jump around at every update.
 */
export class TableSort {
  constructor(table, thead, { onChange = () => {} } = {}) {
    this.table = table;
    this.col = -1;
    this.dir = 0;
    this.onChange = onChange;
    this.headers = [...thead.querySelectorAll("th")];
    this.headers.forEach((th, i) => {
      if (i >= table.columns.length) return;
      th.classList.add("sortable");
      th.addEventListener("click", () => this.toggle(i));
    });
  }

  get active() { return this.dir !== 0; }

  toggle(col) {
    if (this.col !== col) { this.col = col; this.dir = 1; }
    else this.dir = this.dir === 1 ? -1 : this.dir === -1 ? 0 : 1;
    this.headers.forEach((th, i) => {
      th.classList.toggle("asc", i === this.col && this.dir === 1);
      th.classList.toggle("desc", i === this.col && this.dir === -1);
    });
    this.onChange();
  }

  /** The ids in display order, or null when no sort is on. */
  order() {
    if (!this.active) return null;
    const i = this.col, dir = this.dir;
    return [...this.table.rows.entries()]
      .sort(([ia, a], [ib, b]) => dir * compareValues(a.values[i], b.values[i]) || (ia < ib ? -1 : ia > ib ? 1 : 0))
      .map(([id]) => id);
  }

  /** Put the rows in sort order (only moving them if the order changed). */
  apply() {
    const ids = this.order();
    if (!ids) return false;
    const body = this.table.tbody;
    let i = 0, same = true;
    for (const tr of body.children) { if (tr.dataset.id !== ids[i++]) { same = false; break; } }
    if (same && i === ids.length) return false;
    const frag = document.createDocumentFragment();
    for (const id of ids) frag.appendChild(this.table.rows.get(id).tr);
    body.appendChild(frag);
    return true;
  }
}

/**
 * A symbol search: rows whose symbol does not contain the text (case-insensitive) are hidden.
 * `symbolOf(id, row)` gives a row's symbol.
 */
export class SymbolSearch {
  constructor() { this.text = ""; }

  set(text) { this.text = text.trim().toUpperCase(); }

  matches(symbol) {
    return !this.text || String(symbol ?? "").toUpperCase().includes(this.text);
  }

  /** Hide or show one row; returns whether it is shown. */
  applyRow(tr, symbol) {
    const show = this.matches(symbol);
    if (tr.hidden === show) tr.hidden = !show;
    return show;
  }
}

/** Count the entries of the events tape by channel (what the list shows, not what was received). */
export function tapeCounts(list) {
  const counts = { fills: 0, alerts: 0, trades: 0 };
  for (const li of list.children) {
    const ch = li.dataset.channel;
    if (ch in counts) counts[ch]++;
  }
  return counts;
}
