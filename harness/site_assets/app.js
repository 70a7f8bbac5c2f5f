"use strict";
// The medfm web leaderboard. Every string from a record reaches the page through textContent or
// a JSON-built href: nothing from the data is ever parsed as HTML.
(function () {
  const DATA = JSON.parse(document.getElementById("medfm-data").textContent);
  const content = document.getElementById("content");
  const state = { view: null, sort: {}, filters: { modality: "", objective: "", minParams: null, maxParams: null,
    ranked: true, unverified: true } };

  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, String(value));
      else if (key === "title") node.title = String(value);
      else if (key === "onclick") node.addEventListener("click", value);
      else throw new Error("unexpected property " + key);
    }
    for (const child of children || []) if (child) node.appendChild(child);
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }
  const fmt = (v) => (v === null || v === undefined || !isFinite(v) ? "—" : Number(v).toFixed(3));
  const signed = (v) => (v === null || v === undefined || !isFinite(v) ? "—" : (v >= 0 ? "+" : "") + Number(v).toFixed(3));
  const pfmt = (p) => (p === null || p === undefined ? "—" : p < 0.001 ? "<0.001" : Number(p).toFixed(3));
  function recordLink(relpath, text) {
    const a = el("a", { text: text });
    a.href = "records/" + relpath.split("/").map(encodeURIComponent).join("/");
    return a;
  }
  function columnsOf(table) { const m = {}; for (const c of table.columns) m[c.id] = c; return m; }
  function rowVisible(row) {
    const f = state.filters;
    if (f.objective && row.objective !== f.objective) return false;
    const m = row.params === null || row.params === undefined ? null : row.params / 1e6;
    if (f.minParams !== null && (m === null || m < f.minParams)) return false;
    if (f.maxParams !== null && (m === null || m > f.maxParams)) return false;
    return true;
  }
  const columnVisible = (col) => !state.filters.modality || col.modality === state.filters.modality;
  const tableVisible = (t) => state.filters[t.section];

  function ciBar(lo, value, hi) {
    const s = svg("svg", { class: "cibar", viewBox: "0 0 100 6", preserveAspectRatio: "none" });
    s.appendChild(svg("rect", { x: 0, y: 2.5, width: 100, height: 1, fill: "#d0d7de" }));
    if (lo !== null && hi !== null && isFinite(lo) && isFinite(hi)) {
      s.appendChild(svg("rect", { x: 100 * Math.max(0, lo), y: 1, width: Math.max(0.8, 100 * (hi - lo)), height: 4,
        fill: "#8fb8e6" }));
    }
    if (value !== null && isFinite(value)) s.appendChild(svg("rect", { x: 100 * value - 0.8, y: 0, width: 1.6, height: 6, fill: "#0b5cad" }));
    return s;
  }

  function cellNode(cell, col) {
    const td = el("td", { "data-col": col.id, "data-value": cell && cell.value !== null ? cell.value : "" });
    if (!cell) return td;
    if (cell.value !== null) {
      const text = fmt(cell.value) + " [" + fmt(cell.ci_low) + ", " + fmt(cell.ci_high) + "]" +
        (cell.n > 1 ? " ± " + fmt(cell.sd) + " (n=" + cell.n + ")" : "");
      td.appendChild(recordLink(cell.records[0], text));
      Object.entries(cell.alongside || {}).forEach(([name, v]) => {
        td.appendChild(el("span", { class: "alongside", "data-metric": name, text: " · " + name.toUpperCase() + " " + (v === null ? "–" : Number(v).toPrecision(3)) }));
      });
      if (cell.warnings.length) td.appendChild(el("span", { class: "warn", text: " †", title: cell.warnings.join("; ") }));
      td.appendChild(ciBar(cell.ci_low, cell.value, cell.ci_high));
      cell.records.slice(1).forEach((r, i) => { td.appendChild(document.createTextNode(" ")); td.appendChild(recordLink(r, "[" + (i + 2) + "]")); });
    } else if (cell.shown_values.length) {
      td.appendChild(el("span", { class: "flag", text: "⚠ " + cell.shown_values.map(fmt).join(", "), title: cell.reasons.join("; ") }));
      td.appendChild(document.createTextNode(" "));
      td.appendChild(recordLink(cell.records[0], "record"));
    } else if (cell.error) {
      td.appendChild(el("span", { class: "flag", text: "error", title: cell.reasons.join("; ") }));
    }
    return td;
  }

  function sortRows(rows, key, dir, ranked) {
    const get = (row) => {
      if (key === "rank") return ranked ? row.rank : -row.mean;
      if (key === "backbone") return row.label;
      if (key === "params") return row.params === null ? -1 : row.params;
      if (key === "objective") return row.objective;
      if (key === "mean") return row.mean;
      if (key === "next") return row.vs_next ? row.vs_next.difference : -Infinity;
      const cell = row.cells[key];
      return cell && cell.value !== null ? cell.value : -Infinity;
    };
    const sign = dir === "asc" ? 1 : -1;
    return rows.slice().sort((a, b) => {
      const x = get(a), y = get(b);
      if (x < y) return -sign; if (x > y) return sign;
      return a.label < b.label ? -1 : a.label > b.label ? 1 : 0;
    });
  }

  function blockTable(table, block, bi, ranked) {
    const cols = columnsOf(table);
    const visibleCols = block.columns.map((id) => cols[id]).filter(columnVisible);
    const sortKey = "t" + DATA.tables.indexOf(table) + "b" + bi;
    const sort = state.sort[sortKey] || { key: "rank", dir: "asc" };
    const heads = [];
    if (ranked) heads.push(["rank", "#"], ["group", "group"]);
    heads.push(["backbone", "backbone"], ["params", "params"], ["objective", "objective"]);
    for (const c of visibleCols) heads.push([c.id, c.label + " · " + c.metric + " (" + c.n_cases + ")"]);
    if (visibleCols.length > 1) heads.push(["mean", "mean"]);
    if (ranked) heads.push(["next", "Δ to next [95% CI]"], ["p", "p (Holm)"]);
    const tr = el("tr");
    for (const [key, label] of heads) {
      const th = el("th", { text: label, "data-sort": key, class: (key === "backbone" ? "name " : "") +
        (sort.key === key ? "sorted-" + sort.dir : "") });
      if (key !== "group" && key !== "p") {
        th.addEventListener("click", () => {
          const dir = sort.key === key && sort.dir === "desc" ? "asc" : (sort.key === key ? "desc" : (key === "rank" || key === "backbone" ? "asc" : "desc"));
          state.sort[sortKey] = { key: key, dir: dir };
          render();
        });
      }
      tr.appendChild(th);
    }
    const tbody = el("tbody");
    const rows = sortRows(block.rows.filter(rowVisible), sort.key, sort.dir, ranked);
    let band = 0, lastGroup = null;
    for (const row of rows) {
      if (row.group !== lastGroup) { band = 1 - band; lastGroup = row.group; }
      const r = el("tr", { "data-row": row.label, class: ranked && sort.key === "rank" ? "band-" + band : "" });
      if (ranked) { r.appendChild(el("td", { text: row.rank, "data-field": "rank" })); r.appendChild(el("td", { text: row.group, "data-field": "group" })); }
      r.appendChild(el("td", { class: "name", text: row.label, "data-field": "backbone" }));
      r.appendChild(el("td", { text: row.params ? (row.params / 1e6).toFixed(1) + "M" : "?", "data-field": "params" }));
      r.appendChild(el("td", { text: row.objective || "", "data-field": "objective" }));
      for (const c of visibleCols) r.appendChild(cellNode(row.cells[c.id], c));
      if (visibleCols.length > 1) r.appendChild(el("td", { text: fmt(row.mean), "data-field": "mean" }));
      if (ranked) {
        const n = row.vs_next;
        r.appendChild(el("td", { text: n ? signed(n.difference) + " [" + signed(n.ci_low) + ", " + signed(n.ci_high) + "]" : "", "data-field": "next" }));
        r.appendChild(el("td", { text: n ? pfmt(n.p_holm) : "", "data-field": "p" }));
      }
      tbody.appendChild(r);
    }
    const t = el("table", { class: "board", "data-block": bi }, [el("thead", {}, [tr]), tbody]);
    return t;
  }

  function renderTable(table) {
    const ranked = table.section === "ranked";
    const cols = columnsOf(table);
    content.appendChild(el("h2", { class: "view-title", text: table.title }, [el("span", { class: "badge " + table.section, text: table.section })]));
    const sets = table.columns.map((c) => c.label + " (" + (c.distribution || "unknown") + ")").join(", ");
    content.appendChild(el("p", { class: "provenance", text: "Protocol " + table.protocol + " v" + table.version + " from " +
      (table.distribution || "unknown") + "; data sets: " + sets + "." }));
    if (!ranked && table.trust_notes.length) content.appendChild(el("p", { class: "note", text: "Not trusted because: " + table.trust_notes.join("; ") }));
    table.blocks.forEach((block, bi) => {
      if (!block.complete) content.appendChild(el("p", { class: "note", text: "Rows with results on only " +
        block.columns.map((id) => cols[id].label).join(", ") + (ranked ? " (ranked among themselves):" : ":") }));
      content.appendChild(blockTable(table, block, bi, ranked));
    });
    const reasons = [];
    const rows = table.unranked.concat(...table.blocks.map((b) => b.rows));
    for (const row of rows) for (const [id, cell] of Object.entries(row.cells)) {
      if (cell.value === null && cell.reasons.length) reasons.push(row.label + " on " + cols[id].label + ": " + cell.reasons.join("; "));
    }
    if (reasons.length) {
      content.appendChild(el("p", { class: "note", text: "Not ranked:" }));
      content.appendChild(el("ul", { class: "reasons" }, reasons.sort().map((t) => el("li", { text: t }))));
    }
  }

  function datasetEntries(colId) {
    const out = [];
    DATA.tables.forEach((table) => {
      if (!tableVisible(table)) return;
      const col = table.columns.find((c) => c.id === colId);
      if (!col) return;
      for (const block of table.blocks) for (const row of block.rows) {
        const cell = row.cells[colId];
        if (!cell || cell.value === null || !rowVisible(row)) continue;
        out.push({ table: table, row: row, cell: cell, lo: cell.ci_low, hi: cell.ci_high });
      }
    });
    return out;
  }

  function renderDataset(colId) {
    const col = DATA.tables.map((t) => t.columns.find((c) => c.id === colId)).find(Boolean);
    if (!col) return;
    content.appendChild(el("h2", { class: "view-title", text: col.label + " · " + col.metric }));
    content.appendChild(el("p", { class: "provenance", text: col.n_cases + " test cases; test-set identity " + col.identity.slice(0, 12) +
      (col.published === true ? " (the published test set)" : col.published === false ? " (not the published test set)" : "") +
      "; from " + (col.distribution || "unknown") + "." }));
    const entries = datasetEntries(colId).sort((a, b) => b.cell.value - a.cell.value);
    const rowH = 20, left = 330, width = 300, top = 20;
    const s = svg("svg", { class: "forest", width: left + width + 70, height: top + rowH * entries.length + 30, "data-testid": "forest" });
    s.appendChild(svg("line", { class: "axis", x1: left, x2: left, y1: 10, y2: top + rowH * entries.length }));
    for (let t = 0; t <= 10; t += 2) {
      const x = left + (width * t) / 10;
      s.appendChild(svg("line", { class: "axis", x1: x, x2: x, y1: top + rowH * entries.length, y2: top + rowH * entries.length + 4 }));
      const label = svg("text", { x: x - 8, y: top + rowH * entries.length + 16 }); label.textContent = (t / 10).toFixed(1); s.appendChild(label);
    }
    entries.forEach((e, i) => {
      const y = top + rowH * i + rowH / 2;
      const label = svg("text", { x: 4, y: y + 4 });
      label.textContent = e.table.protocol + " · " + e.row.label + (e.table.section === "unverified" ? " (unverified)" : "");
      s.appendChild(label);
      if (e.lo !== null && e.hi !== null) s.appendChild(svg("line", { class: "ci", x1: left + width * Math.max(0, e.lo), x2: left + width * Math.min(1, e.hi), y1: y, y2: y }));
      s.appendChild(svg("circle", { cx: left + width * e.cell.value, cy: y, r: 3.5 }));
      const v = svg("text", { x: left + width + 8, y: y + 4 }); v.textContent = fmt(e.cell.value); s.appendChild(v);
    });
    content.appendChild(s);
    const tbody = el("tbody", {}, entries.map((e) => el("tr", { "data-row": e.row.label }, [
      el("td", { class: "name", text: e.table.protocol }), el("td", { text: e.table.section }),
      el("td", { class: "name", text: e.row.label }), cellNode(e.cell, col)])));
    content.appendChild(el("table", { class: "board" }, [el("thead", {}, [el("tr", {}, ["protocol", "section", "backbone", col.metric].map((h) => el("th", { text: h })))]), tbody]));
  }

  function navButton(label, view, testid) {
    const current = state.view && state.view.kind === view.kind && state.view.id === view.id;
    return el("button", { class: "view" + (current ? " current" : ""), text: label, "data-view": testid,
      onclick: () => { state.view = view; render(); } });
  }

  function renderNav() {
    const tablesNav = document.getElementById("nav-tables");
    const setsNav = document.getElementById("nav-datasets");
    tablesNav.replaceChildren(); setsNav.replaceChildren();
    DATA.tables.forEach((t, i) => { if (tableVisible(t)) tablesNav.appendChild(navButton(t.title + (t.synthetic ? " (synthetic data)" : "") + (t.section === "unverified" ? " (unverified)" : ""), { kind: "table", id: i }, "table-" + i)); });
    const seen = new Map();
    DATA.tables.forEach((t) => { if (tableVisible(t)) for (const c of t.columns) if (columnVisible(c) && !seen.has(c.id)) seen.set(c.id, c); });
    [...seen.values()].sort((a, b) => (a.label < b.label ? -1 : 1)).forEach((c) => setsNav.appendChild(navButton(c.label, { kind: "dataset", id: c.id }, "dataset-" + c.id)));
  }

  function render() {
    renderNav();
    content.replaceChildren();
    const visible = DATA.tables.map((t, i) => i).filter((i) => tableVisible(DATA.tables[i]));
    if (!state.view || (state.view.kind === "table" && !visible.includes(state.view.id))) state.view = visible.length ? { kind: "table", id: visible[0] } : null;
    if (!state.view) { content.appendChild(el("p", { class: "note", text: "No results match the filters." })); return; }
    if (state.view.kind === "table") renderTable(DATA.tables[state.view.id]); else renderDataset(state.view.id);
  }

  function initFilters() {
    const modalities = new Set(), objectives = new Set();
    for (const t of DATA.tables) {
      for (const c of t.columns) if (c.modality) modalities.add(c.modality);
      for (const b of t.blocks) for (const r of b.rows) if (r.objective) objectives.add(r.objective);
      for (const r of t.unranked) if (r.objective) objectives.add(r.objective);
    }
    const fill = (id, values) => { const s = document.getElementById(id); [...values].sort().forEach((v) => { const o = el("option", { text: v }); o.value = v; s.appendChild(o); }); };
    fill("filter-modality", modalities); fill("filter-objective", objectives);
    const on = (id, event, fn) => document.getElementById(id).addEventListener(event, (e) => { fn(e.target); render(); });
    on("filter-modality", "change", (t) => { state.filters.modality = t.value; });
    on("filter-objective", "change", (t) => { state.filters.objective = t.value; });
    on("filter-min-params", "input", (t) => { state.filters.minParams = t.value === "" ? null : Number(t.value); });
    on("filter-max-params", "input", (t) => { state.filters.maxParams = t.value === "" ? null : Number(t.value); });
    on("filter-ranked", "change", (t) => { state.filters.ranked = t.checked; });
    on("filter-unverified", "change", (t) => { state.filters.unverified = t.checked; });
  }

  document.getElementById("summary").textContent = DATA.records + " verified records; trusted: " + DATA.policy.trusted_distributions.join(", ");
  initFilters();
  render();
})();
