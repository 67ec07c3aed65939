/* tracker UI: what every page shares. Auth (a token in localStorage, sent as the API's
   Authorization: Bearer header), JSON fetching, small DOM helpers and the chart
   (uPlot: a line through each bucket's last value over a min/max band). */
"use strict";

const T = (window.T = {});
const TOKEN_KEY = "tracker-token";
T.authMode = (document.querySelector('meta[name="tracker-auth"]') || {}).content || "open";

// A token handed over once in the fragment (/#token=trk_...): never sent to the server
// in a URL, so no access log holds it. Kept in localStorage, removed from the address bar.
(function takeToken() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m) {
    localStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
})();

T.token = () => localStorage.getItem(TOKEN_KEY);

T.el = function (tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
};

T.main = () => document.getElementById("main");

T.showLogin = function (message) {
  const main = T.main();
  main.replaceChildren();
  const input = T.el("input", { type: "password", id: "token-input", placeholder: "trk_…", autocomplete: "off", size: 60 });
  const form = T.el(
    "form",
    {
      class: "login",
      "data-testid": "login-form",
      onsubmit: (ev) => {
        ev.preventDefault();
        localStorage.setItem(TOKEN_KEY, input.value.trim());
        location.reload();
      },
    },
    T.el("h2", { text: "Sign in with an API token" }),
    T.el("p", { class: "muted", text: message || "This server needs a read token of your project (tracker token create --scope read)." }),
    input,
    T.el("button", { type: "submit", text: "Sign in" })
  );
  main.append(form);
};

class HTTPError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

T.api = async function (path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, v);
  }
  const headers = {};
  const token = T.token();
  if (token) headers["Authorization"] = "Bearer " + token;
  const resp = await fetch(url, { headers });
  if (resp.status === 401) {
    let detail = "";
    try { detail = (await resp.json()).detail; } catch (e) { /* not JSON */ }
    if (T.authMode === "token") T.showLogin(detail ? "Refused: " + detail : undefined);
    throw new HTTPError(401, detail || "unauthorized");
  }
  if (!resp.ok) {
    let detail = resp.statusText;
    try { detail = (await resp.json()).detail; } catch (e) { /* not JSON */ }
    throw new HTTPError(resp.status, detail);
  }
  return resp.json();
};

T.fail = function (err) {
  if (err && err.status === 401) return;
  const main = T.main();
  main.replaceChildren(T.el("p", { class: "error", "data-testid": "error", text: String(err && err.message || err) }));
};

T.signOutLink = function () {
  const who = document.getElementById("who");
  if (T.authMode === "token" && T.token() && who) {
    who.replaceChildren(T.el("a", { href: "#", onclick: (e) => { e.preventDefault(); localStorage.removeItem(TOKEN_KEY); location.reload(); }, text: "sign out" }));
  }
};

T.crumbs = function (...items) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren(...items.map((it) => (typeof it === "string" ? T.el("span", { text: it }) : it)));
};

T.fmtTime = (ts) => (ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) : "");
T.fmtDuration = function (run) {
  const end = run.ended_at || (run.status === "running" ? Date.now() / 1000 : run.heartbeat || run.updated_at);
  if (!end || !run.created_at) return "";
  return T.humanSeconds(end - run.created_at);
};
T.durationSeconds = function (run) {
  const end = run.ended_at || (run.status === "running" ? Date.now() / 1000 : run.heartbeat || run.updated_at);
  return end && run.created_at ? end - run.created_at : null;
};
T.humanSeconds = function (s) {
  if (s === null || s === undefined) return "";
  if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 0) + " ms";
  if (s < 60) return s.toFixed(1) + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + Math.round(s % 60) + "s";
  return Math.floor(s / 3600) + "h " + Math.round((s % 3600) / 60) + "m";
};
T.fmtValue = function (v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") {
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : String(+v.toPrecision(5));
  }
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
};
T.statusBadge = (s) => T.el("span", { class: "status status-" + s, "data-testid": "status", text: s });

T.COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
T.color = (i) => T.COLORS[i % T.COLORS.length];
T.alpha = (hex, a) => {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
};

/* A chart of one path for one or more runs (compare overlays them).

   opts: {path, runs: [{id, label}], rank, aggregate, buckets, forkStep, live: () => bool,
          events: () => [{step, kind, level, message, rank}] (markers; see drawEvents)}
   The element carries the test hooks: data-testid="chart", data-path and, once drawn,
   data-buckets (the most buckets of any drawn series), data-series (how many runs),
   data-max / data-min (over the drawn band), data-nan (NaN points in the drawn range),
   data-points (points the buckets stand for), data-range ("start,end" when zoomed),
   data-events (event markers in view). */
