"""Hostile input: broken messages on every topic a worker consumes, and hostile values that
reach Kubernetes names.

Each broken message must go to `dlq` with its reason (and a `rejected_messages` row) or end
its release `rejected`; the worker keeps running (same pid) and the good messages produced
before and after the broken ones, with the same key (so the same partition), are processed
in order. A value that would make a manifest name `../x`, upper case or 300 characters long
must fail the release with a clear reason before anything reaches the cluster.
"""
import base64
import hashlib
import json
import subprocess
import time
import uuid

import pytest

from harness import REPO, bin_path
from releases import ACTIVE, deploy, record, setup_service, wait_status

STAGE = {"requests": "render", "rendered": "apply", "applied": "track", "commands": "track"}
HOSTILE_TEMPLATES = REPO / "tests" / "fixtures" / "hostile" / "templates"
NOW = "2026-11-23T23:10:05.123Z"
MB = 1024 * 1024


def new_id():
    return str(uuid.uuid4())


def produce_batch(h, topic, records):
    """Produces (key, value) records to topic (its full name) in order with one idempotent
    producer; returns their
    (partition, offset). message.max.bytes is raised so that payloads past the workers'
    1 MiB limit reach the broker (librdkafka's own default would refuse them)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": h.env["RELFLEET_KAFKA_BROKERS"],
                         "enable.idempotence": True, "message.max.bytes": 4 * MB,
                         "linger.ms": 5})
    out = [None] * len(records)

    def delivered(i):
        def cb(err, msg):
            out[i] = err if err is not None else (msg.partition(), msg.offset())
        return cb

    for i, (key, value) in enumerate(records):
        producer.produce(topic, key=key, value=value, on_delivery=delivered(i))
        producer.poll(0)
    assert producer.flush(30) == 0, f"produce to {topic}: not delivered within 30s"
    for i, r in enumerate(out):
        assert isinstance(r, tuple), f"produce to {topic} record {i}: {r}"
    return out


def read_topic(h, topic, match, timeout=30):
    """The first record of topic (its full name) whose JSON value satisfies match."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": h.env["RELFLEET_KAFKA_BROKERS"],
                  "group.id": "harness-" + uuid.uuid4().hex, "enable.auto.commit": False})
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error() and m.value() and match(json.loads(m.value())):
                return m.value()
        raise AssertionError(f"no matching record on {topic} within {timeout}s")
    finally:
        c.close()


def committed_offset(h, group, topic_suffix, partition):
    """The offset the worker group has committed on one partition (-1001 when none)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": h.env["RELFLEET_KAFKA_BROKERS"], "group.id": group,
                  "enable.auto.commit": False})
    try:
        tp = c.committed([TopicPartition(h.topic(topic_suffix), partition)], timeout=10)[0]
        return tp.offset
    finally:
        c.close()


def kubectl(h, *args, check=True):
    proc = subprocess.run(["kubectl", "--kubeconfig", h.env["RELFLEET_KUBECONFIG"], *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


# -- the corpus -------------------------------------------------------------------------

class Case:
    """One hostile record: what is produced and what the dead letter's reason must say."""

    def __init__(self, name, key, value, reason, ordered=True):
        self.name, self.key, self.value, self.reason = name, key, value, reason
        # Produced with the good messages' key, so on their partition, in between them.
        self.ordered = ordered

    def __repr__(self):
        return f"Case({self.name})"


def dumps(body):
    return json.dumps(body).encode()


