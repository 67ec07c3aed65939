/* One run (/runs/<id>): status, lineage, config tree, provenance, files, its events, a
   searchable list of its series and charts of the chosen ones (?path=a,b&buckets=N; a
   text series as a searchable step -> text list). Events (sys/events) are listed and
   marked on the charts they concern. While the run is running, everything refreshes
   every few seconds. */
"use strict";

(function () {
  const runId = decodeURIComponent(location.pathname.split("/")[2]);
  const params = new URLSearchParams(location.search);
  const buckets = Math.max(1, Math.min(20000, Number(params.get("buckets")) || 1000));
  const POLL_MS = Number(params.get("poll")) || 3000;
  const charts = new Map();
  const seriesRanks = new Map(); // path -> the ranks that logged it (from the series list)
  const seriesKinds = new Map(); // path -> "float" or "str"
  let events = []; // the run's events (sys/events), drawn as markers on its charts
  let eventsBox = null;
  let run = null;
  let chartBox, headBox;

  function configTree(fields) {
    const root = {};
    for (const [path, kind, value] of fields) {
      if (!path.startsWith("config/")) continue;
      const parts = path.split("/").slice(1);
      let node = root;
      for (const p of parts.slice(0, -1)) {
        if (!(node[p] && node[p].__tree)) node[p] = { __tree: true };
        node = node[p];
      }
      node[parts[parts.length - 1]] = value;
    }
    const draw = (node, depth) => {
      const items = Object.keys(node).filter((k) => k !== "__tree").sort().map((k) => {
        const v = node[k];
        if (v && typeof v === "object" && v.__tree) {
          return T.el("li", {}, T.el("details", { open: depth < 2 }, T.el("summary", { text: k }), draw(v, depth + 1)));
        }
        return T.el("li", {}, T.el("span", { class: "key", text: k + ": " }), T.el("span", { class: "val", text: T.fmtValue(v) }));
      });
      return T.el("ul", { class: "tree" }, items);
    };
    return draw(root, 0);
  }

  function kvTable(rows, testid) {
    return T.el("table", { class: "kv", "data-testid": testid }, rows.map(([k, v]) => T.el("tr", {}, T.el("th", { text: k }), T.el("td", {}, v instanceof Node ? v : T.el("code", { text: T.fmtValue(v) })))));
  }

  function section(title, body, testid) {
    return T.el("section", { class: "card", "data-testid": testid }, T.el("h3", { text: title }), body);
  }

  function renderHead() {
    const r = run;
    const lineage = r.lineage.length
      ? T.el("p", { class: "lineage", "data-testid": "lineage" }, "forked from ",
          r.lineage.map((p, i) => [i ? " ← " : "", T.el("a", { href: "/runs/" + encodeURIComponent(p.id), text: p.name || p.id }), ` at step ${p.fork_step}`]),
          T.el("span", { class: "muted", text: " (its charts continue the parent's curve up to the fork step, marked by a dashed line)" }))
      : null;
    const children = r.children.length
      ? T.el("p", { class: "lineage", "data-testid": "children" }, "forks: ", r.children.map((c, i) => [i ? ", " : "", T.el("a", { href: "/runs/" + encodeURIComponent(c.id), text: c.name || c.id }), ` at step ${c.fork_step}`]))
      : null;
    const tb = r.error && ["failed", "crashed", "terminated"].includes(r.status)
      ? T.el("details", { open: true, class: "traceback" }, T.el("summary", { text: "traceback" }), T.el("pre", { "data-testid": "traceback", text: r.error }))
      : null;
    headBox.replaceChildren(
      T.el("h1", {}, r.name || r.id, " ", T.statusBadge(r.status)),
      T.el("p", { class: "meta" },
        T.el("span", { text: `id ${r.id} · project ${r.project} · created ${T.fmtTime(r.created_at)} · duration ${T.fmtDuration(r)}` }),
        r.host ? T.el("span", { text: ` · host ${r.host}` }) : null,
        r.ranks.length > 1 ? [" · ", T.el("a", { href: `/runs/${encodeURIComponent(r.id)}/ranks`, "data-testid": "ranks-link", text: `${r.ranks.length} ranks →` })] : null),
      T.el("p", { class: "tags", "data-testid": "tags" }, r.tags.map((t) => T.el("a", { class: "tag", href: `/?project=${encodeURIComponent(r.project)}&tags=${encodeURIComponent(t)}`, text: t }))),
      ...[lineage, children, tb].filter(Boolean));
  }

  function renderInfo() {
    const f = run.fields;
    const sys = f.filter(([p]) => p.startsWith("sys/"));
    const files = f.filter(([, kind]) => kind === "file");
    const other = f.filter(([p, kind]) => !p.startsWith("sys/") && !p.startsWith("config/") && kind !== "file");
    const fileRows = files.map(([p, , info]) => [p, T.el("span", {}, T.el("code", { text: (info && (info.uri || info.path)) || JSON.stringify(info) }),
      info && info.size !== undefined ? T.el("span", { class: "muted", text: ` ${info.size} bytes` }) : null,
      info && info.sha256 ? T.el("span", { class: "muted", text: ` sha256 ${String(info.sha256).slice(0, 12)}…` }) : null)]);
    return T.el("div", { class: "cards" },
      section("config", f.some(([p]) => p.startsWith("config/")) ? configTree(f) : T.el("p", { class: "muted", text: "no config" }), "config"),
      other.length ? section("values", kvTable(other.map(([p, , v]) => [p, v]), "values-table"), "values") : null,
      section("provenance", sys.length ? kvTable(sys.map(([p, , v]) => [p.slice(4), v]), "provenance-table") : T.el("p", { class: "muted", text: "none recorded" }), "provenance"),
      files.length ? section("files", kvTable(fileRows, "files-table"), "files") : null);
  }

  // A text series: step -> text rows, newest first, paged and searchable on the server.
  function addText(path) {
    const PAGE = 100;
    let offset = 0, q = "", seq = 0;
    const list = T.el("ol", { class: "text-rows", "data-testid": "text-rows" });
    const info = T.el("span", { class: "muted chart-info" });
    const newer = T.el("button", { class: "small", text: "‹ newer", disabled: true, onclick: () => { offset = Math.max(0, offset - PAGE); load(); } });
    const older = T.el("button", { class: "small", text: "older ›", disabled: true, onclick: () => { offset += PAGE; load(); } });
    let typing = null;
    const search = T.el("input", { type: "search", placeholder: "search text", "data-testid": "text-search", oninput: (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => { q = e.target.value; offset = 0; load(); }, 150);
    } });
    const box = T.el("div", { class: "chart text-series", "data-testid": "text-series", "data-path": path },
      T.el("div", { class: "chart-head" }, T.el("span", { class: "chart-title", text: path + " (text)" }), info, search, newer, older,
        T.el("button", { class: "small", text: "×", title: "remove", onclick: () => { box.remove(); seq++; charts.delete(path); syncUrl(); } })),
      list);
    async function load() {
      const mine = ++seq;
      const doc = await T.api(`/api/ui/runs/${encodeURIComponent(runId)}/text`, { path, q, offset, limit: PAGE });
      if (mine !== seq) return;
      list.replaceChildren(...doc.rows.map(([step, text]) => T.el("li", { "data-testid": "text-row", "data-step": step },
        T.el("span", { class: "step", text: String(step) }), T.el("span", { class: "text", text }))));
      const end = Math.min(doc.matched, offset + doc.rows.length);
      info.textContent = doc.matched ? `${(offset + 1).toLocaleString()}–${end.toLocaleString()} of ${doc.matched.toLocaleString()}` + (q ? ` matching (of ${doc.total.toLocaleString()})` : "") : (q ? "no match" : "empty");
      box.dataset.total = String(doc.total);
      box.dataset.matched = String(doc.matched);
      newer.disabled = offset === 0;
      older.disabled = end >= doc.matched;
    }
    chartBox.append(box);
    charts.set(path, { load: () => load().catch((e) => { info.textContent = String(e.message || e); }) });
    charts.get(path).load();
    syncUrl();
  }

  // Events concerning a chart: those of its path, and the run-wide ones (no path).
  function eventsFor(path) {
    return events.filter((e) => e.path === path || e.path === null || e.path === undefined);
  }

  async function loadEvents() {
    const doc = await T.api(`/api/ui/runs/${encodeURIComponent(runId)}/events`);
    events = doc.events;
    if (!eventsBox) return;
    const items = events.slice().reverse().map((e) => T.el("li", { "data-testid": "event-item", "data-kind": String(e.kind), "data-level": String(e.level || "info"), class: "event level-" + String(e.level || "info") },
      T.el("span", { class: "step", text: `step ${e.step}` }), " ",
      T.el("span", { class: "kind", text: String(e.kind) }), " ",
      e.path ? T.el("code", { text: String(e.path) }) : T.el("span", { class: "muted", text: "run" }),
      e.rank !== null && e.rank !== undefined ? T.el("span", { class: "muted", text: ` rank ${e.rank}` }) : null,
      T.el("div", { class: "message", text: String(e.message === undefined ? "" : e.message) })));
    eventsBox.hidden = !events.length;
    eventsBox.replaceChildren(T.el("h3", { text: `events (${doc.total.toLocaleString()})` }), T.el("ul", { class: "events-list" }, items));
  }

  function addChart(path) {
    if (charts.has(path)) return;
    if (seriesKinds.get(path) === "str") return addText(path);
    const forkStep = run.lineage.length ? run.lineage[0].fork_step : null;
    const chart = new T.Chart(chartBox, {
      path, buckets, forkStep, runs: [{ id: runId, label: run.name || runId }], ranks: seriesRanks.get(path),
      events: () => eventsFor(path),
      onClose: () => { charts.delete(path); syncUrl(); },
    });
    charts.set(path, chart);
    syncUrl();
  }

  function syncUrl() {
    const q = new URLSearchParams(location.search);
    q.set("path", Array.from(charts.keys()).join(","));
    history.replaceState(null, "", location.pathname + "?" + q.toString());
  }

  function seriesList() {
    const list = T.el("ul", { class: "series-list", "data-testid": "series-list" });
    const info = T.el("span", { class: "muted", "data-testid": "series-count" });
    let seq = 0;
    const search = async (q) => {
      const mine = ++seq;
      const doc = await T.api(`/api/ui/runs/${encodeURIComponent(runId)}/series`, { q, limit: 500 });
      if (mine !== seq) return;
      for (const s of doc.series) { seriesRanks.set(s.path, s.ranks); seriesKinds.set(s.path, s.kind); }
      info.textContent = `${doc.matched.toLocaleString()} of ${doc.total.toLocaleString()} series` + (doc.matched > doc.series.length ? ` (first ${doc.series.length} listed)` : "");
      list.replaceChildren(...doc.series.map((s) => T.el("li", { "data-testid": "series-item", "data-path": s.path },
        T.el("a", { href: "#", text: s.kind === "float" ? s.path : s.path + " (text)", onclick: (e) => { e.preventDefault(); addChart(s.path); } }),
        T.el("span", { class: "muted", text: ` ${s.count.toLocaleString()} pts${s.ranks.length > 1 ? ` · ${s.ranks.length} ranks` : ""}${s.last_value !== null && s.last_value !== undefined ? " · last " + T.fmtValue(s.last_value) : ""}` }))));
      return doc;
    };
    let typing = null; // searched once typing pauses: 100,000 names are filtered on the server
    const input = T.el("input", { type: "search", placeholder: "filter series: train/*, loss", "data-testid": "series-search", oninput: (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => search(e.target.value).catch(T.fail), 150);
    } });
    return { box: T.el("section", { class: "card series" }, T.el("h3", { text: "series" }), input, " ", info, list), search };
  }

  async function poll() {
    if (!run || run.status !== "running") return;
    try {
      const fresh = await T.api(`/api/ui/runs/${encodeURIComponent(runId)}`);
      const changed = fresh.status !== run.status;
      run = fresh;
      renderHead();
      await loadEvents().catch(() => {});
      for (const c of charts.values()) c.load();
      if (changed) document.body.dataset.status = run.status;
    } finally {
      if (run.status === "running") setTimeout(() => poll().catch(() => {}), POLL_MS);
    }
  }

  async function start() {
    run = await T.api(`/api/ui/runs/${encodeURIComponent(runId)}`);
    document.title = `tracker · ${run.name || run.id}`;
    document.body.dataset.status = run.status;
    T.crumbs(T.el("a", { href: "/?project=" + encodeURIComponent(run.project), text: run.project }), " / ", T.el("span", { text: run.name || run.id }));
    headBox = T.el("div", { class: "run-head", "data-testid": "run-head" });
    chartBox = T.el("div", { class: "charts", "data-testid": "charts" });
    const sl = seriesList();
    eventsBox = T.el("section", { class: "card events", "data-testid": "events", hidden: true });
    T.main().replaceChildren(headBox, T.el("div", { class: "run-grid" }, T.el("div", { class: "left" }, renderInfo(), eventsBox, sl.box), T.el("div", { class: "right" }, chartBox)));
    renderHead();
    await loadEvents().catch(() => {});
    const doc = await sl.search("");
    const wanted = (params.get("path") || "").split(",").filter(Boolean);
    if (wanted.length) wanted.forEach(addChart);
    else {
      const floats = doc.series.filter((s) => s.kind === "float" && !s.path.startsWith("sys/"));
      floats.sort((a, b) => (/loss/.test(b.path) ? 1 : 0) - (/loss/.test(a.path) ? 1 : 0));
      floats.slice(0, 4).forEach((s) => addChart(s.path));
    }
    if (run.status === "running") setTimeout(() => poll().catch(() => {}), POLL_MS);
  }

  start().catch(T.fail);
})();
