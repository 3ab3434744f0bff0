"""The five figures of ops/bench and the table that prints them."""
import os
import resource
import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import benchlib as bl
from benchlib import pct, say, spread

TERMINAL = ("succeeded", "failed", "cancelled", "superseded", "rejected")


# -- 4. render -------------------------------------------------------------------------
def render(build_dir, runs, quick):
    renders, sed_runs = (20000, 50) if quick else (100000, 1000)
    cmd = ["ops/bench-render", "ops/demo/templates/web.yaml", str(renders), str(sed_runs)]
    rel, sed, start = [], [], []
    lines = ""
    for i in range(runs):
        say(f"render: run {i + 1}/{runs}: {' '.join(cmd)}")
        p = subprocess.run(cmd, cwd=bl.ROOT, env=dict(os.environ, RELFLEET_BUILD_DIR=build_dir),
                           capture_output=True, text=True, timeout=300)
        if p.returncode:
            raise RuntimeError(f"ops/bench-render: {p.stderr.strip()}")
        out = p.stdout
        lines = next((l for l in out.splitlines() if l.startswith("template ")), lines)
        rel.append(float(re.search(r"rf_render_exec:\s+(\d+) renders/s", out).group(1)))
        sed.append(float(re.search(r"^sed:\s+(\d+) renders/s", out, re.M).group(1)))
        start.append(float(re.search(r"^process start alone.*?:\s+(\d+) renders/s", out, re.M).group(1)))
    return {"command": " ".join(cmd) + "  (taskset -c 0: one core)", "template": lines,
            "relfleet_renders_per_s": spread(rel), "sed_renders_per_s": spread(sed),
            "process_start_per_s": spread(start)}


# -- releases through the pipeline -----------------------------------------------------
def publish(ctx, services, version, rate=None):
    """Publishes one request per service (at rate per second, or as fast as possible);
    returns {release id: (service, publish time)}."""
    prod = ctx.producer()
    topic = ctx.topic("requests")
    sent = {}
    t0 = time.time()
    for i, svc in enumerate(services):
        if rate:
            delay = t0 + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        rid, body = ctx.request(svc, version)
        sent[rid] = (svc, time.time())
        prod.produce(topic, key=f"{bl.ENV}/{svc}", value=body)
        prod.poll(0)
    prod.flush(30)
    return sent


def timeline(ctx, ids):
    """release id -> {event point: epoch seconds}, plus the Deployment's generation."""
    out = {i: {} for i in ids}
    for chunk in range(0, len(ids), 2000):
        part = ids[chunk:chunk + 2000]
        rows = ctx.psql(
            "SELECT release_id, event, coalesce(status, ''), extract(epoch FROM at),"
            " coalesce(data ->> 'kind', ''), coalesce(data ->> 'generation', '') FROM timeline"
            " WHERE release_id IN (%s) ORDER BY id" % ",".join(f"'{i}'" for i in part))
        for rid, event, status, at, kind, gen in rows:
            at = float(at)
            p = out.setdefault(rid, {})
            if event == "queued":
                p.setdefault("queued", at)
            elif status == "applying":
                p.setdefault("rendered", at)
            elif event == "applied":
                p.setdefault("first_applied", at)
                if kind == "Deployment" and gen:
                    p["generation"] = int(gen)
            elif status == "progressing":
                p.setdefault("applied", at)
            elif status in TERMINAL:
                p.setdefault("terminal", at)
                p["status"] = status
    return out


def stage_breakdown(sent, points, results):
    """Per-stage durations in ms: p50/p99 (Kafka hops and waiting in a partition count
    towards the stage that consumes)."""
    spans = {"render (publish -> rendered)": [], "apply (rendered -> applied)": [],
             "track (applied -> terminal)": [], "result (terminal -> results produced)": []}
    for rid, (_, t_pub) in sent.items():
        p = points.get(rid, {})
        r = results.get(rid)
        if not all(k in p for k in ("rendered", "applied", "terminal")) or not r:
            continue
        vals = [p["rendered"] - t_pub, p["applied"] - p["rendered"], p["terminal"] - p["applied"],
                r[0] - p["terminal"]]
        for k, v in zip(spans, vals):
            spans[k].append(v * 1000)
    return {k: {"p50_ms": pct(v, 50), "p99_ms": pct(v, 99), "n": len(v)} for k, v in spans.items()}


def batch(ctx, services, version, rate=None, watch_ns=None, timeout=None, cpu=False):
    """Releases every service once; waits for every `results` message. cpu: also the CPU
    per release of each process of the stack over the run (CpuLedger), as "cpu_ms"."""
    reader = ctx.results_reader()
    watch = None
    timeout = timeout or (60 + len(services) / 10)
    ledger = bl.CpuLedger(ctx.stack) if cpu else None
    events = bl.EventLedger(ctx.stack) if cpu else None
    cpu_ms = ev = None
    try:
        watch = bl.DeployWatch(ctx, watch_ns) if watch_ns else None
        if watch:
            watch.ready.wait(10)
        before = ledger.snapshot() if ledger else None
        ev0 = events.snapshot() if events else None
        own0 = resource.getrusage(resource.RUSAGE_SELF)
        sent = publish(ctx, services, version, rate)
        bl.wait_for(lambda: all(r in reader.got for r in sent), timeout,
                    f"{len(sent)} results ({version})", 0.05)
        own1 = resource.getrusage(resource.RUSAGE_SELF)
        if events:
            ev = events.per_release(ev0, events.snapshot(), len(sent))
        if ledger:
            cpu_ms = ledger.per_release(before, ledger.snapshot(), len(sent))
            # the load generator (this process: publisher, results reader) shares the cores
            # but is not the stack: reported beside it, not in its total
            harness_ms = ((own1.ru_utime + own1.ru_stime) - (own0.ru_utime + own0.ru_stime)) * 1000
            cpu_ms = dict(cpu_ms, harness=harness_ms / len(sent))
    finally:
        reader.stop()
        if watch:
            watch.stop()
    points = timeline(ctx, list(sent))
    bad = [r for r in sent if reader.got[r][2] != "succeeded"]
    if bad:
        raise RuntimeError(f"{len(bad)} releases did not succeed, e.g. {bad[0]}: "
                           f"{reader.got[bad[0]][2]}")
    first = min(t for _, t in sent.values())
    last = max(reader.got[r][0] for r in sent)
    return {"sent": sent, "results": dict(reader.got), "points": points, "watch": watch,
            "span_s": last - first, "rate": len(sent) / (last - first), "cpu_ms": cpu_ms,
            "faults_switches": ev}


