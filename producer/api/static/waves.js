/* The console's wave pages (#/waves, #/waves/ID): progress per step, failures, events and
 * the pause/resume/abort buttons the caller's roles allow (GET /api/v1/waves...). Uses app.js's
 * h(), api(), render(), badge(), flash() and fmtTime(). */
"use strict";

async function pageWaves(params) {
  const env = params.get("env");
  const out = await api("GET", "/waves" + (env ? "?env=" + encodeURIComponent(env) : ""));
  const rows = out.waves.map((w) => h("tr", {},
    h("td", {}, h("a", { href: "#/waves/" + w.id }, w.id.slice(0, 8))),
    h("td", {}, badge(w.status)), h("td", {}, w.env),
    h("td", {}, `${w.ended}/${w.total}`), h("td", {}, w.failed),
    h("td", {}, fmtTime(w.created_at)), h("td", {}, w.operator), h("td", {}, w.description)));
  render(h("h1", {}, "Waves"),
    rows.length ? h("table", { class: "list", "data-waves": "" },
      h("thead", {}, h("tr", {}, ...["Wave", "Status", "Env", "Ended", "Failed", "Created",
        "Operator", "Description"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)) : h("p", { class: "muted" }, "No waves yet (relctl wave create)."));
}

function waveCounts(c) {
  return ["succeeded", "failed", "cancelled", "running", "queued", "pending"]
    .filter((k) => c[k] || k === "succeeded").map((k) => `${c[k]} ${k}`).join(", ");
}

function waveView(w) {
  const spec = (s) => s.spec && s.spec.services ? "services " + s.spec.services.join(", ")
    : "percent " + (s.spec ? s.spec.percent : "?");
  const buttons = ["pause", "resume", "abort"].filter((a) => w.allowed && w.allowed[a])
    .map((a) => h("button", { type: "button", "data-action": a,
      onclick: () => waveAction(w, a) }, a[0].toUpperCase() + a.slice(1)));
  return [
    h("h1", {}, "Wave ", h("code", {}, w.id.slice(0, 8)), " ", badge(w.status)),
    w.reason ? h("p", { class: "msg", "data-reason": "" }, w.reason) : "",
    h("dl", { class: "facts" },
      ...[["Env", w.env], ["Releases", w.mode === "version" ? "deploy of version " + w.version
        : w.mode === "redo" ? "redo of each service's latest release"
          : "running version, latest template"],
      ["Limits", `at most ${w.max_parallel} at once, failure budget ${w.max_failures_spec}`],
      ["Operator", w.operator], ["Description", w.description || "-"],
      ["Created", fmtTime(w.created_at)], ["Finished", fmtTime(w.finished_at)]]
        .flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("div", { class: "progress" },
      h("progress", { max: w.total, value: w.ended, "aria-label": "releases ended" }),
      h("span", { "data-progress": "" }, `${w.ended}/${w.total} ended: ${waveCounts(w.counts)}`)),
    buttons.length ? h("p", { class: "actions" }, buttons) : "",
    h("h2", {}, "Steps"),
    h("table", { class: "list", "data-steps": "" },
      h("thead", {}, h("tr", {}, ...["Step", "Takes", "Releases", "State", "Progress"]
        .map((t) => h("th", {}, t)))),
      h("tbody", {}, w.steps.map((s) => h("tr", { "data-step": s.step },
        h("td", {}, s.step), h("td", {}, spec(s)), h("td", {}, s.size), h("td", {}, s.status),
        h("td", {}, h("progress", { max: Math.max(s.size, 1),
          value: s.succeeded + s.failed + s.cancelled }), " ", waveCounts(s)))))),
    w.failures.length ? [h("h2", {}, "Failures"),
      h("table", { class: "list", "data-failures": "" }, h("tbody", {}, w.failures.map((f) =>
        h("tr", {}, h("td", {}, f.service), h("td", {}, h("a", { href: "#/releases/" + f.release_id },
          f.release_id.slice(0, 8))), h("td", {}, badge(f.status)), h("td", {}, f.error || "")))))] : "",
    h("h2", {}, "Events"),
    h("ul", { class: "timeline" }, w.events.map((e) =>
      h("li", {}, fmtTime(e.at), " ", h("strong", {}, e.event), " ", e.message))),
    h("h2", {}, "Releases"),
    h("table", { class: "list", "data-releases": "" }, h("tbody", {}, (w.releases || []).map((r) =>
      h("tr", {}, h("td", {}, r.service), h("td", {}, "step " + r.step), h("td", {}, badge(r.status)),
        h("td", {}, r.release_id ? h("a", { href: "#/releases/" + r.release_id },
          r.release_id.slice(0, 8)) : "-"))))),
  ];
}

async function waveAction(w, action) {
  const why = action === "abort" ? prompt("Why abort this wave?") : "";
  if (why === null) return;
  try {
    const out = await api("POST", `/waves/${w.id}/${action}`, why ? { message: why } : {});
    flash(`wave ${action === "pause" ? "paused" : action === "resume" ? "resumed" : "aborted"}`);
    render(...waveView(out));
  } catch (e) {
    flash(e.message, true);
  }
}

async function pageWave(id) {
  let timer = null;
  const load = async () => {
    const w = await api("GET", "/waves/" + encodeURIComponent(id));
    render(...waveView(w));
    if (w.finished_at && timer) { clearInterval(timer); timer = null; }
    return w;
  };
  const w = await load();
  if (!w.finished_at) {
    timer = setInterval(() => { load().catch(() => {}); }, 2000);
    pageCleanup = () => { if (timer) clearInterval(timer); };
  }
}
