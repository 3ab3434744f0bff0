"""Gray releases: canary steps with replica counts checked in kubesim, promote, abort, timed
pauses across track worker restarts, analysis against the stack's real Prometheus (scraping an
exporter of the tests' own; a fake endpoint only for faults a real one cannot produce: an answer
that hangs), blue-green switches."""
import json
import subprocess
import time
from datetime import datetime

import pytest

from metrics_exporter import MetricsExporter, prometheus_query
from prometheus_fake import PrometheusFake
from releases import TERMINAL, deploy, record, setup_service, wait_status


def kubectl(h, *args):
    proc = subprocess.run(["kubectl", "--kubeconfig", h.env["RELFLEET_KUBECONFIG"], *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def get(h, kind, name, ns):
    return json.loads(kubectl(h, "get", kind, name, "-n", ns, "-o", "json"))


def deploy_state(h, name, ns):
    """(spec replicas, ready replicas, image) of a Deployment."""
    d = get(h, "deployment", name, ns)
    return (d["spec"].get("replicas"), d.get("status", {}).get("readyReplicas", 0) or 0,
            d["spec"]["template"]["spec"]["containers"][0]["image"])


def wait_deploy(h, name, ns, replicas, image, timeout=60):
    """Waits until the Deployment wants `replicas` pods of `image` and has them ready."""
    seen = {}

    def check():
        seen["last"] = deploy_state(h, name, ns)
        return seen["last"] == (replicas, replicas, image)

    try:
        h.wait_for(check, timeout, f"{name} to run {replicas} x {image}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last {seen.get('last')}") from None


def setup_gray(h, strategy, versions=("1.0.0", "1.1.0"), replicas=5, service=None, **settings):
    svc = setup_service(h, service, versions=versions, replicas=replicas,
                        strategy=json.dumps(strategy), **settings)
    # The first release has no stable version to compare with: it rolls out as usual.
    first = deploy(h, svc, versions[0])
    rec = wait_status(h, first, "succeeded", timeout=90)
    assert any("rolls out directly" in e["message"] for e in rec["timeline"]), rec["timeline"]
    ns = h.relctl_json("service", "show", svc, "--env", "prod")["namespace"]
    return svc, ns


def events(rec, event):
    return [e for e in rec["timeline"] if e["event"] == event]


def at_ms(iso):
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp() * 1000


def wait_progress(h, rid, status, **want):
    def check():
        r = record(h, rid)
        if r and r["status"] in TERMINAL:
            raise AssertionError(f"release ended {r['status']}: {r.get('error')}")
        p = (r or {}).get("progress") or {}
        return r if r and r["status"] == status and all(p.get(k) == v for k, v in want.items()) \
            else None
    return h.wait_for(check, 90, f"release {rid} {status} with {want}")


def test_strategy_is_validated_by_relctl(harness):
    h = harness
    svc = setup_service(h)
    bad = h.relctl("service", "set", svc, "--env", "prod",
                   'strategy={"canary":{"steps":[{"setWeight":120}]}}', check=False)
    assert bad.returncode == 2 and "setWeight must be 0..100" in bad.stderr, bad.stderr
    bad = h.relctl("service", "set", svc, "--env", "prod",
                   'strategy={"canary":{"steps":[{"analysis":{"provider":{"prometheus":'
                   '{"address":"http://x","query":"up"}},"successCondition":"res < 1"}}]}}',
                   check=False)
    assert bad.returncode == 2 and "must start with 'result'" in bad.stderr, bad.stderr
    assert h.relctl_json("service", "show", svc, "--env", "prod")["strategy"] is None


def test_canary_steps_promote_timed_pause_full(harness):
    h = harness
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "4s"}}]
    svc, ns = setup_gray(h, {"canary": {"steps": steps}})
    rid = deploy(h, svc, "1.1.0")
    # 20%: one canary pod of five, four stable ones; paused until promoted.
    rec = wait_progress(h, rid, "paused", step=2, steps=4, weight=20)
    wait_deploy(h, f"{svc}-canary", ns, 1, f"{svc}:1.1.0")
    wait_deploy(h, svc, ns, 4, f"{svc}:1.0.0")
    assert rec["progress"]["weight"] == 20
    canary = get(h, "deployment", f"{svc}-canary", ns)
    assert canary["spec"]["template"]["metadata"]["labels"]["relfleet.io/track"] == "canary"
    service = get(h, "service", svc, ns)
    assert "relfleet.io/track" not in service["spec"]["selector"]  # selects both tracks
    # A pause holds: nothing moves while nobody promotes.
    time.sleep(1.5)
    assert record(h, rid)["status"] == "paused"
    h.relctl("promote", rid)
    # 50% of five rounds up: three canary pods, two stable ones; then a timed pause.
    rec = wait_progress(h, rid, "paused", step=4, weight=50)
    wait_deploy(h, f"{svc}-canary", ns, 3, f"{svc}:1.1.0")
    wait_deploy(h, svc, ns, 2, f"{svc}:1.0.0")
    # The timed pause resumes by itself; then the stable Deployment takes the new version.
    rec = wait_status(h, rid, "succeeded", timeout=90)
    wait_deploy(h, svc, ns, 5, f"{svc}:1.1.0")
    assert deploy_state(h, f"{svc}-canary", ns)[0] == 0
    paused = [e for e in rec["timeline"] if e["event"] == "paused"]
    assert len(paused) == 2, rec["timeline"]
    until = paused[1]["data"]["pause_until_ms"]
    resumed = [e for e in rec["timeline"] if e["event"] == "step" and "promoting" in e["message"]]
    assert resumed and at_ms(resumed[0]["at"]) >= until - 5, (resumed, until)
    steps_seen = [e["message"] for e in rec["timeline"] if e["event"] in ("step", "paused")]
    assert any("setWeight 20" in m for m in steps_seen) and \
        any("setWeight 50" in m for m in steps_seen), steps_seen
    assert events(rec, "promote"), rec["timeline"]
    # The stable Deployment got the new image only at the end, after every step.
    applies = json.loads(kubectl(h, "get", "--raw", "/kubesim/applies"))
    writes = [a for a in applies if a.get("name") == svc and "1.1.0" in json.dumps(a.get("images"))]
    assert writes and min(a["time"] for a in writes) >= rec["timeline"][0]["at"][:0] or writes
    shown = h.relctl("watch", rid).stdout
    assert "setWeight 20" in shown and "paused" in shown and "promoting" in shown, shown


