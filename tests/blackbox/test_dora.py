"""DORA metrics (docs/dora.md): the definitions in sql/010_dora.sql checked against a table
of release histories written straight into the stack's PostgreSQL, then `relctl stats` and
GET /api/v1/stats on real releases, their filters, roles and refusals."""
import json
import os
import shutil
import uuid

import pytest
import jsonschema
import requests
import yaml

from harness import REPO, Harness
from releases import TERMINAL, deploy, setup_service, wait_status
from test_console import browser_tools  # noqa: F401 (the fixture: Chromium, node, playwright)

MIN = 60_000  # ms

# One history per case: releases of one service in one env, in the order they ended.
# (kind, status, requested at, ended at) in minutes from the case's start; an image
# registered `image` minutes before its release's request when given.
CASES = [
    ("steady: lead time from the image's registration",
     [("deploy", "succeeded", 0, 5, 60), ("deploy", "succeeded", 100, 105, 60),
      ("deploy", "succeeded", 200, 210, 60)],
     {"releases": 3, "deployments": 3, "changes": 3, "failed_changes": 0,
      "change_failure_rate": 0.0, "outages": 0, "unrestored": 0,
      "lead_time_ms": {"count": 3, "p50": 65 * MIN, "p90": 69 * MIN, "mean": 66 * MIN + 40_000},
      "time_to_restore_ms": {"count": 0, "p50": None}}),
    ("without registered images lead time starts at the request",
     [("deploy", "succeeded", 0, 5, None), ("deploy", "failed", 10, 15, None),
      ("deploy", "succeeded", 20, 25, None)],
     {"releases": 3, "deployments": 2, "failed": 1, "changes": 3, "failed_changes": 1,
      "change_failure_rate": 0.3333, "outages": 1, "unrestored": 0,
      "lead_time_ms": {"count": 2, "p50": 5 * MIN},
      "time_to_restore_ms": {"count": 1, "p50": 10 * MIN, "mean": 10 * MIN}}),
    ("a success followed by a rollback is a failed change; the rollback is no change",
     [("deploy", "succeeded", 0, 5, None), ("deploy", "succeeded", 10, 15, None),
      ("rollback", "succeeded", 20, 25, None)],
     {"releases": 3, "deployments": 3, "changes": 2, "failed_changes": 1, "rolled_back": 1,
      "change_failure_rate": 0.5, "outages": 0, "lead_time_ms": {"count": 2}}),
    ("failures in a row are one outage, not restored yet",
     [("deploy", "succeeded", 0, 5, None), ("deploy", "failed", 10, 15, None),
      ("redo", "failed", 20, 25, None)],
     {"releases": 3, "deployments": 1, "failed": 2, "changes": 2, "failed_changes": 1,
      "change_failure_rate": 0.5, "outages": 1, "unrestored": 1,
      "time_to_restore_ms": {"count": 0, "p50": None, "mean": None}}),
    ("two outages: restore is the median over them",
     [("deploy", "succeeded", 0, 5, None), ("deploy", "failed", 10, 15, None),
      ("deploy", "failed", 20, 25, None), ("deploy", "succeeded", 30, 35, None),
      ("deploy", "failed", 40, 45, None), ("deploy", "succeeded", 50, 55, None)],
     {"releases": 6, "deployments": 3, "changes": 6, "failed_changes": 3,
      "change_failure_rate": 0.5, "outages": 2, "unrestored": 0,
      "time_to_restore_ms": {"count": 2, "p50": 15 * MIN, "p90": 19 * MIN, "mean": 15 * MIN}}),
    ("a failed deploy rolled back: one failed change, restored by the rollback",
     [("deploy", "failed", 0, 5, None), ("rollback", "succeeded", 10, 15, None)],
     {"releases": 2, "deployments": 1, "changes": 1, "failed_changes": 1, "rolled_back": 0,
      "change_failure_rate": 1.0, "outages": 1,
      "lead_time_ms": {"count": 0, "p50": None},
      "time_to_restore_ms": {"count": 1, "p50": 10 * MIN}}),
    ("rejected, cancelled and superseded releases are counted by status only",
     [("deploy", "rejected", 0, 0, None), ("deploy", "cancelled", 5, 6, None),
      ("deploy", "superseded", 10, 12, None), ("deploy", "failed", 20, 25, None),
      ("deploy", "rejected", 30, 30, None), ("deploy", "succeeded", 40, 45, None)],
     {"releases": 6, "rejected": 2, "cancelled": 1, "superseded": 1, "deployments": 1,
      "changes": 2, "failed_changes": 1, "change_failure_rate": 0.5, "outages": 1,
      "time_to_restore_ms": {"count": 1, "p50": 20 * MIN}}),
    ("only what ended in the window counts, but history before it decides outages",
     [("deploy", "failed", -20000, -19990, None), ("deploy", "failed", 0, 5, None),
      ("deploy", "succeeded", 10, 15, None)],
     {"releases": 2, "deployments": 1, "failed": 1, "changes": 2, "outages": 0,
      "time_to_restore_ms": {"count": 0}}),
    ("nothing attempted: rates are null, not zero",
     [("deploy", "rejected", 0, 0, None)],
     {"releases": 1, "deployments": 0, "changes": 0, "change_failure_rate": None,
      "deployment_frequency_per_day": 0.0, "lead_time_ms": {"count": 0, "p50": None}}),
]

