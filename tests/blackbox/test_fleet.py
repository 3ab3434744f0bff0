"""Running the fleet: /metrics, /healthz, /readyz, scaling a stage, the configuration reference,
the Kubernetes manifests, docker-compose and the Dockerfile."""
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from harness import REPO, bin_path, wait_for
from releases import ACTIVE, deploy, setup_service, wait_status

K8S = REPO / "ops" / "k8s"
STAGES = ("render", "apply", "track", "notify")
STAGE_TOPICS = {"render": ["requests"], "apply": ["rendered"], "track": ["applied", "commands"],
                "notify": ["results"]}

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def http_get(addr, path, timeout=5):
    """(status, body) of GET http://addr/path."""
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def parse_metrics(text):
    """Prometheus text -> {(name, frozenset(labels.items())): value}; checks every line."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = dict(_LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), frozenset(labels.items()))] = float(m.group(3))
    return samples


def metric(samples, name, **labels):
    """Sum of the samples of name whose labels include labels."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def scrape(addr):
    status, body = http_get(addr, "/metrics")
    assert status == 200, body
    return parse_metrics(body)


def workers(stack):
    """{"render-1": "127.0.0.1:port", ...} of the live workers, from ops/stack status."""
    rows, _ = stack.status()
    return {name: row[1] for name, row in rows.items()
            if re.fullmatch(r"[a-z]+-\d+", name) and row[2] == "alive"}


def assigned(addr, topic):
    """The partitions of topic a worker is assigned, per its lag gauge."""
    samples = scrape(addr)
    return {dict(ls)["partition"] for (n, ls), _ in samples.items()
            if n == "relfleet_kafka_consumer_lag" and dict(ls).get("topic") == topic}


def test_every_worker_serves_health_and_metrics(stack):
    live = workers(stack)
    assert {n.split("-")[0] for n in live} >= {"render", "apply", "track"}, live
    for name, addr in live.items():
        assert re.fullmatch(r"127\.0\.0\.1:\d+", addr), (name, addr)
        assert http_get(addr, "/healthz") == (200, "ok\n")
        wait_for(lambda: http_get(addr, "/readyz")[0] == 200, 30, f"{name} to be ready")
        samples = scrape(addr)
        stage = name.split("-")[0]
        for check in ("postgres", "kafka"):
            assert metric(samples, "relfleet_ready", stage=stage, check=check) == 1
        assert http_get(addr, "/nope")[0] == 404


def test_metrics_move_during_a_release(stack, harness):
    h = harness
    live = workers(stack)
    addr = {n.split("-")[0]: a for n, a in sorted(live.items())}
    before = {s: scrape(addr[s]) for s in ("render", "apply", "track")}
    svc = setup_service(h)
    rid = deploy(h, svc, "1.0.0")
    wait_status(h, rid, "succeeded", timeout=90)
    topic = h.topic

    def moved():
        after = {s: scrape(addr[s]) for s in ("render", "apply", "track")}
        checks = [
            ("render", "relfleet_messages_consumed_total", {"topic": topic("requests")}),
            ("render", "relfleet_messages_produced_total", {"topic": topic("rendered")}),
            ("render", "relfleet_stage_processing_seconds_count", {"topic": topic("requests")}),
            ("apply", "relfleet_messages_consumed_total", {"topic": topic("rendered")}),
            ("apply", "relfleet_messages_produced_total", {"topic": topic("applied")}),
            ("track", "relfleet_messages_consumed_total", {"topic": topic("applied")}),
            ("track", "relfleet_messages_produced_total", {"topic": topic("results")}),
        ]
        for stage, name, labels in checks:
            if not metric(after[stage], name, stage=stage, **labels) > \
                    metric(before[stage], name, stage=stage, **labels):
                return None
        return after

    after = wait_for(moved, 30, "the counters of render, apply and track to move")
    # Histogram buckets are cumulative and end in +Inf = count.
    r = after["render"]
    count = metric(r, "relfleet_stage_processing_seconds_count", topic=topic("requests"))
    assert metric(r, "relfleet_stage_processing_seconds_bucket", topic=topic("requests"),
                  le="+Inf") == count
    assert metric(r, "relfleet_stage_processing_seconds_sum", topic=topic("requests")) > 0
    # Consumer lag is there for each assigned partition (statistics every 5 s).
    wait_for(lambda: len(assigned(addr["render"], topic("requests"))) == 6, 30,
             "render's lag gauges of all 6 partitions")