def generic_cases(schema, base, key, wrong_type, foreign):
    """The broken messages every topic gets: base is a valid body of schema for key,
    wrong_type a (field, value) of the wrong JSON type, foreign a valid body of another
    topic's schema for the same key."""
    family = schema.split(".")[1]
    svc = base["service"]
    good = dumps(base)
    missing = {k: v for k, v in base.items() if k != "release_id"}
    field, bad_value = wrong_type
    deep = (b'{"schema": "' + schema.encode() + b'", "x": ' + b"[" * 10000 + b"]" * 10000 + b"}")
    return [
        Case("not-json", key, good[:-7], "payload is not JSON"),
        Case("invalid-utf8", key, good.replace(b'"prod"', b'"pr\xffod"', 1),
             "payload is not valid UTF-8"),
        Case("overlong-utf8", key, good.replace(b'"prod"', b'"pr\xc0\xafod"', 1),
             "payload is not valid UTF-8"),
        Case("not-an-object", key, b'[{"schema": "' + schema.encode() + b'"}]',
             "payload is not a JSON object"),
        Case("duplicate-key", key, good[:-1] + b', "schema": "' + schema.encode() + b'"}',
             "payload is not JSON"),
        Case("nul-escape", key, dumps({**base, "operator": "a\u0000b"}), "payload is not JSON"),
        Case("lone-surrogate", key, good[:-1] + b', "x": "\\ud800"}', "payload is not JSON"),
        Case("number-overflow", key, good[:-1] + b', "x": 1e999}', "payload is not JSON"),
        Case("wrong-type", key, dumps({**base, field: bad_value}), f"field '{field}'"),
        Case("missing-field", key, dumps(missing), "release_id"),
        Case("extra-field", key, dumps({**base, "surprise": True}), "surprise"),
        Case("schema-not-string", key, dumps({**base, "schema": 1}), "field 'schema'"),
        Case("unknown-version", key, dumps({**base, "schema": f"relfleet.{family}.v9"}),
             "unknown schema"),
        Case("key-mismatch", key, dumps({**base, "service": svc + "-other"}),
             "does not match the body"),
        Case("missing-key", None, good, "missing key", ordered=False),
        Case("string-1mb", key, dumps({**base, "operator": "a" * MB}), "payload too large"),
        Case("string-900kb", key, dumps({**base, "operator": "a" * (900 * 1024)}),
             "field 'operator'"),
        Case("nesting-10000", key, deep, "nests deeper than 64"),
        Case("other-topic-schema", key, dumps(foreign), "does not belong here"),
    ]


def request_body(svc, version, release_id=None, **extra):
    body = {"schema": "relfleet.request.v1", "release_id": release_id or new_id(),
            "service": svc, "env": "prod", "version": version, "kind": "deploy",
            "operator": "hostile-test", "requested_at": NOW}
    body.update(extra)
    return body


def command_body(svc, release_id, action):
    return {"schema": "relfleet.command.v1", "command_id": new_id(), "release_id": release_id,
            "service": svc, "env": "prod", "action": action, "operator": "hostile-test",
            "issued_at": NOW}


# -- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def running(stack):
    """A service whose release R stays `progressing` (version bad-1 never gets ready), with
    R's genuine `rendered` and `applied` messages: the good messages of the tests."""
    from harness import Harness

    h = Harness(stack)
    svc = setup_service(h, versions=("1.0.0", "bad-1"), timeout=600)
    rid = deploy(h, svc, "bad-1")
    wait_status(h, rid, {"progressing"}, timeout=30)
    key = f"prod/{svc}".encode()
    found = {}
    for topic in ("rendered", "applied"):
        msgs = h.consume(topic, timeout=30, until=lambda ms: any(
            m.key == key and m.json().get("release_id") == rid for m in ms))
        found[topic] = [m.value for m in msgs
                        if m.key == key and m.json().get("release_id") == rid][0]
    yield {"svc": svc, "key": key, "rid": rid, "rendered": found["rendered"],
           "applied": found["applied"]}
    h.relctl("cancel", rid, check=False)


def topic_setup(h, topic, run):
    """(good_before, good_after, cases, extra checks) for one topic."""
    svc, key, rid = run["svc"], run["key"], run["rid"]
    rendered = json.loads(run["rendered"])
    applied = json.loads(run["applied"])
    if topic == "requests":
        first, second = request_body(svc, "1.0.0"), request_body(svc, "1.0.0")
        cases = generic_cases("relfleet.request.v1", request_body(svc, "1.0.0"), key,
                              ("version", 42), command_body(svc, rid, "cancel"))
        cases.append(Case("same-id-other-content", key,
                          dumps({**first, "version": "bad-1", "description": "not the same"}),
                          "already exists with other content"))
        return dumps(first), dumps(second), cases, {"first": first, "second": second}
    if topic == "rendered":
        base = {**rendered, "release_id": new_id()}
        cases = generic_cases("relfleet.rendered.v1", base, key, ("fence", "7"),
                              command_body(svc, rid, "cancel"))
        evil = json.loads(run["rendered"])
        evil["release_id"] = new_id()
        evil["manifests"][0]["metadata"]["name"] = "../x"
        cases.append(Case("manifest-name-dotdot", key, dumps(evil), "metadata.name"))
        # Broken JSON where the apply worker only checks the text (a manifest's members
        # beside apiVersion, kind and metadata, rf_msg_parse_lean): refused as before.
        marked = {**base, "manifests": [{**base["manifests"][0], "spec": "@@"}]
                  + base["manifests"][1:]}
        for name, spec, reason in (
                ("manifest-spec-not-json", b'{"replicas":tru}', "payload is not JSON"),
                ("manifest-spec-key-twice", b'{"replicas":1,"replicas":2}',
                 "duplicate object key"),
                ("manifest-spec-lone-surrogate", b'"\\ud800"', "payload is not JSON")):
            cases.append(Case(name, key, dumps(marked).replace(b'"@@"', spec), reason))
        cases.append(Case("unknown-release", key, dumps(base), "unknown release"))
        return run["rendered"], run["rendered"], cases, {}
    if topic == "applied":
        base = {**applied, "release_id": new_id()}
        cases = generic_cases("relfleet.applied.v1", base, key, ("fence", "7"), rendered)
        cases.append(Case("fence-zero", key, dumps({**base, "fence": 0}), "field 'fence'"))
        return run["applied"], run["applied"], cases, {}
    first, second = command_body(svc, rid, "promote"), command_body(svc, rid, "abort")
    cases = generic_cases("relfleet.command.v1", command_body(svc, rid, "promote"), key,
                          ("action", 7), applied)
    cases.append(Case("unknown-release", key, dumps(command_body(svc, new_id(), "cancel")),
                      "unknown release"))
    return dumps(first), dumps(second), cases, {"first": first, "second": second}


