"""Operations (issue 6): rollback, redo, users and roles, signed requests, registry tags,
template sync from URLs. One stack of its own with auth_required on."""
import hashlib
import hmac
import http.server
import json
import os
import secrets
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone

import pytest

from conftest import start_stack, stop_stack
from harness import Harness, bin_path
from registry import docker_registry
from releases import TEMPLATES, deploy, record, setup_service, wait_status


@pytest.fixture(scope="module")
def auth_stack():
    s = start_stack({"RELFLEET_AUTH_REQUIRED": "on", "RELFLEET_SIGNATURE_WINDOW_S": "120"})
    yield s
    stop_stack(s)


@pytest.fixture
def h(auth_stack):
    return Harness(auth_stack)


def kubectl(h, *args):
    proc = subprocess.run(["kubectl", "--kubeconfig", h.env["RELFLEET_KUBECONFIG"], *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def deployment(h, svc):
    ns = "ns-" + svc[-10:]
    return json.loads(kubectl(h, "-n", ns, "get", "deployment", svc, "-o", "json"))


def pod_names(h, svc):
    ns = "ns-" + svc[-10:]
    pods = json.loads(kubectl(h, "-n", ns, "get", "pods", "-o", "json"))["items"]
    return {p["metadata"]["name"] for p in pods
            if p["metadata"]["name"].startswith(svc + "-")
            and not p["metadata"].get("deletionTimestamp")}


def now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# -- signing, independently of the C code -------------------------------------------------
def canonical(msg):
    """What the signature covers: the message without auth, sorted keys, compact."""
    return json.dumps({k: v for k, v in msg.items() if k != "auth"}, sort_keys=True,
                      separators=(",", ":"))


def sign(msg, key_id, key, ts_ms=None):
    ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
    sig = hmac.new(key.encode(), f"{ts_ms}.{canonical(msg)}".encode(), hashlib.sha256).hexdigest()
    return dict(msg, auth={"key_id": key_id, "timestamp": ts_ms, "signature": sig})


def request(svc, version, operator, env="prod"):
    return {"schema": "relfleet.request.v1", "release_id": str(uuid.uuid4()), "service": svc,
            "env": env, "version": version, "kind": "deploy", "operator": operator,
            "requested_at": now_iso()}


def publish(h, msg):
    h.produce("requests", f"{msg['env']}/{msg['service']}".encode(), json.dumps(msg).encode())
    return msg["release_id"]


def add_user(h, name, key=True):
    """A user with a token (returned) and, with key, a signing key in the stack's secrets."""
    h.relctl("user", "add", name)
    token = h.relctl("user", "token", name).stdout.strip()
    assert token and token not in h.psql("SELECT token_sha256 FROM api_tokens")[0]
    signing_key = None
    if key:
        signing_key = secrets.token_hex(32)
        with open(h.env["RELFLEET_SECRETS_FILE"], "a") as f:
            f.write(f"signing_key.{name}={signing_key}\n")
        h.relctl("user", "key", name, name)
    return token, signing_key


def as_user(h, token):
    env = dict(h.env, RELFLEET_TOKEN=token)
    return lambda *args: subprocess.run([str(bin_path("relctl")), *map(str, args)], env=env,
                                        capture_output=True, text=True, timeout=120,
                                        stdin=subprocess.DEVNULL)


def rejected_with(h, rid, words):
    rec = wait_status(h, rid, {"rejected", "succeeded", "failed", "progressing", "applying"})
    assert rec["status"] == "rejected", rec
    assert words in rec["error"], rec["error"]
    assert any(e["event"] == "rejected" and words in e["message"] for e in rec["timeline"]), rec
    return rec


# -- rollback and redo --------------------------------------------------------------------
def test_rollback_after_good_and_bad_release_restores_earlier_image(h):
    svc = setup_service(h, versions=("1.0.0", "bad-2"), timeout=4)
    good = deploy(h, svc, "1.0.0")
    wait_status(h, good, "succeeded")
    bad = deploy(h, svc, "bad-2")
    assert wait_status(h, bad, {"failed", "succeeded"}, timeout=60)["status"] == "failed"
    assert deployment(h, svc)["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"{svc}:bad-2"
    # Fast: a version since dropped from the list is no obstacle to going back to it.
    h.psql(f"DELETE FROM images WHERE service = '{svc}' AND tag = '1.0.0'")

    out = h.relctl_json("rollback", "--service", svc, "--env", "prod")
    assert out["parent"] == good
    rec = wait_status(h, out["release_id"], {"succeeded", "failed", "rejected"})
    assert rec["status"] == "succeeded", rec
    assert rec["kind"] == "rollback" and rec["parent"] == good and rec["version"] == "1.0.0"
    assert rec["template_version"] == record(h, good)["template_version"]
    assert deployment(h, svc)["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"{svc}:1.0.0"
    hist = {r["id"]: r for r in h.relctl_json("history", "--service", svc, "--env", "prod")}
    assert hist[out["release_id"]]["kind"] == "rollback"
    assert hist[out["release_id"]]["parent"] == good
    text = h.relctl("history", "--service", svc).stdout
    assert f"[of {good[:8]}]" in text, text
    assert f"rollback of {good}" in h.relctl("show", out["release_id"]).stdout.replace(
        "kind        ", "")

    # rollback ID: back to exactly that release, even the bad one.
    again = h.relctl_json("rollback", bad)["release_id"]
    rec = wait_status(h, again, {"failed", "succeeded", "rejected"}, timeout=60)
    assert rec["kind"] == "rollback" and rec["parent"] == bad and rec["version"] == "bad-2"
    assert h.relctl("rollback", "--service", h.unique_service(), "--env", "prod",
                    check=False).returncode == 1


def test_redo_restarts_pods_with_unchanged_spec(h, tmp_path):
    svc = h.unique_service("redo")
    # A template whose pod spec does not change from one release to the next.
    web = (TEMPLATES / "web.yaml").read_text()
    body = web.replace('      annotations:\n        relfleet.io/release-id: "{{ release_id }}"\n',
                       '      annotations:\n').replace(
        '            - name: RELEASE_ID\n              value: "{{ release_id }}"\n', '')
    assert body.count("{{ release_id }}") == web.count("{{ release_id }}") - 2
    assert body.count("relfleet.io/release-id") == web.count("relfleet.io/release-id") - 1
    (tmp_path / f"{svc}.yaml").write_text(body)
    h.relctl("template", "sync", tmp_path)
    setup_service(h, svc, template=svc)
    first = deploy(h, svc, "1.0.0")
    wait_status(h, first, "succeeded")
    before = h.wait_for(lambda: (p := pod_names(h, svc)) and len(p) == 2 and p, 30, "two pods")
    same = deploy(h, svc, "1.0.0")
    wait_status(h, same, "succeeded")
    assert pod_names(h, svc) == before  # the same spec again changes nothing

    out = h.relctl_json("redo", "--service", svc, "--env", "prod")
    assert out["parent"] == same
    rec = wait_status(h, out["release_id"], {"succeeded", "failed", "rejected"})
    assert rec["status"] == "succeeded" and rec["kind"] == "redo" and rec["parent"] == same
    ann = deployment(h, svc)["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in ann, ann
    after = h.wait_for(lambda: (p := pod_names(h, svc)) and len(p) == 2 and not (p & before)
                       and p, 30, "two new pods")
    assert not after & before
    hist = {r["id"]: r for r in h.relctl_json("history", "--service", svc)}
    assert hist[out["release_id"]]["kind"] == "redo" and hist[out["release_id"]]["parent"] == same


# -- permissions and authenticity ---------------------------------------------------------
def test_roles_releaser_viewer_and_refused_attempts_on_record(h):
    svc = setup_service(h, versions=("1.0.0", "bad-9"))
    rel, rel_key = add_user(h, "rel-" + svc[-6:])
    view, _ = add_user(h, "view-" + svc[-6:])
    h.relctl("user", "grant", "rel-" + svc[-6:], "releaser", "--service", svc, "--env", "prod")
    h.relctl("user", "grant", "view-" + svc[-6:], "viewer", "--service", svc, "--env", "*")
    as_rel, as_view = as_user(h, rel), as_user(h, view)

    # A releaser cannot change configuration.
    p = as_rel("service", "set", svc, "--env", "prod", "replicas=5")
    assert p.returncode == 1 and "permission denied" in p.stderr and "admin" in p.stderr, p
    assert h.relctl_json("service", "show", svc, "--env", "prod")["replicas"] == 2
    p = as_rel("template", "sync", str(TEMPLATES))
    assert p.returncode == 1 and "permission denied" in p.stderr, p
    p = as_rel("user", "grant", "rel-" + svc[-6:], "admin", "--service", "*", "--env", "*")
    assert p.returncode == 1 and "permission denied" in p.stderr, p

    # A releaser deploys (signed as itself); a viewer cannot: rejected, on the record.
    p = as_rel("deploy", "--service", svc, "--env", "prod", "--version", "1.0.0", "--output",
               "json")
    assert p.returncode == 0, p.stderr
    ok = json.loads(p.stdout)["release_id"]
    rec = wait_status(h, ok, {"succeeded", "rejected", "failed"})
    assert rec["status"] == "succeeded" and rec["operator"] == "rel-" + svc[-6:], rec
    p = as_view("deploy", "--service", svc, "--env", "prod", "--version", "1.0.0", "--output",
                "json")
    assert p.returncode == 0, p.stderr
    refused = json.loads(p.stdout)["release_id"]
    rejected_with(h, refused, f"user 'view-{svc[-6:]}' has no releaser role")

    # Reading: the viewer sees the service; another user with no role does not.
    assert as_view("show", ok, "--output", "json").returncode == 0
    nobody, _ = add_user(h, "nobody-" + svc[-6:], key=False)
    p = as_user(h, nobody)("show", ok)
    assert p.returncode == 1 and "permission denied" in p.stderr, p
    p = as_user(h, nobody)("history", "--output", "json")
    assert p.returncode == 0 and json.loads(p.stdout) == [], p
    p = as_user(h, "rft_" + "0" * 48)("history")
    assert p.returncode == 1 and "token" in p.stderr, p

    # Commands: the viewer's cancel is refused on the record, the releaser's ends it.
    running = deploy(h, svc, "bad-9")
    wait_status(h, running, {"progressing"})
    assert as_view("cancel", running).returncode == 0
    h.wait_for(lambda: any(e["event"] == "refused" and "no releaser role" in e["message"]
                           for e in record(h, running)["timeline"]), 30, "the refused cancel")
    assert record(h, running)["status"] == "progressing"
    assert as_rel("cancel", running).returncode == 0
    wait_status(h, running, "cancelled")

    # Forged, replayed, unknown key, expired, unsigned: each rejected with its reason.
    user = "rel-" + svc[-6:]
    forged = publish(h, sign(request(svc, "1.0.0", user), user, secrets.token_hex(32)))
    good = sign(request(svc, "1.0.0", user), user, rel_key)
    publish(h, good)
    assert wait_status(h, good["release_id"], {"succeeded", "rejected"})["status"] == "succeeded"
    replay = dict(good, release_id=str(uuid.uuid4()))
    publish(h, replay)
    unknown = publish(h, sign(request(svc, "1.0.0", user), "no-such-key", rel_key))
    expired = publish(h, sign(request(svc, "1.0.0", user), user, rel_key,
                              ts_ms=int(time.time() * 1000) - 600_000))
    unsigned = publish(h, request(svc, "1.0.0", user))
    tampered_msg = sign(request(svc, "1.0.0", user), user, rel_key)
    tampered = publish(h, dict(tampered_msg, version="bad-9"))
    impostor = publish(h, sign(request(svc, "1.0.0", "someone-else"), user, rel_key))
    rejected_with(h, forged, f"bad signature by key '{user}'")
    rejected_with(h, replay["release_id"], f"replayed signature: key '{user}' signed "
                  f"{good['release_id']}")
    rejected_with(h, unknown, "unknown signing key 'no-such-key'")
    rejected_with(h, expired, "expired signature")
    rejected_with(h, unsigned, "missing signature")
    rejected_with(h, tampered, "bad signature")
    rejected_with(h, impostor, f"operator 'someone-else' is not the owner of signing key '{user}'")
    hist = {r["id"]: r for r in h.relctl_json("history", "--service", svc, "--limit", "50")}
    for rid in (refused, forged, replay["release_id"], unknown, expired, unsigned, tampered,
                impostor):
        assert hist[rid]["status"] == "rejected" and hist[rid]["error"], hist[rid]
    text = h.relctl("history", "--service", svc, "--limit", "50").stdout
    assert "replayed signature" in text and "unknown signing key" in text


def test_upstream_key_signs_for_any_operator(h):
    svc = setup_service(h)
    ci = "ci-" + svc[-6:]
    h.relctl("user", "add", ci)
    key = secrets.token_hex(32)
    with open(h.env["RELFLEET_SECRETS_FILE"], "a") as f:
        f.write(f"signing_key.{ci}={key}\n")
    h.relctl("user", "key", ci, ci, "--upstream")
    h.relctl("user", "grant", ci, "releaser", "--service", svc, "--env", "prod")
    rid = publish(h, sign(request(svc, "1.0.0", "alice@example.com"), ci, key))
    rec = wait_status(h, rid, {"succeeded", "rejected", "failed"})
    assert rec["status"] == "succeeded" and rec["operator"] == "alice@example.com", rec
    # Its releaser role covers that service in that env only.
    rid = publish(h, sign(request(svc, "1.0.0", "alice@example.com", env="test"), ci, key))
    rejected_with(h, rid, f"user '{ci}' has no releaser role for service '{svc}' in env 'test'")


def test_user_list_and_token_stored_hashed(h):
    name = h.unique_service("u")
    token, _ = add_user(h, name, key=False)
    users = {u["name"]: u for u in h.relctl_json("user", "list")}
    assert users[name]["tokens"] == 1 and users["admin"]["roles"][0]["role"] == "admin"
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert h.psql(f"SELECT user_name FROM api_tokens WHERE token_sha256 = '{digest}'") == [[name]]
    dump = subprocess.run(["pg_dump", "--data-only", h.env["RELFLEET_PG_DSN"]],
                          capture_output=True, text=True, env=h.env, timeout=60)
    assert dump.returncode == 0 and token not in dump.stdout
    for line in open(h.env["RELFLEET_SECRETS_FILE"]):
        if line.startswith("signing_key."):
            assert line.split("=", 1)[1].strip() not in dump.stdout
    h.relctl("user", "disable", name)
    p = as_user(h, token)("history")
    assert p.returncode == 1 and "no enabled user" in p.stderr, p


# -- registry tags --------------------------------------------------------------------------
@pytest.fixture
def registry(tmp_path):
    """Debian's docker-registry on a free loopback port, htpasswd (bcrypt) Basic auth."""
    user, password = "ci", secrets.token_hex(12)
    subprocess.run(["htpasswd", "-iBc", str(tmp_path / "htpasswd"), user], input=password,
                   text=True, check=True, capture_output=True)
    auth = f"""  htpasswd:
    realm: relfleet-test
    path: {tmp_path / "htpasswd"}
"""
    with docker_registry(tmp_path, auth) as url:
        yield url, (user, password)


def push_image(url, auth, repo, tag):
    """Uploads a config and a layer blob and a schema2 manifest through the v2 API."""
    import requests

    def blob(data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = requests.post(f"{url}/v2/{repo}/blobs/uploads/", auth=auth, timeout=10)
        assert r.status_code == 202, r.text
        loc = r.headers["Location"]
        loc = loc if loc.startswith("http") else url + loc
        r = requests.put(loc, params={"digest": digest}, data=data, auth=auth, timeout=10,
                         headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        return {"digest": digest, "size": len(data)}

    config = blob(json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode())
    layer = blob(os.urandom(64))
    manifest = {"schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": dict(config, mediaType="application/vnd.docker.container.image.v1+json"),
                "layers": [dict(layer, mediaType="application/vnd.docker.image.rootfs.diff.tar.gzip")]}
    r = requests.put(f"{url}/v2/{repo}/manifests/{tag}", data=json.dumps(manifest), auth=auth,
                     timeout=10,
                     headers={"Content-Type": manifest["mediaType"]})
    assert r.status_code == 201, r.text


def test_image_list_reads_registry_tags(h, registry):
    url, auth = registry
    svc = setup_service(h, versions=("1.0.0", "2.0.0"))
    repo = f"team/{svc}"
    for tag in ("2.0.0", "2.1.0"):
        push_image(url, auth, repo, tag)
    secret = "registry_" + svc.replace("-", "_")
    with open(h.env["RELFLEET_SECRETS_FILE"], "a") as f:
        f.write(f"{secret}={auth[0]}:{auth[1]}\n")
    host = url.split("://")[1]
    h.relctl("service", "set", svc, "--env", "prod", f"image_repo={host}/{repo}",
             f"registry={url}", f"registry_secret={secret}")
    tags = {t["tag"]: t for t in h.relctl_json("image", "list", svc)}
    assert set(tags) == {"1.0.0", "2.0.0", "2.1.0"}, tags
    assert "registry" not in tags["1.0.0"] and tags["1.0.0"]["added_by"] == "admin"
    assert tags["2.0.0"]["registry"] == url and tags["2.0.0"]["added_at"]
    assert tags["2.1.0"]["registry"] == url and tags["2.1.0"]["added_at"] is None
    out = h.relctl("image", "list", svc).stdout
    assert "2.1.0" in out and f"in {url}" in out, out
    # Refused credentials and no credentials: a failure that says so.
    with open(h.env["RELFLEET_SECRETS_FILE"], "a") as f:
        f.write(f"{secret}_bad={auth[0]}:wrong\n")
    h.relctl("service", "set", svc, "--env", "prod", f"registry_secret={secret}_bad")
    p = h.relctl("image", "list", svc, check=False)
    assert p.returncode == 1 and "credentials refused" in p.stderr, p
    assert "1.0.0" in p.stdout  # what is recorded is still shown
    assert auth[1] not in p.stderr + p.stdout


# -- template sync from URLs ----------------------------------------------------------------
@pytest.fixture
def http_dir(tmp_path):
    """A folder served over HTTP on loopback (as a git host serves raw files)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_template_sync_from_urls(h, http_dir):
    root, base = http_dir
    a, b = h.unique_service("tpla"), h.unique_service("tplb")
    web = (TEMPLATES / "web.yaml").read_text()
    (root / "a.yaml").write_text(web)
    out = h.relctl("template", "sync", f"{a}={base}/a.yaml").stdout
    assert out.startswith(f"new       {a} "), out
    rows = h.psql(f"SELECT source, version FROM templates WHERE id = '{a}'")
    assert rows == [[f"{base}/a.yaml", hashlib.sha256(web.encode()).hexdigest()]], rows

    (root / "b.yaml").write_text(web)
    (root / "broken.yaml").write_text("kind: Deployment\nmetadata: [\n")
    (root / "typo.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: '{{ replcas }}'\n")
    (root / "a.yaml").write_text(web + "\n# changed\n")
    p = h.relctl("template", "sync", f"{a}={base}/a.yaml", f"{b}={base}/b.yaml",
                 f"{b}-broken={base}/broken.yaml", f"{b}-typo={base}/typo.yaml",
                 f"{b}-gone={base}/missing.yaml", check=False)
    assert p.returncode == 1, p
    lines = p.stdout.splitlines()
    assert any(l.startswith(f"changed   {a} ") for l in lines), p.stdout
    assert any(l.startswith(f"new       {b} ") for l in lines), p.stdout
    broken = [l for l in lines if l.startswith(f"broken    {b}-broken:")]
    assert broken and "line" in broken[0] and f"url {base}/broken.yaml" in broken[0], p.stdout
    assert f"broken    {b}-typo: placeholder 'replcas' is not a known value (url {base}/typo.yaml)" \
        in p.stdout
    assert f"broken    {b}-gone: cannot download '{base}/missing.yaml': HTTP status 404" \
        in p.stdout
    out = h.relctl("template", "sync", f"{a}={base}/a.yaml").stdout
    assert out.startswith(f"unchanged {a} "), out
    assert h.psql(f"SELECT count(*) FROM templates WHERE id = '{a}'") == [["2"]]
    assert h.psql(f"SELECT count(*) FROM templates WHERE id LIKE '{b}-%'") == [["0"]]
    p = h.relctl("template", "sync", f"{a}=file:///etc/passwd", check=False)
    assert p.returncode == 2, p


def test_usage_of_rollback_redo_user(h):
    for args in (["rollback"], ["rollback", "--service", "x"], ["redo", "--service", "x"],
                 ["redo", "some-id"], ["user"], ["user", "grant", "a", "viewer"],
                 ["user", "grant", "a", "root", "--service", "*", "--env", "*"]):
        p = h.relctl(*args, check=False)
        assert p.returncode == 2, (args, p.stderr)
    for verb in ("rollback", "redo", "user"):
        p = h.relctl(verb, "--help", check=False)
        assert p.returncode == 0 and p.stdout.startswith(f"usage: relctl {verb}"), p
    assert h.relctl("rollback", str(uuid.uuid4()), check=False).returncode == 1


def test_wave_releases_are_authorized_by_their_creator(h):
    """With auth_required on, a wave's releases carry no signature: each start checks that the
    wave's creator is still a releaser of the service (docs/waves.md)."""
    a = setup_service(h, h.unique_service("wa"), timeout="5s")
    b = setup_service(h, h.unique_service("wb"), timeout="5s")
    user = h.unique_service("wu")
    h.relctl("user", "add", user)
    for svc in (a, b):
        h.relctl("user", "grant", user, "releaser", "--service", svc, "--env", "prod")
    env = dict(h.env, RELFLEET_TOKEN=h.relctl("user", "token", user).stdout.strip())

    def as_user(*args):
        return subprocess.run([str(bin_path("relctl")), *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    p = as_user("wave", "create", "--services", f"{a},{b}", "--version", "1.0.0", "--env", "prod",
                "--max-parallel", "1", "--steps", json.dumps([{"services": [a]}, {"percent": 100}]),
                "--pause-between", "5s", "--output", "json")
    assert p.returncode == 0, p.stderr
    wid = json.loads(p.stdout)["id"]
    first = h.wait_for(lambda: (lambda w: w["releases"][0]["release_id"] if
                                w["releases"][0]["status"] == "succeeded" else None)(
        h.relctl_json("wave", "show", wid)), 60, "the first release to succeed")
    h.relctl("user", "revoke", user, "releaser", "--service", b, "--env", "prod")
    assert record(h, first)["operator"] == user
    assert h.relctl("wave", "watch", wid, check=False, timeout=120).returncode == 1
    w = h.relctl_json("wave", "show", wid)
    assert w["status"] == "halted" and w["releases"][1]["status"] == "rejected", w
    rec = record(h, w["releases"][1]["release_id"])
    assert rec["error"] == f"user '{user}' has no releaser role for service '{b}' in env 'prod'"
