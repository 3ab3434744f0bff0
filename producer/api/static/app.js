/* The Relfleet console: hash-routed pages over /api/v1, no framework, no build step. */
"use strict";

const API = "/api/v1";
const TERMINAL = ["succeeded", "failed", "cancelled", "superseded", "rejected"];
const STATUSES = ["awaiting_approval", "queued", "rendering", "applying", "progressing", "paused",
  ...TERMINAL];
const session = { user: null, csrf: null, roles: [] };
let pageCleanup = null;
let nextFlash = null; /* shown by the page the next navigation opens */

/* ---- DOM helpers: elements are built, never parsed from strings ---- */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const main = () => document.getElementById("main");
function render(...nodes) {
  main().replaceChildren(...nodes);
}
function flash(text, isError) {
  const box = document.getElementById("flash");
  box.replaceChildren(text ? h("div", { class: "msg" + (isError ? " error" : "") }, text) : "");
}
function badge(status) {
  return h("span", { class: "badge st-" + status, "data-status": status }, status);
}
function fmtTime(iso) {
  if (!iso) return "-";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
}

/* ---- the API ---- */
class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || "HTTP " + status);
    this.status = status;
    this.field = body && body.field;
  }
}
async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session.csrf) headers["X-CSRF-Token"] = session.csrf;
  const resp = await fetch(API + path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (resp.status === 401 && path !== "/session") {
    session.user = null;
    showWho();
    location.hash = "#/login?next=" + encodeURIComponent(location.hash || "#/releases");
    throw new ApiError(401, data);
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}
function showWho() {
  const who = document.getElementById("who");
  who.hidden = !session.user;
  document.getElementById("who-name").textContent = session.user
    ? session.user + " (" + roleSummary() + ")" : "";
}
function roleSummary() {
  if (!session.roles.length) return "no roles";
  return session.roles.map((g) => g.role + " " + g.service + "/" + g.env).join(", ");
}

/* ---- pages ---- */
async function pageLogin(params) {
  const err = h("p", { class: "field-error", id: "login-error", role: "alert" });
  const token = h("input", { type: "password", id: "token", name: "token", required: true,
    autocomplete: "current-password", size: 48 });
  const user = h("input", { type: "text", id: "user", name: "user", autocomplete: "username" });
  const form = h("form", { class: "card stack", id: "login-form", onsubmit: async (ev) => {
    ev.preventDefault();
    err.textContent = "";
    try {
      const s = await api("POST", "/session", { token: token.value, user: user.value || undefined });
      Object.assign(session, { user: s.user, csrf: s.csrf_token, roles: s.roles });
      showWho();
      location.hash = params.get("next") || "#/releases";
    } catch (e) {
      err.textContent = e.message;
      token.focus();
    }
  } },
  h("label", { for: "user" }, "User (optional)", user),
  h("label", { for: "token" }, "API token", token),
  h("p", { class: "muted" }, "Tokens come from `relctl user token NAME`; on the local stack, ",
    "RELFLEET_TOKEN of `ops/stack env` is the admin's."),
  err,
  h("div", {}, h("button", { type: "submit", class: "primary" }, "Log in")));
  render(h("h1", {}, "Log in to Relfleet"), form);
  token.focus();
}

function releaseRow(r) {
  const go = () => { location.hash = "#/releases/" + r.id; };
  return h("tr", { class: "row-link", "data-id": r.id, onclick: go },
    h("td", {}, h("a", { href: "#/releases/" + r.id }, r.service)),
    h("td", {}, r.env),
    h("td", { class: "mono" }, r.version),
    h("td", {}, r.kind),
    h("td", {}, badge(r.status)),
    h("td", {}, r.operator),
    h("td", { class: "nowrap" }, fmtTime(r.created_at)),
    h("td", { class: "num" }, fmtDuration(r.duration_ms)),
    h("td", {}, r.description || "", r.error ? h("div", { class: "field-error" }, r.error) : ""));
}

async function pageReleases(params) {
  const q = new URLSearchParams();
  for (const k of ["service", "env", "status", "operator", "since", "until"])
    if (params.get(k)) q.set(k, params.get(k));
  const field = (name, label, input) => h("label", { for: "f-" + name }, label, input);
  const inp = (name) => h("input", { id: "f-" + name, name, value: params.get(name) || "", size: 14 });
  const statusSel = h("select", { id: "f-status", name: "status" }, h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s, selected: params.get("status") === s }, s)));
  const since = h("input", { id: "f-since", name: "since", type: "date",
    value: (params.get("since") || "").slice(0, 10) });
  const form = h("form", { class: "filters", id: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    const f = new URLSearchParams();
    for (const el of form.elements) if (el.name && el.value) f.set(el.name, el.value);
    location.hash = "#/releases?" + f.toString();
  } },
  field("service", "Service", inp("service")), field("env", "Env", inp("env")),
  field("status", "Status", statusSel), field("operator", "Operator", inp("operator")),
  field("since", "Since", since),
  h("button", { type: "submit" }, "Filter"));
  const body = h("tbody", { id: "release-rows" });
  const more = h("button", { type: "button", id: "more", hidden: true }, "Load more");
  const table = h("table", { id: "releases" }, h("thead", {}, h("tr", {},
    ["Service", "Env", "Version", "Kind", "Status", "Operator", "Created", "Duration",
      "Description"].map((t) => h("th", { scope: "col" }, t)))), body);
  render(h("h1", {}, "Releases"), form, table, h("p", {}, more));
  let cursor = null;
  const load = async () => {
    const page = new URLSearchParams(q);
    page.set("limit", "50");
    if (cursor) page.set("cursor", cursor);
    const data = await api("GET", "/releases?" + page.toString());
    body.append(...data.releases.map(releaseRow));
    if (!body.children.length)
      body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No releases match.")));
    cursor = data.next_cursor;
    more.hidden = !cursor;
  };
  more.addEventListener("click", () => load().catch((e) => flash(e.message, true)));
  await load();
}