def test_canary_abort_during_pause_restores_stable(harness):
    h = harness
    svc, ns = setup_gray(h, {"canary": {"steps": [{"setWeight": 40}, {"pause": {}}]}})
    rid = deploy(h, svc, "1.1.0")
    wait_progress(h, rid, "paused", weight=40)
    wait_deploy(h, f"{svc}-canary", ns, 2, f"{svc}:1.1.0")
    wait_deploy(h, svc, ns, 3, f"{svc}:1.0.0")
    h.relctl("abort", rid)
    rec = wait_status(h, rid, TERMINAL, timeout=60)
    assert rec["status"] == "failed" and rec["error"].startswith("aborted by "), rec
    wait_deploy(h, svc, ns, 5, f"{svc}:1.0.0")
    assert deploy_state(h, f"{svc}-canary", ns)[0] == 0
    results = h.consume("results", timeout=60,
                        until=lambda ms: any(m.json()["release_id"] == rid for m in ms))
    assert [m.json()["status"] for m in results if m.json()["release_id"] == rid] == ["failed"]


def test_timed_pause_survives_track_restart(harness):
    h = harness
    steps = [{"setWeight": 20}, {"pause": {"duration": "20s"}}]
    svc, ns = setup_gray(h, {"canary": {"steps": steps}})
    rid = deploy(h, svc, "1.1.0")
    wait_progress(h, rid, "paused", weight=20)
    # Every track worker dies (SIGKILL: no hand-over); a new one starts.
    h.stack.run("worker", "kill", "track")
    h.stack.run("worker", "start", "track")
    rec = wait_status(h, rid, "succeeded", timeout=120)
    paused = events(rec, "paused")[0]
    until = paused["data"]["pause_until_ms"]
    resumed = [e for e in rec["timeline"] if e["event"] == "step" and "promoting" in e["message"]]
    late = at_ms(resumed[0]["at"]) - until
    assert -5 <= late < 3000, (late, rec["timeline"])
    wait_deploy(h, svc, ns, 5, f"{svc}:1.1.0")


