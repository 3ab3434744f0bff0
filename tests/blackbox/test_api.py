"""The HTTP API (relfleet-api) through the real binary on the local stack: every endpoint,
every role, bad input, sessions and CSRF, the live event stream, what it publishes."""
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests
import yaml

from harness import REPO, Harness
from releases import setup_service, wait_status


@pytest.fixture(scope="module")
def h(stack):
    return Harness(stack)


@pytest.fixture(scope="module")
def url(h):
    assert "RELFLEET_API_URL" in h.env, "ops/stack env exports no RELFLEET_API_URL"
    return h.env["RELFLEET_API_URL"] + "/api/v1"


class Client:
    """One API client with a bearer token."""

    def __init__(self, url, token):
        self.url, self.s = url, requests.Session()
        if token:
            self.s.headers["Authorization"] = "Bearer " + token

    def call(self, method, path, body=None, **kw):
        return self.s.request(method, self.url + path, json=body, timeout=60, **kw)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)


def ok(resp, status=200):
    assert resp.status_code == status, f"{resp.request.method} {resp.url}: {resp.status_code} {resp.text}"
    return resp.json()


def refused(resp, status, field=None):
    assert resp.status_code == status, f"{resp.request.method} {resp.url}: {resp.status_code} {resp.text}"
    body = resp.json()
    assert body["status"] == status and body["error"], body
    if field:
        assert body.get("field") == field, body
    return body["error"]


@pytest.fixture(scope="module")
def world(h, url):
    """One service in prod with two versions, and a user per role on it plus an outsider."""
    svc = setup_service(h, h.unique_service("api"), versions=("1.0.0", "1.1.0", "bad-1"))
    tokens = {"admin": h.env["RELFLEET_TOKEN"]}
    for role in ("viewer", "releaser", "admin"):
        name = f"{role[:3]}-{svc[-8:]}"
        h.relctl("user", "add", name)
        h.relctl("user", "grant", name, role, "--service", svc, "--env", "prod")
        tokens[role + "_user"] = h.relctl("user", "token", name).stdout.strip()
    h.relctl("user", "add", "out-" + svc[-8:])
    tokens["outsider"] = h.relctl("user", "token", "out-" + svc[-8:]).stdout.strip()
    clients = {k: Client(url, t) for k, t in tokens.items()}
    return svc, clients


def create(client, svc, version, **extra):
    body = ok(client.post("/releases", {"service": svc, "env": "prod", "version": version,
                                        **extra}), 201)
    assert body["id"] == body["release_id"] and body["status"] in ("queued", "rendering", "applying",
                                                                   "progressing", "succeeded")
    return body["id"]


def api_wait(client, rid, statuses, timeout=60):
    statuses = {statuses} if isinstance(statuses, str) else set(statuses)
    return Harness.wait_for(lambda: (lambda r: r if r["status"] in statuses else None)(
        ok(client.get(f"/releases/{rid}"))), timeout, f"release {rid} to reach {statuses}")


# -- authentication ----------------------------------------------------------------------
def test_unauthenticated_calls_are_refused_with_json_and_logged(h, url):
    anon = Client(url, None)
    for method, path in [("GET", "/releases"), ("POST", "/releases"), ("GET", "/services"),
                         ("GET", "/templates"), ("GET", "/session")]:
        assert "authentication required" in refused(anon.call(method, path), 401)
    assert "unknown token" in refused(Client(url, "rft_" + "0" * 48).get("/releases"), 401)
    assert "Bearer" in refused(anon.get("/releases", headers={"Authorization": "Basic eDp5"}), 401)
    log = (h.stack.state_dir / "logs" / "api.log").read_text()
    assert "refused GET /api/v1/releases: 401 unknown token" in log


