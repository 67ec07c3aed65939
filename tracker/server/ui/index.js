/* The runs table (/): one JSON fetch, then filtering, sorting and column choice here in
   the browser. Only the rows in view are in the DOM, so 10,000 runs scroll and filter
   without a wait. */
"use strict";

(function () {
  const ROW_H = 28;
  const params = new URLSearchParams(location.search);
  const state = {
    project: params.get("project") || "",
    runs: [],
    shown: [],
    metricPaths: [],
    configKeys: [],
    // null until known: the server picks the first metric columns when none are asked for.
    metrics: params.has("metrics") ? params.get("metrics").split(",").filter(Boolean) : null,
    config: null, // chosen config columns (null: the defaults)
    sort: { key: "created", dir: -1 },
    selected: new Set(),
    filter: { text: params.get("q") || "", status: params.get("status") || "", tags: params.get("tags") || "", config: params.get("config") || "" },
  };
  let els = {};
  // The table refreshes by itself: every POLL_MS (?poll=MS; 0: never) it asks for a
  // fingerprint of the runs (a few aggregate queries) and reads the runs again only when
  // that changed, and then no more often than 20 times the last reading took (a busy
  // project's listing is not read back to back). Paused while the tab is hidden.
  const POLL_MS = params.has("poll") ? Number(params.get("poll")) : 8000;
  let version = null, lastLoad = 0, loadMs = 0, loading = null;

  function load() {
    if (!loading) loading = loadNow().finally(() => { loading = null; });
    return loading;
  }

  async function loadNow() {
    const t0 = performance.now();
    // The fingerprint first: a change while the runs are read shows at the next poll.
    const v = await T.api("/api/ui/runs-version", { project: state.project }).catch(() => null);
    const doc = await T.api("/api/ui/runs", { project: state.project, metrics: state.metrics === null ? null : state.metrics.join(",") || "," });
    if (v) version = v.version;
    lastLoad = Date.now();
    loadMs = performance.now() - t0;
    state.runs = doc.runs;
    state.projects = doc.projects;
    state.metricPaths = doc.metric_paths;
    if (!state.project && doc.projects.length === 1) state.project = doc.projects[0];
    const counts = new Map();
    for (const r of doc.runs) for (const k of Object.keys(r.config)) counts.set(k, (counts.get(k) || 0) + 1);
    state.configKeys = Array.from(counts.keys()).sort();
    if (state.config === null) {
      state.config = Array.from(counts.entries()).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 6).map((e) => e[0]).sort();
    }
    state.metrics = doc.metrics;
    if (!els.table) build();
    els.count.title = `listed by the server in ${doc.server_ms} ms`;
    els.table.dataset.loads = String(Number(els.table.dataset.loads || 0) + 1);
    render();
  }

  async function poll() {
    if (document.hidden || loading) return;
    const v = await T.api("/api/ui/runs-version", { project: state.project });
    if (v.version === version) return;
    if (Date.now() - lastLoad < 20 * loadMs) return; // changed: read at a later poll
    // The rows in view are rebuilt; filters, sort, selection, columns and scroll stay.
    await load();
  }

  function startPolling() {
    if (!(POLL_MS > 0)) return;
    const tick = () => poll().catch(() => {}).finally(() => setTimeout(tick, POLL_MS));
    setTimeout(tick, POLL_MS);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) poll().catch(() => {}); });
  }

  function columns() {
    const cols = [
      { key: "select", label: "", sortable: false },
      { key: "name", label: "name", get: (r) => r.name || r.id },
    ];
    if (!state.project) cols.push({ key: "project", label: "project", get: (r) => r.project });
    cols.push(
      { key: "status", label: "status", get: (r) => r.status },
      { key: "tags", label: "tags", get: (r) => r.tags.join(" ") },
      { key: "created", label: "created", get: (r) => r.created_at },
      { key: "duration", label: "duration", get: (r) => T.durationSeconds(r) }
    );
    for (const k of state.config) cols.push({ key: "config:" + k, label: k, cls: "num", get: (r) => r.config[k] });
    for (const m of state.metrics) cols.push({ key: "metric:" + m, label: m, cls: "num metric", get: (r) => r.metrics[m] });
    return cols;
  }

  // "lr=0.1, opt=adam, bs>=32": every clause must hold (numbers compare as numbers).
  function configClauses(text) {
    const out = [];
    for (const part of text.split(/[,;]+/).map((s) => s.trim()).filter(Boolean)) {
      const m = /^(.+?)\s*(>=|<=|!=|=|>|<|~)\s*(.*)$/.exec(part);
      if (m) out.push({ key: m[1].replace(/^config\//, ""), op: m[2], value: m[3] });
    }
    return out;
  }

  function holds(v, op, want) {
    if (v === undefined) return op === "!=";
    const n = Number(want);
    const isNum = typeof v === "number" && want !== "" && !Number.isNaN(n);
    const text = typeof v === "object" ? JSON.stringify(v) : String(v);
    switch (op) {
      case "=": return isNum ? v === n : text === want;
      case "!=": return isNum ? v !== n : text !== want;
      case "~": return text.toLowerCase().includes(want.toLowerCase());
      case ">": return isNum && v > n;
      case "<": return isNum && v < n;
      case ">=": return isNum && v >= n;
      case "<=": return isNum && v <= n;
    }
    return false;
  }

  function applyFilters() {
    const f = state.filter;
    const text = f.text.trim().toLowerCase();
    const tags = f.tags.split(/[,\s]+/).filter(Boolean);
    const clauses = configClauses(f.config);
    const cols = columns();
    const col = cols.find((c) => c.key === state.sort.key) || cols[1];
    let rows = state.runs.filter((r) => {
      if (f.status && r.status !== f.status) return false;
      if (text && !((r.name || "").toLowerCase().includes(text) || r.id.toLowerCase().includes(text))) return false;
      for (const t of tags) if (!r.tags.includes(t)) return false;
      for (const c of clauses) if (!holds(r.config[c.key], c.op, c.value)) return false;
      return true;
    });
    const dir = state.sort.dir;
    const keyed = rows.map((r) => [col.get(r), r]);
    keyed.sort((a, b) => {
      const x = a[0], y = b[0];
      const xe = x === undefined || x === null || x === "", ye = y === undefined || y === null || y === "";
      if (xe || ye) return xe === ye ? 0 : xe ? 1 : -1; // blanks last either way
      if (typeof x === "number" && typeof y === "number") return (x - y) * dir;
      return String(x).localeCompare(String(y), undefined, { numeric: true }) * dir;
    });
    state.shown = keyed.map((e) => e[1]);
  }

  function cell(col, r) {
    if (col.key === "select") {
      return T.el("td", { class: "sel" }, T.el("input", {
        type: "checkbox", "data-testid": "select-run", checked: state.selected.has(r.id),
        onchange: (e) => { e.target.checked ? state.selected.add(r.id) : state.selected.delete(r.id); updateCompare(); },
      }));
    }
    if (col.key === "name") {
      return T.el("td", { class: "name" }, T.el("a", { href: "/runs/" + encodeURIComponent(r.id), text: r.name || r.id }),
        r.name ? T.el("span", { class: "muted id", text: " " + r.id }) : null,
        r.parent_id ? T.el("span", { class: "fork", title: `forked from ${r.parent_id} at step ${r.fork_step}`, text: " fork" }) : null);
    }
    if (col.key === "status") return T.el("td", {}, T.statusBadge(r.status));
    if (col.key === "tags") return T.el("td", { class: "tags" }, r.tags.map((t) => T.el("span", { class: "tag", text: t })));
    if (col.key === "created") return T.el("td", { text: T.fmtTime(r.created_at) });
    if (col.key === "duration") return T.el("td", { class: "num", text: T.fmtDuration(r) });
    return T.el("td", { class: col.cls || "", text: T.fmtValue(col.get(r)) });
  }

  function renderRows() {
    const cols = columns();
    const box = els.scroll;
    const first = Math.max(0, Math.floor(box.scrollTop / ROW_H) - 10);
    const count = Math.ceil((box.clientHeight || 600) / ROW_H) + 20;
    const last = Math.min(state.shown.length, first + count);
    const body = els.tbody;
    const rows = [T.el("tr", { class: "spacer", style: `height:${first * ROW_H}px` })];
    for (let i = first; i < last; i++) {
      const r = state.shown[i];
      rows.push(T.el("tr", { "data-testid": "run-row", "data-run-id": r.id, "data-status": r.status }, cols.map((c) => cell(c, r))));
    }
    rows.push(T.el("tr", { class: "spacer", style: `height:${(state.shown.length - last) * ROW_H}px` }));
    body.replaceChildren(...rows);
  }

  function renderHead() {
    const cols = columns();
    els.thead.replaceChildren(T.el("tr", {}, cols.map((c) => {
      if (c.key === "select") {
        return T.el("th", { class: "sel" }, T.el("input", {
          type: "checkbox", title: "select every shown run", "data-testid": "select-all",
          onchange: (e) => { for (const r of state.shown) e.target.checked ? state.selected.add(r.id) : state.selected.delete(r.id); updateCompare(); renderRows(); },
        }));
      }
      const arrow = state.sort.key === c.key ? (state.sort.dir > 0 ? " ▲" : " ▼") : "";
      return T.el("th", {
        class: c.cls || "", "data-key": c.key, title: "sort by " + c.label,
        onclick: () => {
          state.sort = state.sort.key === c.key ? { key: c.key, dir: -state.sort.dir } : { key: c.key, dir: c.key === "created" ? -1 : 1 };
          render();
        },
      }, c.label + arrow);
    })));
  }

  function updateCompare() {
    const n = state.selected.size;
    els.compare.disabled = n < 2;
    els.compare.textContent = `Compare ${n || ""} selected`.replace("  ", " ");
  }

  // The filters live in the address too, so a filtered table can be shared or reloaded.
  function syncUrl() {
    const q = new URLSearchParams();
    if (state.project) q.set("project", state.project);
    for (const [key, name] of [["text", "q"], ["status", "status"], ["tags", "tags"], ["config", "config"]]) {
      if (state.filter[key]) q.set(name, state.filter[key]);
    }
    if (params.has("metrics") || state.metricsChosen) q.set("metrics", state.metrics.join(","));
    const text = q.toString();
    history.replaceState(null, "", location.pathname + (text ? "?" + text : ""));
  }

  function render() {
    syncUrl();
    applyFilters();
    renderHead();
    renderRows();
    els.table.dataset.count = String(state.shown.length);
    els.table.dataset.total = String(state.runs.length);
    els.count.textContent = `${state.shown.length.toLocaleString()} of ${state.runs.length.toLocaleString()} shown`;
    updateCompare();
  }

  function columnPicker() {
    const box = T.el("div", { class: "picker", hidden: true, "data-testid": "column-picker" });
    const fill = () => {
      const conf = state.configKeys.map((k) => T.el("label", {}, T.el("input", {
        type: "checkbox", checked: state.config.includes(k),
        onchange: (e) => { state.config = e.target.checked ? [...state.config, k].sort() : state.config.filter((x) => x !== k); render(); },
      }), " " + k));
      const mets = state.metricPaths.map((p) => T.el("label", {}, T.el("input", {
        type: "checkbox", checked: state.metrics.includes(p),
        onchange: (e) => {
          state.metrics = e.target.checked ? [...state.metrics, p] : state.metrics.filter((x) => x !== p);
          state.metricsChosen = true;
          load().catch(T.fail);
        },
      }), " " + p));
      box.replaceChildren(T.el("div", {}, T.el("h4", { text: "config" }), conf.length ? conf : T.el("p", { class: "muted", text: "none" })),
        T.el("div", {}, T.el("h4", { text: "metrics (last value)" }), mets.length ? mets : T.el("p", { class: "muted", text: "none" })));
    };
    const button = T.el("button", { "data-testid": "columns-button", text: "Columns", onclick: () => { fill(); box.hidden = !box.hidden; } });
    return [button, box];
  }

  function build() {
    const f = state.filter;
    const input = (key, attrs) => T.el("input", Object.assign({ value: f[key], oninput: (e) => { f[key] = e.target.value; els.scroll.scrollTop = 0; render(); } }, attrs));
    const projectSelect = T.el("select", { "data-testid": "filter-project", onchange: (e) => {
      const p = e.target.value;
      const q = new URLSearchParams(location.search);
      p ? q.set("project", p) : q.delete("project");
      location.search = q.toString();
    } }, T.el("option", { value: "", text: "all projects" }), (state.projects || []).map((p) => T.el("option", { value: p, selected: p === state.project, text: p })));
    const statusSelect = T.el("select", { "data-testid": "filter-status", onchange: (e) => { f.status = e.target.value; render(); } },
      ["", "running", "finished", "failed", "crashed", "terminated"].map((s) => T.el("option", { value: s, selected: s === f.status, text: s || "any status" })));
    const [colButton, picker] = columnPicker();
    els.compare = T.el("button", { "data-testid": "compare-button", disabled: true, onclick: () => {
      location.href = "/compare?runs=" + Array.from(state.selected).map(encodeURIComponent).join(",");
    } }, "Compare");
    els.count = T.el("span", { class: "muted", "data-testid": "run-count" });
    const refresh = T.el("button", { title: "read the runs again now (they refresh by themselves too; filters stay)", "data-testid": "refresh", text: "Refresh", onclick: () => load().catch(T.fail) });
    const bar = T.el("div", { class: "filters" },
      projectSelect,
      input("text", { placeholder: "name or id", "data-testid": "filter-name", type: "search" }),
      statusSelect,
      input("tags", { placeholder: "tags (all of)", "data-testid": "filter-tags" }),
      input("config", { placeholder: "config: lr=0.01, bs>=32, opt~adam", "data-testid": "filter-config", size: 32 }),
      colButton, els.compare, refresh, els.count);
    els.thead = T.el("thead");
    els.tbody = T.el("tbody");
    els.table = T.el("table", { class: "runs", "data-testid": "runs-table" }, els.thead, els.tbody);
    els.scroll = T.el("div", { class: "table-scroll", onscroll: () => requestAnimationFrame(renderRows) }, els.table);
    T.main().replaceChildren(bar, picker, els.scroll);
  }

  async function start() {
    T.crumbs("runs");
    await load();
    startPolling();
    if (state.project) T.crumbs("runs", T.el("span", { class: "muted", text: " · " + state.project }));
  }

  start().catch(T.fail);
})();