def test_dead_letters_are_counted_by_reason(stack, harness):
    h = harness
    addr = {n.split("-")[0]: a for n, a in sorted(workers(stack).items())}
    labels = {"stage": "render", "topic": h.topic("requests"), "reason": "invalid"}
    before = metric(scrape(addr["render"]), "relfleet_messages_dead_lettered_total", **labels)
    h.produce("requests", b"prod/metrics-broken", b"{not json")
    wait_for(lambda: metric(scrape(addr["render"]), "relfleet_messages_dead_lettered_total",
                            **labels) == before + 1, 30, "the dead letter to be counted")


def _pg(stack, action):
    """Stops or starts the stack's PostgreSQL on its port, as ops/stack runs it."""
    comp = (stack.state_dir / "components").read_text().splitlines()
    port = [c.split("|")[3] for c in comp if c.startswith("postgres|")][0].split(":")[1]
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1].parent
    data = stack.state_dir / "pg" / "data"
    cmd = [str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "30"]
    if action == "stop":
        cmd += ["-m", "fast", "stop"]
    else:
        cmd += ["-l", str(stack.state_dir / "logs" / "postgres.log"), "-o", f"-p {port}",
                "start"]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "relfleet", "--"] + cmd
    subprocess.run(cmd, check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


def test_readyz_follows_postgresql(stack_factory):
    s = stack_factory.start({"RELFLEET_STACK_STAGES": "render notify",
                             "RELFLEET_HEALTH_INTERVAL_MS": "500"})
    live = workers(s)
    assert set(live) == {"render-1", "notify-1"}, live
    for name, addr in live.items():
        wait_for(lambda: http_get(addr, "/readyz")[0] == 200, 30, f"{name} ready")
    _pg(s, "stop")
    try:
        for name, addr in live.items():
            status, body = wait_for(lambda: (r := http_get(addr, "/readyz"))[0] == 503 and r,
                                    30, f"{name} to report not ready")
            assert body.startswith("postgres: "), body
            assert "kafka" not in body and "redis" not in body, body
            # Alive all the same: nothing for a liveness probe to restart.
            assert http_get(addr, "/healthz")[0] == 200
            assert metric(scrape(addr), "relfleet_ready", check="postgres") == 0
    finally:
        _pg(s, "start")
    for name, addr in live.items():
        wait_for(lambda: http_get(addr, "/readyz") == (200, "ready\n"), 30,
                 f"{name} ready again")
        assert metric(scrape(addr), "relfleet_ready", check="postgres") == 1


def test_two_render_workers_share_partitions_and_take_over(stack_factory):
    from harness import Harness

    s = stack_factory.start({"RELFLEET_STACK_STAGES": "render",
                             "RELFLEET_STACK_WORKERS_PER_STAGE": "2"})
    h = Harness(s)
    topic = h.topic("requests")
    live = workers(s)
    assert set(live) == {"render-1", "render-2"}, live

    def split():
        parts = [assigned(a, topic) for a in live.values()]
        ok = all(parts) and not (parts[0] & parts[1]) and len(parts[0] | parts[1]) == 6
        return ok and parts

    wait_for(split, 60, "the two render workers to split the 6 partitions")
    services = [setup_service(h) for _ in range(12)]
    first = {deploy(h, svc, "1.0.0"): svc for svc in services}
    for rid in first:
        wait_status(h, rid, ACTIVE | {"succeeded"}, timeout=60)
    counts = {n: metric(scrape(a), "relfleet_messages_consumed_total", topic=topic)
              for n, a in live.items()}
    assert all(c > 0 for c in counts.values()), f"releases not spread over both: {counts}"
    assert sum(counts.values()) >= len(first)

    # Stop one (SIGKILL: no goodbye to the group); releases sent right now are not lost.
    s.run("worker", "kill", "render")
    survivor = [a for n, a in live.items() if n == "render-2"][0]
    others = [setup_service(h) for _ in range(12)]
    second = [deploy(h, svc, "1.0.0") for svc in others]
    wait_for(lambda: len(assigned(survivor, topic)) == 6, 60,
             "render-2 to take all 6 partitions")
    for rid in second:
        wait_status(h, rid, ACTIVE | {"succeeded"}, timeout=90)
    # Each release rendered: one `rendered` message each, none lost.
    rendered = h.consume("rendered", timeout=30, until=lambda ms: set(first) | set(second) <= {
        m.json()["release_id"] for m in ms})
    ids = [m.json()["release_id"] for m in rendered]
    for rid in list(first) + second:
        assert rid in ids


def test_bad_kafka_options_stop_the_worker_naming_them(stack, harness):
    env = dict(harness.env)
    env["RELFLEET_METRICS_ADDR"] = "127.0.0.1:0"
    cases = [
        ("no.such.property=1", "'no.such.property'"),
        ("security.protocol", "'security.protocol' is not key=value"),
        ("sasl.password=@relfleet_test_missing_secret",
         "secret 'relfleet_test_missing_secret' for 'sasl.password' not found"),
    ]
    for options, expected in cases:
        env["RELFLEET_KAFKA_OPTIONS"] = options
        proc = subprocess.run([str(bin_path("relfleet-worker")), "notify"], env=env,
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 1, (options, proc.stderr)
        assert expected in proc.stderr, (options, proc.stderr)
    env["RELFLEET_SECRET_RELFLEET_TEST_CID"] = "cid-from-secret"
    env["RELFLEET_KAFKA_OPTIONS"] = " client.id = @relfleet_test_cid ; socket.keepalive.enable=true;"
    env["RELFLEET_METRICS_ADDR"] = "off"
    # Topics of its own: joining the stack's notify group would take its partitions.
    env["RELFLEET_TOPIC_PREFIX"] = "fleettest."
    proc = subprocess.Popen([str(bin_path("relfleet-worker")), "notify"], env=env,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        line = wait_for(lambda: (ln := proc.stderr.readline()) and "started" in ln and ln, 30,
                        "the worker to start with valid kafka_options")
        assert "consumer group" in line
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_metrics_address_in_use_is_refused(stack, harness):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    env = dict(harness.env)
    env["RELFLEET_METRICS_ADDR"] = "127.0.0.1:%d" % taken.getsockname()[1]
    try:
        proc = subprocess.run([str(bin_path("relfleet-worker")), "notify"], env=env,
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    finally:
        taken.close()
    assert proc.returncode == 1
    assert "cannot listen on metrics address" in proc.stderr, proc.stderr


# -- docs, manifests, containers ---------------------------------------------------------

def test_configuration_reference_is_up_to_date(tmp_path):
    out = tmp_path / "configuration.md"
    subprocess.run([str(REPO / "ops" / "gen-config-reference"), str(out)], check=True,
                   env=dict(os.environ, RELFLEET_BUILD_DIR=str(bin_path("x").parent.parent)),
                   timeout=60, capture_output=True)
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert out.read_text() == committed, \
        "docs/configuration.md is stale: run ops/gen-config-reference"
    table = subprocess.run([str(bin_path("relfleet-worker")), "--config-reference"],
                           capture_output=True, text=True, check=True).stdout
    assert table in committed
    for name in ("metrics_addr", "kafka_options", "kafka_stats_interval_ms"):
        assert f"| `{name}` |" in committed


def _docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all_manifests():
    docs = []
    for f in sorted(K8S.glob("*.yaml")) + sorted((K8S / "keda").glob("*.yaml")):
        docs += [(f, d) for d in _docs(f)]
    return docs


def test_k8s_manifests_have_the_expected_structure():
    docs = _all_manifests()
    kinds = {}
    for f, d in docs:
        assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), (f, d)
        kinds.setdefault(d["kind"], []).append(d)
    deployments = {d["metadata"]["name"]: d for d in kinds["Deployment"]}
    assert set(deployments) == {f"relfleet-{s}" for s in STAGES}
    config_names = {d["metadata"]["name"] for d in kinds["ConfigMap"]}
    secret_names = {d["metadata"]["name"] for d in kinds["Secret"]}
    for stage in STAGES:
        dep = deployments[f"relfleet-{stage}"]
        pod = dep["spec"]["template"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        c = spec["containers"][0]
        assert c["args"] == [stage]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        port = c["ports"][0]["containerPort"]
        assert c["livenessProbe"]["httpGet"]["port"] in (port, c["ports"][0]["name"])
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
        env = {e["name"]: e for e in c.get("env", [])}
        assert env["RELFLEET_METRICS_ADDR"]["value"] == f"0.0.0.0:{port}"
        refs = {r.get("configMapRef", r.get("secretRef"))["name"] for r in c["envFrom"]}
        assert refs & config_names and refs & secret_names, refs
        wants_kube = stage in ("apply", "track")
        assert (spec.get("serviceAccountName") == "relfleet-deployer") == wants_kube, stage
        assert spec.get("automountServiceAccountToken", False) == wants_kube, stage
    # A PodDisruptionBudget for each stage, matching its pods.
    pdbs = {d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
            for d in kinds["PodDisruptionBudget"]}
    assert pdbs == set(STAGES)
    # RBAC: only what apply and track use.
    rules = [r for d in kinds["ClusterRole"] for r in d["rules"]]
    allowed = {"get", "list", "watch", "create", "patch", "update", "delete"}
    for r in rules:
        assert set(r["verbs"]) <= allowed and "*" not in r["resources"], r
    resources = {res for r in rules for res in r["resources"]}
    assert {"deployments", "pods", "pods/log", "replicasets", "events"} <= resources
    assert not resources & {"secrets", "clusterroles", "roles", "rolebindings"}
    binding = kinds["ClusterRoleBinding"][0]
    assert binding["subjects"][0]["name"] == "relfleet-deployer"
    assert any(d["metadata"]["name"] == "relfleet-deployer" for d in kinds["ServiceAccount"])
    # KEDA: one ScaledObject per stage, its group and topics, partitions as the ceiling.
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in kinds["ScaledObject"]}
    assert set(scaled) == {f"relfleet-{s}" for s in STAGES}
    for stage in STAGES:
        so = scaled[f"relfleet-{stage}"]
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert so["spec"]["maxReplicaCount"] == 6
        assert so["spec"]["minReplicaCount"] >= 1
        triggers = so["spec"]["triggers"]
        assert sorted(t["metadata"]["topic"] for t in triggers) == \
            sorted("relfleet." + t for t in STAGE_TOPICS[stage])
        for t in triggers:
            assert t["type"] == "kafka"
            assert t["metadata"]["consumerGroup"] == f"relfleet.{stage}"
            assert t["metadata"]["allowIdleConsumers"] == "false"
            assert int(t["metadata"]["lagThreshold"]) > 0
            assert t["authenticationRef"]["name"] == "relfleet-kafka"
    assert kinds["TriggerAuthentication"][0]["metadata"]["name"] == "relfleet-kafka"
    # The KEDA kinds live apart from what any cluster accepts.
    for f, d in docs:
        assert (d["apiVersion"].startswith("keda.sh/")) == (f.parent.name == "keda"), (f, d)


def _kubectl_name(doc):
    """How kubectl names an object in its output: deployment.apps/relfleet-render."""
    api = doc["apiVersion"]
    group = "." + api.split("/")[0] if "/" in api else ""
    return f"{doc['kind'].lower()}{group}/{doc['metadata']['name']}"


def _contains(want, got, path="."):
    """Asserts that got holds want: dict keys recursively (the server may add defaults),
    lists element by element with the same length, scalars equal."""
    if isinstance(want, dict):
        assert isinstance(got, dict), (path, got)
        for k, v in want.items():
            assert k in got, (f"{path}{k}", sorted(got))
            _contains(v, got[k], f"{path}{k}.")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (path, want, got)
        for i, (w, g) in enumerate(zip(want, got)):
            _contains(w, g, f"{path}[{i}].")
    else:
        assert want == got, (path, want, got)


@pytest.fixture
def fleet_kubesim(tmp_path, monkeypatch):
    """A kubesim of its own (not the stack's): the manifests make cluster-scoped objects."""
    import kubesim_fixture

    binary = bin_path("kubesim")
    if not binary.exists():
        pytest.skip(f"{binary} is not built")
    monkeypatch.setattr(kubesim_fixture, "KUBESIM", str(binary))
    with kubesim_fixture.kubesim(tmp_path / "kubesim") as k:
        yield k


def test_k8s_manifests_apply_to_kubesim(fleet_kubesim):
    """kubectl apply --server-side -f ops/k8s/ (every kind but KEDA's, which live in keda/ and
    need CRDs), read back with kubectl get, applied again without a write, deleted."""
    import base64

    k = fleet_kubesim
    docs = [d for f, d in _all_manifests() if f.parent == K8S]
    assert {d["kind"] for d in docs} == {"Namespace", "ConfigMap", "Secret", "PodDisruptionBudget",
                                         "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                         "Deployment"}
    out = k.kubectl("apply", "--server-side", "--field-manager=relfleet-test", "-f", f"{K8S}/")
    applied = [ln for ln in out.stdout.splitlines() if ln.strip()]
    assert sorted(applied) == sorted(f"{_kubectl_name(d)} serverside-applied" for d in docs), \
        out.stdout
    # -f DIR does not recurse: keda/ (ScaledObjects need KEDA's CRDs) is checked offline only
    assert not any("scaledobject" in ln or "triggerauthentication" in ln for ln in applied)

    # Read back: every object with its labels and every field it was applied with.
    live = {}
    for args in (("-n", "relfleet", "configmaps,secrets,serviceaccounts,poddisruptionbudgets,"
                  "deployments"), ("namespaces,clusterroles,clusterrolebindings",)):
        for item in k.get_json(*args)["items"]:
            live[(item["kind"], item["metadata"]["name"])] = item
    for d in docs:
        got = live.get((d["kind"], d["metadata"]["name"]))
        assert got, (d["kind"], d["metadata"]["name"], sorted(live))
        assert got["apiVersion"] == d["apiVersion"]
        assert got["metadata"].get("namespace") == d["metadata"].get("namespace")
        assert got["metadata"]["labels"].items() >= d["metadata"]["labels"].items()
        _contains({key: v for key, v in d.items()
                   if key not in ("apiVersion", "kind", "metadata", "stringData")}, got)
        if d["kind"] == "Secret":
            # stringData is merged into data, base64, as the API server stores it
            assert "stringData" not in got and got["type"] == "Opaque"
            assert {key: base64.b64decode(v).decode() for key, v in got["data"].items()} == \
                d["stringData"]
    # What the fleet relies on, read with kubectl get as an operator would.
    cm = k.get_json("configmap", "relfleet-config", "-n", "relfleet")
    manifest_cm = next(d for d in docs if d["metadata"]["name"] == "relfleet-config")
    assert sorted(cm["data"]) == sorted(manifest_cm["data"])
    assert "RELFLEET_KAFKA_BROKERS" in cm["data"]
    assert "kubeconfig" in k.get_json("configmap", "relfleet-kubeconfig", "-n", "relfleet")["data"]
    for stage in STAGES:
        pdb = k.get_json("pdb", f"relfleet-{stage}", "-n", "relfleet")
        assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == stage
    pdbs = k.kubectl("get", "pdb", "-n", "relfleet", "--no-headers").stdout.split("\n")
    assert [ln.split()[:3] for ln in pdbs if ln] == \
        [[f"relfleet-{s}", "N/A", "1"] for s in sorted(STAGES)]
    role = k.get_json("clusterrole", "relfleet-deployer")
    manifest_role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert role["rules"] == manifest_role["rules"]
    assert {"apiGroups": ["apps"], "resources": ["deployments"],
            "verbs": ["get", "list", "watch", "create", "patch"]} in role["rules"]
    binding = k.get_json("clusterrolebinding", "relfleet-deployer")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "relfleet-deployer"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "relfleet-deployer",
                                    "namespace": "relfleet"}]
    wide = k.kubectl("get", "clusterrolebinding", "relfleet-deployer", "-o", "wide").stdout
    assert "ClusterRole/relfleet-deployer" in wide and "relfleet/relfleet-deployer" in wide
    assert k.get_json("serviceaccount", "relfleet-deployer", "-n", "relfleet")["metadata"]["name"]
    deps = k.get_json("deployments", "-n", "relfleet")["items"]
    assert {i["metadata"]["name"] for i in deps} == {f"relfleet-{s}" for s in STAGES}
    for dep in deps:
        pod = dep["spec"]["template"]["spec"]
        assert pod["containers"][0]["envFrom"], dep["metadata"]["name"]

    # The same apply again changes nothing: no object gets a new resourceVersion (the
    # Deployments' status moves with their pods, so those are left out).
    def versions():
        items = k.get_json("-n", "relfleet", "configmaps,secrets,serviceaccounts,"
                           "poddisruptionbudgets")["items"]
        items += k.get_json("clusterroles,clusterrolebindings")["items"]
        return {(i["kind"], i["metadata"]["name"]): i["metadata"]["resourceVersion"]
                for i in items}

    before = versions()
    k.kubectl("apply", "--server-side", "--field-manager=relfleet-test", "-f", f"{K8S}/")
    assert versions() == before

    # Deleted file by file, the namespace last, as an operator tears the fleet down.
    files = sorted(K8S.glob("*.yaml"), reverse=True)
    assert files[-1].name == "00-namespace.yaml"
    out = k.kubectl("delete", *[a for f in files for a in ("-f", str(f))])
    assert 'clusterrole.rbac.authorization.k8s.io "relfleet-deployer" deleted' in out.stdout
    for args in (("clusterrole", "relfleet-deployer"), ("clusterrolebinding", "relfleet-deployer"),
                 ("namespace", "relfleet")):
        res = k.kubectl("get", *args, check=False)
        assert res.returncode != 0 and "not found" in res.stderr, (args, res.stderr)


def test_docker_compose_config_passes():
    proc = subprocess.run(["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    conf = yaml.safe_load(proc.stdout)
    services = conf["services"]
    for stage in STAGES:
        w = services[f"worker-{stage}"]
        assert w["command"] == [stage] or w["command"] == stage, w["command"]
        assert w["environment"]["RELFLEET_KAFKA_BROKERS"] == "kafka:9092"
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper
    assert not any("zookeeper" in name for name in services)
    for name in ("postgres", "redis", "kubesim", "kafka"):
        assert name in services


def test_dockerfile_is_multistage_slim_and_non_root():
    text = (REPO / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(froms) >= 2, froms
    assert froms[-1][0].startswith("debian:bookworm-slim"), froms
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), users
    for binary in ("relfleet-worker", "relctl", "kubesim", "relfleet-devbroker"):
        assert binary in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "build*" in ignored and ".run" in ignored and ".git" in ignored


def test_readyz_of_apply_and_track_follows_the_api_server(stack_factory):
    from harness import Harness
    from test_outages import kube_fault

    s = stack_factory.start({"RELFLEET_STACK_STAGES": "apply track",
                             "RELFLEET_HEALTH_INTERVAL_MS": "500"})
    h = Harness(s)
    live = workers(s)
    assert set(live) == {"apply-1", "track-1"}, live
    for name, addr in live.items():
        wait_for(lambda: http_get(addr, "/readyz")[0] == 200, 30, f"{name} ready")
    kube_fault(h, {"down": True})
    try:
        for name, addr in live.items():
            status, body = wait_for(lambda: (r := http_get(addr, "/readyz"))[0] == 503 and r,
                                    30, f"{name} to report not ready")
            assert body.startswith("stage: "), body
            assert http_get(addr, "/healthz")[0] == 200
    finally:
        kube_fault(h, {"down": False})
    for name, addr in live.items():
        wait_for(lambda: http_get(addr, "/readyz") == (200, "ready\n"), 30, f"{name} ready again")
