"""Outages of what the workers depend on: Redis, PostgreSQL, the Kubernetes API, the broker,
and SIGTERM. Releases pause and continue; nothing is lost and offsets are stored only once
the work is done. One stack for the module (short lock lease, short shutdown bound)."""
import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.request

import pytest
import yaml

from conftest import start_stack, stop_stack
from harness import Harness, pid_alive, wait_for
from releases import TERMINAL, deploy, record, setup_service, wait_status

LEASE_MS = 3000
SHUTDOWN_MS = 3000


@pytest.fixture(scope="module")
def ostack(request):
    s = start_stack({"RELFLEET_LOCK_LEASE_MS": str(LEASE_MS),
                     "RELFLEET_SHUTDOWN_TIMEOUT_MS": str(SHUTDOWN_MS),
                     "RELFLEET_RETRY_MAX_MS": "1000",
                     "RELFLEET_SWEEP_INTERVAL_MS": "500"})
    yield s
    stop_stack(s, save_logs_as="outages-logs" if request.session.testsfailed else None)


@pytest.fixture
def h(ostack):
    return Harness(ostack)


def redis_get(h, key):
    url = h.env["RELFLEET_REDIS_URL"]
    hostport = url.split("//", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    proc = subprocess.run(["redis-cli", "-h", host, "-p", port, "GET", key],
                          capture_output=True, text=True, timeout=10)
    return proc.stdout.strip() if proc.returncode == 0 else None


def request_partition(h, rid):
    """(partition, offset) of the release's message on `requests`."""
    msgs = h.consume("requests", timeout=30,
                     until=lambda ms: any(m.json().get("release_id") == rid for m in ms))
    m = [m for m in msgs if m.json().get("release_id") == rid][-1]
    return m.partition, m.offset


@contextlib.contextmanager
def frozen(h, stage):
    """The stage's workers stopped (SIGSTOP) inside the block, continued after."""
    pids = [int(r.split()[2]) for r in h.stack.run("worker", "list").stdout.splitlines()
            if r.startswith(stage + " ")]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield pids
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def committed(h, group_suffix, topic_suffix, partition):
    """The offset the stage's consumer group committed on a partition (-1001: none)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": h.env["RELFLEET_KAFKA_BROKERS"],
                  "group.id": h.prefix + group_suffix, "enable.auto.commit": False})
    try:
        tp = c.committed([TopicPartition(h.topic(topic_suffix), partition)], timeout=10)
        return tp[0].offset
    finally:
        c.close()


def kube_fault(h, body):
    """POST /kubesim/faults with the kubeconfig's server, CA and token."""
    cfg = yaml.safe_load(open(h.env["RELFLEET_KUBECONFIG"]))
    cluster = cfg["clusters"][0]["cluster"]
    user = cfg["users"][0]["user"]
    ctx = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    req = urllib.request.Request(cluster["server"] + "/kubesim/faults",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": "Bearer " + user["token"],
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        return json.loads(resp.read() or b"{}")


def results_for(h, rid, timeout=60):
    msgs = h.consume("results", timeout=timeout,
                     until=lambda ms: any(m.json()["release_id"] == rid for m in ms))
    return [m for m in msgs if m.json()["release_id"] == rid]


def log_lines(h, stage, needle):
    n = 0
    for path in (h.stack.state_dir / "logs").glob(f"{stage}-*.log"):
        n += sum(1 for line in path.open(errors="replace") if needle in line)
    return n


def test_track_keeps_a_short_lock_lease_alive_while_progressing(h):
    """Regression: track renewed service locks every 5 s whatever the lease, so a lease
    under 5 s lapsed under a progressing release and let the gate open."""
    svc = setup_service(h, versions=("bad-1",), timeout="12s")
    rid = deploy(h, svc, "bad-1")
    wait_status(h, rid, "progressing")
    key = f"relfleet:lock:prod/{svc}"
    # Sample the lock for three leases: it must be held by the release the whole time.
    end = time.monotonic() + 3 * LEASE_MS / 1000
    samples = []
    while time.monotonic() < end:
        samples.append(redis_get(h, key))
        time.sleep(0.2)
    assert samples and all(v == rid for v in samples), samples
    h.relctl("cancel", rid)
    wait_status(h, rid, "cancelled")


def test_redis_down_render_retries_without_storing_offset_then_continues(h):
    svc = setup_service(h, versions=("1.0.0",))
    h.stack.run("stop", "redis")
    try:
        rid = deploy(h, svc, "1.0.0")
        part, offset = request_partition(h, rid)
        # The request is recorded, but no lock can be taken: it stays queued, retried.
        wait_for(lambda: (record(h, rid) or {}).get("status") == "queued", 30, "queued")
        before = log_lines(h, "render", "will retry: cannot connect to redis")
        wait_for(lambda: log_lines(h, "render", "will retry: cannot connect to redis") > before,
                 30, "render to retry against the missing Redis")
        # Offsets are committed every second: the request's offset must not be among them.
        time.sleep(1.5)
        assert committed(h, "render", "requests", part) <= offset
        assert record(h, rid)["status"] == "queued"
    finally:
        h.stack.run("start", "redis")
    rec = wait_status(h, rid, "succeeded", timeout=60)
    assert [e["event"] for e in rec["timeline"]].count("succeeded") == 1
    wait_for(lambda: committed(h, "render", "requests", part) > offset, 30,
             "render to commit the request's offset once done")
    assert len(results_for(h, rid)) == 1


def test_postgres_down_stages_pause_store_no_offsets_and_resume(h):
    svc = setup_service(h, versions=("1.0.0", "1.1.0"))
    first = deploy(h, svc, "1.0.0")
    wait_status(h, first, "succeeded")
    # relctl needs PostgreSQL (permissions): publish while render is frozen, then stop it.
    with frozen(h, "render"):
        rid = deploy(h, svc, "1.1.0")
        part, offset = request_partition(h, rid)
        h.stack.run("stop", "postgres")
    try:
        before = log_lines(h, "render", "will retry: cannot connect to postgresql")
        wait_for(lambda: log_lines(h, "render", "will retry: cannot connect to postgresql")
                 > before, 30, "render to retry against the missing PostgreSQL")
        time.sleep(1.5)  # offsets are committed every second
        assert committed(h, "render", "requests", part) <= offset
    finally:
        h.stack.run("start", "postgres")
    rec = wait_status(h, rid, "succeeded", timeout=90)
    assert [e["event"] for e in rec["timeline"]].count("succeeded") == 1
    assert len(results_for(h, rid)) == 1
    rows, rc = h.stack.status()
    assert rc == 0, rows  # no worker died of it


def test_postgres_restart_while_progressing_ends_the_release_once(h):
    svc = setup_service(h, versions=("slow-1",), replicas=3)
    rid = deploy(h, svc, "slow-1")
    wait_status(h, rid, "progressing")
    h.stack.run("restart", "postgres")
    rec = wait_status(h, rid, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec
    assert [e["event"] for e in rec["timeline"]].count("succeeded") == 1
    assert len(results_for(h, rid)) == 1
    assert h.stack.status()[1] == 0


def test_kube_api_5xx_and_down_apply_retries(h):
    svc = setup_service(h, versions=("1.0.0",))
    kube_fault(h, {"status": 503, "count": 6})
    try:
        rid = deploy(h, svc, "1.0.0")
        rec = wait_status(h, rid, TERMINAL, timeout=90)
    finally:
        kube_fault(h, {"status": 503, "count": 0})
    assert rec["status"] == "succeeded", rec
    svc2 = setup_service(h, versions=("1.0.0",))
    kube_fault(h, {"down": True})
    try:
        rid2 = deploy(h, svc2, "1.0.0")
        wait_for(lambda: log_lines(h, "apply", f"release={rid2}") and
                 "will retry" in "".join(
                     line for p in (h.stack.state_dir / "logs").glob("apply-*.log")
                     for line in p.open(errors="replace") if rid2 in line),
                 30, "apply to retry against the unreachable API server")
        assert record(h, rid2)["status"] == "applying"
    finally:
        kube_fault(h, {"down": False})
    rec = wait_status(h, rid2, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec


def test_kube_api_down_track_keeps_the_release_until_its_timeout_and_reconnects(h):
    svc = setup_service(h, versions=("bad-2",), replicas=2, timeout="6s")
    rid = deploy(h, svc, "bad-2")
    wait_status(h, rid, "progressing")
    kube_fault(h, {"down": True})
    try:
        # While the API server is away the release is neither ended nor dropped early...
        end = time.monotonic() + 2
        while time.monotonic() < end:
            assert record(h, rid)["status"] == "progressing"
            time.sleep(0.2)
        # ...and its own timeout ends it, not the outage.
        rec = wait_status(h, rid, TERMINAL, timeout=60)
    finally:
        kube_fault(h, {"down": False})
    assert rec["status"] == "failed" and rec["error"].startswith("timed out"), rec
    # The watch came back: a release after the outage is followed to its end.
    svc2 = setup_service(h, versions=("1.0.0",))
    rid2 = deploy(h, svc2, "1.0.0")
    assert wait_status(h, rid2, TERMINAL, timeout=60)["status"] == "succeeded"


@pytest.mark.parametrize("stage", ["render", "apply", "track", "notify"])
def test_sigterm_exits_within_the_shutdown_timeout_even_with_the_broker_down(h, stage):
    """Regression: a worker stuck leaving its group or waiting on a delivery report kept
    running long after SIGTERM; shutdown_timeout_ms now bounds it."""
    rows = [r.split() for r in h.stack.run("worker", "list").stdout.splitlines()]
    if not any(r[0] == stage for r in rows):
        pytest.skip(f"no {stage} stage in this build")
    h.broker_ctl("broker-down -1")
    try:
        out = h.stack.run("worker", "kill", stage, "TERM").stdout.split()
        pid = int(out[2])
        start = time.monotonic()
        wait_for(lambda: not pid_alive(pid), SHUTDOWN_MS / 1000 + 3,
                 f"{stage} worker {pid} to exit after SIGTERM")
        took = time.monotonic() - start
    finally:
        h.broker_ctl("broker-up -1")
        h.stack.run("worker", "start", stage)
    assert took <= SHUTDOWN_MS / 1000 + 2, took


def test_sigterm_finishes_in_flight_work_and_hands_it_on(h):
    svc = setup_service(h, versions=("slow-3",), replicas=3)
    rid = deploy(h, svc, "slow-3")
    wait_status(h, rid, "progressing")
    out = h.stack.run("worker", "kill", "track", "TERM").stdout.split()
    pid = int(out[2])
    wait_for(lambda: not pid_alive(pid), SHUTDOWN_MS / 1000 + 3, "track to exit")
    h.stack.run("worker", "start", "track")
    # The claim was handed back: the new worker ends the release long before 15 s lapse.
    rec = wait_status(h, rid, TERMINAL, timeout=60)
    assert rec["status"] == "succeeded"
    assert len(results_for(h, rid)) == 1