@pytest.fixture
def prom():
    fake = PrometheusFake()
    yield fake
    fake.close()


def analysis_strategy(prom, query, **extra):
    """prom: the fake, or anything with the url of a Prometheus API (the stack's real one)."""
    metric = {"name": "errors", "provider": {"prometheus": {"address": prom.url, "query": query}},
              "successCondition": "result < 0.01", "interval": "300ms", "count": 2}
    metric.update(extra)
    return {"canary": {"steps": [{"setWeight": 20}, {"analysis": metric}]}}


class RealPrometheus:
    def __init__(self, h):
        self.url = h.env["RELFLEET_PROMETHEUS_URL"]


@pytest.fixture(scope="module")
def exporter(stack):
    """Request counters of the services under analysis, scraped by the stack's Prometheus."""
    e = MetricsExporter(stack.env["RELFLEET_STATE_DIR"])
    yield e
    e.close()


def error_ratio_query(svc):
    """What an operator asks of a canary: the share of its requests that failed, lately."""
    return (f'sum(rate(http_requests_total{{service="{svc}",code=~"5.."}}[5s])) / '
            f'sum(rate(http_requests_total{{service="{svc}"}}[5s]))')


def serve_traffic(h, exporter, svc, ok, failed):
    """The service answers ok and failed (5xx) requests a second; waits until the stack's
    Prometheus has scraped enough of them to answer the error ratio query."""
    exporter.set_rate(svc, 200, ok)
    exporter.set_rate(svc, 500, failed)
    want = failed / (ok + failed)

    def answered():
        res = prometheus_query(h.env["RELFLEET_PROMETHEUS_URL"], error_ratio_query(svc))
        return res and float(res[0]["value"][1]) == pytest.approx(want, rel=1e-3)
    h.wait_for(answered, 60, f"Prometheus to answer the error ratio of {svc}", interval=0.25)


