"""relfleet-devbroker: Kafka clients against it, its control channel, and a clean stop."""
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from harness import bin_path, pid_alive, wait_for

TOPICS = ("requests", "rendered", "applied", "commands", "results", "dlq")


class Broker:
    """One relfleet-devbroker process in its own state folder."""

    def __init__(self, *args):
        self.dir = Path(tempfile.mkdtemp(prefix="relfleet-broker-"))
        self.log = open(self.dir / "broker.log", "w")
        self.proc = subprocess.Popen(
            [str(bin_path("relfleet-devbroker")), "--state-dir", str(self.dir), *args],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: (self.dir / "broker.addr").exists() or self.proc.poll() is not None,
                 20, "broker.addr")
        assert self.proc.poll() is None, (self.dir / "broker.log").read_text()
        self.addr = (self.dir / "broker.addr").read_text().strip()

    def ctl(self, *words):
        return subprocess.run(
            [str(bin_path("relfleet-devbroker")), "ctl", "--state-dir", str(self.dir), *words],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)

    def ok(self, *words):
        proc = self.ctl(*words)
        assert (proc.returncode, proc.stdout.strip()) == (0, "ok"), proc.stdout + proc.stderr
        return proc

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def remove(self):
        """Closes the log and removes the state folder (after stop)."""
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def broker():
    if not bin_path("relfleet-devbroker").exists():
        pytest.fail(f"{bin_path('relfleet-devbroker')} is not built")
    b = Broker("--partitions", "4")
    yield b
    b.stop(signal.SIGKILL)
    b.remove()


def _producer(addr, **extra):
    conf = {"bootstrap.servers": addr, "enable.idempotence": True, "linger.ms": 5}
    conf.update(extra)
    return Producer(conf)


def _produce(producer, topic, pairs, timeout=30):
    """Produces (key, value) pairs; returns the delivery errors (None for each success)."""
    results = []
    for key, value in pairs:
        producer.produce(topic, key=key, value=value,
                         on_delivery=lambda err, msg: results.append(err))
    producer.flush(timeout)
    assert len(results) == len(pairs), "not every message got a delivery report"
    return results


def _kcat_metadata(addr):
    out = subprocess.run(["kcat", "-b", addr, "-L", "-J", "-m", "10"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    return {t["topic"]: len(t["partitions"]) for t in json.loads(out)["topics"]}


def test_creates_topics_and_serves_kcat(broker):
    topics = _kcat_metadata(broker.addr)
    for suffix in TOPICS:
        assert topics["relfleet." + suffix] == 4
    assert broker.ok("ping").stdout == "ok\n"
    ctl = (broker.dir / "broker.ctl").read_text().strip()
    assert ctl.startswith("127.0.0.1:")

    subprocess.run(["kcat", "-b", broker.addr, "-P", "-t", "relfleet.requests", "-K", ":"],
                   input="prod/web:one\nprod/web:two\n", text=True, check=True, timeout=30)
    out = subprocess.run(["kcat", "-b", broker.addr, "-C", "-t", "relfleet.requests", "-J",
                          "-e", "-q"], capture_output=True, text=True, check=True, timeout=30)
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["key"], r["payload"]) for r in records] == [("prod/web", "one"), ("prod/web", "two")]
    assert len({r["partition"] for r in records}) == 1, "one key must stay on one partition"


def test_flags_prefix_partitions_brokers():
    b = Broker("--partitions", "2", "--brokers", "3", "--topic-prefix", "t1.")
    try:
        topics = _kcat_metadata(b.addr)
        assert {t: topics.get("t1." + t) for t in TOPICS} == {t: 2 for t in TOPICS}
        assert len(b.addr.split(",")) == 3
    finally:
        assert b.stop() == 0
        b.remove()