# -- 1. end-to-end throughput ----------------------------------------------------------
def _throughput_runs(ctx, runs, quick, workers, tag):
    n = 200 if quick else 1000
    services = ctx.services("tp", n)
    rates, breakdowns, cpus, diags, events, probes = [], [], [], [], [], []
    for i in range(runs):
        say(f"throughput, {workers} worker(s) per stage: run {i + 1}/{runs}, {n} releases")
        probe = bl.machine_probe()
        b, _, diag = measured_run(ctx, services, f"now-{tag}{i}")
        probes.append(probe)
        diags.append({st: {k: v for k, v in d.items() if k != "workers"} for st, d in diag.items()})
        rates.append(b["rate"])
        breakdowns.append(stage_breakdown(b["sent"], b["points"], b["results"]))
        cpus.append(b["cpu_ms"])
        events.append(b["faults_switches"])
        say("  mean poll batch " + ", ".join(f"{st} {d['mean_poll_batch']}" for st, d in diag.items())
            + "; rebalances seen " + ", ".join(f"{st} {d['rebalances_during_run']}"
                                                for st, d in diag.items()))
        say(f"  {b['rate']:.0f} releases/s ({n} in {b['span_s']:.1f}s), CPU per release "
            f"{b['cpu_ms']['total']:.2f} ms: " + cpu_line(b["cpu_ms"]))
        say(f"  machine probe before the run (zlib of 1 MiB, best of 5): {probe:.1f} ms")
        say("  page faults / context switches per release: " + ", ".join(
            f"{k} {f:.1f}/{c:.1f}" for k, (f, c) in sorted(
                b["faults_switches"].items(), key=lambda kv: -kv[1][0] - kv[1][1])))
    # the breakdown of the median run; CPU per release: the median of each process
    mid = sorted(range(len(rates)), key=lambda k: rates[k])[len(rates) // 2]
    names = sorted({k for c in cpus for k in c})
    cpu = {k: sorted(c.get(k, 0.0) for c in cpus)[len(cpus) // 2] for k in names}
    return {"releases": n, "releases_per_s": spread(rates), "stages": breakdowns[mid],
            "cpu_ms_per_release": cpu, "cpu_ms_per_release_runs": cpus,
            "faults_switches_per_release_runs": events, "machine_probe_ms_runs": probes,
            "batches_and_rebalances": diags}


def idle_cpu(ctx, seconds):
    """CPU ms per second of each process of the idle stack (nothing published): what
    polling costs (the consumers' fetches, the dev broker answering them, the stages'
    ticks), paid at any rate of releases."""
    ledger = bl.CpuLedger(ctx.stack)
    before = ledger.snapshot()
    t0 = time.time()
    time.sleep(seconds)
    after = ledger.snapshot()
    per_s = bl.CpuLedger.per_release(before, after, time.time() - t0)
    say("idle stack, CPU ms per second: " + cpu_line(per_s))
    return per_s


def cpu_groups(cpu):
    """CPU ms per release by process kind: kubesim, postgres (every backend), devbroker,
    redis, each stage (all its workers), notify."""
    g = {}
    for k, v in cpu.items():
        if k == "total":
            continue
        kind = "postgres" if k.startswith("postgres") else k.rsplit("-", 1)[0] \
            if k.rsplit("-", 1)[-1].isdigit() else k
        g[kind] = g.get(kind, 0.0) + v
    g["total"] = cpu.get("total", sum(g.values()))
    return g


def cpu_line(cpu):
    g = cpu_groups(cpu)
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(g.items(), key=lambda kv: -kv[1])
                     if k != "total")


def throughput(ctx, runs, quick):
    # warm-up: the first release of a service creates its namespace and objects
    ctx.services("tp", 200 if quick else 1000)
    say("throughput: warm-up (objects and namespace created once)")
    batch(ctx, ctx.services("tp", 200 if quick else 1000), "now-warm")
    idle = idle_cpu(ctx, 3 if quick else 10)
    return {"one_worker": _throughput_runs(ctx, runs, quick, 1, "a"), "idle_cpu_ms_per_s": idle,
            "setup": "distinct services (template benchweb: Deployment + Service, 1 replica, "
                     "pods ready at once), requests published as fast as possible to "
                     "`requests`; rate = releases / (first publish -> last `results` CreateTime)"}


def throughput_two(ctx, runs, quick, fig):
    for stage in ("render", "apply", "track"):
        ctx.stack.run("worker", "start", stage)
    say("throughput: a second worker per stage started; waiting for the rebalance")
    ctx.stack.wait_balanced()
    batch(ctx, ctx.services("tp", 200 if quick else 1000), "now-warm2")
    fig["two_workers"] = _throughput_runs(ctx, runs, quick, 2, "b")
    # back to one worker per stage for what follows
    for stage in ("render", "apply", "track"):
        ctx.stack.stop_worker(stage)
    ctx.stack.wait_balanced()


# -- 2. added latency at a steady rate -------------------------------------------------
# relfleet_apply_part_seconds{part}: where an applied release's time goes in the apply
# worker, in order (workers/apply/apply.c); they add up to `rendered` created -> its poll
# batch handled. relfleet_delivery_wait_seconds: each poll batch's wait for the delivery
# of what it produced (`applied`), before its offsets are stored.
APPLY_PARTS = ("queue", "batch", "pg_read", "lock", "api", "round", "pg_finish", "after")


def _histograms(ctx, stage, name, label=None):
    """{label value: {"buckets": {le: cumulative count}, "sum": s, "count": n}} of a
    histogram, summed over the stage's live workers."""
    out = {}
    for _, _, _, addr in ctx.stack.workers(stage):
        text = bl.metrics_text(addr)
        for m in re.finditer(r"^" + re.escape(name) + r"_(bucket|sum|count)\{([^}]*)\}\s+(\S+)$",
                             text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            h = out.setdefault(labels.get(label, "") if label else "",
                               {"buckets": {}, "sum": 0.0, "count": 0.0})
            v = float(m.group(3))
            if m.group(1) == "bucket":
                le = float(labels["le"])
                h["buckets"][le] = h["buckets"].get(le, 0.0) + v
            else:
                h[m.group(1)] += v
    return out


def _hist_delta(before, after):
    out = {}
    for k, h in after.items():
        b = before.get(k, {"buckets": {}, "sum": 0.0, "count": 0.0})
        out[k] = {"buckets": {le: c - b["buckets"].get(le, 0.0) for le, c in h["buckets"].items()},
                  "sum": h["sum"] - b["sum"], "count": h["count"] - b["count"]}
    return out


def hist_quantile(h, q):
    """The q-quantile (0..1) of a histogram's observations, linearly interpolated inside
    its bucket as Prometheus' histogram_quantile does; NaN when empty."""
    les = sorted(h["buckets"])
    if not les or h["buckets"][les[-1]] <= 0:
        return float("nan")
    rank = q * h["buckets"][les[-1]]
    prev_le, prev_c = 0.0, 0.0
    for le in les:
        c = h["buckets"][le]
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 1)
        prev_le, prev_c = le, c
    return prev_le


def _hist_summary(h):
    """p50/p99/mean in ms and the count of a histogram (p50/p99 within a bucket's width)."""
    n = h["count"]
    return {"p50_ms": round(hist_quantile(h, 0.5) * 1000, 2),
            "p99_ms": round(hist_quantile(h, 0.99) * 1000, 2),
            "mean_ms": round(h["sum"] / n * 1000, 2) if n else float("nan"), "n": int(n)}


def apply_breakdown(before, after):
    """Figure 2's breakdown of the apply worker's time between two snapshots
    (apply_snapshot)."""
    parts = _hist_delta(before["parts"], after["parts"])
    out = {p: _hist_summary(parts[p]) for p in APPLY_PARTS if p in parts}
    d = _hist_delta(before["delivery"], after["delivery"]).get("")
    if d:
        out["delivery (per poll batch)"] = _hist_summary(d)
    applied = parts.get("pg_finish", {}).get("count", 0)
    for method, h in sorted(_hist_delta(before["kube"], after["kube"]).items()):
        if h["count"] > 0:
            out[f"API {method} (each)"] = dict(_hist_summary(h), per_release=round(
                h["count"] / applied, 2) if applied else float("nan"))
    return out


def apply_snapshot(ctx):
    return {"parts": _histograms(ctx, "apply", "relfleet_apply_part_seconds", "part"),
            "delivery": _histograms(ctx, "apply", "relfleet_delivery_wait_seconds"),
            "kube": _histograms(ctx, "apply", "relfleet_kube_request_seconds", "method")}


def _latency_run(ctx, services, rate, version):
    before = apply_snapshot(ctx)
    b = batch(ctx, services, version, rate=rate, watch_ns="lat")
    after = apply_snapshot(ctx)
    to_apply, to_result, missing = [], [], 0
    for rid, (svc, t_pub) in b["sent"].items():
        p = b["points"][rid]
        to_apply.append((p["first_applied"] - t_pub) * 1000)
        done = b["watch"].done.get((svc, p.get("generation", -1)))
        if done is None:
            missing += 1
            continue
        to_result.append((b["results"][rid][0] - done) * 1000)
    return {"releases": len(b["sent"]),
            "achieved_rate": len(b["sent"]) / (max(t for _, t in b["sent"].values()) -
                                               min(t for _, t in b["sent"].values()) + 1 / rate),
            "publish_to_first_applied_ms": {"p50": pct(to_apply, 50), "p99": pct(to_apply, 99)},
            "complete_to_result_ms": {"p50": pct(to_result, 50), "p99": pct(to_result, 99),
                                      "n": len(to_result), "unseen": missing},
            "stages": stage_breakdown(b["sent"], b["points"], b["results"]),
            "apply_breakdown": apply_breakdown(before, after)}


def latency(ctx, quick, runs=1):
    """Figure 2, runs times: the figures of the median run of each (p50 and p99 the
    medians over the runs), the spread of every p99 over the runs, and each run."""
    rate = 50
    seconds = 6 if quick else 20
    services = ctx.services("lat", rate * seconds)
    say("latency: warm-up")
    batch(ctx, services, "now-warm", rate=200)
    rs = []
    for i in range(runs):
        say(f"latency: run {i + 1}/{runs}: {rate} releases/s for {seconds}s")
        rs.append(_latency_run(ctx, services, rate, f"now-steady{i}"))
        r = rs[-1]
        say(f"  publish -> 1st applied p99 {r['publish_to_first_applied_ms']['p99']:.0f} ms, "
            f"complete -> result p99 {r['complete_to_result_ms']['p99']:.0f} ms; apply: " +
            ", ".join(f"{k} {v['p99_ms']:.1f}" for k, v in r["apply_breakdown"].items()))

    def med(get):
        return spread([get(r) for r in rs])["median"]

    p99 = {"publish_to_first_applied": spread([r["publish_to_first_applied_ms"]["p99"] for r in rs]),
           "complete_to_result": spread([r["complete_to_result_ms"]["p99"] for r in rs])}
    stages = {}
    for st in rs[0]["stages"]:
        p99[st] = spread([r["stages"][st]["p99_ms"] for r in rs])
        stages[st] = {"p50_ms": med(lambda r: r["stages"][st]["p50_ms"]),
                      "p99_ms": p99[st]["median"], "n": sum(r["stages"][st]["n"] for r in rs)}
    parts = {}
    for part in rs[0]["apply_breakdown"]:
        have = [r for r in rs if part in r["apply_breakdown"]]
        p99["apply " + part] = spread([r["apply_breakdown"][part]["p99_ms"] for r in have])
        parts[part] = {k: spread([r["apply_breakdown"][part][k] for r in have])["median"]
                       for k in ("p50_ms", "p99_ms", "mean_ms", "per_release")
                       if k in have[0]["apply_breakdown"][part]}
        parts[part]["n"] = sum(r["apply_breakdown"][part]["n"] for r in have)
    return {"rate": rate, "seconds": seconds, "runs": len(rs),
            "releases": rs[0]["releases"],
            "achieved_rate": med(lambda r: r["achieved_rate"]),
            "publish_to_first_applied_ms": {"p50": med(lambda r: r["publish_to_first_applied_ms"]["p50"]),
                                            "p99": p99["publish_to_first_applied"]["median"]},
            "complete_to_result_ms": {"p50": med(lambda r: r["complete_to_result_ms"]["p50"]),
                                      "p99": p99["complete_to_result"]["median"],
                                      "n": sum(r["complete_to_result_ms"]["n"] for r in rs),
                                      "unseen": sum(r["complete_to_result_ms"]["unseen"] for r in rs)},
            "stages": stages, "apply_breakdown": parts, "p99_spread_ms": p99,
            "per_run": rs,
            "apply_breakdown_note": "from the apply worker's histograms relfleet_apply_part_seconds, "
                                    "relfleet_delivery_wait_seconds and relfleet_kube_request_seconds "
                                    "(p50/p99 interpolated in buckets 0.25-5 ms apart below 25 ms; "
                                    "mean exact)"}


# -- 5. apply --------------------------------------------------------------------------
def _sed_manifest(path, service, ns, version):
    values = {"service": service, "env": bl.ENV, "namespace": ns, "version": version,
              "image": f"registry.local/bench:{version}", "replicas": "1",
              "health_path": "/healthz", "group": "bench", "port": "8080",
              "release_id": "r-" + service, "operator": "bench"}
    args = []
    for k, v in values.items():
        args += ["-e", f"s/{{{{ *{k} *}}}}/{v.replace('/', chr(92) + '/')}/g"]
    src = os.path.join(bl.ROOT, "ops", "demo", "templates", "web.yaml")
    with open(path, "w") as f:
        subprocess.run(["sed", *args, src], stdout=f, check=True)


def apply(ctx, runs, quick):
    n = 100 if quick else 500
    services = ctx.services("ap", n)
    (_, _, pid, _), = ctx.stack.workers("apply")[:1]
    batch(ctx, services, "now-warm")
    rel_cpu, rel_wall = [], []
    for i in range(runs):
        cpu0 = bl.proc_cpu_s(pid)
        say(f"apply: relfleet run {i + 1}/{runs}, {n} releases of 2 objects")
        b = batch(ctx, services, f"now-ap{i}")
        rel_cpu.append(2 * n / max(bl.proc_cpu_s(pid) - cpu0, 1e-9))
        pts = b["points"].values()
        rel_wall.append(2 * n / (max(p["applied"] for p in pts) - min(p["rendered"] for p in pts)))
    m = 20 if quick else 100
    tmp = tempfile.mkdtemp(prefix="bench-kubectl-", dir=ctx.stack.state)
    _namespace(ctx, "kapply")
    kc = []
    cmd = None
    for i in range(runs):
        files = []
        for j in range(m):
            path = os.path.join(tmp, f"k{j:05d}-{i}.yaml")
            _sed_manifest(path, f"k{j:05d}", "kapply", f"now-k{i}")
            files.append(path)
        say(f"apply: kubectl run {i + 1}/{runs}, {m} releases, one process each")
        t0 = time.time()
        for path in files:
            cmd = ["kubectl", "--kubeconfig", ctx.kubeconfig, "apply", "--server-side",
                   "--force-conflicts", "-f", path]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if p.returncode:
                raise RuntimeError(f"kubectl apply: {p.stderr.strip()[:400]}")
        kc.append(2 * m / (time.time() - t0))
    return {"relfleet_releases": n, "kubectl_releases": m,
            "relfleet_objects_per_cpu_s": spread(rel_cpu),
            "relfleet_wall_objects_per_s": spread(rel_wall),
            "kubectl_objects_per_s": spread(kc),
            "kubectl_command": " ".join(cmd[:1] + ["--kubeconfig", "KUBECONFIG"] + cmd[3:-1] + ["RELEASE.yaml"]),
            "relfleet_how": "apply worker: 2 objects per release, fenced (one PostgreSQL read "
                            "per batch round, the object's fence and resourceVersion from a GET "
                            "or the worker's last answer, PATCH apply with it as precondition), "
                            "one closing statement; per CPU s = objects / CPU seconds of the "
                            "apply worker process, wall = objects / (first rendered -> last "
                            "applied)"}


# -- 3. tracking scale -----------------------------------------------------------------
def _hold(n, quick):
    if quick:
        return "hold5s"
    return "hold20s" if n <= 1000 else "hold120s" if n <= 10000 else "hold240s"


def _one_track_worker(ctx, out):
    """A fresh track worker alone in its group (the figure is about one worker following
    N rollouts, not about what an older one kept from the figures before); the RSS of the
    workers it replaces is reported beside."""
    out.setdefault("replaced_track_workers_rss_mib",
                   [round(bl.proc_rss_kib(pid) / 1024, 1)
                    for _, _, pid, _ in ctx.stack.workers("track")])
    ctx.stack.run("worker", "start", "track")
    while len(ctx.stack.workers("track")) > 1:
        ctx.stack.stop_worker("track")  # the oldest
    ctx.stack.wait_balanced(("track",))
    (_, _, pid, _), = ctx.stack.workers("track")
    return pid


def _namespace(ctx, ns):
    r = ctx.kube().post(f"{ctx.kube_url}/api/v1/namespaces", timeout=30,
                        json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    if r.status_code not in (200, 201, 409):
        raise RuntimeError(f"namespace {ns}: {r.status_code} {r.text[:200]}")


def _create_deployments(ctx, ns, names, image, threads=8):
    _namespace(ctx, ns)
    base = f"{ctx.kube_url}/apis/apps/v1/namespaces/{ns}/deployments"

    def one(name):
        body = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {"app.kubernetes.io/managed-by": "relfleet"}},
                "spec": {"replicas": 1, "progressDeadlineSeconds": 3600,
                         "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [{"name": "app", "image": image}]}}}}
        r = ctx.kube().patch(f"{base}/{name}?fieldManager=bench&force=true", json=body, timeout=60,
                             headers={"Content-Type": "application/apply-patch+yaml"})
        if r.status_code not in (200, 201):
            raise RuntimeError(f"apply {name}: {r.status_code} {r.text[:200]}")

    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(one, names))


def _track_size(ctx, n, quick, out):
    pid = _one_track_worker(ctx, out)
    prefix = f"t{n}x"
    hold = _hold(n, quick)
    names = ctx.services(prefix, n, namespace=prefix)
    ctx.psql(f"UPDATE services SET fence = 1 WHERE env = '{bl.ENV}' AND service LIKE '{prefix}%'")
    rss0, cpu0 = bl.proc_rss_kib(pid), bl.proc_cpu_s(pid)
    say(f"tracking {n}: track worker pid {pid}, RSS {rss0 / 1024:.1f} MiB before; "
        f"inserting {n} progressing releases")
    ctx.psql(
        "INSERT INTO releases (id, service, env, version, kind, operator, status, request,"
        " started_at, fence, track) SELECT gen_random_uuid(), s.service, s.env, '%s', 'deploy',"
        " 'bench', 'progressing', '{}'::jsonb, clock_timestamp(), 1, jsonb_build_object("
        "'objects', jsonb_build_array(jsonb_build_object('apiVersion', 'apps/v1', 'kind',"
        " 'Deployment', 'namespace', s.namespace, 'name', s.service, 'generation', 1,"
        " 'resourceVersion', '1')), 'timeout_s', 3600, 'deadline_ms', (extract(epoch FROM"
        " clock_timestamp()) * 1000)::bigint + 3600000) FROM services s WHERE s.env = '%s' AND"
        " s.service LIKE '%s%%'" % (hold, bl.ENV, prefix))
    t_claim = time.time()
    count_sql = (f"SELECT count(*) FILTER (WHERE track_owner IS NOT NULL), count(*) FILTER "
                 f"(WHERE finished_at IS NOT NULL) FROM releases WHERE env = '{bl.ENV}' AND "
                 f"service LIKE '{prefix}%'")
    bl.wait_for(lambda: int(ctx.psql(count_sql)[0][0]) >= n, 60 + n / 100, f"{n} claims", 0.5)
    t_claim = time.time() - t_claim
    rss_claimed = bl.proc_rss_kib(pid)
    watch = bl.DeployWatch(ctx, prefix)
    watch.ready.wait(10)
    sampler = bl.Sampler(pid, ctx.kube_port)
    sampler.start()
    cpu1 = bl.proc_cpu_s(pid)
    say(f"tracking {n}: all claimed in {t_claim:.1f}s; creating {n} Deployments ({hold})")
    t0 = time.time()
    _create_deployments(ctx, prefix, names, f"registry.local/bench:{hold}")
    t_created = time.time()
    rss_all = bl.proc_rss_kib(pid)
    say(f"tracking {n}: created in {t_created - t0:.1f}s; waiting for every terminal state")
    hold_s = int(hold[4:-1])
    bl.wait_for(lambda: int(ctx.psql(count_sql)[0][1]) >= n, hold_s + (t_created - t0) + 120,
                f"{n} terminal states", 1.0)
    sampler.stop()
    watch.stop()
    cpu2 = bl.proc_cpu_s(pid)
    hwm = bl.proc_rss_kib(pid, "VmHWM")
    rows = ctx.psql(f"SELECT service, status, extract(epoch FROM finished_at) FROM releases WHERE"
                    f" env = '{bl.ENV}' AND service LIKE '{prefix}%'")
    delays, unseen, first_done = [], 0, None
    statuses = {}
    for svc, status, fin in rows:
        statuses[status] = statuses.get(status, 0) + 1
        seen = watch.done.get((svc, 1))
        if seen is None:
            unseen += 1
            continue
        first_done = seen if first_done is None else min(first_done, seen)
        delays.append((float(fin) - seen) * 1000)
    overlap = sum(1 for t in watch.done.values() if t < t_created)
    return {"rollouts": n, "hold": hold, "claim_s": t_claim, "create_s": t_created - t0,
            "completed_before_last_created": overlap, "statuses": statuses,
            "rss_before_mib": rss0 / 1024, "rss_claimed_mib": rss_claimed / 1024,
            "rss_all_created_mib": rss_all / 1024,
            "rss_peak_mib": max(sampler.rss_max, rss_all) / 1024, "vmhwm_mib": hwm / 1024,
            "rss_per_rollout_kib": (max(sampler.rss_max, rss_all) - rss0) / n,
            "cpu_s": cpu2 - cpu1, "cpu_claim_s": cpu1 - cpu0,
            "connections_to_apiserver_max": sampler.conns_max,
            "detect_delay_ms": {"p50": pct(delays, 50), "p99": pct(delays, 99),
                                "max": max(delays) if delays else float("nan"),
                                "n": len(delays), "unseen": unseen},
            "watch_error": watch.error}


def _kubectl_track(ctx, k, quick):
    hold = "hold5s" if quick else "hold20s"
    ns = "kctl"
    names = [f"kc{i:05d}" for i in range(k)]
    say(f"tracking: {k} x kubectl rollout status ({hold})")
    _create_deployments(ctx, ns, names, f"registry.local/bench:{hold}")
    cmd = ["kubectl", "--kubeconfig", ctx.kubeconfig, "-n", ns, "rollout", "status",
           "--timeout=600s"]
    t0 = time.time()
    procs = [subprocess.Popen(cmd + [f"deployment/{n}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for n in names]
    pids = [p.pid for p in procs]
    conns_max, rss_sum_max = 0, 0
    usage = {}
    deadline = time.time() + 300
    while len(usage) < len(procs) and time.time() < deadline:
        table = bl._tcp_table()
        live = [p for p in pids if p not in usage]
        conns_max = max(conns_max, bl.tcp_conns(live, ctx.kube_port, table))
        rss = 0
        for p in live:
            try:
                rss += bl.proc_rss_kib(p)
            except (OSError, StopIteration):
                pass
        rss_sum_max = max(rss_sum_max, rss)
        for p in live:
            got, status, ru = os.wait4(p, os.WNOHANG)
            if got:
                usage[p] = (status, ru)
        time.sleep(0.2)
    for p in procs:
        if p.pid not in usage:
            p.kill()
            _, status, ru = os.wait4(p.pid, 0)
            usage[p.pid] = (status, ru)
    ok = sum(1 for st, _ in usage.values() if os.waitstatus_to_exitcode(st) == 0)
    maxrss = sum(ru.ru_maxrss for _, ru in usage.values())
    cpu = sum(ru.ru_utime + ru.ru_stime for _, ru in usage.values())
    return {"rollouts": k, "succeeded": ok, "seconds": time.time() - t0,
            "command": " ".join(cmd[:1] + ["--kubeconfig", "KUBECONFIG"] + cmd[3:]) + " deployment/NAME",
            "rss_sum_peak_mib": rss_sum_max / 1024, "maxrss_sum_mib": maxrss / 1024,
            "rss_per_rollout_kib": maxrss / k, "cpu_s": cpu, "connections_max": conns_max}


def tracking(ctx, sizes, quick):
    out = {"sizes": [], "setup": "releases inserted into PostgreSQL as `progressing` (one "
                                 "Deployment each), claimed by one track worker, then the "
                                 "Deployments created in kubesim; pods ready after the hold time"}
    for n in sizes:
        out["sizes"].append(_track_size(ctx, n, quick, out))
        r = out["sizes"][-1]
        say(f"tracking {n}: RSS peak {r['rss_peak_mib']:.1f} MiB, p99 delay "
            f"{r['detect_delay_ms']['p99']:.0f} ms")
    out["kubectl"] = _kubectl_track(ctx, 20 if quick else 100, quick)
    return out


# -- the table -------------------------------------------------------------------------
def _s(sp, fmt="{:.0f}"):
    if not sp or sp.get("runs", 0) == 0:
        return "-"
    if sp["runs"] == 1:
        return fmt.format(sp["median"]) + " (1 run)"
    return (fmt.format(sp["median"]) + " (" + fmt.format(sp["min"]) + "-" + fmt.format(sp["max"])
            + f", {sp['runs']} runs)")


def table(rep):
    m = rep["machine"]
    f = rep["figures"]
    L = [f"Relfleet benchmark ({rep['mode']}): {rep['command']}",
         f"machine: {m['cpus']} x {m['cpu']}, {m['memory_mib']} MiB, Linux {m['kernel']}, "
         f"PostgreSQL {m['postgresql']}, Redis {m['redis']}; {m['note']}",
         f"load average (1/5/15 min) at start {' '.join(m['loadavg_at_start'])}, at end "
         f"{' '.join(m.get('loadavg_at_end', []))}: other work on the machine shows here",
         "figures: median (min-max, runs)", ""]
    row = "{:<58} {:>24} {:>30}"
    L.append(row.format("figure", "relfleet", "today's way / goal"))
    L.append("-" * 114)
    if "throughput" in f:
        t = f["throughput"]
        for key, label in (("one_worker", "1 worker/stage"), ("two_workers", "2 workers/stage")):
            if key in t:
                L.append(row.format(f"1. end to end, {label}, releases/s ({t[key]['releases']})",
                                    _s(t[key]["releases_per_s"]), "goal >= 500"))
        if t.get("idle_cpu_ms_per_s"):
            g = cpu_groups(t["idle_cpu_ms_per_s"])
            L.append(row.format("   idle stack: CPU ms per second (polling)",
                                f"{g['total']:.1f} ms/s", ""))
            for k, v in sorted(g.items(), key=lambda kv: -kv[1]):
                if k != "total" and v >= 0.05:
                    L.append(row.format(f"     {k}", f"{v:.1f} ms/s", ""))
        for key in ("one_worker", "two_workers"):
            if key in t and t[key].get("cpu_ms_per_release"):
                g = cpu_groups(t[key]["cpu_ms_per_release"])
                L.append(row.format(f"   {key.replace('_', ' ')}: CPU ms per release, all",
                                    f"{g['total']:.2f} ms", "500/s on 2 cores: <= 4"))
                for k, v in sorted(g.items(), key=lambda kv: -kv[1]):
                    if k != "total":
                        L.append(row.format(f"     {k}", f"{v:.2f} ms", ""))
        for key in ("one_worker", "two_workers"):
            if key in t:
                for st, v in t[key]["stages"].items():
                    L.append(row.format(f"   {key.replace('_', ' ')}: {st}",
                                        f"p50 {v['p50_ms']:.0f} / p99 {v['p99_ms']:.0f} ms", ""))
    if "latency" in f:
        x = f["latency"]
        sp = x.get("p99_spread_ms", {})

        def p99s(key, value, fmt="{:.0f}"):  # p99, with its spread over several runs
            s_ = sp.get(key)
            if not s_ or s_["runs"] < 2:
                return fmt.format(value)
            return (fmt.format(s_["median"]) + " (" + fmt.format(s_["min"]) + "-" +
                    fmt.format(s_["max"]) + ")")
        runs = x.get("runs", 1)
        L.append(row.format(f"2. at {x['rate']}/s ({x['releases']} releases"
                            + (f", {runs} runs" if runs > 1 else "") + "): publish -> 1st applied",
                            f"p50 {x['publish_to_first_applied_ms']['p50']:.0f} / p99 "
                            + p99s("publish_to_first_applied", x["publish_to_first_applied_ms"]["p99"])
                            + " ms", "goal p99 < 20 ms/stage"))
        c = x["complete_to_result_ms"]
        L.append(row.format("   rollout complete (kubesim) -> results produced",
                            f"p50 {c['p50']:.0f} / p99 " + p99s("complete_to_result", c["p99"]) + " ms",
                            "goal p99 < 20 ms"))
        for st, v in x["stages"].items():
            L.append(row.format(f"   {st}", f"p50 {v['p50_ms']:.0f} / p99 "
                                + p99s(st, v["p99_ms"]) + " ms", ""))
        if x.get("apply_breakdown"):
            L.append(row.format("   apply's time by part, in order (mean):", "", ""))
            for part, v in x["apply_breakdown"].items():
                label = part if v.get("per_release") is None else \
                    f"{part}, {v['per_release']:.2f} per release"
                L.append(row.format(f"     {label} ({v['mean_ms']:.2f})",
                                    f"p50 {v['p50_ms']:.1f} / p99 "
                                    + p99s("apply " + part, v["p99_ms"], "{:.1f}") + " ms", ""))
    if "tracking" in f:
        x = f["tracking"]
        if x.get("replaced_track_workers_rss_mib"):
            L.append(row.format("3. (a fresh track worker; the one(s) it replaced: RSS MiB)",
                                ", ".join(f"{v:.1f}" for v in
                                          x["replaced_track_workers_rss_mib"]), ""))
        for r in x["sizes"]:
            n = r["rollouts"]
            L.append(row.format(f"3. track {n} rollouts, 1 worker: RSS peak (before)",
                                f"{r['rss_peak_mib']:.1f} MiB ({r['rss_before_mib']:.1f})",
                                "goal <= 100 MiB at 10,000"))
            L.append(row.format("   RSS per rollout (peak - before) / n",
                                f"{r['rss_per_rollout_kib']:.1f} KiB", ""))
            L.append(row.format("   CPU while they rolled out; API connections",
                                f"{r['cpu_s']:.1f} s; {r['connections_to_apiserver_max']}", ""))
            d = r["detect_delay_ms"]
            L.append(row.format("   last status change -> terminal state",
                                f"p50 {d['p50']:.0f} / p99 {d['p99']:.0f} ms", "goal p99 < 1000 ms"))
            L.append(row.format("   (creation took; completed before the last was created)",
                                f"{r['create_s']:.0f} s; {r['completed_before_last_created']}", ""))
        k = x.get("kubectl")
        if k:
            L.append(row.format(f"   kubectl rollout status x {k['rollouts']}: summed max RSS",
                                "", f"{k['maxrss_sum_mib']:.0f} MiB"))
            L.append(row.format("   kubectl: RSS per rollout; CPU; API connections", "",
                                f"{k['rss_per_rollout_kib']:.0f} KiB; {k['cpu_s']:.1f} s; "
                                f"{k['connections_max']}"))
            big = max(x["sizes"], key=lambda r: r["rollouts"]) if x["sizes"] else None
            if big and big["rss_per_rollout_kib"] > 0:
                L.append(row.format("   memory per rollout, kubectl / relfleet",
                                    f"{k['rss_per_rollout_kib'] / big['rss_per_rollout_kib']:.0f} x",
                                    "goal >= 1000 x"))
    if "scaling" in f and f["scaling"].get("runs"):
        x = f["scaling"]
        L.append(row.format(f"6. scale-out, each worker <= {x['quota_cores_per_worker']:g} core (cgroup)",
                            "releases/s (efficiency)", "goal eff >= 0.8 to 4"))
        for r in x["runs"]:
            q = r.get("quota_used", {})
            L.append(row.format(f"   {r['workers_per_stage']} worker(s)/stage ({r['releases']}): quota used "
                                + "/".join(f"{q.get(s_, 0) or 0:.2f}" for s_ in STAGES),
                                f"{r['releases_per_s']:.0f} ({r.get('efficiency', 0):.2f})", ""))
            c = r.get("stage_cpu_ms_per_release")
            if c:
                L.append(row.format("     CPU ms/release render/apply/track; broker, kubesim",
                                    "/".join(f"{c.get(s_, 0):.2f}" for s_ in STAGES) +
                                    f"; {c.get('devbroker', 0):.2f}, {c.get('kubesim', 0):.2f}", ""))
            tw = r.get("track_watches")
            if tw:
                L.append(row.format("     Deployment watches open per track worker",
                                    "/".join(f"{v['open_at_end']:g}" for _, v in sorted(tw.items())),
                                    ""))
    elif "scaling" in f:
        L.append(row.format("6. scale-out", f["scaling"].get("error", "-")[:24], ""))
    if "burst" in f:
        x = f["burst"]
        for phase in ("create", "redeploy"):
            if phase in x:
                y = x[phase]
                L.append(row.format(f"7. burst of {x['releases']} at once ({phase}): drain",
                                    f"{y['drain_s']:.0f} s ({y['releases_per_s']:.0f}/s)", ""))
                for k, v in sorted(y["peak_lag"].items()):
                    L.append(row.format(f"   peak consumer lag, {k}", f"{v} messages", ""))
                for k, v in sorted(y["rss_mib_peak"].items()):
                    L.append(row.format(f"   peak RSS, {k} (at the start)",
                                        f"{v:.1f} MiB ({y['rss_mib_start'].get(k, 0):.1f})", ""))
    if "render" in f:
        x = f["render"]
        L.append(row.format("4. render, renders/s on one core", _s(x["relfleet_renders_per_s"]),
                            "sed " + _s(x["sed_renders_per_s"]) + "; goal >= 20000"))
    if "apply" in f:
        x = f["apply"]
        L.append(row.format("5. apply, objects per worker CPU s / per s wall",
                            _s(x["relfleet_objects_per_cpu_s"]) + " / " +
                            _s(x["relfleet_wall_objects_per_s"]),
                            "kubectl " + _s(x["kubectl_objects_per_s"])))
    L.append("")
    L.append("commands:")
    if "render" in f:
        L.append(f"  4: {f['render']['command']}; {f['render']['template']}")
    if "apply" in f:
        L.append(f"  5: {f['apply']['kubectl_command']}  (one process per release, sequential)")
    if "tracking" in f and f["tracking"].get("kubectl"):
        L.append(f"  3: {f['tracking']['kubectl']['command']}  (all concurrent)")
    L.append(f"  whole run: {rep['seconds']} s" + (f"; ERROR: {rep['error']}" if rep.get("error") else ""))
    return "\n".join(L)


# -- 6. scale-out: workers per stage, each in a CPU-limited cgroup ----------------------
STAGES = ("render", "apply", "track")


def _stage_counters(ctx, stage):
    """Per live worker of a stage: (pid, addr, CPU s, poll batches, messages in them)."""
    out = []
    for _, n, pid, addr in ctx.stack.workers(stage):
        text = bl.metrics_text(addr)
        try:
            cpu = bl.proc_cpu_s(pid)
        except OSError:
            continue
        out.append((f"{stage}-{n}", pid, cpu,
                    bl.metric_total(text, "relfleet_poll_batch_messages_count"),
                    bl.metric_total(text, "relfleet_poll_batch_messages_sum")))
    return out


class AssignmentWatch:
    """Samples each worker's partitions (lag gauges) during a run: a change is a rebalance.
    The workers are listed once, before the run: `ops/stack status` is a process of its own
    (~0.1 s of CPU), and three of them every 0.5 s took a share of the two cores from the
    stack being measured (until the ninth session); a worker's death shows as its
    partitions moving to the others."""

    def __init__(self, stack, stages=STAGES, interval=0.5):
        import threading
        self.stack, self.stages, self.interval = stack, stages, interval
        self.addrs = {s: [addr for _, _, _, addr in stack.workers(s)] for s in stages}
        self.changes = {s: 0 for s in stages}
        self.last = {}
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.sample()
        self.t.start()

    def sample(self):
        for stage in self.stages:
            now = {addr: frozenset(self.stack.assigned(addr, stage))
                   for addr in self.addrs[stage]}
            if stage in self.last and now != self.last[stage]:
                self.changes[stage] += 1
            self.last[stage] = now

    def run(self):
        while not self.stop_ev.wait(self.interval):
            self.sample()

    def stop(self):
        self.stop_ev.set()
        self.t.join(10)
        return dict(self.changes)


def measured_run(ctx, services, version, cg=None):
    """One batch, with per stage: mean poll batch size, each worker's CPU over the run and
    (in cgroups) its share of the quota used and throttled periods; rebalances seen."""
    before = {s: _stage_counters(ctx, s) for s in STAGES}
    thr0 = {name: cg.throttled(name) for name in cg.groups} if cg else {}
    watch = AssignmentWatch(ctx.stack)
    t0 = time.time()
    try:
        b = batch(ctx, services, version, cpu=True, timeout=120 + len(services) / 5)
    finally:
        changes = watch.stop()
    wall = time.time() - t0
    stages = {}
    for s in STAGES:
        after = {w[0]: w for w in _stage_counters(ctx, s)}
        batches = msgs = 0.0
        per_worker = {}
        for name, pid, cpu, cnt, tot in before[s]:
            if name not in after:
                continue
            batches += after[name][3] - cnt
            msgs += after[name][4] - tot
            w = {"cpu_s": round(after[name][2] - cpu, 3)}
            if cg and name in cg.groups:
                p1, t1, ts1 = cg.throttled(name)
                p0, t0_, ts0 = thr0.get(name, (0, 0, 0))
                w["throttled_periods"] = t1 - t0_
                w["periods"] = p1 - p0
            per_worker[name] = w
        stages[s] = {"mean_poll_batch": round(msgs / batches, 1) if batches else None,
                     "rebalances_during_run": changes.get(s, 0), "workers": per_worker}
    return b, wall, stages


def _track_watches(stack):
    """{track-N: (Deployment watches open, opened so far)}: relfleet_track_watches,
    relfleet_track_watch_opens_total (one watch per shard a worker follows releases in)."""
    out = {}
    for _, n, _, addr in stack.workers("track"):
        text = bl.metrics_text(addr)
        out[f"track-{n}"] = (bl.metric_total(text, "relfleet_track_watches"),
                             bl.metric_total(text, "relfleet_track_watch_opens_total"))
    return out


def scaling(build_dir, quick, quota, counts):
    """Figure 6: throughput with n workers per stage, each worker in a cgroup of its own
    limited to `quota` of a core, on a stack of its own with 16 partitions per topic."""
    if not bl.Cgroups.available():
        return {"error": "cgroup v1 cpu controller not writable (/sys/fs/cgroup/cpu)"}
    per_worker = 40 if quick else 150
    stack = bl.Stack(build_dir, partitions=16)
    cg = None
    out = {"quota_cores_per_worker": quota, "partitions": 16, "runs": [],
           "setup": "each render, apply and track worker in a cgroup v1 of its own "
                    f"(cpu.cfs_quota_us = {quota:g} core, period 100 ms); servers (PostgreSQL, "
                    "Redis, dev broker, kubesim) and notify unlimited; "
                    f"{per_worker} x n distinct releases per run after a warm-up"}
    try:
        stack.up()
        ctx = bl.Context(stack)
        services = ctx.services("sc", per_worker * max(counts))
        say(f"scaling: warm-up of {len(services)} services, workers unlimited")
        batch(ctx, services, "now-scwarm", timeout=300 + len(services) / 10)
        cg = bl.Cgroups()
        for s in STAGES:
            for _, n, pid, _ in stack.workers(s):
                cg.add(f"{s}-{n}", pid, quota)
        for n in counts:
            for s in STAGES:
                while len(stack.workers(s)) < n:
                    _, k, pid = stack.run("worker", "start", s).stdout.split()
                    cg.add(f"{s}-{k}", int(pid), quota)
            say(f"scaling: {n} worker(s) per stage, waiting for the rebalance")
            stack.wait_balanced(timeout=180)
            batch(ctx, services[:20 * n], f"now-scw{n}", timeout=300)
            size = per_worker * n
            say(f"scaling: {n} worker(s) per stage, {size} releases")
            watches0 = _track_watches(stack)
            b, wall, stages = measured_run(ctx, services[:size], f"now-sc{n}", cg)
            watches1 = _track_watches(stack)
            run = {"workers_per_stage": n, "releases": size, "releases_per_s": round(b["rate"], 1),
                   "stages": stages, "cpu_ms_per_release": b["cpu_ms"],
                   "stage_latency": stage_breakdown(b["sent"], b["points"], b["results"])}
            # CPU per release of each stage (its workers summed) and of the shared servers;
            # the Deployment watches each track worker opened during the run (one per shard
            # it followed releases in: workers/track/track.c).
            run["stage_cpu_ms_per_release"] = {
                k: round(sum(v for w, v in b["cpu_ms"].items()
                             if w == k or w.startswith(k + "-")), 3)
                for k in STAGES + ("notify", "devbroker", "kubesim", "redis")}
            run["stage_cpu_ms_per_release"]["postgres"] = round(
                sum(v for w, v in b["cpu_ms"].items() if w.startswith("postgres")), 3)
            run["track_watches"] = {w: {"open_at_end": v[0],
                                        "opened_during_run": v[1] - watches0.get(w, (0, 0))[1]}
                                    for w, v in watches1.items()}
            for s in STAGES:
                ws = stages[s]["workers"].values()
                run.setdefault("quota_used", {})[s] = round(
                    sum(w["cpu_s"] for w in ws) / (len(ws) * quota * b["span_s"]), 2) if ws else None
            out["runs"].append(run)
            say(f"  {b['rate']:.0f} releases/s; quota used " +
                ", ".join(f"{s} {run['quota_used'][s]}" for s in STAGES) + "; CPU ms/release " +
                ", ".join(f"{k} {v}" for k, v in run["stage_cpu_ms_per_release"].items()) +
                "; track watches open (opened during the run) " +
                ", ".join(f"{k} {v['open_at_end']:g} ({v['opened_during_run']:g})"
                          for k, v in sorted(run["track_watches"].items())))
        t1 = out["runs"][0]["releases_per_s"]
        for r in out["runs"]:
            r["efficiency"] = round(r["releases_per_s"] / (r["workers_per_stage"] * t1), 2)
    finally:
        if cg:
            cg.cleanup()
        stack.down()
    return out


def scaling_plot(fig, path):
    """A PNG of figure 6: releases/s against workers per stage, ideal line, efficiency."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = fig["runs"]
    n = [r["workers_per_stage"] for r in runs]
    t = [r["releases_per_s"] for r in runs]
    eff = [r.get("efficiency", 0) for r in runs]
    f, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    ax.plot(n, t, "o-", label="measured")
    ax.plot(n, [k * t[0] for k in n], "--", color="gray", label="n x throughput(1)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(n)
    ax.set_xticklabels([str(k) for k in n])
    ax.set_xlabel(f"workers per stage (each limited to {fig['quota_cores_per_worker']:g} core)")
    ax.set_ylabel("releases/s end to end")
    for k, v, e in zip(n, t, eff):
        ax.annotate(f"{v:.0f}/s\neff {e:.2f}", (k, v), textcoords="offset points",
                    xytext=(6, -22), fontsize=8)
    ax.set_title("Relfleet scale-out on one 2-core machine (ops/bench --only 6)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    f.tight_layout()
    f.savefig(path)
    plt.close(f)


# -- 7. a burst: the fleet redeployed at once --------------------------------------------
class BurstSampler:
    """Every interval: consumer lag per stage (the workers' lag gauges, summed) and each
    worker's RSS; keeps the peaks. The workers are listed once (AssignmentWatch says why)."""

    def __init__(self, stack, interval=0.5):
        import threading
        self.stack, self.interval = stack, interval
        self.workers = stack.workers()
        self.lag_peak = {}
        self.rss_peak = {}
        self.rss_first = {}
        self.samples = 0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop_ev.is_set():
            for st, n, pid, addr in self.workers:
                name = f"{st}-{n}"
                lag = bl.metric_total(bl.metrics_text(addr), "relfleet_kafka_consumer_lag")
                self.lag_peak[st] = max(self.lag_peak.get(st, 0), lag)
                try:
                    rss = bl.proc_rss_kib(pid)
                except (OSError, StopIteration):
                    continue
                self.rss_first.setdefault(name, rss)
                self.rss_peak[name] = max(self.rss_peak.get(name, 0), rss)
            self.samples += 1
            self.stop_ev.wait(self.interval)

    def stop(self):
        self.stop_ev.set()
        self.t.join(10)


def burst(ctx, n):
    """Figure 7: n release requests for distinct services published at once, twice: the
    fleet created (first release of each service) and then redeployed (a base-image fix)."""
    services = ctx.services("bu", n)
    out = {"releases": n}
    for phase, version in (("create", "now-bu1"), ("redeploy", "now-bu2")):
        say(f"burst: {n} releases published at once ({phase})")
        sampler = BurstSampler(ctx.stack)
        try:
            b = batch(ctx, services, version, cpu=True, timeout=300 + n / 5)
        finally:
            sampler.stop()
        vmhwm = {}
        for st, k, pid, _ in ctx.stack.workers():
            try:
                vmhwm[f"{st}-{k}"] = round(bl.proc_rss_kib(pid, "VmHWM") / 1024, 1)
            except (OSError, StopIteration):
                pass
        out[phase] = {
            "drain_s": round(b["span_s"], 1), "releases_per_s": round(b["rate"], 1),
            "peak_lag": {k: int(v) for k, v in sampler.lag_peak.items()},
            "rss_mib_start": {k: round(v / 1024, 1) for k, v in sampler.rss_first.items()},
            "rss_mib_peak": {k: round(v / 1024, 1) for k, v in sampler.rss_peak.items()},
            "vmhwm_mib": vmhwm, "cpu_ms_per_release": b["cpu_ms"],
            "stage_latency": stage_breakdown(b["sent"], b["points"], b["results"])}
        say(f"  drained in {b['span_s']:.1f}s ({b['rate']:.0f}/s); peak lag " +
            ", ".join(f"{k} {int(v)}" for k, v in sampler.lag_peak.items()))
    return out


# -- wave (issue 17): a wave of n services at max_parallel -------------------------------
def wave(ctx, n, max_parallel):
    """A wave of n services with --max-parallel max_parallel (ops/bench --wave N): its time
    from creation to its end, releases per second, and the most of its releases that ran at
    once (from the records' started_at/finished_at), beside figure 1's pipeline throughput."""
    import json

    ctx.services("wv", n)
    ctx.psql("UPDATE services SET group_name = 'benchwave' WHERE env = '%s' AND service LIKE"
             " 'wv%%'" % bl.ENV)
    say(f"wave: {n} services, --max-parallel {max_parallel}")
    t0 = time.time()
    out = json.loads(ctx.relctl("wave", "create", "--select", "group=benchwave", "--version",
                                "now-wv1", "--env", bl.ENV, "--max-parallel", str(max_parallel),
                                "--max-failures", "100%", "--output", "json"))
    wid = out["id"]
    bl.wait_for(lambda: ctx.psql("SELECT finished_at IS NOT NULL FROM waves WHERE id = '%s'"
                                 % wid)[0][0] == "t", 600 + n / 5, f"wave of {n} to end", 0.5)
    wall = time.time() - t0
    row = ctx.psql(
        "SELECT w.status, w.failed, extract(epoch FROM max(r.finished_at) - min(r.started_at)),"
        " (SELECT max(c) FROM (SELECT sum(d) OVER (ORDER BY t, d) AS c FROM ("
        "  SELECT started_at AS t, 1 AS d FROM releases WHERE wave_id = w.id"
        "  UNION ALL SELECT finished_at, -1 FROM releases WHERE wave_id = w.id) e) m)"
        " FROM waves w JOIN releases r ON r.wave_id = w.id WHERE w.id = '%s' GROUP BY w.id"
        % wid)[0]
    span = float(row[2])
    fig = {"services": n, "max_parallel": max_parallel, "status": row[0],
           "failed": int(row[1]), "wall_s": round(wall, 1), "span_s": round(span, 1),
           "releases_per_s": round(n / span, 1), "max_running": int(row[3])}
    say(f"  {row[0]} in {wall:.1f}s ({n / span:.0f} releases/s), at most {row[3]} at once")
    return fig