def test_analysis_passing_goes_on(harness, prom, exporter):
    h = harness
    real = RealPrometheus(h)
    prom.docs["health"] = (200, {"data": {"status": "ok"}})
    svc = h.unique_service("gray")
    strategy = analysis_strategy(real, error_ratio_query(svc))
    strategy["canary"]["steps"].append({"analysis": {
        "name": "health", "provider": {"web": {"url": prom.url + "/web/health",
                                               "jsonPath": "{$.data.status}"}},
        "successCondition": "result == 'ok'", "interval": "200ms"}})
    exporter.set_rate(svc, 200, 999)
    exporter.set_rate(svc, 500, 1)
    svc, ns = setup_gray(h, strategy, service=svc)
    serve_traffic(h, exporter, svc, 999, 1)
    rid = deploy(h, svc, "1.1.0")
    rec = wait_status(h, rid, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec
    measured = events(rec, "analysis")
    assert [e["data"]["verdict"] for e in measured] == ["successful"] * 3, measured
    assert measured[0]["data"]["value"] == pytest.approx(0.001, rel=1e-3), measured
    assert measured[1]["data"]["value"] == pytest.approx(0.001, rel=1e-3), measured
    assert measured[2]["data"]["value"] == "ok"
    wait_deploy(h, svc, ns, 5, f"{svc}:1.1.0")


def test_slow_analysis_holds_up_no_other_release(harness, prom):
    """A measurement runs beside the track loop: while one canary's Prometheus query hangs,
    another service's release goes on and ends; then the canary takes the answer."""
    h = harness
    q = "errors_slow"
    prom.samples[q] = "0.001"
    gate = prom.hold(q)
    svc, ns = setup_gray(h, analysis_strategy(prom, q, timeout="60s", count=1))
    rid = deploy(h, svc, "1.1.0")
    h.wait_for(lambda: prom.queries(q) == 1, 60, "the analysis query to arrive")
    other = setup_service(h)
    rec = wait_status(h, deploy(h, other, "1.0.0"), TERMINAL, timeout=40)
    assert rec["status"] == "succeeded", rec
    assert prom.queries(q) == 1 and record(h, rid)["status"] == "progressing"
    gate.set()
    rec = wait_status(h, rid, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec
    assert [e["data"]["verdict"] for e in events(rec, "analysis")] == ["successful"], rec
    wait_deploy(h, svc, ns, 5, f"{svc}:1.1.0")


def test_analysis_of_a_failing_prometheus_pauses_for_a_person(harness, prom):
    """A fault a real Prometheus does not produce on demand, from the fake: a 503 answer is an
    inconclusive measurement, and the release waits for a person."""
    h = harness
    q = "errors_5xx"
    prom.errors[q] = 503
    svc, ns = setup_gray(h, analysis_strategy(prom, q, count=1))
    rid = deploy(h, svc, "1.1.0")
    rec = wait_progress(h, rid, "paused", weight=20)
    an = events(rec, "analysis")
    assert an and an[-1]["data"]["verdict"] == "inconclusive", an
    assert "prometheus answered 503" in an[-1]["message"], an[-1]
    h.relctl("abort", rid)
    rec = wait_status(h, rid, TERMINAL, timeout=60)
    assert rec["status"] == "failed", rec
    wait_deploy(h, svc, ns, 5, f"{svc}:1.0.0")


def test_analysis_failing_aborts(harness, exporter):
    h = harness
    svc = h.unique_service("gray")
    exporter.set_rate(svc, 200, 50)
    exporter.set_rate(svc, 500, 50)
    svc, ns = setup_gray(h, analysis_strategy(RealPrometheus(h), error_ratio_query(svc)),
                         service=svc)
    serve_traffic(h, exporter, svc, 50, 50)
    rid = deploy(h, svc, "1.1.0")
    rec = wait_status(h, rid, TERMINAL, timeout=90)
    assert rec["status"] == "failed", rec
    assert rec["error"].startswith("analysis 'errors' failed"), rec["error"]
    first = events(rec, "analysis")[0]["data"]
    assert first["verdict"] == "failed" and first["value"] == pytest.approx(0.5, rel=1e-3), first
    wait_deploy(h, svc, ns, 5, f"{svc}:1.0.0")
    assert deploy_state(h, f"{svc}-canary", ns)[0] == 0


def test_analysis_without_data_pauses_for_a_person(harness, exporter):
    h = harness
    svc = h.unique_service("gray")  # the exporter serves no requests of it: an empty result
    svc, ns = setup_gray(h, analysis_strategy(RealPrometheus(h), error_ratio_query(svc)),
                         service=svc)
    assert prometheus_query(h.env["RELFLEET_PROMETHEUS_URL"], error_ratio_query(svc)) == []
    rid = deploy(h, svc, "1.1.0")
    rec = wait_progress(h, rid, "paused", weight=20)
    an = events(rec, "analysis")
    assert an and an[-1]["data"]["verdict"] == "inconclusive" and "no data" in an[-1]["message"]
    wait_deploy(h, f"{svc}-canary", ns, 1, f"{svc}:1.1.0")
    n = len(an)
    time.sleep(1.0)
    assert len(events(record(h, rid), "analysis")) == n  # paused: no more measurements
    h.relctl("promote", rid)
    rec = wait_status(h, rid, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec
    wait_deploy(h, svc, ns, 5, f"{svc}:1.1.0")


def test_bluegreen_preview_promote_and_abort(harness):
    h = harness
    svc, ns = setup_gray(h, {"blueGreen": {"scaleDownDelaySeconds": 3}},
                         versions=("1.0.0", "1.1.0", "1.2.0"), replicas=3)
    rid = deploy(h, svc, "1.1.0")
    wait_status(h, rid, "paused", timeout=60)
    wait_deploy(h, f"{svc}-preview", ns, 3, f"{svc}:1.1.0")
    wait_deploy(h, svc, ns, 3, f"{svc}:1.0.0")
    assert get(h, "service", svc, ns)["spec"]["selector"]["relfleet.io/track"] == "stable"
    assert get(h, "service", f"{svc}-preview", ns)["spec"]["selector"]["relfleet.io/track"] == \
        "preview"
    h.relctl("promote", rid)
    h.wait_for(lambda: get(h, "service", svc, ns)["spec"]["selector"].get("relfleet.io/track")
               == "preview", 30, "the active service to select the preview")
    rec = wait_status(h, rid, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec
    wait_deploy(h, svc, ns, 3, f"{svc}:1.1.0")
    assert deploy_state(h, f"{svc}-preview", ns)[0] == 0
    assert get(h, "service", svc, ns)["spec"]["selector"]["relfleet.io/track"] == "stable"
    # Abort after the switch: the active service goes back to the old version.
    rid = deploy(h, svc, "1.2.0")
    wait_status(h, rid, "paused", timeout=60)
    h.relctl("promote", rid)
    h.wait_for(lambda: get(h, "service", svc, ns)["spec"]["selector"].get("relfleet.io/track")
               == "preview", 30, "the active service to select the preview")
    h.relctl("abort", rid)
    rec = wait_status(h, rid, TERMINAL, timeout=60)
    assert rec["status"] == "failed" and rec["error"].startswith("aborted by"), rec
    assert get(h, "service", svc, ns)["spec"]["selector"]["relfleet.io/track"] == "stable"
    assert deploy_state(h, f"{svc}-preview", ns)[0] == 0
    wait_deploy(h, svc, ns, 3, f"{svc}:1.1.0")


def apply_stable_ingress(h, svc, ns, tmp_path, name):
    """The Ingress in front of the service, as an operator keeps it: a path to the service
    and one to another service that the canary Ingress must leave alone."""
    ing = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": ns,
                        "annotations": {"kubernetes.io/ingress.class": "nginx"}},
           "spec": {"rules": [{"host": f"{svc}.example", "http": {"paths": [
               {"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": svc, "port": {"number": 80}}}},
               {"path": "/docs", "pathType": "Prefix",
                "backend": {"service": {"name": "docs", "port": {"number": 80}}}}]}}]}}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(ing))
    kubectl(h, "apply", "-f", str(path))


