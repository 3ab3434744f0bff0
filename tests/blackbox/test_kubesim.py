"""Black-box tests of kubesim driven by the real kubectl and plain HTTP (issue 3)."""
import json
import os
import subprocess
import threading
import time

import pytest
import requests

from kubesim_fixture import KUBESIM as KUBESIM_BIN, SERVICE_YAML, deployment_yaml, kubesim, wait_for

SCALE = "50"
RULES = """rules:
  - image: "*:bad*"
    waiting: ImagePullBackOff
  - image: "*:crash*"
    readyAfterMs: 1000
    crashAfterMs: 3000
    logs: ["starting", "panic: boom"]
  - image: "*:slow*"
    readyAfterMs: 8000
    logs: ["warming up", "listening on :8080"]
  - image: "*"
    readyAfterMs: 500
    logs: ["starting", "config loaded", "listening on :8080"]
"""


@pytest.fixture
def sim(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    with kubesim(tmp_path / "state", "--time-scale", SCALE, "--rules", str(rules)) as k:
        yield k


def apply(k, yaml_text, tmp_path, name="m.yaml", check=True):
    f = tmp_path / name
    f.write_text(yaml_text)
    return k.kubectl("apply", "--server-side", "-f", str(f), check=check)


def test_apply_get_and_rollout_status_succeeds(sim, tmp_path):
    out = apply(sim, deployment_yaml("web", "example/web:1.0") + "---\n" + SERVICE_YAML.format(name="web"), tmp_path)
    assert "deployment.apps/web serverside-applied" in out.stdout
    assert "service/web serverside-applied" in out.stdout
    res = sim.kubectl("rollout", "status", "deploy/web", "--timeout=30s")
    assert 'deployment "web" successfully rolled out' in res.stdout
    got = sim.kubectl("get", "deploy,rs,pods").stdout
    assert "deployment.apps/web   3/3     3            3" in got
    d = sim.get_json("deploy", "web")
    st = d["status"]
    assert st["observedGeneration"] == d["metadata"]["generation"] == 1
    assert (st["replicas"], st["updatedReplicas"], st["readyReplicas"], st["availableReplicas"]) == (3, 3, 3, 3)
    assert "unavailableReplicas" not in st
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conds["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    rs = sim.get_json("rs", "-l", "app=web")["items"]
    assert len(rs) == 1
    hash_ = rs[0]["metadata"]["labels"]["pod-template-hash"]
    assert rs[0]["metadata"]["name"] == f"web-{hash_}"
    assert rs[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    owner = rs[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("Deployment", "web", d["metadata"]["uid"], True)
    pods = sim.get_json("pods", "-l", "app=web")["items"]
    assert len(pods) == 3 and all(p["metadata"]["name"].startswith(f"web-{hash_}-") for p in pods)
    assert all(p["status"]["phase"] == "Running" for p in pods)
    svc = sim.get_json("svc", "web")
    assert svc["spec"]["clusterIP"].startswith("10.96.")
    # the Service selects the pods by its label selector
    sel = ",".join(f"{k}={v}" for k, v in svc["spec"]["selector"].items())
    assert len(sim.get_json("pods", "-l", sel)["items"]) == 3


def test_rollout_status_fails_on_progress_deadline(sim, tmp_path):
    apply(sim, deployment_yaml("api", "example/api:1.0", replicas=2), tmp_path)
    sim.kubectl("rollout", "status", "deploy/api", "--timeout=30s")
    # progressDeadlineSeconds 150 at time scale 50 is 3 s of real time
    bad = deployment_yaml("api", "example/api:bad", replicas=2, extra_spec="  progressDeadlineSeconds: 150\n")
    apply(sim, bad, tmp_path)
    t0 = time.monotonic()
    res = sim.kubectl("rollout", "status", "deploy/api", "--timeout=60s", check=False)
    took = time.monotonic() - t0
    assert res.returncode != 0
    assert 'deployment "api" exceeded its progress deadline' in res.stderr
    assert 2.5 <= took <= 20, took
    d = sim.get_json("deploy", "api")
    prog = [c for c in d["status"]["conditions"] if c["type"] == "Progressing"][0]
    assert (prog["status"], prog["reason"]) == ("False", "ProgressDeadlineExceeded")
    # the old ReplicaSet keeps serving: maxUnavailable 25% of 2 rounds down to 0
    assert d["status"]["availableReplicas"] == 2
    pods = sim.get_json("pods", "-l", "app=api")["items"]
    waiting = [p for p in pods if p["spec"]["containers"][0]["image"] == "example/api:bad"]
    assert waiting and all(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff" for p in waiting)
    assert "ImagePullBackOff" in sim.kubectl("get", "pods").stdout


def test_rollout_history_and_logs(sim, tmp_path):
    for v in ("1.0", "2.0"):
        apply(sim, deployment_yaml("hist", f"example/hist:{v}", replicas=1,
                                   annotations={"kubernetes.io/change-cause": f"release {v}"}), tmp_path)
        sim.kubectl("rollout", "status", "deploy/hist", "--timeout=30s")
    hist = sim.kubectl("rollout", "history", "deploy/hist").stdout
    assert "1         release 1.0" in hist and "2         release 2.0" in hist
    rev1 = sim.kubectl("rollout", "history", "deploy/hist", "--revision=1").stdout
    assert "example/hist:1.0" in rev1
    assert sim.kubectl("logs", "deploy/hist", "--tail=1").stdout == "listening on :8080\n"
    assert sim.kubectl("logs", "deploy/hist", "--tail=2", "-c", "app").stdout == "config loaded\nlistening on :8080\n"
    full = sim.kubectl("logs", "deploy/hist").stdout
    assert full.splitlines() == ["starting", "config loaded", "listening on :8080"]
    # a pod that never started has no logs, as on a real cluster
    apply(sim, deployment_yaml("nolog", "example/nolog:bad", replicas=1), tmp_path, name="n.yaml")
    pod = wait_for(lambda: sim.get_json("pods", "-l", "app=nolog")["items"], 10, what="pod")[0]
    res = sim.kubectl("logs", pod["metadata"]["name"], check=False)
    assert res.returncode != 0 and "is waiting to start" in res.stderr


def test_crashing_pod_restart_count_grows(sim, tmp_path):
    apply(sim, deployment_yaml("crash", "example/app:crash1", replicas=1), tmp_path)

    def restarts():
        pods = sim.get_json("pods", "-l", "app=crash")["items"]
        return pods and pods[0]["status"]["containerStatuses"][0]["restartCount"] >= 2 and pods[0]

    pod = wait_for(restarts, 30, 0.2, what="two restarts")
    cs = pod["status"]["containerStatuses"][0]
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    # One snapshot decides: between two reads the pod may have restarted again.
    state = cs["state"]
    assert state.get("waiting", {}).get("reason") == "CrashLoopBackOff" or "running" in state, state
    # The previous container always ended with the crash, whatever the current one has logged.
    assert sim.kubectl("logs", pod["metadata"]["name"], "--previous", "--tail=1").stdout == \
        "panic: boom\n"


class PodWatch(threading.Thread):
    """Follows the pods of a label through the watch API and checks rollout limits."""

    def __init__(self, sim, label, rv):
        super().__init__(daemon=True)
        self.sim, self.label, self.rv = sim, label, rv
        self.pods, self.max_total, self.min_ready_after, self.errors = {}, 0, None, []
        self.events = 0
        self.stop = False

    def run(self):
        s = self.sim.session()
        url = f"{self.sim.url}/api/v1/namespaces/default/pods"
        params = {"watch": "1", "labelSelector": self.label, "resourceVersion": self.rv, "timeoutSeconds": "60"}
        try:
            self._follow(s, url, params)
        except requests.exceptions.RequestException as e:
            if not self.stop:
                self.errors.append(repr(e))

    def _follow(self, s, url, params):
        with s.get(url, params=params, stream=True, timeout=70) as r:
            for line in r.iter_lines():
                if self.stop:
                    break
                ev = json.loads(line)
                self.events += 1
                name = ev["object"]["metadata"]["name"]
                if ev["type"] == "DELETED":
                    self.pods.pop(name, None)
                else:
                    conds = ev["object"].get("status", {}).get("conditions", [])
                    self.pods[name] = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
                total, ready = len(self.pods), sum(self.pods.values())
                self.max_total = max(self.max_total, total)
                self.min_ready_after = ready if self.min_ready_after is None else min(self.min_ready_after, ready)


@pytest.mark.parametrize("replicas,surge,unavail,want_surge,want_unavail", [
    (4, 1, 1, 1, 1),
    (10, "25%", "25%", 3, 2),   # surge rounds up (2.5 -> 3), unavailable rounds down (2.5 -> 2)
    (4, "0", "50%", 0, 2),
])
def test_rolling_update_respects_surge_and_unavailable(sim, tmp_path, replicas, surge, unavail, want_surge, want_unavail):
    name = f"roll{replicas}"
    strat = (f"  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n"
             f"      maxSurge: {json.dumps(surge)}\n      maxUnavailable: {json.dumps(unavail)}\n")
    apply(sim, deployment_yaml(name, "example/r:slow-1", replicas=replicas, extra_spec=strat), tmp_path)
    sim.kubectl("rollout", "status", f"deploy/{name}", "--timeout=60s")
    rv = sim.get_json("pods", "-l", f"app={name}")["metadata"]["resourceVersion"]
    w = PodWatch(sim, f"app={name}", rv)
    # seed the watcher's view with the current pods, then follow changes from rv
    for p in sim.get_json("pods", "-l", f"app={name}")["items"]:
        w.pods[p["metadata"]["name"]] = True
    w.start()
    apply(sim, deployment_yaml(name, "example/r:slow-2", replicas=replicas, extra_spec=strat), tmp_path)
    sim.kubectl("rollout", "status", f"deploy/{name}", "--timeout=60s")
    wait_for(lambda: len(w.pods) == replicas and all(w.pods.values()), 10, what="watch to catch up")
    w.stop = True
    assert not w.errors
    assert w.events > 0
    assert w.max_total == replicas + want_surge, (w.max_total, w.pods)
    assert w.min_ready_after == replicas - want_unavail, w.min_ready_after
    d = sim.get_json("deploy", name)
    assert d["status"]["updatedReplicas"] == replicas
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"


def test_recreate_strategy_stops_old_pods_first(sim, tmp_path):
    strat = "  strategy:\n    type: Recreate\n"
    apply(sim, deployment_yaml("rec", "example/rec:1", replicas=2, extra_spec=strat), tmp_path)
    sim.kubectl("rollout", "status", "deploy/rec", "--timeout=30s")
    apply(sim, deployment_yaml("rec", "example/rec:2", replicas=2, extra_spec=strat), tmp_path)
    sim.kubectl("rollout", "status", "deploy/rec", "--timeout=30s")
    images = {p["spec"]["containers"][0]["image"] for p in sim.get_json("pods", "-l", "app=rec")["items"]}
    assert images == {"example/rec:2"}


def test_watch_resumes_from_resource_version(sim, tmp_path):
    s = sim.session()
    base = f"{sim.url}/apis/apps/v1/namespaces/default/deployments"
    apply(sim, deployment_yaml("w1", "example/w:1", replicas=1), tmp_path)
    rv = s.get(base).json()["metadata"]["resourceVersion"]
    patch = {"metadata": {"labels": {"touched": "yes"}}}
    r = s.patch(f"{base}/w1", json=patch, headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200
    new_rv = r.json()["metadata"]["resourceVersion"]
    assert int(new_rv) > int(rv)
    with s.get(base, params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": "2"}, stream=True, timeout=10) as w:
        events = [json.loads(l) for l in w.iter_lines()]
    mine = [e for e in events if e["object"]["metadata"]["resourceVersion"] == new_rv]
    assert mine and mine[0]["type"] == "MODIFIED" and mine[0]["object"]["metadata"]["labels"]["touched"] == "yes"
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    # a fieldSelector watch, as kubectl rollout status uses, sees only its object
    apply(sim, deployment_yaml("w2", "example/w:1", replicas=1), tmp_path, name="w2.yaml")
    with s.get(base, params={"watch": "1", "resourceVersion": rv, "fieldSelector": "metadata.name=w2",
                             "timeoutSeconds": "1"}, stream=True, timeout=10) as w:
        names = {json.loads(l)["object"]["metadata"]["name"] for l in w.iter_lines()}
    assert names == {"w2"}


def test_watch_too_old_resource_version_is_410(tmp_path):
    with kubesim(tmp_path / "s", "--time-scale", SCALE, "--watch-cache-size", "8") as k:
        s = k.session()
        base = f"{k.url}/apis/apps/v1/namespaces/default/deployments"
        apply(k, deployment_yaml("old", "example/o:1", replicas=1), tmp_path)
        rv = s.get(base).json()["metadata"]["resourceVersion"]
        for i in range(12):
            r = s.patch(f"{base}/old", json={"metadata": {"labels": {"n": str(i)}}},
                        headers={"Content-Type": "application/merge-patch+json"})
            assert r.status_code == 200
        with s.get(base, params={"watch": "1", "resourceVersion": rv}, stream=True, timeout=10) as w:
            assert w.status_code == 200
            events = [json.loads(l) for l in w.iter_lines()]
        assert len(events) == 1, events
        ev = events[0]
        assert ev["type"] == "ERROR"
        assert (ev["object"]["kind"], ev["object"]["code"], ev["object"]["reason"]) == ("Status", 410, "Expired")
        assert ev["object"]["message"].startswith(f"too old resource version: {rv} (")
        # a fresh list gives a resourceVersion that resumes fine
        rv2 = s.get(base).json()["metadata"]["resourceVersion"]
        with s.get(base, params={"watch": "1", "resourceVersion": rv2, "timeoutSeconds": "1"}, stream=True, timeout=10) as w:
            assert all(json.loads(l)["type"] != "ERROR" for l in w.iter_lines())


def test_events_expire_after_the_event_ttl_in_simulated_time(tmp_path):
    # --event-ttl 60s at time scale 50: 1.2 s of real time after the last write
    with kubesim(tmp_path / "s", "--time-scale", SCALE, "--event-ttl", "60s") as k:
        s = k.session()
        base = f"{k.url}/api/v1/namespaces/default/events"
        rv = s.get(base).json()["metadata"]["resourceVersion"]
        start = time.monotonic()
        apply(k, deployment_yaml("ttl", "example/t:1", replicas=1), tmp_path)
        names = wait_for(lambda: {e["metadata"]["name"] for e in s.get(base).json()["items"]}, 10,
                         what="events")
        assert any(n.startswith("ttl") for n in names), names
        wait_for(lambda: not s.get(base).json()["items"], 30, what="events to expire")
        assert time.monotonic() - start >= 1.2
        # each one leaves watchers a DELETED event, as an expired etcd lease does
        with s.get(base, params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": "1"},
                   stream=True, timeout=10) as w:
            evs = [json.loads(l) for l in w.iter_lines()]
        assert names <= {e["object"]["metadata"]["name"] for e in evs if e["type"] == "DELETED"}
        assert k.kubectl("get", "events", "-o", "name").stdout.strip() == ""
    bad = subprocess.run([KUBESIM_BIN, "--state-dir", str(tmp_path / "b"), "--event-ttl", "soon"],
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2 and "--event-ttl" in bad.stderr


def test_bookmarks_only_when_asked(sim):
    s = sim.session()
    base = f"{sim.url}/api/v1/namespaces/default/pods"
    rv = s.get(base).json()["metadata"]["resourceVersion"]
    with s.get(base, params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": "1"}, stream=True, timeout=10) as w:
        assert [l for l in w.iter_lines()] == []
    with s.get(base, params={"watch": "1", "sendInitialEvents": "true", "allowWatchBookmarks": "true",
                             "resourceVersionMatch": "NotOlderThan", "timeoutSeconds": "1"}, stream=True, timeout=10) as w:
        evs = [json.loads(l) for l in w.iter_lines()]
    assert evs[-1]["type"] == "BOOKMARK"
    assert evs[-1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"


def test_token_required(tmp_path):
    with kubesim(tmp_path / "s", "--time-scale", SCALE, token="s3cret-token") as k:
        r = requests.get(f"{k.url}/api/v1/namespaces")
        assert r.status_code == 401
        body = r.json()
        assert (body["kind"], body["reason"], body["code"]) == ("Status", "Unauthorized", 401)
        assert requests.get(f"{k.url}/kubesim/applies").status_code == 401
        assert requests.get(f"{k.url}/version", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert k.session().get(f"{k.url}/api/v1/namespaces").status_code == 200
        assert k.session().get(f"{k.url}/kubesim/applies").status_code == 200
        log = open(os.path.join(k.dir, "kubesim.log")).read()
        assert "s3cret-token" not in log
    # kubectl sends bearer tokens over TLS only, as against a real cluster
    with kubesim(tmp_path / "t", "--tls", "--time-scale", SCALE, token="s3cret-token") as k:
        assert "token: s3cret-token" in open(k.kubeconfig).read()
        assert "default" in k.kubectl("get", "ns").stdout
        bad = tmp_path / "bad-kubeconfig"
        bad.write_text(open(k.kubeconfig).read().replace("s3cret-token", "nope"))
        res = k.kubectl("get", "pods", kubeconfig=str(bad), check=False)
        assert res.returncode != 0 and "must be logged in" in res.stderr
        assert "s3cret-token" not in " ".join(open(f"/proc/{k.proc.pid}/cmdline").read().split("\0"))


def test_tls_verification(tmp_path):
    with kubesim(tmp_path / "a", "--tls", "--time-scale", SCALE) as k, \
            kubesim(tmp_path / "b", "--tls", "--time-scale", SCALE) as other:
        assert k.url.startswith("https://127.0.0.1:")
        assert "certificate-authority-data:" in open(k.kubeconfig).read()
        assert "default" in k.kubectl("get", "ns").stdout
        assert requests.get(f"{k.url}/version", verify=k.ca).json()["major"] == "1"
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{k.url}/version", verify=other.ca)
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{k.url}/version")
        wrong = tmp_path / "wrong-ca-kubeconfig"
        cfg = open(k.kubeconfig).read()
        other_ca = [l for l in open(other.kubeconfig).read().splitlines() if "certificate-authority-data" in l][0]
        mine = [l for l in cfg.splitlines() if "certificate-authority-data" in l][0]
        wrong.write_text(cfg.replace(mine, other_ca))
        res = k.kubectl("get", "ns", kubeconfig=str(wrong), check=False)
        assert res.returncode != 0 and "certificate signed by unknown authority" in res.stderr


def test_invalid_deployment_is_422(sim, tmp_path):
    no_containers = """apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  selector: {matchLabels: {app: broken}}
  template:
    metadata: {labels: {app: broken}}
    spec: {containers: []}
"""
    res = apply(sim, no_containers, tmp_path, check=False)
    assert res.returncode != 0
    # kubectl prints the Status message from its causes, as it does for a real server
    assert 'Deployment "broken" is invalid: spec.template.spec.containers: Required value' in res.stderr
    s = sim.session()
    url = f"{sim.url}/apis/apps/v1/namespaces/default/deployments/broken?fieldManager=test"
    no_selector = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "broken"},
                   "spec": {"template": {"metadata": {"labels": {"app": "x"}},
                                         "spec": {"containers": [{"name": "a", "image": "i:1"}]}}}}
    r = s.patch(url, data=json.dumps(no_selector), headers={"Content-Type": "application/apply-patch+yaml"})
    assert r.status_code == 422
    body = r.json()
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Invalid", 422)
    assert body["details"]["causes"][0]["field"] == "spec.selector"
    assert body["message"].startswith('Deployment.apps "broken" is invalid: ')
    r = s.patch(url.split("?")[0], data="{}", headers={"Content-Type": "application/apply-patch+yaml"})
    assert r.status_code == 422 and "fieldManager" in r.json()["message"]
    assert s.get(url.split("?")[0]).status_code == 404


def test_merge_patch_generation_and_resource_version(sim, tmp_path):
    apply(sim, deployment_yaml("mp", "example/mp:1", replicas=1), tmp_path)
    d0 = sim.get_json("deploy", "mp")
    sim.kubectl("patch", "deploy", "mp", "--type", "merge", "-p", '{"metadata":{"labels":{"team":"a"}}}')
    d1 = sim.get_json("deploy", "mp")
    assert d1["metadata"]["generation"] == d0["metadata"]["generation"]
    assert int(d1["metadata"]["resourceVersion"]) > int(d0["metadata"]["resourceVersion"])
    sim.kubectl("patch", "deploy", "mp", "--type", "merge", "-p", '{"spec":{"replicas":2}}')
    d2 = sim.get_json("deploy", "mp")
    assert d2["metadata"]["generation"] == d0["metadata"]["generation"] + 1
    assert d2["spec"]["replicas"] == 2
    sim.kubectl("rollout", "status", "deploy/mp", "--timeout=30s")
    assert sim.get_json("deploy", "mp")["status"]["availableReplicas"] == 2
    # the same apply again changes nothing: no new resourceVersion
    before = sim.get_json("deploy", "mp")["metadata"]["resourceVersion"]
    s = sim.session()
    url = f"{sim.url}/apis/apps/v1/namespaces/default/deployments/mp"
    r = s.patch(url, data=json.dumps({"metadata": {"labels": {"team": "a"}}}),
                headers={"Content-Type": "application/merge-patch+json"})
    assert r.json()["metadata"]["resourceVersion"] == before


def test_errors_not_found_and_conflicts(sim, tmp_path):
    s = sim.session()
    r = s.get(f"{sim.url}/apis/apps/v1/namespaces/default/deployments/nope")
    assert r.status_code == 404
    assert r.json()["message"] == 'deployments.apps "nope" not found' and r.json()["reason"] == "NotFound"
    res = sim.kubectl("get", "deploy", "nope", check=False)
    assert 'deployments.apps "nope" not found' in res.stderr
    apply(sim, deployment_yaml("cf", "example/cf:1", replicas=1), tmp_path)
    r = s.post(f"{sim.url}/apis/apps/v1/namespaces/default/deployments",
               json=sim.get_json("deploy", "cf") | {"status": {}})
    assert r.status_code == 409 and r.json()["reason"] == "AlreadyExists"
    # another manager takes spec.replicas; applying a different value conflicts until forced
    sim.kubectl("scale", "deploy/cf", "--replicas=2")
    res = apply(sim, deployment_yaml("cf", "example/cf:1", replicas=3), tmp_path, check=False)
    assert res.returncode != 0 and "conflict with" in res.stderr and ".spec.replicas" in res.stderr
    apply_forced = sim.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(tmp_path / "m.yaml"))
    assert "serverside-applied" in apply_forced.stdout
    assert sim.get_json("deploy", "cf")["spec"]["replicas"] == 3
    # a stale resourceVersion on update is a 409 Conflict
    d = sim.get_json("deploy", "cf")
    d["metadata"]["resourceVersion"] = "1"
    r = s.put(f"{sim.url}/apis/apps/v1/namespaces/default/deployments/cf", json=d)
    assert r.status_code == 409 and r.json()["reason"] == "Conflict"
    # ... and on a server-side apply, where it is a precondition (Relfleet's fencing needs it)
    url = f"{sim.url}/apis/apps/v1/namespaces/default/deployments/cf?fieldManager=fence&force=true"
    applied = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "cf", "labels": {"fence": "7"}, "resourceVersion": "1"}}
    ssa = {"Content-Type": "application/apply-patch+yaml"}
    current = sim.get_json("deploy", "cf")["metadata"]["resourceVersion"]
    r = s.patch(url, data=json.dumps(applied), headers=ssa)
    assert r.status_code == 409 and r.json()["reason"] == "Conflict", r.text
    modified = ('Operation cannot be fulfilled on deployments.apps "cf": the object has been '
                'modified; please apply your changes to the latest version and try again')
    assert r.json()["message"] == modified
    assert r.json()["details"] == {"name": "cf", "kind": "deployments", "group": "apps"}
    # the same answer without force (checked after the merge there, found in the same place)
    r = s.patch(url.replace("&force=true", ""), data=json.dumps(applied), headers=ssa)
    assert r.status_code == 409 and r.json()["message"] == modified, r.text
    assert sim.get_json("deploy", "cf")["metadata"]["resourceVersion"] == current
    applied["metadata"]["resourceVersion"] = current
    r = s.patch(url, data=json.dumps(applied), headers=ssa)
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["labels"]["fence"] == "7"
    assert int(r.json()["metadata"]["resourceVersion"]) > int(current)


def test_applies_log_and_fault_injection(sim, tmp_path):
    s = sim.session()
    apply(sim, deployment_yaml("ap", "example/ap:1", replicas=1), tmp_path)
    apply(sim, deployment_yaml("ap", "example/ap:2", replicas=1), tmp_path)
    log = s.get(f"{sim.url}/kubesim/applies").json()
    mine = [e for e in log if e["name"] == "ap"]
    assert [e["images"] for e in mine] == [["example/ap:1"], ["example/ap:2"]]
    assert [e["generation"] for e in mine] == [1, 2]
    assert all(e["fieldManager"] == "kubectl" and e["namespace"] == "default" for e in mine)
    assert int(mine[0]["resourceVersion"]) < int(mine[1]["resourceVersion"])
    assert mine[0]["time"] <= mine[1]["time"]
    r = s.post(f"{sim.url}/kubesim/faults", json={"status": 503, "count": 2})
    assert r.status_code == 200
    codes = [s.get(f"{sim.url}/api/v1/namespaces").status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    s.post(f"{sim.url}/kubesim/faults", json={"status": 503, "count": 1})
    body = s.get(f"{sim.url}/api/v1/namespaces").json()
    assert (body["kind"], body["code"], body["reason"]) == ("Status", 503, "ServiceUnavailable")
    s.post(f"{sim.url}/kubesim/faults", json={"down": True})
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{sim.url}/api/v1/namespaces", timeout=5)
    assert s.get(f"{sim.url}/kubesim/applies").status_code == 200
    s.post(f"{sim.url}/kubesim/faults", json={"down": False})
    assert requests.get(f"{sim.url}/api/v1/namespaces", timeout=5).status_code == 200


def test_delete_cascades_to_replicasets_and_pods(sim, tmp_path):
    apply(sim, deployment_yaml("gone", "example/g:1", replicas=2), tmp_path)
    sim.kubectl("rollout", "status", "deploy/gone", "--timeout=30s")
    sim.kubectl("delete", "deploy", "gone")
    wait_for(lambda: not sim.get_json("rs,pods", "-l", "app=gone")["items"], 10, what="cascade")
    res = sim.kubectl("get", "deploy", "gone", check=False)
    assert res.returncode != 0 and "not found" in res.stderr


def test_set_image_and_undo_reuse_the_old_replicaset(sim, tmp_path):
    apply(sim, deployment_yaml("undo", "example/u:1", replicas=2), tmp_path)
    sim.kubectl("rollout", "status", "deploy/undo", "--timeout=30s")
    first = sim.get_json("rs", "-l", "app=undo")["items"][0]["metadata"]["name"]
    sim.kubectl("set", "image", "deploy/undo", "app=example/u:2")
    sim.kubectl("rollout", "status", "deploy/undo", "--timeout=30s")
    d = sim.get_json("deploy", "undo")
    assert "$setElementOrder/containers" not in d["spec"]["template"]["spec"]
    sim.kubectl("rollout", "undo", "deploy/undo")
    sim.kubectl("rollout", "status", "deploy/undo", "--timeout=30s")
    rss = {r["metadata"]["name"]: r for r in sim.get_json("rs", "-l", "app=undo")["items"]}
    assert len(rss) == 2
    ann = rss[first]["metadata"]["annotations"]
    assert ann["deployment.kubernetes.io/revision"] == "3"
    assert ann["deployment.kubernetes.io/revision-history"] == "1"
    assert rss[first]["spec"]["replicas"] == 2


# -- config, policy and RBAC kinds (stored and validated, no controller) -----------------

CONFIG_KINDS = """apiVersion: v1
kind: ConfigMap
metadata: {name: app-config, labels: {team: a}}
data: {LOG_LEVEL: info, app.yaml: "port: 8080\\n"}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret, labels: {team: a}}
data: {given: "aGVsbG8="}
stringData: {password: "s3cr3t", given: "from-stringData"}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: app-sa, labels: {team: a}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: app-pdb}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: web}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader}
rules:
- {apiGroups: [""], resources: [pods, pods/log], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: pod-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects:
- {kind: ServiceAccount, name: app-sa, namespace: default}
- {kind: User, name: alice}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "deployer:apps"}
rules:
- {apiGroups: [apps], resources: [deployments], verbs: [get, patch]}
- {nonResourceURLs: [/healthz], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "deployer:apps"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "deployer:apps"}
subjects:
- {kind: ServiceAccount, name: app-sa, namespace: default}
- {kind: Group, name: ops}
"""


def test_discovery_lists_config_policy_and_rbac_kinds(sim):
    s = sim.session()
    core = {r["name"]: r for r in s.get(f"{sim.url}/api/v1").json()["resources"]}
    for name, kind, short in (("configmaps", "ConfigMap", ["cm"]), ("secrets", "Secret", None),
                              ("serviceaccounts", "ServiceAccount", ["sa"])):
        assert (core[name]["kind"], core[name]["namespaced"], core[name].get("shortNames")) == \
            (kind, True, short)
        assert "patch" in core[name]["verbs"] and "delete" in core[name]["verbs"]
    groups = {g["name"]: g for g in s.get(f"{sim.url}/apis").json()["groups"]}
    assert groups["policy"]["preferredVersion"]["groupVersion"] == "policy/v1"
    assert groups["rbac.authorization.k8s.io"]["versions"] == [
        {"groupVersion": "rbac.authorization.k8s.io/v1", "version": "v1"}]
    assert s.get(f"{sim.url}/apis/policy").json()["kind"] == "APIGroup"
    policy = {r["name"]: r for r in s.get(f"{sim.url}/apis/policy/v1").json()["resources"]}
    assert (policy["poddisruptionbudgets"]["kind"], policy["poddisruptionbudgets"]["namespaced"],
            policy["poddisruptionbudgets"]["shortNames"]) == ("PodDisruptionBudget", True, ["pdb"])
    rbac = s.get(f"{sim.url}/apis/rbac.authorization.k8s.io/v1").json()
    assert rbac["groupVersion"] == "rbac.authorization.k8s.io/v1"
    scoped = {r["kind"]: r["namespaced"] for r in rbac["resources"]}
    assert scoped == {"Role": True, "RoleBinding": True, "ClusterRole": False,
                      "ClusterRoleBinding": False}
    index = s.get(f"{sim.url}/openapi/v3").json()["paths"]
    assert "apis/policy/v1" in index and "apis/rbac.authorization.k8s.io/v1" in index
    doc = s.get(f"{sim.url}/openapi/v3/apis/rbac.authorization.k8s.io/v1").json()
    assert "/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}" in doc["paths"]
    assert "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{name}" in doc["paths"]
    assert "io.k8s.api.rbac.v1.ClusterRole" in doc["components"]["schemas"]
    rows = {ln.split()[0]: ln.split()[1:] for ln in
            sim.kubectl("api-resources", "--no-headers").stdout.splitlines()}
    assert rows["poddisruptionbudgets"] == ["pdb", "policy/v1", "true", "PodDisruptionBudget"]
    assert rows["serviceaccounts"] == ["sa", "v1", "true", "ServiceAccount"]
    assert rows["clusterroles"] == ["rbac.authorization.k8s.io/v1", "false", "ClusterRole"]
    assert rows["rolebindings"] == ["rbac.authorization.k8s.io/v1", "true", "RoleBinding"]


def test_config_policy_and_rbac_kinds_apply_get_list_delete(sim, tmp_path):
    import base64

    out = apply(sim, CONFIG_KINDS, tmp_path).stdout
    for applied in ("configmap/app-config", "secret/app-secret", "serviceaccount/app-sa",
                    "poddisruptionbudget.policy/app-pdb",
                    "role.rbac.authorization.k8s.io/pod-reader",
                    "rolebinding.rbac.authorization.k8s.io/pod-reader",
                    "clusterrole.rbac.authorization.k8s.io/deployer:apps",
                    "clusterrolebinding.rbac.authorization.k8s.io/deployer:apps"):
        assert f"{applied} serverside-applied" in out, out
    cm = sim.get_json("cm", "app-config")
    assert cm["data"] == {"LOG_LEVEL": "info", "app.yaml": "port: 8080\n"}
    assert cm["metadata"]["namespace"] == "default" and "generation" not in cm["metadata"]
    # stringData is merged into data (winning over the same key) and not stored
    sec = sim.get_json("secret", "app-secret")
    assert "stringData" not in sec and sec["type"] == "Opaque"
    assert {k: base64.b64decode(v).decode() for k, v in sec["data"].items()} == \
        {"given": "from-stringData", "password": "s3cr3t"}
    pdb = sim.get_json("pdb", "app-pdb")
    assert pdb["spec"]["minAvailable"] == 2 and pdb["metadata"]["generation"] == 1
    assert pdb["status"]["disruptionsAllowed"] == 0
    role = sim.get_json("role", "pod-reader")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods", "pods/log"],
                              "verbs": ["get", "list", "watch"]}]
    rb = sim.get_json("rolebinding", "pod-reader")
    # User and Group subjects get the RBAC apiGroup, ServiceAccounts none
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "app-sa", "namespace": "default"},
                              {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]
    cr = sim.get_json("clusterrole", "deployer:apps")
    assert "namespace" not in cr["metadata"] and cr["rules"][1]["nonResourceURLs"] == ["/healthz"]
    crb = sim.get_json("clusterrolebinding", "deployer:apps")
    assert crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                              "name": "deployer:apps"}
    # the tables kubectl prints
    table = sim.kubectl("get", "cm,secret,sa,pdb,rolebinding").stdout
    assert "configmap/app-config" in table and "secret/app-secret" in table
    assert "Opaque" in table and "Role/pod-reader" in table
    wide = sim.kubectl("get", "clusterrolebinding", "deployer:apps", "-o", "wide").stdout
    assert "ClusterRole/deployer:apps" in wide and "default/app-sa" in wide and "ops" in wide
    assert "MIN AVAILABLE" in sim.kubectl("get", "pdb").stdout
    # lists: by label, across namespaces, and cluster-scoped kinds under their own URL only
    assert [i["metadata"]["name"] for i in sim.get_json("cm,secret,sa", "-l", "team=a")["items"]] == \
        ["app-config", "app-secret", "app-sa"]
    s = sim.session()
    r = s.get(f"{sim.url}/apis/rbac.authorization.k8s.io/v1/clusterroles")
    assert r.json()["kind"] == "ClusterRoleList"
    assert "deployer:apps" in [i["metadata"]["name"] for i in r.json()["items"]]
    r = s.get(f"{sim.url}/apis/rbac.authorization.k8s.io/v1/namespaces/default/clusterroles")
    assert r.status_code == 404
    r = s.get(f"{sim.url}/apis/policy/v1/poddisruptionbudgets")
    assert [i["metadata"]["name"] for i in r.json()["items"]] == ["app-pdb"]
    # the same apply again writes nothing: the resourceVersions stay
    before = {i["metadata"]["name"]: i["metadata"]["resourceVersion"]
              for i in sim.get_json("cm,secret,pdb,rolebinding")["items"]}
    apply(sim, CONFIG_KINDS, tmp_path)
    after = {i["metadata"]["name"]: i["metadata"]["resourceVersion"]
             for i in sim.get_json("cm,secret,pdb,rolebinding")["items"]}
    assert after == before
    # a key dropped from the manifest goes away on the next apply
    apply(sim, CONFIG_KINDS.replace(", app.yaml: \"port: 8080\\n\"", ""), tmp_path)
    assert sim.get_json("cm", "app-config")["data"] == {"LOG_LEVEL": "info"}
    # delete, then 404 as NotFound with the group-qualified resource
    out = sim.kubectl("delete", "-f", str(tmp_path / "m.yaml")).stdout
    assert 'clusterrole.rbac.authorization.k8s.io "deployer:apps" deleted' in out, out
    for args, msg in ((("secret", "app-secret"), 'secrets "app-secret" not found'),
                      (("pdb", "app-pdb"), 'poddisruptionbudgets.policy "app-pdb" not found'),
                      (("clusterrolebinding", "deployer:apps"),
                       'clusterrolebindings.rbac.authorization.k8s.io "deployer:apps" not found')):
        res = sim.kubectl("get", *args, check=False)
        assert res.returncode != 0 and msg in res.stderr, res.stderr
    r = s.get(f"{sim.url}/api/v1/namespaces/default/configmaps/app-config")
    assert (r.status_code, r.json()["reason"]) == (404, "NotFound")
    assert r.json()["details"] == {"name": "app-config", "kind": "configmaps"}
    r = s.delete(f"{sim.url}/apis/rbac.authorization.k8s.io/v1/clusterroles/nope")
    assert r.status_code == 404 and r.json()["details"]["group"] == "rbac.authorization.k8s.io"


def test_config_policy_and_rbac_kinds_are_validated(sim, tmp_path):
    s = sim.session()
    base = f"{sim.url}/api/v1/namespaces/default"
    r = s.post(f"{base}/secrets", json={"metadata": {"name": "bad"}, "data": {"k": "abc!"}})
    assert r.status_code == 400
    assert r.json()["message"] == ('Secret in version "v1" cannot be handled as a Secret: '
                                   'illegal base64 data at input byte 3')
    r = s.post(f"{base}/configmaps", json={"metadata": {"name": "bad"}, "data": {"a b": "x"}})
    assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "data[a b]"
    # immutable ConfigMaps keep their data
    r = s.post(f"{base}/configmaps", json={"metadata": {"name": "frozen"}, "data": {"a": "1"},
                                           "immutable": True})
    assert r.status_code == 201
    r = s.patch(f"{base}/configmaps/frozen", json={"data": {"a": "2"}},
                headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 422 and "field is immutable when `immutable` is set" in r.json()["message"]
    pdb = f"{sim.url}/apis/policy/v1/namespaces/default/poddisruptionbudgets"
    r = s.post(pdb, json={"metadata": {"name": "both"},
                          "spec": {"minAvailable": 1, "maxUnavailable": "150%"}})
    assert r.status_code == 422
    fields = [c["field"] for c in r.json()["details"]["causes"]]
    assert fields == ["spec", "spec.maxUnavailable"]
    assert "minAvailable and maxUnavailable cannot be both set" in r.json()["message"]
    rbac = f"{sim.url}/apis/rbac.authorization.k8s.io/v1"
    r = s.post(f"{rbac}/namespaces/default/roles", json={
        "metadata": {"name": "r"}, "rules": [{"nonResourceURLs": ["/metrics"], "verbs": []}]})
    assert r.status_code == 422
    assert [c["field"] for c in r.json()["details"]["causes"]] == \
        ["rules[0].verbs", "rules[0].nonResourceURLs"]
    r = s.post(f"{rbac}/clusterrolebindings", json={
        "metadata": {"name": "b"}, "roleRef": {"kind": "Role", "name": "x"},
        "subjects": [{"kind": "ServiceAccount", "name": "sa"}, {"kind": "Robot", "name": "r2"}]})
    assert r.status_code == 422
    assert r.json()["message"].startswith('ClusterRoleBinding.rbac.authorization.k8s.io "b" is invalid')
    assert [c["field"] for c in r.json()["details"]["causes"]] == \
        ["roleRef.kind", "subjects[0].namespace", "subjects[1].kind"]
    # roleRef cannot change once created
    binding = {"metadata": {"name": "rb"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
               "subjects": [{"kind": "User", "name": "bob"}]}
    assert s.post(f"{rbac}/namespaces/default/rolebindings", json=binding).status_code == 201
    r = s.patch(f"{rbac}/namespaces/default/rolebindings/rb", json={"roleRef": {"name": "edit"}},
                headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 422 and "cannot change roleRef" in r.json()["message"]
    # a namespace that does not exist
    r = s.post(f"{sim.url}/api/v1/namespaces/nope/serviceaccounts", json={"metadata": {"name": "x"}})
    assert r.status_code == 404 and r.json()["message"] == 'namespaces "nope" not found'


def test_list_pages_with_limit_and_continue(sim, tmp_path):
    names = [f"pg{i}" for i in (3, 1, 4, 0, 2)]
    apply(sim, "---\n".join(deployment_yaml(n, f"example/{n}:1", replicas=1) for n in names),
          tmp_path)
    s = sim.session()
    url = f"{sim.url}/apis/apps/v1/namespaces/default/deployments"
    pages, cont, rvs = [], None, set()
    while True:
        params = {"limit": 2} | ({"continue": cont} if cont else {})
        r = s.get(url, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append([d["metadata"]["name"] for d in body["items"]])
        rvs.add(body["metadata"]["resourceVersion"])
        cont = body["metadata"].get("continue")
        if not cont:
            assert "remainingItemCount" not in body["metadata"]
            break
        assert body["metadata"]["remainingItemCount"] == 5 - sum(len(p) for p in pages)
        if len(pages) == 1:
            # a change while paging: later pages still name the first page's version
            sim.kubectl("scale", "deploy/pg4", "--replicas=2")
    assert pages == [["pg0", "pg1"], ["pg2", "pg3"], ["pg4"]]
    assert len(rvs) == 1
    assert s.get(url).json()["metadata"].get("continue") is None
    assert s.get(url, params={"limit": 2, "continue": "garbage"}).status_code == 400
    # kubectl reads lists in chunks the same way
    out = sim.kubectl("get", "deploy", "--chunk-size=2", "-o", "name").stdout.split()
    assert out == [f"deployment.apps/pg{i}" for i in range(5)]