# -- broken messages --------------------------------------------------------------------

@pytest.mark.parametrize("topic", ["requests", "rendered", "applied", "commands"])
def test_hostile_messages_are_dead_lettered_and_good_ones_flow_in_order(harness, running, topic):
    h = harness
    stage = STAGE[topic]
    pids_before = h.stack.pids()
    before, after, cases, extra = topic_setup(h, topic, running)
    applied_before = None
    if topic == "rendered":
        applied_before = len([m for m in h.consume("applied", timeout=30)
                              if m.key == running["key"]])

    records = [(running["key"], before)] + [(c.key, c.value) for c in cases] + \
        [(running["key"], after)]
    placed = produce_batch(h, h.topic(topic), records)
    part = placed[0][0]
    good_offsets = (placed[0][1], placed[-1][1])
    bad = list(zip(cases, placed[1:-1]))
    for case, (p, _) in bad:
        if case.ordered:
            assert p == part, f"{case} went to partition {p}, not {part}"

    # Every broken record is dead-lettered: a rejected_messages row ...
    where = " OR ".join(f"(partition = {p} AND \"offset\" = {o})" for _, (p, o) in bad)
    rows = h.wait_for(lambda: (r := h.psql(
        f"SELECT partition, \"offset\", stage, reason, md5(payload), length(payload)"
        f" FROM rejected_messages WHERE topic = {sql_str(h.topic(topic))}"
        f" AND ({where}) ORDER BY id")) and len(r) == len(bad) and r, 30,
        f"{len(bad)} rejected_messages rows for {topic}")
    by_place = {(int(r[0]), int(r[1])): r for r in rows}
    for case, place in bad:
        row = by_place[place]
        assert row[2] == stage, (case, row[2])
        assert case.reason in row[3], f"{case}: reason {row[3][:300]!r}"
        value = case.value or b""
        assert (row[4], int(row[5])) == (hashlib.md5(value).hexdigest(), len(value)), \
            f"{case}: payload not kept"
    # ... handled in the order produced ...
    ordered_rows = [(int(r[0]), int(r[1])) for r in rows if int(r[0]) == part]
    assert ordered_rows == sorted(ordered_rows), ordered_rows

    # ... and a dead letter on `dlq` with the same reason and the original bytes.
    want = {place for _, place in bad}
    src = h.topic(topic)

    def mine(ms):
        return {(m.json()["partition"], m.json()["offset"]): m.json() for m in ms
                if m.json()["source_topic"] == src and
                (m.json()["partition"], m.json()["offset"]) in want}

    dead = mine(h.consume("dlq", timeout=30, until=lambda ms: len(mine(ms)) == len(want)))
    for case, place in bad:
        d = dead[place]
        assert d["schema"] == "relfleet.dlq.v1" and d["stage"] == stage
        assert d["reason"] == by_place[place][3], case
        assert d["key"] == (case.key.decode() if case.key else None), case
        value = case.value or b""
        assert d["payload_size"] == len(value), case
        assert d["payload_truncated"] == (len(value) > 700 * 1024), case
        assert value.startswith(base64.b64decode(d["payload_base64"])), case

    # The good records around them were processed, the first before and the last after.
    first_bad = min(o for c, (p, o) in bad if p == part)
    last_bad = max(o for c, (p, o) in bad if p == part)
    rejected_span = (f"(SELECT {{}}(at) FROM rejected_messages WHERE topic = {sql_str(src)}"
                     f" AND partition = {part} AND \"offset\" BETWEEN {first_bad} AND {last_bad})")
    if topic in ("requests", "commands"):
        ids = (extra["first"]["release_id"], extra["second"]["release_id"])
        if topic == "requests":
            firsts = [f"(SELECT min(at) FROM timeline WHERE release_id = '{i}'"
                      f" AND event = 'queued')" for i in ids]
        else:
            firsts = [f"(SELECT min(at) FROM timeline WHERE release_id = '{ids[0]}'"
                      f" AND event = '{a}')" for a in ("promote", "abort")]
        order = h.wait_for(lambda: (r := h.psql(
            f"SELECT {firsts[0]} <= {rejected_span.format('min')},"
            f" {rejected_span.format('max')} <= {firsts[1]}")) and r[0][0] != "" and
            r[0][1] != "" and r[0], 30, f"the good {topic} records to be handled")
        assert order == ["t", "t"], f"good and hostile {topic} records out of order: {order}"
        if topic == "requests":
            # The first request kept its own content despite the same id arriving again.
            rec = record(h, ids[0])
            assert rec["version"] == "1.0.0" and rec["status"] == "queued", rec
    if topic == "rendered":
        # Each redelivered `rendered` of the progressing release re-publishes `applied`.
        h.consume("applied", timeout=30, until=lambda ms: len(
            [m for m in ms if m.key == running["key"]]) >= applied_before + 2)
    group = h.prefix + stage
    h.wait_for(lambda: committed_offset(h, group, topic, part) > good_offsets[1], 30,
               f"group {group} to commit past the last good {topic} record")

    # The same workers are still running: nothing crashed and restarted.
    assert h.stack.pids() == pids_before
    assert record(h, running["rid"])["status"] in ACTIVE


