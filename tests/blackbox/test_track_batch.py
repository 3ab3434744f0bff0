"""The track stage ends releases in batches: rollouts that complete together end in a few
statements (one transaction for many), each with its progress before its end, one `results`
message, its service lock freed and the next queued release started; a command queued while
a release applied is still answered when the release rolls out without gray steps; a
`results` message that a killed worker owed is sent by another. One stack for the module
(kafka_timeout_ms 2 s, so an owed message is swept after 9 s): the track worker is paused
(SIGSTOP) while rollouts complete."""
import json
import os
import signal
import subprocess

import pytest

from conftest import start_stack, stop_stack
from harness import Harness, pid_alive
from releases import TERMINAL, deploy, record, setup_service, wait_status
from test_outages import kube_fault


@pytest.fixture(scope="module")
def tstack(request):
    s = start_stack({"RELFLEET_KAFKA_TIMEOUT_MS": "2000"})
    yield s
    stop_stack(s, save_logs_as="track-batch-logs" if request.session.testsfailed else None)


@pytest.fixture
def h(tstack):
    return Harness(tstack)


def track_pid(h):
    return next(pid for name, pid in h.stack.pids().items() if name.startswith("track-"))


def redis_get(h, key):
    hostport = h.env["RELFLEET_REDIS_URL"].split("//", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    proc = subprocess.run(["redis-cli", "-h", host, "-p", port, "GET", key],
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def deployment_ready(h, ns, name):
    out = subprocess.run(["kubectl", "--kubeconfig", h.env["RELFLEET_KUBECONFIG"], "-n", ns,
                          "get", "deployment", name, "-o", "json"],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        return False
    st = json.loads(out.stdout).get("status", {})
    return st.get("readyReplicas", 0) >= 1 and st.get("updatedReplicas", 0) >= 1


def test_rollouts_completing_together_end_in_one_batch(h):
    n = 12
    services = [setup_service(h, versions=("1.0.0", "1.1.0"), replicas=1, policy="queue")
                for _ in range(n)]
    pid = track_pid(h)
    os.kill(pid, signal.SIGSTOP)
    try:
        rids = [deploy(h, svc, "1.0.0") for svc in services]
        for rid in rids:
            wait_status(h, rid, "progressing", timeout=60)
        queued = deploy(h, services[0], "1.1.0")
        wait_status(h, queued, "queued", timeout=30)
        for svc in services:
            ns = h.relctl_json("service", "show", svc, "--env", "prod")["namespace"]
            h.wait_for(lambda: deployment_ready(h, ns, svc), 60, f"{svc} to be ready")
    finally:
        os.kill(pid, signal.SIGCONT)
    recs = [wait_status(h, rid, TERMINAL, timeout=60) for rid in rids]
    for svc, rec in zip(services, recs):
        assert rec["status"] == "succeeded", rec
        events = [e["event"] for e in rec["timeline"]]
        assert events.count("succeeded") == 1, events
        progress = [i for i, e in enumerate(rec["timeline"]) if e["event"] == "progress"]
        assert progress and progress[-1] < events.index("succeeded"), events
        assert rec["timeline"][progress[-1]]["message"].startswith(
            f"deployment {svc} successfully rolled out"), rec["timeline"][progress[-1]]
    # All of them completed while the worker slept: a few statements ended them all (rows
    # updated by one statement share its transaction id), not one transaction each.
    ids = ",".join(f"'{r}'" for r in rids)
    xids = h.psql(f"SELECT count(DISTINCT xmin::text) FROM releases WHERE id IN ({ids})")
    assert int(xids[0][0]) <= n // 2, xids
    # One `results` message each.
    msgs = h.consume("results", timeout=60,
                     until=lambda ms: {m.json()["release_id"] for m in ms} >= set(rids))
    for rid in rids:
        assert sum(1 for m in msgs if m.json()["release_id"] == rid) == 1, rid
    # The locks are free and the queued release of the first service started.
    rec = wait_status(h, queued, TERMINAL, timeout=60)
    assert rec["status"] == "succeeded", rec
    for svc in services[1:]:
        assert redis_get(h, f"relfleet:lock:prod/{svc}") == ""


def test_promote_sent_while_applying_is_answered_when_no_gray_steps_follow(h):
    strategy = {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    # Render checks manifests against the cluster's schema, which it reads from the cluster
    # once: a release of another service reads it while the cluster answers (run alone, this
    # test found render waiting, the release queued, for the cluster to come back).
    warm = setup_service(h, versions=("1.0.0",), replicas=1)
    assert wait_status(h, deploy(h, warm, "1.0.0"), TERMINAL, timeout=60)["status"] == \
        "succeeded"
    svc = setup_service(h, versions=("1.0.0",), replicas=2, strategy=json.dumps(strategy))
    kube_fault(h, {"down": True})
    try:
        rid = deploy(h, svc, "1.0.0")
        wait_status(h, rid, "applying", timeout=60)
        h.relctl("promote", rid)
        h.wait_for(lambda: (r := h.psql(f"SELECT jsonb_array_length(coalesce(track -> "
                                         f"'commands', '[]')) FROM releases WHERE id = '{rid}'"))
                   and r[0][0] == "1", 30, "the promote to be queued")
    finally:
        kube_fault(h, {"down": False})
    # The first release of a canary service has no stable version: it rolls out directly,
    # and the promote queued meanwhile is answered, not left behind.
    rec = wait_status(h, rid, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec
    h.wait_for(lambda: any("promote ignored: this release rolls out without gray steps"
                           in e["message"] for e in record(h, rid)["timeline"]), 30,
               "the promote to be answered")
    left = h.psql(f"SELECT jsonb_array_length(coalesce(track -> 'commands', '[]'))"
                  f" FROM releases WHERE id = '{rid}'")
    assert left[0][0] == "0", left


def test_results_owed_by_a_killed_track_worker_are_sent_once_by_another(h):
    """Track ends a release in PostgreSQL, then produces its `results` message. Killed in
    between (the broker is down, so the delivery waits), the message stays owed; once the
    dead worker's hold lapses, another track worker's sweep sends it, once."""
    svc = setup_service(h, replicas=1)
    pid = track_pid(h)
    os.kill(pid, signal.SIGSTOP)
    try:
        rid = deploy(h, svc, "1.0.0")
        wait_status(h, rid, "progressing", timeout=60)
        ns = h.relctl_json("service", "show", svc, "--env", "prod")["namespace"]
        h.wait_for(lambda: deployment_ready(h, ns, svc), 60, f"{svc} to be ready")
        h.broker_ctl("broker-down -1")
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        h.wait_for(lambda: h.psql(f"SELECT status, EXISTS (SELECT 1 FROM release_results_owed o"
                                  f" WHERE o.release_id = r.id) FROM releases r"
                                  f" WHERE r.id = '{rid}'")
                   == [["succeeded", "t"]], 60, "the release to end with its results owed")
        os.kill(pid, signal.SIGKILL)
        h.wait_for(lambda: not pid_alive(pid), 15, "the worker to die")
    finally:
        h.broker_ctl("broker-up -1")
    h.stack.run("worker", "start", "track")
    msgs = h.consume("results", timeout=60,
                     until=lambda ms: any(m.json()["release_id"] == rid for m in ms))
    h.wait_for(lambda: h.psql(f"SELECT count(*) FROM release_results_owed"
                              f" WHERE release_id = '{rid}'")
               == [["0"]], 30, "the results to be marked delivered")
    msgs = h.consume("results")
    assert [m.json()["status"] for m in msgs if m.json()["release_id"] == rid] == ["succeeded"]