T.Chart = class {
  constructor(parent, opts) {
    this.opts = Object.assign({ buckets: 1000, rank: 0 }, opts);
    this.range = null;
    this.seq = 0;
    this.el = T.el("div", { class: "chart", "data-testid": "chart", "data-path": opts.path });
    this.head = T.el("div", { class: "chart-head" },
      T.el("span", { class: "chart-title", text: opts.path }),
      this.info = T.el("span", { class: "muted chart-info" }),
      this.reset = T.el("button", { class: "small", hidden: true, text: "reset zoom", onclick: () => this.zoom(null) }),
      this.rankSelect(),
      opts.onClose ? T.el("button", { class: "small", text: "×", title: "remove", onclick: () => { this.destroy(); opts.onClose(); } }) : null
    );
    this.body = T.el("div", { class: "chart-body" });
    this.el.append(this.head, this.body);
    parent.append(this.el);
    T.charts.add(this);
    this.load();
  }

  // For a series logged by several ranks: which rank, or an aggregate over them.
  rankSelect() {
    const ranks = this.opts.ranks || [];
    if (ranks.length < 2) return null;
    const current = this.opts.aggregate ? "agg:" + this.opts.aggregate : "rank:" + (this.opts.rank || 0);
    const options = [
      ...ranks.map((r) => ["rank:" + r, "rank " + r]),
      ...["mean", "min", "max"].map((a) => ["agg:" + a, a + " over ranks"]),
    ];
    const select = T.el("select", { class: "small", "data-testid": "chart-rank" },
      options.map(([v, t]) => T.el("option", { value: v, selected: v === current, text: t })));
    select.addEventListener("change", () => {
      const [kind, value] = select.value.split(":");
      this.opts.aggregate = kind === "agg" ? value : null;
      this.opts.rank = kind === "rank" ? Number(value) : 0;
      this.el.dataset.rank = select.value;
      this.load();
    });
    return select;
  }

  width() {
    return Math.max(300, (this.el.clientWidth || 600) - 16);
  }

  async fetchAll() {
    const params = { path: this.opts.path, rank: this.opts.rank, buckets: this.opts.buckets, aggregate: this.opts.aggregate };
    if (this.range) { params.start = this.range[0]; params.end = this.range[1]; }
    return Promise.all(this.opts.runs.map((r) => T.api(`/api/ui/runs/${encodeURIComponent(r.id)}/values`, params).catch((e) => ({ error: e.message }))));
  }

  async load() {
    const seq = ++this.seq;
    let docs;
    try {
      docs = await this.fetchAll();
    } catch (e) {
      this.info.textContent = String(e.message || e);
      return;
    }
    if (seq !== this.seq) return; // a newer request (zoom, live update) won
    this.draw(docs);
  }

  zoom(range) {
    this.range = range;
    this.reset.hidden = !range;
    this.load();
  }

  draw(docs) {
    const ok = docs.map((d, i) => [d, i]).filter(([d]) => !d.error && d.step);
    if (!ok.length) {
      this.body.replaceChildren(T.el("p", { class: "muted", text: docs.map((d) => d.error).filter(Boolean).join("; ") || "no data" }));
      return;
    }
    // One x axis: the union of every run's bucket steps.
    const xs = Array.from(new Set(ok.flatMap(([d]) => d.step))).sort((a, b) => a - b);
    const pos = new Map(xs.map((x, i) => [x, i]));
    const data = [xs];
    const series = [{ label: "step" }];
    const bands = [];
    let max = -Infinity, min = Infinity, nan = 0, points = 0, buckets = 0;
    const nanSteps = [];
    ok.forEach(([d, i], k) => {
      const col = (arr) => {
        const out = new Array(xs.length).fill(undefined);
        d.step.forEach((s, j) => { out[pos.get(s)] = arr[j]; });
        return out;
      };
      const color = T.color(i);
      const label = this.opts.runs[i].label;
      const base = data.length;
      data.push(col(d.last), col(d.max), col(d.min));
      series.push(
        { label: label, stroke: color, width: 1.5, spanGaps: true },
        { label: label + " max", stroke: T.alpha(color, 0.35), width: 1, spanGaps: true },
        { label: label + " min", stroke: T.alpha(color, 0.35), width: 1, spanGaps: true }
      );
      bands.push({ series: [base + 1, base + 2], fill: T.alpha(color, 0.15) });
      for (const v of d.max) if (v !== null && v > max) max = v;
      for (const v of d.min) if (v !== null && v < min) min = v;
      d.nan.forEach((c, j) => { if (c > 0) nanSteps.push(d.step[j]); nan += c; });
      points += d.points;
      buckets = Math.max(buckets, d.buckets);
    });
    const first = ok[0][0];
    const self = this;
    const forkStep = this.opts.forkStep;
    const plotOpts = {
      width: this.width(),
      height: 240,
      series,
      bands,
      legend: { show: ok.length > 1 || this.opts.runs.length > 1, live: false },
      scales: { x: { time: false } },
      axes: [{}, { size: 60 }],
      cursor: { drag: { x: true, y: false, setScale: false } },
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 3) return;
          const a = Math.floor(u.posToVal(u.select.left, "x"));
          const b = Math.ceil(u.posToVal(u.select.left + u.select.width, "x"));
          u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
          if (b > a) self.zoom([a, b]);
        }],
        draw: [(u) => {
          const ctx = u.ctx;
          ctx.save();
          // NaN points: a red tick at the bottom of each bucket holding one.
          ctx.fillStyle = "#d62728";
          for (const s of nanSteps) {
            const x = u.valToPos(s, "x", true);
            ctx.fillRect(x - 1, u.bbox.top + u.bbox.height - 8, 3, 8);
          }
          self.drawEvents(u, ctx);
          if (forkStep !== null && forkStep !== undefined) {
            const x = u.valToPos(forkStep, "x", true);
            if (x >= u.bbox.left && x <= u.bbox.left + u.bbox.width) {
              ctx.strokeStyle = "#888";
              ctx.setLineDash([4, 4]);
              ctx.beginPath();
              ctx.moveTo(x, u.bbox.top);
              ctx.lineTo(x, u.bbox.top + u.bbox.height);
              ctx.stroke();
            }
          }
          ctx.restore();
        }],
      },
    };
    if (this.plot) this.plot.destroy();
    this.body.replaceChildren();
    this.plot = new uPlot(plotOpts, data, this.body);
    // The band's edges need no legend entries of their own.
    this.plot.root.querySelectorAll(".u-legend .u-series").forEach((row) => {
      if (/ (max|min)$/.test(row.textContent.trim())) row.style.display = "none";
    });
    const ds = this.el.dataset;
    ds.buckets = String(buckets);
    ds.series = String(ok.length);
    ds.max = String(max);
    ds.min = String(min);
    ds.nan = String(nan);
    ds.points = String(points);
    ds.raw = String(ok.every(([d]) => d.raw));
    if (this.range) ds.range = this.range.join(","); else delete ds.range;
    ds.drawn = String(Number(ds.drawn || 0) + 1);
    const what = first.raw ? `${points.toLocaleString()} points` : `${points.toLocaleString()} points in ${buckets} buckets`;
    this.info.textContent = `${what}${nan ? ` · ${nan} NaN` : ""} · ${first.server_ms} ms`;
  }

  // Event markers: a line at each event's step in view (colored by level), and a marker
  // element over the plot whose tooltip is the event's message (text, never HTML).
  drawEvents(u, ctx) {
    const evs = this.opts.events ? this.opts.events() : [];
    if (!this.markers) {
      this.markers = T.el("div", { class: "event-markers" });
    }
    if (this.markers.parentNode !== u.over) u.over.append(this.markers);
    const colors = { error: "#b91c1c", warning: "#d97706", info: "#2563eb" };
    const shown = [];
    const [lo, hi] = [u.scales.x.min, u.scales.x.max];
    for (const e of evs) {
      if (typeof e.step !== "number" || e.step < lo || e.step > hi) continue;
      const color = colors[e.level] || colors.info;
      const x = u.valToPos(e.step, "x", true);
      ctx.strokeStyle = color;
      ctx.lineWidth = 1;
      ctx.setLineDash([2, 3]);
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
      ctx.setLineDash([]);
      const left = u.valToPos(e.step, "x");
      shown.push(T.el("div", {
        class: "event-marker", "data-testid": "event-marker", "data-step": e.step, "data-kind": String(e.kind),
        "data-level": String(e.level || "info"), style: `left:${left - 5}px;background:${color}`,
        title: `step ${e.step} · ${e.kind}${e.rank !== null && e.rank !== undefined ? " · rank " + e.rank : ""}: ${e.message === undefined ? "" : e.message}`,
      }));
    }
    this.markers.replaceChildren(...shown);
    this.el.dataset.events = String(shown.length);
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: this.width(), height: 240 });
  }

  destroy() {
    T.charts.delete(this);
    this.seq++;
    if (this.plot) this.plot.destroy();
    this.el.remove();
  }
};

// Charts follow the window's width.
T.charts = new Set();
let resizing = null;
window.addEventListener("resize", () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => T.charts.forEach((c) => c.resize()), 100);
});

T.signOutLink();
