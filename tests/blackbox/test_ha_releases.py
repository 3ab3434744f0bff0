"""Releases through the HA stack (ops/stack up --ha) and through a failover of each engine
while they are in flight: every release ends exactly once, no two releases of a service
overlap, each has a results message (copies only byte-identical)."""
import collections

import pytest

import conftest
from harness import Harness, Stack, parse_env
from releases import TERMINAL, deploy, setup_service, wait_status

# slow-1 is ready after 20 s of kubesim time: 10 s at the module's time scale, so the
# failover lands while its releases are progressing.
VERSIONS = ("slow-1", "1.1.0")


@pytest.fixture(scope="module")
def ha(request):
    s = Stack(extra_env={"RELFLEET_LOCK_LEASE_MS": "3000", "RELFLEET_RETRY_MAX_MS": "1000",
                         "RELFLEET_SWEEP_INTERVAL_MS": "500",
                         "RELFLEET_KUBESIM_TIME_SCALE": "2"})
    conftest._stacks.append(s)
    s.is_up = True
    s.run("up", "--ha", timeout=180)
    s.env = parse_env(s.run("env").stdout)
    yield s
    conftest.stop_stack(s, save_logs_as="ha-releases-logs" if request.session.testsfailed
                        else None)


def check_releases(h, services, ids):
    """Every release ended once, none overlaps another of its service, one results message
    each (copies byte-identical)."""
    for rid in ids:
        wait_status(h, rid, TERMINAL, timeout=180)
    names = ",".join(f"'{s}'" for s in services)
    terminal = ",".join(f"'{s}'" for s in sorted(TERMINAL))
    rows = h.psql(f"SELECT id, status FROM releases WHERE service IN ({names})")
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert {r[1] for r in rows} == {"succeeded"}, rows
    ends = h.psql("SELECT t.release_id, count(*) FROM timeline t JOIN releases r ON r.id ="
                  f" t.release_id WHERE r.service IN ({names}) AND t.event IN ({terminal})"
                  " GROUP BY t.release_id")
    assert sorted(ends) == sorted([rid, "1"] for rid in ids), ends
    assert h.psql(f"SELECT count(*) FROM releases a JOIN releases b ON a.service = b.service"
                  f" AND a.id < b.id WHERE a.service IN ({names}) AND"
                  " tstzrange(a.started_at, a.finished_at) && tstzrange(b.started_at,"
                  " b.finished_at)") == [["0"]]
    copies = collections.defaultdict(set)

    def all_results(msgs):
        for m in msgs:
            try:
                rid = m.json().get("release_id")
            except ValueError:
                continue
            if rid in ids:
                copies[rid].add(m.value)
        return set(copies) == set(ids)
    h.consume("results", timeout=60, until=all_results)
    assert all(len(v) == 1 for v in copies.values()), "results copies that differ"


@pytest.mark.parametrize("engine", ["none", "redis", "postgres", "kafka"])
def test_releases_go_through_a_failover(ha, engine):
    h = Harness(ha)
    services = [setup_service(h, versions=VERSIONS, replicas=2) for _ in range(3)]
    ids = [deploy(h, svc, VERSIONS[0]) for svc in services]
    if engine != "none":
        # In flight: each release holds its service and waits for its rollout (10 s) when
        # the failover begins (its first act: the kill, the stop or the leader moves).
        for rid in ids:
            wait_status(h, rid, "progressing")
        ha.run("failover", engine, *(["--rejoin"] if engine == "postgres" else []),
               timeout=180)
    # And the next release of each, requested right after.
    ids += [deploy(h, svc, VERSIONS[1]) for svc in services]
    check_releases(h, services, ids)
    assert ha.status()[1] == 0