def test_login_session_cookie_and_csrf(h, url, world):
    svc, c = world
    base = h.env["RELFLEET_API_URL"]
    s = requests.Session()
    # Only JSON logs in (a cross-site form cannot send it); a bad token is 401.
    assert refused(s.post(url + "/session", data="token=x",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)
    refused(s.post(url + "/session", json={"token": "nope"}), 401, "token")
    refused(s.post(url + "/session", json={}), 400, "token")
    refused(s.post(url + "/session", json={"token": h.env["RELFLEET_TOKEN"], "user": "x"}), 401,
            "user")
    resp = s.post(url + "/session", json={"token": h.env["RELFLEET_TOKEN"]})
    me = ok(resp)
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie, cookie
    assert me["user"] == "admin" and len(me["csrf_token"]) == 64
    assert ok(s.get(url + "/session"))["csrf_token"] == me["csrf_token"]
    assert ok(s.get(url + "/releases"))["releases"] is not None
    body = {"service": svc, "env": "prod", "version": "1.0.0", "description": "csrf"}
    before = h.psql(f"SELECT count(*) FROM releases WHERE service = '{svc}'")[0][0]
    assert "missing CSRF" in refused(s.post(url + "/releases", json=body), 403)
    assert "wrong CSRF" in refused(s.post(url + "/releases", json=body,
                                          headers={"X-CSRF-Token": "0" * 64}), 403)
    assert "CSRF" in refused(s.patch(url + f"/services/{svc}/prod", json={"replicas": 4}), 403)
    assert "CSRF" in refused(s.delete(url + "/session"), 403)
    # Nothing was published or changed by the refused calls.
    assert h.psql(f"SELECT count(*) FROM releases WHERE service = '{svc}'")[0][0] == before
    assert h.relctl_json("service", "show", svc, "--env", "prod")["replicas"] == 2
    rid = ok(s.post(url + "/releases", json=body, headers={"X-CSRF-Token": me["csrf_token"]}),
             201)["id"]
    api_wait(c["admin"], rid, "succeeded")
    old = s.cookies["relfleet_session"]
    out = s.delete(url + "/session", headers={"X-CSRF-Token": me["csrf_token"]})
    ok(out)
    assert "Max-Age=0" in out.headers["Set-Cookie"] and "relfleet_session" not in s.cookies
    # The old cookie, replayed, is dead on the server too.
    assert "expired or was ended" in refused(
        requests.get(url + "/releases", cookies={"relfleet_session": old}, timeout=30), 401)
    # The console is served by the same binary, with a CSP and no external assets.
    page = requests.get(base + "/", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert "http" not in page.text.replace("http-equiv", "")
    for asset in ("/static/app.js", "/static/app.css"):
        assert requests.get(base + asset, timeout=30).status_code == 200


# -- roles -------------------------------------------------------------------------------
def test_every_role_on_every_endpoint(h, url, world):
    svc, c = world
    viewer, releaser, admin, outsider = (c["viewer_user"], c["releaser_user"], c["admin_user"],
                                         c["outsider"])
    rid = create(releaser, svc, "1.0.0", description="by the releaser")
    assert ok(releaser.get(f"/releases/{rid}"))["operator"] == f"rel-{svc[-8:]}"
    api_wait(viewer, rid, "succeeded")
    # Reading.
    for client in (viewer, releaser, admin):
        assert any(r["id"] == rid for r in ok(client.get(f"/releases?service={svc}"))["releases"])
        ok(client.get(f"/services/{svc}/prod"))
        ok(client.get(f"/services/{svc}/prod/history"))
        ok(client.get(f"/images/{svc}"))
        ok(client.get("/templates"))
        ok(client.get("/templates/web"))
    assert ok(outsider.get(f"/releases?service={svc}"))["releases"] == []
    assert all(s["service"] != svc for s in ok(outsider.get("/services"))["services"])
    assert "no viewer role" in refused(outsider.get(f"/releases/{rid}"), 403)
    refused(outsider.get(f"/releases/{rid}/events"), 403)
    refused(outsider.get(f"/services/{svc}/prod"), 403)
    refused(outsider.get(f"/services/{svc}/prod/history"), 403)
    refused(outsider.get(f"/images/{svc}"), 403)
    refused(outsider.get("/templates"), 403)
    # The buttons each role may use.
    assert ok(viewer.get(f"/releases/{rid}"))["actions"] == []
    assert set(ok(releaser.get(f"/releases/{rid}"))["actions"]) == {"rollback", "redo"}
    # Writing: releases need releaser, configuration admin.
    body = {"service": svc, "env": "prod", "version": "1.1.0"}
    assert "no releaser role" in refused(viewer.post("/releases", body), 403)
    refused(outsider.post("/releases", body), 403)
    for client in (viewer, outsider):
        refused(client.post(f"/releases/{rid}/rollback"), 403)
        refused(client.post(f"/releases/{rid}/redo"), 403)
        refused(client.post(f"/releases/{rid}/cancel"), 403)
        refused(client.post(f"/services/{svc}/prod/rollback"), 403)
        refused(client.post(f"/services/{svc}/prod/redo"), 403)
        refused(client.post(f"/images/{svc}", {"tag": "2.0.0"}), 403)
    for client in (viewer, releaser, outsider):
        assert "admin role" in refused(client.call("PATCH", f"/services/{svc}/prod",
                                                   {"replicas": 3}), 403)
    assert ok(releaser.post(f"/images/{svc}", {"tag": "2.0.0"}), 201)["tag"] == "2.0.0"
    changed = ok(admin.call("PATCH", f"/services/{svc}/prod", {"replicas": 3, "team": "web"}))
    assert {(x["key"], x["old"], x["new"]) for x in changed["changes"]} == {
        ("replicas", "2", "3"), ("team", None, "web")}
    assert changed["service"]["replicas"] == 3 and changed["service"]["values"]["team"] == "web"
    hist = ok(viewer.get(f"/services/{svc}/prod/history"))["history"]
    assert hist[0]["by"] == f"adm-{svc[-8:]}" and {hist[0]["key"], hist[1]["key"]} == {"replicas", "team"}
    # A terminal release takes no command.
    assert "already ended" in refused(releaser.post(f"/releases/{rid}/cancel"), 409)
    # Admin of one service is not admin of another.
    other = setup_service(h, h.unique_service("api-other"))
    refused(admin.call("PATCH", f"/services/{other}/prod", {"replicas": 1}), 403)
    # The refusals are logged with the user.
    log = (h.stack.state_dir / "logs" / "api.log").read_text()
    assert f"refused PATCH /api/v1/services/{svc}/prod: 403" in log
    assert f"user 'vie-{svc[-8:]}'" in log


# -- bad input ---------------------------------------------------------------------------
def test_bad_input_is_refused_with_the_field_named(h, url, world):
    svc, c = world
    a = c["admin"]
    before = h.psql(f"SELECT count(*) FROM releases WHERE service = '{svc}'")[0][0]
    refused(a.post("/releases", {"service": svc, "env": "prod"}), 400, "version")
    refused(a.post("/releases", {"env": "prod", "version": "1"}), 400, "service")
    refused(a.post("/releases", {"service": "Bad_Name", "env": "prod", "version": "1"}), 400,
            "service")
    refused(a.post("/releases", {"service": svc, "env": "PROD!", "version": "1"}), 400, "env")
    refused(a.post("/releases", {"service": svc, "env": "prod", "version": "a b"}), 400, "version")
    assert "not a known version" in refused(
        a.post("/releases", {"service": svc, "env": "prod", "version": "9.9.9"}), 400, "version")
    assert "no service" in refused(
        a.post("/releases", {"service": "nosuch-" + svc[-6:], "env": "prod", "version": "1"}), 400,
        "service")
    refused(a.post("/releases", {"service": svc, "env": "prod", "version": "1.0.0",
                                 "colour": "red"}), 400, "colour")
    refused(a.post("/releases", {"service": svc, "env": "prod", "version": "1.0.0",
                                 "description": 5}), 400, "description")
    assert "not JSON" in refused(a.call("POST", "/releases", data="{oops",
                                        headers={"Content-Type": "application/json"}), 400)
    refused(a.call("POST", "/releases", [1, 2]), 400)
    assert h.psql(f"SELECT count(*) FROM releases WHERE service = '{svc}'")[0][0] == before
    # Queries.
    refused(a.get("/releases?limit=0"), 400, "limit")
    refused(a.get("/releases?limit=abc"), 400, "limit")
    refused(a.get("/releases?status=done"), 400, "status")
    refused(a.get("/releases?since=yesterday"), 400, "since")
    refused(a.get("/releases?cursor=xyz"), 400, "cursor")
    refused(a.get("/releases/not-a-uuid"), 404, "id")
    refused(a.get(f"/releases/{uuid.uuid4()}"), 404, "id")
    refused(a.get("/nothing"), 404)
    refused(a.call("DELETE", "/releases"), 405)
    refused(a.post(f"/releases/{uuid.uuid4()}/promote", {"full": "yes"}), 400, "full")
    # Configuration: nothing half-done - a bad value undoes the good ones before it.
    hist_before = len(ok(a.get(f"/services/{svc}/prod/history"))["history"])
    replicas = h.relctl_json("service", "show", svc, "--env", "prod")["replicas"]
    err = refused(a.call("PATCH", f"/services/{svc}/prod", {"replicas": replicas + 1,
                                                            "port": 70000}), 400, "port")
    assert err.startswith("cannot set 'port' to '70000': "), err
    assert refused(a.call("PATCH", f"/services/{svc}/prod", {"timeout": "soon"}), 400,
                   "timeout") == "timeout: 'soon' is not a duration (600, 600s, 10m, 1h)"
    refused(a.call("PATCH", f"/services/{svc}/prod", {"strategy": {"canary": {"steps": "x"}}}),
            400, "strategy")
    refused(a.call("PATCH", f"/services/{svc}/prod", {"replicas": [1]}), 400, "replicas")
    refused(a.call("PATCH", f"/services/{svc}/prod", {"bad key!": "1"}), 400, "bad key!")
    refused(a.call("PATCH", f"/services/{svc}/prod", {}), 400)
    refused(a.call("PATCH", "/services/new-" + svc[-6:] + "/prod", {"replicas": 1}), 400, "template")
    assert h.relctl_json("service", "show", svc, "--env", "prod")["replicas"] == replicas
    assert len(ok(a.get(f"/services/{svc}/prod/history"))["history"]) == hist_before
    refused(a.post(f"/images/{svc}", {"tag": "x y"}), 400, "tag")
    refused(a.post(f"/images/{svc}", {"tag": "3", "digest": "md5:1"}), 400, "digest")


# -- releases: list, detail, publishing, operations ---------------------------------------
def test_create_publishes_a_signed_request_like_relctl(h, url, world):
    svc, c = world
    rid = create(c["admin"], svc, "1.1.0", description="signed by the api")
    msgs = h.consume("requests", until=lambda ms: any(m.json()["release_id"] == rid for m in ms))
    msg = next(m for m in msgs if m.json()["release_id"] == rid)
    body = msg.json()
    assert msg.key == f"prod/{svc}".encode()
    assert body["schema"] == "relfleet.request.v1" and body["kind"] == "deploy"
    assert body["operator"] == "admin" and body["description"] == "signed by the api"
    assert body["auth"]["key_id"] == "admin" and len(body["auth"]["signature"]) == 64
    rec = api_wait(c["viewer_user"], rid, "succeeded")
    assert [e["event"] for e in rec["timeline"]][0] == "queued"
    assert rec["timeline"][-1]["event"] == "succeeded" and rec["duration_ms"] >= 0
    assert rec["pods"] == [] and rec["notifications"] == []


def test_list_filters_and_paging(h, url, world):
    _, c = world
    a = c["admin"]  # the stack's bootstrap admin: every service
    # A service of its own: a release another test requested on the shared service may be
    # recorded (created_at) inside this test's time window.
    svc = setup_service(h, h.unique_service("api-page"), versions=("1.0.0", "1.1.0"))
    start = datetime.now(timezone.utc) - timedelta(seconds=1)
    ids = [create(a, svc, v, description=f"page {i}") for i, v in enumerate(["1.0.0", "1.1.0", "1.0.0"])]
    for rid in ids:
        api_wait(a, rid, "succeeded")
    since = start.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    got = ok(a.get(f"/releases?service={svc}&env=prod&since={since}"))["releases"]
    assert [r["id"] for r in got] == ids[::-1]
    assert all("timeline" not in r for r in got) and got[0]["description"] == "page 2"
    page1 = ok(a.get(f"/releases?service={svc}&since={since}&limit=2"))
    assert [r["id"] for r in page1["releases"]] == ids[:0:-1] and page1["next_cursor"]
    page2 = ok(a.get(f"/releases?service={svc}&since={since}&limit=2&cursor={page1['next_cursor']}"))
    assert [r["id"] for r in page2["releases"]] == ids[:1] and page2["next_cursor"] is None
    assert ok(a.get(f"/releases?service={svc}&since={since}&until={since}"))["releases"] == []
    assert ok(a.get(f"/releases?service={svc}&operator=nobody"))["releases"] == []
    assert {r["status"] for r in ok(a.get(f"/releases?service={svc}&status=succeeded"))["releases"]} == {"succeeded"}
    assert ok(a.get(f"/releases?service={svc}&status=failed,rejected"))["releases"] == []
    assert ok(a.get(f"/releases?service={svc}&env=test"))["releases"] == []


def test_rollback_redo_and_their_refusals(h, url, world):
    svc, c = world
    r = c["releaser_user"]
    good = create(r, svc, "1.0.0")
    api_wait(r, good, "succeeded")
    newer = create(r, svc, "1.1.0")
    api_wait(r, newer, "succeeded")
    back = ok(r.post(f"/releases/{good}/rollback", {"description": "back we go"}), 201)
    assert back["kind"] == "rollback" and back["parent"] == good and back["version"] == "1.0.0"
    assert api_wait(r, back["id"], "succeeded")["description"] == "back we go"
    # Service-level rollback goes to the last success before the current release.
    back2 = ok(r.post(f"/services/{svc}/prod/rollback"), 201)
    assert back2["parent"] == newer and back2["version"] == "1.1.0"
    api_wait(r, back2["id"], "succeeded")
    redo = ok(r.post(f"/services/{svc}/prod/redo"), 201)
    assert redo["kind"] == "redo" and redo["parent"] == back2["id"]
    api_wait(r, redo["id"], "succeeded")
    assert "not the latest" in refused(r.post(f"/releases/{good}/redo"), 409)
    redo2 = ok(r.post(f"/releases/{redo['id']}/redo"), 201)
    assert redo2["parent"] == redo["id"]
    api_wait(r, redo2["id"], "succeeded")
    fresh = setup_service(h, h.unique_service("api-fresh"))
    assert "no successful release" in refused(c["admin"].post(f"/services/{fresh}/prod/rollback"), 409)
    assert "no release" in refused(c["admin"].post(f"/services/{fresh}/prod/redo"), 409)


def test_cancel_of_a_running_release(h, url, world):
    svc, c = world
    r = c["releaser_user"]
    rid = create(r, svc, "bad-1", description="never pulls")
    api_wait(r, rid, "progressing")
    assert "cancel" in ok(r.get(f"/releases/{rid}"))["actions"]
    sent = ok(r.post(f"/releases/{rid}/cancel"), 202)
    assert sent["action"] == "cancel" and sent["release_id"] == rid
    assert api_wait(r, rid, "cancelled")["status"] == "cancelled"
    cmds = h.consume("commands", until=lambda ms: any(m.json()["command_id"] == sent["command_id"]
                                                      for m in ms))
    cmd = next(m.json() for m in cmds if m.json()["command_id"] == sent["command_id"])
    assert cmd["operator"] == f"rel-{svc[-8:]}" and cmd["action"] == "cancel"
    # Not a gray release: promote and abort are not offered.
    assert not {"promote", "abort"} & set(ok(r.get(f"/releases/{rid}"))["actions"])


# -- live progress ----------------------------------------------------------------------
def sse_events(resp):
    """Parses a text/event-stream response into (event, id, data) until it ends."""
    event, eid, data = None, None, []
    for raw in resp.iter_lines(decode_unicode=True):
        if raw == "":
            if data:
                yield event or "message", eid, json.loads("\n".join(data))
            event, eid, data = None, None, []
        elif raw.startswith("event: "):
            event = raw[7:]
        elif raw.startswith("id: "):
            eid = raw[4:]
        elif raw.startswith("data: "):
            data.append(raw[6:])


def test_event_stream_follows_a_release_to_its_end(h, url, world):
    svc, c = world
    v = c["viewer_user"]
    rid = create(c["admin"], svc, "1.1.0", description="streamed")
    with v.get(f"/releases/{rid}/events", stream=True) as resp:
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "text/event-stream"
        events = list(sse_events(resp))
    kinds = [e[0] for e in events]
    assert kinds[-1] == "end" and events[-1][2]["status"] == "succeeded"
    timeline = [e for e in events if e[0] == "timeline"]
    assert [t[2]["event"] for t in timeline][0] == "queued"
    assert timeline[-1][2]["event"] == "succeeded"
    ids = [int(t[1]) for t in timeline]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    states = [e[2]["status"] for e in events if e[0] == "release"]
    assert states[-1] == "succeeded"
    rec = ok(v.get(f"/releases/{rid}"))
    assert len(timeline) == len(rec["timeline"])
    # Resuming after the last event seen sends only what came after it.
    with v.get(f"/releases/{rid}/events", stream=True,
               headers={"Last-Event-ID": str(ids[-2])}) as resp:
        again = list(sse_events(resp))
    assert [int(e[1]) for e in again if e[0] == "timeline"] == ids[-1:]


def test_openapi_document_describes_every_route(h, url):
    text = requests.get(h.env["RELFLEET_API_URL"] + "/openapi.yaml", timeout=30).text
    assert text == (REPO / "schemas" / "openapi.yaml").read_text()
    doc = yaml.safe_load(text)
    assert doc["openapi"].startswith("3.")
    paths = set(doc["paths"])
    for p in ["/session", "/releases", "/releases/{id}", "/releases/{id}/events",
              "/releases/{id}/rollback", "/releases/{id}/redo", "/releases/{id}/cancel",
              "/releases/{id}/promote", "/releases/{id}/abort", "/releases/{id}/approve",
              "/releases/{id}/deny", "/services",
              "/services/{service}/{env}", "/services/{service}/{env}/history",
              "/services/{service}/{env}/rollback", "/services/{service}/{env}/redo",
              "/templates", "/templates/{id}", "/images/{service}", "/waves", "/waves/{id}",
              "/waves/{id}/pause", "/waves/{id}/resume", "/waves/{id}/abort"]:
        assert p in paths, p
