"""Audit consumers of `results` on another client library than the workers' librdkafka:
python3-kafka (kafka-python, pure Python) reads the CloudEvents headers of every result, and
joins a consumer group that reads a whole run's results, as schemas/README.md tells a
consumer to (lz4, the headers, the key, the order per service/env, dedup by event id)."""
import json
import time
from datetime import datetime

import kafka
import kafka.codec
from kafka import KafkaConsumer, TopicPartition

from releases import TERMINAL, deploy, setup_service, wait_status


def expected_source(h):
    prefix = h.prefix.rstrip("._-") or "relfleet"
    return "/relfleet/" + prefix


def consumer(h, **options):
    options.setdefault("auto_offset_reset", "earliest")
    options.setdefault("enable_auto_commit", False)
    return KafkaConsumer(bootstrap_servers=h.env["RELFLEET_KAFKA_BROKERS"],
                         client_id="audit-test", fetch_max_wait_ms=50,
                         session_timeout_ms=10000, heartbeat_interval_ms=1000, **options)


def read_until(c, want_ids, timeout, what):
    """Polls c until every id of want_ids was seen as a ce_id; returns every record read,
    in the order read."""
    records, seen = [], set()
    deadline = time.monotonic() + timeout
    while not want_ids <= seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: after {timeout}s {len(want_ids - seen)} of "
                                 f"{len(want_ids)} results missing: {sorted(want_ids - seen)}")
        for batch in c.poll(timeout_ms=500).values():
            for r in batch:
                records.append(r)
                seen.add(dict(r.headers).get("ce_id", b"").decode())
    return records


def db_result(h, release_id):
    return h.psql(f"SELECT relfleet_result('{release_id}')")[0][0]


def test_python3_kafka_has_the_lz4_codec():
    # The workers produce lz4 batches (compression.type=lz4); without python3-lz4 this
    # client fails with "Libraries for lz4 compression codec not found".
    assert kafka.codec.has_lz4(), "python3-lz4 is missing (ops/bootstrap installs it)"


def test_every_result_carries_the_cloudevents_kafka_binding(harness):
    h = harness
    svc = setup_service(h, versions=("1.0.0", "bad-7"), timeout="2s")
    ok = deploy(h, svc, "1.0.0")
    wait_status(h, ok, "succeeded", timeout=60)
    failed = deploy(h, svc, "bad-7")
    rejected = deploy(h, svc, "9.9.9")  # not a known image: rejected at once
    wait_status(h, failed, TERMINAL, timeout=60)
    want = {ok: "succeeded", failed: "failed", rejected: "rejected"}

    c = consumer(h)
    partitions = [TopicPartition(h.topic("results"), p)
                  for p in sorted(c.partitions_for_topic(h.topic("results")))]
    c.assign(partitions)
    c.seek_to_beginning()
    try:
        records = read_until(c, set(want), 60, "reading results without a group")
    finally:
        c.close()
    mine = {}
    for r in records:
        headers = dict(r.headers)
        rid = headers.get("ce_id", b"").decode()
        if rid in want:
            assert len(headers) == len(r.headers), f"a header twice: {r.headers}"
            mine[rid] = (r, headers)
    for rid, status in want.items():
        r, headers = mine[rid]
        body = r.value.decode()
        assert body == db_result(h, rid), "the body is the result message, unchanged"
        result = json.loads(body)
        assert result["status"] == status and result["event_id"] == rid
        assert r.key == f"prod/{svc}".encode()
        assert headers == {
            "ce_specversion": b"1.0",
            "ce_id": rid.encode(),
            "ce_source": expected_source(h).encode(),
            "ce_type": f"io.relfleet.release.{status}".encode(),
            "ce_time": result["finished_at"].encode(),
            "ce_subject": f"{svc}/prod".encode(),
            "content-type": b"application/json",
        }, r.headers
        # ce_time is an RFC 3339 timestamp.
        datetime.fromisoformat(headers["ce_time"].decode().replace("Z", "+00:00"))


def test_a_consumer_group_reads_a_whole_run(harness):
    h = harness
    topic = h.topic("results")
    group = h.unique_service("audit")
    # A run: three services, three releases each queued behind the one before, and a
    # rejected request of each.
    services = [setup_service(h, versions=("1.0.0", "1.1.0", "1.2.0"), replicas=1)
                for _ in range(3)]
    chains = {svc: [deploy(h, svc, v) for v in ("1.0.0", "1.1.0", "1.2.0")]
              for svc in services}
    rejected = {svc: deploy(h, svc, "0.0.0-unknown") for svc in services}
    ids = {rid for chain in chains.values() for rid in chain} | set(rejected.values())
    for rid in ids:
        wait_status(h, rid, TERMINAL, timeout=90)

    c = consumer(h, group_id=group)
    c.subscribe([topic])
    try:
        records = read_until(c, ids, 60, f"group {group}")
        assert c.assignment(), "the group assigned no partition"
        c.commit()
    finally:
        c.close()

    first = {}  # event id -> the first record with it; duplicates are byte-identical
    for r in records:
        rid = dict(r.headers)["ce_id"].decode()
        if rid in first:
            assert (r.value, r.headers) == (first[rid].value, first[rid].headers)
            continue
        first[rid] = r
    for rid in ids:
        r = first[rid]
        body = json.loads(r.value)
        assert r.key == f"{body['env']}/{body['service']}".encode()
        assert body["status"] == ("rejected" if rid in rejected.values() else "succeeded"), body
    for svc, chain in chains.items():
        # One key, one partition, and the queued releases' results in their order.
        assert len({first[rid].partition for rid in chain + [rejected[svc]]}) == 1
        offsets = [first[rid].offset for rid in chain]
        assert offsets == sorted(offsets), f"{svc}: results out of order: {offsets}"

    # The group committed its offsets: a member that joins later reads what came after.
    svc = services[0]
    h.relctl("image", "add", svc, "1.3.0")
    later = deploy(h, svc, "1.3.0")
    wait_status(h, later, TERMINAL, timeout=60)
    c = consumer(h, group_id=group)
    c.subscribe([topic])
    try:
        again = read_until(c, {later}, 60, f"group {group} after its commit")
    finally:
        c.close()
    reread = {dict(r.headers)["ce_id"].decode() for r in again} & ids
    assert not reread, f"read again after the commit: {sorted(reread)}"
