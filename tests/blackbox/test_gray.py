"""Gray releases: canary steps with replica counts checked in kubesim, promote, abort, timed
pauses across track worker restarts, analysis against a local Prometheus-compatible endpoint,
blue-green switches."""
import json
import subprocess
import time
from datetime import datetime

import pytest

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


def setup_gray(h, strategy, versions=("1.0.0", "1.1.0"), replicas=5, **settings):
    svc = setup_service(h, versions=versions, replicas=replicas, strategy=json.dumps(strategy),
                        **settings)
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
    metric = {"name": "errors", "provider": {"prometheus": {"address": prom.url, "query": query}},
              "successCondition": "result < 0.01", "interval": "300ms", "count": 2}
    metric.update(extra)
    return {"canary": {"steps": [{"setWeight": 20}, {"analysis": metric}]}}


def test_analysis_passing_goes_on(harness, prom):
    h = harness
    q = "errors_pass"
    prom.samples[q] = "0.001"
    prom.docs["health"] = (200, {"data": {"status": "ok"}})
    strategy = analysis_strategy(prom, q)
    strategy["canary"]["steps"].append({"analysis": {
        "name": "health", "provider": {"web": {"url": prom.url + "/web/health",
                                               "jsonPath": "{$.data.status}"}},
        "successCondition": "result == 'ok'", "interval": "200ms"}})
    svc, ns = setup_gray(h, strategy)
    rid = deploy(h, svc, "1.1.0")
    rec = wait_status(h, rid, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec
    measured = events(rec, "analysis")
    assert [e["data"]["verdict"] for e in measured] == ["successful"] * 3, measured
    assert measured[0]["data"]["value"] == 0.001 and measured[2]["data"]["value"] == "ok"
    assert prom.queries(q) == 2
    wait_deploy(h, svc, ns, 5, f"{svc}:1.1.0")


def test_analysis_failing_aborts(harness, prom):
    h = harness
    q = "errors_fail"
    prom.samples[q] = "0.5"
    svc, ns = setup_gray(h, analysis_strategy(prom, q))
    rid = deploy(h, svc, "1.1.0")
    rec = wait_status(h, rid, TERMINAL, timeout=90)
    assert rec["status"] == "failed", rec
    assert rec["error"].startswith("analysis 'errors' failed"), rec["error"]
    assert events(rec, "analysis")[0]["data"]["verdict"] == "failed"
    wait_deploy(h, svc, ns, 5, f"{svc}:1.0.0")
    assert deploy_state(h, f"{svc}-canary", ns)[0] == 0


def test_analysis_without_data_pauses_for_a_person(harness, prom):
    h = harness
    q = "errors_nodata"  # never set: an empty result
    svc, ns = setup_gray(h, analysis_strategy(prom, q))
    rid = deploy(h, svc, "1.1.0")
    rec = wait_progress(h, rid, "paused", weight=20)
    an = events(rec, "analysis")
    assert an and an[-1]["data"]["verdict"] == "inconclusive" and "no data" in an[-1]["message"]
    wait_deploy(h, f"{svc}-canary", ns, 1, f"{svc}:1.1.0")
    n = prom.queries(q)
    time.sleep(1.0)
    assert prom.queries(q) == n  # paused: no more measurements
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
