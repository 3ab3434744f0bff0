"""Track workers watch only the Deployments of their own releases: apply labels each object
with relfleet.io/shard=<partition of the release's messages> and records the shard in the
release's track state; a track worker opens one list+watch per shard it follows releases in
(relfleet_track_watch_opens_total{shard}, relfleet_track_watches{shard}). With two track
workers each opens only the shards of the releases it follows; a release whose worker is
killed is claimed and finished by the other, which opens that shard; the releases of a
worker that is stopped are claimed by the other the same way; and a release applied before
the label (no shard in its track state, no label on its Deployment) is still followed, by a
watch of the Deployments without the label. One stack for the module."""
import json
import os
import signal
import subprocess
import urllib.request

import pytest

from conftest import start_stack, stop_stack
from harness import Harness, pid_alive
from releases import TERMINAL, deploy, setup_service, wait_status


@pytest.fixture(scope="module")
def sstack(request):
    # Time scale 4: a slow-* pod takes 5 s to be ready, others 125 ms.
    s = start_stack({"RELFLEET_KAFKA_STATS_INTERVAL_MS": "500", "RELFLEET_KUBESIM_TIME_SCALE": "4"})
    yield s
    stop_stack(s, save_logs_as="track-shards-logs" if request.session.testsfailed else None)


@pytest.fixture
def h(sstack):
    return Harness(sstack)


def track_workers(h):
    """{n: pid} of the live track workers."""
    rows = [r.split() for r in h.stack.run("worker", "list").stdout.splitlines()]
    return {r[1]: int(r[2]) for r in rows if r[0] == "track" and pid_alive(int(r[2]))}


def metrics(h, n):
    """{(name, labels): value} of track worker n's /metrics."""
    addr = open(os.path.join(h.env["RELFLEET_STATE_DIR"], "pids", f"worker-track-{n}.addr")
                ).read().strip()
    text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        out[(name, labels.rstrip("}"))] = float(value)
    return out


def label(labels, key):
    for part in labels.split(","):
        k, _, v = part.partition("=")
        if k == key:
            return v.strip('"')
    return None


def opened_shards(h, n):
    """The shards worker n has opened a watch of, at any time."""
    return {label(lb, "shard") for (name, lb), v in metrics(h, n).items()
            if name == "relfleet_track_watch_opens_total" and v > 0}


def applied_partitions(h, n):
    """The partitions of the `applied` topic assigned to worker n (its consumer lag series)."""
    topic = h.topic("applied")
    return {int(label(lb, "partition")) for (name, lb) in metrics(h, n)
            if name == "relfleet_kafka_consumer_lag" and label(lb, "topic") == topic}


def owner_pid(owner):
    return int(owner.split("/")[1]) if owner else None


def shard_and_owner(h, rids):
    """{release id: (shard, pid of its track owner)} from the release rows."""
    ids = ",".join(f"'{r}'" for r in rids)
    rows = h.psql(f"SELECT id, coalesce(track ->> 'shard', ''), coalesce(track_owner, '')"
                  f" FROM releases WHERE id IN ({ids})")
    return {r[0]: (r[1], owner_pid(r[2])) for r in rows}


