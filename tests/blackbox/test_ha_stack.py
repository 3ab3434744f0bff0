"""ops/stack up --ha and ops/stack failover: Redis with three Sentinels, PostgreSQL with a
synchronous standby, three brokers; each failover does what it says and down stops it all.
One HA stack for the module; the tests run in order (each failover starts from the last)."""
import json
import os
import subprocess

import pytest

import conftest
from harness import Harness, Stack, parse_env, pid_alive, wait_for
from test_stack import assert_on_no_command_line


@pytest.fixture(scope="module")
def ha(request):
    s = Stack()
    conftest._stacks.append(s)
    s.is_up = True
    s.run("up", "--ha", timeout=180)
    s.env = parse_env(s.run("env").stdout)
    yield s
    conftest.stop_stack(s, save_logs_as="ha-stack-logs" if request.session.testsfailed else None)


def redis_password(s):
    return (s.state_dir / "redis.password").read_text().strip()


def redis_cli(s, port, *args):
    """redis-cli on 127.0.0.1:port; the password from the environment, not the command line."""
    env = dict(os.environ, REDISCLI_AUTH=redis_password(s))
    proc = subprocess.run(["redis-cli", "--no-auth-warning", "-p", str(port), *args], env=env,
                          capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    return proc.stdout.strip().splitlines()


def psql_port(s, port, sql):
    """psql on one PostgreSQL node (the state folder's unix socket, trust)."""
    proc = subprocess.run(["psql", "-X", "-h", str(s.state_dir / "pg" / "run"), "-p", str(port),
                           "-U", "relfleet", "-d", "relfleet", "-Atq", "-c", sql],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    return proc.stdout.strip() if proc.returncode == 0 else None


def port(addr):
    return int(addr.rsplit(":", 1)[1])


def rows_like(s, prefix):
    rows, _ = s.status()
    return {name: row for name, row in rows.items() if name.startswith(prefix + "-")}


def leaders(s):
    """{topic: {partition: (leader, replica count)}} from kcat, an independent client."""
    out = subprocess.run(["kcat", "-b", s.env["RELFLEET_KAFKA_BROKERS"], "-L", "-J"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return {t["topic"]: {p["partition"]: (p["leader"], len(p["replicas"]))
                         for p in t["partitions"]}
            for t in json.loads(out)["topics"] if t["topic"].startswith("relfleet.")}


def test_up_ha_shows_every_role(ha):
    rows, code = ha.status()
    assert code == 0, rows
    roles = {name: row[3] for name, row in rows.items() if len(row) == 4}
    assert roles["postgres-1"] == "primary (standbys: pg2 sync)"
    assert roles["postgres-2"].startswith("standby (streaming")
    assert roles["redis-1"] == "master (2 replicas)"
    for n in (2, 3):
        assert roles[f"redis-{n}"].startswith("replica of 127.0.0.1:%d" % port(rows["redis-1"][1]))
    for n in (1, 2, 3):
        assert roles[f"sentinel-{n}"] == "sentinel (master redis-1)"
        assert roles[f"broker-{n}"].startswith(f"broker id={n} leads ")
    # Two workers per stage.
    for stage in ("render", "apply", "track", "notify"):
        assert rows[f"{stage}-1"][2] == rows[f"{stage}-2"][2] == "alive"
    # Every topic replicated three times, leaders spread over the brokers.
    parts = leaders(ha)
    assert len(parts) == 6 and all(rf == 3 for t in parts.values() for _, rf in t.values())
    # PostgreSQL durable and synchronous, on two ports of its own.
    primary = port(rows["postgres-1"][1])
    assert port(rows["postgres-2"][1]) != primary
    for setting, value in (("fsync", "on"), ("synchronous_commit", "on"),
                           ("synchronous_standby_names", "pg2")):
        assert psql_port(ha, primary, f"SHOW {setting}") == value, setting


def test_env_exports_sentinel_url_and_multi_host_dsn(ha):
    rows, _ = ha.status()
    password = redis_password(ha)
    sentinels = ",".join(rows[f"sentinel-{n}"][1] for n in (1, 2, 3))
    assert ha.env["RELFLEET_REDIS_URL"] == f"redis-sentinel://:{password}@{sentinels}/0#relfleet"
    pg_pass = (ha.state_dir / "pg.password").read_text().strip()
    nodes = ",".join(rows[f"postgres-{n}"][1] for n in (1, 2))
    assert ha.env["RELFLEET_PG_DSN"] == (f"postgresql://relfleet:{pg_pass}@{nodes}/relfleet"
                                         "?target_session_attrs=read-write")
    # The Sentinels answer with the password, name the master, and refuse without it.
    s1 = port(rows["sentinel-1"][1])
    assert redis_cli(ha, s1, "SENTINEL", "get-master-addr-by-name", "relfleet") == \
        ["127.0.0.1", str(port(rows["redis-1"][1]))]
    bare = subprocess.run(["redis-cli", "-p", str(s1), "PING"], capture_output=True, text=True,
                          timeout=10)
    assert "NOAUTH" in bare.stdout + bare.stderr
    # The multi-host DSN reaches the writable node.
    assert Harness(ha).psql("SELECT pg_is_in_recovery(), inet_server_port()") == \
        [["f", str(port(rows["postgres-1"][1]))]]
    assert_on_no_command_line(password, pg_pass)


def test_failover_redis_elects_a_replica_and_restarts_the_old_master(ha):
    before = rows_like(ha, "redis")
    old = next(name for name, row in before.items() if row[3].startswith("master"))
    old_port = port(before[old][1])
    # A key every replica has (WAIT 2) survives the failover.
    assert redis_cli(ha, old_port, "SET", "ha-test", "kept")[0] == "OK"
    assert redis_cli(ha, old_port, "WAIT", "2", "5000") == ["2"]
    out = ha.run("failover", "redis", timeout=120).stdout
    assert f"killed master {old} (127.0.0.1:{old_port}" in out, out
    assert not pid_alive(int(before[old][0])), "the old master was not killed"
    after = rows_like(ha, "redis")
    new = next(name for name, row in after.items() if row[3].startswith("master"))
    new_port = port(after[new][1])
    # The master the Sentinels name once the set settled: on a loaded machine they may
    # have failed the first elected one over again, and the old master follows the last.
    assert new != old and "elected " in out and f"a replica of {new}" in out, out
    assert redis_cli(ha, new_port, "ROLE")[0] == "master"
    assert redis_cli(ha, new_port, "GET", "ha-test") == ["kept"]
    # Restarted, and the Sentinels made it a replica of the new master.
    role = redis_cli(ha, old_port, "ROLE")
    assert role[:3] == ["slave", "127.0.0.1", str(new_port)], role
    for n in (1, 2, 3):
        s = port(ha.status()[0][f"sentinel-{n}"][1])
        assert redis_cli(ha, s, "SENTINEL", "get-master-addr-by-name", "relfleet")[1] == \
            str(new_port)
    assert ha.status()[1] == 0


def test_failover_redis_no_restart_then_rejoin(ha):
    before = rows_like(ha, "redis")
    old = next(name for name, row in before.items() if row[3].startswith("master"))
    ha.run("failover", "redis", "--no-restart", timeout=120)
    rows, code = ha.status()
    assert rows[old][2] == "stopped" and code == 0, rows
    assert not pid_alive(int(before[old][0]))
    ha.run("rejoin", "redis", timeout=120)
    assert rows_like(ha, "redis")[old][3].startswith("replica of ")


def test_failover_postgres_promotes_the_standby(ha):
    h = Harness(ha)
    h.psql("CREATE TABLE IF NOT EXISTS ha_test (n int)")
    h.psql("INSERT INTO ha_test VALUES (1)")  # acknowledged: on the synchronous standby too
    before = rows_like(ha, "postgres")
    old = next(name for name, row in before.items() if row[3].startswith("primary"))
    new = next(name for name in before if name != old)
    out = ha.run("failover", "postgres", timeout=120).stdout
    assert f"stopped primary {old}" in out and f"promoted {new}" in out, out
    rows = rows_like(ha, "postgres")
    assert rows[old][2] == "stopped" and rows[new][3] == "primary (standbys: none)", rows
    assert not pid_alive(int(before[old][0])), "the old primary still runs"
    # The promoted node takes writes through the multi-host DSN; nothing acknowledged is lost.
    h.psql("INSERT INTO ha_test VALUES (2)")
    assert h.psql("SELECT array_agg(n ORDER BY n), inet_server_port() FROM ha_test") == \
        [["{1,2}", str(port(rows[new][1]))]]
    # No synchronous standby is left: the setting is empty, or every commit would wait.
    assert psql_port(ha, port(rows[new][1]), "SHOW synchronous_standby_names") == ""
    assert ha.status()[1] == 0


def test_rejoin_postgres_rewinds_the_old_primary_into_a_synchronous_standby(ha):
    before = rows_like(ha, "postgres")
    old = next(name for name, row in before.items() if row[2] == "stopped")
    ha.run("rejoin", "postgres", timeout=120)
    rows = rows_like(ha, "postgres")
    primary = next(name for name in rows if name != old)
    assert rows[old][3].startswith("standby (streaming"), rows
    assert rows[primary][3] == f"primary (standbys: pg{old[-1]} sync)", rows
    assert psql_port(ha, port(rows[old][1]), "SELECT array_agg(n ORDER BY n) FROM ha_test") == \
        "{1,2}"


def test_failover_postgres_rejoin_in_one_go(ha):
    before = rows_like(ha, "postgres")
    old = next(name for name, row in before.items() if row[3].startswith("primary"))
    out = ha.run("failover", "postgres", "--rejoin", timeout=120).stdout
    assert "rejoined as the synchronous standby" in out, out
    rows = rows_like(ha, "postgres")
    assert rows[old][3].startswith("standby (streaming")
    Harness(ha).psql("INSERT INTO ha_test VALUES (3)")


def test_failover_kafka_moves_leaders_and_bounces_the_broker(ha):
    before = leaders(ha)
    counts = {}
    for parts in before.values():
        for leader, _ in parts.values():
            counts[leader] = counts.get(leader, 0) + 1
    victim = max(counts, key=counts.get)
    out = ha.run("failover", "kafka", "--broker", str(victim), timeout=120).stdout
    assert f"broker {victim} down" in out and f"broker {victim} up again" in out, out
    after = leaders(ha)
    assert not [(t, p) for t, parts in after.items() for p, (leader, _) in parts.items()
                if leader == victim], "a partition is still led by the broker"
    assert sum(len(p) for p in after.values()) == sum(len(p) for p in before.values())
    # The broker answers again (metadata from its own address alone).
    rows, code = ha.status()
    addr = rows[f"broker-{victim}"][1]
    assert rows[f"broker-{victim}"][2] == "alive" and code == 0
    subprocess.run(["kcat", "-b", addr, "-L"], capture_output=True, timeout=30, check=True)


def test_failover_kafka_only_move(ha):
    victim = 1 if any(leader == 1 for t in leaders(ha).values() for leader, _ in t.values()) \
        else 2
    out = ha.run("failover", "kafka", "--broker", str(victim), "--only-move").stdout
    assert "down" not in out, out
    assert all(leader != victim for t in leaders(ha).values() for leader, _ in t.values())


def test_down_leaves_nothing_running(ha):
    pids = {int(pid) for pid in (row[0] for row in ha.status()[0].values()) if pid.isdigit()}
    assert len(pids) >= 19
    ha.down()
    assert not [p for p in pids if pid_alive(p)], "down left a process running"
    # Nor anything else working in or configured from the state folder.
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if (cwd.startswith(str(ha.state_dir)) or str(ha.state_dir) in cmdline) and pid_alive(pid):
            left.append((pid, cmdline))
    assert not left, left
    wait_for(lambda: ha.status()[1] != 0, 5, "status to say there is no stack")
