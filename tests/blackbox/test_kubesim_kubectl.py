"""What else the real kubectl does against kubesim (issue 19, "find out"): kubectl diff
(dry-run patches and server-side apply), rollout undo, wait, get -w, and describe's events,
which follow what the Deployment controller records."""
import queue
import subprocess
import threading

import pytest

from kubesim_fixture import KUBECTL, deployment_yaml, kubesim

RULES = """rules:
  - image: "*:bad*"
    waiting: ImagePullBackOff
  - image: "*"
    readyAfterMs: 500
"""


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("kubesim")
    (d / "rules.yaml").write_text(RULES)
    with kubesim(d / "state", "--time-scale", "50", "--rules", str(d / "rules.yaml")) as k:
        k.files = d
        yield k


def manifest(sim, name, text):
    f = sim.files / f"{name}.yaml"
    f.write_text(text)
    return str(f)


def rollout(sim, name, image, replicas=2, extra_spec="", server_side=False):
    f = manifest(sim, name, deployment_yaml(name, image, replicas=replicas, extra_spec=extra_spec))
    sim.kubectl("apply", *(["--server-side"] if server_side else []), "-f", f)
    sim.kubectl("rollout", "status", f"deploy/{name}", "--timeout=60s")
    return f


def state(sim, name):
    """What a write would change: the Deployment's resourceVersion, generation and image, and
    the ReplicaSets and write log entries that exist for it."""
    d = sim.get_json("deploy", name)
    rss = sorted(r["metadata"]["name"] for r in sim.get_json("rs", "-l", f"app={name}")["items"])
    applies = [a for a in sim.session().get(f"{sim.url}/kubesim/applies").json() if a["name"] == name]
    return (d["metadata"]["resourceVersion"], d["metadata"]["generation"],
            d["spec"]["template"]["spec"]["containers"][0]["image"], rss, len(applies))


def events(sim, name):
    """The Deployment's events, oldest first, as (reason, message)."""
    evs = sim.session().get(f"{sim.url}/api/v1/namespaces/default/events",
                            params={"fieldSelector": f"involvedObject.name={name}"}).json()["items"]
    evs.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [(e["reason"], e["message"]) for e in evs if e["involvedObject"]["kind"] == "Deployment"]


def rs_names(sim, name):
    """ReplicaSet names by revision (1, 2, ...)."""
    rss = sim.get_json("rs", "-l", f"app={name}")["items"]
    return {int(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]): r["metadata"]["name"]
            for r in rss}


# ---- kubectl diff ----

def test_diff_shows_the_change_and_changes_nothing(sim):
    f1 = rollout(sim, "df", "example/df:1")
    before = state(sim, "df")
    f2 = manifest(sim, "df2", deployment_yaml("df", "example/df:2", replicas=2))
    res = sim.kubectl("diff", "-f", f2, check=False)
    assert res.returncode == 1, res.stderr
    assert "-      - image: example/df:1" in res.stdout and "+      - image: example/df:2" in res.stdout
    assert "-  generation: 1" in res.stdout and "+  generation: 2" in res.stdout
    # server-side: a dry-run apply, here taking the image from client-side apply's manager
    res = sim.kubectl("diff", "--server-side", "--force-conflicts", "-f", f2, check=False)
    assert res.returncode == 1, res.stderr
    assert "+      - image: example/df:2" in res.stdout
    # without --force-conflicts the dry run conflicts like the real apply would
    res = sim.kubectl("diff", "--server-side", "-f", f2, check=False)
    assert res.returncode > 1 and "conflict with \"kubectl-client-side-apply\"" in res.stderr
    # an unchanged manifest has no diff; a new object diffs against nothing and is not created
    assert sim.kubectl("diff", "-f", f1).stdout == ""
    f3 = manifest(sim, "df-new", deployment_yaml("df-new", "example/df:1", replicas=1))
    res = sim.kubectl("diff", "-f", f3, check=False)
    assert res.returncode == 1 and "+kind: Deployment" in res.stdout and "+  name: df-new" in res.stdout
    assert sim.kubectl("diff", "--server-side", "-f", f3, check=False).returncode == 1
    assert "NotFound" in sim.kubectl("get", "deploy", "df-new", check=False).stderr
    assert state(sim, "df") == before


