/* The console's statistics page (#/stats): DORA metrics of GET /api/v1/stats and plain SVG
 * charts of releases per day by outcome, durations and the change failure rate. Uses app.js's
 * h(), api(), render() and fmtTime(). */
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const OUTCOMES = [["succeeded", "#1f7a3d"], ["failed", "#b3261e"], ["rejected", "#e07b73"],
  ["cancelled", "#8a5a00"], ["superseded", "#c9a25a"]];

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {}))
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const c of children.flat())
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function fmtRate(r) {
  return r === null || r === undefined ? "-" : (r * 100).toFixed(1) + " %";
}

function fmtSpan(ms) {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  if (ms < 3600000) return (ms / 60000).toFixed(1) + " min";
  if (ms < 86400000) return (ms / 3600000).toFixed(1) + " h";
  return (ms / 86400000).toFixed(1) + " d";
}

/* A chart frame: width w, height ht, left margin for the y labels; the y axis from 0 to max
 * with 4 gridlines labelled by fmt; x labels every few days. Returns {el, x, y, bw}. */
function chartFrame(name, label, days, max, fmt) {
  const w = 760, ht = 220, left = 64, right = 12, top = 12, bottom = 34;
  const n = Math.max(days.length, 1), bw = (w - left - right) / n;
  const el = svg("svg", { viewBox: `0 0 ${w} ${ht}`, width: "100%", role: "img",
    "aria-label": label, "data-chart": name, class: "chart" }, svg("title", {}, label));
  const y = (v) => top + (ht - top - bottom) * (1 - (max > 0 ? v / max : 0));
  const x = (i) => left + i * bw;
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    el.append(svg("line", { x1: left, x2: w - right, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, fmt(v)));
  }
  const every = Math.max(1, Math.ceil(n / 10));
  days.forEach((d, i) => {
    if (i % every === 0 || i === n - 1)
      el.append(svg("text", { x: x(i) + bw / 2, y: ht - 14, "text-anchor": "middle",
        class: "axis" }, d.date.slice(5)));
  });
  return { el, x, y, bw };
}

function chartOutcomes(days) {
  const total = (d) => OUTCOMES.reduce((s, [k]) => s + d[k], 0);
  const max = Math.ceil(Math.max(1, ...days.map(total)) / 4) * 4; /* whole gridlines */
  const c = chartFrame("outcomes", "Releases per day by outcome", days, max, String);
  days.forEach((d, i) => {
    let base = 0;
    for (const [k, color] of OUTCOMES) {
      if (!d[k]) continue;
      const y0 = c.y(base), y1 = c.y(base + d[k]);
      c.el.append(svg("rect", { x: c.x(i) + c.bw * 0.15, width: Math.max(c.bw * 0.7, 1), y: y1,
        height: Math.max(y0 - y1, 1), fill: color, "data-date": d.date, "data-status": k,
        "data-count": d[k] }, svg("title", {}, `${d.date}: ${d[k]} ${k}`)));
      base += d[k];
    }
  });
  return c.el;
}

function chartLines(name, label, days, series, fmt, fixedMax) {
  const values = days.flatMap((d) => series.map(([k]) => d[k])).filter((v) => v !== null);
  const max = fixedMax || (Math.max(...values, 0) * 1.1) || 1;
  const c = chartFrame(name, label, days, max, fmt);
  for (const [k, color] of series) {
    const pts = [];
    days.forEach((d, i) => {
      if (d[k] === null || d[k] === undefined) return;
      const px = c.x(i) + c.bw / 2, py = c.y(d[k]);
      pts.push(`${px.toFixed(1)},${py.toFixed(1)}`);
      c.el.append(svg("circle", { cx: px, cy: py, r: 3, fill: color, "data-date": d.date,
        "data-series": k, "data-value": d[k] }, svg("title", {}, `${d.date}: ${k} ${fmt(d[k])}`)));
    });
    if (pts.length > 1)
      c.el.insertBefore(svg("polyline", { points: pts.join(" "), fill: "none", stroke: color,
        "stroke-width": 2, "data-series": k }), c.el.querySelector("circle"));
  }
  return c.el;
}

function legend(items) {
  /* Swatches are SVG: the console's CSP allows no inline style. */
  return h("p", { class: "legend" }, items.map(([k, color]) => h("span", { class: "key" },
    svg("svg", { width: 10, height: 10, class: "swatch" },
      svg("rect", { width: 10, height: 10, rx: 2, fill: color })), " " + k)));
}

