"""PostgreSQL failing over under the fleet, without a streaming standby: a server turns
"read-only" for libpq's target_session_attrs=read-write with default_transaction_read_only=on
(every write then fails with SQLSTATE 25006), and its client connections are dropped, as a
failover drops them. Readiness follows within a second, releases end once, relctl and
relfleet-api wait out an outage or say which hosts they tried."""
import re
import subprocess
import time
import urllib.parse
from datetime import datetime

import pytest
import requests

from conftest import start_stack, stop_stack
from harness import Harness, bin_path, wait_for
from releases import TERMINAL, deploy, setup_service, wait_status
from test_fleet import http_get, workers


@pytest.fixture(scope="module")
def pstack(request):
    s = start_stack({"RELFLEET_RETRY_MAX_MS": "1000"})
    yield s
    stop_stack(s, save_logs_as="pg-failover-logs" if request.session.testsfailed else None)


@pytest.fixture
def h(pstack):
    h = Harness(pstack)
    yield h
    set_read_only(h, False)  # whatever a test left (those that stop the server start it)


def pg_env(h, **extra):
    """psql's environment for the stack's server."""
    dsn = urllib.parse.urlsplit(h.env["RELFLEET_PG_DSN"])
    return dict(h.env, PGHOST=dsn.hostname, PGPORT=str(dsn.port), PGUSER=dsn.username or "",
                PGDATABASE=dsn.path.lstrip("/"), PGPASSWORD=dsn.password or "", **extra)


def psql_admin(h, sql):
    """sql on the stack's server in a session that may write whatever the default."""
    env = pg_env(h, PGOPTIONS="-c default_transaction_read_only=off")
    proc = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-t", "-A", "-c", sql],
                          env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"psql {sql!r}: {proc.stderr}"
    return proc.stdout.strip()


def set_read_only(h, on, drop_clients=False):
    """Turns the server read-only (or writable) for every session; with drop_clients its
    client connections end too, as a failover ends them."""
    value = "on" if on else "off"
    psql_admin(h, f"ALTER SYSTEM SET default_transaction_read_only = {value}")
    psql_admin(h, "SELECT pg_reload_conf()")
    env = pg_env(h)

    def applied():
        p = subprocess.run(["psql", "-X", "-t", "-A", "-c", "SHOW default_transaction_read_only"],
                           env=env, capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        return p.stdout.strip() == value

    wait_for(applied, 30, f"default_transaction_read_only {value}", interval=0.02)
    if drop_clients:
        psql_admin(h, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                      " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")


def pg_port(h):
    return urllib.parse.urlsplit(h.env["RELFLEET_PG_DSN"]).port


def log_ts(line):
    m = re.search(r"ts=(\S+)", line)
    return datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").timestamp() if m else None


def test_readyz_turns_true_within_a_second_of_start(h):
    """Regression: /readyz stayed false up to health_interval_ms (and Kafka's until the
    first statistics, 5 s) after the worker consumed and produced."""
    live = workers(h.stack)
    assert live
    for name, addr in live.items():
        wait_for(lambda: http_get(addr, "/readyz")[0] == 200, 30, f"{name} ready")
        lines = (h.stack.state_dir / "logs" / f"{name}.log").read_text(errors="replace")
        lines = lines.splitlines()
        started = [log_ts(x) for x in lines if "started, consumer group" in x]
        ready = [log_ts(x) for x in lines if 'msg="ready: ' in x or "msg=ready:" in x]
        assert started and ready, (name, lines[-20:])
        assert max(ready) - started[0] <= 1.0, (name, max(ready) - started[0], lines[:40])


def test_readyz_follows_read_only_within_a_second_and_back(h):
    live = workers(h.stack)
    for name, addr in live.items():
        wait_for(lambda: http_get(addr, "/readyz")[0] == 200, 30, f"{name} ready")
    set_read_only(h, True, drop_clients=True)
    t0 = time.monotonic()
    for name, addr in live.items():
        # While the server terminates its clients a probe may lose its connection and say
        # unreachable for a moment; within the time below it must say read-only.
        wait_for(lambda: (r := http_get(addr, "/readyz"))[0] == 503
                 and "postgres: read-only: " in r[1], 10, f"{name} to say read-only")
    assert time.monotonic() - t0 < 1.5, time.monotonic() - t0
    set_read_only(h, False)
    t1 = time.monotonic()
    for name, addr in live.items():
        wait_for(lambda: http_get(addr, "/readyz") == (200, "ready\n"), 10, f"{name} ready again")
    assert time.monotonic() - t1 < 1.5, time.monotonic() - t1


def test_releases_during_a_read_only_switch_end_exactly_once(h):
    services = [setup_service(h) for _ in range(3)]
    rids = [deploy(h, s, "1.0.0") for s in services]
    set_read_only(h, True, drop_clients=True)
    render = [a for n, a in workers(h.stack).items() if n.startswith("render-")][0]
    wait_for(lambda: "postgres: read-only" in http_get(render, "/readyz")[1], 10,
             "render to say read-only")
    set_read_only(h, False)
    for rid in rids:
        wait_status(h, rid, TERMINAL, timeout=120)
    for rid in rids:
        rows = h.psql(f"SELECT count(*) FROM timeline WHERE release_id = '{rid}'"
                      f" AND status IN ('succeeded', 'failed', 'cancelled', 'superseded',"
                      f" 'rejected') AND event <> 'queued'")
        assert rows == [["1"]], (rid, rows)
        assert h.psql(f"SELECT count(*) FROM releases WHERE id = '{rid}'") == [["1"]]


def relctl_popen(h, args, stderr_path, **env):
    return subprocess.Popen([str(bin_path("relctl")), *args], env=dict(h.env, **env),
                            stdout=subprocess.PIPE, stderr=open(stderr_path, "w"), text=True,
                            stdin=subprocess.DEVNULL)


def test_relctl_waits_out_an_outage(h, tmp_path):
    svc = setup_service(h)
    h.stack.run("stop", "postgres")
    err = tmp_path / "relctl.err"
    proc = relctl_popen(h, ["deploy", "--service", svc, "--env", "prod", "--version", "1.0.0",
                            "--wait"], err)
    try:
        wait_for(lambda: "waiting up to 30 s for a writable postgresql" in err.read_text(), 30,
                 "relctl to wait for postgresql")
        assert proc.poll() is None
    finally:
        h.stack.run("start", "postgres")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err.read_text())
    assert "succeeded" in out, out


