"""The render stage's batch path (workers/render/render.c, render_handle_batch): the requests of
a poll batch are recorded in one statement, the oldest queued release of each of their
services loaded in one, the services' locks taken in one pipelined Redis round trip and the
releases started in one statement; and everything a message did alone still holds: two
requests of one service queue in their order, a refused message is dead-lettered with its
reason while the others go on, a busy service keeps its release queued, a fence older than
PostgreSQL's starts nothing. Each test stops the render worker, publishes the requests and
starts it again, so that it takes them in poll batches. One stack for the module."""
import base64
import json
import re
import subprocess
import time
import uuid

import pytest
from test_batch import stop_worker
from test_fleet import metric, scrape
from test_render import PERIODIC, backend_statements, log_every_statement, newest_worker

from conftest import start_stack, stop_stack
from harness import Harness
from releases import TERMINAL, record, setup_service, wait_status


@pytest.fixture(scope="module")
def rstack(request):
    s = start_stack()
    log_every_statement(Harness(s))
    yield s
    stop_stack(s, save_logs_as="render-batch-logs" if request.session.testsfailed else None)


@pytest.fixture
def h(rstack):
    return Harness(rstack)


def request(svc, version="1.0.0", rid=None, env="prod"):
    """A request message (key, value) and its release id."""
    rid = rid or str(uuid.uuid4())
    body = {"schema": "relfleet.request.v1", "release_id": rid, "service": svc, "env": env,
            "version": version, "kind": "deploy", "operator": "batch",
            "requested_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}
    return (f"{env}/{svc}".encode(), json.dumps(body).encode()), rid


def publish_to_stopped_render(h, messages):
    """Publishes messages while the render worker is stopped and starts it again: it finds
    them waiting together. Returns where the postgres log stood before."""
    stop_worker(h, "render")
    log = h.stack.state_dir / "logs" / "postgres.log"
    start = log.stat().st_size
    for key, value in messages:
        h.produce("requests", key, value)
    h.stack.run("worker", "start", "render")
    return start


# The batch path's statements (render.c): a batch's record, and its start, over JSON rows;
# the start of one release alone (a wave's, or after the batch's start failed).
BATCH_RECORD = "AS x(n int, id uuid, service text"
BATCH_START = "AS x(n int, id uuid, fence bigint"
ONE_START = "WITH f AS (UPDATE services SET fence"


def render_worker(h):
    return newest_worker(h, "render")


def render_statements(h, start):
    """The statements the render worker ran since start in the postgres log, without the
    periodic ones (sweeps, readiness)."""
    return [s[:200] for s in backend_statements(h, start, render_worker(h)[0])
            if not s.startswith(PERIODIC)]


def results_of(h, ids, timeout=60):
    msgs = h.consume("results", timeout=timeout,
                     until=lambda ms: all(any(m.json()["release_id"] == r for m in ms)
                                          for r in ids))
    return {rid: [m.json() for m in msgs if m.json()["release_id"] == rid] for rid in ids}


def redis_cli(h, *args):
    url = h.env["RELFLEET_REDIS_URL"].split("//")[1].split("/")[0]
    host, port = url.rsplit(":", 1)
    return subprocess.run(["redis-cli", "-h", host, "-p", port, *args], check=True,
                          capture_output=True, text=True, timeout=30).stdout.strip()


def test_a_batch_of_services_starts_together_and_one_service_queues_in_order(h):
    services = [setup_service(h, replicas=1) for _ in range(10)]
    twice = setup_service(h, replicas=1, versions=("1.0.0", "1.0.1"))
    messages, ids = [], []
    for i, svc in enumerate(services):
        msg, rid = request(svc)
        messages.append(msg)
        ids.append(rid)
        if i == 4:  # two requests of one service in the middle of the batch
            (m1, first), (m2, second) = request(twice), request(twice, "1.0.1")
            messages += [m1, m2]
    # The same request twice (a producer's retry): one release.
    messages.append(messages[0])
    start = publish_to_stopped_render(h, messages)
    for rid in ids + [first]:
        assert wait_status(h, rid, TERMINAL, timeout=90)["status"] == "succeeded", rid
    rec2 = wait_status(h, second, TERMINAL, timeout=90)
    assert rec2["status"] == "succeeded", rec2
    # The second of one service queued behind the first and started only once it ended.
    rows = h.psql(f"SELECT id, created_at < (SELECT created_at FROM releases WHERE id ="
                  f" '{second}'), finished_at <= (SELECT started_at FROM releases WHERE id ="
                  f" '{second}'), fence < (SELECT fence FROM releases WHERE id = '{second}')"
                  f" FROM releases WHERE id = '{first}'")
    assert rows == [[first, "t", "t", "t"]], rows
    events = [e["event"] for e in rec2["timeline"]]
    assert events[:3] == ["queued", "rendering", "applying"], events
    assert h.psql(f"SELECT count(*) FROM releases WHERE id = '{ids[0]}'") == [["1"]]
    results = results_of(h, ids + [first, second])
    for rid, got in results.items():
        assert len(got) == 1, (rid, got)
    # The batch path ran: a few statements per poll batch, not five per request.
    _, addr = render_worker(h)
    samples = scrape(addr)
    batches = metric(samples, "relfleet_poll_batch_messages_count")
    taken = metric(samples, "relfleet_poll_batch_messages_sum")
    assert taken >= len(messages) and batches < taken, (taken, batches)
    statements = render_statements(h, start)
    # record, load, start per batch; besides: the second request's load in a second
    # round, the template's read, and a sweep's load and start if it found the second free
    # before the request the first one's end sent again
    assert len(statements) <= 3 * batches + 4, (batches, statements)
    assert len(statements) < 2 * len(ids), statements


def test_refused_messages_in_the_middle_of_a_batch_are_dead_lettered_alone(h):
    services = [setup_service(h, replicas=1) for _ in range(4)]
    messages, ids = [], []
    for svc in services:
        msg, rid = request(svc)
        messages.append(msg)
        ids.append(rid)
    garbage = b"{not json " + uuid.uuid4().hex.encode()
    # Another request under the first one's id, right after it in the same batch, and a
    # request of the same service after that one.
    (clash_key, clash), _ = request(services[0], "9.9.9", rid=ids[0])
    after, after_id = request(services[0], "1.0.0")
    messages[1:1] = [(clash_key, clash), after]
    messages[4:4] = [(f"prod/{services[2]}".encode(), garbage)]
    start = publish_to_stopped_render(h, messages)
    for rid in ids + [after_id]:
        assert wait_status(h, rid, TERMINAL, timeout=90)["status"] == "succeeded", rid
    assert record(h, ids[0])["version"] == "1.0.0"
    # The service's request after the refused one is recorded after its dead letter: the
    # batch's statement left it out and it came again behind the rejection.
    order = h.psql(
        f"SELECT (SELECT min(at) FROM timeline WHERE release_id = '{after_id}'"
        f" AND event = 'queued') >= (SELECT max(at) FROM rejected_messages"
        f" WHERE stage = 'render' AND convert_from(payload, 'UTF8') LIKE '%{ids[0]}%9.9.9%')")
    assert order == [["t"]], order
    statements = render_statements(h, start)
    assert any(BATCH_RECORD in s for s in statements), statements
    def payload(m):
        return base64.b64decode(m.json()["payload_base64"])

    dead = h.consume("dlq", timeout=30, until=lambda ms: sum(
        1 for m in ms if payload(m) in (garbage, clash)) >= 2)
    reasons = {("garbage" if payload(m) == garbage else "clash"): m.json()["reason"]
               for m in dead if payload(m) in (garbage, clash)}
    assert "already exists with other content" in reasons.get("clash", ""), reasons
    assert reasons.get("garbage"), reasons
    rows = h.psql(f"SELECT reason FROM rejected_messages WHERE stage = 'render' AND"
                  f" convert_from(payload, 'UTF8') LIKE '%{ids[0]}%9.9.9%'")
    assert rows == [[reasons["clash"]]], rows
    for rid, got in results_of(h, ids + [after_id]).items():
        assert len(got) == 1, (rid, got)


def test_a_busy_service_and_an_old_fence_in_a_batch_start_nothing_of_theirs(h):
    services = [setup_service(h, replicas=1) for _ in range(5)]
    busy, stale = services[1], services[3]
    messages, ids = [], []
    for svc in services:
        msg, rid = request(svc)
        messages.append(msg)
        ids.append(rid)
    # busy: another holder's lock (a release Redis knows, PostgreSQL not). stale: Redis
    # already answers its release as the holder, with a token older than PostgreSQL's
    # fence (a Redis that lost its data and got an old lock key back): the start must
    # refuse it, and the others start.
    redis_cli(h, "SET", f"relfleet:lock:prod/{busy}", "someone-else", "PX", "600000")
    h.psql(f"UPDATE services SET fence = 40 WHERE service = '{stale}' AND env = 'prod'")
    redis_cli(h, "SET", f"relfleet:lock:prod/{stale}", ids[3], "PX", "600000")
    redis_cli(h, "SET", f"relfleet:fence:prod/{stale}", "7")
    start = publish_to_stopped_render(h, messages)
    for i, rid in enumerate(ids):
        if i not in (1, 3):
            assert wait_status(h, rid, TERMINAL, timeout=90)["status"] == "succeeded", rid
    assert record(h, ids[1])["status"] == "queued"
    log = "".join(p.read_text(errors="replace")
                  for p in sorted((h.stack.state_dir / "logs").glob("render-*.log")))
    assert re.search(r"service busy with release someone-else; staying queued", log), log[-2000:]
    assert "not started: fence 7 is older than the service's" in log, log[-2000:]
    # The stale token was refused and its lock freed: the sweep starts it with a token past
    # PostgreSQL's fence; the busy one starts once its holder's lock is gone.
    rec = wait_status(h, ids[3], TERMINAL, timeout=90)
    assert rec["status"] == "succeeded", rec
    assert int(h.psql(f"SELECT fence FROM releases WHERE id = '{ids[3]}'")[0][0]) > 40
    redis_cli(h, "DEL", f"relfleet:lock:prod/{busy}")
    assert wait_status(h, ids[1], TERMINAL, timeout=90)["status"] == "succeeded"
    for rid, got in results_of(h, ids).items():
        assert len(got) == 1, (rid, got)
    assert any(BATCH_START in s for s in render_statements(h, start))


def test_a_start_postgresql_refuses_for_one_release_leaves_the_others_started(h):
    services = [setup_service(h, replicas=1) for _ in range(4)]
    refused = services[2]
    messages, ids = [], []
    for svc in services:
        msg, rid = request(svc)
        messages.append(msg)
        ids.append(rid)
    # A trigger refuses the start of one release: the statement that starts the batch
    # fails as a whole, and the releases are started one by one instead.
    h.psql(f"""CREATE OR REPLACE FUNCTION test_refuse_start() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN RAISE EXCEPTION 'refused for the test'; END $$;
               CREATE TRIGGER test_refuse_start BEFORE UPDATE OF fence ON services
               FOR EACH ROW WHEN (NEW.service = '{refused}') EXECUTE FUNCTION
               test_refuse_start()""")
    try:
        start = publish_to_stopped_render(h, messages)
        for i, rid in enumerate(ids):
            if i != 2:
                assert wait_status(h, rid, TERMINAL, timeout=90)["status"] == "succeeded", rid
        assert record(h, ids[2])["status"] == "queued"
        statements = render_statements(h, start)
        # the batch's start failed, then its releases were started alone
        starts = [s for s in statements if BATCH_START in s or ONE_START in s]
        alone = [i for i, s in enumerate(starts) if ONE_START in s]
        assert alone and alone[0] > 0 and BATCH_START in starts[alone[0] - 1], starts
    finally:
        h.psql("DROP TRIGGER test_refuse_start ON services")
    # Nothing of it started and its lock was freed: the sweep starts it now.
    assert wait_status(h, ids[2], TERMINAL, timeout=90)["status"] == "succeeded"
    for rid, got in results_of(h, ids).items():
        assert len(got) == 1, (rid, got)


def test_the_sweep_starts_a_stranded_release_only_once_it_is_no_longer_new(h):
    """The sweep starts a queued release of a free service that nobody handed on, but only one
    queued for at least a sweep interval: a younger one is most likely in a render worker's
    poll batch, about to be started by that batch (with two render workers, the other's sweep
    took such releases, waited on their row locks and rendered some a second time, fenced).
    Here a release stays queued behind another holder's lock, which then goes without a
    hand-over: while the release looks new, sweeps pass it by; once old, a sweep starts it."""
    svc = setup_service(h, replicas=1)
    msg, rid = request(svc)
    redis_cli(h, "SET", f"relfleet:lock:prod/{svc}", "someone-else", "PX", "600000")
    publish_to_stopped_render(h, [msg])
    logs = h.stack.state_dir / "logs"
    h.wait_for(lambda: any(rid in line and "staying queued" in line
                           for p in logs.glob("render-*.log")
                           for line in p.read_text(errors="replace").splitlines()),
               60, "render to leave the release queued behind the other holder")
    h.psql(f"UPDATE releases SET created_at = now() + interval '1 hour' WHERE id = '{rid}'")
    start = (logs / "postgres.log").stat().st_size
    redis_cli(h, "DEL", f"relfleet:lock:prod/{svc}")
    pid = render_worker(h)[0]
    h.wait_for(lambda: sum(s.startswith("SELECT DISTINCT q.service")
                           for s in backend_statements(h, start, pid)) >= 2,
               30, "two sweeps after the lock went")
    assert record(h, rid)["status"] == "queued"
    h.psql(f"UPDATE releases SET created_at = now() - interval '1 hour' WHERE id = '{rid}'")
    assert wait_status(h, rid, TERMINAL, timeout=60)["status"] == "succeeded"
    assert len(results_of(h, [rid])[rid]) == 1