def deployment(h, ns, name):
    out = subprocess.run(["kubectl", "--kubeconfig", h.env["RELFLEET_KUBECONFIG"], "-n", ns,
                          "get", "deployment", name, "-o", "json"],
                         capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


def test_each_track_worker_watches_only_its_shards(h):
    h.stack.run("worker", "start", "track")
    workers = track_workers(h)
    assert len(workers) == 2, workers
    # Both workers hold applied partitions, none twice, all of them between the two.
    def split():
        parts = [applied_partitions(h, n) for n in workers]
        return all(parts) and not (parts[0] & parts[1]) and len(parts[0] | parts[1]) == 6
    h.wait_for(split, 60, "the two track workers to share the applied partitions")
    services = [setup_service(h, replicas=1) for _ in range(12)]
    rids = [deploy(h, svc, "1.0.0") for svc in services]
    recs = [wait_status(h, rid, TERMINAL, timeout=90) for rid in rids]
    assert [r["status"] for r in recs] == ["succeeded"] * len(rids), recs
    rows = shard_and_owner(h, rids)
    followed = {pid: set() for pid in workers.values()}
    for rid, (shard, pid) in rows.items():
        assert shard != "", f"release {rid} has no shard in its track state"
        followed[pid].add(shard)
    # Each worker opened the watches of the shards it followed releases in, no others:
    # together they watch every shard used, but neither all of them.
    for n, pid in workers.items():
        assert opened_shards(h, n) == followed[pid], (n, opened_shards(h, n), followed)
    used = set().union(*followed.values())
    assert all(followed[pid] != used for pid in workers.values()), followed
    # Each Deployment carries its release's shard.
    for svc, rid in zip(services, rids):
        ns = h.relctl_json("service", "show", svc, "--env", "prod")["namespace"]
        labels = deployment(h, ns, svc)["metadata"]["labels"]
        assert labels.get("relfleet.io/shard") == rows[rid][0], labels


def test_releases_of_a_killed_track_worker_are_finished_by_the_other(h):
    workers = track_workers(h)
    if len(workers) < 2:
        h.stack.run("worker", "start", "track")
        workers = track_workers(h)
    # A rollout of 5 s (slow-* pods at this module's time scale): the release is followed
    # when its worker dies.
    svc = setup_service(h, versions=("slow-1.0.0",), replicas=2)
    rid = deploy(h, svc, "slow-1.0.0")
    h.wait_for(lambda: shard_and_owner(h, [rid])[rid][1] in workers.values(), 60,
               "the release to be followed")
    shard, victim = shard_and_owner(h, [rid])[rid]
    assert wait_status(h, rid, TERMINAL | {"progressing"}, timeout=10)["status"] == \
        "progressing"
    os.kill(victim, signal.SIGKILL)
    h.wait_for(lambda: not pid_alive(victim), 15, "the worker to die")
    rec = wait_status(h, rid, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec
    (survivor_n, survivor), = track_workers(h).items()
    assert shard_and_owner(h, [rid])[rid][1] == survivor
    assert shard in opened_shards(h, survivor_n)
    assert [e["event"] for e in rec["timeline"]].count("succeeded") == 1, rec["timeline"]
    # The releases of a worker that sleeps go to the other one as well (claimed unowned).
    h.stack.run("worker", "start", "track")
    workers = track_workers(h)
    sleeper_n = max(workers, key=int)
    os.kill(workers[sleeper_n], signal.SIGSTOP)
    try:
        services = [setup_service(h, replicas=1) for _ in range(8)]
        rids = [deploy(h, s, "1.0.0") for s in services]
        recs = [wait_status(h, r, TERMINAL, timeout=90) for r in rids]
        assert [r["status"] for r in recs] == ["succeeded"] * len(rids), recs
        rows = shard_and_owner(h, rids)
        assert {pid for _, pid in rows.values()} == {survivor}, rows
        assert {s for s, _ in rows.values()} <= opened_shards(h, survivor_n)
    finally:
        os.kill(workers[sleeper_n], signal.SIGCONT)


def test_a_deployment_without_the_shard_label_is_still_tracked(h):
    """As after an upgrade: a release applied before the label existed (no shard in its
    track state) whose Deployment has no shard label."""
    svc = setup_service(h, replicas=2)
    ns = h.relctl_json("service", "show", svc, "--env", "prod")["namespace"]
    pids = list(track_workers(h).values())
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        rid = deploy(h, svc, "1.0.0")
        wait_status(h, rid, "progressing", timeout=60)
        h.psql(f"UPDATE releases SET track = track - 'shard' WHERE id = '{rid}'")
        subprocess.run(["kubectl", "--kubeconfig", h.env["RELFLEET_KUBECONFIG"], "-n", ns,
                        "label", "deployment", svc, "relfleet.io/shard-"],
                       capture_output=True, text=True, timeout=30, check=True)
        assert "relfleet.io/shard" not in deployment(h, ns, svc)["metadata"]["labels"]
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    rec = wait_status(h, rid, TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec
    assert any(e["event"] == "progress" and "successfully rolled out" in e["message"]
               for e in rec["timeline"]), rec["timeline"]
    pid = shard_and_owner(h, [rid])[rid][1]
    n = next(n for n, p in track_workers(h).items() if p == pid)
    assert "none" in opened_shards(h, n)
