"""Redis failing over to a master without the last lock writes: PostgreSQL's fence floor and
the one-active-release index still keep two releases of a service from overlapping."""
import json
import socket
import subprocess

from harness import bin_path, wait_for
from releases import ACTIVE, deploy, setup_service, wait_status
from test_outages import frozen, log_lines
from test_fleet import http_get
from test_release_flow import kubesim_applies, results_of


def redis_cli(h, *args):
    """redis-cli against the stack's Redis (a plain redis://host:port/db URL)."""
    url = h.env["RELFLEET_REDIS_URL"]
    hostport = url.split("//", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, port = hostport.rsplit(":", 1)
    proc = subprocess.run(["redis-cli", "-h", host, "-p", port, *args],
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_lock_the_new_master_lost_lets_no_second_release_apply(harness):
    h = harness
    # sluggish: 10 s to ready at the tests' time scale, so the first is still rolling out
    # after the checks and the second's refusal below, on a busy machine too (slow-1's
    # second was not always enough)
    svc = setup_service(h, versions=("sluggish-1", "2.0.0"), replicas=2)
    first = deploy(h, svc, "sluggish-1")
    wait_status(h, first, "progressing")
    lock, fence = f"relfleet:lock:prod/{svc}", f"relfleet:fence:prod/{svc}"
    assert redis_cli(h, "GET", lock) == first
    refused = "another release of the service is active in the database"
    before = log_lines(h, "render", refused)
    # The first's track worker stalls (it would put a missing key back when it renews, every
    # 5 s, and the second would then only wait as busy); meanwhile Redis loses the keys, as
    # a promoted replica that missed the last writes would. The second passes the Redis
    # gate and PostgreSQL refuses its start.
    with frozen(h, "track"):
        assert redis_cli(h, "DEL", lock, fence) == "2"
        second = deploy(h, svc, "2.0.0")
        wait_for(lambda: log_lines(h, "render", refused) > before, 60,
                 "render to be refused the second start by PostgreSQL")
    assert h.relctl_json("show", second, "--output", "json")["status"] == "queued"
    assert h.relctl_json("show", first, "--output", "json")["status"] in ACTIVE
    r1 = wait_status(h, first, "succeeded", timeout=120)
    r2 = wait_status(h, second, "succeeded", timeout=120)
    # No overlap of their active periods in PostgreSQL.
    assert h.psql(f"SELECT count(*) FROM releases a, releases b WHERE a.id = '{first}'"
                  f" AND b.id = '{second}' AND tstzrange(a.started_at, a.finished_at)"
                  f" && tstzrange(b.started_at, b.finished_at)") == [["0"]]
    start2 = [e["at"] for e in r2["timeline"] if e["event"] == "rendering"][0]
    assert start2 >= r1["finished_at"], (start2, r1["finished_at"])
    # kubesim's record: every write of the second came after the first's last one.
    flat = [json.dumps(a.get("images") or a.get("image"))
            for a in kubesim_applies(h) if a.get("name") == svc]
    first_idx = [i for i, im in enumerate(flat) if "sluggish-1" in im]
    second_idx = [i for i, im in enumerate(flat) if "2.0.0" in im]
    assert first_idx and second_idx and max(first_idx) < min(second_idx), flat
    # Each release has exactly one results message, and none went to the dead letters.
    msgs = results_of(h, [first, second])
    assert sorted(m.json()["release_id"] for m in msgs) == sorted([first, second]), msgs
    assert not [m for m in h.consume("dlq", timeout=3)
                if second in (m.value or b"").decode(errors="replace")]
    # The second's token passed the first's, though Redis had lost the counter: the floor.
    fences = h.psql(f"SELECT fence FROM releases WHERE id IN ('{first}', '{second}')"
                    f" ORDER BY started_at")
    assert int(fences[1][0]) > int(fences[0][0]), fences


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_bad_redis_settings_stop_the_worker_naming_them(harness):
    env = dict(harness.env, RELFLEET_METRICS_ADDR="127.0.0.1:0",
               RELFLEET_TOPIC_PREFIX="redistest.")
    url = harness.env["RELFLEET_REDIS_URL"]
    hostport = url.split("//", 1)[1].split("/", 1)[0]
    cases = [
        ("redis-sentinel://127.0.0.1:1/0", {}, "redis-sentinel:// needs the master name"),
        ("http://" + hostport, {}, "scheme 'http' is not redis://"),
        (f"redis://:not-the-password@{hostport}/0", {},
         f"redis at {hostport} refused authentication"),
        (f"redis://{hostport}/0",
         {"RELFLEET_REDIS_TLS_CA_FILE": "/etc/ssl/certs/ca-certificates.crt"},
         "the redis url is not rediss://"),
    ]
    for redis_url, extra, expected in cases:
        proc = subprocess.run([str(bin_path("relfleet-worker")), "render"],
                              env=dict(env, RELFLEET_REDIS_URL=redis_url, **extra),
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert proc.returncode == 1, (redis_url, proc.stderr)
        assert expected in proc.stderr, (redis_url, proc.stderr)
        assert "not-the-password" not in proc.stderr


def test_unreachable_sentinels_at_start_are_reported_and_waited_for(harness):
    ports = free_port(), free_port()
    addr = f"127.0.0.1:{free_port()}"
    env = dict(harness.env, RELFLEET_METRICS_ADDR=addr, RELFLEET_TOPIC_PREFIX="redistest.",
               RELFLEET_HEALTH_INTERVAL_MS="500",
               RELFLEET_REDIS_URL="redis-sentinel://127.0.0.1:%d,127.0.0.1:%d/0#mymaster" % ports)
    proc = subprocess.Popen([str(bin_path("relfleet-worker")), "render"], env=env,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        line = wait_for(lambda: (ln := proc.stderr.readline()) and "sentinel" in ln and ln, 30,
                        "the worker to report the sentinels")
        assert "cannot reach any redis sentinel of master 'mymaster'" in line, line
        assert "retrying" in line, line
        status, body = wait_for(lambda: (r := http_get(addr, "/readyz"))[0] == 503
                                and "redis: " in r[1] and r, 30, "readiness to name redis")
        assert "redis: cannot reach any redis sentinel of master 'mymaster'" in body, body
        assert proc.poll() is None  # still waiting, not gone
    finally:
        proc.terminate()
        proc.wait(timeout=30)

