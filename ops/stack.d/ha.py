"""ops/stack up --ha and ops/stack failover: the replicated local stack (Redis with Sentinels,
PostgreSQL with a synchronous standby, three brokers) and what an HA manager would do."""
import os
import signal
import subprocess
import sys
import time

import stack as S
from wire import (WireError, kafka_answers, kafka_coordinator, kafka_metadata, redis_call,
                  redis_try)

MASTER_NAME = "relfleet"
NODES = 3  # Redis servers, Sentinels and brokers
# 2 s: with 1 s, a Sentinel on a loaded 2-core machine saw a just-promoted master miss its
# pings for a second and failed it over again (a CI run of 2a6f199, test_ha_stack).
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 3000


def mode_file():
    return S.STATE + "/mode"


def is_ha():
    return S.read_first_line(mode_file()) == "ha"


def stopped_file():
    return S.STATE + "/stopped"


def stopped():
    """The components a failover left down on purpose (status says stopped, not dead)."""
    try:
        with open(stopped_file()) as f:
            return {line.strip() for line in f if line.strip()}
    except OSError:
        return set()


def set_stopped(name, on):
    names = stopped() | {name} if on else stopped() - {name}
    with open(stopped_file(), "w") as f:
        f.write("".join(n + "\n" for n in sorted(names)))


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def rows(prefix):
    """[(name, pidfile, match, addr)] of the components named prefix-N."""
    return [r for r in S.components() if r[0].startswith(prefix + "-")]


# -- Redis and Sentinel -----------------------------------------------------------------
def redis_password():
    path = S.STATE + "/redis.password"
    if not os.path.isfile(path):
        S.write_private(path, S.random_hex() + "\n")
    return S.read_first_line(path)


def redis_node_conf(d, port, n, password, master_port):
    lines = [f"port {port}", "bind 127.0.0.1", 'save ""', "appendonly no", f"dir {d}",
             "daemonize yes", f"pidfile {d}/redis.pid", f"logfile {S.LOGS}/redis-{n}.log",
             f"requirepass {password}", f"masterauth {password}"]
    if master_port:
        lines.append(f"replicaof 127.0.0.1 {master_port}")
    return "\n".join(lines) + "\n"


def sentinel_conf(d, port, n, password, master_port):
    return "\n".join([
        f"port {port}", "bind 127.0.0.1", "daemonize yes", f"pidfile {d}/sentinel.pid",
        f"logfile {S.LOGS}/sentinel-{n}.log", f"dir {d}",
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2",
        f"sentinel auth-pass {MASTER_NAME} {password}",
        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
        f"sentinel parallel-syncs {MASTER_NAME} 2",
        # The Sentinels' own password (clients and the other Sentinels use it).
        f"requirepass {password}",
    ]) + "\n"


def start_daemon(exe, conf, pidfile, port, password, what, log):
    """Starts a daemonizing redis-server or redis-sentinel from its config file; True when it
    answers PING."""
    try:
        os.unlink(pidfile)
    except FileNotFoundError:
        pass
    with open(log, "ab") as out:
        S.run([exe, conf], stdout=out, stderr=subprocess.STDOUT)
    return S.wait_until(10, f"{what} on port {port}",
                        lambda: redis_try(port, "PING", password=password) == "PONG") and \
        S.wait_until(5, f"{what}'s pid file", lambda: S.has_content(pidfile))


def start_redis_node(kind, n, conf, password, master_port):
    """Starts Redis server or Sentinel n of the HA stack from a config file of its own (not
    stdin: Sentinel rewrites it on failover, CONFIG REWRITE); returns its port."""
    exe, short, base = {"redis": ("redis-server", "r", "redis"),
                        "sentinel": ("redis-sentinel", "s", "sentinel")}[kind]
    d = f"{S.STATE}/redis/{short}{n}"
    log = S.LOGS + f"/{kind}-{n}.log"
    os.makedirs(d, exist_ok=True)
    for attempt in (1, 2, 3):
        port = S.free_port()
        S.write_private(f"{d}/{base}.conf", conf(d, port, n, password, master_port))
        if start_daemon(exe, f"{d}/{base}.conf", f"{d}/{base}.pid", port, password,
                        f"{kind}-{n}", log):
            break
        if attempt == 3:
            S.tail(log)
            S.die(f"{kind} {n} did not start (log: {log})")
    S.add_component(f"{kind}-{n}", f"{d}/{base}.pid", exe, f"127.0.0.1:{port}")
    return port