function progressView(rec) {
  const p = rec.progress;
  if (!p) return h("p", { class: "muted", id: "progress" }, "No rollout progress yet.");
  if (p.steps) {
    return h("div", { class: "progress", id: "progress" },
      h("progress", { max: p.steps, value: Math.min(p.step || 0, p.steps),
        "aria-label": "canary steps" }),
      h("span", {}, `step ${p.step} of ${p.steps}, weight ${p.weight}% (${p.phase})`));
  }
  const desired = p.desired || 0;
  return h("div", { class: "progress", id: "progress" },
    h("progress", { max: desired || 1, value: Math.min(p.available || 0, desired || 1),
      "aria-label": "rollout" }),
    h("span", {}, `${p.available || 0} of ${desired} available, ${p.updated || 0} updated`));
}

function timelineRow(ev) {
  return h("tr", { "data-event": ev.event },
    h("td", { class: "mono nowrap" }, (ev.at || "").replace("T", " ").replace("Z", "")),
    h("td", {}, ev.stage), h("td", {}, ev.status ? badge(ev.status) : ev.event),
    h("td", {}, ev.message));
}

function podsView(pods) {
  if (!pods || !pods.length) return h("div", { id: "pods" });
  return h("div", { id: "pods" }, h("h2", {}, "Failing pods"), pods.map((p) => h("div",
    { class: "card" },
    h("strong", {}, p.name), " ", p.phase || "", " ", p.reason || "",
    ", restarts ", String(p.restarts || 0),
    p.log_tail ? h("pre", { class: "log" }, p.log_tail) : "")));
}

function notificationsView(list) {
  if (!list || !list.length) return h("div", { id: "notifications" });
  return h("div", { id: "notifications" }, h("h2", {}, "Notifications"), h("table", {},
    h("thead", {}, h("tr", {}, ["Channel", "Target", "State", "Attempts", "Error"].map((t) =>
      h("th", {}, t)))),
    h("tbody", {}, list.map((n) => h("tr", {}, h("td", {}, n.channel), h("td", {}, n.target),
      h("td", {}, n.state), h("td", { class: "num" }, String(n.attempts)),
      h("td", {}, n.last_error || ""))))));
}