function metricCards(m) {
  const card = (id, title, value, note) => h("div", { class: "card metric", id },
    h("div", { class: "muted" }, title), h("div", { class: "value" }, value),
    h("div", { class: "muted" }, note));
  return h("div", { class: "grid4" },
    card("m-frequency", "Deployment frequency", m.deployment_frequency_per_day + " / day",
      m.deployments + " succeeded releases"),
    card("m-lead", "Lead time (p50)", fmtSpan(m.lead_time_ms.p50),
      "p90 " + fmtSpan(m.lead_time_ms.p90) + ", " + m.lead_time_ms.count + " deploys"),
    card("m-cfr", "Change failure rate", fmtRate(m.change_failure_rate),
      m.failed_changes + " of " + m.changes + " changes"),
    card("m-restore", "Time to restore (p50)", fmtSpan(m.time_to_restore_ms.p50),
      m.outages + (m.outages === 1 ? " outage" : " outages") +
      (m.unrestored ? ", " + m.unrestored + " not restored" : "")));
}

function metricsTable(id, rows, keyCols) {
  return h("table", { id },
    h("thead", {}, h("tr", {}, [...keyCols.map(([t]) => t), "Deploys / day", "Lead time p50",
      "Change failure", "Restore p50", "Releases"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.map((r) => h("tr", {},
      keyCols.map(([, f]) => h("td", {}, f(r))),
      h("td", { class: "num" }, String(r.deployment_frequency_per_day)),
      h("td", { class: "num" }, fmtSpan(r.lead_time_ms.p50)),
      h("td", { class: "num" }, fmtRate(r.change_failure_rate) +
        ` (${r.failed_changes}/${r.changes})`),
      h("td", { class: "num" }, fmtSpan(r.time_to_restore_ms.p50)),
      h("td", { class: "num" }, `${r.releases} (${r.succeeded} ok, ${r.failed} failed)`)))));
}

async function pageStats(params) {
  const q = new URLSearchParams();
  for (const k of ["since", "service", "env", "group"])
    if (params.get(k)) q.set(k, params.get(k));
  if (!q.get("since")) q.set("since", "30d");
  const input = (name, value) => h("input", { name, id: "stats-" + name, value: value || "",
    size: 14 });
  const since = h("select", { name: "since", id: "stats-since" }, ["7d", "30d", "90d", "365d"]
    .concat(["7d", "30d", "90d", "365d"].includes(q.get("since")) ? [] : [q.get("since")])
    .map((v) => h("option", { value: v, selected: v === q.get("since") }, v)));
  const form = h("form", { class: "filters", id: "stats-filters", onsubmit: (ev) => {
    ev.preventDefault();
    const next = new URLSearchParams();
    for (const el of form.querySelectorAll("input, select"))
      if (el.value) next.set(el.name, el.value);
    location.hash = "#/stats?" + next.toString();
  } },
  h("label", { for: "stats-since" }, "Window", since),
  h("label", { for: "stats-service" }, "Service", input("service", q.get("service"))),
  h("label", { for: "stats-env" }, "Env", input("env", q.get("env"))),
  h("label", { for: "stats-group" }, "Group", input("group", q.get("group"))),
  h("div", {}, h("button", { type: "submit", class: "primary" }, "Show")));
  let st;
  try {
    st = await api("GET", "/stats?" + q.toString());
  } catch (e) {
    if (e.status === 401) throw e;
    render(h("h1", {}, "Delivery statistics"), form,
      h("p", { class: "field-error", id: "stats-error", role: "alert" }, e.message));
    return;
  }
  const days = st.daily;
  render(h("h1", {}, "Delivery statistics"), form,
    h("p", { class: "muted", id: "stats-window" },
      `Releases that ended from ${fmtTime(st.since)} to ${fmtTime(st.until)} (${st.days} days): `,
      `${st.fleet.releases} releases. Definitions: docs/dora.md.`),
    metricCards(st.fleet),
    h("h2", {}, "Releases per day by outcome"), chartOutcomes(days), legend(OUTCOMES),
    h("h2", {}, "Durations per day"),
    chartLines("durations", "Release duration per day, p50 and p90", days,
      [["duration_p50_ms", "#2457c5"], ["duration_p90_ms", "#9aa8c7"]], fmtSpan),
    legend([["p50", "#2457c5"], ["p90", "#9aa8c7"]]),
    h("h2", {}, "Change failure rate per day"),
    chartLines("failure-rate", "Change failure rate per day", days,
      [["change_failure_rate", "#b3261e"]], fmtRate, 1),
    h("h2", {}, "Services"),
    metricsTable("stats-services", st.services, [["Service", (r) =>
      h("a", { href: `#/stats?service=${r.service}&env=${r.env}&since=${q.get("since")}` },
        r.service)], ["Env", (r) => r.env], ["Group", (r) => r.group]]),
    h("h2", {}, "Groups"), metricsTable("stats-groups", st.groups, [["Group", (r) => r.group]]),
    h("h2", {}, "Envs"), metricsTable("stats-envs", st.envs, [["Env", (r) => r.env]]));
}