def test_idempotent_produce_and_group_consume(broker):
    topic = "relfleet.rendered"
    pairs = [(f"prod/svc{i % 5}".encode(), f"m{i}".encode()) for i in range(200)]
    assert _produce(_producer(broker.addr), topic, pairs) == [None] * 200

    group = "g-" + uuid.uuid4().hex
    conf = {"bootstrap.servers": broker.addr, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 6000,
            "partition.assignment.strategy": "range"}
    c = Consumer(conf)
    c.subscribe([topic])
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < 200 and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is None or msg.error():
            continue
        seen.append((msg.key(), msg.value()))
    c.commit(asynchronous=False)
    c.close()
    assert sorted(seen) == sorted(pairs)
    # Order per key is kept.
    for key in {k for k, _ in pairs}:
        assert [v for k, v in seen if k == key] == [v for k, v in pairs if k == key]

    # The group's committed offsets hold: a new member starts after them.
    _produce(_producer(broker.addr), topic, [(b"prod/late", b"late")])
    c = Consumer(conf)
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            got.append(msg.value())
    c.close()
    assert got == [b"late"]


MEMBER = textwrap.dedent("""\
    import json, os, sys
    from confluent_kafka import Consumer
    addr, group, topic, out = sys.argv[1:5]
    def write(parts):
        with open(out + ".tmp", "w") as f:
            json.dump(sorted(p.partition for p in parts), f)
        os.replace(out + ".tmp", out)
    c = Consumer({"bootstrap.servers": addr, "group.id": group, "session.timeout.ms": 6000,
                  "partition.assignment.strategy": "range", "auto.offset.reset": "earliest"})
    c.subscribe([topic], on_assign=lambda c, p: write(p), on_revoke=lambda c, p: write([]))
    while not os.path.exists(out + ".stop"):
        c.poll(0.2)
    c.close()
""")


