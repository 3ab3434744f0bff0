"""The foundation slice: relctl deploy -> requests -> render -> PostgreSQL and `rendered`."""
import base64
import json
import os
import re
import time
import urllib.parse
import uuid

from harness import Harness
from test_fleet import workers
from releases import ACTIVE, deploy, kcat_read, record, setup_service, wait_status


def test_deploy_renders_manifests_and_publishes_rendered(harness):
    h = harness
    svc = setup_service(h, replicas=3)
    rid = deploy(h, svc, "1.0.0", "prod", "-m", "first release of " + svc)
    rec = wait_status(h, rid, ACTIVE | {"succeeded"})
    assert rec["service"] == svc and rec["version"] == "1.0.0" and rec["kind"] == "deploy"
    assert rec["template_id"] == "web" and len(rec["manifests_sha256"]) == 64
    events = [e["event"] for e in rec["timeline"]]
    assert events[:3] == ["queued", "rendering", "applying"], events

    rows = h.psql(f"SELECT json_array_length(manifests), manifests_sha256,"
                  f" manifests->0->>'kind', manifests->0->'spec'->>'replicas',"
                  f" encode(sha256(convert_to(manifests::text, 'UTF8')), 'hex')"
                  f" FROM releases WHERE id = '{rid}'")
    count, sha, kind, replicas, stored_sha = rows[0]
    assert int(count) == 2 and kind == "Deployment" and replicas == "3"
    assert sha == rec["manifests_sha256"]
    # The row holds the exact text the digest was taken over (json, sql/018).
    assert stored_sha == sha

    def ours(ms):
        # The topic also carries other tests' messages, hostile ones included.
        return [m for m in ms if rid in (m.get("payload") or "")]

    msgs = kcat_read(h, "rendered", lambda ms: bool(ours(ms)))
    mine = [json.loads(m["payload"]) for m in ours(msgs)]
    assert mine[0]["schema"] == "relfleet.rendered.v1"
    assert mine[0]["manifests_sha256"] == sha
    assert [m["key"] for m in msgs if rid in m["payload"]][0] == f"prod/{svc}"
    image = mine[0]["manifests"][0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{svc}:1.0.0"


def test_busy_service_keeps_second_release_queued(harness):
    h = harness
    # A version whose pods never become ready holds the service for a while.
    svc = setup_service(h, versions=("bad-1", "1.0.1"))
    first = deploy(h, svc, "bad-1")
    wait_status(h, first, ACTIVE)
    second = deploy(h, svc, "1.0.1")
    rec = h.wait_for(lambda: (r := record(h, second)) and r["timeline"] and r, 30,
                     "the second release to be recorded")
    assert rec["status"] == "queued"
    time.sleep(0)  # nothing to wait for: the render stage already handled it
    assert record(h, first)["status"] in ACTIVE
    assert record(h, second)["status"] == "queued"
    # Ending the first hands the service to the second.
    h.relctl("cancel", first)
    wait_status(h, first, "cancelled")
    done = wait_status(h, second, ACTIVE | {"succeeded", "failed"}, timeout=60)
    first_end = record(h, first)["finished_at"]
    started = [e["at"] for e in done["timeline"] if e["event"] == "rendering"][0]
    assert started >= first_end, (started, first_end)


def test_malformed_message_goes_to_dlq_and_worker_keeps_serving(harness):
    h = harness
    bad = b'{"schema": "relfleet.request.v1", "release_id": 42'
    part, off = h.produce("requests", b"prod/broken", bad)
    def ours(m):  # the dead letter of this message: other stages' share partition and offset
        d = m.json()
        return (d["source_topic"] == h.topic("requests") and d["offset"] == off
                and d["partition"] == part)

    msgs = h.consume("dlq", timeout=30, until=lambda ms: any(ours(m) for m in ms))
    dl = [m.json() for m in msgs if ours(m)][0]
    assert dl["schema"] == "relfleet.dlq.v1" and dl["stage"] == "render"
    assert base64.b64decode(dl["payload_base64"]) == bad
    assert "json" in dl["reason"].lower(), dl["reason"]
    rows = h.psql(f"SELECT reason FROM rejected_messages WHERE topic = '{h.topic('requests')}'"
                  f" AND partition = {part} AND \"offset\" = {off}")
    assert rows and rows[0][0] == dl["reason"]
    # The worker is still serving.
    svc = setup_service(h)
    rid = deploy(h, svc, "1.0.0")
    wait_status(h, rid, ACTIVE | {"succeeded"})


def test_unknown_service_and_version_are_rejected_with_reason(harness):
    h = harness
    ghost = h.unique_service("ghost")
    rid = deploy(h, ghost, "1.0.0")
    rec = wait_status(h, rid, "rejected")
    assert rec["error"] == f"unknown service '{ghost}' in env 'prod'"
    svc = setup_service(h, versions=("1.0.0",))
    rid2 = deploy(h, svc, "9.9.9")
    rec2 = wait_status(h, rid2, "rejected")
    assert "unknown version '9.9.9'" in rec2["error"]
    results = h.consume("results", timeout=30, until=lambda ms: {rid, rid2} <= {
        m.json()["release_id"] for m in ms})
    mine = [m.json() for m in results if m.json()["release_id"] in (rid, rid2)]
    assert sorted(m["status"] for m in mine) == ["rejected", "rejected"]
    assert all(m["event_id"] == m["release_id"] for m in mine)


def test_render_error_fails_release_naming_placeholder(harness, tmp_path):
    h = harness
    tpl = tmp_path / "broken-tpl.yaml"
    tpl.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"
                   "data:\n  a: \"{{ mode }}\"\n")
    svc = h.unique_service()
    # `mode` is a per-service value: known to sync, but this service does not set it.
    other = h.unique_service()
    h.relctl("template", "sync", str(tmp_path), check=False)
    h.relctl("service", "set", other, "--env", "prod", "template=web", "mode=fast")
    h.relctl("template", "sync", str(tmp_path))
    h.relctl("service", "set", svc, "--env", "prod", "template=broken-tpl")
    rid = deploy(h, svc, "1.0.0")
    rec = wait_status(h, rid, "failed")
    assert "'mode'" in rec["error"] and "broken-tpl" in rec["error"], rec["error"]
    assert rec["started_at"] and rec["finished_at"]