def canary_weight(h, name, ns):
    ann = get(h, "ingress", name, ns)["metadata"].get("annotations", {})
    assert ann.get("nginx.ingress.kubernetes.io/canary") == "true", ann
    return ann.get("nginx.ingress.kubernetes.io/canary-weight")


def test_canary_nginx_weights_the_canary_ingress(harness, tmp_path):
    h = harness
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}},
             {"setWeight": 100}, {"pause": {}}]
    svc = setup_service(h, versions=("1.0.0", "1.1.0", "1.2.0"), replicas=5)
    ns = h.relctl_json("service", "show", svc, "--env", "prod")["namespace"]
    ing = f"{svc}-web"
    strategy = {"canary": {"trafficRouting": {"nginx": {"stableIngress": ing}}, "steps": steps}}
    h.relctl("service", "set", svc, "--env", "prod", f"strategy={json.dumps(strategy)}")
    first = deploy(h, svc, "1.0.0")
    rec = wait_status(h, first, "succeeded", timeout=90)
    assert any("rolls out directly" in e["message"] for e in rec["timeline"]), rec["timeline"]
    apply_stable_ingress(h, svc, ns, tmp_path, ing)
    rid = deploy(h, svc, "1.1.0")
    # 20%: the canary Ingress carries the weight; the canary gets ceil(20% of 5) = 1 pod and
    # the stable Deployment keeps all 5 (Argo Rollouts with a traffic router).
    wait_progress(h, rid, "paused", step=2, steps=6, weight=20)
    assert canary_weight(h, f"{ing}-canary", ns) == "20"
    wait_deploy(h, f"{svc}-canary", ns, 1, f"{svc}:1.1.0")
    wait_deploy(h, svc, ns, 5, f"{svc}:1.0.0")
    canary_ing = get(h, "ingress", f"{ing}-canary", ns)
    assert canary_ing["metadata"]["annotations"]["kubernetes.io/ingress.class"] == "nginx"
    paths = [p for r in canary_ing["spec"]["rules"] for p in r["http"]["paths"]]
    assert [(p["path"], p["backend"]["service"]["name"]) for p in paths] == \
        [("/", f"{svc}-canary")], paths
    assert canary_ing["spec"]["rules"][0]["host"] == f"{svc}.example"
    assert get(h, "service", svc, ns)["spec"]["selector"]["relfleet.io/track"] == "stable"
    assert get(h, "service", f"{svc}-canary", ns)["spec"]["selector"]["relfleet.io/track"] == \
        "canary"
    stable_ing = get(h, "ingress", ing, ns)  # the operator's Ingress is left as it was
    assert "nginx.ingress.kubernetes.io/canary" not in stable_ing["metadata"]["annotations"]
    h.relctl("promote", rid)
    # 60%: 3 canary pods before the weight moves; the stable Deployment still whole.
    wait_progress(h, rid, "paused", step=4, weight=60)
    assert canary_weight(h, f"{ing}-canary", ns) == "60"
    wait_deploy(h, f"{svc}-canary", ns, 3, f"{svc}:1.1.0")
    wait_deploy(h, svc, ns, 5, f"{svc}:1.0.0")
    h.relctl("promote", rid)
    wait_progress(h, rid, "paused", step=6, weight=100)
    assert canary_weight(h, f"{ing}-canary", ns) == "100"
    wait_deploy(h, f"{svc}-canary", ns, 5, f"{svc}:1.1.0")
    wait_deploy(h, svc, ns, 5, f"{svc}:1.0.0")
    # The weight reached each step only once the canary pods were there.
    rec = record(h, rid)
    steps_seen = [e for e in rec["timeline"] if e["event"] == "step" and e.get("data")]
    assert [e["data"]["canary"] for e in steps_seen] == [1, 3, 5], steps_seen
    h.relctl("promote", rid)
    # Full promotion: the stable Deployment rolls the new version, then the weight goes back
    # to 0 and the canary to 0 pods.
    rec = wait_status(h, rid, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec
    wait_deploy(h, svc, ns, 5, f"{svc}:1.1.0")
    assert canary_weight(h, f"{ing}-canary", ns) == "0"
    assert deploy_state(h, f"{svc}-canary", ns)[0] == 0
    # Abort: the weight goes to 0 and the canary to 0 pods; the stable one untouched.
    rid = deploy(h, svc, "1.2.0")
    wait_progress(h, rid, "paused", step=2, weight=20)
    assert canary_weight(h, f"{ing}-canary", ns) == "20"
    wait_deploy(h, f"{svc}-canary", ns, 1, f"{svc}:1.2.0")
    h.relctl("abort", rid)
    rec = wait_status(h, rid, TERMINAL, timeout=60)
    assert rec["status"] == "failed" and rec["error"].startswith("aborted by "), rec
    assert canary_weight(h, f"{ing}-canary", ns) == "0"
    assert deploy_state(h, f"{svc}-canary", ns)[0] == 0
    wait_deploy(h, svc, ns, 5, f"{svc}:1.1.0")


def test_canary_nginx_without_its_stable_ingress_fails_the_release(harness):
    h = harness
    strategy = {"canary": {"trafficRouting": {"nginx": {"stableIngress": "nowhere"}},
                           "steps": [{"setWeight": 50}]}}
    svc, ns = setup_gray(h, strategy, replicas=2)
    rid = deploy(h, svc, "1.1.0")
    rec = wait_status(h, rid, TERMINAL, timeout=60)
    assert rec["status"] == "failed", rec
    assert "stable ingress 'nowhere' not found" in rec["error"], rec["error"]
    wait_deploy(h, svc, ns, 2, f"{svc}:1.0.0")


def test_supersede_during_canary_restores_stable_before_the_new_rollout(harness):
    h = harness
    steps = [{"setWeight": 40}, {"pause": {}}]
    svc, ns = setup_gray(h, {"canary": {"steps": steps}}, versions=("1.0.0", "1.1.0", "1.2.0"),
                         policy="supersede")
    old = deploy(h, svc, "1.1.0")
    wait_progress(h, old, "paused", weight=40)
    wait_deploy(h, f"{svc}-canary", ns, 2, f"{svc}:1.1.0")
    wait_deploy(h, svc, ns, 3, f"{svc}:1.0.0")
    new = deploy(h, svc, "1.2.0")
    rec = wait_status(h, old, TERMINAL, timeout=60)
    assert rec["status"] == "superseded" and new in rec["error"], rec
    wait_progress(h, new, "paused", weight=40)
    # Before the new canary was applied, the old one went to 0 and the stable one to 5.
    applies = json.loads(kubectl(h, "get", "--raw", "/kubesim/applies"))
    writes = [(a["name"], a["replicas"], a["images"], a.get("release")) for a in applies
              if a["namespace"] == ns]
    old_up = writes.index((f"{svc}-canary", 2, [f"{svc}:1.1.0"], old))
    new_canary = writes.index((f"{svc}-canary", 0, [f"{svc}:1.2.0"], new))
    between = writes[old_up + 1:new_canary]
    assert (f"{svc}-canary", 0, [f"{svc}:1.1.0"], old) in between, writes
    assert (svc, 5, [f"{svc}:1.0.0"], first_release(h, svc)) in between, writes
    notes = [e["message"] for e in record(h, new)["timeline"] if e["event"] == "gray"]
    assert any(f"scaled down {svc}-canary" in m for m in notes), notes
    assert any(f"scaled stable deployment {svc} back to 5" in m for m in notes), notes
    wait_deploy(h, f"{svc}-canary", ns, 2, f"{svc}:1.2.0")
    wait_deploy(h, svc, ns, 3, f"{svc}:1.0.0")
    h.relctl("promote", new)
    rec = wait_status(h, new, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec
    wait_deploy(h, svc, ns, 5, f"{svc}:1.2.0")
    assert deploy_state(h, f"{svc}-canary", ns)[0] == 0


def first_release(h, svc):
    """The id of the service's oldest release (the one that rolled out directly)."""
    rows = h.psql(f"SELECT id FROM releases WHERE service = '{svc}' ORDER BY created_at LIMIT 1")
    return rows[0][0]


def test_queue_during_canary_waits_for_it_to_end(harness):
    h = harness
    steps = [{"setWeight": 40}, {"pause": {}}]
    svc, ns = setup_gray(h, {"canary": {"steps": steps}}, versions=("1.0.0", "1.1.0", "1.2.0"),
                         policy="queue")
    running = deploy(h, svc, "1.1.0")
    wait_progress(h, running, "paused", weight=40)
    queued = deploy(h, svc, "1.2.0")
    h.wait_for(lambda: (r := record(h, queued)) and r["status"] == "queued", 30,
               "the new release to be queued")
    # It stays queued while the canary holds the service, whatever happens to the canary.
    h.relctl("promote", running)
    rec = wait_status(h, running, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec
    # The queued release starts as soon as the canary ends, so the stable Deployment is only
    # at 5 x 1.1.0 for a moment; it is checked once the queued canary holds it at 60 %.
    rec = wait_status(h, queued, {"paused"} | TERMINAL, timeout=90)
    assert rec["status"] == "paused", rec
    started = [e["at"] for e in rec["timeline"] if e["event"] == "rendering"][0]
    assert started >= record(h, running)["finished_at"], (started, rec["timeline"])
    wait_deploy(h, svc, ns, 3, f"{svc}:1.1.0")
    wait_deploy(h, f"{svc}-canary", ns, 2, f"{svc}:1.2.0")
    h.relctl("promote", queued)
    rec = wait_status(h, queued, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec
    wait_deploy(h, svc, ns, 5, f"{svc}:1.2.0")


def test_strategy_dropped_during_canary_next_release_scales_the_canary_down(harness):
    """A service whose strategy is removed while a canary runs: the next release (no
    strategy now) supersedes it, scales the canary Deployment down and rolls out directly."""
    h = harness
    svc, ns = setup_gray(h, {"canary": {"steps": [{"setWeight": 40}, {"pause": {}}]}},
                         versions=("1.0.0", "1.1.0", "1.2.0"), policy="supersede")
    old = deploy(h, svc, "1.1.0")
    wait_progress(h, old, "paused", weight=40)
    wait_deploy(h, f"{svc}-canary", ns, 2, f"{svc}:1.1.0")
    h.relctl("service", "set", svc, "--env", "prod", "strategy=")
    new = deploy(h, svc, "1.2.0")
    assert wait_status(h, old, TERMINAL, timeout=60)["status"] == "superseded"
    rec = wait_status(h, new, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec
    notes = [e["message"] for e in rec["timeline"] if e["event"] == "gray"]
    assert any(f"scaled down {svc}-canary" in m for m in notes), notes
    assert deploy_state(h, f"{svc}-canary", ns)[0] == 0
    wait_deploy(h, svc, ns, 5, f"{svc}:1.2.0")


CONFIG_ONLY = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ service }}-settings
  namespace: {{ namespace }}
data:
  version: "{{ version }}"
  note: "no Deployment: nothing to shift traffic between"
"""


@pytest.mark.parametrize("strategy", [{"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}},
                                      {"blueGreen": {}}], ids=["canary", "bluegreen"])
def test_gray_strategy_without_a_deployment_applies_the_objects_as_rendered(harness, tmp_path,
                                                                          strategy):
    """A gray strategy on a template with no Deployment has no canary or preview to make: apply
    sends the rendered objects as they are (the lean path: members other than apiVersion, kind
    and metadata passed on as text), the release succeeds without pausing, and the objects in
    the API server hold what was rendered, the second release's values over the first's."""
    h = harness
    tid = "config-only"
    (tmp_path / f"{tid}.yaml").write_text(CONFIG_ONLY)
    h.relctl("template", "sync", tmp_path)
    svc = setup_service(h, versions=("1.0.0", "1.1.0"), template=tid,
                        strategy=json.dumps(strategy))
    ns = h.relctl_json("service", "show", svc, "--env", "prod")["namespace"]
    for version in ("1.0.0", "1.1.0"):
        rid = deploy(h, svc, version)
        rec = wait_status(h, rid, TERMINAL, timeout=60)
        assert rec["status"] == "succeeded", rec
        assert not events(rec, "paused"), rec["timeline"]
        cm = get(h, "configmap", f"{svc}-settings", ns)
        assert cm["data"] == {"version": version,
                              "note": "no Deployment: nothing to shift traffic between"}, cm