def start_redis_ha():
    password = redis_password()
    master_port = start_redis_node("redis", 1, redis_node_conf, password, None)
    for n in range(2, NODES + 1):
        start_redis_node("redis", n, redis_node_conf, password, master_port)
    for _, _, _, addr in rows("redis")[1:]:
        if not S.wait_until(S.START_TIMEOUT, f"replica {addr} to sync",
                            lambda: "master_link_status:up" in
                            (redis_try(port_of(addr), "INFO", "replication", password=password)
                             or "")):
            S.die(f"redis replica {addr} did not sync with its master")
    sentinels = [start_redis_node("sentinel", n, sentinel_conf, password, master_port)
                 for n in range(1, NODES + 1)]

    # Ready for a failover once every Sentinel knows both replicas and the other Sentinels.
    def ready(port):
        info = redis_try(port, "SENTINEL", "MASTER", MASTER_NAME, password=password)
        if not isinstance(info, list):
            return False
        fields = dict(zip(info[::2], info[1::2]))
        return fields.get("num-slaves") == str(NODES - 1) and \
            fields.get("num-other-sentinels") == str(NODES - 1)
    for port in sentinels:
        if not S.wait_until(S.START_TIMEOUT, f"sentinel on port {port} to see the others",
                            lambda: ready(port)):
            S.die(f"sentinel on port {port} does not see 2 replicas and 2 other sentinels")
    hosts = ",".join(f"127.0.0.1:{p}" for p in sentinels)
    os.environ["RELFLEET_REDIS_URL"] = f"redis-sentinel://:{password}@{hosts}/0#{MASTER_NAME}"


def sentinel_master(password):
    """(port of the master most live Sentinels name, how many name it, live Sentinels)."""
    votes, live = {}, 0
    for _, _, _, addr in rows("sentinel"):
        reply = redis_try(port_of(addr), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME,
                          password=password)
        if isinstance(reply, list) and len(reply) == 2:
            live += 1
            votes[int(reply[1])] = votes.get(int(reply[1]), 0) + 1
    if not votes:
        return None, 0, live
    port = max(votes, key=votes.get)
    return port, votes[port], live


def redis_role(port, password):
    reply = redis_try(port, "ROLE", password=password)
    return reply if isinstance(reply, list) and reply else None


def redis_role_text(port, password):
    role = redis_role(port, password)
    if not role:
        return "unreachable"
    if role[0] == "master":
        return f"master ({len(role[2])} replicas)"
    if role[0] == "slave":
        return f"replica of {role[1]}:{role[2]} ({role[3]})"
    return role[0]


def redis_name(port):
    return next((r[0] for r in rows("redis") if port_of(r[3]) == port), f"127.0.0.1:{port}")


def failover_redis(args):
    restart = "--no-restart" not in args
    password = redis_password()
    old, votes, live = sentinel_master(password)
    if old is None or votes < 2:
        S.die("the sentinels do not agree on a master of 'relfleet' (ops/stack status)")
    role = redis_role(old, password)
    if not role or role[0] != "master":
        S.die(f"redis master 127.0.0.1:{old} the sentinels name does not answer ROLE master")
    row = next(r for r in rows("redis") if port_of(r[3]) == old)
    pid, alive = S.pidfile_live(row[1], row[2])
    if not alive:
        S.die(f"cannot find the process of redis master {row[0]}")
    os.kill(int(pid), signal.SIGKILL)
    S.wait_until(5, f"{row[0]} (pid {pid}) to die", lambda: not S.pid_alive(pid))
    S.say(f"redis: killed master {row[0]} (127.0.0.1:{old}, pid {pid}) with SIGKILL")
    start = time.monotonic()

    def elected():
        port, votes, live = sentinel_master(password)
        if port is None or port == old or votes < live:
            return None
        role = redis_role(port, password)
        return port if role and role[0] == "master" else None
    new = None
    if S.wait_until(30, "the sentinels to elect a new master", lambda: elected()):
        new = elected()
    if not new:
        S.die("the sentinels elected no new master within 30s (logs: "
              f"{S.LOGS}/sentinel-*.log)")
    S.say(f"redis: sentinels elected {redis_name(new)} (127.0.0.1:{new}) as master after "
          f"{time.monotonic() - start:.1f}s; old master {row[0]} (127.0.0.1:{old})")
    if not restart:
        set_stopped(row[0], True)
        S.say(f"redis: {row[0]} stays down (--no-restart)")
        return 0
    return redis_restart(row, new, password)