const ACTION_LABELS = {
  rollback: "Roll back to this version", redo: "Redo", cancel: "Cancel",
  promote: "Promote", abort: "Abort", approve: "Approve", deny: "Deny",
};

/* Who approved or denied a release awaiting approval, and when (docs/promotion.md). */
function approvalsView(rec) {
  if (rec.approvals_needed == null) return h("div", { id: "approvals" });
  const given = (rec.approvals || []).filter((a) => a.decision === "approved").length;
  return h("div", { id: "approvals" },
    h("h2", {}, `Approvals: ${given} of ${rec.approvals_needed}`),
    h("table", {}, h("thead", {}, h("tr", {}, ["User", "Decision", "At (UTC)", "Comment"].map((t) =>
      h("th", {}, t)))),
    h("tbody", {}, (rec.approvals || []).map((a) => h("tr", {}, h("td", {}, a.user),
      h("td", {}, a.decision), h("td", {}, fmtTime(a.at)), h("td", {}, a.comment || ""))))));
}

async function decide(rec, action) {
  let message = "";
  if (action === "deny") {
    message = window.prompt(`Deny release ${rec.id} of ${rec.service} in ${rec.env}: why?`);
    if (!message) return;
  } else if (!window.confirm(`Approve release ${rec.id}: ${rec.service} ${rec.version} in ${rec.env}?`)) {
    return;
  }
  try {
    const out = await api("POST", `/releases/${rec.id}/${action}`, message ? { message } : {});
    flash(action === "deny" ? `denied: the release is ${out.status}`
      : `approved (${out.approvals} of ${out.needed}): the release is ${out.status}`);
    const fresh = await api("GET", "/releases/" + rec.id);
    Object.assign(rec, { actions: fresh.actions, approvals: fresh.approvals });
    if (rec.onDecided) rec.onDecided();
  } catch (e) {
    flash(e.message, true);
  }
}

async function runAction(rec, action) {
  if (action === "approve" || action === "deny") return decide(rec, action);
  const confirmText = {
    rollback: `Roll ${rec.service} in ${rec.env} back to version ${rec.version}?`,
    redo: `Release version ${rec.version} of ${rec.service} in ${rec.env} again?`,
    cancel: `Cancel release ${rec.id}?`, abort: `Abort the gray release ${rec.id}?`,
    promote: null,
  }[action];
  if (confirmText && !window.confirm(confirmText)) return;
  try {
    const out = await api("POST", `/releases/${rec.id}/${action}`, {});
    if (action === "rollback" || action === "redo") {
      nextFlash = `${action} published as release ${out.release_id || out.id}`;
      location.hash = "#/releases/" + (out.release_id || out.id);
    } else {
      flash(`${action} sent (command ${out.command_id})`);
    }
  } catch (e) {
    flash(e.message, true);
  }
}