# Statements of the render worker that are not a release's own: the sweep and readiness.
PERIODIC = ("SELECT 1", "SELECT count(*) FROM releases WHERE status = 'queued'",
            "SELECT DISTINCT q.service", "SELECT id, env || '/' || service",
            "WITH x AS (SELECT r.id, format('approval timed out",  # the approval sweep (gate.c)
            "SELECT * FROM relfleet_wave_drive")  # the wave driver (workers/render/wave.c)


def _backends_of(h, pid):
    """PostgreSQL backend pids of the connections process pid holds to the stack's server."""
    pg_port = urllib.parse.urlsplit(h.env["RELFLEET_PG_DSN"]).port
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            w = line.split()
            if int(w[2].split(":")[1], 16) == pg_port and w[9] in inodes:
                ports.add(int(w[1].split(":")[1], 16))
    rows = h.psql("SELECT pid, client_port FROM pg_stat_activity WHERE client_port IS NOT NULL"
                  " AND application_name <> 'relfleet-readiness'")
    return {int(p) for p, port in rows if int(port) in ports}


def log_every_statement(h):
    """Has the stack's server log every statement with its backend's pid (the stack's user
    is the server's superuser), for backend_statements."""
    h.psql("ALTER SYSTEM SET log_statement = 'all'")
    h.psql("ALTER SYSTEM SET log_line_prefix = '%p '")
    h.psql("SELECT pg_reload_conf()")


def newest_worker(h, stage):
    """(pid, metrics address) of the newest worker of stage."""
    name, addr = max(((n, a) for n, a in workers(h.stack).items() if n.startswith(stage + "-")),
                     key=lambda kv: int(kv[0].split("-")[1]))
    return h.stack.pids()[name], addr


def backend_statements(h, start, pid):
    """The statements the backends of process pid ran since offset start of the postgres
    log (log_every_statement), in their order."""
    backends = _backends_of(h, pid)
    assert backends
    out = []
    with open(h.stack.state_dir / "logs" / "postgres.log", errors="replace") as f:
        f.seek(start)
        for line in f:
            m = re.match(r"(\d+) LOG:  (?:statement|execute [^:]*): (.*)", line)
            if m and int(m.group(1)) in backends:
                out.append(m.group(2))
    return out


def test_render_statement_budget(stack_factory):
    """A release costs the render stage at most 3 SQL statements (request and its queued
    row, load, start with its timeline rows: one statement, no BEGIN/COMMIT), even alone in
    its poll batch, plus one read of a template version it has not compiled yet: they were
    15 before they were merged, 5 before the batch path (test_render_batch.py: a batch of
    them costs 3 in all)."""
    stack = stack_factory.start()
    h = Harness(stack)
    services = [setup_service(h) for _ in range(3)]
    log = stack.state_dir / "logs" / "postgres.log"
    h.psql("ALTER SYSTEM SET log_statement = 'all'")
    h.psql("ALTER SYSTEM SET log_line_prefix = '%p '")
    h.psql("SELECT pg_reload_conf()")
    backends = _backends_of(h, stack.pids()["render-1"])
    assert backends
    start = log.stat().st_size
    ids = []
    for svc in services:
        rid = str(uuid.uuid4())
        body = {"schema": "relfleet.request.v1", "release_id": rid, "service": svc,
                "env": "prod", "version": "1.0.0", "kind": "deploy", "operator": "budget",
                "requested_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}
        h.produce("requests", f"prod/{svc}".encode(), json.dumps(body).encode())
        ids.append(rid)
    for rid in ids:
        wait_status(h, rid, ACTIVE | {"succeeded"})
    statements = []
    with open(log, errors="replace") as f:
        f.seek(start)
        for line in f:
            m = re.match(r"(\d+) LOG:  (?:statement|execute [^:]*): (.*)", line)
            if m and int(m.group(1)) in backends and not m.group(2).startswith(PERIODIC):
                statements.append(m.group(2)[:60])
    assert len(statements) <= 3 * len(ids) + 1, statements