def redis_restart(row, new, password):
    """Starts a stopped Redis server on its port and config file: it comes up a master (the
    file says nothing else) and the Sentinels reconfigure it as a replica of new."""
    old = port_of(row[3])
    d = os.path.dirname(row[1])
    if not start_daemon("redis-server", d + "/redis.conf", row[1], old, password, row[0],
                        S.LOGS + f"/{row[0]}.log"):
        S.die(f"{row[0]} did not start again (log: {S.LOGS}/{row[0]}.log)")
    set_stopped(row[0], False)

    # The master the Sentinels name now, not the one elected before: on a loaded machine a
    # Sentinel can fail the fresh master over again (down-after is 2 s), and the old one
    # then follows the second (found by tests/chaos/run --ha --soak --seed 16).
    def follows():
        master = sentinel_master(password)[0]
        role = redis_role(old, password)
        if not (master and role and role[0] == "slave" and role[3] == "connected"):
            return None
        return master if int(role[2]) == master else None
    if not S.wait_until(30, f"the sentinels to make {row[0]} a replica", follows):
        S.die(f"{row[0]} restarted but the sentinels did not make it a replica of "
              f"the master they name (first {redis_name(new)})")
    master = follows() or new
    S.say(f"redis: {row[0]} restarted; the sentinels made it a replica of {redis_name(master)}")
    return 0


# -- PostgreSQL -------------------------------------------------------------------------
def pg_nodes():
    """[(component name, cluster name, data folder, port)]."""
    return [(r[0], "pg" + r[0].rsplit("-", 1)[1], os.path.dirname(r[1]), port_of(r[3]))
            for r in rows("postgres")]


def sockdir():
    return S.STATE + "/pg/run"