async function pageRelease(id) {
  let rec;
  try {
    rec = await api("GET", "/releases/" + encodeURIComponent(id));
  } catch (e) {
    if (e.status === 404) { render(h("h1", {}, "Release not found"), h("p", {}, e.message)); return; }
    throw e;
  }
  const statusBox = h("span", { id: "status" }, badge(rec.status));
  const live = h("span", { class: "live", id: "live" }, "");
  const params = h("dl", { class: "params", id: "params" });
  const setParams = () => {
    const rows = [["Service", h("a", { href: `#/services/${rec.service}/${rec.env}` }, rec.service)],
      ["Env", rec.env], ["Version", rec.version],
      ["Kind", rec.kind + (rec.parent ? " of " : ""),
        rec.parent ? h("a", { href: "#/releases/" + rec.parent }, rec.parent) : ""],
      ["Operator", rec.operator], ["Description", rec.description || "-"],
      ["Created", fmtTime(rec.created_at)], ["Started", fmtTime(rec.started_at)],
      ["Finished", fmtTime(rec.finished_at)],
      ["Duration", h("span", { id: "duration" }, fmtDuration(rec.duration_ms))],
      ["Template", rec.template_id ? `${rec.template_id} @ ${(rec.template_version || "").slice(0, 12)}` : "-"]];
    if (rec.error) rows.push(["Error", h("span", { class: "field-error", id: "error" }, rec.error)]);
    params.replaceChildren(...rows.flatMap(([k, ...v]) => [h("dt", {}, k), h("dd", {}, ...v)]));
  };
  setParams();
  const actions = h("div", { class: "actions", id: "actions" });
  const setActions = () => {
    actions.replaceChildren(...(rec.actions || []).map((a) => h("button", {
      type: "button", "data-action": a,
      class: a === "cancel" || a === "abort" || a === "deny" ? "danger"
        : a === "promote" || a === "approve" ? "primary" : "",
      onclick: () => runAction(rec, a) }, ACTION_LABELS[a] || a)));
  };
  setActions();
  let approvals = approvalsView(rec);
  const setApprovals = () => { const na = approvalsView(rec); approvals.replaceWith(na); approvals = na; };
  rec.onDecided = () => { setActions(); setApprovals(); };
  let progress = progressView(rec);
  let pods = podsView(rec.pods);
  let notes = notificationsView(rec.notifications);
  const tbody = h("tbody", { id: "timeline-rows" }, rec.timeline.map(timelineRow));
  render(
    h("h1", {}, `${rec.service} ${rec.version} in ${rec.env} `, statusBox, " ", live),
    h("div", { class: "card" }, params), actions, approvals, progress,
    h("h2", {}, "Timeline"),
    h("table", { id: "timeline" }, h("thead", {}, h("tr", {},
      ["At (UTC)", "Stage", "Event", "Message"].map((t) => h("th", {}, t)))), tbody),
    pods, notes);
  if (TERMINAL.includes(rec.status)) return;
  /* Live: the timeline as Server-Sent Events; rows already shown are skipped by id. */
  let lastId = 0;
  const es = new EventSource(`${API}/releases/${rec.id}/events`);
  const shown = rec.timeline.length;
  let seen = 0;
  live.textContent = "live";
  live.classList.add("on");
  es.addEventListener("timeline", (ev) => {
    const row = JSON.parse(ev.data);
    seen++;
    if (row.id <= lastId || seen <= shown) return;
    lastId = row.id;
    tbody.append(timelineRow(row));
  });
  es.addEventListener("release", async (ev) => {
    const st = JSON.parse(ev.data);
    const moved = st.status !== rec.status;
    /* The template is known once rendered: a page opened while queued shows it then. */
    Object.assign(rec, { status: st.status, progress: st.progress, pods: st.pods,
      duration_ms: st.duration_ms, finished_at: st.finished_at, started_at: st.started_at,
      error: st.error, notifications: st.notifications, template_id: st.template_id,
      template_version: st.template_version, approvals_needed: st.approvals_needed,
      approvals: st.approvals });
    statusBox.replaceChildren(badge(st.status));
    setApprovals();
    if (moved) {
      try {
        rec.actions = (await api("GET", "/releases/" + rec.id)).actions;
        setActions();
      } catch (e) { /* the buttons follow at the end */ }
    }
    const np = progressView(rec); progress.replaceWith(np); progress = np;
    const nd = podsView(rec.pods); pods.replaceWith(nd); pods = nd;
    const nn = notificationsView(rec.notifications); notes.replaceWith(nn); notes = nn;
    setParams();
  });
  es.addEventListener("end", async () => {
    es.close();
    live.textContent = "finished";
    live.classList.remove("on");
    try {
      const fresh = await api("GET", "/releases/" + rec.id);
      rec.actions = fresh.actions;
      setActions();
    } catch (e) { /* the page still shows the end */ }
  });
  es.onerror = () => { live.textContent = "reconnecting..."; };
  pageCleanup = () => es.close();
}