def test_unknown_service_request_ends_rejected_not_dead_lettered(harness):
    h = harness
    ghost = h.unique_service("ghost")
    body = request_body(ghost, "1.0.0")
    (part, off), = produce_batch(h, h.topic("requests"),
                                 [(f"prod/{ghost}".encode(), dumps(body))])
    rec = wait_status(h, body["release_id"], "rejected", timeout=30)
    assert rec["error"] == f"unknown service '{ghost}' in env 'prod'"
    rows = h.psql(f"SELECT count(*) FROM rejected_messages WHERE topic ="
                  f" {sql_str(h.topic('requests'))} AND partition = {part}"
                  f" AND \"offset\" = {off}")
    assert rows == [["0"]]


# -- hostile values reaching Kubernetes names --------------------------------------------

HOSTILE_NAMES = {"dotdot": "../x", "upper": "UPPER-Case", "long": "a" * 300}


def test_hostile_values_in_kubernetes_names_end_release_before_any_apply(harness):
    h = harness
    releases = {}
    for label, name in HOSTILE_NAMES.items():
        svc = h.unique_service("hn")
        h.relctl("service", "set", svc, "--env", "prod", "template=hostile-name",
                 f"namespace=ns-{svc[-10:]}", "replicas=1", f"objname={name}")
        releases[label] = svc
    h.relctl("template", "sync", HOSTILE_TEMPLATES)
    for label, svc in releases.items():
        h.relctl("image", "add", svc, "1.0.0")
        releases[label] = (svc, deploy(h, svc, "1.0.0"))

    for label, (svc, rid) in releases.items():
        name = HOSTILE_NAMES[label]

        def ended_or_stuck():
            rec = record(h, rid)
            if rec and rec["status"] in ("failed", "succeeded", "rejected", "cancelled"):
                return rec
            # Stuck: apply refused the `rendered` message, nobody will end the release.
            dead = h.psql(f"SELECT reason FROM rejected_messages WHERE topic ="
                          f" {sql_str(h.topic('rendered'))}"
                          f" AND position(convert_to('{rid}', 'UTF8') in payload) > 0")
            if dead and rec and rec["status"] == "applying":
                return {"status": "stuck in applying", "error": dead[0][0]}
            return None

        rec = h.wait_for(ended_or_stuck, 30, f"release {rid} ({label}) to end")
        # render_validation (strict by default) rejects it from queued before it starts;
        # with the setting off, the rendered message's schema fails it instead.
        assert rec["status"] == "rejected", (
            f"{label}: release {rid} is {rec['status']} ({rec['error']})")
        assert "metadata.name" in rec["error"] or name[:40] in rec["error"], rec["error"]

    # Nothing reached the cluster: no namespace, no object, no Deployment apply logged.
    applies = json.loads(kubectl(h, "get", "--raw", "/kubesim/applies").stdout)
    for label, (svc, rid) in releases.items():
        ns = f"ns-{svc[-10:]}"
        assert not [a for a in applies if a["namespace"] == ns], f"{label}: applied in {ns}"
        got = kubectl(h, "get", "namespace", ns, check=False)
        assert got.returncode != 0 and "NotFound" in got.stderr, f"{label}: {ns} exists"


