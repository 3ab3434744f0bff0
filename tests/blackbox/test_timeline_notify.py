"""NOTIFY relfleet_timeline, which relfleet-api LISTENs for (its release event streams):
a statement that writes timeline rows of several releases notifies each of them once with
its id as the payload, from one trigger call per statement (sql/013_release_writes.sql)."""
import re
import subprocess
import urllib.parse

from releases import TERMINAL, deploy, setup_service, wait_status

NOTE = re.compile(r'^Asynchronous notification "([^"]+)" with payload "([^"]*)" received')


def listen_while(h, statements):
    """Runs the statements in one session that LISTENs on relfleet_timeline, each in its
    own transaction; returns, per statement, the (channel, payload) notifications that
    arrived after it (a session gets its own notifications at its commit)."""
    dsn = urllib.parse.urlsplit(h.env["RELFLEET_PG_DSN"])
    hosts = [x.rsplit(":", 1) for x in dsn.netloc.rsplit("@", 1)[-1].split(",")]
    env = dict(h.env, PGHOST=",".join(x[0] for x in hosts),
               PGPORT=",".join(x[1] for x in hosts), PGUSER=dsn.username,
               PGDATABASE=dsn.path.lstrip("/"), PGTARGETSESSIONATTRS="read-write")
    args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-c", "LISTEN relfleet_timeline"]
    for i, sql in enumerate(statements):
        args += ["-c", sql, "-c", f"SELECT 'after statement {i}'"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    per, current = [], []
    for line in proc.stdout.splitlines():
        m = NOTE.match(line)
        if m:
            current.append((m.group(1), m.group(2)))
        elif line.startswith("after statement "):
            assert int(line.split()[-1]) == len(per), proc.stdout
            per.append(current)
            current = []
    assert len(per) == len(statements) and not current, proc.stdout
    return per


def test_a_statement_of_timeline_rows_notifies_each_release_once(harness):
    h = harness
    ids = []
    for _ in range(3):
        svc = setup_service(h, versions=("1.0.0",))
        ids.append(deploy(h, svc, "1.0.0"))
    for rid in ids:
        wait_status(h, rid, TERMINAL)
    a, b, c = ids
    rows = lambda which, n: (  # noqa: E731
        "INSERT INTO timeline (release_id, stage, event, message) SELECT r.id, 'test', 'note',"
        f" 'row ' || g FROM releases r CROSS JOIN generate_series(1, {n}) g"
        f" WHERE r.id IN ({', '.join(repr(x) for x in which)})")
    per = listen_while(h, [
        rows([a, b, c], 3),  # nine rows of three releases
        # two inserts into timeline in one statement (as the ending statements write them)
        f"WITH x AS ({rows([a], 2)} RETURNING 1), y AS ({rows([a, b], 1)} RETURNING 1)"
        " SELECT (SELECT count(*) FROM x) + (SELECT count(*) FROM y)",
        rows([a, b, c], 0),  # no rows: nothing to tell
        rows([c], 1),
    ])
    assert sorted(per[0]) == sorted(("relfleet_timeline", x) for x in (a, b, c))
    assert sorted(per[1]) == sorted(("relfleet_timeline", x) for x in (a, b))
    assert per[2] == []
    assert per[3] == [("relfleet_timeline", c)]
    # the rows are there, in the order written
    got = h.psql(f"SELECT count(*) FROM timeline WHERE release_id = '{a}' AND stage = 'test'")
    assert got == [["6"]]


def test_the_timeline_trigger_runs_once_per_statement(harness):
    # pg_trigger.tgtype bit 0 is FOR EACH ROW; the statement trigger reads its transition
    # table (one call, one pg_notify per release, instead of one call per row)
    got = harness.psql("SELECT tgtype & 1, tgnewtable FROM pg_trigger"
                       " WHERE tgrelid = 'timeline'::regclass AND tgname = 'timeline_notify'")
    assert got == [["0", "timeline_new"]]


def test_a_release_is_notified_by_its_timeline_rows_only(harness):
    # every change of a release's status, progress or pods comes with a timeline row of it
    # in the same transaction, which notifies (sql/017_release_notify_by_timeline.sql): the
    # row of releases alone notifies nothing, the timeline row once for both
    h = harness
    svc = setup_service(h, versions=("1.0.0",))
    rid = deploy(h, svc, "1.0.0")
    wait_status(h, rid, TERMINAL)
    keep = h.psql(f"SELECT coalesce(pods::text, 'null') FROM releases WHERE id = '{rid}'")[0][0]
    set_pods = (f"UPDATE releases SET pods = '[{{\"name\": \"p-1\", \"reason\": \"test\"}}]'"
                f" WHERE id = '{rid}'")
    note = ("INSERT INTO timeline (release_id, stage, event, message)"
            f" VALUES ('{rid}', 'test', 'note', 'pods')")
    try:
        per = listen_while(h, [
            set_pods,
            f"UPDATE releases SET pods = NULL WHERE id = '{rid}'",
            f"WITH u AS ({set_pods} RETURNING id) {note}",
        ])
    finally:
        h.psql(f"UPDATE releases SET pods = NULLIF($k${keep}$k$, 'null')::jsonb"
               f" WHERE id = '{rid}'")
    assert per == [[], [], [("relfleet_timeline", rid)]]