async function pageNew(params) {
  const services = (await api("GET", "/services")).services.filter((s) => s.may_release);
  const err = h("p", { class: "field-error", id: "new-error", role: "alert" });
  const envs = [...new Set(services.map((s) => s.env))].sort();
  const env = h("select", { id: "n-env", name: "env", required: true },
    envs.map((e) => h("option", { value: e, selected: params.get("env") === e }, e)));
  const service = h("select", { id: "n-service", name: "service", required: true });
  const version = h("select", { id: "n-version", name: "version", required: true });
  const desc = h("textarea", { id: "n-description", name: "description", maxlength: 1000 });
  const fillServices = () => {
    service.replaceChildren(...services.filter((s) => s.env === env.value).map((s) =>
      h("option", { value: s.service, selected: params.get("service") === s.service }, s.service)));
    return fillVersions();
  };
  const fillVersions = async () => {
    version.replaceChildren();
    if (!service.value) return;
    const data = await api("GET", "/images/" + encodeURIComponent(service.value));
    version.replaceChildren(...data.images.map((i) => h("option", { value: i.tag }, i.tag)));
    if (!data.images.length) version.append(h("option", { value: "" }, "(no known versions)"));
  };
  env.addEventListener("change", () => fillServices().catch((e) => flash(e.message, true)));
  service.addEventListener("change", () => fillVersions().catch((e) => flash(e.message, true)));
  const form = h("form", { class: "card stack", id: "new-form", onsubmit: async (ev) => {
    ev.preventDefault();
    err.textContent = "";
    try {
      const out = await api("POST", "/releases", { env: env.value, service: service.value,
        version: version.value, description: desc.value || undefined });
      nextFlash = `release ${out.release_id} published`;
      location.hash = "#/releases/" + out.release_id;
    } catch (e) {
      err.textContent = e.message;
      const bad = e.field && document.getElementById("n-" + e.field);
      if (bad) bad.focus();
    }
  } },
  h("label", { for: "n-env" }, "Env", env), h("label", { for: "n-service" }, "Service", service),
  h("label", { for: "n-version" }, "Version", version),
  h("label", { for: "n-description" }, "Description", desc), err,
  h("div", {}, h("button", { type: "submit", class: "primary" }, "Release")));
  render(h("h1", {}, "New release"),
    services.length ? form : h("p", {}, "You hold the releaser role on no configured service."));
  await fillServices();
}

async function pageServices() {
  const list = (await api("GET", "/services")).services;
  render(h("h1", {}, "Services"), h("table", { id: "services" },
    h("thead", {}, h("tr", {}, ["Service", "Env", "Template", "Replicas", "Strategy",
      "Last release", "Updated"].map((t) => h("th", {}, t)))),
    h("tbody", {}, list.map((s) => h("tr", {},
      h("td", {}, h("a", { href: `#/services/${s.service}/${s.env}` }, s.service)),
      h("td", {}, s.env), h("td", {}, s.template), h("td", { class: "num" }, String(s.replicas)),
      h("td", {}, s.strategy ? Object.keys(s.strategy)[0] : "rolling"),
      h("td", {}, s.last_release ? [h("a", { href: "#/releases/" + s.last_release.id },
        s.last_release.version), " ", badge(s.last_release.status)] : "-"),
      h("td", { class: "nowrap" }, fmtTime(s.updated_at), " by ", s.updated_by || "-"))))));
}

const EDITABLE = ["replicas", "namespace", "health_path", "group", "port", "template", "policy",
  "timeout", "image_repo", "cluster", "strategy"];