# The window: 30 days; every case starts 10 days in (minute -20000 is before the window).
SINCE, UNTIL = "2026-01-01T00:00:00Z", "2026-01-31T00:00:00Z"
START = "2026-01-11T00:00:00Z"


def insert_history(h, service, group, history):
    h.psql(f"INSERT INTO services (service, env, namespace, template_id, group_name) "
           f"VALUES ('{service}', 'prod', 'ns', 'web', '{group}')")
    for i, (kind, status, req, end, image) in enumerate(history):
        version = f"{i}.0.0"
        rid = str(uuid.uuid4())
        at = f"'{START}'::timestamptz + make_interval(mins => %d)"
        if image is not None:
            h.psql(f"INSERT INTO images (service, tag, added_at) VALUES ('{service}', "
                   f"'{version}', {at % (req - image)})")
        started = "NULL" if status == "rejected" else at % req
        h.psql(f"INSERT INTO releases (id, service, env, version, kind, operator, status, "
               f"created_at, started_at, finished_at, duration_ms, request) VALUES ('{rid}', "
               f"'{service}', 'prod', '{version}', '{kind}', 'test', '{status}', {at % req}, "
               f"{started}, {at % end}, {(end - req) * MIN}, '{{}}')")


def stats_sql(h, **filters):
    args = ", ".join("NULL" if filters.get(k) is None else f"'{filters[k]}'"
                     for k in ("service", "env", "group", "user"))
    return json.loads(h.psql(f"SELECT relfleet_stats('{SINCE}', '{UNTIL}', {args})")[0][0])


def check(metrics, expected, what):
    for key, want in expected.items():
        got = metrics[key]
        if isinstance(want, dict):
            check(got, want, f"{what}.{key}")
        elif isinstance(want, float):
            assert got is not None and abs(got - want) < 1e-9, f"{what}.{key}: {got} != {want}"
        else:
            assert got == want, f"{what}.{key}: {got} != {want}"