def test_dry_run_takes_only_all(sim):
    """dryRun=All is the only value (ValidatePatchOptions): anything else is 422 and changes nothing."""
    rollout(sim, "dr", "example/dr:1", replicas=1)
    before = state(sim, "dr")
    s = sim.session()
    url = f"{sim.url}/apis/apps/v1/namespaces/default/deployments/dr"
    patch = {"spec": {"replicas": 3}}
    r = s.patch(url, params={"dryRun": "yes"}, json=patch, headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 422, r.text
    assert r.json()["message"] == ('PatchOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: "yes": '
                                   'supported values: "All"')
    r = s.patch(url, params={"dryRun": "All"}, json=patch, headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200 and r.json()["spec"]["replicas"] == 3
    assert state(sim, "dr") == before
    res = sim.kubectl("scale", "deploy/dr", "--replicas=4", "--dry-run=server")
    assert "scaled (server dry run)" in res.stdout
    assert state(sim, "dr") == before


# ---- kubectl rollout undo ----

def test_rollout_undo_to_previous_and_given_revision(sim):
    rollout(sim, "ud", "example/ud:1")
    rollout(sim, "ud", "example/ud:2")
    rollout(sim, "ud", "example/ud:3")
    revs = rs_names(sim, "ud")
    assert sorted(revs) == [1, 2, 3]
    before = state(sim, "ud")
    res = sim.kubectl("rollout", "undo", "deploy/ud", "--dry-run=server")
    assert "rolled back (server dry run)" in res.stdout
    assert state(sim, "ud") == before
    sim.kubectl("rollout", "undo", "deploy/ud")
    sim.kubectl("rollout", "status", "deploy/ud", "--timeout=60s")
    d = sim.get_json("deploy", "ud")
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "example/ud:2"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"
    assert rs_names(sim, "ud")[4] == revs[2]  # the revision-2 ReplicaSet is reused as revision 4
    sim.kubectl("rollout", "undo", "deploy/ud", "--to-revision=1")
    sim.kubectl("rollout", "status", "deploy/ud", "--timeout=60s")
    d = sim.get_json("deploy", "ud")
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "example/ud:1"
    hist = sim.kubectl("rollout", "history", "deploy/ud").stdout.split()
    assert hist[hist.index("CHANGE-CAUSE") + 1:] == ["3", "<none>", "4", "<none>", "5", "<none>"]
    res = sim.kubectl("rollout", "undo", "deploy/ud", "--to-revision=9", check=False)
    assert res.returncode == 1 and "unable to find specified revision 9 in history" in res.stderr


# ---- kubectl wait ----

def test_wait_for_available_and_its_timeout(sim):
    f = manifest(sim, "wt", deployment_yaml("wt", "example/wt:1", replicas=2))
    sim.kubectl("apply", "-f", f)
    res = sim.kubectl("wait", "--for=condition=Available", "deployment/wt", "--timeout=60s")
    assert res.stdout.strip() == "deployment.apps/wt condition met"
    res = sim.kubectl("wait", "--for=jsonpath={.status.readyReplicas}=2", "deployment/wt", "--timeout=60s")
    assert "condition met" in res.stdout
    res = sim.kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=wt", "--timeout=60s")
    assert res.stdout.count("condition met") == 2
    # a Deployment whose pods never get ready has Available=False: wait times out
    f = manifest(sim, "wb", deployment_yaml("wb", "example/wb:bad", replicas=2))
    sim.kubectl("apply", "-f", f)
    res = sim.kubectl("wait", "--for=condition=Available", "deployment/wb", "--timeout=2s", check=False)
    assert res.returncode == 1
    assert "timed out waiting for the condition on deployments/wb" in res.stderr
    cond = {c["type"]: c for c in sim.get_json("deploy", "wb")["status"]["conditions"]}["Available"]
    assert (cond["status"], cond["reason"]) == ("False", "MinimumReplicasUnavailable")
    res = sim.kubectl("wait", "--for=condition=Available=False", "deployment/wb", "--timeout=10s")
    assert "condition met" in res.stdout
    # --for=delete
    sim.kubectl("delete", "deployment/wb", "--wait=false")
    sim.kubectl("wait", "--for=delete", "deployment/wb", "--timeout=30s")


# ---- kubectl get -w ----

class Lines:
    """The lines a long-running command prints, read by a thread so that a test waits for
    them with a deadline."""

    def __init__(self, sim, *args):
        self.proc = subprocess.Popen([KUBECTL, "--kubeconfig", sim.kubeconfig, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.q = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.q.put(line.split())
        self.q.put(None)

    def next(self, timeout=30):
        row = self.q.get(timeout=timeout)
        assert row is not None, "the watch ended"
        return row

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


def test_get_watch_prints_the_rollout(sim):
    rollout(sim, "gw", "example/gw:1")
    w = Lines(sim, "get", "deploy", "gw", "-w", "--output-watch-events")
    pw = Lines(sim, "get", "pods", "-l", "app=gw", "-w")
    try:
        assert w.next() == ["EVENT", "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        assert w.next()[:5] == ["ADDED", "gw", "2/2", "2", "2"]
        assert pw.next()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        sim.kubectl("set", "image", "deploy/gw", "app=example/gw:2")
        rows = [w.next()]
        while rows[-1][:5] != ["MODIFIED", "gw", "2/2", "2", "2"] or len(rows) < 3:
            rows.append(w.next())
        up_to_date = [r[3] for r in rows]
        assert "0" in up_to_date and "1" in up_to_date, rows  # the new ReplicaSet grows 0, 1, 2
        assert any(r[2] == "3/2" for r in rows), rows  # maxSurge 1: three pods at one point
        sim.kubectl("rollout", "status", "deploy/gw", "--timeout=60s")
        new_rs = rs_names(sim, "gw")[2]
        seen = {}
        while sum(1 for k, v in seen.items() if k.startswith(new_rs) and v[-1] == "1/1 Running") < 2:
            row = pw.next()
            seen.setdefault(row[0], []).append(f"{row[1]} {row[2]}")
        new_pods = [v for k, v in seen.items() if k.startswith(new_rs)]
        assert all(v[0] == "0/1 Pending" for v in new_pods), seen
    finally:
        w.close()
        pw.close()


# ---- kubectl describe: the Deployment controller's events ----

def test_describe_shows_the_controllers_scaling_events(sim):
    rollout(sim, "ev", "example/ev:1")
    rollout(sim, "ev", "example/ev:2")
    a, b = rs_names(sim, "ev")[1], rs_names(sim, "ev")[2]
    want = [f"Scaled up replica set {a} from 0 to 2",
            f"Scaled up replica set {b} from 0 to 1",
            f"Scaled down replica set {a} to 1 from 2",
            f"Scaled up replica set {b} to 2 from 1",
            f"Scaled down replica set {a} to 0 from 1"]
    assert events(sim, "ev") == [("ScalingReplicaSet", m) for m in want]
    out = sim.kubectl("describe", "deployment", "ev").stdout
    section = out[out.index("Events:"):]
    for m in want:
        assert f"deployment-controller  {m}" in section
    assert f"NewReplicaSet:   {b} (2/2 replicas created)" in out


@pytest.mark.parametrize("name,replicas,extra,want", [
    # getNewReplicaSet records "from 0 to N" only when N > 0
    ("ez", 0, "", []),
    # maxSurge 0: the new ReplicaSet starts at 0 and is scaled up after the old one shrinks
    ("es", 2, "  strategy:\n    rollingUpdate: {maxSurge: 0, maxUnavailable: 1}\n",
     ["Scaled down replica set {a} to 1 from 2", "Scaled up replica set {b} to 1 from 0",
      "Scaled down replica set {a} to 0 from 1", "Scaled up replica set {b} to 2 from 1"]),
    # Recreate: the new ReplicaSet is created at full size once the old pods are gone
    ("er", 2, "  strategy:\n    type: Recreate\n",
     ["Scaled down replica set {a} to 0 from 2", "Scaled up replica set {b} from 0 to 2"]),
])
def test_no_scaled_from_0_to_0_event(sim, name, replicas, extra, want):
    rollout(sim, name, f"example/{name}:1", replicas=replicas, extra_spec=extra)
    rollout(sim, name, f"example/{name}:2", replicas=replicas, extra_spec=extra)
    a, b = rs_names(sim, name)[1], rs_names(sim, name)[2]
    first = [f"Scaled up replica set {a} from 0 to {replicas}"] if replicas else []
    got = [m for _, m in events(sim, name)]
    assert got == first + [m.format(a=a, b=b) for m in want]
    assert "from 0 to 0" not in sim.kubectl("describe", "deployment", name).stdout


# ---- fields newer than the 1.22 schema (schema-newer.json, from kubernetes-models 4.5.0) ----

NEWER_FIELDS = """apiVersion: apps/v1
kind: Deployment
metadata: {name: nf}
spec:
  replicas: 1
  selector: {matchLabels: {app: nf}}
  template:
    metadata: {labels: {app: nf}}
    spec:
      os: {name: linux}
      schedulingGates: []
      securityContext: {appArmorProfile: {type: RuntimeDefault}}
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, minDomains: 1,
         labelSelector: {matchLabels: {app: nf}}, matchLabelKeys: [pod-template-hash]}
      initContainers:
      - {name: proxy, image: "example/proxy:1", restartPolicy: Always}
      containers:
      - name: app
        image: "example/nf:1"
        readinessProbe: {grpc: {port: 9090}}
        resizePolicy: [{resourceName: cpu, restartPolicy: NotRequired}]
        volumeMounts: [{name: data, mountPath: /data, readOnly: true, recursiveReadOnly: Disabled}]
      volumes: [{name: data, emptyDir: {}}]
"""


def test_fields_newer_than_api_1_22_pass_strict_validation(sim):
    """kubectl apply validates Strict: a sidecar (init container restartPolicy), a gRPC probe,
    PodSpec.os, appArmorProfile, ... were unknown fields with the 1.22 schema alone."""
    f = manifest(sim, "nf", NEWER_FIELDS)
    for args in (["apply", "-f", f], ["apply", "--server-side", "--force-conflicts", "-f", f]):
        res = sim.kubectl(*args, check=False)
        assert res.returncode == 0, res.stderr
        assert "unknown field" not in res.stderr
    spec = sim.get_json("deploy", "nf")["spec"]["template"]["spec"]
    assert spec["initContainers"][0]["restartPolicy"] == "Always"
    assert spec["containers"][0]["readinessProbe"]["grpc"] == {"port": 9090}
    assert spec["os"] == {"name": "linux"}
    res = sim.kubectl("explain", "deployment.spec.template.spec.os.name")
    assert "FIELD: name <string>" in res.stdout
    # a wrong type in a newer field is a decoding error as any other
    bad = manifest(sim, "nf-bad", NEWER_FIELDS.replace("grpc: {port: 9090}", 'grpc: {port: "9090"}'))
    res = sim.kubectl("apply", "-f", bad, check=False)
    assert res.returncode == 1 and "GRPCAction.spec.template.spec.containers.readinessProbe.grpc.port" in res.stderr


def test_a_repeated_event_is_counted_not_recorded_again(sim):
    """The recorder's EventLogger: the same event again (object, reason, message, source) raises
    the count of the first and moves its lastTimestamp; describe shows '(x2 over ...)'."""
    rollout(sim, "rp", "example/rp:1")
    rollout(sim, "rp", "example/rp:2")
    for _ in range(2):
        sim.kubectl("rollout", "undo", "deploy/rp")
        sim.kubectl("rollout", "status", "deploy/rp", "--timeout=60s")
    evs = sim.session().get(f"{sim.url}/api/v1/namespaces/default/events",
                            params={"fieldSelector": "involvedObject.name=rp"}).json()["items"]
    msgs = [e["message"] for e in evs]
    assert len(msgs) == len(set(msgs)), msgs
    counts = {e["message"]: e["count"] for e in evs}
    twice = [m for m, n in counts.items() if n == 2]
    assert twice and all(n in (1, 2) for n in counts.values()), counts
    again = [e for e in evs if e["count"] == 2]
    assert all(e["lastTimestamp"] >= e["firstTimestamp"] for e in again)
    out = sim.kubectl("describe", "deployment", "rp").stdout
    assert "(x2 over" in out
