"""The apply stage's poll batches (workers/apply/apply.c): the closing statements of the
messages whose cluster parts ended while the worker was busy run as one statement
(rf_store_apply_finish_many) in which each release keeps its own fence check and outcome;
and a message refused for good holds back its key's later messages of the batch until its
dead letter, as one message after the other would. Each test stops the apply worker, lets
the `rendered` messages wait and starts it again. The `rendered` messages of a test are copies of what the render worker published, produced
together (one record batch: the dev broker answers a fetch with one) with the apply group's
offset moved onto the first copy, so the worker takes them in one poll batch. One stack for
the module."""
import json
import re
import subprocess
import urllib.parse
import uuid

import pytest
from test_batch import log_text, stop_worker
from test_fleet import metric, scrape
from test_hostile import produce_batch
from test_render import backend_statements, log_every_statement, newest_worker

from conftest import start_stack, stop_stack
from harness import Harness
from releases import TERMINAL, deploy, record, setup_service, wait_status

# The closing statements (shared/store/rf_store.c): one release's, many releases'.
CLOSE_ONE = "WITH up AS ( UPDATE releases r SET status = 'progressing'"
CLOSE_MANY = ("WITH x AS (SELECT *, 'applying'::text AS was FROM jsonb_to_recordset($1::jsonb)"
              " AS x(n int, id uuid, fence bigint, track jsonb")


@pytest.fixture(scope="module")
def astack(request):
    # One partition: the `rendered` messages waiting for the worker come in one fetch.
    s = start_stack({"RELFLEET_STACK_PARTITIONS": "1"})
    log_every_statement(Harness(s))
    yield s
    stop_stack(s, save_logs_as="apply-batch-logs" if request.session.testsfailed else None)


@pytest.fixture
def h(astack):
    return Harness(astack)


def apply_worker(h):
    """(pid, metrics address) of the newest apply worker."""
    return newest_worker(h, "apply")


def apply_statements(h, start):
    """The statements of the (one) apply worker's backends since start in the postgres log,
    whitespace folded."""
    return [re.sub(r"\s+", " ", s) for s in backend_statements(h, start, apply_worker(h)[0])]


def psql_session(h):
    """A psql process reading SQL from its stdin (a transaction held open across steps)."""
    dsn = urllib.parse.urlsplit(h.env["RELFLEET_PG_DSN"])
    host, port = dsn.netloc.rsplit("@", 1)[-1].split(",")[0].rsplit(":", 1)
    env = dict(h.env, PGHOST=host, PGPORT=port, PGUSER=dsn.username,
               PGDATABASE=dsn.path.lstrip("/"))
    return subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def rendered_of(h, ids):
    """The `rendered` messages the render worker published for the releases ids, in order."""
    def mine(ms):
        by_id = {m.json().get("release_id"): m for m in ms}
        return all(i in by_id for i in ids) and [by_id[i] for i in ids]
    return h.wait_for(lambda: mine(h.consume("rendered", timeout=30)), 30,
                      f"the `rendered` messages of {len(ids)} releases")


def publish_for_stopped_apply(h, records):
    """Produces (key, value) records to `rendered` together and moves the (stopped) apply
    group's offset onto the first: the worker starts there and finds them in one batch.
    Returns their (partition, offset)."""
    from confluent_kafka import Consumer, TopicPartition

    placed = produce_batch(h, h.topic("rendered"), records)
    assert len({p for p, _ in placed}) == 1, placed
    # The broker takes commits from a member only: join the group the worker left.
    c = Consumer({"bootstrap.servers": h.env["RELFLEET_KAFKA_BROKERS"],
                  "group.id": h.prefix + "apply", "enable.auto.commit": False,
                  "session.timeout.ms": 6000})
    assigned = []
    try:
        c.subscribe([h.topic("rendered")], on_assign=lambda _c, parts: assigned.extend(parts))
        h.wait_for(lambda: c.poll(0.1) is None and assigned, 60, "the apply group's assignment")
        c.commit(offsets=[TopicPartition(h.topic("rendered"), placed[0][0], placed[0][1])],
                 asynchronous=False)
    finally:
        c.close()
    return placed