def test_two_members_of_a_group_share_partitions(broker, tmp_path):
    group = "g-" + uuid.uuid4().hex
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    procs = []
    try:
        for out in outs:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", MEMBER, broker.addr, group, "relfleet.applied", str(out)],
                stdin=subprocess.DEVNULL))
            if out == outs[0]:
                wait_for(lambda: out.exists() and json.loads(out.read_text()) == [0, 1, 2, 3],
                         30, "the first member to own every partition")

        def shared():
            try:
                a, b = (json.loads(o.read_text()) for o in outs)
            except (OSError, ValueError):
                return False
            return a and b and sorted(a + b) == [0, 1, 2, 3]

        wait_for(shared, 30, "both members to share the partitions after a rebalance")
        for out in outs:
            (Path(str(out) + ".stop")).touch()
        for p in procs:
            assert p.wait(30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _broker_stats(producer, stats):
    deadline = time.monotonic() + 10
    while not stats and time.monotonic() < deadline:
        producer.poll(0.1)
    return stats[-1]


def test_push_errors_fails_then_retries(broker):
    topic = "relfleet.results"
    # Without retries the injected error reaches the delivery report...
    broker.ok("push-errors", "Produce", "NOT_ENOUGH_REPLICAS", "1")
    plain = _producer(broker.addr, **{"enable.idempotence": False, "retries": 0})
    errs = _produce(plain, topic, [(b"k", b"v")])
    assert errs[0] is not None and errs[0].code() == KafkaError.NOT_ENOUGH_REPLICAS

    # ... and with retries (idempotent) the message gets through after them, observably.
    broker.ok("push-errors", "0", "19", "3")
    stats = []
    p = _producer(broker.addr, **{"statistics.interval.ms": 100,
                                  "stats_cb": lambda s: stats.append(json.loads(s))})
    assert _produce(p, topic, [(b"k", b"v2")]) == [None]
    stats.clear()
    last = _broker_stats(p, stats)
    # One message, three refusals: at least four Produce requests went out.
    requests = sum(b["req"].get("Produce", 0) for b in last["brokers"].values())
    assert requests >= 4, f"expected 3 retried Produce requests, stats say {requests} sent"


def test_control_rejects_bad_commands(broker):
    for words, reason in ((["frobnicate"], "unknown command"),
                          (["push-errors", "Nope", "1", "1"], "unknown api key"),
                          (["push-errors", "Produce", "NOT_AN_ERROR", "1"], "unknown error"),
                          (["push-errors", "Heartbeat", "_TRANSPORT", "2"], "group coordinator"),
                          (["push-errors", "12", "-195", "1"], "group coordinator"),
                          (["broker-down", "x"], "bad broker id"),
                          (["broker-down", "7"], "error:"),
                          (["create-topic", "bad/name", "2"], "bad topic name")):
        proc = broker.ctl(*words)
        assert proc.returncode == 1 and proc.stdout.startswith("error: ")
        assert reason in proc.stdout, proc.stdout
    usage = subprocess.run([str(bin_path("relfleet-devbroker")), "ctl", "ping"],
                           capture_output=True, text=True, timeout=10)
    assert usage.returncode == 2


def test_create_topic(broker):
    broker.ok("create-topic", "extra.topic", "3")
    assert _kcat_metadata(broker.addr)["extra.topic"] == 3
    assert "already exists" in broker.ctl("create-topic", "extra.topic", "3").stdout.lower()


def test_broker_down_and_up(broker):
    topic = "relfleet.commands"
    assert _produce(_producer(broker.addr), topic, [(b"k", b"before")]) == [None]
    broker.ok("broker-down", "1")
    p = _producer(broker.addr, **{"message.timeout.ms": 2000})
    errs = _produce(p, topic, [(b"k", b"while down")], timeout=15)
    assert errs[0] is not None, "a produce to a down broker succeeded"
    broker.ok("broker-up", "1")
    assert _produce(_producer(broker.addr), topic, [(b"k", b"after")]) == [None]


def test_rtt_delays_requests(broker):
    p = _producer(broker.addr)
    _produce(p, "relfleet.dlq", [(b"k", b"warm")])
    broker.ok("rtt", "1", "700")
    start = time.monotonic()
    assert _produce(p, "relfleet.dlq", [(b"k", b"slow")]) == [None]
    assert time.monotonic() - start >= 0.6
    broker.ok("rtt", "1", "0")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(sig):
    b = Broker()
    pid = b.proc.pid
    assert b.stop(sig) == 0
    assert not pid_alive(pid)
    assert not (b.dir / "broker.addr").exists() and not (b.dir / "broker.ctl").exists()
    b.remove()


def _leaders(addr):
    out = subprocess.run(["kcat", "-b", addr, "-L", "-J", "-m", "10"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    return {(t["topic"], p["partition"]): (p["leader"], len(p["replicas"]))
            for t in json.loads(out)["topics"] for p in t["partitions"]}


def test_leader_and_coordinator_move_between_brokers():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "ops" / "stack.d"))
    from wire import kafka_coordinator

    b = Broker("--partitions", "3", "--brokers", "3")
    try:
        leaders = _leaders(b.addr)
        assert {rf for _, rf in leaders.values()} == {3}, "topics are not replicated 3 times"
        for target in (1, 2, 3):
            b.ok("leader", "relfleet.requests", "1", str(target))
            assert _leaders(b.addr)[("relfleet.requests", 1)][0] == target
        # A producer follows the move and its messages arrive.
        b.ok("leader", "relfleet.commands", "0", "2")
        assert _produce(_producer(b.addr), "relfleet.commands", [(b"k", b"v")]) == [None]
        b.ok("leader", "relfleet.commands", "0", "3")
        assert _produce(_producer(b.addr), "relfleet.commands", [(b"k", b"w")]) == [None]
        port = int(b.addr.split(",")[0].rsplit(":", 1)[1])
        for target in (3, 1):
            b.ok("coordinator", "group", "relfleet.render", str(target))
            assert kafka_coordinator("127.0.0.1", port, "relfleet.render") == target
        for words, reason in ((["leader", "no.such.topic", "0", "1"], "unknown topic"),
                              (["leader", "relfleet.requests", "3", "1"], "unknown topic"),
                              (["leader", "relfleet.requests", "0", "4"], "bad broker id"),
                              (["coordinator", "nope", "g", "1"], "bad coordinator type")):
            proc = b.ctl(*words)
            assert proc.returncode == 1 and reason in proc.stdout, proc.stdout
        # The unknown topic was not created by the attempt.
        assert "no.such.topic" not in _kcat_metadata(b.addr)
    finally:
        assert b.stop() == 0
        b.remove()