async function pageService(service, env) {
  const [svc, hist] = await Promise.all([
    api("GET", `/services/${encodeURIComponent(service)}/${encodeURIComponent(env)}`),
    api("GET", `/services/${encodeURIComponent(service)}/${encodeURIComponent(env)}/history`)]);
  const value = (k) => {
    const v = svc[k];
    if (v === null || v === undefined) return "";
    return typeof v === "object" ? JSON.stringify(v) : String(v);
  };
  const err = h("p", { class: "field-error", id: "svc-error", role: "alert" });
  const inputs = {};
  const cfg = h("dl", { class: "params", id: "config" }, EDITABLE.flatMap((k) => [h("dt", {}, k),
    h("dd", { class: "mono", "data-key": k }, value(k) || "-")]),
    Object.entries(svc.values || {}).flatMap(([k, v]) => [h("dt", {}, k),
      h("dd", { class: "mono", "data-key": k }, v)]));
  let editor;
  if (svc.may_edit) {
    editor = h("form", { class: "card", id: "svc-form", onsubmit: async (ev) => {
      ev.preventDefault();
      err.textContent = "";
      const change = {};
      for (const [k, el] of Object.entries(inputs)) if (el.value !== value(k)) change[k] = el.value;
      if (!Object.keys(change).length) { err.textContent = "Nothing changed."; return; }
      try {
        const out = await api("PATCH", `/services/${service}/${env}`, change);
        flash(`saved: ${out.changes.map((c) => c.key).join(", ") || "nothing changed"}`);
        await pageService(service, env);
      } catch (e) {
        err.textContent = e.message;
        if (e.field && inputs[e.field]) inputs[e.field].focus();
      }
    } }, h("h2", {}, "Edit configuration"), h("div", { class: "grid2" }, EDITABLE.map((k) => {
      inputs[k] = h("input", { id: "s-" + k, name: k, value: value(k) });
      return h("label", { for: "s-" + k }, k, inputs[k]);
    })), err, h("p", {}, h("button", { type: "submit", class: "primary" }, "Save")));
  } else {
    editor = h("p", { class: "muted", id: "svc-readonly" },
      "Changing this configuration needs the admin role for it.");
  }
  render(h("h1", {}, `${service} in ${env}`),
    h("p", {}, h("a", { href: `#/releases?service=${service}&env=${env}` }, "Its releases"),
      svc.may_release ? [" · ", h("a", { href: `#/new?service=${service}&env=${env}` }, "New release")] : ""),
    h("div", { class: "card" }, cfg), editor,
    h("h2", {}, "Change history"), h("table", { id: "history" },
      h("thead", {}, h("tr", {}, ["At", "By", "Key", "Old", "New"].map((t) => h("th", {}, t)))),
      h("tbody", {}, hist.history.map((c) => h("tr", {}, h("td", { class: "nowrap" }, fmtTime(c.at)),
        h("td", {}, c.by), h("td", {}, c.key), h("td", { class: "mono" }, c.old ?? "(unset)"),
        h("td", { class: "mono" }, c.new ?? "(unset)"))))));
}

/* ---- routing ---- */
async function route() {
  if (pageCleanup) { pageCleanup(); pageCleanup = null; }
  const hash = location.hash || "#/releases";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll("[data-nav]"))
    a.classList.toggle("active", a.dataset.nav === parts[0]);
  if (parts[0] !== "login" && !session.user) {
    try {
      const s = await api("GET", "/session");
      Object.assign(session, { user: s.user, csrf: s.csrf_token, roles: s.roles });
      showWho();
    } catch (e) { return; }
  }
  try {
    if (parts[0] === "login") await pageLogin(params);
    else if (parts[0] === "releases" && parts[1]) await pageRelease(parts[1]);
    else if (parts[0] === "new") await pageNew(params);
    else if (parts[0] === "services" && parts[2]) await pageService(parts[1], parts[2]);
    else if (parts[0] === "services") await pageServices();
    else if (parts[0] === "stats") await pageStats(params); /* stats.js */
    else if (parts[0] === "waves" && parts[1]) await pageWave(parts[1]); /* waves.js */
    else if (parts[0] === "waves") await pageWaves(params);
    else await pageReleases(params);
  } catch (e) {
    if (e.status !== 401) render(h("h1", {}, "Something went wrong"), h("p", { class: "field-error" }, e.message));
  }
}

window.addEventListener("hashchange", () => { flash(nextFlash || ""); nextFlash = null; route(); });
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", async () => {
    try { await api("DELETE", "/session"); } catch (e) { /* gone already */ }
    Object.assign(session, { user: null, csrf: null, roles: [] });
    showWho();
    location.hash = "#/login";
  });
  route();
});