def kubectl_json(h, *args):
    proc = subprocess.run(["kubectl", "--kubeconfig", h.env["RELFLEET_KUBECONFIG"], *args,
                           "-o", "json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def applied_objects(h):
    """How many objects in the cluster carry each release's annotation."""
    got = {}
    for o in kubectl_json(h, "get", "deployments,services", "-A")["items"]:
        rid = (o["metadata"].get("annotations") or {}).get("relfleet.io/release")
        got[rid] = got.get(rid, 0) + 1
    return got


def events_of(h, rid):
    return [e["event"] for e in record(h, rid)["timeline"]]


def test_closing_statements_of_a_batch_run_together_each_release_fenced_alone(h):
    services = [setup_service(h, replicas=1) for _ in range(12)]
    for svc in services:  # namespaces and objects exist: every cluster part takes alike
        assert wait_status(h, deploy(h, svc, "1.0.0"), TERMINAL, 90)["status"] == "succeeded"
    stop_worker(h, "apply")
    ids = [deploy(h, svc, "1.0.0") for svc in services]
    for rid in ids:
        wait_status(h, rid, "applying", timeout=60)
    publish_for_stopped_apply(h, [(m.key, m.value) for m in rendered_of(h, ids)])
    victims = ids[3:5]
    log = h.stack.state_dir / "logs" / "postgres.log"
    start = log.stat().st_size
    # The victims' move to progressing is skipped, as if their fence had been taken between
    # the cluster part and the closing statement: theirs alone must fail, wherever they are.
    h.psql("CREATE FUNCTION test_skip_progressing() RETURNS trigger LANGUAGE plpgsql AS $$"
           " BEGIN IF NEW.id IN (" + ", ".join(f"'{v}'" for v in victims) + ")"
           " AND OLD.status = 'applying' AND NEW.status = 'progressing' THEN RETURN NULL;"
           " END IF; RETURN NEW; END $$")
    h.psql("CREATE TRIGGER test_skip_progressing BEFORE UPDATE ON releases"
           " FOR EACH ROW EXECUTE FUNCTION test_skip_progressing()")
    # The first closing statement waits for the timeline's lock while the others' cluster
    # parts end: they are closed together once it is let go.
    hold = psql_session(h)
    try:
        hold.stdin.write("BEGIN; LOCK TABLE timeline IN SHARE MODE;\n")
        hold.stdin.flush()
        h.wait_for(lambda: h.psql("SELECT count(*) FROM pg_locks WHERE relation ="
                                  " 'timeline'::regclass AND mode = 'ShareLock' AND granted")
                   == [["1"]], 30, "the timeline's lock")
        h.stack.run("worker", "start", "apply")
        h.wait_for(lambda: int(h.psql("SELECT count(*) FROM pg_stat_activity WHERE"
                                      " wait_event_type = 'Lock' AND query LIKE"
                                      " '%progressing%'")[0][0]) > 0, 60,
                   "a closing statement to wait for the lock")
        # Its poll batch (the worker takes no other while it waits): the cluster parts of
        # all its releases end.
        _, addr = apply_worker(h)
        batch = h.wait_for(lambda: (s := scrape(addr)) and
                           metric(s, "relfleet_poll_batch_messages_count") == 1 and
                           int(metric(s, "relfleet_poll_batch_messages_sum")), 30,
                           "the apply worker's first poll batch")
        assert batch == len(ids), f"{batch} of the {len(ids)} messages in the first batch"
        h.wait_for(lambda: all(applied_objects(h).get(rid) == 2 for rid in ids), 60,
                   "the objects of every release applied")
        hold.stdin.write("COMMIT;\n")
        hold.stdin.close()
        assert hold.wait(30) == 0, hold.stderr.read()
        for rid in ids:
            if rid not in victims:
                assert wait_status(h, rid, TERMINAL, 90)["status"] == "succeeded", rid
        text = h.wait_for(lambda: (t := log_text(h, "apply")) and
                          all(re.search(f"release '{v}' lost fence", t) for v in victims) and t,
                          30, "the victims' lost fence in the apply log")
        assert text
    finally:
        if hold.poll() is None:
            hold.kill()
        h.psql("DROP TRIGGER IF EXISTS test_skip_progressing ON releases")
        h.psql("DROP FUNCTION IF EXISTS test_skip_progressing()")
    for v in victims:
        # the objects' timeline rows are kept, the release did not move
        events = events_of(h, v)
        assert "applied" in events and "progressing" not in events, (v, events)
        h.relctl("cancel", v, check=False)
    for rid in ids:
        if rid not in victims:
            events = events_of(h, rid)
            assert events.count("progressing") == 1, events
    # The batch's service locks were renewed together, each counted by its outcome.
    samples = scrape(addr)
    assert metric(samples, "relfleet_lock_renewals_total", outcome="renewed") >= len(ids), samples
    assert metric(samples, "relfleet_lock_renewals_total", outcome="failed") == 0
    closing = [s for s in apply_statements(h, start) if s.startswith((CLOSE_ONE, CLOSE_MANY))]
    # one for the first (it waited for the lock), the rest together (a cluster part may
    # end just after the others were taken)
    assert any(s.startswith(CLOSE_MANY) for s in closing), closing
    assert len(closing) <= 3, [s[:60] for s in closing]


def test_a_refused_message_holds_back_its_keys_later_messages_until_its_dead_letter(h):
    svc = setup_service(h, replicas=1)
    first = deploy(h, svc, "1.0.0")
    assert wait_status(h, first, TERMINAL, 90)["status"] == "succeeded"
    key = f"prod/{svc}".encode()
    rendered = [m for m in h.consume("rendered", timeout=30, until=lambda ms: any(
        m.key == key for m in ms)) if m.key == key][0].json()
    stop_worker(h, "apply")
    rid = deploy(h, svc, "1.0.0")
    wait_status(h, rid, "applying", timeout=60)
    # A `rendered` message of a release nobody knows, then the service's next release's,
    # in one poll batch.
    unknown = dict(rendered, release_id=str(uuid.uuid4()))
    publish_for_stopped_apply(h, [(key, json.dumps(unknown).encode()),
                                  (key, rendered_of(h, [rid])[0].value)])
    h.stack.run("worker", "start", "apply")
    assert wait_status(h, rid, TERMINAL, 90)["status"] == "succeeded"
    rows = h.wait_for(lambda: h.psql(
        f"SELECT reason FROM rejected_messages WHERE stage = 'apply' AND"
        f" convert_from(payload, 'UTF8') LIKE '%{unknown['release_id']}%'"), 30,
        "the unknown release's dead letter")
    assert "unknown release" in rows[0][0], rows
    # The release after it was applied after the dead letter, as one by one.
    order = h.psql(
        f"SELECT (SELECT min(at) FROM timeline WHERE release_id = '{rid}' AND stage = 'apply')"
        f" >= (SELECT max(at) FROM rejected_messages WHERE stage = 'apply' AND"
        f" convert_from(payload, 'UTF8') LIKE '%{unknown['release_id']}%')")
    assert order == [["t"]], order
    assert events_of(h, rid).count("progressing") == 1
