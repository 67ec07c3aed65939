/* Per-rank view (/runs/<id>/ranks?path=P): a rank x step heatmap of a metric (or of a
   per-rank system metric), each rank's step time (per_rank/step_time), and a table that
   flags the rank that lags (step time) or drifts (the metric, from the ranks' median). */
"use strict";

(function () {
  const runId = decodeURIComponent(location.pathname.split("/")[2]);
  const params = new URLSearchParams(location.search);
  let mode = params.get("color") || "value";

  function median(xs) {
    const s = xs.filter((v) => v !== null && Number.isFinite(v)).sort((a, b) => a - b);
    if (!s.length) return null;
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  }

  function viridis(t) {
    // A short viridis ramp, interpolated.
    const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    t = Math.max(0, Math.min(1, t));
    const x = t * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
    const c = stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * f));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  function heatmap(grid, title, testid, colorMode) {
    const wrap = T.el("div", { class: "heatmap-wrap" });
    if (!grid || !grid.rows.length) {
      wrap.append(T.el("p", { class: "muted", text: `${title}: not logged by the ranks of this run` }));
      return wrap;
    }
    const rows = grid.rows;
    const n = grid.steps.length;
    // Deviation mode: each cell minus the ranks' median of that step bucket.
    const med = grid.steps.map((_, j) => median(rows.map((r) => r.values[j])));
    const cellVal = (r, j) => {
      const v = r.values[j];
      if (v === null) return null;
      return colorMode === "deviation" ? (med[j] === null ? null : v - med[j]) : v;
    };
    let lo = Infinity, hi = -Infinity;
    for (const r of rows) for (let j = 0; j < n; j++) { const v = cellVal(r, j); if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }
    if (colorMode === "deviation") { const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1; lo = -m; hi = m; }
    if (!(hi > lo)) hi = lo + 1;
    const cellW = Math.max(2, Math.min(12, Math.floor(1000 / n)));
    const cellH = Math.max(4, Math.min(24, Math.floor(480 / rows.length)));
    const left = 56;
    const canvas = T.el("canvas", { width: left + n * cellW, height: rows.length * cellH + 20, "data-testid": testid, "data-ranks": String(rows.length), "data-path": grid.path, "data-steps": String(n) });
    const ctx = canvas.getContext("2d");
    ctx.font = "11px system-ui";
    rows.forEach((r, i) => {
      ctx.fillStyle = "#374151";
      ctx.fillText("rank " + r.rank, 2, i * cellH + cellH / 2 + 4);
      for (let j = 0; j < n; j++) {
        const v = cellVal(r, j);
        ctx.fillStyle = v === null ? "#f3f4f6" : viridis((v - lo) / (hi - lo));
        ctx.fillRect(left + j * cellW, i * cellH, cellW, cellH - 1);
      }
    });
    ctx.fillStyle = "#6b7280";
    ctx.fillText("step " + grid.steps[0], left, rows.length * cellH + 14);
    const endText = "step " + grid.steps[n - 1];
    ctx.fillText(endText, Math.max(left + 80, left + n * cellW - ctx.measureText(endText).width), rows.length * cellH + 14);
    canvas.title = `${grid.path}: ${colorMode === "deviation" ? "difference from the ranks' median" : "mean per step bucket"}, ${T.fmtValue(lo)} (dark) to ${T.fmtValue(hi)} (bright)`;
    wrap.append(T.el("h3", { text: title }), canvas,
      T.el("div", { class: "legend-scale" }, T.el("span", { text: T.fmtValue(lo) }),
        T.el("span", { style: "display:inline-block;width:160px;height:10px;background:linear-gradient(90deg," + [0, .25, .5, .75, 1].map(viridis).join(",") + ")" }),
        T.el("span", { text: T.fmtValue(hi) }), T.el("span", { class: "muted", text: colorMode === "deviation" ? " difference from the median rank" : " mean per step bucket" })));
    return wrap;
  }

  function summary(doc) {
    const means = (grid) => new Map((grid ? grid.rows : []).map((r) => {
      const v = r.values.filter((x) => x !== null);
      return [r.rank, v.length ? v.reduce((a, b) => a + b, 0) / v.length : null];
    }));
    const lastOf = (grid) => new Map((grid ? grid.rows : []).map((r) => [r.rank, [...r.values].reverse().find((x) => x !== null)]));
    const st = means(doc.step_time);
    const last = lastOf(doc.heatmap);
    const stMed = median(Array.from(st.values()));
    const lastMed = median(Array.from(last.values()));
    const spread = (() => { const v = Array.from(last.values()).filter((x) => x !== null && x !== undefined); return v.length ? Math.max(...v) - Math.min(...v) : 0; })();
    return T.el("table", { class: "diff", "data-testid": "rank-summary" },
      T.el("tr", {}, T.el("th", { text: "rank" }), T.el("th", { text: "mean step time" }), T.el("th", { text: `last ${doc.path || ""}` }), T.el("th", { text: "" })),
      doc.ranks.map((rank) => {
        const s = st.get(rank), l = last.get(rank);
        const slow = s !== undefined && s !== null && stMed && s > 1.2 * stMed;
        const off = l !== undefined && l !== null && lastMed !== null && spread > 0 && Math.abs(l - lastMed) > 0.5 * spread && doc.ranks.length > 2;
        return T.el("tr", { class: slow || off ? "differs" : "", "data-rank": rank },
          T.el("td", { text: rank }), T.el("td", { class: "num", text: s === undefined || s === null ? "" : T.humanSeconds(s) }),
          T.el("td", { class: "num", text: T.fmtValue(l) }),
          T.el("td", { text: [slow ? "straggler" : "", off ? "diverging" : ""].filter(Boolean).join(", ") }));
      }));
  }

  async function draw(path) {
    const doc = await T.api(`/api/ui/runs/${encodeURIComponent(runId)}/ranks`, { path, buckets: 200 });
    T.crumbs(T.el("a", { href: "/runs/" + encodeURIComponent(runId), text: doc.name || runId }), " / ranks");
    const select = T.el("select", { "data-testid": "rank-metric" },
      T.el("optgroup", { label: "metrics" }, doc.paths.map((p) => T.el("option", { value: p, selected: p === doc.path, text: p }))),
      doc.sys_paths.length ? T.el("optgroup", { label: "system (per rank)" }, doc.sys_paths.map((p) => T.el("option", { value: p, selected: p === doc.path, text: p }))) : null);
    select.addEventListener("change", () => {
      const q = new URLSearchParams(location.search);
      q.set("path", select.value);
      history.replaceState(null, "", location.pathname + "?" + q);
      draw(select.value).catch(T.fail);
    });
    const colorSel = T.el("select", { "data-testid": "rank-color" },
      [["value", "value"], ["deviation", "difference from the median rank"]].map(([v, t]) => T.el("option", { value: v, selected: v === mode, text: t })));
    colorSel.addEventListener("change", () => { mode = colorSel.value; draw(select.value).catch(T.fail); });
    const sysBox = T.el("div", { "data-testid": "sys-per-rank" });
    T.main().replaceChildren(
      T.el("h1", { text: `${doc.name || runId}: ${doc.ranks.length} ranks` }),
      T.el("div", { class: "toolbar" }, "metric ", select, " color ", colorSel),
      heatmap(doc.heatmap, doc.path || "metric", "rank-heatmap", mode),
      heatmap(doc.step_time, "per_rank/step_time", "step-time-heatmap", "value"),
      summary(doc),
      sysBox);
    // System metrics every rank logged (its own GPU's utilization, memory, power...).
    const shown = doc.sys_per_rank.filter((p) => p !== doc.path).slice(0, 8);
    if (shown.length) sysBox.append(T.el("h2", { text: "system metrics per rank" }));
    for (const p of shown) {
      const one = await T.api(`/api/ui/runs/${encodeURIComponent(runId)}/ranks`, { path: p, buckets: 200 });
      sysBox.append(heatmap(one.heatmap, p, "sys-heatmap", "value"));
    }
  }

  draw(params.get("path") || undefined).catch(T.fail);
})();