def test_relctl_after_the_timeout_names_the_hosts(h, tmp_path):
    h.stack.run("stop", "postgres")
    try:
        err = tmp_path / "relctl.err"
        t0 = time.monotonic()
        proc = relctl_popen(h, ["history", "--limit", "1"], err,
                            RELFLEET_PG_FAILOVER_TIMEOUT_MS="1500")
        proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        h.stack.run("start", "postgres")
    text = err.read_text()
    assert proc.returncode == 1, text
    assert f"cannot reach a writable postgresql at 127.0.0.1:{pg_port(h)} after 2 s: " in text, text
    assert 1.4 <= took < 10, took
    password = urllib.parse.urlsplit(h.env["RELFLEET_PG_DSN"]).password
    assert not password or password not in text


def test_a_dsn_whose_hosts_are_all_read_only_is_refused_naming_them(h, tmp_path):
    set_read_only(h, True)
    dsn = urllib.parse.urlsplit(h.env["RELFLEET_PG_DSN"])
    multi = (f"host=127.0.0.1,{dsn.hostname} port=1,{dsn.port} dbname={dsn.path.lstrip('/')}"
             f" user={dsn.username}" + (f" password={dsn.password}" if dsn.password else ""))
    err = tmp_path / "relctl.err"
    proc = relctl_popen(h, ["history", "--limit", "1"], err, RELFLEET_PG_DSN=multi,
                        RELFLEET_PG_FAILOVER_TIMEOUT_MS="500")
    proc.communicate(timeout=60)
    text = err.read_text()
    assert proc.returncode == 1, text
    assert f"at 127.0.0.1:1, {dsn.hostname}:{dsn.port} after 1 s: " in text, text
    assert "read-only" in text, text
    assert not dsn.password or dsn.password not in text
    # Writable again, the same DSN of two hosts skips the one that is down.
    set_read_only(h, False)
    proc = relctl_popen(h, ["history", "--limit", "1"], err, RELFLEET_PG_DSN=multi)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.read_text()


def test_api_answers_503_with_retry_after_then_works(h):
    url = h.env["RELFLEET_API_URL"] + "/api/v1/releases"
    auth = {"Authorization": "Bearer " + h.env["RELFLEET_TOKEN"]}
    assert requests.get(url, headers=auth, timeout=30).status_code == 200
    h.stack.run("stop", "postgres")
    try:
        r = requests.get(url, headers=auth, timeout=30)
        assert r.status_code == 503, (r.status_code, r.text)
        assert r.headers.get("Retry-After") == "1", r.headers
    finally:
        h.stack.run("start", "postgres")
    wait_for(lambda: requests.get(url, headers=auth, timeout=30).status_code == 200, 30,
             "the API to answer again")


def retry_lines(h, stage, needle):
    out = []
    for path in (h.stack.state_dir / "logs").glob(f"{stage}-*.log"):
        out += [x for x in path.open(errors="replace") if "will retry" in x and needle in x]
    return out


def test_no_offset_is_stored_for_a_write_refused_as_read_only(h):
    """render's insert refused with 25006 is retried from Kafka, its offset not stored,
    and the release ends once after the server is writable again."""
    from test_outages import committed, frozen, request_partition, results_for

    svc = setup_service(h)
    # relctl needs PostgreSQL (permissions): publish while render is frozen.
    with frozen(h, "render"):
        rid = deploy(h, svc, "1.0.0")
        part, offset = request_partition(h, rid)
        set_read_only(h, True, drop_clients=True)
    before = len(retry_lines(h, "render", "read-only"))

    def retried_long_enough():  # past an auto-commit interval (1 s) of retries
        ts = [log_ts(x) for x in retry_lines(h, "render", "read-only")[before:]]
        return len(ts) >= 2 and max(ts) - min(ts) >= 1.5

    wait_for(retried_long_enough, 60, "render to retry the refused write for 1.5 s")
    assert committed(h, "render", "requests", part) <= offset
    set_read_only(h, False)
    rec = wait_status(h, rid, "succeeded", timeout=90)
    assert [e["event"] for e in rec["timeline"]].count("succeeded") == 1
    assert len(results_for(h, rid)) == 1