def pg_query(port, sql):
    """The unaligned output of one statement over the unix socket, None when it fails."""
    proc = subprocess.run(["psql", "-h", sockdir(), "-p", str(port), "-U", "relfleet", "-d",
                           "postgres", "-Atq", "-c", sql], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    return proc.stdout.strip() if proc.returncode == 0 else None


def pg_in_recovery(port):
    """True (standby), False (primary) or None (unreachable)."""
    out = pg_query(port, "SELECT pg_is_in_recovery()")
    return None if out is None else out == "t"


def pg_private_pgpass(password):
    """A password file the server's user can read (walreceiver, pg_basebackup, pg_rewind)."""
    path = S.STATE + "/pg/pgpass"
    S.write_private(path, f"127.0.0.1:*:*:relfleet:{password}\n")
    S.chown_pg(path)
    return path


def pg_follow(data, cluster_name, primary_port, passfile):
    """Makes a data folder a standby of the primary on primary_port: standby.signal, and
    primary_conninfo and cluster_name (the standby's name in synchronous_standby_names)
    appended, so they win over what was copied from the primary."""
    open(data + "/standby.signal", "w").close()
    with open(data + "/postgresql.auto.conf", "a") as f:
        f.write(f"primary_conninfo = 'host=127.0.0.1 port={primary_port} user=relfleet "
                f"passfile=''{passfile}'' application_name={cluster_name}'\n")
    with open(data + "/postgresql.conf", "a") as f:
        f.write(f"cluster_name = '{cluster_name}'\n")
    S.chown_pg(data + "/standby.signal")


def pg_set_sync(primary_port, standby_name):
    """synchronous_standby_names on the primary: the standby's name, or '' when it has none
    (with a name and no such standby connected, every commit would wait)."""
    value = standby_name or ""
    if pg_query(primary_port, f"ALTER SYSTEM SET synchronous_standby_names = '{value}'") is None \
            or pg_query(primary_port, "SELECT pg_reload_conf()") is None:
        S.die(f"cannot set synchronous_standby_names on the primary on port {primary_port}")
    if standby_name and not S.wait_until(
            S.START_TIMEOUT, f"standby {standby_name} to be synchronous",
            lambda: pg_query(primary_port, "SELECT sync_state FROM pg_stat_replication "
                             f"WHERE application_name = '{standby_name}'") == "sync"):
        S.die(f"standby '{standby_name}' did not become synchronous")


def pg_wait_streaming(primary_port, standby_name):
    if not S.wait_until(S.START_TIMEOUT, f"standby {standby_name} to stream",
                        lambda: pg_query(primary_port, "SELECT state FROM pg_stat_replication "
                                         f"WHERE application_name = '{standby_name}'")
                        == "streaming"):
        S.die(f"standby '{standby_name}' does not stream from the primary on port "
              f"{primary_port} (logs: {S.LOGS}/postgres-*.log)")


def start_pg_node(data, log):
    for attempt in (1, 2, 3):
        port = S.free_port()
        if S.pg_start_server(data, port, log):
            return port
    S.tail(log)
    S.die(f"PostgreSQL did not start (log: {log})")


def start_postgres_ha():
    S.pg_user_can_enter()
    sd = sockdir()
    if len(sd) > 90:
        S.die(f"state folder path too long for a unix socket: '{S.STATE}'")
    os.makedirs(sd, exist_ok=True)
    password = S.pg_password()
    logs = [S.LOGS + "/postgres-1.log", S.LOGS + "/postgres-2.log"]
    for log in logs:
        open(log, "a").close()
    S.chown_pg(S.STATE + "/pg", sd, *logs)
    passfile = pg_private_pgpass(password)
    data1, data2 = S.STATE + "/pg/data", S.STATE + "/pg/data2"
    if not os.path.isfile(data1 + "/PG_VERSION"):
        S.pg_initdb(data1, S.STATE + "/pg", password, [
            "# relfleet local HA stack: a primary and a synchronous standby, durable",
            "fsync = on", "synchronous_commit = on", "full_page_writes = on",
            "wal_level = replica", "wal_log_hints = on", "max_wal_senders = 10",
            "wal_keep_size = '256MB'", "hot_standby = on",
            "listen_addresses = '127.0.0.1'", f"unix_socket_directories = '{sd}'",
            "max_connections = 200", "cluster_name = 'pg1'",
        ])
    port1 = start_pg_node(data1, logs[0])
    S.add_component("postgres-1", data1 + "/postmaster.pid", "postgres", f"127.0.0.1:{port1}")
    S.pg_create_database(sd, port1)
    if not os.path.isfile(data2 + "/PG_VERSION"):
        import shutil
        shutil.rmtree(data2, ignore_errors=True)
        with open(S.LOGS + "/basebackup.log", "ab") as out:
            proc = S.run(S.as_pg(["env", f"PGPASSFILE={passfile}",
                                  S.pg_bindir() + "/pg_basebackup", "-h", "127.0.0.1", "-p",
                                  str(port1), "-U", "relfleet", "-D", data2, "-X", "stream",
                                  "-c", "fast", "-w"]), stdout=out, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            S.tail(S.LOGS + "/basebackup.log")
            S.die("pg_basebackup of the standby failed")
        pg_follow(data2, "pg2", port1, passfile)
    port2 = start_pg_node(data2, logs[1])
    S.add_component("postgres-2", data2 + "/postmaster.pid", "postgres", f"127.0.0.1:{port2}")
    pg_wait_streaming(port1, "pg2")
    pg_set_sync(port1, "pg2")
    S.write_private(S.STATE + "/pgpass", f"127.0.0.1:{port1}:*:relfleet:{password}\n"
                    f"127.0.0.1:{port2}:*:relfleet:{password}\n")
    os.environ["RELFLEET_PG_DSN"] = (f"postgresql://relfleet:{password}@127.0.0.1:{port1},"
                                     f"127.0.0.1:{port2}/relfleet"
                                     "?target_session_attrs=read-write")
    os.environ["PGPASSFILE"] = S.STATE + "/pgpass"


def pg_role_text(port):
    rec = pg_in_recovery(port)
    if rec is None:
        return "unreachable"
    if rec:
        up = pg_query(port, "SELECT status || ' from port ' || sender_port "
                      "FROM pg_stat_wal_receiver")
        return f"standby ({up or 'not streaming'})"
    sync = pg_query(port, "SELECT string_agg(application_name || ' ' || sync_state, ', ') "
                    "FROM pg_stat_replication")
    return f"primary (standbys: {sync or 'none'})"


def failover_postgres(args):
    rejoin = "--rejoin" in args
    nodes = pg_nodes()
    primary = [n for n in nodes if n[0] not in stopped() and pg_in_recovery(n[3]) is False]
    standby = [n for n in nodes if n[0] not in stopped() and pg_in_recovery(n[3]) is True]
    if len(primary) != 1 or not standby:
        S.die("postgres failover needs one primary and one standby up (ops/stack status; "
              "ops/stack rejoin postgres brings a stopped one back)")
    old, new = primary[0], standby[0]
    proc = S.run(S.as_pg([S.pg_bindir() + "/pg_ctl", "-D", old[2], "-m", "immediate", "-w",
                          "stop"]), stdout=subprocess.DEVNULL)
    if proc.returncode != 0:
        S.die(f"pg_ctl stop -m immediate of {old[0]} failed")
    S.pg_cleanup_crash(old[2])
    set_stopped(old[0], True)
    S.say(f"postgres: stopped primary {old[0]} (127.0.0.1:{old[3]}) immediately")
    start = time.monotonic()
    proc = S.run(S.as_pg([S.pg_bindir() + "/pg_ctl", "-D", new[2], "-w", "-t",
                          str(S.START_TIMEOUT), "promote"]), stdout=subprocess.DEVNULL)
    if proc.returncode != 0 or not S.wait_until(
            S.START_TIMEOUT, f"{new[0]} to leave recovery",
            lambda: pg_in_recovery(new[3]) is False):
        S.die(f"cannot promote {new[0]} (log: {S.LOGS}/{new[0]}.log)")
    # Its only synchronous standby was the old primary: none is left until one rejoins.
    pg_set_sync(new[3], None)
    S.say(f"postgres: promoted {new[0]} (127.0.0.1:{new[3]}) to primary in "
          f"{time.monotonic() - start:.1f}s; no synchronous standby until {old[0]} rejoins")
    if not rejoin:
        S.say(f"postgres: {old[0]} stays down (ops/stack rejoin postgres rewinds it into a "
              "standby)")
        return 0
    return pg_rejoin(old, new)


def pg_rejoin(old, new):
    """Rewinds the stopped node old (pg_rewind from the primary new) and starts it as the
    primary's synchronous standby."""
    # pg_rewind reads the source's timeline from its control file, which a promoted server
    # updates only at its next checkpoint: without one it finds "no rewind required".
    if pg_query(new[3], "CHECKPOINT") is None:
        S.die(f"cannot checkpoint the primary {new[0]} before pg_rewind")
    passfile = pg_private_pgpass(S.pg_password())
    with open(S.LOGS + "/pg_rewind.log", "ab") as out:
        proc = S.run(S.as_pg(["env", f"PGPASSFILE={passfile}", S.pg_bindir() + "/pg_rewind",
                              "-D", old[2], "--source-server",
                              f"host=127.0.0.1 port={new[3]} user=relfleet dbname=postgres"]),
                     stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        S.tail(S.LOGS + "/pg_rewind.log")
        S.die(f"pg_rewind of {old[0]} failed (log: {S.LOGS}/pg_rewind.log)")
    pg_follow(old[2], old[1], new[3], passfile)
    if not S.pg_start_server(old[2], old[3], S.LOGS + f"/{old[0]}.log"):
        S.die(f"{old[0]} did not start as a standby (log: {S.LOGS}/{old[0]}.log)")
    set_stopped(old[0], False)
    pg_wait_streaming(new[3], old[1])
    pg_set_sync(new[3], old[1])
    S.say(f"postgres: {old[0]} rewound (pg_rewind) and rejoined as the synchronous standby of "
          f"{new[0]}")
    return 0


# -- Kafka ------------------------------------------------------------------------------
def broker_addrs():
    """{broker id: port} from broker.addr (the mock numbers its brokers 1..N in order)."""
    addrs = S.read_first_line(S.STATE + "/broker.addr").split(",")
    return {i + 1: port_of(a) for i, a in enumerate(a for a in addrs if a)}


def metadata():
    """kafka_metadata from the first broker that answers."""
    for port in broker_addrs().values():
        try:
            return kafka_metadata("127.0.0.1", port)
        except (OSError, WireError):
            continue
    S.die("no broker of the dev broker answers a metadata request")


def leaders_by_broker(topics):
    counts = {}
    for parts in topics.values():
        for leader in parts.values():
            counts[leader] = counts.get(leader, 0) + 1
    return counts


def broker_ctl(*words):
    proc = S.run([S.BIN + "/relfleet-devbroker", "ctl", "--state-dir", S.STATE, *words],
                 capture_output=True, text=True)
    return proc.returncode == 0, proc.stdout.strip() or proc.stderr.strip()


def stage_groups():
    prefix = os.environ.get("RELFLEET_TOPIC_PREFIX") or S.read_env_file(
        S.STATE + "/stack.env").get("RELFLEET_TOPIC_PREFIX", "relfleet.")
    out = S.run([S.BIN + "/relfleet-worker", "--list-stages"], capture_output=True, text=True)
    return [prefix + s.strip() for s in out.stdout.splitlines() if s.strip()]


def option_value(args, name, default, conv):
    if name in args:
        i = args.index(name)
        if i + 1 >= len(args):
            S.die(f"{name} needs a value")
        try:
            return conv(args[i + 1])
        except ValueError:
            S.die(f"bad {name} '{args[i + 1]}'")
    return default


def failover_kafka(args):
    only_move, only_bounce = "--only-move" in args, "--only-bounce" in args
    if only_move and only_bounce:
        S.die("--only-move and --only-bounce exclude each other")
    down_for = option_value(args, "--down-for", 2.0, float)
    ports = broker_addrs()
    _, topics = metadata()
    counts = leaders_by_broker(topics)
    victim = option_value(args, "--broker", None, int) or \
        max(ports, key=lambda b: (counts.get(b, 0), -b))
    if victim not in ports:
        S.die(f"no broker {victim} (brokers 1..{len(ports)})")
    others = [b for b in sorted(ports) if b != victim]
    if not only_bounce:
        moved = coords = 0
        i = 0
        for topic in sorted(topics):
            for part, leader in sorted(topics[topic].items()):
                if leader != victim:
                    continue
                ok, reply = broker_ctl("leader", topic, str(part), str(others[i % len(others)]))
                if ok:
                    moved += 1
                    i += 1
                elif "unknown topic" not in reply:
                    S.die(f"cannot move the leader of {topic} [{part}]: {reply}")
        for group in stage_groups():
            try:
                coord = kafka_coordinator("127.0.0.1", ports[others[0]], group)
            except (OSError, WireError):
                continue
            if coord == victim:
                ok, reply = broker_ctl("coordinator", "group", group,
                                       str(others[coords % len(others)]))
                if not ok:
                    S.die(f"cannot move the coordinator of group '{group}': {reply}")
                coords += 1
        left = leaders_by_broker(metadata()[1]).get(victim, 0)
        S.say(f"kafka: moved {moved} partition leaders and {coords} group coordinators off "
              f"broker {victim} to brokers {','.join(map(str, others))}; it leads {left} now")
    if only_move:
        return 0
    ok, reply = broker_ctl("broker-down", str(victim))
    if not ok:
        S.die(f"cannot take broker {victim} down: {reply}")
    if not S.wait_until(10, f"broker {victim} to refuse requests",
                        lambda: not kafka_answers("127.0.0.1", ports[victim])):
        S.die(f"broker {victim} still answers after broker-down")
    S.say(f"kafka: broker {victim} down for {down_for:g}s")
    # The outage's length is the point here, not a wait for something to happen.
    time.sleep(down_for)
    ok, reply = broker_ctl("broker-up", str(victim))
    if not ok or not S.wait_until(10, f"broker {victim} to answer again",
                                  lambda: kafka_answers("127.0.0.1", ports[victim])):
        S.die(f"cannot bring broker {victim} up again: {reply}")
    S.say(f"kafka: broker {victim} up again (its former partitions stay with the others)")
    return 0


def rejoin_postgres():
    nodes = pg_nodes()
    primary = [n for n in nodes if n[0] not in stopped() and pg_in_recovery(n[3]) is False]
    down = [n for n in nodes if n[0] in stopped()]
    if len(primary) != 1 or not down:
        S.die("nothing to rejoin: postgres needs one primary up and one node a failover "
              "stopped (ops/stack status)")
    return pg_rejoin(down[0], primary[0])


def rejoin_redis():
    password = redis_password()
    down = [r for r in rows("redis") if r[0] in stopped()]
    master, votes, _ = sentinel_master(password)
    if not down or master is None:
        S.die("nothing to rejoin: redis needs a master and a server a failover stopped")
    return redis_restart(down[0], master, password)


def cmd_rejoin(args):
    """ops/stack rejoin redis|postgres: brings back what a failover left down, as a replica or
    standby of the current master or primary."""
    S.state_init()
    if not is_ha():
        S.die(f"the stack in '{S.STATE}' is not an HA stack (ops/stack up --ha)")
    if args == ["redis"]:
        return rejoin_redis()
    if args == ["postgres"]:
        return rejoin_postgres()
    S.die("usage: ops/stack rejoin redis|postgres")


def cmd_failover(args):
    S.state_init()
    if not os.path.isfile(S.STATE + "/components"):
        S.die(f"no stack in {S.STATE}")
    if not is_ha():
        S.die(f"the stack in '{S.STATE}' is not an HA stack (ops/stack up --ha)")
    what = args[0] if args else ""
    if what == "redis":
        return failover_redis(args[1:])
    if what == "postgres":
        return failover_postgres(args[1:])
    if what == "kafka":
        return failover_kafka(args[1:])
    S.die("usage: ops/stack failover redis [--no-restart] | postgres [--rejoin] | "
          "kafka [--broker N] [--only-move | --only-bounce] [--down-for SECONDS]")


# -- status ----------------------------------------------------------------------
def role(name, addr):
    """The role column of a component of the HA stack."""
    if name.startswith("redis-") or name.startswith("sentinel-"):
        password = redis_password()
        if name.startswith("redis-"):
            return redis_role_text(port_of(addr), password)
        master = redis_try(port_of(addr), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME,
                           password=password)
        if isinstance(master, list) and len(master) == 2:
            return f"sentinel (master {redis_name(int(master[1]))})"
        return "sentinel (unreachable)"
    if name.startswith("postgres-"):
        return pg_role_text(port_of(addr))
    if name == "devbroker":
        return f"{len(broker_addrs())} brokers"
    return "-"


def status_lines(name, pid, addr, live):
    """(lines, dead) for one component of the HA stack: its line with its role, and for the
    dev broker one line per broker (up or down, how many partitions it leads)."""
    if not live and name in stopped():
        return ["%-12s pid=%-8s %-24s %-7s %s\n" % (name, pid, addr, "stopped",
                                                     "down (failover)")], 0
    state = "alive" if live else "dead"
    lines = ["%-12s pid=%-8s %-24s %-7s %s\n" % (name, pid, addr, state,
                                                 role(name, addr) if live else "-")]
    if name == "devbroker" and live:
        try:
            counts = leaders_by_broker(metadata()[1])
        except S.Die:
            counts = {}
        total = sum(counts.values())
        for b, port in sorted(broker_addrs().items()):
            up = "alive" if kafka_answers("127.0.0.1", port) else "down"
            lines.append("%-12s pid=%-8s %-24s %-7s %s\n" % (
                f"broker-{b}", pid, f"127.0.0.1:{port}", up,
                f"broker id={b} leads {counts.get(b, 0)} of {total} partitions"))
    return lines, int(not live)


if __name__ == "__main__":
    sys.exit("ops/stack.d/ha.py is a module of ops/stack")