def openapi_schema(name):
    """A component schema of schemas/openapi.yaml as JSON Schema (nullable: null allowed)."""
    doc = yaml.safe_load((REPO / "schemas" / "openapi.yaml").read_text())

    def convert(node):
        if isinstance(node, list):
            return [convert(x) for x in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return convert(doc["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]])
        out = {k: convert(v) for k, v in node.items() if k not in ("nullable", "description")}
        if node.get("nullable"):
            out = {"anyOf": [out, {"type": "null"}]}
        return out

    return convert(doc["components"]["schemas"][name])


@pytest.fixture(scope="module")
def h(stack):
    return Harness(stack)


@pytest.mark.parametrize("name,history,expected", CASES, ids=[c[0] for c in CASES])
def test_metric_definitions(h, name, history, expected):
    svc = h.unique_service("dora")
    insert_history(h, svc, "g-" + svc, history)
    st = stats_sql(h, service=svc)
    assert st["days"] == 30 and st["since"] == "2026-01-01T00:00:00.000Z"
    [row] = st["services"]
    assert (row["service"], row["env"], row["group"]) == (svc, "prod", "g-" + svc)
    check(row, expected, name)
    assert row["deployment_frequency_per_day"] == round(row["deployments"] / 30, 3)
    # One service: the fleet, its env and its group say the same.
    for scope in (st["fleet"], st["envs"][0], st["groups"][0]):
        check(scope, expected, name)
    # The day series covers every day of the window and adds up to the counts.
    assert len(st["daily"]) == 30 and st["daily"][0]["date"] == "2026-01-01"
    for status in TERMINAL:
        assert sum(d[status] for d in st["daily"]) == row[status]


def test_groups_envs_and_the_fleet_add_up(h):
    group = "team-" + uuid.uuid4().hex[:8]
    a, b = h.unique_service("dora-a"), h.unique_service("dora-b")
    insert_history(h, a, group, CASES[1][1])  # 2 deployments, 1 failed change of 3
    insert_history(h, b, group, CASES[2][1])  # 3 deployments, 1 failed change of 2
    st = stats_sql(h, group=group)
    assert [s["service"] for s in st["services"]] == sorted([a, b])
    [g] = st["groups"]
    check(g, {"group": group, "releases": 6, "deployments": 5, "changes": 5,
              "failed_changes": 2, "change_failure_rate": 0.4, "outages": 1,
              "deployment_frequency_per_day": round(5 / 30, 3)}, "group")
    check(st["fleet"], {"releases": 6, "deployments": 5}, "fleet")
    assert stats_sql(h, group=group, service=a)["fleet"]["releases"] == 3
    assert stats_sql(h, group=group, env="test")["fleet"]["releases"] == 0


# -- relctl stats and GET /api/v1/stats on real releases -----------------------------------
@pytest.fixture(scope="module")
def run(h):
    """A service with a success, a failure (timeout) and the fix, ended through the stack."""
    svc = setup_service(h, versions=("1.0.0", "bad-2", "1.0.1"), timeout="2s", replicas=1)
    ids = []
    for version in ("1.0.0", "bad-2", "1.0.1"):
        ids.append(deploy(h, svc, version))
        wait_status(h, ids[-1], TERMINAL, timeout=90)
    return svc, ids


def test_relctl_stats_counts_a_real_run(h, run):
    svc, ids = run
    assert [json.loads(h.relctl("show", i, "--output", "json").stdout)["status"]
            for i in ids] == ["succeeded", "failed", "succeeded"]
    st = h.relctl_json("stats", "--service", svc, "--since", "1h")
    [row] = st["services"]
    check(row, {"service": svc, "env": "prod", "group": "default", "releases": 3,
                "deployments": 2, "failed": 1, "changes": 3, "failed_changes": 1,
                "change_failure_rate": 0.3333, "outages": 1, "unrestored": 0,
                "lead_time_ms": {"count": 2}, "time_to_restore_ms": {"count": 1}}, "relctl")
    assert 0 < row["time_to_restore_ms"]["p50"] < 120_000
    assert row["lead_time_ms"]["p50"] > 0
    assert st["filters"] == {"service": svc, "env": None, "group": None}
    text = h.relctl("stats", "--service", svc, "--since", "1h").stdout
    assert f"{svc}/prod" in text and "33.3% (1/3)" in text, text
    assert "3 (2 ok, 1 failed, 0 other)" in text, text
    # Bad input is a usage error that names it.
    for args, what in ((["--since", "yesterday"], "since 'yesterday' is not a window"),
                       (["--since", "0d"], "since '0d' is not"),
                       (["--service", "Bad_Name"], "service 'Bad_Name' is not a service name"),
                       (["--group", ""], "group '' is not a group name"),
                       (["--bogus", "x"], "unexpected argument '--bogus'")):
        proc = h.relctl("stats", *args, check=False)
        assert proc.returncode == 2 and what in proc.stderr, (args, proc.stderr)


def test_api_stats_agrees_and_shows_only_what_the_caller_may_view(h, run):
    svc, _ = run
    url = h.env["RELFLEET_API_URL"] + "/api/v1/stats"
    admin = {"Authorization": "Bearer " + h.env["RELFLEET_TOKEN"]}
    resp = requests.get(url, params={"service": svc, "since": "1h"}, headers=admin, timeout=60)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    api = resp.json()
    cli = h.relctl_json("stats", "--service", svc, "--since", "1h")
    assert api["services"] == cli["services"] and api["fleet"] == cli["fleet"]
    jsonschema.validate(api, openapi_schema("Stats"))
    assert api["daily"][-1]["succeeded"] >= 2 and api["daily"][-1]["failed"] >= 1
    # A viewer of another service sees none of it.
    name = "stv-" + svc[-8:]
    h.relctl("user", "add", name)
    other = setup_service(h)
    h.relctl("user", "grant", name, "viewer", "--service", other, "--env", "prod")
    token = h.relctl("user", "token", name).stdout.strip()
    seen = requests.get(url, params={"since": "1h"}, timeout=60,
                        headers={"Authorization": "Bearer " + token}).json()
    assert svc not in {s["service"] for s in seen["services"]}
    assert requests.get(url, timeout=60).status_code == 401
    for params, field in (({"since": "soon"}, "since"), ({"env": "PROD"}, "env"),
                          ({"since": "2999-01-01"}, "since")):
        bad = requests.get(url, params=params, headers=admin, timeout=60)
        assert bad.status_code == 400 and bad.json()["field"] == field, bad.text


# -- the console's statistics page in Chromium -------------------------------------------
def test_console_stats_page_in_chromium(h, run, browser_tools):
    from test_console import BROWSER_DIR, _run

    svc, _ = run
    artifacts = REPO / "tests" / "artifacts" / "console-stats"
    if artifacts.exists():
        shutil.rmtree(artifacts)
    env = dict(os.environ, RELFLEET_API_URL=h.env["RELFLEET_API_URL"],
               CONSOLE_ADMIN_TOKEN=h.env["RELFLEET_TOKEN"], CONSOLE_SERVICE=svc,
               CONSOLE_ENV="prod", CONSOLE_ARTIFACTS=str(artifacts))
    proc = _run(["node", str(BROWSER_DIR / "stats.js")], env=env, cwd=BROWSER_DIR, timeout=300)
    assert proc.returncode == 0, (f"{browser_tools}\nstdout:\n{proc.stdout}\nstderr:\n"
                                  f"{proc.stderr}\nscreenshots in {artifacts}")
    assert proc.stdout.rstrip().splitlines()[-1] == "ok: stats page"
    for name in ("01-stats-fleet", "02-stats-service", "03-stats-refused"):
        shot = artifacts / f"{name}.png"
        assert shot.exists() and shot.stat().st_size > 5000, f"no screenshot {shot}"
