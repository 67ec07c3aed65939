/* Compare (/compare?runs=A,B,...&path=P): series overlaid across runs, the config diff
   and, for a sweep (an Optuna study, any tagged set of runs), parallel coordinates of
   the hyperparameters that differ against the objective. */
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const ids = (params.get("runs") || "").split(",").filter(Boolean);
  const buckets = Math.max(1, Math.min(20000, Number(params.get("buckets")) || 1000));
  const charts = [];
  let doc;

  function runLabel(r) {
    return r.name || r.id;
  }

  function diffTable(showAll) {
    const rows = doc.config.filter((c) => showAll || c.differs);
    return T.el("table", { class: "diff", "data-testid": "config-diff" },
      T.el("tr", {}, T.el("th", { text: "config" }), doc.runs.map((r, i) => T.el("th", { style: `color:${T.color(i)}`, text: runLabel(r) }))),
      rows.length ? rows.map((c) => T.el("tr", { class: c.differs ? "differs" : "", "data-key": c.key }, T.el("td", { text: c.key }), c.values.map((v) => T.el("td", { text: v === null || v === undefined ? "—" : T.fmtValue(v) }))))
        : T.el("tr", {}, T.el("td", { colspan: doc.runs.length + 1, class: "muted", text: "the runs' configs are the same" })));
  }

  function objectiveOf(r, key) {
    if (key.startsWith("trial/")) return r.trial[key];
    return r.metrics[key];
  }

  // Parallel coordinates: one vertical axis per differing config key (numbers on a
  // linear scale, anything else as categories) and the objective last; one line per run.
  function parallel(objective) {
    const keys = doc.config.filter((c) => c.differs).map((c) => c.key);
    const axes = keys.map((k) => ({ key: k, get: (r) => r.config[k] }));
    if (objective) axes.push({ key: objective, get: (r) => objectiveOf(r, objective), objective: true });
    const W = Math.max(480, 140 * axes.length), H = 300, top = 30, bottom = 30, left = 60, right = 60;
    const svgNS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("width", W);
    svg.setAttribute("height", H);
    svg.setAttribute("data-testid", "parallel-coords");
    svg.setAttribute("data-axes", String(axes.length));
    svg.setAttribute("data-lines", String(doc.runs.length));
    const mk = (tag, attrs, text) => {
      const e = document.createElementNS(svgNS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      svg.append(e);
      return e;
    };
    if (axes.length < 2) {
      mk("text", { x: 10, y: 40, fill: "#6b7280" }, "parallel coordinates need at least two differing values (hyperparameters, objective)");
      return svg;
    }
    const xOf = (i) => left + (i * (W - left - right)) / (axes.length - 1);
    const scales = axes.map((a) => {
      const vals = doc.runs.map(a.get).filter((v) => v !== undefined && v !== null);
      const nums = vals.filter((v) => typeof v === "number" && Number.isFinite(v));
      if (nums.length === vals.length && nums.length) {
        let lo = Math.min(...nums), hi = Math.max(...nums);
        if (lo === hi) { lo -= 1; hi += 1; }
        return { y: (v) => (typeof v === "number" ? top + (1 - (v - lo) / (hi - lo)) * (H - top - bottom) : null), ticks: [[lo, hi], [hi, lo]].map(([v]) => v), lo, hi };
      }
      const cats = Array.from(new Set(vals.map((v) => T.fmtValue(v)))).sort();
      const step = (H - top - bottom) / Math.max(1, cats.length - 1);
      return { y: (v) => (v === undefined || v === null ? null : top + (cats.length === 1 ? (H - top - bottom) / 2 : cats.indexOf(T.fmtValue(v)) * step)), cats };
    });
    axes.forEach((a, i) => {
      const x = xOf(i);
      mk("line", { x1: x, x2: x, y1: top, y2: H - bottom, stroke: "#9ca3af" });
      mk("text", { x, y: 16, "text-anchor": "middle", "font-size": 12, "font-weight": a.objective ? 700 : 400 }, a.key);
      const s = scales[i];
      if (s.cats) s.cats.forEach((c) => mk("text", { x: x + 4, y: s.y(c) + 4, "font-size": 11, fill: "#6b7280" }, c));
      else {
        mk("text", { x: x + 4, y: top + 4, "font-size": 11, fill: "#6b7280" }, T.fmtValue(s.hi));
        mk("text", { x: x + 4, y: H - bottom + 4, "font-size": 11, fill: "#6b7280" }, T.fmtValue(s.lo));
      }
    });
    doc.runs.forEach((r, k) => {
      const pts = axes.map((a, i) => [xOf(i), scales[i].y(a.get(r))]).filter(([, y]) => y !== null);
      if (pts.length < 2) return;
      const line = mk("polyline", { points: pts.map((p) => p.join(",")).join(" "), fill: "none", stroke: T.color(k), "stroke-width": 2, opacity: 0.8 });
      const title = document.createElementNS(svgNS, "title");
      title.textContent = runLabel(r);
      line.append(title);
    });
    return svg;
  }

  function addChart(box, path) {
    const chart = new T.Chart(box, {
      path, buckets, runs: doc.runs.map((r) => ({ id: r.id, label: runLabel(r) })),
      onClose: () => charts.splice(charts.indexOf(chart), 1),
    });
    charts.push(chart);
  }

  async function start() {
    T.crumbs("compare");
    if (ids.length < 1) {
      T.main().replaceChildren(T.el("p", { class: "muted", text: "Select runs in the runs table to compare them (/compare?runs=A,B)." }));
      return;
    }
    doc = await T.api("/api/ui/compare", { runs: ids.join(",") });
    const project = doc.runs[0].project;
    T.crumbs(T.el("a", { href: "/?project=" + encodeURIComponent(project), text: project }), " / compare");
    const chartBox = T.el("div", { class: "charts", "data-testid": "charts" });
    const pathSelect = T.el("select", { "data-testid": "add-series" }, T.el("option", { value: "", text: "add a chart…" }), doc.series.map((p) => T.el("option", { value: p, text: p })));
    pathSelect.addEventListener("change", () => { if (pathSelect.value) addChart(chartBox, pathSelect.value); pathSelect.value = ""; });
    let showAll = false;
    const diffBox = T.el("div", {}, diffTable(false));
    const toggle = T.el("label", {}, T.el("input", { type: "checkbox", onchange: (e) => { showAll = e.target.checked; diffBox.replaceChildren(diffTable(showAll)); } }), " show equal values too");
    // The objective: an Optuna trial's value where every run has one, else a metric's last value.
    const trialKeys = Array.from(new Set(doc.runs.flatMap((r) => Object.keys(r.trial)))).filter((k) => doc.runs.every((r) => k in r.trial));
    const metricKeys = Array.from(new Set(doc.runs.flatMap((r) => Object.keys(r.metrics)))).filter((k) => doc.runs.every((r) => k in r.metrics) && !k.startsWith("sys/")).sort();
    const objectives = [...trialKeys.filter((k) => k === "trial/value"), ...metricKeys];
    const objSelect = T.el("select", { "data-testid": "objective" }, objectives.map((k) => T.el("option", { value: k, text: k })));
    const pcBox = T.el("div", { class: "heatmap-wrap" });
    const drawPC = () => pcBox.replaceChildren(parallel(objSelect.value || null));
    objSelect.addEventListener("change", drawPC);
    const studies = Array.from(new Set(doc.runs.flatMap((r) => r.tags.filter((t) => t.startsWith("study:")))));
    T.main().replaceChildren(
      T.el("p", {}, "comparing ", doc.runs.map((r, i) => [i ? ", " : "", T.el("a", { href: "/runs/" + encodeURIComponent(r.id), style: `color:${T.color(i)}`, text: runLabel(r) }), " ", T.statusBadge(r.status)])),
      T.el("div", { class: "toolbar" }, pathSelect),
      chartBox,
      T.el("h3", { text: "config" }), toggle, diffBox,
      T.el("h3", { text: "hyperparameters against the objective" + (studies.length ? ` (${studies.join(", ")})` : "") }),
      T.el("div", { class: "toolbar" }, "objective ", objSelect),
      pcBox);
    drawPC();
    const wanted = (params.get("path") || "").split(",").filter(Boolean);
    const first = wanted.length ? wanted : doc.series.filter((p) => /loss/.test(p)).slice(0, 2);
    (first.length ? first : doc.series.slice(0, 1)).forEach((p) => addChart(chartBox, p));
  }

  start().catch(T.fail);
})();