def test_harmless_value_in_kubernetes_name_is_applied(harness):
    """The control for the test above: the same template with a good name deploys."""
    h = harness
    svc = h.unique_service("hn")
    h.relctl("service", "set", svc, "--env", "prod", "template=hostile-name",
             f"namespace=ns-{svc[-10:]}", "replicas=1", "objname=fine-name")
    h.relctl("template", "sync", HOSTILE_TEMPLATES)
    h.relctl("image", "add", svc, "1.0.0")
    rid = deploy(h, svc, "1.0.0")
    wait_status(h, rid, ACTIVE - {"rendering", "applying"} | {"succeeded"}, timeout=30)
    got = json.loads(kubectl(h, "get", "services", "-n", f"ns-{svc[-10:]}", "-o", "json").stdout)
    assert sorted(i["metadata"]["name"] for i in got["items"]) == ["fine-name"]


# -- a null payload (a Kafka tombstone) ---------------------------------------------------

@pytest.fixture
def own_render_worker(harness, tmp_path):
    """A render worker of its own on a topic prefix of its own (same PostgreSQL), so that a
    message that blocks its partition cannot block the session stack's workers."""
    h = harness
    prefix = f"hostile-{uuid.uuid4().hex[:8]}."
    env = dict(h.env, RELFLEET_TOPIC_PREFIX=prefix, RELFLEET_SWEEP_INTERVAL_MS="600000")
    log_path = tmp_path / "render.log"
    # The topic must exist before the worker subscribes, or the worker sees it only at its
    # next metadata refresh: producing creates it. That first record is dead-lettered.
    (part, off), = produce_batch(h, prefix + "requests", [(b"prod/warm-up", b"warm-up")])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(bin_path("relfleet-worker")), "render"], env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        h.wait_for(lambda: h.psql(f"SELECT 1 FROM rejected_messages WHERE topic ="
                                  f" {sql_str(prefix + 'requests')} AND partition = {part}"
                                  f" AND \"offset\" = {off}"), 30,
                   "the extra render worker to dead-letter its first record")
        yield prefix, log_path, proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_null_payload_is_dead_lettered_and_does_not_block_the_partition(harness,
                                                                       own_render_worker):
    h = harness
    prefix, log_path, proc = own_render_worker
    ghost = h.unique_service("tomb")
    key = f"prod/{ghost}".encode()
    before, after = request_body(ghost, "1.0.0"), request_body(ghost, "1.0.0")
    placed = produce_batch(h, prefix + "requests",
                           [(key, dumps(before)), (key, None), (key, dumps(after))])
    part, off = placed[1]

    def handled():
        if b"will retry: cannot record rejected message" in log_path.read_bytes():
            lines = [ln for ln in log_path.read_text(errors="replace").splitlines()
                     if "will retry" in ln]
            raise AssertionError(f"the null payload blocks its partition: {lines[-1]}")
        assert proc.poll() is None, "the render worker exited"
        return h.psql(f"SELECT reason FROM rejected_messages WHERE topic ="
                      f" {sql_str(prefix + 'requests')} AND partition = {part}"
                      f" AND \"offset\" = {off}")

    rows = h.wait_for(handled, 30, "the null payload to be dead-lettered")
    assert rows == [["empty payload"]]
    dead = read_topic(h, prefix + "dlq", lambda m: m["source_topic"] == prefix + "requests"
                      and m["offset"] == off and m["partition"] == part)
    d = json.loads(dead)
    assert d["reason"] == "empty payload" and d["payload_base64"] == "" and d["stage"] == "render"
    # The request after it was handled (its service is unknown: rejected).
    for body in (before, after):
        rec = wait_status(h, body["release_id"], "rejected", timeout=30)
        assert rec["error"] == f"unknown service '{ghost}' in env 'prod'"
    assert proc.poll() is None
