"""Poll batches: a worker takes the messages its consumer already has (up to batch_max),
waits for the batch's deliveries once, and stores offsets only after. A delivery that fails
rewinds the batch's partitions: every message is handled again and no release is lost.
One stack for the module (its render worker is stopped and started)."""
import re

import pytest
from test_fleet import metric, scrape, workers

from conftest import start_stack, stop_stack
from harness import Harness, pid_alive, wait_for
from releases import TERMINAL, deploy, setup_service, wait_status


@pytest.fixture(scope="module")
def bstack(request):
    s = start_stack({"RELFLEET_RETRY_MAX_MS": "500"})
    yield s
    stop_stack(s, save_logs_as="batch-logs" if request.session.testsfailed else None)


@pytest.fixture
def h(bstack):
    return Harness(bstack)


def log_text(h, stage):
    return "".join(p.read_text(errors="replace")
                   for p in sorted((h.stack.state_dir / "logs").glob(f"{stage}-*.log")))


def stop_worker(h, stage):
    out = h.stack.run("worker", "kill", stage, "TERM").stdout.split()
    pid = int(out[2])
    wait_for(lambda: not pid_alive(pid), 15, f"{stage} worker {pid} to exit")


@pytest.mark.parametrize("batch_max", [None, "1"])
def test_failed_delivery_rewinds_the_batch_and_loses_no_release(h, batch_max):
    services = [setup_service(h, replicas=1) for _ in range(12)]
    stop_worker(h, "render")
    for p in (h.stack.state_dir / "logs").glob("render-*.log"):
        p.rename(p.with_suffix(".old"))
    try:
        ids = [deploy(h, svc, "1.0.0") for svc in services]
        # The next Produce request of any client fails for good: the restarted render
        # worker's first batch of `rendered` messages is not delivered.
        h.broker_ctl("push-errors Produce TOPIC_AUTHORIZATION_FAILED 1")
    finally:
        if batch_max:
            h.stack.base_env["RELFLEET_BATCH_MAX"] = batch_max
        try:
            h.stack.run("worker", "start", "render")
        finally:
            h.stack.base_env.pop("RELFLEET_BATCH_MAX", None)
    for rid in ids:
        assert wait_status(h, rid, TERMINAL, timeout=90)["status"] == "succeeded", rid
    log = log_text(h, "render")
    assert re.search(r"a message of the batch's \d+ was not delivered", log), \
        "the render worker never saw its batch's delivery fail"
    # The refusal was the broker's, not the requests' fault: none is dead-lettered (after a
    # refused Produce librdkafka refuses the topic at once for a while; that is retried).
    assert "dead-lettering" not in log, [l for l in log.splitlines() if "dead-lettering" in l][:3]
    dead = h.consume("dlq")
    assert not [m for m in dead if any(rid.encode() in m.value for rid in ids)], dead[:3]
    addr = max(workers(h.stack).items(), key=lambda kv: int(kv[0].split("-")[1]) if
               kv[0].startswith("render-") else -1)[1]
    samples = scrape(addr)
    batches = metric(samples, "relfleet_poll_batch_messages_count")
    taken = metric(samples, "relfleet_poll_batch_messages_sum")
    assert taken >= len(ids), (taken, batches)
    if batch_max:
        assert taken == batches, (taken, batches)  # one message at a time
    else:
        # The requests were waiting together: taken in batches, not one by one.
        assert batches < taken, (taken, batches)
    # Every release's `rendered` was produced again after the rewind, none twice applied
    # into a second release: one `results` message each.
    results = h.consume("results", timeout=30,
                        until=lambda ms: all(any(m.json()["release_id"] == r for m in ms)
                                             for r in ids))
    for rid in ids:
        assert sum(1 for m in results if m.json()["release_id"] == rid) == 1, rid


